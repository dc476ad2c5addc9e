import BrokerProtocol
import NIOCore
import Testing

/// The direct path (``FrameParser/parseDirect(_:reportBlocks:)``, no `Frame` for a report)
/// against the `Frame` path (``FrameParser/parse(_:)``): for any bytes, the same report (seq and
/// blocks), the same other frame, the same bytes consumed, the same error. And a result written
/// from its fields is byte for byte the encoded `ReportResult` frame.
@Suite("Direct report path")
struct DirectReportPathTests {
    // MARK: Protobuf pieces

    static func varint(_ value: UInt64) -> [UInt8] {
        var value = value
        var bytes: [UInt8] = []
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        return bytes + [UInt8(value)]
    }

    /// A varint field.
    static func field(_ number: UInt64, varint value: UInt64) -> [UInt8] {
        varint(number << 3) + varint(value)
    }

    /// A length-delimited field.
    static func field(_ number: UInt64, bytes: [UInt8]) -> [UInt8] {
        varint(number << 3 | 2) + varint(UInt64(bytes.count)) + bytes
    }

    static func packed(_ values: [UInt64]) -> [UInt8] { values.flatMap { varint($0) } }

    /// A frame body whose `report` (field 3) is `report`.
    static func reportBody(_ report: [UInt8]) -> [UInt8] { field(3, bytes: report) }

