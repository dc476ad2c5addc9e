import BrokerProtocol
import NIOCore
import NIOPosix
import Synchronization
import TLSTransport

@testable import GuestAgent

/// A broker for tests: a NIO server on 127.0.0.1 (port chosen by the OS), optionally over TLS,
/// that answers hellos and reports as told and records every frame it receives.
final class FakeBroker: Sendable {
    /// How reports are answered.
    enum Answer: Sendable {
        case ok
        case refuse(Pagebroker_V1_ReasonCode, retryAfterMs: UInt32)
        /// Never answered: the guest must time out.
        case silent
        /// Kept until ``FakeBroker/answerHeld(_:)``: a broker that is only slow.
        case hold
    }

    struct Received: Sendable {
        var connection: Int
        var frame: Pagebroker_V1_Frame
    }

    let group: MultiThreadedEventLoopGroup
    private let state = Mutex(State())
    private let channel: NIOLockedChannel

    private struct State {
        var answer: Answer = .ok
        var frames: [Received] = []
        var connections = 0
        var children: [any Channel] = []
        var waiters: [(predicate: @Sendable ([Received], Int) -> Bool, promise: EventLoopPromise<Void>)] = []
        var held: [(seq: UInt64, channel: any Channel)] = []
        var priorReportsSettled = false
    }

    /// Starts listening. `tls` is a server-role context for a TLS broker, `nil` for plaintext.
    init(tls: TLSContext? = nil, maxFrameSize: UInt32 = 65536, heartbeatMs: UInt32 = 10_000) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let box = NIOLockedChannel()
        self.channel = box
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [weak self] channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let self else { return }
                    let limit = FrameSizeLimit()
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(TLSTransport.serverHandler(context: tls))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(limit: limit)))
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder(limit: limit)))
                    let index = self.state.withLock { state in
                        state.connections += 1
                        state.children.append(channel)
                        return state.connections
                    }
                    self.checkWaiters()
                    try channel.pipeline.syncOperations.addHandler(
                        FakeBrokerHandler(
                            broker: self,
                            connection: index,
                            limit: limit,
                            maxFrameSize: maxFrameSize,
                            heartbeatMs: heartbeatMs
                        )
                    )
                }
            }
        box.channel = try bootstrap.bind(host: "127.0.0.1", port: 0).wait()
    }

    var port: Int { self.channel.channel!.localAddress!.port! }

    var answer: Answer {
        get { self.state.withLock { $0.answer } }
        set { self.state.withLock { $0.answer = newValue } }
    }

    var frames: [Received] { self.state.withLock { $0.frames } }

    /// What `ServerHello.prior_reports_settled` says from now on.
    var priorReportsSettled: Bool {
        get { self.state.withLock { $0.priorReportsSettled } }
        set { self.state.withLock { $0.priorReportsSettled = newValue } }
    }

    /// Reports held by ``Answer/hold`` so far.
    var heldReports: Int { self.state.withLock { $0.held.count } }

    /// Answers every held report with `reason`, late, on the connection it came on.
    func answerHeld(_ reason: Pagebroker_V1_ReasonCode = .ok) {
        let held = self.state.withLock { state in
            defer { state.held = [] }
            return state.held
        }
        for (seq, channel) in held {
            var answer = Pagebroker_V1_Frame()
            answer.reportResult = .with {
                $0.seq = seq
                $0.reason = reason
            }
            channel.writeAndFlush(answer, promise: nil)
        }
    }

    func hold(seq: UInt64, channel: any Channel) {
        self.state.withLock { $0.held.append((seq, channel)) }
    }

    var connections: Int { self.state.withLock { $0.connections } }

    /// Closes every accepted connection (the broker "crashes" for its guests).
    func dropConnections() {
        let children = self.state.withLock { state in
            let children = state.children
            state.children = []
            return children
        }
        for child in children { child.close(promise: nil) }
    }

    /// Completes when the frames received so far satisfy `predicate`, or fails after `timeout`.
    func waitFor(
        timeout: TimeAmount = .seconds(10),
        _ predicate: @escaping @Sendable ([Received]) -> Bool
    ) throws {
        try self.waitFor(timeout: timeout) { frames, _ in predicate(frames) }
    }

    /// Completes when the frames and the number of connections accepted so far satisfy
    /// `predicate`, or fails after `timeout`.
    func waitFor(
        timeout: TimeAmount = .seconds(10),
        _ predicate: @escaping @Sendable ([Received], Int) -> Bool
    ) throws {
        let loop = self.group.next()
        let promise = loop.makePromise(of: Void.self)
        let satisfied = self.state.withLock { state in
            if predicate(state.frames, state.connections) { return true }
            state.waiters.append((predicate, promise))
            return false
        }
        if satisfied { promise.succeed() }
        let timer = loop.scheduleTask(in: timeout) { promise.fail(FakeBrokerTimeout()) }
        defer { timer.cancel() }
        try promise.futureResult.wait()
    }

    func record(_ frame: Pagebroker_V1_Frame, connection: Int) {
        self.state.withLock { $0.frames.append(Received(connection: connection, frame: frame)) }
        self.checkWaiters()
    }

    /// Completes the waiters whose predicate now holds; predicates see the state under the lock.
    private func checkWaiters() {
        let ready = self.state.withLock { state in
            var ready: [EventLoopPromise<Void>] = []
            let frames = state.frames
            let connections = state.connections
            state.waiters.removeAll { waiter in
                guard waiter.predicate(frames, connections) else { return false }
                ready.append(waiter.promise)
                return true
            }
            return ready
        }
        for promise in ready { promise.succeed() }
    }

    func shutdown() throws {
        try self.channel.channel?.close().wait()
        self.dropConnections()
        try self.group.syncShutdownGracefully()
    }
}

