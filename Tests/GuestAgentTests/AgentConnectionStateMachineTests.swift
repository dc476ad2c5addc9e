import BrokerProtocol
import Testing

@testable import GuestAgent

private let geometry = GuestGeometry(pageSize: 4096, totalPages: 1 << 20, minOrder: 9, maxOrder: 10)

private func machine(
    reportTimeout: Duration = .seconds(1),
    maxFrameSize: Int = 65536
) -> AgentConnectionStateMachine {
    AgentConnectionStateMachine(
        configuration: .init(
            geometry: geometry,
            agentVersion: "test",
            maxFrameSize: maxFrameSize,
            reportTimeout: reportTimeout,
            helloTimeout: .seconds(10)
        )
    )
}

private func serverHello(
    maxFrameSize: UInt32 = 65536,
    heartbeatMs: UInt32 = 10_000,
    maxRanges: UInt32 = 0,
    minOrder: UInt32 = 9,
    version: UInt32 = 1
) -> Pagebroker_V1_Frame {
    var frame = Pagebroker_V1_Frame()
    frame.serverHello = .with {
        $0.protocolVersion = version
        $0.sessionID = "s-1"
        $0.maxFrameSize = maxFrameSize
        $0.heartbeatIntervalMs = heartbeatMs
        $0.maxRangesPerReport = maxRanges
        $0.minReportOrder = minOrder
        $0.tenantID = "t1"
        $0.guestID = "g1"
    }
    return frame
}

private func result(_ seq: UInt64, _ reason: Pagebroker_V1_ReasonCode = .ok, retryMs: UInt32 = 0) -> Pagebroker_V1_Frame
{
    var frame = Pagebroker_V1_Frame()
    frame.reportResult = .with {
        $0.seq = seq
        $0.reason = reason
        $0.retryAfterMs = retryMs
    }
    return frame
}

/// A machine with hello and an empty sync done, at time `at`.
private func activeMachine(
    at time: Duration = .seconds(1),
    reportTimeout: Duration = .seconds(1),
    heartbeatMs: UInt32 = 10_000,
    maxRanges: UInt32 = 0,
    maxFrameSize: UInt32 = 65536
) -> AgentConnectionStateMachine {
    var machine = machine(reportTimeout: reportTimeout)
    _ = machine.connected(now: time)
    let actions = machine.receive(
        serverHello(maxFrameSize: maxFrameSize, heartbeatMs: heartbeatMs, maxRanges: maxRanges),
        now: time
    )
    precondition(actions.established != nil)
    _ = machine.sync(discarded: [], now: time)
    return machine
}

private func errorCode(_ actions: AgentConnectionStateMachine.Actions) -> Pagebroker_V1_ReasonCode? {
    guard actions.close != nil, let frame = actions.frames.last, case .error(let error) = frame.body else { return nil }
    return error.code
}

@Suite("Connection state machine")
struct AgentConnectionStateMachineTests {
    @Test("connected sends a ClientHello describing the guest")
    func clientHello() throws {
        var machine = machine(maxFrameSize: 8192)
        let actions = machine.connected(now: .zero)
        let frame = try #require(actions.frames.first)
        guard case .clientHello(let hello) = frame.body else {
            Issue.record("expected ClientHello, got \(frame)")
            return
        }
        #expect(hello.protocolVersion == 1)
        #expect(hello.pageSize == 4096)
        #expect(hello.totalPages == 1 << 20)
        #expect(hello.minOrder == 9)
        #expect(hello.maxOrder == 10)
        #expect(hello.maxFrameSize == 8192)
        #expect(hello.agentVersion == "test")
        #expect(actions.close == nil)
        #expect(!machine.isActive)
    }

    @Test("ServerHello establishes the session with unset fields defaulted")
    func serverHelloEstablishes() throws {
        var machine = machine()
        _ = machine.connected(now: .zero)
        let actions = machine.receive(serverHello(heartbeatMs: 0, maxRanges: 0, minOrder: 0), now: .zero)
        let session = try #require(actions.established)
        #expect(session.maxFrameSize == 65536)
        #expect(session.maxRangesPerReport == 256)
        #expect(session.heartbeatInterval == .seconds(10))
        // The broker's floor is never below what the guest itself reports.
        #expect(session.minReportOrder == 9)
        #expect(session.tenant == "t1")
        #expect(session.guest == "g1")
        #expect(actions.frames.isEmpty)
        #expect(!machine.isActive, "reports wait for the sync")
    }

