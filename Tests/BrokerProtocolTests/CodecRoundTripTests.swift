import BrokerProtocol
import NIOCore
import Testing

@Suite("Codec round trip")
struct CodecRoundTripTests {
    @Test("every message type survives encode and decode", arguments: SampleFrames.all)
    func roundTrip(frame: Pagebroker_V1_Frame) throws {
        let bytes = try framed(frame)
        let decoded = try FrameParser().parseSingle(bytes)
        #expect(decoded == frame)
    }

    @Test("the samples cover every body of the oneof")
    func samplesCoverEveryBody() {
        // If a body is added to the schema, this fails until it has a sample.
        let names = Set(SampleFrames.all.map { "\($0.body!)".prefix { $0 != "(" } })
        #expect(names.count == 10)
    }

    @Test("the length prefix is big-endian and excludes itself")
    func lengthPrefix() throws {
        var frame = Pagebroker_V1_Frame()
        frame.error.message = String(repeating: "x", count: 300)
        let bytes = try framed(frame)
        // 300 message bytes + 3 bytes of error tag and length + 3 of frame tag and length.
        #expect(bytes[0..<4] == [0x00, 0x00, 0x01, 0x32])
        #expect(bytes.count == 4 + 306)
    }

    @Test("several frames in one buffer decode in order")
    func consecutiveFrames() throws {
        let frames = SampleFrames.all
        let stream = try frames.flatMap { try framed($0) }
        #expect(try FrameParser().parseStream(stream.span.bytes) == frames)
    }

    @Test("the encoder refuses a frame over its limit instead of sending it")
    func encoderLimit() throws {
        let report = SampleFrames.all[2]
        let size = try framed(report).count - 4
        #expect(throws: FrameError(code: .frameTooLarge, frameLength: size, maxFrameSize: size - 1)) {
            try framed(report, maxFrameSize: size - 1)
        }
        #expect(try framed(report, maxFrameSize: size).count == size + 4)
    }
}

/// The hand-written report path must be indistinguishable from SwiftProtobuf's.
@Suite("Report fast path")
struct ReportFastPathTests {
    static func reports() -> [Pagebroker_V1_Frame] {
        var generator = SystemRandomNumberGenerator()
        var frames: [Pagebroker_V1_Frame] = []
        // Edge values for every varint length, then random mixtures.
        let edges: [UInt64] = [0, 1, 127, 128, 16_383, 16_384, 1 << 35, UInt64.max >> 1, UInt64.max]
        for seq in edges {
            var frame = Pagebroker_V1_Frame()
            frame.report = Pagebroker_V1_Report(seq: seq)
            for value in edges { frame.report.blocks.append(value) }
            frames.append(frame)
        }
        var empty = Pagebroker_V1_Frame()
        empty.report = Pagebroker_V1_Report()
        frames.append(empty)
        for _ in 0..<200 {
            var frame = Pagebroker_V1_Frame()
            frame.report = Pagebroker_V1_Report(seq: UInt64.random(in: 0...UInt64.max, using: &generator))
            for _ in 0..<Int.random(in: 0...64, using: &generator) {
                let bits = UInt64.random(in: 0...64, using: &generator)
                frame.report.blocks.append(UInt64.random(in: 0...UInt64.max, using: &generator) >> (64 - bits))
            }
            frames.append(frame)
        }
        return frames
    }

    @Test("report frames encode to SwiftProtobuf's exact bytes and decode back")
    func matchesSwiftProtobuf() throws {
        for frame in Self.reports() {
            var fast = ByteBuffer()
            var reference = ByteBuffer()
            try FrameEncoder.write(frame, into: &fast, maxFrameSize: 1 << 20)
            try FrameEncoder.writeWithSwiftProtobuf(frame, into: &reference, maxFrameSize: 1 << 20)
            #expect(fast == reference)
            let body = Array(fast.readableBytesView.dropFirst(4))
            #expect(try FrameParser.decodeBody(body.span.bytes) == frame)
            #expect(try FrameParser.decodeBodyWithSwiftProtobuf(body.span.bytes) == frame)
        }
    }

