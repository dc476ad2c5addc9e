import CGuestLoop
import Logging
import NIOCore
import Synchronization
import TLSTransport

#if canImport(Glibc)
import Glibc
#endif

/// One thread of the broker's own guest transport: an epoll loop over non-blocking TLS sockets
/// (``TLSSocket``), the design of a plain C server (`../shared/peers/floor-broker.c`), carrying
/// ``GuestSession``s as the NIO pipeline does (``SessionHandler``), with the same behaviour.
///
/// Why not NIO here: with NIO's pipeline a report cost the broker 3.4 × the floor's user CPU
/// (docs/benchmarks.md, "User time, not the kernel"): the channel machinery, the memory BIOs'
/// copies and the reference counting around them, per read and per write. Here a readable socket
/// is one `SSL_read` into the loop's buffer, the frames are handled in it, and the results are
/// one `SSL_write` straight to the socket.
///
/// The first loop accepts from the listening socket and deals the connections to the loops in
/// turn (itself among them); a connection lives on the loop it was dealt to. Work from other
/// threads (the core's calls into sessions, punches finished, the watchdog's probe) arrives
/// through ``execute(_:)``: a queue and an eventfd. Timers are coarse and loop-wide: every
/// session ticks together at the sessions' tick interval, and the handshake and close deadlines,
/// the same for every connection, expire in the order they were set (two FIFO queues).
final class GuestLoop: SessionExecutor, @unchecked Sendable {
    // @unchecked Sendable: `tasks` and `threadID` are synchronised; `state` is only touched on
    // the loop's thread (checked by `inExecutor` where it matters) or before it starts.

    /// What every connection of the loop shares.
    struct Settings {
        var tls: ReloadableTLSContext
        var handshakeTimeout: Duration
        var closeTimeout: Duration
        var tickInterval: Duration
        var makeSession: @Sendable () -> GuestSession
        var connections: GuestConnectionCount
        var logger: Logger
    }

    let name: String
    private let epoll: CInt
    private let wake: CInt
    private let tasks = Mutex<[@Sendable () -> Void]>([])
    private let threadID = Atomic<UInt>(0)
    private let finished = Mutex<CheckedContinuation<Void, Never>?>(nil)
    /// Its thread runs and ``shutdown()`` has not been called.
    private let started = Atomic<Bool>(false)
    private let state: State

    /// Creates the loop (its epoll set and eventfd); ``start()`` runs it.
    init(name: String, settings: Settings) throws(GuestTransportError) {
        let epoll = pbl_epoll_create()
        guard epoll >= 0 else { throw GuestTransportError(.loopSetupFailed, "epoll_create1", errno: errno) }
        let wake = pbl_eventfd()
        guard wake >= 0 else {
            let failure = errno
            Glibc.close(epoll)
            throw GuestTransportError(.loopSetupFailed, "eventfd", errno: failure)
        }
        guard pbl_epoll_add(epoll, wake, pbl_readable, 0) == 0 else {
            let failure = errno
            Glibc.close(epoll)
            Glibc.close(wake)
            throw GuestTransportError(.loopSetupFailed, "epoll_ctl(eventfd)", errno: failure)
        }
        self.name = name
        self.epoll = epoll
        self.wake = wake
        self.state = State(settings: settings)
    }

    deinit {
        Glibc.close(self.epoll)
        Glibc.close(self.wake)
    }

    // MARK: SessionExecutor

    var inExecutor: Bool {
        let id = self.threadID.load(ordering: .acquiring)
        return id != 0 && pthread_equal(pthread_self(), pthread_t(id)) != 0
    }

    func execute(_ work: @escaping @Sendable () -> Void) {
        let first = self.tasks.withLock { tasks in
            tasks.append(work)
            return tasks.count == 1
        }
        // Only the first task since the loop last drained the queue needs to wake it.
        if first { _ = pbl_eventfd_signal(self.wake) }
    }

    // MARK: Running

