extension Zone {
    /// `__isolate_free_page`: takes a free block off its list for the reporting engine.
    ///
    /// Refused (returns `false`) when taking it would leave the zone at or below
    /// `min + 2^order` free pages: reporting must never eat the reserve the zone keeps for
    /// allocations that cannot wait.
    func isolateFreePage(_ frame: Int, order: Int) -> Bool {
        let blockType = self.pageblockMigratetype(frame)
        if blockType != .isolate {
            // Obey watermarks as if the page were being allocated: a raised order-0 check
            // stands in for the high-order one since we know the block exists.
            guard self.watermarkOK(order: 0, mark: self.watermarks.min + (1 << order)) else { return false }
        }
        let listType = self.table.migratetype(frame)
        self.deleteFromFreeList(frame, order: order)
        self.table.setHead(frame, state: .isolated, order: order, migratetype: listType)
        self.isolatedPages += 1 << order
        // An isolated block of at least half a pageblock makes its pageblocks movable, as the
        // kernel does, unless they are reserves that must keep their type.
        if order >= self.pageblockOrder - 1 {
            let blocks = max(1, 1 << max(order - self.pageblockOrder, 0))
            for block in 0..<blocks {
                let pfn = frame + block << self.pageblockOrder
                let type = self.pageblockMigratetype(pfn)
                if type != .isolate && type != .cma && type != .highAtomic {
                    self.setPageblockMigratetype(pfn, .movable)
                }
            }
        }
        return true
    }

    /// `__putback_isolated_page`: returns an isolated block to the free lists, merging as usual
    /// but without notifying the reporting engine (the engine itself is the caller).
    func putbackIsolatedPage(_ frame: Int, order: Int, migratetype: Migratetype, toTail: Bool) {
        precondition(
            self.table.state(frame) == .isolated && Int(self.table.order[frame]) == order,
            "putback of frame \(frame) order \(order), which is not an isolated block of that order"
        )
        self.isolatedPages -= 1 << order
        if order > self.pageblockOrder && self.spansUnmergeablePageblocks(frame, order: order) {
            _ = self.freeSplitByPageblock(frame, order: order, toTail: toTail)
            return
        }
        _ = self.freeOne(frame, order: order, migratetype: migratetype, toTail: toTail)
    }

    /// Sets the discarded bit on every frame of a block; returns how many were newly set.
    @discardableResult
    func markDiscarded(_ frame: Int, order: Int) -> Int {
        let newlySet = self.table.setDiscarded(frame..<(frame + 1 << order))
        self.discardedPages += newlySet
        return newlySet
    }

    /// Splits the free block covering `frame`, if it is larger than `order`, until the part
    /// holding `frame` is a block of `order` (the halves go back on the same list).
    func splitFreeBlock(covering frame: Int, downTo order: Int) {
        for candidate in (order + 1)..<self.orderCount {
            let head = frame & ~((1 << candidate) - 1)
            guard head >= self.start, self.isBuddy(head, order: candidate) else { continue }
            let type = self.table.migratetype(head)
            // Like any split in the kernel, this clears Reported (del_page_from_free_list).
            self.deleteFromFreeList(head, order: candidate)
            var current = candidate
            var block = head
            while current > order {
                current -= 1
                let upper = block + (1 << current)
                let keep = frame >= upper ? upper : block
                let other = keep == upper ? block : upper
                self.addToFreeList(other, order: current, migratetype: type, toTail: false)
                block = keep
            }
            self.addToFreeList(block, order: order, migratetype: type, toTail: false)
            return
        }
    }

    /// Re-frees every free block of the pageblock holding `frame`, so blocks held apart while the
    /// pageblock was isolated (or of another type) merge again. A block that merges with nothing
    /// keeps its Reported flag, as the kernel's `move_freepages_block` keeps it.
    func remergePageblock(_ frame: Int) {
        let blockPages = 1 << self.pageblockOrder
        let start = max(frame & ~(blockPages - 1), self.start)
        let end = min(start + blockPages, self.end)
        var pfn = start
        while pfn < end {
            let order = Int(self.table.order[pfn])
            if self.table.state(pfn) == .buddy {
                let type = self.table.migratetype(pfn)
                let reported = self.table.isReported(pfn)
                self.deleteFromFreeList(pfn, order: order)
                let merged = self.freeOne(pfn, order: order, migratetype: type, toTail: false)
                if reported && merged == order { self.table.flags[pfn] |= FrameTable.reportedBit }
            }
            pfn += self.table.state(pfn) == .tail ? 1 : 1 << order
        }
    }
}
