import SwiftProtobuf

/// Splits a byte stream into frames: a 4-byte big-endian length, then that many
/// bytes of a serialized `Frame`.
///
/// This is the whole of the decoding logic, with no dependency on a channel, so
/// that ``FrameDecoder``, the fuzzer and non-NIO clients share one
/// implementation. It is a value type holding only the size limit; the caller
/// owns the bytes and advances past what ``parse(_:)`` consumed.
public struct FrameParser: Sendable, Hashable {
    /// Largest frame body, in bytes, that will be accepted. A longer length
    /// prefix fails with ``FrameError/Code/frameTooLarge`` as soon as the prefix
    /// itself has arrived.
    public var maxFrameSize: Int

    /// Creates a parser with the given limit (by default the limit in force
    /// before the hellos are exchanged).
    public init(maxFrameSize: Int = Int(WireProtocol.defaultMaxFrameSize)) {
        precondition(maxFrameSize >= 0, "a maximum frame size cannot be negative")
        self.maxFrameSize = maxFrameSize
    }

    /// Decodes the first frame in `bytes`.
    ///
    /// - Returns: the frame and the number of bytes it occupied (prefix included),
    ///   or `nil` when `bytes` holds only part of a frame that is not yet known
    ///   to be bad.
    /// - Throws: ``FrameError`` with ``FrameError/Code/frameTooLarge``,
    ///   ``FrameError/Code/malformedFrame`` or ``FrameError/Code/unknownBody``.
    public func parse(_ bytes: RawSpan) throws(FrameError) -> (frame: Pagebroker_V1_Frame, consumed: Int)? {
        var blocks: [UInt64] = []
        return try self.parse(bytes, reusingBlocks: &blocks)
    }

    /// ``parse(_:)``, with a report's blocks decoded into the storage of `blocks`: see
    /// ``decodeBody(_:reusingBlocks:)``.
    package func parse(
        _ bytes: RawSpan,
        reusingBlocks blocks: inout [UInt64]
    ) throws(FrameError) -> (frame: Pagebroker_V1_Frame, consumed: Int)? {
        guard let length = Self.announcedLength(bytes) else { return nil }
        guard length <= self.maxFrameSize else {
            throw FrameError(code: .frameTooLarge, frameLength: length, maxFrameSize: self.maxFrameSize)
        }
        let end = WireProtocol.lengthPrefixSize + length
        guard bytes.byteCount >= end else { return nil }
        let frame = try Self.decodeBody(bytes.extracting(WireProtocol.lengthPrefixSize..<end), reusingBlocks: &blocks)
        return (frame, end)
    }

    /// Decodes the first frame in `bytes` when no more bytes will ever follow
    /// them (the peer closed its side of the stream).
    ///
    /// - Returns: the frame and its size, or `nil` when `bytes` is empty.
    /// - Throws: ``FrameError/Code/truncatedFrame`` when `bytes` ends inside a
    ///   frame, and otherwise as ``parse(_:)``.
    public func parseAtEndOfStream(
        _ bytes: RawSpan
    ) throws(FrameError) -> (frame: Pagebroker_V1_Frame, consumed: Int)? {
        guard !bytes.isEmpty else { return nil }
        if let parsed = try self.parse(bytes) { return parsed }
        throw FrameError(
            code: .truncatedFrame,
            frameLength: Self.announcedLength(bytes),
            detail: "stream ended with \(bytes.byteCount) bytes of an incomplete frame"
        )
    }

    /// Decodes every frame of a complete stream, for callers that hold all of it
    /// at once (tests, the fuzzer, tools reading a capture).
    public func parseStream(_ bytes: RawSpan) throws(FrameError) -> [Pagebroker_V1_Frame] {
        var frames: [Pagebroker_V1_Frame] = []
        var offset = 0
        while let (frame, consumed) = try self.parseAtEndOfStream(bytes.extracting(offset...)) {
            frames.append(frame)
            offset += consumed
        }
        return frames
    }

    /// Decodes one frame body (the bytes after the length prefix).
    ///
    /// Unknown fields are discarded rather than kept: a newer peer's additions
    /// to a message are ignorable by design, and keeping them would let a peer
    /// make us hold arbitrary bytes per frame.
    public static func decodeBody(_ body: RawSpan) throws(FrameError) -> Pagebroker_V1_Frame {
        var blocks: [UInt64] = []
        return try self.decodeBody(body, reusingBlocks: &blocks)
    }

    /// ``decodeBody(_:)``, with a report's block list built in the storage of `blocks`, which
    /// the report takes over (a caller that hands it back after each frame decodes reports
    /// without allocating). The frame is the same as ``decodeBody(_:)``'s.
    package static func decodeBody(
        _ body: RawSpan,
        reusingBlocks blocks: inout [UInt64]
    ) throws(FrameError) -> Pagebroker_V1_Frame {
        if let report = ReportFrameCodec.decode(body, reusingBlocks: &blocks) { return report }
        return try self.decodeBodyWithSwiftProtobuf(body)
    }