    @Test("a ServerHello frame size above the proposal or below 4096 is a protocol violation")
    func badServerHello() {
        for size: UInt32 in [65537, 4095, 0] {
            var machine = machine()
            _ = machine.connected(now: .zero)
            let actions = machine.receive(serverHello(maxFrameSize: size), now: .zero)
            #expect(errorCode(actions) == .protocolViolation, "size \(size)")
            #expect(machine.isClosed)
        }
        var machine = machine()
        _ = machine.connected(now: .zero)
        #expect(errorCode(machine.receive(serverHello(version: 2), now: .zero)) == .unsupportedVersion)
    }

    @Test("an empty discarded record is one empty final sync chunk")
    func emptySync() throws {
        var machine = machine()
        _ = machine.connected(now: .zero)
        _ = machine.receive(serverHello(), now: .zero)
        let actions = machine.sync(discarded: [], now: .zero)
        #expect(actions.frames.count == 1)
        guard case .sync(let sync) = actions.frames[0].body else {
            Issue.record("expected Sync")
            return
        }
        #expect(sync.chunk == 0)
        #expect(sync.final)
        #expect(sync.ranges.isEmpty)
        #expect(machine.isActive)
    }

    @Test("a large sync is chunked to fit the negotiated frame size, numbered, final on the last")
    func chunkedSync() throws {
        var machine = machine()
        _ = machine.connected(now: .zero)
        _ = machine.receive(serverHello(maxFrameSize: 4096), now: .zero)
        // 5000 single-page runs with large frame numbers: about 20 KB of varints.
        let ranges = (0..<5000).map { (900_000 + $0 * 2)..<(900_000 + $0 * 2 + 1) }
        let actions = machine.sync(discarded: ranges, now: .zero)
        #expect(actions.frames.count > 4)
        var union: [UInt64] = []
        for (index, frame) in actions.frames.enumerated() {
            let size = try (frame.serializedBytes() as [UInt8]).count
            #expect(size <= 4096)
            guard case .sync(let sync) = frame.body else {
                Issue.record("expected Sync")
                return
            }
            #expect(sync.chunk == UInt32(index))
            #expect(sync.final == (index == actions.frames.count - 1))
            union += sync.ranges
        }
        #expect(union == ranges.flatMap { [UInt64($0.lowerBound), UInt64($0.count)] })
    }

    @Test("results are matched to their reports by seq")
    func resultMatching() throws {
        var machine = activeMachine()
        let first = try machine.report(blocks: [512, 9], now: .seconds(1)).get()
        let second = try machine.report(blocks: [1024, 10], now: .seconds(1)).get()
        #expect(first.seq == 1)
        #expect(second.seq == 2)
        guard case .report(let report) = second.actions.frames[0].body else {
            Issue.record("expected Report")
            return
        }
        #expect(report.seq == 2)
        #expect(report.blocks == [1024, 10])
        #expect(machine.outstandingReports == 2)

        let accepted = machine.receive(result(1), now: .seconds(1))
        #expect(accepted.completions == [.init(seq: 1, outcome: .accepted)])
        let refused = machine.receive(result(2, .rateLimited, retryMs: 250), now: .seconds(1))
        let completion = try #require(refused.completions.first)
        #expect(completion.seq == 2)
        guard case .failed(let error) = completion.outcome else {
            Issue.record("expected a failure")
            return
        }
        #expect(error.code == .refused)
        #expect(error.reason == .rateLimited)
        #expect(error.retryAfter == .milliseconds(250))
        #expect(machine.outstandingReports == 0)
    }

