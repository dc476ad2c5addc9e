import BrokerProtocol

/// One connection on the memory socket, as a value-type state machine: each request returns an
/// ``Action`` for the connection's thread to perform. The rules are docs/protocol.md's "Memory
/// socket": attach first, one response per request, the attachment lasts as long as the
/// connection.
public struct MemoryConnectionStateMachine: Sendable {
    public enum Action: Sendable, Equatable {
        /// Check and attach this request's memory (``MemoryAttachmentValidator``, then the core),
        /// then call ``attached(_:)`` or ``refused(_:)``.
        case attach(Pagebroker_V1_AttachMemory)
        /// Set the attached guest's inhibit, then call ``inhibitSet()``.
        case setInhibited(BrokerCore.MemoryAttachToken, inhibited: Bool, reason: String)
        /// Send this response; the connection stays open.
        case respond(Pagebroker_V1_MemoryResponse)
        /// Send this response, then close the connection (detaching its memory).
        case respondAndClose(Pagebroker_V1_MemoryResponse)
    }

    private enum State: Sendable {
        case awaitingAttach
        case attaching
        case attached(BrokerCore.MemoryAttachToken)
        case closed
    }

    private var state: State = .awaitingAttach

    public init() {}

    /// The attachment this connection holds, if any (to detach when it ends).
    public var token: BrokerCore.MemoryAttachToken? {
        if case .attached(let token) = self.state { return token }
        return nil
    }

    /// A request arrived, or bytes that do not parse as one (`nil`).
    public mutating func receive(_ request: Pagebroker_V1_MemoryRequest?) -> Action {
        guard let request, let body = request.body else {
            return self.close(.protocolViolation, "not a MemoryRequest with a body")
        }
        switch (body, self.state) {
        case (_, .closed), (_, .attaching):
            return self.close(.protocolViolation, "a request while the previous one is unanswered")
        case (.attach(let attach), .awaitingAttach):
            self.state = .attaching
            return .attach(attach)
        case (.attach, .attached):
            // The attachment stays: closing would stop discard for a guest because of a stray request.
            return .respond(Self.response(.protocolViolation, "memory is already attached on this connection"))
        case (.setDiscardInhibited, .awaitingAttach):
            return self.close(.protocolViolation, "the first request must be attach")
        case (.setDiscardInhibited(let inhibit), .attached(let token)):
            return .setInhibited(token, inhibited: inhibit.inhibited, reason: inhibit.reason)
        }
    }

    /// The attach succeeded.
    public mutating func attached(_ token: BrokerCore.MemoryAttachToken) -> Action {
        self.state = .attached(token)
        return .respond(Self.response(.ok, "attached"))
    }

    /// The attach was refused; the connection may try again.
    public mutating func refused(_ refusal: MemoryRefusal) -> Action {
        self.state = .awaitingAttach
        if refusal.code == .shuttingDown { return self.close(refusal.code, refusal.message) }
        return .respond(Self.response(refusal.code, refusal.message))
    }

    /// The inhibit was set.
    public func inhibitSet(_ inhibited: Bool) -> Action {
        .respond(Self.response(.ok, inhibited ? "discard inhibited" : "discard allowed"))
    }

    /// Bytes that cannot be a request (a length over the limit): answer and close.
    public mutating func malformed(_ message: String) -> Action {
        self.close(.protocolViolation, message)
    }

    private mutating func close(_ code: Pagebroker_V1_MemoryCode, _ message: String) -> Action {
        self.state = .closed
        return .respondAndClose(Self.response(code, message))
    }

    static func response(_ code: Pagebroker_V1_MemoryCode, _ message: String) -> Pagebroker_V1_MemoryResponse {
        .with {
            $0.code = code
            $0.message = message
        }
    }
}
