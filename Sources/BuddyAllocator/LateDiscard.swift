extension BuddyAllocator {
    /// Records that the host discarded `frames` after all: a report whose result came after the
    /// reporter stopped waiting for it was accepted, and its frames were kept free and out of
    /// reach meanwhile (quarantined in isolated pageblocks, see `GuestAgent.ReportQuarantine`).
    /// Sets their discarded bits, as a successful report's drain does, so that the record says
    /// what the host did and zeroed allocations may skip them.
    ///
    /// Every pageblock `frames` touches must be isolated (the caller keeps the frames free there:
    /// nothing is allocated from an isolated pageblock); otherwise nothing is marked and
    /// ``BuddyError/Code-swift.struct/invalidMigratetype`` is thrown. Frames already marked stay so.
    ///
    /// - Returns: how many frames were newly marked.
    @discardableResult
    public func markDiscardedInIsolatedPageblocks(frames: Range<Int>) throws(BuddyError) -> Int {
        guard frames.lowerBound >= 0, frames.upperBound <= self.frameCount else {
            throw BuddyError(.frameOutOfRange, frame: frames.lowerBound)
        }
        var marked = 0
        var start = frames.lowerBound
        while start < frames.upperBound {
            let zone = self.zone(containing: start)
            let end = min(frames.upperBound, zone.end)
            let part = start..<end
            marked += try zone.lockHeld { () throws(BuddyError) -> Int in
                var pfn = part.lowerBound
                while pfn < part.upperBound {
                    guard zone.pageblockMigratetype(pfn) == .isolate else {
                        throw BuddyError(.invalidMigratetype, frame: pfn, detail: "pageblock is not isolated")
                    }
                    pfn = (pfn >> zone.pageblockOrder + 1) << zone.pageblockOrder
                }
                let newlySet = self.table.setDiscarded(part)
                zone.discardedPages += newlySet
                return newlySet
            }
            start = end
        }
        return marked
    }
}
