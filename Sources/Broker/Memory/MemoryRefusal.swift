import BrokerProtocol

/// Why the broker refused a memory socket request: a stable ``Pagebroker_V1_MemoryCode`` (the
/// wire's, never renumbered) and a message for the attaching process's logs.
public struct MemoryRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    public let code: Pagebroker_V1_MemoryCode
    public let message: String

    public init(_ code: Pagebroker_V1_MemoryCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(self.code.stableName): \(self.message)" }
}

extension Pagebroker_V1_MemoryCode {
    /// The code's name as docs/protocol.md lists it (`size_mismatch`), for logs and tests.
    public var stableName: String {
        switch self {
        case .unspecified: "unspecified"
        case .ok: "ok"
        case .permissionDenied: "permission_denied"
        case .unknownGuest: "unknown_guest"
        case .noDescriptor: "no_descriptor"
        case .notSharedMemory: "not_shared_memory"
        case .readOnly: "read_only"
        case .sizeMismatch: "size_mismatch"
        case .notSealed: "not_sealed"
        case .writeSealed: "write_sealed"
        case .alreadyAttached: "already_attached"
        case .invalidGeometry: "invalid_geometry"
        case .protocolViolation: "protocol_violation"
        case .unsupportedVersion: "unsupported_version"
        case .shuttingDown: "shutting_down"
        case .UNRECOGNIZED(let value): "code_\(value)"
        }
    }
}
