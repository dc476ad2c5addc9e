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
        .library(name: "BrokerProtocol", targets: ["BrokerProtocol"]),
        .library(name: "TLSTransport", targets: ["TLSTransport"]),
        .library(name: "Broker", targets: ["Broker"]),
        .library(name: "BrokerAdminClient", targets: ["BrokerAdminClient"]),
        .executable(name: "pagebrokerd", targets: ["pagebrokerd"]),
        .library(name: "GuestAgent", targets: ["GuestAgent"]),
        .library(name: "Systemd", targets: ["Systemd"]),
        .library(name: "GuestMemory", targets: ["GuestMemory"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Tests only: property-based checks of the ledger's sums and the hello's limits at the extremes.
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        // MARK: Guest engine
        .target(name: "BuddyAllocator"),
        .target(name: "PageReporting", dependencies: ["BuddyAllocator"]),
        .target(name: "GuestSimulator", dependencies: ["BuddyAllocator", "PageReporting"]),

        // MARK: Wire protocol
        .target(
            name: "BrokerProtocol",
            dependencies: [
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // libFuzzer entry point for the frame decoder; also a crash reproducer when built without the fuzzer.
        .executableTarget(name: "FrameDecoderFuzzer", dependencies: ["BrokerProtocol"]),

        // MARK: Transport
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // C wrappers for OpenSSL's function-like macros and stack types, which Swift cannot import.
        .target(name: "CPagebrokerOpenSSLShims", dependencies: ["COpenSSL"]),
        .target(
            name: "TLSTransport",
            dependencies: [
                "COpenSSL",
                "CPagebrokerOpenSSLShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "tls-roundtrip-bench",
            dependencies: [
                "TLSTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),

        // MARK: Admin client
        // The admin API's types, the admin socket client and the `top` view: all that
        // pagebrokerctl needs, without the broker's HTTP, Prometheus, YAML and TLS.
        .target(
            name: "BrokerAdminClient",
            dependencies: [
                "BrokerProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),

        // MARK: Broker
        // C wrappers for the memory socket: recvmsg with SCM_RIGHTS, SO_PEERCRED, fstatfs magic,
        // F_GET_SEALS and fallocate(PUNCH_HOLE). Its own target: the broker must not depend on
        // the guest side's CGuestMemory.
        .target(name: "CBrokerMemory"),
        // C wrappers for the broker's epoll guest transport: epoll (a packed struct), eventfd,
        // accept4 with TCP_NODELAY, a listening socket bound from a host name.
        .target(name: "CGuestLoop"),
        // libFuzzer entry point for the session state machine; a crash reproducer otherwise.
        .executableTarget(name: "SessionFuzzer", dependencies: ["Broker", "BrokerAdminClient", "BrokerProtocol"]),
        .target(
            name: "Broker",
            dependencies: [
                "BrokerAdminClient",
                "CBrokerMemory",
                "CGuestLoop",
                "BrokerProtocol",
                "TLSTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),

        // The broker's per-report logic in process, for callgrind (docs/benchmarks.md); no
        // product: `swift build --product report-path-bench` builds it.
        .executableTarget(name: "report-path-bench", dependencies: ["Broker"]),

        // MARK: Host service
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .target(
            name: "Systemd",
            dependencies: ["CSystemd", .product(name: "Logging", package: "swift-log")]
        ),

        // MARK: Guest memory
        // C wrappers for memfd_create, fallocate, F_SEAL_* and MADV_* (not reliably imported by
        // Glibc), and the pattern loops that must stay fast in debug builds.
        .target(name: "CGuestMemory"),
        .target(name: "GuestMemory", dependencies: ["CGuestMemory"]),

        // MARK: Guest agent
        .target(
            name: "GuestAgent",
            dependencies: [
                "BuddyAllocator",
                "PageReporting",
                "GuestMemory",
                // The memory socket's descriptor passing (sendmsg with SCM_RIGHTS).
                "CGuestMemory",
                "BrokerProtocol",
                "TLSTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),

        // MARK: Executables
        .executableTarget(
            name: "pagebrokerd",
            dependencies: [
                "Broker",
                "Systemd",
                "TLSTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "pagebroker-agent",
            dependencies: [
                "GuestSimulator",
                "GuestAgent",
                "GuestMemory",
                "CGuestMemory",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "pagebrokerctl",
            dependencies: [
                "BrokerAdminClient",
                "BrokerProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),

        // MARK: Tests
        .testTarget(
            name: "GuestAgentTests",
            dependencies: [
                "GuestAgent",
                "GuestMemory",
                "CGuestMemory",
                "BuddyAllocator",
                "PageReporting",
                "BrokerProtocol",
                "TLSTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .testTarget(
            name: "BrokerTests",
            dependencies: [
                "Broker",
                // memfds for the memory attachment's unit tests.
                "CGuestMemory",
                "BrokerAdminClient",
                "BrokerProtocol",
                // TLS sockets for the guests of the transport's concurrency test.
                "TLSTransport",
                .product(name: "PropertyBased", package: "swift-property-based"),
                // Built so that the admin tests can run it as a real process.
                "pagebrokerctl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(
            name: "BrokerEndToEndTests",
            dependencies: [
                "BrokerProtocol",
                "TLSTransport",
                // memfd_create and seals for the memory socket's tests (the test's own memory).
                "CGuestMemory",
                // Run as real processes by the tests.
                "pagebrokerd",
                "pagebrokerctl",
                "pagebroker-agent",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SystemdTests",
            dependencies: ["Systemd", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(name: "BuddyAllocatorTests", dependencies: ["BuddyAllocator"]),
        .testTarget(name: "GuestMemoryTests", dependencies: ["GuestMemory", "CGuestMemory"]),
        .testTarget(name: "PageReportingTests", dependencies: ["PageReporting", "BuddyAllocator"]),
        .testTarget(
            name: "GuestSimulatorTests",
            dependencies: ["GuestSimulator", "PageReporting", "pagebroker-agent"]
        ),
        .testTarget(
            name: "BrokerProtocolTests",
            dependencies: [
                "BrokerProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .testTarget(
            name: "TLSTransportTests",
            dependencies: [
                "TLSTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
