import BrokerProtocol
import Logging
import NIOCore
import NIOPosix
import TLSTransport

/// One guest session, whatever carries it: frames the TLS plaintext, feeds frames and clock
/// ticks to a ``SessionStateMachine`` and performs the actions it returns against the
/// ``BrokerCore``.
///
/// The transport (``GuestSessionTransport``: the NIO pipeline's ``SessionHandler`` or the epoll
/// transport's ``GuestLoop``) tells it what happened on the connection (``handshakeCompleted(_:)``,
/// ``received(_:)``, ``readComplete()``, ``inputClosed()``, ``failed(_:)``, ``closed()``, ticks)
/// and is told what to send. Frames are decoded in the buffer they arrived in, and the frames
/// sent while handling a read are encoded into one buffer, sent once when the read batch ends
/// (``readComplete()``). Sends at other times (ticks, punches finished, the core's calls) go at
/// once. All of it runs on the transport's thread.
final class GuestSession {
    private let core: BrokerCore
    private let trustDomain: String
    private let limit: FrameSizeLimit
    private let metrics: BrokerMetrics?
    private var logger: Logger
    /// The state machine, the decoder's block storage and the core's report handle, together:
    /// see ``SessionReportPath``.
    private var path: SessionReportPath
    private var identity: GuestIdentity?
    private var sessionID: String?
    private var transport: (any GuestSessionTransport)?
    private var control: Control?
    /// A report of this session is being punched on the thread pool: frames that arrive
    /// meanwhile wait here, so that they are still handled in order (docs/protocol.md: a reuse
    /// sent after a report is applied after it), and reading pauses until it is done.
    private var punching = false
    private var framesWaiting: [Inbound] = []
    /// The broker began stopping while a punch ran: say goodbye once it is answered.
    private var shutdownWaiting = false
    /// Where punches run; see ``startPunch(seq:blocks:attachment:receivedAt:)``.
    private let punchPool: NIOThreadPool
    /// Decoder state, partial frame and outbound buffer.
    private var framing = SessionFraming(allocator: ByteBufferAllocator())
    /// Between a ``received(_:)`` and its ``readComplete()``: sends wait in the outbound buffer.
    private var reading = false
    /// Inside the decode loop; a stream end that arrives meanwhile is handled after it.
    private var decoding = false
    private var leftoversPending = false
    /// When the reports answered in the outbound buffer arrived: their round trips end when the
    /// buffer is written. Its capacity is kept (no allocation per batch).
    private var roundTripsWaiting: [Duration] = []

    init(
        core: BrokerCore,
        configuration: SessionConfiguration,
        trustDomain: String,
        limit: FrameSizeLimit,
        logger: Logger,
        metrics: BrokerMetrics? = nil,
        punchPool: NIOThreadPool = .singleton
    ) {
        self.punchPool = punchPool
        self.core = core
        self.trustDomain = trustDomain
        self.limit = limit
        self.metrics = metrics
        self.logger = logger
        self.path = SessionReportPath(machine: SessionStateMachine(configuration: configuration, now: core.now))
    }

    /// How often the transport should call ``tick()``: often enough for the handshake timeout
    /// and heartbeats to fire close to on time.
    var tickInterval: Duration { Self.tickInterval(for: self.path.machine.configuration) }

    /// The tick interval of sessions with `configuration`.
    static func tickInterval(for configuration: SessionConfiguration) -> Duration {
        max(.milliseconds(1), min(configuration.heartbeatInterval / 4, .seconds(1)))
    }

    /// The connection is up (TCP accepted; TLS not yet done).
    func attach(_ transport: any GuestSessionTransport) {
        self.transport = transport
        self.logger[metadataKey: "peer"] = "\(transport.peerDescription)"
        self.control = Control(session: ExecutorBound(self, executor: transport.executor))
    }

    /// The clock moved on: heartbeats, handshake and idle timeouts.
    func tick() {
        self.perform(self.path.machine.tick(now: self.core.now))
    }

    /// The TLS handshake completed (and the peer validator accepted the peer).
    func handshakeCompleted(_ info: TLSHandshakeInfo) {
        do {
            let identity = try GuestIdentity.fromURISANs(
                info.peerCertificate?.uriSANs ?? [],
                trustDomain: self.trustDomain
            )
            self.identity = identity
            self.logger[metadataKey: "guest"] = "\(identity.tenant)/\(identity.guest)"
            self.logger.debug(
                "TLS handshake complete",
                metadata: ["tls": "\(info.protocolVersion) \(info.cipherSuite)"]
            )
        } catch {
            // The handshake's validator checks the same; this is the belt to its braces.
            self.core.recordHandshakeFailure(reason: error.code.description)
            self.logger.notice("refusing guest: \(error)")
            self.transport?.close()
        }
    }

