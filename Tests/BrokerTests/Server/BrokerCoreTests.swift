import Broker
import BrokerAdminClient
import BrokerProtocol
import Synchronization
import Testing

/// Admission, replacement, policy and accounting in the broker's shared state.
@Suite struct BrokerCoreTests {
    final class FakeSession: SessionControl {
        let events = Mutex<[String]>([])
        func replaced() { self.events.withLock { $0.append("replaced") } }
        func shutdown() { self.events.withLock { $0.append("shutdown") } }
    }

    static let geometry = GuestGeometry(
        pageSize: 4096,
        totalPages: 1 << 20,
        minOrder: 9,
        maxOrder: 10,
        agentVersion: "test"
    )

    static func identity(_ tenant: String, _ guest: String) -> GuestIdentity {
        GuestIdentity(trustDomain: "example.org", tenant: tenant, guest: guest)
    }

    /// A core on a clock that stands still, so rate limits refill only when a test says so.
    static func core(_ policies: PolicySet, maxSessions: Int = 10) -> BrokerCore {
        BrokerCore(policies: policies, maxSessions: maxSessions, clock: { .zero })
    }

    @Test func unknownTenantsAreRefusedUnlessThereIsADefault() {
        let strict = Self.core(PolicySet(tenants: ["a": TenantPolicy()]))
        #expect(strict.admitsTenant("a"))
        #expect(!strict.admitsTenant("b"))
        if case .refused = strict.admit(Self.identity("b", "g"), geometry: Self.geometry, control: FakeSession()) {
        } else {
            Issue.record("unknown tenant admitted")
        }
        let open = Self.core(PolicySet(defaultPolicy: TenantPolicy()))
        #expect(open.admitsTenant("anyone"))
    }

    @Test func maxSessionsAndMaxGuestsAreEnforced() {
        let core = Self.core(
            PolicySet(tenants: ["a": TenantPolicy(maxGuests: 1), "b": TenantPolicy()]),
            maxSessions: 2
        )
        guard case .admitted = core.admit(Self.identity("a", "g1"), geometry: Self.geometry, control: FakeSession())
        else {
            Issue.record("first guest refused")
            return
        }
        guard
            case .refused(let code, _) = core.admit(
                Self.identity("a", "g2"),
                geometry: Self.geometry,
                control: FakeSession()
            )
        else {
            Issue.record("second guest of a one-guest tenant admitted")
            return
        }
        #expect(code == .rateLimited)
        guard case .admitted = core.admit(Self.identity("b", "g1"), geometry: Self.geometry, control: FakeSession())
        else {
            Issue.record("other tenant refused")
            return
        }
        guard case .refused = core.admit(Self.identity("b", "g2"), geometry: Self.geometry, control: FakeSession())
        else {
            Issue.record("a third session admitted past max_sessions 2")
            return
        }
        #expect(core.sessionCount == 2)
    }

    @Test func aNewerSessionReplacesTheOlderAndOnlyTheCurrentOneDisconnects() {
        let core = Self.core(PolicySet(defaultPolicy: TenantPolicy()), maxSessions: 1)
        let older = FakeSession()
        let newer = FakeSession()
        guard case .admitted(let first) = core.admit(Self.identity("a", "g"), geometry: Self.geometry, control: older),
            case .admitted(let second) = core.admit(Self.identity("a", "g"), geometry: Self.geometry, control: newer)
        else {
            Issue.record("replacement refused (it needs no new slot)")
            return
        }
        #expect(older.events.withLock { $0 } == ["replaced"])
        // The replaced session's end must not take the guest offline.
        core.disconnect(Self.identity("a", "g"), sessionID: first)
        #expect(core.guests(tenant: "a").first?.connected == true)
        core.disconnect(Self.identity("a", "g"), sessionID: second)
        #expect(core.guests(tenant: "a").first?.connected == false)
    }

    @Test func reportsAreAccountedPausedAndRateLimited() throws {
        let core = Self.core(
            PolicySet(tenants: ["a": TenantPolicy(maxReportsPerSecond: 1, burst: 1), "p": TenantPolicy(paused: true)])
        )
        let a = Self.identity("a", "g")
        _ = core.admit(a, geometry: Self.geometry, control: FakeSession())
        #expect(core.account(a, blocks: [ReportedBlock(frame: 0, order: 9)]).reason == .ok)
        let limited = core.account(a, blocks: [ReportedBlock(frame: 512, order: 9)])
        #expect(limited.reason == .rateLimited && limited.retryAfterMilliseconds == 1000)
        #expect(core.tenants().first { $0.tenant == "a" }?.reclaimableBytes == 512 * 4096)

        let p = Self.identity("p", "g")
        _ = core.admit(p, geometry: Self.geometry, control: FakeSession())
        #expect(core.account(p, blocks: [ReportedBlock(frame: 0, order: 9)]).reason == .tenantPaused)
        try core.setPaused(tenant: "p", paused: false)
        #expect(core.account(p, blocks: [ReportedBlock(frame: 0, order: 9)]).reason == .ok)
        #expect(throws: AdminError.self) { try core.setPaused(tenant: "nobody", paused: true) }
    }

    @Test func shutdownRefusesNewGuestsAndReports() {
        let core = Self.core(PolicySet(defaultPolicy: TenantPolicy()))
        let session = FakeSession()
        let a = Self.identity("a", "g")
        _ = core.admit(a, geometry: Self.geometry, control: session)
        let sessions = core.beginShutdown()
        #expect(sessions.count == 1)
        #expect(core.account(a, blocks: [ReportedBlock(frame: 0, order: 9)]).reason == .shuttingDown)
        guard
            case .refused(let code, _) = core.admit(
                Self.identity("a", "h"),
                geometry: Self.geometry,
                control: FakeSession()
            )
        else {
            Issue.record("admitted while shutting down")
            return
        }
        #expect(code == .shuttingDown)
        #expect(core.status().shuttingDown)
    }
}
