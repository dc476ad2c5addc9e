import BuddyAllocator
import Testing

@Suite("Errors: every misuse is refused with its code and changes nothing")
struct ErrorTests {
    /// 1000 frames (not a power of two), so blocks can cross the end; some memory in use.
    private func fixture() throws -> (BuddyAllocator, order2: Int, order0: Int) {
        let allocator = try makeAllocator(frames: 1000)
        let order2 = try allocator.allocate(order: 2)
        let order0 = try allocator.allocate(order: 0)
        return (allocator, order2, order0)
    }

    @Test("allocate with an order out of range")
    func allocateOrderOutOfRange() throws {
        let (allocator, _, _) = try self.fixture()
        for order in [-1, -100, 11, 12, Int.max, Int.min] {
            let error = expectRefused(allocator, .orderOutOfRange) { _ = try allocator.allocate(order: order) }
            #expect(error?.order == order)
        }
    }

    @Test("allocate from a migratetype that is not allocatable", arguments: [Migratetype.isolate, .cma, .highAtomic])
    func allocateInvalidMigratetype(migratetype: Migratetype) throws {
        let (allocator, _, _) = try self.fixture()
        expectRefused(allocator, .invalidMigratetype) { _ = try allocator.allocate(order: 0, migratetype: migratetype) }
        #expect(!migratetype.isAllocatable)
    }

    @Test("the allocatable migratetypes are exactly unmovable, movable and reclaimable")
    func allocatableMigratetypes() {
        #expect(Migratetype.allCases.filter(\.isAllocatable) == [.unmovable, .movable, .reclaimable])
        #expect(Migratetype.allCases.count == Migratetype.count)
        #expect(Migratetype.allCases.map(\.rawValue) == [0, 1, 2, 3, 4, 5])
    }

    @Test("free with an order out of range")
    func freeOrderOutOfRange() throws {
        let (allocator, order2, _) = try self.fixture()
        for order in [-1, 11, 64, Int.max] {
            let error = expectRefused(allocator, .orderOutOfRange) { try allocator.free(frame: order2, order: order) }
            #expect(error?.order == order)
            #expect(error?.frame == order2)
        }
    }

    @Test("free with a frame out of range")
    func freeFrameOutOfRange() throws {
        let (allocator, _, _) = try self.fixture()
        for frame in [-1, -4, Int.min, 1000, 1001, 4096, Int.max] {
            let error = expectRefused(allocator, .frameOutOfRange) { try allocator.free(frame: frame, order: 0) }
            #expect(error?.frame == frame)
        }
        // Aligned and starting inside memory, but the block would run past the last frame.
        expectRefused(allocator, .frameOutOfRange) { try allocator.free(frame: 992, order: 4) }
        expectRefused(allocator, .frameOutOfRange) { try allocator.free(frame: 512, order: 10) }
        expectRefused(allocator, .frameOutOfRange) { try allocator.free(frame: 0, order: 10) }
    }

    @Test("free with an unaligned frame")
    func freeUnaligned() throws {
        let (allocator, order2, _) = try self.fixture()
        for (frame, order) in [(order2 + 1, 1), (order2 + 2, 2), (3, 1), (6, 2), (8, 4), (512, 10)]
        where frame + (1 << order) <= 1000 {
            let error = expectRefused(allocator, .unalignedFrame) { try allocator.free(frame: frame, order: order) }
            #expect(error?.frame == frame)
            #expect(error?.order == order)
        }
        expectRefused(allocator, .unalignedFrame) { try allocator.free(frame: 3, order: 1) }
    }

    @Test("double free is notAllocated")
    func doubleFree() throws {
        let (allocator, order2, order0) = try self.fixture()
        try allocator.free(frame: order0, order: 0)
        expectRefused(allocator, .notAllocated) { try allocator.free(frame: order0, order: 0) }
        try allocator.free(frame: order2, order: 2)
        expectRefused(allocator, .notAllocated) { try allocator.free(frame: order2, order: 2) }
        #expect(nrFree(allocator) == bootNrFree(zone: 0..<1000, orderCount: 11))
    }

