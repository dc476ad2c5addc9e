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
        /// When the event falls due, in attoseconds (`Duration.attoseconds`): comparing two
        /// `Int128`s is inlined, where `Duration`'s `<` is a call into the standard library.
        var due: Int128
        var handle: VirtualScheduledWork
        var work: @Sendable () -> Void
    }

    private struct State {
        /// The current time, in attoseconds.
        var now: Int128 = 0
        // Sorted latest first, so the next event is popped from the end and one scheduled for
        // sooner than everything pending (a workload step) is appended: neither moves the other
        // events, where popping from the front moved all of them every time. Among events due
        // at the same time the one scheduled first is nearer the end, so ties run in the order
        // scheduled. Few events are ever pending at once (a pass, a workload step, a sampler),
        // so a sorted array beats a heap here.
        var events: [Event] = []
    }

    private let state = PThreadLocked(State())

    public init() {}

    public var now: Duration { Duration(attoseconds: self.state.withLock { $0.now }) }

    /// Number of events waiting to fall due.
    public var pendingCount: Int { self.state.withLock { state in state.events.count { !$0.handle.isCancelled } } }

    /// When the next event falls due, if any.
    public var nextDue: Duration? {
        self.state.withLock { state in
            state.events.last { !$0.handle.isCancelled }.map { Duration(attoseconds: $0.due) }
        }
    }

    @discardableResult
    public func schedule(after delay: Duration, _ work: @escaping @Sendable () -> Void) -> any ScheduledWork {
        self.schedule(at: self.now + max(delay, .zero), work)
    }

    /// Schedules `work` at an absolute virtual time (now, if that time has passed).
    @discardableResult
    public func schedule(at due: Duration, _ work: @escaping @Sendable () -> Void) -> any ScheduledWork {
        let handle = VirtualScheduledWork()
        let due = due.attoseconds
        self.state.withLock { state in
            let due = max(due, state.now)
            // The first position whose event is not due later than this one: the new event goes
            // before every event due at the same time, which were all scheduled earlier. Only
            // the due times are read, in place (copying an event would retain its handle and
            // its closure).
            var low = 0
            var high = state.events.count
            while low < high {
                let mid = (low &+ high) &>> 1
                if state.events[mid].due > due { low = mid &+ 1 } else { high = mid }
            }
            state.events.insert(Event(due: due, handle: handle, work: work), at: low)
        }
        return handle
    }

    /// Advances time by `duration`, running everything that falls due on the way.
    public func advance(by duration: Duration) {
        self.advance(to: self.now + duration)
    }

    /// Advances time to `target`, running everything due at or before it, in order.
    public func advance(to target: Duration) {
        let target = target.attoseconds
        while true {
            let next: Event? = self.state.withLock { state in
                guard let last = state.events.indices.last, state.events[last].due <= target else {
                    state.now = max(state.now, target)
                    return nil
                }
                let event = state.events.removeLast()
                state.now = max(state.now, event.due)
                return event
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
