import BrokerProtocol
import NIOCore
import NIOEmbedded
import Testing

/// The decoder and encoder inside a real (embedded) channel pipeline.
@Suite("Frame decoder and encoder handlers")
struct FrameChannelHandlerTests {
    final class Pipeline {
        let limit: FrameSizeLimit
        let channel: EmbeddedChannel

        init(maxFrameSize: Int = Int(WireProtocol.defaultMaxFrameSize)) throws {
            self.limit = FrameSizeLimit(maxFrameSize: maxFrameSize)
            self.channel = EmbeddedChannel()
            try self.channel.pipeline.syncOperations.addHandlers([
                ByteToMessageHandler(FrameDecoder(limit: self.limit)),
                MessageToByteHandler(FrameEncoder(limit: self.limit)),
            ])
        }

        func writeInbound(_ bytes: [UInt8]) throws {
            try self.channel.writeInbound(self.channel.allocator.buffer(bytes: bytes))
        }

        func readInbound() throws -> Pagebroker_V1_Frame? {
            try self.channel.readInbound(as: Pagebroker_V1_Frame.self)
        }
    }

    @Test("frames written to the channel come out as length-prefixed bytes")
    func encoderHandler() throws {
        let pipeline = try Pipeline()
        for frame in SampleFrames.all {
            try pipeline.channel.writeOutbound(frame)
            let bytes = try #require(try pipeline.channel.readOutbound(as: ByteBuffer.self))
            #expect(Array(bytes.readableBytesView) == (try framed(frame)))
        }
        #expect(try pipeline.channel.finish().isClean)
    }

    @Test("bytes arriving one at a time come out as whole frames")
    func decoderHandlerByteByByte() throws {
        let pipeline = try Pipeline()
        let stream = try SampleFrames.all.flatMap { try framed($0) }
        var received: [Pagebroker_V1_Frame] = []
        for byte in stream {
            try pipeline.writeInbound([byte])
            while let frame = try pipeline.readInbound() { received.append(frame) }
        }
        #expect(received == SampleFrames.all)
        #expect(try pipeline.channel.finish().isClean)
    }

    @Test("a too-large length is an error as soon as its 4 bytes arrive")
    func tooLargeFromPrefixOnly() throws {
        let pipeline = try Pipeline(maxFrameSize: 4096)
        let error = #expect(throws: FrameError.self) { try pipeline.writeInbound(rawFrame(length: 4097)) }
        #expect(error?.code == .frameTooLarge)
        #expect(try pipeline.readInbound() == nil)
        _ = try? pipeline.channel.finish()
    }

    @Test("the limit can be changed on a live decoder, as after the hello exchange")
    func liveLimitChange() throws {
        let pipeline = try Pipeline()
        let report = SampleFrames.all[2]
        let bytes = try framed(report)
        try pipeline.writeInbound(bytes)
        #expect(try pipeline.readInbound() == report)

        pipeline.limit.maxFrameSize = bytes.count - 5
        let error = #expect(throws: FrameError.self) { try pipeline.writeInbound(Array(bytes[..<4])) }
        #expect(error?.code == .frameTooLarge)
        _ = try? pipeline.channel.finish()
    }

    @Test("the limit also applies to frames the encoder is asked to send")
    func encoderUsesSharedLimit() throws {
        let pipeline = try Pipeline()
        pipeline.limit.maxFrameSize = 8
        let error = #expect(throws: FrameError.self) { try pipeline.channel.writeOutbound(SampleFrames.all[2]) }
        #expect(error?.code == .frameTooLarge)
        #expect(try pipeline.channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try? pipeline.channel.finish()
    }

    @Test("the peer closing inside a frame is a truncated frame")
    func truncatedAtClose() throws {
        let pipeline = try Pipeline()
        let bytes = try framed(SampleFrames.all[0])
        try pipeline.writeInbound(Array(bytes.dropLast(3)))
        #expect(try pipeline.readInbound() == nil)
        let error = #expect(throws: FrameError.self) { try pipeline.channel.finish() }
        #expect(error?.code == .truncatedFrame)
    }

    @Test("garbage and unknown bodies surface as their own errors through the pipeline")
    func badBodies() throws {
        let garbage = try Pipeline()
        let garbageError = #expect(throws: FrameError.self) {
            try garbage.writeInbound(rawFrame(length: 3, body: [0xFF, 0xFF, 0xFF]))
        }
        #expect(garbageError?.code == .malformedFrame)
        _ = try? garbage.channel.finish()

        let unknown = try Pipeline()
        let unknownError = #expect(throws: FrameError.self) {
            try unknown.writeInbound(rawFrame(length: 4, body: [0x5A, 0x02, 0x08, 0x01]))
        }
        #expect(unknownError?.code == .unknownBody)
        _ = try? unknown.channel.finish()
    }
}
