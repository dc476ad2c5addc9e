import PageReporting

/// The bookkeeping of the quarantine (`docs/protocol.md`, "Never losing a guest's data"), as a
/// value-type state machine: it decides which reports' frames must be kept from the allocator
/// and when they may come back; ``ReportQuarantine`` performs what it returns on the allocator.
///
/// With host discard the broker punches a report's memory before it answers. A report the agent
/// stopped waiting for (timed out, connection lost, broker stopped) may still be punched by a
/// broker that was only slow, so its frames must not be handed out again until the broker can no
/// longer discard them: its late result arrived, or a later session's `ServerHello` said
/// `prior_reports_settled`. Reports are named by a token the device picks and by the session
/// (generation) they were sent in.
///
/// Frames are held by pageblock, the allocator's unit of isolation: a pageblock is isolated
/// when the first held report touching it is abandoned and given back when the last is released.
public struct QuarantineStateMachine: Sendable {
    /// What a device does with a report it stopped waiting for.
    public enum Decision: Sendable, Hashable {
        /// Keep its frames from the allocator: isolate these pageblocks (first index of each).
        case quarantine(isolate: [Int])
        /// Its result is already known: the broker accepted it (the report counts) or refused it
        /// (nothing was discarded); no quarantine.
        case resolved(accepted: Bool)
    }

    /// What to do after a report's fate became known.
    public struct Release: Sendable, Hashable {
        /// Pageblocks (first frame) to give back to the allocator.
        public var pageblocks: [Int] = []
        /// Reports released.
        public var reports = 0
        /// Frames of those reports.
        public var frames = 0
        /// Blocks the broker accepted after all (a late `OK`): punched, so mark them discarded
        /// before the pageblocks come back.
        public var discarded: [ReportEntry] = []

        public init(pageblocks: [Int] = [], reports: Int = 0, frames: Int = 0, discarded: [ReportEntry] = []) {
            self.pageblocks = pageblocks
            self.reports = reports
            self.frames = frames
            self.discarded = discarded
        }

        /// Whether anything came back.
        public var isEmpty: Bool { self.reports == 0 }
    }

    /// What the quarantine holds and has done.
    public struct Figures: Sendable, Hashable {
        /// Reports whose frames are held now.
        public var reports = 0
        /// Frames of those reports (the allocator may hold more: whole pageblocks).
        public var frames = 0
        /// Pageblocks isolated now.
        public var pageblocks = 0
        /// Reports ever quarantined.
        public var quarantinedTotal = 0
        /// Reports released because their late result arrived.
        public var releasedByLateResult = 0
        /// Reports released because a later session's hello said `prior_reports_settled`.
        public var releasedBySettledSession = 0

        public init() {}
    }

    private struct Held: Sendable {
        var generation: Int
        var blocks: [ReportEntry]
        var pageblocks: [Int]
        var frames: Int
    }

    /// The allocator's pageblock order: frames `n << pageblockOrder ..< (n + 1) << pageblockOrder`
    /// are pageblock `n`.
    public let pageblockOrder: Int
    /// Reports sent and not yet finished by the device: token → generation.
    private var inFlight: [UInt64: Int] = [:]
    /// Results that arrived before the device finished with the report: token → accepted.
    private var early: [UInt64: Bool] = [:]
    private var held: [UInt64: Held] = [:]
    private var pageblockHolders: [Int: Int] = [:]
    /// The newest session seen.
    private var generation = 0
    public private(set) var figures = Figures()

    /// Creates an empty quarantine for an allocator with `pageblockOrder`.
    public init(pageblockOrder: Int) {
        self.pageblockOrder = pageblockOrder
    }

    /// A session began. With `priorReportsSettled`, nothing of an earlier session can still be
    /// discarded: every report sent before it is released.
    public mutating func sessionStarted(generation: Int, priorReportsSettled: Bool) -> Release {
        self.generation = max(self.generation, generation)
        guard priorReportsSettled else { return Release() }
        var release = Release()
        for (token, entry) in self.held where entry.generation < generation {
            self.held[token] = nil
            self.release(entry, into: &release)
            self.figures.releasedBySettledSession += 1
        }
        // Reports of earlier sessions the device has not finished with yet: their fate is now
        // known to be "nothing more will happen", the same as a refusal for the device.
        for (token, sent) in self.inFlight where sent < generation && self.early[token] == nil {
            self.early[token] = false
        }
        return release
    }

    /// Report `token` was written to the broker in session `generation`.
    public mutating func sent(token: UInt64, generation: Int) {
        self.inFlight[token] = generation
    }

    /// The device has the report's final answer (accepted, refused, or never sent): forget it.
    public mutating func finished(token: UInt64) {
        self.inFlight[token] = nil
        self.early[token] = nil
    }

    /// The device stopped waiting for report `token` of `blocks` (timed out, or the connection
    /// ended): quarantine its frames unless its result is already known.
    public mutating func abandoned(token: UInt64, blocks: [ReportEntry]) -> Decision {
        let generation = self.inFlight.removeValue(forKey: token) ?? self.generation
        if let accepted = self.early.removeValue(forKey: token) {
            return .resolved(accepted: accepted)
        }
        var pageblocks: [Int] = []
        var isolate: [Int] = []
        var frames = 0
        for block in blocks {
            frames += 1 << block.order
            let first = block.frame >> self.pageblockOrder
            let last = (block.frame + (1 << block.order) - 1) >> self.pageblockOrder
            for pageblock in first...last where !pageblocks.contains(pageblock) {
                pageblocks.append(pageblock)
                let holders = self.pageblockHolders[pageblock, default: 0]
                if holders == 0 { isolate.append(pageblock << self.pageblockOrder) }
                self.pageblockHolders[pageblock] = holders + 1
            }
        }
        self.held[token] = Held(generation: generation, blocks: blocks, pageblocks: pageblocks, frames: frames)
        self.figures.reports += 1
        self.figures.frames += frames
        self.figures.pageblocks = self.pageblockHolders.count
        self.figures.quarantinedTotal += 1
        return .quarantine(isolate: isolate)
    }

    /// The result of report `token` arrived after the agent stopped waiting for it: the broker
    /// has finished with it, so its frames may come back. Accepted, they were punched: the
    /// release says to mark them discarded first (the resynchronising sync then carries them).
    public mutating func lateResult(token: UInt64, accepted: Bool) -> Release {
        guard let entry = self.held.removeValue(forKey: token) else {
            // The device has not taken its decision yet: it will find the answer.
            if self.inFlight[token] != nil { self.early[token] = accepted }
            return Release()
        }
        var release = Release()
        self.release(entry, into: &release)
        if accepted { release.discarded = entry.blocks }
        self.figures.releasedByLateResult += 1
        return release
    }

    private mutating func release(_ entry: Held, into release: inout Release) {
        for pageblock in entry.pageblocks {
            let holders = self.pageblockHolders[pageblock, default: 1] - 1
            if holders == 0 {
                self.pageblockHolders[pageblock] = nil
                release.pageblocks.append(pageblock << self.pageblockOrder)
            } else {
                self.pageblockHolders[pageblock] = holders
            }
        }
        release.reports += 1
        release.frames += entry.frames
        self.figures.reports -= 1
        self.figures.frames -= entry.frames
        self.figures.pageblocks = self.pageblockHolders.count
    }
}
