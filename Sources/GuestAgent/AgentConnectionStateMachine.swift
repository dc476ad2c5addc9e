import BrokerProtocol

/// The guest's side of one broker session, as a value-type state machine: every input (the
/// connection coming up, a frame, a report to send, a tick of the clock) returns the
/// ``Actions`` the channel handler performs. It knows nothing of sockets, threads or the
/// allocator, so every rule of `docs/protocol.md` it follows is tested without a network.
///
/// Lifecycle: ``connected(now:)`` sends `ClientHello`; `ServerHello` yields
/// ``Actions/established``, after which the handler snapshots the discarded record and calls
/// ``sync(discarded:now:)``; from then on ``report(blocks:now:)`` assigns sequence numbers and
/// results are matched to them. Any fatal event leaves the machine `closed`, and every
/// outstanding report is completed with an error in the same ``Actions``.
public struct AgentConnectionStateMachine: Sendable {
    /// How the machine behaves; fixed for the session.
    public struct Configuration: Sendable, Hashable {
        /// What `ClientHello` announces.
        public var geometry: GuestGeometry
        /// The guest software's version, free text.
        public var agentVersion: String
        /// The largest frame the guest proposes; 0 stands for 65536.
        public var maxFrameSize: Int
        /// How long a report may wait for its result before it fails.
        public var reportTimeout: Duration
        /// How long to wait for `ServerHello` after the connection (and TLS) is up.
        public var helloTimeout: Duration

        /// Creates a configuration.
        public init(
            geometry: GuestGeometry,
            agentVersion: String = "pagebroker-agent",
            maxFrameSize: Int = Int(WireProtocol.defaultMaxFrameSize),
            reportTimeout: Duration = .seconds(1),
            helloTimeout: Duration = .seconds(10)
        ) {
            self.geometry = geometry
            self.agentVersion = agentVersion
            self.maxFrameSize = maxFrameSize
            self.reportTimeout = reportTimeout
            self.helloTimeout = helloTimeout
        }

        /// The frame size proposal with 0 read as the protocol default.
        var proposedMaxFrameSize: Int {
            self.maxFrameSize == 0 ? Int(WireProtocol.defaultMaxFrameSize) : self.maxFrameSize
        }
    }

    /// How one report ended.
    public enum ReportOutcome: Sendable, Hashable {
        /// The broker accepted and accounted every block.
        case accepted
        /// Nothing of the report counts; the error says why.
        case failed(AgentError)
    }

    /// One report's end, to be delivered to whoever waits for it.
    public struct ReportCompletion: Sendable, Hashable {
        public var seq: UInt64
        public var outcome: ReportOutcome

        public init(seq: UInt64, outcome: ReportOutcome) {
            self.seq = seq
            self.outcome = outcome
        }
    }

    /// Why the connection is to be closed.
    public struct CloseReason: Sendable, Hashable, CustomStringConvertible {
        /// For logs.
        public var description: String
        /// `true` when the guest and the broker may disagree about what is discarded (a report
        /// accepted after the guest gave up on it): reconnect at once, the new session's sync
        /// makes the records equal again.
        public var resynchronise: Bool
        /// `true` when the broker said another session with this guest's identity replaced this
        /// one (`Goodbye(SESSION_REPLACED)`): logged and counted apart from an ordinary stop,
        /// because two agents sharing an identity keep replacing each other.
        public var sessionReplaced: Bool

        public init(_ description: String, resynchronise: Bool = false, sessionReplaced: Bool = false) {
            self.description = description
            self.resynchronise = resynchronise
            self.sessionReplaced = sessionReplaced
        }
    }

