import Foundation
import Synchronization
import Testing

/// `pagebroker-agent run --discard host` against a real broker: the agent's prefaulted memfd is
/// attached to the broker's memory socket, the broker punches every report before its OK, and
/// after the run the broker's `resident_bytes` (its own `fstat` of the descriptor), the agent's
/// (`st_blocks` of the same memfd) and `total - reclaimable` all agree to the byte. Also across a
/// `kill -9` of the broker, and with a broker stopped while a report is in flight.
@Suite(.serialized) struct HostDiscardEndToEndTests {
    /// Root (the test) may attach t1's and t2's guests.
    static let configuration = """
        trust_domain: example.org
        limits:
          heartbeat_interval: 30s
          handshake_timeout: 20s
        shutdown_timeout: 2s
        tenants:
          t1:
            memory:
              uids: [0]
          t2:
            memory:
              uids: [0]
        """

    struct Result: Decodable {
        var discard: String
        var residentBytes: Int
        var residentBytesAtStart: Int
        var totalBytes: Int
        var discardedBytes: Int
        var integrityErrors: Int
        var isolatedPages: Int
        var invariants: String
        var reports: Int
        var reportsTimedOut: Int
        var lateResults: Int
        var reconnects: Int
        var quarantinedBytes: Int
        var quarantinedReportsTotal: Int
        var quarantineReleasedLate: Int
        var memoryAttaches: Int

        enum CodingKeys: String, CodingKey {
            case discard, reports, invariants, reconnects
            case residentBytes = "resident_bytes"
            case residentBytesAtStart = "resident_bytes_at_start"
            case totalBytes = "total_bytes"
            case discardedBytes = "discarded_bytes"
            case integrityErrors = "integrity_errors"
            case isolatedPages = "isolated_pages"
            case reportsTimedOut = "reports_timed_out"
            case lateResults = "late_results"
            case quarantinedBytes = "quarantined_bytes"
            case quarantinedReportsTotal = "quarantined_reports_total"
            case quarantineReleasedLate = "quarantine_released_late"
            case memoryAttaches = "memory_attaches"
        }
    }

    /// A running `pagebroker-agent run --linger`: standard error collected as it comes, the JSON
    /// line read once printed, the memory kept attached until ``release()`` closes its stdin.
    final class Agent: Sendable {
        let process: Process
        let name: String
        private let input = Pipe()
        private let output = Pipe()
        private let errors = Pipe()
        private let log = LogText()

        final class LogText: Sendable {
            let text = Mutex("")
        }

        init(broker: BrokerProcess, guest: String, workload: String, duration: String, extra: [String] = []) throws {
            let parts = guest.split(separator: "/")
            self.name = guest
            self.process = Process()
            self.process.executableURL = URL(fileURLWithPath: builtProduct("pagebroker-agent"))
            self.process.arguments =
                [
                    "run", "--broker", "127.0.0.1:\(broker.port)", "--server-name", "localhost",
                    "--ca", TestPKI.path("ca.pem"), "--cert", TestPKI.path("client-\(parts[0])-\(parts[1]).pem"),
                    "--key", TestPKI.path("client-\(parts[0])-\(parts[1]).key"),
                    "--memory", "64MiB", "--report-order", "5", "--workload", workload, "--duration", duration,
                    "--delay", "200ms", "--json", "--log-level", "info", "--backing", "memfd", "--discard", "host",
                    "--prefault", "--memory-socket", "\(broker.directory)/memory.sock", "--linger",
                ] + extra
            self.process.standardInput = self.input
            self.process.standardOutput = self.output
            self.process.standardError = self.errors
            let log = self.log
            self.errors.fileHandleForReading.readabilityHandler = { handle in
                let data = handle.availableData
                if data.isEmpty {
                    handle.readabilityHandler = nil
                    return
                }
                log.text.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
            try self.process.run()
        }

        var logText: String { self.log.text.withLock { $0 } }

        /// Polls the log every 10 ms until `predicate` holds, at most `seconds`.
        func waitForLog(seconds: Double = 30, _ predicate: (String) -> Bool) async throws -> Bool {
            let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
            while ContinuousClock.now < deadline {
                if predicate(self.logText) { return true }
                try await Task.sleep(for: .milliseconds(10))
            }
            return predicate(self.logText)
        }

        /// The JSON object printed when the run ended (the agent lingers attached).
        func result() throws -> Result {
            var line = Data()
            let handle = self.output.fileHandleForReading
            while true {
                let byte = handle.readData(ofLength: 1)
                if byte.isEmpty || byte == Data("\n".utf8) { break }
                line.append(byte)
            }
            guard !line.isEmpty else {
                throw AgentFailed(description: "\(self.name) printed nothing:\n\(self.logText)")
            }
            return try JSONDecoder().decode(Result.self, from: line)
        }

        /// Closes stdin: the agent detaches and exits; returns its status.
        func release() -> Int32 {
            try? self.input.fileHandleForWriting.close()
            self.process.waitUntilExit()
            return self.process.terminationStatus
        }
    }

    /// A broker whose memory socket is bound (after the guest listener, which is what
    /// `BrokerProcess` waits for).
    func startBroker(extraArguments: [String] = [], directory: String? = nil) async throws -> BrokerProcess {
        let broker = try BrokerProcess(
            extraArguments: extraArguments,
            directory: directory,
            configuration: Self.configuration
        )
        #expect(await broker.waitForLog("memory socket listening"))
        return broker
    }

    struct AgentFailed: Error, CustomStringConvertible {
        var description: String
    }

