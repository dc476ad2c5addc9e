import BrokerProtocol

/// What the guest tells the broker about its memory in `ClientHello`.
public struct GuestGeometry: Sendable, Hashable {
    /// Bytes per page frame; a power of two, at least 4096.
    public var pageSize: Int
    /// Frames in the pool; valid frames are `0 ..< totalPages`.
    public var totalPages: Int
    /// The smallest order the guest reports: its reporting order.
    public var minOrder: Int
    /// The largest order the guest reports: the allocator's `orderCount - 1`.
    public var maxOrder: Int

    /// Creates a geometry.
    public init(pageSize: Int, totalPages: Int, minOrder: Int, maxOrder: Int) {
        self.pageSize = pageSize
        self.totalPages = totalPages
        self.minOrder = minOrder
        self.maxOrder = maxOrder
    }
}

/// The session the broker granted in `ServerHello`, with the defaults of `docs/protocol.md`
/// filled in for fields the broker left unset.
public struct SessionInfo: Sendable, Hashable {
    /// The broker's name for the session, for matching its logs.
    public var sessionID: String
    /// The broker software's version.
    public var brokerVersion: String
    /// The negotiated maximum frame size, length prefix excluded.
    public var maxFrameSize: Int
    /// The most blocks one report may carry.
    public var maxRangesPerReport: Int
    /// The smallest order the broker accepts.
    public var minReportOrder: Int
    /// How often each side pings when it has sent nothing.
    public var heartbeatInterval: Duration
    /// The tenant the broker authenticated from the client certificate.
    public var tenant: String
    /// The guest the broker authenticated from the client certificate.
    public var guest: String
    /// `ServerHello.prior_reports_settled`: no report of an earlier session of this guest will
    /// be discarded after this hello, so the quarantine may release them.
    public var priorReportsSettled: Bool

    /// Creates session information; the defaults are those of an unset `ServerHello` field.
    public init(
        sessionID: String = "",
        brokerVersion: String = "",
        maxFrameSize: Int = Int(WireProtocol.defaultMaxFrameSize),
        maxRangesPerReport: Int = Int(WireProtocol.defaultMaxRangesPerReport),
        minReportOrder: Int = 0,
        heartbeatInterval: Duration = .milliseconds(Int(WireProtocol.defaultHeartbeatIntervalMilliseconds)),
        tenant: String = "",
        guest: String = "",
        priorReportsSettled: Bool = false
    ) {
        self.sessionID = sessionID
        self.brokerVersion = brokerVersion
        self.maxFrameSize = maxFrameSize
        self.maxRangesPerReport = maxRangesPerReport
        self.minReportOrder = minReportOrder
        self.heartbeatInterval = heartbeatInterval
        self.tenant = tenant
        self.guest = guest
        self.priorReportsSettled = priorReportsSettled
    }
}
