import BuddyAllocator
import Dispatch
import Foundation
import GuestSimulator
import Synchronization

/// The simulator's workloads (docs/simulator.md) in wall-clock time, for `run`.
///
/// The steps are those of `GuestSimulator`'s `WorkloadDriver`, which runs them on a virtual
/// clock and is internal to that module; here a thread runs one step per 10 ms of real time,
/// catching up with back-to-back steps (each at its own nominal time) when it falls behind,
/// so a workload means the same thing in both commands.
final class RealTimeWorkload: @unchecked Sendable {
    // @unchecked: everything but `stopRequested` and the counters is touched only by the
    // workload thread between start() and the end of stop(), which joins it.

    static let tick: Duration = .milliseconds(10)

    private let kind: WorkloadKind
    private let allocator: BuddyAllocator
    private let totalPages: Int
    private var random: SeededRandom
    private var resident: [UInt64] = []
    private var transient: [UInt64] = []
    private var transientPages = 0
    private var residentPages = 0

    private let stopRequested = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private let counters = Mutex(Counters())

    struct Counters: Sendable {
        var allocations = 0
        var frees = 0
        var allocationFailures = 0
        var steps = 0
    }

    init(kind: WorkloadKind, allocator: BuddyAllocator, seed: UInt64) {
        self.kind = kind
        self.allocator = allocator
        self.totalPages = allocator.configuration.frameCount
        self.random = SeededRandom(seed: seed)
    }

    var statistics: Counters { self.counters.withLock { $0 } }

    /// Boots the resident set on the calling thread, then steps on a thread of its own.
    func start() {
        switch self.kind {
        case .idle: self.boot(fraction: 0.20)
        case .churn: self.boot(fraction: 0.30)
        case .memhog: self.boot(fraction: 0.10)
        case .fault: self.boot(fraction: 0.10)
        }
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
            time += Self.tick
            let due = begin + time
            let wait = due - ContinuousClock.now
            if wait > .zero {
                let (seconds, attoseconds) = wait.components
                var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
                nanosleep(&request, nil)
                if self.stopRequested.load(ordering: .relaxed) { break }
            }
            self.step(at: time)
            self.counters.withLock { $0.steps += 1 }
        }
        self.finished.signal()
    }

    // MARK: Steps (as WorkloadDriver)

    private func step(at time: Duration) {
        switch self.kind {
        case .idle: break
        case .churn: self.churnStep()
        case .memhog: self.memhogStep(at: time)
        case .fault: self.faultStep()
        }
    }

    private func churnStep() {
        let operations = max(1, self.totalPages / 5000)
        let low = self.totalPages * 30 / 100
        let high = self.totalPages * 50 / 100
        for _ in 0..<operations {
            let used = self.residentPages + self.transientPages
            let allocate = used < low ? true : used > high ? false : self.random.chance(0.5)
            if allocate || self.transient.isEmpty {
                self.allocate(order: self.smallOrder(), into: .transient)
            } else {
                self.freeRandomTransient()
            }
        }
    }

    private func memhogStep(at time: Duration) {
        let period = Duration.seconds(30)
        let phase = time - period * Int(time / period)
        let target = self.totalPages / 2
        if phase < .seconds(3) {
            let perTick = max(1, target / 300)
            for _ in 0..<perTick where self.transientPages < target {
                self.allocate(order: 0, migratetype: .movable, into: .transient)
            }
        } else if phase >= .seconds(10) && !self.transient.isEmpty {
            self.freeAllTransient()
        }
    }

    private func faultStep() {
        let perTick = max(1, self.totalPages / 4000)
        for _ in 0..<perTick {
            self.allocate(order: 0, migratetype: .movable, into: .transient)
        }
        if self.residentPages + self.transientPages >= self.totalPages * 60 / 100 {
            let half = self.transient.count / 2
            for _ in 0..<half { self.freeRandomTransient() }
        }
    }

    // MARK: Operations

    private enum Pool { case resident, transient }

    private func boot(fraction: Double) {
        let target = Int(Double(self.totalPages) * fraction)
        while self.residentPages < target {
            guard self.allocate(order: self.smallOrder(maximum: 3), into: .resident) else { break }
        }
    }

    private func smallOrder(maximum: Int = 4) -> Int {
        var order = 0
        while order < maximum && self.random.chance(0.5) { order += 1 }
        return order
    }

    private func randomMigratetype() -> Migratetype {
        let roll = self.random.below(100)
        return roll < 80 ? .movable : roll < 95 ? .unmovable : .reclaimable
    }

    @discardableResult
    private func allocate(order: Int, migratetype: Migratetype? = nil, into pool: Pool) -> Bool {
        let type = migratetype ?? self.randomMigratetype()
        do {
            let frame = try self.allocator.allocate(order: order, migratetype: type)
            self.counters.withLock { $0.allocations += 1 }
            let packed = UInt64(frame) << 8 | UInt64(order)
            switch pool {
            case .resident:
                self.resident.append(packed)
                self.residentPages += 1 << order
            case .transient:
                self.transient.append(packed)
                self.transientPages += 1 << order
            }
            return true
        } catch {
            self.counters.withLock { $0.allocationFailures += 1 }
            return false
        }
    }

    private func freeRandomTransient() {
        guard !self.transient.isEmpty else { return }
        let index = self.random.below(self.transient.count)
        let packed = self.transient[index]
        self.transient[index] = self.transient[self.transient.count - 1]
        self.transient.removeLast()
        self.release(packed)
    }

    private func freeAllTransient() {
        for packed in self.transient { self.release(packed) }
        self.transient.removeAll(keepingCapacity: true)
    }

    private func release(_ packed: UInt64) {
        let order = Int(packed & 0xFF)
        do {
            try self.allocator.free(frame: Int(packed >> 8), order: order)
            self.counters.withLock { $0.frees += 1 }
            self.transientPages -= 1 << order
        } catch {
            // The workload frees only what it allocated; anything else is an allocator defect,
            // which the final invariant check would report anyway.
            preconditionFailure("free of a block the workload allocated failed: \(error)")
        }
    }
}
