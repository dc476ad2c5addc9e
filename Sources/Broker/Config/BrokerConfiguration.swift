import Foundation
import Yams

/// Everything `pagebrokerd` is configured with, from a YAML file (`docs/configuration.md`
/// documents every key) and command-line flags that override it.
public struct BrokerConfiguration: Hashable, Sendable {
    /// Guest listener, `HOST:PORT`.
    public var listen = "127.0.0.1:7443"
    /// Admin Unix socket path.
    public var adminSocket = "/run/pagebrokerd/admin.sock"
    /// Memory Unix socket path, where guests' memory is attached for host-side discard; `nil`
    /// for ``memorySocketPath``'s default.
    public var memorySocket: String?

    /// The memory socket's path: `memory_socket`, else `memory.sock` beside the admin socket
    /// (`/run/pagebrokerd/memory.sock` by default), so a broker given only `--admin-socket`
    /// keeps all its sockets in one directory.
    public var memorySocketPath: String {
        if let memorySocket { return memorySocket }
        let directory = (self.adminSocket as NSString).deletingLastPathComponent
        return ((directory.isEmpty ? "." : directory) as NSString).appendingPathComponent("memory.sock")
    }
    public var trustDomain: String?
    public var certificate: String?
    public var key: String?
    public var clientCA: String?
    public var maxSessions = 10_000
    public var session = SessionConfiguration()
    /// How long a stopping broker waits for sessions to say goodbye.
    public var shutdownTimeout: Duration = .seconds(10)
    public var allowedUIDs: [UInt32] = []
    public var allowedGIDs: [UInt32] = []
    public var policies = PolicySet()
    /// Where the broker keeps state across restarts (paused tenants); `nil` means
    /// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`) or `/var/lib/pagebrokerd`.
    public var stateDirectory: String?
    /// Prometheus endpoint (`GET /metrics`), `HOST:PORT`; `nil`: no metrics listener.
    public var metricsListen: String?
    /// Event-loop threads serving guests, the admin socket and metrics; `nil`: one per core
    /// (`System.coreCount`).
    public var eventLoopThreads: Int?
    /// What carries guest sessions: the broker's own epoll loops (default), or SwiftNIO's
    /// pipeline (`nio`), which the broker used before.
    public var guestTransport: GuestTransportKind = .epoll

    public init() {}

