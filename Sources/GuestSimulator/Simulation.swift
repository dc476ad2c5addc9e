import BuddyAllocator
import PageReporting
import Synchronization

/// A guest in virtual time: an allocator, a workload and (unless disabled) the free page
/// reporting engine with a simulated host, sampled into a timeline.
public final class Simulation: @unchecked Sendable {
    // @unchecked: all mutable state is touched only from the thread that calls `run`, through
    // events of the virtual clock it advances.
    public let options: SimulationOptions
    public let allocator: BuddyAllocator
    public let clock = VirtualClock()
    private let workload: WorkloadDriver
    private let reuse = ReuseCounter()
    private var engine: PageReportingEngine?
    private var timeline: [TimelinePoint] = []
    private var reachedTarget: (time: Duration, passes: Int)?
    private let reportingOrder: Int

    /// How often the 99% target is checked (finer than the timeline).
    static let targetCheckInterval: Duration = .milliseconds(100)

    public init(options: SimulationOptions) throws {
        try options.validate()
        self.allocator = try BuddyAllocator(
            AllocatorConfiguration(memoryBytes: options.memoryBytes, pageSize: options.pageSize)
        )
        var options = options
        var reporting = options.reporting
        if let order = options.reportOrder { reporting.orderOverride = order }
        options.reporting = reporting
        self.options = options
        self.reportingOrder = reporting.orderOverride ?? self.allocator.configuration.pageblockOrder
        self.workload = WorkloadDriver(kind: options.workload, allocator: self.allocator, seed: options.seed)
        self.allocator.setReuseObserver(self.reuse)
    }

    /// Runs the simulation to its end and returns the figures. `progress` is called with the
    /// fraction of virtual time done, about a hundred times.
    public func run(progress: ((Double) -> Void)? = nil) -> SimulationResult {
        let end = self.options.duration
        self.workload.boot()
        if self.options.workload != .idle { self.scheduleStep(at: WorkloadDriver.tick, end: end) }
        if self.options.reportingEnabled {
            let device = SimulatedDevice(behaviours: self.options.device, clock: self.clock, seed: self.options.seed)
            // The engine's order and config were validated with the options; a failure here is
            // a defect, not bad input.
            self.engine = try! PageReportingEngine.register(
                device: device,
                allocator: self.allocator,
                scheduler: self.clock,
                configuration: self.options.reporting
            )
        }
        self.scheduleSample(at: .zero, end: end)
        self.scheduleTargetCheck(at: .zero, end: end)
        let steps = 100
        for step in 1...steps {
            self.clock.advance(to: end * step / steps)
            progress?(Double(step) / Double(steps))
        }
        let result = self.result()
        self.engine?.unregister()
        return result
    }

    private func scheduleStep(at time: Duration, end: Duration) {
        guard time <= end else { return }
        self.clock.schedule(at: time) { [self] in
            self.workload.step(at: time)
            self.scheduleStep(at: time + WorkloadDriver.tick, end: end)
        }
    }

    private func scheduleSample(at time: Duration, end: Duration) {
        guard time <= end else { return }
        self.clock.schedule(at: time) { [self] in
            let stats = self.allocator.statistics
            self.timeline.append(
                TimelinePoint(
                    t: Units.seconds(self.clock.now),
                    discardedBytes: stats.discardedPages * self.options.pageSize
                )
            )
            self.scheduleSample(at: time + self.options.sampleInterval, end: end)
        }
    }

    private func scheduleTargetCheck(at time: Duration, end: Duration) {
        guard time <= end, self.reachedTarget == nil, self.options.reportingEnabled else { return }
        self.clock.schedule(at: time) { [self] in
            let (discarded, reportable) = self.discardedAndReportablePages()
            if reportable > 0 && discarded * 100 >= reportable * 99 {
                self.reachedTarget = (self.clock.now, self.engine?.statistics.passes ?? 0)
            } else {
                self.scheduleTargetCheck(at: time + Self.targetCheckInterval, end: end)
            }
        }
    }

    /// Discarded frames, and free frames in blocks at or above the reporting order.
    private func discardedAndReportablePages() -> (Int, Int) {
        let stats = self.allocator.statistics
        var reportable = 0
        for zone in stats.zones {
            for order in self.reportingOrder..<zone.nrFree.count { reportable += zone.nrFree[order] << order }
        }
        return (stats.discardedPages, reportable)
    }

    private func result() -> SimulationResult {
        self.allocator.flushReuse()
        let stats = self.allocator.statistics
        let engineStats = self.engine?.statistics ?? PageReportingStatistics()
        let pageSize = self.options.pageSize
        let invariants: String
        do {
            try self.allocator.validate()
            invariants = "ok"
        } catch {
            invariants = error.description
        }
        let (_, reportable) = self.discardedAndReportablePages()
        return SimulationResult(
            workload: self.options.workload.rawValue,
            seed: self.options.seed,
            virtualSeconds: Units.seconds(self.clock.now),
            totalBytes: stats.totalPages * pageSize,
            pageSize: pageSize,
            freeBytes: stats.freePages * pageSize,
            reportableFreeBytes: reportable * pageSize,
            discardedBytes: stats.discardedPages * pageSize,
            reportedBytesTotal: engineStats.framesReported * pageSize,
            reusedBytesTotal: self.reuse.frames * pageSize,
            reports: engineStats.reports,
            reportsFailed: engineStats.reportsFailed,
            passes: engineStats.passes,
            isolatedPages: stats.isolatedPages,
            allocations: self.workload.allocations,
            frees: self.workload.frees,
            allocationFailures: self.workload.allocationFailures,
            invariants: invariants,
            timeToDiscard99PctSeconds: self.reachedTarget.map { Units.seconds($0.time) },
            passesToDiscard99Pct: self.reachedTarget?.passes,
            reportingEnabled: self.options.reportingEnabled,
            reportOrder: self.reportingOrder,
            capacity: self.options.reporting.capacity,
            delaySeconds: Units.seconds(self.options.reporting.delay),
            budget: self.options.reporting.budget,
            rotation: self.options.reporting.rotation,
            tailPutback: self.options.reporting.tailPutback,
            device: self.options.device.map(\.description).joined(separator: ","),
            timeline: self.timeline
        )
    }
}

/// Counts frames the guest took back from the host.
private final class ReuseCounter: ReuseObserver {
    private let count = Atomic<Int>(0)

    var frames: Int { self.count.load(ordering: .relaxed) }

    func framesReused(first: Int, count: Int) {
        self.count.wrappingAdd(count, ordering: .relaxed)
    }
}
