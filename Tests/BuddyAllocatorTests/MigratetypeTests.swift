import BuddyAllocator
import Testing

/// A fallback scenario: two pageblocks of the given types, one request, the pageblock it must use.
struct FallbackCase: Sendable, CustomTestStringConvertible {
    var request: Migratetype
    var pageblocks: [Migratetype]
    var expectedPageblock: Int

    var testDescription: String { "\(self.request) with pageblocks \(self.pageblocks) uses \(self.expectedPageblock)" }
}

@Suite("Migratetypes: fallback, stealing, CMA, high-atomic and isolated pageblocks")
struct MigratetypeTests {
    /// Two pageblocks of 8 frames, each one block of the largest order, so nothing merges across
    /// pageblocks and each steal is easy to see.
    private func twoPageblocks(_ types: [Migratetype]) throws -> BuddyAllocator {
        let allocator = try makeAllocator(frames: 16, orderCount: 4, pageblockOrder: 3)
        for (index, type) in types.enumerated() where type != .movable {
            try allocator.setPageblockMigratetype(frame: index * 8, to: type)
        }
        try allocator.validate()
        return allocator
    }

    @Test(
        "own list first, then the kernel's fallback order",
        arguments: [
            // Unmovable falls back to reclaimable before movable.
            FallbackCase(request: .unmovable, pageblocks: [.movable, .reclaimable], expectedPageblock: 1),
            FallbackCase(request: .unmovable, pageblocks: [.reclaimable, .movable], expectedPageblock: 0),
            // Movable falls back to reclaimable before unmovable.
            FallbackCase(request: .movable, pageblocks: [.unmovable, .reclaimable], expectedPageblock: 1),
            FallbackCase(request: .movable, pageblocks: [.reclaimable, .unmovable], expectedPageblock: 0),
            // Reclaimable falls back to unmovable before movable.
            FallbackCase(request: .reclaimable, pageblocks: [.movable, .unmovable], expectedPageblock: 1),
            FallbackCase(request: .reclaimable, pageblocks: [.unmovable, .movable], expectedPageblock: 0),
            // Its own type always wins.
            FallbackCase(request: .unmovable, pageblocks: [.reclaimable, .unmovable], expectedPageblock: 1),
            FallbackCase(request: .movable, pageblocks: [.movable, .reclaimable], expectedPageblock: 0),
            FallbackCase(request: .reclaimable, pageblocks: [.reclaimable, .unmovable], expectedPageblock: 0),
            // With only the second choice there, it is used.
            FallbackCase(request: .unmovable, pageblocks: [.movable, .movable], expectedPageblock: 1),
        ]
    )
    func fallbackOrder(scenario: FallbackCase) throws {
        let allocator = try self.twoPageblocks(scenario.pageblocks)
        let frame = try allocator.allocate(order: 0, migratetype: scenario.request)
        #expect(frame / 8 == scenario.expectedPageblock)
        // Stealing a whole largest-order block claims its pageblock; the other is untouched.
        #expect(allocator.frameInfo(frame)?.pageblockMigratetype == scenario.request)
        let other = 1 - scenario.expectedPageblock
        let untouched = scenario.pageblocks[other]
        #expect(allocator.frameInfo(other * 8)?.pageblockMigratetype == untouched)
        #expect(allocator.frameInfo(other * 8)?.migratetype == untouched)
        // The rest of the split block is on the request's lists.
        #expect(allocator.frameInfo(frame + 4)?.state == .free)
        #expect(allocator.frameInfo(frame + 4)?.migratetype == scenario.request)
        #expect(allocator.frameInfo(frame)?.migratetype == scenario.request)
        try allocator.validate()
    }

