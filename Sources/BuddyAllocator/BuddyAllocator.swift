import Synchronization

/// A buddy allocator over page frames with the Linux kernel's free-list semantics.
///
/// Zones, `free_area[order].free_list[migratetype]`, pageblock migratetypes with the kernel's
/// fallback order, watermarks, split on allocation and merge on free, and the two calls free page
/// reporting is built on: `__isolate_free_page` and `__putback_isolated_page` (see
/// ``LockedZone``). Page state is struct-of-arrays indexed by frame number; there is no object per
/// page and no heap allocation per operation.
///
/// Safe to use from many threads at once: each zone has its own lock, held only for the
/// duration of one call. Misuse (double free, wrong order, unaligned or out-of-range frames, bad
/// orders) throws a ``BuddyError`` and changes nothing.
public final class BuddyAllocator: Sendable {
    /// The configuration the allocator was built with.
    public let configuration: AllocatorConfiguration
    /// The zones, in `for_each_zone` order.
    public let zones: [Zone]

    @usableFromInline let table: FrameTable
    @usableFromInline let orderCount: Int
    @usableFromInline let frameCount: Int
    @usableFromInline let notifyOrder = Atomic<Int>(.max)
    let notifier = PThreadLocked<(any FreeBlockNotifier)?>(nil)
    /// The attached reporting engine's state word (the kernel's `prdev->state`), kept here so
    /// that a free can see a pass is already requested and skip the notifier's lock, as
    /// `__page_reporting_request` returns at once on `PAGE_REPORTING_REQUESTED`: with reporting
    /// on, nearly every free that reaches the reporting order finds it requested, and the lock
    /// and the retain of the engine, shared by every allocating thread, were the cost of
    /// reporting on small blocks. The engine owns the values; reset to idle on attach.
    @usableFromInline package let reportingState = Atomic<Int>(0)
    /// ``reportingState`` when a pass is already requested: a free has nothing to add.
    @usableFromInline package static let reportingRequested = 1
    private let pageblocks: PageblockTable

    /// Bytes of allocator metadata per page frame (the kernel spends 64 on `struct page`).
    public static var metadataBytesPerFrame: Int { FrameTable.bytesPerFrame }

    /// Builds the allocator with every frame free, in the largest aligned blocks that fit each
    /// zone, every pageblock `movable` (as at boot).
    public init(_ configuration: AllocatorConfiguration) throws(BuddyError) {
        try configuration.validate()
        for zone in configuration.zones where zone.frames.lowerBound % (1 << configuration.pageblockOrder) != 0 {
            throw BuddyError(
                .invalidConfiguration,
                detail:
                    "zone \(zone.name) must start on a pageblock boundary (\(1 << configuration.pageblockOrder) frames)"
            )
        }
        self.configuration = configuration
        self.orderCount = configuration.orderCount
        self.frameCount = configuration.frameCount
        self.table = FrameTable(count: configuration.frameCount)
        let blockCount =
            (configuration.frameCount + (1 << configuration.pageblockOrder) - 1) >> configuration.pageblockOrder
        self.pageblocks = PageblockTable(count: blockCount)
        var zones: [Zone] = []
        for (index, layout) in configuration.zones.enumerated() {
            let marks = configuration.watermarks.watermarks(
                zonePages: layout.frames.count,
                totalPages: configuration.frameCount,
                pageSize: configuration.pageSize
            )
            zones.append(
                Zone(
                    index: index,
                    layout: layout,
                    table: self.table,
                    pageblockMigratetypes: self.pageblocks.types,
                    orderCount: configuration.orderCount,
                    pageblockOrder: configuration.pageblockOrder,
                    watermarks: marks
                )
            )
        }
        self.zones = zones
        for zone in zones { zone.lockHeld { Self.populate(zone) } }
    }

    private static func populate(_ zone: Zone) {
        var pfn = zone.start
        while pfn < zone.end {
            var order = min(zone.orderCount - 1, pfn == 0 ? zone.orderCount - 1 : pfn.trailingZeroBitCount)
            while pfn + (1 << order) > zone.end { order -= 1 }
            zone.table.setHead(pfn, state: .allocated, order: order, migratetype: .movable)
            _ = zone.freeOne(pfn, order: order, migratetype: zone.pageblockMigratetype(pfn), toTail: false)
            pfn += 1 << order
        }
    }

