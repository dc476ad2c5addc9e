import BrokerProtocol
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TLSTransport

/// Where and how the broker listens for guests.
public struct BrokerServerConfiguration: Sendable {
    /// Host and port to bind (port 0 lets the OS pick; see ``BrokerServer/localAddress``).
    public var host: String
    public var port: Int
    /// PEM paths for the broker's certificate chain and key, and the CA bundle guests' client
    /// certificates must chain to.
    public var certificateChainPath: String
    public var privateKeyPath: String
    public var clientCAPath: String
    /// The SPIFFE trust domain guests' IDs must belong to.
    public var trustDomain: String
    public var session: SessionConfiguration
    /// How long a TLS handshake may take.
    public var handshakeTimeout: Duration = .seconds(10)
    /// What carries the guest sessions: the broker's own epoll loops (the default) or SwiftNIO's
    /// pipeline.
    public var transport: GuestTransportKind = .epoll
    /// The epoll transport's loops; `nil`: half the cores, at least one
    /// (``defaultGuestLoops``).
    public var guestLoops: Int?

    /// Half the cores, at least one. The broker shares its host with the guests it serves, and
    /// one loop answers ~100k reports/s of 64 guests; more loops than needed each wake for
    /// fewer ready sessions, which costs CPU per report: on a 2-core host, one loop spent
    /// 1.12 × the plain C server's CPU per report and two 1.52 × (docs/benchmarks.md).
    public static var defaultGuestLoops: Int { max(1, System.coreCount / 2) }
    /// How long a closing session waits for the guest's close_notify. The daemon makes it at
    /// least `shutdown_timeout`, so that a stop gives every session the whole timeout and it is
    /// ``BrokerServer/stop(drainTimeout:)``'s deadline, not this, that ends a silent one.
    public var closeTimeout: Duration = .seconds(5)

    public init(
        host: String,
        port: Int,
        certificateChainPath: String,
        privateKeyPath: String,
        clientCAPath: String,
        trustDomain: String,
        session: SessionConfiguration = SessionConfiguration()
    ) {
        self.host = host
        self.port = port
        self.certificateChainPath = certificateChainPath
        self.privateKeyPath = privateKeyPath
        self.clientCAPath = clientCAPath
        self.trustDomain = trustDomain
        self.session = session
    }
}

/// What carries the broker's guest sessions (`guest_transport`, docs/configuration.md).
public enum GuestTransportKind: String, Sendable, CaseIterable {
    /// The broker's own loops: epoll over non-blocking OpenSSL sockets, one loop per event-loop
    /// thread (``GuestLoop``). The cheaper per report (docs/benchmarks.md).
    case epoll
    /// SwiftNIO's channel pipeline: `TLSHandler` (memory BIOs), then ``SessionHandler``.
    case nio
}

/// The guest listener: mutual TLS, then one ``GuestSession`` per connection, all sharing one
/// ``BrokerCore``; carried by the epoll transport (``GuestTransport``) or NIO's pipeline.
public final class BrokerServer: Sendable {
    public let configuration: BrokerServerConfiguration
    public let core: BrokerCore
    /// Where sessions record report round trips; `nil`: no metrics, no clock reads for them.
    public let metrics: BrokerMetrics?
    private let tls: ReloadableTLSContext
    private let group: any EventLoopGroup
    private let logger: Logger
    private let channel = Mutex<(any Channel)?>(nil)
    /// The epoll transport, once started with it.
    private let guestTransport = Mutex<GuestTransport?>(nil)
    private let boundAddress = Mutex<SocketAddress?>(nil)
    /// Every guest connection open now (handshaking or in session), so that a stop past its
    /// deadline can close the ones still there.
    private let children = OpenConnections()

    /// Loads the TLS material (failing early, with the file at fault named) and prepares the
    /// listener; ``start()`` binds it.
    public init(
        configuration: BrokerServerConfiguration,
        core: BrokerCore,
        group: any EventLoopGroup,
        logger: Logger,
        metrics: BrokerMetrics? = nil
    ) throws(TLSError) {
        self.configuration = configuration
        self.core = core
        self.metrics = metrics
        self.group = group
        self.logger = logger
        self.tls = try ReloadableTLSContext(
            configuration: Self.tlsConfiguration(configuration, core: core, logger: logger)
        )
    }

