import Broker
import Logging
import NIOCore
import NIOPosix
import UnixSignals

/// The running broker: event loops, the guest listener, the admin socket, and signals.
struct Daemon {
    let configuration: BrokerConfiguration
    let logger: Logger

    /// Starts everything, calls `ready` with the guest listener's address, and runs until
    /// SIGTERM or SIGINT, then shuts down within the configured timeout.
    func run(ready: (String) -> Void) async throws {
        guard let (host, port) = BrokerConfiguration.splitHostPort(self.configuration.listen),
            let certificate = self.configuration.certificate, let key = self.configuration.key,
            let clientCA = self.configuration.clientCA, let trustDomain = self.configuration.trustDomain
        else {
            preconditionFailure("configuration was checked by the command")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let core = BrokerCore(policies: self.configuration.policies, maxSessions: self.configuration.maxSessions)
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
        let address = try await server.start()
        let shown = Self.describe(address)
        let admin = AdminServer(
            configuration: AdminServerConfiguration(
                access: AdminAccessPolicy(
                    allowedUIDs: Set(self.configuration.allowedUIDs),
                    allowedGIDs: Set(self.configuration.allowedGIDs)
                )
            ),
            backend: core,
            eventLoopGroup: group,
            logger: self.logger
        )
        do {
            try await admin.start(.unixDomainSocket(path: self.configuration.adminSocket))
        } catch {
            await server.stop(drainTimeout: .zero)
            try? await group.shutdownGracefully()
            throw error
        }
        let metricsURL: String?
        do {
            metricsURL = try await metrics?.start()
        } catch {
            await server.stop(drainTimeout: .zero)
            await admin.shutdown()
            try? await group.shutdownGracefully()
            throw error
        }
        core.setListening([shown, "unix:\(self.configuration.adminSocket)"] + (metricsURL.map { [$0] } ?? []))
        self.logger.info("admin socket ready", metadata: ["path": "\(self.configuration.adminSocket)"])
        ready(shown)

        let signal = await Self.waitForTermination()
        self.logger.info(
            "received \(signal), shutting down",
            metadata: ["timeout": "\(self.configuration.shutdownTimeout)"]
        )
        await server.stop(drainTimeout: self.configuration.shutdownTimeout)
        await admin.shutdown()
        await metrics?.stop()
        try await group.shutdownGracefully()
        self.logger.info("stopped")
    }

    static func describe(_ address: SocketAddress) -> String {
        switch address {
        case .v6: return "[\(address.ipAddress ?? "::")]:\(address.port ?? 0)"
        default: return "\(address.ipAddress ?? "0.0.0.0"):\(address.port ?? 0)"
        }
    }

    /// Waits for SIGTERM or SIGINT; returns its name.
    static func waitForTermination() async -> String {
        for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
            return "\(signal)"
        }
        return "end of signals"
    }
}
