import BrokerProtocol
import Testing

@Suite("Frame parser errors")
struct FrameParserTests {
    let ping: [UInt8] = [0x00, 0x00, 0x00, 0x04, 0x3A, 0x02, 0x08, 0x01]

    @Test("a partial frame waits for more bytes, at every cut point")
    func partialFrameWaits() throws {
        for cut in 0..<self.ping.count {
            #expect(try FrameParser().parse(Array(self.ping[..<cut]).span.bytes) == nil)
        }
    }

    @Test("a stream ending inside the length prefix is a truncated frame")
    func truncatedInPrefix() {
        let error = #expect(throws: FrameError.self) {
            try FrameParser().parseAtEndOfStream(Array(self.ping[..<3]).span.bytes)
        }
        #expect(error?.code == .truncatedFrame)
        #expect(error?.frameLength == nil)
    }

    @Test("a stream ending inside the body is a truncated frame")
    func truncatedInBody() {
        let error = #expect(throws: FrameError.self) {
            try FrameParser().parseAtEndOfStream(Array(self.ping.dropLast()).span.bytes)
        }
        #expect(error?.code == .truncatedFrame)
        #expect(error?.frameLength == 4)
        #expect(error?.reasonCode == nil, "nobody is left to send an error to")
    }

    @Test("an empty stream at its end is not an error")
    func emptyStreamEnds() throws {
        #expect(try FrameParser().parseAtEndOfStream([UInt8]().span.bytes) == nil)
    }

    @Test("a length over the limit is refused from the 4 prefix bytes alone")
    func tooLargeBeforeBody() {
        // Only the prefix: no body byte has arrived, and none needs to.
        let prefix = rawFrame(length: 1025)
        let error = #expect(throws: FrameError.self) {
            try FrameParser(maxFrameSize: 1024).parse(prefix.span.bytes)
        }
        #expect(error?.code == .frameTooLarge)
        #expect(error?.frameLength == 1025)
        #expect(error?.maxFrameSize == 1024)
        #expect(error?.reasonCode == .frameTooLarge)
    }

    @Test("the largest length prefix possible is refused without allocating for it")
    func hugeLength() {
        let error = #expect(throws: FrameError.self) {
            try FrameParser().parse(rawFrame(length: .max).span.bytes)
        }
        #expect(error?.code == .frameTooLarge)
        #expect(error?.frameLength == Int(UInt32.max))
    }

    @Test("a frame exactly at the limit is accepted")
    func exactlyAtLimit() throws {
        #expect(try FrameParser(maxFrameSize: 4).parseSingle(self.ping)?.ping.nonce == 1)
        #expect(throws: FrameError.self) { try FrameParser(maxFrameSize: 3).parseSingle(self.ping) }
    }

    @Test("bytes that are not a protobuf Frame are a malformed frame")
    func garbage() {
        // 0xFF... is a varint that never ends: not a valid field tag.
        let body: [UInt8] = Array(repeating: 0xFF, count: 11)
        let error = #expect(throws: FrameError.self) {
            try FrameParser().parseSingle(rawFrame(length: UInt32(body.count), body: body))
        }
        #expect(error?.code == .malformedFrame)
        #expect(error?.reasonCode == .protocolViolation)
    }

    @Test("a body field whose declared length runs past the frame is malformed")
    func nestedLengthOverrun() {
        // Field 3 (report) claims 100 bytes; the frame has 2.
        let body: [UInt8] = [0x1A, 0x64, 0x08, 0x01]
        let error = #expect(throws: FrameError.self) {
            try FrameParser().parseSingle(rawFrame(length: UInt32(body.count), body: body))
        }
        #expect(error?.code == .malformedFrame)
    }

    @Test("a frame carrying only a field number this version does not know has an unknown body")
    func unknownOneofField() {
        // Field 11, length-delimited, 2 bytes: a body type from some future version.
        let body: [UInt8] = [0x5A, 0x02, 0x08, 0x01]
        let error = #expect(throws: FrameError.self) {
            try FrameParser().parseSingle(rawFrame(length: UInt32(body.count), body: body))
        }
        #expect(error?.code == .unknownBody)
        #expect(error?.reasonCode == .protocolViolation)
    }

    @Test("an empty frame has no body")
    func emptyFrame() {
        let error = #expect(throws: FrameError.self) { try FrameParser().parseSingle(rawFrame(length: 0)) }
        #expect(error?.code == .unknownBody)
    }

    @Test("unknown fields beside a known body are ignored, as proto3 allows")
    func unknownFieldBesideBody() throws {
        // ping { nonce: 1 } followed by field 15, varint 5.
        let body: [UInt8] = [0x3A, 0x02, 0x08, 0x01, 0x78, 0x05]
        let frame = try FrameParser().parseSingle(rawFrame(length: UInt32(body.count), body: body))
        #expect(frame?.ping.nonce == 1)
        #expect(frame?.unknownFields.data.isEmpty == true, "unknown bytes are not retained")
    }

    @Test("the four error codes are distinct and have stable descriptions")
    func codesAreDistinct() {
        let codes: [FrameError.Code] = [.truncatedFrame, .frameTooLarge, .malformedFrame, .unknownBody]
        #expect(Set(codes).count == 4)
        #expect(codes.map(\.description) == ["truncated_frame", "frame_too_large", "malformed_frame", "unknown_body"])
    }
}
