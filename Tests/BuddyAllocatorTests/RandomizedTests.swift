import BuddyAllocator
import Testing

/// One seeded run: a configuration, a seed and a number of operations.
struct RandomizedScenario: Sendable, CustomTestStringConvertible {
    var name: String
    var configuration: AllocatorConfiguration
    var seed: UInt64
    var operations: Int

    var testDescription: String { "\(self.name), seed \(self.seed)" }

    static let configurations: [(String, AllocatorConfiguration)] = [
        (
            "DMA + Normal, kernel watermarks",
            AllocatorConfiguration(
                frameCount: 8192,
                zones: [ZoneLayout(name: "DMA", frames: 0..<4096), ZoneLayout(name: "Normal", frames: 4096..<8192)]
            )
        ),
        ("3000 frames, partial last pageblock", AllocatorConfiguration(frameCount: 3000, watermarks: .none)),
        (
            "4 orders, pageblock order 2, two zones",
            AllocatorConfiguration(
                frameCount: 1002,
                orderCount: 4,
                pageblockOrder: 2,
                zones: [ZoneLayout(name: "Low", frames: 0..<500), ZoneLayout(name: "High", frames: 500..<1002)],
                watermarks: .fixed(Watermarks(min: 8, low: 16, high: 24))
            )
        ),
        ("order 0 only", AllocatorConfiguration(frameCount: 257, orderCount: 1, pageblockOrder: 0, watermarks: .none)),
    ]

    static let all: [RandomizedScenario] = configurations.flatMap { name, configuration in
        [0x5EED, 0xC0FFEE, 42].map {
            RandomizedScenario(name: name, configuration: configuration, seed: $0, operations: 3000)
        }
    }
}

/// What the allocator must hold, tracked independently of it.
private struct Model {
    enum Owner: UInt8 {
        case free
        case allocated
        case isolated
    }

    let configuration: AllocatorConfiguration
    var owner: [Owner]
    var discarded: [Bool]
    var discardedCount = 0
    /// Allocated blocks (frame, order), in no particular order; picked by index.
    var allocated: [(frame: Int, order: Int)] = []
    var allocatedPages = 0
    /// Blocks taken off the free lists by the engine-style isolation.
    var isolated: [(frame: Int, order: Int)] = []
    var isolatedPages = 0
    /// Pageblocks isolated with `isolatePageblock`, in the order they were isolated.
    var isolatedPageblocks: [Int] = []

    init(_ configuration: AllocatorConfiguration) {
        self.configuration = configuration
        self.owner = Array(repeating: .free, count: configuration.frameCount)
        self.discarded = Array(repeating: false, count: configuration.frameCount)
    }

    var pageblockOrder: Int { self.configuration.pageblockOrder }

    func pageblocks(of frame: Int, order: Int) -> ClosedRange<Int> {
        (frame >> self.pageblockOrder)...((frame + (1 << order) - 1) >> self.pageblockOrder)
    }

    func zone(of frame: Int) -> Range<Int> {
        self.configuration.zones.first { $0.frames.contains(frame) }!.frames
    }

    /// Free frames inside isolated pageblocks: they sit on the isolate lists, outside NR_FREE_PAGES.
    func freeFramesInIsolatedPageblocks() -> Int {
        var count = 0
        for block in self.isolatedPageblocks {
            let start = block << self.pageblockOrder
            let end = min(start + (1 << self.pageblockOrder), self.configuration.frameCount)
            for frame in start..<end where self.owner[frame] == .free { count += 1 }
        }
        return count
    }

    /// The discarded runs inside a block, in order.
    func discardedRuns(frame: Int, order: Int) -> [Range<Int>] {
        var runs: [Range<Int>] = []
        var start: Int?
        for index in frame..<(frame + (1 << order)) {
            if self.discarded[index] {
                if start == nil { start = index }
            } else if let first = start {
                runs.append(first..<index)
                start = nil
            }
        }
        if let first = start { runs.append(first..<(frame + (1 << order))) }
        return runs
    }

