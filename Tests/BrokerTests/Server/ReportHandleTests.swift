import BrokerAdminClient
import BrokerProtocol
import CGuestMemory
import Glibc
import Synchronization
import Testing

@testable import Broker

/// `BrokerCore.ReportHandle`: a session's report step through a kept handle answers every report
/// as the step that looks the guest up by name does, with the same counters, across everything
/// that makes a handle stale.
///
/// Each test drives two cores through the same calls: one answers reports through a handle per
/// guest, kept across the whole test, the other through the keyed step. Every report's answer
/// and, after it, both cores' figures must be the same.
@Suite struct ReportHandleTests {
    final class FakeSession: SessionControl {
        func replaced() {}
        func shutdown() {}
    }

    static let geometry = GuestGeometry(pageSize: 4096, totalPages: 1024, minOrder: 9, maxOrder: 10, agentVersion: "t")

    static func identity(_ tenant: String, _ guest: String) -> GuestIdentity {
        GuestIdentity(trustDomain: "example.org", tenant: tenant, guest: guest)
    }

    /// The two cores, on one clock that moves only when a test says so.
    final class Clock: Sendable {
        let time = Mutex<Duration>(.zero)
    }

    final class Twins {
        let clock = Clock()
        let handled: BrokerCore
        let keyed: BrokerCore
        /// One handle per guest (`tenant/guest`), kept for the whole test.
        var handles: [String: BrokerCore.ReportHandle] = [:]
        /// Each guest's current session id on each core.
        var sessionIDs: [String: (handled: String, keyed: String)] = [:]
        var attachTokens: [String: (handled: BrokerCore.MemoryAttachToken, keyed: BrokerCore.MemoryAttachToken)] = [:]

        init(_ policies: PolicySet) {
            let clock = self.clock
            self.handled = BrokerCore(policies: policies, clock: { clock.time.withLock { $0 } })
            self.keyed = BrokerCore(policies: policies, clock: { clock.time.withLock { $0 } })
        }

        func both(_ body: (BrokerCore) throws -> Void) rethrows {
            try body(self.handled)
            try body(self.keyed)
        }

        func advance(_ duration: Duration) { self.clock.time.withLock { $0 += duration } }

        func admit(
            _ identity: GuestIdentity,
            pageSize: UInt32 = 4096,
            sourceLocation: SourceLocation = #_sourceLocation
        ) {
            var geometry = ReportHandleTests.geometry
            geometry.pageSize = pageSize
            let a = self.handled.admit(identity, geometry: geometry, control: FakeSession())
            let b = self.keyed.admit(identity, geometry: geometry, control: FakeSession())
            guard case .admitted(let first) = a, case .admitted(let second) = b else {
                Issue.record("not admitted: \(a), \(b)", sourceLocation: sourceLocation)
                return
            }
            self.sessionIDs["\(identity.tenant)/\(identity.guest)"] = (first, second)
        }

        func disconnect(_ identity: GuestIdentity) {
            guard let ids = self.sessionIDs["\(identity.tenant)/\(identity.guest)"] else { return }
            self.handled.disconnect(identity, sessionID: ids.handled)
            self.keyed.disconnect(identity, sessionID: ids.keyed)
        }

        /// Attaches a fresh memfd of the geometry's size for the guest on both cores; both must
        /// take it, or (when `mayBeRefused`) both refuse it. Returns whether they took it.
        @discardableResult
        func attachMemory(_ identity: GuestIdentity, mayBeRefused: Bool = false) throws -> Bool {
            var tokens: [BrokerCore.MemoryAttachToken] = []
            for core in [self.handled, self.keyed] {
                let descriptor = pb_memfd_create("report-handle-test", 0)
                try #require(descriptor >= 0)
                try #require(ftruncate(descriptor, 4096 * 1024) == 0)
                let addSeals: CInt = 1033  // F_ADD_SEALS
                try #require(fcntl(descriptor, addSeals, pb_seal_shrink_bit()) == 0)
                let request = Pagebroker_V1_AttachMemory.with {
                    $0.protocolVersion = 1
                    $0.tenantID = identity.tenant
                    $0.guestID = identity.guest
                    $0.pageSize = 4096
                    $0.totalPages = 1024
                }
                switch core.attachMemory(
                    request,
                    descriptor: descriptor,
                    peer: MemoryPeer(pid: 1, uid: getuid(), gid: 0)
                )
                {
                case .success(let token): tokens.append(token)
                case .failure(let refusal):
                    close(descriptor)
                    if !mayBeRefused || !tokens.isEmpty { Issue.record("attach refused: \(refusal)") }
                    if let token = tokens.first { self.handled.detachMemory(token) }
                    return false
                }
            }
            self.attachTokens["\(identity.tenant)/\(identity.guest)"] = (tokens[0], tokens[1])
            return true
        }

