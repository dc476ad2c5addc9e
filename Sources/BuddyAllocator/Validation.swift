/// A broken allocator invariant, found by ``BuddyAllocator/validate()``.
public struct InvariantViolation: Error, Hashable, Sendable, CustomStringConvertible {
    /// Which invariant broke, as a stable name (e.g. `unmerged_buddies`).
    public let invariant: String
    /// The zone it broke in.
    public let zone: String
    /// What exactly was found.
    public let detail: String

    public var description: String { "\(self.invariant) in zone \(self.zone): \(self.detail)" }
}

extension BuddyAllocator {
    /// Checks every invariant of every zone, each under its zone lock, and throws the first
    /// violation found.
    ///
    /// - every frame is in exactly one block, and every block head is aligned, inside its zone,
    ///   and free, allocated or isolated;
    /// - Reported only on free block heads;
    /// - free list links are consistent both ways, each list holds exactly the free blocks of its
    ///   order and migratetype, isolate lists only blocks of isolated pageblocks;
    /// - `nr_free`, `NR_FREE_PAGES`, the CMA, isolated, allocated and discarded counters match;
    /// - no two free buddies are left unmerged (except where isolation forbids the merge);
    /// - watermarks are ordered `min <= low <= high`.
    ///
    /// Costs a walk over all frames; meant for tests and debugging.
    public func validate() throws(InvariantViolation) {
        for zone in self.zones {
            if let violation = zone.lockHeld({ zone.findViolation() }) { throw violation }
        }
    }
}

extension Zone {
    func findViolation() -> InvariantViolation? {
        func violation(_ invariant: String, _ detail: String) -> InvariantViolation {
            InvariantViolation(invariant: invariant, zone: self.name, detail: detail)
        }
        let table = self.table
        let lists = self.orderCount * Migratetype.count
        var expectedOnList = [Int](repeating: 0, count: lists)
        var allocated = 0
        var isolated = 0
        var discarded = 0

        // Walk the zone block by block.
        var pfn = self.start
        while pfn < self.end {
            let state = table.state(pfn)
            guard state != .tail else {
                return violation("frame_state", "frame \(pfn) is inside no block (no head covers it)")
            }
            let order = Int(table.order[pfn])
            guard order < self.orderCount else {
                return violation("frame_state", "frame \(pfn) has order \(order) >= \(self.orderCount)")
            }
            guard pfn & ((1 << order) - 1) == 0, pfn + (1 << order) <= self.end else {
                return violation("frame_state", "block \(pfn) order \(order) is unaligned or crosses the zone end")
            }
            if table.isReported(pfn) && state != .buddy {
                return violation("reported_not_buddy", "frame \(pfn) is Reported but \(state)")
            }
            for tail in (pfn + 1)..<(pfn + (1 << order)) {
                if table.state(tail) != .tail || table.isReported(tail) {
                    return violation(
                        "frame_state",
                        "frame \(tail) inside block \(pfn) order \(order) has its own state"
                    )
                }
            }
            switch state {
            case .buddy:
                let type = table.migratetype(pfn)
                expectedOnList[self.listIndex(order, type)] += 1
                if type == .isolate && self.pageblockMigratetype(pfn) != .isolate {
                    return violation(
                        "isolate_list",
                        "free block \(pfn) is on an isolate list outside an isolated pageblock"
                    )
                }
                if order < self.orderCount - 1 {
                    let buddy = pfn ^ (1 << order)
                    if self.isBuddy(buddy, order: order) {
                        let own = self.pageblockMigratetype(pfn)
                        let other = self.pageblockMigratetype(buddy)
                        let blocked =
                            order >= self.pageblockOrder && own != other && (!own.isMergeable || !other.isMergeable)
                        if !blocked {
                            return violation(
                                "unmerged_buddies",
                                "free blocks \(pfn) and \(buddy) of order \(order) are buddies"
                            )
                        }
                    }
                }
            case .allocated:
                allocated += 1 << order
            case .isolated:
                isolated += 1 << order
            case .tail:
                break
            }
            discarded += table.discardedCount(pfn..<(pfn + (1 << order)))
            pfn += 1 << order
        }

        // Walk every free list both ways.
        var freePages = 0
        var cmaPages = 0
        for order in 0..<self.orderCount {
            var blocksAtOrder = 0
            for type in Migratetype.allCases {
                let list = self.listIndex(order, type)
                var count = 0
                var previous = FrameTable.none
                var cursor = self.heads[list]
                while cursor != FrameTable.none {
                    let frame = Int(cursor)
                    guard frame >= self.start, frame < self.end else {
                        return violation(
                            "free_list",
                            "\(type) order \(order) list links to frame \(frame) outside the zone"
                        )
                    }
                    guard table.state(frame) == .buddy, Int(table.order[frame]) == order,
                        table.migratetype(frame) == type
                    else {
                        return violation(
                            "free_list",
                            "\(type) order \(order) list holds frame \(frame), which is not a free block of that list"
                        )
                    }
                    guard table.prev[frame] == previous else {
                        return violation("free_list", "frame \(frame) has a wrong prev link on \(type) order \(order)")
                    }
                    count += 1
                    guard count <= expectedOnList[list] else {
                        return violation(
                            "free_list",
                            "\(type) order \(order) list is longer than its free blocks (cycle?)"
                        )
                    }
                    previous = cursor
                    cursor = table.next[frame]
                }
                guard self.tails[list] == previous else {
                    return violation("free_list", "\(type) order \(order) list tail does not match its last entry")
                }
                guard count == expectedOnList[list] else {
                    return violation(
                        "free_list",
                        "\(type) order \(order) list has \(count) blocks but \(expectedOnList[list]) free blocks carry it"
                    )
                }
                blocksAtOrder += count
                if type != .isolate { freePages += count << order }
                if type == .cma { cmaPages += count << order }
            }
            guard self.nrFree[order] == blocksAtOrder else {
                return violation(
                    "nr_free",
                    "order \(order): nr_free \(self.nrFree[order]) but \(blocksAtOrder) free blocks"
                )
            }
        }

        // Counters and watermarks.
        guard self.freePages == freePages else {
            return violation("free_pages", "NR_FREE_PAGES \(self.freePages) but the lists hold \(freePages)")
        }
        guard self.freeCMAPages == cmaPages else {
            return violation("free_pages", "NR_FREE_CMA_PAGES \(self.freeCMAPages) but the lists hold \(cmaPages)")
        }
        guard self.isolatedPages == isolated else {
            return violation("isolated_pages", "counter \(self.isolatedPages) but \(isolated) pages are isolated")
        }
        guard self.allocatedPages == allocated else {
            return violation("allocated_pages", "counter \(self.allocatedPages) but \(allocated) pages are allocated")
        }
        guard self.discardedPages == discarded else {
            return violation("discarded_pages", "counter \(self.discardedPages) but \(discarded) frames are discarded")
        }
        let marks = self.watermarks
        guard marks.min >= 0, marks.min <= marks.low, marks.low <= marks.high else {
            return violation("watermarks", "\(marks) is not ordered")
        }
        return nil
    }
}
