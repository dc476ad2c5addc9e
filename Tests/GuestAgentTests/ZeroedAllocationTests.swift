import BuddyAllocator
import CGuestMemory
import Glibc
import GuestAgent
import GuestMemory
import PageReporting
import Synchronization
import Testing

/// A host that accepts every report; the ``GuestDiscardingDevice`` around it discards.
final class AcceptingDevice: PageReportingDevice {
    func report(_ batch: ReportBatch) throws {}
}

/// Ranges a device gave back, from any thread.
final class RangeSink: Sendable {
    let ranges = Mutex<[Range<Int>]>([])
}

/// An engine over a real pool whose reports the guest discards itself, in virtual time.
///
/// 256 frames in blocks of at most 64 (order 6), no watermarks, reporting from order 4 in
/// batches of 4: a pass reports three of the four blocks (`__isolate_free_page` keeps
/// `min + 2^order` free, so the last one stays).
struct DiscardingPool {
    static let frames = 256
    let allocator: BuddyAllocator
    let memory: GuestMemory
    let clock = VirtualClock()
    let device: GuestDiscardingDevice
    let engine: PageReportingEngine
    let takenBack = RangeSink()

    init(memory: GuestMemory? = nil) throws {
        self.allocator = try BuddyAllocator(Self.configuration)
        let memory = try memory ?? GuestMemory.memfd(length: Self.frames * 4096)
        self.memory = memory
        let takenBack = self.takenBack
        self.device = GuestDiscardingDevice(wrapping: AcceptingDevice(), memory: memory, repopulateOnFailure: false) {
            ranges in takenBack.ranges.withLock { $0 += ranges }
        }
        self.engine = try PageReportingEngine.register(
            device: self.device,
            allocator: self.allocator,
            scheduler: self.clock,
            configuration: Self.reporting
        )
    }

    static let configuration = AllocatorConfiguration(
        frameCount: frames,
        orderCount: 7,
        pageblockOrder: 6,
        watermarks: .none
    )
    static let reporting = PageReportingConfiguration(capacity: 4, delay: .seconds(2), orderOverride: 4)

    /// Runs the pending pass.
    func pass() { self.clock.advance(by: .seconds(2)) }

    var discardedFrames: Int { self.allocator.discardedRanges().reduce(0) { $0 + $1.count } }
}

@Suite struct ZeroedAllocationTests {
    @Test func guestDiscardFreesReportedMemory() throws {
        let pool = try DiscardingPool()
        for frame in 0..<256 { pool.memory.fill(frame: frame, with: 0xFFFF) }
        #expect(try pool.memory.residentBytes() == 256 * 4096)
        pool.pass()
        #expect(pool.discardedFrames == 192)
        #expect(try pool.memory.residentBytes() == 64 * 4096, "the kernel holds nothing of what was reported")
        #expect(pool.device.statistics.discardedBytes == 192 * 4096)
        for range in pool.allocator.discardedRanges() {
            #expect(try pool.memory.residentBytes(frames: range) == 0)
        }
        pool.engine.unregister()
    }

