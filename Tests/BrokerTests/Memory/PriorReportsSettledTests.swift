import BrokerProtocol
import CGuestMemory
import Glibc
import Synchronization
import Testing

@testable import Broker

/// `ServerHello.prior_reports_settled`: a new session of a guest is told its earlier sessions'
/// reports are settled only once none of them is being punched, and a replaced session can no
/// longer start a punch.
@Suite struct PriorReportsSettledTests {
    final class FakeSession: SessionControl {
        func replaced() {}
        func shutdown() {}
    }

    static let geometry = GuestGeometry(pageSize: 4096, totalPages: 1024, minOrder: 9, maxOrder: 10, agentVersion: "t")
    static let identity = GuestIdentity(trustDomain: "example.org", tenant: "t1", guest: "g1")

    /// A core with t1's memory attached (a real memfd of 1024 pages, sealed against shrinking).
    static func coreWithMemory() throws -> BrokerCore {
        let core = BrokerCore(
            policies: PolicySet(tenants: ["t1": TenantPolicy(memoryAccess: MemoryAccessPolicy(allowedUIDs: [getuid()]))]
            ),
            clock: { .zero }
        )
        let descriptor = pb_memfd_create("settled-test", 0)
        try #require(descriptor >= 0)
        try #require(ftruncate(descriptor, 4096 * 1024) == 0)
        try #require(fcntl(descriptor, 1033 /* F_ADD_SEALS */, pb_seal_shrink_bit()) == 0)
        let request = Pagebroker_V1_AttachMemory.with {
            $0.protocolVersion = 1
            $0.tenantID = "t1"
            $0.guestID = "g1"
            $0.pageSize = 4096
            $0.totalPages = 1024
        }
        guard
            case .success = core.attachMemory(
                request,
                descriptor: descriptor,
                peer: MemoryPeer(pid: 1, uid: getuid(), gid: 0)
            )
        else {
            close(descriptor)
            Issue.record("attach refused")
            return core
        }
        return core
    }

    func sessionID(_ admission: BrokerCore.Admission) -> String? {
        if case .admitted(let id) = admission { return id }
        return nil
    }

    @Test func aFreshBrokerIsSettledAtOnce() throws {
        let core = try Self.coreWithMemory()
        _ = self.sessionID(core.admit(Self.identity, geometry: Self.geometry, control: FakeSession()))
        let called = Mutex(false)
        core.whenPriorReportsSettled(Self.identity) { called.withLock { $0 = true } }
        #expect(called.withLock { $0 })
    }

    @Test func aNewHelloWaitsForTheOldSessionsPunch() throws {
        let core = try Self.coreWithMemory()
        let old = try #require(
            self.sessionID(core.admit(Self.identity, geometry: Self.geometry, control: FakeSession()))
        )
        let blocks = [ReportedBlock(frame: 0, order: 9)]
        // The old session's report has passed its checks and is being punched…
        guard case .punch(let attachment) = core.reportStep(Self.identity, sessionID: old, blocks: blocks) else {
            Issue.record("report not sent to punching")
            return
        }
        // …when the guest reconnects.
        let new = try #require(
            self.sessionID(core.admit(Self.identity, geometry: Self.geometry, control: FakeSession()))
        )
        let called = Mutex(false)
        core.whenPriorReportsSettled(Self.identity) { called.withLock { $0 = true } }
        #expect(!called.withLock { $0 }, "settled while a punch of the old session was in flight")
        // The replaced session may not start another punch.
        if case .done(let outcome) = core.reportStep(
            Self.identity,
            sessionID: old,
            blocks: [ReportedBlock(frame: 512, order: 9)]
        ) {
            #expect(outcome.reason == .sessionReplaced)
        } else {
            Issue.record("a replaced session started a punch")
        }
        _ = core.punchAndAccount(BrokerCore.GuestKey(tenant: "t1", guest: "g1"), attachment: attachment, blocks: blocks)
        #expect(called.withLock { $0 })
        // The new session punches as usual.
        #expect(
            core.account(Self.identity, sessionID: new, blocks: [ReportedBlock(frame: 512, order: 9)]).reason == .ok
        )
    }
}
