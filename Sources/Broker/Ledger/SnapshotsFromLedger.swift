import BrokerAdminClient

// The admin API's snapshots (BrokerAdminClient) made from the ledger's records.

extension TenantSnapshot {
    /// The tenant's figures now; `paused` is policy and set by the broker core.
    public init(_ tenant: TenantLedger) {
        self.init(
            tenant: tenant.tenant,
            guests: tenant.guests,
            guestsConnected: tenant.guestsConnected,
            reclaimableBytes: Int(clamping: tenant.reclaimableBytes),
            reportsOK: tenant.counters.reportsOK,
            reportsFailed: tenant.counters.reportsFailed,
            reportsFailedByReason: tenant.counters.reportsFailedByReason,
            bytesReported: Int(clamping: tenant.counters.bytesReported),
            bytesReused: Int(clamping: tenant.counters.bytesReused)
        )
    }
}

extension GuestSnapshot {
    /// The guest's figures now.
    public init(_ guest: GuestLedger) {
        self.init(
            guest: guest.guest,
            tenant: guest.tenant,
            connected: guest.isConnected,
            reclaimableBytes: guest.reclaimableBytes,
            frames: guest.discarded.frameCount,
            ranges: guest.discarded.rangeCount,
            pageSize: guest.pageSize,
            syncing: guest.isSyncing
        )
    }
}