    /// What the handler must do, in this order: complete the reports, note the session, write
    /// and flush the frames, then close if asked.
    public struct Actions: Sendable, Hashable {
        /// Frames to write, in order, then flush.
        public var frames: [Pagebroker_V1_Frame] = []
        /// Reports that ended.
        public var completions: [ReportCompletion] = []
        /// The broker's hello arrived: apply its frame size, snapshot the discarded record and
        /// call ``AgentConnectionStateMachine/sync(discarded:now:)``.
        public var established: SessionInfo?
        /// Close the connection after writing ``frames``.
        public var close: CloseReason?
        /// Seqs whose result arrived after the report had timed out; ignored, but counted.
        public var lateResults: [UInt64] = []
        /// The same late results with what they said, for the host-discard quarantine: the
        /// broker is done with these reports (`docs/protocol.md`, "Never losing a guest's data").
        public var lateOutcomes: [ReportCompletion] = []

        public init(
            frames: [Pagebroker_V1_Frame] = [],
            completions: [ReportCompletion] = [],
            established: SessionInfo? = nil,
            close: CloseReason? = nil,
            lateResults: [UInt64] = [],
            lateOutcomes: [ReportCompletion] = []
        ) {
            self.frames = frames
            self.completions = completions
            self.established = established
            self.close = close
            self.lateResults = lateResults
            self.lateOutcomes = lateOutcomes
        }

        /// Nothing to do.
        public static let none = Actions()
    }

    private enum State: Sendable {
        case idle
        case awaitingServerHello(since: Duration)
        case syncing(Session)
        case active(Session)
        case closed
    }

    private struct Session: Sendable {
        var info: SessionInfo
        var nextSeq: UInt64 = 1
        /// Reports waiting for their result, oldest (lowest seq, earliest deadline) first.
        var outstanding: [(seq: UInt64, deadline: Duration)] = []
        /// Reports given up on whose result has not arrived yet, so that a late result is told
        /// apart from a duplicate.
        var expired: [UInt64] = []
    }

    /// Bound on remembered timed-out seqs: beyond it the oldest is forgotten, and its result,
    /// should it ever come, is treated as a duplicate (a protocol violation, so a resync).
    private static let expiredMemory = 4096

    public let configuration: Configuration
    private var state: State = .idle
    private var lastSent: Duration = .zero
    private var lastReceived: Duration = .zero
    private var pingNonce: UInt64 = 0

    /// Creates a machine for one connection.
    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    // MARK: Inspection

    /// The session, once `ServerHello` has arrived.
    public var session: SessionInfo? {
        switch self.state {
        case .syncing(let session), .active(let session): session.info
        default: nil
        }
    }

    /// Whether reports may be sent: the hello and the sync are done.
    public var isActive: Bool {
        if case .active = self.state { return true }
        return false
    }

    /// Whether the session is over; nothing more may be sent.
    public var isClosed: Bool {
        if case .closed = self.state { return true }
        return false
    }

    /// Reports waiting for their results.
    public var outstandingReports: Int {
        if case .active(let session) = self.state { return session.outstanding.count }
        return 0
    }

    /// When the oldest outstanding report times out; `nil` when none is outstanding.
    public var nextReportDeadline: Duration? {
        if case .active(let session) = self.state { return session.outstanding.first?.deadline }
        return nil
    }

    // MARK: Inputs

    /// The connection (and TLS) is up: say hello.
    public mutating func connected(now: Duration) -> Actions {
        guard case .idle = self.state else { return .none }
        self.state = .awaitingServerHello(since: now)
        self.lastReceived = now
        let geometry = self.configuration.geometry
        var hello = Pagebroker_V1_ClientHello()
        hello.protocolVersion = WireProtocol.version
        hello.agentVersion = self.configuration.agentVersion
        hello.pageSize = UInt32(clamping: geometry.pageSize)
        hello.totalPages = UInt64(geometry.totalPages)
        hello.minOrder = UInt32(clamping: geometry.minOrder)
        hello.maxOrder = UInt32(clamping: geometry.maxOrder)
        hello.maxFrameSize = UInt32(clamping: self.configuration.maxFrameSize)
        var frame = Pagebroker_V1_Frame()
        frame.clientHello = hello
        return self.emit(Actions(frames: [frame]), now: now)
    }

