import BuddyAllocator
import Dispatch
import Synchronization

/// Free page reporting: a port of Linux's `mm/page_reporting.c` over a ``BuddyAllocator``.
///
/// A free that leaves a block at or above the reporting order requests reporting; the request
/// starts a pass ``PageReportingConfiguration/delay`` later on the scheduler's worker. A pass
/// walks every zone's free lists from the reporting order up, isolates unreported blocks into
/// batches of ``PageReportingConfiguration/capacity``, drops the zone lock, hands each batch to
/// the device, and drains the batch back, marking blocks Reported (and their frames discarded)
/// when the device succeeded. A request during a pass re-arms it; an error stops the pass.
///
/// The engine also keeps, per frame, whether the host holds it discarded (set when a report
/// succeeds, kept across merges, cleared when the frame is allocated); the allocator's
/// ``ReuseObserver`` is told which frames come back into use.
public final class PageReportingEngine: FreeBlockNotifier, Sendable {
    /// The kernel's `PAGE_REPORTING_IDLE / REQUESTED / ACTIVE`.
    public enum State: Int, Sendable, CustomStringConvertible {
        case idle = 0
        case requested = 1
        case active = 2

        public var description: String {
            switch self {
            case .idle: return "idle"
            case .requested: return "requested"
            case .active: return "active"
            }
        }
    }

    // The state word (IDLE, REQUESTED, ACTIVE) is the allocator's `reportingState`, where a
    // free reads it before taking any lock; one engine is attached at a time, and attaching
    // resets it to IDLE.
    public let allocator: BuddyAllocator
    public let device: any PageReportingDevice
    public let scheduler: any ReportingScheduler
    public let configuration: PageReportingConfiguration
    /// The order reported from: the override, else the device's order, else the pageblock order.
    public let reportingOrder: Int

    let batch: BatchBuffer
    // pthread-backed, not Synchronization.Mutex: allocating threads contend on it, and
    // ThreadSanitizer must be able to see the hand-over (see PThreadLock).
    private let control = PThreadLocked(Control())
    private let inFlight = DispatchGroup()
    let counters = PThreadLocked(PageReportingStatistics())

    private struct Control {
        var registered = true
        var pending: (any ScheduledWork)?
    }

    /// Registers `device` with `allocator` (`page_reporting_register`) and requests the initial
    /// flush of every zone. A second device on the same allocator is refused with `busy`.
    public static func register(
        device: any PageReportingDevice,
        allocator: BuddyAllocator,
        scheduler: any ReportingScheduler,
        configuration: PageReportingConfiguration = .linux
    ) throws(PageReportingError) -> PageReportingEngine {
        let engine = try PageReportingEngine(
            device: device,
            allocator: allocator,
            scheduler: scheduler,
            configuration: configuration
        )
        do {
            try allocator.attachFreeNotifier(engine, order: engine.reportingOrder)
        } catch {
            throw PageReportingError(.busy, detail: error.detail.isEmpty ? "\(error)" : error.detail)
        }
        // Begin the initial flush of the zones.
        engine.request()
        return engine
    }

    private init(
        device: any PageReportingDevice,
        allocator: BuddyAllocator,
        scheduler: any ReportingScheduler,
        configuration: PageReportingConfiguration
    ) throws(PageReportingError) {
        let orders = allocator.configuration.orderCount
        let order = configuration.orderOverride ?? device.preferredOrder ?? allocator.configuration.pageblockOrder
        guard order >= 0, order < orders else {
            throw PageReportingError(.invalidOrder, detail: "reporting order \(order) is not in 0..<\(orders)")
        }
        guard configuration.capacity > 0 else {
            throw PageReportingError(
                .invalidCapacity,
                detail: "capacity must be positive, got \(configuration.capacity)"
            )
        }
        guard configuration.delay >= .zero else {
            throw PageReportingError(.invalidDelay, detail: "delay must not be negative, got \(configuration.delay)")
        }
        self.allocator = allocator
        self.device = device
        self.scheduler = scheduler
        self.configuration = configuration
        self.reportingOrder = order
        self.batch = BatchBuffer(capacity: configuration.capacity)
    }

