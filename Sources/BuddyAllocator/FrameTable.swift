/// Per-frame metadata as struct-of-arrays, indexed by frame number: the allocator's `struct page`.
///
/// Ten bytes a frame (two list links, the order, a flags byte) instead of the kernel's 64-byte
/// `struct page`, and no object per page. Every frame belongs to exactly one zone and is only
/// read or written under that zone's lock, which is what makes the `@unchecked Sendable` sound.
@usableFromInline
final class FrameTable: @unchecked Sendable {
    /// "No frame": the end of a free list.
    @usableFromInline static let none: UInt32 = .max

    /// What a frame is. Only the first frame of a block (its head) carries a state; the rest of a
    /// block's frames are `.tail`.
    @usableFromInline
    enum State: UInt8 {
        /// Inside a block whose head is another frame.
        case tail = 0
        /// Head of a free block on a free list (`PageBuddy`).
        case buddy = 1
        /// Head of an allocated block.
        case allocated = 2
        /// Head of a block taken off the free lists by `__isolate_free_page`.
        case isolated = 3
    }

    // Flags byte layout: state, Reported, migratetype. Whether the host holds a frame discarded
    // is kept apart, in a bitmap: it is per frame, survives merges and splits, and is set and
    // cleared a whole block at a time, 64 frames per word operation.
    @usableFromInline static let stateMask: UInt8 = 0b0000_0011
    @usableFromInline static let reportedBit: UInt8 = 0b0000_0100
    @usableFromInline static let migratetypeShift: UInt8 = 4
    @usableFromInline static let migratetypeMask: UInt8 = 0b0111_0000

    @usableFromInline let next: UnsafeMutablePointer<UInt32>
    @usableFromInline let prev: UnsafeMutablePointer<UInt32>
    @usableFromInline let order: UnsafeMutablePointer<UInt8>
    @usableFromInline let flags: UnsafeMutablePointer<UInt8>
    /// One bit per frame: the host holds the frame's memory discarded.
    @usableFromInline let discarded: UnsafeMutablePointer<UInt64>
    /// As many words as ``discarded``, every bit set: what an allocation of a block larger than
    /// a word tests instead of the bitmap, so that it always makes the full check (see
    /// `Zone.discardGate(order:)`). Never written after init.
    @usableFromInline let allSet: UnsafeMutablePointer<UInt64>
    @usableFromInline let count: Int

    /// Bytes of metadata per frame, for the docs and the benchmark's memory figure.
    /// (The discarded bitmap and its all-set twin add two bits a frame, rounded down here.)
    static let bytesPerFrame = MemoryLayout<UInt32>.size * 2 + MemoryLayout<UInt8>.size * 2

    init(count: Int) {
        self.count = count
        self.next = .allocate(capacity: count)
        self.prev = .allocate(capacity: count)
        self.order = .allocate(capacity: count)
        self.flags = .allocate(capacity: count)
        self.discarded = .allocate(capacity: (count + 63) / 64)
        self.discarded.initialize(repeating: 0, count: (count + 63) / 64)
        self.allSet = .allocate(capacity: (count + 63) / 64)
        self.allSet.initialize(repeating: .max, count: (count + 63) / 64)
        self.next.initialize(repeating: FrameTable.none, count: count)
        self.prev.initialize(repeating: FrameTable.none, count: count)
        self.order.initialize(repeating: 0, count: count)
        self.flags.initialize(repeating: 0, count: count)
    }

    deinit {
        self.next.deallocate()
        self.prev.deallocate()
        self.order.deallocate()
        self.flags.deallocate()
        self.discarded.deallocate()
        self.allSet.deallocate()
    }

    @inlinable @inline(__always)
    func state(_ frame: Int) -> State {
        State(rawValue: self.flags[frame] & FrameTable.stateMask)!
    }

    /// Sets the state of a head frame and the migratetype it carries; clears Reported (only
    /// `setReported` sets it, and only on a buddy).
    @inlinable @inline(__always)
    func setHead(_ frame: Int, state: State, order: Int, migratetype: Migratetype) {
        self.flags[frame] = state.rawValue | (migratetype.rawValue << FrameTable.migratetypeShift)
        self.order[frame] = UInt8(truncatingIfNeeded: order)
    }

    /// Turns a former head into a tail frame (after a merge).
    @inlinable @inline(__always)
    func setTail(_ frame: Int) {
        self.flags[frame] = 0
        self.order[frame] = 0
    }

    @inlinable @inline(__always)
    func migratetype(_ frame: Int) -> Migratetype {
        Migratetype(rawValue: (self.flags[frame] & FrameTable.migratetypeMask) >> FrameTable.migratetypeShift)!
    }

    @inlinable @inline(__always)
    func isReported(_ frame: Int) -> Bool { self.flags[frame] & FrameTable.reportedBit != 0 }

    @inlinable @inline(__always)
    func isDiscarded(_ frame: Int) -> Bool { self.discarded[frame &>> 6] & (1 &<< UInt64(frame & 63)) != 0 }

    /// Sets the discarded bits of `range`; returns how many were not set before.
    func setDiscarded(_ range: Range<Int>) -> Int {
        var newlySet = 0
        self.forEachWord(of: range) { word, mask in
            newlySet += (mask & ~self.discarded[word]).nonzeroBitCount
            self.discarded[word] |= mask
        }
        return newlySet
    }

    /// Number of discarded frames in `range`.
    func discardedCount(_ range: Range<Int>) -> Int {
        var count = 0
        self.forEachWord(of: range) { word, mask in count += (self.discarded[word] & mask).nonzeroBitCount }
        return count
    }

    /// Calls `run` with each maximal run of discarded frames in `range`, in order (first frame,
    /// length), clearing the bits if `clear` is set; returns how many frames the runs hold.
    @usableFromInline
    func discardedRuns(_ range: Range<Int>, clear: Bool, _ run: (Int, Int) -> Void) -> Int {
        var cleared = 0
        var runStart = -1
        var runEnd = -1
        self.forEachWord(of: range) { word, mask in
            var bits = self.discarded[word] & mask
            if clear { self.discarded[word] &= ~mask }
            cleared += bits.nonzeroBitCount
            let base = word << 6
            while bits != 0 {
                let zeros = bits.trailingZeroBitCount
                let ones = (~(bits >> UInt64(zeros))).trailingZeroBitCount
                let start = base + zeros
                if runStart >= 0 && runEnd == start {
                    runEnd = start + ones  // continues a run from the previous word
                } else {
                    if runStart >= 0 { run(runStart, runEnd - runStart) }
                    runStart = start
                    runEnd = start + ones
                }
                bits = zeros + ones >= 64 ? 0 : bits & (UInt64.max << UInt64(zeros + ones))
            }
        }
        if runStart >= 0 { run(runStart, runEnd - runStart) }
        return cleared
    }

    /// Calls `body` with each word of the bitmap `range` touches and the mask of its bits in it.
    @inline(__always)
    func forEachWord(of range: Range<Int>, _ body: (Int, UInt64) -> Void) {
        guard !range.isEmpty else { return }
        let firstWord = range.lowerBound >> 6
        let lastWord = (range.upperBound - 1) >> 6
        for word in firstWord...lastWord {
            var mask = UInt64.max
            if word == firstWord { mask &= UInt64.max << UInt64(range.lowerBound & 63) }
            if word == lastWord {
                let end = range.upperBound & 63
                if end != 0 { mask &= (1 << UInt64(end)) - 1 }
            }
            body(word, mask)
        }
    }
}