    @Test("the fast encoder enforces the limit like the generic one")
    func fastPathLimit() throws {
        let frame = Self.reports()[0]
        let size = try framed(frame).count - 4
        var buffer = ByteBuffer()
        let error = #expect(throws: FrameError.self) {
            try FrameEncoder.write(frame, into: &buffer, maxFrameSize: size - 1)
        }
        #expect(error == FrameError(code: .frameTooLarge, frameLength: size, maxFrameSize: size - 1))
        #expect(buffer.readableBytes == 0)
    }

    @Test("odd report encodings go to SwiftProtobuf and mean the same")
    func unusualEncodingsAgree() throws {
        let bodies: [[UInt8]] = [
            [0x1A, 0x04, 0x12, 0x00, 0x08, 0x05],  // fields out of order
            [0x1A, 0x06, 0x08, 0x01, 0x08, 0x02, 0x12, 0x00],  // seq twice: last wins
            [0x1A, 0x06, 0x12, 0x01, 0x01, 0x12, 0x01, 0x02],  // blocks in two packed runs
            [0x1A, 0x02, 0x10, 0x07],  // blocks unpacked
            [0x1A, 0x03, 0x88, 0x00, 0x01],  // overlong tag for seq
            [0x1A, 0x03, 0x08, 0x81, 0x00],  // overlong varint value
            [0x1A, 0x02, 0x08, 0x01, 0x78, 0x01],  // unknown Frame field after the report
            [0x1A, 0x04, 0x08, 0x01, 0x78, 0x01],  // unknown Report field
            [0x1A, 0x00, 0x1A, 0x02, 0x08, 0x09],  // report twice: merged
        ]
        for body in bodies {
            let fast = Result { () throws(FrameError) in try FrameParser.decodeBody(body.span.bytes) }
            let reference = Result { () throws(FrameError) in
                try FrameParser.decodeBodyWithSwiftProtobuf(body.span.bytes)
            }
            #expect(fast == reference, "body \(Hex.encode(body))")
        }
    }
}

@Suite("Report result fast path")
struct ReportResultFastPathTests {
    static func results() -> [Pagebroker_V1_Frame] {
        var frames: [Pagebroker_V1_Frame] = []
        let seqs: [UInt64] = [0, 1, 127, 128, 1 << 35, UInt64.max]
        let retries: [UInt32] = [0, 1, 300, UInt32.max]
        for seq in seqs {
            for reason in Pagebroker_V1_ReasonCode.allCases {
                for retry in retries {
                    var frame = Pagebroker_V1_Frame()
                    frame.reportResult = .with {
                        $0.seq = seq
                        $0.reason = reason
                        $0.retryAfterMs = retry
                    }
                    frames.append(frame)
                }
            }
        }
        return frames
    }

    @Test("results without a message encode to SwiftProtobuf's exact bytes and decode back")
    func matchesSwiftProtobuf() throws {
        for frame in Self.results() {
            var fast = ByteBuffer()
            var reference = ByteBuffer()
            #expect(try ReportFrameCodec.write(frame, into: &fast, maxFrameSize: 1 << 20))
            try FrameEncoder.writeWithSwiftProtobuf(frame, into: &reference, maxFrameSize: 1 << 20)
            #expect(fast == reference)
            let body = Array(fast.readableBytesView.dropFirst(4))
            #expect(ReportFrameCodec.decode(body.span.bytes) == frame)
            #expect(try FrameParser.decodeBodyWithSwiftProtobuf(body.span.bytes) == frame)
        }
    }

    @Test("a result with a message goes through SwiftProtobuf")
    func messageTakesTheGenericPath() throws {
        var frame = Pagebroker_V1_Frame()
        frame.reportResult = .with {
            $0.seq = 9
            $0.reason = .notAligned
            $0.message = "block 3 is not aligned to order 9"
        }
        var buffer = ByteBuffer()
        #expect(try !ReportFrameCodec.write(frame, into: &buffer, maxFrameSize: 1 << 20))
        #expect(buffer.readableBytes == 0)
        let encoded = try framed(frame)
        #expect(ReportFrameCodec.decode(Array(encoded.dropFirst(4)).span.bytes) == nil)
        #expect(try FrameParser.decodeBody(Array(encoded.dropFirst(4)).span.bytes) == frame)
    }

    @Test("odd result encodings go to SwiftProtobuf or mean the same")
    func unusualEncodingsAgree() throws {
        let bodies: [[UInt8]] = [
            [0x22, 0x04, 0x10, 0x01, 0x08, 0x05],  // fields out of order
            [0x22, 0x04, 0x08, 0x01, 0x08, 0x02],  // seq twice: last wins
            [0x22, 0x02, 0x10, 0x63],  // a reason this version does not know
            [0x22, 0x0B, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],  // negative reason
            [0x22, 0x06, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],  // retry past 32 bits: truncated
            [0x22, 0x03, 0x88, 0x00, 0x01],  // overlong tag for seq
            [0x22, 0x02, 0x08, 0x01, 0x78, 0x01],  // unknown Frame field after the result
            [0x22, 0x04, 0x08, 0x01, 0x78, 0x01],  // unknown ReportResult field
            [0x22, 0x00, 0x22, 0x02, 0x08, 0x09],  // result twice: merged
            [0x22, 0x03, 0x08, 0x81, 0x00],  // overlong varint value
        ]
        for body in bodies {
            let fast = Result { () throws(FrameError) in try FrameParser.decodeBody(body.span.bytes) }
            let reference = Result { () throws(FrameError) in
                try FrameParser.decodeBodyWithSwiftProtobuf(body.span.bytes)
            }
            #expect(fast == reference, "body \(Hex.encode(body))")
        }
    }
}
