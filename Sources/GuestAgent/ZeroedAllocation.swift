import BuddyAllocator
import GuestMemory
import Synchronization

/// Zeroed allocations over a real pool (the kernel's `__GFP_ZERO`) that skip the frames the
/// host has discarded: those already read back as zeroes, so writing zeroes over them would only
/// fault them back in for nothing. virtio-spec issue 242 asks for this; no VMM does it.
///
/// The allocator's per-frame discarded record is the engine's knowledge of what the host
/// holds discarded. It equals "reads back as zero" only when a report really discarded memory
/// (guest or host discard): with accounting-only reporting the record is set but the memory
/// keeps its old contents, so pass `discardedReadsZero: false` and every frame is zeroed.
public final class ZeroedAllocator: Sendable {
    /// The allocator blocks come from.
    public let allocator: BuddyAllocator
    /// The pool behind the allocator's frames.
    public let memory: GuestMemory
    /// Whether a frame the allocator records discarded is known to read back as zero.
    public let discardedReadsZero: Bool

    private let zeroed = Atomic<Int>(0)
    private let skipped = Atomic<Int>(0)

    /// Zeroed allocations from `allocator` over `memory` (frame N of one is frame N of the other).
    public init(allocator: BuddyAllocator, memory: GuestMemory, discardedReadsZero: Bool) {
        precondition(
            allocator.configuration.pageSize == memory.pageSize
                && allocator.configuration.frameCount <= memory.frameCount,
            "the pool must cover the allocator's frames"
        )
        self.allocator = allocator
        self.memory = memory
        self.discardedReadsZero = discardedReadsZero
    }

    /// Bytes written with zeroes so far.
    public var zeroedBytes: Int { self.zeroed.load(ordering: .relaxed) }
    /// Bytes of zeroed allocations left unwritten because they were discarded.
    public var skippedBytes: Int { self.skipped.load(ordering: .relaxed) }

    /// Scratch space for ``allocate(order:migratetype:scratch:)``; one per allocating thread.
    public func makeScratch() -> DiscardedFrames {
        DiscardedFrames(maximumOrder: self.allocator.configuration.orderCount - 1)
    }

    /// Allocates a block of `order` whose memory reads all zeroes: frames that were not
    /// discarded are zeroed, discarded ones are left alone. `scratch` tells the caller afterwards
    /// which frames were skipped.
    public func allocate(
        order: Int,
        migratetype: Migratetype = .movable,
        scratch: inout DiscardedFrames
    ) throws(BuddyError) -> Int {
        let frame = try self.allocator.allocate(order: order, migratetype: migratetype, discarded: &scratch)
        let pageSize = self.memory.pageSize
        if !self.discardedReadsZero || scratch.discardedCount == 0 {
            self.memory.zero(frames: frame..<(frame + scratch.frameCount))
            self.zeroed.add(scratch.frameCount * pageSize, ordering: .relaxed)
            return frame
        }
        scratch.forEachRun(discarded: false) { run in
            self.memory.zero(frames: (frame + run.lowerBound)..<(frame + run.upperBound))
        }
        self.zeroed.add((scratch.frameCount - scratch.discardedCount) * pageSize, ordering: .relaxed)
        self.skipped.add(scratch.discardedCount * pageSize, ordering: .relaxed)
        return frame
    }
}
