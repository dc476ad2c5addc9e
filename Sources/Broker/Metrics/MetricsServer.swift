import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The Prometheus endpoint: plain HTTP/1.1 on its own listener, `GET /metrics` answered with the
/// text exposition, 404 for any other path and 405 for any other method.
///
/// It serves whatever `exposition` renders, so it knows nothing of the broker; the daemon passes
/// ``BrokerMetrics/exposition(from:)``. Rendering runs on the connection's event loop: it takes
/// the core's lock once for a snapshot and then formats, so a scrape holds no guest up for longer
/// than a snapshot takes.
public final class MetricsServer: Sendable {
    /// The exposition's media type (Prometheus text format 0.0.4).
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private let group: any EventLoopGroup
    private let logger: Logger
    private let exposition: @Sendable () -> [UInt8]
    private let channel = Mutex<(any Channel)?>(nil)

    public init(group: any EventLoopGroup, logger: Logger, exposition: @escaping @Sendable () -> [UInt8]) {
        self.group = group
        self.logger = logger
        self.exposition = exposition
    }

    /// Binds `host:port` (port 0: any free port) and starts serving; returns the bound address.
    public func start(host: String, port: Int) async throws -> SocketAddress {
        let exposition = self.exposition
        let channel = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(MetricsHTTPHandler(exposition: exposition))
                }
            }
            .bind(host: host, port: port).get()
        self.channel.withLock { $0 = channel }
        guard let address = channel.localAddress else { throw ChannelError.inappropriateOperationForState }
        self.logger.info(
            "metrics listening",
            metadata: ["address": "\(Self.describe(address))", "url": "\(Self.url(for: address))"]
        )
        return address
    }

    /// The bound address, once started.
    public var localAddress: SocketAddress? { self.channel.withLock { $0?.localAddress } }

    /// Stops accepting scrapes.
    public func stop() async {
        if let channel = self.channel.withLock({ $0 }) {
            try? await channel.close()
        }
    }

    /// `HOST:PORT`, IPv6 in brackets.
    public static func describe(_ address: SocketAddress) -> String {
        switch address {
        case .v6: return "[\(address.ipAddress ?? "::")]:\(address.port ?? 0)"
        default: return "\(address.ipAddress ?? "0.0.0.0"):\(address.port ?? 0)"
        }
    }

    /// `http://HOST:PORT/metrics`.
    public static func url(for address: SocketAddress) -> String {
        "http://\(Self.describe(address))/metrics"
    }
}

/// One HTTP connection to the metrics endpoint. Keeps the connection open between requests when
/// the client asks for it (Prometheus does).
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let exposition: @Sendable () -> [UInt8]
    private var request: HTTPRequestHead?

    init(exposition: @escaping @Sendable () -> [UInt8]) {
        self.exposition = exposition
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
        case .body:
            // A body is never wanted; it is read and dropped so the connection stays in step.
            break
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            self.respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.prefix { $0 != "?" }
        var headers = HTTPHeaders()
        let status: HTTPResponseStatus
        var body = context.channel.allocator.buffer(capacity: 0)
        if path != "/metrics" {
            status = .notFound
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            body.writeString("not found: metrics are at /metrics\n")
        } else if head.method != .GET {
            status = .methodNotAllowed
            headers.add(name: "Allow", value: "GET")
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            body.writeString("method not allowed: use GET\n")
        } else {
            status = .ok
            headers.add(name: "Content-Type", value: MetricsServer.contentType)
            body.writeBytes(self.exposition())
        }
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil
        )
        // A response to HEAD announces its length but carries no body.
        if head.method != .HEAD { context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        let written = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
