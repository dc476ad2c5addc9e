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
        abstract: "Pause a tenant: its guests' reports fail with tenant_paused until it is resumed."
    )

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The tenant to pause.") var tenant: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var pause = Pagebroker_V1_PauseRequest()
        pause.tenant = self.tenant
        var request = Pagebroker_V1_AdminRequest()
        request.pause = pause
        try await PausedState.set(tenant: self.tenant, paused: true, request, self.connection, self.output)
    }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Resume a paused tenant."
    )

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The tenant to resume.") var tenant: String
    @OptionGroup var output: OutputOptions

    func run() async throws {
        var resume = Pagebroker_V1_ResumeRequest()
        resume.tenant = self.tenant
        var request = Pagebroker_V1_AdminRequest()
        request.resume = resume
        try await PausedState.set(tenant: self.tenant, paused: false, request, self.connection, self.output)
    }
}

/// What `pause` and `resume` share: send, expect `ok`, say what changed.
enum PausedState {
    struct Result: Encodable {
        var tenant: String
        var paused: Bool
    }

    static func set(
        tenant: String,
        paused: Bool,
        _ request: Pagebroker_V1_AdminRequest,
        _ connection: ConnectionOptions,
        _ output: OutputOptions
    ) async throws {
        let response = try await connection.send(request)
        guard case .ok? = response.body else { throw unexpected(response, expected: "ok") }
        let result = Result(tenant: tenant, paused: paused)
        Terminal.print(output.json ? try Render.json(result) : "\(paused ? "paused" : "resumed") tenant \(tenant)")
    }
}

/// The broker answered with a response of the wrong kind: a broker bug, reported as
/// a failed request.
func unexpected(_ response: Pagebroker_V1_AdminResponse, expected: String) -> ExitCode {
    Terminal.error("the broker answered with \(response.body.map { "\($0)" } ?? "nothing") instead of \(expected)")
    return ExitCode(CtlExit.brokerFailed)
}