    @Test func aDiscardedFrameIsNotWrittenAndTheRestIsZeroed() throws {
        let pool = try DiscardingPool()
        for frame in 0..<256 { pool.memory.fill(frame: frame, with: 0xFFFF) }
        pool.pass()
        // Take order-0 frames until one comes from a discarded block, dirty it, give all back:
        // that block is now one frame in use-and-dirty, 63 discarded.
        var scratch = DiscardedFrames(maximumOrder: 6)
        var taken: [Int] = []
        var dirty = -1
        while dirty < 0 {
            let frame = try pool.allocator.allocate(order: 0, discarded: &scratch)
            if scratch.discardedCount == 1 { dirty = frame } else { taken.append(frame) }
        }
        pool.memory.fill(frame: dirty, with: 0xDEAD_BEEF)
        for frame in taken + [dirty] { try pool.allocator.free(frame: frame, order: 0) }
        #expect(pool.discardedFrames == 191)
        let resident = try pool.memory.residentBytes()
        #expect(resident == 65 * 4096)

        let zeroing = ZeroedAllocator(allocator: pool.allocator, memory: pool.memory, discardedReadsZero: true)
        var blocks: [Int] = []
        for _ in 0..<4 { blocks.append(try zeroing.allocate(order: 6, scratch: &scratch)) }
        #expect(zeroing.skippedBytes == 191 * 4096)
        #expect(zeroing.zeroedBytes == 65 * 4096)
        // Not written: the kernel still holds none of the discarded frames (checked before reading).
        #expect(try pool.memory.residentBytes() == resident)
        let mixed = dirty & ~63
        #expect(try pool.memory.residentBytes(frames: mixed..<(mixed + 64)) == 4096)
        for frame in 0..<256 { #expect(pool.memory.frame(frame, holds: 0), "frame \(frame) reads zero") }
        #expect(pool.allocator.discardedRanges().isEmpty)
        for block in blocks { try pool.allocator.free(frame: block, order: 6) }
        pool.engine.unregister()
        try pool.allocator.validate()
    }

    @Test func withoutRealDiscardEveryFrameIsZeroed() throws {
        // Accounting-only reporting marks frames discarded while their memory keeps its old
        // contents: nothing may be skipped.
        let allocator = try BuddyAllocator(DiscardingPool.configuration)
        let memory = try GuestMemory.anonymous(length: 256 * 4096)
        for frame in 0..<256 { memory.fill(frame: frame, with: 7) }
        let clock = VirtualClock()
        let engine = try PageReportingEngine.register(
            device: AcceptingDevice(),
            allocator: allocator,
            scheduler: clock,
            configuration: DiscardingPool.reporting
        )
        clock.advance(by: .seconds(2))
        #expect(allocator.discardedRanges().reduce(0) { $0 + $1.count } == 192)
        let zeroing = ZeroedAllocator(allocator: allocator, memory: memory, discardedReadsZero: false)
        var scratch = zeroing.makeScratch()
        var discarded = 0
        for _ in 0..<4 {
            let frame = try zeroing.allocate(order: 6, scratch: &scratch)
            discarded += scratch.discardedCount
            for page in frame..<(frame + 64) { #expect(memory.frame(page, holds: 0)) }
        }
        #expect(discarded == 192)
        #expect(zeroing.skippedBytes == 0)
        #expect(zeroing.zeroedBytes == 256 * 4096)
        engine.unregister()
    }

    @Test func discardedFramesOfSmallAndLargeBlocks() throws {
        let pool = try DiscardingPool()
        pool.pass()
        var scratch = DiscardedFrames(maximumOrder: 6)
        var seen = 0
        var blocks: [Int] = []
        for _ in 0..<4 {
            let block = try pool.allocator.allocate(order: 6, discarded: &scratch)
            blocks.append(block)
            #expect(scratch.frameCount == 64)
            #expect(scratch.discardedCount == 0 || scratch.discardedCount == 64)
            var runs: [Range<Int>] = []
            scratch.forEachRun(discarded: true) { runs.append($0) }
            #expect(runs == (scratch.discardedCount == 64 ? [0..<64] : []))
            seen += scratch.discardedCount
        }
        #expect(seen == 192)
        // Freed and allocated again: no longer discarded, down to single frames.
        for block in blocks { try pool.allocator.free(frame: block, order: 6) }
        _ = try pool.allocator.allocate(order: 0, discarded: &scratch)
        #expect(scratch.frameCount == 1 && scratch.discardedCount == 0)
        pool.engine.unregister()
    }

    @Test func aFailedDiscardFailsTheReportAndGivesTheBlocksBack() throws {
        // A write-sealed memfd refuses every punch hole (EPERM): a real failure, no mock.
        let fd = pb_memfd_create("sealed", 0)
        defer { close(fd) }
        #expect(ftruncate(fd, off_t(256 * 4096)) == 0)
        #expect(pb_seal_write(fd) == 0)
        let base = mmap(nil, 256 * 4096, PROT_READ, MAP_SHARED, fd, 0)!
        defer { munmap(base, 256 * 4096) }
        let memory = try GuestMemory.external(base: base, length: 256 * 4096, fileDescriptor: fd)
        let pool = try DiscardingPool(memory: memory)
        pool.pass()
        #expect(pool.engine.statistics.reportsFailed == 1)
        #expect(pool.allocator.discardedRanges().isEmpty, "nothing is marked discarded")
        #expect(pool.device.statistics.discardFailures == 1)
        #expect(pool.device.statistics.lastError?.errnoName == "EPERM")
        // The host accepted the batch: every block of it goes back to the broker as Reuse.
        let given = pool.takenBack.ranges.withLock { $0 }
        #expect(given.reduce(0) { $0 + $1.count } == 192)
        #expect(pool.allocator.statistics.isolatedPages == 0)
        try pool.allocator.validate()
        pool.engine.unregister()
    }

    @Test func takenBackFramesAreSentButNotCountedAsReuse() {
        let buffer = ReuseBuffer()
        buffer.startCollecting()
        buffer.framesTakenBack(first: 0, count: 16)
        buffer.framesTakenBack(first: 16, count: 16)
        #expect(buffer.take() == [0, 32])
        #expect(buffer.reusedPages == 0)
    }
}

/// A discard that fails halfway through a batch, on a prefaulted pool: what was already
/// discarded is made resident again, so the kernel's figure keeps matching the record.
@Suite struct DiscardFailureTests {
    @Test func aFailureHalfwayRepopulatesWhatWasDiscarded() throws {
        // MADV_DONTNEED refuses mlocked pages (EINVAL): lock one 64-frame block in turn. Which
        // block comes first in the batch is the engine's business, so every block is tried:
        // in at least one case blocks before it were discarded already.
        var failures = 0
        for locked in 0..<4 {
            let length = DiscardingPool.frames * 4096
            let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
            defer { munmap(base, length) }
            let memory = try GuestMemory.external(base: base, length: length)
            try memory.prefault()
            #expect(mlock(memory.address(ofFrame: locked * 64), 64 * 4096) == 0)
            let allocator = try BuddyAllocator(DiscardingPool.configuration)
            let clock = VirtualClock()
            let sink = RangeSink()
            let device = GuestDiscardingDevice(wrapping: AcceptingDevice(), memory: memory, repopulateOnFailure: true) {
                ranges in sink.ranges.withLock { $0 += ranges }
            }
            let engine = try PageReportingEngine.register(
                device: device,
                allocator: allocator,
                scheduler: clock,
                configuration: DiscardingPool.reporting
            )
            clock.advance(by: .seconds(2))
            let discarded = allocator.discardedRanges().reduce(0) { $0 + $1.count }
            #expect(
                try memory.residentBytes() == length - discarded * 4096,
                "block \(locked) locked: the kernel's figure is the record"
            )
            if device.statistics.discardFailures > 0 {
                failures += 1
                #expect(discarded == 0)
                #expect(sink.ranges.withLock { $0 }.reduce(0) { $0 + $1.count } == 192)
            }
            engine.unregister()
            munlock(memory.address(ofFrame: locked * 64), 64 * 4096)
        }
        // Three of the four blocks are reported, so three cases fail their discard.
        #expect(failures == 3)
    }
}
