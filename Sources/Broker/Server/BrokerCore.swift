import BrokerAdminClient
import BrokerProtocol
import Synchronization

/// Something the broker can tell to end a session from outside its event loop.
public protocol SessionControl: AnyObject, Sendable {
    /// A newer session of the same guest took over: say goodbye and close.
    func replaced()
    /// The broker is stopping: fail new reports with `shutting_down`, then say goodbye.
    func shutdown()
}

/// The broker's shared state: who is connected, the ledger, tenant policies and rate limits.
///
/// Every session's event loop calls in here; one lock guards it all, held for the few
/// microseconds an update takes (the ledger's updates are O(log n)).
public final class BrokerCore: AdminBackend, Sendable {
    /// How a hello was answered.
    public enum Admission: Sendable, Equatable {
        case admitted(sessionID: String)
        case refused(code: Pagebroker_V1_ReasonCode, message: String)
    }

    /// How long a guest of a paused tenant is told to wait before reporting again.
    public static let pausedRetryAfterMilliseconds: UInt32 = 5_000

    /// A guest, by tenant and guest id.
    struct GuestKey: Hashable, Sendable {
        var tenant: String
        var guest: String
    }

    struct SessionEntry {
        var sessionID: String
        var control: any SessionControl
    }

    struct State {
        var ledger = Ledger()
        /// The policies in force: the configuration's, with `pauseOverrides` applied.
        var policies: PolicySet {
            didSet { self.policyGeneration &+= 1 }
        }
        /// Changes whenever `policies` does (a reload, a pause or resume), for ``ReportHandle``.
        private(set) var policyGeneration: UInt64 = 0
        /// The configuration's policies, as last loaded.
        var configuredPolicies: PolicySet
        /// Pause and resume set through the admin socket; they outlive reloads.
        var pauseOverrides: [String: Bool] = [:]
        var buckets: [String: TokenBucket] = [:]
        var sessions: [GuestKey: SessionEntry] = [:]
        var nextSession: UInt64 = 0
        var shuttingDown = false
        var listening: [String] = []
        var handshakeFailures: [String: Int] = [:]
        /// Attached memory, discard inhibits, per-guest pauses and punch figures.
        var memory = MemoryTable()
    }

    public let version: String
    /// Guest sessions the broker holds at once; one more is refused at its hello.
    public let maxSessions: Int
    let state: Mutex<State>
    private let clock: @Sendable () -> Duration
    private let started: Duration

    /// - Parameters:
    ///   - policies: tenant policies from the configuration.
    ///   - clock: monotonic time; injectable so rate limits can be tested in virtual time.
    public init(
        policies: PolicySet,
        maxSessions: Int = 10_000,
        version: String = "pagebrokerd 0.1",
        clock: @escaping @Sendable () -> Duration = { ContinuousClock.now - BrokerCore.epoch }
    ) {
        var state = State(policies: policies, configuredPolicies: policies)
        for tenant in policies.tenants.keys { state.ledger.addTenant(tenant) }
        self.state = Mutex(state)
        self.maxSessions = maxSessions
        self.version = version
        self.clock = clock
        self.started = clock()
    }

    /// The origin of the default clock.
    public static let epoch = ContinuousClock.now

    /// Now, on the core's clock.
    public var now: Duration { self.clock() }

    // MARK: Configuration

    /// Replaces the tenant policies (on reload). Rate limits restart full; sessions stay; pause
    /// and resume set through the admin socket still apply.
    public func updatePolicies(_ policies: PolicySet) {
        self.state.withLock { state in
            state.configuredPolicies = policies
            state.policies = Self.applying(state.pauseOverrides, to: policies)
            state.buckets = [:]
            for tenant in policies.tenants.keys { state.ledger.addTenant(tenant) }
        }
    }

    /// The addresses the broker listens on, for `status`.
    public func setListening(_ addresses: [String]) {
        self.state.withLock { $0.listening = addresses }
    }

    /// Whether guests of `tenant` may connect at all: checked during the TLS handshake, so an
    /// unknown tenant's handshake is refused with a logged reason.
    public func admitsTenant(_ tenant: String) -> Bool {
        self.state.withLock { $0.policies.policy(for: tenant) != nil }
    }

    /// Counts a refused handshake under `reason` (a stable code name).
    public func recordHandshakeFailure(reason: String) {
        self.state.withLock { $0.handshakeFailures[reason, default: 0] += 1 }
    }

    /// Refused handshakes by reason.
    public var handshakeFailures: [String: Int] { self.state.withLock { $0.handshakeFailures } }

    // MARK: Sessions