    // MARK: Framing

    /// Plaintext arrived. `bytes` may be the transport's buffer, which it reuses: nothing of it
    /// is held after the call.
    func received(_ bytes: inout ByteBuffer) {
        switch self.framing.decodeState {
        case .failed(let error):
            self.failed(ByteToMessageDecoderError.dataReceivedInErrorState(error, bytes))
            return
        case .done:
            return
        case .active:
            break
        }
        self.reading = true
        if var partial = self.framing.takePartial() {
            partial.writeBuffer(&bytes)
            self.decodeFrames(from: &partial, atEndOfStream: false)
            self.framing.keepRemainder(of: partial, allocator: ByteBufferAllocator(), owned: true)
        } else {
            self.decodeFrames(from: &bytes, atEndOfStream: false)
            self.framing.keepRemainder(of: bytes, allocator: ByteBufferAllocator(), owned: false)
        }
        if self.leftoversPending {
            // The stream ended while its frames were being handled.
            self.leftoversPending = false
            self.processLeftovers()
        }
    }

    /// The read batch ended: what was sent meanwhile goes out, once.
    func readComplete() {
        self.reading = false
        self.flushOutbound(thenClose: false)
    }

    /// The peer ended its stream (TLS close_notify or TCP end): what is left is decoded.
    func inputClosed() {
        self.processLeftovers()
    }

    /// Decodes and handles the frames in `bytes`, moving its reader index past each, until
    /// it holds no complete frame, a frame is bad, or decoding stopped.
    private func decodeFrames(from bytes: inout ByteBuffer, atEndOfStream: Bool) {
        self.decoding = true
        defer { self.decoding = false }
        // At the end of the stream every left-over frame is decoded, whatever the state
        // (as `ByteToMessageHandler`'s last decode loop).
        while atEndOfStream || self.framing.isDecoding {
            let parser = FrameParser(maxFrameSize: self.limit.maxFrameSize)
            let parsed: (frame: FrameParser.DirectFrame, consumed: Int)?
            do throws(FrameError) {
                parsed =
                    atEndOfStream
                    ? try parser.parseDirectAtEndOfStream(bytes.readableBytesSpan, reportBlocks: &self.path.blocks)
                    : try parser.parseDirect(bytes.readableBytesSpan, reportBlocks: &self.path.blocks)
            } catch {
                self.framing.decodeState = .failed(error)
                if self.transport != nil { self.failed(error) }
                return
            }
            guard let (frame, consumed) = parsed else { return }
            bytes.moveReaderIndex(forwardBy: consumed)
            switch frame {
            case .report(let seq): self.receiveReport(seq: seq)
            case .frame(let frame): self.receive(.frame(frame))
            }
        }
    }

    /// The end of the stream: decodes what is left, once.
    private func processLeftovers() {
        guard self.framing.isDecoding else { return }
        if self.decoding {
            self.leftoversPending = true
            return
        }
        if var partial = self.framing.takePartial() {
            self.decodeFrames(from: &partial, atEndOfStream: true)
        }
        if self.framing.isDecoding { self.framing.decodeState = .done }
    }

    /// Encodes `frame` into the outbound buffer; on failure reports the error as the encoder
    /// handler did (through ``failed(_:)``, for this write and every later one).
    @discardableResult
    private func write(_ frame: Pagebroker_V1_Frame) -> Bool {
        guard self.transport != nil else { return false }
        if let error = self.framing.encodeError {
            self.failed(error)
            return false
        }
        do {
            try FrameEncoder.write(frame, into: &self.framing.outbound, maxFrameSize: self.limit.maxFrameSize)
            return true
        } catch {
            self.framing.encodeError = error
            self.failed(error)
            return false
        }
    }

    /// Sends the outbound buffer, if it holds anything (and closes after it when asked), and
    /// ends the round trips of the reports it answers.
    private func flushOutbound(thenClose: Bool) {
        if let transport = self.transport {
            let pending = self.framing.outbound.readableBytes > 0
            if thenClose {
                transport.sendThenClose(pending ? self.framing.outbound : nil)
            } else if pending {
                transport.send(self.framing.outbound)
            }
            // The transport has taken the bytes (encrypted them, or copied what the socket did
            // not take), so this keeps the storage; it allocates only when a transport still
            // holds it (the NIO pipeline, mid-handshake).
            if pending { self.framing.outbound.clear() }
        }
        guard !self.roundTripsWaiting.isEmpty else { return }
        if let metrics = self.metrics {
            let now = self.core.now
            for receivedAt in self.roundTripsWaiting { metrics.recordReportRoundTrip(now - receivedAt) }
        }
        self.roundTripsWaiting.removeAll(keepingCapacity: true)
    }

