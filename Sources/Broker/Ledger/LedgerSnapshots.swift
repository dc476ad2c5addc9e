/// One tenant's figures at a moment, for the admin API.
///
/// Figures are `Int`, as the admin API's JSON and metrics take them; the ledger's `Int128` byte
/// sums saturate at `Int.max` (2^63 − 1, 8 EiB) on the way in, which only more than 2^11 guests
/// at the protocol's largest pool can reach. A saturated figure reads as "at least this much"
/// rather than trapping or wrapping negative.
public struct TenantSnapshot: Hashable, Sendable, Codable {
    public var tenant: String
    /// Guests the ledger knows, connected or not.
    public var guests: Int
    public var guestsConnected: Int
    public var reclaimableBytes: Int
    public var reportsOK: Int
    /// Reports refused, whatever the reason.
    public var reportsFailed: Int
    /// Reports refused, by the protocol's numeric reason code.
    public var reportsFailedByReason: [Int: Int]
    public var bytesReported: Int
    public var bytesReused: Int
    /// Whether the tenant's reports are refused with `tenant_paused` (policy, not ledger: set
    /// by the broker core).
    public var paused = false

    public init(_ tenant: TenantLedger) {
        self.tenant = tenant.tenant
        self.guests = tenant.guests
        self.guestsConnected = tenant.guestsConnected
        self.reclaimableBytes = Int(clamping: tenant.reclaimableBytes)
        self.reportsOK = tenant.counters.reportsOK
        self.reportsFailed = tenant.counters.reportsFailed
        self.reportsFailedByReason = tenant.counters.reportsFailedByReason
        self.bytesReported = Int(clamping: tenant.counters.bytesReported)
        self.bytesReused = Int(clamping: tenant.counters.bytesReused)
    }

    // The admin API's JSON names (`pagebrokerctl tenants --json`).
    enum CodingKeys: String, CodingKey {
        case tenant
        case guests
        case guestsConnected = "guests_connected"
        case reclaimableBytes = "reclaimable_bytes"
        case reportsOK = "reports_ok"
        case reportsFailed = "reports_failed"
        case reportsFailedByReason = "reports_failed_by_reason"
        case bytesReported = "bytes_reported"
        case bytesReused = "bytes_reused"
        case paused
    }
}

/// One guest's figures at a moment, for the admin API.
public struct GuestSnapshot: Hashable, Sendable, Codable {
    public var guest: String
    public var tenant: String
    public var connected: Bool
    public var reclaimableBytes: Int
    /// Discarded frames.
    public var frames: Int
    /// Disjoint ranges the discarded frames form: what the ledger's memory for the guest scales with.
    public var ranges: Int
    public var pageSize: Int
    public var syncing: Bool

    public init(_ guest: GuestLedger) {
        self.guest = guest.guest
        self.tenant = guest.tenant
        self.connected = guest.isConnected
        self.reclaimableBytes = guest.reclaimableBytes
        self.frames = guest.discarded.frameCount
        self.ranges = guest.discarded.rangeCount
        self.pageSize = guest.pageSize
        self.syncing = guest.isSyncing
    }

    // The admin API's JSON names (`pagebrokerctl guests --json`).
    enum CodingKeys: String, CodingKey {
        case guest
        case tenant
        case connected
        case reclaimableBytes = "reclaimable_bytes"
        case frames
        case ranges
        case pageSize = "page_size"
        case syncing
    }
}

/// Figures over all tenants, for status lines.
public struct LedgerTotals: Hashable, Sendable {
    public var tenants = 0
    public var guests = 0
    public var guestsConnected = 0
    /// Exact: see ``TenantLedger/reclaimableBytes`` for why an `Int128` cannot overflow.
    public var reclaimableBytes: Int128 = 0

    public init() {}
}