    /// The length prefix and `body`.
    static func framedBody(_ body: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: UInt32(body.count).bigEndian) { Array($0) } + body
    }

    // MARK: Agreement

    /// A direct outcome as the frame the `Frame` path would give for it.
    static func asFrame(_ direct: FrameParser.DirectFrame, blocks: [UInt64]) -> Pagebroker_V1_Frame {
        switch direct {
        case .report(let seq):
            return .with {
                $0.report = .with {
                    $0.seq = seq
                    $0.blocks = blocks
                }
            }
        case .frame(let frame):
            if case .report = frame.body { Issue.record("a report came back as a Frame") }
            return frame
        }
    }

    struct Parsed: Equatable, CustomStringConvertible {
        var frame: Pagebroker_V1_Frame
        var consumed: Int
        var description: String { "\(self.consumed) bytes: \(self.frame)" }
    }

    /// Parses `stream` both ways (mid-stream and at its end, and its first frame's body on its
    /// own), the direct way into storage that already holds values, and expects the same.
    static func expectAgree(
        _ stream: [UInt8],
        maxFrameSize: Int = Int(WireProtocol.defaultMaxFrameSize),
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let parser = FrameParser(maxFrameSize: maxFrameSize)
        let bytes = stream.span.bytes
        var reused: [UInt64] = [7, 7, 7]
        reused.reserveCapacity(64)

        let frame = Result { () throws(FrameError) in try parser.parse(bytes).map { Parsed(frame: $0, consumed: $1) } }
        let direct = Result { () throws(FrameError) in
            try parser.parseDirect(bytes, reportBlocks: &reused).map {
                Parsed(frame: Self.asFrame($0, blocks: reused), consumed: $1)
            }
        }
        #expect(frame == direct, "stream \(Hex.encode(stream))", sourceLocation: sourceLocation)

        let frameAtEnd = Result { () throws(FrameError) in
            try parser.parseAtEndOfStream(bytes).map { Parsed(frame: $0, consumed: $1) }
        }
        let directAtEnd = Result { () throws(FrameError) in
            try parser.parseDirectAtEndOfStream(bytes, reportBlocks: &reused).map {
                Parsed(frame: Self.asFrame($0, blocks: reused), consumed: $1)
            }
        }
        #expect(frameAtEnd == directAtEnd, "stream \(Hex.encode(stream)) at its end", sourceLocation: sourceLocation)

        // The whole stream as one body.
        let body = Result { () throws(FrameError) in try FrameParser.decodeBody(bytes) }
        let directBody = Result { () throws(FrameError) in
            Self.asFrame(try FrameParser.decodeBodyDirect(bytes, reportBlocks: &reused), blocks: reused)
        }
        #expect(body == directBody, "body \(Hex.encode(stream))", sourceLocation: sourceLocation)
    }

    /// `body` framed, alone and followed by another frame, and cut short.
    static func expectAgreeFramed(_ body: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        let framed = Self.framedBody(body)
        Self.expectAgree(framed, sourceLocation: sourceLocation)
        Self.expectAgree(framed + Self.framedBody(Self.field(9, bytes: [])), sourceLocation: sourceLocation)
        Self.expectAgree(Array(framed.dropLast()), sourceLocation: sourceLocation)
        Self.expectAgree(body, sourceLocation: sourceLocation)
    }

    @Test("reports in every encoding: field order, unknown and duplicate fields, unpacked blocks")
    func reportEncodings() {
        let seq = Self.field(1, varint: 300)
        let blocks = Self.field(2, bytes: Self.packed([0, 9, 512, 9, 1 << 40, 10]))
        let bodies: [[UInt8]] = [
            Self.reportBody(seq + blocks),  // canonical
            Self.reportBody(blocks + seq),  // blocks first
            Self.reportBody(seq),  // no blocks
            Self.reportBody(blocks),  // seq 0
            Self.reportBody([]),  // empty report
            Self.reportBody(seq + Self.field(1, varint: 5) + blocks),  // duplicate seq: last wins
            Self.reportBody(seq + blocks + Self.field(2, bytes: Self.packed([7, 8]))),  // duplicate blocks: appended
            Self.reportBody(seq + Self.field(2, varint: 4) + Self.field(2, varint: 9)),  // unpacked blocks
            Self.reportBody(seq + blocks + Self.field(2, varint: 1)),  // packed then unpacked
            Self.reportBody(seq + Self.field(15, varint: 1) + blocks),  // unknown varint field
            Self.reportBody(seq + blocks + Self.field(99, bytes: [1, 2, 3])),  // unknown length-delimited
            Self.reportBody(seq + blocks) + Self.field(20, varint: 3),  // unknown field in the frame
            Self.field(20, varint: 3) + Self.reportBody(seq + blocks),  // ... before the report
            Self.reportBody(seq) + Self.reportBody(blocks),  // the report twice: merged
            Self.field(9, bytes: []) + Self.reportBody(seq + blocks),  // another body, then a report
            Self.reportBody(seq + blocks) + Self.field(9, bytes: []),  // a report, then another body
            Self.reportBody([0x88, 0x80, 0x00] + blocks),  // overlong seq tag
            Self.reportBody(Self.field(1, varint: UInt64.max) + blocks),  // the largest seq
            Self.reportBody(seq + Self.field(2, bytes: [])),  // empty packed list
        ]
        for body in bodies { Self.expectAgreeFramed(body) }
    }

    @Test("malformed reports and frames")
    func malformed() {
        let seq = Self.field(1, varint: 300)
        let blocks = Self.field(2, bytes: Self.packed([0, 9, 512, 9]))
        let report = seq + blocks
        let bodies: [[UInt8]] = [
            [0x1A],  // a report tag, no length
            [0x1A, UInt8(report.count + 1)] + report,  // length past the end
            [0x1A, UInt8(report.count - 1)] + report,  // length short of the end
            Self.reportBody([0x08]),  // seq without its value
            Self.reportBody([0x08, 0x80]),  // seq ends inside its varint
            Self.reportBody([0x08] + [UInt8](repeating: 0x80, count: 10) + [0x01]),  // seq past 10 bytes
            Self.reportBody(seq + [0x12, 0x05, 0x01]),  // packed list past the report's end
            Self.reportBody(seq + [0x12, 0x01, 0x80]),  // packed list ends inside a varint
            Self.reportBody(seq + [0x09]),  // seq as a fixed64 with no bytes
            Self.reportBody(seq + [0x0C]),  // a group end tag
            Self.reportBody(seq + [0x00, 0x00]),  // field 0
            [],  // no body
            Self.field(20, varint: 3),  // only an unknown field: no body
            [0xFF],
            [0x1A, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        ]
        for body in bodies { Self.expectAgreeFramed(body) }
        // Over the limit, announced before the body has arrived; and a partial prefix.
        Self.expectAgree(Self.framedBody(Self.reportBody(report)), maxFrameSize: 4)
        Self.expectAgree(Array(Self.framedBody(Self.reportBody(report)).prefix(3)))
    }

    @Test("frames that are not reports")
    func otherFrames() throws {
        let frames: [Pagebroker_V1_Frame] = [
            .with { $0.ping = .with { $0.nonce = 7 } },
            .with { $0.pong = .with { $0.nonce = 7 } },
            .with { $0.reuse = .with { $0.ranges = [0, 512] } },
            .with { $0.sync = .with { $0.final = true } },
            .with { $0.reportResult = .with { $0.seq = 3 } },
            .with {
                $0.reportResult = .with {
                    $0.seq = 3
                    $0.reason = .rateLimited
                    $0.retryAfterMs = 40
                    $0.message = "slow down"
                }
            },
            .with { $0.clientHello = .with { $0.protocolVersion = 1 } },
            .with { $0.goodbye = .with { $0.reason = .shuttingDown } },
            .with { $0.error = .with { $0.code = .protocolViolation } },
        ]
        for frame in frames {
            let body: [UInt8] = try frame.serializedBytes()
            Self.expectAgreeFramed(body)
        }
    }

    @Test("random reports, reordered, extended and damaged")
    func randomReports() {
        var generator = SplitMix64(seed: 0xD1EC_7)
        for _ in 0..<3_000 {
            var fields: [[UInt8]] = []
            if Bool.random(using: &generator) {
                fields.append(
                    Self.field(
                        1,
                        varint: UInt64.random(in: 0...UInt64.max, using: &generator)
                            >> UInt64.random(in: 0...63, using: &generator)
                    )
                )
            }
            for _ in 0..<Int.random(in: 0...2, using: &generator) {
                let values = (0..<Int.random(in: 0...12, using: &generator)).map { _ in
                    UInt64.random(in: 0...UInt64.max, using: &generator) >> UInt64.random(in: 0...63, using: &generator)
                }
                fields.append(Self.field(2, bytes: Self.packed(values)))
            }
            switch Int.random(in: 0..<8, using: &generator) {
            case 0: fields.append(Self.field(UInt64.random(in: 3...40, using: &generator), varint: 1))
            case 1: fields.append(Self.field(1, varint: 2))
            case 2: fields.append(Self.field(2, varint: UInt64.random(in: 0...1_000, using: &generator)))
            default: break
            }
            fields.shuffle(using: &generator)
            var body = Self.reportBody(fields.flatMap { $0 })
            switch Int.random(in: 0..<6, using: &generator) {
            case 0 where !body.isEmpty:
                body[Int.random(in: 0..<body.count, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator)
            case 1 where !body.isEmpty:
                body.removeLast(Int.random(in: 1...body.count, using: &generator))
            case 2:
                body += Self.field(UInt64.random(in: 1...12, using: &generator), bytes: [])
            default: break
            }
            Self.expectAgreeFramed(body)
        }
    }

    // MARK: Results

    @Test("a result written from its fields is the encoded ReportResult frame")
    func resultBytes() throws {
        var generator = SplitMix64(seed: 0x2E5_017)
        let reasons: [Pagebroker_V1_ReasonCode] =
            [.ok, .invalidRange, .rateLimited, .backendFailed, .shuttingDown, .sequenceReplayed]
            + [Pagebroker_V1_ReasonCode(rawValue: -1)!, Pagebroker_V1_ReasonCode(rawValue: 1_000)!]
        for _ in 0..<2_000 {
            let seq =
                UInt64.random(in: 0...UInt64.max, using: &generator) >> UInt64.random(in: 0...64, using: &generator)
            let reason = reasons.randomElement(using: &generator)!
            let retry = Bool.random(using: &generator) ? 0 : UInt32.random(in: 0...UInt32.max, using: &generator)
            let message = Int.random(in: 0..<4, using: &generator) == 0 ? "too many" : ""
            let maxFrameSize =
                Bool.random(using: &generator)
                ? Int(WireProtocol.defaultMaxFrameSize) : Int.random(in: 0...24, using: &generator)
            let frame = Pagebroker_V1_Frame.with {
                $0.reportResult = .with {
                    $0.seq = seq
                    $0.reason = reason
                    $0.retryAfterMs = retry
                    $0.message = message
                }
            }
            var expected = ByteBuffer(bytes: [0xAB])
            var written = expected
            let expectedError = Result { try FrameEncoder.write(frame, into: &expected, maxFrameSize: maxFrameSize) }
                .map { _ in true }
            let writtenError = Result {
                try FrameEncoder.writeReportResult(
                    seq: seq,
                    reason: reason,
                    retryAfterMilliseconds: retry,
                    message: message,
                    into: &written,
                    maxFrameSize: maxFrameSize
                )
            }.map { _ in true }
            #expect(expected == written, "\(frame) under \(maxFrameSize)")
            #expect(
                String(describing: expectedError) == String(describing: writtenError),
                "\(frame) under \(maxFrameSize)"
            )
        }
    }
}

/// Deterministic random numbers for the tests that draw many cases.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
