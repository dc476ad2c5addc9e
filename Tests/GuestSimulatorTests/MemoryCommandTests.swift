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

    /// The phases run in the plan's order (warm-up, then off-on, on-off) and start alike: each
    /// from a fully resident pool by the kernel's figure (st_blocks), none with marks left by an
    /// earlier phase (an off phase never skips zeroing), and with reporting on the flush has
    /// discarded the free memory before the clock starts, to the byte.
    @Test func benchPageFaultPhasesAlternateAndStartFromTheSameState() throws {
        let output = try self.runner.agent([
            "bench", "page-fault", "--threads", "2", "--order", "4", "--duration", "200ms", "--repeat", "2",
            "--memory", "16MiB", "--delay", "50ms", "--report-order", "4", "--json",
        ])
        #expect(output.status == 0, "\(output.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any])
        let pool = try #require(object["pool_bytes"] as? Int)
        let phases = try #require(object["phases"] as? [[String: Any]])
        #expect(phases.map { $0["round"] as? Int } == [0, 1, 1, 2, 2])
        #expect(phases.map { $0["reporting"] as? Bool } == [false, false, true, true, false])
        for phase in phases {
            let reporting = try #require(phase["reporting"] as? Bool)
            let flushed = try #require(phase["flush_discarded_bytes"] as? Int)
            #expect(phase["prefaulted_bytes"] as? Int == pool, "\(phase)")
            #expect((phase["ops_per_cpu_second"] as? Double ?? 0) > 0, "\(phase)")
            if reporting {
                #expect(flushed > 0, "\(phase)")
                #expect(phase["resident_bytes_at_start"] as? Int == pool - flushed, "\(phase)")
            } else {
                #expect(flushed == 0, "\(phase)")
                #expect(phase["resident_bytes_at_start"] as? Int == pool, "\(phase)")
                #expect(phase["zeroing_skipped_bytes"] as? Int == 0, "\(phase)")
            }
        }
        // The ratio is the median of the rounds' own on / off.
        let on = try #require(object["rounds_on"] as? [Double])
        let off = try #require(object["rounds_off"] as? [Double])
        let ratios = try #require(object["round_ratios"] as? [Double])
        #expect(ratios.count == 2)
        for (index, ratio) in ratios.enumerated() { #expect(abs(ratio - on[index] / off[index]) < 1e-9) }
        #expect(abs((object["ratio"] as? Double ?? 0) - (ratios[0] + ratios[1]) / 2) < 1e-9)
        // Two rounds are too few for a 95% interval of the median: none is claimed.
        #expect(object["ratio_interval_95"] == nil)
        #expect(output.stderr.contains("no 95% CI with fewer than 6 rounds"), "\(output.stderr)")
    }

    /// With six rounds, the fewest that give one, the 95% interval of the median ratio is the
    /// rounds' smallest to largest ratio (1 - 2/64 of coverage), for wall time and CPU time alike.
    @Test func benchPageFaultGivesTheMediansConfidenceInterval() throws {
        let output = try self.runner.agent([
            "bench", "page-fault", "--threads", "1", "--order", "4", "--duration", "50ms", "--repeat", "6",
            "--memory", "8MiB", "--delay", "20ms", "--report-order", "4", "--no-warm-up", "--json",
        ])
        #expect(output.status == 0, "\(output.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any])
        for (key, interval) in [("round_ratios", "ratio_interval_95"), ("round_cpu_ratios", "cpu_ratio_interval_95")] {
            let ratios = try #require(object[key] as? [Double])
            #expect(ratios.count == 6)
            #expect(object[interval] as? [Double] == [ratios.min()!, ratios.max()!], "\(object)")
        }
        #expect(output.stderr.contains("95% CI of the median "), "\(output.stderr)")
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