    /// A frame arrived from the broker.
    public mutating func receive(_ frame: Pagebroker_V1_Frame, now: Duration) -> Actions {
        if case .closed = self.state { return .none }
        self.lastReceived = now
        guard let body = frame.body else {
            return self.fail(.protocolViolation, "frame without a body", now: now)
        }
        switch body {
        case .serverHello(let hello):
            return self.receiveServerHello(hello, now: now)
        case .reportResult(let result):
            return self.receiveResult(result, now: now)
        case .ping(let ping):
            guard !self.isIdle else { return .none }
            var pong = Pagebroker_V1_Frame()
            pong.pong = .with { $0.nonce = ping.nonce }
            return self.emit(Actions(frames: [pong]), now: now)
        case .pong:
            // Any frame is a sign of life; the nonce need not match anything we sent.
            return .none
        case .goodbye(let goodbye) where goodbye.reason == .sessionReplaced:
            let error = AgentError(
                code: .sessionReplaced,
                reason: goodbye.reason,
                message: "another session of this guest replaced this one: \(goodbye.message)"
            )
            var actions = self.closeSession(error)
            actions.close = CloseReason(
                "broker said goodbye: session_replaced \(goodbye.message)",
                sessionReplaced: true
            )
            return actions
        case .goodbye(let goodbye):
            let retry: Duration? = goodbye.reason == .shuttingDown ? .seconds(1) : nil
            let error = AgentError(
                code: .disconnected,
                reason: goodbye.reason,
                retryAfter: retry,
                message: "broker said goodbye (\(goodbye.reason.stableName)) \(goodbye.message)"
            )
            var actions = self.closeSession(error)
            actions.close = CloseReason("broker said goodbye: \(goodbye.reason.stableName) \(goodbye.message)")
            return actions
        case .error(let error):
            let failure = AgentError(
                code: .brokerError,
                reason: error.code,
                message: "broker error \(error.code.stableName): \(error.message)"
            )
            var actions = self.closeSession(failure)
            actions.close = CloseReason("broker sent error \(error.code.stableName): \(error.message)")
            return actions
        case .clientHello, .report, .reuse, .sync:
            return self.fail(.protocolViolation, "the broker sent a body only a guest sends", now: now)
        }
    }

    /// The handler snapshotted the discarded record after ``Actions/established``: the sync
    /// chunks to send. Reports may follow.
    public mutating func sync(discarded: [Range<Int>], now: Duration) -> Actions {
        guard case .syncing(let session) = self.state else { return .none }
        self.state = .active(session)
        let budget = Self.payloadBudget(maxFrameSize: session.info.maxFrameSize)
        let chunks = Self.chunk(
            discarded.lazy.map { (UInt64($0.lowerBound), UInt64($0.count)) },
            payloadBudget: budget
        )
        var frames: [Pagebroker_V1_Frame] = []
        frames.reserveCapacity(max(chunks.count, 1))
        for (index, ranges) in chunks.enumerated() {
            var frame = Pagebroker_V1_Frame()
            frame.sync = .with {
                $0.chunk = UInt32(index)
                $0.ranges = ranges
                $0.final = index == chunks.count - 1
            }
            frames.append(frame)
        }
        if frames.isEmpty {
            var frame = Pagebroker_V1_Frame()
            frame.sync = .with {
                $0.chunk = 0
                $0.final = true
            }
            frames.append(frame)
        }
        return self.emit(Actions(frames: frames), now: now)
    }

    /// Frames taking back `pairs` (flattened `(first_frame, count)`), split to fit the frame
    /// size; nothing while no session is active (the next sync carries the truth).
    public mutating func reuse(pairs: [UInt64], now: Duration) -> Actions {
        guard case .active(let session) = self.state, !pairs.isEmpty else { return .none }
        let budget = Self.payloadBudget(maxFrameSize: session.info.maxFrameSize)
        let chunks = Self.chunk(
            stride(from: 0, to: pairs.count - 1, by: 2).lazy.map { (pairs[$0], pairs[$0 + 1]) },
            payloadBudget: budget
        )
        let frames = chunks.map { ranges in
            var frame = Pagebroker_V1_Frame()
            frame.reuse = .with { $0.ranges = ranges }
            return frame
        }
        return self.emit(Actions(frames: frames), now: now)
    }

