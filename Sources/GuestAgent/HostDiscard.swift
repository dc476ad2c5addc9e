import BuddyAllocator
import Dispatch
import Synchronization

/// Host-side discard for one guest (`--discard host`): the memory attachment and the quarantine,
/// and whether host discard is in force.
///
/// Give it to ``AgentConnection``: before the `Sync` of every session the connection makes sure
/// the memory is attached (``MemoryAttachment/ensureAttached(tenant:guest:)``, with the tenant and
/// guest the broker named in `ServerHello`), and it tells the quarantine about sessions, sent
/// reports and late results. Report through ``HostDiscardingDevice``.
///
/// With ``Policy/preferred`` (the agent's default when the broker has a memory socket) the first
/// attach decides: if it fails, host discard is off for the rest of the run (``mode`` becomes
/// ``Mode/guest``) and the device discards in the guest instead. With ``Policy/required`` a
/// failed attach ends the session; the connection retries with its backoff and no report is sent
/// meanwhile, so nothing is accounted that the broker could not discard.
public final class HostDiscard: Sendable {
    /// What a failed attach does.
    public enum Policy: Sendable, Hashable {
        /// Host discard or no session.
        case required
        /// Host discard if the first attach succeeds, guest discard otherwise.
        case preferred
    }

    /// Who discards, as decided so far.
    public enum Mode: Int, Sendable, Hashable, CustomStringConvertible {
        /// No attach was tried yet (no session so far).
        case pending = 0
        /// The broker holds the memory and punches reports before it acks them.
        case host = 1
        /// ``Policy/preferred`` and the first attach failed: the guest discards its own memory.
        case guest = 2

        public var description: String {
            switch self {
            case .pending: "pending"
            case .host: "host"
            case .guest: "guest"
            }
        }
    }

    /// How the attach went before a session's sync.
    public enum Preparation: Sendable, Hashable {
        /// Attached on a new memory connection (the first, or after the broker restarted).
        case attached
        /// The memory connection of an earlier session is still up.
        case stillAttached
        /// ``Policy/preferred``: the first attach failed with this error; guest discard from now on.
        case fellBack(AgentError)
        /// Host discard is off (fell back earlier).
        case guestDiscard
    }

    /// The memory connection.
    public let attachment: MemoryAttachment
    /// The frames of unanswered reports; `nil` without an allocator (a load generator, whose
    /// frames are numbers only).
    public let quarantine: ReportQuarantine?
    /// What a failed attach does.
    public let policy: Policy
    private let modeValue = Atomic<Int>(Mode.pending.rawValue)
    /// Where the connection runs the blocking attach: a queue of its own (backed by an
    /// overcommitting thread), never the global pool, whose few threads may all be blocked.
    let queue = DispatchQueue(label: "pagebroker.agent.memory-attach")

    /// Host discard of `allocator`'s pool, attached through `attachment`; without an allocator
    /// there is nothing to quarantine (only for load generators).
    public init(attachment: MemoryAttachment, allocator: BuddyAllocator?, policy: Policy = .required) {
        self.attachment = attachment
        self.quarantine = allocator.map { ReportQuarantine(allocator: $0) }
        self.policy = policy
    }

    /// Who discards now.
    public var mode: Mode { Mode(rawValue: self.modeValue.load(ordering: .acquiring))! }

    /// Inhibits or allows discard of this guest's memory at the broker (a passthrough device pins
    /// it, a snapshot is being taken): while inhibited, reports fail with `DISCARD_INHIBITED` and
    /// a retry-after, and nothing is freed. Kept across re-attaches. Blocks for a round trip.
    public func setDiscardInhibited(_ inhibited: Bool, reason: String = "") throws(AgentError) {
        try self.attachment.setDiscardInhibited(inhibited, reason: reason)
    }

    /// Makes sure the memory is attached for the session's guest; the connection calls it (off
    /// the event loop) before each sync.
    public func prepare(for session: SessionInfo) throws(AgentError) -> Preparation {
        if self.mode == .guest { return .guestDiscard }
        do {
            let attached = try self.attachment.ensureAttached(tenant: session.tenant, guest: session.guest)
            self.modeValue.store(Mode.host.rawValue, ordering: .releasing)
            return attached ? .attached : .stillAttached
        } catch {
            if self.policy == .preferred && self.mode == .pending {
                self.modeValue.store(Mode.guest.rawValue, ordering: .releasing)
                return .fellBack(error)
            }
            throw error
        }
    }
}