    @Test("freeing a frame that was never allocated is notAllocated")
    func freeNeverAllocated() throws {
        let (allocator, _, _) = try self.fixture()
        // The head of a free block, and a frame inside one.
        expectRefused(allocator, .notAllocated) { try allocator.free(frame: 512, order: 8) }
        expectRefused(allocator, .notAllocated) { try allocator.free(frame: 600, order: 0) }
        expectRefused(allocator, .notAllocated) { try allocator.free(frame: 960, order: 5) }
    }

    @Test("freeing a tail frame of an allocated block is notAllocated")
    func freeTailFrame() throws {
        let (allocator, order2, _) = try self.fixture()
        for offset in 1..<4 {
            expectRefused(allocator, .notAllocated) { try allocator.free(frame: order2 + offset, order: 0) }
        }
        expectRefused(allocator, .notAllocated) { try allocator.free(frame: order2 + 2, order: 1) }
    }

    @Test("freeing with the wrong order is wrongOrder")
    func freeWrongOrder() throws {
        let (allocator, order2, order0) = try self.fixture()
        #expect(order2 % 8 == 0)
        for order in [0, 1, 3] {
            let error = expectRefused(allocator, .wrongOrder) { try allocator.free(frame: order2, order: order) }
            #expect(error?.order == order)
            #expect(error?.detail.contains("2") == true)
        }
        if order0 % 2 == 0 {
            expectRefused(allocator, .wrongOrder) { try allocator.free(frame: order0, order: 1) }
        }
        try allocator.free(frame: order2, order: 2)
        try allocator.validate()
    }

    @Test("freeing an isolated block through free() is notAllocated")
    func freeIsolatedBlock() throws {
        let allocator = try makeAllocator(frames: 1024)
        #expect(isolate(allocator, 512, order: 9) == false)  // not a free block yet: 0 is order 10
        let frame = try allocator.allocate(order: 0)
        #expect(frame == 0)
        #expect(isolate(allocator, 512, order: 9))
        expectRefused(allocator, .notAllocated) { try allocator.free(frame: 512, order: 9) }
        putback(allocator, 512, order: 9)
        try allocator.validate()
    }

    @Test("pageblock calls with bad frames or migratetypes")
    func pageblockMisuse() throws {
        let (allocator, _, _) = try self.fixture()
        for frame in [-1, 1000, Int.max] {
            expectRefused(allocator, .frameOutOfRange) { try allocator.setPageblockMigratetype(frame: frame, to: .cma) }
            expectRefused(allocator, .frameOutOfRange) { try allocator.isolatePageblock(frame: frame) }
            expectRefused(allocator, .frameOutOfRange) { try allocator.undoIsolatePageblock(frame: frame) }
        }
        expectRefused(allocator, .invalidMigratetype) { try allocator.setPageblockMigratetype(frame: 0, to: .isolate) }
        expectRefused(allocator, .invalidMigratetype) { try allocator.undoIsolatePageblock(frame: 0, to: .isolate) }
        try allocator.isolatePageblock(frame: 0)
        expectRefused(allocator, .invalidMigratetype) { try allocator.setPageblockMigratetype(frame: 5, to: .cma) }
        // Isolating twice, or undoing a pageblock that is not isolated, is harmless.
        let statistics = allocator.statistics
        try allocator.isolatePageblock(frame: 7)
        #expect(allocator.statistics == statistics)
        try allocator.undoIsolatePageblock(frame: 0)
        let undone = allocator.statistics
        try allocator.undoIsolatePageblock(frame: 0)
        #expect(allocator.statistics == undone)
        try allocator.validate()
    }

