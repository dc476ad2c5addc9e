/// A set of page frame numbers below 2^32, kept as sorted, disjoint, non-adjacent ranges.
///
/// This is the broker's record of what one guest has discarded. Every update costs
/// O(log n) to find its place plus O(B) inside one leaf (B ≤ ``maximumLeafCount``), and the
/// frame and range counts are kept up to date as it goes, so reading them is O(1).
///
/// ## Layout
///
/// A two-level B+-tree: a sorted array of leaves, each leaf a sorted array of ranges. A range is
/// packed into one `UInt64` as `first << 32 | last` (both inclusive), so a range costs 8 bytes
/// and comparing packed values compares starts. Leaves are split when they overflow and merged
/// or rebalanced with a neighbour when they fall below a quarter full; their capacity is grown
/// and shrunk in small steps rather than doubled, so memory follows the range count (about
/// 9 bytes per range, 10 with malloc's overhead, in `LedgerBenchmarks`) rather than the leaf fill. Inserting or removing a leaf shifts the top
/// level, which has one pointer per ~256–512 ranges: at the ledger's sizing (32k ranges per
/// guest, ~100 leaves) that is a memmove of under a kilobyte, and it happens once per few
/// hundred updates.
///
/// It is a value type: copies share leaves until one of them is changed, and then only the top
/// level and the touched leaf are copied.
public struct FrameRangeSet: Sendable {
    /// Frames are below this bound, so a range's first and last frame each fit in 32 bits.
    public static let frameLimit: UInt64 = 1 << 32

    /// A leaf holding more ranges than this is split in two.
    public static let maximumLeafCount = 512
    /// A leaf holding fewer ranges than this is merged with or refilled from a neighbour, unless
    /// it is the only leaf. A quarter rather than a half, so that alternating inserts and removes
    /// at a boundary do not merge and split the same leaves over and over.
    public static let minimumLeafCount = maximumLeafCount / 4
    /// How full ``replaceAll(with:)`` packs its leaves: room for inserts before the first split.
    static let bulkLeafCount = maximumLeafCount * 3 / 4

    /// The ranges, in order; no leaf is empty.
    private var leaves: [[UInt64]] = []

    /// The number of frames in the set.
    public private(set) var frameCount = 0
    /// The number of disjoint, non-adjacent ranges the set's frames form.
    public private(set) var rangeCount = 0

    /// An empty set.
    public init() {}

    /// A set holding the union of `ranges`, which may be unsorted, overlapping or adjacent.
    ///
    /// - Precondition: every range ends at or below ``frameLimit``.
    public init(_ ranges: some Sequence<Range<UInt64>>) {
        self.replaceAll(with: ranges)
    }

    /// Whether the set has no frames.
    public var isEmpty: Bool { self.rangeCount == 0 }

    /// The number of leaves, for benchmarks and tests.
    public var leafCount: Int { self.leaves.count }

    /// The heap bytes the ranges occupy, counting each leaf's allocated capacity and array
    /// header and the top level's pointers (not malloc's own per-block overhead).
    public var storageBytes: Int {
        // A Swift array's heap block is a 32-byte header followed by its elements.
        let header = 32
        var bytes = header + 8 * self.leaves.capacity
        for leaf in self.leaves {
            bytes += header + 8 * leaf.capacity
        }
        return bytes
    }

    // MARK: Queries

    /// Whether `frame` is in the set.
    public func contains(_ frame: UInt64) -> Bool {
        guard frame < Self.frameLimit, let position = self.lastPosition(firstAtMost: frame) else { return false }
        return Self.last(self.entry(at: position)) >= frame
    }

    /// The set's ranges that intersect `bounds`, clipped to it, in order.
    public func ranges(in bounds: Range<UInt64>) -> [Range<UInt64>] {
        let bounds = bounds.clamped(to: 0..<Self.frameLimit)
        guard !bounds.isEmpty else { return [] }
        let start = self.firstPosition(lastAtLeast: bounds.lowerBound)
        guard let end = self.lastPosition(firstAtMost: bounds.upperBound - 1), start <= end else { return [] }
        var result: [Range<UInt64>] = []
        self.forEachEntry(from: start, through: end) { entry in
            result.append(Self.range(entry).clamped(to: bounds))
        }
        return result
    }

    // MARK: Updates

