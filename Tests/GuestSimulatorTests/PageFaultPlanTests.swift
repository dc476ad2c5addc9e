import GuestSimulator
import Testing

/// The phase order and the reading of `bench page-fault` (no timing: the plan is pure logic).
@Suite struct PageFaultPlanTests {
    @Test func warmUpFirstThenRoundsAlternateWhichKindComesFirst() {
        let phases = PageFaultPlan(rounds: 4, warmUp: true).phases
        #expect(phases.map(\.round) == [0, 1, 1, 2, 2, 3, 3, 4, 4])
        #expect(phases.map(\.reporting) == [false, false, true, true, false, false, true, true, false])
        #expect(phases.filter(\.counted).count == 8)
        #expect(!phases[0].counted)
        #expect(phases[0].description == "warm-up")
        #expect(phases[3].description == "round 2 reporting on")
    }

    @Test func everyRoundHasOnePhaseOfEachKind() {
        for rounds in 1...7 {
            let phases = PageFaultPlan(rounds: rounds, warmUp: false).phases
            #expect(phases.count == 2 * rounds)
            for round in 1...rounds {
                let kinds = phases.filter { $0.round == round }.map(\.reporting)
                #expect(kinds.sorted { !$0 && $1 } == [false, true], "round \(round): \(kinds)")
            }
            // As often on first as off first, give or take the odd round.
            let onFirst = (1...rounds).filter { round in phases.first { $0.round == round }!.reporting }.count
            #expect(onFirst == rounds / 2)
        }
    }

    @Test func withoutWarmUpTheFirstPhaseCounts() {
        let phases = PageFaultPlan(rounds: 1, warmUp: false).phases
        #expect(phases == [.init(round: 1, reporting: false), .init(round: 1, reporting: true)])
    }

    @Test func ratioIsTheMedianOfTheRoundsRatios() {
        // Round 3 was disturbed (the machine was busy during its on phase): the median of the
        // paired ratios ignores it, the ratio of the means would not.
        let rounds = PageFaultRounds(off: [100, 110, 90, 105, 95], on: [99, 109, 45, 104, 94])
        #expect(rounds.ratios.count == 5)
        #expect(abs(rounds.ratios[2] - 0.5) < 1e-12)
        #expect(abs(rounds.medianRatio - 99.0 / 100.0) < 1e-12)
        #expect(rounds.medianOff == 100)
        #expect(rounds.medianOn == 99)
        let meanRatio = rounds.on.reduce(0, +) / rounds.off.reduce(0, +)
        #expect(meanRatio < 0.91)
    }

    @Test func medianOfAnEvenCountIsTheMeanOfTheMiddleTwo() {
        #expect(PageFaultRounds.median([4, 1, 3, 2]) == 2.5)
        #expect(PageFaultRounds.median([7]) == 7)
        #expect(PageFaultRounds.median([]) == 0)
        #expect(PageFaultRounds(off: [0], on: [5]).ratios == [0])
    }

    @Test func medianIntervalComesFromTheBinomialOrderStatistics() {
        let values = (1...15).map(Double.init).shuffled()
        // n = 15 at 95%: ranks 4 and 12 (coverage 1 - 2 * 576 / 32768 = 0.965; ranks 5 and 11
        // would cover only 0.882).
        #expect(PageFaultRounds.medianInterval(values) == 4...12)
        // n = 20: ranks 6 and 15 (0.959).
        #expect(PageFaultRounds.medianInterval((1...20).map(Double.init)) == 6...15)
        // n = 6 is the fewest with a 95% interval: min to max covers 1 - 2/64.
        #expect(PageFaultRounds.medianInterval([3, 1, 2, 6, 5, 4]) == 1...6)
        #expect(PageFaultRounds.medianInterval([1, 2, 3, 4, 5]) == nil)
        #expect(PageFaultRounds.medianInterval([]) == nil)
        // A lower level gives a narrower interval: n = 5 at 90% is min to max (0.9375).
        #expect(PageFaultRounds.medianInterval([5, 4, 3, 2, 1], confidence: 0.9) == 1...5)
        // Large counts do not underflow: n = 2001 at 95% is the median's rank 1001 -/+ ~44.
        let many = PageFaultRounds.medianInterval((1...2001).map(Double.init))!
        #expect(many.lowerBound > 950 && many.lowerBound < 1001)
        #expect(many.upperBound == Double(2002) - many.lowerBound)
    }

    @Test func ratioIntervalIsOverTheRoundsRatios() {
        let off = [Double](repeating: 100, count: 7)
        let on: [Double] = [90, 99, 101, 100, 98, 102, 120]
        let rounds = PageFaultRounds(off: off, on: on)
        // n = 7 at 95%: ranks 1 and 7 (1 - 2/128).
        #expect(rounds.ratioInterval() == 0.9...1.2)
        #expect(PageFaultRounds(off: [1, 1], on: [1, 1]).ratioInterval() == nil)
    }
}
