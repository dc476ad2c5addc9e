/// A zone: a contiguous range of frames with its own lock, `free_area[order].free_list[mt]`,
/// counters and watermarks.
///
/// All mutable state here, and the frame metadata of the zone's frames, is touched only while
/// ``lock`` is held. Callers outside the module reach it through ``BuddyAllocator`` or, for the
/// reporting engine, through ``withLock(_:)`` and a ``LockedZone``.
public final class Zone: @unchecked Sendable {
    /// Position in `for_each_zone` order.
    public let index: Int
    /// The zone's name, e.g. `Normal` or `DMA32`.
    public let name: String
    /// The frames the zone spans.
    public let frames: Range<Int>

    @usableFromInline let lock = ZoneLock()
    @usableFromInline let table: FrameTable
    @usableFromInline let pageblockMigratetypes: UnsafeMutablePointer<UInt8>
    @usableFromInline let orderCount: Int
    @usableFromInline let pageblockOrder: Int
    @usableFromInline let start: Int
    @usableFromInline let end: Int

    // free_area[order].free_list[mt] as head and tail frame indices, and free_area[order].nr_free.
    @usableFromInline let heads: UnsafeMutablePointer<UInt32>
    @usableFromInline let tails: UnsafeMutablePointer<UInt32>
    @usableFromInline let nrFree: UnsafeMutablePointer<Int>

    // The zone's counters live behind a pointer, not in stored properties: class stored
    // properties pay for dynamic exclusivity checks on every access, which cost more than the
    // rest of an order-0 allocation. The zone lock already serialises every access.
    @usableFromInline let counters: UnsafeMutablePointer<ZoneCounters>
    /// Reused runs waiting for delivery, as (first frame, count) pairs.
    @usableFromInline let reuseRuns: UnsafeMutablePointer<Int>

    /// `NR_FREE_PAGES`: pages on every free list but the isolate ones.
    @inlinable var freePages: Int {
        get { self.counters.pointee.freePages }
        set { self.counters.pointee.freePages = newValue }
    }
    /// `NR_FREE_CMA_PAGES`: pages on the CMA free lists.
    @inlinable var freeCMAPages: Int {
        get { self.counters.pointee.freeCMAPages }
        set { self.counters.pointee.freeCMAPages = newValue }
    }
    /// Pages taken off the free lists by `isolateFreePage` and not yet put back.
    @inlinable var isolatedPages: Int {
        get { self.counters.pointee.isolatedPages }
        set { self.counters.pointee.isolatedPages = newValue }
    }
    /// Pages in allocated blocks.
    @inlinable var allocatedPages: Int {
        get { self.counters.pointee.allocatedPages }
        set { self.counters.pointee.allocatedPages = newValue }
    }
    /// Frames whose memory the host has discarded (see ``LockedZone/markDiscarded(frame:order:)``).
    /// Setting it keeps the discard gates in step (see ``discardGate(order:)``).
    @inlinable var discardedPages: Int {
        get { self.counters.pointee.discardedPages }
        set {
            let had = self.counters.pointee.discardedPages != 0
            self.counters.pointee.discardedPages = newValue
            if had != (newValue != 0) { self.updateDiscardGates() }
        }
    }

    /// The bitmap an allocation of `order` tests for discarded frames, or zero: one word per
    /// order stored right after the zone's counters. Zero while nothing in the zone is
    /// discarded; else the discarded bitmap for a block that lies in one word (up to 64 frames),
    /// and ``FrameTable/allSet`` for a larger block, whose word then always sends the
    /// allocation to the full check.
    ///
    /// Read at a fixed offset from the counters pointer the allocation holds anyway, and
    /// compared with zero in memory, it costs a reporting-off allocation the one compare and
    /// branch that `discardedPages > 0` cost; a reporting-on allocation reads it again to test
    /// the word, without the separate test of the block's size.
    @inlinable @inline(__always)
    func discardGate(order: Int) -> UInt {
        UnsafeRawPointer(self.counters).load(
            fromByteOffset: MemoryLayout<ZoneCounters>.stride &+ order &* MemoryLayout<UInt>.stride,
            as: UInt.self
        )
    }

