import BuddyAllocator
import PageReporting
import Synchronization
import Testing

/// IDLE → REQUESTED → ACTIVE, the delayed start, the re-arm, and which frees request a pass.
@Suite struct RequestStateTests {
    @Test func registrationRequestsAFlushAfterTheDelay() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let device = RecordingDevice()
        let engine = try PageReportingEngine.register(device: device, allocator: allocator, scheduler: clock)
        #expect(engine.currentState == .requested)
        #expect(clock.nextDue == .seconds(2))
        clock.advance(by: .milliseconds(1999))
        #expect(device.batches.isEmpty)
        clock.advance(by: .milliseconds(1))
        #expect(!device.batches.isEmpty)
        #expect(engine.currentState == .idle)
        #expect(clock.pendingCount == 0)
    }

    @Test func requestDuringPassReArmsIt() throws {
        let allocator = try makeAllocator()
        let held = try allocator.allocate(order: 5)
        let clock = VirtualClock()
        let seen = Mutex<[PageReportingEngine.State]>([])
        let engineBox = Mutex<PageReportingEngine?>(nil)
        let device = RecordingDevice { _, call in
            guard call == 1, let engine = engineBox.withLock({ $0 }) else { return }
            seen.withLock { $0.append(engine.currentState) }
            // A free at the reporting order while the pass is active.
            try allocator.free(frame: held, order: 5)
            seen.withLock { $0.append(engine.currentState) }
        }
        let engine = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4, budget: false)
        )
        engineBox.withLock { $0 = engine }
        clock.advance(by: .seconds(2))
        #expect(seen.withLock { $0 } == [.active, .requested])
        // Re-armed for another pass one delay after this one ended.
        #expect(engine.currentState == .requested)
        #expect(clock.nextDue == .seconds(4))
        #expect(engine.statistics.passes == 1)
        clock.advance(by: .seconds(2))
        #expect(engine.statistics.passes == 2)
        #expect(engine.currentState == .idle)
        // The freed block went onto the list the pass was walking, so one of the two passes
        // reported it.
        #expect(device.reportedBlocks.contains(ReportEntry(frame: held, order: 5)))
    }

    @Test func onlyFreesReachingTheReportingOrderRequest() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let engine = try PageReportingEngine.register(device: RecordingDevice(), allocator: allocator, scheduler: clock)
        clock.advance(by: .seconds(2))
        #expect(engine.currentState == .idle)

        let first = try allocator.allocate(order: 0)
        let second = try allocator.allocate(order: 0)
        #expect(second == first + 1)
        // Its buddy is allocated, so the block stays at order 0: below the reporting order (3).
        try allocator.free(frame: first, order: 0)
        #expect(engine.currentState == .idle)
        #expect(clock.pendingCount == 0)
        // This one merges all the way up to order 5.
        try allocator.free(frame: second, order: 0)
        #expect(engine.currentState == .requested)
        #expect(clock.pendingCount == 1)
    }

    @Test func putbackOfIsolatedPagesDoesNotRequest() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let engine = try PageReportingEngine.register(
            device: RecordingDevice(),
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4, budget: false)
        )
        clock.advance(by: .seconds(2))
        // 32 blocks went through isolate and putback, merging back to order 5 each time; had
        // putback notified, the pass would have re-armed itself.
        #expect(engine.statistics.framesReported == 1024)
        #expect(engine.currentState == .idle)
        #expect(clock.pendingCount == 0)
    }
}
