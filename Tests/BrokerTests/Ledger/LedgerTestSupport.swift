import Broker

/// A seeded generator, so a failing randomized run can be replayed from its seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { self.state = seed }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The obvious implementation: one sorted array of disjoint, non-adjacent half-open ranges,
/// updated with `replaceSubrange` (O(n) shifting), no leaves, no packing, so it shares none of
/// the structure under test.
struct NaiveRangeSet: Equatable {
    private(set) var ranges: [Range<UInt64>] = []
    private(set) var frameCount = 0

    /// The first index whose range satisfies `predicate`, which must be false then true along the array.
    private func firstIndex(where predicate: (Range<UInt64>) -> Bool) -> Int {
        var low = 0
        var high = self.ranges.count
        while low < high {
            let middle = (low + high) / 2
            if predicate(self.ranges[middle]) { high = middle } else { low = middle + 1 }
        }
        return low
    }

    mutating func insert(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        // Ranges that overlap or touch `range`.
        let low = self.firstIndex { $0.upperBound >= range.lowerBound }
        let high = self.firstIndex { $0.lowerBound > range.upperBound }
        var merged = range
        for existing in self.ranges[low..<high] {
            merged = min(existing.lowerBound, merged.lowerBound)..<max(existing.upperBound, merged.upperBound)
            self.frameCount -= Int(existing.count)
        }
        self.ranges.replaceSubrange(low..<high, with: [merged])
        self.frameCount += Int(merged.count)
    }

    mutating func remove(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        // Ranges that overlap `range`.
        let low = self.firstIndex { $0.upperBound > range.lowerBound }
        let high = self.firstIndex { $0.lowerBound >= range.upperBound }
        guard low < high else { return }
        var remainder: [Range<UInt64>] = []
        if self.ranges[low].lowerBound < range.lowerBound {
            remainder.append(self.ranges[low].lowerBound..<range.lowerBound)
        }
        if self.ranges[high - 1].upperBound > range.upperBound {
            remainder.append(range.upperBound..<self.ranges[high - 1].upperBound)
        }
        for existing in self.ranges[low..<high] { self.frameCount -= Int(existing.count) }
        for kept in remainder { self.frameCount += Int(kept.count) }
        self.ranges.replaceSubrange(low..<high, with: remainder)
    }

    mutating func replaceAll(with ranges: [Range<UInt64>]) {
        self.ranges = []
        self.frameCount = 0
        for range in ranges { self.insert(range) }
    }
}

/// A bitmap over a small domain: the model for exhaustive comparisons.
struct BitmapFrameSet {
    private(set) var bits: [Bool]
    private(set) var frameCount = 0

    init(domain: Int) { self.bits = Array(repeating: false, count: domain) }

    mutating func set(_ range: Range<UInt64>, to value: Bool) -> Int {
        var changed = 0
        for frame in range where self.bits[Int(frame)] != value {
            self.bits[Int(frame)] = value
            changed += 1
        }
        self.frameCount += value ? changed : -changed
        return changed
    }

    /// The number of maximal runs of set bits, counted without building them.
    var rangeCount: Int {
        self.bits.withUnsafeBufferPointer { bits in
            var count = 0
            var previous = false
            for bit in bits {
                if bit, !previous { count += 1 }
                previous = bit
            }
            return count
        }
    }

    /// The maximal runs of set bits.
    var ranges: [Range<UInt64>] {
        var result: [Range<UInt64>] = []
        var start: Int?
        for (frame, bit) in self.bits.enumerated() {
            if bit, start == nil { start = frame }
            if !bit, let first = start {
                result.append(UInt64(first)..<UInt64(frame))
                start = nil
            }
        }
        if let first = start { result.append(UInt64(first)..<UInt64(self.bits.count)) }
        return result
    }
}

extension RandomNumberGenerator {
    /// A range in `0..<domain` whose length is usually short (so sets get many ranges) and now
    /// and then long (so updates span many ranges and leaves).
    mutating func frameRange(domain: UInt64, typicalLength: UInt64, longLength: UInt64) -> Range<UInt64> {
        let long = UInt64.random(in: 0..<16, using: &self) == 0
        let length = UInt64.random(in: 1...(long ? longLength : typicalLength), using: &self)
        let start = UInt64.random(in: 0..<domain, using: &self)
        return start..<min(domain, start + length)
    }
}
