import BrokerAdminClient
import Synchronization

/// The admin backend the daemon serves: ``BrokerCore``, with pause and resume written to a
/// ``PauseStore`` before they are acknowledged.
///
/// A change that cannot be saved is undone and refused (`internal_error`), so what the broker
/// enforces and what survives a restart never disagree.
public final class PersistentPauseBackend: AdminBackend {
    private let core: BrokerCore
    private let store: PauseStore
    // Serializes change-and-save: two admin clients must not save out of order.
    private let saving = Mutex(())

    public init(core: BrokerCore, store: PauseStore) {
        self.core = core
        self.store = store
    }

    public func status() -> BrokerStatus { self.core.status() }
    public func tenants() -> [TenantSnapshot] { self.core.tenants() }
    public func guests(tenant: String?) -> [GuestSnapshot] { self.core.guests(tenant: tenant) }

    public func setPaused(tenant: String, paused: Bool) throws(AdminError) {
        try self.saving.withLock { (_) throws(AdminError) in
            let before = self.core.pauseOverrides
            try self.core.setPaused(tenant: tenant, paused: paused)
            do {
                try self.store.save(self.core.pauseOverrides, pausedGuests: self.core.pausedGuests)
            } catch {
                self.core.restorePauseOverrides(before)
                throw AdminError(
                    .internalError,
                    "tenant \(tenant) left as it was: could not save the pause state: \(error)"
                )
            }
        }
    }

    public func setPaused(tenant: String, guest: String, paused: Bool) throws(AdminError) {
        try self.saving.withLock { (_) throws(AdminError) in
            let before = self.core.pausedGuests
            try self.core.setPaused(tenant: tenant, guest: guest, paused: paused)
            do {
                try self.store.save(self.core.pauseOverrides, pausedGuests: self.core.pausedGuests)
            } catch {
                self.core.restorePausedGuests(before)
                throw AdminError(
                    .internalError,
                    "guest \(tenant)/\(guest) left as it was: could not save the pause state: \(error)"
                )
            }
        }
    }

    public func setDiscardInhibited(tenant: String, guest: String, inhibited: Bool, reason: String) throws(AdminError) {
        try self.core.setDiscardInhibited(tenant: tenant, guest: guest, inhibited: inhibited, reason: reason)
    }
}
