import NIOCore

/// The life of one TLS connection, as a value type: every event is a mutating method that
/// returns what the handler must do. The handler does all OpenSSL and channel work; this type
/// decides, so each decision can be read (and tested) in one place.
///
///     idle ──active──▶ handshaking ──ok──▶ active ──close()──▶ closing ──peer close_notify──▶ closed
///                          │                  │                   │      (or timeout / EOF)
///                          └── failure ───────┴── peer close_notify / EOF / fatal error ───▶ closed
struct TLSConnectionStateMachine {
    enum State {
        /// The channel is not active yet: nothing to say to the peer.
        case idle
        case handshaking
        case active
        /// We sent close_notify and wait for the peer's; `closePromise` completes when we are done.
        case closing(closePromise: EventLoopPromise<Void>)
        case closed
    }

    enum Action {
        case none
        /// Drive SSL_do_handshake for the first time (and arm the handshake timer).
        case startHandshake
        /// Report the handshake, then encrypt writes flushed meanwhile and read any application
        /// data that arrived with the last handshake flight.
        case completeHandshake
        /// Fire `error`, fail pending writes, flush any alert OpenSSL produced, close the channel.
        /// `closePromise` (a close that was waiting) is failed with the error.
        case failAndClose(TLSError, closePromise: EventLoopPromise<Void>?)
        /// Encrypt pending writes, send close_notify, arm the close timer, keep reading.
        case sendCloseNotify
        /// No TLS session to shut down: close the channel straight away.
        case closeChannel(EventLoopPromise<Void>?)
        /// A second close while the first is in progress completes with the first.
        case chainClose(EventLoopFuture<Void>, EventLoopPromise<Void>?)
        /// The peer closed cleanly first: tell the application, answer with our close_notify, close.
        case answerCloseNotifyAndClose
        /// Our close_notify was answered: close the channel and complete the close.
        case finishClose(EventLoopPromise<Void>)
        /// The transport ended while the close was waiting for the peer: complete the close.
        case succeedClose(EventLoopPromise<Void>)
        /// The transport ended without close_notify while data could still flow.
        case reportUncleanShutdown
        /// The transport ended during the handshake.
        case reportHandshakeAborted
        /// The peer never answered our close_notify: close anyway and fail the close.
        case closeAfterTimeout(EventLoopPromise<Void>)
    }

    private(set) var state: State = .idle

    mutating func channelActive() -> Action {
        guard case .idle = self.state else { return .none }
        self.state = .handshaking
        return .startHandshake
    }

    mutating func handshakeSucceeded() -> Action {
        guard case .handshaking = self.state else { return .none }
        self.state = .active
        return .completeHandshake
    }

    /// A fatal error from OpenSSL or from the handler's own checks (peer validator, timeouts).
    mutating func failed(_ error: TLSError) -> Action {
        switch self.state {
        case .idle, .handshaking, .active:
            self.state = .closed
            return .failAndClose(error, closePromise: nil)
        case .closing(let promise):
            self.state = .closed
            return .failAndClose(error, closePromise: promise)
        case .closed:
            return .none
        }
    }

    mutating func handshakeTimedOut(_ error: TLSError) -> Action {
        guard case .handshaking = self.state else { return .none }
        return self.failed(error)
    }

    /// `promise` is never nil: the handler makes one for a `close(promise: nil)` so that a
    /// second close has something to wait on.
    mutating func closeRequested(_ promise: EventLoopPromise<Void>) -> Action {
        switch self.state {
        case .idle, .handshaking:
            // Nothing confidential has flowed and no close_notify is owed mid-handshake.
            self.state = .closed
            return .closeChannel(promise)
        case .active:
            self.state = .closing(closePromise: promise)
            return .sendCloseNotify
        case .closing(let first):
            return .chainClose(first.futureResult, promise)
        case .closed:
            // Let the channel answer (it fails with alreadyClosed, or joins its own close).
            return .closeChannel(promise)
        }
    }

    mutating func closeNotifyReceived() -> Action {
        switch self.state {
        case .active:
            self.state = .closed
            return .answerCloseNotifyAndClose
        case .closing(let promise):
            self.state = .closed
            return .finishClose(promise)
        case .handshaking:
            return self.failed(TLSError(code: .handshakeFailed, reason: "peer sent close_notify during the handshake"))
        case .idle, .closed:
            return .none
        }
    }

    mutating func channelInactive() -> Action {
        switch self.state {
        case .idle:
            self.state = .closed
            return .none
        case .handshaking:
            self.state = .closed
            return .reportHandshakeAborted
        case .active:
            self.state = .closed
            return .reportUncleanShutdown
        case .closing(let promise):
            // We had already decided to close and said so; the peer dropping the transport
            // instead of answering loses nothing we were waiting for.
            self.state = .closed
            return .succeedClose(promise)
        case .closed:
            return .none
        }
    }

    /// The application wants the transport gone now, without waiting for the peer (a stopping
    /// broker past its deadline): no close_notify is waited for. Returns the close that was
    /// waiting for the peer, if any, for the handler to complete when the channel closes.
    mutating func forceClosed() -> EventLoopPromise<Void>? {
        defer { self.state = .closed }
        if case .closing(let promise) = self.state { return promise }
        return nil
    }

    mutating func closeTimedOut() -> Action {
        guard case .closing(let promise) = self.state else { return .none }
        self.state = .closed
        return .closeAfterTimeout(promise)
    }

    /// Whether application writes are accepted (they are buffered until the handshake completes).
    var acceptsWrites: Bool {
        switch self.state {
        case .idle, .handshaking, .active: return true
        case .closing, .closed: return false
        }
    }

    /// Whether plaintext can be encrypted and sent now.
    var canEncrypt: Bool {
        if case .active = self.state { return true }
        return false
    }

    /// Whether decrypted application data goes to the application (active) or is dropped
    /// (closing: we said we are done, only the peer's close_notify matters now).
    var deliversApplicationData: Bool {
        if case .active = self.state { return true }
        return false
    }

    /// Whether inbound ciphertext still needs to be fed to OpenSSL.
    var readsCiphertext: Bool {
        switch self.state {
        case .handshaking, .active, .closing: return true
        case .idle, .closed: return false
        }
    }

    var isHandshaking: Bool {
        if case .handshaking = self.state { return true }
        return false
    }
}