    /// Reads and checks a configuration file.
    public static func load(path: String) throws(ConfigError) -> BrokerConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(.unreadable, key: "", line: nil, "cannot read \(path): \(error.localizedDescription)")
        }
        return try Self.parse(text)
    }

    /// Parses and checks configuration text.
    public static func parse(_ text: String) throws(ConfigError) -> BrokerConfiguration {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ConfigError(.syntax, key: "", line: Self.line(of: error), "not valid YAML: \(error)")
        } catch {
            throw ConfigError(.syntax, key: "", line: nil, "not valid YAML: \(error)")
        }
        var configuration = BrokerConfiguration()
        guard let root else { return configuration }
        let top = try ConfigReader(root, path: "")
        try top.only([
            "listen", "admin_socket", "trust_domain", "tls", "limits", "shutdown_timeout", "admin", "default_tenant",
            "tenants", "state_directory", "metrics", "event_loop_threads", "memory_socket", "guest_transport",
        ])
        if let value = try top.string("listen") {
            guard Self.splitHostPort(value) != nil else { throw top.bad("listen", "'\(value)' is not HOST:PORT") }
            configuration.listen = value
        }
        if let value = try top.string("admin_socket") { configuration.adminSocket = value }
        if let value = try top.int("event_loop_threads", in: 1...1024) { configuration.eventLoopThreads = value }
        if let value = try top.string("guest_transport") {
            guard let kind = GuestTransportKind(rawValue: value) else {
                throw top.bad("guest_transport", "'\(value)' is not epoll or nio")
            }
            configuration.guestTransport = kind
        }
        if let value = try top.string("memory_socket") {
            guard value.hasPrefix("/") else { throw top.bad("memory_socket", "'\(value)' is not an absolute path") }
            configuration.memorySocket = value
        }
        if let value = try top.string("state_directory") {
            guard value.hasPrefix("/") else { throw top.bad("state_directory", "'\(value)' is not an absolute path") }
            configuration.stateDirectory = value
        }
        if let value = try top.string("trust_domain") {
            guard (try? GuestIdentity.parse("spiffe://\(value)/tenant/t/guest/g", trustDomain: value)) != nil else {
                throw top.bad(
                    "trust_domain",
                    "'\(value)' is not a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_')"
                )
            }
            configuration.trustDomain = value
        }
        if let tls = try top.table("tls") {
            try tls.only(["certificate", "key", "client_ca"])
            configuration.certificate = try tls.string("certificate")
            configuration.key = try tls.string("key")
            configuration.clientCA = try tls.string("client_ca")
        }
        if let limits = try top.table("limits") {
            try limits.only([
                "max_sessions", "max_frame_size", "max_ranges_per_report", "min_report_order", "heartbeat_interval",
                "handshake_timeout",
            ])
            if let value = try limits.int("max_sessions", in: 1...10_000_000) { configuration.maxSessions = value }
            if let value = try limits.int("max_frame_size", in: 4096...16_777_216) {
                configuration.session.maxFrameSize = UInt32(value)
            }
            if let value = try limits.int("max_ranges_per_report", in: 1...1_000_000) {
                configuration.session.maxRangesPerReport = UInt32(value)
            }
            if let value = try limits.int("min_report_order", in: 0...63) {
                configuration.session.minReportOrder = UInt32(value)
            }
            if let value = try limits.duration("heartbeat_interval") { configuration.session.heartbeatInterval = value }
            if let value = try limits.duration("handshake_timeout") { configuration.session.handshakeTimeout = value }
        }
        if let value = try top.duration("shutdown_timeout") { configuration.shutdownTimeout = value }
        if let admin = try top.table("admin") {
            try admin.only(["allowed_uids", "allowed_gids"])
            configuration.allowedUIDs = try admin.ids("allowed_uids") ?? []
            configuration.allowedGIDs = try admin.ids("allowed_gids") ?? []
        }
        if let metrics = try top.table("metrics") {
            try metrics.only(["listen"])
            if let value = try metrics.string("listen") {
                guard Self.splitHostPort(value) != nil else {
                    throw metrics.bad("listen", "'\(value)' is not HOST:PORT")
                }
                configuration.metricsListen = value
            }
        }
        if let table = try top.table("default_tenant") {
            configuration.policies.defaultPolicy = try Self.policy(table, allowsMemory: false)
        }
        if let tenants = try top.table("tenants") {
            for (name, node) in tenants.entries {
                guard GuestIdentity.isValidSegment(Substring(name)) else {
                    throw ConfigError(
                        .badValue,
                        key: "tenants.\(name)",
                        line: node.mark.map { $0.line },
                        "'\(name)' is not a valid tenant id"
                    )
                }
                let table = try ConfigReader(node, path: "tenants.\(name)")
                configuration.policies.tenants[name] = try Self.policy(table, allowsMemory: true)
            }
        }
        return configuration
    }

    private static func policy(_ table: ConfigReader, allowsMemory: Bool) throws(ConfigError) -> TenantPolicy {
        // `default_tenant` has no `memory:`: a process allowed there would be allowed for every
        // tenant the configuration does not name.
        try table.only(
            allowsMemory
                ? ["paused", "max_reports_per_second", "burst", "max_guests", "memory"]
                : ["paused", "max_reports_per_second", "burst", "max_guests"]
        )
        var policy = TenantPolicy()
        if let memory = try table.table("memory") {
            try memory.only(["uids", "gids"])
            policy.memoryAccess = MemoryAccessPolicy(
                allowedUIDs: Set(try memory.ids("uids") ?? []),
                allowedGIDs: Set(try memory.ids("gids") ?? [])
            )
        }
        if let value = try table.bool("paused") { policy.paused = value }
        if let value = try table.double("max_reports_per_second") {
            guard value > 0 else { throw table.bad("max_reports_per_second", "must be positive") }
            policy.maxReportsPerSecond = value
        }
        policy.burst = try table.int("burst", in: 1...100_000_000)
        policy.maxGuests = try table.int("max_guests", in: 1...100_000_000)
        return policy
    }

    /// `HOST:PORT` (IPv6 as `[::1]:PORT`) split, or `nil`.
    public static func splitHostPort(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65_535).contains(port)
        else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }

    private static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return nil
        }
    }
}

