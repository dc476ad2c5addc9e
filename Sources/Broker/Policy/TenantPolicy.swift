/// What the broker allows a tenant, from the configuration.
public struct TenantPolicy: Hashable, Sendable {
    /// A paused tenant's reports fail with `tenant_paused` (its guests stay connected).
    public var paused: Bool
    /// Reports per second for the whole tenant (all its guests together); `nil` for no limit.
    public var maxReportsPerSecond: Double?
    /// How many reports may come at once before the rate applies; defaults to one second's worth.
    public var burst: Int?
    /// Guests the tenant may have connected at once; `nil` for no limit.
    public var maxGuests: Int?
    /// Who may attach guests' memory for this tenant on the memory socket (`memory:`); empty
    /// for nobody. Only for tenants the configuration names: `default_tenant` cannot have one,
    /// since a process allowed there would be allowed for every unnamed tenant.
    public var memoryAccess: MemoryAccessPolicy

    public init(
        paused: Bool = false,
        maxReportsPerSecond: Double? = nil,
        burst: Int? = nil,
        maxGuests: Int? = nil,
        memoryAccess: MemoryAccessPolicy = MemoryAccessPolicy()
    ) {
        self.paused = paused
        self.maxReportsPerSecond = maxReportsPerSecond
        self.burst = burst
        self.maxGuests = maxGuests
        self.memoryAccess = memoryAccess
    }

    /// No limits, not paused.
    public static let unlimited = TenantPolicy()
}

/// Policies for every tenant the broker knows, and what it does with the others.
public struct PolicySet: Hashable, Sendable {
    public var tenants: [String: TenantPolicy]
    /// The policy for tenants the configuration does not name; `nil` refuses their guests.
    public var defaultPolicy: TenantPolicy?

    public init(tenants: [String: TenantPolicy] = [:], defaultPolicy: TenantPolicy? = nil) {
        self.tenants = tenants
        self.defaultPolicy = defaultPolicy
    }

    /// The policy that applies to `tenant`, or `nil` if its guests are not admitted.
    public func policy(for tenant: String) -> TenantPolicy? { self.tenants[tenant] ?? self.defaultPolicy }
}
