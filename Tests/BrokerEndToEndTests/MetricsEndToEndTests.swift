import BrokerProtocol
import Foundation
import NIOCore
import NIOPosix
import Testing

/// A real broker with `--metrics-listen`, real guests reporting, and a scrape: the metrics must
/// equal what the admin API says, and pass `promtool check metrics`.
@Suite(.serialized) struct MetricsEndToEndTests {
    struct Status: Decodable {
        var listening: [String]
        var sessions: Int
    }

    struct Tenant: Decodable {
        var tenant: String
        var reclaimableBytes: Int
        var reportsOK: Int
        var reportsFailed: Int
        var bytesReported: Int
        var bytesReused: Int

        enum CodingKeys: String, CodingKey {
            case tenant
            case reclaimableBytes = "reclaimable_bytes"
            case reportsOK = "reports_ok"
            case reportsFailed = "reports_failed"
            case bytesReported = "bytes_reported"
            case bytesReused = "bytes_reused"
        }
    }

    /// `GET path` over a new connection; returns the status line and the body.
    static func get(port: Int, path: String) async throws -> (status: String, body: String) {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let response = try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(
                ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            )
            var response = ""
            for try await chunk in inbound { response += String(buffer: chunk) }
            return response
        }
        guard let end = response.range(of: "\r\n\r\n") else { return (response, "") }
        let status = response[..<end.lowerBound].split(separator: "\r\n").first.map(String.init) ?? ""
        return (status, String(response[end.upperBound...]))
    }

    /// The value of the sample `series` (name and labels exactly as exposed), or `nil`.
    static func sample(_ exposition: String, _ series: String) -> Double? {
        let values = exposition.split(separator: "\n").filter { $0.hasPrefix(series + " ") }.compactMap {
            Double($0.dropFirst(series.count + 1))
        }
        return values.count == 1 ? values[0] : nil
    }

    /// `promtool` from PATH (Debian's `prometheus` package, which scripts/setup installs).
    static func promtool() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/promtool" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    @Test func scrapeEqualsTheAdminFiguresAndPassesPromtool() async throws {
        let broker = try BrokerProcess(extraArguments: ["--metrics-listen", "127.0.0.1:0"])
        let fleet = GuestFleetTests()
        let status = try fleet.ctl(broker, ["status"], as: Status.self)
        let url = try #require(status.listening.first { $0.hasPrefix("http://") }, "\(status.listening)")
        let match = try #require(url.wholeMatch(of: /http:\/\/127\.0\.0\.1:(\d+)\/metrics/), "\(url)")
        let port = try #require(Int(match.1))
        #expect(await broker.waitForLog("metrics listening"))
        #expect(await broker.waitForLog("127.0.0.1:\(port)"))

        // A guest of a tenant the broker does not know is refused in the handshake; a known one
        // sends a report that is not aligned.
        let stranger = try await RawGuest.connect(
            port: broker.port,
            certificate: TestPKI.path("client-t9-g1.pem"),
            key: TestPKI.path("client-t9-g1.key")
        )
        try? await stranger.send(RawGuest.hello)
        #expect(await stranger.waitClosed())
        let raw = try await RawGuest.connect(port: broker.port, tenant: "t3", guest: "g1")
        #expect(try await raw.start() != nil)
        #expect(try await raw.report(seq: 1, [(1, 9)])?.reason == .notAligned)
        await raw.close()

        let agents = try [("t1", "g2", "churn"), ("t2", "g1", "memhog")].map {
            try fleet.startAgent(port: broker.port, tenant: $0.0, guest: $0.1, workload: $0.2, duration: "4s")
        }
        for agent in agents {
            let result = try fleet.finish(agent)
            #expect(result.reports > 0)
        }

        // The guests have exited; wait (bounded) until the broker has seen their sessions end.
        let deadline = ContinuousClock.now + .seconds(10)
        while try fleet.ctl(broker, ["status"], as: Status.self).sessions > 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let scrape = try await Self.get(port: port, path: "/metrics")
        #expect(scrape.status == "HTTP/1.1 200 OK")
        let text = scrape.body
        let tenants = try fleet.ctl(broker, ["tenants"], as: [Tenant].self)
        #expect(tenants.map(\.tenant).sorted() == ["limited", "paused", "t1", "t2", "t3"])
        var answered = 0.0
        for tenant in tenants {
            let label = "tenant=\"\(tenant.tenant)\""
            #expect(
                Self.sample(text, "pagebroker_reclaimable_bytes{\(label)}") == Double(tenant.reclaimableBytes),
                "\(tenant.tenant)"
            )
            #expect(
                Self.sample(text, "pagebroker_reports_total{\(label),result=\"ok\",reason=\"ok\"}")
                    == Double(tenant.reportsOK),
                "\(tenant.tenant)"
            )
            #expect(
                Self.sample(text, "pagebroker_reported_bytes_total{\(label)}") == Double(tenant.bytesReported),
                "\(tenant.tenant)"
            )
            #expect(
                Self.sample(text, "pagebroker_reused_bytes_total{\(label)}") == Double(tenant.bytesReused),
                "\(tenant.tenant)"
            )
            answered += Double(tenant.reportsOK + tenant.reportsFailed)
        }
        #expect(tenants.contains { $0.tenant == "t1" && $0.reclaimableBytes > 0 })
        #expect(tenants.first { $0.tenant == "t3" }?.reportsFailed == 1)
        #expect(
            Self.sample(text, "pagebroker_reports_total{tenant=\"t3\",result=\"failed\",reason=\"not_aligned\"}") == 1
        )
        #expect(Self.sample(text, "pagebroker_handshake_failures_total{reason=\"unknown_tenant\"}") == 1)
        // Every report was timed once, from its frame's arrival to its result's write.
        #expect(answered > 0)
        #expect(Self.sample(text, "pagebroker_report_round_trip_seconds_count") == answered)
        #expect(Self.sample(text, "pagebroker_sessions") == 0)

        #expect(try await Self.get(port: port, path: "/").status == "HTTP/1.1 404 Not Found")

        // promtool is required (scripts/setup installs it): a missing one fails the test.
        let promtool = try #require(
            Self.promtool(),
            "promtool is not on PATH: run scripts/setup (Debian package prometheus)"
        )
        let process = Process()
        process.executableURL = URL(fileURLWithPath: promtool)
        process.arguments = ["check", "metrics"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try input.fileHandleForWriting.close()
        let report = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "promtool check metrics:\n\(report)\n--- exposition:\n\(text)")

        #expect(broker.terminate() == 0)
    }
}
