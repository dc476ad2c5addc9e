import BrokerAdminClient
import BrokerProtocol

/// The broker's accounts: per guest the frames the host holds discarded, per tenant the sums
/// and counters.
///
/// A report adds its ranges (a union, so a merged block reported again is not counted twice),
/// a reuse removes them, and a sync replaces the guest's set with the one the guest sends after
/// a (re)connect. Every update is O(log n) in the guest's ranges, and the tenant sums are
/// adjusted by the update's delta rather than re-summed, so they stay exact and cheap.
///
/// Records outlive sessions: a disconnected guest's memory stays discarded on the host until
/// the guest reconnects and syncs, so its frames stay counted.
///
/// A value type with no locking of its own: the broker keeps one behind its lock. Calls that
/// throw change nothing.
public struct Ledger: Sendable {
    /// A guest's identity: its id is unique within its tenant only.
    private struct GuestKey: Hashable, Sendable {
        var tenant: String
        var guest: String
    }

    // Records live in arrays and are found through one dictionary lookup, so an update mutates
    // its guest and tenant in place (a dictionary's in-place accessor would cost a lookup per
    // level and a heap-allocated coroutine frame per access).
    private var tenantSlots: [String: Int] = [:]
    private var tenantRecords: [TenantLedger] = []
    private var guestSlots: [GuestKey: Int] = [:]
    private var guestRecords: [GuestLedger] = []

    /// An empty ledger.
    public init() {}

    /// The largest page size the ledger accepts: the protocol's (``ProtocolLimits/maxPageSize``),
    /// which with frames below 2^32 bounds a guest's bytes by 2^62, within an `Int`.
    public static let maxPageSize = Int(ProtocolLimits.maxPageSize)

    // MARK: Sessions

    /// Makes a tenant known, so it is listed (with zeros) before any of its guests connects.
    public mutating func addTenant(_ tenant: String) {
        _ = self.tenantSlot(tenant)
    }

    /// Records that a session for the guest is open, creating its record on first contact.
    ///
    /// Connecting a guest that is already connected is how a newer session replaces an older
    /// one: the gauge is unchanged and a sync the older session had begun is void. A page size
    /// different from the record's drops the record's frames (they were numbered for another
    /// page size); the sync after the connect rebuilds them.
    ///
    /// - Throws: ``LedgerError/Code/invalidPageSize`` unless `pageSize` is a power of two of at
    ///   most ``maxPageSize``.
    public mutating func connect(tenant: String, guest: String, pageSize: Int) throws(LedgerError) {
        guard pageSize > 0, pageSize & (pageSize - 1) == 0, pageSize <= Self.maxPageSize else {
            throw LedgerError(.invalidPageSize, tenant: tenant, guest: guest, detail: "page size \(pageSize)")
        }
        let key = GuestKey(tenant: tenant, guest: guest)
        let slot: Int
        if let existing = self.guestSlots[key] {
            slot = existing
        } else {
            let tenantSlot = self.tenantSlot(tenant)
            slot = self.guestRecords.count
            self.guestRecords.append(
                GuestLedger(tenant: tenant, guest: guest, pageSize: pageSize, tenantSlot: tenantSlot)
            )
            self.guestSlots[key] = slot
            self.slotGeneration &+= 1
            self.tenantRecords[tenantSlot].guests += 1
        }
        let oldPageSize = self.guestRecords[slot].pageSize
        let outcome = self.guestRecords[slot].connect(pageSize: pageSize)
        let tenantSlot = self.guestRecords[slot].tenantSlot
        // A page size change dropped the old frames, which were counted at the old size.
        self.tenantRecords[tenantSlot].reclaimableBytes += Int128(outcome.frameDelta * oldPageSize)
        if !outcome.wasConnected { self.tenantRecords[tenantSlot].guestsConnected += 1 }
    }

