import BrokerProtocol
import NIOCore
import Synchronization

/// The broker's per-report logic, in process and deterministic: what a guest session does with
/// each report frame, without the transport (TLS, sockets, event loop).
///
/// The load is `pagebroker-agent load --blocks 32`'s: `guests` guests over `tenants` tenants
/// (`load-0`, `load-1`…, unlimited policies), each a 4 GiB guest of 4 KiB pages (orders 9 to 10)
/// with no memory attached, admitted and synced as a session is, reporting 32 order-9 blocks a
/// report, walking its 2048 slots as the load command's one lane does (so after 64 reports each
/// guest's record is one range and every later report is already discarded). `load` sends no
/// reuse, so neither does this. The guests take turns, one report each.
///
/// One report is the session's direct path for it (`GuestSession.decodeFrames` and
/// `processReport`): `FrameParser.parseDirect(_:reportBlocks:)` of the frame's bytes into the
/// session's reused block list (no `Frame` built), then ``SessionReportPath/report(seq:core:identity:sessionID:now:)``
/// (`SessionStateMachine.receiveReport`, the core's locked report step,
/// `SessionStateMachine.reportAnswered`, in one access), and the result written from its fields
/// into the session's reused outbound buffer (cleared again as a flush does). The frame bytes are encoded once per slot pattern before the run; each report
/// only writes its seq into them (a 3-byte varint, seqs starting at 2^14, so frames keep one
/// length), so the bytes arriving cost the same few instructions every report.
///
/// For `report-path-bench` (callgrind: instructions per report, exact) and the
/// `ReportPathBenchmarks` benchmark; see docs/benchmarks.md.
@_spi(Benchmarks)
public final class ReportPathDriver {
    /// One guest's session: what `SessionHandler` keeps for the per-report path.
    private final class Session {
        let identity: GuestIdentity
        let sessionID: String
        /// As `GuestSession.path`: machine, block storage and report handle in one property.
        var path: SessionReportPath
        var outbound: ByteBuffer
        let maxFrameSize: Int
        var round = 0

        init(
            identity: GuestIdentity,
            sessionID: String,
            machine: SessionStateMachine,
            outbound: ByteBuffer
        ) {
            self.identity = identity
            self.sessionID = sessionID
            self.path = SessionReportPath(machine: machine)
            self.outbound = outbound
            self.maxFrameSize = Int(machine.maxFrameSize)
        }
    }

    private final class Control: SessionControl {
        func replaced() {}
        func shutdown() {}
    }

    /// The first seq, so that every seq a run uses is a 3-byte varint.
    private static let firstSeq: UInt64 = 1 << 14
    private static let lastSeq: UInt64 = 1 << 21 - 1

    /// The core the sessions report to.
    public let core: BrokerCore
    private let sessions: [Session]
    private let blocks: Int
    /// Report frames, one per slot pattern, back to back; `templates[i]` is the i-th's
    /// byte range, `seqOffsets[i]` where its seq's three bytes are.
    private var input: ByteBuffer
    private var templates: [Range<Int>] = []
    private var seqOffsets: [Int] = []
    private var turn = 0

    /// Reports answered OK so far.
    public private(set) var reportsOK = 0

    /// Admits and syncs `guests` sessions (nothing reported yet).
    public init(guests: Int = 64, tenants: Int = 4, blocks: Int = 32) {
        precondition(guests > 0 && tenants > 0 && (1...256).contains(blocks))
        self.blocks = blocks
        var policies: [String: TenantPolicy] = [:]
        for tenant in 0..<tenants { policies["load-\(tenant)"] = .unlimited }
        // A clock that moves 1 µs a reading: deterministic, and cheap next to the real one.
        let clock = TickClock()
        let core = BrokerCore(policies: PolicySet(tenants: policies), clock: { clock.next() })
        self.core = core

        let allocator = ByteBufferAllocator()
        var sessions: [Session] = []
        for index in 0..<guests {
            let identity = GuestIdentity(
                trustDomain: "load.test",
                tenant: "load-\(index % tenants)",
                guest: "guest-\(index)"
            )
            sessions.append(Self.connect(identity, core: core, allocator: allocator))
        }
        self.sessions = sessions

        // The load command's slots: 2048 order-9 blocks in a 2^20-page guest, `blocks` a report,
        // report r (from 1) starting at slot r * blocks.
        let slots = 2048
        let patterns = slots / Self.gcd(slots, blocks)
        self.input = allocator.buffer(capacity: patterns * (16 + 4 * blocks))
        for pattern in 0..<patterns {
            var report = Pagebroker_V1_Report(seq: Self.firstSeq, blockCapacity: blocks)
            for offset in 0..<blocks {
                report.appendBlock(frame: UInt64(((pattern * blocks + offset) % slots) << 9), order: 9)
            }
            var frame = Pagebroker_V1_Frame()
            frame.report = report
            let start = self.input.writerIndex
            try! FrameEncoder.write(frame, into: &self.input, maxFrameSize: Int(WireProtocol.defaultMaxFrameSize))
            self.templates.append(start..<self.input.writerIndex)
            // Prefix, the frame's tag, the report's length (a varint), the seq's tag.
            var offset = start + WireProtocol.lengthPrefixSize + 1
            while self.input.getInteger(at: offset, as: UInt8.self)! & 0x80 != 0 { offset += 1 }
            self.seqOffsets.append(offset + 2)
        }
    }

