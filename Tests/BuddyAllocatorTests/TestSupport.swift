import BuddyAllocator
import Synchronization
import Testing

/// SplitMix64: a tiny, fast, seedable generator, so randomized tests replay exactly.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { self.state = seed }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = self.state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}

/// Builds an allocator; by default without watermarks, so every page is usable.
func makeAllocator(
    frames: Int,
    orderCount: Int = 11,
    pageblockOrder: Int = 9,
    zones: [ZoneLayout]? = nil,
    watermarks: WatermarkPolicy = .none
) throws -> BuddyAllocator {
    try BuddyAllocator(
        AllocatorConfiguration(
            frameCount: frames,
            orderCount: orderCount,
            pageblockOrder: pageblockOrder,
            zones: zones,
            watermarks: watermarks
        )
    )
}

/// What `nr_free` must look like right after boot: each zone cut into the largest aligned
/// blocks that fit, computed here independently of the allocator.
func bootNrFree(zone: Range<Int>, orderCount: Int) -> [Int] {
    var counts = [Int](repeating: 0, count: orderCount)
    for (_, order) in bootBlocks(zone: zone, orderCount: orderCount) { counts[order] += 1 }
    return counts
}

/// The boot blocks of a zone as (first frame, order).
func bootBlocks(zone: Range<Int>, orderCount: Int) -> [(frame: Int, order: Int)] {
    var blocks: [(frame: Int, order: Int)] = []
    var frame = zone.lowerBound
    while frame < zone.upperBound {
        var order = orderCount - 1
        while frame % (1 << order) != 0 || frame + (1 << order) > zone.upperBound { order -= 1 }
        blocks.append((frame, order))
        frame += 1 << order
    }
    return blocks
}

/// Per-zone `nr_free` of the allocator.
func nrFree(_ allocator: BuddyAllocator, zone: Int = 0) -> [Int] {
    allocator.statistics.zones[zone].nrFree
}

/// Every frame's state, for "nothing changed" checks on small allocators.
func frameSnapshot(_ allocator: BuddyAllocator) -> [FrameInfo?] {
    (0..<allocator.configuration.frameCount).map { allocator.frameInfo($0) }
}

/// Expects `body` to throw a ``BuddyError`` with `code`; returns the error.
@discardableResult
func expectBuddyError(
    _ code: BuddyError.Code,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> BuddyError? {
    do {
        try body()
        Issue.record("expected \(code), but the call succeeded", sourceLocation: sourceLocation)
        return nil
    } catch let error as BuddyError {
        #expect(error.code == code, "got \(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Expects `body` to be refused with `code` and to leave the allocator exactly as it was.
@discardableResult
func expectRefused(
    _ allocator: BuddyAllocator,
    _ code: BuddyError.Code,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> BuddyError? {
    let statistics = allocator.statistics
    let frames = frameSnapshot(allocator)
    let error = expectBuddyError(code, sourceLocation: sourceLocation, body)
    #expect(allocator.statistics == statistics, sourceLocation: sourceLocation)
    #expect(frameSnapshot(allocator) == frames, sourceLocation: sourceLocation)
    #expect(throws: Never.self, sourceLocation: sourceLocation) { try allocator.validate() }
    return error
}

/// Isolates the free block `frame` of `order` the way the reporting engine does.
func isolate(_ allocator: BuddyAllocator, _ frame: Int, order: Int) -> Bool {
    allocator.zone(containing: frame).withLock { zone in
        zone.isFreeBlock(frame, order: order) && zone.isolateFreeBlock(frame, order: order)
    }
}

/// Puts an isolated block back the way the reporting engine's drain does (pageblock migratetype).
func putback(_ allocator: BuddyAllocator, _ frame: Int, order: Int, toTail: Bool = true, reported: Bool = false) {
    allocator.zone(containing: frame).withLock { zone in
        zone.putbackIsolatedBlock(
            frame,
            order: order,
            migratetype: zone.pageblockMigratetype(of: frame),
            toTail: toTail
        )
        if reported, zone.isFreeBlock(frame, order: order) { zone.setReported(frame) }
    }
}

/// Collects the runs a ``ReuseObserver`` is told about.
final class ReuseRecorder: ReuseObserver {
    private let runs = Mutex<[Range<Int>]>([])

    func framesReused(first: Int, count: Int) {
        self.runs.withLock { $0.append(first..<(first + count)) }
    }

    /// The runs seen since the last call, in order.
    func take() -> [Range<Int>] {
        self.runs.withLock { runs in
            defer { runs = [] }
            return runs
        }
    }
}

/// The frames on `free_area[order].free_list[migratetype]` of a zone, first to last.
func freeList(_ allocator: BuddyAllocator, zone: Int = 0, order: Int, migratetype: Migratetype = .movable) -> [Int] {
    allocator.zones[zone].withLock { locked in
        var frames: [Int] = []
        var cursor = locked.firstFreeBlock(order: order, migratetype: migratetype)
        while let frame = cursor {
            frames.append(frame)
            cursor = locked.nextFreeBlock(after: frame)
        }
        return frames
    }
}