        func detachMemory(_ identity: GuestIdentity) {
            guard let tokens = self.attachTokens.removeValue(forKey: "\(identity.tenant)/\(identity.guest)") else {
                return
            }
            self.handled.detachMemory(tokens.handled)
            self.keyed.detachMemory(tokens.keyed)
        }

        /// What a report step decided, punched to the end when it says to punch.
        private static func finish(
            _ step: BrokerCore.ReportStep,
            core: BrokerCore,
            identity: GuestIdentity,
            blocks: [ReportedBlock]
        ) -> (reason: Pagebroker_V1_ReasonCode, text: String) {
            switch step {
            case .done(let outcome):
                return (
                    outcome.reason, "\(outcome.reason) retry \(outcome.retryAfterMilliseconds) '\(outcome.message)'"
                )
            case .punch(let attachment):
                let punched = core.punchAndAccount(
                    BrokerCore.GuestKey(tenant: identity.tenant, guest: identity.guest),
                    attachment: attachment,
                    blocks: blocks
                )
                return (
                    punched.reason,
                    "punched: \(punched.reason) retry \(punched.retryAfterMilliseconds) '\(punched.message)'"
                )
            }
        }

        /// Reports `blocks` on both cores, checks the answers and the figures are the same, and
        /// returns the reason.
        @discardableResult
        func report(
            _ identity: GuestIdentity,
            _ blocks: [ReportedBlock],
            sourceLocation: SourceLocation = #_sourceLocation
        ) -> Pagebroker_V1_ReasonCode {
            let name = "\(identity.tenant)/\(identity.guest)"
            let ids = self.sessionIDs[name]
            var handle = self.handles[name] ?? BrokerCore.ReportHandle()
            let first = self.handled.reportStep(&handle, identity, sessionID: ids?.handled, blocks: blocks)
            self.handles[name] = handle
            let second = self.keyed.reportStep(identity, sessionID: ids?.keyed, blocks: blocks)
            let a = Self.finish(first, core: self.handled, identity: identity, blocks: blocks)
            let b = Self.finish(second, core: self.keyed, identity: identity, blocks: blocks)
            #expect(a.text == b.text, "handle: \(a.text); keyed: \(b.text)", sourceLocation: sourceLocation)
            self.expectSameFigures(sourceLocation: sourceLocation)
            return a.reason
        }

        func expectSameFigures(sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(self.handled.tenants() == self.keyed.tenants(), sourceLocation: sourceLocation)
            func guests(_ core: BrokerCore) -> [GuestSnapshot] {
                core.guests(tenant: nil).map {
                    var snapshot = $0
                    snapshot.residentBytes = nil  // each core's own memfd
                    return snapshot
                }
            }
            #expect(guests(self.handled) == guests(self.keyed), sourceLocation: sourceLocation)
            #expect(self.handled.checkInvariants().isEmpty, sourceLocation: sourceLocation)
            #expect(self.keyed.checkInvariants().isEmpty, sourceLocation: sourceLocation)
        }
    }

    static func block(_ index: Int) -> [ReportedBlock] { [ReportedBlock(frame: UInt64(index % 2) << 9, order: 9)] }

    @Test func aPolicyReloadThatRemovesOrChangesTheTenant() {
        let twins = Twins(PolicySet(tenants: ["a": TenantPolicy(), "b": TenantPolicy()]))
        let g = Self.identity("a", "g")
        twins.admit(g)
        #expect(twins.report(g, Self.block(0)) == .ok)
        #expect(twins.report(g, Self.block(1)) == .ok)
        // Removed: the tenant is no longer configured.
        twins.both { $0.updatePolicies(PolicySet(tenants: ["b": TenantPolicy()])) }
        #expect(twins.report(g, Self.block(0)) == .tenantPaused)
        // Back, paused in the configuration.
        twins.both { $0.updatePolicies(PolicySet(tenants: ["a": TenantPolicy(paused: true)])) }
        #expect(twins.report(g, Self.block(0)) == .tenantPaused)
        // Back, rate limited: one report, then limited until the clock moves.
        twins.both { $0.updatePolicies(PolicySet(tenants: ["a": TenantPolicy(maxReportsPerSecond: 1, burst: 1)])) }
        #expect(twins.report(g, Self.block(0)) == .ok)
        #expect(twins.report(g, Self.block(1)) == .rateLimited)
        twins.advance(.seconds(1))
        #expect(twins.report(g, Self.block(1)) == .ok)
        // Admitted by the default policy only, unlimited again.
        twins.both { $0.updatePolicies(PolicySet(defaultPolicy: TenantPolicy())) }
        #expect(twins.report(g, Self.block(0)) == .ok)
        #expect(twins.report(g, Self.block(1)) == .ok)
    }