    /// The TLS configuration: mutual TLS, and a peer validator that refuses, during the
    /// handshake, any certificate whose SPIFFE ID is malformed, of another trust domain, or of a
    /// tenant the broker does not admit.
    static func tlsConfiguration(
        _ configuration: BrokerServerConfiguration,
        core: BrokerCore,
        logger: Logger
    ) -> TLSConfiguration {
        let trustDomain = configuration.trustDomain
        var tls = TLSConfiguration(
            role: .server,
            certificateChainPath: configuration.certificateChainPath,
            privateKeyPath: configuration.privateKeyPath,
            caBundlePath: configuration.clientCAPath,
            peerVerification: .requireCertificateWithURISAN,
            handshakeTimeout: configuration.handshakeTimeout,
            closeTimeout: configuration.closeTimeout,
            peerValidator: { certificate in
                do throws(IdentityError) {
                    let identity = try GuestIdentity.fromURISANs(certificate.uriSANs, trustDomain: trustDomain)
                    guard core.admitsTenant(identity.tenant) else {
                        core.recordHandshakeFailure(reason: "unknown_tenant")
                        logger.notice(
                            "refusing handshake: tenant \(identity.tenant) is not configured",
                            metadata: ["spiffe_id": "\(identity)"]
                        )
                        return TLSError(code: .peerRejected, reason: "tenant \(identity.tenant) is not configured")
                    }
                    return nil
                } catch {
                    core.recordHandshakeFailure(reason: error.code.description)
                    logger.notice("refusing handshake: \(error)", metadata: ["subject": "\(certificate.subject)"])
                    return TLSError(code: .peerRejected, reason: error.description)
                }
            }
        )
        // The broker sends small frames only (results, hellos, pings, goodbyes): a 4 KiB record
        // limit costs nothing and keeps OpenSSL's per-session write buffer 12 KiB smaller.
        tls.maxSendFragment = 4_096
        return tls
    }

    /// Reloads the certificate, key and CA bundle from their paths: new connections use them,
    /// sessions already up keep theirs. On failure the old ones stay in force.
    public func reloadTLS() throws(TLSError) {
        _ = try self.tls.reload()
    }

    /// Reloads TLS from new paths (a reloaded configuration may name other files); the peer
    /// checks stay the same. On failure the old certificate, key and CA bundle stay in force.
    public func reloadTLS(certificateChainPath: String, privateKeyPath: String, clientCAPath: String) throws(TLSError) {
        var configuration = self.configuration
        configuration.certificateChainPath = certificateChainPath
        configuration.privateKeyPath = privateKeyPath
        configuration.clientCAPath = clientCAPath
        _ = try self.tls.reload(
            configuration: Self.tlsConfiguration(configuration, core: self.core, logger: self.logger)
        )
    }

    /// Binds the listener (or adopts `socket`, an already-listening file descriptor handed over
    /// by systemd) and starts accepting guests; with `accepting` false, only once
    /// ``beginAccepting()`` is called. The daemon starts that way: a crowd of guests connecting
    /// while it starts would otherwise take the descriptors its other listeners still need
    /// (at its `RLIMIT_NOFILE`, the broker then failed to start); meanwhile they wait in the
    /// listen backlog.
    public func start(adopting socket: CInt? = nil, accepting: Bool = true) async throws -> SocketAddress {
        let address: SocketAddress
        switch self.configuration.transport {
        case .epoll:
            address = try self.startEpoll(adopting: socket, accepting: accepting)
        case .nio:
            address = try await self.startNIO(adopting: socket, accepting: accepting)
        }
        self.boundAddress.withLock { $0 = address }
        self.logger.info(
            "listening for guests",
            metadata: [
                "address": "\(address)", "trust_domain": "\(self.configuration.trustDomain)",
                "transport": "\(self.configuration.transport.rawValue)",
            ]
        )
        return address
    }

    /// Starts accepting guests after a ``start(adopting:accepting:)`` that did not.
    public func beginAccepting() async throws {
        if let transport = self.guestTransport.withLock({ $0 }) {
            try await transport.beginAccepting()
        } else if let channel = self.channel.withLock({ $0 }) {
            try await channel.setOption(ChannelOptions.autoRead, value: true).get()
        }
    }

    private func startEpoll(adopting socket: CInt?, accepting: Bool) throws -> SocketAddress {
        let configuration = self.configuration
        let settings = GuestLoop.Settings(
            tls: self.tls,
            handshakeTimeout: configuration.handshakeTimeout,
            closeTimeout: configuration.closeTimeout,
            tickInterval: GuestSession.tickInterval(for: configuration.session),
            makeSession: { [self] in self.makeSession() },
            connections: GuestConnectionCount(),
            logger: self.logger
        )
        let threads = configuration.guestLoops ?? BrokerServerConfiguration.defaultGuestLoops
        let transport = try GuestTransport(threads: threads, settings: settings)
        let address = try transport.start(
            host: configuration.host,
            port: configuration.port,
            adopting: socket,
            accepting: accepting
        )
        self.guestTransport.withLock { $0 = transport }
        return address
    }

