import ArgumentParser
import BuddyAllocator
import Foundation
import GuestAgent
import GuestMemory
import GuestSimulator
import PageReporting
import Synchronization

/// `pagebroker-agent bench page-fault`: the seed's figure of merit, the cost of reporting to
/// page faults (will-it-scale `page_fault1` with THP: -0.81%, `page_fault2`: -1.70%, 16 tasks),
/// over real memory: N threads each allocate a zeroed block of order K, write every page, free
/// it, over and over, with reporting on (an in-process device that discards at once, so freed
/// memory really goes back to the kernel and faults in again) and off, interleaved.
struct PageFaultBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "page-fault",
        abstract: "Page-fault cost of free page reporting: allocate, write, free, with reporting on and off.",
        // The parser does not wrap usage lines, and the generated one is 225 columns: broken by
        // hand where an 80-column terminal needs it (later lines get the parser's indent).
        usage: """
            pagebroker-agent bench page-fault [--threads <n>] [--order <k>]
            [--duration <d>] [--repeat <r>] [--memory <size>] [--backing <backing>]
            [--delay <d>] [--report-order <k>] [--json]
            """,
        discussion:
            "Each of --repeat rounds runs --duration with reporting off, then --duration with it on, on a pool prefaulted before each phase; ops/s is blocks allocated, written and freed per second over all threads."
    )

    @Option(help: "Threads allocating at once.")
    var threads: Int = 2

    @Option(help: "Order of each block (9: the THP size with 4 KiB pages).")
    var order: Int = 9

    @Option(help: "Length of each phase, e.g. 5s.", transform: parseTimeSpan)
    var duration: Duration = .seconds(5)

    @Option(help: "Rounds of off then on.")
    var `repeat`: Int = 3

    @Option(
        help: "Pool size, e.g. 512MiB (default: 256MiB, or 64 blocks per thread if more).",
        transform: parseByteSize
    )
    var memory: Int?

    @Option(help: "What is behind the frames: memfd, anonymous or hugetlb.")
    var backing: BackingChoice = .memfd

    @Option(help: "Delay from a request to the reporting pass, e.g. 2s (the kernel's).", transform: parseTimeSpan)
    var delay: Duration = .seconds(2)

    @Option(name: .customLong("report-order"), help: "Lowest order reported (default: the pageblock order, 9).")
    var reportOrder: Int?

    @Flag(help: "Print one JSON object at the end.")
    var json = false

    func validate() throws {
        guard self.threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard self.repeat >= 1 else { throw ValidationError("--repeat must be at least 1") }
        guard self.duration > .zero else { throw ValidationError("--duration must be positive") }
        guard self.backing != .none else { throw ValidationError("--backing none has no memory to fault") }
        guard (0..<11).contains(self.order) else { throw ValidationError("--order must be in 0..<11") }
    }

    func run() throws {
        let pageSize = try resolvePageSize(self.backing, requested: nil)
        let blockBytes = pageSize << self.order
        let poolBytes = self.memory ?? max(256 << 20, self.threads * blockBytes * 64)
        let configuration = AllocatorConfiguration(memoryBytes: poolBytes, pageSize: pageSize)
        guard
            let memory = try makeGuestMemory(
                self.backing,
                memory: configuration.frameCount * pageSize,
                pageSize: pageSize
            )
        else { throw ExitCode.failure }
        let allocator = try BuddyAllocator(configuration)
        let reportOrder = self.reportOrder ?? (self.backing == .hugetlb ? 0 : configuration.pageblockOrder)
        let device = GuestDiscardingDevice(
            wrapping: AcceptingDevice(),
            memory: memory,
            repopulateOnFailure: false,
            takeBack: { _ in }
        )
        let zeroing = ZeroedAllocator(allocator: allocator, memory: memory, discardedReadsZero: true)

        var on: [Double] = []
        var off: [Double] = []
        var stderr = FileHandleStream.standardError
        for round in 1...self.repeat {
            for reporting in [false, true] {
                // Both phases start from a fully resident pool, as a guest that has used its memory.
                try memory.prefault()
                let engine =
                    reporting
                    ? try PageReportingEngine.register(
                        device: device,
                        allocator: allocator,
                        scheduler: DispatchReportingScheduler(label: "pagebroker.bench.reporting"),
                        configuration: PageReportingConfiguration(delay: self.delay, orderOverride: reportOrder)
                    ) : nil
                let rate = self.phase(zeroing: zeroing)
                engine?.unregister()
                if reporting { on.append(rate) } else { off.append(rate) }
                stderr.write(
                    "round \(round) reporting \(reporting ? "on " : "off"): \(String(format: "%.0f", rate)) ops/s\n"
                )
            }
        }
        try allocator.validate()
        let meanOn = on.reduce(0, +) / Double(on.count)
        let meanOff = off.reduce(0, +) / Double(off.count)
        let ratio = meanOff > 0 ? meanOn / meanOff : 0
        let discarded = device.statistics.discardedBytes
        let result = PageFaultResult(
            opsPerSecondOn: meanOn,
            opsPerSecondOff: meanOff,
            ratio: ratio,
            discardedBytes: discarded,
            zeroingSkippedBytes: zeroing.skippedBytes,
            roundsOn: on,
            roundsOff: off,
            threads: self.threads,
            order: self.order,
            pageSize: pageSize,
            poolBytes: memory.length,
            backing: self.backing.rawValue,
            secondsPerPhase: Units.seconds(self.duration)
        )
        stderr.write(
            "page-fault: order \(self.order), \(self.threads) threads, \(self.backing.rawValue): "
                + "on \(String(format: "%.0f", meanOn)) ops/s, off \(String(format: "%.0f", meanOff)) ops/s, "
                + "ratio \(String(format: "%.4f", ratio)), discarded \(Units.formatBytes(discarded))\n"
        )
        if self.json {
            var stdout = FileHandleStream.standardOutput
            stdout.write(result.json() + "\n")
        }
    }

    /// Runs the threads for one phase; returns blocks per second over all of them.
    private func phase(zeroing: ZeroedAllocator) -> Double {
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
        let elapsed = Units.seconds(ContinuousClock.now - began)
        return Double(operations.load(ordering: .relaxed)) / elapsed
    }
}

/// A host that accepts every report at once; the wrapping ``GuestDiscardingDevice`` discards.
private final class AcceptingDevice: PageReportingDevice {
    func report(_ batch: ReportBatch) throws {}
}

/// What `bench page-fault --json` prints.
struct PageFaultResult: Encodable {
    var opsPerSecondOn: Double
    var opsPerSecondOff: Double
    var ratio: Double
    var discardedBytes: Int
    var zeroingSkippedBytes: Int
    var roundsOn: [Double]
    var roundsOff: [Double]
    var threads: Int
    var order: Int
    var pageSize: Int
    var poolBytes: Int
    var backing: String
    var secondsPerPhase: Double

    enum CodingKeys: String, CodingKey {
        case opsPerSecondOn = "ops_per_second_on"
        case opsPerSecondOff = "ops_per_second_off"
        case ratio
        case discardedBytes = "discarded_bytes"
        case zeroingSkippedBytes = "zeroing_skipped_bytes"
        case roundsOn = "rounds_on"
        case roundsOff = "rounds_off"
        case threads, order
        case pageSize = "page_size"
        case poolBytes = "pool_bytes"
        case backing
        case secondsPerPhase = "seconds_per_phase"
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
