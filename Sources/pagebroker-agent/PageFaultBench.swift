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
/// memory really goes back to the kernel and faults in again) and off, alternated
/// (``PageFaultPlan``), each phase from the same starting state (``PageFaultPhase``).
struct PageFaultBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "page-fault",
        abstract: "Page-fault cost of free page reporting: allocate, write, free, with reporting on and off.",
        // The parser does not wrap usage lines, and the generated one is 225 columns: broken by
        // hand where an 80-column terminal needs it (later lines get the parser's indent).
        usage: """
            pagebroker-agent bench page-fault [--threads <n>] [--order <k>]
            [--duration <d>] [--repeat <r>] [--memory <size>] [--backing <backing>]
            [--delay <d>] [--report-order <k>] [--no-warm-up] [--time-flush] [--json]
            """,
        discussion:
            "After a warm-up phase that is not counted, each of --repeat rounds runs --duration with reporting off and --duration with it on, off first in odd rounds and on first in even ones. Every phase starts from a fresh allocator over a prefaulted pool; with reporting on, the free memory is reported and discarded before the clock starts (the kernel's flush after boot), unless --time-flush. ops/s is blocks allocated, written and freed per second over all threads; the ratio is the median of the rounds' on/off."
    )

    @Option(help: "Threads allocating at once.")
    var threads: Int = 2

    @Option(help: "Order of each block (9: the THP size with 4 KiB pages).")
    var order: Int = 9

    @Option(help: "Length of each phase, e.g. 5s.", transform: parseTimeSpan)
    var duration: Duration = .seconds(5)

    @Option(help: "Rounds of one phase off and one on.")
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

    @Flag(name: .customLong("warm-up"), inversion: .prefixedNo, help: "Run an uncounted phase first.")
    var warmUp = true

    @Flag(name: .customLong("time-flush"), help: "Start the clock before the initial flush, not after it.")
    var timeFlush = false

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
        let runner = PageFaultPhase(
            memory: memory,
            configuration: configuration,
            threads: self.threads,
            order: self.order,
            duration: self.duration,
            delay: self.delay,
            reportOrder: self.reportOrder ?? (self.backing == .hugetlb ? 0 : configuration.pageblockOrder),
            timeFlush: self.timeFlush
        )

        let loadBefore = LoadAverage.read()
        var stderr = FileHandleStream.standardError
        var phases: [PageFaultPhaseFigures] = []
        for phase in PageFaultPlan(rounds: self.repeat, warmUp: self.warmUp).phases {
            let figures = try runner.run(phase)
            stderr.write(figures.line + "\n")
            phases.append(figures)
        }
        let loadAfter = LoadAverage.read()
        let counted = phases.filter { $0.round > 0 }.sorted { $0.round < $1.round }
        let rounds = PageFaultRounds(
            off: counted.filter { !$0.reporting }.map(\.opsPerSecond),
            on: counted.filter(\.reporting).map(\.opsPerSecond)
        )
        let perCPU = PageFaultRounds(
            off: counted.filter { !$0.reporting }.map(\.opsPerCPUSecond),
            on: counted.filter(\.reporting).map(\.opsPerCPUSecond)
        )
        let interval = rounds.ratioInterval()
        let cpuInterval = perCPU.ratioInterval()
        let result = PageFaultResult(
            opsPerSecondOn: rounds.medianOn,
            opsPerSecondOff: rounds.medianOff,
            ratio: rounds.medianRatio,
            ratioInterval: interval.map { [$0.lowerBound, $0.upperBound] },
            roundRatios: rounds.ratios,
            opsPerCPUSecondOn: perCPU.medianOn,
            opsPerCPUSecondOff: perCPU.medianOff,
            cpuRatio: perCPU.medianRatio,
            cpuRatioInterval: cpuInterval.map { [$0.lowerBound, $0.upperBound] },
            roundCPURatios: perCPU.ratios,
            discardedBytes: phases.reduce(0) { $0 + $1.flushDiscardedBytes + $1.discardedBytes },
            zeroingSkippedBytes: counted.reduce(0) { $0 + $1.zeroingSkippedBytes },
            roundsOn: rounds.on,
            roundsOff: rounds.off,
            phases: phases,
            threads: self.threads,
            order: self.order,
            pageSize: pageSize,
            poolBytes: memory.length,
            backing: self.backing.rawValue,
            secondsPerPhase: Units.seconds(self.duration),
            warmUp: self.warmUp,
            timeFlush: self.timeFlush,
            loadAverageBefore: loadBefore,
            loadAverageAfter: loadAfter
        )
        stderr.write(
            "page-fault: order \(self.order), \(self.threads) thread\(self.threads == 1 ? "" : "s"), \(self.backing.rawValue), medians of \(self.repeat) rounds: "
                + "on \(String(format: "%.0f", result.opsPerSecondOn)) ops/s, off \(String(format: "%.0f", result.opsPerSecondOff)) ops/s, "
                + "ratio \(String(format: "%.4f", result.ratio)) (\(Self.describe(interval))rounds: \(rounds.ratios.map { String(format: "%.3f", $0) }.joined(separator: " "))), "
                + "per CPU second \(String(format: "%.4f", result.cpuRatio)) (\(Self.describe(cpuInterval))rounds: \(perCPU.ratios.map { String(format: "%.3f", $0) }.joined(separator: " "))), "
                + "discarded \(Units.formatBytes(result.discardedBytes)), load average \(loadBefore.map { Units.fixed($0, 2) } ?? "?") -> \(loadAfter.map { Units.fixed($0, 2) } ?? "?")\n"
        )
        if self.json {
            var stdout = FileHandleStream.standardOutput
            stdout.write(result.json() + "\n")
        }
    }
}

