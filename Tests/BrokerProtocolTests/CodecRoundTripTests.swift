import BrokerProtocol
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
