import Benchmark
import BuddyAllocator
import Foundation
import GuestSimulator
import PageReporting

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        warmupIterations: 2,
        maxDuration: .seconds(5),
        maxIterations: 100
    )

    // MARK: Allocator hot path

    // 1 GiB in which every other order-0 page is free and its buddy allocated: the steady state
    // of a busy guest, where an order-0 allocation takes the head of the order-0 list and its
    // free cannot merge. (A fresh allocator would split and re-merge ten levels every time,
    // which is the kernel's per-cpu lists' job to avoid and not what this measures.)
    let fragmented = try! makeFragmentedAllocator(frames: 1 << 18)
    Benchmark(
        "order-0 allocate+free pair",
        configuration: .init(
            metrics: [.wallClock, .mallocCountTotal, .instructions, .throughput],
            scalingFactor: .mega,
            maxDuration: .seconds(5),
            maxIterations: 50
        )
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            let frame = try fragmented.allocate(order: 0)
            try fragmented.free(frame: frame, order: 0)
            blackHole(frame)
        }
    }

    Benchmark(
        "metadata bytes per frame (4 GiB, RSS)",
        configuration: .init(
            metrics: [.custom("bytes per frame x100"), .peakMemoryResidentDelta],
            // Once: later iterations reuse pages the first one touched and freed, so their RSS
            // difference says nothing.
            warmupIterations: 0,
            maxIterations: 1
        )
    ) { benchmark in
        let before = residentBytes()
        let allocator = try BuddyAllocator(AllocatorConfiguration(memoryBytes: 4 << 30))
        let after = residentBytes()
        benchmark.measurement(
            .custom("bytes per frame x100"),
            (after - before) * 100 / allocator.configuration.frameCount
        )
        blackHole(allocator)
    }

    // MARK: Reporting overhead

    // The same churn run with reporting on (a host that acks at once) and off; compare the
    // medians of the two as a ratio (docs/benchmarks.md).
    for reporting in [false, true] {
        Benchmark(
            "churn 4 GiB 30 s, reporting \(reporting ? "on" : "off")",
            configuration: .init(
                metrics: [.wallClock, .cpuTotal],
                // Microseconds: the two medians differ by less than the millisecond the
                // default unit rounds to.
                timeUnits: .microseconds,
                warmupIterations: 2,
                maxDuration: .seconds(60),
                maxIterations: 40
            )
        ) { benchmark in
            var options = SimulationOptions()
            options.workload = .churn
            options.memoryBytes = 4 << 30
            options.duration = .seconds(30)
            options.reportingEnabled = reporting
            options.sampleInterval = .seconds(30)
            let simulation = try Simulation(options: options)
            benchmark.startMeasurement()
            let result = simulation.run()
            benchmark.stopMeasurement()
            precondition(result.invariants == "ok" && result.isolatedPages == 0)
            blackHole(result)
        }
    }

    // MARK: Time to discard (virtual seconds, deterministic)

    for (name, reporting) in [
        ("budget on", PageReportingConfiguration.linux), ("seed", PageReportingConfiguration.seed),
    ] {
        Benchmark(
            "idle 4 GiB time to 99% discarded, \(name)",
            configuration: .init(
                metrics: [.custom("virtual ms to 99%"), .custom("passes to 99%")],
                maxIterations: 1
            )
        ) { benchmark in
            var options = SimulationOptions()
            options.memoryBytes = 4 << 30
            options.duration = .seconds(60)
            options.reporting = reporting
            let result = try Simulation(options: options).run()
            benchmark.measurement(.custom("virtual ms to 99%"), Int((result.timeToDiscard99PctSeconds ?? -1) * 1000))
            benchmark.measurement(.custom("passes to 99%"), result.passesToDiscard99Pct ?? -1)
        }
    }
}

/// Every frame allocated at order 0, then every other one freed.
func makeFragmentedAllocator(frames: Int) throws -> BuddyAllocator {
    let allocator = try BuddyAllocator(AllocatorConfiguration(frameCount: frames, watermarks: .none))
    var held: [Int] = []
    held.reserveCapacity(frames)
    while let frame = try? allocator.allocate(order: 0) { held.append(frame) }
    for frame in held where frame % 2 == 0 { try allocator.free(frame: frame, order: 0) }
    return allocator
}

/// Resident set size of this process, from /proc/self/statm.
func residentBytes() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = statm.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}
