extension Zone {
    /// `can_steal_fallback`: whether an allocation may claim the whole pageblock it steals from.
    @inlinable
    func canStealFallback(order: Int, startMigratetype: Migratetype) -> Bool {
        // A block of pageblock order or more is stolen whole no matter what; below that, claim
        // the pageblock for unmovable and reclaimable allocations (to keep them clustered) and
        // for large enough movable ones.
        if order >= self.pageblockOrder { return true }
        return order >= self.pageblockOrder / 2 || startMigratetype == .reclaimable
            || startMigratetype == .unmovable
    }

    /// `find_suitable_fallback` with `only_stealable == false`.
    @inlinable
    func findSuitableFallback(order: Int, startMigratetype: Migratetype) -> (Migratetype, canSteal: Bool)? {
        guard self.nrFree[order] > 0, let (first, second) = startMigratetype.fallbacks else { return nil }
        let candidate: Migratetype
        if !self.isListEmpty(order, first) {
            candidate = first
        } else if !self.isListEmpty(order, second) {
            candidate = second
        } else {
            return nil
        }
        return (candidate, self.canStealFallback(order: order, startMigratetype: startMigratetype))
    }

    /// `__rmqueue_fallback`: steals from another migratetype's lists, largest block first, so
    /// that mixing of mobility types stays confined to as few pageblocks as possible.
    @usableFromInline
    func rmqueueFallback(order: Int, startMigratetype: Migratetype) -> Bool {
        var chosen: (order: Int, migratetype: Migratetype, canSteal: Bool)?
        var current = self.orderCount - 1
        while current >= order {
            defer { current -= 1 }
            guard
                let (candidate, canSteal) = self.findSuitableFallback(
                    order: current,
                    startMigratetype: startMigratetype
                )
            else { continue }
            // A movable allocation that cannot claim the whole block takes the smallest block that
            // fits instead: it will not cause permanent fragmentation, and it leaves large blocks
            // of other types alone.
            if !canSteal && startMigratetype == .movable && current > order {
                for smallest in order..<self.orderCount {
                    if let (fallback, steal) = self.findSuitableFallback(
                        order: smallest,
                        startMigratetype: startMigratetype
                    ) {
                        chosen = (smallest, fallback, steal)
                        break
                    }
                }
            } else {
                chosen = (current, candidate, canSteal)
            }
            break
        }
        guard let chosen, let frame = self.head(chosen.order, chosen.migratetype) else { return false }
        self.stealSuitableFallback(
            frame,
            currentOrder: chosen.order,
            startMigratetype: startMigratetype,
            wholeBlock: chosen.canSteal
        )
        return true
    }

    /// `steal_suitable_fallback`: claims the pageblock if the allocation is large or most of the
    /// block is free or alike; otherwise moves just this block to the requested type's list.
    func stealSuitableFallback(_ frame: Int, currentOrder: Int, startMigratetype: Migratetype, wholeBlock: Bool) {
        let oldBlockType = self.pageblockMigratetype(frame)
        // High-atomic reserves are never claimed by ordinary allocations.
        if oldBlockType != .highAtomic {
            if currentOrder >= self.pageblockOrder {
                self.changePageblockRange(frame, order: currentOrder, to: startMigratetype)
            } else if wholeBlock {
                let (freeMoved, movable) = self.moveFreePagesBlock(frame, to: startMigratetype)
                if freeMoved > 0 {
                    let blockPages = 1 << self.pageblockOrder
                    let alike: Int
                    if startMigratetype == .movable {
                        alike = movable
                    } else if oldBlockType == .movable {
                        alike = blockPages - (freeMoved + movable)
                    } else {
                        alike = 0
                    }
                    if freeMoved + alike >= 1 << (self.pageblockOrder - 1) {
                        self.setPageblockMigratetype(frame, startMigratetype)
                    }
                    return
                }
            }
        }
        self.moveToFreeList(frame, order: currentOrder, migratetype: startMigratetype)
    }

    /// `change_pageblock_range`: sets every pageblock a large block spans.
    func changePageblockRange(_ frame: Int, order: Int, to migratetype: Migratetype) {
        let blocks = 1 << max(order - self.pageblockOrder, 0)
        for block in 0..<blocks {
            self.setPageblockMigratetype(frame + block << self.pageblockOrder, migratetype)
        }
    }

    /// `move_freepages_block`: moves every free block of the pageblock holding `frame` to
    /// `migratetype`'s lists. Returns the pages moved and the pages of movable allocations seen.
    func moveFreePagesBlock(_ frame: Int, to migratetype: Migratetype) -> (moved: Int, movable: Int) {
        let blockPages = 1 << self.pageblockOrder
        var start = frame & ~(blockPages - 1)
        // Do not cross zone boundaries. The last pageblock of a zone may be partial; its free
        // blocks must still move, or isolating it would leave them allocatable and undoing it
        // would leave them on the isolate lists.
        let end = min(start + blockPages, self.end)
        if start < self.start { start = frame }
        var moved = 0
        var movable = 0
        var pfn = start
        while pfn < end {
            switch self.table.state(pfn) {
            case .buddy:
                let order = Int(self.table.order[pfn])
                self.moveToFreeList(pfn, order: order, migratetype: migratetype)
                moved += 1 << order
                pfn += 1 << order
            case .allocated:
                let order = Int(self.table.order[pfn])
                if self.table.migratetype(pfn) == .movable { movable += 1 << order }
                pfn += 1 << order
            case .isolated:
                pfn += 1 << Int(self.table.order[pfn])
            case .tail:
                pfn += 1
            }
        }
        return (moved, movable)
    }
}
