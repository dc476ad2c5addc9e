import Broker
import BrokerProtocol
import Testing

/// The broker's session rules from docs/protocol.md, one by one, with no network.
@Suite struct SessionStateMachineTests {
    static let hello = Pagebroker_V1_Frame.with {
        $0.clientHello = .with {
            $0.protocolVersion = 1
            $0.agentVersion = "test"
            $0.pageSize = 4096
            $0.totalPages = 1 << 20
            $0.minOrder = 9
            $0.maxOrder = 10
        }
    }

    static func report(_ seq: UInt64, _ blocks: [(UInt64, UInt64)]) -> Pagebroker_V1_Frame {
        .with {
            $0.report = .with {
                $0.seq = seq
                $0.blocks = blocks.flatMap { [$0.0, $0.1] }
            }
        }
    }

    static func sync(_ chunk: UInt32, _ ranges: [(UInt64, UInt64)], final: Bool) -> Pagebroker_V1_Frame {
        .with {
            $0.sync = .with {
                $0.chunk = chunk
                $0.ranges = ranges.flatMap { [$0.0, $0.1] }
                $0.final = final
            }
        }
    }

    /// A session through hello and an empty sync, ready for reports.
    static func reporting(_ configuration: SessionConfiguration = SessionConfiguration()) -> SessionStateMachine {
        var machine = SessionStateMachine(configuration: configuration, now: .zero)
        #expect(machine.receive(Self.hello, now: .zero) != .none)
        _ = machine.admitted(sessionID: "s1", tenant: "t", guest: "g", now: .zero)
        _ = machine.receive(Self.sync(0, [], final: true), now: .zero)
        #expect(machine.isReporting)
        return machine
    }

    static func reason(_ action: SessionStateMachine.Action) -> Pagebroker_V1_ReasonCode? {
        switch action {
        case .send(let frame), .sendAndClose(let frame):
            switch frame.body {
            case .reportResult(let result): return result.reason
            case .error(let error): return error.code
            case .goodbye(let goodbye): return goodbye.reason
            default: return nil
            }
        default: return nil
        }
    }

    static func isErrorAndClose(_ action: SessionStateMachine.Action, _ code: Pagebroker_V1_ReasonCode) -> Bool {
        if case .sendAndClose(let frame) = action, case .error(let error) = frame.body { return error.code == code }
        return false
    }

    @Test func helloIsAdmittedAndAnsweredWithNegotiatedLimits() {
        var configuration = SessionConfiguration()
        configuration.minReportOrder = 10
        var machine = SessionStateMachine(configuration: configuration, now: .zero)
        guard case .admit(let geometry) = machine.receive(Self.hello, now: .zero) else {
            Issue.record("hello was not passed on for admission")
            return
        }
        #expect(geometry.totalPages == 1 << 20 && geometry.pageSize == 4096)
        guard case .send(let frame) = machine.admitted(sessionID: "s1", tenant: "t", guest: "g", now: .zero),
            case .serverHello(let hello) = frame.body
        else {
            Issue.record("no ServerHello")
            return
        }
        #expect(hello.sessionID == "s1" && hello.tenantID == "t" && hello.guestID == "g")
        #expect(hello.maxFrameSize == WireProtocol.defaultMaxFrameSize)
        #expect(hello.minReportOrder == 10)
        #expect(hello.maxRangesPerReport == WireProtocol.defaultMaxRangesPerReport)
        #expect(!machine.isReporting)
    }

    @Test func firstFrameMustBeClientHello() {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        #expect(Self.isErrorAndClose(machine.receive(Self.report(1, [(0, 9)]), now: .zero), .protocolViolation))
        #expect(machine.isClosed)
    }

    @Test func unsupportedVersionAndBadHelloValues() {
        for (mutate, code) in [
            (
                { (h: inout Pagebroker_V1_ClientHello) in h.protocolVersion = 2 },
                Pagebroker_V1_ReasonCode.unsupportedVersion
            ),
            ({ (h: inout Pagebroker_V1_ClientHello) in h.pageSize = 3000 }, .protocolViolation),
            ({ (h: inout Pagebroker_V1_ClientHello) in h.pageSize = 2048 }, .protocolViolation),
            ({ (h: inout Pagebroker_V1_ClientHello) in h.totalPages = 0 }, .protocolViolation),
            ({ (h: inout Pagebroker_V1_ClientHello) in h.minOrder = 11 }, .protocolViolation),
            ({ (h: inout Pagebroker_V1_ClientHello) in h.maxOrder = 64 }, .protocolViolation),
            ({ (h: inout Pagebroker_V1_ClientHello) in h.maxFrameSize = 100 }, .protocolViolation),
        ] {
            var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
            var frame = Self.hello
            mutate(&frame.clientHello)
            #expect(Self.isErrorAndClose(machine.receive(frame, now: .zero), code))
        }
    }

