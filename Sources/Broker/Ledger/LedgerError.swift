/// An error from a call into ``Ledger``.
///
/// Every refused call is refused before any state is touched, so the ledger's figures stay
/// exact whatever a session sends. The ``code`` is stable and can be matched on; the
/// ``description`` is for people.
public struct LedgerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A stable, matchable identifier for the kind of error.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unknownGuest = "unknown_guest"
            case notConnected = "not_connected"
            case stillConnected = "still_connected"
            case syncInProgress = "sync_in_progress"
            case syncNotInProgress = "sync_not_in_progress"
            case rangeOutOfBounds = "range_out_of_bounds"
            case invalidPageSize = "invalid_page_size"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The ledger has no record of this guest in this tenant.
        public static let unknownGuest = Code(.unknownGuest)
        /// The call needs a connected guest (a report, a reuse or a sync) and it is disconnected.
        public static let notConnected = Code(.notConnected)
        /// The call needs a disconnected guest (forgetting it) and it is connected.
        public static let stillConnected = Code(.stillConnected)
        /// A sync was begun while another was still in progress.
        public static let syncInProgress = Code(.syncInProgress)
        /// A sync chunk or the end of a sync arrived with no sync begun.
        public static let syncNotInProgress = Code(.syncNotInProgress)
        /// A range reaches beyond ``FrameRangeSet/frameLimit``.
        public static let rangeOutOfBounds = Code(.rangeOutOfBounds)
        /// The page size is not a positive power of two.
        public static let invalidPageSize = Code(.invalidPageSize)

        /// The stable name of the code, e.g. `unknown_guest`.
        public var description: String { self.base.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// The tenant the call named.
    public let tenant: String
    /// The guest the call named.
    public let guest: String
    /// Extra detail for people, e.g. the offending range.
    public let detail: String

    public init(_ code: Code, tenant: String, guest: String, detail: String = "") {
        self.code = code
        self.tenant = tenant
        self.guest = guest
        self.detail = detail
    }

    public var description: String {
        var text = "LedgerError(\(self.code), tenant: \(self.tenant), guest: \(self.guest)"
        if !self.detail.isEmpty { text += ", \(self.detail)" }
        return text + ")"
    }
}
