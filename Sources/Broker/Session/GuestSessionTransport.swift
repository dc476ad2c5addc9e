import NIOCore

/// What a ``GuestSession`` needs from the connection it runs over: the NIO pipeline
/// (``SessionHandler``) or the broker's own epoll transport (``GuestLoop``).
///
/// Every call is made on the transport's thread, the one its ``executor`` runs work on.
protocol GuestSessionTransport: AnyObject {
    /// Runs work on the session's thread (the core calls sessions from any thread).
    var executor: any SessionExecutor { get }
    /// The peer's address, for the log.
    var peerDescription: String { get }
    /// Encrypts and sends `bytes` now, or as soon as the socket takes them, in order with every
    /// earlier send. The session reuses the buffer's storage after the call.
    func send(_ bytes: ByteBuffer)
    /// Sends `bytes` (if any), then closes the connection the way ``close()`` does.
    func sendThenClose(_ bytes: ByteBuffer?)
    /// Closes the connection: what was sent goes first, then TLS close_notify, waiting a
    /// bounded time for the peer's.
    func close()
    /// Stops (false) or resumes (true) reading from the peer.
    func setReading(_ reading: Bool)
}

/// Where a session's work runs: one thread, so the session's state needs no lock.
protocol SessionExecutor: Sendable {
    /// Whether the caller runs on it now.
    var inExecutor: Bool { get }
    /// Runs `work` on it, later (never within the call).
    func execute(_ work: @escaping @Sendable () -> Void)
}

/// A value bound to a ``SessionExecutor``: it may be passed to other threads, but only read
/// on the executor's (checked), as `NIOLoopBound` does for an event loop.
struct ExecutorBound<Value>: @unchecked Sendable {
    let executor: any SessionExecutor
    private let unchecked: Value

    init(_ value: Value, executor: any SessionExecutor) {
        self.executor = executor
        self.unchecked = value
    }

    var value: Value {
        precondition(self.executor.inExecutor, "a session's state was touched off its thread")
        return self.unchecked
    }

    /// Runs `body` with the value on the executor: at once when already there, else later.
    func run(_ body: @escaping @Sendable (Value) -> Void) {
        if self.executor.inExecutor {
            body(self.value)
        } else {
            let bound = self
            self.executor.execute { body(bound.value) }
        }
    }
}

/// A SwiftNIO event loop as a session's executor.
struct EventLoopExecutor: SessionExecutor {
    let eventLoop: any EventLoop

    var inExecutor: Bool { self.eventLoop.inEventLoop }

    func execute(_ work: @escaping @Sendable () -> Void) {
        self.eventLoop.execute(work)
    }
}
