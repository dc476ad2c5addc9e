import BuddyAllocator
import Dispatch
import PageReporting
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Reporting order selection, one device per allocator, and unregister waiting for work.
@Suite struct RegistrationTests {
    @Test func reportingOrderDefaultsToThePageblockOrder() throws {
        let engine = try PageReportingEngine.register(
            device: RecordingDevice(),
            allocator: try makeAllocator(),
            scheduler: VirtualClock()
        )
        #expect(engine.reportingOrder == 3)
    }

    @Test func deviceOrderIsUsedAndTheOverrideWins() throws {
        let byDevice = try PageReportingEngine.register(
            device: RecordingDevice(preferredOrder: 4),
            allocator: try makeAllocator(),
            scheduler: VirtualClock()
        )
        #expect(byDevice.reportingOrder == 4)
        let overridden = try PageReportingEngine.register(
            device: RecordingDevice(preferredOrder: 4),
            allocator: try makeAllocator(),
            scheduler: VirtualClock(),
            configuration: PageReportingConfiguration(orderOverride: 2)
        )
        #expect(overridden.reportingOrder == 2)
    }

    @Test func deviceOrderChangesWhatIsReported() throws {
        let allocator = try makeAllocator()
        // Leave free blocks of orders 3 and 4 beside the order-5 ones.
        _ = try allocator.allocate(order: 3)
        let clock = VirtualClock()
        let device = RecordingDevice(preferredOrder: 4)
        _ = try PageReportingEngine.register(device: device, allocator: allocator, scheduler: clock)
        clock.advance(by: .seconds(2))
        #expect(device.reportedBlocks.allSatisfy { $0.order >= 4 })
        #expect(device.reportedBlocks.contains { $0.order == 4 })
    }

    @Test func invalidOrderAndCapacityAreRefused() throws {
        let allocator = try makeAllocator()
        #expect(throws: PageReportingError.self) {
            try PageReportingEngine.register(
                device: RecordingDevice(),
                allocator: allocator,
                scheduler: VirtualClock(),
                configuration: PageReportingConfiguration(orderOverride: 6)
            )
        }
        do {
            _ = try PageReportingEngine.register(
                device: RecordingDevice(),
                allocator: allocator,
                scheduler: VirtualClock(),
                configuration: PageReportingConfiguration(capacity: 0)
            )
            Issue.record("capacity 0 was accepted")
        } catch {
            #expect(error.code == .invalidCapacity)
        }
    }

    @Test func aSecondDeviceIsRefusedUntilTheFirstUnregisters() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let first = try PageReportingEngine.register(device: RecordingDevice(), allocator: allocator, scheduler: clock)
        do {
            _ = try PageReportingEngine.register(device: RecordingDevice(), allocator: allocator, scheduler: clock)
            Issue.record("a second device was accepted")
        } catch {
            #expect(error.code == .busy)
        }
        first.unregister()
        #expect(!first.isRegistered)
        // The pending flush was cancelled with it.
        clock.advance(by: .seconds(10))
        #expect(first.statistics.passes == 0)
        let second = try PageReportingEngine.register(device: RecordingDevice(), allocator: allocator, scheduler: clock)
        #expect(second.isRegistered)
    }

    @Test func unregisterStopsNotifications() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let engine = try PageReportingEngine.register(device: RecordingDevice(), allocator: allocator, scheduler: clock)
        clock.advance(by: .seconds(2))
        engine.unregister()
        let frame = try allocator.allocate(order: 5)
        try allocator.free(frame: frame, order: 5)
        #expect(engine.currentState == .idle)
        #expect(clock.pendingCount == 0)
    }

    @Test func unregisterWaitsForTheWorkInFlight() throws {
        let allocator = try makeAllocator()
        let events = Mutex<[String]>([])
        let entered = DispatchSemaphore(value: 0)
        let engineBox = Mutex<PageReportingEngine?>(nil)
        let device = RecordingDevice { _, call in
            guard call == 1 else { return }
            entered.signal()
            // Hold the report until unregister has started waiting (it clears isRegistered
            // first), bounded so a broken engine fails the test instead of hanging it.
            let deadline = ContinuousClock.now + .seconds(30)
            while engineBox.withLock({ $0?.isRegistered }) != false && ContinuousClock.now < deadline {
                sched_yield()
            }
            events.withLock { $0.append("report returned") }
        }
        let engine = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: DispatchReportingScheduler(),
            configuration: PageReportingConfiguration(capacity: 4, delay: .zero, budget: false)
        )
        engineBox.withLock { $0 = engine }
        #expect(entered.wait(timeout: .now() + .seconds(30)) == .success)
        engine.unregister()
        events.withLock { $0.append("unregister returned") }
        #expect(events.withLock { $0 } == ["report returned", "unregister returned"])
        #expect(allocator.statistics.isolatedPages == 0)
        try allocator.validate()
    }
}
