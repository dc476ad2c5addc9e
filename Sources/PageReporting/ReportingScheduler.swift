import Dispatch
import Synchronization

/// Where the engine's delayed work runs: the kernel's `schedule_delayed_work` and the clock it
/// reads. Injectable so that tests and the simulator run in virtual time.
public protocol ReportingScheduler: Sendable {
    /// Time since the scheduler's epoch.
    var now: Duration { get }

    /// Runs `work` once, `delay` from now, on the scheduler's worker.
    @discardableResult
    func schedule(after delay: Duration, _ work: @escaping @Sendable () -> Void) -> any ScheduledWork
}

/// A handle on work given to a ``ReportingScheduler``.
public protocol ScheduledWork: Sendable {
    /// Stops the work if it has not started; `true` if it will now never run.
    @discardableResult
    func cancel() -> Bool
}

/// Real time on a private serial dispatch queue: the engine's worker thread.
public final class DispatchReportingScheduler: ReportingScheduler {
    private let queue: DispatchQueue
    private let epoch = ContinuousClock.now

    public init(label: String = "pagebroker.page-reporting") {
        self.queue = DispatchQueue(label: label)
    }

    public var now: Duration { ContinuousClock.now - self.epoch }

    @discardableResult
    public func schedule(after delay: Duration, _ work: @escaping @Sendable () -> Void) -> any ScheduledWork {
        let handle = DispatchScheduledWork()
        let nanoseconds = max(
            0,
            delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000
        )
        self.queue.asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: nanoseconds))) {
            guard handle.start() else { return }
            work()
        }
        return handle
    }
}

private final class DispatchScheduledWork: ScheduledWork {
    // 0 pending, 1 started, 2 cancelled: whichever of start and cancel comes first wins.
    private let state = Atomic<Int>(0)

    func start() -> Bool {
        self.state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged
    }

    func cancel() -> Bool {
        self.state.compareExchange(expected: 0, desired: 2, ordering: .acquiringAndReleasing).exchanged
    }
}