    /// Records that the guest's session closed. Its frames stay counted; a sync in progress is
    /// discarded and the set from before it stays. Disconnecting a disconnected guest is a no-op.
    public mutating func disconnect(tenant: String, guest: String) throws(LedgerError) {
        try self.update(tenant: tenant, guest: guest) { (record) throws(LedgerError) in
            _ = record.disconnect()
        }
    }

    /// Drops a disconnected guest's record, for when its memory is known to be gone (the VM was
    /// destroyed). Returns the bytes it held.
    public mutating func forget(tenant: String, guest: String) throws(LedgerError) -> Int {
        let key = GuestKey(tenant: tenant, guest: guest)
        guard let slot = self.guestSlots[key] else { throw LedgerError(.unknownGuest, tenant: tenant, guest: guest) }
        let record = self.guestRecords[slot]
        guard !record.isConnected else { throw LedgerError(.stillConnected, tenant: tenant, guest: guest) }
        self.tenantRecords[record.tenantSlot].reclaimableBytes -= Int128(record.reclaimableBytes)
        self.tenantRecords[record.tenantSlot].guests -= 1
        // Fill the hole with the last record, so the array stays dense and slots stay O(1).
        self.guestSlots[key] = nil
        self.slotGeneration &+= 1
        let last = self.guestRecords.removeLast()
        if slot < self.guestRecords.count {
            self.guestRecords[slot] = last
            self.guestSlots[GuestKey(tenant: last.tenant, guest: last.guest)] = slot
        }
        return record.reclaimableBytes
    }

    // MARK: Reports and reuses

    /// Accounts an accepted report: adds its frame ranges to the guest's discarded set.
    ///
    /// The session has already validated the report (alignment, bounds, no overlap inside the
    /// batch); overlap with frames already discarded is not an error, they are not counted again.
    ///
    /// - Returns: the frames newly discarded.
    // Inlinable, and the work per range non-generic, so that a caller in another module does not
    // run the loop through unspecialized generics (which tripled its cost in the benchmark).
    @inlinable
    public mutating func report(
        tenant: String,
        guest: String,
        ranges: some Collection<Range<UInt64>>
    ) throws(LedgerError) -> Int {
        try Self.checkBounds(ranges, tenant: tenant, guest: guest)
        let slot = try self.slot(tenant: tenant, guest: guest, state: .connected)
        return self.report(ranges, slot: slot)
    }

    /// Where the guest's record is, for ``report(slot:tenant:guest:ranges:)``; `nil` for an
    /// unknown guest. The slot stays the guest's while ``slotGeneration`` is unchanged.
    func guestSlot(tenant: String, guest: String) -> Int? {
        self.guestSlots[GuestKey(tenant: tenant, guest: guest)]
    }

    /// Changes whenever a guest's record is added or may have moved to another slot (only
    /// ``forget(tenant:guest:)`` moves one: it fills the hole with the last record), so a slot
    /// looked up earlier, or found missing, is known to be still right while it is unchanged.
    private(set) var slotGeneration: UInt64 = 0

    /// ``report(tenant:guest:ranges:)`` for the guest at `slot`, found with
    /// ``guestSlot(tenant:guest:)`` while ``slotGeneration`` was what it is now: the same checks,
    /// errors and figures, without looking the guest up.
    mutating func report(
        slot: Int,
        tenant: String,
        guest: String,
        ranges: some Collection<Range<UInt64>>
    ) throws(LedgerError) -> Int {
        try Self.checkBounds(ranges, tenant: tenant, guest: guest)
        try Self.requireConnected(self.guestRecords[slot])
        return self.report(ranges, slot: slot)
    }

