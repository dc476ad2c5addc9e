import ArgumentParser
import Foundation
import GuestSimulator
import PageReporting

/// `pagebroker-agent simulate`: the engine in virtual time against a workload, no network.
struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the allocator and free page reporting engine in virtual time against a workload.",
        discussion: """
            Nothing leaves the process: the host is simulated by --device. The same flags and seed \
            give the same output. With --json, one JSON object is printed (keys in docs/simulator.md).
            """
    )

    @Option(help: "Guest memory, e.g. 4GiB, 512MiB.", transform: parseBytes)
    var memory: Int = 4 << 30

    @Option(name: .customLong("page-size"), help: "Page size, e.g. 4KiB.", transform: parseBytes)
    var pageSize: Int = 4096

    @Option(
        help: "Workload: \(WorkloadKind.allCases.map(\.rawValue).joined(separator: ", ")).",
        transform: parseWorkload
    )
    var workload: WorkloadKind = .idle

    @Option(help: "Virtual time to simulate, e.g. 120s, 10m.", transform: parseDuration)
    var duration: Duration = .seconds(120)

    @Option(name: .customLong("report-order"), help: "Lowest order reported (default: the pageblock order, 9).")
    var reportOrder: Int?

    @Option(help: "Blocks per report (PAGE_REPORTING_CAPACITY).")
    var capacity: Int = 32

    @Option(help: "Delay from a request to the pass (PAGE_REPORTING_DELAY), e.g. 2s.", transform: parseDuration)
    var delay: Duration = .seconds(2)

    @Option(help: "Per-list report budget (Linux 5.7): on or off.", transform: parseToggle)
    var budget: Bool = true

    @Option(help: "Free list rotation (Linux 5.7): on or off.", transform: parseToggle)
    var rotation: Bool = true

    @Option(
        name: .customLong("tail-putback"),
        help: "Put reported blocks back at the list tail (Linux 5.10): on or off.",
        transform: parseToggle
    )
    var tailPutback: Bool = true

    @Option(help: "Reporting engine: on, or off for a baseline without reporting.", transform: parseToggle)
    var reporting: Bool = true

    @Option(
        help: "Simulated host: ok, fail, flaky=P, latency=DURATION, or several joined by commas.",
        transform: parseDevice
    )
    var device: [DeviceBehaviour] = [.ok]

    @Option(help: "Random seed.")
    var seed: UInt64 = 1

    @Option(
        name: .customLong("sample-interval"),
        help: "Timeline sampling interval, e.g. 1s.",
        transform: parseDuration
    )
    var sampleInterval: Duration = .seconds(1)

    @Flag(help: "Print one JSON object instead of the summary.")
    var json = false

    @Flag(help: "No progress output on standard error.")
    var quiet = false

    func validate() throws {
        do {
            try self.options.validate()
        } catch {
            throw ValidationError(error.description)
        }
    }

    var options: SimulationOptions {
        var options = SimulationOptions()
        options.memoryBytes = self.memory
        options.pageSize = self.pageSize
        options.workload = self.workload
        options.duration = self.duration
        options.reportOrder = self.reportOrder
        options.reporting = PageReportingConfiguration(
            capacity: self.capacity,
            delay: self.delay,
            budget: self.budget,
            rotation: self.rotation,
            tailPutback: self.tailPutback
        )
        options.reportingEnabled = self.reporting
        options.device = self.device
        options.seed = self.seed
        options.sampleInterval = self.sampleInterval
        return options
    }

    func run() throws {
        let simulation = try Simulation(options: self.options)
        var stderr = FileHandleStream.standardError
        let showProgress = !self.quiet && stderr.isTerminal
        var lastShown = -1
        let result = simulation.run { fraction in
            guard showProgress else { return }
            let percent = Int(fraction * 100)
            guard percent / 5 != lastShown / 5 else { return }
            lastShown = percent
            stderr.write("\rsimulating \(self.workload.rawValue): \(percent)%")
            if percent == 100 { stderr.write("\r\u{1B}[K") }
        }
        var stdout = FileHandleStream.standardOutput
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let data = try encoder.encode(result)
            stdout.write(String(decoding: data, as: UTF8.self) + "\n")
        } else {
            stdout.write(result.summary() + "\n")
        }
        if result.invariants != "ok" || result.isolatedPages != 0 {
            throw ExitCode.failure
        }
    }
}

private func parseBytes(_ text: String) throws -> Int {
    do { return try Units.parseBytes(text) } catch { throw ValidationError(error.description) }
}

private func parseDuration(_ text: String) throws -> Duration {
    do { return try Units.parseDuration(text) } catch { throw ValidationError(error.description) }
}

private func parseDevice(_ text: String) throws -> [DeviceBehaviour] {
    do { return try DeviceBehaviour.parseList(text) } catch { throw ValidationError(error.description) }
}

private func parseToggle(_ text: String) throws -> Bool {
    switch text {
    case "on", "true", "yes": return true
    case "off", "false", "no": return false
    default: throw ValidationError("'\(text)' is not on or off")
    }
}

private func parseWorkload(_ text: String) throws -> WorkloadKind {
    guard let kind = WorkloadKind(rawValue: text) else {
        throw ValidationError(
            "'\(text)' is not a workload; use one of \(WorkloadKind.allCases.map(\.rawValue).joined(separator: ", "))"
        )
    }
    return kind
}
