import ArgumentParser
import Broker
import Foundation
import Logging
import NIOPosix
import Systemd
import TLSTransport

/// `pagebrokerd`: the host-side broker for free page reporting.
@main
struct BrokerDaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pagebrokerd",
        abstract: "Host-side memory broker for free page reporting.",
        discussion: """
            Guests connect over mutual TLS; each is authenticated to a tenant by the SPIFFE ID in its \
            client certificate (spiffe://<trust-domain>/tenant/<tenant>/guest/<guest>). Flags override \
            the configuration file (docs/configuration.md).

            --dev makes a throwaway PKI, listens on loopback and prints the commands to start guests.

            Under systemd (deploy/pagebrokerd.service) it adopts the sockets of pagebrokerd.socket by \
            name (guest, admin, memory), reports READY/STATUS/RELOADING/STOPPING and feeds the watchdog. \
            SIGHUP reloads the certificates, the CA bundle and the tenant policy without dropping \
            sessions (a broken configuration is refused and the old one stays); SIGTERM stops \
            accepting, fails reports in flight with shutting_down and exits within shutdown_timeout.

            Exit codes: 0 stopped cleanly (or --check passed), 1 failed to start or run, 2 bad flags \
            or configuration.
            """
    )

    @Option(help: "Configuration file (YAML).")
    var config: String?

    @Option(help: "Guest listener, HOST:PORT (port 0: any free port).")
    var listen: String?

    @Option(name: .customLong("tls-cert"), help: "Broker certificate chain (PEM).")
    var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: "Broker private key (PEM).")
    var tlsKey: String?

    @Option(name: .customLong("client-ca"), help: "CA bundle that guests' client certificates must chain to (PEM).")
    var clientCA: String?

    @Option(name: .customLong("trust-domain"), help: "SPIFFE trust domain of the guests.")
    var trustDomain: String?

    @Option(name: .customLong("admin-socket"), help: "Admin Unix socket path.")
    var adminSocket: String?

    @Option(
        name: .customLong("memory-socket"),
        help: "Memory Unix socket path, where guests' memory is attached for host-side discard."
    )
    var memorySocket: String?

    @Option(
        name: .customLong("state-directory"),
        help: "Where paused tenants are kept across restarts (default: $STATE_DIRECTORY, else /var/lib/pagebrokerd)."
    )
    var stateDirectory: String?

    @Flag(help: "Check the configuration, the TLS files and the state directory, then exit (0: good, 2: not).")
    var check = false

    @Option(
        name: .customLong("metrics-listen"),
        help: "Prometheus endpoint, HOST:PORT, serving GET /metrics (port 0: any free port; default: none)."
    )
    var metricsListen: String?

    @Flag(help: "Development mode: throwaway PKI, loopback, any tenant admitted, instructions printed.")
    var dev = false

    @Option(
        name: .customLong("dev-dir"),
        help: "Directory for --dev's PKI and admin socket (default: a new temporary directory)."
    )
    var devDirectory: String?

    @Option(
        name: .customLong("guest-transport"),
        help: "What carries guest sessions: epoll (the broker's own loops, the default) or nio (SwiftNIO's pipeline)."
    )
    var guestTransport: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    static func main() async {
        do {
            var command = try Self.parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
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

    func run() async throws {
        guard let level = Logger.Level(rawValue: self.logLevel) else {
            throw ValidationError(
                "--log-level '\(self.logLevel)' is not one of trace, debug, info, notice, warning, error, critical"
            )
        }
        // Under systemd, standard error is the journal: <N> prefixes keep the levels there.
        let journal = JournalStream.isStandardErrorConnected()
        LoggingSystem.bootstrap { label in
            if journal {
                var handler = JournalLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "pagebrokerd")
        let devPKI = self.dev ? try self.makeDevPKI() : nil
        // A start reads and checks exactly what `--check` does, so a configuration `--check`
        // refuses also refuses to start, with the same message and exit status 2
        // (RestartPreventExitStatus=2: systemd does not restart it every few seconds).
        let configuration: BrokerConfiguration
        do throws(ConfigurationProblem) {
            configuration = try self.effectiveConfiguration(devPKI: devPKI)
            try self.checkStartable(configuration, devPKI: devPKI)
        } catch {
            Self.printError(error.description)
            if let detail = error.debugDetail { logger.debug("OpenSSL error queue: \(detail)") }
            throw ExitCode(2)
        }
        if self.check {
            Self.printSummary(configuration)
            return
        }
        let daemon = Daemon(
            configuration: configuration,
            reloadConfiguration: { [self] in try self.effectiveConfiguration(devPKI: devPKI) },
            logger: logger
        )
        do {
            try await daemon.run { address in
                if let devPKI { self.printDevInstructions(devPKI, address: address, configuration: configuration) }
            }
        } catch let error as StartupError {
            Self.printError(error.description)
            throw ExitCode(1)
        }
    }

    /// `pagebrokerd: MESSAGE` on standard error, and nothing else (no usage text: the
    /// flags were fine, the configuration was not).
    static func printError(_ message: String) {
        // Under journald, <3> files it at priority err like the daemon's own log lines.
        let priority = JournalStream.isStandardErrorConnected() ? "<3>" : ""
        FileHandle.standardError.write(Data("\(priority)pagebrokerd: \(message)\n".utf8))
    }

    /// The configuration file with the flags (and `--dev`) applied: read at start and again on
    /// every SIGHUP, so a reload sees exactly what a restart would.
    func effectiveConfiguration(devPKI: DevPKI?) throws(ConfigurationProblem) -> BrokerConfiguration {
        var configuration: BrokerConfiguration
        do {
            configuration =
                try self.config.map { path throws(ConfigError) in try BrokerConfiguration.load(path: path) }
                ?? BrokerConfiguration()
        } catch {
            throw ConfigurationProblem("\(self.config ?? ""): \(error)")
        }
        if let devPKI { Self.applyDev(devPKI, to: &configuration) }
        if let listen = self.listen { configuration.listen = listen }
        if let value = self.tlsCert { configuration.certificate = value }
        if let value = self.tlsKey { configuration.key = value }
        if let value = self.clientCA { configuration.clientCA = value }
        if let value = self.trustDomain { configuration.trustDomain = value }
        if let value = self.adminSocket { configuration.adminSocket = value }
        if let value = self.memorySocket { configuration.memorySocket = value }
        if let value = self.stateDirectory { configuration.stateDirectory = value }
        if let value = self.metricsListen { configuration.metricsListen = value }
        if let value = self.guestTransport {
            guard let kind = GuestTransportKind(rawValue: value) else {
                throw ConfigurationProblem("--guest-transport '\(value)' is not epoll or nio")
            }
            configuration.guestTransport = kind
        }
        if let value = configuration.metricsListen, BrokerConfiguration.splitHostPort(value) == nil {
            throw ConfigurationProblem("--metrics-listen '\(value)' is not HOST:PORT")
        }
        guard BrokerConfiguration.splitHostPort(configuration.listen) != nil else {
            throw ConfigurationProblem("--listen '\(configuration.listen)' is not HOST:PORT")
        }
        for (name, value) in [
            ("--tls-cert (tls.certificate)", configuration.certificate), ("--tls-key (tls.key)", configuration.key),
            ("--client-ca (tls.client_ca)", configuration.clientCA),
            ("--trust-domain (trust_domain)", configuration.trustDomain),
        ] where value == nil {
            throw ConfigurationProblem("\(name) is required (or use --dev)")
        }
        return configuration
    }

    /// Everything a start reads before it binds anything (`--check` runs exactly this): the TLS
    /// material (certificate, key, their match, and a CA bundle of CAs), the pause state and
    /// whether the state directory can be written.
    private func checkStartable(
        _ configuration: BrokerConfiguration,
        devPKI: DevPKI?
    ) throws(ConfigurationProblem) {
        guard let certificate = configuration.certificate, let key = configuration.key,
            let clientCA = configuration.clientCA, let trustDomain = configuration.trustDomain
        else { preconditionFailure("checked by effectiveConfiguration") }
        let (host, port) = BrokerConfiguration.splitHostPort(configuration.listen)!
        do throws(TLSError) {
            _ = try BrokerServer(
                configuration: BrokerServerConfiguration(
                    host: host,
                    port: port,
                    certificateChainPath: certificate,
                    privateKeyPath: key,
                    clientCAPath: clientCA,
                    trustDomain: trustDomain
                ),
                core: BrokerCore(policies: configuration.policies),
                group: MultiThreadedEventLoopGroup.singleton,
                logger: Logger(label: "pagebrokerd")
            )
        } catch {
            throw ConfigurationProblem(
                "\(self.origin(of: error.file, dev: devPKI != nil)): \(error.reason)",
                debugDetail: error.openSSLErrors
            )
        }
        let store = PauseStore(directory: Daemon.stateDirectory(configuration))
        do throws(StateError) {
            _ = try store.load()
            try store.checkWritable()
        } catch {
            throw ConfigurationProblem("\(self.origin(ofKey: "state_directory", flag: "--state-directory")): \(error)")
        }
    }

    /// Where a TLS file's path came from, for the first words of its error: the flag that set
    /// it, or the configuration file and key.
    private func origin(of file: TLSError.File?, dev: Bool) -> String {
        if dev { return "--dev" }
        switch file {
        case .certificateChain:
            return self.origin(ofKey: "tls.certificate", flag: self.tlsCert.map { _ in "--tls-cert" })
        case .privateKey: return self.origin(ofKey: "tls.key", flag: self.tlsKey.map { _ in "--tls-key" })
        case .caBundle: return self.origin(ofKey: "tls.client_ca", flag: self.clientCA.map { _ in "--client-ca" })
        case nil: return self.config.map { "\($0): tls" } ?? "tls"
        }
    }

    private func origin(ofKey key: String, flag: String?) -> String {
        if let flag { return "\(flag) (\(key))" }
        return self.config.map { "\($0): \(key)" } ?? key
    }

    private static func printSummary(_ configuration: BrokerConfiguration) {
        let paused = configuration.policies.tenants.filter(\.value.paused).count
        FileHandle.standardOutput.write(
            Data(
                ("configuration OK: listen \(configuration.listen), trust domain \(configuration.trustDomain ?? ""), "
                    + "\(configuration.policies.tenants.count) tenants (\(paused) paused), "
                    + "default tenant \(configuration.policies.defaultPolicy == nil ? "refused" : "admitted")\n").utf8
            )
        )
    }

    private func makeDevPKI() throws -> DevPKI {
        let directory: String
        if let devDirectory = self.devDirectory {
            directory = devDirectory
        } else {
            directory =
                FileManager.default.temporaryDirectory.appendingPathComponent(
                    "pagebrokerd-dev-\(UInt32.random(in: .min ... .max))"
                ).path
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let pki = DevPKI(directory: directory, trustDomain: "dev.pagebroker.test")
        try pki.makeAuthority()
        for tenant in ["tenant-a", "tenant-b"] {
            for guest in ["guest-1", "guest-2"] { try pki.makeGuest(tenant: tenant, guest: guest) }
        }
        return pki
    }

    private static func applyDev(_ pki: DevPKI, to configuration: inout BrokerConfiguration) {
        configuration.listen = "127.0.0.1:0"
        configuration.certificate = pki.brokerCertificate
        configuration.key = pki.brokerKey
        configuration.clientCA = pki.caCertificate
        configuration.trustDomain = pki.trustDomain
        configuration.adminSocket = "\(pki.directory)/admin.sock"
        // The dev PKI's tenants, named so that this user may attach their guests' memory
        // (`default_tenant` cannot grant that).
        for tenant in ["tenant-a", "tenant-b"] where configuration.policies.tenants[tenant] == nil {
            configuration.policies.tenants[tenant] = TenantPolicy(
                memoryAccess: MemoryAccessPolicy(allowedUIDs: [getuid()])
            )
        }
        configuration.stateDirectory = configuration.stateDirectory ?? "\(pki.directory)/state"
        configuration.allowedUIDs.append(getuid())
        if configuration.policies.defaultPolicy == nil { configuration.policies.defaultPolicy = TenantPolicy() }
    }

    private func printDevInstructions(_ pki: DevPKI, address: String, configuration: BrokerConfiguration) {
        var lines = [
            "pagebrokerd is running in development mode.",
            "  guests:        \(address) (mutual TLS, trust domain \(pki.trustDomain))",
            "  PKI and admin: \(pki.directory)",
            "  memory socket: \(configuration.memorySocketPath)",
            "",
            "Start guests (each in its own terminal, or with & at the end):",
        ]
        for (tenant, guest, workload) in [
            ("tenant-a", "guest-1", "churn"), ("tenant-a", "guest-2", "idle"), ("tenant-b", "guest-1", "memhog"),
            ("tenant-b", "guest-2", "fault"),
        ] {
            lines.append(
                "  pagebroker-agent run --broker \(address) --ca \(pki.caCertificate) "
                    + "--cert \(pki.guestCertificate(tenant: tenant, guest: guest)) --key \(pki.guestKey(tenant: tenant, guest: guest)) "
                    + "--memory 1GiB --workload \(workload) --duration 60s"
            )
        }
        lines += [
            "",
            "Watch the broker:",
            "  pagebrokerctl --socket \(configuration.adminSocket) tenants",
            "  pagebrokerctl --socket \(configuration.adminSocket) guests",
            "",
            "Stop with Ctrl-C (SIGINT) or SIGTERM.",
        ]
        // Straight to the descriptor: tests and scripts read it through a pipe, where print's
        // buffering would hold it back.
        FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}

/// A configuration that cannot be used, said in one line naming the file, key or flag at fault.
struct ConfigurationProblem: Error, CustomStringConvertible {
    let description: String
    /// More than an operator needs in the one line (OpenSSL's error queue): logged at debug.
    let debugDetail: String?
    init(_ description: String, debugDetail: String? = nil) {
        self.description = description
        self.debugDetail = debugDetail
    }
}

/// The broker could not start although its configuration is good: a listener that cannot be
/// bound, an admin socket another broker answers on. Exit status 1.
struct StartupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
