import NIOCore
import Synchronization

/// Whether the broker's event loops are serving: the watchdog's evidence that the daemon is
/// alive, rather than a timer that would keep ticking while every loop is stuck.
public enum EventLoopHealth {
    /// Runs `probe` on every loop of `group` and reports whether all of them ran it within
    /// `timeout`. `probe` should touch what a stuck broker would be stuck on (the core's lock).
    public static func check(
        _ group: any EventLoopGroup,
        within timeout: Duration,
        probe: @escaping @Sendable () -> Void = {}
    ) async -> Bool {
        await self.check(group.makeIterator().map { EventLoopExecutor(eventLoop: $0) }, within: timeout, probe: probe)
    }

    /// The same over any executors (the epoll transport's loops).
    static func check(
        _ loops: [any SessionExecutor],
        within timeout: Duration,
        probe: @escaping @Sendable () -> Void = {}
    ) async -> Bool {
        guard !loops.isEmpty else { return true }
        let verdict = Verdict(pending: loops.count)
        return await withCheckedContinuation { continuation in
            verdict.arm(continuation)
            for loop in loops {
                loop.execute {
                    probe()
                    verdict.loopAnswered()
                }
            }
            // A loop that never runs the probe must not hold the check forever: the timer
            // decides then. It runs on Swift's task executor, not on a NIO loop, so a stuck loop
            // cannot hold it back.
            Task {
                try? await Task.sleep(for: timeout)
                verdict.timedOut()
            }
        }
    }

    /// The first of "all loops answered" and "time is up" wins.
    private final class Verdict: Sendable {
        private struct State {
            var pending: Int
            var continuation: CheckedContinuation<Bool, Never>?
        }

        private let state: Mutex<State>

        init(pending: Int) { self.state = Mutex(State(pending: pending)) }

        func arm(_ continuation: CheckedContinuation<Bool, Never>) {
            self.state.withLock { $0.continuation = continuation }
        }

        func loopAnswered() {
            let done = self.state.withLock { state -> CheckedContinuation<Bool, Never>? in
                state.pending -= 1
                guard state.pending == 0 else { return nil }
                defer { state.continuation = nil }
                return state.continuation
            }
            done?.resume(returning: true)
        }

        func timedOut() {
            self.state.withLock { state -> CheckedContinuation<Bool, Never>? in
                defer { state.continuation = nil }
                return state.continuation
            }?.resume(returning: false)
        }
    }
}