    /// Adds the frames of `range`, merging with any range it overlaps or touches.
    ///
    /// - Returns: the number of frames that were not already in the set.
    /// - Precondition: `range` ends at or below ``frameLimit``.
    @discardableResult
    public mutating func insert(_ range: Range<UInt64>) -> Int {
        precondition(range.upperBound <= Self.frameLimit, "frame range \(range) beyond 2^32")
        guard !range.isEmpty else { return 0 }
        let low = range.lowerBound
        let high = range.upperBound - 1
        // Ranges that merge with the new one end no earlier than the frame before it and start no
        // later than the frame after it; being sorted and disjoint, they are consecutive, so one
        // search finds the first and a scan (which sums their frames anyway) finds the rest.
        let start = self.firstPosition(lastAtLeast: low == 0 ? 0 : low - 1)
        let span = self.scan(from: start, whileFirstAtMost: high + 1)
        guard let end = span.end else {
            self.replace(from: start, through: nil, with: Replacement(Self.pack(low, high)))
            self.frameCount += Int(high - low + 1)
            self.rangeCount += 1
            return Int(high - low + 1)
        }
        let first = Swift.min(low, Self.first(self.entry(at: start)))
        let last = Swift.max(high, Self.last(self.entry(at: end)))
        if span.ranges == 1, span.frames == Int(last - first + 1) {
            // Already inside one range: nothing to change, and no need to make the storage unique.
            return 0
        }
        self.replace(from: start, through: end, with: Replacement(Self.pack(first, last)))
        let added = Int(last - first + 1) - span.frames
        self.frameCount += added
        self.rangeCount += 1 - span.ranges
        return added
    }

    /// Removes the frames of `range`, trimming or splitting the ranges it overlaps.
    ///
    /// - Returns: the number of frames that were in the set.
    /// - Precondition: `range` ends at or below ``frameLimit``.
    @discardableResult
    public mutating func remove(_ range: Range<UInt64>) -> Int {
        precondition(range.upperBound <= Self.frameLimit, "frame range \(range) beyond 2^32")
        guard !range.isEmpty else { return 0 }
        let low = range.lowerBound
        let high = range.upperBound - 1
        let start = self.firstPosition(lastAtLeast: low)
        let span = self.scan(from: start, whileFirstAtMost: high)
        guard let end = span.end else { return 0 }
        var remainder = Replacement()
        let first = Self.first(self.entry(at: start))
        let last = Self.last(self.entry(at: end))
        if first < low { remainder.append(Self.pack(first, low - 1)) }
        if last > high { remainder.append(Self.pack(high + 1, last)) }
        var keptFrames = 0
        for entry in remainder { keptFrames += Self.length(entry) }
        self.replace(from: start, through: end, with: remainder)
        let removed = span.frames - keptFrames
        self.frameCount -= removed
        self.rangeCount += remainder.count - span.ranges
        return removed
    }

    /// Replaces the whole set with the union of `ranges`, which may be unsorted, overlapping or
    /// adjacent. Costs O(n log n) in the input; the leaves are rebuilt packed.
    ///
    /// - Precondition: every range ends at or below ``frameLimit``.
    public mutating func replaceAll(with ranges: some Sequence<Range<UInt64>>) {
        var entries: [UInt64] = []
        entries.reserveCapacity(ranges.underestimatedCount)
        for range in ranges where !range.isEmpty {
            precondition(range.upperBound <= Self.frameLimit, "frame range \(range) beyond 2^32")
            entries.append(Self.pack(range.lowerBound, range.upperBound - 1))
        }
        entries.sort()
        // Coalesce in place: `kept` is the index of the last merged range.
        var kept = -1
        var frames = 0
        for entry in entries {
            if kept >= 0, Self.first(entry) <= Self.last(entries[kept]) + 1 {
                let last = Swift.max(Self.last(entries[kept]), Self.last(entry))
                entries[kept] = Self.pack(Self.first(entries[kept]), last)
            } else {
                kept += 1
                entries[kept] = entry
            }
        }
        let count = kept + 1
        for index in 0..<count { frames += Self.length(entries[index]) }

        var leaves: [[UInt64]] = []
        if count > 0 {
            // Spread the ranges evenly, so no leaf ends up below the minimum.
            let leafCount = (count + Self.bulkLeafCount - 1) / Self.bulkLeafCount
            leaves.reserveCapacity(leafCount)
            var offset = 0
            for leaf in 0..<leafCount {
                let size = count / leafCount + (leaf < count % leafCount ? 1 : 0)
                leaves.append(Self.makeLeaf(entries[offset..<offset + size]))
                offset += size
            }
        }
        self.leaves = leaves
        self.frameCount = frames
        self.rangeCount = count
    }

