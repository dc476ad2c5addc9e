import BrokerProtocol
import NIOCore

/// One guest session on the broker, as a value-type state machine: every input (a frame, a
/// tick of the clock, the outcome of accounting) returns an ``Action`` the channel handler
/// performs. It knows nothing of sockets, locks or the ledger, so it is tested and fuzzed on its
/// own. The rules it enforces are those of `docs/protocol.md`.
public struct SessionStateMachine: Sendable {
    /// What the handler must do next.
    public enum Action: Sendable, Equatable {
        case none
        /// Send this frame. (The frame cases are boxed: a `Frame`, its `oneof` one large enum,
        /// would make every action as large, an `.account` of each report copied with `memcpy`.)
        indirect case send(Pagebroker_V1_Frame)
        /// Send this frame (an `Error` or `Goodbye`), then close the connection.
        indirect case sendAndClose(Pagebroker_V1_Frame)
        /// Close without sending anything (the peer said goodbye, errored, or went silent).
        case close(reason: String)
        /// The guest said hello with this geometry: admit it (session registry, tenant limits)
        /// and call ``admitted(sessionID:tenant:guest:)`` or ``refused(code:message:)``.
        case admit(GuestGeometry)
        /// A valid report: account these blocks (policy, ledger) and call
        /// ``reportAccounted(seq:reason:retryAfterMilliseconds:message:)``.
        case account(seq: UInt64, blocks: [ReportedBlock])
        /// Remove these ranges from the guest's record.
        case reuse([FrameRange])
        /// A sync chunk: start a new record (chunk 0), add ranges, and replace the old record
        /// with the new one when `final`.
        case sync(chunk: UInt32, ranges: [FrameRange], final: Bool)
    }

    private enum State: Sendable {
        case awaitingHello(since: Duration)
        case admitting(GuestGeometry)
        case syncing(Active, nextChunk: UInt32)
        case active(Active)
        case closed
    }

    private struct Active: Sendable {
        var geometry: GuestGeometry
        var maxRangesPerReport: UInt32
        var lowestOrder: UInt32
        var lastSeq: UInt64 = 0
    }

    public let configuration: SessionConfiguration
    private var state: State
    private var lastReceived: Duration
    private var lastSent: Duration
    private var pingNonce: UInt64 = 0
    private var shuttingDown = false
    /// The frame size in force: the default until `ServerHello`, then the negotiated one.
    public private(set) var maxFrameSize: UInt32 = WireProtocol.defaultMaxFrameSize
    private var negotiatedFrameSize: UInt32 = WireProtocol.defaultMaxFrameSize
    /// The storage of the last report's checked blocks, reused for the next report: once the
    /// `.account` action that carried it is gone it is uniquely referenced again, and a report
    /// is checked without allocating.
    private var reportBlocks: [ReportedBlock] = []
    /// Whether a report's blocks are first checked in one pass (``checkedInOnePass``); off only
    /// in tests, which compare the one pass with the checks one by one.
    var checksReportsInOnePass = true

    public init(configuration: SessionConfiguration, now: Duration) {
        self.configuration = configuration
        self.state = .awaitingHello(since: now)
        self.lastReceived = now
        self.lastSent = now
    }

    /// Whether the session has finished its hello and sync and may report.
    public var isReporting: Bool {
        if case .active = self.state { return true }
        return false
    }

    public var isClosed: Bool {
        if case .closed = self.state { return true }
        return false
    }

    // MARK: Inputs

