import Dispatch
import NIOCore
import PageReporting
import Synchronization

/// A ``PageReportingDevice`` whose host is the broker at the other end of an
/// ``AgentConnection``.
///
/// ``report(_:)`` runs on the engine's worker: it sends the batch as a `Report` and blocks the
/// worker (never an event loop) until the result arrives or the connection's report timeout
/// passes. Anything but `OK` throws an ``AgentError``, so the engine puts the blocks back
/// unmarked and stops the pass; the error's ``AgentError/retryAfter`` is the larger of the
/// broker's `retry_after_ms` and the device's own backoff, which doubles with each failure in a
/// row (from ``failureBackoffInitial`` up to ``failureBackoffMaximum``) and resets on success.
/// The engine then tries again after that long instead of waiting for the next large free, so
/// memory refused while the broker was away is reported once it is back.
public final class RemoteReportingDevice: PageReportingDevice {
    /// The connection reports go over.
    public let connection: AgentConnection
    /// The backoff after the first failure in a row.
    public let failureBackoffInitial: Duration
    /// The largest backoff.
    public let failureBackoffMaximum: Duration

    private let failuresInARow = Atomic<Int>(0)

    /// Creates a device reporting over `connection`.
    public init(
        connection: AgentConnection,
        failureBackoffInitial: Duration = .seconds(1),
        failureBackoffMaximum: Duration = .seconds(30)
    ) {
        self.connection = connection
        self.failureBackoffInitial = failureBackoffInitial
        self.failureBackoffMaximum = failureBackoffMaximum
    }

    /// The guest's reporting order, as announced in the hello.
    public var preferredOrder: Int? { self.connection.geometry.minOrder }

    public func report(_ batch: ReportBatch) throws {
        try self.report(batch, token: nil)
    }

    /// Reports `batch`; `token` names the report to the connection's quarantine bookkeeping
    /// (``HostDiscardingDevice``).
    func report(_ batch: ReportBatch, token: UInt64?) throws {
        precondition(!self.connection.eventLoop.inEventLoop, "report(_:) blocks: never call it on the event loop")
        var blocks: [UInt64] = []
        blocks.reserveCapacity(2 * batch.count)
        for entry in batch {
            blocks.append(UInt64(entry.frame))
            blocks.append(UInt64(entry.order))
        }
        let future = self.connection.submitReport(blocks: blocks, token: token)
        // The connection's own timer fails the report at the timeout; the grace only guards
        // against an event loop too busy to run that timer.
        let waitLimit = self.connection.configuration.reportTimeout + .milliseconds(500)
        switch Self.wait(for: future, atMost: waitLimit) {
        case .success:
            self.failuresInARow.store(0, ordering: .relaxed)
        case .failure(var error):
            let failures = self.failuresInARow.add(1, ordering: .relaxed).newValue
            let backoff = ReconnectBackoff.nominal(
                initial: self.failureBackoffInitial,
                maximum: self.failureBackoffMaximum,
                attempt: failures - 1
            )
            error.retryAfter = max(error.retryAfter ?? .zero, backoff)
            throw error
        }
    }

    /// Blocks the calling thread until `future` completes or `limit` passes.
    static func wait(for future: EventLoopFuture<Void>, atMost limit: Duration) -> Result<Void, AgentError> {
        let outcome = OutcomeSlot()
        let done = DispatchSemaphore(value: 0)
        future.whenComplete { result in
            outcome.value.withLock { value in
                value = result.mapError { error in
                    error as? AgentError ?? AgentError(code: .disconnected, message: "\(error)")
                }
            }
            done.signal()
        }
        let (seconds, attoseconds) = limit.components
        let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        guard done.wait(timeout: .now() + .nanoseconds(Int(clamping: nanoseconds))) == .success else {
            return .failure(AgentError(code: .timedOut, message: "no result within \(limit)"))
        }
        return outcome.value.withLock { $0 } ?? .failure(AgentError(code: .timedOut, message: "no result"))
    }
}

/// Hands a report's outcome from the event loop to the waiting worker.
private final class OutcomeSlot: Sendable {
    let value = Mutex<Result<Void, AgentError>?>(nil)
}
