/// The broker core's memory state, kept under the core's one lock beside the ledger so that a
/// report's pause, inhibit and attachment checks and its accounting see one consistent state.
struct MemoryTable {
    /// A guest's attached memory and who inhibited its discard.
    struct Attached {
        var attachment: MemoryAttachment
        /// Identifies the attaching connection: only it may change its inhibit or detach.
        var token: UInt64
        /// Set by the attaching process (`SetDiscardInhibited`), with its reason.
        var inhibitedByAttacher: String?
    }

    /// What a guest's discard came to since the broker started; kept after the memory is
    /// detached, so the tenant's totals never go down.
    struct Figures {
        var discardedBytes: Int64 = 0
        var failuresByErrno: [String: Int] = [:]
    }

    var attached: [BrokerCore.GuestKey: Attached] = [:] {
        didSet { self.generation &+= 1 }
    }
    /// Inhibits set with `pagebrokerctl inhibit`, with their reason; they apply whether or not
    /// memory is attached now, so an inhibit set before a VMM attaches still holds.
    var adminInhibited: [BrokerCore.GuestKey: String] = [:]
    /// Guests paused with `pagebrokerctl pause TENANT GUEST` (persisted by the daemon).
    var pausedGuests: Set<BrokerCore.GuestKey> = [] {
        didSet { self.generation &+= 1 }
    }
    /// Reports being punched now, per guest: a new session's hello waits for these to finish
    /// before it says `prior_reports_settled`.
    var inFlight: [BrokerCore.GuestKey: Int] = [:]
    /// Called once the guest has no report being punched.
    var settleWaiters: [BrokerCore.GuestKey: [@Sendable () -> Void]] = [:]
    var figures: [BrokerCore.GuestKey: Figures] = [:]
    var nextToken: UInt64 = 0
    /// Changes whenever `attached` or `pausedGuests` does: a ``BrokerCore/ReportHandle`` that
    /// saw a guest unpaused and without memory is right while it is unchanged.
    private(set) var generation: UInt64 = 0

    /// Why the guest's discard is inhibited, or `nil` when it is not.
    func inhibitReason(_ key: BrokerCore.GuestKey) -> String? {
        if let reason = self.adminInhibited[key] { return "pagebrokerctl: \(reason)" }
        if let reason = self.attached[key]?.inhibitedByAttacher { return "attaching process: \(reason)" }
        return nil
    }

    /// A punch for `key` finished: the waiters to call (outside the lock) if it was the last.
    mutating func finishPunch(_ key: BrokerCore.GuestKey) -> [@Sendable () -> Void] {
        let remaining = (self.inFlight[key] ?? 1) - 1
        if remaining > 0 {
            self.inFlight[key] = remaining
            return []
        }
        self.inFlight[key] = nil
        return self.settleWaiters.removeValue(forKey: key) ?? []
    }
}
