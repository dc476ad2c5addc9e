import Broker
import Testing

@Suite("Ledger")
struct LedgerTests {
    private static let page = 4096

    private func connected(_ guests: [(String, String)]) throws -> Ledger {
        var ledger = Ledger()
        for (tenant, guest) in guests { try ledger.connect(tenant: tenant, guest: guest, pageSize: Self.page) }
        return ledger
    }

    // MARK: Reports and reuses

    @Test("a report adds frames; a merged block reported again is not counted twice")
    func reportIsAUnion() throws {
        var ledger = try self.connected([("acme", "vm1")])
        #expect(try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<512, 1024..<1536]) == 1024)
        // The two order-9 blocks merged with their buddies into one order-11 block, reported again.
        #expect(try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<2048]) == 1024)
        #expect(try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<2048]) == 0)
        let tenant = try #require(ledger.tenants().first)
        #expect(tenant.reclaimableBytes == 2048 * Self.page)
        #expect(tenant.reportsOK == 3)
        #expect(tenant.bytesReported == 2048 * Self.page)
        let guest = try #require(ledger.guests(tenant: "acme").first)
        #expect(guest.reclaimableBytes == 2048 * Self.page)
        #expect(guest.ranges == 1)
        #expect(guest.connected)
    }

    @Test("a batch of adjacent blocks counts what block-by-block reports would, partly reported or not")
    func adjacentBlocksInOneBatch() throws {
        // The ledger adds a run of adjacent ranges to the frame set as one: the figures must be
        // those of adding each alone, also where part of the run was already reported, and across
        // a gap in the run.
        var together = try self.connected([("acme", "vm1")])
        var apart = try self.connected([("acme", "vm1")])
        let earlier: [Range<UInt64>] = [512..<1024, 4096..<4100]
        let batch: [Range<UInt64>] = [0..<512, 512..<1024, 1024..<1536, 2048..<2560, 2560..<3072, 4000..<4096]
        _ = try together.report(tenant: "acme", guest: "vm1", ranges: earlier)
        _ = try apart.report(tenant: "acme", guest: "vm1", ranges: earlier)
        let added = try together.report(tenant: "acme", guest: "vm1", ranges: batch)
        var addedApart = 0
        for range in batch { addedApart += try apart.report(tenant: "acme", guest: "vm1", ranges: [range]) }
        #expect(added == 512 + 0 + 512 + 512 + 512 + 96)
        #expect(added == addedApart)
        let record = try #require(together.guest(tenant: "acme", guest: "vm1"))
        let recordApart = try #require(apart.guest(tenant: "acme", guest: "vm1"))
        #expect(Array(record.discarded) == Array(recordApart.discarded))
        #expect(Array(record.discarded) == [0..<1536, 2048..<3072, 4000..<4100])
        let tenant = try #require(together.tenants().first)
        #expect(tenant.reclaimableBytes == (1536 + 1024 + 100) * Self.page)
        #expect(tenant.bytesReported == (512 + 4 + added) * Self.page)
        #expect(tenant.reportsOK == 2)
    }