    @Test("a result for a seq never sent, or answered twice, is a protocol violation")
    func unknownResult() throws {
        var machine = activeMachine()
        #expect(errorCode(machine.receive(result(7), now: .seconds(1))) == .protocolViolation)

        var again = activeMachine()
        _ = try again.report(blocks: [512, 9], now: .seconds(1)).get()
        _ = again.receive(result(1), now: .seconds(1))
        #expect(errorCode(again.receive(result(1), now: .seconds(1))) == .protocolViolation)
    }

    @Test("reports fail locally outside a session or outside the announced limits")
    func reportLimits() {
        var idle = machine()
        #expect(throws: AgentError.self) { try idle.report(blocks: [512, 9], now: .zero).get() }
        if case .failure(let error) = idle.report(blocks: [512, 9], now: .zero) {
            #expect(error.code == .notConnected)
        }

        var machine = activeMachine(maxRanges: 2)
        for blocks: [UInt64] in [[], [0, 9, 512, 9, 1024, 9], [0, 8], [0, 11]] {
            guard case .failure(let error) = machine.report(blocks: blocks, now: .seconds(1)) else {
                Issue.record("\(blocks) should not be sent")
                continue
            }
            #expect(error.code == .outsideSessionLimits)
        }
        #expect(machine.outstandingReports == 0)
    }

    @Test("a report without a result by its deadline times out; a late failure is ignored")
    func reportTimeout() throws {
        var machine = activeMachine(reportTimeout: .milliseconds(200))
        _ = try machine.report(blocks: [512, 9], now: .seconds(1)).get()
        #expect(machine.nextReportDeadline == .seconds(1) + .milliseconds(200))
        #expect(machine.tick(now: .seconds(1) + .milliseconds(199)).completions.isEmpty)
        let expired = machine.tick(now: .seconds(1) + .milliseconds(200))
        #expect(expired.completions.count == 1)
        guard case .failed(let error) = expired.completions[0].outcome else {
            Issue.record("expected a failure")
            return
        }
        #expect(error.code == .timedOut)
        let late = machine.receive(result(1, .backendFailed), now: .seconds(2))
        #expect(late.lateResults == [1])
        #expect(late.close == nil)
        #expect(late.completions.isEmpty)
        #expect(machine.isActive)
    }

    @Test("an accepted late result ends the session so that the next sync makes the records equal")
    func lateAcceptedResult() throws {
        var machine = activeMachine(reportTimeout: .milliseconds(200))
        _ = try machine.report(blocks: [512, 9], now: .seconds(1)).get()
        _ = machine.tick(now: .seconds(2))
        _ = try machine.report(blocks: [1024, 9], now: .seconds(2)).get()
        let late = machine.receive(result(1), now: .seconds(2))
        #expect(late.lateResults == [1])
        #expect(late.close?.resynchronise == true)
        guard case .goodbye(let goodbye) = late.frames.first?.body else {
            Issue.record("expected Goodbye")
            return
        }
        #expect(goodbye.reason == .ok)
        // The report still outstanding fails with the session.
        #expect(late.completions.map(\.seq) == [2])
        #expect(machine.isClosed)
    }

    @Test("Ping is answered with Pong carrying the same nonce; an unexpected Pong is ignored")
    func pingPong() {
        var machine = activeMachine()
        var ping = Pagebroker_V1_Frame()
        ping.ping = .with { $0.nonce = 42 }
        let actions = machine.receive(ping, now: .seconds(2))
        guard case .pong(let pong) = actions.frames.first?.body else {
            Issue.record("expected Pong")
            return
        }
        #expect(pong.nonce == 42)
        var stray = Pagebroker_V1_Frame()
        stray.pong = .with { $0.nonce = 9 }
        #expect(machine.receive(stray, now: .seconds(2)) == .none)
    }

