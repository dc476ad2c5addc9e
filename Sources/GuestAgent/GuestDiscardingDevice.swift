import GuestMemory
import PageReporting
import Synchronization

/// Guest-side discard (`--discard guest`): a ``PageReportingDevice`` that reports through
/// another device (the broker) and, once the broker answered OK, discards the blocks in the
/// guest's own pool before the report counts as done. For memory the broker cannot hold.
///
/// If a discard fails, the report fails (the engine puts the blocks back unmarked), and the
/// blocks are handed to `takeBack`: the broker accounted them on its OK, so the agent sends a
/// `Reuse` for them and the ledger stays exact. Blocks of the batch already discarded before the
/// failure are prefaulted again when `repopulateOnFailure` is set (a prefaulted pool), so the
/// kernel's figure keeps matching the guest's record.
public final class GuestDiscardingDevice: PageReportingDevice {
    /// The device that reports to the host.
    public let inner: any PageReportingDevice
    /// The pool whose frames the blocks are.
    public let memory: GuestMemory
    /// Whether to make memory resident again after a failed discard.
    public let repopulateOnFailure: Bool
    private let takeBack: @Sendable ([Range<Int>]) -> Void
    private let counters = Mutex(Statistics())

    /// What the device has done.
    public struct Statistics: Sendable, Hashable {
        /// Bytes discarded in the pool.
        public var discardedBytes = 0
        /// Reports failed because a discard failed.
        public var discardFailures = 0
        /// The last discard error.
        public var lastError: GuestMemoryError?
    }

    /// Wraps `inner`; `takeBack` gets the frame ranges of a batch whose discard failed after the
    /// host accepted it.
    public init(
        wrapping inner: any PageReportingDevice,
        memory: GuestMemory,
        repopulateOnFailure: Bool,
        takeBack: @escaping @Sendable ([Range<Int>]) -> Void
    ) {
        self.inner = inner
        self.memory = memory
        self.repopulateOnFailure = repopulateOnFailure
        self.takeBack = takeBack
    }

    /// Wraps a broker device: blocks whose discard failed go back to the broker as `Reuse`.
    public convenience init(remote: RemoteReportingDevice, memory: GuestMemory, repopulateOnFailure: Bool) {
        let connection = remote.connection
        self.init(wrapping: remote, memory: memory, repopulateOnFailure: repopulateOnFailure) { ranges in
            guard let buffer = connection.reuseBuffer else { return }
            for range in ranges { buffer.framesTakenBack(first: range.lowerBound, count: range.count) }
            connection.flushReuse()
        }
    }

    public var preferredOrder: Int? { self.inner.preferredOrder }

    /// Counters since creation.
    public var statistics: Statistics { self.counters.withLock { $0 } }

    public func report(_ batch: ReportBatch) throws {
        try self.inner.report(batch)
        var done = 0
        do {
            for entry in batch {
                try self.memory.discard(frames: entry.frames)
                done += 1
            }
        } catch {
            if self.repopulateOnFailure {
                for entry in batch.prefix(done) {
                    try? self.memory.prefault(bytes: self.memory.byteRange(of: entry.frames))
                }
            }
            self.takeBack(batch.map(\.frames))
            self.counters.withLock { counters in
                counters.discardFailures += 1
                counters.lastError = error
            }
            throw error
        }
        let bytes = batch.frameCount * self.memory.pageSize
        self.counters.withLock { $0.discardedBytes += bytes }
    }
}
