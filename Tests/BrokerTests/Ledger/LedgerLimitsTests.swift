import Broker
import BrokerAdminClient
import BrokerProtocol
import Prometheus
import PropertyBased
import Testing

/// Every sum the ledger, the core, the admin API and the metrics keep, at the largest values the
/// protocol's limits let guests reach (issue 11: one guest's whole-pool sync trapped on an
/// overflow and took every tenant's sessions down; two tenants at 2^62 bytes crashed `status`).
@Suite struct LedgerLimitsTests {
    final class FakeSession: SessionControl {
        func replaced() {}
        func shutdown() {}
    }

    static func identity(_ tenant: String, _ guest: String) -> GuestIdentity {
        GuestIdentity(trustDomain: "example.org", tenant: tenant, guest: guest)
    }

    /// The largest pool the limits allow, in the largest pages.
    static let largestPool = GuestGeometry(
        pageSize: ProtocolLimits.maxPageSize,
        totalPages: ProtocolLimits.maxPoolBytes / UInt64(ProtocolLimits.maxPageSize),
        minOrder: 0,
        maxOrder: 22,
        agentVersion: "test"
    )

    // MARK: Ledger

    /// The ledger's own bound: 2^32 frames of 2^30 bytes is 2^62 per guest; two tenants of two
    /// such guests sum to 2^64, exact in the ledger and saturated in the snapshots.
    @Test func tenantAndTotalSumsAreExactBeyondInt() throws {
        var ledger = Ledger()
        for tenant in ["a", "b"] {
            for guest in ["g1", "g2"] {
                try ledger.connect(tenant: tenant, guest: guest, pageSize: 1 << 30)
                try ledger.beginSync(tenant: tenant, guest: guest)
                try ledger.appendSync(tenant: tenant, guest: guest, ranges: [0..<(1 << 32)])
                try ledger.finishSync(tenant: tenant, guest: guest)
                #expect(ledger.guest(tenant: tenant, guest: guest)?.reclaimableBytes == 1 << 62)
            }
        }
        #expect(ledger.tenant("a")?.reclaimableBytes == Int128(1) << 63)
        #expect(ledger.totals.reclaimableBytes == Int128(1) << 64)
        #expect(ledger.tenants().allSatisfy { $0.reclaimableBytes == .max })
        #expect(ledger.checkInvariants().isEmpty)
        // Reporting and reusing the whole pool moves the counters by 2^62 each time.
        for _ in 0..<4 {
            _ = try ledger.reuse(tenant: "a", guest: "g1", ranges: [0..<(1 << 32)])
            _ = try ledger.report(tenant: "a", guest: "g1", ranges: [0..<(1 << 32)])
        }
        #expect(ledger.tenant("a")?.counters.bytesReported == Int128(4) << 62)
        #expect(ledger.tenant("a")?.counters.bytesReused == Int128(4) << 62)
        #expect(ledger.tenants().first?.bytesReported == .max)
        #expect(ledger.checkInvariants().isEmpty)
    }

    /// A page size above 2^30 is refused by the ledger itself, so a guest's bytes stay within
    /// an Int whoever calls it (2^31 × 2^32 frames overflowed before).
    @Test func pageSizesAboveTheLimitAreRefused() {
        var ledger = Ledger()
        #expect(throws: LedgerError.self) { try ledger.connect(tenant: "t", guest: "g", pageSize: 1 << 31) }
        #expect(throws: LedgerError.self) { try ledger.connect(tenant: "t", guest: "g", pageSize: 1 << 62) }
        #expect(throws: Never.self) { try ledger.connect(tenant: "t", guest: "g", pageSize: 1 << 30) }
    }