    /// Starts the loop's thread. The first loop is given the `listener` and the loops to deal
    /// accepted connections to (itself among them), in turn; the others get connections from it.
    /// With `accepting` false it accepts nothing until ``beginAccepting()``.
    func start(
        listener: CInt?,
        dealingTo loops: [GuestLoop] = [],
        accepting: Bool = true
    ) throws(GuestTransportError) {
        if let listener {
            self.state.listener = listener
            self.state.dealTo = loops
            if accepting {
                guard pbl_epoll_add(self.epoll, listener, pbl_readable, 0) == 0 else {
                    throw GuestTransportError(.loopSetupFailed, "epoll_ctl(listener)", errno: errno)
                }
                self.state.listening = true
            }
        }
        let box = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let created = pthread_create(
            &thread,
            nil,
            { argument in
                let loop = Unmanaged<GuestLoop>.fromOpaque(argument!).takeRetainedValue()
                loop.run()
                return nil
            },
            box.toOpaque()
        )
        guard created == 0 else {
            box.release()
            throw GuestTransportError(.loopSetupFailed, "pthread_create", errno: created)
        }
        pthread_detach(thread)
        self.started.store(true, ordering: .releasing)
    }

    /// Starts accepting from the listener given to ``start(listener:dealingTo:accepting:)``
    /// (nothing if it has none, already accepts, or stopped accepting).
    func beginAccepting() async throws(GuestTransportError) {
        let failure = await withCheckedContinuation { (continuation: CheckedContinuation<CInt?, Never>) in
            self.execute { [self] in
                let state = self.state
                guard !state.listening, state.acceptPausedUntil == nil, let listener = state.listener else {
                    continuation.resume(returning: nil)
                    return
                }
                guard pbl_epoll_add(self.epoll, listener, pbl_readable, 0) == 0 else {
                    continuation.resume(returning: errno)
                    return
                }
                state.listening = true
                continuation.resume(returning: nil)
            }
        }
        if let failure { throw GuestTransportError(.loopSetupFailed, "epoll_ctl(listener)", errno: failure) }
    }

