import BrokerProtocol
import TLSTransport

/// Where the broker is and how the agent talks to it.
public struct AgentConfiguration: Sendable {
    /// How the connection is secured.
    public enum Transport: Sendable {
        /// Mutual TLS: `context` must be a client-role context with the guest's certificate;
        /// `serverHostname` is what the broker's certificate must name.
        case tls(TLSContext, serverHostname: String?)
        /// No TLS. The broker refuses this; it exists for tests against in-process servers.
        case plaintext
    }

    /// The broker's host name or address.
    public var host: String
    /// The broker's TCP port.
    public var port: Int
    /// TLS or, for tests, nothing.
    public var transport: Transport
    /// Sent in `ClientHello`, for the broker's logs.
    public var agentVersion: String
    /// The largest frame the agent proposes (0 stands for 65536); the broker may lower it.
    public var maxFrameSize: Int
    /// How long a report waits for its result before it fails (the engine then puts the pages
    /// back unmarked).
    public var reportTimeout: Duration
    /// How long to wait for `ServerHello` once the connection is up.
    public var helloTimeout: Duration
    /// How long a TCP connect may take.
    public var connectTimeout: Duration
    /// How often collected reuse runs are sent when no report pushes them out earlier.
    public var reuseFlushInterval: Duration
    /// Delays between connection attempts; reset when a session is established.
    public var reconnectBackoff: ReconnectBackoff

    /// Creates a configuration with the defaults described in `docs/agent.md`.
    public init(
        host: String,
        port: Int,
        transport: Transport,
        agentVersion: String = AgentConfiguration.defaultAgentVersion,
        maxFrameSize: Int = Int(WireProtocol.defaultMaxFrameSize),
        reportTimeout: Duration = .seconds(1),
        helloTimeout: Duration = .seconds(10),
        connectTimeout: Duration = .seconds(5),
        reuseFlushInterval: Duration = .milliseconds(20),
        reconnectBackoff: ReconnectBackoff = ReconnectBackoff()
    ) {
        self.host = host
        self.port = port
        self.transport = transport
        self.agentVersion = agentVersion
        self.maxFrameSize = maxFrameSize
        self.reportTimeout = reportTimeout
        self.helloTimeout = helloTimeout
        self.connectTimeout = connectTimeout
        self.reuseFlushInterval = reuseFlushInterval
        self.reconnectBackoff = reconnectBackoff
    }

    /// The version string sent unless configured otherwise.
    public static let defaultAgentVersion = "pagebroker-agent 0.1.0"
}

/// What a connection has done since it was created.
public struct AgentStatistics: Sendable, Hashable {
    /// TCP connection attempts.
    public var connectAttempts = 0
    /// Sessions established (`ServerHello` received).
    public var sessions = 0
    /// Reports written to the broker.
    public var reportsSent = 0
    /// Reports the broker accepted.
    public var reportsAccepted = 0
    /// Reports the broker answered with another reason.
    public var reportsRefused = 0
    /// Reports that got no result in time.
    public var reportsTimedOut = 0
    /// Reports that failed because the connection ended, or were never sent.
    public var reportsNotDelivered = 0
    /// Results that arrived after their report timed out.
    public var lateResults = 0
    /// `Reuse` frames sent and the pages they carried.
    public var reuseFrames = 0
    public var reusePagesSent = 0
    /// `Sync` chunks sent, and pages in them, over all sessions.
    public var syncChunks = 0
    public var syncPages = 0
    /// Sessions the broker ended with `Goodbye(SESSION_REPLACED)`: another agent with this
    /// guest's identity connected. More than one usually means two agents share a certificate.
    public var sessionsReplaced = 0
    /// The most recent session the broker granted.
    public var lastSession: SessionInfo?

    public init() {}

    /// Sessions after the first: how often the agent came back after losing the broker.
    public var reconnects: Int { max(0, self.sessions - 1) }
}
