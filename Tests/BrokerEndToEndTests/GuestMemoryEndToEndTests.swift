import Foundation
import Testing

/// `pagebroker-agent run` over real memory against a real broker: with a prefaulted pool,
/// guest-side discard and workloads that write every page they allocate, the kernel's figure
/// for the pool at exit must be exactly `total - discarded`, to the page, and no page in use
/// may have lost its contents. Reports the broker refuses leave the memory resident, and the
/// equality still holds.
@Suite(.serialized) struct GuestMemoryEndToEndTests {
    /// The keys of `run --json` these tests read.
    struct Result: Decodable {
        var backing: String
        var discard: String
        var residentBytes: Int?
        var totalBytes: Int
        var discardedBytes: Int
        var integrityErrors: Int
        var zeroingSkippedBytes: Int
        var reports: Int
        var reportsFailed: Int
        var reportsRefused: Int
        var isolatedPages: Int
        var invariants: String
        var guest: String?

        enum CodingKeys: String, CodingKey {
            case backing, discard, reports, invariants, guest
            case residentBytes = "resident_bytes"
            case totalBytes = "total_bytes"
            case discardedBytes = "discarded_bytes"
            case integrityErrors = "integrity_errors"
            case zeroingSkippedBytes = "zeroing_skipped_bytes"
            case reportsFailed = "reports_failed"
            case reportsRefused = "reports_refused"
            case isolatedPages = "isolated_pages"
        }
    }

    struct GuestFigure: Decodable {
        var guest: String
        var tenant: String
        var reclaimableBytes: Int

        enum CodingKeys: String, CodingKey {
            case guest, tenant
            case reclaimableBytes = "reclaimable_bytes"
        }
    }

    /// A 64 MiB pool reporting from order 5 (128 KiB), so that a zone above its low watermark
    /// holds a full batch with little memory; 3 s of the workload.
    func startAgent(port: Int, guest: String, workload: String, extra: [String]) throws -> (Process, Pipe, Pipe) {
        let parts = guest.split(separator: "/")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("pagebroker-agent"))
        process.arguments =
            [
                "run", "--broker", "127.0.0.1:\(port)", "--server-name", "localhost",
                "--ca", TestPKI.path("ca.pem"), "--cert", TestPKI.path("client-\(parts[0])-\(parts[1]).pem"),
                "--key", TestPKI.path("client-\(parts[0])-\(parts[1]).key"),
                "--memory", "64MiB", "--report-order", "5", "--workload", workload, "--duration", "3s",
                "--delay", "200ms", "--json", "--log-level", "warning",
            ] + extra
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        return (process, output, errors)
    }

    func finish(_ agent: (Process, Pipe, Pipe)) throws -> Result {
        let data = agent.1.fileHandleForReading.readDataToEndOfFile()
        let errors = String(decoding: agent.2.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        agent.0.waitUntilExit()
        #expect(agent.0.terminationStatus == 0, "agent failed: \(errors)")
        return try JSONDecoder().decode(Result.self, from: data)
    }

    func guests(_ broker: BrokerProcess) throws -> [GuestFigure] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("pagebrokerctl"))
        process.arguments = ["--socket", broker.adminSocket, "guests", "--json"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return try JSONDecoder().decode([GuestFigure].self, from: data)
    }

    /// What every run must satisfy: the kernel's figure is the guest's record, exactly.
    func checkExact(_ result: Result, _ name: String) {
        #expect(result.integrityErrors == 0, "\(name): integrity errors")
        #expect(result.isolatedPages == 0, "\(name)")
        #expect(result.invariants == "ok", "\(name)")
        #expect(
            result.residentBytes == result.totalBytes - result.discardedBytes,
            "\(name): resident \(result.residentBytes ?? -1) != total \(result.totalBytes) - discarded \(result.discardedBytes)"
        )
    }

    @Test func eachWorkloadFreesExactlyWhatItReports() throws {
        let broker = try BrokerProcess()
        let runs = [("t1/g2", "idle"), ("t1/g3", "churn"), ("t2/g1", "memhog"), ("t2/g2", "fault")]
        let agents = try runs.map {
            try self.startAgent(
                port: broker.port,
                guest: $0.0,
                workload: $0.1,
                extra: ["--prefault", "--discard", "guest"]
            )
        }
        var records: [String: Int] = [:]
        for ((guest, workload), agent) in zip(runs, agents) {
            let result = try self.finish(agent)
            #expect(result.backing == "memfd" && result.discard == "guest")
            self.checkExact(result, workload)
            #expect(result.reports > 0 && result.discardedBytes > 0, "\(workload) freed nothing")
            records[guest] = result.discardedBytes
        }
        // The broker accounted exactly what the guests freed.
        let figures = try self.guests(broker)
        for (guest, bytes) in records {
            #expect(figures.first { "\($0.tenant)/\($0.guest)" == guest }?.reclaimableBytes == bytes, "\(guest)")
        }
        #expect(broker.terminate() == 0)
    }

    @Test func refusedReportsLeaveMemoryResident() throws {
        let broker = try BrokerProcess()
        // paused: every report refused. limited: 2 reports a second, the rest refused (a flaky
        // host). t3/g1 with --discard none: accepted but accounting only, nothing freed.
        let paused = try self.startAgent(
            port: broker.port,
            guest: "paused/g1",
            workload: "churn",
            extra: ["--prefault"]
        )
        let limited = try self.startAgent(
            port: broker.port,
            guest: "limited/g1",
            workload: "churn",
            extra: ["--prefault"]
        )
        let none = try self.startAgent(
            port: broker.port,
            guest: "t3/g1",
            workload: "churn",
            extra: ["--prefault", "--discard", "none", "--backing", "anonymous"]
        )

        let pausedResult = try self.finish(paused)
        self.checkExact(pausedResult, "paused")
        #expect(pausedResult.reportsRefused > 0)
        #expect(pausedResult.discardedBytes == 0)
        #expect(pausedResult.residentBytes == pausedResult.totalBytes, "nothing refused may be freed")

        let limitedResult = try self.finish(limited)
        self.checkExact(limitedResult, "limited")
        #expect(limitedResult.reportsRefused > 0, "the rate limit refused nothing")
        #expect(limitedResult.discardedBytes > 0)

        let noneResult = try self.finish(none)
        #expect(noneResult.discard == "none" && noneResult.backing == "anonymous")
        #expect(noneResult.integrityErrors == 0)
        #expect(noneResult.discardedBytes > 0)
        #expect(noneResult.residentBytes == noneResult.totalBytes, "accounting only frees nothing")
        #expect(noneResult.zeroingSkippedBytes == 0, "memory not discarded is always zeroed")
        #expect(broker.terminate() == 0)
    }
}