    @Test("an idle guest pings after one interval and gives up after three silent ones")
    func heartbeats() throws {
        var machine = activeMachine(at: .zero, heartbeatMs: 1000)
        #expect(machine.tick(now: .milliseconds(999)).frames.isEmpty)
        let ping = machine.tick(now: .seconds(1))
        guard case .ping = ping.frames.first?.body else {
            Issue.record("expected Ping")
            return
        }
        // Sent just now: no second ping until another interval passes.
        #expect(machine.tick(now: .milliseconds(1500)).frames.isEmpty)
        _ = machine.report(blocks: [512, 9], now: .milliseconds(2500))
        let silent = machine.tick(now: .seconds(3))
        #expect(silent.close != nil)
        #expect(silent.frames.isEmpty, "a silent peer is closed without Error")
        #expect(silent.completions.count == 1)
        #expect(machine.isClosed)
    }

    @Test("anything received counts as a sign of life")
    func signOfLife() {
        var machine = activeMachine(at: .zero, heartbeatMs: 1000)
        var pong = Pagebroker_V1_Frame()
        pong.pong = .with { $0.nonce = 1 }
        _ = machine.receive(pong, now: .milliseconds(2900))
        #expect(machine.tick(now: .seconds(3)).close == nil)
    }

    @Test("no ServerHello within the hello timeout closes the connection")
    func helloTimeout() {
        var machine = machine()
        _ = machine.connected(now: .zero)
        #expect(machine.tick(now: .seconds(9)).close == nil)
        #expect(machine.tick(now: .seconds(10)).close != nil)
    }

    @Test("the broker's Goodbye and Error close without a reply and fail outstanding reports")
    func goodbyeAndError() throws {
        var byGoodbye = activeMachine()
        _ = try byGoodbye.report(blocks: [512, 9], now: .seconds(1)).get()
        var goodbye = Pagebroker_V1_Frame()
        goodbye.goodbye = .with { $0.reason = .shuttingDown }
        let closed = byGoodbye.receive(goodbye, now: .seconds(1))
        #expect(closed.frames.isEmpty)
        #expect(closed.close != nil)
        guard case .failed(let error) = closed.completions.first?.outcome else {
            Issue.record("expected the outstanding report to fail")
            return
        }
        #expect(error.code == .disconnected)
        #expect(error.retryAfter != nil, "a stopping broker gets time before the next try")

        var byError = activeMachine()
        var frame = Pagebroker_V1_Frame()
        frame.error = .with { $0.code = .protocolViolation }
        let errored = byError.receive(frame, now: .seconds(1))
        #expect(errored.frames.isEmpty)
        #expect(errored.close != nil)
        #expect(byError.isClosed)
        #expect(byError.receive(serverHello(), now: .seconds(1)) == .none, "nothing is answered after close")
    }

    @Test("Goodbye(SESSION_REPLACED) is told apart from an ordinary stop")
    func replacedSession() throws {
        var machine = activeMachine()
        _ = try machine.report(blocks: [512, 9], now: .seconds(1)).get()
        var goodbye = Pagebroker_V1_Frame()
        goodbye.goodbye = .with {
            $0.reason = .sessionReplaced
            $0.message = "replaced by a newer session of the same guest"
        }
        let closed = machine.receive(goodbye, now: .seconds(1))
        #expect(closed.frames.isEmpty, "nothing is answered to a Goodbye")
        #expect(closed.close?.sessionReplaced == true)
        guard case .failed(let error) = closed.completions.first?.outcome else {
            Issue.record("expected the outstanding report to fail")
            return
        }
        #expect(error.code == .sessionReplaced)
        #expect(error.reason == .sessionReplaced)

        // An ordinary stop is not a replacement.
        var stopped = activeMachine()
        var ordinary = Pagebroker_V1_Frame()
        ordinary.goodbye = .with { $0.reason = .ok }
        #expect(stopped.receive(ordinary, now: .seconds(1)).close?.sessionReplaced == false)
    }

    @Test("a body only a guest sends is a protocol violation")
    func wrongDirection() {
        for body in [Pagebroker_V1_Frame.OneOf_Body.report(.init()), .sync(.init()), .reuse(.init())] {
            var machine = activeMachine()
            var frame = Pagebroker_V1_Frame()
            frame.body = body
            #expect(errorCode(machine.receive(frame, now: .seconds(1))) == .protocolViolation)
        }
    }