    /// Removes every frame.
    public mutating func removeAll() {
        self.leaves = []
        self.frameCount = 0
        self.rangeCount = 0
    }

    // MARK: Invariants

    /// Describes every broken structural invariant; empty when the set is sound.
    ///
    /// Checks that ranges are sorted, disjoint, non-adjacent and below ``frameLimit``, that leaf
    /// sizes are within bounds, and that the cached frame and range counts are right. O(n); for
    /// tests and debugging.
    public func checkInvariants() -> [String] {
        var problems: [String] = []
        var frames = 0
        var ranges = 0
        var previousLast: UInt64?
        for (index, leaf) in self.leaves.enumerated() {
            if leaf.isEmpty { problems.append("leaf \(index) is empty") }
            if leaf.count > Self.maximumLeafCount {
                problems.append("leaf \(index) holds \(leaf.count) > \(Self.maximumLeafCount) ranges")
            }
            if self.leaves.count > 1, leaf.count < Self.minimumLeafCount {
                problems.append("leaf \(index) holds \(leaf.count) < \(Self.minimumLeafCount) ranges")
            }
            for entry in leaf {
                let first = Self.first(entry)
                let last = Self.last(entry)
                if first > last { problems.append("range \(first)...\(last) is reversed") }
                if let previousLast, first <= previousLast + 1 {
                    problems.append("range starting at \(first) overlaps or touches the one ending at \(previousLast)")
                }
                previousLast = last
                frames += Int(last) - Int(first) + 1
                ranges += 1
            }
        }
        if frames != self.frameCount { problems.append("frameCount \(self.frameCount), counted \(frames)") }
        if ranges != self.rangeCount { problems.append("rangeCount \(self.rangeCount), counted \(ranges)") }
        return problems
    }
}

// MARK: - Sequence, Equatable

extension FrameRangeSet: Sequence {
    /// Iterates the set's ranges in ascending order.
    public struct Iterator: IteratorProtocol {
        private let leaves: [[UInt64]]
        private var leaf = 0
        private var index = 0

        fileprivate init(leaves: [[UInt64]]) { self.leaves = leaves }

        public mutating func next() -> Range<UInt64>? {
            guard self.leaf < self.leaves.count else { return nil }
            let entry = self.leaves[self.leaf][self.index]
            self.index += 1
            if self.index == self.leaves[self.leaf].count {
                self.leaf += 1
                self.index = 0
            }
            return FrameRangeSet.range(entry)
        }
    }

    public func makeIterator() -> Iterator { Iterator(leaves: self.leaves) }

    public var underestimatedCount: Int { self.rangeCount }
}

extension FrameRangeSet: Equatable {
    /// Two sets are equal when they hold the same frames, however their leaves are laid out.
    public static func == (lhs: FrameRangeSet, rhs: FrameRangeSet) -> Bool {
        lhs.frameCount == rhs.frameCount && lhs.rangeCount == rhs.rangeCount && lhs.elementsEqual(rhs)
    }
}

extension FrameRangeSet: CustomStringConvertible {
    public var description: String {
        let shown = self.prefix(8).map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ")
        let more = self.rangeCount > 8 ? ", … \(self.rangeCount - 8) more" : ""
        return "FrameRangeSet(\(self.frameCount) frames in \(self.rangeCount) ranges: [\(shown)\(more)])"
    }
}

// MARK: - Packing and positions

extension FrameRangeSet {
    @inline(__always)
    fileprivate static func pack(_ first: UInt64, _ last: UInt64) -> UInt64 { first << 32 | last }

    @inline(__always)
    fileprivate static func first(_ entry: UInt64) -> UInt64 { entry >> 32 }

    @inline(__always)
    fileprivate static func last(_ entry: UInt64) -> UInt64 { entry & 0xFFFF_FFFF }

    @inline(__always)
    fileprivate static func length(_ entry: UInt64) -> Int { Int(Self.last(entry) - Self.first(entry) + 1) }

    @inline(__always)
    fileprivate static func range(_ entry: UInt64) -> Range<UInt64> { Self.first(entry)..<Self.last(entry) + 1 }

    /// A range's place: a leaf and an index in it. `leaves.count, 0` is the end.
    fileprivate struct Position: Comparable {
        var leaf: Int
        var index: Int

        static func < (lhs: Position, rhs: Position) -> Bool {
            (lhs.leaf, lhs.index) < (rhs.leaf, rhs.index)
        }
    }