    /// A guest said hello: admit it (replacing an older session of the same guest, which is told
    /// to go) or refuse it.
    public func admit(_ identity: GuestIdentity, geometry: GuestGeometry, control: any SessionControl) -> Admission {
        let key = GuestKey(tenant: identity.tenant, guest: identity.guest)
        let outcome: (Admission, (any SessionControl)?) = self.state.withLock { state in
            guard !state.shuttingDown else {
                return (.refused(code: .shuttingDown, message: "broker is shutting down"), nil)
            }
            guard let policy = state.policies.policy(for: identity.tenant) else {
                return (.refused(code: .protocolViolation, message: "tenant \(identity.tenant) is not configured"), nil)
            }
            // The session's state machine refuses such a hello first; checked again here because
            // the core is public and every sum it keeps relies on these bounds.
            if let violation = ProtocolLimits.violation(pageSize: geometry.pageSize, totalPages: geometry.totalPages) {
                return (.refused(code: .limitExceeded, message: violation), nil)
            }
            // A guest replacing its own session does not need a new slot.
            if state.sessions[key] == nil && state.sessions.count >= self.maxSessions {
                return (
                    .refused(
                        code: .rateLimited,
                        message: "broker already holds its maximum of \(self.maxSessions) sessions"
                    ), nil
                )
            }
            if let limit = policy.maxGuests {
                let connected = state.sessions.keys.count { $0.tenant == identity.tenant && $0 != key }
                if connected >= limit {
                    return (
                        .refused(
                            code: .rateLimited,
                            message: "tenant \(identity.tenant) already has its maximum of \(limit) guests connected"
                        ), nil
                    )
                }
            }
            do {
                try state.ledger.connect(
                    tenant: identity.tenant,
                    guest: identity.guest,
                    pageSize: Int(geometry.pageSize)
                )
            } catch {
                return (.refused(code: .backendFailed, message: "\(error)"), nil)
            }
            state.nextSession += 1
            let sessionID = "s\(state.nextSession)-\(UInt32.random(in: .min ... .max))"
            let previous = state.sessions[key]?.control
            state.sessions[key] = SessionEntry(sessionID: sessionID, control: control)
            return (.admitted(sessionID: sessionID), previous)
        }
        // Tell the replaced session outside the lock: it hops to its own event loop.
        outcome.1?.replaced()
        return outcome.0
    }

    /// A session ended. Only the guest's current session may disconnect it: a session that was
    /// replaced must not take its successor's guest offline.
    public func disconnect(_ identity: GuestIdentity, sessionID: String) {
        let key = GuestKey(tenant: identity.tenant, guest: identity.guest)
        self.state.withLock { state in
            guard state.sessions[key]?.sessionID == sessionID else { return }
            state.sessions[key] = nil
            try? state.ledger.disconnect(tenant: identity.tenant, guest: identity.guest)
        }
    }

    /// How a report was answered, and how long punching its blocks took when the guest's memory
    /// is attached (`nil` otherwise), for the punch histogram.
    public typealias ReportOutcome = (
        reason: Pagebroker_V1_ReasonCode, retryAfterMilliseconds: UInt32, message: String, punchDuration: Duration?
    )

    /// What the locked part of ``account(_:sessionID:blocks:)`` decided.
    enum ReportStep {
        /// Answered (accounted, or refused).
        case done(ReportOutcome)
        /// The guest's memory is attached: punch these blocks, then account them.
        case punch(MemoryAttachment)
    }

    /// Accounts a validated report: tenant and guest pause, rate limit, then, for a guest with
    /// memory attached, the discard (inhibit, then the punch), then the ledger.
    ///
    /// - Parameter sessionID: the reporting session; with memory attached, a session that a
    ///   newer one replaced may no longer punch (its successor's hello promised that).
    public func account(_ identity: GuestIdentity, sessionID: String? = nil, blocks: [ReportedBlock]) -> ReportOutcome {
        let key = GuestKey(tenant: identity.tenant, guest: identity.guest)
        switch self.reportStep(identity, sessionID: sessionID, blocks: blocks) {
        case .done(let outcome):
            return outcome
        case .punch(let attachment):
            return self.punchAndAccount(key, attachment: attachment, blocks: blocks)
        }
    }