    func discardedRanges() -> [Range<Int>] {
        var runs: [Range<Int>] = []
        var start: Int?
        for index in 0..<self.configuration.frameCount {
            if self.discarded[index] {
                if start == nil { start = index }
            } else if let first = start {
                runs.append(first..<index)
                start = nil
            }
        }
        if let first = start { runs.append(first..<self.configuration.frameCount) }
        return runs
    }
}

/// Drives an allocator with random operations and checks it against a ``Model`` after each one.
private struct RandomizedRun {
    let allocator: BuddyAllocator
    let recorder = ReuseRecorder()
    var model: Model
    var generator: SplitMix64
    let orderCount: Int
    /// What the last step did, for failure messages.
    var trace = ""
    var steps = 0

    init(_ scenario: RandomizedScenario) throws {
        self.allocator = try BuddyAllocator(scenario.configuration)
        self.allocator.setReuseObserver(self.recorder)
        self.model = Model(scenario.configuration)
        self.generator = SplitMix64(seed: scenario.seed)
        self.orderCount = scenario.configuration.orderCount
    }

    mutating func random(_ upperBound: Int) -> Int { Int.random(in: 0..<upperBound, using: &self.generator) }

    mutating func randomOrder() -> Int {
        let top = self.orderCount - 1
        switch self.random(100) {
        case 0..<50: return self.random(min(2, top) + 1)
        case 50..<85: return self.random(min(6, top) + 1)
        default: return self.random(top + 1)
        }
    }

    mutating func randomMigratetype() -> Migratetype {
        [Migratetype.unmovable, .movable, .reclaimable][self.random(3)]
    }

    mutating func step() throws {
        self.steps += 1
        switch self.random(100) {
        case 0..<45: try self.allocate()
        case 45..<80: try self.free()
        case 80..<85: self.misuse()
        case 85..<90: self.isolateBlock()
        case 90..<95: self.putbackBlock()
        case 95..<97: try self.isolatePageblock()
        case 97..<99: try self.undoIsolatePageblock()
        default:
            if self.random(2) == 0 { try self.changePageblock() } else { self.rotate() }
        }
        try self.check()
    }

    // MARK: Operations

    mutating func allocate() throws {
        let order = self.randomOrder()
        let migratetype = self.randomMigratetype()
        let before = self.allocator.statistics
        let frame: Int
        do {
            frame = try self.allocator.allocate(order: order, migratetype: migratetype)
        } catch {
            #expect(error.code == .outOfMemory)
            #expect(self.allocator.statistics == before)
            // Really no usable block of that order anywhere (no CMA or high-atomic here).
            for zone in self.allocator.zones {
                let found = zone.withLock { locked in
                    (order..<self.orderCount).contains { current in
                        [Migratetype.unmovable, .movable, .reclaimable].contains {
                            locked.firstFreeBlock(order: current, migratetype: $0) != nil
                        }
                    }
                }
                #expect(!found, "out of memory for order \(order) but zone \(zone.name) has a block")
            }
            return
        }
        self.trace = "allocate order \(order) \(migratetype) -> \(frame)"
        let count = 1 << order
        try #require(frame % count == 0, "frame \(frame) not aligned to order \(order)")
        let zone = self.model.zone(of: frame)
        try #require(frame + count <= zone.upperBound, "block \(frame) order \(order) crosses its zone")
        for index in frame..<(frame + count) {
            try #require(self.model.owner[index] == .free, "frame \(index) handed out twice")
            self.model.owner[index] = .allocated
        }
        for block in self.model.pageblocks(of: frame, order: order) {
            #expect(!self.model.isolatedPageblocks.contains(block), "allocated from isolated pageblock \(block)")
        }
        let expectedRuns = self.model.discardedRuns(frame: frame, order: order)
        self.allocator.flushReuse()
        #expect(self.recorder.take() == expectedRuns)
        for run in expectedRuns {
            for index in run { self.model.discarded[index] = false }
            self.model.discardedCount -= run.count
        }
        self.model.allocated.append((frame, order))
        self.model.allocatedPages += count
    }

