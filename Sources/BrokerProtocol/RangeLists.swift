/// A value carried on the wire as two consecutive `uint64`s of a range list.
public protocol WirePair: Hashable, Sendable {
    /// Creates the value from its two wire numbers, in wire order.
    init(wireFirst: UInt64, wireSecond: UInt64)
}

/// A read-only view of a flattened pair list: the `repeated uint64` fields that
/// carry ranges on the wire (`Report.blocks`, `Reuse.ranges`, `Sync.ranges`).
///
/// The wire keeps pairs flattened in one packed field because it decodes into a
/// single array with one allocation, where a sub-message per range would cost a
/// tag, a length and a struct each. This view gives the pairs back without copying.
public struct PairList<Element: WirePair>: RandomAccessCollection, Sendable, Hashable {
    private let values: [UInt64]

    /// Views `values` as pairs; `nil` if their count is odd, which makes the list
    /// invalid (`REASON_CODE_INVALID_RANGE`).
    public init?(_ values: [UInt64]) {
        guard values.count.isMultiple(of: 2) else { return nil }
        self.values = values
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { self.values.count / 2 }

    public subscript(position: Int) -> Element {
        Element(wireFirst: self.values[2 * position], wireSecond: self.values[2 * position + 1])
    }
}

/// One free buddy block of a report: `2^order` pages starting at page frame `frame`.
public struct ReportedBlock: WirePair {
    public var frame: UInt64
    public var order: UInt64

    public init(frame: UInt64, order: UInt64) {
        self.frame = frame
        self.order = order
    }

    public init(wireFirst: UInt64, wireSecond: UInt64) {
        self.init(frame: wireFirst, order: wireSecond)
    }
}

/// `count` consecutive page frames starting at `firstFrame`, as reuse and sync carry them.
public struct FrameRange: WirePair {
    public var firstFrame: UInt64
    public var count: UInt64

    public init(firstFrame: UInt64, count: UInt64) {
        self.firstFrame = firstFrame
        self.count = count
    }

    public init(wireFirst: UInt64, wireSecond: UInt64) {
        self.init(firstFrame: wireFirst, count: wireSecond)
    }
}

extension Pagebroker_V1_Report {
    /// Creates a report; reserves room for `blockCapacity` blocks so appending
    /// them does not reallocate.
    public init(seq: UInt64, blockCapacity: Int = 0) {
        self.init()
        self.seq = seq
        self.blocks.reserveCapacity(2 * blockCapacity)
    }

    /// Appends one free block of `2^order` pages starting at `frame`.
    public mutating func appendBlock(frame: UInt64, order: UInt64) {
        self.blocks.append(frame)
        self.blocks.append(order)
    }

    /// The blocks, or `nil` if the list has an odd length.
    public var blockList: PairList<ReportedBlock>? { PairList(self.blocks) }
}

extension Pagebroker_V1_Reuse {
    /// Appends `count` pages starting at `firstFrame`.
    public mutating func appendRange(firstFrame: UInt64, count: UInt64) {
        self.ranges.append(firstFrame)
        self.ranges.append(count)
    }

    /// The ranges, or `nil` if the list has an odd length.
    public var rangeList: PairList<FrameRange>? { PairList(self.ranges) }
}

extension Pagebroker_V1_Sync {
    /// Appends `count` pages starting at `firstFrame`.
    public mutating func appendRange(firstFrame: UInt64, count: UInt64) {
        self.ranges.append(firstFrame)
        self.ranges.append(count)
    }

    /// The ranges, or `nil` if the list has an odd length.
    public var rangeList: PairList<FrameRange>? { PairList(self.ranges) }
}
