import BrokerProtocol
import NIOCore

/// Where the repository is, found from this file's path, so tests can read the
/// golden vectors and run the generator script.
enum Repository {
    static let root: String = {
        var components = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        components.removeLast(3)  // Tests/BrokerProtocolTests/TestSupport.swift
        return components.joined(separator: "/")
    }()

    static let goldenDirectory = root + "/Protos/pagebroker/v1/golden"
}

enum Hex {
    /// Bytes from hex text; `#` starts a comment to the end of the line and
    /// whitespace is ignored (the format of the golden vector files).
    static func decode(_ text: String) -> [UInt8] {
        let digits = text.split(separator: "\n").flatMap { line in
            line.prefix { $0 != "#" }.filter { $0.isHexDigit }
        }
        precondition(digits.count.isMultiple(of: 2), "odd number of hex digits")
        var bytes: [UInt8] = []
        var index = digits.startIndex
        while index < digits.endIndex {
            bytes.append(UInt8(String(digits[index...index + 1]), radix: 16)!)
            index += 2
        }
        return bytes
    }

    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { byte in
            let digits = String(byte, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined()
    }
}

extension FrameParser {
    /// Parses `bytes`, which must hold exactly one frame.
    func parseSingle(_ bytes: [UInt8]) throws(FrameError) -> Pagebroker_V1_Frame? {
        guard let (frame, consumed) = try self.parse(bytes.span.bytes) else { return nil }
        precondition(consumed == bytes.count, "trailing bytes after the frame")
        return frame
    }
}

/// Serializes `frame` with its length prefix.
func framed(_ frame: Pagebroker_V1_Frame, maxFrameSize: Int = Int(WireProtocol.maximumMaxFrameSize)) throws -> [UInt8] {
    var buffer = ByteBuffer()
    try FrameEncoder.write(frame, into: &buffer, maxFrameSize: maxFrameSize)
    return Array(buffer.readableBytesView)
}

/// A length prefix for `length` followed by `body`.
func rawFrame(length: UInt32, body: [UInt8] = []) -> [UInt8] {
    withUnsafeBytes(of: length.bigEndian) { Array($0) } + body
}

/// One sample of every body the oneof can hold, with every field set to a
/// non-default value so a dropped field would show.
enum SampleFrames {
    static var all: [Pagebroker_V1_Frame] {
        var clientHello = Pagebroker_V1_ClientHello()
        clientHello.protocolVersion = WireProtocol.version
        clientHello.agentVersion = "pagebroker-agent 0.1.0"
        clientHello.pageSize = 4096
        clientHello.totalPages = 1 << 20
        clientHello.minOrder = 9
        clientHello.maxOrder = 10
        clientHello.maxFrameSize = 32 * 1024

        var serverHello = Pagebroker_V1_ServerHello()
        serverHello.protocolVersion = WireProtocol.version
        serverHello.brokerVersion = "pagebrokerd 0.1.0"
        serverHello.sessionID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        serverHello.maxFrameSize = 32 * 1024
        serverHello.maxRangesPerReport = 256
        serverHello.minReportOrder = 9
        serverHello.heartbeatIntervalMs = 10_000
        serverHello.tenantID = "acme"
        serverHello.guestID = "vm-17"

        var report = Pagebroker_V1_Report(seq: 42, blockCapacity: 32)
        for index in 0..<UInt64(32) { report.appendBlock(frame: index << 10, order: 10) }

        var result = Pagebroker_V1_ReportResult()
        result.seq = 42
        result.reason = .tenantPaused
        result.retryAfterMs = 5_000
        result.message = "tenant acme is paused"

        var reuse = Pagebroker_V1_Reuse()
        reuse.appendRange(firstFrame: 1024, count: 3)
        reuse.appendRange(firstFrame: UInt64.max - 1, count: 1)

        var sync = Pagebroker_V1_Sync()
        sync.chunk = 3
        sync.appendRange(firstFrame: 0, count: 512)
        sync.final = true

        var ping = Pagebroker_V1_Ping()
        ping.nonce = 0xDEAD_BEEF_0000_0001
        var pong = Pagebroker_V1_Pong()
        pong.nonce = 0xDEAD_BEEF_0000_0001

        var goodbye = Pagebroker_V1_Goodbye()
        goodbye.reason = .shuttingDown
        goodbye.message = "broker stopping"

        var error = Pagebroker_V1_Error()
        error.code = .protocolViolation
        error.message = "report before sync"

        let bodies: [Pagebroker_V1_Frame.OneOf_Body] = [
            .clientHello(clientHello), .serverHello(serverHello), .report(report), .reportResult(result),
            .reuse(reuse), .sync(sync), .ping(ping), .pong(pong), .goodbye(goodbye), .error(error),
        ]
        return bodies.map { body in
            var frame = Pagebroker_V1_Frame()
            frame.body = body
            return frame
        }
    }
}
