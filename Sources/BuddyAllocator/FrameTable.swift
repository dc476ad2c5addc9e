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

    // Flags byte layout. The discarded bit is per frame and survives merges and splits, so every
    // state change masks it in rather than overwriting the byte.
    @usableFromInline static let stateMask: UInt8 = 0b0000_0011
    @usableFromInline static let reportedBit: UInt8 = 0b0000_0100
    @usableFromInline static let discardedBit: UInt8 = 0b0000_1000
    @usableFromInline static let migratetypeShift: UInt8 = 4
    @usableFromInline static let migratetypeMask: UInt8 = 0b0111_0000

    @usableFromInline let next: UnsafeMutablePointer<UInt32>
    @usableFromInline let prev: UnsafeMutablePointer<UInt32>
    @usableFromInline let order: UnsafeMutablePointer<UInt8>
    @usableFromInline let flags: UnsafeMutablePointer<UInt8>
    @usableFromInline let count: Int

    /// Bytes of metadata per frame, for the docs and the benchmark's memory figure.
    static let bytesPerFrame = MemoryLayout<UInt32>.size * 2 + MemoryLayout<UInt8>.size * 2

    init(count: Int) {
        self.count = count
        self.next = .allocate(capacity: count)
        self.prev = .allocate(capacity: count)
        self.order = .allocate(capacity: count)
        self.flags = .allocate(capacity: count)
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
    }

    @inlinable @inline(__always)
    func state(_ frame: Int) -> State {
        State(rawValue: self.flags[frame] & FrameTable.stateMask)!
    }

    /// Sets the state of a head frame and the migratetype it carries; keeps the discarded bit and
    /// clears Reported (only `setReported` sets it, and only on a buddy).
    @inlinable @inline(__always)
    func setHead(_ frame: Int, state: State, order: Int, migratetype: Migratetype) {
        self.flags[frame] =
            (self.flags[frame] & FrameTable.discardedBit) | state.rawValue
            | (migratetype.rawValue << FrameTable.migratetypeShift)
        self.order[frame] = UInt8(truncatingIfNeeded: order)
    }

    /// Turns a former head into a tail frame (after a merge); keeps the discarded bit.
    @inlinable @inline(__always)
    func setTail(_ frame: Int) {
        self.flags[frame] &= FrameTable.discardedBit
        self.order[frame] = 0
    }

    @inlinable @inline(__always)
    func migratetype(_ frame: Int) -> Migratetype {
        Migratetype(rawValue: (self.flags[frame] & FrameTable.migratetypeMask) >> FrameTable.migratetypeShift)!
    }

    @inlinable @inline(__always)
    func isReported(_ frame: Int) -> Bool { self.flags[frame] & FrameTable.reportedBit != 0 }

    @inlinable @inline(__always)
    func isDiscarded(_ frame: Int) -> Bool { self.flags[frame] & FrameTable.discardedBit != 0 }
}