    // MARK: Allocation

    /// Allocates a block of `2^order` frames and returns its first frame.
    ///
    /// Zones are tried from the last to the first (a `GFP_KERNEL` zonelist: Normal before DMA32
    /// before DMA). Within a zone the block comes from `migratetype`'s lists, then CMA for
    /// movable allocations, then by stealing in the kernel's fallback order. A userspace pool has
    /// no reclaim to wait for, so allocation may dip into the watermark reserves; the reserves
    /// gate what free page reporting may take.
    @inlinable
    public func allocate(order: Int, migratetype: Migratetype = .movable) throws(BuddyError) -> Int {
        guard order >= 0, order < self.orderCount else { throw BuddyError(.orderOutOfRange, order: order) }
        guard migratetype.isAllocatable else {
            throw BuddyError(.invalidMigratetype, order: order, detail: "cannot allocate from \(migratetype)")
        }
        var index = self.zones.count &- 1
        while index >= 0 {
            let zone = self.zones[index]
            if let frame = zone.lockHeld({ zone.allocateLocked(order: order, migratetype: migratetype) }) {
                return frame
            }
            index &-= 1
        }
        throw BuddyError(.outOfMemory, order: order)
    }

    /// Frees the block of `2^order` frames starting at `frame`, which must have been allocated
    /// with that order. Merges it with free buddies and, if the result reaches the registered
    /// reporting order, notifies the reporting engine.
    @inlinable
    public func free(frame: Int, order: Int) throws(BuddyError) {
        guard order >= 0, order < self.orderCount else {
            throw BuddyError(.orderOutOfRange, frame: frame, order: order)
        }
        guard frame >= 0, frame < self.frameCount, frame &+ (1 &<< order) <= self.frameCount else {
            throw BuddyError(.frameOutOfRange, frame: frame, order: order)
        }
        guard frame & ((1 &<< order) &- 1) == 0 else { throw BuddyError(.unalignedFrame, frame: frame, order: order) }
        let zone = self.zone(containing: frame)
        let table = self.table
        let merged = try zone.lockHeld { () throws(BuddyError) -> Int in
            guard table.state(frame) == .allocated else {
                throw BuddyError(
                    .notAllocated,
                    frame: frame,
                    order: order,
                    detail: "frame is \(table.state(frame)), not the start of an allocated block"
                )
            }
            let actual = Int(table.order[frame])
            guard actual == order else {
                throw BuddyError(
                    .wrongOrder,
                    frame: frame,
                    order: order,
                    detail: "block was allocated with order \(actual)"
                )
            }
            return zone.freeLocked(frame, order: order)
        }
        if merged >= self.notifyOrder.load(ordering: .relaxed),
            self.reportingState.load(ordering: .relaxed) != Self.reportingRequested
        {
            self.notifyFree(order: merged)
        }
    }

    @usableFromInline
    func notifyFree(order: Int) {
        // Called under the lock, so that once detachFreeNotifier returns no notification of the
        // detached engine is still running (synchronize_rcu in page_reporting_unregister): it
        // could otherwise move the state word of the next engine.
        self.notifier.withLock { $0?.blockFreed(order: order) }
    }

    /// The zone whose frames include `frame`.
    @inlinable
    public func zone(containing frame: Int) -> Zone {
        let zones = self.zones
        var index = zones.count &- 1
        while index > 0 && zones[index].start > frame { index &-= 1 }
        return zones[index]
    }

    // MARK: Observers

    /// Tells the reuse observer about every reused run still buffered. The reporting engine calls
    /// it before each report, so a reuse always reaches the observer before a later report of the
    /// same frames; an agent also calls it on a short timer.
    public func flushReuse() {
        for zone in self.zones { zone.lockHeld { zone.deliverReuse() } }
    }

    /// Sets (or clears, with `nil`) the observer told about discarded frames that are reused.
    public func setReuseObserver(_ observer: (any ReuseObserver)?) {
        // Each zone keeps its own reference, read under the zone lock it already holds when it
        // allocates: no second lock on the allocation path.
        for zone in self.zones { zone.lockHeld { zone.counters.pointee.reuseObserver = observer } }
    }

