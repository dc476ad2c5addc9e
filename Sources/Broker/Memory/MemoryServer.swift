import BrokerProtocol
import CBrokerMemory
import Dispatch
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How the memory server listens.
public struct MemoryServerConfiguration: Sendable {
    /// Mode given to a socket file the server binds itself (socket activation: `SocketMode=`).
    public var socketMode: mode_t = 0o660
    /// Connections served at once; one more is closed at accept. One per attached guest.
    public var maxConnections = 1024
    /// How long a connection may take to send its attach request.
    public var attachTimeout: Duration = .seconds(10)
    /// Largest request accepted: requests are a few dozen bytes.
    public var maxRequestSize = 64 * 1024

    public init() {}
}

/// A memory server failure at start, with a stable code.
public struct MemoryServerError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case cannotListen = "cannot_listen"
            case inUse = "in_use"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The socket could not be made, bound or given its mode.
        public static let cannotListen = Code(.cannotListen)
        /// Another broker answers on the socket path.
        public static let inUse = Code(.inUse)

        public var description: String { self.base.rawValue }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(self.code): \(self.message)" }
}

/// The broker's memory socket: a Unix stream socket on which a process that owns a guest's
/// memory attaches it (the descriptor as `SCM_RIGHTS`), so that the broker punches every report
/// it accepts for that guest out of the memory before it answers OK.
///
/// Served by plain threads with blocking `recvmsg`, not by NIO: NIO's stream channels do not
/// hand over `SCM_RIGHTS`, connections are few (one per attached guest) and long-lived, and a
/// request is answered by a few syscalls (fstatfs, fcntl, fstat). One thread accepts, one serves
/// each connection; all of them also wait on a pipe that ``shutdown()`` writes to, so a stop
/// never waits on an idle peer. Nothing a peer sends can end the broker: bad lengths, garbage,
/// missing or extra descriptors are answered with a code, and extra descriptors closed.
public final class MemoryServer: Sendable {
    /// Where to listen.
    public enum Listener: Sendable, CustomStringConvertible {
        /// Bind a new socket at this path, replacing a stale socket file left by a crash.
        case unixDomainSocket(path: String)
        /// Adopt a bound, listening socket (socket activation); the server owns it from then on.
        case boundSocket(CInt)

        public var description: String {
            switch self {
            case .unixDomainSocket(let path): path
            case .boundSocket(let descriptor): "inherited socket fd \(descriptor)"
            }
        }
    }

    private struct State {
        var listening: CInt?
        var ownedPath: String?
        var wakeRead: CInt?
        var wakeWrite: CInt?
        var connections = 0
        var stopped = false
    }

    private let configuration: MemoryServerConfiguration
    private let core: BrokerCore
    private let logger: Logger
    private let state = Mutex(State())
    /// Entered by every thread the server starts; ``shutdown()`` waits for it to empty.
    private let threads = DispatchGroup()

    public init(
        configuration: MemoryServerConfiguration = MemoryServerConfiguration(),
        core: BrokerCore,
        logger: Logger
    ) {
        self.configuration = configuration
        self.core = core
        self.logger = logger
    }

    /// Binds (or adopts) the socket and starts accepting.
    public func start(_ listener: Listener) throws(MemoryServerError) {
        var pipeEnds: [CInt] = [-1, -1]
        guard pipe(&pipeEnds) == 0 else {
            throw MemoryServerError(.cannotListen, "pipe: \(String(cString: strerror(errno)))")
        }
        _ = fcntl(pipeEnds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipeEnds[1], F_SETFD, FD_CLOEXEC)
        let socket: CInt
        var ownedPath: String?
        do throws(MemoryServerError) {
            switch listener {
            case .boundSocket(let descriptor):
                socket = descriptor
            case .unixDomainSocket(let path):
                socket = try Self.bind(path: path, mode: self.configuration.socketMode)
                ownedPath = path
            }
        } catch {
            close(pipeEnds[0])
            close(pipeEnds[1])
            throw error
        }
        self.state.withLock { state in
            state.listening = socket
            state.ownedPath = ownedPath
            state.wakeRead = pipeEnds[0]
            state.wakeWrite = pipeEnds[1]
        }
        let wakeRead = pipeEnds[0]
        self.threads.enter()
        Thread.detachNewThread { [self] in
            self.acceptLoop(socket: socket, wake: wakeRead)
            self.threads.leave()
        }
        self.logger.info("memory socket listening", metadata: ["socket": "\(listener)"])
    }