    /// A report was answered: its round trip ends once its result is written, at once or at
    /// the end of the read batch.
    private func endRoundTrip(receivedAt: Duration) {
        guard let metrics = self.metrics else { return }
        if self.reading {
            self.roundTripsWaiting.append(receivedAt)
        } else {
            metrics.recordReportRoundTrip(self.core.now - receivedAt)
        }
    }

    // MARK: Frames

    /// A decoded frame: a report on the direct path (no `Frame` built), or any other frame.
    /// Frames waiting behind a punch keep this form, so that reports and the rest stay in order.
    private enum Inbound {
        case report(seq: UInt64, blocks: [UInt64])
        case frame(Pagebroker_V1_Frame)
    }

    /// A report decoded into `path.blocks`.
    private func receiveReport(seq: UInt64) {
        guard let transport = self.transport else { return }
        guard self.identity != nil else {
            transport.close()
            return
        }
        if self.punching {
            // Its storage shared: the next report decodes into a copy (allocates), as before.
            self.framesWaiting.append(.report(seq: seq, blocks: self.path.blocks))
            return
        }
        self.processReport(seq: seq)
    }

    private func receive(_ frame: Inbound) {
        guard let transport = self.transport else { return }
        guard self.identity != nil else {
            transport.close()
            return
        }
        if self.punching {
            self.framesWaiting.append(frame)
            return
        }
        self.process(frame)
    }

    private func process(_ frame: Inbound) {
        switch frame {
        case .report(let seq, let blocks):
            // A report that waited: its blocks go where the decoder leaves a report's, for the
            // same path (the decoder overwrites them with the next report anyway).
            self.path.blocks = blocks
            self.processReport(seq: seq)
        case .frame(let frame):
            let now = self.core.now
            self.handle(self.path.machine.receive(frame, now: now), receivedAt: now)
        }
    }

    /// The report whose blocks are in `path.blocks`: checked, and accounted and answered when
    /// the core can do it at once, in one access to `path`.
    private func processReport(seq: UInt64) {
        let now = self.core.now
        switch self.path.report(seq: seq, core: self.core, identity: self.identity, sessionID: self.sessionID, now: now)
        {
        case .answered(let answer):
            self.send(answer, receivedAt: now)
        case .punch(let seq, let blocks, let attachment):
            self.startPunch(seq: seq, blocks: blocks, attachment: attachment, receivedAt: now)
        case .action(let action):
            self.handle(action, receivedAt: now)
        }
    }

    /// What the machine said to a frame that arrived at `now`.
    private func handle(_ action: SessionStateMachine.Action, receivedAt now: Duration) {
        // Each answered report is counted exactly once: one the core accounts (`.account`) is
        // counted by the core, whatever its outcome (ok, paused, rate limited, backend failed,
        // shutting down); one the state machine refuses before accounting (invalid, misaligned,
        // out of bounds, overlap, replayed, shutting down) is counted here and nowhere else.
        let answersReport: Bool
        switch action {
        case .account(let seq, let blocks):
            // Answered (and timed) in `account`, at once or when its punch is done.
            self.account(seq: seq, blocks: blocks, receivedAt: now)
            return
        case .send(let reply):
            guard case .reportResult(let result) = reply.body else {
                answersReport = false
                break
            }
            answersReport = true
            if result.reason != .ok, let identity = self.identity {
                self.core.recordRefusedReport(identity, reason: result.reason)
            }
        default:
            answersReport = false
        }
        self.perform(action)
        // A report is answered within `perform` (accounted, and its result encoded), and its
        // round trip ends when the result is written. Only reports that got a result are
        // timed, so the histogram's count equals the reports counted.
        if answersReport { self.endRoundTrip(receivedAt: now) }
    }

    /// The connection is gone: the session ends (with what is left of the stream decoded).
    func closed() {
        self.processLeftovers()
        self.reading = false
        if let identity = self.identity, let sessionID = self.sessionID {
            self.core.disconnect(identity, sessionID: sessionID)
            self.logger.info("session ended", metadata: ["session": "\(sessionID)"])
        }
        // Breaks the cycle with the transport; nothing is sent after this.
        self.transport = nil
    }

