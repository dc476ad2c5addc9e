import BuddyAllocator
import Testing

@Suite("Watermarks, zone_watermark_ok, isolate and putback, list rotation")
struct WatermarkTests {
    private func watermarks(_ allocator: BuddyAllocator) -> [Watermarks] {
        allocator.statistics.zones.map(\.watermarks)
    }

    @Test("kernel defaults for 4 GiB of 4 KiB pages: min_free_kbytes 8192")
    func kernelDefaultFourGiB() throws {
        // min_free_kbytes = sqrt(4 GiB in KiB * 16) = 8192 KiB = 2048 pages; the step is
        // max(2048 / 4, 1048576 * 10 / 10000) = 1048.
        let allocator = try BuddyAllocator(AllocatorConfiguration(memoryBytes: 4 << 30))
        #expect(self.watermarks(allocator) == [Watermarks(min: 2048, low: 3096, high: 4144)])
    }

    @Test("kernel defaults are shared between zones by size")
    func kernelDefaultTwoZones() throws {
        let frames = 1 << 20
        let zones = [ZoneLayout(name: "DMA", frames: 0..<4096), ZoneLayout(name: "Normal", frames: 4096..<frames)]
        let allocator = try BuddyAllocator(AllocatorConfiguration(frameCount: frames, zones: zones))
        // DMA: 2048 * 4096 / 2^20 = 8, step max(2, 4) = 4. Normal: 2048 * 1044480 / 2^20 = 2040,
        // step max(510, 1044) = 1044.
        #expect(
            self.watermarks(allocator) == [
                Watermarks(min: 8, low: 12, high: 16), Watermarks(min: 2040, low: 3084, high: 4128),
            ]
        )
    }

    @Test("kernel defaults clamp min_free_kbytes to 128 KiB ... 256 MiB")
    func kernelDefaultClamps() throws {
        // 4 MiB: sqrt(4096 * 16) = 256 KiB = 64 pages, step max(16, 1) = 16.
        let fourMiB = try BuddyAllocator(AllocatorConfiguration(memoryBytes: 4 << 20))
        #expect(self.watermarks(fourMiB) == [Watermarks(min: 64, low: 80, high: 96)])
        // 256 KiB: sqrt(256 * 16) = 64 KiB, raised to 128 KiB = 32 pages, step max(8, 0) = 8.
        let tiny = try BuddyAllocator(AllocatorConfiguration(frameCount: 64))
        #expect(self.watermarks(tiny) == [Watermarks(min: 32, low: 40, high: 48)])
        // 8 TiB in 4 MiB pages: sqrt would give 362 MiB, capped at 256 MiB = 64 pages;
        // step max(16, 2097152 * 10 / 10000) = 2097.
        let huge = try BuddyAllocator(AllocatorConfiguration(frameCount: 1 << 21, pageSize: 4 << 20))
        #expect(self.watermarks(huge) == [Watermarks(min: 64, low: 2161, high: 4258)])
        // 1 GiB in 64 KiB pages: sqrt(1 GiB in KiB * 16) = 4096 KiB = 64 pages, step 16.
        let large = try BuddyAllocator(AllocatorConfiguration(memoryBytes: 1 << 30, pageSize: 65_536))
        #expect(self.watermarks(large) == [Watermarks(min: 64, low: 80, high: 96)])
    }

    @Test("fixed and none policies")
    func fixedAndNone() throws {
        let marks = Watermarks(min: 7, low: 9, high: 11)
        let zones = [ZoneLayout(name: "DMA", frames: 0..<512), ZoneLayout(name: "Normal", frames: 512..<2048)]
        let fixed = try makeAllocator(frames: 2048, zones: zones, watermarks: .fixed(marks))
        #expect(self.watermarks(fixed) == [marks, marks])
        let none = try makeAllocator(frames: 2048, zones: zones, watermarks: .none)
        #expect(self.watermarks(none) == [Watermarks(min: 0, low: 0, high: 0), Watermarks(min: 0, low: 0, high: 0)])
        #expect(marks.description == "min 7 low 9 high 11 pages")
    }

    @Test("setWatermarks replaces one zone's watermarks")
    func setWatermarks() throws {
        let zones = [ZoneLayout(name: "DMA", frames: 0..<512), ZoneLayout(name: "Normal", frames: 512..<2048)]
        let allocator = try makeAllocator(frames: 2048, zones: zones)
        let marks = Watermarks(min: 3, low: 3, high: 100)
        try allocator.setWatermarks(marks, zone: 1)
        #expect(self.watermarks(allocator) == [Watermarks(min: 0, low: 0, high: 0), marks])
        #expect(allocator.zones[1].withLock { $0.watermarks } == marks)
        try allocator.validate()
    }

    @Test("LockedZone reports the zone's figures")
    func lockedZoneFigures() throws {
        let zones = [ZoneLayout(name: "DMA", frames: 0..<512), ZoneLayout(name: "Normal", frames: 512..<2048)]
        let allocator = try makeAllocator(frames: 2048, zones: zones)
        _ = try allocator.allocate(order: 0)
        let normal = allocator.zones[1]
        #expect(normal.name == "Normal")
        #expect(normal.frames == 512..<2048)
        normal.withLock { zone in
            #expect(zone.index == 1)
            #expect(zone.freePages == 1535)
            // Normal booted as 512 (order 9) and 1024 (order 10); the order-9 block was split.
            #expect(zone.freeBlockCount(order: 10) == 1)
            #expect(zone.freeBlockCount(order: 9) == 0)
            #expect(zone.freeBlockCount(order: 8) == 1)
            #expect(zone.freeBlockCount(order: 0) == 1)
            #expect(zone.isFreeBlock(1024, order: 10))
            #expect(zone.isFreeBlock(1024, order: 9) == false)
            #expect(zone.isFreeBlock(512, order: 0) == false)
            #expect(zone.isFreeBlock(513, order: 0))
            #expect(zone.pageblockMigratetype(of: 1024) == .movable)
            #expect(!zone.isReported(1024))
        }
        #expect(allocator.zones[0].withLock { $0.freePages } == 512)
        #expect(normal.statistics == allocator.statistics.zones[1])
    }

    @Test("zone_watermark_ok: free pages beyond the block must exceed the mark")
    func watermarkOKCounts() throws {
        let allocator = try makeAllocator(frames: 1024)
        let zone = allocator.zones[0]
        zone.withLock { zone in
            #expect(zone.watermarkOK(order: 0, mark: 1023))
            #expect(!zone.watermarkOK(order: 0, mark: 1024))
            // Order 3 discounts the 7 other pages of the block itself.
            #expect(zone.watermarkOK(order: 3, mark: 1016))
            #expect(!zone.watermarkOK(order: 3, mark: 1017))
            #expect(zone.watermarkOK(order: 10, mark: 0))
        }
        _ = try allocator.allocate(order: 0)
        zone.withLock { zone in
            // 1023 pages free but no order-10 block any more.
            #expect(!zone.watermarkOK(order: 10, mark: 0))
            #expect(zone.watermarkOK(order: 9, mark: 0))
            #expect(!zone.watermarkOK(order: 9, mark: 512))
        }
    }

    @Test("zone_watermark_ok: a high order needs a block of that order or larger")
    func watermarkOKNeedsBlock() throws {
        let allocator = try makeAllocator(frames: 1024)
        var frames: [Int] = []
        for _ in 0..<1024 { frames.append(try allocator.allocate(order: 0)) }
        for frame in frames where frame % 2 == 0 { try allocator.free(frame: frame, order: 0) }
        allocator.zones[0].withLock { zone in
            #expect(zone.freePages == 512)
            #expect(zone.watermarkOK(order: 0, mark: 511))
            #expect(!zone.watermarkOK(order: 0, mark: 512))
            #expect(!zone.watermarkOK(order: 1, mark: 0))
        }
    }

    @Test("zone_watermark_ok counts CMA blocks but not high-atomic ones", arguments: [Migratetype.cma, .highAtomic])
    func watermarkOKReserves(reserve: Migratetype) throws {
        let allocator = try makeAllocator(frames: 1024)
        try allocator.setPageblockMigratetype(frame: 0, to: reserve)
        #expect(try allocator.allocate(order: 9, migratetype: .unmovable) == 512)
        allocator.zones[0].withLock { zone in
            #expect(zone.freePages == 512)
            #expect(zone.watermarkOK(order: 0, mark: 511))
            #expect(zone.watermarkOK(order: 9, mark: 0) == (reserve == .cma))
        }
    }

    @Test("isolating is refused when free pages are at or below min + 2^order, and changes nothing")
    func isolateRespectsMin() throws {
        let allocator = try makeAllocator(frames: 1024, watermarks: .fixed(Watermarks(min: 511, low: 600, high: 700)))
        #expect(try allocator.allocate(order: 0) == 0)
        let before = allocator.statistics
        // 1023 free pages, min 511: 1023 <= 511 + 512, refused.
        #expect(!isolate(allocator, 512, order: 9))
        #expect(allocator.statistics == before)
        #expect(allocator.frameInfo(512)?.state == .free)
        // An order-8 block needs only more than 511 + 256.
        #expect(isolate(allocator, 256, order: 8))
        putback(allocator, 256, order: 8)
        #expect(allocator.statistics == before)

        try allocator.setWatermarks(Watermarks(min: 510, low: 600, high: 700), zone: 0)
        let beforeIsolation = allocator.statistics
        #expect(isolate(allocator, 512, order: 9))
        let statistics = allocator.statistics
        #expect(statistics.freePages == 511)
        #expect(statistics.isolatedPages == 512)
        #expect(statistics.allocatedPages == 1)
        #expect(statistics.zones[0].nrFree[9] == 0)
        let info = try #require(allocator.frameInfo(512))
        #expect(info.state == .isolated)
        #expect(info.order == 9)
        #expect(info.migratetype == .movable)
        try allocator.validate()

        putback(allocator, 512, order: 9)
        #expect(allocator.statistics == beforeIsolation)
        #expect(allocator.frameInfo(512)?.state == .free)
        try allocator.validate()
    }

    @Test("kernel default min watermark gates isolation")
    func isolateWithKernelDefaults() throws {
        // 4 MiB: min 64. An order-9 block needs more than 576 free pages.
        let allocator = try BuddyAllocator(AllocatorConfiguration(memoryBytes: 4 << 20))
        var frames: [Int] = []
        for _ in 0..<(1024 - 576) { frames.append(try allocator.allocate(order: 0)) }
        #expect(allocator.statistics.freePages == 576)
        #expect(allocator.frameInfo(512)?.order == 9)
        #expect(!isolate(allocator, 512, order: 9))
        try allocator.free(frame: frames.removeLast(), order: 0)
        #expect(isolate(allocator, 512, order: 9))
        putback(allocator, 512, order: 9)
        try allocator.validate()
    }

    @Test("blocks of isolated pageblocks may be isolated whatever the watermark")
    func isolateInIsolatedPageblock() throws {
        let allocator = try makeAllocator(
            frames: 1024,
            watermarks: .fixed(Watermarks(min: 1000, low: 1000, high: 1000))
        )
        #expect(try allocator.allocate(order: 0) == 0)
        try allocator.isolatePageblock(frame: 512)
        #expect(allocator.statistics.freePages == 511)
        #expect(isolate(allocator, 512, order: 9))
        #expect(allocator.statistics.freePages == 511)
        #expect(allocator.statistics.isolatedPages == 512)
        putback(allocator, 512, order: 9)
        #expect(allocator.frameInfo(512)?.migratetype == .isolate)
        try allocator.undoIsolatePageblock(frame: 512)
        #expect(allocator.statistics.freePages == 1023)
        try allocator.validate()
    }

    @Test("putback merges with free buddies")
    func putbackMerges() throws {
        let allocator = try makeAllocator(frames: 1024)
        #expect(try allocator.allocate(order: 0) == 0)
        #expect(isolate(allocator, 1, order: 0))
        try allocator.free(frame: 0, order: 0)
        // 0 cannot merge while its buddy is isolated.
        #expect(allocator.frameInfo(0)?.order == 0)
        #expect(allocator.frameInfo(1)?.state == .isolated)
        try allocator.validate()
        putback(allocator, 1, order: 0)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        #expect(allocator.statistics.isolatedPages == 0)
        try allocator.validate()
    }

    @Test("putback goes to the head or the tail of its list")
    func putbackHeadOrTail() throws {
        let allocator = try makeAllocator(frames: 4096)
        #expect(freeList(allocator, order: 10) == [3072, 2048, 1024, 0])
        #expect(isolate(allocator, 2048, order: 10))
        #expect(freeList(allocator, order: 10) == [3072, 1024, 0])
        putback(allocator, 2048, order: 10, toTail: true)
        #expect(freeList(allocator, order: 10) == [3072, 1024, 0, 2048])
        #expect(isolate(allocator, 2048, order: 10))
        putback(allocator, 2048, order: 10, toTail: false)
        #expect(freeList(allocator, order: 10) == [2048, 3072, 1024, 0])
        try allocator.validate()
    }

    @Test("rotateToFront makes a block first and keeps the cyclic order")
    func rotateToFront() throws {
        let allocator = try makeAllocator(frames: 8192)
        let original = [7168, 6144, 5120, 4096, 3072, 2048, 1024, 0]
        #expect(freeList(allocator, order: 10) == original)
        let zone = allocator.zones[0]
        func rotate(_ frame: Int) {
            zone.withLock { $0.rotateToFront(frame, order: 10, migratetype: .movable) }
        }
        rotate(3072)
        #expect(freeList(allocator, order: 10) == [3072, 2048, 1024, 0, 7168, 6144, 5120, 4096])
        try allocator.validate()
        // Rotating to the first block changes nothing.
        rotate(3072)
        #expect(freeList(allocator, order: 10) == [3072, 2048, 1024, 0, 7168, 6144, 5120, 4096])
        // Rotating to the last block.
        rotate(4096)
        #expect(freeList(allocator, order: 10) == [4096, 3072, 2048, 1024, 0, 7168, 6144, 5120])
        try allocator.validate()
        // To the second one.
        rotate(3072)
        #expect(freeList(allocator, order: 10) == [3072, 2048, 1024, 0, 7168, 6144, 5120, 4096])
        rotate(7168)
        #expect(freeList(allocator, order: 10) == original)
        try allocator.validate()
        // Allocation follows the list: the first block is taken first.
        rotate(1024)
        #expect(try allocator.allocate(order: 10) == 1024)
        #expect(freeList(allocator, order: 10) == [0, 7168, 6144, 5120, 4096, 3072, 2048])
        try allocator.validate()
    }

    @Test("rotateToFront on a one-block list changes nothing")
    func rotateSingle() throws {
        let allocator = try makeAllocator(frames: 1024)
        allocator.zones[0].withLock { $0.rotateToFront(0, order: 10, migratetype: .movable) }
        #expect(freeList(allocator, order: 10) == [0])
        try allocator.validate()
    }
}
