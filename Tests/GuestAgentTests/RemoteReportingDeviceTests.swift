import BrokerProtocol
import BuddyAllocator
import Foundation
import NIOCore
import NIOPosix
import PageReporting
import Testing

@testable import GuestAgent

/// Waits for `future` on a test thread (never an event loop), failing after `timeout`.
func wait<T: Sendable>(_ future: EventLoopFuture<T>, timeout: TimeAmount = .seconds(10)) throws -> T {
    let promise = future.eventLoop.makePromise(of: T.self)
    future.cascade(to: promise)
    let timer = future.eventLoop.scheduleTask(in: timeout) { promise.fail(FakeBrokerTimeout()) }
    defer { timer.cancel() }
    return try promise.futureResult.wait()
}

/// 256 MiB: large enough that the reporting gate (`low + 32 << 9` free pages) opens.
private func makeAllocator() throws -> BuddyAllocator {
    try BuddyAllocator(AllocatorConfiguration(memoryBytes: 256 << 20))
}

private func plaintext(
    port: Int,
    reportTimeout: Duration = .seconds(1),
    reuseFlushInterval: Duration = .milliseconds(20)
) -> AgentConfiguration {
    AgentConfiguration(
        host: "127.0.0.1",
        port: port,
        transport: .plaintext,
        reportTimeout: reportTimeout,
        reuseFlushInterval: reuseFlushInterval,
        reconnectBackoff: ReconnectBackoff(initial: .milliseconds(20), maximum: .milliseconds(200))
    )
}

/// The pages in accepted reports, from the broker's log and the guest's answers alike.
private func reportedPages(_ frames: [FakeBroker.Received]) -> Int {
    frames.reduce(0) { total, received in
        guard case .report(let report) = received.frame.body, let blocks = report.blockList else { return total }
        return total + blocks.reduce(0) { $0 + (1 << Int($1.order)) }
    }
}

@Suite("Remote reporting device against a fake broker", .serialized)
struct RemoteReportingDeviceTests {
    /// A guest connected to `broker` with an engine on a virtual clock.
    private struct Guest {
        let allocator: BuddyAllocator
        let group: MultiThreadedEventLoopGroup
        let connection: AgentConnection
        let clock = VirtualClock()
        let engine: PageReportingEngine

        init(broker: FakeBroker, configuration: AgentConfiguration, connect: Bool = true) throws {
            self.allocator = try makeAllocator()
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            self.connection = AgentConnection(
                configuration: configuration,
                allocator: self.allocator,
                reportingOrder: 9,
                eventLoopGroup: self.group
            )
            if connect {
                self.connection.start()
                _ = try wait(self.connection.activeSession())
            }
            self.engine = try PageReportingEngine.register(
                device: RemoteReportingDevice(connection: self.connection),
                allocator: self.allocator,
                scheduler: self.clock,
                configuration: PageReportingConfiguration(orderOverride: 9)
            )
        }

        func stop() throws {
            self.engine.unregister()
            try wait(self.connection.shutdown())
            try self.group.syncShutdownGracefully()
        }

        func checkClean() {
            let stats = self.allocator.statistics
            #expect(stats.isolatedPages == 0)
            #expect(throws: Never.self) { try self.allocator.validate() }
        }
    }

    @Test("hello, an empty sync, then accepted reports mark exactly the reported pages discarded")
    func acceptedReports() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let guest = try Guest(broker: broker, configuration: plaintext(port: broker.port))
        guest.clock.advance(by: .seconds(2))