    /// Rewrites the discard gates after ``discardedPages`` went from zero to nonzero or back.
    @usableFromInline
    func updateDiscardGates() {
        let gates = (UnsafeMutableRawPointer(self.counters) + MemoryLayout<ZoneCounters>.stride)
            .assumingMemoryBound(to: UInt.self)
        let any = self.counters.pointee.discardedPages != 0
        for order in 0..<self.orderCount {
            let words = order <= 6 ? self.table.discarded : self.table.allSet
            gates[order] = any ? UInt(bitPattern: words) : 0
        }
    }
    /// Pageblocks currently marked `isolate` (the kernel's `has_isolate_pageblock`).
    @inlinable var isolatePageblocks: Int {
        get { self.counters.pointee.isolatePageblocks }
        set { self.counters.pointee.isolatePageblocks = newValue }
    }
    @inlinable var watermarks: Watermarks {
        get { self.counters.pointee.watermarks }
        set { self.counters.pointee.watermarks = newValue }
    }

    init(
        index: Int,
        layout: ZoneLayout,
        table: FrameTable,
        pageblockMigratetypes: UnsafeMutablePointer<UInt8>,
        orderCount: Int,
        pageblockOrder: Int,
        watermarks: Watermarks
    ) {
        self.index = index
        self.name = layout.name
        self.frames = layout.frames
        self.start = layout.frames.lowerBound
        self.end = layout.frames.upperBound
        self.table = table
        self.pageblockMigratetypes = pageblockMigratetypes
        self.orderCount = orderCount
        self.pageblockOrder = pageblockOrder
        self.reuseRuns = .allocate(capacity: Zone.reuseBatchCapacity * 2)
        // The counters, then one discard gate word per order (see discardGate(order:)).
        let counters = UnsafeMutableRawPointer.allocate(
            byteCount: MemoryLayout<ZoneCounters>.stride + orderCount * MemoryLayout<UInt>.stride,
            alignment: max(MemoryLayout<ZoneCounters>.alignment, MemoryLayout<UInt>.alignment)
        )
        (counters + MemoryLayout<ZoneCounters>.stride).initializeMemory(as: UInt.self, repeating: 0, count: orderCount)
        self.counters = counters.bindMemory(to: ZoneCounters.self, capacity: 1)
        self.counters.initialize(to: ZoneCounters(watermarks: watermarks))
        let lists = orderCount * Migratetype.count
        self.heads = .allocate(capacity: lists)
        self.heads.initialize(repeating: FrameTable.none, count: lists)
        self.tails = .allocate(capacity: lists)
        self.tails.initialize(repeating: FrameTable.none, count: lists)
        self.nrFree = .allocate(capacity: orderCount)
        self.nrFree.initialize(repeating: 0, count: orderCount)
    }

    deinit {
        self.counters.deinitialize(count: 1)
        UnsafeMutableRawPointer(self.counters).deallocate()
        self.reuseRuns.deallocate()
        self.heads.deallocate()
        self.tails.deallocate()
        self.nrFree.deallocate()
    }

    /// Runs `body` with the zone lock held and a view that may change the zone.
    ///
    /// The view is only valid inside `body`. Never call back into the ``BuddyAllocator`` from
    /// `body` (the lock is not recursive) and never wait in it for anything that may itself need
    /// the lock.
    @inlinable
    public func withLock<Result, Failure: Error>(
        _ body: (LockedZone) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try self.lockHeld { () throws(Failure) -> Result in try body(LockedZone(zone: self)) }
    }