    /// Stops accepting, ends every connection (detaching its memory), waits for the threads,
    /// and removes a socket file the server created. Idempotent.
    public func shutdown() async {
        let wakeWrite: CInt? = self.state.withLock { state in
            guard !state.stopped else { return nil }
            state.stopped = true
            return state.wakeWrite
        }
        guard let wakeWrite else { return }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            self.threads.notify(queue: .global()) { continuation.resume() }
        }
        self.state.withLock { state in
            if let socket = state.listening { close(socket) }
            if let path = state.ownedPath { unlink(path) }
            if let descriptor = state.wakeRead { close(descriptor) }
            if let descriptor = state.wakeWrite { close(descriptor) }
            state.listening = nil
            state.wakeRead = nil
            state.wakeWrite = nil
        }
        self.logger.info("memory socket closed")
    }

    // MARK: Accepting

    private func acceptLoop(socket: CInt, wake: CInt) {
        var fds = [
            pollfd(fd: socket, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wake, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            fds[0].revents = 0
            fds[1].revents = 0
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                self.logger.error("memory socket: poll failed: \(String(cString: strerror(errno)))")
                return
            }
            if fds[1].revents != 0 { return }
            let connection = pbm_accept(socket)
            if connection < 0 {
                // EMFILE and friends: the listener stays; the next poll tries again.
                if errno != EAGAIN && errno != EINTR && errno != ECONNABORTED {
                    self.logger.warning("memory socket: accept failed: \(String(cString: strerror(errno)))")
                }
                continue
            }
            let admitted = self.state.withLock { state -> Bool in
                guard !state.stopped, state.connections < self.configuration.maxConnections else { return false }
                state.connections += 1
                return true
            }
            guard admitted else {
                self.logger.warning(
                    "memory socket: refusing a connection: \(self.configuration.maxConnections) already open"
                )
                close(connection)
                continue
            }
            self.threads.enter()
            Thread.detachNewThread { [self] in
                self.serve(connection: connection, wake: wake)
                close(connection)
                self.state.withLock { $0.connections -= 1 }
                self.threads.leave()
            }
        }
    }

    // MARK: Serving one connection

    private func serve(connection: CInt, wake: CInt) {
        var logger = self.logger
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        guard pbm_peer_credentials(connection, &pid, &uid, &gid) == 0 else {
            logger.notice("memory socket: no peer credentials: \(String(cString: strerror(errno)))")
            return
        }
        let peer = MemoryPeer(pid: pid, uid: uid, gid: gid)
        logger[metadataKey: "peer"] = "\(peer)"
        // A peer that stops reading cannot hold a thread in send(2) forever.
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        var reader = MemoryMessageReader(
            socket: connection,
            wake: wake,
            maxMessageSize: self.configuration.maxRequestSize
        )
        var machine = MemoryConnectionStateMachine()
        let attachDeadline = ContinuousClock.now + self.configuration.attachTimeout
        defer {
            reader.closeAll()
            if let token = machine.token {
                self.core.detachMemory(token)
                logger.info("memory detached", metadata: ["guest": "\(token.tenant)/\(token.guest)"])
            }
        }
        while true {
            let next = reader.next(deadline: machine.token == nil ? attachDeadline : nil)
            var action: MemoryConnectionStateMachine.Action
            var descriptor: CInt?
            switch next {
            case .end, .stopped:
                return
            case .timedOut:
                logger.notice("memory socket: no attach within \(self.configuration.attachTimeout)")
                _ = Self.send(
                    machine.malformed("no attach request within \(self.configuration.attachTimeout)"),
                    on: connection
                )
                return
            case .failed(let error):
                logger.notice("memory socket: read failed: \(errnoName(error))")
                return
            case .tooLarge(let length):
                action = machine.malformed(
                    "request length \(length) is over the limit of \(self.configuration.maxRequestSize) bytes"
                )
            case .message(let bytes, let descriptors, let count):
                descriptor = descriptors.first
                let request = try? Pagebroker_V1_MemoryRequest(serializedBytes: bytes)
                action = machine.receive(request)
                if case .attach(let attach) = action {
                    action = self.attach(
                        attach,
                        descriptor: &descriptor,
                        count: count,
                        peer: peer,
                        machine: &machine,
                        logger: logger
                    )
                } else if case .setInhibited(let token, let inhibited, let reason) = action {
                    self.core.setDiscardInhibited(token, inhibited: inhibited, reason: reason)
                    logger.info(
                        inhibited
                            ? "discard inhibited by the attaching process" : "discard allowed by the attaching process",
                        metadata: ["guest": "\(token.tenant)/\(token.guest)", "reason": "\(reason)"]
                    )
                    action = machine.inhibitSet(inhibited)
                }
            }
            // A descriptor not taken by an attach (sent with another request, or refused).
            if let descriptor { close(descriptor) }
            guard Self.send(action, on: connection) else { return }
        }
    }

    private func attach(
        _ request: Pagebroker_V1_AttachMemory,
        descriptor: inout CInt?,
        count: Int,
        peer: MemoryPeer,
        machine: inout MemoryConnectionStateMachine,
        logger: Logger
    ) -> MemoryConnectionStateMachine.Action {
        let guest = "\(request.tenantID)/\(request.guestID)"
        if let refusal = MemoryAttachmentValidator.checkRequest(request, descriptorCount: count) {
            logger.notice("memory attach refused: \(refusal)", metadata: ["guest": "\(guest)"])
            return machine.refused(refusal)
        }
        guard let offered = descriptor else {
            return machine.refused(MemoryRefusal(.noDescriptor, "the attach request carried no descriptor"))
        }
        switch self.core.attachMemory(request, descriptor: offered, peer: peer) {
        case .success(let token):
            descriptor = nil  // The core owns it now.
            logger.info(
                "memory attached",
                metadata: [
                    "guest": "\(guest)", "pages": "\(request.totalPages)", "page_size": "\(request.pageSize)",
                    "client": "\(request.clientVersion)",
                ]
            )
            return machine.attached(token)
        case .failure(let refusal):
            logger.notice("memory attach refused: \(refusal)", metadata: ["guest": "\(guest)"])
            return machine.refused(refusal)
        }
    }

    /// Sends the action's response; `false` when the connection must end.
    private static func send(_ action: MemoryConnectionStateMachine.Action, on connection: CInt) -> Bool {
        let response: Pagebroker_V1_MemoryResponse
        let keepOpen: Bool
        switch action {
        case .respond(let value):
            response = value
            keepOpen = true
        case .respondAndClose(let value):
            response = value
            keepOpen = false
        case .attach, .setInhibited:
            return true
        }
        guard let body: [UInt8] = try? response.serializedBytes() else { return false }
        let length = UInt32(body.count)
        var frame: [UInt8] = [
            UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff), UInt8(length & 0xff),
        ]
        frame.append(contentsOf: body)
        var offset = 0
        while offset < frame.count {
            let sent = frame.withUnsafeBytes { bytes in
                pbm_send(connection, bytes.baseAddress! + offset, bytes.count - offset)
            }
            guard sent > 0 else { return false }
            offset += Int(sent)
        }
        return keepOpen
    }

    // MARK: Binding

    private static func bind(path: String, mode: mode_t) throws(MemoryServerError) -> CInt {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else {
            throw MemoryServerError(.cannotListen, "memory socket path \(path) is longer than \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        // A socket file left by a broker that died is replaced; one a running broker answers on
        // is not: taking it over would leave that broker's VMMs unable to attach.
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if probe >= 0 {
            let answered = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, length) == 0 }
            }
            close(probe)
            if answered {
                throw MemoryServerError(
                    .inUse,
                    "memory socket \(path) is in use: another pagebrokerd is listening on it"
                )
            }
        }
        unlink(path)
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else {
            throw MemoryServerError(.cannotListen, "socket: \(String(cString: strerror(errno)))")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(descriptor, $0, length) }
        }
        guard bound == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw MemoryServerError(.cannotListen, "cannot bind \(path): \(reason)")
        }
        guard chmod(path, mode) == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            unlink(path)
            throw MemoryServerError(.cannotListen, "cannot set the mode of \(path): \(reason)")
        }
        guard listen(descriptor, 64) == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            unlink(path)
            throw MemoryServerError(.cannotListen, "cannot listen on \(path): \(reason)")
        }
        return descriptor
    }
}
