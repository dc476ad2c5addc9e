import Testing

@testable import BuddyAllocator

@Suite struct LateDiscardTests {
    @Test func marksFreeFramesOfIsolatedPageblocksOnly() throws {
        let allocator = try BuddyAllocator(AllocatorConfiguration(memoryBytes: 64 << 20))
        let order = allocator.configuration.pageblockOrder
        let pageblock = 1 << order
        #expect(throws: BuddyError.self) { try allocator.markDiscardedInIsolatedPageblocks(frames: 0..<8) }
        #expect(allocator.statistics.discardedPages == 0)
        try allocator.isolatePageblock(frame: pageblock)
        #expect(try allocator.markDiscardedInIsolatedPageblocks(frames: pageblock..<(pageblock + 8)) == 8)
        #expect(try allocator.markDiscardedInIsolatedPageblocks(frames: pageblock..<(pageblock + 16)) == 8)
        #expect(allocator.statistics.discardedPages == 16)
        #expect(allocator.frameInfo(pageblock + 3)?.isDiscarded == true)
        // Reaching into a pageblock that is not isolated marks nothing.
        #expect(throws: BuddyError.self) {
            try allocator.markDiscardedInIsolatedPageblocks(frames: (pageblock + 16)..<(2 * pageblock + 1))
        }
        #expect(allocator.statistics.discardedPages == 16)
        try allocator.undoIsolatePageblock(frame: pageblock)
        try allocator.validate()
        #expect(allocator.discardedRanges() == [pageblock..<(pageblock + 16)])
    }
}
