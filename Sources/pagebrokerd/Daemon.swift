import Broker
import Glibc
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Systemd
import UnixSignals

/// The running broker: event loops, the guest listener, the admin socket, systemd's
/// notifications and watchdog, and signals (SIGHUP reloads, SIGTERM and SIGINT stop).
struct Daemon {
    /// The configuration to start with (file, flags, and `--dev` applied).
    let configuration: BrokerConfiguration
    /// Reads the configuration again for SIGHUP, the same way it was read at start.
    let reloadConfiguration: @Sendable () throws -> BrokerConfiguration
    let logger: Logger
    /// How often `STATUS=` is refreshed (only sent when its text changed).
    var statusInterval: Duration = .seconds(2)

    /// The names `pagebrokerd.socket` gives its sockets (`FileDescriptorName=`).
    static let guestSocketName = "guest"
    static let adminSocketName = "admin"
    static let memorySocketName = "memory"

    /// Starts everything, calls `ready` with the guest listener's address, and runs until
    /// SIGTERM or SIGINT, then shuts down within the configured timeout.
    func run(ready: (String) -> Void) async throws {
        guard let (host, port) = BrokerConfiguration.splitHostPort(self.configuration.listen),
            let certificate = self.configuration.certificate, let key = self.configuration.key,
            let clientCA = self.configuration.clientCA, let trustDomain = self.configuration.trustDomain
        else {
            preconditionFailure("configuration was checked by the command")
        }
        // Trapped before anything starts: a SIGTERM during start-up then stops the broker
        // cleanly once it is up, instead of killing it half-started.
        let signals = await UnixSignalsSequence(trapping: .sighup, .sigterm, .sigint)
        let inherited = try SocketActivation.assign(
            SocketActivation.takeSockets(),
            roles: [Self.guestSocketName, Self.adminSocketName, Self.memorySocketName],
            unnamedRole: Self.guestSocketName
        )
        if !inherited.isEmpty {
            self.logger.info(
                "socket-activated",
                metadata: ["sockets": "\(inherited.keys.sorted().joined(separator: ","))"]
            )
        }

        let core = BrokerCore(policies: self.configuration.policies, maxSessions: self.configuration.maxSessions)
        let pauseStore = PauseStore(directory: Self.stateDirectory(self.configuration))
        let (saved, savedGuests) = try pauseStore.loadAll()
        core.restorePauseOverrides(saved)
        core.restorePausedGuests(savedGuests)
        if !saved.isEmpty || !savedGuests.isEmpty {
            self.logger.info(
                "restored pause state",
                metadata: [
                    "path": "\(pauseStore.path)",
                    "paused": "\(saved.filter(\.value).keys.sorted().joined(separator: ","))",
                    "paused_guests": "\(savedGuests.sorted().joined(separator: ","))",
                ]
            )
        }

        let group = MultiThreadedEventLoopGroup(
            numberOfThreads: self.configuration.eventLoopThreads ?? System.coreCount
        )
        let metrics = DaemonMetrics(
            listen: self.configuration.metricsListen,
            core: core,
            group: group,
            logger: self.logger
        )
        var serverConfiguration = BrokerServerConfiguration(
            host: host,
            port: port,
            certificateChainPath: certificate,
            privateKeyPath: key,
            clientCAPath: clientCA,
            trustDomain: trustDomain,
            session: self.configuration.session
        )
        serverConfiguration.handshakeTimeout = self.configuration.session.handshakeTimeout
        serverConfiguration.transport = self.configuration.guestTransport
        serverConfiguration.guestLoops = self.configuration.eventLoopThreads
        // A stop's deadline (shutdown_timeout) ends sessions that never answer close_notify;
        // TLS's own close timeout must not end them sooner (a second more, so the deadline
        // always comes first), and cannot hold a stop past it (the stop force-closes).
        serverConfiguration.closeTimeout = max(
            serverConfiguration.closeTimeout,
            self.configuration.shutdownTimeout + .seconds(1)
        )
        let server = try BrokerServer(
            configuration: serverConfiguration,
            core: core,
            group: group,
            logger: self.logger,
            metrics: metrics?.metrics
        )
        let address: SocketAddress
        do {
            // Accepting begins once the other listeners are up (see `BrokerServer.start`).
            address = try await server.start(adopting: inherited[Self.guestSocketName], accepting: false)
        } catch {
            try? await group.shutdownGracefully()
            throw StartupError(
                "guest listener \(inherited[Self.guestSocketName] == nil ? self.configuration.listen : "(socket-activated)"): "
                    + "cannot listen: \(Self.explain(error))"
            )
        }
        let shown = Self.describe(address)
        let admin = AdminServer(
            configuration: AdminServerConfiguration(
                access: AdminAccessPolicy(
                    allowedUIDs: Set(self.configuration.allowedUIDs),
                    allowedGIDs: Set(self.configuration.allowedGIDs)
                )
            ),
            backend: PersistentPauseBackend(core: core, store: pauseStore),
            eventLoopGroup: group,
            logger: self.logger
        )
        let adminListener: AdminServer.Listener =
            inherited[Self.adminSocketName].map { .boundSocket($0) }
            ?? .unixDomainSocket(path: self.configuration.adminSocket)
        let metricsURL: String?
        do {
            metricsURL = try await metrics?.start()
        } catch {
            await server.stop(drainTimeout: .zero)
            try? await group.shutdownGracefully()
            throw StartupError(
                "metrics listener \(self.configuration.metricsListen ?? ""): cannot listen: \(Self.explain(error))"
            )
        }
        // Before the admin socket answers: under socket activation the connection that started
        // the broker is already waiting, and its `status` must show the listeners.
        let adminShown =
            inherited[Self.adminSocketName] == nil
            ? "unix:\(self.configuration.adminSocket)" : "unix:(socket-activated)"
        let memoryShown =
            inherited[Self.memorySocketName] == nil
            ? "unix:\(self.configuration.memorySocketPath)" : "unix:(socket-activated memory)"
        core.setListening([shown, adminShown, memoryShown] + (metricsURL.map { [$0] } ?? []))
        do {
            try await admin.start(adminListener)
        } catch {
            await server.stop(drainTimeout: .zero)
            await metrics?.stop()
            try? await group.shutdownGracefully()
            if let error = error as? AdminServerError, error.code == .inUse {
                throw StartupError(error.message)
            }
            throw StartupError("admin listener \(adminListener): cannot listen: \(Self.explain(error))")
        }
        self.logger.info("admin socket ready", metadata: ["listener": "\(adminListener)"])

        let memory = MemoryServer(core: core, logger: self.logger)
        let memoryListener: MemoryServer.Listener =
            inherited[Self.memorySocketName].map { .boundSocket($0) }
            ?? .unixDomainSocket(path: self.configuration.memorySocketPath)
        do {
            try memory.start(memoryListener)
        } catch {
            // A memory socket the operator asked for must work; the default one is optional, so
            // that a broker set up before host-side discard existed (a socket unit without
            // `memory`, no /run/pagebrokerd) still starts, accounting only.
            if inherited[Self.memorySocketName] == nil && self.configuration.memorySocket == nil
                && error.code != .inUse
            {
                self.logger.warning(
                    "no memory socket: host-side discard is off",
                    metadata: ["socket": "\(memoryListener)", "error": "\(error.message)"]
                )
                core.setListening([shown, adminShown] + (metricsURL.map { [$0] } ?? []))
            } else {
                await server.stop(drainTimeout: .zero)
                await admin.shutdown()
                await metrics?.stop()
                try? await group.shutdownGracefully()
                throw StartupError(error.code == .inUse ? error.message : "memory listener: \(error.message)")
            }
        }

        do {
            try await server.beginAccepting()
        } catch {
            await server.stop(drainTimeout: .zero)
            await memory.shutdown()
            await admin.shutdown()
            await metrics?.stop()
            try? await group.shutdownGracefully()
            throw StartupError("guest listener \(shown): cannot accept: \(Self.explain(error))")
        }

        let service = ServiceState(configuration: self.configuration, logger: self.logger)
        let startedStatus = service.statusLine(core)
        service.notify { $0.started(status: startedStatus) }
        ready(shown)

        let background = try self.startBackgroundWork(service: service, core: core, group: group, server: server)
        defer { for task in background { task.cancel() } }

        let signal = await self.serveSignals(signals, service: service, server: server, core: core)
        let timeout = service.shutdownTimeout
        self.logger.info("received \(signal), shutting down", metadata: ["timeout": "\(timeout)"])
        let stoppingStatus = "stopping: \(core.sessionCount) sessions draining"
        service.notify { $0.stopBegan(status: stoppingStatus) }
        await server.stop(drainTimeout: timeout)
        // After the sessions: no report is punched any more, so detaching cannot fail one.
        await memory.shutdown()
        await admin.shutdown()
        await metrics?.stop()
        try await group.shutdownGracefully()
        self.logger.info("stopped")
    }

