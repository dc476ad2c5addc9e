/// A failure talking to the service manager, with a stable code.
public struct SystemdError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Stable error codes; their names appear in logs and never change meaning.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case listenDescriptors = "listen_descriptors"
            case unknownDescriptorName = "unknown_descriptor_name"
            case duplicateDescriptorName = "duplicate_descriptor_name"
            case notify = "notify"
            case watchdog = "watchdog"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// `sd_listen_fds_with_names` failed (e.g. `LISTEN_FDS` is malformed).
        public static let listenDescriptors = Code(.listenDescriptors)
        /// A passed socket carries a `FileDescriptorName=` the daemon does not know.
        public static let unknownDescriptorName = Code(.unknownDescriptorName)
        /// Two passed sockets carry the same name.
        public static let duplicateDescriptorName = Code(.duplicateDescriptorName)
        /// `sd_notify` could not reach `NOTIFY_SOCKET`.
        public static let notify = Code(.notify)
        /// `WATCHDOG_USEC` is malformed.
        public static let watchdog = Code(.watchdog)

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
