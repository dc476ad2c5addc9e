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
}