    /// Stops accepting (the listening socket is closed by the transport once every loop has).
    func stopAccepting() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            self.execute { [self] in
                let state = self.state
                if state.listening, let listener = state.listener { _ = pbl_epoll_remove(self.epoll, listener) }
                state.listening = false
                state.listener = nil
                continuation.resume()
            }
        }
    }

    /// Ends the loop's thread once it has closed every connection still open (at once, without
    /// TLS's goodbye). Returns at once if the loop never started or has already stopped.
    func shutdown() async {
        guard self.started.exchange(false, ordering: .acquiringAndReleasing) else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            self.finished.withLock { $0 = continuation }
            self.execute { [self] in self.state.running = false }
        }
    }

    private func run() {
        self.threadID.store(UInt(pthread_self()), ordering: .releasing)
        // Named for top -H, perf and gdb (at most 15 characters).
        _ = pbl_set_thread_name("pb-\(self.name)")
        let state = self.state
        let capacity = 256
        var readyFDs = [Int32](repeating: 0, count: capacity)
        var readyEvents = [UInt32](repeating: 0, count: capacity)
        state.nextTick = ContinuousClock.now + state.settings.tickInterval
        while state.running {
            let timeout = self.timeoutMilliseconds()
            let count = readyFDs.withUnsafeMutableBufferPointer { fds in
                readyEvents.withUnsafeMutableBufferPointer { events in
                    pbl_epoll_wait(self.epoll, fds.baseAddress, events.baseAddress, Int32(capacity), timeout)
                }
            }
            if count < 0 && errno != EINTR {
                state.settings.logger.critical(
                    "guest loop \(self.name): epoll_wait: \(String(cString: strerror(errno)))"
                )
                break
            }
            for index in 0..<max(0, Int(count)) {
                let fd = readyFDs[index]
                let events = readyEvents[index]
                if fd == self.wake {
                    _ = pbl_eventfd_drain(self.wake)
                    self.runTasks()
                } else if fd == state.listener {
                    self.acceptConnections()
                } else if let connection = state.connections[fd] {
                    connection.handle(events: events)
                }
                self.finishClosed()
            }
            self.serviceDeferredReads()
            self.expireDeadlines()
        }
        for connection in Array(state.connections.values) { connection.closeNow() }
        self.finishClosed()
        self.runTasks()  // work that raced the stop (it finds its session closed)
        state.dealTo = []  // the loops held each other
        self.threadID.store(0, ordering: .releasing)
        let continuation = self.finished.withLock { continuation in
            defer { continuation = nil }
            return continuation
        }
        continuation?.resume()
    }

    private func runTasks() {
        let work = self.tasks.withLock { tasks in
            defer { tasks.removeAll(keepingCapacity: true) }
            return tasks
        }
        for task in work {
            task()
            self.finishClosed()
        }
    }

    /// Until the nearest of: the next tick, the first handshake or close deadline, the end of an
    /// accept pause; 0 when reads wait for their turn.
    private func timeoutMilliseconds() -> Int32 {
        let state = self.state
        // Work queued from other threads needs no check here: it signalled the eventfd.
        if !state.deferredReads.isEmpty { return 0 }
        var next = state.nextTick
        if let first = state.handshakeDeadlines.first { next = min(next, first.deadline) }
        if let first = state.closeDeadlines.first { next = min(next, first.deadline) }
        if let resume = state.acceptPausedUntil { next = min(next, resume) }
        let wait = next - ContinuousClock.now
        guard wait > .zero else { return 0 }
        let (seconds, attoseconds) = wait.components
        return Int32(clamping: seconds * 1_000 + attoseconds / 1_000_000_000_000_000 + 1)
    }

    // MARK: Connections

    private func acceptConnections() {
        let state = self.state
        var peer = [CChar](repeating: 0, count: 64)
        // A bounded batch: a flood of connections must not starve the sessions already here.
        for _ in 0..<64 {
            let fd = pbl_accept(state.listener ?? -1, &peer, peer.count)
            if fd < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK, ECONNABORTED, EINTR, EPROTO:
                    return
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors: stop accepting for a while rather than spin on a
                    // listener that stays readable.
                    let reason = String(cString: strerror(errno))
                    state.settings.logger.warning(
                        "cannot accept guest connections for now: \(reason); retrying in 100 ms"
                    )
                    if state.listening, let listener = state.listener { _ = pbl_epoll_remove(self.epoll, listener) }
                    state.listening = false
                    state.acceptPausedUntil = ContinuousClock.now + .milliseconds(100)
                    return
                default:
                    state.settings.logger.error("accept: \(String(cString: strerror(errno)))")
                    return
                }
            }
            let description = String(decoding: peer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            // Dealt in turn, as NIO's server channel hands its children to the group's loops:
            // left to the kernel (each loop accepting for itself), one loop could take every
            // connection of a burst and the others none.
            let target = state.dealTo.isEmpty ? self : state.dealTo[state.dealt % state.dealTo.count]
            state.dealt &+= 1
            if target === self {
                self.adopt(fd, peer: description)
            } else {
                target.execute { target.adopt(fd, peer: description) }
            }
        }
    }

    /// Takes an accepted connection (on this loop's thread).
    private func adopt(_ fd: CInt, peer: String) {
        let state = self.state
        guard state.running else {
            // Dealt to this loop as it stopped.
            Glibc.close(fd)
            return
        }
        let socket: TLSSocket
        do {
            socket = try TLSSocket(context: state.settings.tls.current, descriptor: fd)
        } catch {
            state.settings.logger.error("refusing connection from \(peer): \(error)")
            Glibc.close(fd)
            return
        }
        guard pbl_epoll_add(self.epoll, fd, pbl_readable, 0) == 0 else {
            state.settings.logger.error(
                "refusing connection from \(peer): epoll_ctl: \(String(cString: strerror(errno)))"
            )
            Glibc.close(fd)
            return
        }
        state.serials &+= 1
        let connection = GuestConnection(
            socket: socket,
            peer: peer,
            serial: state.serials,
            session: state.settings.makeSession(),
            loop: self
        )
        state.connections[fd] = connection
        state.settings.connections.opened()
        state.handshakeDeadlines.append(
            Deadline(
                deadline: ContinuousClock.now + state.settings.handshakeTimeout,
                descriptor: fd,
                serial: connection.serial
            )
        )
        connection.start()
    }

    /// Sets the readiness a connection waits for.
    func watch(_ fd: CInt, events: UInt32) {
        _ = pbl_epoll_modify(self.epoll, fd, events)
    }

    /// Forgets a connection whose socket is being closed; its session ends after the current
    /// event (not inside a call the session is making).
    func remove(_ connection: GuestConnection) {
        _ = pbl_epoll_remove(self.epoll, connection.descriptor)
        self.state.connections[connection.descriptor] = nil
        self.state.closed.append(connection)
        self.state.settings.connections.closed()
    }

    /// OpenSSL holds bytes a read left (a bounded read batch ended first): read them next turn.
    func deferRead(_ connection: GuestConnection) {
        self.state.deferredReads.append(connection)
    }

    /// The connection waits for the peer's close_notify until the close timeout.
    func armCloseDeadline(_ connection: GuestConnection) {
        self.state.closeDeadlines.append(
            Deadline(
                deadline: ContinuousClock.now + self.state.settings.closeTimeout,
                descriptor: connection.descriptor,
                serial: connection.serial
            )
        )
    }

    var settings: Settings { self.state.settings }

    /// The loop's read buffer, cleared, for one connection's read (see ``returnReadBuffer(_:)``).
    func takeReadBuffer() -> ByteBuffer {
        guard var buffer = self.state.readBuffer else {
            return ByteBufferAllocator().buffer(capacity: 16_384)
        }
        self.state.readBuffer = nil
        buffer.clear()
        return buffer
    }

    /// Gives the read buffer back, unless a bulk read grew it past what a loop keeps.
    func returnReadBuffer(_ buffer: ByteBuffer) {
        if buffer.capacity <= 64 * 1_024 { self.state.readBuffer = buffer }
    }

    private func finishClosed() {
        let state = self.state
        while let connection = state.closed.popLast() { connection.sessionEnded() }
    }

    private func serviceDeferredReads() {
        let state = self.state
        guard !state.deferredReads.isEmpty else { return }
        let waiting = state.deferredReads
        state.deferredReads.removeAll(keepingCapacity: true)
        for connection in waiting {
            connection.handle(events: pbl_readable)
            self.finishClosed()
        }
    }

    private func expireDeadlines() {
        let state = self.state
        let now = ContinuousClock.now
        while let first = state.handshakeDeadlines.first, first.deadline <= now {
            state.handshakeDeadlines.removeFirst()
            self.connection(for: first)?.handshakeDeadlinePassed()
            self.finishClosed()
        }
        while let first = state.closeDeadlines.first, first.deadline <= now {
            state.closeDeadlines.removeFirst()
            self.connection(for: first)?.closeDeadlinePassed()
            self.finishClosed()
        }
        if let resume = state.acceptPausedUntil, resume <= now {
            state.acceptPausedUntil = nil
            if !state.listening, let listener = state.listener,
                pbl_epoll_add(self.epoll, listener, pbl_readable, 0) == 0
            {
                state.listening = true
            }
        }
        if state.nextTick <= now {
            state.nextTick = now + state.settings.tickInterval
            for connection in Array(state.connections.values) { connection.tick() }
            self.finishClosed()
        }
    }

    /// When a connection's handshake or close must be over. It names the connection by socket
    /// and serial instead of holding it, so a connection that closed sooner (most do) is freed
    /// at once, not when its deadline comes (under a reconnect storm that would hold thousands
    /// of closed connections, each with its OpenSSL buffers). Not a weak reference: that gives
    /// the connection a side table for life, and every retain and release of it on the report
    /// path then takes the runtime's slow path.
    private struct Deadline {
        let deadline: ContinuousClock.Instant
        let descriptor: CInt
        let serial: UInt64
    }

    /// The connection a deadline names, if it is still open (its socket may have been reused).
    private func connection(for deadline: Deadline) -> GuestConnection? {
        guard let connection = self.state.connections[deadline.descriptor], connection.serial == deadline.serial
        else { return nil }
        return connection
    }

    /// The loop's own state, touched only on its thread.
    private final class State {
        let settings: Settings
        var running = true
        var listener: CInt?
        /// The loops the listening loop deals accepted connections to, and how many it dealt.
        var dealTo: [GuestLoop] = []
        var dealt = 0
        var listening = false
        var acceptPausedUntil: ContinuousClock.Instant?
        var connections: [CInt: GuestConnection] = [:]
        /// The serial of the newest connection: with its socket, it names a connection.
        var serials: UInt64 = 0
        /// Connections whose sockets closed; their sessions end after the current event.
        var closed: [GuestConnection] = []
        var deferredReads: [GuestConnection] = []
        var handshakeDeadlines = CircularBuffer<Deadline>()
        var closeDeadlines = CircularBuffer<Deadline>()
        var nextTick = ContinuousClock.now
        /// Plaintext is read into this, one connection at a time.
        var readBuffer: ByteBuffer?

        init(settings: Settings) { self.settings = settings }
    }
}

/// How many guest connections the transport's loops hold (handshaking or in session).
final class GuestConnectionCount: Sendable {
    private let value = Atomic<Int>(0)

    func opened() { self.value.add(1, ordering: .relaxed) }
    func closed() { self.value.subtract(1, ordering: .relaxed) }
    var current: Int { self.value.load(ordering: .relaxed) }
}