    /// A frame arrived from the guest.
    public mutating func receive(_ frame: Pagebroker_V1_Frame, now: Duration) -> Action {
        self.lastReceived = now
        // The common frame first, as the switch below would take it: a report once the session
        // is established. Matched on its own, it needs no copy of the body and state pair.
        if case .active(var active) = self.state, case .report(let report)? = frame.body {
            let action = self.report(seq: report.seq, values: report.blocks, active: &active)
            self.state = .active(active)
            return action
        }
        guard let body = frame.body else {
            return self.fail(.protocolViolation, "frame has no body this protocol version knows")
        }
        switch (body, self.state) {
        case (_, .closed):
            return .none
        // Before ServerHello nothing but ClientHello is allowed (docs/protocol.md, "Hello"), so
        // these come before the cases that hold at any later point: a Ping is not answered, a
        // Pong or Goodbye is not taken as a sign of a session. An Error is the one exception: it
        // is fatal, and nothing may be sent after receiving one, not even an Error back.
        case (.error(let error), .awaitingHello), (.error(let error), .admitting):
            self.state = .closed
            return .close(reason: "guest sent error \(error.code.stableName) before the hello: \(error.message)")
        case (.clientHello(let hello), .awaitingHello):
            return self.hello(hello)
        case (_, .awaitingHello):
            return self.fail(.protocolViolation, "the first frame must be ClientHello")
        case (_, .admitting):
            return self.fail(.protocolViolation, "nothing may be sent before ServerHello")
        case (.ping(let ping), _):
            return self.sent(.send(.with { $0.pong = .with { $0.nonce = ping.nonce } }), now: now)
        case (.pong, _):
            return .none
        case (.goodbye(let goodbye), _):
            self.state = .closed
            return .close(reason: "guest said goodbye (\(goodbye.reason.stableName))")
        case (.error(let error), _):
            self.state = .closed
            return .close(reason: "guest sent error \(error.code.stableName): \(error.message)")
        case (.clientHello, _):
            return self.fail(.protocolViolation, "a second ClientHello")
        case (.serverHello, _), (.reportResult, _):
            return self.fail(.protocolViolation, "a body only the broker sends")
        case (.sync(let sync), .syncing(let active, let nextChunk)):
            return self.sync(sync, active: active, expected: nextChunk)
        case (.sync, _):
            return self.fail(.protocolViolation, "Sync after the final chunk")
        case (.report, .syncing), (.reuse, .syncing):
            return self.fail(.protocolViolation, "Report or Reuse before the final Sync chunk")
        case (.report(let report), .active(var active)):
            let action = self.report(seq: report.seq, values: report.blocks, active: &active)
            self.state = .active(active)
            return action
        case (.reuse(let reuse), .active(let active)):
            return self.reuse(reuse, geometry: active.geometry)
        }
    }

    /// A report frame arrived from the guest, as its seq and block list (the direct path: no
    /// `Frame` built): exactly the action ``receive(_:now:)`` gives for
    /// `Frame { report { seq, blocks } }` in every state.
    public mutating func receiveReport(seq: UInt64, blocks: [UInt64], now: Duration) -> Action {
        self.lastReceived = now
        switch self.state {
        case .active(var active):
            let action = self.report(seq: seq, values: blocks, active: &active)
            self.state = .active(active)
            return action
        case .closed:
            return .none
        case .awaitingHello:
            return self.fail(.protocolViolation, "the first frame must be ClientHello")
        case .admitting:
            return self.fail(.protocolViolation, "nothing may be sent before ServerHello")
        case .syncing:
            return self.fail(.protocolViolation, "Report or Reuse before the final Sync chunk")
        }
    }

    /// The clock moved on: enforce the handshake timeout and heartbeats.
    public mutating func tick(now: Duration) -> Action {
        switch self.state {
        case .closed:
            return .none
        case .awaitingHello(let since):
            guard now - since >= self.configuration.handshakeTimeout else { return .none }
            return self.fail(.protocolViolation, "no ClientHello within \(self.configuration.handshakeTimeout)")
        case .admitting, .syncing, .active:
            if now - self.lastReceived >= self.configuration.idleTimeout {
                self.state = .closed
                return .close(reason: "nothing received for \(now - self.lastReceived)")
            }
            if now - self.lastSent >= self.configuration.heartbeatInterval
                && now - self.lastReceived >= self.configuration.heartbeatInterval
            {
                self.pingNonce &+= 1
                let nonce = self.pingNonce
                return self.sent(.send(.with { $0.ping = .with { $0.nonce = nonce } }), now: now)
            }
            return .none
        }
    }