/// Typed access to one YAML mapping, with errors that name the key and its line.
struct ConfigReader {
    let path: String
    let line: Int?
    let entries: [(String, Node)]

    init(_ node: Node, path: String) throws(ConfigError) {
        guard case .mapping(let mapping) = node else {
            throw ConfigError(.badValue, key: path, line: node.mark?.line, "must be a mapping of keys to values")
        }
        self.path = path
        self.line = node.mark?.line
        var entries: [(String, Node)] = []
        for (key, value) in mapping {
            guard let name = key.string else {
                throw ConfigError(.badValue, key: path, line: key.mark?.line, "keys must be strings")
            }
            entries.append((name, value))
        }
        self.entries = entries
    }

    private func key(_ name: String) -> String { self.path.isEmpty ? name : "\(self.path).\(name)" }

    private func node(_ name: String) -> Node? { self.entries.first { $0.0 == name }?.1 }

    func bad(_ name: String, _ message: String) -> ConfigError {
        ConfigError(.badValue, key: self.key(name), line: self.node(name)?.mark?.line ?? self.line, message)
    }

    /// Refuses keys not in `known`.
    func only(_ known: Set<String>) throws(ConfigError) {
        for (name, node) in self.entries where !known.contains(name) {
            throw ConfigError(
                .unknownKey,
                key: self.key(name),
                line: node.mark?.line,
                "unknown key; known here: \(known.sorted().joined(separator: ", "))"
            )
        }
    }

    func table(_ name: String) throws(ConfigError) -> ConfigReader? {
        guard let node = self.node(name) else { return nil }
        return try ConfigReader(node, path: self.key(name))
    }

    func string(_ name: String) throws(ConfigError) -> String? {
        guard let node = self.node(name) else { return nil }
        guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
            throw self.bad(name, "must be a non-empty string")
        }
        return scalar.string
    }

    func int(_ name: String, in range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        guard let node = self.node(name) else { return nil }
        guard let value = node.int else { throw self.bad(name, "must be an integer") }
        guard range.contains(value) else {
            throw self.bad(name, "must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        return value
    }

    func double(_ name: String) throws(ConfigError) -> Double? {
        guard let node = self.node(name) else { return nil }
        guard let value = node.float ?? node.int.map(Double.init), value.isFinite else {
            throw self.bad(name, "must be a number")
        }
        return value
    }

    func bool(_ name: String) throws(ConfigError) -> Bool? {
        guard let node = self.node(name) else { return nil }
        guard let value = node.bool else { throw self.bad(name, "must be true or false") }
        return value
    }

    /// `10s`, `500ms`, `2m`.
    func duration(_ name: String) throws(ConfigError) -> Duration? {
        guard let text = try self.string(name) else { return nil }
        let units: [(String, Int64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = Int64(text.dropLast(suffix.count)), value > 0 { return .nanoseconds(value * scale) }
        }
        throw self.bad(name, "'\(text)' is not a positive duration like 500ms, 10s or 2m")
    }

    func ids(_ name: String) throws(ConfigError) -> [UInt32]? {
        guard let node = self.node(name) else { return nil }
        guard case .sequence(let sequence) = node else { throw self.bad(name, "must be a list of numeric ids") }
        var ids: [UInt32] = []
        for item in sequence {
            guard let value = item.int, let id = UInt32(exactly: value) else {
                throw self.bad(name, "must be a list of numeric ids")
            }
            ids.append(id)
        }
        return ids
    }
}
