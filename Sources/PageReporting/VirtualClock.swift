import BuddyAllocator
import Synchronization

/// Virtual time: nothing runs until the clock is advanced, and then everything that falls due
/// runs in time order (ties in the order scheduled) on the advancing thread.
///
/// Tests and the simulator drive the engine with it, so a 2 s delay costs nothing and every
/// run with the same inputs is identical. Advancing from inside scheduled work (for example a
/// device that takes virtual time to answer) is allowed: the nested advance runs what falls due
/// in its window, and time never goes backwards.
public final class VirtualClock: ReportingScheduler {
    private struct Event {
        var due: Duration
        var sequence: UInt64
        var handle: VirtualScheduledWork
        var work: @Sendable () -> Void
    }

    private struct State {
        var now: Duration = .zero
        var sequence: UInt64 = 0
        // Sorted by (due, sequence); popped from the front. Few events are ever pending at
        // once (a pass, a workload step, a sampler), so a sorted array beats a heap here.
        var events: [Event] = []
    }

    private let state = PThreadLocked(State())

    public init() {}

    public var now: Duration { self.state.withLock { $0.now } }

    /// Number of events waiting to fall due.
    public var pendingCount: Int { self.state.withLock { state in state.events.count { !$0.handle.isCancelled } } }

    /// When the next event falls due, if any.
    public var nextDue: Duration? {
        self.state.withLock { state in state.events.first { !$0.handle.isCancelled }?.due }
    }

    @discardableResult
    public func schedule(after delay: Duration, _ work: @escaping @Sendable () -> Void) -> any ScheduledWork {
        self.schedule(at: self.now + max(delay, .zero), work)
    }

    /// Schedules `work` at an absolute virtual time (now, if that time has passed).
    @discardableResult
    public func schedule(at due: Duration, _ work: @escaping @Sendable () -> Void) -> any ScheduledWork {
        let handle = VirtualScheduledWork()
        self.state.withLock { state in
            let event = Event(due: max(due, state.now), sequence: state.sequence, handle: handle, work: work)
            state.sequence += 1
            var low = 0
            var high = state.events.count
            while low < high {
                let mid = (low + high) / 2
                let other = state.events[mid]
                if (other.due, other.sequence) < (event.due, event.sequence) { low = mid + 1 } else { high = mid }
            }
            state.events.insert(event, at: low)
        }
        return handle
    }

    /// Advances time by `duration`, running everything that falls due on the way.
    public func advance(by duration: Duration) {
        self.advance(to: self.now + duration)
    }

    /// Advances time to `target`, running everything due at or before it, in order.
    public func advance(to target: Duration) {
        while true {
            let next: Event? = self.state.withLock { state in
                guard let first = state.events.first, first.due <= target else {
                    state.now = max(state.now, target)
                    return nil
                }
                state.events.removeFirst()
                state.now = max(state.now, first.due)
                return first
            }
            guard let event = next else { return }
            if event.handle.start() { event.work() }
        }
    }

    /// Runs events until none is left or `limit` is reached; returns the time reached.
    @discardableResult
    public func runUntilIdle(limit: Duration) -> Duration {
        while let due = self.nextDue, due <= limit { self.advance(to: due) }
        return self.now
    }
}

private final class VirtualScheduledWork: ScheduledWork {
    private let state = Atomic<Int>(0)

    var isCancelled: Bool { self.state.load(ordering: .relaxed) == 2 }

    func start() -> Bool {
        self.state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged
    }

    func cancel() -> Bool {
        self.state.compareExchange(expected: 0, desired: 2, ordering: .acquiringAndReleasing).exchanged
    }
}