struct FakeBrokerTimeout: Error {}

/// The listening channel, set once after bind.
private final class NIOLockedChannel: Sendable {
    private let value = Mutex<(any Channel)?>(nil)
    var channel: (any Channel)? {
        get { self.value.withLock { $0 } }
        set { self.value.withLock { $0 = newValue } }
    }
}

private final class FakeBrokerHandler: ChannelInboundHandler {
    typealias InboundIn = Pagebroker_V1_Frame
    typealias OutboundOut = Pagebroker_V1_Frame

    let broker: FakeBroker
    let connection: Int
    let limit: FrameSizeLimit
    let maxFrameSize: UInt32
    let heartbeatMs: UInt32

    init(broker: FakeBroker, connection: Int, limit: FrameSizeLimit, maxFrameSize: UInt32, heartbeatMs: UInt32) {
        self.broker = broker
        self.connection = connection
        self.limit = limit
        self.maxFrameSize = maxFrameSize
        self.heartbeatMs = heartbeatMs
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        self.broker.record(frame, connection: self.connection)
        switch frame.body {
        case .clientHello(let hello):
            let size = WireProtocol.negotiateMaxFrameSize(
                guestProposal: hello.maxFrameSize,
                brokerLimit: self.maxFrameSize
            )
            var answer = Pagebroker_V1_Frame()
            answer.serverHello = .with {
                $0.protocolVersion = 1
                $0.sessionID = "fake-\(self.connection)"
                $0.maxFrameSize = size ?? 65536
                $0.maxRangesPerReport = 256
                $0.minReportOrder = hello.minOrder
                $0.heartbeatIntervalMs = self.heartbeatMs
                $0.tenantID = "t1"
                $0.guestID = "g1"
                $0.priorReportsSettled = self.broker.priorReportsSettled
            }
            context.writeAndFlush(Self.wrapOutboundOut(answer), promise: nil)
            self.limit.maxFrameSize = Int(size ?? 65536)
        case .report(let report):
            var answer = Pagebroker_V1_Frame()
            switch self.broker.answer {
            case .ok:
                answer.reportResult = .with {
                    $0.seq = report.seq
                    $0.reason = .ok
                }
            case .refuse(let code, let retry):
                answer.reportResult = .with {
                    $0.seq = report.seq
                    $0.reason = code
                    $0.retryAfterMs = retry
                }
            case .silent:
                return
            case .hold:
                self.broker.hold(seq: report.seq, channel: context.channel)
                return
            }
            context.writeAndFlush(Self.wrapOutboundOut(answer), promise: nil)
        case .ping(let ping):
            var answer = Pagebroker_V1_Frame()
            answer.pong = .with { $0.nonce = ping.nonce }
            context.writeAndFlush(Self.wrapOutboundOut(answer), promise: nil)
        case .goodbye:
            context.close(promise: nil)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
