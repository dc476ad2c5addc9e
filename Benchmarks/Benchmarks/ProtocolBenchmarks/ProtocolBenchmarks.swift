import Benchmark
import BrokerProtocol
import NIOCore

/// The frame codec's cost per report, the unit of work between a guest and the
/// broker: one frame encoded on one side and decoded on the other.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .instructions, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(5),
        maxIterations: 1_000
    )

    // A full kernel-sized batch: 32 order-9 blocks (2 MiB each with 4 KiB pages)
    // spread over a 64 GiB guest, so frame numbers take the 3-byte varints a
    // real guest's do.
    let report: Pagebroker_V1_Frame = {
        var frame = Pagebroker_V1_Frame()
        frame.report = Pagebroker_V1_Report(seq: 1_000_000, blockCapacity: 32)
        for index in 0..<UInt64(32) { frame.report.appendBlock(frame: index * 7 << 9 + (1 << 20), order: 9) }
        return frame
    }()
    let maxFrameSize = Int(WireProtocol.defaultMaxFrameSize)
    let parser = FrameParser(maxFrameSize: maxFrameSize)

    Benchmark("report frame encode+decode (32 blocks)") { benchmark in
        // The outbound buffer is reused, as a channel's would be, so what is
        // measured is the codec, not ByteBuffer growth.
        var buffer = ByteBufferAllocator().buffer(capacity: 1024)
        for _ in benchmark.scaledIterations {
            buffer.clear()
            try FrameEncoder.write(report, into: &buffer, maxFrameSize: maxFrameSize)
            let decoded = try parser.parse(buffer.readableBytesSpan)
            blackHole(decoded)
        }
    }

    Benchmark("report frame encode (32 blocks)") { benchmark in
        var buffer = ByteBufferAllocator().buffer(capacity: 1024)
        for _ in benchmark.scaledIterations {
            buffer.clear()
            try FrameEncoder.write(report, into: &buffer, maxFrameSize: maxFrameSize)
            blackHole(buffer.readableBytes)
        }
    }

    Benchmark("report frame decode (32 blocks)") { benchmark in
        var buffer = ByteBufferAllocator().buffer(capacity: 1024)
        try FrameEncoder.write(report, into: &buffer, maxFrameSize: maxFrameSize)
        for _ in benchmark.scaledIterations {
            let decoded = try parser.parse(buffer.readableBytesSpan)
            blackHole(decoded)
        }
    }
}