    /// The handler admitted the guest: answer its hello.
    ///
    /// - Parameter priorReportsSettled: the broker guarantees that no report of an earlier
    ///   session of this guest will be punched after this hello (ServerHello field 13).
    public mutating func admitted(
        sessionID: String,
        tenant: String,
        guest: String,
        priorReportsSettled: Bool = false,
        now: Duration
    ) -> Action {
        guard case .admitting(let geometry) = self.state else { return .none }
        // Negotiated when the hello was checked; in force from this ServerHello on.
        let frameSize = self.negotiatedFrameSize
        self.maxFrameSize = frameSize
        let ranges = min(self.configuration.maxRangesPerReport, WireProtocol.maxRangesFitting(maxFrameSize: frameSize))
        let lowest = max(geometry.minOrder, self.configuration.minReportOrder)
        self.state = .syncing(
            Active(geometry: geometry, maxRangesPerReport: ranges, lowestOrder: lowest),
            nextChunk: 0
        )
        let hello = Pagebroker_V1_ServerHello.with {
            $0.protocolVersion = WireProtocol.version
            $0.brokerVersion = self.configuration.brokerVersion
            $0.sessionID = sessionID
            $0.maxFrameSize = frameSize
            $0.maxRangesPerReport = ranges
            $0.minReportOrder = lowest
            $0.heartbeatIntervalMs = UInt32(
                clamping: self.configuration.heartbeatInterval.components.seconds * 1000
                    + self.configuration.heartbeatInterval.components.attoseconds / 1_000_000_000_000_000
            )
            $0.tenantID = tenant
            $0.guestID = guest
            $0.maxPageSize = ProtocolLimits.maxPageSize
            $0.maxTotalPages = ProtocolLimits.maxTotalPages
            $0.maxPoolBytes = ProtocolLimits.maxPoolBytes
            $0.priorReportsSettled = priorReportsSettled
        }
        return self.sent(.send(.with { $0.serverHello = hello }), now: now)
    }

    /// The handler refused the guest (unknown tenant, too many guests…).
    public mutating func refused(code: Pagebroker_V1_ReasonCode, message: String) -> Action {
        self.fail(code, message)
    }

    /// The outcome of accounting a report the machine passed on with ``Action/account(seq:blocks:)``.
    public mutating func reportAccounted(
        seq: UInt64,
        reason: Pagebroker_V1_ReasonCode,
        retryAfterMilliseconds: UInt32 = 0,
        message: String = "",
        now: Duration
    ) -> Action {
        .send(
            self.reportAnswered(
                seq: seq,
                reason: reason,
                retryAfterMilliseconds: retryAfterMilliseconds,
                message: message,
                now: now
            ).frame
        )
    }

    /// ``reportAccounted(seq:reason:retryAfterMilliseconds:message:now:)`` on the direct path:
    /// the result to send (always one; the action is always `.send` of ``ReportAnswer/frame``),
    /// for the handler to write with ``ReportAnswer/write(into:maxFrameSize:)``, no `Frame` built.
    public mutating func reportAnswered(
        seq: UInt64,
        reason: Pagebroker_V1_ReasonCode,
        retryAfterMilliseconds: UInt32 = 0,
        message: String = "",
        now: Duration
    ) -> ReportAnswer {
        self.lastSent = now
        return ReportAnswer(seq: seq, reason: reason, retryAfterMilliseconds: retryAfterMilliseconds, message: message)
    }

    /// A report's result, as its fields: what ``reportAnswered(seq:reason:retryAfterMilliseconds:message:now:)``
    /// tells the handler to send.
    public struct ReportAnswer: Sendable, Equatable {
        public var seq: UInt64
        public var reason: Pagebroker_V1_ReasonCode
        public var retryAfterMilliseconds: UInt32
        public var message: String