    mutating func free() throws {
        guard !self.model.allocated.isEmpty else { return try self.allocate() }
        let index = self.random(self.model.allocated.count)
        let block = self.model.allocated.remove(at: index)
        self.trace = "free \(block)"
        try self.allocator.free(frame: block.frame, order: block.order)
        for frame in block.frame..<(block.frame + (1 << block.order)) { self.model.owner[frame] = .free }
        self.model.allocatedPages -= 1 << block.order
    }

    /// A bad call of some kind: it must be refused with its code and change nothing.
    mutating func misuse() {
        let allocator = self.allocator
        let frameCount = self.model.configuration.frameCount
        let before = allocator.statistics
        switch self.random(7) {
        case 0:
            let order = self.random(2) == 0 ? -1 - self.random(3) : self.orderCount + self.random(3)
            expectBuddyError(.orderOutOfRange) { _ = try allocator.allocate(order: order) }
        case 1:
            let migratetype = [Migratetype.isolate, .cma, .highAtomic][self.random(3)]
            expectBuddyError(.invalidMigratetype) { _ = try allocator.allocate(order: 0, migratetype: migratetype) }
        case 2:
            let frame = self.random(2) == 0 ? -1 - self.random(10) : frameCount + self.random(10)
            expectBuddyError(.frameOutOfRange) { try allocator.free(frame: frame, order: 0) }
        case 3:
            // A frame nobody holds (free, or inside a free block): a double free.
            let frame = self.random(frameCount)
            if self.model.owner[frame] == .free {
                expectBuddyError(.notAllocated) { try allocator.free(frame: frame, order: 0) }
            }
        case 4:
            // The wrong order for an allocated block.
            guard let block = self.model.allocated.randomElement(using: &self.generator) else { break }
            if block.order > 0 {
                expectBuddyError(.wrongOrder) { try allocator.free(frame: block.frame, order: block.order - 1) }
            } else if block.order + 1 < self.orderCount, block.frame % 2 == 0, block.frame + 2 <= frameCount {
                expectBuddyError(.wrongOrder) { try allocator.free(frame: block.frame, order: 1) }
            }
        case 5:
            // A tail frame of an allocated block.
            guard let block = self.model.allocated.randomElement(using: &self.generator), block.order > 0 else { break }
            let tail = block.frame + 1 + self.random((1 << block.order) - 1)
            expectBuddyError(.notAllocated) { try allocator.free(frame: tail, order: 0) }
        default:
            // Unaligned.
            guard self.orderCount > 1 else { break }
            let order = 1 + self.random(self.orderCount - 1)
            let frame = (self.random(max(frameCount >> order, 1)) << order) + 1
            if frame + (1 << order) <= frameCount {
                expectBuddyError(.unalignedFrame) { try allocator.free(frame: frame, order: order) }
            }
        }
        #expect(allocator.statistics == before)
    }

    /// Isolates the first free block of a random order, the way the reporting engine does.
    mutating func isolateBlock() {
        let zone = self.allocator.zones[self.random(self.allocator.zones.count)]
        let order = self.random(self.orderCount)
        let isolated: Int? = zone.withLock { locked in
            for migratetype in [Migratetype.unmovable, .movable, .reclaimable, .cma, .highAtomic] {
                guard let frame = locked.firstFreeBlock(order: order, migratetype: migratetype)
                else { continue }
                return locked.isolateFreeBlock(frame, order: order) ? frame : nil
            }
            return nil
        }
        guard let frame = isolated else { return }
        self.trace = "isolate block \(frame) order \(order)"
        for index in frame..<(frame + (1 << order)) {
            #expect(self.model.owner[index] == .free, "isolated frame \(index) was not free")
            self.model.owner[index] = .isolated
        }
        for block in self.model.pageblocks(of: frame, order: order) {
            #expect(!self.model.isolatedPageblocks.contains(block))
        }
        self.model.isolated.append((frame, order))
        self.model.isolatedPages += 1 << order
    }

