/// A tenant's counters: monotonic totals since the broker started.
public struct TenantCounters: Hashable, Sendable {
    /// Reports accepted and accounted.
    public var reportsOK = 0
    /// Reports refused, by the protocol's numeric reason code.
    public var reportsFailedByReason: [Int: Int] = [:]
    /// Bytes that reports added to the tenant's discarded memory. A block already discarded
    /// (a merged block reported again) adds nothing, so this is not the bytes the reports named.
    public var bytesReported = 0
    /// Bytes that reuses took back from the tenant's discarded memory.
    public var bytesReused = 0

    public init() {}

    /// Reports refused, whatever the reason.
    public var reportsFailed: Int { self.reportsFailedByReason.values.reduce(0, +) }
}

/// One tenant's sums, gauges and counters, kept up to date on every change to its guests.
///
/// Read-only outside the module: every change goes through ``Ledger``.
public struct TenantLedger: Hashable, Sendable {
    /// The tenant's name.
    public let tenant: String
    /// How many guests the ledger holds for the tenant, connected or not.
    public internal(set) var guests = 0
    /// How many of the guests are connected (a gauge).
    public internal(set) var guestsConnected = 0
    /// The sum of the guests' ``GuestLedger/reclaimableBytes``, adjusted by each update's delta.
    public internal(set) var reclaimableBytes = 0
    /// The tenant's counters.
    public internal(set) var counters = TenantCounters()

    init(tenant: String) { self.tenant = tenant }
}
