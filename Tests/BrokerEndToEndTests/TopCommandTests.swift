import Foundation
import Testing

/// `pagebrokerctl top` against a real broker with a real guest reporting to it.
@Suite(.serialized) struct TopCommandTests {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String

        /// Each line of standard output as a JSON object.
        func frames() throws -> [[String: Any]] {
            try self.stdout.split(separator: "\n").map {
                try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
            }
        }
    }

    func ctl(_ arguments: [String]) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("pagebrokerctl"))
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus,
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self)
        )
    }

    static func tenant(_ frame: [String: Any], _ name: String) -> [String: Any]? {
        (frame["tenants"] as? [[String: Any]])?.first { $0["tenant"] as? String == name }
    }

    @Test func topJSONRatesFollowTheBrokersCounters() async throws {
        let broker = try BrokerProcess()
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: builtProduct("pagebroker-agent"))
        agent.arguments = [
            "run", "--broker", "127.0.0.1:\(broker.port)", "--server-name", "localhost",
            "--ca", TestPKI.path("ca.pem"), "--cert", TestPKI.path("client-t1-g2.pem"),
            "--key", TestPKI.path("client-t1-g2.key"), "--memory", "256MiB", "--workload", "churn",
            "--duration", "60s", "--delay", "200ms", "--log-level", "warning",
        ]
        agent.standardOutput = FileHandle.nullDevice
        agent.standardError = FileHandle.nullDevice
        try agent.run()
        // Connected for the whole test however slow the machine; stopped at the end.
        defer {
            if agent.isRunning { agent.terminate() }
            agent.waitUntilExit()
        }

        // Wait (bounded) until the guest has reports accepted, so the rates have something to show.
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let once = try self.ctl(["--socket", broker.adminSocket, "top", "--once", "--json"])
            if let frame = try once.frames().first, (Self.tenant(frame, "t1")?["reports_ok"] as? Int ?? 0) > 0 {
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }

        let output = try self.ctl([
            "top", "--socket", broker.adminSocket, "--json", "--iterations", "3", "--interval", "300ms",
        ])
        #expect(output.status == 0, "\(output.stderr)")
        let frames = try output.frames()
        try #require(frames.count == 3, "\(output.stdout)")

        // The first refresh has nothing to compare with.
        #expect(frames[0]["interval_seconds"] is NSNull)
        #expect(frames[0]["reports_ok_per_second"] is NSNull)
        #expect(Self.tenant(frames[0], "t1")?["reports_ok_per_second"] is NSNull)
        for frame in frames {
            for key in [
                "version", "uptime_seconds", "sessions", "guests", "guests_connected", "reclaimable_bytes",
                "reports_ok", "reports_failed", "shutting_down", "tenants",
            ] {
                #expect(frame[key] != nil, "missing \(key)")
            }
            // The broker's configured tenants, the paused one marked.
            #expect(Self.tenant(frame, "paused")?["paused"] as? Bool == true)
            #expect(Self.tenant(frame, "t2")?["paused"] as? Bool == false)
        }
        // Later refreshes: each rate is the counter's difference over the measured interval.
        for (previous, frame) in zip(frames, frames.dropFirst()) {
            let interval = try #require(frame["interval_seconds"] as? Double)
            #expect(interval >= 0.3 && interval < 10)
            let before = try #require(Self.tenant(previous, "t1"))
            let after = try #require(Self.tenant(frame, "t1"))
            let okBefore = try #require(before["reports_ok"] as? Int)
            let okAfter = try #require(after["reports_ok"] as? Int)
            let rate = try #require(after["reports_ok_per_second"] as? Double)
            #expect(abs(rate - Double(okAfter - okBefore) / interval) < 1e-6)
            let total = try #require(frame["reports_ok_per_second"] as? Double)
            let totalBefore = try #require(previous["reports_ok"] as? Int)
            let totalAfter = try #require(frame["reports_ok"] as? Int)
            #expect(abs(total - Double(totalAfter - totalBefore) / interval) < 1e-6)
        }
        let last = try #require(frames.last)
        #expect((Self.tenant(last, "t1")?["reclaimable_bytes"] as? Int ?? 0) > 0)
        #expect((last["sessions"] as? Int ?? 0) >= 1)

        // Pausing through the admin socket shows in the next frame, in JSON and in the view.
        #expect(try self.ctl(["--socket", broker.adminSocket, "pause", "t2"]).status == 0)
        let paused = try self.ctl(["--socket", broker.adminSocket, "top", "--once", "--json"])
        #expect(Self.tenant(try #require(try paused.frames().first), "t2")?["paused"] as? Bool == true)
        let view = try self.ctl(["--socket", broker.adminSocket, "top", "--once"])
        #expect(view.status == 0, "\(view.stderr)")
        let t2Row = view.stdout.split(separator: "\n").first { $0.hasPrefix("t2 ") }
        #expect(t2Row?.hasSuffix("PAUSED") == true, "\(view.stdout)")
        let t1Row = view.stdout.split(separator: "\n").first { $0.hasPrefix("t1 ") }
        #expect(t1Row?.contains("█") == true, "\(view.stdout)")
        #expect(!view.stdout.contains("\u{1B}["), "no escape sequences when not on a terminal")
        #expect(broker.terminate() == 0)
    }

    @Test func topExitCodes() throws {
        let missing = try self.ctl(["--socket", "/tmp/pb-no-such-broker.sock", "top", "--once"])
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("is pagebrokerd running?"), "\(missing.stderr)")
        let tooFast = try self.ctl(["--socket", "/tmp/pb-no-such-broker.sock", "top", "--interval", "10ms"])
        #expect(tooFast.status == 2)
        #expect(tooFast.stderr.contains("100ms"), "\(tooFast.stderr)")
        let both = try self.ctl(["top", "--once", "--iterations", "2"])
        #expect(both.status == 2)
    }
}
