import BuddyAllocator
import Testing

@Suite("Allocation: boot layout, split, merge, zones, counters")
struct AllocationTests {
    @Test("4 MiB boots as one free order-10 block of movable pageblocks")
    func bootLayoutFourMiB() throws {
        let allocator = try BuddyAllocator(AllocatorConfiguration(memoryBytes: 4 << 20))
        let statistics = allocator.statistics
        #expect(statistics.totalPages == 1024)
        #expect(statistics.pageSize == 4096)
        #expect(statistics.freePages == 1024)
        #expect(statistics.allocatedPages == 0)
        #expect(statistics.isolatedPages == 0)
        #expect(statistics.discardedPages == 0)
        #expect(statistics.zones.count == 1)
        #expect(statistics.zones[0].nrFree == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        #expect(statistics.zones[0].freeCMAPages == 0)

        let head = try #require(allocator.frameInfo(0))
        #expect(head.state == .free)
        #expect(head.order == 10)
        #expect(head.migratetype == .movable)
        #expect(head.pageblockMigratetype == .movable)
        #expect(!head.isReported)
        #expect(!head.isDiscarded)
        for frame in 1..<1024 {
            let info = try #require(allocator.frameInfo(frame))
            #expect(info.state == .inBlock)
            #expect(info.order == nil)
            #expect(info.pageblockMigratetype == .movable)
        }
        #expect(allocator.frameInfo(-1) == nil)
        #expect(allocator.frameInfo(1024) == nil)
        try allocator.validate()
    }

    @Test("odd-sized memory boots as the largest aligned blocks that fit")
    func bootLayoutOddSizes() throws {
        // 1000 = 512 + 256 + 128 + 64 + 32 + 8.
        let thousand = try makeAllocator(frames: 1000)
        #expect(nrFree(thousand) == [0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0])
        for (frame, order) in [(0, 9), (512, 8), (768, 7), (896, 6), (960, 5), (992, 3)] {
            let info = try #require(thousand.frameInfo(frame))
            #expect(info.state == .free, "frame \(frame)")
            #expect(info.order == order, "frame \(frame)")
        }
        #expect(thousand.statistics.freePages == 1000)
        try thousand.validate()

        // 3000 = 2 * 1024 + 512 + 256 + 128 + 32 + 16 + 8: orders above 10 do not exist.
        let threeThousand = try makeAllocator(frames: 3000)
        #expect(nrFree(threeThousand) == [0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 2])
        try threeThousand.validate()
    }

    @Test("boot layout matches the largest-aligned-blocks rule", arguments: [1, 2, 3, 7, 513, 1023, 4097, 12_345])
    func bootLayoutMatchesRule(frames: Int) throws {
        let allocator = try makeAllocator(frames: frames)
        #expect(nrFree(allocator) == bootNrFree(zone: 0..<frames, orderCount: 11))
        for (frame, order) in bootBlocks(zone: 0..<frames, orderCount: 11) {
            #expect(allocator.frameInfo(frame)?.order == order)
            #expect(allocator.frameInfo(frame)?.state == .free)
        }
        #expect(allocator.statistics.freePages == frames)
        try allocator.validate()
    }

    @Test("zones are laid out independently; no block crosses a zone boundary")
    func bootLayoutZones() throws {
        let zones = [ZoneLayout(name: "DMA", frames: 0..<1536), ZoneLayout(name: "Normal", frames: 1536..<5000)]
        let allocator = try makeAllocator(frames: 5000, zones: zones)
        let statistics = allocator.statistics
        #expect(statistics.zones.map(\.name) == ["DMA", "Normal"])
        #expect(statistics.zones.map(\.frames) == [0..<1536, 1536..<5000])
        #expect(statistics.zones[0].nrFree == bootNrFree(zone: 0..<1536, orderCount: 11))
        #expect(statistics.zones[1].nrFree == bootNrFree(zone: 1536..<5000, orderCount: 11))
        // 1536 is only 512-aligned, so Normal starts with an order-9 block even though DMA ends there.
        #expect(allocator.frameInfo(1024)?.order == 9)
        #expect(allocator.frameInfo(1536)?.order == 9)
        #expect(statistics.zones.map(\.freePages) == [1536, 3464])
        #expect(allocator.zone(containing: 1535).name == "DMA")
        #expect(allocator.zone(containing: 1536).name == "Normal")
        #expect(allocator.zones.map(\.index) == [0, 1])
        try allocator.validate()
    }