    /// The connection failed (TLS, a bad frame, a frame too large to encode).
    func failed(_ error: any Error) {
        switch error {
        case let frameError as FrameError:
            self.logger.notice("bad frame from guest: \(frameError)")
            self.perform(self.path.machine.fail(frameError.reasonCode ?? .protocolViolation, frameError.description))
        case let tlsError as TLSError:
            // A peer the validator refused (`peer_rejected`) was already counted by the validator
            // under its precise reason (unknown_tenant, wrong_trust_domain…): counting it here too
            // would show one refused handshake as two.
            // Only failures before the session has an identity are handshake failures; a TLS
            // error later (a bad record, an alert) ends a session that was admitted.
            if self.identity == nil && tlsError.code != .connectionClosed && tlsError.code != .uncleanShutdown
                && tlsError.code != .peerRejected
            {
                self.core.recordHandshakeFailure(reason: tlsError.code.name)
                self.logger.notice("TLS: \(tlsError)")
            }
            self.transport?.close()
        default:
            self.logger.notice("closing session after error: \(error)")
            self.transport?.close()
        }
    }

    // MARK: Actions

    fileprivate func perform(_ action: SessionStateMachine.Action) {
        guard let transport = self.transport else { return }
        switch action {
        case .none:
            break
        case .send(let frame):
            self.write(frame)
            if !self.reading { self.flushOutbound(thenClose: false) }
        case .sendAndClose(let frame):
            if case .error(let error) = frame.body {
                self.logger.notice("session error \(error.code.stableName): \(error.message)")
            }
            self.write(frame)
            self.flushOutbound(thenClose: true)
        case .close(let reason):
            self.logger.info("closing session: \(reason)")
            // What was sent before the close goes out before it, as when each send flushed.
            self.flushOutbound(thenClose: false)
            transport.close()
        case .admit(let geometry):
            guard let identity = self.identity, let control = self.control else { return }
            switch self.core.admit(identity, geometry: geometry, control: control) {
            case .admitted(let sessionID):
                self.sessionID = sessionID
                self.logger[metadataKey: "session"] = "\(sessionID)"
                self.logger.info(
                    "guest admitted",
                    metadata: [
                        "pages": "\(geometry.totalPages)", "page_size": "\(geometry.pageSize)",
                        "agent": "\(geometry.agentVersion)",
                    ]
                )
                // The hello says `prior_reports_settled` only once no report of a session this
                // one replaced is being punched (at once, unless one is in flight right now).
                let bound = ExecutorBound(self, executor: transport.executor)
                self.core.whenPriorReportsSettled(identity) {
                    bound.run { $0.sendServerHello(sessionID: sessionID, identity: identity) }
                }
            case .refused(let code, let message):
                self.logger.notice("guest refused: \(message)")
                self.perform(self.path.machine.refused(code: code, message: message))
            }
        case .account(let seq, let blocks):
            self.account(seq: seq, blocks: blocks, receivedAt: self.core.now)
        case .reuse(let ranges):
            guard let identity = self.identity else { return }
            do {
                try self.core.reuse(identity, ranges: ranges)
            } catch {
                self.perform(self.path.machine.fail(.backendFailed, "reuse: \(error)"))
            }
        case .sync(let chunk, let ranges, let final):
            guard let identity = self.identity else { return }
            do {
                try self.core.sync(identity, chunk: chunk, ranges: ranges, final: final)
            } catch {
                self.perform(self.path.machine.fail(.backendFailed, "sync: \(error)"))
            }
        }
    }

    // MARK: Reports

    /// Accounts a report the state machine passed on: at once, or, for a guest with memory
    /// attached, after its punch.
    private func account(seq: UInt64, blocks: [ReportedBlock], receivedAt: Duration) {
        guard let identity = self.identity else { return }
        switch self.core.reportStep(&self.path.handle, identity, sessionID: self.sessionID, blocks: blocks) {
        case .done(let outcome):
            // Answered within microseconds of its arrival: that time will do as now (one clock
            // read less per report).
            self.answer(seq: seq, outcome, receivedAt: receivedAt, now: receivedAt)
        case .punch(let attachment):
            self.startPunch(seq: seq, blocks: blocks, attachment: attachment, receivedAt: receivedAt)
        }
    }

