import Broker
import BrokerProtocol
import Prometheus
import Testing

/// The broker's metrics, each in its own registry, against figures driven through a real
/// ``BrokerCore``.
@Suite struct BrokerMetricsTests {
    final class FakeSession: SessionControl {
        func replaced() {}
        func shutdown() {}
    }

    static let geometry = GuestGeometry(
        pageSize: 4096,
        totalPages: 1 << 20,
        minOrder: 9,
        maxOrder: 10,
        agentVersion: "test"
    )
    /// One order-9 block of 4 KiB pages.
    static let block = 512 * 4096

    static func identity(_ tenant: String, _ guest: String) -> GuestIdentity {
        GuestIdentity(trustDomain: "example.org", tenant: tenant, guest: guest)
    }

    static func scrape(_ metrics: BrokerMetrics, _ core: BrokerCore) -> Exposition {
        Exposition(String(decoding: metrics.exposition(from: core), as: UTF8.self))
    }

    @Test func countersAndGaugesEqualTheCoresFiguresExactly() throws {
        // A clock that stands still: the rate limit of `a` allows exactly one report.
        let core = BrokerCore(
            policies: PolicySet(tenants: [
                "a": TenantPolicy(maxReportsPerSecond: 1, burst: 1), "b": TenantPolicy(),
                "p": TenantPolicy(paused: true),
            ]),
            clock: { .zero }
        )
        let metrics = BrokerMetrics(registry: PrometheusCollectorRegistry())
        let a = Self.identity("a", "g1")
        let b = Self.identity("b", "g1")
        let p = Self.identity("p", "g1")
        var sessions: [GuestIdentity: String] = [:]
        for identity in [a, b, p] {
            guard case .admitted(let id) = core.admit(identity, geometry: Self.geometry, control: FakeSession()) else {
                Issue.record("\(identity) refused")
                return
            }
            sessions[identity] = id
        }

        #expect(core.account(a, blocks: [ReportedBlock(frame: 0, order: 9)]).reason == .ok)
        #expect(core.account(a, blocks: [ReportedBlock(frame: 512, order: 9)]).reason == .rateLimited)
        #expect(core.account(p, blocks: [ReportedBlock(frame: 0, order: 9)]).reason == .tenantPaused)
        #expect(
            core.account(b, blocks: [ReportedBlock(frame: 0, order: 9), ReportedBlock(frame: 512, order: 9)]).reason
                == .ok
        )
        // Frames already discarded are not reported bytes a second time.
        #expect(core.account(b, blocks: [ReportedBlock(frame: 512, order: 9)]).reason == .ok)
        try core.reuse(b, ranges: [FrameRange(firstFrame: 0, count: 512)])
        core.recordRefusedReport(b, reason: .notAligned)
        core.recordHandshakeFailure(reason: "unknown_tenant")
        core.recordHandshakeFailure(reason: "unknown_tenant")
        core.recordHandshakeFailure(reason: "certificate_expired")