    @Test("allocation splits the smallest block and puts each upper half on the next lower list")
    func splitOnAllocate() throws {
        let allocator = try makeAllocator(frames: 1024)
        let frame = try allocator.allocate(order: 0)
        #expect(frame == 0)
        // The order-10 block is split: 512 (order 9), 256 (8), ..., 2 (1), 1 (0) remain free.
        #expect(nrFree(allocator) == [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
        for order in 0..<10 {
            let info = try #require(allocator.frameInfo(1 << order))
            #expect(info.state == .free)
            #expect(info.order == order)
            #expect(info.migratetype == .movable)
        }
        let allocated = try #require(allocator.frameInfo(0))
        #expect(allocated.state == .allocated)
        #expect(allocated.order == 0)
        #expect(allocated.migratetype == .movable)

        // An order-3 request takes the order-3 block exactly; nothing else changes.
        #expect(try allocator.allocate(order: 3) == 8)
        #expect(nrFree(allocator) == [1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0])
        // An order-2 request when its list holds one block takes that one.
        #expect(try allocator.allocate(order: 2) == 4)
        // The next order-2 request must split the order-4 block at 16: 20 (2) and 24 (3) remain.
        #expect(try allocator.allocate(order: 2) == 16)
        #expect(nrFree(allocator) == [1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0])
        #expect(allocator.frameInfo(20)?.order == 2)
        #expect(allocator.frameInfo(24)?.order == 3)
        try allocator.validate()
    }

    @Test("order-0 allocations from a fresh block come in ascending frame order")
    func ascendingOrderZero() throws {
        let allocator = try makeAllocator(frames: 1024)
        for expected in 0..<1024 {
            #expect(try allocator.allocate(order: 0) == expected)
        }
        #expect(nrFree(allocator) == [Int](repeating: 0, count: 11))
        try allocator.validate()
    }

    @Test("freeing merges with free buddies back to the boot layout")
    func mergeOnFree() throws {
        let allocator = try makeAllocator(frames: 1024)
        let first = try allocator.allocate(order: 0)
        let second = try allocator.allocate(order: 3)
        #expect((first, second) == (0, 8))

        try allocator.free(frame: first, order: 0)
        // 0 merges with 1, 2 and 4 up to order 3, then stops: its order-3 buddy 8 is allocated.
        #expect(nrFree(allocator) == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0])
        #expect(allocator.frameInfo(0)?.order == 3)
        #expect(allocator.frameInfo(0)?.state == .free)
        #expect(allocator.frameInfo(1)?.state == .inBlock)
        #expect(allocator.frameInfo(4)?.state == .inBlock)

        try allocator.free(frame: second, order: 3)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        #expect(allocator.frameInfo(0)?.order == 10)
        #expect(allocator.statistics.freePages == 1024)
        #expect(allocator.statistics.allocatedPages == 0)
        try allocator.validate()
    }

    @Test("freeing every order-0 frame in any order restores the boot layout")
    func mergeAllInScrambledOrder() throws {
        let allocator = try makeAllocator(frames: 1000)
        var frames: [Int] = []
        while let frame = try? allocator.allocate(order: 0) { frames.append(frame) }
        #expect(frames.count == 1000)
        #expect(Set(frames).count == 1000)
        var generator = SplitMix64(seed: 7)
        frames.shuffle(using: &generator)
        for frame in frames { try allocator.free(frame: frame, order: 0) }
        #expect(nrFree(allocator) == bootNrFree(zone: 0..<1000, orderCount: 11))
        try allocator.validate()
    }

    @Test("a block never merges past the largest order")
    func mergeStopsAtLargestOrder() throws {
        let allocator = try makeAllocator(frames: 64, orderCount: 4, pageblockOrder: 3)
        #expect(nrFree(allocator) == [0, 0, 0, 8])
        let first = try allocator.allocate(order: 3)
        let second = try allocator.allocate(order: 3)
        try allocator.free(frame: first, order: 3)
        try allocator.free(frame: second, order: 3)
        #expect(nrFree(allocator) == [0, 0, 0, 8])
        try allocator.validate()
    }