    /// Attaches the one free block notifier (the reporting engine) for frees reaching `order`.
    /// A second attach is refused with ``BuddyError/Code-swift.struct/busy``, like the kernel's
    /// `page_reporting_register` returning `-EBUSY`.
    public func attachFreeNotifier(_ notifier: any FreeBlockNotifier, order: Int) throws(BuddyError) {
        guard order >= 0, order < self.orderCount else { throw BuddyError(.orderOutOfRange, order: order) }
        try self.notifier.withLock { (current) throws(BuddyError) in
            guard current == nil else {
                throw BuddyError(.busy, detail: "a free page reporting device is already registered")
            }
            current = notifier
            self.reportingState.store(0, ordering: .releasing)
            self.notifyOrder.store(order, ordering: .relaxed)
        }
    }

    /// Detaches `notifier` if it is the attached one. After this returns no notification of it
    /// is running or starts.
    public func detachFreeNotifier(_ notifier: any FreeBlockNotifier) {
        self.notifier.withLock { current in
            guard let attached = current, attached === notifier else { return }
            self.notifyOrder.store(.max, ordering: .relaxed)
            current = nil
        }
    }

    // MARK: Inspection

    /// Counters summed over all zones.
    public var statistics: AllocatorStatistics {
        var total = AllocatorStatistics(pageSize: self.configuration.pageSize, totalPages: self.frameCount)
        for zone in self.zones {
            let stats = zone.statistics
            total.freePages += stats.freePages
            total.isolatedPages += stats.isolatedPages
            total.allocatedPages += stats.allocatedPages
            total.discardedPages += stats.discardedPages
            total.zones.append(stats)
        }
        return total
    }

    /// What the allocator knows about one frame.
    public func frameInfo(_ frame: Int) -> FrameInfo? {
        guard frame >= 0, frame < self.frameCount else { return nil }
        let zone = self.zone(containing: frame)
        return zone.lockHeld {
            let state: FrameInfo.State
            switch self.table.state(frame) {
            case .tail: state = .inBlock
            case .buddy: state = .free
            case .allocated: state = .allocated
            case .isolated: state = .isolated
            }
            return FrameInfo(
                state: state,
                order: state == .inBlock ? nil : Int(self.table.order[frame]),
                migratetype: state == .inBlock ? nil : self.table.migratetype(frame),
                pageblockMigratetype: zone.pageblockMigratetype(frame),
                isReported: self.table.isReported(frame),
                isDiscarded: self.table.isDiscarded(frame)
            )
        }
    }