    /// What a session's report step found the last time it looked the guest up by name, so
    /// that its next reports need not: the tenant's policy, the guest's pause and memory, and
    /// where its ledger record is.
    ///
    /// The core checks it against generation counters that change whenever any of those can
    /// (a reload or a pause replaces the policies; a guest paused, resumed, or its memory
    /// attached or detached; a ledger record added or moved), so a stale handle is never used:
    /// the step looks the guest up again and refreshes it. A handle belongs to one guest of one
    /// core; a session keeps one for its guest.
    public struct ReportHandle: Sendable {
        fileprivate var policyGeneration: UInt64 = 0
        fileprivate var memoryGeneration: UInt64 = 0
        fileprivate var slotGeneration: UInt64 = 0
        fileprivate var filled = false
        /// The guest's ledger slot when nothing but the ledger stands between its reports and
        /// an OK (the tenant configured, neither it nor the guest paused, no rate limit, no
        /// memory attached); `nil` when a report needs the full step.
        fileprivate var directSlot: Int?

        /// A handle that has looked nothing up yet.
        public init() {}
    }

    /// ``reportStep(_:sessionID:blocks:)`` for a session that keeps `handle` for its guest: the
    /// same outcome and counters, without looking the guest up while the handle is current.
    func reportStep(
        _ handle: inout ReportHandle,
        _ identity: GuestIdentity,
        sessionID: String?,
        blocks: [ReportedBlock]
    ) -> ReportStep {
        self.state.withLock { state in
            let current =
                handle.filled && handle.policyGeneration == state.policyGeneration
                && handle.memoryGeneration == state.memory.generation
                && handle.slotGeneration == state.ledger.slotGeneration
            if current, let slot = handle.directSlot, !state.shuttingDown {
                do {
                    _ = try state.ledger.report(
                        slot: slot,
                        tenant: identity.tenant,
                        guest: identity.guest,
                        ranges: blocks.lazy.map { $0.frame..<($0.frame + (1 << $0.order)) }
                    )
                    return .done((.ok, 0, "", nil))
                } catch {
                    // What the keyed step's ledger call throws for the same record.
                    state.ledger.recordReportFailure(
                        tenant: identity.tenant,
                        reason: Pagebroker_V1_ReasonCode.backendFailed.code
                    )
                    return .done((.backendFailed, 1000, "\(error)", nil))
                }
            }
            if !current { Self.refresh(&handle, identity, state: state) }
            // The clock is read only here: a report the handle answers needs no time (no rate
            // limit applies to it), and a clock read was ~2% of the broker's CPU per report.
            return self.keyedStep(&state, identity, sessionID: sessionID, blocks: blocks, now: self.clock())
        }
    }

    private static func refresh(_ handle: inout ReportHandle, _ identity: GuestIdentity, state: State) {
        let key = GuestKey(tenant: identity.tenant, guest: identity.guest)
        handle.policyGeneration = state.policyGeneration
        handle.memoryGeneration = state.memory.generation
        handle.slotGeneration = state.ledger.slotGeneration
        handle.filled = true
        handle.directSlot = nil
        guard let policy = state.policies.policy(for: identity.tenant), !policy.paused,
            policy.maxReportsPerSecond == nil, !state.memory.pausedGuests.contains(key),
            state.memory.attached[key] == nil
        else { return }
        handle.directSlot = state.ledger.guestSlot(tenant: identity.tenant, guest: identity.guest)
    }

    /// The locked part of ``account(_:sessionID:blocks:)``: every check, and the ledger when
    /// nothing is to be punched. A `.punch` step counts as in flight until ``punchAndAccount``.
    func reportStep(_ identity: GuestIdentity, sessionID: String?, blocks: [ReportedBlock]) -> ReportStep {
        let now = self.clock()
        return self.state.withLock { state in
            self.keyedStep(&state, identity, sessionID: sessionID, blocks: blocks, now: now)
        }
    }

