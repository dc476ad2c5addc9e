import BrokerProtocol
import BuddyAllocator
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TLSTransport

/// A guest's connection to the broker, kept up for as long as the agent runs.
///
/// It connects (mutual TLS), says hello, syncs the guest's whole discarded record, then carries
/// reports and reuse; when the broker goes away it reconnects with jittered exponential backoff
/// and syncs again. The allocator and the reporting engine never wait for it: a report made
/// while no session is active fails at once (``AgentError/Code/notConnected``).
///
/// Everything mutable lives on one event loop of the group given at creation; the public
/// methods may be called from any thread. The group must outlive the connection.
public final class AgentConnection: Sendable {
    /// The settings given at creation.
    public let configuration: AgentConfiguration
    /// What the hello announces.
    public let geometry: GuestGeometry
    /// The loop all of the connection's work runs on.
    public let eventLoop: any EventLoop
    /// Collects reused frames for `Reuse`; `nil` for a connection without an allocator.
    public let reuseBuffer: ReuseBuffer?
    /// Where the agent logs.
    public let logger: Logger
    /// Host-side discard: attached before every sync, told about reports and sessions.
    public let hostDiscard: HostDiscard?

    let discardedRecord: @Sendable () -> [Range<Int>]
    /// Makes the allocator deliver the reuse runs it buffers into ``reuseBuffer``.
    let collectReuse: @Sendable () -> Void
    private let loopState: NIOLoopBoundBox<LoopState>
    private let stats = Mutex(AgentStatistics())

    private struct LoopState {
        var handler: AgentConnectionHandler?
        var channel: (any Channel)?
        var started = false
        var stopping = false
        var backoff: ReconnectBackoff
        var reconnectTask: Scheduled<Void>?
        var sessionActive = false
        var sessionWaiters: [EventLoopPromise<SessionInfo>] = []
    }

    /// Creates a connection for a guest described by `geometry`. `discardedRecord` returns
    /// the guest's complete record of discarded frames as sorted ranges (sent as `Sync`);
    /// `reuseBuffer`, when given, is drained into `Reuse` frames.
    public init(
        configuration: AgentConfiguration,
        geometry: GuestGeometry,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger = Logger(label: "pagebroker.agent"),
        reuseBuffer: ReuseBuffer? = nil,
        discardedRecord: @escaping @Sendable () -> [Range<Int>] = { [] },
        collectReuse: @escaping @Sendable () -> Void = {},
        hostDiscard: HostDiscard? = nil
    ) {
        self.hostDiscard = hostDiscard
        self.configuration = configuration
        self.geometry = geometry
        self.eventLoop = eventLoopGroup.next()
        self.logger = logger
        self.reuseBuffer = reuseBuffer
        self.discardedRecord = discardedRecord
        self.collectReuse = collectReuse
        self.loopState = NIOLoopBoundBox.makeBoxSendingValue(
            LoopState(backoff: configuration.reconnectBackoff),
            eventLoop: self.eventLoop
        )
    }

    /// Creates a connection for `allocator`, reporting from `reportingOrder` up, and installs
    /// its ``reuseBuffer`` as the allocator's reuse observer. With `hostDiscard` the memory is
    /// attached before every sync (`docs/agent.md`, "Host discard").
    public convenience init(
        configuration: AgentConfiguration,
        allocator: BuddyAllocator,
        reportingOrder: Int,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger = Logger(label: "pagebroker.agent"),
        hostDiscard: HostDiscard? = nil
    ) {
        let geometry = GuestGeometry(
            pageSize: allocator.configuration.pageSize,
            totalPages: allocator.configuration.frameCount,
            minOrder: reportingOrder,
            maxOrder: allocator.configuration.orderCount - 1
        )
        let buffer = ReuseBuffer()
        self.init(
            configuration: configuration,
            geometry: geometry,
            eventLoopGroup: eventLoopGroup,
            logger: logger,
            reuseBuffer: buffer,
            discardedRecord: { [allocator] in allocator.discardedRanges() },
            collectReuse: { [allocator] in allocator.flushReuse() },
            hostDiscard: hostDiscard
        )
        allocator.setReuseObserver(buffer)
    }

    var machineConfiguration: AgentConnectionStateMachine.Configuration {
        AgentConnectionStateMachine.Configuration(
            geometry: self.geometry,
            agentVersion: self.configuration.agentVersion,
            maxFrameSize: self.configuration.maxFrameSize,
            reportTimeout: self.configuration.reportTimeout,
            helloTimeout: self.configuration.helloTimeout
        )
    }

    // MARK: Public interface

    /// Starts connecting; returns at once. Calling it again does nothing.
    public func start() {
        self.onLoop {
            guard !self.loopState.value.started else { return }
            self.loopState.value.started = true
            self.connect()
        }
    }

    /// Counters since creation.
    public var statistics: AgentStatistics { self.stats.withLock { $0 } }

    /// Succeeds with the session as soon as one is active (at once if one is).
    public func activeSession() -> EventLoopFuture<SessionInfo> {
        let promise = self.eventLoop.makePromise(of: SessionInfo.self)
        self.onLoop {
            let state = self.loopState.value
            if state.sessionActive, let session = self.statistics.lastSession {
                promise.succeed(session)
            } else if state.stopping {
                promise.fail(AgentError(code: .shutDown, message: "the connection is stopped"))
            } else {
                self.loopState.value.sessionWaiters.append(promise)
            }
        }
        return promise.futureResult
    }