    @inlinable
    func lockHeld<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        self.lock.lock()
        defer { self.lock.unlock() }
        return try body()
    }

    /// A snapshot of the zone's counters, taken under the lock.
    public var statistics: ZoneStatistics {
        self.lockHeld { self.statisticsLocked() }
    }

    func statisticsLocked() -> ZoneStatistics {
        var perOrder = [Int](repeating: 0, count: self.orderCount)
        for order in 0..<self.orderCount { perOrder[order] = self.nrFree[order] }
        return ZoneStatistics(
            name: self.name,
            frames: self.frames,
            freePages: self.freePages,
            freeCMAPages: self.freeCMAPages,
            isolatedPages: self.isolatedPages,
            allocatedPages: self.allocatedPages,
            discardedPages: self.discardedPages,
            nrFree: perOrder,
            watermarks: self.watermarks
        )
    }

    // MARK: Pageblocks

    @inlinable @inline(__always)
    func pageblockMigratetype(_ frame: Int) -> Migratetype {
        Migratetype(rawValue: self.pageblockMigratetypes[frame >> self.pageblockOrder])!
    }

    @inlinable @inline(__always)
    func setPageblockMigratetype(_ frame: Int, _ migratetype: Migratetype) {
        let block = frame >> self.pageblockOrder
        let old = Migratetype(rawValue: self.pageblockMigratetypes[block])!
        if old == .isolate { self.isolatePageblocks -= 1 }
        if migratetype == .isolate { self.isolatePageblocks += 1 }
        self.pageblockMigratetypes[block] = migratetype.rawValue
    }

    // MARK: Free lists

    @inlinable @inline(__always)
    func listIndex(_ order: Int, _ migratetype: Migratetype) -> Int {
        order &* Migratetype.count &+ Int(migratetype.rawValue)
    }

    @inlinable @inline(__always)
    func head(_ order: Int, _ migratetype: Migratetype) -> Int? {
        let head = self.heads[self.listIndex(order, migratetype)]
        return head == FrameTable.none ? nil : Int(head)
    }

    @inlinable @inline(__always)
    func isListEmpty(_ order: Int, _ migratetype: Migratetype) -> Bool {
        self.heads[self.listIndex(order, migratetype)] == FrameTable.none
    }

    /// `page_is_buddy`: the frame heads a free block of exactly this order in this zone.
    @inlinable @inline(__always)
    func isBuddy(_ frame: Int, order: Int) -> Bool {
        frame >= self.start && frame < self.end && self.table.state(frame) == .buddy
            && Int(self.table.order[frame]) == order
    }

    @inlinable @inline(__always)
    func account(_ order: Int, _ migratetype: Migratetype, _ sign: Int) {
        self.nrFree[order] &+= sign
        let pages = sign &* (1 &<< order)
        if migratetype != .isolate { self.freePages &+= pages }
        if migratetype == .cma { self.freeCMAPages &+= pages }
    }

    /// `add_to_free_list` / `add_to_free_list_tail`: makes `frame` a buddy head on the list.
    @inlinable @inline(__always)
    func addToFreeList(_ frame: Int, order: Int, migratetype: Migratetype, toTail: Bool) {
        let table = self.table
        table.setHead(frame, state: .buddy, order: order, migratetype: migratetype)
        let list = self.listIndex(order, migratetype)
        let value = UInt32(truncatingIfNeeded: frame)
        if toTail {
            let tail = self.tails[list]
            table.prev[frame] = tail
            table.next[frame] = FrameTable.none
            if tail == FrameTable.none { self.heads[list] = value } else { table.next[Int(tail)] = value }
            self.tails[list] = value
        } else {
            let head = self.heads[list]
            table.next[frame] = head
            table.prev[frame] = FrameTable.none
            if head == FrameTable.none { self.tails[list] = value } else { table.prev[Int(head)] = value }
            self.heads[list] = value
        }
        self.account(order, migratetype, 1)
    }

    @inlinable @inline(__always)
    func unlink(_ frame: Int, list: Int) {
        let table = self.table
        let prev = table.prev[frame]
        let next = table.next[frame]
        if prev == FrameTable.none { self.heads[list] = next } else { table.next[Int(prev)] = next }
        if next == FrameTable.none { self.tails[list] = prev } else { table.prev[Int(next)] = prev }
    }

    /// `del_page_from_free_list`: takes a buddy head off its list and clears Reported, so a
    /// split, merge or allocation never leaves a stale Reported flag behind. The caller gives
    /// the frame its new state.
    @inlinable @inline(__always)
    func deleteFromFreeList(_ frame: Int, order: Int) {
        let migratetype = self.table.migratetype(frame)
        self.unlink(frame, list: self.listIndex(order, migratetype))
        self.table.setTail(frame)
        self.account(order, migratetype, -1)
    }

    /// `move_to_free_list`: moves a buddy head to another migratetype's list of the same order.
    /// Like the kernel's `list_move`, this keeps Reported.
    func moveToFreeList(_ frame: Int, order: Int, migratetype: Migratetype) {
        let old = self.table.migratetype(frame)
        let reported = self.table.isReported(frame)
        self.unlink(frame, list: self.listIndex(order, old))
        self.account(order, old, -1)
        self.addToFreeList(frame, order: order, migratetype: migratetype, toTail: false)
        if reported { self.table.flags[frame] |= FrameTable.reportedBit }
    }

    /// `list_rotate_to_front`: makes `frame` the first entry, keeping the cyclic order.
    func rotateToFront(_ frame: Int, order: Int, migratetype: Migratetype) {
        let list = self.listIndex(order, migratetype)
        let value = UInt32(truncatingIfNeeded: frame)
        let oldHead = self.heads[list]
        guard oldHead != value, oldHead != FrameTable.none else { return }
        let table = self.table
        let oldTail = self.tails[list]
        let before = table.prev[frame]
        table.next[Int(oldTail)] = oldHead
        table.prev[Int(oldHead)] = oldTail
        table.next[Int(before)] = FrameTable.none
        self.tails[list] = before
        table.prev[frame] = FrameTable.none
        self.heads[list] = value
    }

    // MARK: Freeing and merging

    /// `__free_one_page`: returns the block to the free lists, merging with free buddies, and
    /// gives back the order of the block it ended up in (what the kernel passes to
    /// `page_reporting_notify_free`).
    @inlinable
    func freeOne(_ frame: Int, order: Int, migratetype: Migratetype, toTail forceTail: Bool) -> Int {
        let table = self.table
        table.setTail(frame)
        var pfn = frame
        var order = order
        let maxMergeOrder = self.orderCount &- 1
        while order < maxMergeOrder {
            let buddy = pfn ^ (1 &<< order)
            guard self.isBuddy(buddy, order: order) else { break }
            // Never merge across pageblocks whose types must not mix (the kernel's
            // `migratetype_is_mergeable`): an isolated pageblock must stay out of the allocator's
            // and the reporter's reach, and CMA or high-atomic pages must stay on their own lists,
            // or the free and CMA counts and the fallback rules would cover the wrong pages.
            if order >= self.pageblockOrder {
                let buddyMigratetype = self.pageblockMigratetype(buddy)
                if migratetype != buddyMigratetype && (!migratetype.isMergeable || !buddyMigratetype.isMergeable) {
                    break
                }
            }
            self.deleteFromFreeList(buddy, order: order)
            pfn &= buddy
            order &+= 1
        }
        let toTail = forceTail || self.buddyMergeLikely(pfn, order: order)
        self.addToFreeList(pfn, order: order, migratetype: migratetype, toTail: toTail)
        return order
    }

    /// `buddy_merge_likely`: if the block's buddy one order up is free, the block is likely to
    /// merge soon, so it goes to the tail where it is less likely to be allocated first.
    @inlinable @inline(__always)
    func buddyMergeLikely(_ pfn: Int, order: Int) -> Bool {
        guard order < self.orderCount &- 2 else { return false }
        let buddy = pfn ^ (1 &<< order)
        let combined = buddy & pfn
        let higherBuddy = combined ^ (1 &<< (order &+ 1))
        return self.isBuddy(higherBuddy, order: order &+ 1)
    }

    // MARK: Allocation

    /// `expand`: splits a block of order `high` down to `low`, putting each upper half back.
    @inlinable @inline(__always)
    func expand(_ frame: Int, low: Int, high: Int, migratetype: Migratetype) {
        var high = high
        while high > low {
            high &-= 1
            self.addToFreeList(frame &+ (1 &<< high), order: high, migratetype: migratetype, toTail: false)
        }
    }

    /// `__rmqueue_smallest`: the first block of at least `order` on this migratetype's lists.
    @inlinable
    func rmqueueSmallest(order: Int, migratetype: Migratetype) -> Int? {
        var current = order
        while current < self.orderCount {
            let head = self.heads[self.listIndex(current, migratetype)]
            if head != FrameTable.none {
                let frame = Int(head)
                self.deleteFromFreeList(frame, order: current)
                self.expand(frame, low: order, high: current, migratetype: migratetype)
                return frame
            }
            current &+= 1
        }
        return nil
    }

    /// `__rmqueue`: own lists first, CMA for movable allocations, then steal from the fallbacks.
    @inlinable
    func rmqueue(order: Int, migratetype: Migratetype) -> Int? {
        // Balance movable allocations between CMA and normal memory, as the kernel does once more
        // than half of the free memory is CMA.
        if migratetype == .movable && self.freeCMAPages > self.freePages / 2,
            let frame = self.rmqueueSmallest(order: order, migratetype: .cma)
        {
            return frame
        }
        while true {
            if let frame = self.rmqueueSmallest(order: order, migratetype: migratetype) { return frame }
            if migratetype == .movable, let frame = self.rmqueueSmallest(order: order, migratetype: .cma) {
                return frame
            }
            guard self.rmqueueFallback(order: order, startMigratetype: migratetype) else { return nil }
        }
    }

    /// Takes a block of `order` for an allocation and marks it allocated; reports discarded frames
    /// that come back into use to `reuse`.
    @inlinable
    func allocateLocked(order: Int, migratetype: Migratetype) -> Int? {
        guard let frame = self.rmqueue(order: order, migratetype: migratetype) else { return nil }
        // The test of clearDiscarded(_:count:), through the gate. The gate is tested before the
        // stores and read again after them, so that the test stays one compare of memory with
        // zero (a value kept for later would be loaded into a register and tested: one more
        // instruction in every allocation, reporting off included). The two paths make the same
        // stores in different orders, which keeps the optimiser from merging them and moving
        // the branch after them.
        if self.discardGate(order: order) == 0 {
            self.table.setHead(frame, state: .allocated, order: order, migratetype: migratetype)
            self.allocatedPages &+= 1 &<< order
            return frame
        }
        self.allocatedPages &+= 1 &<< order
        self.table.setHead(frame, state: .allocated, order: order, migratetype: migratetype)
        let words = UnsafePointer<UInt64>(bitPattern: self.discardGate(order: order)).unsafelyUnwrapped
        if words[frame &>> 6] != 0 { self.clearDiscardedFound(frame, count: 1 &<< order) }
        return frame
    }

    /// Clears the discarded bits of `count` frames from `frame` (a block) and tells the reuse
    /// observer about each run.
    ///
    /// Once the host has discarded anything, every allocation makes this test, and almost every
    /// one finds no discarded frame in its block: the test is inlined into the allocation, and
    /// only a block with discarded frames pays for the call (on the simulator's churn workload
    /// the call alone was three quarters of reporting's whole cost in instructions).
    /// ``allocateLocked(order:migratetype:)`` makes the same test through ``discardGate(order:)``.
    @inlinable @inline(__always)
    func clearDiscarded(_ frame: Int, count: Int) {
        // An aligned block of up to 64 frames lies in one bitmap word: if no frame of that word
        // is discarded, none of the block is. (Reported blocks are large, so a word is nearly
        // always all discarded or not at all; a word that is partly is sorted out by the call.)
        if count <= 64 && self.table.discarded[frame &>> 6] == 0 { return }
        self.clearDiscardedFound(frame, count: count)
    }

    /// ``clearDiscarded(_:count:)`` for a block that may hold discarded frames.
    @usableFromInline
    func clearDiscardedFound(_ frame: Int, count: Int) {
        let table = self.table
        if count <= 64 {
            let word = frame &>> 6
            let mask = (count == 64 ? UInt64.max : (1 &<< UInt64(count)) &- 1) &<< UInt64(frame & 63)
            let bits = table.discarded[word] & mask
            guard bits != 0 else { return }
            if bits == mask {
                table.discarded[word] &= ~mask
                self.discardedPages &-= count
                self.recordReuse(first: frame, count: count)
                return
            }
        }
        let cleared = table.discardedRuns(frame..<(frame + count), clear: true) { first, length in
            self.recordReuse(first: first, count: length)
        }
        self.discardedPages &-= cleared
    }

    /// Runs of reused frames wait here, under the zone lock, until ``deliverReuse()``: telling
    /// the observer on every allocation cost more than the rest of the allocation.
    @usableFromInline static let reuseBatchCapacity = 128

    /// Buffers a run of reused frames, joining it to the previous one when they touch.
    @inlinable
    func recordReuse(first: Int, count: Int) {
        let counters = self.counters
        let buffered = counters.pointee.reuseRunCount
        if buffered > 0 {
            let last = (buffered &- 1) &* 2
            if self.reuseRuns[last] &+ self.reuseRuns[last &+ 1] == first {
                self.reuseRuns[last &+ 1] &+= count
                return
            }
            if buffered == Self.reuseBatchCapacity { self.deliverReuse() }
        }
        let slot = counters.pointee.reuseRunCount &* 2
        self.reuseRuns[slot] = first
        self.reuseRuns[slot &+ 1] = count
        counters.pointee.reuseRunCount &+= 1
    }

    /// Tells the observer about every buffered run, in order, and empties the buffer.
    @usableFromInline
    func deliverReuse() {
        let buffered = self.counters.pointee.reuseRunCount
        guard buffered > 0 else { return }
        self.counters.pointee.reuseRunCount = 0
        guard let observer = self.counters.pointee.reuseObserver else { return }
        for run in 0..<buffered {
            observer.framesReused(first: self.reuseRuns[run * 2], count: self.reuseRuns[run * 2 + 1])
        }
    }

    /// Frees an allocated block after the caller checked it; returns the merged order.
    @inlinable
    func freeLocked(_ frame: Int, order: Int) -> Int {
        self.allocatedPages &-= 1 &<< order
        if order > self.pageblockOrder && self.spansUnmergeablePageblocks(frame, order: order) {
            return self.freeSplitByPageblock(frame, order: order, toTail: false)
        }
        return self.freeOne(frame, order: order, migratetype: self.pageblockMigratetype(frame), toTail: false)
    }

    /// Whether a block larger than a pageblock spans pageblocks whose free pages must not share a
    /// list (an isolated, CMA or high-atomic pageblock next to one of another type).
    @usableFromInline
    func spansUnmergeablePageblocks(_ frame: Int, order: Int) -> Bool {
        let first = self.pageblockMigratetype(frame)
        let end = frame + 1 << order
        var pfn = frame + 1 << self.pageblockOrder
        while pfn < end {
            let type = self.pageblockMigratetype(pfn)
            if type != first && (!type.isMergeable || !first.isMergeable) { return true }
            pfn += 1 << self.pageblockOrder
        }
        return false
    }

    /// `split_large_buddy`: frees a block pageblock by pageblock, each with its own pageblock's
    /// type, so a pageblock isolated (or made CMA or high-atomic) while the block was allocated or
    /// isolated does not end up on another type's lists, nor the others on its lists. Returns the
    /// largest order the pieces merged to.
    @usableFromInline
    func freeSplitByPageblock(_ frame: Int, order: Int, toTail: Bool) -> Int {
        var merged = 0
        let end = frame + 1 << order
        var pfn = frame
        while pfn < end {
            let type = self.pageblockMigratetype(pfn)
            merged = max(merged, self.freeOne(pfn, order: self.pageblockOrder, migratetype: type, toTail: toTail))
            pfn += 1 << self.pageblockOrder
        }
        return merged
    }

    // MARK: Watermarks

    /// `zone_watermark_ok` with `ALLOC_CMA`, the only way the reporting engine calls it.
    @inlinable
    func watermarkOK(order: Int, mark: Int) -> Bool {
        let free = self.freePages &- ((1 &<< order) &- 1)
        guard free > mark else { return false }
        if order == 0 { return true }
        for current in order..<self.orderCount {
            if !self.isListEmpty(current, .unmovable) || !self.isListEmpty(current, .movable)
                || !self.isListEmpty(current, .reclaimable) || !self.isListEmpty(current, .cma)
            {
                return true
            }
        }
        return false
    }
}

