import Broker
import Testing

@Suite("FrameRangeSet")
struct FrameRangeSetTests {
    // MARK: Edge cases

    @Test("an empty set has nothing in it")
    func empty() {
        var set = FrameRangeSet()
        #expect(set.isEmpty)
        #expect(set.frameCount == 0)
        #expect(set.rangeCount == 0)
        #expect(!set.contains(0))
        #expect(Array(set).isEmpty)
        #expect(set.ranges(in: 0..<FrameRangeSet.frameLimit).isEmpty)
        #expect(set.remove(0..<100) == 0)
        #expect(set.insert(5..<5) == 0)
        #expect(set.isEmpty)
        #expect(set.checkInvariants() == [])
    }

    @Test("the full 32-bit domain, and its ends")
    func fullDomain() {
        var set = FrameRangeSet()
        #expect(set.insert(0..<FrameRangeSet.frameLimit) == 1 << 32)
        #expect(set.frameCount == 1 << 32)
        #expect(set.rangeCount == 1)
        #expect(set.contains(0))
        #expect(set.contains(UInt64(UInt32.max)))
        #expect(!set.contains(FrameRangeSet.frameLimit))
        #expect(set.insert(17..<1000) == 0)
        #expect(set.remove(UInt64(UInt32.max)..<FrameRangeSet.frameLimit) == 1)
        #expect(set.remove(0..<1) == 1)
        #expect(Array(set) == [1..<UInt64(UInt32.max)])
        #expect(set.insert(0..<FrameRangeSet.frameLimit) == 2)
        #expect(set.remove(0..<UInt64(UInt32.max)) == Int(UInt32.max))
        #expect(Array(set) == [UInt64(UInt32.max)..<FrameRangeSet.frameLimit])
        #expect(set.checkInvariants() == [])
    }

    @Test("adjacent ranges coalesce on either side and in between")
    func adjacentCoalescing() {
        var set = FrameRangeSet()
        set.insert(10..<20)
        set.insert(20..<30)
        #expect(Array(set) == [10..<30])
        set.insert(5..<10)
        #expect(Array(set) == [5..<30])
        set.insert(40..<50)
        #expect(set.rangeCount == 2)
        #expect(set.insert(30..<40) == 10)
        #expect(Array(set) == [5..<50])
        #expect(set.frameCount == 45)
        #expect(set.checkInvariants() == [])
    }

    @Test("inserting what is already there, or overlaps it, does not count twice")
    func unionDoesNotDoubleCount() {
        var set = FrameRangeSet()
        #expect(set.insert(0..<512) == 512)
        #expect(set.insert(0..<512) == 0)
        #expect(set.insert(256..<512) == 0)
        // A merged block reported again: the order-10 block holding the order-9 one.
        #expect(set.insert(0..<1024) == 512)
        #expect(set.frameCount == 1024)
        // Swallowing several ranges at once counts only the gaps.
        set.insert(2000..<2010)
        set.insert(2020..<2030)
        #expect(set.insert(1990..<2040) == 30)
        #expect(Array(set) == [0..<1024, 1990..<2040])
    }

    @Test("removing from the middle splits a range; trimming keeps one")
    func removeSplits() {
        var set = FrameRangeSet([0..<100])
        #expect(set.remove(40..<60) == 20)
        #expect(Array(set) == [0..<40, 60..<100])
        #expect(set.remove(0..<10) == 10)
        #expect(set.remove(90..<200) == 10)
        #expect(Array(set) == [10..<40, 60..<90])
        #expect(set.remove(40..<60) == 0)
        #expect(set.remove(0..<1000) == 60)
        #expect(set.isEmpty)
        #expect(set.checkInvariants() == [])
    }

    @Test("updates spanning many leaves")
    func acrossLeafBoundaries() {
        // Every other frame pair: 5000 ranges, about a dozen leaves.
        var set = FrameRangeSet((0..<5000).map { UInt64($0) * 4..<UInt64($0) * 4 + 2 })
        #expect(set.rangeCount == 5000)
        #expect(set.leafCount > 10)
        #expect(set.checkInvariants() == [])

        // Remove a span that starts and ends inside ranges of different leaves.
        let removed = set.remove(1001..<15_001)
        #expect(removed == 7000)
        #expect(set.contains(1000))
        #expect(!set.contains(1001))
        #expect(set.contains(15_001))
        #expect(set.checkInvariants() == [])

        // Insert a span that swallows ranges in several leaves and touches its neighbours.
        let before = set.frameCount
        let added = set.insert(2..<18_000)
        #expect(set.frameCount == before + added)
        #expect(set.ranges(in: 0..<18_004) == [0..<18_002])
        #expect(set.checkInvariants() == [])

        // Remove everything but the two ends, then the ends.
        set.remove(1..<19_999)
        #expect(set.checkInvariants() == [])
        set.remove(0..<20_000)
        #expect(set.isEmpty)
        #expect(set.leafCount == 0)
    }