    @Test func secondHelloAndBrokerOnlyBodiesAreViolations() {
        var machine = Self.reporting()
        #expect(Self.isErrorAndClose(machine.receive(Self.hello, now: .zero), .protocolViolation))
        machine = Self.reporting()
        #expect(
            Self.isErrorAndClose(machine.receive(.with { $0.serverHello = .init() }, now: .zero), .protocolViolation)
        )
        machine = Self.reporting()
        #expect(
            Self.isErrorAndClose(machine.receive(.with { $0.reportResult = .init() }, now: .zero), .protocolViolation)
        )
        machine = Self.reporting()
        #expect(Self.isErrorAndClose(machine.receive(Pagebroker_V1_Frame(), now: .zero), .protocolViolation))
    }

    @Test func reportsBeforeTheFinalSyncAreViolations() {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        _ = machine.receive(Self.hello, now: .zero)
        _ = machine.admitted(sessionID: "s", tenant: "t", guest: "g", now: .zero)
        #expect(
            machine.receive(Self.sync(0, [(0, 512)], final: false), now: .zero)
                == .sync(chunk: 0, ranges: [FrameRange(firstFrame: 0, count: 512)], final: false)
        )
        #expect(Self.isErrorAndClose(machine.receive(Self.report(1, [(0, 9)]), now: .zero), .protocolViolation))
    }

    @Test func syncChunksMustBeInOrderAndInBounds() {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        _ = machine.receive(Self.hello, now: .zero)
        _ = machine.admitted(sessionID: "s", tenant: "t", guest: "g", now: .zero)
        #expect(Self.isErrorAndClose(machine.receive(Self.sync(1, [], final: true), now: .zero), .protocolViolation))

        machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        _ = machine.receive(Self.hello, now: .zero)
        _ = machine.admitted(sessionID: "s", tenant: "t", guest: "g", now: .zero)
        #expect(
            Self.isErrorAndClose(machine.receive(Self.sync(0, [(1 << 20, 1)], final: true), now: .zero), .outOfBounds)
        )

        machine = Self.reporting()
        #expect(Self.isErrorAndClose(machine.receive(Self.sync(1, [], final: true), now: .zero), .protocolViolation))
    }

    @Test func validReportIsPassedOnSortedForAccounting() {
        var machine = Self.reporting()
        let action = machine.receive(Self.report(1, [(1024, 9), (0, 10)]), now: .zero)
        #expect(
            action
                == .account(seq: 1, blocks: [ReportedBlock(frame: 0, order: 10), ReportedBlock(frame: 1024, order: 9)])
        )
        guard case .send(let frame) = machine.reportAccounted(seq: 1, reason: .ok, now: .zero),
            case .reportResult(let result) = frame.body
        else {
            Issue.record("no result")
            return
        }
        #expect(result.seq == 1 && result.reason == .ok)
    }

    struct BadReport: Sendable, CustomTestStringConvertible {
        var blocks: [[UInt64]]
        var reason: Pagebroker_V1_ReasonCode
        var testDescription: String { "\(self.reason.stableName)" }
    }

    static let badReports: [BadReport] = [
        BadReport(blocks: [[0, 8]], reason: .orderOutOfBounds),
        BadReport(blocks: [[0, 11]], reason: .orderOutOfBounds),
        BadReport(blocks: [[256, 9]], reason: .notAligned),
        BadReport(blocks: [[1 << 20, 9]], reason: .outOfBounds),
        BadReport(blocks: [[0, 10], [512, 9]], reason: .overlapInBatch),
        BadReport(blocks: [[0, 9], [0, 9]], reason: .overlapInBatch),
    ]

    @Test(arguments: Self.badReports)
    func badReportsGetTheirReason(bad: BadReport) {
        var machine = Self.reporting()
        let blocks = bad.blocks.map { ($0[0], $0[1]) }
        #expect(Self.reason(machine.receive(Self.report(1, blocks), now: .zero)) == bad.reason)
        // The session goes on.
        #expect(machine.isReporting)
        #expect(
            machine.receive(Self.report(2, [(0, 9)]), now: .zero)
                == .account(seq: 2, blocks: [ReportedBlock(frame: 0, order: 9)])
        )
    }

    @Test func emptyOddAndOversizedReports() {
        var machine = Self.reporting()
        #expect(Self.reason(machine.receive(Self.report(1, []), now: .zero)) == .invalidRange)
        #expect(
            Self.reason(
                machine.receive(
                    .with {
                        $0.report = .with {
                            $0.seq = 2
                            $0.blocks = [0]
                        }
                    },
                    now: .zero
                )
            ) == .invalidRange
        )
        var configuration = SessionConfiguration()
        configuration.maxRangesPerReport = 2
        machine = Self.reporting(configuration)
        #expect(
            Self.reason(machine.receive(Self.report(1, [(0, 9), (512, 9), (1024, 9)]), now: .zero)) == .tooManyRanges
        )
    }

    @Test func replayedSequenceIsRefusedAndDoesNotAdvance() {
        var machine = Self.reporting()
        _ = machine.receive(Self.report(5, [(0, 9)]), now: .zero)
        #expect(Self.reason(machine.receive(Self.report(5, [(512, 9)]), now: .zero)) == .sequenceReplayed)
        #expect(Self.reason(machine.receive(Self.report(4, [(512, 9)]), now: .zero)) == .sequenceReplayed)
        #expect(Self.reason(machine.receive(Self.report(0, [(512, 9)]), now: .zero)) == .sequenceReplayed)
        if case .account = machine.receive(Self.report(6, [(512, 9)]), now: .zero) {
        } else {
            Issue.record("seq 6 refused")
        }
    }

    @Test func reuseIsCheckedAndPassedOn() {
        var machine = Self.reporting()
        #expect(
            machine.receive(.with { $0.reuse = .with { $0.ranges = [10, 5] } }, now: .zero)
                == .reuse([FrameRange(firstFrame: 10, count: 5)])
        )
        #expect(
            Self.isErrorAndClose(
                machine.receive(.with { $0.reuse = .with { $0.ranges = [10, 0] } }, now: .zero),
                .invalidRange
            )
        )
        machine = Self.reporting()
        #expect(
            Self.isErrorAndClose(
                machine.receive(.with { $0.reuse = .with { $0.ranges = [(1 << 20) - 1, 2] } }, now: .zero),
                .outOfBounds
            )
        )
    }

    @Test func pingIsAnsweredAndGoodbyeCloses() {
        var machine = Self.reporting()
        guard case .send(let frame) = machine.receive(.with { $0.ping = .with { $0.nonce = 42 } }, now: .zero) else {
            Issue.record("no pong")
            return
        }
        #expect(frame.pong.nonce == 42)
        if case .close = machine.receive(.with { $0.goodbye = .init() }, now: .zero) {
        } else {
            Issue.record("goodbye did not close")
        }
        #expect(machine.isClosed)
    }

    @Test func handshakeTimeoutHeartbeatAndIdleTimeout() {
        var configuration = SessionConfiguration()
        configuration.handshakeTimeout = .seconds(5)
        configuration.heartbeatInterval = .seconds(10)
        var waiting = SessionStateMachine(configuration: configuration, now: .zero)
        #expect(waiting.tick(now: .seconds(4)) == .none)
        #expect(Self.isErrorAndClose(waiting.tick(now: .seconds(5)), .protocolViolation))

        var machine = Self.reporting(configuration)
        #expect(machine.tick(now: .seconds(9)) == .none)
        guard case .send(let ping) = machine.tick(now: .seconds(10)), case .ping = ping.body else {
            Issue.record("no ping after a silent interval")
            return
        }
        #expect(machine.tick(now: .seconds(15)) == .none)
        if case .close = machine.tick(now: .seconds(30)) {
        } else {
            Issue.record("silent guest not closed after 3 intervals")
        }
    }

    @Test func shutdownFailsReportsThenSaysGoodbye() {
        var machine = Self.reporting()
        machine.beginShutdown()
        #expect(Self.reason(machine.receive(Self.report(1, [(0, 9)]), now: .zero)) == .shuttingDown)
        #expect(Self.reason(machine.finishShutdown()) == .shuttingDown)
        #expect(machine.isClosed)
    }

    @Test func replacedSessionSaysGoodbye() {
        var machine = Self.reporting()
        let action = machine.replaced()
        if case .sendAndClose(let frame) = action, case .goodbye = frame.body {} else { Issue.record("no goodbye") }
    }
}