    /// Puts an isolated block back, as the engine's drain does: maybe discarded, maybe Reported.
    mutating func putbackBlock() {
        guard !self.model.isolated.isEmpty else { return self.isolateBlock() }
        let block = self.model.isolated.remove(at: self.random(self.model.isolated.count))
        let discard = self.random(2) == 0
        let toTail = self.random(2) == 0
        let report = self.random(2) == 0
        self.trace = "putback \(block) discard \(discard) tail \(toTail)"
        self.allocator.zone(containing: block.frame).withLock { locked in
            if discard { locked.markDiscarded(block.frame, order: block.order) }
            locked.putbackIsolatedBlock(
                block.frame,
                order: block.order,
                migratetype: locked.pageblockMigratetype(of: block.frame),
                toTail: toTail
            )
            if report, locked.isFreeBlock(block.frame, order: block.order) { locked.setReported(block.frame) }
        }
        for frame in block.frame..<(block.frame + (1 << block.order)) {
            self.model.owner[frame] = .free
            if discard && !self.model.discarded[frame] {
                self.model.discarded[frame] = true
                self.model.discardedCount += 1
            }
        }
        self.model.isolatedPages -= 1 << block.order
    }

    mutating func isolatePageblock() throws {
        let pageblockOrder = self.model.pageblockOrder
        let frameCount = self.model.configuration.frameCount
        let block = self.random((frameCount + (1 << pageblockOrder) - 1) >> pageblockOrder)
        guard !self.model.isolatedPageblocks.contains(block) else { return }
        let start = block << pageblockOrder
        let frame = start + self.random(min(1 << pageblockOrder, frameCount - start))
        try self.allocator.isolatePageblock(frame: frame)
        self.trace = "isolate pageblock \(block)"
        self.model.isolatedPageblocks.append(block)
        #expect(self.allocator.frameInfo(frame)?.pageblockMigratetype == .isolate)
    }

    mutating func undoIsolatePageblock() throws {
        guard !self.model.isolatedPageblocks.isEmpty else { return try self.isolatePageblock() }
        let block = self.model.isolatedPageblocks.remove(at: self.random(self.model.isolatedPageblocks.count))
        let migratetype = self.randomMigratetype()
        self.trace = "undo pageblock \(block) to \(migratetype)"
        try self.allocator.undoIsolatePageblock(frame: block << self.model.pageblockOrder, to: migratetype)
        #expect(self.allocator.frameInfo(block << self.model.pageblockOrder)?.pageblockMigratetype == migratetype)
    }

    mutating func changePageblock() throws {
        let frame = self.random(self.model.configuration.frameCount)
        let migratetype = self.randomMigratetype()
        if self.model.isolatedPageblocks.contains(frame >> self.model.pageblockOrder) {
            let before = self.allocator.statistics
            expectBuddyError(.invalidMigratetype) {
                try self.allocator.setPageblockMigratetype(frame: frame, to: migratetype)
            }
            #expect(self.allocator.statistics == before)
        } else {
            try self.allocator.setPageblockMigratetype(frame: frame, to: migratetype)
            #expect(self.allocator.frameInfo(frame)?.pageblockMigratetype == migratetype)
        }
    }

    mutating func rotate() {
        let zone = self.allocator.zones[self.random(self.allocator.zones.count)]
        let order = self.random(self.orderCount)
        let migratetype = self.randomMigratetype()
        let steps = self.random(8)
        zone.withLock { locked in
            guard var frame = locked.firstFreeBlock(order: order, migratetype: migratetype) else { return }
            for _ in 0..<steps {
                guard let next = locked.nextFreeBlock(after: frame) else { break }
                frame = next
            }
            locked.rotateToFront(frame, order: order, migratetype: migratetype)
            #expect(locked.firstFreeBlock(order: order, migratetype: migratetype) == frame)
        }
    }

    // MARK: Checks

