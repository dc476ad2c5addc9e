import PageReporting
import Testing

@testable import GuestAgent

@Suite("Quarantine state machine")
struct QuarantineStateMachineTests {
    private func entry(_ frame: Int, _ order: Int) -> ReportEntry { ReportEntry(frame: frame, order: order) }

    @Test("an abandoned report isolates its pageblocks; its late result gives them back")
    func lateResultReleases() {
        var machine = QuarantineStateMachine(pageblockOrder: 9)
        _ = machine.sessionStarted(generation: 1, priorReportsSettled: false)
        machine.sent(token: 1, generation: 1)
        // An order-10 block spans two pageblocks; the order-9 one a third.
        let decision = machine.abandoned(token: 1, blocks: [entry(1024, 10), entry(4096, 9)])
        #expect(decision == .quarantine(isolate: [1024, 1536, 4096]))
        #expect(machine.figures.reports == 1)
        #expect(machine.figures.frames == 1024 + 512)
        #expect(machine.figures.pageblocks == 3)
        let release = machine.lateResult(token: 1, accepted: true)
        #expect(release.discarded == [entry(1024, 10), entry(4096, 9)])
        #expect(Set(release.pageblocks) == [1024, 1536, 4096])
        #expect(release.reports == 1 && release.frames == 1536)
        #expect(machine.figures.reports == 0 && machine.figures.frames == 0 && machine.figures.pageblocks == 0)
        #expect(machine.figures.releasedByLateResult == 1)
    }

    @Test("a later session without prior_reports_settled keeps the frames; one with it releases them")
    func settledSessionReleases() {
        var machine = QuarantineStateMachine(pageblockOrder: 9)
        _ = machine.sessionStarted(generation: 1, priorReportsSettled: false)
        machine.sent(token: 7, generation: 1)
        _ = machine.abandoned(token: 7, blocks: [entry(512, 9)])
        #expect(machine.sessionStarted(generation: 2, priorReportsSettled: false).isEmpty)
        #expect(machine.figures.reports == 1)
        // A report of session 3 abandoned before session 4: released by session 4 only.
        machine.sent(token: 8, generation: 3)
        _ = machine.abandoned(token: 8, blocks: [entry(2048, 9)])
        let release = machine.sessionStarted(generation: 3, priorReportsSettled: true)
        #expect(release.pageblocks == [512])
        #expect(machine.figures.reports == 1)
        #expect(machine.sessionStarted(generation: 4, priorReportsSettled: true).pageblocks == [2048])
        #expect(machine.figures.reports == 0)
        #expect(machine.figures.releasedBySettledSession == 2)
    }

    @Test("two reports in one pageblock: isolated once, given back after the last")
    func sharedPageblock() {
        var machine = QuarantineStateMachine(pageblockOrder: 9)
        machine.sent(token: 1, generation: 1)
        machine.sent(token: 2, generation: 1)
        #expect(machine.abandoned(token: 1, blocks: [entry(0, 0)]) == .quarantine(isolate: [0]))
        #expect(machine.abandoned(token: 2, blocks: [entry(8, 3)]) == .quarantine(isolate: []))
        let refused = machine.lateResult(token: 1, accepted: false)
        #expect(refused.pageblocks.isEmpty && refused.discarded.isEmpty)
        #expect(machine.figures.frames == 8)
        #expect(machine.lateResult(token: 2, accepted: false).pageblocks == [0])
    }

    @Test("a result that arrives before the device gives up is taken as the answer, nothing is held")
    func earlyResult() {
        var machine = QuarantineStateMachine(pageblockOrder: 9)
        machine.sent(token: 1, generation: 1)
        machine.sent(token: 2, generation: 1)
        #expect(machine.lateResult(token: 1, accepted: true).isEmpty)
        #expect(machine.lateResult(token: 2, accepted: false).isEmpty)
        #expect(machine.abandoned(token: 1, blocks: [entry(0, 9)]) == .resolved(accepted: true))
        #expect(machine.abandoned(token: 2, blocks: [entry(512, 9)]) == .resolved(accepted: false))
        #expect(machine.figures.reports == 0 && machine.figures.quarantinedTotal == 0)
    }

    @Test("a report of an earlier session still in the device's hands when a settled session starts is not held")
    func settledBeforeAbandon() {
        var machine = QuarantineStateMachine(pageblockOrder: 9)
        machine.sent(token: 1, generation: 1)
        _ = machine.sessionStarted(generation: 2, priorReportsSettled: true)
        #expect(machine.abandoned(token: 1, blocks: [entry(0, 9)]) == .resolved(accepted: false))
        #expect(machine.figures.reports == 0)
    }

    @Test("finished reports leave nothing behind; an unknown late result does nothing")
    func finishedForgets() {
        var machine = QuarantineStateMachine(pageblockOrder: 9)
        machine.sent(token: 1, generation: 1)
        machine.finished(token: 1)
        #expect(machine.lateResult(token: 1, accepted: true).isEmpty)
        // Not remembered as early either: a later abandon of the same token would be held.
        #expect(machine.abandoned(token: 1, blocks: [entry(0, 9)]) == .quarantine(isolate: [0]))
    }
}
