import BuddyAllocator
import Dispatch
import Foundation
import Synchronization
import Testing

/// Who holds each frame, so two threads handed the same frame are caught the moment it happens.
///
/// Guarded by a pthread mutex, not Synchronization.Mutex: this test also runs under
/// ThreadSanitizer, which cannot see the PI futexes behind Synchronization.Mutex and reports
/// its contended hand-overs as races.
private final class Ownership: Sendable {
    private let owners: PThreadLocked<[UInt8]>
    let conflicts = Atomic<Int>(0)
    let unexpectedErrors = Atomic<Int>(0)

    init(frames: Int) {
        self.owners = PThreadLocked(Array(repeating: 0, count: frames))
    }

    func claim(_ frame: Int, order: Int, by owner: UInt8) {
        let ok = self.owners.withLock { owners in
            let range = frame..<(frame + (1 << order))
            guard range.allSatisfy({ owners[$0] == 0 }) else { return false }
            for index in range { owners[index] = owner }
            return true
        }
        if !ok { self.conflicts.add(1, ordering: .relaxed) }
    }

    func release(_ frame: Int, order: Int) {
        self.owners.withLock { owners in
            for index in frame..<(frame + (1 << order)) { owners[index] = 0 }
        }
    }
}

/// Counts frames reported reused.
private final class ReuseCounter: ReuseObserver {
    let frames = Atomic<Int>(0)

    func framesReused(first: Int, count: Int) { self.frames.add(count, ordering: .relaxed) }
}

/// Runs `body(index)` on `count` new threads, released together, and waits for all of them.
private func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let start = DispatchSemaphore(value: 0)
    let done = DispatchGroup()
    for index in 0..<count {
        done.enter()
        let thread = Thread {
            start.wait()
            body(index)
            done.leave()
        }
        thread.start()
    }
    for _ in 0..<count { start.signal() }
    done.wait()
}

/// Random allocate/free traffic from one thread; frees everything it holds at the end.
private func churn(
    _ allocator: BuddyAllocator,
    _ ownership: Ownership,
    seed: UInt64,
    operations: Int,
    owner: UInt8,
    maxOrder: Int = 10
) {
    var generator = SplitMix64(seed: seed)
    var blocks: [(frame: Int, order: Int)] = []
    let migratetypes: [Migratetype] = [.unmovable, .movable, .reclaimable]
    for _ in 0..<operations {
        if blocks.isEmpty || Int.random(in: 0..<100, using: &generator) < 55 {
            let order =
                Int.random(in: 0..<100, using: &generator) < 80
                ? Int.random(in: 0...3, using: &generator)
                : Int.random(in: 0...maxOrder, using: &generator)
            let migratetype = migratetypes[Int.random(in: 0..<3, using: &generator)]
            do {
                let frame = try allocator.allocate(order: order, migratetype: migratetype)
                ownership.claim(frame, order: order, by: owner)
                blocks.append((frame, order))
            } catch {
                if error.code != .outOfMemory { ownership.unexpectedErrors.add(1, ordering: .relaxed) }
            }
        } else {
            let block = blocks.remove(at: Int.random(in: 0..<blocks.count, using: &generator))
            ownership.release(block.frame, order: block.order)
            do {
                try allocator.free(frame: block.frame, order: block.order)
            } catch {
                ownership.unexpectedErrors.add(1, ordering: .relaxed)
            }
        }
    }
    for block in blocks {
        ownership.release(block.frame, order: block.order)
        do {
            try allocator.free(frame: block.frame, order: block.order)
        } catch {
            ownership.unexpectedErrors.add(1, ordering: .relaxed)
        }
    }
}

