import BrokerProtocol
import BuddyAllocator
import Dispatch
import Foundation
import GuestMemory
import NIOCore
import NIOPosix
import PageReporting
import Testing

@testable import GuestAgent

/// Host discard against a fake broker and a fake memory socket: the attach before the sync, and
/// the quarantine of reports the guest stopped waiting for.
@Suite("Host discard against a fake broker", .serialized)
struct HostDiscardTests {
    private struct Guest {
        let allocator: BuddyAllocator
        let memory: GuestMemory
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let hostDiscard: HostDiscard
        let connection: AgentConnection
        let clock = VirtualClock()
        let engine: PageReportingEngine

        init(
            broker: FakeBroker,
            memorySocket: FakeMemorySocket,
            policy: HostDiscard.Policy = .required,
            reportTimeout: Duration = .milliseconds(200),
            waitForSession: Bool = true
        ) throws {
            self.allocator = try BuddyAllocator(AllocatorConfiguration(memoryBytes: 256 << 20))
            self.memory = try GuestMemory.memfd(length: 256 << 20)
            self.hostDiscard = HostDiscard(
                attachment: try MemoryAttachment(socketPath: memorySocket.path, memory: self.memory),
                allocator: self.allocator,
                policy: policy
            )
            self.connection = AgentConnection(
                configuration: AgentConfiguration(
                    host: "127.0.0.1",
                    port: broker.port,
                    transport: .plaintext,
                    reportTimeout: reportTimeout,
                    reconnectBackoff: ReconnectBackoff(initial: .milliseconds(20), maximum: .milliseconds(200))
                ),
                allocator: self.allocator,
                reportingOrder: 9,
                eventLoopGroup: self.group,
                hostDiscard: self.hostDiscard
            )
            let remote = RemoteReportingDevice(connection: self.connection)
            self.engine = try PageReportingEngine.register(
                device: HostDiscardingDevice(
                    remote: remote,
                    hostDiscard: self.hostDiscard,
                    fallback: GuestDiscardingDevice(remote: remote, memory: self.memory, repopulateOnFailure: false)
                ),
                allocator: self.allocator,
                scheduler: self.clock,
                configuration: PageReportingConfiguration(orderOverride: 9)
            )
            self.connection.start()
            if waitForSession { _ = try wait(self.connection.activeSession()) }
        }

        func stop() throws {
            self.engine.unregister()
            try wait(self.connection.shutdown())
            try self.group.syncShutdownGracefully()
        }

        /// Allocates every order-0 frame the allocator will hand out, then frees them again.
        func allocatableFrames() -> Set<Int> {
            var frames: [Int] = []
            while let frame = try? self.allocator.allocate(order: 0) { frames.append(frame) }
            for frame in frames { try? self.allocator.free(frame: frame, order: 0) }
            return Set(frames)
        }

        func checkClean() {
            #expect(self.allocator.statistics.isolatedPages == 0)
            #expect(throws: Never.self) { try self.allocator.validate() }
        }
    }

    /// The frames of the reports the broker received.
    private func reportedFrames(_ frames: [FakeBroker.Received]) -> Set<Int> {
        var result: Set<Int> = []
        for received in frames {
            guard case .report(let report) = received.frame.body else { continue }
            for index in stride(from: 0, to: report.blocks.count, by: 2) {
                let first = Int(report.blocks[index])
                result.formUnion(first..<(first + 1 << Int(report.blocks[index + 1])))
            }
        }
        return result
    }

