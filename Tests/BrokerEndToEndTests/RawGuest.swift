import BrokerProtocol
import NIOCore
import NIOPosix
import Synchronization
import TLSTransport

/// A guest that speaks bytes, not the protocol: for sending the broker exactly what a test wants,
/// well-formed or not, over real mutual TLS.
final class RawGuest: Sendable {
    let channel: any Channel
    private let inbox: Inbox

    /// Bytes received, and the end of the stream, with waiters.
    final class Inbox: ChannelInboundHandler, @unchecked Sendable {
        // @unchecked: all state is behind `state`'s lock.
        typealias InboundIn = ByteBuffer

        struct State {
            var bytes: [UInt8] = []
            var closed = false
            var handshake: TLSHandshakeInfo?
            var error: (any Error)?
            var waiters: [CheckedContinuation<Void, Never>] = []
        }

        let state = Mutex(State())

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = self.unwrapInboundIn(data)
            self.update { $0.bytes += buffer.readableBytesView }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted(let info) = event as? TLSEvent { self.update { $0.handshake = info } }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            self.update { $0.error = error }
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.update { $0.closed = true }
        }

        private func update(_ body: (inout State) -> Void) {
            let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                body(&state)
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }

        /// Waits until `condition` holds or `timeout` passes; returns whether it held.
        func wait(timeout: Duration, until condition: @escaping @Sendable (State) -> Bool) async -> Bool {
            let deadline = ContinuousClock.now + timeout
            while true {
                if self.state.withLock({ condition($0) }) { return true }
                if ContinuousClock.now >= deadline { return false }
                // Woken by the next change, or by this timer so the deadline is honoured.
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        await withCheckedContinuation { continuation in
                            let ready = self.state.withLock { state -> Bool in
                                if condition(state) { return true }
                                state.waiters.append(continuation)
                                return false
                            }
                            if ready { continuation.resume() }
                        }
                    }
                    group.addTask { try? await Task.sleep(until: deadline) }
                    await group.next()
                    group.cancelAll()
                    // Release a continuation left waiting if the timer won.
                    let stale = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                        defer { state.waiters = [] }
                        return state.waiters
                    }
                    for waiter in stale { waiter.resume() }
                }
            }
        }
    }

    private init(channel: any Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    /// Connects with the given client certificate (`nil` for none). `receiveBuffer` sets
    /// `SO_RCVBUF` before the connect, so a guest that stops reading fills up soon.
    static func connect(
        port: Int,
        certificate: String?,
        key: String?,
        receiveBuffer: Int? = nil
    ) async throws -> RawGuest {
        let configuration = TLSConfiguration(
            role: .client,
            certificateChainPath: certificate ?? "",
            privateKeyPath: key ?? "",
            caBundlePath: TestPKI.path("ca.pem")
        )
        let context = try TLSContext(configuration: configuration)
        let inbox = Inbox()
        var bootstrap = ClientBootstrap(group: Self.group)
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer))
        }
        let channel =
            try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        TLSTransport.clientHandler(context: context, serverHostname: "localhost")
                    )
                    try channel.pipeline.syncOperations.addHandler(inbox)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawGuest(channel: channel, inbox: inbox)
    }

    /// Connects as `client-<tenant>-<guest>` from the test PKI.
    static func connect(
        port: Int,
        tenant: String,
        guest: String,
        receiveBuffer: Int? = nil
    ) async throws -> RawGuest {
        try await Self.connect(
            port: port,
            certificate: TestPKI.path("client-\(tenant)-\(guest).pem"),
            key: TestPKI.path("client-\(tenant)-\(guest).key"),
            receiveBuffer: receiveBuffer
        )
    }

    /// Stops reading from the socket: what the broker sends from now on piles up in the
    /// kernel's buffers, then in the broker.
    func stopReading() async throws {
        try await self.channel.setOption(.autoRead, value: false).get()
    }

    /// The bytes of `frame` with its length prefix, for sending many frames in one write.
    static func encoded(_ frame: Pagebroker_V1_Frame) throws -> [UInt8] {
        let body: [UInt8] = try frame.serializedBytes()
        let length = UInt32(body.count)
        return [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            + body
    }

    func send(bytes: [UInt8]) async throws {
        try await self.channel.writeAndFlush(self.channel.allocator.buffer(bytes: bytes))
    }

    func send(_ frame: Pagebroker_V1_Frame) async throws {
        let body: [UInt8] = try frame.serializedBytes()
        let length = UInt32(body.count)
        try await self.send(
            bytes: [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
                + body
        )
    }

    /// The next frame from the broker, or `nil` if the connection closed (or `timeout` passed)
    /// first. Pings are answered and skipped: a slow test machine must not turn a heartbeat
    /// into a failed expectation.
    func receive(timeout: Duration = .seconds(20)) async -> Pagebroker_V1_Frame? {
        while let frame = await self.receiveAny(timeout: timeout) {
            guard case .ping(let ping) = frame.body else { return frame }
            try? await self.send(.with { $0.pong = .with { $0.nonce = ping.nonce } })
        }
        return nil
    }

    private func receiveAny(timeout: Duration) async -> Pagebroker_V1_Frame? {
        let parser = FrameParser(maxFrameSize: Int(WireProtocol.maximumMaxFrameSize))
        @Sendable func next(_ state: Inbox.State) -> (Pagebroker_V1_Frame, Int)? {
            let bytes = state.bytes
            return try? parser.parseAtEndOfStream(bytes.span.bytes)
        }
        _ = await self.inbox.wait(timeout: timeout) { state in next(state) != nil || state.closed }
        return self.inbox.state.withLock { state in
            guard let (frame, consumed) = next(state) else { return nil }
            state.bytes.removeFirst(consumed)
            return frame
        }
    }

    /// Waits for the broker to close the connection.
    func waitClosed(timeout: Duration = .seconds(20)) async -> Bool {
        await self.inbox.wait(timeout: timeout) { $0.closed }
    }

    var handshakeCompleted: Bool { self.inbox.state.withLock { $0.handshake != nil } }

    /// The error the connection ended with, if any (a ``TLSError`` for a refused handshake).
    var error: (any Error)? { self.inbox.state.withLock { $0.error } }

    func close() async {
        try? await self.channel.close()
    }

    // MARK: Protocol steps

    static let hello = Pagebroker_V1_Frame.with {
        $0.clientHello = .with {
            $0.protocolVersion = 1
            $0.agentVersion = "e2e"
            $0.pageSize = 4096
            $0.totalPages = 1 << 18
            $0.minOrder = 9
            $0.maxOrder = 10
        }
    }

    /// Hello and an empty sync; returns the ServerHello.
    func start() async throws -> Pagebroker_V1_ServerHello? {
        try await self.send(Self.hello)
        guard let frame = await self.receive(), case .serverHello(let hello) = frame.body else { return nil }
        try await self.send(
            .with {
                $0.sync = .with {
                    $0.chunk = 0
                    $0.final = true
                }
            }
        )
        return hello
    }

    /// Sends a report and waits for its result.
    func report(seq: UInt64, _ blocks: [(UInt64, UInt64)]) async throws -> Pagebroker_V1_ReportResult? {
        try await self.send(
            .with {
                $0.report = .with {
                    $0.seq = seq
                    $0.blocks = blocks.flatMap { [$0.0, $0.1] }
                }
            }
        )
        guard let frame = await self.receive(), case .reportResult(let result) = frame.body else { return nil }
        return result
    }
}
