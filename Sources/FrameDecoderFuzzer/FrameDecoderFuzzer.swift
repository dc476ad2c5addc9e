import BrokerProtocol
import NIOCore

#if !FUZZING
import Foundation
#endif

/// libFuzzer entry point: one input is one fuzz case.
///
/// Input layout: byte 0 picks the maximum frame size, byte 1 the chunk size the
/// stream is fed in, the rest is the byte stream a peer sent. Built with
/// `-DFUZZING` libFuzzer supplies `main`; built without it (as a normal
/// `swift build` does), the `main` below replays saved inputs as a reproducer.
@_cdecl("LLVMFuzzerTestOneInput")
public func frameDecoderFuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FrameDecoderFuzzCase(UnsafeRawBufferPointer(start: data, count: size)).run()
    return 0
}

/// Decodes one input stream two ways and checks what must hold for any bytes at all.
///
/// The sanitizers catch memory errors; the checks here catch logic errors:
/// incremental decoding (as a channel sees it) must agree with decoding the
/// whole stream at once, and every decoded frame must survive re-encoding.
struct FrameDecoderFuzzCase {
    private let parser: FrameParser
    private let chunkSize: Int
    private let stream: [UInt8]

    init(_ input: UnsafeRawBufferPointer) {
        let limitByte = input.first ?? 0
        // 255 stands for the real default; otherwise small limits, so that
        // "too large" is reachable with the short inputs libFuzzer prefers.
        let limit = limitByte == 255 ? Int(WireProtocol.defaultMaxFrameSize) : Int(limitByte) * 16
        self.parser = FrameParser(maxFrameSize: limit)
        self.chunkSize = input.count > 1 ? Int(input[1] % 32) + 1 : 1
        self.stream = input.count > 2 ? Array(input[2...]) : []
    }

    func run() {
        let whole = self.decodeWhole()
        let incremental = self.decodeIncrementally()
        guard whole.frames == incremental.frames, whole.error == incremental.error else {
            fatalError("incremental decoding disagrees: \(whole) vs \(incremental)")
        }
        for frame in whole.frames {
            Self.checkReencodes(frame)
            Self.touchRanges(frame)
        }
        self.checkReportFastPathAgrees()
    }

    /// The whole stream read as one frame body must decode the same with and
    /// without the hand-written report path: same frame, or same error.
    private func checkReportFastPathAgrees() {
        let body = self.stream.span.bytes
        let fast = Result { () throws(FrameError) in try FrameParser.decodeBody(body) }
        let reference = Result { () throws(FrameError) in try FrameParser.decodeBodyWithSwiftProtobuf(body) }
        guard fast == reference else {
            fatalError("report fast path disagrees with SwiftProtobuf: \(fast) vs \(reference)")
        }
        // The broker's direct path (a report as seq and blocks, no Frame): the same report, the
        // same other frame, the same error, into storage that already holds values.
        var blocks: [UInt64] = [7, 7, 7]
        let direct = Result { () throws(FrameError) -> Pagebroker_V1_Frame in
            switch try FrameParser.decodeBodyDirect(body, reportBlocks: &blocks) {
            case .report(let seq):
                var report = Pagebroker_V1_Report()
                report.seq = seq
                report.blocks = blocks
                var frame = Pagebroker_V1_Frame()
                frame.body = .report(report)
                return frame
            case .frame(let frame):
                guard case .report? = frame.body else { return frame }
                fatalError("the direct path gave a report as a Frame")
            }
        }
        guard direct == reference else {
            fatalError("direct report path disagrees with SwiftProtobuf: \(direct) vs \(reference)")
        }
    }

    private struct Outcome: CustomStringConvertible {
        var frames: [Pagebroker_V1_Frame] = []
        var error: FrameError?

        var description: String { "\(self.frames.count) frames, error: \(String(describing: self.error))" }
    }

    private func decodeWhole() -> Outcome {
        var outcome = Outcome()
        var offset = 0
        do {
            let bytes = self.stream.span.bytes
            while let (frame, consumed) = try self.parser.parseAtEndOfStream(bytes.extracting(offset...)) {
                outcome.frames.append(frame)
                offset += consumed
            }
        } catch {
            outcome.error = error
        }
        return outcome
    }

