import Foundation
import Testing

@testable import Broker
@testable import BrokerAdminClient

/// `pagebrokerctl top`'s rates and rendering, without a broker or a terminal.
@Suite("top view")
struct TopViewTests {
    static func status(uptime: Double, ok: Int, failed: Int, reclaimable: Int = 0) -> BrokerStatus {
        BrokerStatus(
            version: "1.2.3",
            uptimeSeconds: uptime,
            listening: ["0.0.0.0:7443"],
            tenants: 2,
            guests: 3,
            guestsConnected: 2,
            sessions: 2,
            reclaimableBytes: reclaimable,
            reportsOK: ok,
            reportsFailed: failed,
            shuttingDown: false
        )
    }

    static func tenant(
        _ name: String,
        reclaimable: Int,
        ok: Int,
        failed: Int,
        guests: Int = 1,
        connected: Int = 1,
        paused: Bool = false
    ) -> TenantSnapshot {
        var snapshot = FakeAdminBackend.tenant(
            name,
            guests: guests,
            connected: connected,
            reclaimable: reclaimable,
            ok: ok,
            failed: failed
        )
        snapshot.paused = paused
        return snapshot
    }

    static let first = TopSample(
        status: status(uptime: 100, ok: 1000, failed: 10, reclaimable: 3 << 30),
        tenants: [
            tenant("globex", reclaimable: 1 << 30, ok: 400, failed: 10, paused: true),
            tenant("acme", reclaimable: 2 << 30, ok: 600, failed: 0, guests: 2, connected: 2),
        ],
        time: 5
    )

    static let second = TopSample(
        status: status(uptime: 102, ok: 1500, failed: 30, reclaimable: 3 << 30),
        tenants: [
            tenant("acme", reclaimable: 2 << 30, ok: 1100, failed: 0, guests: 2, connected: 2),
            tenant("globex", reclaimable: 1 << 30, ok: 400, failed: 30, paused: true),
        ],
        time: 7
    )

    @Test("rates are the counters' differences over the time between samples")
    func rates() throws {
        let frame = TopFrame(current: Self.second, previous: Self.first)
        #expect(frame.intervalSeconds == 2)
        #expect(frame.rate == TopRate(okPerSecond: 250, failedPerSecond: 10))
        #expect(frame.tenants.map(\.tenant) == ["acme", "globex"])
        #expect(frame.tenants[0].rate == TopRate(okPerSecond: 250, failedPerSecond: 0))
        #expect(frame.tenants[1].rate == TopRate(okPerSecond: 0, failedPerSecond: 10))
        #expect(frame.tenants[1].paused)
    }

    @Test("the first frame has no rates")
    func firstFrame() {
        let frame = TopFrame(current: Self.first, previous: nil)
        #expect(frame.intervalSeconds == nil)
        #expect(frame.rate == nil)
        #expect(frame.tenants.allSatisfy { $0.rate == nil })
    }

    @Test("a tenant new since the previous sample counts from zero")
    func newTenant() {
        var current = Self.second
        current.tenants.append(Self.tenant("initech", reclaimable: 0, ok: 20, failed: 4))
        let frame = TopFrame(current: current, previous: Self.first)
        let initech = frame.tenants.first { $0.tenant == "initech" }
        #expect(initech?.rate == TopRate(okPerSecond: 10, failedPerSecond: 2))
    }

    @Test("a restarted broker (uptime went down) gives no rates, not negative ones")
    func restart() {
        var current = Self.second
        current.status = Self.status(uptime: 1, ok: 3, failed: 0)
        current.tenants = [Self.tenant("acme", reclaimable: 0, ok: 3, failed: 0)]
        let frame = TopFrame(current: current, previous: Self.first)
        #expect(frame.intervalSeconds == nil)
        #expect(frame.rate == nil)
        #expect(frame.tenants[0].rate == nil)
    }