        /// The `ReportResult` frame (``SessionStateMachine/result(seq:reason:retryAfterMilliseconds:message:)``).
        public var frame: Pagebroker_V1_Frame {
            SessionStateMachine.result(
                seq: self.seq,
                reason: self.reason,
                retryAfterMilliseconds: self.retryAfterMilliseconds,
                message: self.message
            )
        }

        /// Appends ``frame``'s bytes, length prefix first, as `FrameEncoder.write` would, but
        /// straight from the fields.
        ///
        /// - Throws: as `FrameEncoder.write(_:into:maxFrameSize:)`.
        public func write(into buffer: inout ByteBuffer, maxFrameSize: Int) throws {
            try FrameEncoder.writeReportResult(
                seq: self.seq,
                reason: self.reason,
                retryAfterMilliseconds: self.retryAfterMilliseconds,
                message: self.message,
                into: &buffer,
                maxFrameSize: maxFrameSize
            )
        }
    }

    /// The broker is stopping: from now on reports fail with `shutting_down`.
    public mutating func beginShutdown() {
        self.shuttingDown = true
    }

    /// The last word of a stopping broker, once the results already owed have gone out.
    public mutating func finishShutdown() -> Action {
        guard !self.isClosed else { return .none }
        self.state = .closed
        return .sendAndClose(
            .with {
                $0.goodbye = .with {
                    $0.reason = .shuttingDown
                    $0.message = "broker is shutting down"
                }
            }
        )
    }

    /// Another session of the same guest replaced this one.
    public mutating func replaced() -> Action {
        guard !self.isClosed else { return .none }
        self.state = .closed
        return .sendAndClose(
            .with {
                $0.goodbye = .with {
                    // Its own code, so the guest can tell this from an ordinary stop: another
                    // process holds its identity, and reconnecting at once would replace that one.
                    $0.reason = .sessionReplaced
                    $0.message = "replaced by a newer session of the same guest"
                }
            }
        )
    }

    /// An `Error` frame with `code`, then close.
    public mutating func fail(_ code: Pagebroker_V1_ReasonCode, _ message: String) -> Action {
        self.state = .closed
        return .sendAndClose(
            .with {
                $0.error = .with {
                    $0.code = code
                    $0.message = message
                }
            }
        )
    }

    // MARK: Frames

    private mutating func hello(_ hello: Pagebroker_V1_ClientHello) -> Action {
        guard hello.protocolVersion == WireProtocol.version else {
            return self.fail(
                .unsupportedVersion,
                "protocol version \(hello.protocolVersion) is not supported; this broker speaks \(WireProtocol.version)"
            )
        }
        let pageSize = hello.pageSize
        guard pageSize >= ProtocolLimits.minPageSize, pageSize & (pageSize - 1) == 0 else {
            return self.fail(
                .protocolViolation,
                "page_size \(pageSize) is not a power of two of at least \(ProtocolLimits.minPageSize)"
            )
        }
        guard hello.totalPages > 0 else { return self.fail(.protocolViolation, "total_pages is 0") }
        guard hello.minOrder <= hello.maxOrder, hello.maxOrder <= 63 else {
            return self.fail(
                .protocolViolation,
                "orders \(hello.minOrder)...\(hello.maxOrder) are not 0 <= min <= max <= 63"
            )
        }
        // The value checks above make a hello meaningless; these make it one the broker cannot
        // account (docs/protocol.md, "Limits"), so they get their own code.
        if let violation = ProtocolLimits.violation(pageSize: pageSize, totalPages: hello.totalPages) {
            return self.fail(.limitExceeded, violation)
        }
        guard
            let frameSize = WireProtocol.negotiateMaxFrameSize(
                guestProposal: hello.maxFrameSize,
                brokerLimit: self.configuration.maxFrameSize
            )
        else {
            return self.fail(
                .protocolViolation,
                "max_frame_size \(hello.maxFrameSize) is below \(WireProtocol.minimumMaxFrameSize)"
            )
        }
        self.negotiatedFrameSize = frameSize
        let geometry = GuestGeometry(
            pageSize: pageSize,
            totalPages: hello.totalPages,
            minOrder: hello.minOrder,
            maxOrder: hello.maxOrder,
            agentVersion: hello.agentVersion
        )
        self.state = .admitting(geometry)
        return .admit(geometry)
    }

