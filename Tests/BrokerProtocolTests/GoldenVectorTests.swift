import BrokerProtocol
import Foundation
import Testing

/// The golden vectors in `Protos/pagebroker/v1/golden` pin the wire format:
/// each file's bytes were worked out by hand from the protobuf encoding rules,
/// not produced by this code, so a change to the schema, the generator or the
/// framing that alters the bytes fails here.
@Suite("Golden byte vectors")
struct GoldenVectorTests {
    static var vectors: [(name: String, frame: Pagebroker_V1_Frame)] {
        var ping = Pagebroker_V1_Frame()
        ping.ping.nonce = 1

        var report = Pagebroker_V1_Frame()
        report.report = Pagebroker_V1_Report(seq: 7)
        report.report.appendBlock(frame: 512, order: 9)
        report.report.appendBlock(frame: 1024, order: 10)

        var result = Pagebroker_V1_Frame()
        result.reportResult.seq = 7
        result.reportResult.reason = .rateLimited
        result.reportResult.retryAfterMs = 250
        result.reportResult.message = "slow"

        var hello = Pagebroker_V1_Frame()
        hello.clientHello.protocolVersion = 1
        hello.clientHello.agentVersion = "a"
        hello.clientHello.pageSize = 4096
        hello.clientHello.totalPages = 262_144
        hello.clientHello.minOrder = 9
        hello.clientHello.maxOrder = 10

        var sync = Pagebroker_V1_Frame()
        sync.sync.appendRange(firstFrame: 0, count: 512)
        sync.sync.final = true

        var error = Pagebroker_V1_Frame()
        error.error.code = .frameTooLarge

        return [
            ("ping", ping), ("report", report), ("report_result", result),
            ("client_hello", hello), ("sync", sync), ("error", error),
        ]
    }

    static func golden(_ name: String) throws -> [UInt8] {
        let text = try String(contentsOfFile: "\(Repository.goldenDirectory)/\(name).hex", encoding: .utf8)
        return Hex.decode(text)
    }

    @Test("encoding produces the golden bytes", arguments: vectors.map(\.name))
    func encodes(name: String) throws {
        let frame = try #require(Self.vectors.first { $0.name == name }).frame
        #expect(Hex.encode(try framed(frame)) == Hex.encode(try Self.golden(name)))
    }

    @Test("decoding the golden bytes gives the frame", arguments: vectors.map(\.name))
    func decodes(name: String) throws {
        let frame = try #require(Self.vectors.first { $0.name == name }).frame
        #expect(try FrameParser().parseSingle(try Self.golden(name)) == frame)
    }

    @Test("every golden file has a vector")
    func everyFileIsChecked() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Repository.goldenDirectory)
            .filter { $0.hasSuffix(".hex") }
            .map { String($0.dropLast(4)) }
        #expect(Set(files) == Set(Self.vectors.map(\.name)))
    }
}
