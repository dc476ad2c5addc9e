import BrokerAdminClient
import BrokerProtocol

#if canImport(Glibc)
import Glibc
#endif

// The broker core's memory side: attaching and detaching guests' memory, punching reports,
// inhibits, per-guest pauses and the kernel's figures. State lives in `State.memory`, under
// the core's one lock; syscalls (fstat, fallocate) run outside it.

extension BrokerCore {
    /// How long a guest whose punch failed is told to wait before reporting again.
    public static let discardFailureRetryAfterMilliseconds: UInt32 = 1_000

    /// A successful attach: the handle the attaching connection detaches with.
    public struct MemoryAttachToken: Hashable, Sendable {
        public let tenant: String
        public let guest: String
        let value: UInt64
    }

    /// Attaches a guest's memory: checks the request, the peer's right to attach for the tenant
    /// and the descriptor, then registers it. On success the core owns `descriptor` (closed at
    /// ``detachMemory(_:)``); on a refusal the caller still owns it and must close it.
    public func attachMemory(
        _ request: Pagebroker_V1_AttachMemory,
        descriptor: CInt,
        peer: MemoryPeer
    ) -> Result<MemoryAttachToken, MemoryRefusal> {
        if let refusal = MemoryAttachmentValidator.checkRequest(request, descriptorCount: 1) {
            return .failure(refusal)
        }
        let key = GuestKey(tenant: request.tenantID, guest: request.guestID)
        // Who may attach, before anything about the descriptor is read or said: a process not
        // allowed for this tenant learns nothing of the broker's view of the file.
        let admitted: MemoryRefusal? = self.state.withLock { state in
            if state.shuttingDown { return MemoryRefusal(.shuttingDown, "broker is shutting down") }
            guard let policy = state.configuredPolicies.tenants[key.tenant] else {
                return MemoryRefusal(.unknownGuest, "tenant \(key.tenant) is not configured")
            }
            guard policy.memoryAccess.admits(peer) else {
                return MemoryRefusal(
                    .permissionDenied,
                    "\(peer) may not attach memory for tenant \(key.tenant)"
                )
            }
            return nil
        }
        if let admitted { return .failure(admitted) }
        let facts: MemoryDescriptorFacts
        switch MemoryDescriptorFacts.read(descriptor) {
        case .success(let read): facts = read
        case .failure(let refusal): return .failure(refusal)
        }
        if let refusal = MemoryAttachmentValidator.checkDescriptor(
            facts,
            pageSize: request.pageSize,
            totalPages: request.totalPages
        ) {
            return .failure(refusal)
        }
        return self.state.withLock { state in
            if state.shuttingDown { return .failure(MemoryRefusal(.shuttingDown, "broker is shutting down")) }
            if let existing = state.memory.attached[key] {
                return .failure(
                    MemoryRefusal(
                        .alreadyAttached,
                        "memory is already attached for \(key.tenant)/\(key.guest) by \(existing.attachment.peer)"
                    )
                )
            }
            state.memory.nextToken += 1
            let token = state.memory.nextToken
            state.memory.attached[key] = MemoryTable.Attached(
                attachment: MemoryAttachment(
                    descriptor: descriptor,
                    tenant: key.tenant,
                    guest: key.guest,
                    pageSize: request.pageSize,
                    totalPages: request.totalPages,
                    fileSystem: facts.fileSystem,
                    peer: peer
                ),
                token: token
            )
            if state.memory.figures[key] == nil { state.memory.figures[key] = MemoryTable.Figures() }
            return .success(MemoryAttachToken(tenant: key.tenant, guest: key.guest, value: token))
        }
    }

    /// The attaching connection ended: stop discarding for the guest and close the descriptor
    /// (once a punch running now has finished with it).
    public func detachMemory(_ token: MemoryAttachToken) {
        let key = GuestKey(tenant: token.tenant, guest: token.guest)
        let detached: MemoryAttachment? = self.state.withLock { state in
            guard let attached = state.memory.attached[key], attached.token == token.value else { return nil }
            state.memory.attached[key] = nil
            return attached.attachment
        }
        detached?.detach()
    }

    /// `SetDiscardInhibited` from the attaching connection.
    public func setDiscardInhibited(_ token: MemoryAttachToken, inhibited: Bool, reason: String) {
        let key = GuestKey(tenant: token.tenant, guest: token.guest)
        self.state.withLock { state in
            guard state.memory.attached[key]?.token == token.value else { return }
            state.memory.attached[key]?.inhibitedByAttacher = inhibited ? (reason.isEmpty ? "inhibited" : reason) : nil
        }
    }