    @Test("free notifier misuse: order out of range, and a second notifier is busy")
    func notifierMisuse() throws {
        final class Notifier: FreeBlockNotifier {
            func blockFreed(order: Int) {}
        }
        let allocator = try makeAllocator(frames: 1024)
        let first = Notifier()
        let second = Notifier()
        expectBuddyError(.orderOutOfRange) { try allocator.attachFreeNotifier(first, order: -1) }
        expectBuddyError(.orderOutOfRange) { try allocator.attachFreeNotifier(first, order: 11) }
        try allocator.attachFreeNotifier(first, order: 9)
        expectBuddyError(.busy) { try allocator.attachFreeNotifier(second, order: 9) }
        expectBuddyError(.busy) { try allocator.attachFreeNotifier(first, order: 9) }
        // Detaching a notifier that is not attached changes nothing.
        allocator.detachFreeNotifier(second)
        expectBuddyError(.busy) { try allocator.attachFreeNotifier(second, order: 9) }
        allocator.detachFreeNotifier(first)
        try allocator.attachFreeNotifier(second, order: 9)
    }

    @Test("watermark updates with bad values or zones")
    func setWatermarksMisuse() throws {
        let allocator = try makeAllocator(frames: 1024)
        let bad = [
            Watermarks(min: -1, low: 0, high: 0),
            Watermarks(min: 5, low: 4, high: 6),
            Watermarks(min: 1, low: 5, high: 4),
        ]
        for marks in bad {
            expectRefused(allocator, .invalidConfiguration) { try allocator.setWatermarks(marks, zone: 0) }
        }
        for zone in [-1, 1, 5] {
            expectRefused(allocator, .invalidConfiguration) {
                try allocator.setWatermarks(Watermarks(min: 1, low: 2, high: 3), zone: zone)
            }
        }
    }

    @Test("every error has a stable name and a readable description")
    func errorDescriptions() {
        let codes: [(BuddyError.Code, String)] = [
            (.orderOutOfRange, "order_out_of_range"), (.frameOutOfRange, "frame_out_of_range"),
            (.unalignedFrame, "unaligned_frame"), (.notAllocated, "not_allocated"), (.wrongOrder, "wrong_order"),
            (.outOfMemory, "out_of_memory"), (.invalidMigratetype, "invalid_migratetype"),
            (.invalidConfiguration, "invalid_configuration"), (.busy, "busy"),
        ]
        for (code, name) in codes { #expect(code.description == name) }
        #expect(Set(codes.map { $0.0 }).count == codes.count)
        let error = BuddyError(.wrongOrder, frame: 8, order: 2, detail: "block was allocated with order 3")
        #expect(error.description == "BuddyError(wrong_order, frame: 8, order: 2, block was allocated with order 3)")
        #expect(BuddyError(.busy).description == "BuddyError(busy)")
    }
}

@Suite("Errors: invalid configurations")
struct ConfigurationErrorTests {
    private func expectInvalid(
        _ configuration: AllocatorConfiguration,
        mentioning field: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let error = expectBuddyError(.invalidConfiguration, sourceLocation: sourceLocation) {
            try configuration.validate()
        }
        #expect(error?.detail.contains(field) == true, "\(String(describing: error))", sourceLocation: sourceLocation)
        expectBuddyError(.invalidConfiguration, sourceLocation: sourceLocation) {
            _ = try BuddyAllocator(configuration)
        }
    }

    @Test("page size must be a power of two of at least 512")
    func pageSize() throws {
        for pageSize in [0, -4096, 256, 511, 1000, 4095, 4097, 12_288] {
            self.expectInvalid(AllocatorConfiguration(frameCount: 1024, pageSize: pageSize), mentioning: "page_size")
        }
        for pageSize in [512, 4096, 65_536, 2 << 20] {
            try AllocatorConfiguration(frameCount: 1024, pageSize: pageSize).validate()
        }
    }

    @Test("frame count must be positive and fit in 32 bits")
    func frameCount() {
        for frameCount in [0, -1, Int(UInt32.max), Int(UInt32.max) + 1] {
            self.expectInvalid(
                AllocatorConfiguration(frameCount: frameCount, zones: [ZoneLayout(name: "N", frames: 0..<1)]),
                mentioning: "frame_count"
            )
        }
        self.expectInvalid(AllocatorConfiguration(memoryBytes: 4095), mentioning: "frame_count")
    }