    private mutating func sync(_ sync: Pagebroker_V1_Sync, active: Active, expected: UInt32) -> Action {
        guard sync.chunk == expected else {
            return self.fail(.protocolViolation, "Sync chunk \(sync.chunk), expected \(expected)")
        }
        let ranges: [FrameRange]
        switch Self.checkedRanges(sync.ranges, geometry: active.geometry) {
        case .success(let checked): ranges = checked
        case .failure(let failure): return self.fail(failure.code, "Sync: \(failure.message)")
        }
        self.state = sync.final ? .active(active) : .syncing(active, nextChunk: expected + 1)
        return .sync(chunk: sync.chunk, ranges: ranges, final: sync.final)
    }

    private mutating func reuse(_ reuse: Pagebroker_V1_Reuse, geometry: GuestGeometry) -> Action {
        switch Self.checkedRanges(reuse.ranges, geometry: geometry) {
        case .success(let ranges): return .reuse(ranges)
        case .failure(let failure): return self.fail(failure.code, "Reuse: \(failure.message)")
        }
    }

    private mutating func report(seq: UInt64, values: [UInt64], active: inout Active) -> Action {
        func refuse(_ reason: Pagebroker_V1_ReasonCode, _ message: String) -> Action {
            .send(Self.result(seq: seq, reason: reason, retryAfterMilliseconds: 0, message: message))
        }
        if self.shuttingDown { return refuse(.shuttingDown, "broker is shutting down") }
        guard seq > active.lastSeq else {
            return refuse(.sequenceReplayed, "seq \(seq) is not greater than \(active.lastSeq)")
        }
        active.lastSeq = seq
        guard values.count.isMultiple(of: 2), !values.isEmpty else {
            return refuse(.invalidRange, values.isEmpty ? "empty report" : "odd-length block list")
        }
        guard values.count / 2 <= active.maxRangesPerReport else {
            return refuse(.tooManyRanges, "\(values.count / 2) blocks, at most \(active.maxRangesPerReport)")
        }
        let geometry = active.geometry
        var blocks = self.reportBlocks
        self.reportBlocks = []
        blocks.removeAll(keepingCapacity: true)
        defer { self.reportBlocks = blocks }
        blocks.reserveCapacity(values.count / 2)
        if self.checksReportsInOnePass,
            Self.checkedInOnePass(
                values,
                lowestOrder: UInt64(active.lowestOrder),
                maxOrder: UInt64(geometry.maxOrder),
                totalPages: geometry.totalPages,
                into: &blocks
            )
        {
            return .account(seq: seq, blocks: blocks)
        }
        // The checks one by one, each over the whole batch, so that a report with several faults
        // gets the reason of the first check it fails.
        blocks.removeAll(keepingCapacity: true)
        let list = PairList<ReportedBlock>(values)!
        for block in list {
            guard block.order >= UInt64(active.lowestOrder), block.order <= UInt64(geometry.maxOrder) else {
                return refuse(
                    .orderOutOfBounds,
                    "block \(block.frame) has order \(block.order), allowed \(active.lowestOrder)...\(geometry.maxOrder)"
                )
            }
            blocks.append(block)
        }
        for block in blocks where block.frame & ((1 << block.order) - 1) != 0 {
            return refuse(.notAligned, "block \(block.frame) is not aligned to order \(block.order)")
        }
        for block in blocks {
            let (end, overflow) = block.frame.addingReportingOverflow(1 << block.order)
            if overflow || end > geometry.totalPages {
                return refuse(
                    .outOfBounds,
                    "block \(block.frame) order \(block.order) reaches past \(geometry.totalPages) pages"
                )
            }
        }
        blocks.sort { $0.frame < $1.frame }
        for index in blocks.indices.dropFirst() {
            let previous = blocks[index - 1]
            if previous.frame + (1 << previous.order) > blocks[index].frame {
                return refuse(.overlapInBatch, "blocks \(previous.frame) and \(blocks[index].frame) overlap")
            }
        }
        return .account(seq: seq, blocks: blocks)
    }

