/// The maximum frame size of one connection, shared by its ``FrameDecoder`` and
/// ``FrameEncoder`` so the session can change it once the hellos have been
/// exchanged.
///
/// `ByteToMessageHandler` owns its decoder and offers no way to reach it, so the
/// limit lives in this small reference that the session handler keeps. Like the
/// handlers, it belongs to the channel's event loop: read and write it only there.
public final class FrameSizeLimit {
    /// Largest frame body in bytes (length prefix excluded). Takes effect for the
    /// next length prefix decoded and the next frame encoded.
    public var maxFrameSize: Int {
        didSet {
            precondition(
                (0...Int(WireProtocol.maximumMaxFrameSize)).contains(self.maxFrameSize),
                "maximum frame size \(self.maxFrameSize) outside 0...\(WireProtocol.maximumMaxFrameSize)"
            )
        }
    }

    /// Creates a limit, by default the one in force before the hellos.
    public init(maxFrameSize: Int = Int(WireProtocol.defaultMaxFrameSize)) {
        precondition(
            (0...Int(WireProtocol.maximumMaxFrameSize)).contains(maxFrameSize),
            "maximum frame size \(maxFrameSize) outside 0...\(WireProtocol.maximumMaxFrameSize)"
        )
        self.maxFrameSize = maxFrameSize
    }
}

// Event-loop bound, like the channel handlers that share it.
@available(*, unavailable)
extension FrameSizeLimit: Sendable {}
