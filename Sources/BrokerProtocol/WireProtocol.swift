/// Constants and negotiation rules of the pagebroker session protocol that both
/// the broker and the guest agent must agree on. `docs/protocol.md` is the
/// normative description; this is its code form.
public enum WireProtocol {
    /// The protocol version this library speaks, sent in `ClientHello` and `ServerHello`.
    public static let version: UInt32 = 1

    /// Bytes of the big-endian length that precedes every frame.
    public static let lengthPrefixSize = 4

    /// Maximum frame size (length prefix excluded) in force until the hellos are
    /// exchanged, and the value a `max_frame_size` of 0 stands for.
    public static let defaultMaxFrameSize: UInt32 = 64 * 1024

    /// The smallest maximum frame size a peer may ask for. Below this, a hello or
    /// an error with a diagnostic message might not fit, so a smaller non-zero
    /// proposal is a protocol violation rather than something to honour.
    public static let minimumMaxFrameSize: UInt32 = 4 * 1024

    /// The largest maximum frame size either side may configure. It bounds the
    /// memory one peer can make the other buffer for a single frame.
    public static let maximumMaxFrameSize: UInt32 = 16 * 1024 * 1024

    /// Blocks per report a broker allows unless configured otherwise. The kernel's
    /// reporting engine sends at most 32 per batch; the headroom lets other
    /// clients batch more.
    public static let defaultMaxRangesPerReport: UInt32 = 256

    /// Heartbeat interval a broker announces unless configured otherwise.
    public static let defaultHeartbeatIntervalMilliseconds: UInt32 = 10_000

    /// A peer from which nothing has arrived for this many heartbeat intervals is gone.
    public static let heartbeatMissLimit: UInt32 = 3

    /// Upper bound on the encoded size of one `(frame, order)` pair: a `uint64`
    /// varint takes at most 10 bytes and an order (at most 63) one.
    public static let maximumEncodedBlockSize = 11

    /// Room for everything in a report frame but its blocks: the frame's and the
    /// report's tags and lengths, and `seq`.
    public static let reportOverhead = 32

    /// The most blocks a report can carry and still fit in a frame of
    /// `maxFrameSize` bytes, whatever the frame numbers: the broker announces no
    /// more than this as `max_ranges_per_report`.
    public static func maxRangesFitting(maxFrameSize: UInt32) -> UInt32 {
        let room = Int(maxFrameSize) - reportOverhead
        return room > 0 ? UInt32(room / maximumEncodedBlockSize) : 0
    }

    /// The maximum frame size of a session: the smaller of what the guest asked for
    /// (0 meaning ``defaultMaxFrameSize``) and what the broker allows.
    ///
    /// - Returns: `nil` when the guest's proposal is below ``minimumMaxFrameSize``;
    ///   the broker then answers with an `error` (`PROTOCOL_VIOLATION`) and closes.
    public static func negotiateMaxFrameSize(guestProposal: UInt32, brokerLimit: UInt32) -> UInt32? {
        let proposal = guestProposal == 0 ? defaultMaxFrameSize : guestProposal
        guard proposal >= minimumMaxFrameSize else { return nil }
        let brokerLimit = min(max(brokerLimit, minimumMaxFrameSize), maximumMaxFrameSize)
        return min(proposal, brokerLimit)
    }
}
