import BrokerProtocol
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A connection to a broker's admin socket: what `pagebrokerctl` (and the tests)
/// use. Requests on one connection are answered in order, one response each.
public final class AdminClient: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<AdminClientHandler>
    /// The socket this client is connected to, for messages.
    public let socketPath: String

    private init(channel: any Channel, handler: NIOLoopBound<AdminClientHandler>, socketPath: String) {
        self.channel = channel
        self.handler = handler
        self.socketPath = socketPath
    }

    /// Connects to the admin socket at `socketPath`.
    ///
    /// - Throws: ``AdminClientError/Code/cannotConnect`` with the system's reason
    ///   (no such file, connection refused, permission denied).
    public static func connect(
        socketPath: String,
        maxResponseSize: Int = 64 * 1024 * 1024,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(AdminClientError) -> AdminClient {
        do {
            let (channel, handler) = try await ClientBootstrap(group: eventLoopGroup)
                .connect(unixDomainSocketPath: socketPath) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // Kept from here rather than looked up later: a broker that refuses
                        // us may have closed the channel, emptying the pipeline, by then.
                        let handler = AdminClientHandler()
                        try channel.pipeline.syncOperations.addHandlers(
                            MessageToByteHandler(
                                LengthPrefixedMessageEncoder<Pagebroker_V1_AdminRequest>(maxMessageSize: 64 * 1024)
                            ),
                            ByteToMessageHandler(
                                LengthPrefixedMessageDecoder<Pagebroker_V1_AdminResponse>(
                                    maxMessageSize: maxResponseSize
                                )
                            ),
                            handler
                        )
                        return (channel, NIOLoopBound(handler, eventLoop: channel.eventLoop))
                    }
                }
            return AdminClient(channel: channel, handler: handler, socketPath: socketPath)
        } catch {
            throw AdminClientError(
                .cannotConnect,
                socketPath: socketPath,
                reason: Self.reason(error),
                errno: (error as? IOError)?.errnoCode
            )
        }
    }

    /// Sends `request` and waits for its response.
    ///
    /// - Throws: ``AdminClientError/Code/connectionClosed`` if the broker closed the
    ///   connection without answering, ``AdminClientError/Code/protocolError`` if
    ///   its answer could not be decoded.
    public func send(
        _ request: Pagebroker_V1_AdminRequest
    ) async throws(AdminClientError) -> Pagebroker_V1_AdminResponse {
        let promise = self.channel.eventLoop.makePromise(of: Pagebroker_V1_AdminResponse.self)
        let handler = self.handler
        self.channel.eventLoop.execute { handler.value.send(request, answer: promise) }
        let future = promise.futureResult
        do {
            return try await future.get()
        } catch let error as AdminClientError {
            throw error.at(self.socketPath)
        } catch {
            throw AdminClientError(.connectionClosed, socketPath: self.socketPath, reason: Self.reason(error))
        }
    }

    /// Closes the connection.
    public func close() async {
        try? await self.channel.close()
    }

    private static func reason(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if let error = error as? ChannelError, error == .ioOnClosedChannel || error == .eof {
            return "the broker closed the connection"
        }
        return "\(error)"
    }
}

/// Matches responses to requests in order, and fails whatever is outstanding when
/// the connection ends or cannot be decoded.
///
/// Requests enter here, on the event loop, rather than through `Channel.write`: a
/// broker that refuses a peer greets it with `permission_denied` and closes, and the
/// client must still be able to read that answer after the channel has closed, which
/// a write into a closed pipeline would never reach.
final class AdminClientHandler: ChannelInboundHandler {
    typealias InboundIn = Pagebroker_V1_AdminResponse
    typealias OutboundOut = Pagebroker_V1_AdminRequest

    private var context: ChannelHandlerContext?
    private var pending: [EventLoopPromise<Pagebroker_V1_AdminResponse>] = []
    /// Responses that arrived before any request was sent: the refusal greeting, which
    /// is the answer to the next request.
    private var unsolicited: [Pagebroker_V1_AdminResponse] = []
    private var closedReason: AdminClientError?

    func send(_ request: Pagebroker_V1_AdminRequest, answer: EventLoopPromise<Pagebroker_V1_AdminResponse>) {
        if !self.unsolicited.isEmpty {
            answer.succeed(self.unsolicited.removeFirst())
            return
        }
        guard let context, self.closedReason == nil else {
            answer.fail(
                self.closedReason
                    ?? AdminClientError(.connectionClosed, socketPath: "", reason: "the connection is closed")
            )
            return
        }
        self.pending.append(answer)
        context.writeAndFlush(Self.wrapOutboundOut(request)).assumeIsolated().whenFailure { [weak self] error in
            // Unsent, so never answered: fail it now rather than wait for a close.
            guard let self, let index = self.pending.firstIndex(where: { $0.futureResult === answer.futureResult })
            else { return }
            self.pending.remove(at: index)
            answer.fail(AdminClientError(.connectionClosed, socketPath: "", reason: "\(error)"))
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let response = Self.unwrapInboundIn(data)
        if self.pending.isEmpty {
            self.unsolicited.append(response)
        } else {
            self.pending.removeFirst().succeed(response)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.finish(AdminClientError(.connectionClosed, socketPath: "", reason: "the broker closed the connection"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A socket error (the broker closed with our request unread: ECONNRESET, EPIPE) is the
        // connection closing, not the broker speaking badly; only what the decoder refuses is a
        // protocol error. Seen as a rare failure of "shutdown closes open admin connections".
        let code: AdminClientError.Code =
            error is IOError || error is ChannelError ? .connectionClosed : .protocolError
        self.finish(AdminClientError(code, socketPath: "", reason: "\(error)"))
        context.close(promise: nil)
    }

    private func finish(_ error: AdminClientError) {
        if self.closedReason == nil { self.closedReason = error }
        let pending = self.pending
        self.pending.removeAll()
        for promise in pending { promise.fail(error) }
    }
}

@available(*, unavailable)
extension AdminClientHandler: Sendable {}

/// Why an admin request got no answer.
public struct AdminClientError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case cannotConnect = "cannot_connect"
            case connectionClosed = "connection_closed"
            case protocolError = "protocol_error"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The socket could not be connected to: missing, nobody listening, or not permitted.
        public static let cannotConnect = Code(.cannotConnect)
        /// The broker closed the connection before answering.
        public static let connectionClosed = Code(.connectionClosed)
        /// The broker's answer could not be decoded.
        public static let protocolError = Code(.protocolError)

        public var description: String { self.base.rawValue }
    }

    public let code: Code
    public let socketPath: String
    /// The system's or the decoder's reason, for people.
    public let reason: String
    /// The system error, when a system call failed: tells "nobody listening" from
    /// "not allowed".
    public let errno: Int32?

    public init(_ code: Code, socketPath: String, reason: String, errno: Int32? = nil) {
        self.code = code
        self.socketPath = socketPath
        self.reason = reason
        self.errno = errno
    }

    func at(_ socketPath: String) -> AdminClientError {
        AdminClientError(self.code, socketPath: socketPath, reason: self.reason, errno: self.errno)
    }

    public var description: String {
        switch self.code {
        case .cannotConnect: "cannot connect to \(self.socketPath): \(self.reason)"
        default: "\(self.socketPath): \(self.reason)"
        }
    }
}