    /// Adds checked ranges to the guest at `slot` and counts the report.
    ///
    /// A range that starts where the one before it ends (a batch's adjacent blocks, as a guest's
    /// free lists often hold them) is added together with it: the union, and so every figure, is
    /// the same, for one update of the frame set instead of one per block.
    @inlinable
    mutating func report(_ ranges: some Collection<Range<UInt64>>, slot: Int) -> Int {
        var added = 0
        var pending: Range<UInt64>?
        for range in ranges {
            if let current = pending, range.lowerBound == current.upperBound {
                pending = current.lowerBound..<range.upperBound
            } else {
                if let current = pending { added += self.report(current, slot: slot) }
                pending = range
            }
        }
        if let current = pending { added += self.report(current, slot: slot) }
        self.countReport(slot: slot, addedFrames: added)
        return added
    }

    /// Counts a refused report against its tenant, by the protocol's numeric reason code.
    public mutating func recordReportFailure(tenant: String, reason: Int) {
        let slot = self.tenantSlot(tenant)
        self.tenantRecords[slot].counters.reportsFailedByReason[reason, default: 0] += 1
    }

    /// Accounts a reuse: removes its frame ranges from the guest's discarded set.
    ///
    /// - Returns: the frames that were discarded and no longer are.
    @inlinable
    public mutating func reuse(
        tenant: String,
        guest: String,
        ranges: some Collection<Range<UInt64>>
    ) throws(LedgerError) -> Int {
        try Self.checkBounds(ranges, tenant: tenant, guest: guest)
        let slot = try self.slot(tenant: tenant, guest: guest, state: .connected)
        var removed = 0
        for range in ranges { removed += self.reuse(range, slot: slot) }
        self.countReuse(slot: slot, removedFrames: removed)
        return removed
    }

    // MARK: Sync

    /// Starts collecting the guest's full discarded set. Until ``finishSync(tenant:guest:)`` the
    /// old set stays authoritative; reports and reuses that arrive meanwhile apply to both.
    ///
    /// So the result is exact when each chunk is the guest's record (for its part of the frames)
    /// as of when the chunk is sent; an agent that sends a snapshot's chunks back to back, with no
    /// report or reuse in between, meets that trivially. A disconnect voids the sync.
    public mutating func beginSync(tenant: String, guest: String) throws(LedgerError) {
        try self.update(tenant: tenant, guest: guest) { (record) throws(LedgerError) in
            try Self.requireConnected(record)
            guard !record.isSyncing else { throw LedgerError(.syncInProgress, tenant: tenant, guest: guest) }
            record.beginSync()
        }
    }

    /// Adds one chunk of the guest's discarded set to the sync in progress. Chunks may come in
    /// any order and overlap.
    @inlinable
    public mutating func appendSync(
        tenant: String,
        guest: String,
        ranges: some Collection<Range<UInt64>>
    ) throws(LedgerError) {
        try Self.checkBounds(ranges, tenant: tenant, guest: guest)
        let slot = try self.slot(tenant: tenant, guest: guest, state: .syncing)
        for range in ranges { self.appendSync(range, slot: slot) }
    }

    /// Makes the collected set the guest's discarded set.
    ///
    /// - Returns: the guest's discarded frames before and after.
    @discardableResult
    public mutating func finishSync(tenant: String, guest: String) throws(LedgerError) -> (before: Int, after: Int) {
        try self.update(tenant: tenant, guest: guest) { (record) throws(LedgerError) in
            try Self.requireSyncing(record)
            return record.finishSync()
        }
    }

    // MARK: Reading

    /// Every tenant's figures, sorted by tenant.
    public func tenants() -> [TenantSnapshot] {
        self.tenantRecords.map(TenantSnapshot.init).sorted { $0.tenant < $1.tenant }
    }

    /// The figures of a tenant's guests (of every tenant's if `tenant` is `nil`), sorted by
    /// tenant and guest. Empty for an unknown tenant. O(all guests).
    public func guests(tenant: String? = nil) -> [GuestSnapshot] {
        self.guestRecords.lazy.filter { tenant == nil || $0.tenant == tenant }.map(GuestSnapshot.init)
            .sorted { ($0.tenant, $0.guest) < ($1.tenant, $1.guest) }
    }

