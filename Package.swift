// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "pagebroker",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "BuddyAllocator", targets: ["BuddyAllocator"]),
        .library(name: "PageReporting", targets: ["PageReporting"]),
        .library(name: "GuestSimulator", targets: ["GuestSimulator"]),
        .executable(name: "pagebroker-agent", targets: ["pagebroker-agent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
    ],
    targets: [
        // MARK: Guest engine
        .target(name: "BuddyAllocator"),
        .target(name: "PageReporting", dependencies: ["BuddyAllocator"]),
        .target(name: "GuestSimulator", dependencies: ["BuddyAllocator", "PageReporting"]),

        // MARK: Executables
        .executableTarget(
            name: "pagebroker-agent",
            dependencies: [
                "GuestSimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // MARK: Tests
        .testTarget(name: "BuddyAllocatorTests", dependencies: ["BuddyAllocator"]),
        .testTarget(name: "PageReportingTests", dependencies: ["PageReporting", "BuddyAllocator"]),
        .testTarget(name: "GuestSimulatorTests", dependencies: ["GuestSimulator"]),
    ],
    swiftLanguageModes: [.v6]
)