    /// The live `STATUS=` refresher and, when systemd asks for one, the watchdog.
    private func startBackgroundWork(
        service: ServiceState,
        core: BrokerCore,
        group: MultiThreadedEventLoopGroup,
        server: BrokerServer
    ) throws -> [Task<Void, Never>] {
        let interval = self.statusInterval
        var tasks = [
            Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    let line = service.statusLine(core)
                    service.notify { $0.statusChanged(line) }
                }
            }
        ]
        if let timeout = try ServiceNotifier().watchdogTimeout() {
            let logger = self.logger
            logger.info("watchdog enabled", metadata: ["timeout": "\(timeout)"])
            tasks.append(
                Task {
                    // Ping at half the timeout (sd_watchdog_enabled(3)); each ping needs every
                    // event loop (NIO's and the guest transport's) to have run a probe that
                    // takes the core's lock, within a quarter of the timeout. A broker whose loops or core are stuck stays
                    // silent and systemd restarts it.
                    while !Task.isCancelled {
                        let started = ContinuousClock.now
                        let probe: @Sendable () -> Void = { _ = core.sessionCount }
                        let served = await EventLoopHealth.check(group, within: timeout / 4, probe: probe)
                        let guestsServed = await server.checkGuestLoops(within: timeout / 4, probe: probe)
                        if served && guestsServed {
                            service.notify { $0.healthy() }
                        } else {
                            logger.error(
                                "event loops did not answer within \(timeout / 4); withholding WATCHDOG=1"
                            )
                        }
                        try? await Task.sleep(until: started + timeout / 2)
                    }
                }
            )
        }
        return tasks
    }

    /// Handles SIGHUP (reload) until SIGTERM or SIGINT arrives; returns that signal's name.
    private func serveSignals(
        _ signals: UnixSignalsSequence,
        service: ServiceState,
        server: BrokerServer,
        core: BrokerCore
    ) async -> String {
        for await signal in signals {
            guard signal == .sighup else { return "\(signal)" }
            service.notify { $0.reloadBegan(monotonicMicroseconds: NotifyMessage.monotonicMicroseconds()) }
            service.reload(from: self.reloadConfiguration, server: server, core: core)
            let line = service.statusLine(core)
            service.notify { $0.reloadFinished(status: line) }
        }
        return "end of signals"
    }

    /// The state directory: `state_directory` (or `--state-directory`), else systemd's
    /// `$STATE_DIRECTORY` (`StateDirectory=`; the first of several), else `/var/lib/pagebrokerd`.
    static func stateDirectory(_ configuration: BrokerConfiguration) -> String {
        if let directory = configuration.stateDirectory { return directory }
        if let fromSystemd = getenv("STATE_DIRECTORY").map({ String(cString: $0) }),
            let first = fromSystemd.split(separator: ":").first
        {
            return String(first)
        }
        return "/var/lib/pagebrokerd"
    }

    /// A bind failure in the system's words ("Address already in use"), without NIO's call
    /// and descriptor details.
    static func explain(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if let error = error as? AdminServerError { return error.message }
        if let error = error as? GuestTransportError { return error.message }
        return "\(error)"
    }

    static func describe(_ address: SocketAddress) -> String {
        switch address {
        case .v6: return "[\(address.ipAddress ?? "::")]:\(address.port ?? 0)"
        default: return "\(address.ipAddress ?? "0.0.0.0"):\(address.port ?? 0)"
        }
    }
}
