import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The zone lock: a test-and-test-and-set spin lock, like the kernel's `zone->lock`.
///
/// It is held for one allocator call at a time (tens of nanoseconds) and never while anything
/// waits, so spinning beats sleeping; after a short spin it yields the CPU so that a waiter
/// cannot starve the holder on a machine with few cores. Being plain acquire/release atomics,
/// ThreadSanitizer sees every hand-over (it cannot see the PI futexes behind
/// `Synchronization.Mutex`), and the uncontended path is one compare-and-swap and one store,
/// inlined into the caller.
@usableFromInline
final class ZoneLock: Sendable {
    @usableFromInline let held = Atomic<Bool>(false)

    @usableFromInline init() {}

    @inlinable @inline(__always)
    func lock() {
        if self.held.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged { return }
        self.lockContended()
    }

    @usableFromInline
    func lockContended() {
        var spins = 0
        while true {
            // Spin on a plain load so waiters do not bounce the cache line with failed CASes.
            while self.held.load(ordering: .relaxed) {
                spins += 1
                if spins > 64 {
                    sched_yield()
                    spins = 0
                }
            }
            if self.held.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged { return }
        }
    }

    @inlinable @inline(__always)
    func unlock() {
        self.held.store(false, ordering: .releasing)
    }
}
