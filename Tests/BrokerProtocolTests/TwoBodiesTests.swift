import BrokerProtocol
import Testing

/// A frame carrying two `Frame.body` fields (docs/protocol.md, "Framing"): the last one on the
/// wire is the body, and the hand-written report decoder agrees with SwiftProtobuf on it.
@Suite("Two bodies in one frame")
struct TwoBodiesTests {
    /// `ping { nonce: 1 }`.
    static let ping: [UInt8] = [0x3A, 0x02, 0x08, 0x01]
    /// `report { seq: 7, blocks: [0, 9] }`.
    static let report: [UInt8] = [0x1A, 0x06, 0x08, 0x07, 0x12, 0x02, 0x00, 0x09]

    static func decodeBothWays(_ body: [UInt8]) throws -> Pagebroker_V1_Frame {
        let fast = try FrameParser.decodeBody(body.span.bytes)
        let reference = try FrameParser.decodeBodyWithSwiftProtobuf(body.span.bytes)
        #expect(fast == reference, "the report fast path and SwiftProtobuf disagree")
        return fast
    }

    @Test("a ping then a report is a report")
    func pingThenReport() throws {
        let frame = try Self.decodeBothWays(Self.ping + Self.report)
        guard case .report(let report) = frame.body else {
            Issue.record("expected the report, got \(String(describing: frame.body))")
            return
        }
        #expect(report.seq == 7 && report.blocks == [0, 9])
    }

    @Test("a report then a ping is a ping: the fast path does not claim it")
    func reportThenPing() throws {
        let frame = try Self.decodeBothWays(Self.report + Self.ping)
        guard case .ping(let ping) = frame.body else {
            Issue.record("expected the ping, got \(String(describing: frame.body))")
            return
        }
        #expect(ping.nonce == 1)
    }

    @Test("a result then a report is a report")
    func resultThenReport() throws {
        // report_result { seq: 3, reason: OK }, then the report.
        let result: [UInt8] = [0x22, 0x04, 0x08, 0x03, 0x10, 0x01]
        let frame = try Self.decodeBothWays(result + Self.report)
        guard case .report = frame.body else {
            Issue.record("expected the report, got \(String(describing: frame.body))")
            return
        }
    }
}
