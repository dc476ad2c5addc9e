import BuddyAllocator
import GuestAgent
import GuestMemory
import GuestSimulator
import Synchronization

/// What a workload of `run` does with real memory: every block it allocates is a zeroed
/// allocation (skipping frames known to read back as zero, which are checked to be zero), then
/// each page is written with a pattern naming the frame and the allocation, and checked again
/// before the block is freed. A mismatch is an integrity error, the one thing a discard must
/// never cause: data lost in memory that is in use.
///
/// Called on the workload's thread only (``WorkloadMemory``); the counters may be read anywhere.
final class PatternedMemory: WorkloadMemory, @unchecked Sendable {
    let zeroing: ZeroedAllocator
    let memory: GuestMemory
    private var scratch: DiscardedFrames
    // The allocation number of each allocated block, at its head frame.
    private let allocationIDs: UnsafeMutablePointer<UInt32>
    private var nextID: UInt32 = 1
    private let integrity = Atomic<Int>(0)
    private let firstError = Mutex<String?>(nil)

    init(zeroing: ZeroedAllocator) {
        self.zeroing = zeroing
        self.memory = zeroing.memory
        self.scratch = zeroing.makeScratch()
        let frames = zeroing.allocator.configuration.frameCount
        self.allocationIDs = .allocate(capacity: frames)
        self.allocationIDs.initialize(repeating: 0, count: frames)
    }

    deinit { self.allocationIDs.deallocate() }

    /// Pages whose contents were not what the workload wrote (or not zero where promised).
    var integrityErrors: Int { self.integrity.load(ordering: .relaxed) }
    /// The first of them, for the log.
    var firstIntegrityError: String? { self.firstError.withLock { $0 } }

    /// The word every 64-bit word of `frame` holds while allocation `id` owns it.
    static func pattern(frame: Int, id: UInt32) -> UInt64 {
        UInt64(UInt32(truncatingIfNeeded: frame)) << 32 | UInt64(id)
    }

    func allocate(order: Int, migratetype: Migratetype) throws(BuddyError) -> Int {
        let frame = try self.zeroing.allocate(order: order, migratetype: migratetype, scratch: &self.scratch)
        let count = self.scratch.frameCount
        if self.zeroing.discardedReadsZero && self.scratch.discardedCount > 0 {
            // The zero guarantee is checked on every frame it spared from zeroing.
            for index in 0..<count where self.scratch.contains(index) {
                if !self.memory.frame(frame + index, holds: 0) {
                    self.fail("frame \(frame + index) was skipped as discarded but does not read zero")
                }
            }
        }
        let id = self.nextID
        self.nextID = self.nextID == .max ? 1 : self.nextID + 1
        self.allocationIDs[frame] = id
        for page in frame..<(frame + count) {
            self.memory.fill(frame: page, with: Self.pattern(frame: page, id: id))
        }
        return frame
    }

    func willFree(frame: Int, order: Int) {
        self.check(frame: frame, order: order)
    }

    /// Checks every page of a block the workload holds.
    func check(frame: Int, order: Int) {
        let id = self.allocationIDs[frame]
        for page in frame..<(frame + 1 << order)
        where !self.memory.frame(page, holds: Self.pattern(frame: page, id: id)) {
            self.fail("frame \(page) of allocation \(id) (block \(frame)/\(order)) lost its contents")
        }
    }

    private func fail(_ message: String) {
        self.integrity.add(1, ordering: .relaxed)
        self.firstError.withLock { first in
            if first == nil { first = message }
        }
    }
}