    @Test("the memory is attached, with its memfd, before the sync; accepted reports need no guest discard")
    func attachBeforeSync() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let memorySocket = try FakeMemorySocket()
        defer { memorySocket.stop() }
        let guest = try Guest(broker: broker, memorySocket: memorySocket)
        #expect(memorySocket.received.count == 1)
        #expect(guest.hostDiscard.mode == .host)
        guest.clock.advance(by: .seconds(2))
        let discarded = guest.allocator.statistics.discardedPages
        #expect(discarded > 0)
        #expect(guest.engine.statistics.reportsFailed == 0)
        // The broker discards: the guest left its (never touched) memfd alone either way, and a
        // guest discard would have been counted by the fallback device.
        guest.checkClean()
        try guest.stop()
    }

    @Test("a refused attach with host discard required: no sync, no report, retried")
    func refusedAttachRequired() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let memorySocket = try FakeMemorySocket()
        defer { memorySocket.stop() }
        memorySocket.script([.permissionDenied, .permissionDenied])
        let guest = try Guest(broker: broker, memorySocket: memorySocket, waitForSession: false)
        // Third attach (the script ran out) succeeds: then, and only then, the sync.
        _ = try wait(guest.connection.activeSession())
        try broker.waitFor { frames in frames.contains { if case .sync = $0.frame.body { true } else { false } } }
        #expect(memorySocket.received.count == 3)
        let hellos = broker.frames.filter { if case .clientHello = $0.frame.body { true } else { false } }
        let syncs = broker.frames.filter { if case .sync = $0.frame.body { true } else { false } }
        #expect(hellos.count == 3)
        #expect(syncs.count == 1 && syncs[0].connection == 3)
        #expect(guest.hostDiscard.mode == .host)
        try guest.stop()
    }

    @Test("a refused first attach by default (preferred): guest discard for the rest of the run")
    func refusedAttachPreferredFallsBack() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let memorySocket = try FakeMemorySocket()
        defer { memorySocket.stop() }
        memorySocket.script([.permissionDenied])
        let guest = try Guest(broker: broker, memorySocket: memorySocket, policy: .preferred)
        #expect(guest.hostDiscard.mode == .guest)
        guest.clock.advance(by: .seconds(2))
        #expect(guest.allocator.statistics.discardedPages > 0)
        #expect(guest.engine.statistics.reportsFailed == 0)
        try guest.stop()
    }

    @Test("a report the guest gave up on is not allocated again until its late result; then it is")
    func quarantineUntilLateResult() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let memorySocket = try FakeMemorySocket()
        defer { memorySocket.stop() }
        broker.answer = .hold
        let guest = try Guest(broker: broker, memorySocket: memorySocket)
        guest.clock.advance(by: .seconds(2))
        #expect(guest.connection.statistics.reportsTimedOut == 1)
        let held = self.reportedFrames(broker.frames)
        #expect(!held.isEmpty)
        let figures = guest.hostDiscard.quarantine!.figures
        #expect(figures.reports == 1)
        #expect(figures.frames == held.count)
        #expect(guest.hostDiscard.quarantine!.quarantinedBytes == held.count * 4096)
        guest.checkClean()
        // Every frame the allocator still hands out lies outside the report.
        let allocatable = guest.allocatableFrames()
        #expect(allocatable.isDisjoint(with: held))
        #expect(allocatable.count == guest.allocator.configuration.frameCount - held.count)

        // The slow broker answers: the frames come back.
        broker.answer = .ok
        broker.answerHeld(.ok)
        #expect(waitUntil { guest.hostDiscard.quarantine!.figures.releasedByLateResult == 1 })
        #expect(guest.hostDiscard.quarantine!.figures.reports == 0)
        // Accepted late: the broker punched them, so the record says discarded (and the
        // resynchronising session's sync carries them).
        #expect(held.allSatisfy { guest.allocator.frameInfo($0)?.isDiscarded == true })
        try broker.waitFor { frames in
            frames.contains { received in
                guard case .sync(let sync) = received.frame.body, received.connection == 2 else { return false }
                return sync.ranges.count >= 2 && sync.ranges[1] > 0
            }
        }
        #expect(guest.hostDiscard.quarantine!.quarantinedBytes == 0)
        #expect(guest.allocatableFrames().isSuperset(of: held))
        guest.checkClean()
        try guest.stop()
    }

    @Test(
        "connection lost with a report in flight: held across a session without prior_reports_settled, released by one with it"
    )
    func quarantineUntilSettledSession() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let memorySocket = try FakeMemorySocket()
        defer { memorySocket.stop() }
        broker.answer = .hold
        let guest = try Guest(broker: broker, memorySocket: memorySocket, reportTimeout: .seconds(30))
        DispatchQueue(label: "drop-when-reported").async {
            try? broker.waitFor { frames in frames.contains { if case .report = $0.frame.body { true } else { false } }
            }
            broker.dropConnections()
        }
        guest.clock.advance(by: .seconds(2))
        #expect(guest.connection.statistics.reportsNotDelivered == 1)
        let held = self.reportedFrames(broker.frames)
        #expect(guest.hostDiscard.quarantine!.figures.reports == 1)
        // The next session does not promise anything about the old one: still held.
        try broker.waitFor { _, connections in connections >= 2 }
        _ = try wait(guest.connection.activeSession())
        #expect(guest.hostDiscard.quarantine!.figures.reports == 1)
        #expect(guest.allocatableFrames().isDisjoint(with: held))

        broker.priorReportsSettled = true
        broker.dropConnections()
        #expect(waitUntil { guest.hostDiscard.quarantine!.figures.releasedBySettledSession == 1 })
        #expect(guest.hostDiscard.quarantine!.figures.reports == 0)
        #expect(guest.allocatableFrames().isSuperset(of: held))
        // The memory connection outlived the TLS sessions: attached once.
        #expect(guest.hostDiscard.attachment.attachCount == 1)
        guest.checkClean()
        try guest.stop()
    }

    @Test("when the broker's memory connection ends, the next session attaches again before its sync")
    func reattachAfterMemoryConnectionEnds() throws {
        let broker = try FakeBroker()
        defer { try? broker.shutdown() }
        let memorySocket = try FakeMemorySocket()
        defer { memorySocket.stop() }
        let guest = try Guest(broker: broker, memorySocket: memorySocket)
        memorySocket.dropConnections()
        #expect(waitUntil { !guest.hostDiscard.attachment.isAttached })
        broker.dropConnections()
        try broker.waitFor { frames in
            frames.filter { if case .sync = $0.frame.body { true } else { false } }.count >= 2
        }
        #expect(memorySocket.received.filter { if case .attach = $0.request.body { true } else { false } }.count == 2)
        #expect(guest.hostDiscard.attachment.attachCount == 2)
        try guest.stop()
    }
}
