import BuddyAllocator
import Synchronization
import Testing

/// Records the orders a ``FreeBlockNotifier`` is told about.
private final class OrderRecorder: FreeBlockNotifier {
    private let orders = Mutex<[Int]>([])

    func blockFreed(order: Int) { self.orders.withLock { $0.append(order) } }

    func take() -> [Int] {
        self.orders.withLock { orders in
            defer { orders = [] }
            return orders
        }
    }
}

@Suite("Reported and discarded flags, reuse and free notifications")
struct ReportedFlagTests {
    /// Every Reported frame is the head of a free block.
    private func expectReportedOnlyOnFreeHeads(
        _ allocator: BuddyAllocator,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        for frame in 0..<allocator.configuration.frameCount {
            guard let info = allocator.frameInfo(frame), info.isReported else { continue }
            #expect(info.state == .free, "frame \(frame) is Reported but \(info.state)", sourceLocation: sourceLocation)
        }
    }

    @Test("setReported after putback marks the free block")
    func setReportedAfterPutback() throws {
        let allocator = try makeAllocator(frames: 2048)
        #expect(isolate(allocator, 1024, order: 10))
        putback(allocator, 1024, order: 10, reported: true)
        #expect(allocator.frameInfo(1024)?.isReported == true)
        #expect(allocator.frameInfo(0)?.isReported == false)
        #expect(allocator.zones[0].withLock { $0.isReported(1024) })
        // A putback alone does not mark.
        #expect(isolate(allocator, 0, order: 10))
        putback(allocator, 0, order: 10)
        #expect(allocator.frameInfo(0)?.isReported == false)
        #expect(allocator.frameInfo(1024)?.isReported == true)
        try allocator.validate()
    }

    @Test("Reported is cleared when the block is split; other blocks keep theirs")
    func clearedOnSplit() throws {
        let allocator = try makeAllocator(frames: 2048)
        for frame in [0, 1024] {
            #expect(isolate(allocator, frame, order: 10))
            putback(allocator, frame, order: 10, toTail: false, reported: true)
        }
        #expect(freeList(allocator, order: 10) == [1024, 0])
        #expect(try allocator.allocate(order: 0) == 1024)
        for frame in 1024..<2048 {
            #expect(allocator.frameInfo(frame)?.isReported == false)
        }
        #expect(allocator.frameInfo(1536)?.state == .free)
        #expect(allocator.frameInfo(0)?.isReported == true)
        self.expectReportedOnlyOnFreeHeads(allocator)
        try allocator.validate()
    }

    @Test("Reported is cleared when the block merges with a freed buddy")
    func clearedOnMerge() throws {
        let allocator = try makeAllocator(frames: 1024)
        #expect(try allocator.allocate(order: 0) == 0)
        for (frame, order) in [(2, 1), (512, 9), (64, 6)] {
            #expect(isolate(allocator, frame, order: order))
            putback(allocator, frame, order: order, reported: true)
            #expect(allocator.frameInfo(frame)?.isReported == true)
        }
        // Freeing frame 1's buddy-to-be does not touch unrelated Reported blocks.
        #expect(try allocator.allocate(order: 0) == 1)
        try allocator.free(frame: 1, order: 0)
        #expect(allocator.frameInfo(2)?.isReported == true)
        self.expectReportedOnlyOnFreeHeads(allocator)

        try allocator.free(frame: 0, order: 0)
        #expect(allocator.frameInfo(0)?.order == 10)
        for frame in 0..<1024 {
            #expect(allocator.frameInfo(frame)?.isReported == false)
        }
        try allocator.validate()
    }

    @Test("Reported is cleared when the block is allocated")
    func clearedOnAllocation() throws {
        let allocator = try makeAllocator(frames: 1024)
        #expect(try allocator.allocate(order: 0) == 0)
        #expect(isolate(allocator, 512, order: 9))
        putback(allocator, 512, order: 9, reported: true)
        #expect(try allocator.allocate(order: 9) == 512)
        let info = try #require(allocator.frameInfo(512))
        #expect(info.state == .allocated)
        #expect(!info.isReported)
        try allocator.free(frame: 512, order: 9)
        #expect(allocator.frameInfo(512)?.isReported == false)
        try allocator.validate()
    }

    @Test("Reported survives moving the block to the isolate lists")
    func keptWhenPageblockIsolated() throws {
        let allocator = try makeAllocator(frames: 1024)
        #expect(try allocator.allocate(order: 0) == 0)
        #expect(isolate(allocator, 512, order: 9))
        putback(allocator, 512, order: 9, reported: true)
        try allocator.isolatePageblock(frame: 512)
        #expect(allocator.frameInfo(512)?.migratetype == .isolate)
        #expect(allocator.frameInfo(512)?.isReported == true)
        try allocator.validate()
    }

