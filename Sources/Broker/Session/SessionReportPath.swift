import BrokerProtocol

/// What a guest session's report path touches, in one value: the state machine, the storage
/// the decoder fills with a report's blocks, and the core's report handle.
///
/// A session (a class) keeps it as one stored property, so that a report is checked and, when
/// the core accounts it at once, answered within one access to it: Swift checks exclusivity
/// dynamically on each access to a class's stored property (~80 instructions each), and the
/// machine, the handle and the blocks taken one by one were several of them per report.
struct SessionReportPath {
    var machine: SessionStateMachine
    /// The storage of the last report's block list, handed to the decoder for the next one.
    var blocks: [UInt64] = []
    /// What the core's report step looked up for this session's guest, kept for the next report.
    var handle = BrokerCore.ReportHandle()

    init(machine: SessionStateMachine) {
        self.machine = machine
    }

    /// Where a report got to in ``report(seq:core:identity:sessionID:now:)``.
    enum Step {
        /// Accounted (or refused by the core) at once: send this result.
        case answered(SessionStateMachine.ReportAnswer)
        /// Valid, and the guest's memory is attached: punch these blocks, then answer.
        case punch(seq: UInt64, blocks: [ReportedBlock], attachment: MemoryAttachment)
        /// Anything else the machine said (a refusal, an error, nothing): perform it. `.account`
        /// only when there is no identity to account for.
        case action(SessionStateMachine.Action)
    }

    /// The report with `seq` and the blocks in ``blocks``: the machine's
    /// ``SessionStateMachine/receiveReport(seq:blocks:now:)``, then, for a report it passes on,
    /// the core's step and, when that answers it, ``SessionStateMachine/reportAnswered(seq:reason:retryAfterMilliseconds:message:now:)``
    /// at `now` (answered within microseconds of its arrival: that time will do as now, one
    /// clock read less per report).
    ///
    /// The core does not call back into the session while it steps (it takes its own lock, and
    /// what it tells sessions goes through their executors), so nothing else reaches this value
    /// meanwhile.
    mutating func report(
        seq: UInt64,
        core: BrokerCore,
        identity: GuestIdentity?,
        sessionID: String?,
        now: Duration
    ) -> Step {
        let action = self.machine.receiveReport(seq: seq, blocks: self.blocks, now: now)
        guard case .account(let seq, let blocks) = action, let identity else { return .action(action) }
        switch core.reportStep(&self.handle, identity, sessionID: sessionID, blocks: blocks) {
        case .done(let outcome):
            return .answered(
                self.machine.reportAnswered(
                    seq: seq,
                    reason: outcome.reason,
                    retryAfterMilliseconds: outcome.retryAfterMilliseconds,
                    message: outcome.message,
                    now: now
                )
            )
        case .punch(let attachment):
            return .punch(seq: seq, blocks: blocks, attachment: attachment)
        }
    }
}
