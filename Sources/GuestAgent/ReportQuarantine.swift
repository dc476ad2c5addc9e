import BuddyAllocator
import PageReporting
import Synchronization

/// Keeps the frames of unanswered host-discard reports away from the allocator until the broker
/// can no longer discard them (`docs/protocol.md`, "Never losing a guest's data"); the rules are
/// ``QuarantineStateMachine``'s, this class carries them out.
///
/// How frames are held without touching the reporting engine: when a report is abandoned its
/// blocks are still isolated by the engine (the device has not returned). The quarantine isolates
/// their pageblocks (``BuddyAllocator/isolatePageblock(frame:)``, the allocator's own
/// `MIGRATE_ISOLATE`); the engine's error path then puts the blocks back as the kernel does, and
/// they land on the isolate free lists, which neither allocation nor reporting touches. Release
/// marks the frames of a report accepted late as discarded (they were punched), undoes the
/// isolation with the pageblock's previous migratetype, and asks the engine for a pass (the
/// release handler) so that frames of unknown state are reported again. A pageblock is the unit: with a
/// reporting order below the pageblock order the other free frames of that pageblock, and frames
/// freed into it meanwhile, are held too (safe; they come back with it).
///
/// Locks: its own, then the allocator's zone locks (never the other way round).
public final class ReportQuarantine: Sendable {
    /// The allocator whose frames are held.
    public let allocator: BuddyAllocator
    private let state: Mutex<State>
    private let releaseHandler = Mutex<(@Sendable () -> Void)?>(nil)

    private struct State {
        var machine: QuarantineStateMachine
        /// Pageblock (first frame) → its migratetype before the quarantine isolated it.
        var previousTypes: [Int: Migratetype] = [:]
        /// Pageblocks that were isolated already (by the embedder): release leaves them so.
        var foreign: Set<Int> = []
    }

    /// Creates a quarantine for `allocator`.
    public init(allocator: BuddyAllocator) {
        self.allocator = allocator
        self.state = Mutex(
            State(machine: QuarantineStateMachine(pageblockOrder: allocator.configuration.pageblockOrder))
        )
    }

    /// Called (without locks held) after frames came back; the agent asks the reporting engine
    /// for a pass, so that memory punched after all is counted by the next report.
    public func setReleaseHandler(_ handler: (@Sendable () -> Void)?) {
        self.releaseHandler.withLock { $0 = handler }
    }

    /// What is held and what has been released.
    public var figures: QuarantineStateMachine.Figures { self.state.withLock { $0.machine.figures } }

    /// Bytes of unanswered reports held now.
    public var quarantinedBytes: Int { self.figures.frames * self.allocator.configuration.pageSize }

    // MARK: From the connection

    /// A session began (see ``QuarantineStateMachine/sessionStarted(generation:priorReportsSettled:)``).
    public func sessionStarted(generation: Int, priorReportsSettled: Bool) {
        self.perform { $0.sessionStarted(generation: generation, priorReportsSettled: priorReportsSettled) }
    }

    /// Report `token` went out in session `generation`.
    public func sent(token: UInt64, generation: Int) {
        self.state.withLock { $0.machine.sent(token: token, generation: generation) }
    }

    /// The late result of report `token` arrived.
    public func lateResult(token: UInt64, accepted: Bool) {
        self.perform { $0.lateResult(token: token, accepted: accepted) }
    }

    // MARK: From the device

    /// The device has the final answer of report `token`.
    public func finished(token: UInt64) {
        self.state.withLock { $0.machine.finished(token: token) }
    }

    /// The device stopped waiting for report `token`, whose blocks the engine holds isolated:
    /// quarantines them, or says the result is already known.
    public func abandoned(token: UInt64, batch: ReportBatch) -> QuarantineStateMachine.Decision {
        let blocks = Array(batch)
        return self.state.withLock { state in
            let decision = state.machine.abandoned(token: token, blocks: blocks)
            if case .quarantine(let pageblocks) = decision {
                for pageblock in pageblocks {
                    let previous = self.allocator.frameInfo(pageblock)?.pageblockMigratetype ?? .movable
                    if previous == .isolate {
                        state.foreign.insert(pageblock)
                        continue
                    }
                    state.previousTypes[pageblock] = previous
                    // In range by construction (the frames are the engine's own).
                    try? self.allocator.isolatePageblock(frame: pageblock)
                }
            }
            return decision
        }
    }

    private func perform(_ step: (inout QuarantineStateMachine) -> QuarantineStateMachine.Release) {
        let release = self.state.withLock { state in
            let release = step(&state.machine)
            // While the pageblocks are still isolated: nothing can allocate these frames yet.
            for block in release.discarded {
                _ = try? self.allocator.markDiscardedInIsolatedPageblocks(frames: block.frames)
            }
            for pageblock in release.pageblocks {
                guard state.foreign.remove(pageblock) == nil else { continue }
                let previous = state.previousTypes.removeValue(forKey: pageblock) ?? .movable
                try? self.allocator.undoIsolatePageblock(frame: pageblock, to: previous)
            }
            return release
        }
        guard !release.isEmpty else { return }
        self.releaseHandler.withLock { $0 }?()
    }
}
