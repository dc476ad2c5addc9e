import BrokerProtocol

/// The limits and timings of guest sessions.
public struct SessionConfiguration: Hashable, Sendable {
    /// The most the broker accepts as the session's maximum frame size.
    public var maxFrameSize: UInt32 = WireProtocol.defaultMaxFrameSize
    /// Blocks per report the broker announces (capped to what fits in the frame size).
    public var maxRangesPerReport: UInt32 = WireProtocol.defaultMaxRangesPerReport
    /// The broker's floor for reported orders: smaller blocks are not worth discarding.
    public var minReportOrder: UInt32 = 0
    /// How long a silent connection waits before the broker pings it.
    public var heartbeatInterval: Duration = .milliseconds(Int64(WireProtocol.defaultHeartbeatIntervalMilliseconds))
    /// How long a connection has to send its `ClientHello`.
    public var handshakeTimeout: Duration = .seconds(10)
    /// The broker's version string, sent in `ServerHello`.
    public var brokerVersion = "pagebrokerd 0.1"

    public init() {}

    /// Silence after which the peer counts as gone: three heartbeat intervals.
    public var idleTimeout: Duration { self.heartbeatInterval * Int(WireProtocol.heartbeatMissLimit) }
}

/// What the guest said about itself in its `ClientHello`, once checked.
public struct GuestGeometry: Hashable, Sendable {
    public var pageSize: UInt32
    public var totalPages: UInt64
    public var minOrder: UInt32
    public var maxOrder: UInt32
    public var agentVersion: String

    public init(pageSize: UInt32, totalPages: UInt64, minOrder: UInt32, maxOrder: UInt32, agentVersion: String) {
        self.pageSize = pageSize
        self.totalPages = totalPages
        self.minOrder = minOrder
        self.maxOrder = maxOrder
        self.agentVersion = agentVersion
    }
}
