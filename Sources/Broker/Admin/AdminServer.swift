import BrokerAdminClient
import BrokerProtocol
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How the admin server listens and whom it lets in.
public struct AdminServerConfiguration: Sendable {
    /// Who may connect, checked with `SO_PEERCRED` on every connection.
    public var access: AdminAccessPolicy
    /// Mode given to a socket file the server binds itself. With socket activation
    /// the unit's `SocketMode=` applies instead.
    public var socketMode: mode_t
    /// Largest request accepted; requests are a few bytes, so anything near this is
    /// not pagebrokerctl.
    public var maxRequestSize: Int
    /// Largest response sent: a guest list for 10k guests is about 1 MiB.
    public var maxResponseSize: Int

    public init(
        access: AdminAccessPolicy = AdminAccessPolicy(),
        socketMode: mode_t = 0o660,
        maxRequestSize: Int = 64 * 1024,
        maxResponseSize: Int = 64 * 1024 * 1024
    ) {
        self.access = access
        self.socketMode = socketMode
        self.maxRequestSize = maxRequestSize
        self.maxResponseSize = maxResponseSize
    }
}

/// The broker's admin socket: a Unix domain socket on which `pagebrokerctl` asks for
/// figures and pauses or resumes tenants, served from an ``AdminBackend``.
///
/// Every accepted connection is checked with `SO_PEERCRED` against the configured
/// ``AdminAccessPolicy``; a refused peer gets `permission_denied` and is closed.
/// The socket file's mode (0660 by default) is the first fence, the credential
/// check the second: it still holds if the file's mode or directory is too open.
public final class AdminServer: Sendable {
    /// Where to listen.
    public enum Listener: Sendable, CustomStringConvertible {
        /// Bind a new socket at this path, replacing a stale socket file left by a crash.
        case unixDomainSocket(path: String)
        /// Adopt a socket that is already bound and listening, such as one systemd
        /// passed with socket activation. The server owns it from then on.
        case boundSocket(CInt)

        public var description: String {
            switch self {
            case .unixDomainSocket(let path): path
            case .boundSocket(let descriptor): "inherited socket fd \(descriptor)"
            }
        }
    }

    private enum State {
        case idle
        case starting
        /// `socketPath` is set when the server bound the file itself and so removes it.
        case listening(channel: any Channel, socketPath: String?)
        case stopped
    }