    /// `pagebrokerctl inhibit` / `allow-discard`: holds whether or not memory is attached now.
    public func setDiscardInhibited(tenant: String, guest: String, inhibited: Bool, reason: String) throws(AdminError) {
        try self.state.withLock { (state) throws(AdminError) in
            guard state.policies.policy(for: tenant) != nil || state.ledger.tenant(tenant) != nil else {
                throw AdminError(.unknownTenant, "no tenant \(tenant)")
            }
            guard GuestIdentity.isValidSegment(Substring(guest)) else {
                throw AdminError(.badRequest, "'\(guest)' is not a valid guest id")
            }
            let key = GuestKey(tenant: tenant, guest: guest)
            state.memory.adminInhibited[key] = inhibited ? (reason.isEmpty ? "inhibited" : reason) : nil
        }
    }

    /// Pauses or resumes one guest (`pagebrokerctl pause TENANT GUEST`): its reports fail with
    /// `guest_paused`, beside the tenant's pause.
    public func setPaused(tenant: String, guest: String, paused: Bool) throws(AdminError) {
        try self.state.withLock { (state) throws(AdminError) in
            guard state.policies.policy(for: tenant) != nil || state.ledger.tenant(tenant) != nil else {
                throw AdminError(.unknownTenant, "no tenant \(tenant)")
            }
            guard GuestIdentity.isValidSegment(Substring(guest)) else {
                throw AdminError(.badRequest, "'\(guest)' is not a valid guest id")
            }
            let key = GuestKey(tenant: tenant, guest: guest)
            if paused { state.memory.pausedGuests.insert(key) } else { state.memory.pausedGuests.remove(key) }
        }
    }

    /// Guests paused through the admin socket, as `tenant/guest`, for the daemon to persist.
    public var pausedGuests: Set<String> {
        self.state.withLock { state in Set(state.memory.pausedGuests.map { "\($0.tenant)/\($0.guest)" }) }
    }

    /// Puts back guest pauses saved before a restart (`tenant/guest`; malformed entries are
    /// skipped: the store checked them when it read them).
    public func restorePausedGuests(_ guests: Set<String>) {
        self.state.withLock { state in
            state.memory.pausedGuests = Set(
                guests.compactMap { entry in
                    let parts = entry.split(separator: "/", omittingEmptySubsequences: false)
                    guard parts.count == 2 else { return nil }
                    return GuestKey(tenant: String(parts[0]), guest: String(parts[1]))
                }
            )
        }
    }

    /// Calls `body` once no report of the guest is being punched: at once when none is (always
    /// so for a fresh broker or a guest without attached memory), else when the last one ends.
    /// A session's hello says `prior_reports_settled` only from here: the session was admitted
    /// first, so the sessions it replaced can no longer start a punch (``account(_:sessionID:blocks:)``
    /// refuses reports of a session that is not the guest's current one).
    public func whenPriorReportsSettled(_ identity: GuestIdentity, _ body: @escaping @Sendable () -> Void) {
        let key = GuestKey(tenant: identity.tenant, guest: identity.guest)
        let now: Bool = self.state.withLock { state in
            guard (state.memory.inFlight[key] ?? 0) > 0 else { return true }
            state.memory.settleWaiters[key, default: []].append(body)
            return false
        }
        if now { body() }
    }

    /// A punch step that never ran (the thread pool was stopping): no longer in flight, and
    /// the report counted as failed with `shutting_down`.
    func finishPunchNotRun(_ key: GuestKey, tenant: String) {
        let waiters = self.state.withLock { state in
            state.ledger.recordReportFailure(tenant: tenant, reason: Pagebroker_V1_ReasonCode.shuttingDown.code)
            return state.memory.finishPunch(key)
        }
        for waiter in waiters { waiter() }
    }

