/// A tenant's counters: monotonic totals since the broker started.
///
/// Widths, from the protocol's limits (`ProtocolLimits`): one accepted report adds at most one
/// guest's pool, 2^52 bytes. The byte counters are `Int128`, so they overflow only after 2^75
/// full-pool reports; at a billion reports a second (far beyond what one broker handles) that
/// is over a million years. The report counts grow by one per report and are `Int`: 2^63
/// reports at a billion a second take 292 years.
public struct TenantCounters: Hashable, Sendable {
    /// Reports accepted and accounted.
    public var reportsOK = 0
    /// Reports refused, by the protocol's numeric reason code.
    public var reportsFailedByReason: [Int: Int] = [:]
    /// Bytes that reports added to the tenant's discarded memory. A block already discarded
    /// (a merged block reported again) adds nothing, so this is not the bytes the reports named.
    public var bytesReported: Int128 = 0
    /// Bytes that reuses took back from the tenant's discarded memory.
    public var bytesReused: Int128 = 0

    public init() {}

    /// Reports refused, whatever the reason.
    public var reportsFailed: Int { self.reportsFailedByReason.values.saturatingSum() }
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
    ///
    /// `Int128` because an `Int` is not enough at the protocol's limits: a guest holds at most
    /// 2^52 bytes (`ProtocolLimits.maxPoolBytes`; the ledger itself guarantees 2^62, see
    /// ``GuestLedger/reclaimableBytes``), so 2^11 guests of one tenant could reach 2^63. The
    /// guests of all tenants together number fewer than 2^63 (each record takes memory), so a
    /// sum is below 2^62 × 2^63 = 2^125 < 2^127: it cannot overflow. Figures handed to the admin
    /// API and metrics saturate at `Int.max` (see ``TenantSnapshot``).
    public internal(set) var reclaimableBytes: Int128 = 0
    /// The tenant's counters.
    public internal(set) var counters = TenantCounters()

    init(tenant: String) { self.tenant = tenant }
}
