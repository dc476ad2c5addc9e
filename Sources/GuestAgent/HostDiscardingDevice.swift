import PageReporting
import Synchronization

/// Host-side discard (`--discard host`): a ``PageReportingDevice`` whose broker holds the guest's
/// memory and punches every report out before it answers OK, so an accepted report needs no work
/// in the guest: the engine marks the frames discarded (they read back as zero).
///
/// A report the device stopped waiting for (timed out, connection lost, agent stopping) may still
/// be punched by a slow broker: before the error goes to the engine its frames are quarantined
/// (``ReportQuarantine``), so the engine's error path puts them back where the allocator cannot
/// hand them out, until the late result or a settled session releases them. If the late result
/// already came, the device takes it: an `OK` makes the report count (it was discarded), a
/// refusal fails it as usual.
///
/// While host discard is off (``HostDiscard/Policy/preferred`` and the attach failed) reports go
/// to `fallback`, a ``GuestDiscardingDevice`` over the same remote device.
public final class HostDiscardingDevice: PageReportingDevice {
    /// The device that reports to the broker.
    public let remote: RemoteReportingDevice
    /// The attachment, quarantine and mode.
    public let hostDiscard: HostDiscard
    /// Used while host discard is off.
    public let fallback: (any PageReportingDevice)?
    private let nextToken = Atomic<UInt64>(0)

    /// Reports through `remote` with host discard; `fallback` (guest discard) serves when
    /// `hostDiscard` fell back.
    public init(remote: RemoteReportingDevice, hostDiscard: HostDiscard, fallback: (any PageReportingDevice)? = nil) {
        self.remote = remote
        self.hostDiscard = hostDiscard
        self.fallback = fallback
    }

    public var preferredOrder: Int? { self.remote.preferredOrder }

    public func report(_ batch: ReportBatch) throws {
        switch self.hostDiscard.mode {
        case .guest:
            try (self.fallback ?? self.remote).report(batch)
            return
        case .pending:
            // Decided before the first session becomes active, and never changed back: a report
            // before that could not be sent anyway, and must not go out undecided.
            throw AgentError(
                code: .notConnected,
                retryAfter: self.remote.failureBackoffInitial,
                message: "no session yet (host discard not attached)"
            )
        case .host:
            break
        }
        guard self.hostDiscard.attachment.isAttached else {
            // The broker no longer holds the memory: an OK now would free nothing. Start a new
            // session, whose preparation attaches again, and fail this one as never sent.
            self.remote.connection.restartSession(reason: "the memory attachment ended")
            throw AgentError(
                code: .memoryDetached,
                retryAfter: self.remote.failureBackoffInitial,
                message: "the broker does not hold the guest's memory; attaching again"
            )
        }
        guard let quarantine = self.hostDiscard.quarantine else {
            try self.remote.report(batch)
            return
        }
        let token = self.nextToken.add(1, ordering: .relaxed).newValue
        do {
            try self.remote.report(batch, token: token)
            quarantine.finished(token: token)
        } catch let error as AgentError where Self.mayStillBeDiscarded(error) {
            switch quarantine.abandoned(token: token, batch: batch) {
            case .resolved(accepted: true):
                return
            case .resolved(accepted: false):
                throw error
            case .quarantine:
                self.remote.connection.logger.notice(
                    "report unanswered: its frames are quarantined until the broker can no longer discard them",
                    metadata: [
                        "frames": "\(batch.frameCount)", "error": "\(error)",
                        "quarantined_bytes": "\(quarantine.quarantinedBytes)",
                    ]
                )
                throw error
            }
        } catch {
            quarantine.finished(token: token)
            throw error
        }
    }

    /// Whether the broker may still act on a report that failed with `error`: it was sent and
    /// no answer came (timeout, connection lost, broker error, agent stopping). A refusal is an
    /// answer; `not_connected` and the local limits mean it was never sent.
    static func mayStillBeDiscarded(_ error: AgentError) -> Bool {
        switch error.code {
        case .refused, .notConnected, .outsideSessionLimits, .frameTooLarge: false
        default: true
        }
    }
}
