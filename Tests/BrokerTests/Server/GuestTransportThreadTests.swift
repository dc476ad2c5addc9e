import BrokerProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TLSTransport
import Testing

@testable import Broker

/// The epoll guest transport with every thread that touches it at once: guests reporting on
/// their own threads, the core pausing and resuming their tenant from another (its answers
/// change), a newer session replacing an older one (the core calls into the old session's loop),
/// the watchdog's probe of the loops, and the stop.
///
/// Not under ThreadSanitizer (`scripts/test-tsan` runs the suites named `ConcurrencyTests`):
/// the broker's state is guarded by `Synchronization.Mutex`, which on Linux waits on a futex
/// ThreadSanitizer cannot see, so it reports every access made under one as a race (a 10-line
/// program of four threads incrementing one `Mutex<Int>` shows it). The allocator's and the
/// engine's concurrency tests, which use pthread locks, run there.
@Suite(.serialized) struct GuestTransportThreadTests {
    static let pki: Result<String, any Error> = Result {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("pagebroker-transport-tests-\(getpid())").path
        let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("scripts").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [scripts + "/make-test-pki", directory]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw GuestFailure("make-test-pki failed") }
        return directory
    }

    struct GuestFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// A guest on a blocking socket of its own thread: hello, sync, `reports` reports of one
    /// order-9 block each; returns the results' reasons in order.
    static func runGuest(
        port: Int,
        pki: String,
        certificate: String,
        firstSeq: UInt64,
        reports: Int,
        startAfter: DispatchSemaphore? = nil,
        signalAfter: (count: Int, semaphore: DispatchSemaphore)? = nil
    ) throws -> [Pagebroker_V1_ReasonCode] {
        startAfter?.wait()
        let fd = try ServerTestSupport.connect(port: port)
        defer { close(fd) }
        let context = try TLSContext(
            configuration: .client(
                certificateChainPath: "\(pki)/\(certificate).pem",
                privateKeyPath: "\(pki)/\(certificate).key",
                caBundlePath: "\(pki)/ca.pem"
            )
        )
        // Blocking: every call completes or fails.
        let tls = try TLSSocket(context: context, descriptor: fd, serverHostname: "localhost")
        guard try tls.handshake() == .done else { throw GuestFailure("handshake did not complete") }

        var pending: [UInt8] = []
        func send(_ frame: Pagebroker_V1_Frame) throws {
            var buffer = ByteBuffer()
            try FrameEncoder.write(frame, into: &buffer, maxFrameSize: 1 << 20)
            let bytes = Array(buffer.readableBytesView)
            guard try bytes.withUnsafeBytes({ try tls.write($0) }) == .wrote(bytes.count) else {
                throw GuestFailure("short write")
            }
        }
        func receive() throws -> Pagebroker_V1_Frame {
            var scratch = [UInt8](repeating: 0, count: 4_096)
            while true {
                if let (frame, consumed) = try pending.withUnsafeBytes({ raw in
                    try FrameParser(maxFrameSize: 1 << 20).parse(RawSpan(_unsafeBytes: raw))
                }) {
                    pending.removeFirst(consumed)
                    return frame
                }
                let outcome = try scratch.withUnsafeMutableBytes { try tls.read(into: $0) }
                guard case .bytes(let count) = outcome else { throw GuestFailure("stream ended: \(outcome)") }
                pending += scratch[0..<count]
            }
        }

        try send(
            .with {
                $0.clientHello = .with {
                    $0.protocolVersion = 1
                    $0.agentVersion = "concurrency-test"
                    $0.pageSize = 4096
                    $0.totalPages = 1 << 18
                    $0.minOrder = 9
                    $0.maxOrder = 10
                }
            }
        )
        guard case .serverHello = try receive().body else { throw GuestFailure("no ServerHello") }
        try send(.with { $0.sync = .with { $0.final = true } })
        var reasons: [Pagebroker_V1_ReasonCode] = []
        /// After a failed send: whether the broker had said goodbye (a replaced session's
        /// socket closes right after it).
        func saidGoodbye() -> Bool {
            while let frame = try? receive() {
                if case .goodbye = frame.body { return true }
            }
            return false
        }
        for index in 0..<reports {
            let seq = firstSeq + UInt64(index)
            do {
                try send(
                    .with {
                        $0.report = .with {
                            $0.seq = seq
                            $0.blocks = [UInt64(index % 512) * 512, 9]
                        }
                    }
                )
            } catch {
                if saidGoodbye() { break }
                throw error
            }
            // A Ping may come first; anything else is the result.
            var frame = try receive()
            while case .ping(let ping) = frame.body {
                try send(.with { $0.pong = .with { $0.nonce = ping.nonce } })
                frame = try receive()
            }
            if case .goodbye = frame.body { break }  // replaced by the next session of the guest
            guard case .reportResult(let result) = frame.body, result.seq == seq else {
                throw GuestFailure("report \(seq) got \(frame)")
            }
            reasons.append(result.reason)
            if let signalAfter, reasons.count == signalAfter.count { signalAfter.semaphore.signal() }
            // Frames already reported come back to the guest so that they can be reported again.
            do {
                try send(.with { $0.reuse = .with { $0.ranges = [UInt64(index % 512) * 512, 512] } })
            } catch {
                if saidGoodbye() { break }
                throw error
            }
        }
        _ = try? tls.shutdown()
        return reasons
    }

    /// Runs `body` on a thread of its own (a blocking guest must not hold one of the few
    /// threads Swift's concurrency pool has).
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }

    @Test func guestsReportWhileTheCorePausesReplacesProbesAndStops() async throws {
        let pki = try Self.pki.get()
        let core = BrokerCore(policies: PolicySet(tenants: ["t1": TenantPolicy(), "t2": TenantPolicy()]))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var configuration = ServerTestSupport.configuration(pki: pki, transport: .epoll)
        // Two loops whatever the machine: the first deals connections to both, and the core
        // replaces a session from the other loop's thread.
        configuration.guestLoops = 2
        let server = try BrokerServer(
            configuration: configuration,
            core: core,
            group: group,
            logger: Logger(label: "transport-test")
        )
        let port = try await server.start().port!

        let churning = Atomic<Bool>(true)
        let churn = Task {
            var paused = false
            var probes = 0
            while churning.load(ordering: .acquiring) {
                paused.toggle()
                try? core.setPaused(tenant: "t2", paused: paused)
                if await server.checkGuestLoops(within: .seconds(5), probe: { _ = core.sessionCount }) { probes += 1 }
                await Task.yield()
            }
            try? core.setPaused(tenant: "t2", paused: false)
            return probes
        }
        // The second session of t1/g1 connects once the first has 50 results: the core then
        // replaces the first from the second's loop, and the first is told goodbye on its own.
        let firstIsReporting = DispatchSemaphore(value: 0)
        async let first = Self.onThread {
            try Self.runGuest(
                port: port,
                pki: pki,
                certificate: "client-t1-g1",
                firstSeq: 1,
                reports: 100_000,
                signalAfter: (50, firstIsReporting)
            )
        }
        async let paused = Self.onThread {
            try Self.runGuest(port: port, pki: pki, certificate: "client-t2-g7", firstSeq: 1, reports: 300)
        }
        async let second = Self.onThread {
            try Self.runGuest(
                port: port,
                pki: pki,
                certificate: "client-t1-g1",
                firstSeq: 1_000_000,
                reports: 300,
                startAfter: firstIsReporting
            )
        }
        let (firstReasons, pausedReasons, secondReasons) = try await (first, paused, second)
        churning.store(false, ordering: .releasing)
        let probes = await churn.value

        #expect(Set(firstReasons).isSubset(of: [.ok]), "\(Set(firstReasons))")
        #expect(Set(secondReasons).isSubset(of: [.ok]), "\(Set(secondReasons))")
        #expect(firstReasons.count >= 50 && firstReasons.count < 100_000, "the first session was never replaced")
        #expect(secondReasons.count == 300)
        #expect(pausedReasons.count == 300)
        #expect(Set(pausedReasons).isSubset(of: [.ok, .tenantPaused]), "\(Set(pausedReasons))")
        #expect(probes > 0, "the loops never answered the watchdog's probe")

        await server.stop(drainTimeout: .seconds(5))
        #expect(core.sessionCount == 0)
        #expect(server.connectionCount == 0)
        #expect(core.checkInvariants().isEmpty)
        try await group.shutdownGracefully()
    }
}
