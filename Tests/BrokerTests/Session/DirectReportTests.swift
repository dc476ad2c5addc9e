import BrokerProtocol
import NIOCore
import Testing

@testable import Broker

/// The state machine's direct report input (``SessionStateMachine/receiveReport(seq:blocks:now:)``)
/// and result (``SessionStateMachine/reportAnswered(seq:reason:retryAfterMilliseconds:message:now:)``)
/// against ``SessionStateMachine/receive(_:now:)`` of the report frame and
/// ``SessionStateMachine/reportAccounted(seq:reason:retryAfterMilliseconds:message:now:)``: the
/// same action in every session state, and the same machine after it (what it does next).
@Suite struct DirectReportTests {
    static let hello = Pagebroker_V1_Frame.with {
        $0.clientHello = .with {
            $0.protocolVersion = 1
            $0.agentVersion = "test"
            $0.pageSize = 4096
            $0.totalPages = 4096
            $0.minOrder = 9
            $0.maxOrder = 10
        }
    }

    static func report(_ seq: UInt64, _ values: [UInt64]) -> Pagebroker_V1_Frame {
        .with {
            $0.report = .with {
                $0.seq = seq
                $0.blocks = values
            }
        }
    }

    /// The ways into each state a session can be in when a report arrives.
    enum Setup: CaseIterable, Sendable {
        case awaitingHello, admitting, syncing, syncingAfterChunk, active, activeAfterReports, shuttingDown
        case closedByError, closedByGoodbye, refused

        func machine() -> SessionStateMachine {
            var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
            guard self != .awaitingHello else { return machine }
            _ = machine.receive(DirectReportTests.hello, now: .seconds(1))
            if self == .admitting { return machine }
            if self == .refused {
                _ = machine.refused(code: .limitExceeded, message: "no")
                return machine
            }
            _ = machine.admitted(sessionID: "s1", tenant: "t", guest: "g", now: .seconds(1))
            if self == .syncing { return machine }
            _ = machine.receive(.with { $0.sync = .with { $0.chunk = 0 } }, now: .seconds(2))
            if self == .syncingAfterChunk { return machine }
            _ = machine.receive(
                .with {
                    $0.sync = .with {
                        $0.chunk = 1
                        $0.final = true
                    }
                },
                now: .seconds(2)
            )
            switch self {
            case .activeAfterReports:
                _ = machine.receive(DirectReportTests.report(5, [0, 9]), now: .seconds(3))
                _ = machine.reportAccounted(seq: 5, reason: .ok, now: .seconds(3))
            case .shuttingDown:
                machine.beginShutdown()
            case .closedByError:
                _ = machine.receive(.with { $0.error = .with { $0.code = .backendFailed } }, now: .seconds(3))
            case .closedByGoodbye:
                _ = machine.receive(.with { $0.goodbye = .with { $0.reason = .shuttingDown } }, now: .seconds(3))
            default:
                break
            }
            return machine
        }
    }

