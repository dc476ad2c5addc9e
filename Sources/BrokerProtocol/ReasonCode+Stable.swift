extension Pagebroker_V1_ReasonCode {
    /// The number on the wire. Stable: never reused or renumbered.
    public var code: Int { self.rawValue }

    /// A stable lower-case name for logs, metrics labels and the admin API, such
    /// as `invalid_range`. It is the proto enumerator without its `REASON_CODE_`
    /// prefix; a code this version does not know is `unrecognized_<number>`.
    ///
    /// Spelled out rather than derived from the generated Swift case names, so a
    /// change in the code generator cannot rename a metric.
    public var stableName: String {
        switch self {
        case .unspecified: "unspecified"
        case .ok: "ok"
        case .invalidRange: "invalid_range"
        case .notAligned: "not_aligned"
        case .outOfBounds: "out_of_bounds"
        case .overlapInBatch: "overlap_in_batch"
        case .tenantPaused: "tenant_paused"
        case .rateLimited: "rate_limited"
        case .backendFailed: "backend_failed"
        case .shuttingDown: "shutting_down"
        case .unsupportedVersion: "unsupported_version"
        case .frameTooLarge: "frame_too_large"
        case .protocolViolation: "protocol_violation"
        case .orderOutOfBounds: "order_out_of_bounds"
        case .sequenceReplayed: "sequence_replayed"
        case .tooManyRanges: "too_many_ranges"
        case .limitExceeded: "limit_exceeded"
        case .sessionReplaced: "session_replaced"
        case .discardInhibited: "discard_inhibited"
        case .guestPaused: "guest_paused"
        case .UNRECOGNIZED(let number): "unrecognized_\(number)"
        }
    }

    /// The enumerator's name in `pagebroker.proto`, such as `REASON_CODE_INVALID_RANGE`.
    public var protoName: String {
        "REASON_CODE_" + self.stableName.uppercased()
    }

    /// The code with the given ``stableName``, or `nil` for a name this version
    /// does not define (including `unrecognized_<number>`).
    public init?(stableName: String) {
        guard let match = Self.allCases.first(where: { $0.stableName == stableName }) else { return nil }
        self = match
    }

    /// Whether a report refused with this code may succeed if sent again later
    /// unchanged: the refusal is about the broker's state, not the report. The
    /// guest honours `retry_after_ms` for these; for the others the report itself
    /// is wrong and resending it cannot help.
    public var isTransient: Bool {
        switch self {
        case .tenantPaused, .rateLimited, .backendFailed, .shuttingDown, .discardInhibited, .guestPaused: true
        default: false
        }
    }
}