    /// Sends a report of `blocks`, flattened `(frame, order)` pairs; the future succeeds when
    /// the broker accepted it and fails with an ``AgentError`` otherwise (refused, timed out,
    /// disconnected, or no session). It never takes longer than the report timeout.
    public func submitReport(blocks: [UInt64]) -> EventLoopFuture<Void> {
        self.submitReport(blocks: blocks, token: nil)
    }

    /// As ``submitReport(blocks:)``; `token` names the report to the host-discard quarantine.
    func submitReport(blocks: [UInt64], token: UInt64?) -> EventLoopFuture<Void> {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.onLoop {
            guard let handler = self.loopState.value.handler, self.loopState.value.sessionActive else {
                self.count { $0.reportsNotDelivered += 1 }
                promise.fail(AgentError(code: .notConnected, message: "no session with the broker"))
                return
            }
            handler.submitReport(blocks: blocks, token: token, promise: promise)
        }
        return promise.futureResult
    }

    /// Ends the current session (`Goodbye(OK)`, close) and connects again with the usual backoff:
    /// the next session prepares again (host discard attaches its memory anew).
    func restartSession(reason: String) {
        self.onLoop {
            guard let handler = self.loopState.value.handler, !self.loopState.value.stopping else { return }
            self.logger.notice("restarting the session", metadata: ["reason": "\(reason)"])
            handler.stop()
        }
    }

    /// Sends the reuse runs collected so far without waiting for the timer.
    public func flushReuse() {
        self.onLoop { self.loopState.value.handler?.flushReuse() }
    }

    /// Stops: no more reconnects; pending reuse is sent, then `Goodbye(OK)`, then the
    /// connection closes (TLS close_notify). The future completes when it is closed.
    /// Unregister the reporting engine first, so no report is outstanding.
    public func shutdown() -> EventLoopFuture<Void> {
        self.eventLoop.flatSubmit {
            var state = self.loopState.value
            state.stopping = true
            state.reconnectTask?.cancel()
            state.reconnectTask = nil
            let waiters = state.sessionWaiters
            state.sessionWaiters = []
            self.loopState.value = state
            for waiter in waiters {
                waiter.fail(AgentError(code: .shutDown, message: "the connection is stopped"))
            }
            guard let channel = state.channel else { return self.eventLoop.makeSucceededVoidFuture() }
            if let handler = state.handler {
                handler.stop()
            } else {
                channel.close(promise: nil)
            }
            return channel.closeFuture
        }
    }

    // MARK: Connecting

    private func connect() {
        guard !self.loopState.value.stopping else { return }
        self.count { $0.connectAttempts += 1 }
        let configuration = self.configuration
        let waitsForTLS: Bool
        if case .tls = configuration.transport { waitsForTLS = true } else { waitsForTLS = false }
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            // IPPROTO_TCP level: `.socketOption(.tcp_nodelay)` is SOL_SOCKET option 1, SO_DEBUG,
            // which needs CAP_NET_ADMIN; unprivileged (User=pagebroker) every accept then failed.
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let limit = FrameSizeLimit()
                    let pipeline = channel.pipeline.syncOperations
                    if case .tls(let context, let serverHostname) = configuration.transport {
                        try pipeline.addHandler(
                            TLSTransport.clientHandler(context: context, serverHostname: serverHostname)
                        )
                    }
                    try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(limit: limit)))
                    try pipeline.addHandler(MessageToByteHandler(FrameEncoder(limit: limit)))
                    let handler = AgentConnectionHandler(owner: self, limit: limit, waitsForTLS: waitsForTLS)
                    try pipeline.addHandler(handler)
                    self.loopState.value.handler = handler
                }
            }
        bootstrap.connect(host: configuration.host, port: configuration.port).whenComplete { result in
            switch result {
            case .success(let channel):
                self.loopState.value.channel = channel
                channel.closeFuture.whenComplete { _ in self.channelClosed(channel) }
                if self.loopState.value.stopping { channel.close(promise: nil) }
            case .failure(let error):
                self.loopState.value.handler = nil
                self.logger.debug(
                    "connect failed",
                    metadata: ["broker": "\(configuration.host):\(configuration.port)", "error": "\(error)"]
                )
                self.scheduleReconnect()
            }
        }
    }

    private func channelClosed(_ channel: any Channel) {
        guard self.loopState.value.channel === channel else { return }
        self.loopState.value.channel = nil
        self.loopState.value.handler = nil
        let wasActive = self.loopState.value.sessionActive
        self.loopState.value.sessionActive = false
        // Runs reused from now on are covered by the next sync.
        self.reuseBuffer?.stopCollecting()
        if wasActive { self.logger.info("session ended") }
        self.scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard !self.loopState.value.stopping else { return }
        let delay = self.loopState.value.backoff.next()
        self.logger.debug("reconnecting", metadata: ["in": "\(delay)"])
        self.loopState.value.reconnectTask = self.eventLoop.scheduleTask(in: TimeAmount(delay)) {
            self.loopState.value.reconnectTask = nil
            self.connect()
        }
    }

    /// Called by the handler once `ServerHello` arrived and the sync was written.
    func sessionEstablished(_ session: SessionInfo) {
        self.loopState.value.backoff.reset()
        self.loopState.value.sessionActive = true
        let waiters = self.loopState.value.sessionWaiters
        self.loopState.value.sessionWaiters = []
        for waiter in waiters { waiter.succeed(session) }
    }

    func count(_ update: (inout AgentStatistics) -> Void) {
        self.stats.withLock { update(&$0) }
    }

    private func onLoop(_ work: @escaping @Sendable () -> Void) {
        if self.eventLoop.inEventLoop {
            work()
        } else {
            self.eventLoop.execute(work)
        }
    }
}