    /// The common report, checked in one pass over the wire values: every block of an allowed
    /// order, aligned, in bounds, and starting at or after the end of the block before it (so
    /// the batch is sorted and has no overlap). Leaves the blocks in `blocks`, in wire order,
    /// which is then the order sorting would give; `false` when any block fails, for the checks
    /// one by one to find the reason (`blocks` then holds placeholders, for them to clear).
    private static func checkedInOnePass(
        _ values: [UInt64],
        lowestOrder: UInt64,
        maxOrder: UInt64,
        totalPages: UInt64,
        into blocks: inout [ReportedBlock]
    ) -> Bool {
        // Grown once and written in place: no capacity check per block.
        let start = blocks.count
        blocks.append(contentsOf: repeatElement(ReportedBlock(frame: 0, order: 0), count: values.count / 2))
        return values.withUnsafeBufferPointer { values in
            blocks.withUnsafeMutableBufferPointer { blocks in
                var free: UInt64 = 0
                var index = 0
                for slot in start..<blocks.count {
                    let frame = values[index]
                    let order = values[index + 1]
                    index += 2
                    // The hello bounds the highest order by 63, so the shift below is exact.
                    guard order >= lowestOrder, order <= maxOrder else { return false }
                    let size: UInt64 = 1 << order
                    guard frame & (size - 1) == 0, frame >= free else { return false }
                    let (end, overflow) = frame.addingReportingOverflow(size)
                    guard !overflow, end <= totalPages else { return false }
                    free = end
                    blocks[slot] = ReportedBlock(frame: frame, order: order)
                }
                return true
            }
        }
    }

    private mutating func sent(_ action: Action, now: Duration) -> Action {
        self.lastSent = now
        return action
    }

    // MARK: Helpers

    private struct RangeFailure: Error {
        var code: Pagebroker_V1_ReasonCode
        var message: String
    }

    private static func checkedRanges(_ values: [UInt64], geometry: GuestGeometry) -> Result<[FrameRange], RangeFailure>
    {
        guard let list = PairList<FrameRange>(values) else {
            return .failure(RangeFailure(code: .invalidRange, message: "odd-length range list"))
        }
        var ranges: [FrameRange] = []
        ranges.reserveCapacity(list.count)
        for range in list {
            guard range.count > 0 else {
                return .failure(RangeFailure(code: .invalidRange, message: "range at \(range.firstFrame) has count 0"))
            }
            let (end, overflow) = range.firstFrame.addingReportingOverflow(range.count)
            guard !overflow, end <= geometry.totalPages else {
                return .failure(
                    RangeFailure(
                        code: .outOfBounds,
                        message: "range \(range.firstFrame)+\(range.count) reaches past \(geometry.totalPages) pages"
                    )
                )
            }
            ranges.append(range)
        }
        return .success(ranges)
    }

    /// A `ReportResult` frame.
    public static func result(
        seq: UInt64,
        reason: Pagebroker_V1_ReasonCode,
        retryAfterMilliseconds: UInt32,
        message: String
    ) -> Pagebroker_V1_Frame {
        .with {
            $0.reportResult = .with {
                $0.seq = seq
                $0.reason = reason
                $0.retryAfterMs = retryAfterMilliseconds
                $0.message = message
            }
        }
    }
}