    /// One tenant's record.
    public func tenant(_ tenant: String) -> TenantLedger? {
        self.tenantSlots[tenant].map { self.tenantRecords[$0] }
    }

    /// One guest's record, including its frame set.
    public func guest(tenant: String, guest: String) -> GuestLedger? {
        self.guestSlots[GuestKey(tenant: tenant, guest: guest)].map { self.guestRecords[$0] }
    }

    /// Figures over all tenants. O(tenants).
    public var totals: LedgerTotals {
        var totals = LedgerTotals()
        for tenant in self.tenantRecords {
            totals.tenants += 1
            totals.guests += tenant.guests
            totals.guestsConnected += tenant.guestsConnected
            // Int128: see TenantLedger.reclaimableBytes for why a sum over guests cannot overflow it.
            totals.reclaimableBytes += tenant.reclaimableBytes
        }
        return totals
    }

    /// Describes every broken invariant (tenant sums and gauges against their guests, the
    /// indexes, every frame set's structure); empty when sound. O(everything); for tests and
    /// debugging.
    public func checkInvariants() -> [String] {
        var problems: [String] = []
        var sums = self.tenantRecords.map { TenantLedger(tenant: $0.tenant) }
        for (slot, record) in self.guestRecords.enumerated() {
            problems += record.checkInvariants()
            if self.guestSlots[GuestKey(tenant: record.tenant, guest: record.guest)] != slot {
                problems.append("\(record.tenant)/\(record.guest): index does not point at slot \(slot)")
            }
            if self.tenantSlots[record.tenant] != record.tenantSlot {
                problems.append("\(record.tenant)/\(record.guest): tenant slot \(record.tenantSlot) is wrong")
                continue
            }
            sums[record.tenantSlot].guests += 1
            sums[record.tenantSlot].guestsConnected += record.isConnected ? 1 : 0
            sums[record.tenantSlot].reclaimableBytes += Int128(record.reclaimableBytes)
        }
        if self.guestSlots.count != self.guestRecords.count {
            problems.append("guest index and records differ in size")
        }
        if self.tenantSlots.count != self.tenantRecords.count {
            problems.append("tenant index and records differ in size")
        }
        for (tenant, sum) in zip(self.tenantRecords, sums) {
            if tenant.reclaimableBytes != sum.reclaimableBytes {
                problems.append(
                    "\(tenant.tenant): reclaimableBytes \(tenant.reclaimableBytes), guests sum to \(sum.reclaimableBytes)"
                )
            }
            if tenant.guestsConnected != sum.guestsConnected {
                problems.append(
                    "\(tenant.tenant): guestsConnected \(tenant.guestsConnected), counted \(sum.guestsConnected)"
                )
            }
            if tenant.guests != sum.guests {
                problems.append("\(tenant.tenant): guests \(tenant.guests), counted \(sum.guests)")
            }
        }
        return problems
    }

    // MARK: Helpers

    /// The tenant's slot, adding the tenant if it is new.
    private mutating func tenantSlot(_ tenant: String) -> Int {
        if let slot = self.tenantSlots[tenant] { return slot }
        let slot = self.tenantRecords.count
        self.tenantRecords.append(TenantLedger(tenant: tenant))
        self.tenantSlots[tenant] = slot
        return slot
    }

    /// Runs `body` on a known guest in place, then adds the change in its bytes and connection
    /// to its tenant's sums.
    private mutating func update<Result>(
        tenant: String,
        guest: String,
        _ body: (inout GuestLedger) throws(LedgerError) -> Result
    ) throws(LedgerError) -> Result {
        guard let slot = self.guestSlots[GuestKey(tenant: tenant, guest: guest)] else {
            throw LedgerError(.unknownGuest, tenant: tenant, guest: guest)
        }
        let wasConnected = self.guestRecords[slot].isConnected
        let bytesBefore = self.guestRecords[slot].reclaimableBytes
        let result = try body(&self.guestRecords[slot])
        let tenantSlot = self.guestRecords[slot].tenantSlot
        // Both at most 2^62 (GuestLedger.reclaimableBytes), so their difference fits an Int.
        self.tenantRecords[tenantSlot].reclaimableBytes += Int128(
            self.guestRecords[slot].reclaimableBytes - bytesBefore
        )
        let isConnected = self.guestRecords[slot].isConnected
        if wasConnected != isConnected { self.tenantRecords[tenantSlot].guestsConnected += isConnected ? 1 : -1 }
        return result
    }

