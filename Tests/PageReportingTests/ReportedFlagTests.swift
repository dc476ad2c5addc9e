import BuddyAllocator
import PageReporting
import Testing

/// `PG_reported` lives on free block heads only and is cleared by `del_page_from_free_list`,
/// so any split, merge or allocation clears it.
@Suite struct ReportedFlagTests {
    /// Registers a device on a fresh 1024-frame guest (32 free order-5 blocks) and runs the
    /// initial flush, after which every free block is Reported.
    private func flushed(
        _ prepare: (BuddyAllocator) throws -> Void = { _ in }
    ) throws -> (BuddyAllocator, VirtualClock, PageReportingEngine) {
        let allocator = try makeAllocator()
        try prepare(allocator)
        let clock = VirtualClock()
        let engine = try PageReportingEngine.register(
            device: RecordingDevice(),
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4, budget: false)
        )
        clock.advance(by: .seconds(2))
        try allocator.validate()
        return (allocator, clock, engine)
    }

    @Test func initialFlushReportsEveryFreeBlock() throws {
        let (allocator, _, engine) = try self.flushed()
        #expect(reportedHeads(allocator).count == 32)
        #expect(allocator.statistics.discardedPages == 1024)
        #expect(engine.statistics.reports == 8)
    }

    @Test func reportedClearedWhenBlockIsSplit() throws {
        let (allocator, _, _) = try self.flushed()
        let frame = try allocator.allocate(order: 0)
        try allocator.validate()
        // The order-5 block it came from was split into order 4, 3, 2, 1, 0 remainders: none of
        // them may carry Reported, the 31 untouched blocks keep it.
        #expect(reportedHeads(allocator).count == 31)
        for order in 0..<5 {
            let remainder = frame + (1 << order)
            #expect(allocator.frameInfo(remainder)?.state == .free)
            #expect(allocator.frameInfo(remainder)?.isReported == false)
        }
    }

    @Test func reportedClearedWhenBlockIsMerged() throws {
        var lower = 0
        let (allocator, _, _) = try self.flushed { allocator in
            // Leaves a free order-4 upper half whose buddy is allocated.
            lower = try allocator.allocate(order: 4)
        }
        let upper = lower + 16
        #expect(allocator.frameInfo(upper)?.isReported == true)
        try allocator.free(frame: lower, order: 4)
        try allocator.validate()
        #expect(allocator.frameInfo(lower)?.order == 5)
        #expect(allocator.frameInfo(lower)?.isReported == false)
        #expect(allocator.frameInfo(upper)?.isReported == false)
    }

    @Test func reportedClearedWhenBlockIsAllocated() throws {
        let (allocator, _, _) = try self.flushed()
        let frame = try allocator.allocate(order: 5)
        #expect(allocator.frameInfo(frame)?.state == .allocated)
        #expect(allocator.frameInfo(frame)?.isReported == false)
        #expect(reportedHeads(allocator).count == 31)
        try allocator.validate()
    }
}