    /// Sends a report of `blocks` (flattened `(frame, order)` pairs).
    ///
    /// - Returns: the seq it was sent with and the frame to write, or why it cannot be sent:
    ///   ``AgentError/Code/notConnected`` outside an active session, and
    ///   ``AgentError/Code/outsideSessionLimits`` for a batch the broker announced it would refuse.
    public mutating func report(
        blocks: [UInt64],
        now: Duration
    ) -> Result<(seq: UInt64, actions: Actions), AgentError> {
        guard case .active(var session) = self.state else {
            return .failure(AgentError(code: .notConnected, message: "no active session"))
        }
        let count = blocks.count / 2
        guard count > 0, blocks.count.isMultiple(of: 2) else {
            return .failure(AgentError(code: .outsideSessionLimits, message: "a report needs at least one block"))
        }
        guard count <= session.info.maxRangesPerReport else {
            return .failure(
                AgentError(
                    code: .outsideSessionLimits,
                    message: "\(count) blocks, the broker takes at most \(session.info.maxRangesPerReport) a report"
                )
            )
        }
        let geometry = self.configuration.geometry
        for index in stride(from: 1, to: blocks.count, by: 2) {
            let order = blocks[index]
            guard order >= UInt64(session.info.minReportOrder), order <= UInt64(geometry.maxOrder) else {
                return .failure(
                    AgentError(
                        code: .outsideSessionLimits,
                        message: "order \(order) outside \(session.info.minReportOrder)...\(geometry.maxOrder)"
                    )
                )
            }
        }
        let seq = session.nextSeq
        session.nextSeq += 1
        session.outstanding.append((seq, now + self.configuration.reportTimeout))
        self.state = .active(session)
        var frame = Pagebroker_V1_Frame()
        frame.report = .with {
            $0.seq = seq
            $0.blocks = blocks
        }
        return .success((seq, self.emit(Actions(frames: [frame]), now: now)))
    }

    /// Time passed: time out reports, ping when we have been quiet, give up on a silent broker.
    public mutating func tick(now: Duration) -> Actions {
        switch self.state {
        case .idle, .closed:
            return .none
        case .awaitingServerHello(let since):
            guard now - since >= self.configuration.helloTimeout else { return .none }
            self.state = .closed
            return Actions(close: CloseReason("no ServerHello within \(self.configuration.helloTimeout)"))
        case .syncing(let session), .active(let session):
            let interval = session.info.heartbeatInterval
            if now - self.lastReceived >= interval * Int(WireProtocol.heartbeatMissLimit) {
                var actions = self.closeSession(
                    AgentError(code: .disconnected, message: "broker silent for \(now - self.lastReceived)")
                )
                actions.close = CloseReason("broker silent for \(now - self.lastReceived)")
                return actions
            }
            var actions = self.expireReports(now: now)
            if now - self.lastSent >= interval {
                self.pingNonce &+= 1
                var ping = Pagebroker_V1_Frame()
                ping.ping = .with { $0.nonce = self.pingNonce }
                actions.frames.append(ping)
                actions = self.emit(actions, now: now)
            }
            return actions
        }
    }

    /// The guest is stopping: `Goodbye(OK)` and close. Reports still outstanding fail.
    public mutating func stop(now: Duration) -> Actions {
        switch self.state {
        case .idle, .closed:
            self.state = .closed
            return .none
        case .awaitingServerHello, .syncing, .active:
            var actions = self.closeSession(AgentError(code: .shutDown, message: "the agent is stopping"))
            var goodbye = Pagebroker_V1_Frame()
            goodbye.goodbye = .with {
                $0.reason = .ok
                $0.message = "guest stopping"
            }
            actions.frames = [goodbye]
            actions.close = CloseReason("guest stopping")
            return self.emit(actions, now: now)
        }
    }