        let discarded = guest.allocator.statistics.discardedPages
        #expect(discarded > 0)
        #expect(guest.engine.statistics.reportsFailed == 0)
        let frames = broker.frames.map(\.frame.body)
        guard case .clientHello(let hello) = frames.first, case .sync(let sync) = frames.dropFirst().first else {
            Issue.record("expected ClientHello then Sync, got \(frames.prefix(2))")
            return
        }
        #expect(hello.minOrder == 9)
        #expect(hello.maxOrder == 10)
        #expect(hello.totalPages == UInt64(guest.allocator.configuration.frameCount))
        #expect(sync.chunk == 0 && sync.final && sync.ranges.isEmpty)
        #expect(reportedPages(broker.frames) == discarded)
        guest.checkClean()
        try guest.stop()
        try broker.waitFor { frames in frames.contains { if case .goodbye = $0.frame.body { true } else { false } } }
    }

    @Test("a broker that never answers: the report times out, pages go back unmarked, nothing stalls")
    func silentBroker() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        broker.answer = .silent
        let guest = try Guest(
            broker: broker,
            configuration: plaintext(port: broker.port, reportTimeout: .milliseconds(200))
        )
        let started = ContinuousClock.now
        guest.clock.advance(by: .seconds(2))
        let elapsed = ContinuousClock.now - started

        #expect(elapsed < .seconds(2), "one report times out and the pass stops")
        #expect(guest.engine.statistics.reportsFailed == 1)
        #expect(guest.connection.statistics.reportsTimedOut == 1)
        #expect(guest.allocator.statistics.discardedPages == 0)
        guest.checkClean()
        // The device's backoff asks the engine to come back later rather than forget the blocks.
        let next = try #require(guest.clock.nextDue)
        #expect(next - guest.clock.now >= .seconds(2))
        try guest.stop()
    }

    @Test("a refusal's retry_after_ms is the engine's retry hint")
    func refusedWithRetryAfter() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        broker.answer = .refuse(.rateLimited, retryAfterMs: 5000)
        let guest = try Guest(broker: broker, configuration: plaintext(port: broker.port))
        guest.clock.advance(by: .seconds(2))

        #expect(guest.engine.statistics.reportsFailed == 1)
        #expect(guest.connection.statistics.reportsRefused == 1)
        #expect(guest.allocator.statistics.discardedPages == 0)
        let next = try #require(guest.clock.nextDue)
        #expect(next - guest.clock.now == .seconds(5))
        guest.checkClean()

        // Once the broker takes reports again, the retried pass reports the same memory.
        broker.answer = .ok
        guest.clock.advance(by: .seconds(5))
        #expect(guest.allocator.statistics.discardedPages > 0)
        #expect(guest.engine.statistics.reportsFailed == 1)
        guest.checkClean()
        try guest.stop()
    }

    @Test("without a session reports fail at once and the engine takes its error path")
    func notConnected() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let guest = try Guest(broker: broker, configuration: plaintext(port: broker.port), connect: false)
        let started = ContinuousClock.now
        guest.clock.advance(by: .seconds(2))
        #expect(ContinuousClock.now - started < .milliseconds(500))
        #expect(guest.engine.statistics.reportsFailed == 1)
        #expect(guest.connection.statistics.reportsNotDelivered == 1)
        #expect(guest.allocator.statistics.discardedPages == 0)
        guest.checkClean()
        try guest.stop()
    }

    @Test("reuse is sent before the next report even when its timer has not fired")
    func reuseBeforeReport() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let guest = try Guest(
            broker: broker,
            configuration: plaintext(port: broker.port, reuseFlushInterval: .seconds(3600))
        )
        guest.clock.advance(by: .seconds(2))
        #expect(guest.allocator.statistics.discardedPages > 0)

        // Allocation takes reported blocks first (tail putback puts them last, but a large
        // allocation must take some): take half of memory.
        var taken: [Int] = []
        for _ in 0..<64 { taken.append(try guest.allocator.allocate(order: 10)) }

        // The allocator batches reuse runs; sending the report collects them first.
        _ = try? wait(guest.connection.submitReport(blocks: [0, 9]))
        let reused = guest.connection.reuseBuffer?.reusedPages ?? 0
        #expect(reused > 0)
        let frames = broker.frames
        let reuseIndex = try #require(frames.lastIndex { if case .reuse = $0.frame.body { true } else { false } })
        let reportIndex = try #require(frames.lastIndex { if case .report = $0.frame.body { true } else { false } })
        #expect(reuseIndex < reportIndex)
        let sentPages = frames.reduce(0) { total, received in
            guard case .reuse(let reuse) = received.frame.body, let ranges = reuse.rangeList else { return total }
            return total + ranges.reduce(0) { $0 + Int($1.count) }
        }
        #expect(sentPages == reused)
        for frame in taken { try guest.allocator.free(frame: frame, order: 10) }
        guest.checkClean()
        try guest.stop()
    }

    @Test("after the broker drops the connection the agent reconnects and syncs its whole record")
    func reconnectAndSync() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let guest = try Guest(broker: broker, configuration: plaintext(port: broker.port))
        guest.clock.advance(by: .seconds(2))
        let record = guest.allocator.discardedRanges()
        #expect(!record.isEmpty)

        broker.dropConnections()
        try broker.waitFor { frames in
            frames.contains { received in
                guard received.connection == 2, case .sync(let sync) = received.frame.body else { return false }
                return sync.final
            }
        }
        let synced = broker.frames.filter { $0.connection == 2 }.flatMap { received -> [UInt64] in
            guard case .sync(let sync) = received.frame.body else { return [] }
            return sync.ranges
        }
        #expect(synced == record.flatMap { [UInt64($0.lowerBound), UInt64($0.count)] })
        _ = try wait(guest.connection.activeSession())
        #expect(guest.connection.statistics.sessions == 2)
        #expect(guest.connection.statistics.reconnects == 1)
        guest.checkClean()
        try guest.stop()
    }

    @Test("the device blocks only the caller; a report's result is waited for with a limit")
    func waitLimit() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let promise = group.next().makePromise(of: Void.self)
        let started = ContinuousClock.now
        let outcome = RemoteReportingDevice.wait(for: promise.futureResult, atMost: .milliseconds(100))
        #expect(ContinuousClock.now - started >= .milliseconds(100))
        guard case .failure(let error) = outcome else {
            Issue.record("expected a timeout")
            return
        }
        #expect(error.code == .timedOut)
        promise.succeed()
    }
}