    private func entry(at position: Position) -> UInt64 { self.leaves[position.leaf][position.index] }

    /// The first range whose last frame is at least `frame`, or the end. Last frames ascend
    /// like first frames do, because the ranges are disjoint.
    private func firstPosition(lastAtLeast frame: UInt64) -> Position {
        let leafIndex = self.leaves.withUnsafeBufferPointer { leaves in
            // Branch-free lower bound: the comparisons are unpredictable, the selects are not.
            guard var base = leaves.indices.first else { return 0 }
            var count = leaves.count
            while count > 1 {
                let half = count / 2
                base = Self.last(leaves[base + half - 1].last.unsafelyUnwrapped) < frame ? base + half : base
                count -= half
            }
            return Self.last(leaves[base].last.unsafelyUnwrapped) < frame ? base + 1 : base
        }
        guard leafIndex < self.leaves.count else { return Position(leaf: leafIndex, index: 0) }
        let index = self.leaves[leafIndex].withUnsafeBufferPointer { leaf in
            // The leaf's last range qualifies, so the answer is in the leaf.
            var base = 0
            var count = leaf.count
            while count > 1 {
                let half = count / 2
                base = Self.last(leaf[base + half - 1]) < frame ? base + half : base
                count -= half
            }
            return base
        }
        return Position(leaf: leafIndex, index: index)
    }

    /// The last range whose first frame is at most `frame`, or `nil` if every range starts after.
    private func lastPosition(firstAtMost frame: UInt64) -> Position? {
        var low = 0
        var high = self.leaves.count
        while low < high {
            let middle = (low + high) / 2
            if Self.first(self.leaves[middle][0]) > frame { high = middle } else { low = middle + 1 }
        }
        guard low > 0 else { return nil }
        let leafIndex = low - 1
        let index = self.leaves[leafIndex].withUnsafeBufferPointer { leaf in
            var low = 1  // the leaf's first range qualifies
            var high = leaf.count
            while low < high {
                let middle = (low + high) / 2
                if Self.first(leaf[middle]) > frame { high = middle } else { low = middle + 1 }
            }
            return low - 1
        }
        return Position(leaf: leafIndex, index: index)
    }

    /// The ranges from `start` on that begin at or before `bound`: the last of them (`nil` if
    /// none), how many there are and their frames.
    private func scan(
        from start: Position,
        whileFirstAtMost bound: UInt64
    ) -> (end: Position?, ranges: Int, frames: Int) {
        var end: Position?
        var ranges = 0
        var frames = 0
        var leafIndex = start.leaf
        var index = start.index
        scanning: while leafIndex < self.leaves.count {
            let done = self.leaves[leafIndex].withUnsafeBufferPointer { leaf in
                while index < leaf.count {
                    guard Self.first(leaf[index]) <= bound else { return true }
                    end = Position(leaf: leafIndex, index: index)
                    ranges += 1
                    frames += Self.length(leaf[index])
                    index += 1
                }
                return false
            }
            if done { break scanning }
            leafIndex += 1
            index = 0
        }
        return (end, ranges, frames)
    }

    private func forEachEntry(from start: Position, through end: Position, _ body: (UInt64) -> Void) {
        for leafIndex in start.leaf...end.leaf {
            self.leaves[leafIndex].withUnsafeBufferPointer { leaf in
                let from = leafIndex == start.leaf ? start.index : 0
                let through = leafIndex == end.leaf ? end.index : leaf.count - 1
                for index in from...through { body(leaf[index]) }
            }
        }
    }
}

// MARK: - Leaf maintenance

extension FrameRangeSet {
    /// Up to two packed ranges: what an insert or remove puts in place of the ranges it touched.
    /// A fixed-size collection, so an update does not allocate for its replacement.
    fileprivate struct Replacement: RandomAccessCollection {
        private var first: UInt64 = 0
        private var second: UInt64 = 0
        private(set) var count = 0

        init() {}
        init(_ entry: UInt64) { self.append(entry) }

        mutating func append(_ entry: UInt64) {
            if self.count == 0 { self.first = entry } else { self.second = entry }
            self.count += 1
        }

        var startIndex: Int { 0 }
        var endIndex: Int { self.count }
        subscript(index: Int) -> UInt64 { index == 0 ? self.first : self.second }
    }