    private let configuration: AdminServerConfiguration
    private let backend: any AdminBackend
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State.idle)
    /// Open admin connections, closed at shutdown so it does not wait on idle clients.
    private let connections = Mutex([ObjectIdentifier: any Channel]())

    public init(
        configuration: AdminServerConfiguration,
        backend: any AdminBackend,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "pagebroker.admin")
    ) {
        self.configuration = configuration
        self.backend = backend
        self.group = eventLoopGroup
        self.logger = logger
    }

    /// Starts listening. Returns once the socket accepts connections.
    ///
    /// - Throws: ``AdminServerError`` if the server was started before, or if
    ///   the socket cannot be bound or given its mode.
    public func start(_ listener: Listener) async throws {
        try self.state.withLock { state in
            guard case .idle = state else {
                throw AdminServerError(.alreadyStarted, "the admin server can only be started once")
            }
            state = .starting
        }
        let channel: any Channel
        var ownedPath: String?
        do {
            let bootstrap = self.makeBootstrap()
            switch listener {
            case .unixDomainSocket(let path):
                // A socket file left by a broker that died is replaced; one that a running
                // broker answers on is not: taking it over would leave that broker unreachable,
                // and our shutdown would delete its socket.
                if Self.socketAnswers(at: path) {
                    throw AdminServerError(
                        .inUse,
                        "admin socket \(path) is in use: another pagebrokerd is listening on it"
                    )
                }
                channel = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
                ownedPath = path
                // bind(2) creates the file with the umask's mode; tighten it before
                // anyone is told the server is up.
                if chmod(path, self.configuration.socketMode) != 0 {
                    let reason = String(cString: strerror(errno))
                    try? await channel.close()
                    unlink(path)
                    throw AdminServerError(.cannotListen, "cannot set the mode of \(path): \(reason)")
                }
            case .boundSocket(let descriptor):
                channel = try await bootstrap.withBoundSocket(descriptor).get()
            }
        } catch {
            self.state.withLock { $0 = .stopped }
            if let error = error as? AdminServerError { throw error }
            throw AdminServerError(.cannotListen, "cannot listen on \(listener): \(error)")
        }
        let stoppedMeanwhile = self.state.withLock { state -> Bool in
            guard case .starting = state else { return true }
            state = .listening(channel: channel, socketPath: ownedPath)
            return false
        }
        if stoppedMeanwhile {
            try? await channel.close()
            if let ownedPath { unlink(ownedPath) }
            throw AdminServerError(.alreadyStarted, "the admin server was shut down while starting")
        }
        self.logger.info("admin socket listening", metadata: ["socket": "\(listener)"])
    }

    /// Stops accepting, closes open admin connections and removes a socket file the
    /// server created. Idempotent.
    public func shutdown() async {
        let previous = self.state.withLock { state -> State in
            defer { state = .stopped }
            return state
        }
        guard case .listening(let channel, let socketPath) = previous else { return }
        try? await channel.close()
        let open = self.connections.withLock { connections in
            defer { connections.removeAll() }
            return Array(connections.values)
        }
        for connection in open {
            try? await connection.close()
        }
        if let socketPath { unlink(socketPath) }
        self.logger.info("admin socket closed")
    }

    private func makeBootstrap() -> ServerBootstrap {
        let configuration = self.configuration
        let backend = self.backend
        let logger = self.logger
        return ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 64)
            .childChannelInitializer { [weak self] channel in
                self?.track(channel)
                return Self.peerCredentials(of: channel).flatMapThrowing { peer in
                    var logger = logger
                    logger[metadataKey: "peer"] = "\(peer.map(String.init(describing:)) ?? "unknown")"
                    let encoder = MessageToByteHandler(
                        LengthPrefixedMessageEncoder<Pagebroker_V1_AdminResponse>(
                            maxMessageSize: configuration.maxResponseSize
                        )
                    )
                    if let peer, configuration.access.admits(peer) {
                        let decoder = ByteToMessageHandler(
                            LengthPrefixedMessageDecoder<Pagebroker_V1_AdminRequest>(
                                maxMessageSize: configuration.maxRequestSize
                            )
                        )
                        let handler = AdminConnectionHandler(backend: backend, logger: logger)
                        try channel.pipeline.syncOperations.addHandlers(encoder, decoder, handler)
                    } else {
                        // A refused peer's bytes are never parsed: no decoder.
                        try channel.pipeline.syncOperations.addHandlers(encoder, AdminRefusalHandler(logger: logger))
                    }
                }
            }
    }

    /// Whether something listens on the Unix socket at `path`: a non-blocking connect that
    /// succeeds, or finds the backlog full (`EAGAIN`), means yes; `ECONNREFUSED` (a stale
    /// file) or no file means no.
    static func socketAnswers(at path: String) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else { return false }
        let descriptor = socket(
            AF_UNIX,
            Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue),
            0
        )
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0 || errno == EAGAIN || errno == EINPROGRESS
    }

    private func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        self.connections.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.connections.withLock { _ = $0.removeValue(forKey: id) }
        }
    }

    /// The peer's pid, uid and gid from `SO_PEERCRED`, or `nil` if the kernel would not
    /// say (the channel is then refused: no credentials, no access).
    private static func peerCredentials(of channel: any Channel) -> EventLoopFuture<AdminPeer?> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        // `struct ucred` needs _GNU_SOURCE, so Glibc does not export it to Swift; this
        // tuple has its layout: pid_t pid, uid_t uid, gid_t gid.
        let future: EventLoopFuture<(Int32, UInt32, UInt32)> = provider.unsafeGetSocketOption(
            level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET),
            name: NIOBSDSocket.Option(rawValue: SO_PEERCRED)
        )
        return future.map { AdminPeer(pid: $0.0, uid: $0.1, gid: $0.2) }.recover { _ in nil }
    }
}

/// Why the admin server could not start.
public struct AdminServerError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case alreadyStarted = "already_started"
            case cannotListen = "cannot_listen"
            case inUse = "in_use"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// ``AdminServer/start(_:)`` was called on a server that is not new.
        public static let alreadyStarted = Code(.alreadyStarted)
        /// The socket could not be bound, adopted or given its mode.
        public static let cannotListen = Code(.cannotListen)
        /// Another process answers on the socket path (a second broker with the same path).
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