    @Test("order count must be in 1...20")
    func orderCount() throws {
        for orderCount in [0, -1, 21, 64] {
            self.expectInvalid(
                AllocatorConfiguration(frameCount: 1024, orderCount: orderCount, pageblockOrder: 0),
                mentioning: "order_count"
            )
        }
        let one = try BuddyAllocator(AllocatorConfiguration(frameCount: 5, orderCount: 1, pageblockOrder: 0))
        #expect(nrFree(one) == [5])
        try one.validate()
        try AllocatorConfiguration(frameCount: 1 << 20, orderCount: 20, pageblockOrder: 19).validate()
    }

    @Test("pageblock order must be below the order count")
    func pageblockOrder() {
        for pageblockOrder in [-1, 11, 12] {
            self.expectInvalid(
                AllocatorConfiguration(frameCount: 1024, pageblockOrder: pageblockOrder),
                mentioning: "pageblock_order"
            )
        }
    }

    @Test("zones must tile the frames without gaps or overlaps")
    func zones() {
        self.expectInvalid(AllocatorConfiguration(frameCount: 1024, zones: []), mentioning: "zone")
        // Does not start at 0.
        self.expectInvalid(
            AllocatorConfiguration(frameCount: 1024, zones: [ZoneLayout(name: "N", frames: 512..<1024)]),
            mentioning: "zone N"
        )
        // A gap, an overlap, an empty zone.
        let layouts: [[ZoneLayout]] = [
            [ZoneLayout(name: "A", frames: 0..<512), ZoneLayout(name: "B", frames: 1024..<2048)],
            [ZoneLayout(name: "A", frames: 0..<1024), ZoneLayout(name: "B", frames: 512..<2048)],
            [
                ZoneLayout(name: "A", frames: 0..<1024), ZoneLayout(name: "B", frames: 1024..<1024),
                ZoneLayout(name: "C", frames: 1024..<2048),
            ],
        ]
        for zones in layouts {
            self.expectInvalid(AllocatorConfiguration(frameCount: 2048, zones: zones), mentioning: "zone B")
        }
        // Ending before or after the last frame.
        self.expectInvalid(
            AllocatorConfiguration(frameCount: 2048, zones: [ZoneLayout(name: "A", frames: 0..<1024)]),
            mentioning: "frame_count"
        )
        self.expectInvalid(
            AllocatorConfiguration(frameCount: 1000, zones: [ZoneLayout(name: "A", frames: 0..<1024)]),
            mentioning: "frame_count"
        )
    }

    @Test("a zone must start on a pageblock boundary")
    func zoneStartAlignment() throws {
        let zones = [ZoneLayout(name: "DMA", frames: 0..<1000), ZoneLayout(name: "Normal", frames: 1000..<4096)]
        let configuration = AllocatorConfiguration(frameCount: 4096, zones: zones)
        try configuration.validate()  // the layout itself is fine...
        let error = expectBuddyError(.invalidConfiguration) { _ = try BuddyAllocator(configuration) }
        #expect(error?.detail.contains("Normal") == true)
        // ...and with a smaller pageblock it is fine for the allocator too (1000 = 125 * 8).
        var small = configuration
        small.pageblockOrder = 3
        let allocator = try BuddyAllocator(small)
        #expect(allocator.statistics.zones.map(\.freePages) == [1000, 3096])
        try allocator.validate()
    }

    @Test("fixed watermarks must be ordered and not negative")
    func fixedWatermarks() throws {
        let bad = [
            Watermarks(min: -1, low: 0, high: 0),
            Watermarks(min: 10, low: 5, high: 20),
            Watermarks(min: 1, low: 20, high: 10),
        ]
        for marks in bad {
            self.expectInvalid(
                AllocatorConfiguration(frameCount: 1024, watermarks: .fixed(marks)),
                mentioning: "watermarks"
            )
        }
        try AllocatorConfiguration(frameCount: 1024, watermarks: .fixed(Watermarks(min: 0, low: 0, high: 0))).validate()
        try AllocatorConfiguration(frameCount: 1024, watermarks: .fixed(Watermarks(min: 3, low: 3, high: 3))).validate()
    }
}