    /// Random reports, reuses, syncs and page size changes over several guests at extreme
    /// geometry: the tenant sums equal the guests' bytes exactly (checkInvariants), and every
    /// snapshot is the exact figure saturated into an Int.
    @Test func sumsStayExactUnderRandomUpdatesAtTheExtremes() async throws {
        let operation = Gen<Int>.int(in: 0...4)
        let guest = Gen<Int>.int(in: 0...5)
        let pageShift = Gen<Int>.int(in: 12...30)
        let start = Gen<UInt64>.oneOf(
            Gen.uint64(in: 0..<(1 << 32)),
            Gen.uint64(in: 0...4).map { $0 },
            Gen.uint64(in: ((1 << 32) - 4)..<(1 << 32))
        )
        let length = Gen<UInt64>.oneOf(Gen.uint64(in: 1...(1 << 32)), Gen.uint64(in: 1...8))
        let step = zip(operation, guest, pageShift, start, length)
        await propertyCheck(count: 60, input: step.array(of: 1...80)) { steps in
            var ledger = Ledger()
            let tenants = ["a", "b", "c"]
            for (operation, guest, pageShift, start, length) in steps {
                let tenant = tenants[guest % tenants.count]
                let name = "g\(guest)"
                let end = min(start + length, 1 << 32)
                let range = start..<max(end, start + 1)
                if ledger.guest(tenant: tenant, guest: name)?.isConnected != true || operation == 0 {
                    try? ledger.connect(tenant: tenant, guest: name, pageSize: 1 << pageShift)
                }
                switch operation {
                case 1: _ = try? ledger.report(tenant: tenant, guest: name, ranges: [range])
                case 2: _ = try? ledger.reuse(tenant: tenant, guest: name, ranges: [range])
                case 3:
                    try? ledger.beginSync(tenant: tenant, guest: name)
                    try? ledger.appendSync(tenant: tenant, guest: name, ranges: [range, 0..<min(length, 1 << 32)])
                    _ = try? ledger.finishSync(tenant: tenant, guest: name)
                case 4: try? ledger.disconnect(tenant: tenant, guest: name)
                default: break
                }
            }
            #expect(ledger.checkInvariants().isEmpty)
            var total: Int128 = 0
            for tenant in tenants {
                let exact = ledger.guests(tenant: tenant).reduce(Int128(0)) { $0 + Int128($1.reclaimableBytes) }
                total += exact
                #expect(ledger.tenant(tenant).map { $0.reclaimableBytes } ?? 0 == exact)
                let snapshot = ledger.tenants().first { $0.tenant == tenant }
                #expect((snapshot?.reclaimableBytes ?? 0) == Int(clamping: exact))
            }
            #expect(ledger.totals.reclaimableBytes == total)
        }
    }

    // MARK: Core, admin API, metrics

    /// Guests at the protocol's largest pool, whole pools synced, in two tenants: the core's
    /// status, tenant list, admin wire messages and metrics all survive, exact where they fit
    /// and saturated where they do not.
    @Test(arguments: [1, 2, 2048, 2049, 4096])
    func coreAdminAndMetricsAtTheLimits(guestsPerTenant: Int) throws {
        let core = BrokerCore(
            policies: PolicySet(tenants: ["a": TenantPolicy(), "b": TenantPolicy()]),
            maxSessions: 2 * guestsPerTenant,
            clock: { .zero }
        )
        let pages = Self.largestPool.totalPages
        for tenant in ["a", "b"] {
            for guest in 0..<guestsPerTenant {
                let identity = Self.identity(tenant, "g\(guest)")
                guard case .admitted = core.admit(identity, geometry: Self.largestPool, control: FakeSession()) else {
                    Issue.record("a pool at the limits was refused")
                    return
                }
                try core.sync(identity, chunk: 0, ranges: [FrameRange(firstFrame: 0, count: pages)], final: true)
            }
        }
        #expect(core.checkInvariants().isEmpty)
        let perTenant = Int128(guestsPerTenant) << 52
        let status = core.status()
        #expect(status.reclaimableBytes == Int(clamping: 2 * perTenant))
        #expect(core.tenants().allSatisfy { $0.reclaimableBytes == Int(clamping: perTenant) })
        #expect(core.guests(tenant: "a").allSatisfy { $0.reclaimableBytes == 1 << 52 })
        // The admin API's figures are uint64: the saturated Int fits.
        #expect(status.wireMessage.reclaimableBytes == UInt64(Int(clamping: 2 * perTenant)))
        #expect(BrokerStatus(status.wireMessage).reclaimableBytes == status.reclaimableBytes)
        for tenant in core.tenants() {
            #expect(TenantSnapshot(tenant.wireMessage).reclaimableBytes == tenant.reclaimableBytes)
        }
        #expect(
            AdminFormat.bytes(status.reclaimableBytes).hasSuffix(status.reclaimableBytes >= 1 << 60 ? "EiB" : "PiB")
        )
        // A whole-pool report (the largest aligned block at frame 0) is accounted, not refused.
        let outcome = core.account(Self.identity("a", "g0"), blocks: [ReportedBlock(frame: 0, order: 22)])
        #expect(outcome.reason == .ok)
        // Metrics read the same saturated figures.
        let metrics = BrokerMetrics(registry: PrometheusCollectorRegistry())
        let text = String(decoding: metrics.exposition(from: core), as: UTF8.self)
        let gauge = Exposition(text).value(BrokerMetrics.Name.reclaimableBytes, ["tenant": "a"])
        #expect(gauge == Double(Int(clamping: perTenant)))
    }

    /// Admission refuses a geometry beyond the limits even when called directly (defence in
    /// depth behind the session's own check).
    @Test func theCoreRefusesGeometryBeyondTheLimits() {
        let core = BrokerCore(policies: PolicySet(tenants: ["a": TenantPolicy()]), clock: { .zero })
        let hostile = GuestGeometry(
            pageSize: 1 << 31,
            totalPages: 1 << 32,
            minOrder: 0,
            maxOrder: 10,
            agentVersion: "x"
        )
        guard
            case .refused(let code, _) = core.admit(Self.identity("a", "g"), geometry: hostile, control: FakeSession())
        else {
            Issue.record("a geometry beyond the limits was admitted")
            return
        }
        #expect(code == .limitExceeded)
    }
}
