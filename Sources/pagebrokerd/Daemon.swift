import Broker
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
            roles: [Self.guestSocketName, Self.adminSocketName],
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
        let saved = try pauseStore.load()
        core.restorePauseOverrides(saved)
        if !saved.isEmpty {
            self.logger.info(
                "restored pause state",
                metadata: [
                    "path": "\(pauseStore.path)",
                    "paused": "\(saved.filter(\.value).keys.sorted().joined(separator: ","))",
                ]
            )
        }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
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
        let server = try BrokerServer(
            configuration: serverConfiguration,
            core: core,
            group: group,
            logger: self.logger,
            metrics: metrics?.metrics
        )
        let address = try await server.start(adopting: inherited[Self.guestSocketName])
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
            throw error
        }
        // Before the admin socket answers: under socket activation the connection that started
        // the broker is already waiting, and its `status` must show the listeners.
        let adminShown =
            inherited[Self.adminSocketName] == nil
            ? "unix:\(self.configuration.adminSocket)" : "unix:(socket-activated)"
        core.setListening([shown, adminShown] + (metricsURL.map { [$0] } ?? []))
        do {
            try await admin.start(adminListener)
        } catch {
            await server.stop(drainTimeout: .zero)
            await metrics?.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        self.logger.info("admin socket ready", metadata: ["listener": "\(adminListener)"])

        let service = ServiceState(configuration: self.configuration, logger: self.logger)
        let startedStatus = service.statusLine(core)
        service.notify { $0.started(status: startedStatus) }
        ready(shown)

        let background = try self.startBackgroundWork(service: service, core: core, group: group)
        defer { for task in background { task.cancel() } }

        let signal = await self.serveSignals(signals, service: service, server: server, core: core)
        let timeout = service.shutdownTimeout
        self.logger.info("received \(signal), shutting down", metadata: ["timeout": "\(timeout)"])
        let stoppingStatus = "stopping: \(core.sessionCount) sessions draining"
        service.notify { $0.stopBegan(status: stoppingStatus) }
        await server.stop(drainTimeout: timeout)
        await admin.shutdown()
        await metrics?.stop()
        try await group.shutdownGracefully()
        self.logger.info("stopped")
    }

    /// The live `STATUS=` refresher and, when systemd asks for one, the watchdog.
    private func startBackgroundWork(
        service: ServiceState,
        core: BrokerCore,
        group: MultiThreadedEventLoopGroup
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
                    // event loop to have run a probe that takes the core's lock, within a
                    // quarter of the timeout. A broker whose loops or core are stuck stays
                    // silent and systemd restarts it.
                    while !Task.isCancelled {
                        let started = ContinuousClock.now
                        if await EventLoopHealth.check(group, within: timeout / 4, probe: { _ = core.sessionCount }) {
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

    static func describe(_ address: SocketAddress) -> String {
        switch address {
        case .v6: return "[\(address.ipAddress ?? "::")]:\(address.port ?? 0)"
        default: return "\(address.ipAddress ?? "0.0.0.0"):\(address.port ?? 0)"
        }
    }
}

/// What the daemon's tasks share: the notification state machine, the configuration in force
/// and the last reload's outcome.
final class ServiceState: Sendable {
    private struct State {
        var machine = NotifyStateMachine()
        var configuration: BrokerConfiguration
        var lastReload: ServiceStatusLine.Reload?
        var notifyFailed = false
    }

    private let state: Mutex<State>
    private let notifier = ServiceNotifier()
    private let logger: Logger

    init(configuration: BrokerConfiguration, logger: Logger) {
        self.state = Mutex(State(configuration: configuration))
        self.logger = logger
    }

    var shutdownTimeout: Duration { self.state.withLock { $0.configuration.shutdownTimeout } }

    func statusLine(_ core: BrokerCore) -> String {
        let reload = self.state.withLock { $0.lastReload }
        return ServiceStatusLine.render(core.status(), lastReload: reload)
    }

    /// Feeds an event to the state machine and sends what it returns, in order. Sending under
    /// the lock keeps datagrams in the machine's order across tasks; `event` must not call back
    /// into this object (compute status lines first).
    func notify(_ event: (inout NotifyStateMachine) -> [NotifyMessage]) {
        self.state.withLock { state in
            for message in event(&state.machine) {
                do {
                    try self.notifier.send(message)
                } catch {
                    // Said once: a service manager that went away would otherwise flood the log.
                    if !state.notifyFailed { self.logger.warning("cannot notify systemd: \(error)") }
                    state.notifyFailed = true
                }
            }
        }
    }

    /// Reloads: reads the configuration, swaps TLS material, then tenant policy. Anything
    /// wrong refuses the whole reload and the running configuration stays.
    @discardableResult
    func reload(
        from read: () throws -> BrokerConfiguration,
        server: BrokerServer,
        core: BrokerCore
    ) -> ServiceStatusLine.Reload {
        let outcome: ServiceStatusLine.Reload
        let current = self.state.withLock { $0.configuration }
        do {
            let new = try read()
            guard let certificate = new.certificate, let key = new.key, let clientCA = new.clientCA,
                new.trustDomain != nil
            else {
                throw ReloadError(
                    "tls.certificate, tls.key, tls.client_ca and trust_domain are required"
                )
            }
            try server.reloadTLS(certificateChainPath: certificate, privateKeyPath: key, clientCAPath: clientCA)
            core.updatePolicies(new.policies)
            // What runs now: the reloadable keys from the new file, the rest as started.
            var applied = current
            applied.certificate = certificate
            applied.key = key
            applied.clientCA = clientCA
            applied.policies = new.policies
            applied.shutdownTimeout = new.shutdownTimeout
            let restartNeeded = ConfigurationChange.restartNeeded(from: current, to: new)
            self.state.withLock { $0.configuration = applied }
            outcome = .applied(restartNeeded: restartNeeded)
            self.logger.notice(
                "configuration reloaded",
                metadata: [
                    "tenants": "\(new.policies.tenants.count)",
                    "restart_needed": "\(restartNeeded.joined(separator: ","))",
                ]
            )
            if !restartNeeded.isEmpty {
                self.logger.warning(
                    "changed keys take effect only after a restart: \(restartNeeded.joined(separator: ", "))"
                )
            }
        } catch {
            outcome = .refused(reason: "\(error)")
            self.logger.error("reload refused, previous configuration stays in force: \(error)")
        }
        self.state.withLock { $0.lastReload = outcome }
        return outcome
    }
}

/// A reloaded configuration that cannot be applied.
struct ReloadError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
