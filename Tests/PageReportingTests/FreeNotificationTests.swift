import BuddyAllocator
import PageReporting
import Synchronization
import Testing

/// `page_reporting_notify_free`: which frees reach the engine. A free that finds a pass already
/// requested has nothing to add, and skips the notifier (its lock and the engine's retain, which
/// every allocating thread shares) as the kernel's `__page_reporting_request` returns at once.
@Suite struct FreeNotificationTests {
    /// Counts the frees it is told of.
    final class CountingNotifier: FreeBlockNotifier {
        let count = Atomic<Int>(0)
        func blockFreed(order: Int) { self.count.add(1, ordering: .relaxed) }
    }

    @Test func aFreeWhileAPassIsRequestedSkipsTheNotifier() throws {
        let allocator = try makeAllocator()
        let notifier = CountingNotifier()
        try allocator.attachFreeNotifier(notifier, order: 3)
        func cycle() throws {
            let frame = try allocator.allocate(order: 3)
            try allocator.free(frame: frame, order: 3)
        }
        try cycle()
        #expect(notifier.count.load(ordering: .relaxed) == 1)
        allocator.reportingState.store(BuddyAllocator.reportingRequested, ordering: .relaxed)
        for _ in 0..<100 { try cycle() }
        #expect(notifier.count.load(ordering: .relaxed) == 1)
        // IDLE and ACTIVE (a free during a pass re-arms it) still notify.
        for state in [PageReportingEngine.State.idle, .active] {
            allocator.reportingState.store(state.rawValue, ordering: .relaxed)
            try cycle()
        }
        #expect(notifier.count.load(ordering: .relaxed) == 3)
    }

    @Test func theEngineMovesTheStateWordTheAllocatorReads() throws {
        #expect(PageReportingEngine.State.requested.rawValue == BuddyAllocator.reportingRequested)
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let engine = try PageReportingEngine.register(device: RecordingDevice(), allocator: allocator, scheduler: clock)
        #expect(allocator.reportingState.load(ordering: .relaxed) == BuddyAllocator.reportingRequested)
        clock.advance(by: .seconds(2))
        #expect(engine.currentState == .idle)
        #expect(allocator.reportingState.load(ordering: .relaxed) == PageReportingEngine.State.idle.rawValue)
        // The first free after the pass requests the next one; the frees after it find it requested.
        for _ in 0..<3 {
            let frame = try allocator.allocate(order: 5)
            try allocator.free(frame: frame, order: 5)
        }
        #expect(engine.currentState == .requested)
        #expect(clock.pendingCount == 1)
        engine.unregister()
    }

    /// An engine unregistered with a pass requested leaves the state word REQUESTED; the next
    /// engine must still get its initial flush (attaching resets the word), or a free would
    /// never notify it again.
    @Test func theNextEngineGetsItsFlushAfterOneUnregisteredWhileRequested() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let first = try PageReportingEngine.register(device: RecordingDevice(), allocator: allocator, scheduler: clock)
        #expect(first.currentState == .requested)
        first.unregister()
        let device = RecordingDevice()
        let second = try PageReportingEngine.register(device: device, allocator: allocator, scheduler: clock)
        #expect(second.currentState == .requested)
        clock.advance(by: .seconds(2))
        #expect(second.statistics.passes == 1)
        #expect(!device.batches.isEmpty)
        second.unregister()
    }
}
