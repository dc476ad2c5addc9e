import BrokerProtocol
import PageReporting

/// Why the agent could not get a report accepted, or why a session ended.
///
/// Thrown by ``RemoteReportingDevice/report(_:)`` into the reporting engine, which then takes
/// its error path: the blocks go back to the free lists unmarked and the pass stops. The
/// ``retryAfter`` hint (from the broker's `retry_after_ms`, or the device's own backoff) tells
/// the engine when to try again, so refused memory is not forgotten until the next large free.
public struct AgentError: Error, Hashable, Sendable, CustomStringConvertible, ReportRetryHint {
    /// A stable identifier for the kind of failure, safe to match on and to log.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The stable number; never reused or renumbered.
        public let rawValue: Int
        /// The stable name, as logs and metrics show it.
        public let name: String

        private init(_ rawValue: Int, _ name: String) {
            self.rawValue = rawValue
            self.name = name
        }

        public static func == (lhs: Code, rhs: Code) -> Bool { lhs.rawValue == rhs.rawValue }
        public func hash(into hasher: inout Hasher) { hasher.combine(self.rawValue) }
        public var description: String { self.name }

        /// No session is established (connecting, syncing, or the broker is away): the report
        /// fails at once rather than waiting for a broker that may not come back soon.
        public static let notConnected = Code(1, "not_connected")
        /// No result arrived within the report timeout. The broker may still account the report;
        /// the agent then resynchronises (see `docs/agent.md`).
        public static let timedOut = Code(2, "timed_out")
        /// The connection ended while the report was outstanding.
        public static let disconnected = Code(3, "disconnected")
        /// The broker answered with a reason other than `OK`; ``AgentError/reason`` says which.
        public static let refused = Code(4, "refused")
        /// The batch breaks a limit the broker announced in `ServerHello` (blocks per report,
        /// smallest order); it was not sent because the broker would refuse it.
        public static let outsideSessionLimits = Code(5, "outside_session_limits")
        /// The broker broke the protocol (a frame it must not send, a bad hello).
        public static let protocolViolation = Code(6, "protocol_violation")
        /// The broker sent `Error`; ``AgentError/reason`` holds its code.
        public static let brokerError = Code(7, "broker_error")
        /// The agent is stopping or stopped.
        public static let shutDown = Code(8, "shut_down")
        /// The frame could not be encoded within the negotiated frame size.
        public static let frameTooLarge = Code(9, "frame_too_large")
        /// The broker ended the session with `Goodbye(SESSION_REPLACED)`: a newer session with
        /// this guest's identity (another agent, or this one reconnecting) took over.
        public static let sessionReplaced = Code(10, "session_replaced")
        /// Host discard: the broker's memory socket cannot be reached (it does not exist, refuses
        /// connections, or this process may not open it); the errno is in the message.
        public static let memorySocketUnavailable = Code(11, "memory_socket_unavailable")
        /// Host discard: the broker refused to attach the guest's memory;
        /// ``AgentError/memoryCode`` says why (`docs/protocol.md`, "Memory socket").
        public static let memoryAttachRefused = Code(12, "memory_attach_refused")
        /// Host discard: the connection that keeps the memory attached ended, or the exchange on
        /// it failed (the broker stopped, restarted, or broke the memory protocol).
        public static let memoryDetached = Code(13, "memory_detached")
        /// Host discard needs memory the broker can hold: a memfd or hugetlb backing (a file
        /// descriptor), not anonymous memory or frames that are numbers only.
        public static let memoryNotShareable = Code(14, "memory_not_shareable")
    }

    /// What went wrong.
    public var code: Code
    /// The broker's reason code, for ``Code/refused`` and ``Code/brokerError``.
    public var reason: Pagebroker_V1_ReasonCode?
    /// The broker's answer on the memory socket, for ``Code/memoryAttachRefused``.
    public var memoryCode: Pagebroker_V1_MemoryCode?
    /// When the engine should try again; `nil` for the engine's usual behaviour.
    public var retryAfter: Duration?
    /// Detail for humans; never parse it.
    public var message: String

    /// Creates an error.
    public init(
        code: Code,
        reason: Pagebroker_V1_ReasonCode? = nil,
        memoryCode: Pagebroker_V1_MemoryCode? = nil,
        retryAfter: Duration? = nil,
        message: String = ""
    ) {
        self.code = code
        self.reason = reason
        self.memoryCode = memoryCode
        self.retryAfter = retryAfter
        self.message = message
    }

    public var description: String {
        var text = "AgentError(\(self.code)"
        if let reason { text += ", \(reason.stableName)" }
        if let memoryCode { text += ", \(memoryCode.stableName)" }
        if let retryAfter { text += ", retry after \(retryAfter)" }
        if !self.message.isEmpty { text += ": \(self.message)" }
        return text + ")"
    }
}