    @Test("discarded bits survive merges and splits, and reuse is reported run by run")
    func discardedLifecycle() throws {
        let allocator = try makeAllocator(frames: 16, orderCount: 4, pageblockOrder: 3)
        let recorder = ReuseRecorder()
        allocator.setReuseObserver(recorder)
        #expect(isolate(allocator, 8, order: 3))
        allocator.zones[0].withLock { $0.markDiscarded(8, order: 3) }
        putback(allocator, 8, order: 3, toTail: true, reported: true)
        #expect(allocator.discardedRanges() == [8..<16])
        #expect(allocator.statistics.discardedPages == 8)
        for frame in 0..<16 {
            #expect(allocator.frameInfo(frame)?.isDiscarded == (frame >= 8))
        }
        try allocator.validate()

        // The clean block comes first; taking it reuses nothing.
        #expect(try allocator.allocate(order: 3) == 0)
        allocator.flushReuse()
        #expect(recorder.take() == [])

        // Splits: each allocation reuses exactly its own frames.
        #expect(try allocator.allocate(order: 0) == 8)
        allocator.flushReuse()
        #expect(recorder.take() == [8..<9])
        #expect(allocator.discardedRanges() == [9..<16])
        #expect(try allocator.allocate(order: 1) == 10)
        allocator.flushReuse()
        #expect(recorder.take() == [10..<12])
        #expect(allocator.discardedRanges() == [9..<10, 12..<16])
        #expect(allocator.statistics.discardedPages == 5)
        #expect(allocator.frameInfo(8)?.isDiscarded == false)
        try allocator.validate()

        // Merges keep the bits of the frames that were not reused.
        try allocator.free(frame: 8, order: 0)
        try allocator.free(frame: 10, order: 1)
        #expect(allocator.frameInfo(8)?.order == 3)
        #expect(allocator.frameInfo(9)?.isDiscarded == true)
        #expect(allocator.frameInfo(9)?.state == .inBlock)
        #expect(allocator.discardedRanges() == [9..<10, 12..<16])
        allocator.flushReuse()
        #expect(recorder.take() == [])
        try allocator.validate()

        // Allocating the merged block reuses the two runs, in order.
        #expect(try allocator.allocate(order: 3) == 8)
        allocator.flushReuse()
        #expect(recorder.take() == [9..<10, 12..<16])
        #expect(allocator.discardedRanges() == [])
        #expect(allocator.statistics.discardedPages == 0)
        try allocator.validate()
    }

    @Test("marking frames already discarded does not count them twice")
    func markDiscardedTwice() throws {
        let allocator = try makeAllocator(frames: 2048)
        for _ in 0..<2 {
            #expect(isolate(allocator, 1024, order: 10))
            allocator.zones[0].withLock { $0.markDiscarded(1024, order: 10) }
            putback(allocator, 1024, order: 10)
            #expect(allocator.statistics.discardedPages == 1024)
        }
        // An overlapping smaller block.
        #expect(try allocator.allocate(order: 10) == 0)
        #expect(try allocator.allocate(order: 0) == 1024)
        #expect(isolate(allocator, 1025, order: 0))
        allocator.zones[0].withLock { $0.markDiscarded(1025, order: 0) }
        putback(allocator, 1025, order: 0)
        #expect(allocator.statistics.discardedPages == 1023)
        #expect(allocator.discardedRanges() == [1025..<2048])
        try allocator.validate()
    }

    @Test("without an observer reuse still clears the bits; a removed observer hears nothing")
    func observerRemoved() throws {
        let allocator = try makeAllocator(frames: 2048)
        let recorder = ReuseRecorder()
        allocator.setReuseObserver(recorder)
        allocator.setReuseObserver(nil)
        #expect(isolate(allocator, 1024, order: 10))
        allocator.zones[0].withLock { $0.markDiscarded(1024, order: 10) }
        putback(allocator, 1024, order: 10, toTail: false)
        #expect(try allocator.allocate(order: 10) == 1024)
        allocator.flushReuse()
        #expect(recorder.take() == [])
        #expect(allocator.statistics.discardedPages == 0)
        #expect(allocator.discardedRanges() == [])
        try allocator.validate()
    }

    @Test("discardedRanges is sorted, non-adjacent and joins runs across zones")
    func discardedRangesAcrossZones() throws {
        let zones = [ZoneLayout(name: "A", frames: 0..<16), ZoneLayout(name: "B", frames: 16..<48)]
        let allocator = try makeAllocator(frames: 48, orderCount: 4, pageblockOrder: 3, zones: zones)
        #expect(try allocator.allocate(order: 2) == 40)
        let blocks = [(8, 3), (16, 3), (44, 2)]
        for (frame, order) in blocks {
            #expect(isolate(allocator, frame, order: order), "frame \(frame)")
            allocator.zone(containing: frame).withLock { $0.markDiscarded(frame, order: order) }
        }
        for (frame, order) in blocks { putback(allocator, frame, order: order) }
        // 8..<16 in A and 16..<24 in B touch: one range.
        #expect(allocator.discardedRanges() == [8..<24, 44..<48])
        let statistics = allocator.statistics
        #expect(statistics.discardedPages == 20)
        #expect(statistics.zones.map(\.discardedPages) == [8, 12])
        try allocator.validate()
    }

    @Test("frees notify at or above the registered order, putbacks never")
    func freeNotifications() throws {
        let allocator = try makeAllocator(frames: 1024)
        let recorder = OrderRecorder()
        try allocator.attachFreeNotifier(recorder, order: 3)
        #expect(try allocator.allocate(order: 0) == 0)
        #expect(try allocator.allocate(order: 0) == 1)
        try allocator.free(frame: 1, order: 0)
        allocator.flushReuse()
        #expect(recorder.take() == [])
        try allocator.free(frame: 0, order: 0)
        allocator.flushReuse()
        #expect(recorder.take() == [10])

        #expect(try allocator.allocate(order: 0) == 0)
        #expect(isolate(allocator, 512, order: 9))
        putback(allocator, 512, order: 9)
        allocator.flushReuse()
        #expect(recorder.take() == [])
        #expect(try allocator.allocate(order: 5) == 32)
        try allocator.free(frame: 32, order: 5)
        allocator.flushReuse()
        #expect(recorder.take() == [5])

        allocator.detachFreeNotifier(recorder)
        try allocator.free(frame: 0, order: 0)
        allocator.flushReuse()
        #expect(recorder.take() == [])
        try allocator.validate()
    }
}
