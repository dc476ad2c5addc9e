/// One sample of the timeline.
public struct TimelinePoint: Sendable, Hashable, Codable {
    /// Virtual seconds since the start.
    public var t: Double
    /// Bytes the host held discarded at that moment.
    public var discardedBytes: Int

    enum CodingKeys: String, CodingKey {
        case t
        case discardedBytes = "discarded_bytes"
    }
}

/// The figures of a finished simulation. Encodes to the JSON `pagebroker-agent simulate --json`
/// prints; every key is documented in `docs/simulator.md`.
public struct SimulationResult: Sendable, Hashable, Codable {
    public var workload: String
    public var seed: UInt64
    public var virtualSeconds: Double
    public var totalBytes: Int
    public var pageSize: Int
    public var freeBytes: Int
    /// Free memory in blocks at or above the reporting order: what reporting can reach.
    public var reportableFreeBytes: Int
    /// Memory the host holds discarded now (the guest's own record).
    public var discardedBytes: Int
    public var reportedBytesTotal: Int
    public var reusedBytesTotal: Int
    public var reports: Int
    public var reportsFailed: Int
    public var passes: Int
    public var isolatedPages: Int
    public var allocations: Int
    public var frees: Int
    public var allocationFailures: Int
    /// `ok`, or the first broken allocator invariant.
    public var invariants: String
    /// When discarded memory first reached 99% of the reportable free memory; `nil` if never.
    public var timeToDiscard99PctSeconds: Double?
    /// Passes the engine had started by then.
    public var passesToDiscard99Pct: Int?
    public var reportingEnabled: Bool
    public var reportOrder: Int
    public var capacity: Int
    public var delaySeconds: Double
    public var budget: Bool
    public var rotation: Bool
    public var tailPutback: Bool
    public var device: String
    public var timeline: [TimelinePoint]

    enum CodingKeys: String, CodingKey {
        case workload, seed, invariants, reports, passes, allocations, frees, budget, rotation, device, timeline,
            capacity
        case virtualSeconds = "virtual_seconds"
        case totalBytes = "total_bytes"
        case pageSize = "page_size"
        case freeBytes = "free_bytes"
        case reportableFreeBytes = "reportable_free_bytes"
        case discardedBytes = "discarded_bytes"
        case reportedBytesTotal = "reported_bytes_total"
        case reusedBytesTotal = "reused_bytes_total"
        case reportsFailed = "reports_failed"
        case isolatedPages = "isolated_pages"
        case allocationFailures = "allocation_failures"
        case timeToDiscard99PctSeconds = "time_to_discard_99pct_seconds"
        case passesToDiscard99Pct = "passes_to_discard_99pct"
        case reportingEnabled = "reporting_enabled"
        case reportOrder = "report_order"
        case delaySeconds = "delay_seconds"
        case tailPutback = "tail_putback"
    }

    // Written by hand so that "never reached" is an explicit null rather than a missing key.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.workload, forKey: .workload)
        try container.encode(self.seed, forKey: .seed)
        try container.encode(self.virtualSeconds, forKey: .virtualSeconds)
        try container.encode(self.totalBytes, forKey: .totalBytes)
        try container.encode(self.pageSize, forKey: .pageSize)
        try container.encode(self.freeBytes, forKey: .freeBytes)
        try container.encode(self.reportableFreeBytes, forKey: .reportableFreeBytes)
        try container.encode(self.discardedBytes, forKey: .discardedBytes)
        try container.encode(self.reportedBytesTotal, forKey: .reportedBytesTotal)
        try container.encode(self.reusedBytesTotal, forKey: .reusedBytesTotal)
        try container.encode(self.reports, forKey: .reports)
        try container.encode(self.reportsFailed, forKey: .reportsFailed)
        try container.encode(self.passes, forKey: .passes)
        try container.encode(self.isolatedPages, forKey: .isolatedPages)
        try container.encode(self.allocations, forKey: .allocations)
        try container.encode(self.frees, forKey: .frees)
        try container.encode(self.allocationFailures, forKey: .allocationFailures)
        try container.encode(self.invariants, forKey: .invariants)
        try container.encode(self.timeToDiscard99PctSeconds, forKey: .timeToDiscard99PctSeconds)
        try container.encode(self.passesToDiscard99Pct, forKey: .passesToDiscard99Pct)
        try container.encode(self.reportingEnabled, forKey: .reportingEnabled)
        try container.encode(self.reportOrder, forKey: .reportOrder)
        try container.encode(self.capacity, forKey: .capacity)
        try container.encode(self.delaySeconds, forKey: .delaySeconds)
        try container.encode(self.budget, forKey: .budget)
        try container.encode(self.rotation, forKey: .rotation)
        try container.encode(self.tailPutback, forKey: .tailPutback)
        try container.encode(self.device, forKey: .device)
        try container.encode(self.timeline, forKey: .timeline)
    }
}
