import GuestSimulator
import PageReporting
import Testing

@Suite struct SimulationTests {
    private func run(_ configure: (inout SimulationOptions) -> Void) throws -> SimulationResult {
        var options = SimulationOptions()
        options.memoryBytes = 256 << 20
        options.duration = .seconds(30)
        configure(&options)
        return try Simulation(options: options).run()
    }

    @Test(arguments: WorkloadKind.allCases)
    func everyWorkloadEndsConsistent(workload: WorkloadKind) throws {
        let result = try self.run { $0.workload = workload }
        #expect(result.invariants == "ok")
        #expect(result.isolatedPages == 0)
        #expect(result.reports > 0)
        #expect(result.discardedBytes > 0)
        #expect(result.discardedBytes <= result.freeBytes)
        #expect(result.timeline.count == 31)
    }

    @Test func sameSeedSameResultOtherSeedOtherResult() throws {
        let first = try self.run {
            $0.workload = .churn
            $0.seed = 7
            $0.device = [.flaky(0.2)]
        }
        let again = try self.run {
            $0.workload = .churn
            $0.seed = 7
            $0.device = [.flaky(0.2)]
        }
        let other = try self.run {
            $0.workload = .churn
            $0.seed = 8
            $0.device = [.flaky(0.2)]
        }
        #expect(first == again)
        #expect(first != other)
    }

    @Test func idleFourGiBGuestIsDiscardedWithinFortySecondsWithTheBudget() throws {
        let result = try self.run { options in
            options.memoryBytes = 4 << 30
            options.duration = .seconds(60)
        }
        let seconds = try #require(result.timeToDiscard99PctSeconds)
        #expect(seconds <= 40)
        #expect(result.invariants == "ok")
    }

    @Test func idleFourGiBGuestIsDiscardedInOnePassWithTheSeedEngine() throws {
        let result = try self.run { options in
            options.memoryBytes = 4 << 30
            options.duration = .seconds(10)
            options.reporting = .seed
        }
        #expect(result.passesToDiscard99Pct == 1)
        #expect(result.timeToDiscard99PctSeconds == 2)
    }

    @Test func failingHostDiscardsNothingAndLosesNothing() throws {
        let result = try self.run {
            $0.workload = .churn
            $0.device = [.fail]
        }
        #expect(result.discardedBytes == 0)
        #expect(result.reportsFailed == result.reports)
        #expect(result.reports > 0)
        #expect(result.timeToDiscard99PctSeconds == nil)
        #expect(result.isolatedPages == 0)
        #expect(result.invariants == "ok")
    }

    @Test func latencyLetsTheWorkloadRunDuringReports() throws {
        let result = try self.run {
            $0.workload = .memhog
            $0.device = [.latency(.milliseconds(50))]
        }
        #expect(result.invariants == "ok")
        #expect(result.isolatedPages == 0)
        #expect(result.reusedBytesTotal > 0)
    }

    @Test func reportingOffIsTheBaseline() throws {
        let result = try self.run {
            $0.workload = .churn
            $0.reportingEnabled = false
        }
        #expect(result.reports == 0)
        #expect(result.discardedBytes == 0)
        #expect(result.invariants == "ok")
    }

    @Test func badOptionsAreRefusedWithTheFlagNamed() {
        var options = SimulationOptions()
        options.reporting.capacity = 0
        #expect { try options.validate() } throws: {
            ($0 as? Units.ParseError)?.description.contains("--capacity") == true
        }
        options = SimulationOptions()
        options.memoryBytes = 1000
        #expect { try options.validate() } throws: {
            ($0 as? Units.ParseError)?.description.contains("--memory") == true
        }
        options = SimulationOptions()
        options.reportOrder = 11
        #expect { try options.validate() } throws: {
            ($0 as? Units.ParseError)?.description.contains("--report-order") == true
        }
    }

    @Test func summaryShowsTheFiguresAndATimeline() throws {
        let result = try self.run { _ in }
        let text = result.summary()
        #expect(text.contains("discarded now"))
        #expect(text.contains("invariants           ok"))
        #expect(text.contains("discarded memory over time"))
    }
}
