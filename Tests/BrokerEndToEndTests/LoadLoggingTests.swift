import Foundation
import Testing

/// `pagebroker-agent load` against a real broker: what it writes to standard error besides
/// its result. At the default level nothing per session (at 64 guests that was 128 lines
/// before the result); at `--log-level debug` each session's start and end.
@Suite(.serialized) struct LoadLoggingTests {
    static let guests = 4

    /// guest-<i>.pem and .key for `--cert-dir`: four distinct guests of the test PKI, so the
    /// broker keeps all four sessions.
    static let certDirectory: String = {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("pagebroker-load-certs-\(getpid())").path
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (index, guest) in ["t1-g2", "t1-g3", "t2-g1", "t2-g2"].enumerated() {
            for suffix in ["pem", "key"] {
                let link = "\(directory)/guest-\(index).\(suffix)"
                try? FileManager.default.removeItem(atPath: link)
                try! FileManager.default.createSymbolicLink(
                    atPath: link,
                    withDestinationPath: TestPKI.path("client-\(guest).\(suffix)")
                )
            }
        }
        return directory
    }()

    func load(port: Int, logLevel: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("pagebroker-agent"))
        process.arguments =
            [
                "load", "--broker", "127.0.0.1:\(port)", "--server-name", "localhost",
                "--ca", TestPKI.path("ca.pem"), "--cert-dir", Self.certDirectory,
                "--guests", "\(Self.guests)", "--duration", "500ms",
                "--json",
            ] + logLevel
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Standard error is small here; read it after standard output has ended.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (
            process.terminationStatus, String(decoding: outData, as: UTF8.self),
            String(decoding: errData, as: UTF8.self)
        )
    }

    static func count(_ text: String, _ needle: String) -> Int {
        text.components(separatedBy: "\n").filter { $0.contains(needle) }.count
    }

    @Test func perSessionLinesOnlyAtDebug() throws {
        let broker = try BrokerProcess()
        defer { _ = broker.terminate() }

        let quiet = try self.load(port: broker.port, logLevel: [])
        #expect(quiet.status == 0, "\(quiet.stderr)")
        #expect(quiet.stdout.contains("\"reports\""), "no result: \(quiet.stdout)")
        #expect(Self.count(quiet.stderr, "session established") == 0, "\(quiet.stderr)")
        #expect(Self.count(quiet.stderr, "session ended") == 0, "\(quiet.stderr)")

        let debug = try self.load(port: broker.port, logLevel: ["--log-level", "debug"])
        #expect(debug.status == 0, "\(debug.stderr)")
        #expect(Self.count(debug.stderr, "session established") == Self.guests, "\(debug.stderr)")
        #expect(Self.count(debug.stderr, "session ended") == Self.guests, "\(debug.stderr)")
    }
}