    /// Extra capacity given to a leaf when it has to grow: small, so memory tracks the range
    /// count instead of doubling, yet enough that a growing leaf is reallocated only every few
    /// dozen inserts.
    private static func growthStep(_ count: Int) -> Int { 16 + count / 16 }

    private static func makeLeaf(_ entries: some Collection<UInt64>) -> [UInt64] {
        var leaf: [UInt64] = []
        leaf.reserveCapacity(entries.count + Self.growthStep(entries.count))
        leaf.append(contentsOf: entries)
        return leaf
    }

    /// Makes room for `extra` more ranges in a leaf without letting the array double its capacity.
    private mutating func reserve(leaf index: Int, extra: Int) {
        let needed = self.leaves[index].count + extra
        if self.leaves[index].capacity < needed {
            self.leaves[index].reserveCapacity(needed + Self.growthStep(needed))
        }
    }

    /// Replaces the ranges from `start` through `end` (none if `end` is `nil`, so `replacement`
    /// goes in before `start`) and restores the leaf size bounds around them.
    private mutating func replace(from start: Position, through end: Position?, with replacement: Replacement) {
        guard let end else {
            if self.leaves.isEmpty {
                self.leaves.append(Self.makeLeaf(replacement))
                return
            }
            // At the end of the set, or at the start of a leaf: append to the previous leaf, so
            // ascending inserts fill leaves instead of creating small ones at the front.
            var leaf = start.leaf
            var index = start.index
            if index == 0, leaf > 0 {
                leaf -= 1
                index = self.leaves[leaf].count
            }
            self.reserve(leaf: leaf, extra: replacement.count)
            self.leaves[leaf].insert(contentsOf: replacement, at: index)
            self.restoreBounds(leaf: leaf)
            return
        }
        if start.leaf == end.leaf {
            self.reserve(leaf: start.leaf, extra: replacement.count)
            self.leaves[start.leaf].replaceSubrange(start.index...end.index, with: replacement)
            self.restoreBounds(leaf: start.leaf)
            return
        }
        // The span crosses leaves: trim the two end leaves, drop the ones in between, and put the
        // replacement at the end of the first.
        self.leaves[end.leaf].removeSubrange(0...end.index)
        self.reserve(leaf: start.leaf, extra: replacement.count)
        self.leaves[start.leaf].replaceSubrange(start.index..., with: replacement)
        if end.leaf > start.leaf + 1 {
            self.leaves.removeSubrange(start.leaf + 1..<end.leaf)
        }
        // Right first: fixing it may merge it into the left one, never the other way round.
        self.restoreBounds(leaf: start.leaf + 1)
        self.restoreBounds(leaf: start.leaf)
    }

    /// Brings one leaf back within bounds: drops it if empty, splits it if over the maximum,
    /// merges or rebalances it with a neighbour if under the minimum, and trims spare capacity.
    private mutating func restoreBounds(leaf index: Int) {
        let count = self.leaves[index].count
        if count == 0 {
            self.leaves.remove(at: index)
        } else if count > Self.maximumLeafCount {
            let half = count / 2
            let right = Self.makeLeaf(self.leaves[index][half...])
            self.leaves[index] = Self.makeLeaf(self.leaves[index][..<half])
            self.leaves.insert(right, at: index + 1)
        } else if count < Self.minimumLeafCount, self.leaves.count > 1 {
            self.rebalance(left: index > 0 ? index - 1 : index)
        } else if self.leaves[index].capacity > 2 * count + 64 {
            // After many removes: give the memory back. Only when capacity has roughly doubled
            // the count, so this costs O(1) amortised per removed range.
            self.leaves[index] = Self.makeLeaf(self.leaves[index])
        }
    }

    /// Merges leaf `left` and the one after it if they fit in one, else shares their ranges
    /// evenly (each then holds more than half the maximum).
    private mutating func rebalance(left: Int) {
        let right = left + 1
        let total = self.leaves[left].count + self.leaves[right].count
        if total <= Self.maximumLeafCount {
            var merged: [UInt64] = []
            merged.reserveCapacity(total + Self.growthStep(total))
            merged.append(contentsOf: self.leaves[left])
            merged.append(contentsOf: self.leaves[right])
            self.leaves[left] = merged
            self.leaves.remove(at: right)
            return
        }
        let leftCount = total / 2
        var combined = self.leaves[left]
        combined.append(contentsOf: self.leaves[right])
        self.leaves[left] = Self.makeLeaf(combined[..<leftCount])
        self.leaves[right] = Self.makeLeaf(combined[leftCount...])
    }
}
