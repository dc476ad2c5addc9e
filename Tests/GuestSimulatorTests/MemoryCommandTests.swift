import Foundation
import Testing

/// The memory side of `pagebroker-agent` as a user runs it: `bench page-fault` on real memory,
/// and the flags of `run` that are refused before anything connects.
@Suite struct MemoryCommandTests {
    let runner = SimulateCommandTests()

    @Test func benchPageFaultMeasuresBothAndDiscards() throws {
        let output = try self.runner.agent([
            "bench", "page-fault", "--threads", "2", "--order", "4", "--duration", "300ms", "--repeat", "1",
            "--memory", "16MiB", "--delay", "50ms", "--report-order", "4", "--json",
        ])
        #expect(output.status == 0, "\(output.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any])
        let on = try #require(object["ops_per_second_on"] as? Double)
        let off = try #require(object["ops_per_second_off"] as? Double)
        let ratio = try #require(object["ratio"] as? Double)
        #expect(on > 0 && off > 0)
        #expect(abs(ratio - on / off) < 1e-9)
        // Reporting on really gave memory back to the kernel.
        #expect((object["discarded_bytes"] as? Int ?? 0) > 0)
        #expect(object["backing"] as? String == "memfd")
    }

    func runFlags(_ extra: [String]) throws -> SimulateCommandTests.Output {
        try self.runner.agent(
            [
                "run", "--broker", "127.0.0.1:1", "--ca", "/nonexistent", "--cert", "/nonexistent", "--key",
                "/nonexistent",
            ]
                + extra
        )
    }

    @Test func hostDiscardNeedsMemoryTheBrokerCanHold() throws {
        for backing in ["anonymous", "none"] {
            let output = try self.runFlags(["--discard", "host", "--backing", backing])
            #expect(output.status == 2, "\(backing)")
            #expect(output.stderr.contains("--discard host needs memory the broker can hold"), "\(output.stderr)")
        }
    }

    @Test func guestDiscardAndPrefaultNeedRealMemory() throws {
        let discard = try self.runFlags(["--backing", "none", "--discard", "guest"])
        #expect(discard.status == 2)
        #expect(discard.stderr.contains("needs real memory"))
        let prefault = try self.runFlags(["--backing", "none", "--prefault"])
        #expect(prefault.status == 2)
        #expect(prefault.stderr.contains("needs real memory"))
    }
}
