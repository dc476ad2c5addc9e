import Foundation
import Testing

/// Real guest processes (`pagebroker-agent run`) against a real broker: the broker's figures
/// must equal the guests' own records, exactly, even across a broker crash.
@Suite(.serialized) struct GuestFleetTests {
    struct AgentResult: Decodable {
        var discardedBytes: Int
        var reports: Int
        var reportsFailed: Int
        var isolatedPages: Int
        var invariants: String
        var reconnects: Int?

        enum CodingKeys: String, CodingKey {
            case discardedBytes = "discarded_bytes"
            case reports
            case reportsFailed = "reports_failed"
            case isolatedPages = "isolated_pages"
            case invariants
            case reconnects
        }
    }

    struct TenantFigure: Decodable {
        var tenant: String
        var reclaimableBytes: Int

        enum CodingKeys: String, CodingKey {
            case tenant
            case reclaimableBytes = "reclaimable_bytes"
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

    /// Starts `pagebroker-agent run` for one guest; its JSON arrives on standard output at exit.
    /// 256 MiB: a zone must hold more than a full batch (32 blocks of 2 MiB) above its low
    /// watermark before the engine reports anything.
    func startAgent(
        port: Int,
        tenant: String,
        guest: String,
        workload: String,
        duration: String
    ) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("pagebroker-agent"))
        process.arguments = [
            "run", "--broker", "127.0.0.1:\(port)", "--server-name", "localhost",
            "--ca", TestPKI.path("ca.pem"), "--cert", TestPKI.path("client-\(tenant)-\(guest).pem"),
            "--key", TestPKI.path("client-\(tenant)-\(guest).key"),
            "--memory", "256MiB", "--workload", workload, "--duration", duration, "--delay", "200ms", "--json",
            "--log-level", "warning",
        ]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        return (process, output)
    }

    func finish(_ agent: (Process, Pipe)) throws -> AgentResult {
        let data = agent.1.fileHandleForReading.readDataToEndOfFile()
        agent.0.waitUntilExit()
        #expect(agent.0.terminationStatus == 0)
        return try JSONDecoder().decode(AgentResult.self, from: data)
    }

    func ctl<T: Decodable>(_ broker: BrokerProcess, _ arguments: [String], as: T.Type) throws -> T {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("pagebrokerctl"))
        process.arguments = ["--socket", broker.adminSocket] + arguments + ["--json"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return try JSONDecoder().decode(T.self, from: data)
    }

    @Test func threeTenantsFiguresEqualTheirGuestsRecords() async throws {
        let broker = try BrokerProcess()
        let fleet: [(String, String, String)] = [
            ("t1", "g2", "churn"), ("t1", "g3", "memhog"), ("t2", "g1", "fault"), ("t2", "g2", "churn"),
            ("t3", "g1", "memhog"), ("t3", "g2", "idle"),
        ]
        let agents = try fleet.map {
            try self.startAgent(port: broker.port, tenant: $0.0, guest: $0.1, workload: $0.2, duration: "6s")
        }
        var expected: [String: Int] = [:]
        var perGuest: [String: Int] = [:]
        for ((tenant, guest, _), agent) in zip(fleet, agents) {
            let result = try self.finish(agent)
            #expect(result.invariants == "ok")
            #expect(result.isolatedPages == 0)
            #expect(result.reports > 0, "\(tenant)/\(guest) never reported")
            expected[tenant, default: 0] += result.discardedBytes
            perGuest["\(tenant)/\(guest)"] = result.discardedBytes
        }
        #expect(expected.values.reduce(0, +) > 0)
        let tenants = try self.ctl(broker, ["tenants"], as: [TenantFigure].self)
        for (tenant, bytes) in expected {
            #expect(tenants.first { $0.tenant == tenant }?.reclaimableBytes == bytes, "tenant \(tenant)")
        }
        let guests = try self.ctl(broker, ["guests"], as: [GuestFigure].self)
        for (key, bytes) in perGuest {
            #expect(guests.first { "\($0.tenant)/\($0.guest)" == key }?.reclaimableBytes == bytes, "guest \(key)")
        }
        #expect(broker.terminate() == 0)
    }

    @Test func brokerKilledAndRestartedGuestsResyncExactly() async throws {
        let first = try BrokerProcess()
        let port = first.port
        let agents = try [("t1", "g2", "churn"), ("t2", "g1", "memhog")].map {
            try self.startAgent(port: port, tenant: $0.0, guest: $0.1, workload: $0.2, duration: "12s")
        }
        // Wait (bounded) until the broker has accounted something, then kill it outright.
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let tenants = (try? self.ctl(first, ["tenants"], as: [TenantFigure].self)) ?? []
            if tenants.contains(where: { $0.reclaimableBytes > 0 }) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        first.kill()
        // A new broker on the same port: the guests reconnect, sync, and carry on.
        let second = try BrokerProcess(extraArguments: ["--listen", "127.0.0.1:\(port)"])
        #expect(second.port == port)
        var expected: [String: Int] = [:]
        for (tenant, agent) in zip(["t1", "t2"], agents) {
            let result = try self.finish(agent)
            #expect(result.invariants == "ok")
            #expect(result.isolatedPages == 0)
            #expect((result.reconnects ?? 0) >= 1)
            expected[tenant] = result.discardedBytes
        }
        #expect(expected.values.reduce(0, +) > 0)
        let tenants = try self.ctl(second, ["tenants"], as: [TenantFigure].self)
        for (tenant, bytes) in expected {
            #expect(
                tenants.first { $0.tenant == tenant }?.reclaimableBytes == bytes,
                "tenant \(tenant) after the restart"
            )
        }
        #expect(second.terminate() == 0)
    }
}
