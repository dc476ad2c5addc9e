import BrokerProtocol
import Testing

/// The report fast path's decoding of the packed block list against SwiftProtobuf's, varint by
/// varint: every length from 1 to 10 bytes, overlong and over-64-bit encodings, a varint past
/// 10 bytes, a list that ends inside a varint, lists across the 8-byte words the values are
/// counted in, and storage handed back from an earlier report.
@Suite("Packed block list")
struct PackedBlocksTests {
    /// A report body whose blocks field holds exactly `packed`.
    static func body(_ packed: [UInt8], seq: UInt8 = 5) -> [UInt8] {
        precondition(packed.count < 100)
        let report: [UInt8] = [0x08, seq, 0x12, UInt8(packed.count)] + packed
        return [0x1A, UInt8(report.count)] + report
    }

    static func varint(_ value: UInt64) -> [UInt8] { DirectReportPathTests.varint(value) }

    /// Decodes `body` both ways, the fast one into storage that already holds values.
    static func expectSame(_ body: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        var reused: [UInt64] = [7, 7, 7]
        reused.reserveCapacity(64)
        let fast = Result { () throws(FrameError) in
            try FrameParser.decodeBody(body.span.bytes, reusingBlocks: &reused)
        }
        let reference = Result { () throws(FrameError) in try FrameParser.decodeBodyWithSwiftProtobuf(body.span.bytes) }
        #expect(fast == reference, "body \(Hex.encode(body))", sourceLocation: sourceLocation)
        // What the fast path claims, it decodes as SwiftProtobuf does.
        if let claimed = ReportFrameCodec.decode(body.span.bytes) {
            #expect(Result.success(claimed) == reference, "body \(Hex.encode(body))", sourceLocation: sourceLocation)
        }
    }

    @Test("each varint length, alone and between others")
    func everyLength() {
        for bits in 0...64 {
            let value: UInt64 = bits == 0 ? 0 : UInt64.max >> (64 - bits)
            Self.expectSame(Self.body(Self.varint(value)))
            Self.expectSame(Self.body([0x01] + Self.varint(value) + [0x7F]))
        }
    }

    @Test("odd encodings: overlong, past 64 bits, past 10 bytes, cut short")
    func oddEncodings() {
        let lists: [[UInt8]] = [
            [0x80, 0x00],  // overlong zero
            [0x81, 0x80, 0x80, 0x00, 0x02],  // overlong one, then two
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],  // UInt64.max
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],  // bits past 64
            [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],  // 11 bytes
            [0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],  // 11 bytes, second
            [0x01, 0x80],  // ends inside a varint
            [0x80],
            [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x88],  // ends inside, at a word's end
            [],
        ]
        for list in lists { Self.expectSame(Self.body(list)) }
    }

    @Test("random lists across word boundaries")
    func randomLists() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            var packed: [UInt8] = []
            while packed.count < Int.random(in: 0...80, using: &generator) {
                let bits = Int.random(in: 0...64, using: &generator)
                packed += Self.varint(
                    bits == 0 ? 0 : UInt64.random(in: 0...UInt64.max, using: &generator) >> (64 - bits)
                )
            }
            // Now and then a damaged list: a byte's continuation bit flipped.
            if !packed.isEmpty, Int.random(in: 0..<4, using: &generator) == 0 {
                packed[Int.random(in: 0..<packed.count, using: &generator)] ^= 0x80
            }
            Self.expectSame(Self.body(Array(packed.prefix(99))))
        }
    }
}
