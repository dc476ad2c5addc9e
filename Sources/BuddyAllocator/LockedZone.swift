/// A view of a zone whose lock is held: what the free page reporting engine needs, and nothing
/// that could break the allocator's invariants.
///
/// Obtained from ``Zone/withLock(_:)`` and valid only inside that call.
public struct LockedZone {
    @usableFromInline let zone: Zone

    @usableFromInline init(zone: Zone) { self.zone = zone }

    /// The zone's position in `for_each_zone` order.
    public var index: Int { self.zone.index }

    /// The zone's watermarks.
    public var watermarks: Watermarks { self.zone.watermarks }

    /// `NR_FREE_PAGES`.
    public var freePages: Int { self.zone.freePages }

    /// `free_area[order].nr_free`.
    public func freeBlockCount(order: Int) -> Int { self.zone.nrFree[order] }

    /// `zone_watermark_ok(zone, order, mark, 0, ALLOC_CMA)`.
    public func watermarkOK(order: Int, mark: Int) -> Bool { self.zone.watermarkOK(order: order, mark: mark) }

    /// The first block on `free_area[order].free_list[migratetype]`, or `nil` if it is empty.
    public func firstFreeBlock(order: Int, migratetype: Migratetype) -> Int? {
        self.zone.head(order, migratetype)
    }

    /// The block after `frame` on its free list, or `nil` at the end.
    public func nextFreeBlock(after frame: Int) -> Int? {
        let next = self.zone.table.next[frame]
        return next == FrameTable.none ? nil : Int(next)
    }

    /// `PageReported`.
    public func isReported(_ frame: Int) -> Bool { self.zone.table.isReported(frame) }

    /// `PageBuddy(page) && buddy_order(page) == order`.
    public func isFreeBlock(_ frame: Int, order: Int) -> Bool { self.zone.isBuddy(frame, order: order) }

    /// `__SetPageReported`. Only a free block can carry the flag.
    public func setReported(_ frame: Int) {
        precondition(self.zone.table.state(frame) == .buddy, "Reported set on frame \(frame), which is not free")
        self.zone.table.flags[frame] |= FrameTable.reportedBit
    }

    /// `get_pageblock_migratetype`.
    public func pageblockMigratetype(of frame: Int) -> Migratetype { self.zone.pageblockMigratetype(frame) }

    /// `__isolate_free_page`; `false` when the zone's min watermark forbids it.
    public func isolateFreeBlock(_ frame: Int, order: Int) -> Bool {
        self.zone.isolateFreePage(frame, order: order)
    }

    /// `__putback_isolated_page`: back to the free lists (head or tail), merging, no notification.
    public func putbackIsolatedBlock(_ frame: Int, order: Int, migratetype: Migratetype, toTail: Bool) {
        self.zone.putbackIsolatedPage(frame, order: order, migratetype: migratetype, toTail: toTail)
    }

    /// `list_rotate_to_front`: makes `frame` the first block of its list.
    public func rotateToFront(_ frame: Int, order: Int, migratetype: Migratetype) {
        self.zone.rotateToFront(frame, order: order, migratetype: migratetype)
    }

    /// Records that the host has discarded the memory of an isolated block's frames.
    public func markDiscarded(_ frame: Int, order: Int) {
        precondition(self.zone.table.state(frame) == .isolated, "only an isolated block can be marked discarded")
        self.zone.markDiscarded(frame, order: order)
    }
}