    @Test("a reuse removes frames, splitting ranges, and counts what it removed")
    func reuseRemoves() throws {
        var ledger = try self.connected([("acme", "vm1")])
        _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<1024])
        #expect(try ledger.reuse(tenant: "acme", guest: "vm1", ranges: [100..<200, 5000..<6000]) == 100)
        #expect(try ledger.reuse(tenant: "acme", guest: "vm1", ranges: [100..<200]) == 0)
        let record = try #require(ledger.guest(tenant: "acme", guest: "vm1"))
        #expect(Array(record.discarded) == [0..<100, 200..<1024])
        let tenant = try #require(ledger.tenant("acme"))
        #expect(tenant.reclaimableBytes == 924 * Self.page)
        #expect(tenant.counters.bytesReused == 100 * Self.page)
    }

    @Test("failed reports are counted by reason")
    func failuresByReason() throws {
        var ledger = try self.connected([("acme", "vm1")])
        ledger.recordReportFailure(tenant: "acme", reason: 2)
        ledger.recordReportFailure(tenant: "acme", reason: 2)
        ledger.recordReportFailure(tenant: "acme", reason: 6)
        ledger.recordReportFailure(tenant: "globex", reason: 5)
        let tenants = ledger.tenants()
        #expect(tenants.map(\.tenant) == ["acme", "globex"])
        #expect(tenants[0].reportsFailed == 3)
        #expect(tenants[0].reportsFailedByReason == [2: 2, 6: 1])
        #expect(tenants[1].reportsFailed == 1)
        #expect(tenants[1].guests == 0)
    }

    // MARK: Errors

    @Test("calls naming an unknown or disconnected guest are refused and change nothing")
    func refusals() throws {
        var ledger = try self.connected([("acme", "vm1")])
        _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<10])
        #expect(throws: LedgerError.self) { try ledger.report(tenant: "acme", guest: "vm2", ranges: [0..<10]) }
        #expect(throws: LedgerError.self) { try ledger.report(tenant: "other", guest: "vm1", ranges: [0..<10]) }
        do {
            _ = try ledger.reuse(tenant: "acme", guest: "nope", ranges: [0..<1])
            Issue.record("expected unknown_guest")
        } catch {
            #expect(error.code == .unknownGuest)
            #expect(error.guest == "nope")
        }
        try ledger.disconnect(tenant: "acme", guest: "vm1")
        do {
            _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [20..<30])
            Issue.record("expected not_connected")
        } catch {
            #expect(error.code == .notConnected)
        }
        do {
            try ledger.connect(tenant: "acme", guest: "vm1", pageSize: 3000)
            Issue.record("expected invalid_page_size")
        } catch {
            #expect(error.code == .invalidPageSize)
        }
        #expect(ledger.tenants()[0].reclaimableBytes == 10 * Self.page)
        #expect(ledger.tenants()[0].reportsOK == 1)
        #expect(ledger.checkInvariants() == [])
    }

    @Test("a batch with a range past 2^32 is refused whole")
    func outOfBoundsBatch() throws {
        var ledger = try self.connected([("acme", "vm1")])
        do {
            _ = try ledger.report(
                tenant: "acme",
                guest: "vm1",
                ranges: [0..<10, FrameRangeSet.frameLimit - 1..<FrameRangeSet.frameLimit + 1]
            )
            Issue.record("expected range_out_of_bounds")
        } catch {
            #expect(error.code == .rangeOutOfBounds)
            #expect(error.code.description == "range_out_of_bounds")
        }
        #expect(ledger.tenants()[0].reclaimableBytes == 0)
        #expect(ledger.tenants()[0].reportsOK == 0)
        // The last frame below the limit is fine.
        #expect(
            try ledger.report(
                tenant: "acme",
                guest: "vm1",
                ranges: [FrameRangeSet.frameLimit - 1..<FrameRangeSet.frameLimit]
            ) == 1
        )
    }

    // MARK: Sessions

    @Test("a disconnected guest's frames stay counted; the gauge follows sessions")
    func disconnectKeepsFrames() throws {
        var ledger = try self.connected([("acme", "vm1"), ("acme", "vm2")])
        _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<100])
        #expect(ledger.tenants()[0].guestsConnected == 2)
        try ledger.disconnect(tenant: "acme", guest: "vm1")
        try ledger.disconnect(tenant: "acme", guest: "vm1")  // idempotent
        let tenant = ledger.tenants()[0]
        #expect(tenant.guestsConnected == 1)
        #expect(tenant.guests == 2)
        #expect(tenant.reclaimableBytes == 100 * Self.page)
        #expect(ledger.guests(tenant: "acme").map(\.connected) == [false, true])
        // A newer session for a connected guest replaces the older: the gauge does not move.
        try ledger.connect(tenant: "acme", guest: "vm2", pageSize: Self.page)
        #expect(ledger.tenants()[0].guestsConnected == 1)
        try ledger.connect(tenant: "acme", guest: "vm1", pageSize: Self.page)
        #expect(ledger.tenants()[0].guestsConnected == 2)
        #expect(ledger.tenants()[0].reclaimableBytes == 100 * Self.page)
        #expect(ledger.checkInvariants() == [])
    }

    @Test("reconnecting with another page size drops the old record")
    func pageSizeChange() throws {
        var ledger = try self.connected([("acme", "vm1")])
        _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<100])
        try ledger.disconnect(tenant: "acme", guest: "vm1")
        try ledger.connect(tenant: "acme", guest: "vm1", pageSize: 16384)
        #expect(ledger.tenants()[0].reclaimableBytes == 0)
        _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<10])
        #expect(ledger.tenants()[0].reclaimableBytes == 10 * 16384)
        #expect(ledger.checkInvariants() == [])
    }

    @Test("a disconnected guest can be forgotten, a connected one cannot")
    func forget() throws {
        var ledger = try self.connected([("acme", "vm1"), ("acme", "vm2")])
        _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<100])
        #expect(throws: LedgerError.self) { try ledger.forget(tenant: "acme", guest: "vm1") }
        try ledger.disconnect(tenant: "acme", guest: "vm1")
        #expect(try ledger.forget(tenant: "acme", guest: "vm1") == 100 * Self.page)
        #expect(ledger.tenants()[0].guests == 1)
        #expect(ledger.tenants()[0].reclaimableBytes == 0)
        #expect(ledger.totals.guests == 1)
        // The guest that took the forgotten one's place is still reachable and exact.
        #expect(try ledger.report(tenant: "acme", guest: "vm2", ranges: [0..<7]) == 7)
        #expect(ledger.guest(tenant: "acme", guest: "vm1") == nil)
        #expect(ledger.tenants()[0].reclaimableBytes == 7 * Self.page)
        #expect(ledger.checkInvariants() == [])
    }

    // MARK: Sync

    @Test("a sync replaces the set only when it finishes")
    func syncReplaces() throws {
        var ledger = try self.connected([("acme", "vm1")])
        _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<100, 500..<600])
        try ledger.beginSync(tenant: "acme", guest: "vm1")
        try ledger.appendSync(tenant: "acme", guest: "vm1", ranges: [1000..<1010, 50..<60])
        try ledger.appendSync(tenant: "acme", guest: "vm1", ranges: [55..<70])
        // Until the final chunk, the old set is what the ledger reports.
        #expect(ledger.tenants()[0].reclaimableBytes == 200 * Self.page)
        #expect(ledger.guests()[0].syncing)
        let outcome = try ledger.finishSync(tenant: "acme", guest: "vm1")
        #expect(outcome.before == 200)
        #expect(outcome.after == 30)
        #expect(Array(ledger.guest(tenant: "acme", guest: "vm1")!.discarded) == [50..<70, 1000..<1010])
        #expect(ledger.tenants()[0].reclaimableBytes == 30 * Self.page)
        #expect(!ledger.guests()[0].syncing)
        #expect(ledger.checkInvariants() == [])
    }

    @Test("reports and reuses during a sync land in both the old set and the new one")
    func updatesDuringSync() throws {
        var ledger = try self.connected([("acme", "vm1")])
        _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<100])
        try ledger.beginSync(tenant: "acme", guest: "vm1")
        try ledger.appendSync(tenant: "acme", guest: "vm1", ranges: [0..<100, 200..<300])
        #expect(try ledger.report(tenant: "acme", guest: "vm1", ranges: [400..<410]) == 10)
        #expect(try ledger.reuse(tenant: "acme", guest: "vm1", ranges: [0..<50]) == 50)
        #expect(ledger.tenants()[0].reclaimableBytes == 60 * Self.page)
        try ledger.finishSync(tenant: "acme", guest: "vm1")
        #expect(Array(ledger.guest(tenant: "acme", guest: "vm1")!.discarded) == [50..<100, 200..<300, 400..<410])
        #expect(ledger.tenants()[0].reclaimableBytes == 160 * Self.page)
    }

    @Test("a disconnect mid-sync keeps the old set and discards the partial one")
    func midSyncDisconnect() throws {
        var ledger = try self.connected([("acme", "vm1")])
        _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: [0..<100])
        try ledger.beginSync(tenant: "acme", guest: "vm1")
        try ledger.appendSync(tenant: "acme", guest: "vm1", ranges: [5000..<6000])
        try ledger.disconnect(tenant: "acme", guest: "vm1")
        #expect(Array(ledger.guest(tenant: "acme", guest: "vm1")!.discarded) == [0..<100])
        #expect(ledger.tenants()[0].reclaimableBytes == 100 * Self.page)
        #expect(!ledger.guests()[0].syncing)
        // The next session starts a fresh sync; the partial one is gone.
        try ledger.connect(tenant: "acme", guest: "vm1", pageSize: Self.page)
        do {
            try ledger.finishSync(tenant: "acme", guest: "vm1")
            Issue.record("expected sync_not_in_progress")
        } catch {
            #expect(error.code == .syncNotInProgress)
        }
        try ledger.beginSync(tenant: "acme", guest: "vm1")
        try ledger.appendSync(tenant: "acme", guest: "vm1", ranges: [10..<20])
        try ledger.finishSync(tenant: "acme", guest: "vm1")
        #expect(Array(ledger.guest(tenant: "acme", guest: "vm1")!.discarded) == [10..<20])
        #expect(ledger.checkInvariants() == [])
    }

    @Test("sync calls out of order are refused")
    func syncOutOfOrder() throws {
        var ledger = try self.connected([("acme", "vm1")])
        do {
            try ledger.appendSync(tenant: "acme", guest: "vm1", ranges: [0..<1])
            Issue.record("expected sync_not_in_progress")
        } catch {
            #expect(error.code == .syncNotInProgress)
        }
        try ledger.beginSync(tenant: "acme", guest: "vm1")
        do {
            try ledger.beginSync(tenant: "acme", guest: "vm1")
            Issue.record("expected sync_in_progress")
        } catch {
            #expect(error.code == .syncInProgress)
        }
        // A replacing session voids the older one's sync.
        try ledger.connect(tenant: "acme", guest: "vm1", pageSize: Self.page)
        #expect(!ledger.guests()[0].syncing)
        try ledger.disconnect(tenant: "acme", guest: "vm1")
        do {
            try ledger.beginSync(tenant: "acme", guest: "vm1")
            Issue.record("expected not_connected")
        } catch {
            #expect(error.code == .notConnected)
        }
    }

    // MARK: Randomized

    /// What a guest holds according to the test: its set, and the sync it is sending.
    private struct ModelGuest {
        var discarded = NaiveRangeSet()
        var pending: NaiveRangeSet?
        var connected = false
        var tenant: String
        var guest: String
    }

    @Test("tenant sums equal the sum of their guests after random sequences", arguments: [11, 12, 13] as [UInt64])
    func randomSequences(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let names = [
            ("acme", "a1"), ("acme", "a2"), ("acme", "a3"), ("globex", "g1"), ("globex", "g2"), ("initech", "i1"),
        ]
        var models = names.map { ModelGuest(tenant: $0.0, guest: $0.1) }
        var ledger = Ledger()
        let domain: UInt64 = 1 << 22
        var expectedOK: [String: Int] = [:]
        for step in 0..<3000 {
            let index = Int.random(in: 0..<models.count, using: &random)
            let (tenant, guest) = (models[index].tenant, models[index].guest)
            let ranges = (0..<Int.random(in: 1...8, using: &random)).map { _ in
                random.frameRange(domain: domain, typicalLength: 512, longLength: 1 << 16)
            }
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<4:
                try ledger.connect(tenant: tenant, guest: guest, pageSize: Self.page)
                models[index].connected = true
                models[index].pending = nil
            case 4..<7:
                if models[index].connected || ledger.guest(tenant: tenant, guest: guest) != nil {
                    try ledger.disconnect(tenant: tenant, guest: guest)
                    models[index].connected = false
                    models[index].pending = nil
                }
            case 7..<50 where models[index].connected:
                let before = models[index].discarded.frameCount
                for range in ranges {
                    models[index].discarded.insert(range)
                    models[index].pending?.insert(range)
                }
                #expect(
                    try ledger.report(tenant: tenant, guest: guest, ranges: ranges) == models[index].discarded
                        .frameCount - before
                )
                expectedOK[tenant, default: 0] += 1
            case 50..<85 where models[index].connected:
                let before = models[index].discarded.frameCount
                for range in ranges {
                    models[index].discarded.remove(range)
                    models[index].pending?.remove(range)
                }
                #expect(
                    try ledger.reuse(tenant: tenant, guest: guest, ranges: ranges) == before
                        - models[index].discarded.frameCount
                )
            case 85..<90 where models[index].connected && models[index].pending == nil:
                try ledger.beginSync(tenant: tenant, guest: guest)
                models[index].pending = NaiveRangeSet()
            case 90..<97 where models[index].pending != nil:
                try ledger.appendSync(tenant: tenant, guest: guest, ranges: ranges)
                for range in ranges { models[index].pending!.insert(range) }
            case 97..<100 where models[index].pending != nil:
                try ledger.finishSync(tenant: tenant, guest: guest)
                models[index].discarded = models[index].pending!
                models[index].pending = nil
            default:
                continue
            }
            // The sums, per tenant, against the model's guests.
            for snapshot in ledger.tenants() {
                let guests = models.filter { $0.tenant == snapshot.tenant }
                let known = guests.filter { ledger.guest(tenant: $0.tenant, guest: $0.guest) != nil }
                #expect(
                    snapshot.reclaimableBytes == known.reduce(0) { $0 + $1.discarded.frameCount * Self.page },
                    "step \(step)"
                )
                #expect(snapshot.guestsConnected == guests.filter(\.connected).count, "step \(step)")
                #expect(snapshot.guests == known.count, "step \(step)")
                #expect(snapshot.reportsOK == expectedOK[snapshot.tenant, default: 0], "step \(step)")
            }
            if step % 100 == 0 {
                #expect(ledger.checkInvariants() == [], "step \(step)")
                for model in models {
                    guard let record = ledger.guest(tenant: model.tenant, guest: model.guest) else { continue }
                    #expect(Array(record.discarded) == model.discarded.ranges)
                    #expect(record.isSyncing == (model.pending != nil))
                }
            }
        }
        let totals = ledger.totals
        #expect(totals.reclaimableBytes == ledger.tenants().reduce(0) { $0 + $1.reclaimableBytes })
        #expect(totals.reclaimableBytes == ledger.guests().reduce(0) { $0 + $1.reclaimableBytes })
    }

    // MARK: Scale

    @Test("one guest, 100k ranges reported one by one and reused again, through the ledger")
    func scale() throws {
        var ledger = try self.connected([("acme", "vm1")])
        var random = SplitMix64(seed: 99)
        var blocks = (0..<100_000).map { UInt64($0) * 1024 }
        blocks.shuffle(using: &random)
        for block in blocks {
            _ = try ledger.report(tenant: "acme", guest: "vm1", ranges: CollectionOfOne(block..<block + 512))
        }
        #expect(ledger.guests()[0].ranges == 100_000)
        #expect(ledger.tenants()[0].reclaimableBytes == 100_000 * 512 * Self.page)
        blocks.shuffle(using: &random)
        for block in blocks {
            _ = try ledger.reuse(tenant: "acme", guest: "vm1", ranges: CollectionOfOne(block..<block + 512))
        }
        #expect(ledger.tenants()[0].reclaimableBytes == 0)
        #expect(ledger.checkInvariants() == [])
    }
}
