// The admin API's snapshot types: what the broker sends and `pagebrokerctl` prints. The
// broker makes them from its ledger (Broker's LedgerSnapshots.swift).

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
    /// Host-side discard: the kernel's allocated bytes of the memory attached for the tenant's
    /// guests (`st_blocks * 512` of each descriptor, read when asked), summed.
    public var residentBytes = 0
    /// Bytes punched out of the tenant's guests' memory since the broker started.
    public var discardedBytes = 0
    /// Failed punches by errno name (`EPERM`).
    public var discardFailuresByErrno: [String: Int] = [:]

    public init(
        tenant: String,
        guests: Int,
        guestsConnected: Int,
        reclaimableBytes: Int,
        reportsOK: Int,
        reportsFailed: Int,
        reportsFailedByReason: [Int: Int],
        bytesReported: Int,
        bytesReused: Int,
        paused: Bool = false
    ) {
        self.tenant = tenant
        self.guests = guests
        self.guestsConnected = guestsConnected
        self.reclaimableBytes = reclaimableBytes
        self.reportsOK = reportsOK
        self.reportsFailed = reportsFailed
        self.reportsFailedByReason = reportsFailedByReason
        self.bytesReported = bytesReported
        self.bytesReused = bytesReused
        self.paused = paused
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
        case residentBytes = "resident_bytes"
        case discardedBytes = "discarded_bytes"
        case discardFailuresByErrno = "discard_failures_by_errno"
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
    /// The guest's memory is attached on the memory socket (host-side discard).
    public var memoryAttached = false
    /// With memory attached, the kernel's allocated bytes of it (`st_blocks * 512`), read when
    /// asked; `nil` otherwise.
    public var residentBytes: Int?
    /// Bytes punched out of the guest's memory since the broker started.
    public var discardedBytes = 0
    /// Failed punches by errno name.
    public var discardFailuresByErrno: [String: Int] = [:]
    /// Why discard is inhibited (`pagebrokerctl: snapshot`), or `nil`.
    public var discardInhibitedBy: String?
    /// The guest itself is paused (`pagebrokerctl pause TENANT GUEST`).
    public var paused = false

    public init(
        guest: String,
        tenant: String,
        connected: Bool,
        reclaimableBytes: Int,
        frames: Int,
        ranges: Int,
        pageSize: Int,
        syncing: Bool
    ) {
        self.guest = guest
        self.tenant = tenant
        self.connected = connected
        self.reclaimableBytes = reclaimableBytes
        self.frames = frames
        self.ranges = ranges
        self.pageSize = pageSize
        self.syncing = syncing
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
        case memoryAttached = "memory_attached"
        case residentBytes = "resident_bytes"
        case discardedBytes = "discarded_bytes"
        case discardFailuresByErrno = "discard_failures_by_errno"
        case discardInhibitedBy = "discard_inhibited_by"
        case paused
    }
}

/// Figures over all tenants, for status lines.
public struct LedgerTotals: Hashable, Sendable {
    public var tenants = 0
    public var guests = 0
    public var guestsConnected = 0
    /// Exact: see the broker's `TenantLedger.reclaimableBytes` for why an `Int128` cannot overflow.
    public var reclaimableBytes: Int128 = 0

    public init() {}
}