    private final class TickClock: Sendable {
        let ticks = Atomic<Int64>(0)
        func next() -> Duration { .microseconds(self.ticks.add(1, ordering: .relaxed).newValue) }
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : Self.gcd(b, a % b) }

    /// Hello, admission, ServerHello and the one empty final sync chunk of a fresh guest.
    private static func connect(_ identity: GuestIdentity, core: BrokerCore, allocator: ByteBufferAllocator) -> Session
    {
        var machine = SessionStateMachine(configuration: SessionConfiguration(), now: core.now)
        var hello = Pagebroker_V1_ClientHello()
        hello.protocolVersion = WireProtocol.version
        hello.agentVersion = "report-path-bench"
        hello.pageSize = 4096
        hello.totalPages = 1 << 20
        hello.minOrder = 9
        hello.maxOrder = 10
        hello.maxFrameSize = WireProtocol.defaultMaxFrameSize
        guard case .admit(let geometry) = machine.receive(.with { $0.clientHello = hello }, now: core.now),
            case .admitted(let sessionID) = core.admit(identity, geometry: geometry, control: Control()),
            case .send = machine.admitted(
                sessionID: sessionID,
                tenant: identity.tenant,
                guest: identity.guest,
                priorReportsSettled: true,
                now: core.now
            ),
            case .sync(let chunk, let ranges, let final) = machine.receive(
                .with {
                    $0.sync = .with {
                        $0.chunk = 0
                        $0.final = true
                    }
                },
                now: core.now
            )
        else { preconditionFailure("the session was not admitted") }
        try! core.sync(identity, chunk: chunk, ranges: ranges, final: final)
        return Session(
            identity: identity,
            sessionID: sessionID,
            machine: machine,
            outbound: allocator.buffer(capacity: 256)
        )
    }

    /// Runs `reports` reports, the guests taking turns. Returns the reports answered OK so far.
    @discardableResult
    public func run(reports: Int) -> Int {
        for _ in 0..<reports {
            let session = self.sessions[self.turn]
            self.turn = self.turn + 1 == self.sessions.count ? 0 : self.turn + 1
            self.report(session)
        }
        return self.reportsOK
    }

    @inline(never)
    private func report(_ session: Session) {
        session.round += 1
        let seq = Self.firstSeq + UInt64(session.round)
        precondition(seq <= Self.lastSeq, "seqs past 2^21 take a longer varint")
        let pattern = session.round % self.templates.count
        // The frame arrives: its seq written into its pattern's bytes, the reader at its start.
        let seqOffset = self.seqOffsets[pattern]
        self.input.withVeryUnsafeMutableBytes { storage in
            storage[seqOffset] = UInt8(truncatingIfNeeded: seq) | 0x80
            storage[seqOffset + 1] = UInt8(truncatingIfNeeded: seq >> 7) | 0x80
            storage[seqOffset + 2] = UInt8(truncatingIfNeeded: seq >> 14)
        }
        self.input.moveReaderIndex(to: self.templates[pattern].lowerBound)

        // GuestSession.decodeFrames (the buffer a read delivered)
        var bytes = self.input
        let parser = FrameParser(maxFrameSize: session.maxFrameSize)
        guard
            let (frame, consumed) = try! parser.parseDirect(
                bytes.readableBytesSpan,
                reportBlocks: &session.path.blocks
            ),
            case .report(let reportSeq) = frame
        else { preconditionFailure("a whole report frame did not decode") }
        bytes.moveReaderIndex(forwardBy: consumed)
        // GuestSession.processReport: checked, accounted and answered in one access.
        let now = self.core.now
        switch session.path.report(
            seq: reportSeq,
            core: self.core,
            identity: session.identity,
            sessionID: session.sessionID,
            now: now
        ) {
        case .answered(let answer):
            if answer.reason == .ok { self.reportsOK += 1 }
            // GuestSession.send
            try! answer.write(into: &session.outbound, maxFrameSize: session.maxFrameSize)
        case .punch:
            preconditionFailure("no memory is attached")
        case .action:
            preconditionFailure("the report was not passed on")
        }
        // The flush at the end of the read batch.
        session.outbound.clear()
    }
}
