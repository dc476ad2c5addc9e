/// A configuration the broker refuses, naming the key and the line.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unreadable
            case syntax
            case unknownKey = "unknown_key"
            case badValue = "bad_value"
            case missing
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The file could not be read.
        public static let unreadable = Code(.unreadable)
        /// The file is not valid YAML.
        public static let syntax = Code(.syntax)
        /// A key the broker does not know (a typo would otherwise be silently ignored).
        public static let unknownKey = Code(.unknownKey)
        /// A value of the wrong type or out of range.
        public static let badValue = Code(.badValue)
        /// A required setting is missing.
        public static let missing = Code(.missing)

        public var description: String { self.base.rawValue }
    }

    public let code: Code
    /// Dotted path of the key, e.g. `tenants.acme.max_guests`.
    public let key: String
    /// 1-based line in the file, when known.
    public let line: Int?
    public let message: String

    public init(_ code: Code, key: String, line: Int?, _ message: String) {
        self.code = code
        self.key = key
        self.line = line
        self.message = message
    }

    public var description: String {
        let location = self.line.map { "line \($0): " } ?? ""
        let key = self.key.isEmpty ? "" : "\(self.key): "
        return "\(location)\(key)\(self.message)"
    }
}