    /// What a call needs of the guest besides being known.
    @usableFromInline
    enum RequiredState { case connected, syncing }

    /// The guest's slot, checked to be in `state`; throws before anything has changed.
    @usableFromInline
    func slot(tenant: String, guest: String, state: RequiredState) throws(LedgerError) -> Int {
        guard let slot = self.guestSlots[GuestKey(tenant: tenant, guest: guest)] else {
            throw LedgerError(.unknownGuest, tenant: tenant, guest: guest)
        }
        switch state {
        case .connected: try Self.requireConnected(self.guestRecords[slot])
        case .syncing: try Self.requireSyncing(self.guestRecords[slot])
        }
        return slot
    }

    @usableFromInline
    mutating func report(_ range: Range<UInt64>, slot: Int) -> Int {
        let added = self.guestRecords[slot].report(range)
        // `added` frames are below 2^32 and the page size at most 2^30: the product fits an Int.
        self.tenantRecords[self.guestRecords[slot].tenantSlot].reclaimableBytes +=
            Int128(added * self.guestRecords[slot].pageSize)
        return added
    }

    @usableFromInline
    mutating func countReport(slot: Int, addedFrames: Int) {
        let tenantSlot = self.guestRecords[slot].tenantSlot
        self.tenantRecords[tenantSlot].counters.reportsOK += 1
        self.tenantRecords[tenantSlot].counters.bytesReported += Int128(addedFrames * self.guestRecords[slot].pageSize)
    }

    @usableFromInline
    mutating func reuse(_ range: Range<UInt64>, slot: Int) -> Int {
        let removed = self.guestRecords[slot].reuse(range)
        self.tenantRecords[self.guestRecords[slot].tenantSlot].reclaimableBytes -=
            Int128(removed * self.guestRecords[slot].pageSize)
        return removed
    }

    @usableFromInline
    mutating func countReuse(slot: Int, removedFrames: Int) {
        let tenantSlot = self.guestRecords[slot].tenantSlot
        self.tenantRecords[tenantSlot].counters.bytesReused += Int128(removedFrames * self.guestRecords[slot].pageSize)
    }

    @usableFromInline
    mutating func appendSync(_ range: Range<UInt64>, slot: Int) {
        // The authoritative set, and so the sums, do not change until the sync finishes.
        self.guestRecords[slot].appendSync(range)
    }

    private static func requireConnected(_ record: GuestLedger) throws(LedgerError) {
        guard record.isConnected else { throw LedgerError(.notConnected, tenant: record.tenant, guest: record.guest) }
    }

    private static func requireSyncing(_ record: GuestLedger) throws(LedgerError) {
        guard record.isSyncing else {
            throw LedgerError(.syncNotInProgress, tenant: record.tenant, guest: record.guest)
        }
    }

    /// Refuses the whole batch before touching anything if one range reaches past the frame limit.
    @inlinable
    static func checkBounds(
        _ ranges: some Collection<Range<UInt64>>,
        tenant: String,
        guest: String
    ) throws(LedgerError) {
        for range in ranges where range.upperBound > FrameRangeSet.frameLimit {
            throw LedgerError(
                .rangeOutOfBounds,
                tenant: tenant,
                guest: guest,
                detail: "frames \(range.lowerBound)..<\(range.upperBound) reach past 2^32"
            )
        }
    }
}
