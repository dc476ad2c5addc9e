import Broker
import BrokerProtocol
import NIOCore
import NIOPosix
import Prometheus
import Testing

/// The metrics endpoint on a real socket: what it answers to which request.
@Suite struct MetricsServerTests {
    /// Sends `request` as is and returns everything the server wrote until it closed.
    static func exchange(port: Int, _ request: String) async throws -> String {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            var response = ""
            for try await chunk in inbound { response += String(buffer: chunk) }
            return response
        }
    }

    /// Splits one response off the front of `text`: status line, headers, body, rest.
    static func parseResponse(
        _ text: Substring
    ) -> (status: String, headers: [String: String], body: String, rest: Substring)? {
        guard let end = text.range(of: "\r\n\r\n") else { return nil }
        let lines = text[..<end.lowerBound].split(separator: "\r\n")
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            headers[parts[0].lowercased()] = String(parts[1].trimmingPrefix(" "))
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        let bodyStart = end.upperBound
        let bodyEnd = text.utf8.index(bodyStart, offsetBy: length)
        return (String(lines[0]), headers, String(text[bodyStart..<bodyEnd]), text[bodyEnd...])
    }

    /// Runs `body` against a server over a core with one tenant that has reported one block.
    static func withServer(_ body: (_ port: Int, _ core: BrokerCore) async throws -> Void) async throws {
        let (server, port, core) = try await Self.server()
        do {
            try await body(port, core)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    static func server() async throws -> (MetricsServer, Int, BrokerCore) {
        let core = BrokerCore(policies: PolicySet(tenants: ["acme": TenantPolicy()]), clock: { .zero })
        let identity = GuestIdentity(trustDomain: "example.org", tenant: "acme", guest: "vm-1")
        _ = core.admit(
            identity,
            geometry: GuestGeometry(pageSize: 4096, totalPages: 1 << 20, minOrder: 9, maxOrder: 10, agentVersion: "t"),
            control: BrokerMetricsTests.FakeSession()
        )
        #expect(core.account(identity, blocks: [ReportedBlock(frame: 0, order: 9)]).reason == .ok)
        let metrics = BrokerMetrics(registry: PrometheusCollectorRegistry())
        let server = MetricsServer(group: MultiThreadedEventLoopGroup.singleton, logger: .init(label: "test")) {
            metrics.exposition(from: core)
        }
        let address = try await server.start(host: "127.0.0.1", port: 0)
        #expect(MetricsServer.url(for: address) == "http://127.0.0.1:\(address.port!)/metrics")
        return (server, address.port!, core)
    }

    @Test func getMetricsServesTheExposition() async throws {
        try await Self.withServer { port, _ in
            let text = try await Self.exchange(
                port: port,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            let response = try #require(Self.parseResponse(text[...]))
            #expect(response.status == "HTTP/1.1 200 OK")
            #expect(response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            #expect(response.rest.isEmpty)
            let scraped = Exposition(response.body)
            #expect(scraped.value("pagebroker_reclaimable_bytes", ["tenant": "acme"]) == Double(512 * 4096))
            #expect(scraped.value("pagebroker_reports_total", ["tenant": "acme", "result": "ok", "reason": "ok"]) == 1)
            #expect(scraped.value("pagebroker_sessions") == 1)

            // A query string does not change the path.
            let queried = try await Self.exchange(
                port: port,
                "GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            #expect(Self.parseResponse(queried[...])?.status == "HTTP/1.1 200 OK")
        }
    }

    @Test func otherPathsAre404AndOtherMethods405() async throws {
        try await Self.withServer { port, _ in
            for path in ["/", "/metric", "/metrics/", "/favicon.ico"] {
                let text = try await Self.exchange(
                    port: port,
                    "GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                #expect(Self.parseResponse(text[...])?.status == "HTTP/1.1 404 Not Found", "\(path)")
            }
            for method in ["POST", "PUT", "DELETE"] {
                let text = try await Self.exchange(
                    port: port,
                    "\(method) /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
                )
                let response = try #require(Self.parseResponse(text[...]), "\(method)")
                #expect(response.status == "HTTP/1.1 405 Method Not Allowed", "\(method)")
                #expect(response.headers["allow"] == "GET")
            }
            // A response to HEAD has no body.
            let head = try await Self.exchange(
                port: port,
                "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            #expect(head.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
            #expect(head.hasSuffix("\r\n\r\n"))
        }
    }

    @Test func keepsTheConnectionForMoreScrapes() async throws {
        try await Self.withServer { port, core in
            // Two pipelined requests on one connection; the second asks to close, so both answers
            // arrive before the end of the stream.
            let identity = GuestIdentity(trustDomain: "example.org", tenant: "acme", guest: "vm-1")
            #expect(core.account(identity, blocks: [ReportedBlock(frame: 512, order: 9)]).reason == .ok)
            let text = try await Self.exchange(
                port: port,
                "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            let first = try #require(Self.parseResponse(text[...]))
            #expect(first.status == "HTTP/1.1 200 OK")
            #expect(first.headers["connection"] == nil)
            #expect(
                Exposition(first.body).value(
                    "pagebroker_reports_total",
                    ["tenant": "acme", "result": "ok", "reason": "ok"]
                )
                    == 2
            )
            let second = try #require(Self.parseResponse(first.rest))
            #expect(second.status == "HTTP/1.1 404 Not Found")
            #expect(second.headers["connection"] == "close")
            #expect(second.rest.isEmpty)
        }
    }

    @Test func stopClosesTheListener() async throws {
        let (server, port, _) = try await Self.server()
        await server.stop()
        await #expect(throws: (any Error).self) {
            _ = try await Self.exchange(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        }
    }
}
