import NIOCore
import SwiftProtobuf

/// The protocol's framing — a 4-byte big-endian length, then one serialized
/// message — for any protobuf message type. The admin socket speaks it with
/// `AdminRequest` and `AdminResponse`; the session protocol's ``FrameParser``
/// adds the `Frame`-specific body check on top of the same layout.
///
/// Failures are ``FrameError``s with the same codes as the session's framing.
public enum LengthPrefixedMessages<Message: SwiftProtobuf.Message> {
    /// Decodes the first message in `bytes`.
    ///
    /// - Returns: the message and the bytes it occupied (prefix included), or
    ///   `nil` when `bytes` holds only part of a message not yet known to be bad.
    /// - Throws: ``FrameError/Code/frameTooLarge`` as soon as a prefix announces
    ///   more than `maxMessageSize` bytes, ``FrameError/Code/malformedFrame`` when
    ///   the body is not a valid `Message`.
    public static func parse(
        _ bytes: RawSpan,
        maxMessageSize: Int
    ) throws(FrameError) -> (message: Message, consumed: Int)? {
        guard bytes.byteCount >= WireProtocol.lengthPrefixSize else { return nil }
        let length = Int(UInt32(bigEndian: bytes.unsafeLoadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        guard length <= maxMessageSize else {
            throw FrameError(code: .frameTooLarge, frameLength: length, maxFrameSize: maxMessageSize)
        }
        let end = WireProtocol.lengthPrefixSize + length
        guard bytes.byteCount >= end else { return nil }
        do {
            let message = try Message(
                serializedBytes: bytes.extracting(WireProtocol.lengthPrefixSize..<end),
                options: Self.decodingOptions
            )
            return (message, end)
        } catch {
            throw FrameError(code: .malformedFrame, frameLength: length, detail: "\(error)")
        }
    }

    /// Appends `message`, length prefix first, to `buffer`.
    ///
    /// - Throws: ``FrameError/Code/frameTooLarge`` if the serialized message is
    ///   longer than `maxMessageSize`; `buffer` is then unchanged.
    public static func write(_ message: Message, into buffer: inout ByteBuffer, maxMessageSize: Int) throws {
        let body: [UInt8] = try message.serializedBytes()
        guard body.count <= maxMessageSize else {
            throw FrameError(code: .frameTooLarge, frameLength: body.count, maxFrameSize: maxMessageSize)
        }
        buffer.reserveCapacity(minimumWritableBytes: WireProtocol.lengthPrefixSize + body.count)
        buffer.writeInteger(UInt32(body.count), endianness: .big)
        buffer.writeBytes(body)
    }

    // As for frames: a newer peer's added fields are ignorable by design, and
    // keeping them would let a peer make us hold arbitrary bytes.
    private static var decodingOptions: BinaryDecodingOptions {
        var options = BinaryDecodingOptions()
        options.discardUnknownFields = true
        return options
    }
}

/// Turns inbound bytes into `Message`s. Wrap it in a `ByteToMessageHandler`;
/// errors are ``FrameError``s fired through `errorCaught`.
public struct LengthPrefixedMessageDecoder<Message: SwiftProtobuf.Message>: ByteToMessageDecoder {
    public typealias InboundOut = Message

    /// Largest message body accepted, length prefix excluded.
    public let maxMessageSize: Int

    public init(maxMessageSize: Int) {
        precondition(maxMessageSize >= 0, "a maximum message size cannot be negative")
        self.maxMessageSize = maxMessageSize
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard
            let (message, consumed) = try LengthPrefixedMessages<Message>.parse(
                buffer.readableBytesSpan,
                maxMessageSize: self.maxMessageSize
            )
        else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: consumed)
        context.fireChannelRead(Self.wrapInboundOut(message))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        let state = try self.decode(context: context, buffer: &buffer)
        // At EOF, bytes that do not complete a message never will.
        if seenEOF, state == .needMoreData, buffer.readableBytes > 0 {
            throw FrameError(
                code: .truncatedFrame,
                detail: "stream ended with \(buffer.readableBytes) bytes of an incomplete message"
            )
        }
        return state
    }
}

@available(*, unavailable)
extension LengthPrefixedMessageDecoder: Sendable {}

/// Writes outbound `Message`s length-prefixed. Wrap it in a `MessageToByteHandler`;
/// a message over the limit fails its write instead of being sent.
public struct LengthPrefixedMessageEncoder<Message: SwiftProtobuf.Message>: MessageToByteEncoder {
    public typealias OutboundIn = Message

    /// Largest message body sent, length prefix excluded.
    public let maxMessageSize: Int

    public init(maxMessageSize: Int) {
        precondition(maxMessageSize >= 0, "a maximum message size cannot be negative")
        self.maxMessageSize = maxMessageSize
    }

    public func encode(data: Message, out: inout ByteBuffer) throws {
        try LengthPrefixedMessages<Message>.write(data, into: &out, maxMessageSize: self.maxMessageSize)
    }
}

@available(*, unavailable)
extension LengthPrefixedMessageEncoder: Sendable {}