    /// The byte stream could not be decoded: tell the broker why (unless the stream simply
    /// ended) and close.
    public mutating func decodingFailed(_ error: FrameError, now: Duration) -> Actions {
        guard let code = error.reasonCode else {
            var actions = self.closeSession(AgentError(code: .disconnected, message: "\(error)"))
            actions.close = CloseReason("\(error)")
            return actions
        }
        return self.fail(code, "\(error)", now: now)
    }

    /// The connection is gone: every outstanding report fails.
    public mutating func connectionClosed() -> Actions {
        self.closeSession(AgentError(code: .disconnected, message: "connection to the broker closed"))
    }

    // MARK: Steps

    private var isIdle: Bool {
        if case .idle = self.state { return true }
        return false
    }

    private mutating func receiveServerHello(_ hello: Pagebroker_V1_ServerHello, now: Duration) -> Actions {
        guard case .awaitingServerHello = self.state else {
            return self.fail(.protocolViolation, "unexpected ServerHello", now: now)
        }
        guard hello.protocolVersion == WireProtocol.version else {
            return self.fail(.unsupportedVersion, "ServerHello version \(hello.protocolVersion), we speak 1", now: now)
        }
        let frameSize = Int(hello.maxFrameSize)
        guard frameSize >= Int(WireProtocol.minimumMaxFrameSize),
            frameSize <= self.configuration.proposedMaxFrameSize
        else {
            return self.fail(
                .protocolViolation,
                "ServerHello max_frame_size \(frameSize) outside \(WireProtocol.minimumMaxFrameSize)..."
                    + "\(self.configuration.proposedMaxFrameSize)",
                now: now
            )
        }
        let interval =
            hello.heartbeatIntervalMs == 0
            ? WireProtocol.defaultHeartbeatIntervalMilliseconds : hello.heartbeatIntervalMs
        let ranges = hello.maxRangesPerReport == 0 ? WireProtocol.defaultMaxRangesPerReport : hello.maxRangesPerReport
        let info = SessionInfo(
            sessionID: hello.sessionID,
            brokerVersion: hello.brokerVersion,
            maxFrameSize: frameSize,
            maxRangesPerReport: Int(ranges),
            minReportOrder: max(Int(hello.minReportOrder), self.configuration.geometry.minOrder),
            heartbeatInterval: .milliseconds(Int(interval)),
            tenant: hello.tenantID,
            guest: hello.guestID,
            priorReportsSettled: hello.priorReportsSettled
        )
        self.state = .syncing(Session(info: info))
        return Actions(established: info)
    }

    private mutating func receiveResult(_ result: Pagebroker_V1_ReportResult, now: Duration) -> Actions {
        guard case .active(var session) = self.state else {
            return self.fail(.protocolViolation, "ReportResult before the session is active", now: now)
        }
        if let index = session.outstanding.firstIndex(where: { $0.seq == result.seq }) {
            // Results come in the order reports were sent, so the ones before this one (if any
            // are left) were skipped by the broker: a protocol violation, caught as a duplicate
            // when they do arrive. Only this one completes here.
            session.outstanding.remove(at: index)
            self.state = .active(session)
            let outcome: ReportOutcome
            if result.reason == .ok {
                outcome = .accepted
            } else {
                let retry: Duration? = result.retryAfterMs > 0 ? .milliseconds(Int(result.retryAfterMs)) : nil
                outcome = .failed(
                    AgentError(code: .refused, reason: result.reason, retryAfter: retry, message: result.message)
                )
            }
            return Actions(completions: [ReportCompletion(seq: result.seq, outcome: outcome)])
        }
        if let index = session.expired.firstIndex(of: result.seq) {
            session.expired.remove(at: index)
            self.state = .active(session)
            guard result.reason == .ok else {
                let outcome = ReportOutcome.failed(
                    AgentError(code: .refused, reason: result.reason, message: result.message)
                )
                return Actions(
                    lateResults: [result.seq],
                    lateOutcomes: [ReportCompletion(seq: result.seq, outcome: outcome)]
                )
            }
            // The guest put these pages back unmarked when the report timed out, but the broker
            // now counts them: only a new sync can make the records equal again.
            var actions = self.closeSession(
                AgentError(code: .disconnected, message: "resynchronising after a late result")
            )
            var goodbye = Pagebroker_V1_Frame()
            goodbye.goodbye = .with {
                $0.reason = .ok
                $0.message = "resynchronising after the late result of report \(result.seq)"
            }
            actions.frames = [goodbye]
            actions.close = CloseReason("late result for report \(result.seq) accepted", resynchronise: true)
            actions.lateResults = [result.seq]
            actions.lateOutcomes = [ReportCompletion(seq: result.seq, outcome: .accepted)]
            return self.emit(actions, now: now)
        }
        return self.fail(.protocolViolation, "ReportResult for seq \(result.seq), which is not outstanding", now: now)
    }