    @Test("stealing a block larger than a pageblock claims every pageblock it spans")
    func largeStealClaimsAllPageblocks() throws {
        let allocator = try makeAllocator(frames: 2048)
        let frame = try allocator.allocate(order: 0, migratetype: .unmovable)
        let stolen = frame & ~1023
        #expect(allocator.frameInfo(stolen)?.pageblockMigratetype == .unmovable)
        #expect(allocator.frameInfo(stolen + 512)?.pageblockMigratetype == .unmovable)
        let other = stolen ^ 1024
        #expect(allocator.frameInfo(other)?.pageblockMigratetype == .movable)
        #expect(allocator.frameInfo(other + 512)?.pageblockMigratetype == .movable)
        // Later unmovable requests are served from the claimed block, not by stealing again.
        for _ in 0..<100 {
            #expect(try allocator.allocate(order: 0, migratetype: .unmovable) & ~1023 == stolen)
        }
        #expect(allocator.frameInfo(other)?.migratetype == .movable)
        try allocator.validate()
    }

    /// 32 frames in two 16-frame pageblocks, all allocated as movable order-0 pages, then
    /// `free` frames freed again.
    private func fragmented(free: [Int]) throws -> BuddyAllocator {
        let allocator = try makeAllocator(frames: 32, orderCount: 5, pageblockOrder: 4)
        for _ in 0..<32 { _ = try allocator.allocate(order: 0) }
        for frame in free { try allocator.free(frame: frame, order: 0) }
        try allocator.validate()
        return allocator
    }