extension PageFaultBench {
    /// "95% CI a–b; " for the summary line, or why there is none.
    static func describe(_ interval: ClosedRange<Double>?) -> String {
        guard let interval else { return "no 95% CI with fewer than 6 rounds; " }
        return
            "95% CI of the median \(String(format: "%.3f", interval.lowerBound))–\(String(format: "%.3f", interval.upperBound)); "
    }
}

/// The one-minute load average (`/proc/loadavg`), to say how busy the machine was.
enum LoadAverage {
    static func read() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return nil }
        return text.split(separator: " ").first.flatMap { Double($0) }
    }
}

/// What `bench page-fault --json` prints.
struct PageFaultResult: Encodable {
    var opsPerSecondOn: Double
    var opsPerSecondOff: Double
    var ratio: Double
    /// A 95% confidence interval for the median ratio (``PageFaultRounds/ratioInterval(confidence:)``),
    /// `[low, high]`; absent with fewer than 6 rounds.
    var ratioInterval: [Double]?
    var roundRatios: [Double]
    /// The same per second of CPU time (``PageFaultPhaseFigures/opsPerCPUSecond``).
    var opsPerCPUSecondOn: Double
    var opsPerCPUSecondOff: Double
    var cpuRatio: Double
    var cpuRatioInterval: [Double]?
    var roundCPURatios: [Double]
    var discardedBytes: Int
    var zeroingSkippedBytes: Int
    var roundsOn: [Double]
    var roundsOff: [Double]
    var phases: [PageFaultPhaseFigures]
    var threads: Int
    var order: Int
    var pageSize: Int
    var poolBytes: Int
    var backing: String
    var secondsPerPhase: Double
    var warmUp: Bool
    var timeFlush: Bool
    var loadAverageBefore: Double?
    var loadAverageAfter: Double?

    enum CodingKeys: String, CodingKey {
        case opsPerSecondOn = "ops_per_second_on"
        case opsPerSecondOff = "ops_per_second_off"
        case ratio
        case ratioInterval = "ratio_interval_95"
        case roundRatios = "round_ratios"
        case opsPerCPUSecondOn = "ops_per_cpu_second_on"
        case opsPerCPUSecondOff = "ops_per_cpu_second_off"
        case cpuRatio = "cpu_ratio"
        case cpuRatioInterval = "cpu_ratio_interval_95"
        case roundCPURatios = "round_cpu_ratios"
        case discardedBytes = "discarded_bytes"
        case zeroingSkippedBytes = "zeroing_skipped_bytes"
        case roundsOn = "rounds_on"
        case roundsOff = "rounds_off"
        case phases, threads, order, backing
        case pageSize = "page_size"
        case poolBytes = "pool_bytes"
        case secondsPerPhase = "seconds_per_phase"
        case warmUp = "warm_up"
        case timeFlush = "time_flush"
        case loadAverageBefore = "load_average_before"
        case loadAverageAfter = "load_average_after"
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
