import COpenSSL
import CPagebrokerOpenSSLShims
import NIOCore

/// A SwiftNIO handler that runs TLS over the system OpenSSL, using a pair of memory BIOs.
///
/// Put it first in the pipeline: it turns ciphertext from the socket into plaintext for the
/// handlers after it, and their plaintext writes into ciphertext. After the handshake it fires
/// ``TLSEvent/handshakeCompleted(_:)`` with the peer's certificate; failures go down the
/// pipeline as ``TLSError`` (via `errorCaught`) before the channel is closed.
///
/// Closing the channel (`close(mode: .all)`) sends close_notify and waits up to
/// ``TLSConfiguration/closeTimeout`` for the peer's before closing the socket. Writes made
/// before the handshake completes are held and sent once it does.
public final class TLSHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// Largest TLS record payload; coalesced small writes are cut at this size.
    private static let maxRecordPayload = 16_384
    /// Spare buffers larger than this are not kept: an idle session should not hold on to the
    /// storage of a handshake flight or a bulk transfer (ten thousand sessions multiply it).
    private static let maxSpareCapacity = 2_048

    private let tlsContext: TLSContext
    private let connection: TLSConnection
    private var state = TLSConnectionStateMachine()

    /// Plaintext written by the application and not yet given to OpenSSL.
    /// Small to start with: it grows on demand, and every idle connection holds its storage.
    private var pendingWrites = CircularBuffer<(buffer: ByteBuffer, promise: EventLoopPromise<Void>?)>(
        initialCapacity: 4
    )
    /// A flush arrived before the handshake completed.
    private var flushRequested = false
    /// Ciphertext drained from OpenSSL, waiting to go to the socket in one write.
    private var outboundCiphertext: ByteBuffer?
    /// Promises of plaintext writes whose ciphertext is in `outboundCiphertext`.
    private var outboundPromise: EventLoopPromise<Void>?
    /// Reused to coalesce small plaintext writes into one record.
    private var coalescingBuffer: ByteBuffer?
    /// Size hint for the next plaintext read: at most this much ciphertext just arrived.
    private var lastInboundBytes = 0
    /// The last plaintext buffer passed on, kept so the next read can reuse its storage once
    /// the handlers after us have let go of it (`clear()` allocates only if they have not).
    private var sparePlaintext: ByteBuffer?
    /// The last ciphertext buffer written, kept for the same reason: the socket write usually
    /// completes within the flush, so the next drain reuses the storage without a malloc.
    private var spareCiphertext: ByteBuffer?
    /// Inside `channelRead`: plaintext read now is followed by `channelReadComplete` from the
    /// channel, so it is not fired per read.
    private var inChannelRead = false
    private var handshakeTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?

    /// Makes a handler for one connection from `context`.
    ///
    /// - Parameter serverHostname: client role only: the name or address the server's
    ///   certificate must match (DNS SAN or IP SAN). DNS names are also sent as SNI.
    public init(context: TLSContext, serverHostname: String? = nil) throws(TLSError) {
        self.tlsContext = context
        self.connection = try context.makeConnection(serverHostname: serverHostname)
    }

    // MARK: Channel events

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive {
            self.perform(self.state.channelActive(), context: context)
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelTimers()
        self.failPendingWrites(TLSError(code: .connectionClosed, reason: "TLS handler removed"))
    }

    public func channelActive(context: ChannelHandlerContext) {
        // Forward first so later handlers see "active" before any handshake event.
        context.fireChannelActive()
        self.perform(self.state.channelActive(), context: context)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.perform(self.state.channelInactive(), context: context)
        self.cancelTimers()
        self.failPendingWrites(TLSError(code: .connectionClosed, reason: "connection closed"))
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        guard self.state.readsCiphertext else { return }
        self.lastInboundBytes = buffer.readableBytes
        buffer.withUnsafeReadableBytes { bytes in
            // A memory BIO grows to take everything; the write cannot be partial.
            _ = BIO_write(self.connection.inbound, bytes.baseAddress, Int32(bytes.count))
        }
        self.inChannelRead = true
        defer { self.inChannelRead = false }
        if self.state.isHandshaking {
            self.driveHandshake(context: context)
        } else {
            self.readApplicationData(context: context)
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        // One read complete per socket read cycle, however many records it carried, so the
        // handlers after us flush once for all of them.
        context.fireChannelReadComplete()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // With half-closure enabled the end of the peer's stream arrives as an event, not as
        // channelInactive; it means the same thing to TLS.
        if let event = event as? ChannelEvent, event == .inputClosed {
            self.perform(self.state.channelInactive(), context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard self.state.acceptsWrites else {
            promise?.fail(TLSError(code: .connectionClosed, reason: "write after the TLS connection started closing"))
            return
        }
        self.pendingWrites.append((self.unwrapOutboundIn(data), promise))
    }

    public func flush(context: ChannelHandlerContext) {
        if self.state.canEncrypt {
            self.encryptPendingWrites(context: context)
            self.sendCiphertext(context: context)
        } else if self.state.acceptsWrites {
            self.flushRequested = true
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all else {
            // A TCP half-close without close_notify would look like truncation to the peer.
            promise?.fail(ChannelError.operationUnsupported)
            return
        }
        let closePromise = promise ?? context.eventLoop.makePromise()
        self.perform(self.state.closeRequested(closePromise), context: context)
    }

    public func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is TLSForceClose else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        let waiting = self.state.forceClosed()
        self.cancelTimers()
        self.failPendingWrites(
            TLSError(code: .connectionClosed, reason: "connection closed without waiting for the peer")
        )
        // Straight to the socket: our own close would wait for a close_notify exchange.
        let closed = promise ?? context.eventLoop.makePromise()
        if let waiting { closed.futureResult.cascade(to: waiting) }
        context.close(mode: .all, promise: closed)
    }

    // MARK: Performing actions

    private func perform(_ action: TLSConnectionStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break

        case .startHandshake:
            if let timeout = self.tlsContext.configuration.handshakeTimeout {
                self.handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) {
                    let error = TLSError(
                        code: .handshakeTimeout,
                        reason: "handshake did not complete within \(timeout)"
                    )
                    self.perform(self.state.handshakeTimedOut(error), context: context)
                }
            }
            self.driveHandshake(context: context)

        case .completeHandshake:
            self.completeHandshake(context: context)

        case .failAndClose(let error, let closePromise):
            self.cancelTimers()
            self.failPendingWrites(error)
            // OpenSSL may have queued an alert telling the peer why; send it before closing.
            self.sendCiphertext(context: context)
            context.fireErrorCaught(error)
            closePromise?.fail(error)
            context.close(promise: nil)

        case .sendCloseNotify:
            self.encryptPendingWrites(context: context)
            ERR_clear_error()
            let result = SSL_shutdown(self.connection.ssl)
            self.drainOutboundBIO(context: context)
            self.sendCiphertext(context: context)
            if result < 0 {
                let error = TLSError(
                    code: .protocolError,
                    reason: "SSL_shutdown: \(TLSError.drainOpenSSLErrors())"
                )
                self.perform(self.state.failed(error), context: context)
                return
            }
            let timeout = self.tlsContext.configuration.closeTimeout
            self.closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) {
                self.perform(self.state.closeTimedOut(), context: context)
            }
            // The peer's close_notify may already be sitting in the inbound BIO.
            self.readApplicationData(context: context)

        case .closeChannel(let promise):
            self.cancelTimers()
            self.failPendingWrites(TLSError(code: .connectionClosed, reason: "connection closed before the handshake"))
            context.close(mode: .all, promise: promise)

        case .chainClose(let first, let promise):
            if let promise { first.cascade(to: promise) }

        case .answerCloseNotifyAndClose:
            self.cancelTimers()
            context.fireUserInboundEventTriggered(TLSEvent.closeNotifyReceived)
            self.failPendingWrites(TLSError(code: .connectionClosed, reason: "peer closed the TLS connection"))
            ERR_clear_error()
            _ = SSL_shutdown(self.connection.ssl)
            ERR_clear_error()  // a failure to say goodbye changes nothing: we close either way
            self.drainOutboundBIO(context: context)
            self.sendCiphertext(context: context)
            context.close(promise: nil)

        case .finishClose(let promise):
            self.cancelTimers()
            context.fireUserInboundEventTriggered(TLSEvent.closeNotifyReceived)
            context.close(mode: .all, promise: promise)

        case .succeedClose(let promise):
            self.cancelTimers()
            promise.succeed()

        case .reportUncleanShutdown:
            context.fireErrorCaught(
                TLSError(code: .uncleanShutdown, reason: "peer closed the connection without close_notify")
            )

        case .reportHandshakeAborted:
            self.cancelTimers()
            context.fireErrorCaught(
                TLSError(code: .handshakeFailed, reason: "connection closed during the handshake")
            )

        case .closeAfterTimeout(let promise):
            self.closeTimer = nil
            let error = TLSError(
                code: .closeTimeout,
                reason: "no close_notify from the peer within \(self.tlsContext.configuration.closeTimeout)"
            )
            context.close(promise: nil)
            promise.fail(error)
        }
    }

    // MARK: OpenSSL steps

    private func driveHandshake(context: ChannelHandlerContext) {
        ERR_clear_error()
        let result = SSL_do_handshake(self.connection.ssl)
        self.drainOutboundBIO(context: context)
        if result == 1 {
            self.perform(self.state.handshakeSucceeded(), context: context)
            return
        }
        switch SSL_get_error(self.connection.ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            self.sendCiphertext(context: context)
        case SSL_ERROR_SSL:
            let error = TLSError.sslFailure(ssl: self.connection.ssl, duringHandshake: true)
            self.perform(self.state.failed(error), context: context)
        case let code:
            let error = TLSError(
                code: .handshakeFailed,
                reason: "SSL_do_handshake: SSL_get_error \(code): \(TLSError.drainOpenSSLErrors())"
            )
            self.perform(self.state.failed(error), context: context)
        }
    }

    private func completeHandshake(context: ChannelHandlerContext) {
        self.handshakeTimer?.cancel()
        self.handshakeTimer = nil
        // The last handshake flight (the client's Finished) must go out even if no data follows.
        self.sendCiphertext(context: context)
        // Nothing from the handshake is worth keeping per connection: not the BIOs' buffers
        // (sized for certificate flights) nor the flight's ciphertext buffer.
        self.connection.replaceBIOs()
        self.spareCiphertext = nil

        let info = self.connection.handshakeInfo
        if let validator = self.tlsContext.configuration.peerValidator {
            guard let certificate = info.peerCertificate else {
                let error = TLSError(code: .peerCertificateMissing, reason: "no peer certificate after the handshake")
                self.perform(self.state.failed(error), context: context)
                return
            }
            let refusal = validator(certificate)
            if refusal != nil { self.queueAlert(Self.accessDenied, context: context) }
            pb_ssl_forget_traffic_secret(self.connection.ssl)
            if let refusal {
                self.perform(self.state.failed(refusal), context: context)
                return
            }
        }
        context.fireUserInboundEventTriggered(TLSEvent.handshakeCompleted(info))

        // The application may have closed from the event; each step re-checks the state.
        if self.flushRequested && self.state.canEncrypt {
            self.flushRequested = false
            self.encryptPendingWrites(context: context)
            self.sendCiphertext(context: context)
        }
        // Application data can arrive in the same read as the peer's last handshake message.
        if self.state.readsCiphertext {
            self.readApplicationData(context: context)
        }
    }

    /// TLS's `access_denied` alert: "a valid certificate was received, but when access control
    /// was applied, the sender decided not to proceed" (RFC 8446 section 6.2).
    static let accessDenied: UInt8 = 49

    /// Queues a fatal alert for the peer after the handshake (TLS 1.3 only; see
    /// `pb_ssl_seal_tls13_alert`). When it cannot be made, the connection closes without one.
    private func queueAlert(_ description: UInt8, context: ChannelHandlerContext) {
        var record = [UInt8](repeating: 0, count: 64)
        let length = Int(pb_ssl_seal_tls13_alert(self.connection.ssl, description, &record, record.count))
        guard length > 0 else { return }
        var buffer = self.outboundCiphertext ?? context.channel.allocator.buffer(capacity: length)
        buffer.writeBytes(record[0..<length])
        self.outboundCiphertext = buffer
    }

    /// Decrypts everything OpenSSL can give us now into one buffer and passes it on once.
    private func readApplicationData(context: ChannelHandlerContext) {
        var plaintext: ByteBuffer
        if var spare = self.sparePlaintext {
            self.sparePlaintext = nil
            spare.clear()  // allocates fresh storage only if a later handler still holds the old
            plaintext = spare
        } else {
            plaintext = context.channel.allocator.buffer(capacity: self.plaintextReadSize)
        }
        var outcome: TLSConnectionStateMachine.Action = .none
        let ssl = self.connection.ssl
        let inbound = self.connection.inbound

        ERR_clear_error()
        readLoop: while true {
            var result: Int32 = 0
            plaintext.writeWithUnsafeMutableBytes(minimumWritableBytes: self.plaintextReadSize) { space in
                result = SSL_read(ssl, space.baseAddress, Int32(clamping: space.count))
                return result > 0 ? Int(result) : 0
            }
            self.drainOutboundBIO(context: context)
            if result > 0 {
                // Nothing buffered in OpenSSL and no ciphertext left: another SSL_read could
                // only answer WANT_READ. (A close_notify or alert that came along is still in
                // OpenSSL's read-ahead buffer or the BIO, so it is read.) SSL_has_pending
                // covers both decrypted bytes not yet returned (what SSL_pending counts) and
                // ciphertext read ahead but not yet processed.
                if SSL_has_pending(ssl) == 0 && BIO_ctrl_pending(inbound) == 0 {
                    break readLoop
                }
                continue
            }

            switch SSL_get_error(ssl, result) {
            case SSL_ERROR_WANT_READ:
                break readLoop
            case SSL_ERROR_WANT_WRITE:
                // Memory BIOs never refuse a write; the ciphertext has been drained. Go on.
                ERR_clear_error()
                continue
            case SSL_ERROR_ZERO_RETURN:
                outcome = self.state.closeNotifyReceived()
                break readLoop
            case SSL_ERROR_SSL:
                outcome = self.state.failed(TLSError.sslFailure(ssl: ssl, duringHandshake: false))
                break readLoop
            case let code:
                let error = TLSError(
                    code: .protocolError,
                    reason: "SSL_read: SSL_get_error \(code): \(TLSError.drainOpenSSLErrors())"
                )
                outcome = self.state.failed(error)
                break readLoop
            }
        }

        // Data that arrived before a close_notify or an error is still the peer's data; it is
        // only dropped once we ourselves are closing.
        if plaintext.readableBytes > 0, self.deliversData(after: outcome) {
            context.fireChannelRead(self.wrapInboundOut(plaintext))
            // Within channelRead the channel's own channelReadComplete follows the read cycle.
            if !self.inChannelRead { context.fireChannelReadComplete() }
        }
        if plaintext.capacity <= Self.maxSpareCapacity { self.sparePlaintext = plaintext }
        // Reads can produce ciphertext too (alerts, KeyUpdate answers).
        self.sendCiphertext(context: context)
        self.perform(outcome, context: context)
    }

    /// Room for one SSL_read: the plaintext of what just arrived is never larger than its
    /// ciphertext, and a larger record still arrives whole over several SSL_reads.
    private var plaintextReadSize: Int {
        min(max(self.lastInboundBytes, 256), Self.maxRecordPayload)
    }

    /// Whether plaintext read together with `outcome` goes to the application.
    private func deliversData(after outcome: TLSConnectionStateMachine.Action) -> Bool {
        switch outcome {
        case .none:
            return self.state.deliversApplicationData
        case .answerCloseNotifyAndClose, .failAndClose(_, closePromise: nil):
            // We were active when this read began (failing from closing carries a promise).
            return true
        default:
            return false
        }
    }

    /// Gives all pending plaintext to OpenSSL, coalescing small writes into full records.
    private func encryptPendingWrites(context: ChannelHandlerContext) {
        while let (buffer, promise) = self.pendingWrites.popFirst() {
            self.attachWritePromise(promise, context: context)
            let coalesce =
                buffer.readableBytes < Self.maxRecordPayload
                && (!self.pendingWrites.isEmpty || (self.coalescingBuffer?.readableBytes ?? 0) > 0)
            if coalesce {
                var scratch = self.coalescingBuffer ?? context.channel.allocator.buffer(capacity: Self.maxRecordPayload)
                self.coalescingBuffer = nil  // keep the storage uniquely referenced while appending
                if scratch.readableBytes + buffer.readableBytes > Self.maxRecordPayload {
                    guard self.encrypt(scratch, context: context) else { return }
                    scratch.clear()
                }
                var buffer = buffer
                scratch.writeBuffer(&buffer)
                self.coalescingBuffer = scratch
            } else {
                if var scratch = self.coalescingBuffer, scratch.readableBytes > 0 {
                    self.coalescingBuffer = nil
                    guard self.encrypt(scratch, context: context) else { return }
                    scratch.clear()
                    self.coalescingBuffer = scratch
                }
                guard self.encrypt(buffer, context: context) else { return }
            }
        }
        if var scratch = self.coalescingBuffer, scratch.readableBytes > 0 {
            self.coalescingBuffer = nil
            guard self.encrypt(scratch, context: context) else { return }
            scratch.clear()
            self.coalescingBuffer = scratch
        }
    }

    /// SSL_write of one buffer. Returns false (after failing the connection) on error.
    private func encrypt(_ buffer: ByteBuffer, context: ChannelHandlerContext) -> Bool {
        guard buffer.readableBytes > 0 else { return true }
        var result: Int32 = 0
        ERR_clear_error()
        buffer.withUnsafeReadableBytes { bytes in
            // Without SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write takes all or nothing.
            result = SSL_write(self.connection.ssl, bytes.baseAddress, Int32(clamping: bytes.count))
        }
        self.drainOutboundBIO(context: context)
        if result > 0 { return true }

        let code = SSL_get_error(self.connection.ssl, result)
        let error: TLSError
        if code == SSL_ERROR_SSL {
            error = TLSError.sslFailure(ssl: self.connection.ssl, duringHandshake: false)
        } else {
            // WANT_READ would need renegotiation, which the context disables; anything else
            // from a memory BIO is a broken invariant, not a transient condition.
            error = TLSError(
                code: .protocolError,
                reason: "SSL_write: SSL_get_error \(code): \(TLSError.drainOpenSSLErrors())"
            )
        }
        self.outboundPromise?.fail(error)
        self.outboundPromise = nil
        self.perform(self.state.failed(error), context: context)
        return false
    }

    /// Moves every byte OpenSSL produced into `outboundCiphertext`. Called after every SSL_* call.
    private func drainOutboundBIO(context: ChannelHandlerContext) {
        let pending = Int(BIO_ctrl_pending(self.connection.outbound))
        guard pending > 0 else { return }
        var buffer: ByteBuffer
        if let collected = self.outboundCiphertext {
            buffer = collected
        } else if var spare = self.spareCiphertext {
            self.spareCiphertext = nil
            spare.clear()  // allocates fresh storage only if the socket has not written the old yet
            buffer = spare
        } else {
            buffer = context.channel.allocator.buffer(capacity: pending)
        }
        self.outboundCiphertext = nil
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { space in
            Int(max(0, BIO_read(self.connection.outbound, space.baseAddress, Int32(clamping: pending))))
        }
        self.outboundCiphertext = buffer
    }

    /// Writes and flushes the collected ciphertext as one socket write.
    private func sendCiphertext(context: ChannelHandlerContext) {
        let promise = self.outboundPromise
        self.outboundPromise = nil
        guard let ciphertext = self.outboundCiphertext, ciphertext.readableBytes > 0 else {
            // Only empty plaintext writes can leave a promise without ciphertext.
            promise?.succeed()
            return
        }
        self.outboundCiphertext = nil
        context.writeAndFlush(self.wrapOutboundOut(ciphertext), promise: promise)
        if ciphertext.capacity <= Self.maxSpareCapacity { self.spareCiphertext = ciphertext }
    }

    /// Ties a plaintext write's promise to the next ciphertext write.
    private func attachWritePromise(_ promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard let promise else { return }
        if let existing = self.outboundPromise {
            existing.futureResult.cascade(to: promise)
        } else {
            self.outboundPromise = promise
        }
    }

    private func failPendingWrites(_ error: TLSError) {
        while let (_, promise) = self.pendingWrites.popFirst() {
            promise?.fail(error)
        }
        self.outboundPromise?.fail(error)
        self.outboundPromise = nil
    }

    private func cancelTimers() {
        self.handshakeTimer?.cancel()
        self.handshakeTimer = nil
        self.closeTimer?.cancel()
        self.closeTimer = nil
    }
}

@available(*, unavailable)
extension TLSHandler: Sendable {}