    /// What the machine does next, from inputs that depend on all it keeps (state, last seq,
    /// when it last received and sent): the same for both machines if they are the same.
    static func expectSameFuture(
        _ a: inout SessionStateMachine,
        _ b: inout SessionStateMachine,
        _ context: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let configuration = a.configuration
        for offset in [configuration.heartbeatInterval, configuration.idleTimeout, configuration.handshakeTimeout] {
            var a1 = a
            var b1 = b
            let now = Duration.seconds(10) + offset
            #expect(a1.tick(now: now) == b1.tick(now: now), "\(context): tick", sourceLocation: sourceLocation)
        }
        #expect(
            a.isReporting == b.isReporting && a.isClosed == b.isClosed,
            "\(context)",
            sourceLocation: sourceLocation
        )
        let next = Self.report(11, [2048, 9])
        #expect(
            a.receive(next, now: .seconds(11))
                == b.receiveReport(seq: 11, blocks: next.report.blocks, now: .seconds(11)),
            "\(context): the next report",
            sourceLocation: sourceLocation
        )
    }

    static let cases: [(seq: UInt64, values: [UInt64])] = [
        (10, [0, 9, 512, 9]),  // accounted
        (10, [1024, 9, 0, 10]),  // accounted after sorting
        (10, []),  // empty
        (10, [0]),  // odd length
        (10, [256, 9]),  // not aligned
        (10, [4096, 9]),  // out of bounds
        (10, [0, 8]),  // order too low
        (10, [0, 10, 512, 9]),  // overlap
        (5, [0, 9]),  // replayed after seq 5
        (0, [0, 9]),  // seq 0
        (10, Array(repeating: [0, 9], count: 300).flatMap { $0 }),  // too many blocks
    ]

    @Test(arguments: Setup.allCases)
    func sameActionInEveryState(setup: Setup) {
        for (seq, values) in Self.cases {
            var viaFrame = setup.machine()
            var direct = setup.machine()
            let a = viaFrame.receive(Self.report(seq, values), now: .seconds(10))
            let b = direct.receiveReport(seq: seq, blocks: values, now: .seconds(10))
            #expect(a == b, "\(setup), seq \(seq), blocks \(values.prefix(8))")
            Self.expectSameFuture(&viaFrame, &direct, "\(setup), seq \(seq), blocks \(values.prefix(8))")
        }
    }

    @Test func randomSessions() {
        var generator = SplitMix64(seed: 0xD1_2EC7)
        var accounted = 0
        for _ in 0..<300 {
            var viaFrame = Setup.allCases.randomElement(using: &generator)!.machine()
            var direct = viaFrame
            var now = Duration.seconds(10)
            var seq: UInt64 = 5
            for _ in 0..<40 {
                now += .milliseconds(Int64.random(in: 0...2_000, using: &generator))
                switch Int.random(in: 0..<10, using: &generator) {
                case 0:
                    // Something else, alike for both: a sync chunk, a ping, a tick, an answer.
                    let frame: Pagebroker_V1_Frame = [
                        .with { $0.sync = .with { $0.final = Bool.random(using: &generator) } },
                        .with { $0.ping = .with { $0.nonce = 1 } },
                        .with { $0.reuse = .with { $0.ranges = [0, 512] } },
                    ].randomElement(using: &generator)!
                    #expect(viaFrame.receive(frame, now: now) == direct.receive(frame, now: now))
                case 1:
                    #expect(viaFrame.tick(now: now) == direct.tick(now: now))
                default:
                    // Mostly a new seq (now and then a replay), mostly ascending 2 MiB blocks
                    // (now and then one out of order, misaligned, out of bounds, too low).
                    seq =
                        Int.random(in: 0..<8, using: &generator) == 0
                        ? UInt64.random(in: 0...seq + 1, using: &generator) : seq + 1
                    var values: [UInt64] = []
                    var slot = UInt64.random(in: 0...1, using: &generator)
                    for _ in 0..<Int.random(in: 0...4, using: &generator) {
                        values += [512 * slot, Int.random(in: 0..<12, using: &generator) == 0 ? 8 : 9]
                        slot += UInt64.random(in: 1...2, using: &generator)
                    }
                    if Int.random(in: 0..<12, using: &generator) == 0 { values.shuffle(using: &generator) }
                    let a = viaFrame.receive(Self.report(seq, values), now: now)
                    let b = direct.receiveReport(seq: seq, blocks: values, now: now)
                    #expect(a == b, "seq \(seq), blocks \(values)")
                    if case .account = a { accounted += 1 }
                }
            }
            Self.expectSameFuture(&viaFrame, &direct, "random session")
        }
        #expect(accounted > 100)
    }

    @Test func answerIsTheAccountedResult() {
        var generator = SplitMix64(seed: 0xA_2E5)
        let reasons: [Pagebroker_V1_ReasonCode] = [.ok, .rateLimited, .tenantPaused, .backendFailed, .shuttingDown]
        for _ in 0..<500 {
            var viaFrame = Setup.active.machine()
            var direct = viaFrame
            let seq =
                UInt64.random(in: 0...UInt64.max, using: &generator) >> UInt64.random(in: 0...63, using: &generator)
            let reason = reasons.randomElement(using: &generator)!
            let retry = Bool.random(using: &generator) ? 0 : UInt32.random(in: 1...100_000, using: &generator)
            let message = Bool.random(using: &generator) ? "" : "paused by the operator"
            let now = Duration.seconds(Int64.random(in: 10...100, using: &generator))
            let action = viaFrame.reportAccounted(
                seq: seq,
                reason: reason,
                retryAfterMilliseconds: retry,
                message: message,
                now: now
            )
            let answer = direct.reportAnswered(
                seq: seq,
                reason: reason,
                retryAfterMilliseconds: retry,
                message: message,
                now: now
            )
            #expect(action == .send(answer.frame))
            // The same bytes on the wire.
            var expected = ByteBuffer()
            var written = ByteBuffer()
            if case .send(let frame) = action {
                try! FrameEncoder.write(frame, into: &expected, maxFrameSize: Int(WireProtocol.defaultMaxFrameSize))
            }
            try! answer.write(into: &written, maxFrameSize: Int(WireProtocol.defaultMaxFrameSize))
            #expect(expected == written)
            Self.expectSameFuture(&viaFrame, &direct, "answered \(seq)")
        }
    }
}
