import Broker
import Logging
import Metrics
import NIOCore
import Prometheus

/// The daemon's metrics endpoint (`--metrics-listen`, `metrics.listen`): one Prometheus registry
/// for the process, the broker's metrics in it, and the HTTP listener that serves it.
struct DaemonMetrics {
    let metrics: BrokerMetrics
    private let server: MetricsServer
    private let host: String
    private let port: Int

    /// `nil` when no metrics listener is configured: then nothing is recorded at all.
    init?(listen: String?, core: BrokerCore, group: any EventLoopGroup, logger: Logger) {
        guard let listen else { return nil }
        guard let (host, port) = BrokerConfiguration.splitHostPort(listen) else {
            preconditionFailure("metrics listen address was checked by the command")
        }
        let registry = PrometheusCollectorRegistry()
        // Anything in the process instrumented with swift-metrics lands in the same exposition.
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let metrics = BrokerMetrics(registry: registry)
        self.metrics = metrics
        self.server = MetricsServer(group: group, logger: logger) { metrics.exposition(from: core) }
        self.host = host
        self.port = port
    }

    /// Binds the listener; returns its URL for `pagebrokerctl status`.
    func start() async throws -> String {
        MetricsServer.url(for: try await self.server.start(host: self.host, port: self.port))
    }

    func stop() async {
        await self.server.stop()
    }
}
