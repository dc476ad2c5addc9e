import BrokerProtocol
import Dispatch
import Logging
import NIOCore
import TLSTransport

/// The channel handler of one broker connection: feeds the ``AgentConnectionStateMachine`` with
/// frames, report submissions and clock ticks, and performs what it returns. Lives on the
/// connection's event loop; ``AgentConnection`` reaches it only from there.
final class AgentConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Pagebroker_V1_Frame
    typealias OutboundOut = Pagebroker_V1_Frame

    private var machine: AgentConnectionStateMachine
    private let limit: FrameSizeLimit
    private let owner: AgentConnection
    private let waitsForTLS: Bool
    private var context: ChannelHandlerContext?
    private var started = false
    /// Promises of reports sent, by seq.
    private var pending: [UInt64: EventLoopPromise<Void>] = [:]
    /// Host discard: the device's token of each report sent and not answered, by seq, kept after
    /// a timeout so that its late result reaches the quarantine.
    private var tokens: [UInt64: UInt64] = [:]
    /// This session's number (the connection's session count once it is established).
    private var generation = 0
    private var tickTimer: Scheduled<Void>?
    private var reportTimer: Scheduled<Void>?
    private var reuseTimer: Scheduled<Void>?

    init(owner: AgentConnection, limit: FrameSizeLimit, waitsForTLS: Bool) {
        self.owner = owner
        self.limit = limit
        self.waitsForTLS = waitsForTLS
        self.machine = AgentConnectionStateMachine(configuration: owner.machineConfiguration)
    }

    private var now: Duration { .nanoseconds(Int64(NIODeadline.now().uptimeNanoseconds)) }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if !self.waitsForTLS && context.channel.isActive { self.start(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelTimers()
        self.failPending(AgentError(code: .disconnected, message: "connection handler removed"))
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if !self.waitsForTLS { self.start(context: context) }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let info) = event as? TLSEvent {
            self.owner.logger.debug(
                "TLS established",
                metadata: ["protocol": "\(info.protocolVersion)", "cipher": "\(info.cipherSuite)"]
            )
            self.start(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        self.perform(self.machine.receive(frame, now: self.now), context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let frameError = error as? FrameError {
            self.owner.logger.warning("bad frame from the broker", metadata: ["error": "\(frameError)"])
            self.perform(self.machine.decodingFailed(frameError, now: self.now), context: context)
        } else {
            self.owner.logger.warning("connection error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.perform(self.machine.connectionClosed(), context: context)
        self.cancelTimers()
        self.failPending(AgentError(code: .disconnected, message: "connection to the broker closed"))
        context.fireChannelInactive()
    }

    // MARK: Requests from the connection (on the event loop)

    /// Sends a report of `blocks`; `promise` completes with its result.
    func submitReport(blocks: [UInt64], token: UInt64?, promise: EventLoopPromise<Void>) {
        guard let context = self.context else {
            promise.fail(AgentError(code: .notConnected, message: "no connection"))
            return
        }
        // A reuse of frames must reach the broker before a later report of the same frames.
        self.writeReuse(context: context)
        switch self.machine.report(blocks: blocks, now: self.now) {
        case .failure(let error):
            promise.fail(error)
        case .success(let (seq, actions)):
            self.pending[seq] = promise
            if let token, let quarantine = self.owner.hostDiscard?.quarantine {
                self.tokens[seq] = token
                quarantine.sent(token: token, generation: self.generation)
            }
            self.owner.count { $0.reportsSent += 1 }
            self.perform(actions, context: context)
            self.armReportTimer(context: context)
        }
    }

    /// Sends what reuse has collected now.
    func flushReuse() {
        guard let context = self.context else { return }
        self.writeReuse(context: context)
        context.flush()
    }

    /// Ends the session: pending reuse, `Goodbye(OK)`, close.
    func stop() {
        guard let context = self.context else { return }
        self.writeReuse(context: context)
        self.perform(self.machine.stop(now: self.now), context: context)
    }

    // MARK: Performing actions

    private func start(context: ChannelHandlerContext) {
        guard !self.started else { return }
        self.started = true
        self.perform(self.machine.connected(now: self.now), context: context)
        self.scheduleTick(context: context, in: .seconds(1))
    }

    private func perform(_ actions: AgentConnectionStateMachine.Actions, context: ChannelHandlerContext) {
        for completion in actions.completions {
            self.complete(completion)
        }
        if !actions.lateResults.isEmpty {
            self.owner.count { $0.lateResults += actions.lateResults.count }
            self.owner.logger.notice("result after the report timed out", metadata: ["seqs": "\(actions.lateResults)"])
        }
        for late in actions.lateOutcomes {
            guard let token = self.tokens.removeValue(forKey: late.seq) else { continue }
            // Before anything is written or closed: the broker is done with this report, so its
            // frames may come back before the next session's sync.
            self.owner.hostDiscard?.quarantine?.lateResult(token: token, accepted: late.outcome == .accepted)
        }
        if let session = actions.established {
            self.establish(session, context: context)
        }
        if !actions.frames.isEmpty {
            for frame in actions.frames {
                context.write(Self.wrapOutboundOut(frame), promise: nil)
            }
            context.flush()
        }
        if let reason = actions.close {
            if reason.sessionReplaced {
                self.owner.count { $0.sessionsReplaced += 1 }
                self.owner.logger.warning(
                    "another session with this guest's identity replaced this one; if it keeps happening, two agents share a certificate",
                    metadata: ["reason": "\(reason)"]
                )
            } else {
                let level: Logger.Level = reason.resynchronise ? .notice : .info
                self.owner.logger.log(
                    level: level,
                    "closing the broker connection",
                    metadata: ["reason": "\(reason)"]
                )
            }
            self.cancelTimers()
            context.close(promise: nil)
        }
    }

    private func establish(_ session: SessionInfo, context: ChannelHandlerContext) {
        self.limit.maxFrameSize = session.maxFrameSize
        self.generation = self.owner.statistics.sessions + 1
        guard let hostDiscard = self.owner.hostDiscard else {
            self.synchronise(session, context: context)
            return
        }
        hostDiscard.quarantine?.sessionStarted(
            generation: self.generation,
            priorReportsSettled: session.priorReportsSettled
        )
        // Attach (a blocking Unix socket round trip) off the event loop; the session stays in
        // its syncing state meanwhile, so no report can be sent before the memory is attached.
        let promise = context.eventLoop.makePromise(of: HostDiscard.Preparation.self)
        hostDiscard.queue.async {
            promise.completeWith(Result<HostDiscard.Preparation, any Error> { try hostDiscard.prepare(for: session) })
        }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        promise.futureResult.whenComplete { result in
            handler.value.prepared(session, result: result)
        }
    }

    /// The memory is attached (or host discard is off): sync, unless the connection ended meanwhile.
    private func prepared(_ session: SessionInfo, result: Result<HostDiscard.Preparation, any Error>) {
        guard let context = self.context, !self.machine.isClosed, !self.machine.isActive else { return }
        let logger = self.owner.logger
        let socket = self.owner.hostDiscard?.attachment.socketPath ?? ""
        switch result {
        case .success(.attached):
            logger.info("guest memory attached", metadata: ["memory_socket": "\(socket)"])
        case .success(.stillAttached), .success(.guestDiscard):
            break
        case .success(.fellBack(let error)):
            logger.warning(
                "the broker did not take the guest's memory: the guest discards its own memory instead",
                metadata: ["memory_socket": "\(socket)", "error": "\(error)"]
            )
        case .failure(let error):
            logger.error(
                "cannot attach the guest's memory: no reports until it is attached",
                metadata: ["memory_socket": "\(socket)", "error": "\(error)"]
            )
            self.perform(self.machine.stop(now: self.now), context: context)
            return
        }
        self.synchronise(session, context: context)
    }

    private func synchronise(_ session: SessionInfo, context: ChannelHandlerContext) {
        // Collect before the snapshot: see ReuseBuffer.startCollecting.
        self.owner.reuseBuffer?.startCollecting()
        let discarded = self.owner.discardedRecord()
        let actions = self.machine.sync(discarded: discarded, now: self.now)
        let pages = discarded.reduce(0) { $0 + $1.count }
        self.owner.count {
            $0.sessions += 1
            $0.syncChunks += actions.frames.count
            $0.syncPages += pages
            $0.lastSession = session
        }
        self.owner.logger.info(
            "session established",
            metadata: [
                "session": "\(session.sessionID)", "tenant": "\(session.tenant)", "guest": "\(session.guest)",
                "max_frame_size": "\(session.maxFrameSize)", "sync_chunks": "\(actions.frames.count)",
                "sync_pages": "\(pages)", "prior_reports_settled": "\(session.priorReportsSettled)",
            ]
        )
        let geometry = self.owner.geometry
        if session.minReportOrder > geometry.minOrder {
            self.owner.logger.warning(
                "the broker's smallest order is above the guest's reporting order: smaller blocks fail",
                metadata: ["broker_min_order": "\(session.minReportOrder)", "guest_order": "\(geometry.minOrder)"]
            )
        }
        self.perform(actions, context: context)
        self.owner.sessionEstablished(session)
        self.rescheduleTick(context: context, heartbeat: session.heartbeatInterval)
        if self.owner.reuseBuffer != nil { self.scheduleReuseFlush(context: context) }
    }

    private func complete(_ completion: AgentConnectionStateMachine.ReportCompletion) {
        if case .failed(let error) = completion.outcome, error.code == .timedOut {
            // Its result may still come: keep the token for the quarantine.
        } else {
            self.tokens[completion.seq] = nil
        }
        guard let promise = self.pending.removeValue(forKey: completion.seq) else { return }
        switch completion.outcome {
        case .accepted:
            self.owner.count { $0.reportsAccepted += 1 }
            promise.succeed()
        case .failed(let error):
            self.owner.count {
                switch error.code {
                case .refused: $0.reportsRefused += 1
                case .timedOut: $0.reportsTimedOut += 1
                default: $0.reportsNotDelivered += 1
                }
            }
            promise.fail(error)
        }
    }

    private func failPending(_ error: AgentError) {
        guard !self.pending.isEmpty else { return }
        let promises = self.pending
        self.pending.removeAll()
        self.owner.count { $0.reportsNotDelivered += promises.count }
        for (_, promise) in promises { promise.fail(error) }
    }

    private func writeReuse(context: ChannelHandlerContext) {
        guard let buffer = self.owner.reuseBuffer, self.machine.isActive else { return }
        // The allocator batches reuse runs; have it hand over what it holds first.
        self.owner.collectReuse()
        let pairs = buffer.take()
        guard !pairs.isEmpty else { return }
        let actions = self.machine.reuse(pairs: pairs, now: self.now)
        var pages: UInt64 = 0
        for index in stride(from: 1, to: pairs.count, by: 2) { pages += pairs[index] }
        self.owner.count {
            $0.reuseFrames += actions.frames.count
            $0.reusePagesSent += Int(pages)
        }
        for frame in actions.frames {
            context.write(Self.wrapOutboundOut(frame), promise: nil)
        }
    }

    // MARK: Timers

    private func scheduleTick(context: ChannelHandlerContext, in delay: Duration) {
        self.tickTimer?.cancel()
        self.tickTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .init(delay)) { [self] in
            self.tickTimer = nil
            guard let context = self.context else { return }
            self.perform(self.machine.tick(now: self.now), context: context)
            guard !self.machine.isClosed else { return }
            let interval = self.machine.session.map { Self.tickInterval(heartbeat: $0.heartbeatInterval) }
            self.scheduleTick(context: context, in: interval ?? .seconds(1))
        }
    }

    private func rescheduleTick(context: ChannelHandlerContext, heartbeat: Duration) {
        self.scheduleTick(context: context, in: Self.tickInterval(heartbeat: heartbeat))
    }

    /// Often enough that a ping goes out within a quarter interval of falling due, and never
    /// more than once a second, so ten thousand idle sessions stay cheap.
    private static func tickInterval(heartbeat: Duration) -> Duration {
        max(.milliseconds(1), min(heartbeat / 4, .seconds(1)))
    }

    private func armReportTimer(context: ChannelHandlerContext) {
        guard self.reportTimer == nil, let deadline = self.machine.nextReportDeadline else { return }
        let delay = max(deadline - self.now, .zero)
        self.reportTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .init(delay)) { [self] in
            self.reportTimer = nil
            guard let context = self.context else { return }
            self.perform(self.machine.tick(now: self.now), context: context)
            self.armReportTimer(context: context)
        }
    }

    private func scheduleReuseFlush(context: ChannelHandlerContext) {
        self.reuseTimer?.cancel()
        let interval = self.owner.configuration.reuseFlushInterval
        self.reuseTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .init(interval)) { [self] in
            self.reuseTimer = nil
            guard let context = self.context, self.machine.isActive else { return }
            self.flushReuse()
            self.scheduleReuseFlush(context: context)
        }
    }

    private func cancelTimers() {
        self.tickTimer?.cancel()
        self.tickTimer = nil
        self.reportTimer?.cancel()
        self.reportTimer = nil
        self.reuseTimer?.cancel()
        self.reuseTimer = nil
    }
}

extension TimeAmount {
    /// The same span as a NIO `TimeAmount`.
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
