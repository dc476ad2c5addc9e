import BuddyAllocator
import Dispatch
import Foundation
import GuestSimulator
import Synchronization

/// The simulator's workloads (docs/simulator.md) in wall-clock time, for `run`: the same
/// ``WorkloadDriver`` the simulator steps in virtual time, stepped here by a thread once per
/// 10 ms of real time, catching up with back-to-back steps (each at its own nominal time) when it
/// falls behind.
final class RealTimeWorkload: Sendable {
    private let driver: WorkloadDriver
    private let stopRequested = Atomic<Bool>(false)
    private let steps = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)

    struct Counters: Sendable {
        var allocations = 0
        var frees = 0
        var allocationFailures = 0
        var steps = 0
    }

    init(kind: WorkloadKind, allocator: BuddyAllocator, seed: UInt64, memory: (any WorkloadMemory)? = nil) {
        self.driver = WorkloadDriver(kind: kind, allocator: allocator, seed: seed, memory: memory)
    }

    /// The blocks the workload holds; only once it stopped.
    var heldBlocks: [(frame: Int, order: Int)] { self.driver.heldBlocks }

    var statistics: Counters {
        Counters(
            allocations: self.driver.allocations,
            frees: self.driver.frees,
            allocationFailures: self.driver.allocationFailures,
            steps: self.steps.load(ordering: .relaxed)
        )
    }

    /// Boots the resident set on the calling thread, then steps on a thread of its own.
    func start() {
        self.driver.boot()
        let thread = Thread { [self] in self.loop() }
        thread.name = "pagebroker-workload"
        thread.start()
    }

    /// Stops stepping and waits for the thread to finish its step.
    func stop() {
        self.stopRequested.store(true, ordering: .relaxed)
        self.finished.wait()
    }

    private func loop() {
        let begin = ContinuousClock.now
        var time = Duration.zero
        while !self.stopRequested.load(ordering: .relaxed) {
            time += WorkloadDriver.tick
            let wait = begin + time - ContinuousClock.now
            if wait > .zero {
                let (seconds, attoseconds) = wait.components
                var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
                nanosleep(&request, nil)
                if self.stopRequested.load(ordering: .relaxed) { break }
            }
            self.driver.step(at: time)
            self.steps.wrappingAdd(1, ordering: .relaxed)
        }
        self.finished.signal()
    }
}