    @Test("replaceAll normalises unsorted, overlapping, adjacent and empty input")
    func replaceAllNormalises() {
        var set = FrameRangeSet([1000..<2000])
        set.replaceAll(with: [50..<60, 10..<20, 15..<30, 30..<40, 7..<7, 60..<61, 100..<200])
        #expect(Array(set) == [10..<40, 50..<61, 100..<200])
        #expect(set.frameCount == 30 + 11 + 100)
        #expect(set.rangeCount == 3)
        set.replaceAll(with: [])
        #expect(set.isEmpty)
        #expect(set.checkInvariants() == [])
    }

    @Test("contains and ranges(in:) agree with the ranges")
    func queries() {
        let set = FrameRangeSet([10..<20, 30..<40, 50..<60])
        #expect(!set.contains(9))
        #expect(set.contains(10))
        #expect(set.contains(19))
        #expect(!set.contains(20))
        #expect(set.ranges(in: 15..<55) == [15..<20, 30..<40, 50..<55])
        #expect(set.ranges(in: 20..<30) == [])
        #expect(set.ranges(in: 0..<5) == [])
        #expect(set.ranges(in: 60..<FrameRangeSet.frameLimit) == [])
        #expect(set.ranges(in: 39..<41) == [39..<40])
    }

    @Test("copies are independent")
    func valueSemantics() {
        var original = FrameRangeSet((0..<2000).map { UInt64($0) * 3..<UInt64($0) * 3 + 1 })
        let copy = original
        original.remove(0..<3000)
        original.insert(10_000..<20_000)
        #expect(copy.rangeCount == 2000)
        #expect(copy.frameCount == 2000)
        #expect(copy.checkInvariants() == [])
        #expect(original.checkInvariants() == [])
        #expect(original != copy)
        #expect(FrameRangeSet([0..<5, 5..<9]) == FrameRangeSet([0..<9]))
    }

    @Test("ascending inserts fill leaves rather than leaving small ones behind")
    func ascendingInserts() {
        var set = FrameRangeSet()
        for index in 0..<10_000 { set.insert(UInt64(index) * 2..<UInt64(index) * 2 + 1) }
        #expect(set.rangeCount == 10_000)
        #expect(set.checkInvariants() == [])
        // Memory follows the range count: about 8 bytes a range plus a little per leaf.
        #expect(set.storageBytes < 10 * set.rangeCount)
        for index in (0..<10_000).reversed() { set.remove(UInt64(index) * 2..<UInt64(index) * 2 + 1) }
        #expect(set.isEmpty)
    }

    // MARK: Randomized against models

    @Test("random inserts and removes match a bitmap over a small domain", arguments: [1, 2, 3] as [UInt64])
    func randomAgainstBitmap(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let domain: UInt64 = 5000
        var set = FrameRangeSet()
        var model = BitmapFrameSet(domain: Int(domain))
        for step in 0..<2500 {
            let range = random.frameRange(domain: domain, typicalLength: 3, longLength: 600)
            // Bias towards inserts so the set grows to thousands of ranges over several leaves.
            if UInt64.random(in: 0..<5, using: &random) < 3 {
                let added = set.insert(range)
                #expect(added == model.set(range, to: true), "step \(step): insert \(range)")
            } else {
                let removed = set.remove(range)
                #expect(removed == model.set(range, to: false), "step \(step): remove \(range)")
            }
            #expect(set.frameCount == model.frameCount, "step \(step)")
            #expect(set.rangeCount == model.rangeCount, "step \(step)")
            if step % 25 == 0 {
                #expect(Array(set) == model.ranges, "step \(step)")
                #expect(set.checkInvariants() == [], "step \(step)")
                let probe = UInt64.random(in: 0..<domain, using: &random)
                #expect(set.contains(probe) == model.bits[Int(probe)])
            }
        }
        #expect(Array(set) == model.ranges)
        #expect(set.checkInvariants() == [])
    }

