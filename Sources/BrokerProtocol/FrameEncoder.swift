import NIOCore

/// Writes outbound `Frame`s as a 4-byte big-endian length and the serialized
/// message. Wrap it in a `MessageToByteHandler`.
///
/// A frame larger than the limit fails its write with
/// ``FrameError/Code/frameTooLarge`` instead of being sent: the peer would
/// refuse it and close the session.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Pagebroker_V1_Frame

    /// The limit in force, shared with the connection's ``FrameDecoder``.
    public let limit: FrameSizeLimit

    /// Creates an encoder checking frames against `limit`.
    public init(limit: FrameSizeLimit) {
        self.limit = limit
    }

    public func encode(data: Pagebroker_V1_Frame, out: inout ByteBuffer) throws {
        try Self.write(data, into: &out, maxFrameSize: self.limit.maxFrameSize)
    }

    /// Appends `frame`, length prefix first, to `buffer`: the framing without a
    /// channel, for the benchmark, the fuzzer and non-NIO clients.
    ///
    /// - Throws: ``FrameError/Code/frameTooLarge`` if the serialized frame is
    ///   longer than `maxFrameSize`; `buffer` is then unchanged.
    public static func write(_ frame: Pagebroker_V1_Frame, into buffer: inout ByteBuffer, maxFrameSize: Int) throws {
        if try ReportFrameCodec.write(frame, into: &buffer, maxFrameSize: maxFrameSize) { return }
        try self.writeWithSwiftProtobuf(frame, into: &buffer, maxFrameSize: maxFrameSize)
    }

    /// Appends the `ReportResult` frame with these fields, as ``write(_:into:maxFrameSize:)``
    /// writes `Frame { report_result { seq, reason, retry_after_ms, message } }`, byte for
    /// byte, without building that frame unless it has a message (or a negative reason).
    ///
    /// - Throws: as ``write(_:into:maxFrameSize:)``.
    package static func writeReportResult(
        seq: UInt64,
        reason: Pagebroker_V1_ReasonCode,
        retryAfterMilliseconds: UInt32,
        message: String,
        into buffer: inout ByteBuffer,
        maxFrameSize: Int
    ) throws {
        if message.isEmpty,
            try ReportFrameCodec.writeResult(
                seq: seq,
                reason: reason,
                retryAfterMilliseconds: retryAfterMilliseconds,
                into: &buffer,
                maxFrameSize: maxFrameSize
            )
        {
            return
        }
        var result = Pagebroker_V1_ReportResult()
        result.seq = seq
        result.reason = reason
        result.retryAfterMs = retryAfterMilliseconds
        result.message = message
        var frame = Pagebroker_V1_Frame()
        frame.body = .reportResult(result)
        try self.writeWithSwiftProtobuf(frame, into: &buffer, maxFrameSize: maxFrameSize)
    }

    /// ``write(_:into:maxFrameSize:)`` without the report fast path: the
    /// reference the fast path is checked against.
    package static func writeWithSwiftProtobuf(
        _ frame: Pagebroker_V1_Frame,
        into buffer: inout ByteBuffer,
        maxFrameSize: Int
    ) throws {
        // One allocation: SwiftProtobuf sizes the message, then serializes into an
        // exactly sized array that we copy behind the prefix.
        let body: [UInt8] = try frame.serializedBytes()
        guard body.count <= maxFrameSize else {
            throw FrameError(code: .frameTooLarge, frameLength: body.count, maxFrameSize: maxFrameSize)
        }
        buffer.reserveCapacity(minimumWritableBytes: WireProtocol.lengthPrefixSize + body.count)
        buffer.writeInteger(UInt32(body.count), endianness: .big)
        buffer.writeBytes(body)
    }
}

@available(*, unavailable)
extension FrameEncoder: Sendable {}
