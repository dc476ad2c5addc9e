import BuddyAllocator
import Dispatch
import Foundation
import PageReporting
import Synchronization
import Testing

/// One pass: batch capacity, the lock dropped around `report`, drain, watermarks, errors.
@Suite struct ReportingPassTests {
    @Test func batchesHoldCapacityBlocksAndTheLeftoverGoesLast() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let device = RecordingDevice()
        _ = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 5, budget: false)
        )
        clock.advance(by: .seconds(2))
        // 32 order-5 blocks in batches of 5: six full ones, then the leftover two.
        #expect(device.batches.map(\.count) == [5, 5, 5, 5, 5, 5, 2])
        #expect(Set(device.reportedBlocks.map(\.frame)).count == 32)
        #expect(device.reportedBlocks.allSatisfy { $0.order == 5 })
    }

    @Test func defaultCapacityIs32() {
        #expect(PageReportingConfiguration().capacity == 32)
        #expect(PageReportingConfiguration().delay == .seconds(2))
    }

    @Test func zoneLockIsReleasedAroundReport() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let allocatedDuringReport = Mutex<Bool?>(nil)
        let device = RecordingDevice { _, call in
            guard call == 1 else { return }
            // Another thread allocates from the same zone while the report is outstanding. Were
            // the zone lock still held it would block, and the wait would time out.
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                if let frame = try? allocator.allocate(order: 0) { try? allocator.free(frame: frame, order: 0) }
                done.signal()
            }
            allocatedDuringReport.withLock { $0 = done.wait(timeout: .now() + .seconds(30)) == .success }
        }
        _ = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4, budget: false)
        )
        clock.advance(by: .seconds(2))
        #expect(allocatedDuringReport.withLock { $0 } == true)
        try allocator.validate()
    }

    @Test func drainMarksOnlyBlocksStillFreeAtTheSameOrder() throws {
        let allocator = try makeAllocator()
        // Leave a free order-4 block at the bottom of an order-5 block whose upper half is held.
        let lower = try allocator.allocate(order: 4)
        let upper = try allocator.allocate(order: 4)
        #expect(upper == lower + 16)
        try allocator.free(frame: lower, order: 4)
        let clock = VirtualClock()
        let device = RecordingDevice { entries, call in
            guard call == 1 else { return }
            #expect(entries.contains(ReportEntry(frame: lower, order: 4)))
            // While `lower` sits isolated in this batch its buddy is freed; putback will merge them.
            try allocator.free(frame: upper, order: 4)
        }
        _ = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 32, budget: false)
        )
        clock.advance(by: .seconds(2))
        try allocator.validate()
        // The merged order-5 block was never reported as such: it must not carry Reported.
        #expect(allocator.frameInfo(lower)?.order == 5)
        #expect(allocator.frameInfo(lower)?.isReported == false)
        // The half that was reported is discarded, the half that was in use is not.
        #expect(allocator.frameInfo(lower)?.isDiscarded == true)
        #expect(allocator.frameInfo(upper)?.isDiscarded == false)
        // The free re-armed reporting; the next pass reports the merged block at order 5.
        clock.advance(by: .seconds(2))
        #expect(device.batches.last?.contains(ReportEntry(frame: lower, order: 5)) == true)
        #expect(allocator.frameInfo(lower)?.isReported == true)
        #expect(allocator.statistics.discardedPages == 1024)
    }

    @Test func zoneBelowLowWatermarkPlusABatchIsSkipped() throws {
        // free 1024 <= low 1000 + capacity 4 << order 3: nothing may be reported.
        let starved = try makeAllocator(watermarks: .fixed(Watermarks(min: 0, low: 1000, high: 1000)))
        let clock = VirtualClock()
        let device = RecordingDevice()
        _ = try PageReportingEngine.register(
            device: device,
            allocator: starved,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4)
        )
        clock.advance(by: .seconds(2))
        #expect(device.batches.isEmpty)

        // Just above the gate the pass runs.
        let fed = try makeAllocator(watermarks: .fixed(Watermarks(min: 0, low: 900, high: 900)))
        let fedDevice = RecordingDevice()
        let fedClock = VirtualClock()
        _ = try PageReportingEngine.register(
            device: fedDevice,
            allocator: fed,
            scheduler: fedClock,
            configuration: PageReportingConfiguration(capacity: 4)
        )
        fedClock.advance(by: .seconds(2))
        #expect(!fedDevice.batches.isEmpty)
    }

    @Test func isolationStopsAtMinPlusTheBlock() throws {
        // min 900: isolating an order-5 block needs free > 900 + 32. From 1024 free that allows
        // three blocks (1024 → 992 → 960 → 928); the fourth is refused.
        let allocator = try makeAllocator(watermarks: .fixed(Watermarks(min: 900, low: 900, high: 900)))
        let clock = VirtualClock()
        let device = RecordingDevice()
        _ = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4, budget: false)
        )
        clock.advance(by: .seconds(2))
        #expect(device.batches.map(\.count) == [3])
        #expect(allocator.statistics.isolatedPages == 0)
        try allocator.validate()
    }

    @Test func errorDrainsWithoutMarkingAndStopsThePass() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let device = RecordingDevice { _, _ in throw HostRefused(retryAfter: nil) }
        let engine = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4, budget: false)
        )
        clock.advance(by: .seconds(2))
        #expect(device.batches.count == 1)
        #expect(reportedHeads(allocator).isEmpty)
        #expect(allocator.statistics.discardedPages == 0)
        #expect(allocator.statistics.isolatedPages == 0)
        #expect(allocator.statistics.freePages == 1024)
        #expect(engine.statistics.reportsFailed == 1)
        #expect(engine.currentState == .idle)
        #expect(clock.pendingCount == 0)
        try allocator.validate()
    }

    @Test func retryAfterHintSchedulesTheNextPass() throws {
        let allocator = try makeAllocator()
        let clock = VirtualClock()
        let device = RecordingDevice { _, call in
            if call == 1 { throw HostRefused(retryAfter: .seconds(10)) }
        }
        let engine = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: clock,
            configuration: PageReportingConfiguration(capacity: 4, budget: false)
        )
        clock.advance(by: .seconds(2))
        #expect(engine.currentState == .requested)
        #expect(clock.nextDue == .seconds(12))
        clock.advance(to: .seconds(12))
        #expect(reportedHeads(allocator).count == 32)
        #expect(engine.currentState == .idle)
    }
}
