#if canImport(Glibc)
import Glibc
#endif

/// Why the epoll guest transport could not start, with a stable code.
public struct GuestTransportError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// A loop's epoll set, eventfd or thread could not be made.
        public static let loopSetupFailed = Code("loop_setup_failed")
        /// The listening socket could not be made, bound or adopted.
        public static let cannotListen = Code("cannot_listen")

        public var description: String { self.name }
    }

    public let code: Code
    /// In the system's words ("Address already in use"), as the daemon prints it.
    public let message: String
    /// The errno behind it, when there is one.
    public let errno: CInt?

    init(_ code: Code, _ message: String, errno: CInt? = nil) {
        self.code = code
        self.errno = errno
        if let errno {
            self.message =
                message.isEmpty ? String(cString: strerror(errno)) : "\(message): \(String(cString: strerror(errno)))"
        } else {
            self.message = message
        }
    }

    public var description: String { "\(self.code): \(self.message)" }
}