    /// A session for one new connection, on either transport.
    private func makeSession() -> GuestSession {
        GuestSession(
            core: self.core,
            configuration: self.configuration.session,
            trustDomain: self.configuration.trustDomain,
            limit: FrameSizeLimit(),
            logger: self.logger,
            metrics: self.metrics
        )
    }

    private func startNIO(adopting socket: CInt?, accepting: Bool) async throws -> SocketAddress {
        let bootstrap = ServerBootstrap(group: self.group)
            // Not reading the listener is not accepting; `beginAccepting()` turns it on.
            .serverChannelOption(.autoRead, value: accepting)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // IPPROTO_TCP level: `.socketOption(.tcp_nodelay)` is SOL_SOCKET option 1, SO_DEBUG,
            // which needs CAP_NET_ADMIN; unprivileged (User=pagebroker) every accept then failed.
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // Each channel keeps its receive buffer between reads. NIO starts at 2 KiB; guest
            // traffic after the handshake is a few hundred bytes per read, and ten thousand idle
            // sessions would each hold the difference. The allocator still grows for bulk syncs.
            .childChannelOption(
                .recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536)
            )
            .childChannelInitializer { [self, tls, children] channel in
                children.insert(channel)
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(TLSTransport.serverHandler(context: tls.current))
                    // The session frames the plaintext itself (no codec handlers between: a frame
                    // crosses the pipeline once, unboxed, and results are flushed once per read).
                    try sync.addHandler(SessionHandler(session: self.makeSession()))
                }
            }
        let channel: any Channel
        if let socket {
            channel = try await bootstrap.withBoundSocket(socket).get()
        } else {
            channel = try await bootstrap.bind(host: self.configuration.host, port: self.configuration.port).get()
        }
        self.channel.withLock { $0 = channel }
        guard let address = channel.localAddress else { throw ChannelError.inappropriateOperationForState }
        return address
    }

    /// The bound address, once started.
    public var localAddress: SocketAddress? { self.boundAddress.withLock { $0 } }

    /// Guest connections open now.
    public var connectionCount: Int {
        if let transport = self.guestTransport.withLock({ $0 }) { return transport.connections.current }
        return self.children.count
    }

    /// Runs `probe` on every thread that carries guest sessions (the epoll transport's loops;
    /// with NIO's pipeline, the event-loop group, which the daemon checks already) and reports
    /// whether all ran it within `timeout`: the watchdog's evidence that sessions are served.
    public func checkGuestLoops(within timeout: Duration, probe: @escaping @Sendable () -> Void = {}) async -> Bool {
        guard let transport = self.guestTransport.withLock({ $0 }) else { return true }
        return await EventLoopHealth.check(transport.executors, within: timeout, probe: probe)
    }

    /// Stops accepting, tells every session the broker is shutting down, and waits (at most
    /// `drainTimeout`) for them to go. Connections still open at the deadline (a guest that
    /// stopped reading never takes its Goodbye, so its close would wait on TLS's close timeout)
    /// are closed at once, so the stop takes `drainTimeout` at most, plus the few milliseconds
    /// closing takes.
    public func stop(drainTimeout: Duration) async {
        let deadline = ContinuousClock.now + drainTimeout
        if let channel = self.channel.withLock({ $0 }) {
            try? await channel.close()
        }
        let transport = self.guestTransport.withLock { $0 }
        await transport?.stopAccepting()
        let sessions = self.core.beginShutdown()
        for session in sessions { session.shutdown() }
        // Polled: sessions end on their own event loops, and a stop happens once per process.
        while self.core.sessionCount > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        // What is left: sessions past the deadline, and connections that never said hello
        // (they have nothing to be told).
        if let transport {
            if self.core.sessionCount > 0 { self.warnStopPastDeadline(drainTimeout) }
            // Closes what is still open, at once, and ends the loops.
            await transport.shutdown()
            return
        }
        let stragglers = self.children.all
        guard !stragglers.isEmpty else { return }
        if self.core.sessionCount > 0 { self.warnStopPastDeadline(drainTimeout) }
        for channel in stragglers {
            channel.triggerUserOutboundEvent(TLSForceClose(), promise: nil)
        }
        for channel in stragglers {
            try? await channel.closeFuture.get()
        }
    }

    private func warnStopPastDeadline(_ drainTimeout: Duration) {
        self.logger.warning(
            "shutdown timeout passed: closing \(self.core.sessionCount) sessions without waiting for them",
            metadata: ["timeout": "\(drainTimeout)"]
        )
    }
}

/// The guest connections open now, each removed as it closes.
private final class OpenConnections: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func insert(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        self.channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in self.channels.withLock { $0[id] = nil } }
    }

    var count: Int { self.channels.withLock { $0.count } }
    var all: [any Channel] { self.channels.withLock { Array($0.values) } }
}