    func guestFigures(_ broker: BrokerProcess) throws -> [[String: Any]] {
        let (status, output) = try SpawnedProcess.run(
            builtProduct("pagebrokerctl"),
            ["--socket", broker.adminSocket, "guests", "--json"]
        )
        #expect(status == 0, "\(output)")
        return (try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]]) ?? []
    }

    /// The broker's figures for `guest` while its memory is attached.
    func brokerFigure(
        _ broker: BrokerProcess,
        _ guest: String
    ) throws -> (resident: Int?, reclaimable: Int?, attached: Bool) {
        let parts = guest.split(separator: "/").map(String.init)
        let entry = try self.guestFigures(broker).first {
            $0["tenant"] as? String == parts[0] && $0["guest"] as? String == parts[1]
        }
        return (
            entry?["resident_bytes"] as? Int, entry?["reclaimable_bytes"] as? Int,
            entry?["memory_attached"] as? Bool ?? false
        )
    }

    /// What every guest must show once it stopped: the kernel's figure is exactly the record,
    /// and the broker (reading the same memfd) says the same.
    func checkExact(_ result: Result, _ agent: Agent, _ broker: BrokerProcess) throws {
        let name = agent.name
        #expect(result.discard == "host", "\(name)")
        #expect(result.integrityErrors == 0, "\(name): integrity errors")
        #expect(result.isolatedPages == 0 && result.invariants == "ok", "\(name)")
        #expect(result.quarantinedBytes == 0, "\(name): frames still quarantined")
        #expect(result.residentBytesAtStart == result.totalBytes, "\(name): --prefault made it all resident")
        #expect(
            result.residentBytes == result.totalBytes - result.discardedBytes,
            "\(name): resident \(result.residentBytes) != total \(result.totalBytes) - discarded \(result.discardedBytes)"
        )
        let broker = try self.brokerFigure(broker, name)
        #expect(broker.attached, "\(name) is not attached at the broker")
        #expect(broker.reclaimable == result.discardedBytes, "\(name): broker reclaimable \(broker.reclaimable ?? -1)")
        #expect(broker.resident == result.residentBytes, "\(name): broker resident \(broker.resident ?? -1)")
        #expect(broker.resident == result.totalBytes - (broker.reclaimable ?? 0), "\(name)")
    }

    @Test func everyWorkloadIsPunchedExactlyByTheBroker() async throws {
        let broker = try await self.startBroker()
        let runs = [("t1/g2", "idle"), ("t1/g3", "churn"), ("t2/g1", "memhog"), ("t2/g2", "fault")]
        let agents = try runs.map { try Agent(broker: broker, guest: $0.0, workload: $0.1, duration: "3s") }
        for agent in agents {
            let result = try agent.result()
            #expect(result.reports > 0 && result.discardedBytes > 0, "\(agent.name) freed nothing")
            #expect(result.memoryAttaches == 1)
            try self.checkExact(result, agent, broker)
        }
        for agent in agents { #expect(agent.release() == 0, "\(agent.name):\n\(agent.logText)") }
        #expect(broker.terminate() == 0)
    }

    @Test func brokerKilledMidRunGuestsReattachAndAreExactAgain() async throws {
        let first = try await self.startBroker()
        let port = first.port
        let directory = first.directory
        let agents = try [("t1/g2", "churn"), ("t2/g1", "memhog")].map {
            try Agent(broker: first, guest: $0.0, workload: $0.1, duration: "8s")
        }
        // Kill it once something has been punched and accounted.
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let figures = (try? self.guestFigures(first)) ?? []
            if figures.contains(where: { ($0["reclaimable_bytes"] as? Int ?? 0) > 0 }) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        first.kill()
        let second = try await self.startBroker(
            extraArguments: ["--listen", "127.0.0.1:\(port)"],
            directory: directory
        )
        for agent in agents {
            let result = try agent.result()
            #expect(result.reconnects >= 1, "\(agent.name) never came back")
            #expect(result.memoryAttaches == 2, "\(agent.name) did not attach again")
            try self.checkExact(result, agent, second)
        }
        for agent in agents { #expect(agent.release() == 0, "\(agent.name):\n\(agent.logText)") }
        #expect(second.terminate() == 0)
    }

    @Test func stoppedBrokerQuarantinesUntilItAnswersLate() async throws {
        let broker = try await self.startBroker()
        // The first report goes out 2 s after the start; the broker is stopped once the session
        // is up, so the report certainly waits on a stopped broker and times out.
        let agent = try Agent(
            broker: broker,
            guest: "t1/g2",
            workload: "churn",
            duration: "6s",
            extra: ["--delay", "2s", "--report-timeout", "300ms", "--stats-interval", "100ms"]
        )
        #expect(try await agent.waitForLog { $0.contains("session established") })
        kill(broker.process.processIdentifier, SIGSTOP)
        let quarantined = try await agent.waitForLog { log in
            log.split(separator: "\n").contains { $0.contains("quarantined ") && !$0.contains("quarantined 0 B") }
        }
        #expect(quarantined, "no report was quarantined:\n\(agent.logText)")
        kill(broker.process.processIdentifier, SIGCONT)
        let result = try agent.result()
        #expect(result.reportsTimedOut >= 1)
        #expect(result.lateResults >= 1)
        #expect(result.quarantinedReportsTotal >= 1)
        #expect(result.quarantineReleasedLate >= 1, "the late result did not release the quarantine")
        try self.checkExact(result, agent, broker)
        #expect(agent.release() == 0, "\(agent.logText)")
        #expect(broker.terminate() == 0)
    }
}