/// Isolates, discards, puts back and marks Reported like the reporting engine, zone by zone.
private func report(_ allocator: BuddyAllocator, _ ownership: Ownership, seed: UInt64, passes: Int) {
    var generator = SplitMix64(seed: seed)
    let owner: UInt8 = 200
    for _ in 0..<passes {
        for zone in allocator.zones {
            let order = Int.random(in: 3...10, using: &generator)
            var batch: [Int] = []
            zone.withLock { locked in
                for migratetype in [Migratetype.unmovable, .movable, .reclaimable] {
                    var cursor = locked.firstFreeBlock(order: order, migratetype: migratetype)
                    while let frame = cursor, batch.count < 8 {
                        cursor = locked.nextFreeBlock(after: frame)
                        guard !locked.isReported(frame) else { continue }
                        guard locked.isolateFreeBlock(frame, order: order) else { return }
                        batch.append(frame)
                    }
                }
            }
            // The "report": the lock is not held here, allocations go on.
            for frame in batch { ownership.claim(frame, order: order, by: owner) }
            let discard = Bool.random(using: &generator)
            for frame in batch { ownership.release(frame, order: order) }
            zone.withLock { locked in
                for frame in batch {
                    if discard { locked.markDiscarded(frame, order: order) }
                    locked.putbackIsolatedBlock(
                        frame,
                        order: order,
                        migratetype: locked.pageblockMigratetype(of: frame),
                        toTail: true
                    )
                    if discard, locked.isFreeBlock(frame, order: order) { locked.setReported(frame) }
                }
            }
        }
    }
}

@Suite("Concurrency: many threads on one allocator")
struct ConcurrencyTests {
    private static let zones = [
        ZoneLayout(name: "DMA", frames: 0..<4096), ZoneLayout(name: "Normal", frames: 4096..<16_384),
    ]

    private func expectBootLayout(_ allocator: BuddyAllocator) throws {
        try allocator.validate()
        let statistics = allocator.statistics
        #expect(statistics.freePages == statistics.totalPages)
        #expect(statistics.allocatedPages == 0)
        #expect(statistics.isolatedPages == 0)
        for (index, zone) in allocator.configuration.zones.enumerated() {
            #expect(statistics.zones[index].nrFree == bootNrFree(zone: zone.frames, orderCount: 11))
        }
    }

    @Test("four threads allocating and freeing never share a frame and lose nothing")
    func fourThreadsChurn() throws {
        let allocator = try BuddyAllocator(AllocatorConfiguration(frameCount: 16_384, zones: Self.zones))
        let ownership = Ownership(frames: 16_384)
        onThreads(4) { index in
            churn(allocator, ownership, seed: 0xABCD + UInt64(index), operations: 5000, owner: UInt8(index + 1))
        }
        #expect(ownership.conflicts.load(ordering: .relaxed) == 0)
        #expect(ownership.unexpectedErrors.load(ordering: .relaxed) == 0)
        try self.expectBootLayout(allocator)
    }

    @Test("under memory pressure: small memory, large orders, six threads")
    func sixThreadsPressure() throws {
        let allocator = try makeAllocator(frames: 2048, orderCount: 8, pageblockOrder: 5)
        let ownership = Ownership(frames: 2048)
        onThreads(6) { index in
            churn(
                allocator,
                ownership,
                seed: 77 * UInt64(index + 1),
                operations: 3000,
                owner: UInt8(index + 1),
                maxOrder: 7
            )
        }
        #expect(ownership.conflicts.load(ordering: .relaxed) == 0)
        #expect(ownership.unexpectedErrors.load(ordering: .relaxed) == 0)
        try allocator.validate()
        #expect(allocator.statistics.freePages == 2048)
        #expect(nrFree(allocator) == [0, 0, 0, 0, 0, 0, 0, 16])
    }

    @Test("allocating threads next to an engine-style isolate/putback thread")
    func churnWhileReporting() throws {
        let allocator = try BuddyAllocator(AllocatorConfiguration(frameCount: 16_384, zones: Self.zones))
        let counter = ReuseCounter()
        allocator.setReuseObserver(counter)
        let ownership = Ownership(frames: 16_384)
        onThreads(5) { index in
            if index == 4 {
                report(allocator, ownership, seed: 99, passes: 400)
            } else {
                churn(allocator, ownership, seed: 0x1234 + UInt64(index), operations: 4000, owner: UInt8(index + 1))
            }
        }
        #expect(ownership.conflicts.load(ordering: .relaxed) == 0)
        #expect(ownership.unexpectedErrors.load(ordering: .relaxed) == 0)
        try self.expectBootLayout(allocator)
        allocator.flushReuse()
        let discarded = allocator.statistics.discardedPages
        #expect(allocator.discardedRanges().map(\.count).reduce(0, +) == discarded)
        // Something was discarded and something taken back, or the test exercised nothing.
        #expect(discarded + counter.frames.load(ordering: .relaxed) > 0)
    }
}