    /// ``decodeBody(_:)`` without the report fast path: the reference the fast
    /// path is checked against.
    package static func decodeBodyWithSwiftProtobuf(_ body: RawSpan) throws(FrameError) -> Pagebroker_V1_Frame {
        let frame: Pagebroker_V1_Frame
        do {
            frame = try Pagebroker_V1_Frame(serializedBytes: body, options: Self.decodingOptions)
        } catch {
            throw FrameError(code: .malformedFrame, frameLength: body.byteCount, detail: "\(error)")
        }
        guard frame.body != nil else {
            throw FrameError(
                code: .unknownBody,
                frameLength: body.byteCount,
                detail: "frame has no body this protocol version knows"
            )
        }
        return frame
    }

    // MARK: The direct path

    /// A frame as the direct path decodes it: a report without a `Frame` (its blocks are in the
    /// list the caller passed), anything else as the `Frame` ``parse(_:)`` gives.
    package enum DirectFrame: Sendable, Equatable {
        /// A report frame: `Frame { report { seq, blocks } }`, its blocks in the caller's list.
        case report(seq: UInt64)
        /// Any frame that is not a report. Boxed: a `Frame` (its `oneof` one large enum) would
        /// make every report's result as large, copied with `memcpy` on each return.
        indirect case frame(Pagebroker_V1_Frame)
    }

    /// ``parse(_:)``, with a report frame yielded as its seq and its blocks in `reportBlocks`
    /// (contents replaced, storage kept), never as a `Frame`: the same frames, the same
    /// consumed counts and the same errors as ``parse(_:)``. After a frame that is not a
    /// report, what `reportBlocks` holds is unspecified.
    package func parseDirect(
        _ bytes: RawSpan,
        reportBlocks: inout [UInt64]
    ) throws(FrameError) -> (frame: DirectFrame, consumed: Int)? {
        guard let length = Self.announcedLength(bytes) else { return nil }
        guard length <= self.maxFrameSize else {
            throw FrameError(code: .frameTooLarge, frameLength: length, maxFrameSize: self.maxFrameSize)
        }
        let end = WireProtocol.lengthPrefixSize + length
        guard bytes.byteCount >= end else { return nil }
        let frame = try Self.decodeBodyDirect(
            bytes.extracting(WireProtocol.lengthPrefixSize..<end),
            reportBlocks: &reportBlocks
        )
        return (frame, end)
    }

    /// ``parseAtEndOfStream(_:)`` on the direct path (see ``parseDirect(_:reportBlocks:)``).
    package func parseDirectAtEndOfStream(
        _ bytes: RawSpan,
        reportBlocks: inout [UInt64]
    ) throws(FrameError) -> (frame: DirectFrame, consumed: Int)? {
        guard !bytes.isEmpty else { return nil }
        if let parsed = try self.parseDirect(bytes, reportBlocks: &reportBlocks) { return parsed }
        throw FrameError(
            code: .truncatedFrame,
            frameLength: Self.announcedLength(bytes),
            detail: "stream ended with \(bytes.byteCount) bytes of an incomplete frame"
        )
    }

    /// ``decodeBody(_:)`` on the direct path: a report (however it is encoded, so also one
    /// only SwiftProtobuf decodes: fields out of order, unknown fields, unpacked blocks) comes
    /// back as its seq with its blocks in `reportBlocks`; any other frame as ``decodeBody(_:)``
    /// gives it, and every error is the same.
    package static func decodeBodyDirect(
        _ body: RawSpan,
        reportBlocks: inout [UInt64]
    ) throws(FrameError) -> DirectFrame {
        if let seq = ReportFrameCodec.decodeReport(body, into: &reportBlocks) { return .report(seq: seq) }
        let frame = try self.decodeBody(body)
        // Unknown fields are discarded (``decodeBody(_:)``), so seq and blocks are the whole
        // of such a report.
        if case .report(let report)? = frame.body {
            reportBlocks = report.blocks
            return .report(seq: report.seq)
        }
        return .frame(frame)
    }

    private static let decodingOptions: BinaryDecodingOptions = {
        var options = BinaryDecodingOptions()
        options.discardUnknownFields = true
        return options
    }()

    /// The body length a complete prefix announces, or `nil` before all four
    /// bytes of it are there.
    private static func announcedLength(_ bytes: RawSpan) -> Int? {
        guard bytes.byteCount >= WireProtocol.lengthPrefixSize else { return nil }
        let length = UInt32(bigEndian: bytes.unsafeLoadUnaligned(fromByteOffset: 0, as: UInt32.self))
        return Int(length)
    }
}