        var scraped = Self.scrape(metrics, core)
        func check(_ scraped: Exposition, bOK: Double) {
            #expect(scraped.value("pagebroker_reclaimable_bytes", ["tenant": "a"]) == Double(Self.block))
            #expect(scraped.value("pagebroker_reclaimable_bytes", ["tenant": "b"]) == Double(Self.block))
            #expect(scraped.value("pagebroker_reclaimable_bytes", ["tenant": "p"]) == 0)
            #expect(scraped.value("pagebroker_reports_total", ["tenant": "a", "result": "ok", "reason": "ok"]) == 1)
            #expect(
                scraped.value(
                    "pagebroker_reports_total",
                    ["tenant": "a", "result": "failed", "reason": "rate_limited"]
                ) == 1
            )
            #expect(
                scraped.value(
                    "pagebroker_reports_total",
                    ["tenant": "p", "result": "failed", "reason": "tenant_paused"]
                ) == 1
            )
            #expect(scraped.value("pagebroker_reports_total", ["tenant": "p", "result": "ok", "reason": "ok"]) == 0)
            #expect(
                scraped.value("pagebroker_reports_total", ["tenant": "b", "result": "ok", "reason": "ok"]) == bOK
            )
            #expect(
                scraped.value(
                    "pagebroker_reports_total",
                    ["tenant": "b", "result": "failed", "reason": "not_aligned"]
                ) == 1
            )
            #expect(scraped.series("pagebroker_reports_total").count == 6)
            #expect(scraped.value("pagebroker_reported_bytes_total", ["tenant": "a"]) == Double(Self.block))
            #expect(scraped.value("pagebroker_reported_bytes_total", ["tenant": "b"]) == Double(2 * Self.block))
            #expect(scraped.value("pagebroker_reused_bytes_total", ["tenant": "b"]) == Double(Self.block))
            #expect(scraped.value("pagebroker_reused_bytes_total", ["tenant": "a"]) == 0)
            #expect(scraped.value("pagebroker_handshake_failures_total", ["reason": "unknown_tenant"]) == 2)
            #expect(scraped.value("pagebroker_handshake_failures_total", ["reason": "certificate_expired"]) == 1)
        }
        check(scraped, bOK: 2)
        #expect(scraped.value("pagebroker_sessions") == 3)

        // The gauges and counters agree with what the admin API says.
        for tenant in core.tenants() {
            #expect(
                scraped.value("pagebroker_reclaimable_bytes", ["tenant": tenant.tenant])
                    == Double(tenant.reclaimableBytes)
            )
            #expect(
                scraped.value("pagebroker_reported_bytes_total", ["tenant": tenant.tenant])
                    == Double(tenant.bytesReported)
            )
        }

        // A second scrape with nothing new counts nothing twice.
        scraped = Self.scrape(metrics, core)
        check(scraped, bOK: 2)

        // One more report and a session gone: exactly that moves.
        #expect(core.account(b, blocks: [ReportedBlock(frame: 1024, order: 9)]).reason == .ok)
        core.disconnect(p, sessionID: sessions[p]!)
        scraped = Self.scrape(metrics, core)
        #expect(scraped.value("pagebroker_reports_total", ["tenant": "b", "result": "ok", "reason": "ok"]) == 3)
        #expect(scraped.value("pagebroker_reported_bytes_total", ["tenant": "b"]) == Double(3 * Self.block))
        #expect(scraped.value("pagebroker_reclaimable_bytes", ["tenant": "b"]) == Double(2 * Self.block))
        #expect(scraped.value("pagebroker_sessions") == 2)
    }

    @Test func everyFamilyIsTypedAndDocumented() {
        let core = BrokerCore(policies: PolicySet(tenants: ["a": TenantPolicy()]), clock: { .zero })
        core.recordHandshakeFailure(reason: "unknown_tenant")
        let metrics = BrokerMetrics(registry: PrometheusCollectorRegistry())
        metrics.recordReportRoundTrip(.microseconds(80))
        metrics.recordPunch(.microseconds(700))
        let scraped = Self.scrape(metrics, core)
        // Every family but the discard failures, which appear with a tenant's first failure.
        let expected: [String: String] = [
            BrokerMetrics.Name.reclaimableBytes: "gauge", BrokerMetrics.Name.reports: "counter",
            BrokerMetrics.Name.reportedBytes: "counter", BrokerMetrics.Name.reusedBytes: "counter",
            BrokerMetrics.Name.sessions: "gauge", BrokerMetrics.Name.handshakeFailures: "counter",
            BrokerMetrics.Name.reportRoundTrip: "histogram", BrokerMetrics.Name.residentBytes: "gauge",
            BrokerMetrics.Name.discardedBytes: "counter", BrokerMetrics.Name.punchDuration: "histogram",
        ]
        #expect(scraped.types == expected)
        #expect(scraped.documented == Set(expected.keys))
    }

    @Test func roundTripsFallIntoTheirBuckets() {
        let core = BrokerCore(policies: PolicySet(), clock: { .zero })
        let metrics = BrokerMetrics(registry: PrometheusCollectorRegistry())
        for duration: Duration in [.microseconds(30), .microseconds(70), .milliseconds(2), .seconds(2)] {
            metrics.recordReportRoundTrip(duration)
        }
        let scraped = Self.scrape(metrics, core)
        let buckets = scraped.series("pagebroker_report_round_trip_seconds_bucket")
        func bucket(_ bound: Double) -> Double? {
            buckets.first { Double($0.labels["le"]!.replacingOccurrences(of: "+Inf", with: "inf")) == bound }?.value
        }
        #expect(buckets.count == BrokerMetrics.roundTripBuckets.count + 1)
        #expect(bucket(0.00005) == 1)
        #expect(bucket(0.0001) == 2)
        #expect(bucket(0.001) == 2)
        #expect(bucket(0.0025) == 3)
        #expect(bucket(1) == 3)
        #expect(bucket(.infinity) == 4)
        #expect(scraped.value("pagebroker_report_round_trip_seconds_count") == 4)
        let sum = scraped.value("pagebroker_report_round_trip_seconds_sum") ?? 0
        #expect(abs(sum - 2.0021) < 1e-9)
    }

    @Test func registriesAreIndependent() {
        let core = BrokerCore(policies: PolicySet(tenants: ["a": TenantPolicy()]), clock: { .zero })
        let one = BrokerMetrics(registry: PrometheusCollectorRegistry())
        let two = BrokerMetrics(registry: PrometheusCollectorRegistry())
        one.recordReportRoundTrip(.microseconds(10))
        #expect(Self.scrape(one, core).value("pagebroker_report_round_trip_seconds_count") == 1)
        #expect(Self.scrape(two, core).value("pagebroker_report_round_trip_seconds_count") == 0)
    }
}