    /// The frames the host holds discarded, as sorted, non-adjacent ranges. Each zone is read
    /// under its lock; the network agent sends this as `Sync` after a (re)connect.
    public func discardedRanges() -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        for zone in self.zones {
            zone.lockHeld {
                guard zone.discardedPages > 0 else { return }
                _ = self.table.discardedRuns(zone.start..<zone.end, clear: false) { first, length in
                    ranges.append(first..<(first + length))
                }
            }
        }
        // Merge ranges that touch across a zone boundary.
        var merged: [Range<Int>] = []
        for range in ranges {
            if let last = merged.last, last.upperBound == range.lowerBound {
                merged[merged.count - 1] = last.lowerBound..<range.upperBound
            } else {
                merged.append(range)
            }
        }
        return merged
    }

    /// Replaces a zone's watermarks (the kernel's `min_free_kbytes` / `watermark_scale_factor`).
    public func setWatermarks(_ watermarks: Watermarks, zone index: Int) throws(BuddyError) {
        guard self.zones.indices.contains(index) else {
            throw BuddyError(.invalidConfiguration, detail: "no zone \(index)")
        }
        guard watermarks.min >= 0, watermarks.min <= watermarks.low, watermarks.low <= watermarks.high else {
            throw BuddyError(.invalidConfiguration, detail: "watermarks must satisfy 0 <= min <= low <= high")
        }
        let zone = self.zones[index]
        zone.lockHeld { zone.watermarks = watermarks }
    }

    // MARK: Pageblocks

    /// Gives the pageblock holding `frame` a new migratetype and moves its free blocks to that
    /// type's lists (`set_pageblock_migratetype` + `move_freepages_block`), e.g. to set aside CMA
    /// or high-atomic reserves. Use ``isolatePageblock(frame:)`` for `isolate`.
    public func setPageblockMigratetype(frame: Int, to migratetype: Migratetype) throws(BuddyError) {
        guard frame >= 0, frame < self.frameCount else { throw BuddyError(.frameOutOfRange, frame: frame) }
        guard migratetype != .isolate else {
            throw BuddyError(.invalidMigratetype, frame: frame, detail: "use isolatePageblock(frame:)")
        }
        let zone = self.zone(containing: frame)
        try zone.lockHeld { () throws(BuddyError) in
            guard zone.pageblockMigratetype(frame) != .isolate else {
                throw BuddyError(.invalidMigratetype, frame: frame, detail: "pageblock is isolated; undo that first")
            }
            zone.splitFreeBlock(covering: frame, downTo: zone.pageblockOrder)
            zone.setPageblockMigratetype(frame, migratetype)
            _ = zone.moveFreePagesBlock(frame, to: migratetype)
            zone.remergePageblock(frame)
        }
    }

    /// Takes the pageblock holding `frame` out of service: its free blocks move to the isolate
    /// lists, where neither allocation nor reporting touches them, and frees into it stay there.
    public func isolatePageblock(frame: Int) throws(BuddyError) {
        guard frame >= 0, frame < self.frameCount else { throw BuddyError(.frameOutOfRange, frame: frame) }
        let zone = self.zone(containing: frame)
        zone.lockHeld {
            guard zone.pageblockMigratetype(frame) != .isolate else { return }
            zone.splitFreeBlock(covering: frame, downTo: zone.pageblockOrder)
            zone.setPageblockMigratetype(frame, .isolate)
            _ = zone.moveFreePagesBlock(frame, to: .isolate)
            // Next to an isolated pageblock, its free pages now merge with the neighbour's.
            zone.remergePageblock(frame)
        }
    }

    /// Returns an isolated pageblock to service as `migratetype`, merging its free blocks again.
    public func undoIsolatePageblock(frame: Int, to migratetype: Migratetype = .movable) throws(BuddyError) {
        guard frame >= 0, frame < self.frameCount else { throw BuddyError(.frameOutOfRange, frame: frame) }
        guard migratetype != .isolate else { throw BuddyError(.invalidMigratetype, frame: frame) }
        let zone = self.zone(containing: frame)
        zone.lockHeld {
            guard zone.pageblockMigratetype(frame) == .isolate else { return }
            // Free pages of neighbouring isolated pageblocks merge with each other; take this
            // pageblock's share out of such a block, or the neighbour's pages would move too.
            zone.splitFreeBlock(covering: frame, downTo: zone.pageblockOrder)
            zone.setPageblockMigratetype(frame, migratetype)
            _ = zone.moveFreePagesBlock(frame, to: migratetype)
            zone.remergePageblock(frame)
        }
    }
}

/// Pageblock migratetypes, one byte per pageblock; each byte is guarded by the lock of the zone
/// holding the pageblock (zones start on pageblock boundaries, so no byte is shared).
private final class PageblockTable: @unchecked Sendable {
    let types: UnsafeMutablePointer<UInt8>
    init(count: Int) {
        self.types = .allocate(capacity: count)
        self.types.initialize(repeating: Migratetype.movable.rawValue, count: count)
    }
    deinit { self.types.deallocate() }
}

/// Counters summed over all zones, with each zone's own.
public struct AllocatorStatistics: Sendable, Hashable {
    public var pageSize: Int
    public var totalPages: Int
    public var freePages = 0
    public var isolatedPages = 0
    public var allocatedPages = 0
    public var discardedPages = 0
    public var zones: [ZoneStatistics] = []
}

/// What the allocator knows about one frame.
public struct FrameInfo: Sendable, Hashable {
    public enum State: Sendable, Hashable {
        /// Head of a free block.
        case free
        /// Head of an allocated block.
        case allocated
        /// Head of a block isolated by the reporting engine.
        case isolated
        /// Inside a block headed by an earlier frame.
        case inBlock
    }
    public var state: State
    /// The block's order, for a head frame.
    public var order: Int?
    /// The list (free) or request (allocated) migratetype, for a head frame.
    public var migratetype: Migratetype?
    public var pageblockMigratetype: Migratetype
    /// `PageReported`.
    public var isReported: Bool
    /// Whether the host holds this frame's memory discarded.
    public var isDiscarded: Bool
}
