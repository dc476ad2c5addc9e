/// What the broker holds discarded for one guest: its frame set, page size and session state.
///
/// Read-only outside the module: every change goes through ``Ledger``, which keeps the tenant
/// sums in step with it.
public struct GuestLedger: Sendable {
    /// The tenant the guest belongs to.
    public let tenant: String
    /// The guest's id, unique within its tenant.
    public let guest: String
    /// The guest's page size in bytes, from its latest hello.
    public private(set) var pageSize: Int
    /// The frames the host holds discarded for the guest: authoritative, including while a sync
    /// is in progress.
    public private(set) var discarded = FrameRangeSet()
    /// Whether a session for the guest is open.
    public private(set) var isConnected = false
    /// The set a sync in progress is building; `nil` when no sync is in progress.
    private var pendingSync: FrameRangeSet?
    /// Where the guest's tenant sits in the ledger, so an update reaches its sums without a lookup.
    let tenantSlot: Int

    init(tenant: String, guest: String, pageSize: Int, tenantSlot: Int) {
        self.tenant = tenant
        self.guest = guest
        self.pageSize = pageSize
        self.tenantSlot = tenantSlot
    }

    /// Whether a sync has begun and not yet finished.
    public var isSyncing: Bool { self.pendingSync != nil }

    /// The bytes the host can reclaim for the guest: its discarded frames times its page size.
    ///
    /// Cannot overflow: frames are below 2^32 (``FrameRangeSet/frameLimit``) and the page size
    /// is at most 2^30 (``Ledger/connect(tenant:guest:pageSize:)`` refuses larger), so the
    /// product is at most 2^62.
    public var reclaimableBytes: Int { self.discarded.frameCount * self.pageSize }

    // MARK: Session

    /// Marks the guest connected. A different page size than before makes the old record
    /// meaningless (its frame numbers describe another layout), so it is dropped; the sync that
    /// follows every connect rebuilds it.
    ///
    /// - Returns: the change in discarded frames and whether the guest was connected before.
    mutating func connect(pageSize: Int) -> (frameDelta: Int, wasConnected: Bool) {
        let wasConnected = self.isConnected
        // A newer session replaces an older one; whatever that one was syncing is void.
        self.pendingSync = nil
        self.isConnected = true
        guard pageSize != self.pageSize else { return (0, wasConnected) }
        let dropped = self.discarded.frameCount
        self.discarded.removeAll()
        self.pageSize = pageSize
        return (-dropped, wasConnected)
    }

    /// Marks the guest disconnected and voids a sync in progress. The discarded set stays: the
    /// memory behind it stays discarded on the host until the guest reconnects and syncs.
    ///
    /// - Returns: whether the guest was connected.
    mutating func disconnect() -> Bool {
        let wasConnected = self.isConnected
        self.isConnected = false
        self.pendingSync = nil
        return wasConnected
    }

    // MARK: Updates

    /// Adds a reported range; returns the frames not already discarded.
    mutating func report(_ range: Range<UInt64>) -> Int {
        // The partial sync must end up as the guest's record at the time it finishes, and
        // reports after its chunks were taken are part of that record.
        self.pendingSync?.insert(range)
        return self.discarded.insert(range)
    }

    /// Removes a reused range; returns the frames that were discarded.
    mutating func reuse(_ range: Range<UInt64>) -> Int {
        self.pendingSync?.remove(range)
        return self.discarded.remove(range)
    }

    mutating func beginSync() {
        self.pendingSync = FrameRangeSet()
    }

    mutating func appendSync(_ range: Range<UInt64>) {
        self.pendingSync?.insert(range)
    }

    /// Makes the partial sync authoritative; returns the change in discarded frames.
    mutating func finishSync() -> (before: Int, after: Int) {
        let before = self.discarded.frameCount
        if let pending = self.pendingSync {
            self.discarded = pending
            self.pendingSync = nil
        }
        return (before, self.discarded.frameCount)
    }

    /// Checks the guest's frame sets; empty when sound.
    func checkInvariants() -> [String] {
        var problems = self.discarded.checkInvariants()
        if let pending = self.pendingSync { problems += pending.checkInvariants().map { "pending sync: \($0)" } }
        if self.pendingSync != nil, !self.isConnected { problems.append("sync in progress while disconnected") }
        return problems.map { "\(self.tenant)/\(self.guest): \($0)" }
    }
}