    @Test("stop sends Goodbye(OK) and closes")
    func stop() {
        var machine = activeMachine()
        let actions = machine.stop(now: .seconds(1))
        guard case .goodbye(let goodbye) = actions.frames.first?.body else {
            Issue.record("expected Goodbye")
            return
        }
        #expect(goodbye.reason == .ok)
        #expect(actions.close != nil)
        #expect(machine.stop(now: .seconds(1)) == .none)
    }

    @Test("reuse is split to fit the frame size and dropped outside a session")
    func reuseSplitting() throws {
        var idle = machine()
        #expect(idle.reuse(pairs: [1, 1], now: .zero) == .none)

        var machine = activeMachine(maxFrameSize: 4096)
        let pairs: [UInt64] = (0..<3000).flatMap { index -> [UInt64] in [UInt64(1_000_000 + 3 * index), 1] }
        let actions = machine.reuse(pairs: pairs, now: .seconds(1))
        #expect(actions.frames.count > 1)
        var sent: [UInt64] = []
        for frame in actions.frames {
            #expect(try (frame.serializedBytes() as [UInt8]).count <= 4096)
            guard case .reuse(let reuse) = frame.body else {
                Issue.record("expected Reuse")
                return
            }
            sent += reuse.ranges
        }
        #expect(sent == pairs)
    }

    @Test("varint sizes match protobuf's encoding")
    func varintSizes() {
        #expect(AgentConnectionStateMachine.varintSize(0) == 1)
        #expect(AgentConnectionStateMachine.varintSize(127) == 1)
        #expect(AgentConnectionStateMachine.varintSize(128) == 2)
        #expect(AgentConnectionStateMachine.varintSize(UInt64(1) << 35) == 6)
        #expect(AgentConnectionStateMachine.varintSize(.max) == 10)
    }
}

@Suite("Connection state machine: host discard inputs")
struct AgentConnectionStateMachineHostDiscardTests {
    @Test("late results carry their outcome for the quarantine, accepted or refused")
    func lateOutcomes() throws {
        var machine = activeMachine(reportTimeout: .milliseconds(200))
        _ = try machine.report(blocks: [512, 9], now: .seconds(1)).get()
        _ = try machine.report(blocks: [1024, 9], now: .seconds(1)).get()
        _ = machine.tick(now: .seconds(2))
        let refused = machine.receive(result(1, .backendFailed), now: .seconds(2))
        #expect(refused.lateOutcomes.map(\.seq) == [1])
        guard case .failed(let error) = refused.lateOutcomes.first?.outcome else {
            Issue.record("expected a failed late outcome")
            return
        }
        #expect(error.reason == .backendFailed)
        let accepted = machine.receive(result(2), now: .seconds(2))
        #expect(accepted.lateOutcomes == [.init(seq: 2, outcome: .accepted)])
    }

    @Test("ServerHello's prior_reports_settled reaches the session")
    func priorReportsSettled() throws {
        var machine = machine()
        _ = machine.connected(now: .zero)
        var frame = serverHello()
        frame.serverHello.priorReportsSettled = true
        let actions = machine.receive(frame, now: .zero)
        #expect(actions.established?.priorReportsSettled == true)
        var other = AgentConnectionStateMachine(configuration: .init(geometry: geometry))
        _ = other.connected(now: .zero)
        #expect(other.receive(serverHello(), now: .zero).established?.priorReportsSettled == false)
    }

    @Test("discard_inhibited and guest_paused are transient refusals whose retry_after_ms is the retry hint")
    func newTransientCodes() throws {
        for code in [Pagebroker_V1_ReasonCode.discardInhibited, .guestPaused] {
            #expect(code.isTransient, "\(code.stableName)")
            var machine = activeMachine()
            _ = try machine.report(blocks: [512, 9], now: .seconds(1)).get()
            let actions = machine.receive(result(1, code, retryMs: 3000), now: .seconds(1))
            guard case .failed(let error) = actions.completions.first?.outcome else {
                Issue.record("expected a failure")
                continue
            }
            #expect(error.code == .refused && error.reason == code && error.retryAfter == .seconds(3))
            #expect(machine.isActive)
        }
    }
}