    /// The report step, finding the guest's policy, pause, memory and record by its names.
    private func keyedStep(
        _ state: inout State,
        _ identity: GuestIdentity,
        sessionID: String?,
        blocks: [ReportedBlock],
        now: Duration
    ) -> ReportStep {
        let key = GuestKey(tenant: identity.tenant, guest: identity.guest)
        let tenant = identity.tenant
        func failed(_ reason: Pagebroker_V1_ReasonCode, _ retry: UInt32, _ message: String) -> ReportStep {
            state.ledger.recordReportFailure(tenant: tenant, reason: reason.code)
            return .done((reason, retry, message, nil))
        }
        if state.shuttingDown { return failed(.shuttingDown, 0, "broker is shutting down") }
        guard let policy = state.policies.policy(for: tenant) else {
            return failed(
                .tenantPaused,
                Self.pausedRetryAfterMilliseconds,
                "tenant \(tenant) is no longer configured"
            )
        }
        if policy.paused {
            return failed(.tenantPaused, Self.pausedRetryAfterMilliseconds, "tenant \(tenant) is paused")
        }
        if state.memory.pausedGuests.contains(key) {
            return failed(
                .guestPaused,
                Self.pausedRetryAfterMilliseconds,
                "guest \(tenant)/\(identity.guest) is paused"
            )
        }
        if let rate = policy.maxReportsPerSecond {
            var bucket =
                state.buckets[tenant]
                ?? TokenBucket(
                    rate: rate,
                    capacity: Double(policy.burst ?? max(1, Int(rate.rounded(.up)))),
                    now: now
                )
            let decision = bucket.take(now: now)
            state.buckets[tenant] = bucket
            if case .limited(let retryAfter) = decision {
                let milliseconds =
                    retryAfter.components.seconds * 1000 + retryAfter.components.attoseconds / 1_000_000_000_000_000
                return failed(
                    .rateLimited,
                    UInt32(clamping: max(1, milliseconds)),
                    "tenant \(tenant) is over \(rate) reports/s"
                )
            }
        }
        if let attached = state.memory.attached[key] {
            if let reason = state.memory.inhibitReason(key) {
                return failed(
                    .discardInhibited,
                    Self.pausedRetryAfterMilliseconds,
                    "discard is inhibited for guest \(tenant)/\(identity.guest) (\(reason))"
                )
            }
            if let sessionID, state.sessions[key]?.sessionID != sessionID {
                return failed(.sessionReplaced, 0, "a newer session of this guest took over")
            }
            let geometry = state.ledger.guest(tenant: tenant, guest: identity.guest)?.pageSize
            guard geometry == Int(attached.attachment.pageSize) else {
                return failed(
                    .backendFailed,
                    Self.discardFailureRetryAfterMilliseconds,
                    "the memory attached for this guest has page size \(attached.attachment.pageSize); the session's is \(geometry.map(String.init) ?? "unknown")"
                )
            }
            // Counted before the lock is released, so a hello that arrives while this report
            // is being punched waits for it (see `whenPriorReportsSettled`).
            state.memory.inFlight[key, default: 0] += 1
            return .punch(attached.attachment)
        }
        do {
            _ = try state.ledger.report(
                tenant: tenant,
                guest: identity.guest,
                ranges: blocks.lazy.map { $0.frame..<($0.frame + (1 << $0.order)) }
            )
            return .done((.ok, 0, "", nil))
        } catch {
            return failed(.backendFailed, 1000, "\(error)")
        }
    }

    /// Counts a report the session state machine refused before accounting.
    public func recordRefusedReport(_ identity: GuestIdentity, reason: Pagebroker_V1_ReasonCode) {
        self.state.withLock { $0.ledger.recordReportFailure(tenant: identity.tenant, reason: reason.code) }
    }

    /// Frames the guest took back.
    public func reuse(_ identity: GuestIdentity, ranges: [FrameRange]) throws(LedgerError) {
        try self.state.withLock { (state) throws(LedgerError) in
            _ = try state.ledger.reuse(
                tenant: identity.tenant,
                guest: identity.guest,
                ranges: ranges.lazy.map { $0.firstFrame..<($0.firstFrame + $0.count) }
            )
        }
    }

    /// A sync chunk: chunk 0 starts a new record, `final` replaces the old one with it.
    public func sync(_ identity: GuestIdentity, chunk: UInt32, ranges: [FrameRange], final: Bool) throws(LedgerError) {
        try self.state.withLock { (state) throws(LedgerError) in
            if chunk == 0 { try state.ledger.beginSync(tenant: identity.tenant, guest: identity.guest) }
            try state.ledger.appendSync(
                tenant: identity.tenant,
                guest: identity.guest,
                ranges: ranges.lazy.map { $0.firstFrame..<($0.firstFrame + $0.count) }
            )
            if final { try state.ledger.finishSync(tenant: identity.tenant, guest: identity.guest) }
        }
    }

    /// Stops admitting guests and returns the sessions to wind down.
    public func beginShutdown() -> [any SessionControl] {
        self.state.withLock { state in
            state.shuttingDown = true
            return state.sessions.values.map(\.control)
        }
    }

    /// Sessions currently registered.
    public var sessionCount: Int { self.state.withLock { $0.sessions.count } }

    /// The ledger's invariants (for tests): empty when consistent.
    public func checkInvariants() -> [String] { self.state.withLock { $0.ledger.checkInvariants() } }

    // MARK: AdminBackend

