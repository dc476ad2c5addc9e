import Foundation
import Testing

/// The generated Swift is committed so that building the package needs neither
/// protoc nor a plugin. This test keeps it honest: it regenerates the code with
/// `scripts/generate-protos` and fails if the result differs from what is
/// committed. It needs protoc (Debian's protobuf-compiler, which CI installs).
@Suite("Generated code")
struct GeneratedCodeTests {
    static let protoc: String? = {
        let path = ProcessInfo.processInfo.environment["PROTOC"].map { [$0] } ?? []
        let searchPath = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":")
        let candidates = path + searchPath.map { "\($0)/protoc" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    @Test(
        "committed generated code matches what scripts/generate-protos produces",
        .enabled(
            if: protoc != nil,
            "protoc is not installed (apt-get install protobuf-compiler), so the generated code cannot be checked here"
        ),
        .timeLimit(.minutes(10))
    )
    func generatedCodeIsCurrent() throws {
        let output = FileManager.default.temporaryDirectory
            .appendingPathComponent("pagebroker-generate-protos-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Repository.root + "/scripts/generate-protos", output.path]
        process.currentDirectoryURL = URL(fileURLWithPath: Repository.root)
        let log = Pipe()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let logText = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "scripts/generate-protos failed:\n\(logText)")

        let committedDirectory = Repository.root + "/Sources/BrokerProtocol/Generated"
        let generated = try FileManager.default.contentsOfDirectory(atPath: output.path).sorted()
        let committed = try FileManager.default.contentsOfDirectory(atPath: committedDirectory).sorted()
        #expect(generated == committed, "generated files differ from the committed ones")
        #expect(!generated.isEmpty)
        for name in generated where committed.contains(name) {
            let fresh = try Data(contentsOf: output.appendingPathComponent(name))
            let current = try Data(contentsOf: URL(fileURLWithPath: "\(committedDirectory)/\(name)"))
            #expect(fresh == current, "\(name) is out of date: run scripts/generate-protos and commit the result")
        }
    }
}