    /// Feeds the stream in chunks, as reads from a socket would arrive, and
    /// decodes whatever is complete after each one.
    private func decodeIncrementally() -> Outcome {
        var outcome = Outcome()
        var buffer = ByteBuffer()
        var fed = 0
        do {
            while fed < self.stream.count {
                let end = min(fed + self.chunkSize, self.stream.count)
                buffer.writeBytes(self.stream[fed..<end])
                fed = end
                while let (frame, consumed) = try self.parser.parse(buffer.readableBytesSpan) {
                    outcome.frames.append(frame)
                    buffer.moveReaderIndex(forwardBy: consumed)
                }
            }
            if let (frame, _) = try self.parser.parseAtEndOfStream(buffer.readableBytesSpan) {
                // parse() would have returned it already: a complete frame never waits for EOF.
                fatalError("complete frame left undecoded until end of stream: \(frame)")
            }
        } catch {
            outcome.error = error
        }
        return outcome
    }

    private static func checkReencodes(_ frame: Pagebroker_V1_Frame) {
        var buffer = ByteBuffer()
        var reference = ByteBuffer()
        do {
            try FrameEncoder.write(frame, into: &buffer, maxFrameSize: Int(WireProtocol.maximumMaxFrameSize))
            try FrameEncoder.writeWithSwiftProtobuf(
                frame,
                into: &reference,
                maxFrameSize: Int(WireProtocol.maximumMaxFrameSize)
            )
            guard buffer == reference else {
                fatalError("report fast path encodes differently from SwiftProtobuf: \(frame)")
            }
            let parser = FrameParser(maxFrameSize: Int(WireProtocol.maximumMaxFrameSize))
            guard let (again, consumed) = try parser.parse(buffer.readableBytesSpan) else {
                fatalError("re-encoded frame does not decode completely")
            }
            guard again == frame, consumed == buffer.readableBytes else {
                fatalError("frame changed through re-encoding: \(frame) became \(again)")
            }
        } catch {
            fatalError("decoded frame fails to re-encode and decode: \(error)")
        }
    }

    /// Walks the range views and reason-code names the broker will use on
    /// untrusted input, so that a crash in them shows up here.
    private static func touchRanges(_ frame: Pagebroker_V1_Frame) {
        var checksum: UInt64 = 0
        switch frame.body {
        case .report(let report):
            if let blocks = report.blockList {
                for block in blocks { checksum &+= block.frame &+ block.order }
            } else if report.blocks.count.isMultiple(of: 2) {
                fatalError("even-length block list refused")
            }
        case .reuse(let reuse):
            for range in reuse.rangeList ?? PairList([])! { checksum &+= range.firstFrame &+ range.count }
        case .sync(let sync):
            for range in sync.rangeList ?? PairList([])! { checksum &+= range.firstFrame &+ range.count }
        case .reportResult(let result):
            checksum &+= UInt64(result.reason.stableName.utf8.count)
        case .goodbye(let goodbye):
            checksum &+= UInt64(goodbye.reason.stableName.utf8.count)
        case .error(let error):
            checksum &+= UInt64(error.code.stableName.utf8.count)
        case .clientHello, .serverHello, .ping, .pong, nil:
            break
        }
        // Keep the walk from being optimised away.
        if checksum == 0x5EED_5EED_5EED_5EED { print("") }
    }
}

#if !FUZZING
/// Without libFuzzer: runs each file named on the command line through the fuzz
/// case, so a crash input saved by libFuzzer can be replayed under a debugger.
@main
enum FrameDecoderFuzzerReproducer {
    static func main() {
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            print("usage: FrameDecoderFuzzer INPUT...  (replays libFuzzer inputs; build with -DFUZZING to fuzz)")
            return
        }
        for path in paths {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("cannot read \(path)")
                exit(1)
            }
            data.withUnsafeBytes { FrameDecoderFuzzCase($0).run() }
            print("\(path): ok")
        }
    }
}
#endif