    @Test func aTenantOrGuestPausedThenResumed() throws {
        let twins = Twins(PolicySet(tenants: ["a": TenantPolicy()]))
        let g = Self.identity("a", "g")
        let h = Self.identity("a", "h")
        twins.admit(g)
        twins.admit(h)
        #expect(twins.report(g, Self.block(0)) == .ok)
        #expect(twins.report(h, Self.block(0)) == .ok)
        try twins.both { try $0.setPaused(tenant: "a", guest: "g", paused: true) }
        #expect(twins.report(g, Self.block(1)) == .guestPaused)
        #expect(twins.report(h, Self.block(1)) == .ok)
        try twins.both { try $0.setPaused(tenant: "a", guest: "g", paused: false) }
        #expect(twins.report(g, Self.block(1)) == .ok)
        try twins.both { try $0.setPaused(tenant: "a", paused: true) }
        #expect(twins.report(g, Self.block(0)) == .tenantPaused)
        #expect(twins.report(h, Self.block(0)) == .tenantPaused)
        try twins.both { try $0.setPaused(tenant: "a", paused: false) }
        #expect(twins.report(g, Self.block(0)) == .ok)
        // Restored after a restart, as the daemon does from its pause store.
        twins.both { $0.restorePausedGuests(["a/h"]) }
        #expect(twins.report(h, Self.block(1)) == .guestPaused)
        #expect(twins.report(g, Self.block(1)) == .ok)
        twins.both { $0.restorePauseOverrides(["a": true]) }
        #expect(twins.report(g, Self.block(1)) == .tenantPaused)
        twins.both { $0.restorePauseOverrides([:]) }
        twins.both { $0.restorePausedGuests([]) }
        #expect(twins.report(g, Self.block(0)) == .ok)
        #expect(twins.report(h, Self.block(0)) == .ok)
    }

    @Test func memoryAttachedThenDetached() throws {
        let twins = Twins(
            PolicySet(tenants: ["a": TenantPolicy(memoryAccess: MemoryAccessPolicy(allowedUIDs: [getuid()]))])
        )
        let g = Self.identity("a", "g")
        twins.admit(g)
        #expect(twins.report(g, Self.block(0)) == .ok)
        try twins.attachMemory(g)
        // Punched, then accounted.
        #expect(twins.report(g, Self.block(1)) == .ok)
        try twins.both {
            try $0.setDiscardInhibited(tenant: "a", guest: "g", inhibited: true, reason: "migration")
        }
        #expect(twins.report(g, Self.block(0)) == .discardInhibited)
        try twins.both {
            try $0.setDiscardInhibited(tenant: "a", guest: "g", inhibited: false, reason: "")
        }
        #expect(twins.report(g, Self.block(0)) == .ok)
        twins.detachMemory(g)
        #expect(twins.report(g, Self.block(1)) == .ok)
        #expect(twins.report(g, Self.block(0)) == .ok)
    }

