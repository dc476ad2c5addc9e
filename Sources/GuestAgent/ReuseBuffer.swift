import BuddyAllocator
import Synchronization

/// Collects the runs of discarded frames the allocator hands out again, for the connection to
/// send as `Reuse`.
///
/// ``framesReused(first:count:)`` runs under the allocator's zone lock on whichever thread
/// allocates, so it only appends to an array behind its own short lock (merging a run that
/// continues the previous one); the connection takes the whole array on its event loop.
/// While no session is active nothing is kept: the sync that starts the next session carries
/// the truth, because the allocator's discarded record is authoritative.
public final class ReuseBuffer: ReuseObserver {
    private struct State {
        var collecting = false
        /// Flattened `(first_frame, count)` pairs.
        var pairs: [UInt64] = []
    }

    private let state = Mutex(State())
    private let reused = Atomic<Int>(0)

    /// Creates an empty buffer that does not collect until a session starts.
    public init() {}

    /// Pages reported discarded that the guest has taken back, over the buffer's lifetime,
    /// whether or not a session was active.
    public var reusedPages: Int { self.reused.load(ordering: .relaxed) }

    public func framesReused(first: Int, count: Int) {
        self.reused.add(count, ordering: .relaxed)
        self.append(first: first, count: count)
    }

    /// Frames the host accepted in a report that the guest could not complete (a guest-side
    /// discard failed): sent as `Reuse` like reused frames, but not counted in ``reusedPages``.
    public func framesTakenBack(first: Int, count: Int) {
        self.append(first: first, count: count)
    }

    private func append(first: Int, count: Int) {
        self.state.withLock { state in
            guard state.collecting else { return }
            let end = state.pairs.count
            if end >= 2, state.pairs[end - 2] + state.pairs[end - 1] == UInt64(first) {
                state.pairs[end - 1] += UInt64(count)
            } else {
                state.pairs.append(UInt64(first))
                state.pairs.append(UInt64(count))
            }
        }
    }

    /// Starts a session's collection, dropping anything older. Call it *before* taking the
    /// snapshot for the sync: a run reused in between is then both absent from the snapshot
    /// and sent as `Reuse`, which the broker ignores; the other order could lose it.
    public func startCollecting() {
        self.state.withLock { state in
            state.collecting = true
            state.pairs.removeAll(keepingCapacity: true)
        }
    }

    /// Stops collecting (the session ended) and drops what was not sent.
    public func stopCollecting() {
        self.state.withLock { state in
            state.collecting = false
            state.pairs.removeAll()
        }
    }

    /// Takes every collected pair, leaving the buffer empty.
    public func take() -> [UInt64] {
        self.state.withLock { state in
            guard !state.pairs.isEmpty else { return [] }
            var taken: [UInt64] = []
            swap(&taken, &state.pairs)
            return taken
        }
    }
}
