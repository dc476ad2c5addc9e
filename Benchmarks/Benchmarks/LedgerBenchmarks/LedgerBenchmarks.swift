import Benchmark
import Broker
import Foundation

// The sizing: 10k guests × 32k ranges each must fit and update in O(log n). These measure
// one update at 32k ranges, and the memory of 1k such guests, which scales linearly to 10k.

/// Ranges per guest in every benchmark here.
private let rangesPerGuest = 32 * 1024
/// Range i covers frames [i * stride, i * stride + length): order-9 blocks with a gap between
/// each pair, so they never coalesce and every gap can take a new range.
private let stride: UInt64 = 1024
private let length: UInt64 = 512

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        warmupIterations: 2,
        maxDuration: .seconds(5),
        maxIterations: 100
    )

    // Random gaps to update, so each operation lands in a different leaf (as real reports do) and
    // the caches do not flatter the figures. Deterministic, for comparable runs.
    var random = SplitMix64(seed: 1)
    let gaps = (0..<4096).map { _ in UInt64.random(in: 0..<UInt64(rangesPerGuest - 1), using: &random) }

    // MARK: One guest's set at 32k ranges

    // A new range in a gap (one more range), then removed again: the common report + reuse pair.
    var isolated = FrameRangeSet()
    Benchmark(
        "set insert+remove pair, 32k ranges",
        configuration: .init(
            metrics: [.wallClock, .mallocCountTotal, .instructions, .throughput],
            scalingFactor: .kilo
        )
    ) { benchmark in
        var next = 0
        for _ in benchmark.scaledIterations {
            let start = gaps[next & 4095] * stride + length + 100
            next += 1
            blackHole(isolated.insert(start..<start + 64))
            blackHole(isolated.remove(start..<start + 64))
        }
    } setup: {
        isolated = makeSet()
    }

    // A range filling a gap exactly, which merges its two neighbours into one, then removed again,
    // which splits them: the insert and remove paths that change the range count the other way.
    var coalescing = FrameRangeSet()
    Benchmark(
        "set coalescing insert+splitting remove, 32k ranges",
        configuration: .init(
            metrics: [.wallClock, .mallocCountTotal, .instructions, .throughput],
            scalingFactor: .kilo
        )
    ) { benchmark in
        var next = 0
        for _ in benchmark.scaledIterations {
            let start = gaps[next & 4095] * stride + length
            next += 1
            blackHole(coalescing.insert(start..<start + stride - length))
            blackHole(coalescing.remove(start..<start + stride - length))
        }
    } setup: {
        coalescing = makeSet()
    }

    // MARK: The ledger

    // Report and reuse through the ledger's API, at a random guest of 1k, each with 32k ranges:
    // adds the tenant and guest lookups and the sums to the set's own cost.
    var large = Ledger()
    let guestNames = (0..<1000).map { "guest-\($0)" }
    Benchmark(
        "ledger report+reuse pair, 1k guests × 32k ranges",
        configuration: .init(
            metrics: [.wallClock, .mallocCountTotal, .throughput],
            warmupIterations: 1,
            scalingFactor: .kilo,
            maxDuration: .seconds(10),
            maxIterations: 50
        )
    ) { benchmark in
        var next = 0
        for _ in benchmark.scaledIterations {
            let guest = guestNames[next % 1000]
            let start = gaps[next & 4095] * stride + length + 100
            next += 7
            blackHole(try! large.report(tenant: "acme", guest: guest, ranges: CollectionOfOne(start..<start + 64)))
            blackHole(try! large.reuse(tenant: "acme", guest: guest, ranges: CollectionOfOne(start..<start + 64)))
        }
    } setup: {
        large = makeLedger(guests: guestNames)
    }

    // A reconnect: one guest's whole set sent again in 64 chunks of 512 ranges, in order.
    var syncing = Ledger()
    let chunks = makeSet().chunks(of: 512)
    Benchmark(
        "ledger sync of 32k ranges in 64 chunks",
        configuration: .init(metrics: [.wallClock, .mallocCountTotal, .throughput], maxIterations: 200)
    ) { benchmark in
        try! syncing.beginSync(tenant: "acme", guest: "vm")
        for chunk in chunks { try! syncing.appendSync(tenant: "acme", guest: "vm", ranges: chunk) }
        blackHole(try! syncing.finishSync(tenant: "acme", guest: "vm"))
    } setup: {
        try! syncing.connect(tenant: "acme", guest: "vm", pageSize: 4096)
    }

    // MARK: Memory

    // 1k guests × 32k ranges built by reports in random order (leaves split as they fill, the
    // realistic layout). RSS growth counts malloc's overhead and fragmentation too; it is clean
    // because the tool runs each benchmark in a process of its own, whose heap is still small.
    // The sets' own figure (capacity and headers) is the floor. × 10 for the 10k guests.
    Benchmark(
        "ledger memory, 1k guests × 32k ranges",
        configuration: .init(
            metrics: [
                .wallClock, .custom("RSS bytes per range x100"),
                .custom("set storage bytes per range x100"), .custom("projected MiB at 10k guests"),
            ],
            warmupIterations: 0,
            maxIterations: 1
        )
    ) { benchmark in
        let rssBefore = residentBytes()
        let ledger = makeLedger(guests: guestNames)
        let rss = residentBytes() - rssBefore
        let ranges = guestNames.count * rangesPerGuest
        var storage = 0
        for name in guestNames { storage += ledger.guest(tenant: "acme", guest: name)!.discarded.storageBytes }
        benchmark.measurement(.custom("RSS bytes per range x100"), rss * 100 / ranges)
        benchmark.measurement(.custom("set storage bytes per range x100"), storage * 100 / ranges)
        benchmark.measurement(.custom("projected MiB at 10k guests"), (rss * 10) >> 20)
        blackHole(ledger)
    }
}

/// One guest's set: `rangesPerGuest` ranges inserted in a random order.
private func makeSet() -> FrameRangeSet {
    var set = FrameRangeSet()
    for block in shuffledBlocks { set.insert(block * stride..<block * stride + length) }
    return set
}

/// A ledger with one tenant whose guests each hold `rangesPerGuest` ranges, reported one by one
/// in a random order.
private func makeLedger(guests: [String]) -> Ledger {
    var ledger = Ledger()
    for guest in guests {
        try! ledger.connect(tenant: "acme", guest: guest, pageSize: 4096)
        for block in shuffledBlocks {
            _ = try! ledger.report(
                tenant: "acme",
                guest: guest,
                ranges: CollectionOfOne(block * stride..<block * stride + length)
            )
        }
    }
    return ledger
}

private let shuffledBlocks: [UInt64] = {
    var random = SplitMix64(seed: 2)
    return (0..<UInt64(rangesPerGuest)).shuffled(using: &random)
}()

extension FrameRangeSet {
    /// The set's ranges in order, cut into arrays of `size`: a guest's sync chunks.
    fileprivate func chunks(of size: Int) -> [[Range<UInt64>]] {
        let all = Array(self)
        return Swift.stride(from: 0, to: all.count, by: size).map { Array(all[$0..<Swift.min($0 + size, all.count)]) }
    }
}

/// Resident set size of this process, from /proc/self/statm.
private func residentBytes() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = statm.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// A seeded generator, so every run updates the same places.
private struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { self.state = seed }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