    private mutating func expireReports(now: Duration) -> Actions {
        guard case .active(var session) = self.state,
            let first = session.outstanding.first, first.deadline <= now
        else { return .none }
        var actions = Actions()
        while let head = session.outstanding.first, head.deadline <= now {
            session.outstanding.removeFirst()
            session.expired.append(head.seq)
            actions.completions.append(
                ReportCompletion(
                    seq: head.seq,
                    outcome: .failed(
                        AgentError(code: .timedOut, message: "no result within \(self.configuration.reportTimeout)")
                    )
                )
            )
        }
        if session.expired.count > Self.expiredMemory {
            session.expired.removeFirst(session.expired.count - Self.expiredMemory)
        }
        self.state = .active(session)
        return actions
    }

    /// Ends the session: every outstanding report fails with `error`.
    private mutating func closeSession(_ error: AgentError) -> Actions {
        var actions = Actions()
        if case .active(let session) = self.state {
            actions.completions = session.outstanding.map {
                ReportCompletion(seq: $0.seq, outcome: .failed(error))
            }
        }
        self.state = .closed
        return actions
    }

    /// A fatal problem on our side of the judgement: `Error(code)`, then close.
    private mutating func fail(_ code: Pagebroker_V1_ReasonCode, _ message: String, now: Duration) -> Actions {
        var actions = self.closeSession(
            AgentError(code: .protocolViolation, reason: code, message: message)
        )
        var frame = Pagebroker_V1_Frame()
        frame.error = .with {
            $0.code = code
            $0.message = message
        }
        actions.frames = [frame]
        actions.close = CloseReason("\(code.stableName): \(message)")
        return self.emit(actions, now: now)
    }

    private mutating func emit(_ actions: Actions, now: Duration) -> Actions {
        if !actions.frames.isEmpty { self.lastSent = now }
        return actions
    }

    // MARK: Chunking

    /// Room for range pairs in one `Sync` or `Reuse` frame: the frame size less the tags and
    /// lengths of the frame, the message, its chunk number and final flag (at most 18 bytes;
    /// 32 keeps the same margin as ``WireProtocol/reportOverhead``).
    static func payloadBudget(maxFrameSize: Int) -> Int {
        max(maxFrameSize - WireProtocol.reportOverhead, 20)
    }

    /// Splits pairs into flattened lists whose packed encoding fits `payloadBudget` bytes each.
    static func chunk(
        _ pairs: some Sequence<(UInt64, UInt64)>,
        payloadBudget: Int
    ) -> [[UInt64]] {
        var chunks: [[UInt64]] = []
        var current: [UInt64] = []
        var size = 0
        for (first, second) in pairs {
            let pairSize = Self.varintSize(first) + Self.varintSize(second)
            if size + pairSize > payloadBudget, !current.isEmpty {
                chunks.append(current)
                current = []
                size = 0
            }
            current.append(first)
            current.append(second)
            size += pairSize
        }
        if !current.isEmpty { chunks.append(current) }
        return chunks
    }

    /// Bytes of `value` as a protobuf varint.
    static func varintSize(_ value: UInt64) -> Int {
        value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7
    }
}
