extension Pagebroker_V1_MemoryCode {
    /// A stable lower-case name for logs and tests, as docs/protocol.md lists it
    /// (`size_mismatch`): the proto enumerator without its `MEMORY_CODE_` prefix; a code
    /// this version does not know is `unrecognized_<number>`. Spelled out, as
    /// ``Pagebroker_V1_ReasonCode/stableName`` is, so the generator cannot rename it. The
    /// broker (its refusals) and the agent (the answers it gets) both use this one table.
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
        case .UNRECOGNIZED(let value): "unrecognized_\(value)"
        }
    }
}
