import Broker
import BrokerProtocol
import PropertyBased
import Testing

/// The hello's limits (docs/protocol.md, "Limits") and the session rules issue 11 made exact:
/// nothing but ClientHello before ServerHello, the sequence rule for refused reports, and the
/// replaced session's Goodbye code.
@Suite struct HelloLimitsAndSpecRulesTests {
    typealias Rules = SessionStateMachineTests

    static func hello(pageSize: UInt32, totalPages: UInt64) -> Pagebroker_V1_Frame {
        var frame = Rules.hello
        frame.clientHello.pageSize = pageSize
        frame.clientHello.totalPages = totalPages
        return frame
    }

    // MARK: Limits

    /// The hellos from issue 11: valid under the old rules, beyond the limits now.
    static let hostile: [(UInt32, UInt64)] = [
        (1 << 31, 1 << 32),  // the crash: 2^31-byte pages, 2^32 of them
        (1 << 31, 1),  // page size above 2^30
        (4096, (1 << 32) + 1),  // frames at 2^32 and beyond
        (4096, .max),
        (1 << 30, 1 << 23),  // 2^53 bytes
        (1 << 21, 1 << 32),  // 2^53 bytes
    ]

    /// The largest pools the limits allow.
    static let largest: [(UInt32, UInt64)] = [(1 << 30, 1 << 22), (1 << 20, 1 << 32), (4096, 1 << 32)]

    @Test(arguments: Self.hostile)
    func hellosBeyondTheLimitsAreRefusedWithLimitExceeded(pageSize: UInt32, totalPages: UInt64) {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        let action = machine.receive(Self.hello(pageSize: pageSize, totalPages: totalPages), now: .zero)
        #expect(Rules.isErrorAndClose(action, .limitExceeded), "\(action)")
        #expect(machine.isClosed)
    }

    /// The largest pools the limits allow are admitted, and ServerHello announces the limits.
    @Test(arguments: Self.largest)
    func theLargestPoolsAreAdmittedAndTheLimitsAnnounced(pageSize: UInt32, totalPages: UInt64) {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        guard case .admit = machine.receive(Self.hello(pageSize: pageSize, totalPages: totalPages), now: .zero) else {
            Issue.record("a pool within the limits was not passed on for admission")
            return
        }
        guard case .send(let frame) = machine.admitted(sessionID: "s", tenant: "t", guest: "g", now: .zero),
            case .serverHello(let hello) = frame.body
        else {
            Issue.record("no ServerHello")
            return
        }
        #expect(hello.maxPageSize == 1 << 30)
        #expect(hello.maxTotalPages == 1 << 32)
        #expect(hello.maxPoolBytes == 1 << 52)
    }

    /// Over the whole range of both fields: a hello is admitted exactly when it is within the
    /// limits, and refused with the documented code otherwise.
    @Test func helloValidationOverTheFullNumericRanges() async {
        // Powers of two are where the limits sit; uniform values cover the rest of the range.
        let pageSizes = Gen<UInt32>.oneOf(
            Gen.uint32(in: 0...32).map { $0 == 32 ? UInt32.max : UInt32(1) << $0 },
            Gen.uint32()
        )
        let totalPages = Gen<UInt64>.oneOf(
            Gen.uint64(in: 0...64).map { $0 == 64 ? UInt64.max : UInt64(1) << $0 },
            Gen.uint64(in: 0...64).map { $0 == 64 ? UInt64.max : (UInt64(1) << $0) &+ 1 },
            Gen.uint64()
        )
        await propertyCheck(count: 2000, input: pageSizes, totalPages) { pageSize, pages in
            var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
            let action = machine.receive(Self.hello(pageSize: pageSize, totalPages: pages), now: .zero)
            let valid = pageSize >= 4096 && pageSize.nonzeroBitCount == 1 && pages >= 1
            let bytes = UInt128(pageSize) * UInt128(pages)
            let within = pageSize <= 1 << 30 && pages <= 1 << 32 && bytes <= 1 << 52
            if !valid {
                #expect(Rules.isErrorAndClose(action, .protocolViolation), "\(pageSize) × \(pages): \(action)")
            } else if !within {
                #expect(Rules.isErrorAndClose(action, .limitExceeded), "\(pageSize) × \(pages): \(action)")
            } else if case .admit(let geometry) = action {
                #expect(geometry.pageSize == pageSize && geometry.totalPages == pages)
            } else {
                Issue.record("\(pageSize) × \(pages) within the limits not admitted: \(action)")
            }
        }
    }

    // MARK: Before the hello

    static let beforeHello: [Pagebroker_V1_Frame] = [
        .with { $0.ping = .with { $0.nonce = 7 } },
        .with { $0.pong = .with { $0.nonce = 7 } },
        .with { $0.goodbye = .with { $0.reason = .ok } },
    ]

