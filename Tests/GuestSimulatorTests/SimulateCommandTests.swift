import Foundation
import Testing

/// `pagebroker-agent simulate` as a user runs it: a real process.
@Suite struct SimulateCommandTests {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// The built `pagebroker-agent`, next to this test bundle in the build directory.
    static var agentPath: String {
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // The test binary lives inside `<name>.xctest` on some layouts.
        while directory.path != "/"
            && !FileManager.default.fileExists(atPath: directory.appendingPathComponent("pagebroker-agent").path)
        {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("pagebroker-agent").path
    }

    func agent(_ arguments: [String]) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.agentPath)
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes to the end before waiting, so a full pipe cannot stall the child.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus,
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self)
        )
    }

    @Test func jsonHasTheDocumentedKeys() throws {
        let output = try self.agent(["simulate", "--memory", "256MiB", "--duration", "20s", "--json"])
        #expect(output.status == 0)
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]
        )
        for key in [
            "virtual_seconds", "total_bytes", "free_bytes", "discarded_bytes", "reported_bytes_total", "reports",
            "reports_failed", "isolated_pages", "invariants", "time_to_discard_99pct_seconds", "timeline",
        ] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect(object["invariants"] as? String == "ok")
        #expect(object["isolated_pages"] as? Int == 0)
        #expect(object["total_bytes"] as? Int == 256 << 20)
        let timeline = try #require(object["timeline"] as? [[String: Any]])
        #expect(timeline.first?["t"] != nil && timeline.first?["discarded_bytes"] != nil)
    }

    @Test func neverReachedIsAnExplicitNull() throws {
        let output = try self.agent([
            "simulate", "--memory", "256MiB", "--duration", "5s", "--device", "fail", "--json",
        ])
        #expect(output.status == 0)
        #expect(output.stdout.contains("\"time_to_discard_99pct_seconds\":null"))
    }

    @Test func sameSeedGivesTheSameOutput() throws {
        let arguments = [
            "simulate", "--memory", "128MiB", "--workload", "churn", "--duration", "15s", "--seed", "42", "--json",
        ]
        let first = try self.agent(arguments)
        let second = try self.agent(arguments)
        #expect(first.status == 0)
        #expect(first.stdout == second.stdout)
    }

    @Test func summaryIsReadable() throws {
        let output = try self.agent(["simulate", "--memory", "128MiB", "--duration", "10s"])
        #expect(output.status == 0)
        #expect(output.stdout.contains("discarded now"))
        #expect(output.stdout.contains("invariants"))
    }

    @Test(arguments: [
        (["simulate", "--memory", "4XB"], "--memory"),
        (["simulate", "--workload", "lazy"], "workload"),
        (["simulate", "--budget", "maybe"], "--budget"),
        (["simulate", "--device", "flaky=7"], "flaky"),
        (["simulate", "--capacity", "0"], "--capacity"),
        (["simulate", "--duration", "soon"], "--duration"),
        (["simulate", "--no-such-flag"], "no-such-flag"),
    ])
    func badFlagsExitTwoWithAClearMessage(arguments: [String], mentions: String) throws {
        let output = try self.agent(arguments)
        #expect(output.status == 2)
        #expect(output.stderr.contains(mentions))
        #expect(output.stdout.isEmpty)
    }
}
