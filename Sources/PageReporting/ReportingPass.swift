import BuddyAllocator

extension PageReportingEngine {
    /// `page_reporting_process_zone`: every reportable free list of one zone, lowest order first,
    /// then the leftover partial batch. Returns the device's error, which ends the pass.
    func processZone(_ zone: Zone) -> (any Error)? {
        let capacity = self.configuration.capacity
        let order = self.reportingOrder
        // Guarantee progress: do nothing unless the zone could give up a full batch and stay above
        // its low watermark.
        let watermarkOK = zone.withLock { locked in
            locked.watermarkOK(order: 0, mark: locked.watermarks.low + (capacity << order))
        }
        guard watermarkOK else { return nil }

        var offset = capacity
        for currentOrder in order..<self.allocator.configuration.orderCount {
            for migratetype in Migratetype.allCases where migratetype != .isolate {
                // We do not pull pages from the isolate free list.
                if let error = self.cycle(zone: zone, order: currentOrder, migratetype: migratetype, offset: &offset) {
                    return error
                }
            }
        }

        // Report the leftover blocks before going idle.
        guard offset < capacity else { return nil }
        let failure = self.report(offset..<capacity)
        zone.withLock { locked in self.drain(locked, offset..<capacity, reported: failure == nil) }
        return failure
    }

    /// `page_reporting_cycle`: fill, report, drain on one free list until it runs out of
    /// unreported blocks, the budget is spent, isolation is refused or the device fails.
    func cycle(zone: Zone, order: Int, migratetype: Migratetype, offset: inout Int) -> (any Error)? {
        let capacity = self.configuration.capacity
        let budgeted = self.configuration.budget
        var budget = 0
        var failure: (any Error)?
        var returningFromReport = false

        while true {
            let mustReport = zone.withLock { locked -> Bool in
                var cursor: Int?
                if returningFromReport {
                    // Flush the reported blocks back, then start over from the head: the old
                    // position is meaningless since we dropped the lock.
                    self.drain(locked, 0..<capacity, reported: failure == nil)
                    if failure != nil { return false }
                    cursor = locked.firstFreeBlock(order: order, migratetype: migratetype)
                } else {
                    guard let first = locked.firstFreeBlock(order: order, migratetype: migratetype) else {
                        return false
                    }
                    cursor = first
                    // Enough calls for a sixteenth of the list plus one for blocks left over from
                    // the previous list: all of an idle system reported in about 30 seconds.
                    budget = (locked.freeBlockCount(order: order) + capacity * 16 - 1) / (capacity * 16)
                }

                var stoppedAt: Int?
                while let frame = cursor {
                    let next = locked.nextFreeBlock(after: frame)
                    if locked.isReported(frame) {
                        cursor = next
                        continue
                    }
                    if budgeted && budget < 0 {
                        // Budget spent: ask for another pass and leave this list.
                        self.allocator.reportingState.store(State.requested.rawValue, ordering: .releasing)
                        stoppedAt = frame
                        break
                    }
                    guard locked.isolateFreeBlock(frame, order: order) else {
                        stoppedAt = frame
                        break
                    }
                    offset -= 1
                    self.batch.entries[offset] = ReportEntry(frame: frame, order: order)
                    if offset > 0 {
                        cursor = next
                        continue
                    }
                    // Full: release the lock before waiting on the report.
                    return true
                }
                // Rotate the leftover blocks to the head so the next pass starts with them.
                if self.configuration.rotation, let stoppedAt,
                    locked.firstFreeBlock(order: order, migratetype: migratetype) != stoppedAt
                {
                    locked.rotateToFront(stoppedAt, order: order, migratetype: migratetype)
                }
                return false
            }
            guard mustReport else { return failure }
            failure = self.report(0..<capacity)
            offset = capacity
            budget -= 1
            returningFromReport = true
        }
    }

    /// Hands `range` of the batch to the device, outside every zone lock.
    func report(_ range: Range<Int>) -> (any Error)? {
        // Reuses buffered in the allocator go out first: a frame reused and freed again since
        // then may be in this very batch, and the host must hear of the reuse before the report.
        self.allocator.flushReuse()
        let batch = self.batch.view(range)
        do {
            try self.device.report(batch)
            let frames = batch.frameCount
            self.counters.withLock { counters in
                counters.reports += 1
                counters.framesReported += frames
            }
            return nil
        } catch {
            let frames = batch.frameCount
            self.counters.withLock { counters in
                counters.reports += 1
                counters.reportsFailed += 1
                counters.framesFailed += frames
                counters.lastError = "\(error)"
            }
            return error
        }
    }

    /// `page_reporting_drain`: puts the batch back on the free lists. Blocks the device accepted
    /// have their frames marked discarded, and are marked Reported if they are still a free block
    /// of the same order; one that merged must be reported again at its new order.
    func drain(_ locked: LockedZone, _ range: Range<Int>, reported: Bool) {
        let toTail = self.configuration.tailPutback
        for index in range {
            let entry = self.batch.entries[index]
            let migratetype = locked.pageblockMigratetype(of: entry.frame)
            if reported { locked.markDiscarded(entry.frame, order: entry.order) }
            locked.putbackIsolatedBlock(entry.frame, order: entry.order, migratetype: migratetype, toTail: toTail)
            // If the pages were not reported due to error skip flagging.
            guard reported else { continue }
            if locked.isFreeBlock(entry.frame, order: entry.order) { locked.setReported(entry.frame) }
        }
    }
}