    /// Ping, Pong and Goodbye first are violations (the old machine answered the Ping with a Pong
    /// and took the Goodbye as an ordinary end).
    @Test(arguments: Self.beforeHello)
    func pingPongAndGoodbyeBeforeTheHelloAreViolations(frame: Pagebroker_V1_Frame) {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        let action = machine.receive(frame, now: .zero)
        #expect(Rules.isErrorAndClose(action, .protocolViolation), "\(action)")
        #expect(machine.isClosed)
    }

    /// Between the ClientHello and its ServerHello the same holds.
    @Test func aPingBeforeTheServerHelloIsAViolation() {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        guard case .admit = machine.receive(Rules.hello, now: .zero) else {
            Issue.record("hello not passed on")
            return
        }
        let action = machine.receive(.with { $0.ping = .with { $0.nonce = 1 } }, now: .zero)
        #expect(Rules.isErrorAndClose(action, .protocolViolation), "\(action)")
    }

    /// An Error first is fatal like any Error: closed without an answer.
    @Test func anErrorBeforeTheHelloClosesWithoutAnAnswer() {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        let action = machine.receive(.with { $0.error = .with { $0.code = .protocolViolation } }, now: .zero)
        guard case .close = action else {
            Issue.record("an Error before the hello was answered: \(action)")
            return
        }
        #expect(machine.isClosed)
    }

    /// After ServerHello, Ping, Pong and Goodbye are allowed, even between sync chunks.
    @Test func pingIsAnsweredDuringTheSync() {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        _ = machine.receive(Rules.hello, now: .zero)
        _ = machine.admitted(sessionID: "s", tenant: "t", guest: "g", now: .zero)
        guard case .send(let frame) = machine.receive(.with { $0.ping = .with { $0.nonce = 9 } }, now: .zero),
            case .pong(let pong) = frame.body
        else {
            Issue.record("no Pong during the sync")
            return
        }
        #expect(pong.nonce == 9)
    }

    // MARK: Sequence rule

    /// Any result but SEQUENCE_REPLAYED and SHUTTING_DOWN sets the previous seq: a refused report
    /// cannot be replayed under its seq.
    @Test func aRefusedReportAdvancesTheSequence() {
        var machine = Rules.reporting()
        // Refused by the machine: not aligned.
        #expect(Rules.reason(machine.receive(Rules.report(5, [(1, 9)]), now: .zero)) == .notAligned)
        #expect(Rules.reason(machine.receive(Rules.report(5, [(0, 9)]), now: .zero)) == .sequenceReplayed)
        // Refused after accounting (say tenant_paused): the seq was taken all the same.
        guard case .account(let seq, _) = machine.receive(Rules.report(6, [(0, 9)]), now: .zero) else {
            Issue.record("seq 6 not passed on")
            return
        }
        _ = machine.reportAccounted(seq: seq, reason: .tenantPaused, now: .zero)
        #expect(Rules.reason(machine.receive(Rules.report(6, [(0, 9)]), now: .zero)) == .sequenceReplayed)
        guard case .account = machine.receive(Rules.report(7, [(0, 9)]), now: .zero) else {
            Issue.record("seq 7 not passed on")
            return
        }
    }

    /// SHUTTING_DOWN is checked before the seq, so it does not advance it.
    @Test func shuttingDownDoesNotAdvanceTheSequence() {
        var machine = Rules.reporting()
        guard case .account = machine.receive(Rules.report(3, [(0, 9)]), now: .zero) else {
            Issue.record("seq 3 not passed on")
            return
        }
        machine.beginShutdown()
        #expect(Rules.reason(machine.receive(Rules.report(9, [(0, 9)]), now: .zero)) == .shuttingDown)
        // Still 3: seq 4 would be new, and 3 is the replay.
        #expect(Rules.reason(machine.receive(Rules.report(3, [(0, 9)]), now: .zero)) == .shuttingDown)
    }

    // MARK: Replacement

    /// A replaced session's Goodbye carries its own code, not OK.
    @Test func aReplacedSessionSaysGoodbyeWithSessionReplaced() {
        var machine = Rules.reporting()
        let action = machine.replaced()
        guard case .sendAndClose(let frame) = action, case .goodbye(let goodbye) = frame.body else {
            Issue.record("no Goodbye: \(action)")
            return
        }
        #expect(goodbye.reason == .sessionReplaced)
        #expect(goodbye.reason.stableName == "session_replaced")
        #expect(Pagebroker_V1_ReasonCode.limitExceeded.stableName == "limit_exceeded")
        #expect(Pagebroker_V1_ReasonCode.sessionReplaced.rawValue == 17)
        #expect(Pagebroker_V1_ReasonCode.limitExceeded.rawValue == 16)
        #expect(!Pagebroker_V1_ReasonCode.limitExceeded.isTransient)
    }
}
