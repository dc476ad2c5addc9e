import BuddyAllocator
import Dispatch
import PageReporting
import Synchronization
import Testing

/// Many threads allocate and free while the engine reports through a device that suspends,
/// fails at random and acks late. Run under ThreadSanitizer in CI (`scripts/test-tsan`).
@Suite struct ConcurrencyTests {
    /// A host that misbehaves: each report is, at random, answered at once, answered late
    /// (the worker suspends), or refused with or without a retry hint.
    final class UnreliableDevice: PageReportingDevice {
        // pthread-backed, not Synchronization.Mutex: this suite runs under ThreadSanitizer, which
        // cannot see the PI futexes Synchronization.Mutex waits on.
        private let random: PThreadLocked<UInt64>
        let calls = Atomic<Int>(0)

        init(seed: UInt64) { self.random = PThreadLocked(seed) }

        private func roll() -> UInt64 {
            self.random.withLock { state in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return state >> 33
            }
        }

        func report(_ batch: ReportBatch) throws {
            self.calls.wrappingAdd(1, ordering: .relaxed)
            switch self.roll() % 4 {
            case 0:
                return
            case 1:
                // Acks late: the worker suspends while the allocating threads carry on.
                _ = DispatchSemaphore(value: 0).wait(timeout: .now() + .microseconds(200))
            case 2:
                throw HostRefused(retryAfter: nil)
            default:
                throw HostRefused(retryAfter: .milliseconds(1))
            }
        }
    }

    @Test(arguments: [1, 2])
    func threadsAllocateAndFreeWhileTheEngineReports(seed: UInt64) throws {
        let allocator = try BuddyAllocator(
            AllocatorConfiguration(
                frameCount: 16384,
                zones: [ZoneLayout(name: "DMA32", frames: 0..<4096), ZoneLayout(name: "Normal", frames: 4096..<16384)],
                watermarks: .none
            )
        )
        let device = UnreliableDevice(seed: seed)
        let engine = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: DispatchReportingScheduler(),
            configuration: PageReportingConfiguration(capacity: 8, delay: .microseconds(100), orderOverride: 4)
        )
        let threads = 4
        let failures = PThreadLocked<[String]>([])
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            var state = seed &* 1000 &+ UInt64(thread)
            func next(_ bound: Int) -> Int {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return Int((state >> 33) % UInt64(bound))
            }
            var held: [(Int, Int)] = []
            for _ in 0..<6000 {
                if held.isEmpty || (held.count < 400 && next(2) == 0) {
                    let order = next(3) == 0 ? next(10) : next(3)
                    let types: [Migratetype] = [.movable, .unmovable, .reclaimable]
                    if let frame = try? allocator.allocate(order: order, migratetype: types[next(3)]) {
                        held.append((frame, order))
                    }
                } else {
                    let index = next(held.count)
                    let (frame, order) = held.remove(at: index)
                    do { try allocator.free(frame: frame, order: order) } catch {
                        failures.withLock { $0.append("free \(frame)/\(order): \(error)") }
                    }
                }
            }
            for (frame, order) in held {
                do { try allocator.free(frame: frame, order: order) } catch {
                    failures.withLock { $0.append("final free \(frame)/\(order): \(error)") }
                }
            }
        }
        // Waits for a pass in flight to drain its batch back.
        engine.unregister()
        #expect(failures.withLock { $0 } == [])
        #expect(device.calls.load(ordering: .relaxed) > 0)
        let stats = allocator.statistics
        #expect(stats.isolatedPages == 0)
        #expect(stats.allocatedPages == 0)
        #expect(stats.freePages == 16384)
        try allocator.validate()
    }
}