    public func status() -> BrokerStatus {
        let uptime = self.clock() - self.started
        return self.state.withLock { state in
            let totals = state.ledger.totals
            let tenants = state.ledger.tenants()
            return BrokerStatus(
                version: self.version,
                uptimeSeconds: Double(uptime.components.seconds) + Double(uptime.components.attoseconds) / 1e18,
                listening: state.listening,
                tenants: totals.tenants,
                guests: totals.guests,
                guestsConnected: totals.guestsConnected,
                sessions: state.sessions.count,
                // The ledger's exact Int128 sum saturates into the admin API's Int (see
                // TenantSnapshot); the counts are summed saturating, so two tenants at the
                // limits make `status` say "at least Int.max", not trap.
                reclaimableBytes: Int(clamping: totals.reclaimableBytes),
                reportsOK: tenants.lazy.map(\.reportsOK).saturatingSum(),
                reportsFailed: tenants.lazy.map(\.reportsFailed).saturatingSum(),
                shuttingDown: state.shuttingDown
            )
        }
    }

    public func tenants() -> [TenantSnapshot] {
        let memory = self.memoryFigures()
        var byTenant: [String: (resident: Int, discarded: Int, failures: [String: Int])] = [:]
        for (name, figures) in memory {
            let tenant = String(name.prefix { $0 != "/" })
            var sums = byTenant[tenant] ?? (0, 0, [:])
            sums.resident = sums.resident.addingSaturating(Int(clamping: figures.residentBytes ?? 0))
            sums.discarded = sums.discarded.addingSaturating(Int(clamping: figures.discardedBytes))
            sums.failures.merge(figures.failuresByErrno) { $0.addingSaturating($1) }
            byTenant[tenant] = sums
        }
        return self.state.withLock { state in
            state.ledger.tenants().map { snapshot in
                var snapshot = snapshot
                snapshot.paused = state.policies.policy(for: snapshot.tenant)?.paused ?? false
                if let sums = byTenant[snapshot.tenant] {
                    snapshot.residentBytes = sums.resident
                    snapshot.discardedBytes = sums.discarded
                    snapshot.discardFailuresByErrno = sums.failures
                }
                return snapshot
            }
        }.sorted { $0.tenant < $1.tenant }
    }

    public func guests(tenant: String?) -> [GuestSnapshot] {
        let memory = self.memoryFigures()
        return self.state.withLock { $0.ledger.guests(tenant: tenant) }.map { snapshot in
            var snapshot = snapshot
            if let figures = memory["\(snapshot.tenant)/\(snapshot.guest)"] {
                snapshot.memoryAttached = figures.attached
                snapshot.residentBytes = figures.residentBytes.map { Int(clamping: $0) }
                snapshot.discardedBytes = Int(clamping: figures.discardedBytes)
                snapshot.discardFailuresByErrno = figures.failuresByErrno
                snapshot.discardInhibitedBy = figures.inhibitedBy
                snapshot.paused = figures.paused
            }
            return snapshot
        }.sorted {
            ($0.tenant, $0.guest) < ($1.tenant, $1.guest)
        }
    }

    public func setPaused(tenant: String, paused: Bool) throws(AdminError) {
        try self.state.withLock { (state) throws(AdminError) in
            guard
                state.configuredPolicies.tenants[tenant] != nil
                    || (state.ledger.tenant(tenant) != nil && state.configuredPolicies.defaultPolicy != nil)
            else {
                throw AdminError(.unknownTenant, "no tenant \(tenant)")
            }
            state.pauseOverrides[tenant] = paused
            state.policies = Self.applying(state.pauseOverrides, to: state.configuredPolicies)
        }
    }

    /// Pause and resume set through the admin socket (tenant → paused), for the daemon to persist.
    public var pauseOverrides: [String: Bool] { self.state.withLock { $0.pauseOverrides } }

    /// Puts back pause overrides saved before a restart (or undoes a change that could not be
    /// saved). Overrides for tenants the configuration no longer admits are kept, unused, in case
    /// it admits them again.
    public func restorePauseOverrides(_ overrides: [String: Bool]) {
        self.state.withLock { state in
            state.pauseOverrides = overrides
            state.policies = Self.applying(overrides, to: state.configuredPolicies)
            for tenant in state.policies.tenants.keys { state.ledger.addTenant(tenant) }
        }
    }

    /// `policies` with the admin overrides applied; a tenant admitted only by the default policy
    /// gets its own entry so that its pause applies to it alone.
    private static func applying(_ overrides: [String: Bool], to policies: PolicySet) -> PolicySet {
        var result = policies
        for (tenant, paused) in overrides {
            guard var policy = result.tenants[tenant] ?? result.defaultPolicy else { continue }
            policy.paused = paused
            result.tenants[tenant] = policy
        }
        return result
    }

    /// Whether a tenant is paused now.
    public func isPaused(tenant: String) -> Bool {
        self.state.withLock { $0.policies.policy(for: tenant)?.paused ?? false }
    }
}
