import BrokerProtocol
import Foundation
import Testing

/// Every counter an operator or a dashboard reads (`pagebrokerctl status` and `tenants`, and the
/// Prometheus scrape) against what the guests themselves were told, reason by reason: a report
/// or a refused handshake counted twice, or not at all, shows up here.
@Suite(.serialized) struct CountsEndToEndTests {
    struct Status: Decodable {
        var listening: [String]
        var sessions: Int
        var reportsOK: Int
        var reportsFailed: Int
        var reclaimableBytes: Int

        enum CodingKeys: String, CodingKey {
            case listening, sessions
            case reportsOK = "reports_ok"
            case reportsFailed = "reports_failed"
            case reclaimableBytes = "reclaimable_bytes"
        }
    }

    struct Tenant: Decodable {
        var tenant: String
        var reclaimableBytes: Int
        var reportsOK: Int
        var reportsFailed: Int
        var reportsFailedByReason: [String: Int]
        var bytesReported: Int
        var bytesReused: Int

        enum CodingKeys: String, CodingKey {
            case tenant
            case reclaimableBytes = "reclaimable_bytes"
            case reportsOK = "reports_ok"
            case reportsFailed = "reports_failed"
            case reportsFailedByReason = "reports_failed_by_reason"
            case bytesReported = "bytes_reported"
            case bytesReused = "bytes_reused"
        }
    }

    /// What the guests saw, per tenant.
    struct Seen {
        var results: [String: [Pagebroker_V1_ReasonCode: Int]] = [:]
        var bytesReported: [String: Int] = [:]
        var bytesReused: [String: Int] = [:]

        mutating func record(_ tenant: String, _ result: Pagebroker_V1_ReportResult?) {
            guard let result else {
                Issue.record("no result for a report of \(tenant)")
                return
            }
            self.results[tenant, default: [:]][result.reason, default: 0] += 1
        }

        var answered: Int { self.results.values.reduce(0) { $0 + $1.values.reduce(0, +) } }
    }

    static let pageSize = 4096