    @Test(
        "random inserts, removes and replaces match a naive set over the 32-bit domain",
        arguments: [7, 8, 9] as [UInt64]
    )
    func randomAgainstNaive(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let domain = FrameRangeSet.frameLimit
        var set = FrameRangeSet()
        var model = NaiveRangeSet()
        for step in 0..<3000 {
            let choice = UInt64.random(in: 0..<100, using: &random)
            if choice < 60 {
                let range = random.frameRange(domain: domain, typicalLength: 1 << 20, longLength: 1 << 28)
                let before = model.frameCount
                model.insert(range)
                #expect(set.insert(range) == model.frameCount - before, "step \(step): insert \(range)")
            } else if choice < 99 {
                let range = random.frameRange(domain: domain, typicalLength: 1 << 20, longLength: 1 << 30)
                let before = model.frameCount
                model.remove(range)
                #expect(set.remove(range) == before - model.frameCount, "step \(step): remove \(range)")
            } else {
                let ranges = (0..<Int.random(in: 0..<3000, using: &random)).map { _ in
                    random.frameRange(domain: domain, typicalLength: 1 << 16, longLength: 1 << 24)
                }
                model.replaceAll(with: ranges)
                set.replaceAll(with: ranges)
            }
            #expect(set.frameCount == model.frameCount, "step \(step)")
            #expect(set.rangeCount == model.ranges.count, "step \(step)")
            if step % 50 == 0 {
                #expect(Array(set) == model.ranges, "step \(step)")
                #expect(set.checkInvariants() == [], "step \(step)")
                // Windows and probes, against the model clipped by hand.
                let window = random.frameRange(domain: domain, typicalLength: 1 << 24, longLength: 1 << 31)
                let clipped = model.ranges.map { $0.clamped(to: window) }.filter { !$0.isEmpty }
                #expect(set.ranges(in: window) == clipped, "step \(step): window \(window)")
                let probe = UInt64.random(in: 0..<domain, using: &random)
                #expect(set.contains(probe) == model.ranges.contains { $0.contains(probe) }, "step \(step)")
            }
        }
        #expect(Array(set) == model.ranges)
        #expect(set.checkInvariants() == [])
    }

    @Test("churn at a block boundary keeps leaves within bounds")
    func churnAtBoundary() {
        // Many small ranges; then repeatedly remove and re-add a span across a leaf boundary.
        var random = SplitMix64(seed: 42)
        var set = FrameRangeSet((0..<3000).map { UInt64($0) * 10..<UInt64($0) * 10 + 5 })
        var model = NaiveRangeSet()
        model.replaceAll(with: Array(set))
        for step in 0..<1000 {
            let start = UInt64.random(in: 0..<30_000, using: &random)
            let range = start..<start + UInt64.random(in: 1...1500, using: &random)
            if step.isMultiple(of: 2) {
                set.remove(range)
                model.remove(range)
            } else {
                // Put back the small ranges the span covered.
                for frame in stride(from: range.lowerBound / 10 * 10, to: range.upperBound, by: 10) {
                    set.insert(frame..<frame + 5)
                    model.insert(frame..<frame + 5)
                }
            }
            #expect(set.frameCount == model.frameCount)
            #expect(set.rangeCount == model.ranges.count)
            if step % 100 == 0 { #expect(set.checkInvariants() == []) }
        }
        #expect(Array(set) == model.ranges)
    }

    // MARK: Scale

    @Test("200k ranges inserted in random order and removed again")
    func scale() {
        var random = SplitMix64(seed: 2024)
        let count = 200_000
        // Order-9 blocks, every other one, in random order: ranges that never coalesce.
        var blocks = (0..<count).map { UInt64($0) * 1024 }
        blocks.shuffle(using: &random)
        var set = FrameRangeSet()
        for block in blocks { set.insert(block..<block + 512) }
        #expect(set.rangeCount == count)
        #expect(set.frameCount == count * 512)
        #expect(set.checkInvariants() == [])
        // Coalesce every pair, then take everything back in another random order.
        for block in blocks.prefix(count / 2) { set.insert(block + 512..<block + 1024) }
        #expect(set.frameCount == count * 512 + count / 2 * 512)
        blocks.shuffle(using: &random)
        for block in blocks { set.remove(block..<block + 1024) }
        #expect(set.isEmpty)
        #expect(set.checkInvariants() == [])
    }
}
