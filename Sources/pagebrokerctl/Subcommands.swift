import ArgumentParser
import BrokerAdminClient
import BrokerProtocol

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the broker's overall figures."
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var request = Pagebroker_V1_AdminRequest()
        request.status = Pagebroker_V1_StatusRequest()
        let response = try await self.connection.send(request)
        guard case .status(let message)? = response.body else { throw unexpected(response, expected: "status") }
        let status = BrokerStatus(message)
        Terminal.print(self.output.json ? try Render.json(status) : Render.status(status))
    }
}

struct TenantsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenants",
        abstract: "List tenants with their guests, reclaimable memory and report counts."
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var request = Pagebroker_V1_AdminRequest()
        request.tenants = Pagebroker_V1_TenantsRequest()
        let response = try await self.connection.send(request)
        guard case .tenants(let list)? = response.body else { throw unexpected(response, expected: "tenants") }
        let tenants = list.tenants.map(TenantSnapshot.init).sorted { $0.tenant < $1.tenant }
        Terminal.print(self.output.json ? try Render.json(tenants) : Render.tenants(tenants))
    }
}

struct GuestsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guests",
        abstract: "List guests, of one tenant or all, with their reclaimable memory."
    )

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Only this tenant's guests.") var tenant: String?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var guests = Pagebroker_V1_GuestsRequest()
        if let tenant = self.tenant { guests.tenant = tenant }
        var request = Pagebroker_V1_AdminRequest()
        request.guests = guests
        let response = try await self.connection.send(request)
        guard case .guests(let list)? = response.body else { throw unexpected(response, expected: "guests") }
        let snapshots = list.guests.map(GuestSnapshot.init).sorted { ($0.tenant, $0.guest) < ($1.tenant, $1.guest) }
        Terminal.print(self.output.json ? try Render.json(snapshots) : Render.guests(snapshots))
    }
}

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause",
        abstract: "Pause a tenant, or one guest: reports fail with tenant_paused (guest_paused) until resumed.",
        discussion: "Kept across broker restarts (in the broker's state directory)."
    )

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The tenant to pause (or whose guest to pause).") var tenant: String
    @Argument(help: "Pause only this guest of the tenant.") var guest: String?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var pause = Pagebroker_V1_PauseRequest()
        pause.tenant = self.tenant
        if let guest = self.guest { pause.guest = guest }
        var request = Pagebroker_V1_AdminRequest()
        request.pause = pause
        try await PausedState.set(
            tenant: self.tenant,
            guest: self.guest,
            paused: true,
            request,
            self.connection,
            self.output
        )
    }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Resume a paused tenant, or one paused guest."
    )

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The tenant to resume (or whose guest to resume).") var tenant: String
    @Argument(help: "Resume only this guest of the tenant.") var guest: String?
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var resume = Pagebroker_V1_ResumeRequest()
        resume.tenant = self.tenant
        if let guest = self.guest { resume.guest = guest }
        var request = Pagebroker_V1_AdminRequest()
        request.resume = resume
        try await PausedState.set(
            tenant: self.tenant,
            guest: self.guest,
            paused: false,
            request,
            self.connection,
            self.output
        )
    }
}

/// What `pause` and `resume` share: send, expect `ok`, say what changed.
enum PausedState {
    struct Result: Encodable {
        var tenant: String
        var guest: String?
        var paused: Bool
    }

    static func set(
        tenant: String,
        guest: String?,
        paused: Bool,
        _ request: Pagebroker_V1_AdminRequest,
        _ connection: ConnectionOptions,
        _ output: OutputOptions
    ) async throws {
        let response = try await connection.send(request)
        guard case .ok? = response.body else { throw unexpected(response, expected: "ok") }
        let result = Result(tenant: tenant, guest: guest, paused: paused)
        let what = guest.map { "guest \(tenant)/\($0)" } ?? "tenant \(tenant)"
        Terminal.print(output.json ? try Render.json(result) : "\(paused ? "paused" : "resumed") \(what)")
    }
}

struct InhibitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inhibit",
        abstract: "Inhibit host-side discard for a guest: its reports fail with discard_inhibited.",
        // The generated usage line is 92 columns; the parser does not wrap it (see `top`).
        usage: """
            pagebrokerctl inhibit [--socket <path>] <tenant> <guest>
            [--reason <reason>] [--json]
            """,
        discussion: """
            For memory that must not be punched now (pinned for a passthrough device, a snapshot \
            in progress). Until allow-discard; not kept across broker restarts.
            """
    )

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The guest's tenant.") var tenant: String
    @Argument(help: "The guest.") var guest: String
    @Option(help: "Why, shown by `guests`.") var reason: String = "operator"
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await DiscardInhibit.set(tenant, guest, inhibited: true, reason: self.reason, self.connection, self.output)
    }
}

struct AllowDiscardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allow-discard",
        abstract: "Lift an inhibit set with `inhibit` (the attaching process's own inhibit stays)."
    )

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The guest's tenant.") var tenant: String
    @Argument(help: "The guest.") var guest: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await DiscardInhibit.set(tenant, guest, inhibited: false, reason: "", self.connection, self.output)
    }
}

/// What `inhibit` and `allow-discard` share.
enum DiscardInhibit {
    struct Result: Encodable {
        var tenant: String
        var guest: String
        var discardInhibited: Bool
    }

    static func set(
        _ tenant: String,
        _ guest: String,
        inhibited: Bool,
        reason: String,
        _ connection: ConnectionOptions,
        _ output: OutputOptions
    ) async throws {
        var inhibit = Pagebroker_V1_SetDiscardInhibitedRequest()
        inhibit.tenant = tenant
        inhibit.guest = guest
        inhibit.inhibited = inhibited
        inhibit.reason = reason
        var request = Pagebroker_V1_AdminRequest()
        request.setDiscardInhibited = inhibit
        let response = try await connection.send(request)
        guard case .ok? = response.body else { throw unexpected(response, expected: "ok") }
        let result = Result(tenant: tenant, guest: guest, discardInhibited: inhibited)
        Terminal.print(
            output.json
                ? try Render.json(result)
                : "\(inhibited ? "inhibited" : "allowed") discard for guest \(tenant)/\(guest)"
        )
    }
}

/// The broker answered with a response of the wrong kind: a broker bug, reported as
/// a failed request.
func unexpected(_ response: Pagebroker_V1_AdminResponse, expected: String) -> ExitCode {
    Terminal.error("the broker answered with \(response.body.map { "\($0)" } ?? "nothing") instead of \(expected)")
    return ExitCode(CtlExit.brokerFailed)
}