    @Test("a small unmovable steal claims the pageblock when at least half of it is free")
    func smallStealClaimsMostlyFreePageblock() throws {
        let allocator = try self.fragmented(free: Array(0..<10))
        #expect(allocator.frameInfo(0)?.order == 3)
        #expect(allocator.frameInfo(8)?.order == 1)
        // 10 of 16 frames are free: the whole pageblock becomes unmovable and its free blocks
        // move; the allocation then takes the smallest fitting block.
        #expect(try allocator.allocate(order: 0, migratetype: .unmovable) == 8)
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .unmovable)
        #expect(allocator.frameInfo(0)?.migratetype == .unmovable)
        #expect(allocator.frameInfo(9)?.migratetype == .unmovable)
        #expect(allocator.frameInfo(16)?.pageblockMigratetype == .movable)
        try allocator.validate()
    }

    @Test("a small unmovable steal moves the free blocks but keeps a mostly used pageblock's type")
    func smallStealKeepsMostlyUsedPageblock() throws {
        let allocator = try self.fragmented(free: [0, 1, 2, 3, 8])
        #expect(try allocator.allocate(order: 0, migratetype: .unmovable) == 8)
        // Only 5 of 16 frames were free and the rest are movable: not claimed.
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .movable)
        #expect(allocator.frameInfo(0)?.migratetype == .unmovable)
        #expect(allocator.frameInfo(0)?.order == 2)
        // The next unmovable request finds the moved block on its own list.
        #expect(try allocator.allocate(order: 0, migratetype: .unmovable) == 0)
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .movable)
        try allocator.validate()
    }

    @Test("a small movable steal takes the smallest block and leaves the pageblock alone")
    func smallMovableStealTakesSmallest() throws {
        let allocator = try makeAllocator(frames: 32, orderCount: 5, pageblockOrder: 4)
        try allocator.setPageblockMigratetype(frame: 0, to: .unmovable)
        #expect(try allocator.allocate(order: 4) == 16)
        for expected in 0..<16 {
            #expect(try allocator.allocate(order: 0, migratetype: .unmovable) == expected)
        }
        try allocator.free(frame: 5, order: 0)
        try allocator.free(frame: 8, order: 0)
        try allocator.free(frame: 9, order: 0)
        #expect(allocator.frameInfo(8)?.order == 1)

        // Movable lists are empty; order 1 is the largest unmovable block, too small to claim a
        // pageblock, so the smallest one (order 0, frame 5) is taken instead.
        #expect(try allocator.allocate(order: 0, migratetype: .movable) == 5)
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .unmovable)
        #expect(allocator.frameInfo(8)?.state == .free)
        #expect(allocator.frameInfo(8)?.migratetype == .unmovable)

        // Now only the order-1 block is left: it moves to the movable list and is split there.
        #expect(try allocator.allocate(order: 0, migratetype: .movable) == 8)
        #expect(allocator.frameInfo(9)?.state == .free)
        #expect(allocator.frameInfo(9)?.migratetype == .movable)
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .unmovable)
        try allocator.validate()
    }

    // MARK: CMA

    private func withCMA() throws -> BuddyAllocator {
        let allocator = try makeAllocator(frames: 32, orderCount: 5, pageblockOrder: 4)
        try allocator.setPageblockMigratetype(frame: 16, to: .cma)
        return allocator
    }

    @Test("setting a pageblock to CMA moves its free pages to the CMA lists")
    func cmaPageblock() throws {
        let allocator = try self.withCMA()
        let statistics = allocator.statistics
        #expect(statistics.freePages == 32)
        #expect(statistics.zones[0].freeCMAPages == 16)
        #expect(allocator.frameInfo(16)?.migratetype == .cma)
        #expect(allocator.frameInfo(16)?.pageblockMigratetype == .cma)
        #expect(allocator.frameInfo(0)?.migratetype == .movable)
        try allocator.validate()

        // And back: the pages return to the movable lists.
        try allocator.setPageblockMigratetype(frame: 20, to: .movable)
        #expect(allocator.statistics.zones[0].freeCMAPages == 0)
        #expect(allocator.frameInfo(16)?.migratetype == .movable)
        try allocator.validate()
    }

    @Test("movable allocations use CMA once their own lists are empty")
    func cmaUsedByMovable() throws {
        let allocator = try self.withCMA()
        #expect(try allocator.allocate(order: 4) == 0)
        let frame = try allocator.allocate(order: 0, migratetype: .movable)
        #expect((16..<32).contains(frame))
        #expect(allocator.statistics.zones[0].freeCMAPages == 15)
        #expect(allocator.frameInfo(frame)?.pageblockMigratetype == .cma)
        // Freeing returns the page to the CMA lists.
        try allocator.free(frame: frame, order: 0)
        #expect(allocator.statistics.zones[0].freeCMAPages == 16)
        #expect(allocator.frameInfo(16)?.order == 4)
        #expect(allocator.frameInfo(16)?.migratetype == .cma)
        try allocator.validate()
    }

    @Test("unmovable and reclaimable allocations never use CMA")
    func cmaNotUsedByUnmovable() throws {
        let allocator = try self.withCMA()
        #expect(try allocator.allocate(order: 4, migratetype: .movable) == 0)
        expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 0, migratetype: .unmovable) }
        expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 0, migratetype: .reclaimable) }
        #expect(allocator.statistics.freePages == 16)
        #expect(allocator.frameInfo(16)?.pageblockMigratetype == .cma)
    }

    @Test("movable allocations prefer CMA once more than half the free memory is CMA")
    func cmaBalance() throws {
        let allocator = try self.withCMA()
        // 16 CMA pages of 32 free is not more than half: the movable list is used.
        let first = try allocator.allocate(order: 0, migratetype: .movable)
        #expect(first < 16)
        try allocator.free(frame: first, order: 0)
        // An unmovable page makes it 16 of 31: now CMA goes first.
        #expect(try allocator.allocate(order: 0, migratetype: .unmovable) < 16)
        #expect((16..<32).contains(try allocator.allocate(order: 0, migratetype: .movable)))
        try allocator.validate()
    }

    @Test("a CMA pageblock does not merge with its neighbour (kernel migratetype_is_mergeable)")
    func cmaDoesNotMergeAcrossPageblocks() throws {
        let allocator = try makeAllocator(frames: 1024)
        try allocator.setPageblockMigratetype(frame: 0, to: .cma)
        // Only the CMA pageblock's 512 pages are CMA; the other half stays usable by anyone.
        #expect(allocator.statistics.zones[0].freeCMAPages == 512)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0])
        #expect(allocator.frameInfo(512)?.migratetype == .movable)
        try allocator.validate()
        #expect(try allocator.allocate(order: 9, migratetype: .unmovable) == 512)
        try allocator.free(frame: 512, order: 9)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0])
        try allocator.validate()
        // Undone, the halves merge again.
        try allocator.setPageblockMigratetype(frame: 0, to: .movable)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        try allocator.validate()
    }

    // MARK: High-atomic reserves

    @Test("high-atomic pageblocks are counted free but never handed to ordinary allocations")
    func highAtomicNotClaimed() throws {
        let allocator = try makeAllocator(frames: 32, orderCount: 5, pageblockOrder: 4)
        try allocator.setPageblockMigratetype(frame: 0, to: .highAtomic)
        #expect(allocator.frameInfo(0)?.migratetype == .highAtomic)
        #expect(allocator.statistics.freePages == 32)
        for _ in 0..<16 {
            #expect(try allocator.allocate(order: 0, migratetype: .movable) >= 16)
        }
        for migratetype in [Migratetype.unmovable, .movable, .reclaimable] {
            expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 0, migratetype: migratetype) }
        }
        #expect(allocator.statistics.freePages == 16)
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .highAtomic)
    }

    @Test("a high-atomic pageblock keeps its type and its own lists next to a movable one")
    func highAtomicDoesNotMergeAcrossPageblocks() throws {
        let allocator = try makeAllocator(frames: 1024)
        try allocator.setPageblockMigratetype(frame: 0, to: .highAtomic)
        #expect(try allocator.allocate(order: 9) == 512)
        expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 0) }
        try allocator.free(frame: 512, order: 9)
        #expect(allocator.frameInfo(0)?.migratetype == .highAtomic)
        #expect(allocator.frameInfo(512)?.migratetype == .movable)
        try allocator.validate()
    }

    @Test("a free block on an ordinary list inside a high-atomic pageblock is taken without claiming it")
    func highAtomicPageblockNotStolen() throws {
        let allocator = try makeAllocator(frames: 48, orderCount: 5, pageblockOrder: 4)
        try allocator.setPageblockMigratetype(frame: 0, to: .highAtomic)
        #expect(try allocator.allocate(order: 4) == 32)
        #expect(isolate(allocator, 0, order: 4))
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .highAtomic)
        allocator.zone(containing: 0).withLock { zone in
            zone.putbackIsolatedBlock(0, order: 4, migratetype: .movable, toTail: false)
        }
        #expect(allocator.frameInfo(0)?.migratetype == .movable)
        #expect(try allocator.allocate(order: 0, migratetype: .unmovable) == 0)
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .highAtomic)
        try allocator.validate()
    }

    @Test("isolating a block of half a pageblock or more makes its pageblock movable, except reserves")
    func isolationResetsPageblockType() throws {
        // A fifth, movable pageblock keeps enough free memory for every isolation to pass the
        // min watermark check.
        let allocator = try makeAllocator(frames: 80, orderCount: 5, pageblockOrder: 4)
        try allocator.setPageblockMigratetype(frame: 0, to: .unmovable)
        try allocator.setPageblockMigratetype(frame: 16, to: .reclaimable)
        try allocator.setPageblockMigratetype(frame: 32, to: .cma)
        try allocator.setPageblockMigratetype(frame: 48, to: .highAtomic)
        for frame in [0, 16, 32, 48] { #expect(isolate(allocator, frame, order: 4)) }
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .movable)
        #expect(allocator.frameInfo(16)?.pageblockMigratetype == .movable)
        #expect(allocator.frameInfo(32)?.pageblockMigratetype == .cma)
        #expect(allocator.frameInfo(48)?.pageblockMigratetype == .highAtomic)
        for frame in [0, 16, 32, 48] { putback(allocator, frame, order: 4) }
        try allocator.validate()

        // Below half a pageblock, the type stays.
        try allocator.setPageblockMigratetype(frame: 0, to: .unmovable)
        #expect(try allocator.allocate(order: 2, migratetype: .unmovable) == 0)
        #expect(allocator.frameInfo(4)?.order == 2)
        #expect(isolate(allocator, 4, order: 2))
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .unmovable)
        putback(allocator, 4, order: 2)
        try allocator.validate()
    }

    // MARK: Isolated pageblocks

    /// 64 frames, pageblocks of 8, blocks up to 16: blocks span two pageblocks.
    private func isolationFixture() throws -> BuddyAllocator {
        try makeAllocator(frames: 64, orderCount: 5, pageblockOrder: 3)
    }

    @Test("isolating a pageblock moves its free pages to the isolate lists, out of use and out of freePages")
    func isolatePageblockMovesFreePages() throws {
        let allocator = try self.isolationFixture()
        try allocator.isolatePageblock(frame: 12)
        let info = try #require(allocator.frameInfo(8))
        #expect(info.state == .free)
        #expect(info.order == 3)
        #expect(info.migratetype == .isolate)
        #expect(info.pageblockMigratetype == .isolate)
        #expect(allocator.frameInfo(0)?.order == 3)
        #expect(allocator.frameInfo(0)?.migratetype == .movable)
        #expect(nrFree(allocator) == [0, 0, 0, 2, 3])
        #expect(allocator.statistics.freePages == 56)
        try allocator.validate()

        var frames: [Int] = []
        while let frame = try? allocator.allocate(order: 0, migratetype: .unmovable) { frames.append(frame) }
        #expect(frames.count == 56)
        #expect(frames.allSatisfy { !(8..<16).contains($0) })
        #expect(allocator.statistics.freePages == 0)
        try allocator.validate()

        for frame in frames { try allocator.free(frame: frame, order: 0) }
        #expect(nrFree(allocator) == [0, 0, 0, 2, 3])
        try allocator.undoIsolatePageblock(frame: 8)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 4])
        #expect(allocator.statistics.freePages == 64)
        #expect(allocator.frameInfo(8)?.pageblockMigratetype == .movable)
        try allocator.validate()
    }

    @Test("frees into an isolated pageblock stay there and do not merge with normal pageblocks")
    func freesIntoIsolatedPageblock() throws {
        let allocator = try self.isolationFixture()
        for _ in 0..<64 { _ = try allocator.allocate(order: 0) }
        try allocator.isolatePageblock(frame: 8)
        for frame in 8..<16 { try allocator.free(frame: frame, order: 0) }
        // The frees merged with each other inside the pageblock, on the isolate lists.
        #expect(allocator.frameInfo(8)?.order == 3)
        #expect(allocator.frameInfo(8)?.migratetype == .isolate)
        #expect(allocator.statistics.freePages == 0)
        for frame in 0..<8 { try allocator.free(frame: frame, order: 0) }
        // 0..<8 is a free order-3 buddy of 8..<16, but they stay apart.
        #expect(allocator.frameInfo(0)?.order == 3)
        #expect(allocator.frameInfo(0)?.migratetype == .movable)
        #expect(allocator.frameInfo(8)?.state == .free)
        #expect(nrFree(allocator) == [0, 0, 0, 2, 0])
        #expect(allocator.statistics.freePages == 8)
        try allocator.validate()
        expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 4) }

        try allocator.undoIsolatePageblock(frame: 15)
        #expect(allocator.frameInfo(0)?.order == 4)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 1])
        #expect(allocator.statistics.freePages == 16)
        try allocator.validate()
        #expect(try allocator.allocate(order: 4) == 0)
    }

    @Test("undo can return the pageblock as another migratetype")
    func undoToOtherMigratetype() throws {
        let allocator = try makeAllocator(frames: 32, orderCount: 5, pageblockOrder: 4)
        try allocator.isolatePageblock(frame: 0)
        try allocator.undoIsolatePageblock(frame: 0, to: .reclaimable)
        #expect(allocator.frameInfo(0)?.pageblockMigratetype == .reclaimable)
        #expect(allocator.frameInfo(0)?.migratetype == .reclaimable)
        #expect(try allocator.allocate(order: 0, migratetype: .reclaimable) == 0)
        try allocator.validate()
    }

    @Test("isolating the partial last pageblock of a zone takes all its free pages out of use")
    func isolatePartialPageblock() throws {
        let allocator = try makeAllocator(frames: 1000)
        let first = try allocator.allocate(order: 0)
        #expect(first == 992)
        try allocator.isolatePageblock(frame: 600)
        #expect(allocator.frameInfo(512)?.migratetype == .isolate)
        #expect(allocator.frameInfo(993)?.migratetype == .isolate)
        #expect(allocator.statistics.freePages == 512)
        try allocator.validate()
        try allocator.free(frame: first, order: 0)
        #expect(allocator.statistics.freePages == 512)
        var frames: [Int] = []
        while let frame = try? allocator.allocate(order: 0) { frames.append(frame) }
        #expect(frames.count == 512)
        #expect(frames.allSatisfy { $0 < 512 })
        try allocator.validate()

        try allocator.undoIsolatePageblock(frame: 999)
        try allocator.validate()
        for frame in frames { try allocator.free(frame: frame, order: 0) }
        #expect(nrFree(allocator) == bootNrFree(zone: 0..<1000, orderCount: 11))
        #expect(allocator.statistics.freePages == 1000)
        try allocator.validate()
    }

    @Test("isolating a pageblock inside a larger free block splits it first")
    func isolateSplitsLargerBlock() throws {
        let allocator = try makeAllocator(frames: 2048)
        try allocator.isolatePageblock(frame: 1536)
        #expect(allocator.frameInfo(1024)?.order == 9)
        #expect(allocator.frameInfo(1024)?.migratetype == .movable)
        #expect(allocator.frameInfo(1536)?.order == 9)
        #expect(allocator.frameInfo(1536)?.migratetype == .isolate)
        #expect(allocator.frameInfo(0)?.order == 10)
        #expect(allocator.statistics.freePages == 1536)
        try allocator.validate()
        try allocator.undoIsolatePageblock(frame: 1536)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
        try allocator.validate()
    }

    @Test("neighbouring isolated pageblocks merge; undoing one takes back only its own pages")
    func neighbouringIsolatedPageblocks() throws {
        let allocator = try makeAllocator(frames: 1024)
        try allocator.isolatePageblock(frame: 0)
        try allocator.isolatePageblock(frame: 512)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        #expect(allocator.frameInfo(0)?.migratetype == .isolate)
        #expect(allocator.statistics.freePages == 0)
        try allocator.validate()

        try allocator.undoIsolatePageblock(frame: 0)
        #expect(allocator.statistics.freePages == 512)
        #expect(allocator.frameInfo(0)?.migratetype == .movable)
        #expect(allocator.frameInfo(512)?.migratetype == .isolate)
        try allocator.validate()
        #expect(try allocator.allocate(order: 9) == 0)
        expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 0) }
        try allocator.free(frame: 0, order: 9)
        try allocator.undoIsolatePageblock(frame: 512)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        try allocator.validate()
    }

    @Test("a block freed across an isolated pageblock is freed pageblock by pageblock")
    func freeAcrossIsolatedPageblock() throws {
        let allocator = try makeAllocator(frames: 1024)
        #expect(try allocator.allocate(order: 10) == 0)
        try allocator.isolatePageblock(frame: 512)
        try allocator.free(frame: 0, order: 10)
        #expect(allocator.frameInfo(0)?.order == 9)
        #expect(allocator.frameInfo(0)?.migratetype == .movable)
        #expect(allocator.frameInfo(512)?.order == 9)
        #expect(allocator.frameInfo(512)?.migratetype == .isolate)
        #expect(allocator.statistics.freePages == 512)
        try allocator.validate()
        #expect(try allocator.allocate(order: 9) == 0)
        expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 0) }
    }

    @Test("a block put back across an isolated pageblock is put back pageblock by pageblock")
    func putbackAcrossIsolatedPageblock() throws {
        let allocator = try makeAllocator(frames: 2048)
        #expect(isolate(allocator, 0, order: 10))
        try allocator.isolatePageblock(frame: 512)
        putback(allocator, 0, order: 10)
        #expect(allocator.frameInfo(0)?.migratetype == .movable)
        #expect(allocator.frameInfo(512)?.migratetype == .isolate)
        #expect(allocator.statistics.freePages == 1536)
        try allocator.validate()
        try allocator.undoIsolatePageblock(frame: 512)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
        try allocator.validate()
    }
}