    @Test("counters that went down or no time between samples give no rate")
    func noRate() {
        #expect(TopRate.between(previous: (10, 0), current: (5, 0), seconds: 1) == nil)
        #expect(TopRate.between(previous: (0, 10), current: (5, 3), seconds: 1) == nil)
        #expect(TopRate.between(previous: (0, 0), current: (5, 0), seconds: 0) == nil)
        #expect(
            TopRate.between(previous: (0, 0), current: (5, 1), seconds: 0.5)
                == TopRate(okPerSecond: 10, failedPerSecond: 2)
        )
    }

    @Test("bars are in eighths of a cell and clamp to the width")
    func bars() {
        #expect(TopFrame.bar(fraction: 1, width: 4) == "████")
        #expect(TopFrame.bar(fraction: 0.5, width: 4) == "██")
        #expect(TopFrame.bar(fraction: 1.0 / 32, width: 4) == "▏")
        #expect(TopFrame.bar(fraction: 0.3, width: 10) == "███")
        #expect(TopFrame.bar(fraction: 0.35, width: 10) == "███▌")
        #expect(TopFrame.bar(fraction: 0, width: 10) == "")
        #expect(TopFrame.bar(fraction: 7, width: 3) == "███")
        #expect(TopFrame.bar(fraction: -1, width: 3) == "")
        #expect(TopFrame.bar(fraction: .nan, width: 3) == "")
    }

    @Test("the view: header, one row per tenant, bar against the largest tenant, paused marker")
    func render() {
        let frame = TopFrame(current: Self.second, previous: Self.first)
        // 72 columns: 53 for names, figures and gaps leave a 19-cell bar; globex holds half
        // of acme's memory, 9.5 cells.
        let text = frame.render(width: 72)
        #expect(
            text == """
                pagebrokerd 1.2.3  up 1m 42s
                sessions 2  guests 2/3 connected  reclaimable 3.0 GiB
                reports 1500 ok, 30 failed  (250 ok/s, 10.0 failed/s)

                TENANT  MEMORY               RECLAIMABLE  GUESTS  OK/S  FAILED/S
                acme    ███████████████████      2.0 GiB     2/2   250       0.0
                globex  █████████▌               1.0 GiB     1/1   0.0      10.0  PAUSED
                """
        )
        #expect(text.split(separator: "\n").allSatisfy { $0.count <= 72 })

        var named = Self.second
        named.status.version = "pagebrokerd 0.1"
        named.status.shuttingDown = true
        let header = TopFrame(current: named, previous: nil).render().split(separator: "\n").first
        #expect(header == "pagebrokerd 0.1  up 1m 42s  SHUTTING DOWN")
    }

    @Test("the first frame shows unknown rates as -; no tenants says so")
    func renderFirstAndEmpty() {
        let first = TopFrame(current: Self.first, previous: nil).render(width: 60)
        #expect(first.contains("reports 1000 ok, 10 failed\n"))
        let acme = first.split(separator: "\n").first { $0.hasPrefix("acme") }
        #expect(acme?.hasSuffix("2/2     -         -") == true, "\(first)")

        let empty = TopSample(status: Self.status(uptime: 0, ok: 0, failed: 0), tenants: [], time: 0)
        #expect(TopFrame(current: empty, previous: nil).render().hasSuffix("\n\nno tenants"))
    }

    @Test("bars never shrink below 10 cells on a narrow terminal")
    func narrow() {
        let text = TopFrame(current: Self.second, previous: Self.first).render(width: 20)
        let acme = text.split(separator: "\n").first { $0.hasPrefix("acme") }
        #expect(acme?.contains(String(repeating: "█", count: 10)) == true)
        #expect(acme?.contains(String(repeating: "█", count: 11)) == false)
    }

    @Test("JSON: snake_case keys, rates as numbers, unknown rates as null")
    func json() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let later = try #require(
            try JSONSerialization.jsonObject(
                with: encoder.encode(TopFrame(current: Self.second, previous: Self.first))
            ) as? [String: Any]
        )
        #expect(later["reports_ok_per_second"] as? Double == 250)
        #expect(later["reports_failed_per_second"] as? Double == 10)
        #expect(later["interval_seconds"] as? Double == 2)
        #expect(later["reclaimable_bytes"] as? Int == 3 << 30)
        let tenants = try #require(later["tenants"] as? [[String: Any]])
        #expect(tenants.map { $0["tenant"] as? String } == ["acme", "globex"])
        #expect(tenants[0]["reports_ok_per_second"] as? Double == 250)
        #expect(tenants[1]["paused"] as? Bool == true)
        #expect(tenants[0]["guests_connected"] as? Int == 2)

        let text = String(decoding: try encoder.encode(TopFrame(current: Self.first, previous: nil)), as: UTF8.self)
        #expect(text.contains(#""interval_seconds":null"#))
        #expect(text.contains(#""reports_ok_per_second":null"#))
    }

    @Test("intervals: ms, s and m, at least 100 ms")
    func intervals() throws {
        #expect(try TopInterval.parse("1s") == .seconds(1))
        #expect(try TopInterval.parse("250ms") == .milliseconds(250))
        #expect(try TopInterval.parse("2m") == .seconds(120))
        #expect(try TopInterval.parse("100ms") == .milliseconds(100))
        for text in ["99ms", "0s", "-1s", "1", "1h", "s", "1.5s", ""] {
            #expect(throws: TopInterval.Invalid.self, "\(text)") { try TopInterval.parse(text) }
        }
    }
}
