import PageReporting

/// Everything a simulation run is made of. The same options and seed give the same run.
public struct SimulationOptions: Sendable, Hashable {
    public var memoryBytes: Int = 4 << 30
    public var pageSize: Int = 4096
    public var workload: WorkloadKind = .idle
    public var duration: Duration = .seconds(120)
    /// `nil`: the engine's default (the pageblock order).
    public var reportOrder: Int?
    public var reporting = PageReportingConfiguration.linux
    public var device: [DeviceBehaviour] = [.ok]
    public var seed: UInt64 = 1
    /// How often the timeline records the discarded figure.
    public var sampleInterval: Duration = .seconds(1)
    /// Whether a reporting engine runs at all (off: the same workload with reporting disabled,
    /// the baseline for overhead measurements).
    public var reportingEnabled = true

    public init() {}

    /// Checks the options, naming the flag at fault.
    public func validate() throws(Units.ParseError) {
        func bad(_ text: String) -> Units.ParseError { Units.ParseError(description: text) }
        guard self.pageSize >= 512, self.pageSize & (self.pageSize - 1) == 0 else {
            throw bad("--page-size must be a power of two of at least 512 bytes")
        }
        guard self.memoryBytes >= self.pageSize * 1024, self.memoryBytes % self.pageSize == 0 else {
            throw bad("--memory must be a multiple of the page size and at least 1024 pages")
        }
        guard self.memoryBytes / self.pageSize < Int(UInt32.max) else {
            throw bad("--memory is too large for the page size")
        }
        if let order = self.reportOrder, !(0...10).contains(order) { throw bad("--report-order must be in 0...10") }
        guard self.reporting.capacity > 0, self.reporting.capacity <= 4096 else {
            throw bad("--capacity must be in 1...4096")
        }
        guard self.duration > .zero else { throw bad("--duration must be positive") }
        guard self.reporting.delay >= .zero else { throw bad("--delay must not be negative") }
        guard self.sampleInterval > .zero else { throw bad("--sample-interval must be positive") }
    }
}

/// The workloads the simulator can run.
public enum WorkloadKind: String, CaseIterable, Sendable, Hashable {
    /// Boots, allocates a resident set, then does nothing: how fast does memory go back?
    case idle
    /// Steady allocate/free of mostly small blocks around a resident set.
    case churn
    /// Repeatedly grabs half of memory page by page, holds it, frees it all.
    case memhog
    /// Grows a working set by order-0 faults, then unmaps half of it at random, again and again.
    case fault
}

/// How the simulated host answers reports.
public enum DeviceBehaviour: Sendable, Hashable, CustomStringConvertible {
    /// Acknowledge at once.
    case ok
    /// Fail every report.
    case fail
    /// Fail each report with this probability.
    case flaky(Double)
    /// Take this long (virtual time) to answer; the workload keeps running meanwhile.
    case latency(Duration)

    /// Parses `ok`, `fail`, `flaky=0.1`, `latency=2ms`, or several joined by commas.
    public static func parseList(_ text: String) throws(Units.ParseError) -> [DeviceBehaviour] {
        var result: [DeviceBehaviour] = []
        for part in text.split(separator: ",") {
            let item = String(part).trimmingSpaces
            if item == "ok" {
                result.append(.ok)
            } else if item == "fail" {
                result.append(.fail)
            } else if item.hasPrefix("flaky=") {
                guard let p = Double(item.dropFirst(6)), p >= 0, p <= 1 else {
                    throw Units.ParseError(description: "--device flaky=P needs a probability in 0...1, got '\(item)'")
                }
                result.append(.flaky(p))
            } else if item.hasPrefix("latency=") {
                result.append(.latency(try Units.parseDuration(String(item.dropFirst(8)))))
            } else {
                throw Units.ParseError(
                    description: "--device '\(item)' is not one of ok, fail, flaky=P, latency=DURATION"
                )
            }
        }
        guard !result.isEmpty else { throw Units.ParseError(description: "--device needs a value") }
        return result
    }

    public var description: String {
        switch self {
        case .ok: return "ok"
        case .fail: return "fail"
        case .flaky(let p): return "flaky=\(p)"
        case .latency(let d): return "latency=\(d)"
        }
    }
}
