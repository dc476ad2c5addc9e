import BuddyAllocator
import PageReporting
import Testing

/// Linux 5.7's budget and rotation, and 5.10's tail putback, each switchable.
@Suite struct BudgetRotationPutbackTests {
    /// 128 free blocks of order 3 on one list (order 3 is both the top order and the
    /// pageblock order), reported in batches of 4.
    private func run(
        _ configuration: PageReportingConfiguration,
        passes: Int = 1
    ) throws -> (BuddyAllocator, VirtualClock, RecordingDevice, PageReportingEngine) {
        let allocator = try makeAllocator(frames: 1024, orderCount: 4, pageblockOrder: 3)
        let clock = VirtualClock()
        let device = RecordingDevice()
        let engine = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: clock,
            configuration: configuration
        )
        clock.advance(by: .seconds(2) * passes)
        try allocator.validate()
        return (allocator, clock, device, engine)
    }

    @Test func budgetLimitsReportsPerListAndRequestsAnotherPass() throws {
        // budget = ceil(128 / (4 * 16)) = 2, so 3 reports (2 + the one for leftovers) = 12 blocks.
        let (_, clock, device, engine) = try self.run(PageReportingConfiguration(capacity: 4))
        #expect(device.batches.count == 3)
        #expect(engine.currentState == .requested)
        #expect(clock.nextDue == .seconds(4))
    }

    @Test func budgetReportsEverythingEventually() throws {
        // 128 blocks at 12 a pass: 11 passes.
        let (allocator, _, device, engine) = try self.run(PageReportingConfiguration(capacity: 4), passes: 11)
        #expect(reportedHeads(allocator).count == 128)
        #expect(engine.statistics.passes == 11)
        #expect(Set(device.reportedBlocks.map(\.frame)).count == 128)
    }

    @Test func withoutBudgetOnePassReportsEverything() throws {
        let (allocator, clock, device, engine) = try self.run(PageReportingConfiguration(capacity: 4, budget: false))
        #expect(device.batches.count == 32)
        #expect(reportedHeads(allocator).count == 128)
        #expect(engine.currentState == .idle)
        #expect(clock.pendingCount == 0)
    }

    @Test func rotationBringsTheNextUnreportedBlockToTheFront() throws {
        // Head putback leaves reported blocks at the front; rotation moves them behind the
        // first block the budget stopped at.
        let (allocator, _, _, _) = try self.run(PageReportingConfiguration(capacity: 4, tailPutback: false))
        let list = freeList(allocator, order: 3)
        #expect(list.count == 128)
        #expect(allocator.frameInfo(list[0])?.isReported == false)
        #expect(list.suffix(12).allSatisfy { allocator.frameInfo($0)?.isReported == true })
    }

    @Test func withoutRotationReportedBlocksStayInFront() throws {
        let (allocator, _, _, _) = try self.run(
            PageReportingConfiguration(capacity: 4, rotation: false, tailPutback: false)
        )
        let list = freeList(allocator, order: 3)
        #expect(list.prefix(12).allSatisfy { allocator.frameInfo($0)?.isReported == true })
        #expect(allocator.frameInfo(list[12])?.isReported == false)
    }

    @Test func tailPutbackSendsReportedBlocksToTheTail() throws {
        let (allocator, _, _, _) = try self.run(PageReportingConfiguration(capacity: 4, rotation: false))
        let list = freeList(allocator, order: 3)
        #expect(list.prefix(116).allSatisfy { allocator.frameInfo($0)?.isReported == false })
        #expect(list.suffix(12).allSatisfy { allocator.frameInfo($0)?.isReported == true })
    }

    @Test func seedConfigurationTurnsEveryUpstreamChangeOff() {
        let seed = PageReportingConfiguration.seed
        #expect(!seed.budget && !seed.rotation && !seed.tailPutback)
        let linux = PageReportingConfiguration.linux
        #expect(linux.budget && linux.rotation && linux.tailPutback)
    }
}
