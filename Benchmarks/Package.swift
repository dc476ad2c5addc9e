// swift-tools-version:6.1
// Benchmarks live in their own package so that users of the pagebroker libraries do not get
// ordo-one/benchmark (and its malloc interposer) as a dependency. Run from this directory:
//
//     swift package benchmark                 # everything
//     swift package benchmark --filter order  # one benchmark
//
// See docs/benchmarks.md for what each benchmark measures and the targets it is held to.
import Foundation
import PackageDescription

// A local package's identity is its directory name, which depends on where the repository was
// cloned; read it instead of guessing.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let pagebroker = root.lastPathComponent

let package = Package(
    name: "pagebroker-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "EngineBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "BuddyAllocator", package: pagebroker),
                .product(name: "PageReporting", package: pagebroker),
                .product(name: "GuestSimulator", package: pagebroker),
            ],
            path: "Benchmarks/EngineBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "LedgerBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Broker", package: pagebroker),
            ],
            path: "Benchmarks/LedgerBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "ProtocolBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "BrokerProtocol", package: pagebroker),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/ProtocolBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
