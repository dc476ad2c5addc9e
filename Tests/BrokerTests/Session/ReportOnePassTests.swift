import BrokerProtocol
import Testing

@testable import Broker

/// The session's one-pass check of a report's blocks against its checks one by one: for any
/// block list, the same action (the same blocks passed on in the same order, or the same
/// reason and message).
@Suite struct ReportOnePassTests {
    /// A session through hello and an empty sync (4096 pages, orders 9 to 10), ready for reports.
    static func reporting(onePass: Bool) -> SessionStateMachine {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: .zero)
        machine.checksReportsInOnePass = onePass
        _ = machine.receive(DirectReportTests.hello, now: .zero)
        _ = machine.admitted(sessionID: "s1", tenant: "t", guest: "g", now: .zero)
        _ = machine.receive(.with { $0.sync = .with { $0.final = true } }, now: .zero)
        return machine
    }

    static func report(_ seq: UInt64, _ values: [UInt64]) -> Pagebroker_V1_Frame {
        .with {
            $0.report = .with {
                $0.seq = seq
                $0.blocks = values
            }
        }
    }

    /// Gives both machines the same report; returns the one-pass machine's action.
    @discardableResult
    static func expectSame(
        _ values: [UInt64],
        seq: UInt64,
        _ onePass: inout SessionStateMachine,
        _ oneByOne: inout SessionStateMachine,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> SessionStateMachine.Action {
        let frame = Self.report(seq, values)
        let a = onePass.receive(frame, now: .zero)
        let b = oneByOne.receive(frame, now: .zero)
        #expect(a == b, "blocks \(values)", sourceLocation: sourceLocation)
        return a
    }

    /// Each way a block can be wrong, alone and against the others.
    @Test(
        arguments: [
            // Well-formed: ascending, adjacent, with gaps, one block, the last frames.
            [0, 9, 512, 9, 1024, 10],
            [0, 10, 2048, 9, 3584, 9],
            [3072, 10],
            // Well-formed but not in ascending order: sorted on the way.
            [1024, 9, 0, 10],
            [3584, 9, 0, 9, 2048, 10],
            // One fault each.
            [0, 8], [0, 11], [0, 64], [256, 9], [4096, 9], [3584, 10], [UInt64.max - 511, 9],
            [0, 10, 512, 9], [0, 9, 0, 9], [1024, 10, 0, 10, 1536, 9],
            // Several faults: the reason is the first check's that fails.
            [256, 9, 0, 8], [4096, 9, 256, 9], [0, 10, 512, 9, 4096, 9], [0, 10, 512, 9, 256, 9],
            [1024, 9, 1024, 9, 0, 11],
        ] as [[UInt64]]
    )
    func eachFault(values: [UInt64]) {
        var onePass = Self.reporting(onePass: true)
        var oneByOne = Self.reporting(onePass: false)
        Self.expectSame(values, seq: 1, &onePass, &oneByOne)
    }

    @Test func randomBlockLists() {
        var generator = SplitMix64(seed: 0x5E55_1011)
        var onePass = Self.reporting(onePass: true)
        var oneByOne = Self.reporting(onePass: false)
        var accounted = 0
        for seq in 1...20_000 as ClosedRange<UInt64> {
            let count = Int.random(in: 1...8, using: &generator)
            var values: [UInt64] = []
            var next: UInt64 = 0
            for _ in 0..<count {
                // Mostly well-formed blocks in ascending order, so that many lists pass; now
                // and then each fault: an order out of range, misaligned, out of bounds,
                // overlapping or out of order.
                var order = UInt64.random(in: 9...10, using: &generator)
                var frame = (next &+ (1 << order) &- 1) & ~((1 << order) - 1)
                if Bool.random(using: &generator) {
                    frame &+= (1 << order) * UInt64.random(in: 0...2, using: &generator)
                }
                switch Int.random(in: 0..<24, using: &generator) {
                case 0: order = UInt64.random(in: 0...8, using: &generator)
                case 1: order = UInt64.random(in: 11...70, using: &generator)
                case 2: frame &+= UInt64.random(in: 1...511, using: &generator)
                case 3: frame = UInt64.random(in: 4096...(1 << 13), using: &generator) & ~511
                case 4: frame = UInt64.max - (UInt64.random(in: 0...1023, using: &generator) | 511)
                case 5: frame = frame >= 512 ? frame - 512 : frame
                case 6: frame = UInt64.random(in: 0..<8, using: &generator) * 512
                default: break
                }
                values += [frame, order]
                next = frame &+ (order < 64 ? 1 << order : 0)
            }
            if Int.random(in: 0..<64, using: &generator) == 0 { values.removeLast() }  // odd length
            if case .account = Self.expectSame(values, seq: seq, &onePass, &oneByOne) { accounted += 1 }
        }
        // Both kinds of outcome were exercised.
        #expect(accounted > 2_000 && accounted < 18_000)
    }
}
