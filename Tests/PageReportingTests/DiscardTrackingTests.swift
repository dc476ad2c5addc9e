import BuddyAllocator
import PageReporting
import Synchronization
import Testing

/// The guest's page-granular record of what the host holds discarded.
@Suite struct DiscardTrackingTests {
    final class ReuseLog: ReuseObserver {
        let ranges = Mutex<[Range<Int>]>([])
        func framesReused(first: Int, count: Int) { self.ranges.withLock { $0.append(first..<(first + count)) } }
    }

    @Test func discardedIsSetOnSuccessKeptAcrossMergesAndClearedOnAllocation() throws {
        let allocator = try makeAllocator()
        let log = ReuseLog()
        allocator.setReuseObserver(log)
        let clock = VirtualClock()
        let engine = try PageReportingEngine.register(
            device: RecordingDevice(),
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4, budget: false)
        )
        clock.advance(by: .seconds(2))
        #expect(allocator.statistics.discardedPages == 1024)
        #expect(allocator.discardedRanges() == [0..<1024])

        // Taking a page back clears its bit and tells the observer exactly which frame.
        let page = try allocator.allocate(order: 0)
        // Runs are batched per zone until flushed (the engine flushes before every report).
        #expect(log.ranges.withLock { $0 } == [])
        allocator.flushReuse()
        #expect(log.ranges.withLock { $0 } == [page..<(page + 1)])
        #expect(allocator.statistics.discardedPages == 1023)
        #expect(allocator.discardedRanges() == [0..<page, (page + 1)..<1024].filter { !$0.isEmpty })

        // Freeing it merges it with discarded buddies; their bits survive the merge, its own
        // stays clear until the merged block is reported again.
        try allocator.free(frame: page, order: 0)
        #expect(allocator.frameInfo(page)?.isDiscarded == false)
        #expect(allocator.frameInfo(page ^ 1)?.isDiscarded == true)
        #expect(allocator.statistics.discardedPages == 1023)
        clock.advance(by: .seconds(2))
        #expect(engine.statistics.passes == 2)
        #expect(allocator.statistics.discardedPages == 1024)
        try allocator.validate()
    }

    @Test func largeAllocationReportsContiguousRuns() throws {
        let allocator = try makeAllocator()
        let log = ReuseLog()
        allocator.setReuseObserver(log)
        let clock = VirtualClock()
        _ = try PageReportingEngine.register(
            device: RecordingDevice(),
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4, budget: false)
        )
        clock.advance(by: .seconds(2))
        // Take one page back and return it, so its block has a hole in the discarded record.
        let page = try allocator.allocate(order: 0)
        try allocator.free(frame: page, order: 0)
        allocator.flushReuse()
        log.ranges.withLock { $0.removeAll() }
        let block = try allocator.allocate(order: 5)
        allocator.flushReuse()
        #expect(block <= page && page < block + 32)
        #expect(log.ranges.withLock { $0 } == [block..<page, (page + 1)..<(block + 32)].filter { !$0.isEmpty })
        #expect(allocator.statistics.discardedPages == 1024 - 32)
    }

    @Test func failedReportsDiscardNothing() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        _ = try PageReportingEngine.register(
            device: RecordingDevice { _, _ in throw HostRefused(retryAfter: nil) },
            allocator: allocator,
            scheduler: clock
        )
        clock.advance(by: .seconds(2))
        #expect(allocator.discardedRanges().isEmpty)
    }
}
