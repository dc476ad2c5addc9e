/// Why a byte stream could not be turned into frames.
///
/// Every case is fatal to the session: after it the stream position is unknown
/// (or the peer is not speaking this protocol), so the receiver reports it with
/// ``reasonCode`` where there is a peer left to tell, and closes.
public struct FrameError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A stable identifier for the kind of failure, safe to match on and to log.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Backing: Hashable, Sendable {
            case truncatedFrame
            case frameTooLarge
            case malformedFrame
            case unknownBody
        }

        private let backing: Backing

        private init(_ backing: Backing) {
            self.backing = backing
        }

        /// The stream ended inside a frame: after part of a length prefix, or
        /// before the number of bytes the prefix announced.
        public static let truncatedFrame = Code(.truncatedFrame)

        /// A length prefix announced more bytes than the maximum frame size. Raised
        /// as soon as the prefix is read; the body is never buffered.
        public static let frameTooLarge = Code(.frameTooLarge)

        /// The frame's bytes are not a valid protobuf `Frame`.
        public static let malformedFrame = Code(.malformedFrame)

        /// A valid `Frame` whose `body` is not one this version knows: unset, or
        /// carried only in a field number this version does not define.
        public static let unknownBody = Code(.unknownBody)

        public var description: String {
            switch self.backing {
            case .truncatedFrame: "truncated_frame"
            case .frameTooLarge: "frame_too_large"
            case .malformedFrame: "malformed_frame"
            case .unknownBody: "unknown_body"
            }
        }
    }

    /// What went wrong.
    public var code: Code

    /// The frame length from the prefix, when one was read.
    public var frameLength: Int?

    /// The maximum frame size in force, for ``Code/frameTooLarge``.
    public var maxFrameSize: Int?

    /// Extra detail for logs, such as the protobuf decoder's complaint.
    public var detail: String?

    public init(code: Code, frameLength: Int? = nil, maxFrameSize: Int? = nil, detail: String? = nil) {
        self.code = code
        self.frameLength = frameLength
        self.maxFrameSize = maxFrameSize
        self.detail = detail
    }

    /// The code to put in the `error` frame sent before closing, or `nil` for a
    /// truncated frame: the peer has already closed its side, so there is nobody
    /// to tell.
    public var reasonCode: Pagebroker_V1_ReasonCode? {
        switch self.code {
        case .truncatedFrame: nil
        case .frameTooLarge: .frameTooLarge
        default: .protocolViolation
        }
    }

    public var description: String {
        var text = "FrameError(\(self.code)"
        if let frameLength { text += ", length: \(frameLength)" }
        if let maxFrameSize { text += ", max: \(maxFrameSize)" }
        if let detail { text += ", \(detail)" }
        return text + ")"
    }
}
