/// Which frames of a block just allocated the host held discarded until that allocation: what an
/// allocation that must be zeroed needs to know, because a discarded frame already reads back as
/// zeroes (if the backing really discarded it) and need not be written.
///
/// Filled by ``BuddyAllocator/allocate(order:migratetype:discarded:)`` under the zone lock,
/// before the allocation clears the frames' discarded bits. Make one per allocating thread and
/// reuse it: its storage is sized once for the largest block, so filling it never allocates.
public struct DiscardedFrames: Sendable {
    /// Frames in the block the last allocation returned.
    public private(set) var frameCount = 0
    /// How many of them were discarded.
    public private(set) var discardedCount = 0
    // Bit i: frame `first + i` was discarded.
    @usableFromInline var words: [UInt64]

    /// Storage for blocks up to `maximumOrder` (the allocator's `orderCount - 1`).
    public init(maximumOrder: Int) {
        self.words = [UInt64](repeating: 0, count: max(1, (1 << maximumOrder) / 64))
    }

    /// Whether frame `index` of the block (0 is its first frame) was discarded.
    public func contains(_ index: Int) -> Bool {
        precondition(index >= 0 && index < self.frameCount, "frame \(index) is not in the block")
        return self.words[index >> 6] & (1 << UInt64(index & 63)) != 0
    }

    /// Calls `body` with each maximal run of frames (relative to the block's first frame) that
    /// were discarded (`discarded: true`) or not (`false`), in order.
    public func forEachRun(discarded: Bool, _ body: (Range<Int>) -> Void) {
        var start = -1
        for index in 0..<self.frameCount {
            let bit = self.words[index >> 6] & (1 << UInt64(index & 63)) != 0
            if bit == discarded {
                if start < 0 { start = index }
            } else if start >= 0 {
                body(start..<index)
                start = -1
            }
        }
        if start >= 0 { body(start..<self.frameCount) }
    }

    /// Copies the discarded bits of the aligned block of `count` frames at `frame`.
    mutating func capture(_ table: FrameTable, frame: Int, count: Int, any: Bool) {
        self.frameCount = count
        let wordCount = max(1, count >> 6)
        precondition(wordCount <= self.words.count, "DiscardedFrames made for smaller blocks")
        self.words.withUnsafeMutableBufferPointer { words in
            guard any else {
                for index in 0..<wordCount { words[index] = 0 }
                self.discardedCount = 0
                return
            }
            if count < 64 {
                // An aligned block below 64 frames lies inside one bitmap word.
                let mask = (UInt64(1) << UInt64(count)) &- 1
                words[0] = (table.discarded[frame >> 6] >> UInt64(frame & 63)) & mask
                self.discardedCount = words[0].nonzeroBitCount
                return
            }
            var total = 0
            for index in 0..<wordCount {
                let word = table.discarded[(frame >> 6) + index]
                words[index] = word
                total += word.nonzeroBitCount
            }
            self.discardedCount = total
        }
    }
}

extension BuddyAllocator {
    /// Allocates like ``allocate(order:migratetype:)`` and records in `discarded` which of the
    /// block's frames the host held discarded until now (the allocation clears that record, and
    /// tells the reuse observer, exactly as the plain allocation does).
    public func allocate(
        order: Int,
        migratetype: Migratetype = .movable,
        discarded: inout DiscardedFrames
    ) throws(BuddyError) -> Int {
        guard order >= 0, order < self.orderCount else { throw BuddyError(.orderOutOfRange, order: order) }
        guard migratetype.isAllocatable else {
            throw BuddyError(.invalidMigratetype, order: order, detail: "cannot allocate from \(migratetype)")
        }
        var index = self.zones.count - 1
        while index >= 0 {
            let zone = self.zones[index]
            let frame = zone.lockHeld { () -> Int? in
                guard let frame = zone.rmqueue(order: order, migratetype: migratetype) else { return nil }
                zone.table.setHead(frame, state: .allocated, order: order, migratetype: migratetype)
                zone.allocatedPages &+= 1 &<< order
                discarded.capture(zone.table, frame: frame, count: 1 << order, any: zone.discardedPages > 0)
                if zone.discardedPages > 0 { zone.clearDiscarded(frame, count: 1 &<< order) }
                return frame
            }
            if let frame { return frame }
            index -= 1
        }
        throw BuddyError(.outOfMemory, order: order)
    }
}