    /// Punches a report on the thread pool, then answers it back on the session's thread.
    ///
    /// Not on the session's thread: the punch is the kernel freeing the report's memory, and a
    /// 32 × 2 MiB report took 30 ms on a loaded 2-core host (median, scripts/bench-discard,
    /// docs/benchmarks.md): time every other session on the loop would wait. The session waits
    /// instead: it stops reading and keeps the frames already decoded, so everything after the
    /// report is still handled after it, in order, and the results go out in report order.
    private func startPunch(
        seq: UInt64,
        blocks: [ReportedBlock],
        attachment: MemoryAttachment,
        receivedAt: Duration
    ) {
        guard let transport = self.transport else { return }
        self.punching = true
        transport.setReading(false)
        let core = self.core
        let key = BrokerCore.GuestKey(tenant: attachment.tenant, guest: attachment.guest)
        let bound = ExecutorBound(self, executor: transport.executor)
        self.punchPool.submit { state in
            let outcome: BrokerCore.ReportOutcome
            switch state {
            case .active:
                outcome = core.punchAndAccount(key, attachment: attachment, blocks: blocks)
            case .cancelled:
                // The pool is shutting down: nothing was punched or accounted.
                core.finishPunchNotRun(key, tenant: attachment.tenant)
                outcome = (.shuttingDown, 0, "broker is shutting down", nil)
            }
            bound.executor.execute { bound.value.finishPunch(seq: seq, outcome, receivedAt: receivedAt) }
        }
    }

    private func finishPunch(seq: UInt64, _ outcome: BrokerCore.ReportOutcome, receivedAt: Duration) {
        self.punching = false
        if let punched = outcome.punchDuration { self.metrics?.recordPunch(punched) }
        self.answer(seq: seq, outcome, receivedAt: receivedAt, now: self.core.now)
        // What arrived meanwhile, in order, until one of those is punched in turn.
        while !self.punching, !self.framesWaiting.isEmpty {
            self.process(self.framesWaiting.removeFirst())
        }
        guard !self.punching else { return }
        if self.shutdownWaiting {
            self.shutdownWaiting = false
            self.perform(self.path.machine.finishShutdown())
        }
        self.transport?.setReading(true)
    }

    /// Sends a report's result and times its round trip (only reports that got a result are
    /// timed, so the histogram's count equals the reports counted).
    private func answer(seq: UInt64, _ outcome: BrokerCore.ReportOutcome, receivedAt: Duration, now: Duration) {
        let answer = self.path.machine.reportAnswered(
            seq: seq,
            reason: outcome.reason,
            retryAfterMilliseconds: outcome.retryAfterMilliseconds,
            message: outcome.message,
            now: now
        )
        self.send(answer, receivedAt: receivedAt)
    }

    /// Sends a report's result (as `perform(.send(answer.frame))`, written from its fields) and
    /// times its round trip.
    private func send(_ answer: SessionStateMachine.ReportAnswer, receivedAt: Duration) {
        if self.transport != nil {
            // As `write(_:)` does for a frame: a failed encode fails the session.
            if let error = self.framing.write(answer, maxFrameSize: self.limit.maxFrameSize) { self.failed(error) }
            if !self.reading { self.flushOutbound(thenClose: false) }
        }
        self.endRoundTrip(receivedAt: receivedAt)
    }

    /// Answers the hello of an admitted guest.
    private func sendServerHello(sessionID: String, identity: GuestIdentity) {
        self.perform(
            self.path.machine.admitted(
                sessionID: sessionID,
                tenant: identity.tenant,
                guest: identity.guest,
                priorReportsSettled: true,
                now: self.core.now
            )
        )
        // The ServerHello went out under the old limit; everything after uses the new one.
        self.limit.maxFrameSize = Int(self.path.machine.maxFrameSize)
    }

    /// Lets the ``BrokerCore`` end this session from any thread.
    final class Control: SessionControl {
        private let session: ExecutorBound<GuestSession>

        init(session: ExecutorBound<GuestSession>) { self.session = session }

        func replaced() {
            let session = self.session
            session.executor.execute {
                session.value.logger.info("replaced by a newer session of the same guest")
                session.value.perform(session.value.path.machine.replaced())
            }
        }

        func shutdown() {
            let session = self.session
            session.executor.execute {
                // Every report received so far has been answered (they are accounted as they
                // arrive), so the goodbye can follow at once; unless one is being punched: then
                // after its result (and the frames that wait behind it).
                let value = session.value
                value.path.machine.beginShutdown()
                if value.punching {
                    value.shutdownWaiting = true
                } else {
                    value.perform(value.path.machine.finishShutdown())
                }
            }
        }
    }
}

@available(*, unavailable)
extension GuestSession: Sendable {}