    /// Every `pagebroker_reports_total` series with a non-zero value, keyed by its labels.
    static func reportSeries(_ exposition: String) -> [String: Double] {
        var series: [String: Double] = [:]
        for line in exposition.split(separator: "\n") where line.hasPrefix("pagebroker_reports_total{") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                continue
            }
            let labels = String(line[line.index(line.startIndex, offsetBy: "pagebroker_reports_total".count)..<space])
            if value != 0 { series[labels] = value }
        }
        return series
    }

    /// Every series of `name` with a non-zero value (labels → value).
    static func series(_ exposition: String, _ name: String) -> [String: Double] {
        var series: [String: Double] = [:]
        for line in exposition.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                continue
            }
            if value != 0 { series[String(line[line.index(line.startIndex, offsetBy: name.count)..<space])] = value }
        }
        return series
    }

    @Test func everyCounterEqualsWhatTheGuestsSawPerReason() async throws {
        let broker = try BrokerProcess(extraArguments: ["--metrics-listen", "127.0.0.1:0"])
        let fleet = GuestFleetTests()
        let status = try fleet.ctl(broker, ["status"], as: Status.self)
        let url = try #require(status.listening.first { $0.hasPrefix("http://") }, "\(status.listening)")
        let match = try #require(url.wholeMatch(of: /http:\/\/127\.0\.0\.1:(\d+)\/metrics/), "\(url)")
        let metricsPort = try #require(Int(match.1))
        var seen = Seen()

        // Refused handshakes, one per reason, each with the certificate that earns it.
        let refusals: [(certificate: String, reason: String)] = [
            ("client-t9-g1", "unknown_tenant"),
            ("client-other-domain", "wrong_trust_domain"),
            ("client-malformed-id", "malformed_spiffe_id"),
            ("client-no-uri", "missing_uri_san"),
            ("client-wrong-ca", "peer_certificate_untrusted"),
            ("client-expired", "certificate_expired"),
        ]
        for refusal in refusals {
            let guest = try await RawGuest.connect(
                port: broker.port,
                certificate: TestPKI.path("\(refusal.certificate).pem"),
                key: TestPKI.path("\(refusal.certificate).key")
            )
            try? await guest.send(RawGuest.hello)
            // What the guest saw: no ServerHello, the connection closed.
            #expect(await guest.receive() == nil, "\(refusal.reason)")
            #expect(await guest.waitClosed(), "\(refusal.reason)")
            await guest.close()
        }

        // t1: one report of each result the state machine or the ledger gives.
        let t1 = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        #expect(try await t1.start() != nil)
        let t1Reports: [(UInt64, [(UInt64, UInt64)])] = [
            (1, [(0, 9)]),  // ok
            (2, [(1024, 10), (2048, 9)]),  // ok
            (3, [(1, 9)]),  // not_aligned
            (4, [(1 << 18, 9)]),  // out_of_bounds
            (5, [(4096, 9), (4096, 9)]),  // overlap_in_batch
            (6, []),  // invalid_range
            (7, [(8192, 3)]),  // order_out_of_bounds
            (2, [(8192, 9)]),  // sequence_replayed
        ]
        for (seq, blocks) in t1Reports {
            seen.record("t1", try await t1.report(seq: seq, blocks))
        }
        seen.bytesReported["t1"] = (512 + 1024 + 512) * Self.pageSize
        // Frames 0..<512 taken back: bytes reused, and reclaimable falls by as much.
        try await t1.send(.with { $0.reuse = .with { $0.ranges = [0, 512] } })
        seen.bytesReused["t1"] = 512 * Self.pageSize
        // A ping round trip: the reuse before it has been applied when the pong comes.
        try await t1.send(.with { $0.ping = .with { $0.nonce = 7 } })
        #expect(await t1.receive().map { if case .pong = $0.body { true } else { false } } == true)

        // paused: refused by the core's policy, twice.
        let paused = try await RawGuest.connect(port: broker.port, tenant: "paused", guest: "g1")
        #expect(try await paused.start() != nil)
        for seq in 1...2 { seen.record("paused", try await paused.report(seq: UInt64(seq), [(UInt64(seq) * 512, 9)])) }

        // limited (2 a second, burst 2): six at once, so some are refused however slow the machine.
        let limited = try await RawGuest.connect(port: broker.port, tenant: "limited", guest: "g1")
        #expect(try await limited.start() != nil)
        var limitedOK = 0
        for seq in 1...6 {
            let result = try await limited.report(seq: UInt64(seq), [(UInt64(seq) * 512, 9)])
            if result?.reason == .ok { limitedOK += 1 }
            seen.record("limited", result)
        }
        seen.bytesReported["limited"] = limitedOK * 512 * Self.pageSize
        #expect((seen.results["limited"]?[.rateLimited] ?? 0) > 0)
        #expect(seen.results["paused"]?[.tenantPaused] == 2)

        // Three sessions are up: both views say so.
        #expect(try fleet.ctl(broker, ["status"], as: Status.self).sessions == 3)
        let during = try await MetricsEndToEndTests.get(port: metricsPort, path: "/metrics").body
        #expect(MetricsEndToEndTests.sample(during, "pagebroker_sessions") == 3)
        for guest in [t1, paused, limited] { await guest.close() }
        let deadline = ContinuousClock.now + .seconds(10)
        while try fleet.ctl(broker, ["status"], as: Status.self).sessions > 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }

        let scrape = try await MetricsEndToEndTests.get(port: metricsPort, path: "/metrics").body
        let after = try fleet.ctl(broker, ["status"], as: Status.self)
        let tenants = try fleet.ctl(broker, ["tenants"], as: [Tenant].self)

        // Reports, per tenant and reason: the admin API, the scrape and the guests agree.
        var expectedSeries: [String: Double] = [:]
        for (tenant, results) in seen.results {
            for (reason, count) in results {
                let result = reason == .ok ? "ok" : "failed"
                expectedSeries["{tenant=\"\(tenant)\",result=\"\(result)\",reason=\"\(reason.stableName)\"}"] =
                    Double(count)
            }
        }
        #expect(Self.reportSeries(scrape) == expectedSeries)
        for tenant in tenants {
            let results = seen.results[tenant.tenant] ?? [:]
            let failed = results.filter { $0.key != .ok }
            #expect(tenant.reportsOK == results[.ok] ?? 0, "\(tenant.tenant)")
            #expect(tenant.reportsFailed == failed.values.reduce(0, +), "\(tenant.tenant)")
            #expect(
                tenant.reportsFailedByReason.filter { $0.value != 0 }
                    == Dictionary(uniqueKeysWithValues: failed.map { ("\($0.key.rawValue)", $0.value) }),
                "\(tenant.tenant)"
            )
            let reported = seen.bytesReported[tenant.tenant] ?? 0
            let reused = seen.bytesReused[tenant.tenant] ?? 0
            #expect(tenant.bytesReported == reported, "\(tenant.tenant)")
            #expect(tenant.bytesReused == reused, "\(tenant.tenant)")
            #expect(tenant.reclaimableBytes == reported - reused, "\(tenant.tenant)")
            let label = "{tenant=\"\(tenant.tenant)\"}"
            #expect(MetricsEndToEndTests.sample(scrape, "pagebroker_reported_bytes_total\(label)") == Double(reported))
            #expect(MetricsEndToEndTests.sample(scrape, "pagebroker_reused_bytes_total\(label)") == Double(reused))
            #expect(
                MetricsEndToEndTests.sample(scrape, "pagebroker_reclaimable_bytes\(label)") == Double(reported - reused)
            )
        }
        let okTotal = seen.results.values.reduce(0) { $0 + ($1[.ok] ?? 0) }
        #expect(after.reportsOK == okTotal)
        #expect(after.reportsFailed == seen.answered - okTotal)
        #expect(after.reclaimableBytes == tenants.reduce(0) { $0 + $1.reclaimableBytes })
        // Every answered report was timed exactly once.
        #expect(
            MetricsEndToEndTests.sample(scrape, "pagebroker_report_round_trip_seconds_count") == Double(seen.answered)
        )
        #expect(MetricsEndToEndTests.sample(scrape, "pagebroker_sessions") == 0)
        #expect(after.sessions == 0)

        // Handshakes: one per refused guest, under its own reason and no other.
        #expect(
            Self.series(scrape, "pagebroker_handshake_failures_total")
                == Dictionary(uniqueKeysWithValues: refusals.map { ("{reason=\"\($0.reason)\"}", 1.0) })
        )

        #expect(broker.terminate() == 0)
    }
}
