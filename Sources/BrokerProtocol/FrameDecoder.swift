import NIOCore

/// Turns inbound bytes into `Frame`s, refusing an over-long length prefix
/// before any of its body is buffered. Wrap it in a `ByteToMessageHandler`.
///
/// Errors are ``FrameError``s fired through `errorCaught`; the handler then
/// stops decoding, and the session answers with an `error` frame
/// (``FrameError/reasonCode``) and closes.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Pagebroker_V1_Frame

    /// The limit in force; the session may change it at any time on the event loop.
    public let limit: FrameSizeLimit

    /// Creates a decoder reading its maximum frame size from `limit`.
    public init(limit: FrameSizeLimit) {
        self.limit = limit
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let parser = FrameParser(maxFrameSize: self.limit.maxFrameSize)
        guard let (frame, consumed) = try parser.parse(buffer.readableBytesSpan) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: consumed)
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        // Without EOF (the handler is being removed) left-over bytes are not an
        // error: ByteToMessageHandler passes them on to the next handler.
        guard seenEOF else { return try self.decode(context: context, buffer: &buffer) }
        let parser = FrameParser(maxFrameSize: self.limit.maxFrameSize)
        guard let (frame, consumed) = try parser.parseAtEndOfStream(buffer.readableBytesSpan) else {
            return .needMoreData
        }
        buffer.moveReaderIndex(forwardBy: consumed)
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }
}

@available(*, unavailable)
extension FrameDecoder: Sendable {}
