import Foundation

/// Tenants paused or resumed through the admin socket, kept in the state directory so that a
/// restart (or an upgrade) does not quietly resume a tenant an operator paused.
///
/// The file holds only the operator's overrides; the configuration's `paused:` stays the
/// default for tenants that have none.
public struct PauseStore: Sendable {
    /// The file, `<state directory>/paused-tenants.json`.
    public let path: String
    private let directory: String

    public init(directory: String) {
        self.directory = directory
        self.path = (directory as NSString).appendingPathComponent("paused-tenants.json")
    }

    private struct File: Codable {
        /// Bumped if the layout changes; a broker refuses a format it does not know rather than
        /// misreading it.
        var format: Int
        /// Tenant → `paused` or `resumed`.
        var tenants: [String: String]
        /// Guests paused on their own, as `tenant/guest` (absent in files of older brokers).
        var guests: [String]?
    }

    /// The overrides on disk (tenant → paused); empty when none were saved yet.
    public func load() throws(StateError) -> [String: Bool] {
        try self.loadAll().tenants
    }

    /// The tenant overrides and the paused guests (`tenant/guest`) on disk.
    public func loadAll() throws(StateError) -> (tenants: [String: Bool], guests: Set<String>) {
        guard FileManager.default.fileExists(atPath: self.path) else { return ([:], []) }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: self.path))
        } catch {
            throw StateError(.unreadable, path: self.path, "\(error.localizedDescription)")
        }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: data)
        } catch {
            throw StateError(.corrupt, path: self.path, "not a pause-state file: \(error)")
        }
        guard file.format == 1 else {
            throw StateError(.corrupt, path: self.path, "format \(file.format) is newer than this broker's (1)")
        }
        var overrides: [String: Bool] = [:]
        for (tenant, value) in file.tenants {
            switch value {
            case "paused": overrides[tenant] = true
            case "resumed": overrides[tenant] = false
            default:
                throw StateError(
                    .corrupt,
                    path: self.path,
                    "tenant \(tenant): '\(value)' is neither paused nor resumed"
                )
            }
        }
        var guests: Set<String> = []
        for entry in file.guests ?? [] {
            let parts = entry.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw StateError(.corrupt, path: self.path, "guest '\(entry)' is not tenant/guest")
            }
            guests.insert(entry)
        }
        return (overrides, guests)
    }

    /// Checks, without changing anything, that a pause could be saved: the directory is a
    /// directory the broker may write (or, when it does not exist yet, the nearest existing
    /// parent is), on a file system mounted read-write. `access(2)` answers for the real uid, so
    /// root's bypass of mode bits is honoured and a read-only mount still fails.
    public func checkWritable() throws(StateError) {
        var path = self.directory
        var info = stat()
        while stat(path, &info) != 0 {
            guard errno == ENOENT, path != "/", !path.isEmpty else {
                throw StateError(.unwritable, path: path, String(cString: strerror(errno)))
            }
            path = (path as NSString).deletingLastPathComponent
            if path.isEmpty { path = "." }
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw StateError(.unwritable, path: path, "not a directory")
        }
        guard access(path, W_OK | X_OK) == 0 else {
            throw StateError(.unwritable, path: path, String(cString: strerror(errno)))
        }
    }

    /// Replaces the file atomically (a temporary file renamed over it), creating the directory
    /// (mode 0700) when it is missing.
    public func save(_ overrides: [String: Bool], pausedGuests: Set<String> = []) throws(StateError) {
        let file = File(
            format: 1,
            tenants: overrides.mapValues { $0 ? "paused" : "resumed" },
            guests: pausedGuests.isEmpty ? nil : pausedGuests.sorted()
        )
        do {
            try FileManager.default.createDirectory(
                atPath: self.directory,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            try encoder.encode(file).write(to: URL(fileURLWithPath: self.path), options: .atomic)
        } catch {
            throw StateError(.unwritable, path: self.path, "\(error.localizedDescription)")
        }
    }
}

/// A failure reading or writing the broker's state directory, with a stable code.
public struct StateError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unreadable, corrupt, unwritable
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The file exists but cannot be read.
        public static let unreadable = Code(.unreadable)
        /// The file is not what the broker wrote; it is left alone for the operator to look at.
        public static let corrupt = Code(.corrupt)
        /// The file or its directory cannot be written.
        public static let unwritable = Code(.unwritable)

        public var description: String { self.base.rawValue }
    }

    public let code: Code
    public let path: String
    public let message: String

    public init(_ code: Code, path: String, _ message: String) {
        self.code = code
        self.path = path
        self.message = message
    }

    public var description: String { "\(self.code): \(self.path): \(self.message)" }
}
