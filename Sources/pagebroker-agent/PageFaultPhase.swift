import BuddyAllocator
import Foundation
import GuestAgent
import GuestMemory
import GuestSimulator
import PageReporting
import Synchronization

/// One phase of `bench page-fault`: a fresh allocator over the prefaulted pool, so every phase
/// starts from the same state (no Reported flags or discarded marks left by an earlier phase),
/// then, with reporting on, the engine's initial flush of the free memory, then `threads`
/// threads allocating, writing and freeing for the phase's duration. The kernel's counters for
/// the timed part say what it cost: minor faults, CPU time, the pool's residency.
struct PageFaultPhase {
    var memory: GuestMemory
    var configuration: AllocatorConfiguration
    var threads: Int
    var order: Int
    var duration: Duration
    var delay: Duration
    var reportOrder: Int
    /// Whether the initial flush runs inside the timed part (as in the bench before December
    /// 2026) rather than before it.
    var timeFlush: Bool

    func run(_ phase: PageFaultPlan.Phase) throws -> PageFaultPhaseFigures {
        let allocator = try BuddyAllocator(self.configuration)
        let device = GuestDiscardingDevice(
            wrapping: AcceptingDevice(),
            memory: self.memory,
            repopulateOnFailure: false,
            takeBack: { _ in }
        )
        let zeroing = ZeroedAllocator(allocator: allocator, memory: self.memory, discardedReadsZero: true)
        // Every phase starts from a fully resident pool, as a guest that has used its memory.
        try self.memory.prefault()
        let prefaulted = try self.memory.residentBytes()

        let scheduler = PassObservingScheduler(label: "pagebroker.bench.reporting")
        var engine: PageReportingEngine?
        var flushSeconds = 0.0
        if phase.reporting {
            if !self.timeFlush {
                // The kernel reports a guest's free memory within seconds of boot, long before a
                // benchmark runs; the seed measured the steady state after it. So the flush is
                // one pass with no delay and no budget, before the clock starts.
                let began = ContinuousClock.now
                let flush = try PageReportingEngine.register(
                    device: device,
                    allocator: allocator,
                    scheduler: scheduler,
                    configuration: PageReportingConfiguration(
                        delay: .zero,
                        budget: false,
                        orderOverride: self.reportOrder
                    )
                )
                scheduler.waitForPass()
                flush.unregister()
                flushSeconds = Units.seconds(ContinuousClock.now - began)
            }
            engine = try PageReportingEngine.register(
                device: device,
                allocator: allocator,
                scheduler: scheduler,
                configuration: PageReportingConfiguration(delay: self.delay, orderOverride: self.reportOrder)
            )
        }
        let flushDiscarded = device.statistics.discardedBytes
        let residentAtStart = try self.memory.residentBytes()
        let passesBefore = scheduler.passes
        let reportingCPUBefore = scheduler.cpuSeconds
        let before = ProcessCounters.read()
        let (operations, seconds) = self.spin(zeroing)
        let after = ProcessCounters.read()
        let residentAtEnd = try self.memory.residentBytes()
        engine?.unregister()
        try allocator.validate()
        return PageFaultPhaseFigures(
            round: phase.round,
            reporting: phase.reporting,
            opsPerSecond: Double(operations) / seconds,
            opsPerCPUSecond: after.cpuSeconds > before.cpuSeconds
                ? Double(operations) / (after.cpuSeconds - before.cpuSeconds) : 0,
            operations: operations,
            seconds: seconds,
            minorFaults: after.minorFaults - before.minorFaults,
            cpuSeconds: after.cpuSeconds - before.cpuSeconds,
            reportingCPUSeconds: scheduler.cpuSeconds - reportingCPUBefore,
            passes: scheduler.passes - passesBefore,
            prefaultedBytes: prefaulted,
            residentBytesAtStart: residentAtStart,
            residentBytesAtEnd: residentAtEnd,
            flushSeconds: flushSeconds,
            flushDiscardedBytes: flushDiscarded,
            discardedBytes: device.statistics.discardedBytes - flushDiscarded,
            zeroingSkippedBytes: zeroing.skippedBytes,
            zeroedBytes: zeroing.zeroedBytes
        )
    }

    /// Runs the threads for the phase's duration; returns the blocks they allocated, wrote and
    /// freed, and the seconds it took.
    private func spin(_ zeroing: ZeroedAllocator) -> (operations: Int, seconds: Double) {
        let stop = Atomic<Bool>(false)
        let operations = Atomic<Int>(0)
        let done = DispatchGroup()
        let start = DispatchSemaphore(value: 0)
        let order = self.order
        for _ in 0..<self.threads {
            done.enter()
            let thread = Thread {
                var scratch = zeroing.makeScratch()
                var count = 0
                let memory = zeroing.memory
                let pages = 1 << order
                start.wait()
                while !stop.load(ordering: .relaxed) {
                    guard let frame = try? zeroing.allocate(order: order, scratch: &scratch) else { continue }
                    // Write every page, as page_fault1 writes a byte of each.
                    for page in frame..<(frame + pages) {
                        memory.address(ofFrame: page).storeBytes(of: UInt64(page), as: UInt64.self)
                    }
                    try? zeroing.allocator.free(frame: frame, order: order)
                    count += 1
                }
                operations.add(count, ordering: .relaxed)
                done.leave()
            }
            thread.start()
        }
        let began = ContinuousClock.now
        for _ in 0..<self.threads { start.signal() }
        Thread.sleep(forTimeInterval: Units.seconds(self.duration))
        stop.store(true, ordering: .relaxed)
        done.wait()
        return (operations.load(ordering: .relaxed), Units.seconds(ContinuousClock.now - began))
    }
}

