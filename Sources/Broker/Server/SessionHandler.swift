import BrokerProtocol
import Logging
import NIOCore
import NIOPosix
import TLSTransport

/// A guest session over SwiftNIO: the channel handler after the `TLSHandler` that carries a
/// ``GuestSession``, passing it the pipeline's events and performing its sends and closes on
/// the channel.
///
/// Pipeline: `TLSHandler` → this. The session frames the plaintext itself (no codec handlers
/// between: a frame crosses the pipeline once, unboxed), and what it sends while handling a read
/// is written and flushed once, when the read batch ends (`channelReadComplete`).
final class SessionHandler: ChannelInboundHandler, RemovableChannelHandler, GuestSessionTransport {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let session: GuestSession
    private var context: ChannelHandlerContext?
    private var timer: RepeatedTask?
    /// The channel's event loop, from `handlerAdded` on (kept after removal: a punch may finish
    /// after the channel closed).
    private var eventLoop: (any EventLoop)?
    private(set) var peerDescription = "unknown"

    var executor: any SessionExecutor {
        guard let eventLoop = self.eventLoop else { preconditionFailure("the session handler is not in a pipeline") }
        return EventLoopExecutor(eventLoop: eventLoop)
    }

    /// Carries `session` (made for this connection) on the channel.
    init(session: GuestSession) {
        self.session = session
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.eventLoop = context.eventLoop
        self.peerDescription = context.remoteAddress.map { "\($0)" } ?? "unknown"
        self.session.attach(self)
        let tick = TimeAmount(self.session.tickInterval)
        let session = NIOLoopBound(self.session, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
            session.value.tick()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        self.context = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event as? ChannelEvent == .some(.inputClosed) {
            self.session.inputClosed()
        }
        if case .handshakeCompleted(let info) = event as? TLSEvent {
            self.session.handshakeCompleted(info)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = self.unwrapInboundIn(data)
        self.session.received(&bytes)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.session.readComplete()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        self.session.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.session.failed(error)
    }

    // MARK: GuestSessionTransport

    func send(_ bytes: ByteBuffer) {
        self.context?.writeAndFlush(self.wrapOutboundOut(bytes), promise: nil)
    }

    func sendThenClose(_ bytes: ByteBuffer?) {
        guard let context = self.context else { return }
        guard let bytes else {
            context.close(promise: nil)
            return
        }
        let channel = context.channel
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
        context.writeAndFlush(self.wrapOutboundOut(bytes), promise: written)
    }

    func close() {
        self.context?.close(promise: nil)
    }

    func setReading(_ reading: Bool) {
        self.context?.channel.setOption(.autoRead, value: reading).whenFailure { _ in }
    }
}
