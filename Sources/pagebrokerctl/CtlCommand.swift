import ArgumentParser
import BrokerAdminClient
import BrokerProtocol
import Foundation

/// `pagebrokerctl`: asks a running `pagebrokerd` for its figures over the admin socket,
/// and pauses or resumes tenants.
@main
struct CtlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pagebrokerctl",
        abstract: "Inspect and control a running pagebrokerd through its admin socket.",
        discussion: """
            The socket is \(AdminSocket.defaultPath) unless --socket or \
            \(AdminSocket.environmentVariable) says otherwise.

            Exit codes: 0 success; 1 the broker refused or failed the request (the reason is \
            printed); 2 bad usage; 3 cannot connect to the admin socket.

            Shell completions: pagebrokerctl --generate-completion-script bash|zsh|fish.
            """,
        subcommands: [
            StatusCommand.self, TenantsCommand.self, GuestsCommand.self, PauseCommand.self, ResumeCommand.self,
            InhibitCommand.self, AllowDiscardCommand.self, TopCommand.self,
        ]
    )

    // Declared here too so that `--socket` may come before the subcommand's name;
    // ArgumentParser hands the parsed value to the subcommand's identical group.
    @OptionGroup var connection: ConnectionOptions

    /// Without a subcommand there is nothing to do: that is bad usage, not a request for help.
    func run() async throws {
        throw ValidationError(
            "Missing subcommand: status, tenants, guests, pause, resume, inhibit, allow-discard or top."
        )
    }

    /// Parses and runs like `AsyncParsableCommand.main()`, except that bad usage exits
    /// with status 2, the convention of command-line tools on Linux, instead of
    /// ArgumentParser's 64.
    static func main() async {
        do {
            var command = try Self.parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            if Self.exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((Self.fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            Self.exit(withError: error)
        }
    }
}

/// Where to find the broker.
struct ConnectionOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The broker's admin socket (default: $\(AdminSocket.environmentVariable), else \(AdminSocket.defaultPath)).",
            valueName: "path"
        ),
        completion: .file()
    )
    var socket: String?

    /// The path to connect to: the flag, then the environment, then the unit's path.
    var socketPath: String {
        if let socket { return socket }
        if let path = ProcessInfo.processInfo.environment[AdminSocket.environmentVariable], !path.isEmpty {
            return path
        }
        return AdminSocket.defaultPath
    }

    /// Sends `request` on a fresh connection and returns the broker's answer, or
    /// prints why there is none and exits with the documented code.
    func send(_ request: Pagebroker_V1_AdminRequest) async throws -> Pagebroker_V1_AdminResponse {
        let client = try await self.connect()
        do {
            let response = try await Self.ask(client, request)
            await client.close()
            return response
        } catch {
            await client.close()
            throw error
        }
    }

    /// Connects to the admin socket, or prints why not and exits with
    /// ``CtlExit/cannotConnect``.
    func connect() async throws -> AdminClient {
        do {
            return try await AdminClient.connect(socketPath: self.socketPath)
        } catch {
            Terminal.error("\(error)\(Self.hint(for: error))")
            throw ExitCode(CtlExit.cannotConnect)
        }
    }

    /// Sends `request` on `client` and returns the broker's answer; a refusal or a
    /// connection closed without an answer is printed and exits with
    /// ``CtlExit/brokerFailed``.
    static func ask(
        _ client: AdminClient,
        _ request: Pagebroker_V1_AdminRequest
    ) async throws -> Pagebroker_V1_AdminResponse {
        let response: Pagebroker_V1_AdminResponse
        do {
            response = try await client.send(request)
        } catch {
            Terminal.error("no answer from the broker at \(error)")
            throw ExitCode(CtlExit.brokerFailed)
        }
        if case .error(let error)? = response.body {
            let error = AdminError(error)
            Terminal.error("the broker refused: \(error)")
            throw ExitCode(CtlExit.brokerFailed)
        }
        return response
    }

    /// What the user can do about a failed connect.
    private static func hint(for error: AdminClientError) -> String {
        switch error.errno {
        case ENOENT?, ECONNREFUSED?: " (is pagebrokerd running?)"
        case EACCES?, EPERM?: " (permission denied: run as a user the socket's group or mode allows)"
        default: ""
        }
    }
}

/// Exit statuses, as documented in docs/admin.md.
enum CtlExit {
    /// The broker answered with an error, or closed the connection without answering.
    static let brokerFailed: Int32 = 1
    /// The admin socket could not be connected to.
    static let cannotConnect: Int32 = 3
}

/// `--json` on every command.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON instead of a table.")
    var json = false
}

enum Terminal {
    static func error(_ message: String) {
        FileHandle.standardError.write(Data("pagebrokerctl: \(message)\n".utf8))
    }

    static func print(_ text: String) {
        FileHandle.standardOutput.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
    }
}