    func check() throws {
        do {
            try self.allocator.validate()
        } catch {
            Issue.record("\(error) after \(self.trace)")
            throw error
        }
        let statistics = self.allocator.statistics
        #expect(statistics.allocatedPages == self.model.allocatedPages)
        #expect(statistics.isolatedPages == self.model.isolatedPages)
        #expect(statistics.discardedPages == self.model.discardedCount)
        let expectedFree =
            statistics.totalPages - self.model.allocatedPages - self.model.isolatedPages
            - self.model.freeFramesInIsolatedPageblocks()
        #expect(statistics.freePages == expectedFree, "after \(self.trace)")
        // Every pageblock's isolation matches the model (all of them now and then: it is slow).
        let pageblocks =
            (self.model.configuration.frameCount + (1 << self.model.pageblockOrder) - 1) >> self.model.pageblockOrder
        let all = self.steps % 64 == 0
        for block in all ? Array(0..<pageblocks) : self.model.isolatedPageblocks {
            let isolated =
                self.allocator.frameInfo(block << self.model.pageblockOrder)?.pageblockMigratetype == .isolate
            #expect(isolated == self.model.isolatedPageblocks.contains(block), "pageblock \(block) after \(self.trace)")
        }
    }

    /// Returns everything and checks that the allocator is back to its boot layout.
    mutating func finish() throws {
        for block in self.model.isolated { putback(self.allocator, block.frame, order: block.order) }
        for frame in self.model.isolated.flatMap({ $0.frame..<($0.frame + (1 << $0.order)) }) {
            self.model.owner[frame] = .free
        }
        self.model.isolated = []
        self.model.isolatedPages = 0
        try self.check()
        for block in self.model.isolatedPageblocks {
            try self.allocator.undoIsolatePageblock(frame: block << self.model.pageblockOrder)
        }
        self.model.isolatedPageblocks = []
        try self.check()
        self.model.allocated.shuffle(using: &self.generator)
        while !self.model.allocated.isEmpty {
            try self.free()
            try self.check()
        }
        let statistics = self.allocator.statistics
        #expect(statistics.freePages == statistics.totalPages)
        #expect(statistics.allocatedPages == 0)
        #expect(statistics.isolatedPages == 0)
        for (index, zone) in self.model.configuration.zones.enumerated() {
            #expect(statistics.zones[index].nrFree == bootNrFree(zone: zone.frames, orderCount: self.orderCount))
        }
        #expect(self.allocator.discardedRanges() == self.model.discardedRanges())
        self.allocator.flushReuse()
        #expect(self.recorder.take() == [])
    }
}

@Suite("Randomized: seeded operation sequences checked against a model")
struct RandomizedTests {
    @Test(
        "allocate, free, isolate, put back and misuse, validating after every step",
        arguments: RandomizedScenario.all
    )
    func randomOperations(scenario: RandomizedScenario) throws {
        var run = try RandomizedRun(scenario)
        for _ in 0..<scenario.operations {
            try run.step()
        }
        try run.finish()
    }

    @Test("the same seed replays the same allocations")
    func deterministic() throws {
        func trace(seed: UInt64) throws -> [Int] {
            let allocator = try makeAllocator(frames: 4096)
            var generator = SplitMix64(seed: seed)
            var blocks: [(Int, Int)] = []
            var trace: [Int] = []
            for _ in 0..<500 {
                if blocks.isEmpty || Int.random(in: 0..<3, using: &generator) > 0 {
                    let order = Int.random(in: 0...4, using: &generator)
                    if let frame = try? allocator.allocate(order: order) {
                        blocks.append((frame, order))
                        trace.append(frame)
                    }
                } else {
                    let (frame, order) = blocks.remove(at: Int.random(in: 0..<blocks.count, using: &generator))
                    try allocator.free(frame: frame, order: order)
                }
            }
            return trace
        }
        #expect(try trace(seed: 9) == trace(seed: 9))
        #expect(try trace(seed: 9) != trace(seed: 10))
    }
}