    /// `page_reporting_unregister`: stops notifications, cancels a pending pass and waits for a
    /// running one to finish. Must not be called from the device's `report`.
    public func unregister() {
        self.allocator.detachFreeNotifier(self)
        self.control.withLock { control in
            control.registered = false
            control.pending?.cancel()
            control.pending = nil
        }
        // cancel_delayed_work_sync: a pass already running finishes first.
        self.inFlight.wait()
    }

    /// Whether the engine is still registered.
    public var isRegistered: Bool { self.control.withLock { $0.registered } }

    /// The engine's current state.
    public var currentState: State { State(rawValue: self.allocator.reportingState.load(ordering: .acquiring))! }

    /// Counters since registration.
    public var statistics: PageReportingStatistics { self.counters.withLock { $0 } }

    // MARK: Requests

    public func blockFreed(order: Int) {
        self.request()
    }

    /// `__page_reporting_request`: moves to REQUESTED and, coming from IDLE, schedules a pass
    /// after the delay so a sizable queue can build.
    public func request() {
        if self.allocator.reportingState.load(ordering: .relaxed) == State.requested.rawValue { return }
        let previous = self.allocator.reportingState.exchange(
            State.requested.rawValue,
            ordering: .acquiringAndReleasing
        )
        // Already requested or active: the running pass will see the request and re-arm.
        guard previous == State.idle.rawValue else { return }
        self.schedulePass(after: self.configuration.delay)
    }

    private func schedulePass(after delay: Duration) {
        self.control.withLock { control in
            guard control.registered else { return }
            control.pending = self.scheduler.schedule(after: delay) { [self] in self.runScheduledPass() }
        }
    }

    private func runScheduledPass() {
        let registered = self.control.withLock { control -> Bool in
            guard control.registered else { return false }
            control.pending = nil
            self.inFlight.enter()
            return true
        }
        guard registered else { return }
        defer { self.inFlight.leave() }
        self.process()
    }

    /// `page_reporting_process`: one pass over every zone.
    func process() {
        // Anyone requesting reporting during the pass moves the state back to REQUESTED, and the
        // pass re-arms itself at the end.
        self.allocator.reportingState.store(State.active.rawValue, ordering: .releasing)
        self.counters.withLock { $0.passes += 1 }
        var failure: (any Error)?
        for zone in self.allocator.zones {
            failure = self.processZone(zone)
            if failure != nil { break }
        }
        self.finishPass(failure: failure)
    }

    private func finishPass(failure: (any Error)?) {
        let hint = (failure as? any ReportRetryHint)?.retryAfter
        let delay = max(self.configuration.delay, hint ?? .zero)
        let (exchanged, _) = self.allocator.reportingState.compareExchange(
            expected: State.active.rawValue,
            desired: State.idle.rawValue,
            ordering: .acquiringAndReleasing
        )
        if !exchanged {
            // Requested while we were active: more may be waiting, defer so more can accumulate.
            self.schedulePass(after: delay)
        } else if hint != nil,
            self.allocator.reportingState.compareExchange(
                expected: State.idle.rawValue,
                desired: State.requested.rawValue,
                ordering: .acquiringAndReleasing
            ).exchanged
        {
            // The host asked us to come back later: retry the blocks it refused then, instead of
            // waiting for the next large free.
            self.schedulePass(after: delay)
        }
    }
}

/// The engine's scatterlist: `capacity` entries, allocated once. Only the running pass touches
/// it, and passes never overlap (the state machine schedules one at a time).
final class BatchBuffer: @unchecked Sendable {
    let entries: UnsafeMutablePointer<ReportEntry>
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        self.entries = .allocate(capacity: capacity)
        self.entries.initialize(repeating: ReportEntry(frame: 0, order: 0), count: capacity)
    }

    deinit { self.entries.deallocate() }

    func view(_ range: Range<Int>) -> ReportBatch {
        ReportBatch(entries: UnsafeBufferPointer(start: self.entries + range.lowerBound, count: range.count))
    }
}

/// What the engine has done since it was registered.
public struct PageReportingStatistics: Sendable, Hashable {
    /// Passes run.
    public var passes = 0
    /// Calls to the device's `report`.
    public var reports = 0
    /// Calls that threw.
    public var reportsFailed = 0
    /// Frames in batches the device accepted.
    public var framesReported = 0
    /// Frames in batches the device refused.
    public var framesFailed = 0
    /// The last error a report threw, as text.
    public var lastError: String?

    public init() {}
}