    /// The locked step decided to punch: punch outside the lock, then account all or nothing.
    /// Sessions call this on a thread pool (SessionHandler says why); the report counts as in
    /// flight for `prior_reports_settled` until it returns.
    func punchAndAccount(
        _ key: GuestKey,
        attachment: MemoryAttachment,
        blocks: [ReportedBlock]
    ) -> ReportOutcome {
        let started = self.now
        let outcome: MemoryAttachment.PunchOutcome
        if let beyond = blocks.first(where: {
            $0.frame >= attachment.totalPages || (1 << $0.order) > attachment.totalPages - $0.frame
        }) {
            // The session checked the blocks against its own hello; the memory attached may be
            // smaller. Nothing is punched.
            outcome = .failed(errno: ERANGE, frame: beyond.frame, bytesBefore: 0)
        } else {
            outcome = attachment.punch(blocks)
        }
        let duration = self.now - started
        let (result, waiters): (ReportOutcome, [@Sendable () -> Void]) = self.state.withLock { state in
            let waiters = state.memory.finishPunch(key)
            func failed(_ reason: Pagebroker_V1_ReasonCode, _ retry: UInt32, _ message: String) -> ReportOutcome {
                state.ledger.recordReportFailure(tenant: key.tenant, reason: reason.code)
                return (reason, retry, message, duration)
            }
            switch outcome {
            case .detached:
                return (
                    failed(
                        .backendFailed,
                        Self.discardFailureRetryAfterMilliseconds,
                        "the guest's memory was detached before its report could be discarded"
                    ), waiters
                )
            case .failed(let error, let frame, let bytesBefore):
                let name = errnoName(error)
                state.memory.figures[key, default: MemoryTable.Figures()].failuresByErrno[name, default: 0] += 1
                state.memory.figures[key, default: MemoryTable.Figures()].discardedBytes += bytesBefore
                return (
                    failed(
                        .backendFailed,
                        Self.discardFailureRetryAfterMilliseconds,
                        "discard failed at frame \(frame): fallocate(PUNCH_HOLE): \(name)"
                    ), waiters
                )
            case .punched(let bytes):
                state.memory.figures[key, default: MemoryTable.Figures()].discardedBytes += bytes
                do {
                    _ = try state.ledger.report(
                        tenant: key.tenant,
                        guest: key.guest,
                        ranges: blocks.lazy.map { $0.frame..<($0.frame + (1 << $0.order)) }
                    )
                    return ((.ok, 0, "", duration), waiters)
                } catch {
                    return (failed(.backendFailed, 1000, "\(error)"), waiters)
                }
            }
        }
        for waiter in waiters { waiter() }
        return result
    }

    /// One guest's memory figures now, with the resident bytes read from the kernel.
    public struct GuestMemoryFigures: Hashable, Sendable {
        public var attached: Bool
        /// `st_blocks * 512` of the attached descriptor, read now; `nil` when not attached.
        public var residentBytes: Int64?
        public var discardedBytes: Int64
        public var failuresByErrno: [String: Int]
        /// Why discard is inhibited, or `nil`.
        public var inhibitedBy: String?
        public var paused: Bool
    }

    /// Memory figures per guest (`tenant/guest`) the core has any memory state for.
    public func memoryFigures() -> [String: GuestMemoryFigures] {
        let (entries, attachments) = self.state.withLock { state in
            var keys = Set(state.memory.figures.keys)
            keys.formUnion(state.memory.attached.keys)
            keys.formUnion(state.memory.adminInhibited.keys)
            keys.formUnion(state.memory.pausedGuests)
            var entries: [(GuestKey, GuestMemoryFigures)] = []
            var attachments: [GuestKey: MemoryAttachment] = [:]
            for key in keys {
                let figures = state.memory.figures[key] ?? MemoryTable.Figures()
                if let attached = state.memory.attached[key] { attachments[key] = attached.attachment }
                entries.append(
                    (
                        key,
                        GuestMemoryFigures(
                            attached: state.memory.attached[key] != nil,
                            residentBytes: nil,
                            discardedBytes: figures.discardedBytes,
                            failuresByErrno: figures.failuresByErrno,
                            inhibitedBy: state.memory.inhibitReason(key),
                            paused: state.memory.pausedGuests.contains(key)
                        )
                    )
                )
            }
            return (entries, attachments)
        }
        // fstat outside the lock: one syscall per attached guest.
        var result: [String: GuestMemoryFigures] = [:]
        for (key, var figures) in entries {
            figures.residentBytes = attachments[key]?.residentBytes()
            result["\(key.tenant)/\(key.guest)"] = figures
        }
        return result
    }

    /// Whether memory is attached for the guest now (for tests and logs).
    public func isMemoryAttached(tenant: String, guest: String) -> Bool {
        self.state.withLock { $0.memory.attached[GuestKey(tenant: tenant, guest: guest)] != nil }
    }
}