/// The counters a zone keeps under its lock.
@usableFromInline
struct ZoneCounters {
    @usableFromInline var freePages = 0
    @usableFromInline var freeCMAPages = 0
    @usableFromInline var isolatedPages = 0
    @usableFromInline var allocatedPages = 0
    @usableFromInline var discardedPages = 0
    @usableFromInline var isolatePageblocks = 0
    @usableFromInline var watermarks: Watermarks
    /// Told about discarded frames that are allocated again; set on every zone at once.
    @usableFromInline var reuseObserver: (any ReuseObserver)?
    /// Runs buffered in `Zone.reuseRuns`.
    @usableFromInline var reuseRunCount = 0

    @usableFromInline init(watermarks: Watermarks) { self.watermarks = watermarks }
}

/// A zone's counters at one moment.
public struct ZoneStatistics: Sendable, Hashable {
    public var name: String
    public var frames: Range<Int>
    /// `NR_FREE_PAGES`: free pages outside isolated pageblocks.
    public var freePages: Int
    /// Free pages in CMA pageblocks.
    public var freeCMAPages: Int
    /// Pages isolated by the reporting engine and not yet put back.
    public var isolatedPages: Int
    /// Pages in allocated blocks.
    public var allocatedPages: Int
    /// Pages the host has discarded.
    public var discardedPages: Int
    /// `free_area[order].nr_free` for each order.
    public var nrFree: [Int]
    public var watermarks: Watermarks
}
