/// What the admin socket can ask of and tell the broker. ``BrokerCore`` implements it; the
/// admin server and its tests only need this.
public protocol AdminBackend: Sendable {
    /// Figures for `pagebrokerctl status`.
    func status() -> BrokerStatus
    /// One entry per tenant the broker knows (configured, or seen).
    func tenants() -> [TenantSnapshot]
    /// Guests, of one tenant or all.
    func guests(tenant: String?) -> [GuestSnapshot]
    /// Pauses or resumes a tenant: a paused tenant's reports fail with `tenant_paused`.
    func setPaused(tenant: String, paused: Bool) throws(AdminError)
    /// Pauses or resumes one guest: a paused guest's reports fail with `guest_paused`.
    func setPaused(tenant: String, guest: String, paused: Bool) throws(AdminError)
    /// Inhibits or allows host-side discard for one guest: while inhibited, its reports fail
    /// with `discard_inhibited`.
    func setDiscardInhibited(tenant: String, guest: String, inhibited: Bool, reason: String) throws(AdminError)
}

extension AdminBackend {
    /// Backends without guests' memory (test doubles) refuse the memory requests.
    public func setPaused(tenant: String, guest: String, paused: Bool) throws(AdminError) {
        throw AdminError(.badRequest, "this broker cannot pause single guests")
    }

    public func setDiscardInhibited(tenant: String, guest: String, inhibited: Bool, reason: String) throws(AdminError) {
        throw AdminError(.badRequest, "this broker has no host-side discard")
    }
}

/// The broker's figures at one moment.
public struct BrokerStatus: Hashable, Sendable, Codable {
    public var version: String
    public var uptimeSeconds: Double
    public var listening: [String]
    public var tenants: Int
    public var guests: Int
    public var guestsConnected: Int
    public var sessions: Int
    public var reclaimableBytes: Int
    public var reportsOK: Int
    public var reportsFailed: Int
    public var shuttingDown: Bool

    public init(
        version: String,
        uptimeSeconds: Double,
        listening: [String],
        tenants: Int,
        guests: Int,
        guestsConnected: Int,
        sessions: Int,
        reclaimableBytes: Int,
        reportsOK: Int,
        reportsFailed: Int,
        shuttingDown: Bool
    ) {
        self.version = version
        self.uptimeSeconds = uptimeSeconds
        self.listening = listening
        self.tenants = tenants
        self.guests = guests
        self.guestsConnected = guestsConnected
        self.sessions = sessions
        self.reclaimableBytes = reclaimableBytes
        self.reportsOK = reportsOK
        self.reportsFailed = reportsFailed
        self.shuttingDown = shuttingDown
    }
}

/// An admin request the broker refused.
public struct AdminError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unknownTenant = "unknown_tenant"
            case permissionDenied = "permission_denied"
            case badRequest = "bad_request"
            case internalError = "internal_error"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No tenant of that name is configured or known.
        public static let unknownTenant = Code(.unknownTenant)
        /// The peer's uid/gid is not allowed on the admin socket.
        public static let permissionDenied = Code(.permissionDenied)
        /// The request could not be parsed or is not one the broker knows.
        public static let badRequest = Code(.badRequest)
        /// The broker failed to carry the request out (e.g. could not persist the pause state).
        public static let internalError = Code(.internalError)

        public var description: String { self.base.rawValue }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(self.code): \(self.message)" }
}
