import BuddyAllocator
import Synchronization

/// What a workload does with the memory behind the frames it holds, for a driver over a real pool
/// (`pagebroker-agent run`); the simulator has none. Called on the driver's thread only.
public protocol WorkloadMemory: AnyObject {
    /// Allocates a block of `order` for the workload (and initialises its memory); throws the
    /// allocator's error when it has no block.
    func allocate(order: Int, migratetype: Migratetype) throws(BuddyError) -> Int
    /// The workload is about to free the block at `frame`: last chance to check its contents.
    func willFree(frame: Int, order: Int)
}

/// One of the ``WorkloadKind``s against an allocator, one step at a time, on whatever clock the
/// caller keeps: the simulator steps it in virtual time, `pagebroker-agent run` on a thread in
/// real time, so a workload means the same thing in both.
///
/// ``boot()`` and ``step(at:)`` must be called from one thread at a time (the held blocks are
/// not locked, hence `@unchecked Sendable`); the counters may be read from any thread.
public final class WorkloadDriver: @unchecked Sendable {
    /// Workload steps happen this often.
    public static let tick: Duration = .milliseconds(10)

    public let kind: WorkloadKind
    private let allocator: BuddyAllocator
    private let memory: (any WorkloadMemory)?
    private let totalPages: Int
    private var random: SeededRandom

    // Blocks held, packed as frame << 8 | order; random frees swap-remove.
    private var resident: [UInt64] = []
    private var transient: [UInt64] = []
    private var transientPages = 0
    private var residentPages = 0

    private let allocationCount = Atomic<Int>(0)
    private let freeCount = Atomic<Int>(0)
    private let failureCount = Atomic<Int>(0)

    /// Blocks allocated so far.
    public var allocations: Int { self.allocationCount.load(ordering: .relaxed) }
    /// Blocks freed so far.
    public var frees: Int { self.freeCount.load(ordering: .relaxed) }
    /// Allocations the allocator refused (out of memory).
    public var allocationFailures: Int { self.failureCount.load(ordering: .relaxed) }

    /// A driver over `allocator`; with `memory`, blocks are allocated through it and it sees
    /// every block before it is freed.
    public init(kind: WorkloadKind, allocator: BuddyAllocator, seed: UInt64, memory: (any WorkloadMemory)? = nil) {
        self.kind = kind
        self.allocator = allocator
        self.memory = memory
        self.totalPages = allocator.configuration.frameCount
        self.random = SeededRandom(seed: seed)
    }

    /// The blocks the workload holds now, as `(frame, order)`; only from the driver's thread, or
    /// once it stopped.
    public var heldBlocks: [(frame: Int, order: Int)] {
        (self.resident + self.transient).map { (frame: Int($0 >> 8), order: Int($0 & 0xFF)) }
    }

    /// Allocates the workload's resident set.
    public func boot() {
        switch self.kind {
        case .idle: self.boot(fraction: 0.20)
        case .churn: self.boot(fraction: 0.30)
        case .memhog: self.boot(fraction: 0.10)
        case .fault: self.boot(fraction: 0.10)
        }
    }

    // MARK: Steps

    /// One step, due `time` after the start (steps are ``tick`` apart; `idle` does nothing).
    public func step(at time: Duration) {
        switch self.kind {
        case .idle: break
        case .churn: self.churnStep()
        case .memhog: self.memhogStep(at: time)
        case .fault: self.faultStep()
        }
    }

    /// A guest at rest: mostly small blocks of all three mobility types, between 30% and 50% of
    /// memory in use.
    private func churnStep() {
        let operations = max(1, self.totalPages / 5000)  // 200 per tick (20k/s) for 4 GiB
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

    /// Every 30 s: grab half of memory page by page over 3 s, hold it until 10 s, free it all.
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

    /// Faults order-0 pages in at 2.5% of memory a second; at 60% in use, unmaps half at random.
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

    /// Order 0 half of the time, 1 a quarter, and so on, up to `maximum`.
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
            let frame: Int
            if let memory = self.memory {
                frame = try memory.allocate(order: order, migratetype: type)
            } else {
                frame = try self.allocator.allocate(order: order, migratetype: type)
            }
            self.allocationCount.wrappingAdd(1, ordering: .relaxed)
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
            self.failureCount.wrappingAdd(1, ordering: .relaxed)
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
        self.memory?.willFree(frame: Int(packed >> 8), order: order)
        do {
            try self.allocator.free(frame: Int(packed >> 8), order: order)
            self.freeCount.wrappingAdd(1, ordering: .relaxed)
            self.transientPages -= 1 << order
        } catch {
            // The driver only frees what it allocated; anything else is an allocator defect,
            // which the simulation's final invariant check reports.
            preconditionFailure("free of a block the workload allocated failed: \(error)")
        }
    }
}