/// What one phase measured; `--json` prints them in `phases`.
struct PageFaultPhaseFigures: Encodable {
    var round: Int
    var reporting: Bool
    var opsPerSecond: Double
    /// Operations per second of the process's CPU time: what the work costs, whatever share of
    /// the cores the machine's other load left the bench.
    var opsPerCPUSecond: Double
    var operations: Int
    var seconds: Double
    /// The process's minor faults during the timed part (`getrusage`): a block whose memory was
    /// discarded faults in again, page by page.
    var minorFaults: Int
    /// CPU time of the whole process (every thread) during the timed part.
    var cpuSeconds: Double
    /// CPU time of the reporting worker's passes during the timed part.
    var reportingCPUSeconds: Double
    /// Reporting passes that ran during the timed part.
    var passes: Int
    /// The pool's resident bytes (the kernel's figure) after the prefault.
    var prefaultedBytes: Int
    /// ... when the clock started (after the flush, with reporting on).
    var residentBytesAtStart: Int
    /// ... when it stopped.
    var residentBytesAtEnd: Int
    var flushSeconds: Double
    var flushDiscardedBytes: Int
    /// Bytes discarded during the timed part.
    var discardedBytes: Int
    var zeroingSkippedBytes: Int
    var zeroedBytes: Int

    enum CodingKeys: String, CodingKey {
        case round, reporting, operations, seconds, passes
        case opsPerSecond = "ops_per_second"
        case opsPerCPUSecond = "ops_per_cpu_second"
        case minorFaults = "minor_faults"
        case cpuSeconds = "cpu_seconds"
        case reportingCPUSeconds = "reporting_cpu_seconds"
        case prefaultedBytes = "prefaulted_bytes"
        case residentBytesAtStart = "resident_bytes_at_start"
        case residentBytesAtEnd = "resident_bytes_at_end"
        case flushSeconds = "flush_seconds"
        case flushDiscardedBytes = "flush_discarded_bytes"
        case discardedBytes = "discarded_bytes"
        case zeroingSkippedBytes = "zeroing_skipped_bytes"
        case zeroedBytes = "zeroed_bytes"
    }

    /// One line for standard error.
    var line: String {
        let phase = PageFaultPlan.Phase(round: self.round, reporting: self.reporting)
        var text =
            "\(phase): \(String(format: "%.0f", self.opsPerSecond)) ops/s, "
            + "\(String(format: "%.0f", self.opsPerCPUSecond)) ops/cpu-s, \(self.minorFaults) minor faults, "
            + "cpu \(Units.fixed(self.cpuSeconds, 2)) s (reporting \(Units.fixed(self.reportingCPUSeconds, 3)) s, "
            + "\(self.passes) passes), resident \(Units.formatBytes(self.residentBytesAtStart)) -> "
            + "\(Units.formatBytes(self.residentBytesAtEnd)), discarded \(Units.formatBytes(self.discardedBytes)), "
            + "zeroing skipped \(Units.formatBytes(self.zeroingSkippedBytes))"
        if self.flushDiscardedBytes > 0 {
            text +=
                "; flush before: \(Units.formatBytes(self.flushDiscardedBytes)) in \(Units.fixed(self.flushSeconds, 3)) s"
        }
        return text
    }
}

/// The process's minor faults and CPU time (`getrusage(RUSAGE_SELF)`).
struct ProcessCounters {
    var minorFaults: Int
    var cpuSeconds: Double

    static func read() -> ProcessCounters {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return ProcessCounters(minorFaults: Int(usage.ru_minflt), cpuSeconds: cpuSeconds(usage))
    }

    /// CPU time of the calling thread (`RUSAGE_THREAD`).
    static func threadCPUSeconds() -> Double {
        var usage = rusage()
        // RUSAGE_THREAD is 1 on Linux; Glibc's Swift module leaves the GNU extension out.
        getrusage(__rusage_who_t(1), &usage)
        return cpuSeconds(usage)
    }

    private static func cpuSeconds(_ usage: rusage) -> Double {
        Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1_000_000
    }
}

/// The engine's worker (a ``DispatchReportingScheduler``) that counts the passes it ran and
/// their CPU time, and lets the bench wait for the next pass to finish.
final class PassObservingScheduler: ReportingScheduler {
    private let inner: DispatchReportingScheduler
    private let finished = DispatchSemaphore(value: 0)
    private let counters = Mutex((passes: 0, cpuSeconds: 0.0))

    init(label: String) {
        self.inner = DispatchReportingScheduler(label: label)
    }

    var now: Duration { self.inner.now }

    var passes: Int { self.counters.withLock { $0.passes } }
    var cpuSeconds: Double { self.counters.withLock { $0.cpuSeconds } }

    /// Blocks until a pass scheduled here has finished (one that finished earlier counts).
    func waitForPass() {
        self.finished.wait()
    }

    @discardableResult
    func schedule(after delay: Duration, _ work: @escaping @Sendable () -> Void) -> any ScheduledWork {
        self.inner.schedule(after: delay) { [self] in
            let began = ProcessCounters.threadCPUSeconds()
            work()
            let spent = ProcessCounters.threadCPUSeconds() - began
            self.counters.withLock { counters in
                counters.passes += 1
                counters.cpuSeconds += spent
            }
            self.finished.signal()
        }
    }
}

/// A host that accepts every report at once; the wrapping ``GuestDiscardingDevice`` discards.
final class AcceptingDevice: PageReportingDevice {
    func report(_ batch: ReportBatch) throws {}
}