    @Test func anotherGuestForgottenMovesTheRecords() throws {
        let twins = Twins(PolicySet(tenants: ["a": TenantPolicy(), "b": TenantPolicy()]))
        let guests = [Self.identity("a", "g0"), Self.identity("b", "g1"), Self.identity("a", "g2")]
        for guest in guests { twins.admit(guest) }
        for (index, guest) in guests.enumerated() { #expect(twins.report(guest, Self.block(index)) == .ok) }
        // g0 goes away for good: the ledger fills its slot with the last record, g2's.
        twins.disconnect(guests[0])
        try twins.both { core in
            _ = try core.state.withLock { (state) throws(LedgerError) in
                try state.ledger.forget(tenant: "a", guest: "g0")
            }
        }
        #expect(twins.report(guests[2], Self.block(1)) == .ok)
        #expect(twins.report(guests[1], Self.block(0)) == .ok)
        // g0's own handle: no record any more.
        #expect(twins.report(guests[0], Self.block(1)) == .backendFailed)
        // Back as a new record at the end.
        twins.admit(guests[0])
        #expect(twins.report(guests[0], Self.block(1)) == .ok)
        #expect(twins.report(guests[2], Self.block(0)) == .ok)
    }

    @Test func theGuestDisconnectedAndReconnected() {
        let twins = Twins(PolicySet(tenants: ["a": TenantPolicy()]))
        let g = Self.identity("a", "g")
        twins.admit(g)
        #expect(twins.report(g, Self.block(0)) == .ok)
        twins.disconnect(g)
        // The ledger refuses a disconnected guest's report.
        #expect(twins.report(g, Self.block(1)) == .backendFailed)
        twins.admit(g)
        #expect(twins.report(g, Self.block(1)) == .ok)
        // Reconnected with another page size: the record is dropped and counted at the new size.
        twins.admit(g, pageSize: 8192)
        #expect(twins.report(g, Self.block(0)) == .ok)
        #expect(twins.report(g, Self.block(1)) == .ok)
    }

    @Test func anUnknownGuestThenAdmitted() {
        let twins = Twins(PolicySet(tenants: ["a": TenantPolicy()]))
        let g = Self.identity("a", "g")
        #expect(twins.report(g, Self.block(0)) == .backendFailed)
        twins.admit(g)
        #expect(twins.report(g, Self.block(0)) == .ok)
    }

    @Test func shuttingDown() {
        let twins = Twins(PolicySet(tenants: ["a": TenantPolicy()]))
        let g = Self.identity("a", "g")
        twins.admit(g)
        #expect(twins.report(g, Self.block(0)) == .ok)
        twins.both { _ = $0.beginShutdown() }
        #expect(twins.report(g, Self.block(1)) == .shuttingDown)
    }

    /// Random interleavings of everything above, over three guests of two tenants.
    @Test func randomSequencesOfInvalidations() throws {
        var generator = SplitMix64(seed: 0x4A4D_13)
        let access = MemoryAccessPolicy(allowedUIDs: [getuid()])
        let policies: [PolicySet] = [
            PolicySet(tenants: ["a": TenantPolicy(memoryAccess: access), "b": TenantPolicy(memoryAccess: access)]),
            PolicySet(tenants: ["a": TenantPolicy(memoryAccess: access)]),
            PolicySet(tenants: ["a": TenantPolicy(paused: true), "b": TenantPolicy(memoryAccess: access)]),
            PolicySet(
                tenants: ["a": TenantPolicy(maxReportsPerSecond: 2, burst: 2, memoryAccess: access)],
                defaultPolicy: TenantPolicy()
            ),
        ]
        let twins = Twins(policies[0])
        let guests = [Self.identity("a", "g0"), Self.identity("b", "g1"), Self.identity("a", "g2")]
        var attached = Set<Int>()
        var reasons = Set<Pagebroker_V1_ReasonCode>()
        for step in 0..<600 {
            let pick = Int.random(in: 0..<guests.count, using: &generator)
            let guest = guests[pick]
            switch Int.random(in: 0..<20, using: &generator) {
            case 0:
                let policy = policies[Int.random(in: 0..<policies.count, using: &generator)]
                twins.both { $0.updatePolicies(policy) }
            case 1:
                let paused = Bool.random(using: &generator)
                try? twins.both { try $0.setPaused(tenant: guest.tenant, paused: paused) }
            case 2:
                let paused = Bool.random(using: &generator)
                try? twins.both { try $0.setPaused(tenant: guest.tenant, guest: guest.guest, paused: paused) }
            case 3:
                if attached.contains(pick) {
                    twins.detachMemory(guest)
                    attached.remove(pick)
                } else if try twins.attachMemory(guest, mayBeRefused: true) {
                    attached.insert(pick)
                }
            case 4:
                twins.disconnect(guest)
            case 5:
                twins.admit(guest)
            case 6:
                // Forgetting needs a disconnected guest; both ledgers agree on whether it is.
                try? twins.both { core in
                    _ = try core.state.withLock { (state) throws(LedgerError) in
                        try state.ledger.forget(tenant: guest.tenant, guest: guest.guest)
                    }
                }
            case 7:
                twins.advance(.milliseconds(Int64.random(in: 0...1500, using: &generator)))
            default:
                let count = Int.random(in: 1...3, using: &generator)
                let blocks = (0..<count).map { _ in
                    ReportedBlock(frame: UInt64.random(in: 0..<2, using: &generator) << 9, order: 9)
                }
                reasons.insert(
                    twins.report(
                        guest,
                        Array(Set(blocks.map(\.frame))).sorted().map { ReportedBlock(frame: $0, order: 9) }
                    )
                )
            }
            if step % 50 == 0 { twins.expectSameFigures() }
        }
        twins.expectSameFigures()
        // The run reached every outcome a guest without a broker shutdown can get.
        #expect(reasons.isSuperset(of: [.ok, .tenantPaused, .guestPaused, .rateLimited, .backendFailed]), "\(reasons)")
    }
}
