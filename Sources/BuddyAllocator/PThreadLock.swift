#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A mutex over `pthread_mutex_t`.
///
/// Used instead of `Synchronization.Mutex` for the locks threads contend on: on Linux that
/// Mutex waits in the kernel with priority-inheritance futexes, which ThreadSanitizer cannot see,
/// so every contended hand-over shows up as a false data race and the race tests could not tell
/// a real one from it. pthread mutexes are intercepted by the sanitizer and cost the same when
/// uncontended.
@usableFromInline
package final class PThreadLock: @unchecked Sendable {
    // @unchecked: the pthread mutex is what makes it safe to share.
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>

    package init() {
        self.mutex = .allocate(capacity: 1)
        self.mutex.initialize(to: pthread_mutex_t())
        let result = pthread_mutex_init(self.mutex, nil)
        precondition(result == 0, "pthread_mutex_init failed: \(result)")
    }

    deinit {
        pthread_mutex_destroy(self.mutex)
        self.mutex.deinitialize(count: 1)
        self.mutex.deallocate()
    }

    @usableFromInline
    package func lock() {
        let result = pthread_mutex_lock(self.mutex)
        assert(result == 0, "pthread_mutex_lock failed: \(result)")
    }

    @usableFromInline
    package func unlock() {
        let result = pthread_mutex_unlock(self.mutex)
        assert(result == 0, "pthread_mutex_unlock failed: \(result)")
    }

    package func withLock<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        self.lock()
        defer { self.unlock() }
        return try body()
    }
}

/// A value guarded by a ``PThreadLock``.
package final class PThreadLocked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched with `lock` held.
    let lock = PThreadLock()
    var value: Value

    package init(_ value: Value) { self.value = value }

    package func withLock<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try self.lock.withLock { () throws(Failure) -> Result in try body(&self.value) }
    }
}