    @Test("zones are used from the last to the first")
    func zonesLastToFirst() throws {
        let zones = [ZoneLayout(name: "DMA", frames: 0..<1024), ZoneLayout(name: "Normal", frames: 1024..<2048)]
        let allocator = try makeAllocator(frames: 2048, zones: zones)
        let small = try allocator.allocate(order: 0)
        #expect(small == 1024)
        // Normal has no order-10 block left, so this one comes from DMA.
        #expect(try allocator.allocate(order: 10) == 0)
        #expect(allocator.statistics.zones.map(\.allocatedPages) == [1024, 1])
        // Everything else in Normal is handed out before DMA would be (DMA is full now anyway).
        for _ in 0..<1023 {
            #expect(try allocator.allocate(order: 0) >= 1024)
        }
        expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 0) }
        try allocator.free(frame: 0, order: 10)
        #expect(try allocator.allocate(order: 0) == 0)
        try allocator.validate()
    }

    @Test("out of memory throws outOfMemory with the order and changes nothing")
    func outOfMemory() throws {
        let allocator = try makeAllocator(frames: 1024)
        #expect(try allocator.allocate(order: 10) == 0)
        let error = expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 0) }
        #expect(error?.order == 0)
        try allocator.free(frame: 0, order: 10)

        // Fragmented: half the memory is free, but not one order-1 block.
        var frames: [Int] = []
        for _ in 0..<1024 { frames.append(try allocator.allocate(order: 0)) }
        for frame in frames where frame % 2 == 0 { try allocator.free(frame: frame, order: 0) }
        #expect(allocator.statistics.freePages == 512)
        #expect(nrFree(allocator)[0] == 512)
        expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 1, migratetype: .unmovable) }
        expectRefused(allocator, .outOfMemory) { _ = try allocator.allocate(order: 10) }
        #expect(try allocator.allocate(order: 0) % 2 == 0)
    }

    @Test("allocation is not held back by the watermarks (no reclaim to wait for)")
    func allocationIgnoresWatermarks() throws {
        let allocator = try makeAllocator(frames: 1024, watermarks: .fixed(Watermarks(min: 512, low: 600, high: 700)))
        for _ in 0..<1024 { _ = try allocator.allocate(order: 0) }
        #expect(allocator.statistics.freePages == 0)
        try allocator.validate()
    }

    @Test("allocatedPages and freePages follow every allocation and free")
    func counters() throws {
        let zones = [ZoneLayout(name: "DMA", frames: 0..<512), ZoneLayout(name: "Normal", frames: 512..<3000)]
        let allocator = try makeAllocator(frames: 3000, zones: zones)
        var blocks: [(frame: Int, order: Int)] = []
        var allocated = 0
        for order in [0, 3, 10, 1, 9, 2, 0, 5, 8] {
            let frame = try allocator.allocate(order: order)
            blocks.append((frame, order))
            allocated += 1 << order
            let statistics = allocator.statistics
            #expect(statistics.allocatedPages == allocated)
            #expect(statistics.freePages == 3000 - allocated)
            #expect(statistics.zones.map(\.allocatedPages).reduce(0, +) == allocated)
            #expect(statistics.zones.map(\.freePages).reduce(0, +) == 3000 - allocated)
            let perZoneFree = statistics.zones.map { zone in
                zone.nrFree.enumerated().map { $0.element << $0.offset }.reduce(0, +)
            }
            #expect(perZoneFree == statistics.zones.map(\.freePages))
        }
        for block in blocks.reversed() {
            try allocator.free(frame: block.frame, order: block.order)
            allocated -= 1 << block.order
            #expect(allocator.statistics.allocatedPages == allocated)
            #expect(allocator.statistics.freePages == 3000 - allocated)
        }
        #expect(nrFree(allocator, zone: 0) == bootNrFree(zone: 0..<512, orderCount: 11))
        #expect(nrFree(allocator, zone: 1) == bootNrFree(zone: 512..<3000, orderCount: 11))
        try allocator.validate()
    }

    @Test("allocated blocks record the requested migratetype")
    func allocatedMigratetype() throws {
        let allocator = try makeAllocator(frames: 4096)
        for migratetype in [Migratetype.unmovable, .movable, .reclaimable] {
            let frame = try allocator.allocate(order: 2, migratetype: migratetype)
            #expect(allocator.frameInfo(frame)?.migratetype == migratetype)
            #expect(allocator.frameInfo(frame)?.state == .allocated)
            #expect(allocator.frameInfo(frame + 1)?.state == .inBlock)
        }
        try allocator.validate()
    }

    @Test("metadata stays within 12 bytes per frame")
    func metadataPerFrame() {
        #expect(BuddyAllocator.metadataBytesPerFrame > 0)
        #expect(BuddyAllocator.metadataBytesPerFrame <= 12)
    }

    @Test("the configuration is kept as given")
    func configurationKept() throws {
        let configuration = AllocatorConfiguration(frameCount: 2048, pageSize: 16_384, orderCount: 8, pageblockOrder: 5)
        let allocator = try BuddyAllocator(configuration)
        #expect(allocator.configuration == configuration)
        #expect(allocator.statistics.pageSize == 16_384)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 16])
        #expect(AllocatorConfiguration(memoryBytes: 1 << 30).frameCount == 262_144)
        #expect(AllocatorConfiguration(memoryBytes: 1 << 30, pageSize: 65_536).frameCount == 16_384)
    }
}
