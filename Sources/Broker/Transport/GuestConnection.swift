import CGuestLoop
import NIOCore
import TLSTransport

#if canImport(Glibc)
import Glibc
#endif

/// One guest connection on a ``GuestLoop``: its TLS socket, the ``GuestSession`` it carries, and
/// what the session sent that the socket has not taken yet.
///
/// The connection behaves as `TLSHandler` and ``SessionHandler`` do together: the handshake
/// within the handshake timeout, a refused or failed handshake closed at once (OpenSSL has sent
/// its alert), data that came with a close_notify or before an error still handed to the
/// session, a close that sends what was sent before it, then close_notify, then waits (bounded
/// by the close timeout) for the peer's; the peer's close_notify answered with ours.
final class GuestConnection: GuestSessionTransport {
    private enum State {
        case handshaking
        case open
        /// Closing: waiting for unsent data to go (`sentCloseNotify` false), then for the
        /// peer's close_notify.
        case closing(sentCloseNotify: Bool)
        case closed
    }

    let descriptor: CInt
    /// Unique on its loop: a socket number is reused once closed, this is not.
    let serial: UInt64
    let peerDescription: String
    private let socket: TLSSocket
    private let session: GuestSession
    private unowned let loop: GuestLoop
    private var state = State.handshaking
    /// Plaintext the session sent that the socket did not take yet (kept, then retried when the
    /// socket is writable; partial TLS writes allow a moving, growing buffer).
    private var unsent: ByteBuffer?
    private var readingEnabled = true
    private var waitingToWrite = false
    private var watching: UInt32 = pbl_readable
    /// The peer's stream ended (close_notify, or the TCP end): nothing more will be read.
    private var peerEnded = false
    private var sessionOver = false

    /// Room for one TLS record's plaintext: a larger read is a bulk sync, cut into records.
    private static let readSize = 16_384

    init(socket: TLSSocket, peer: String, serial: UInt64, session: GuestSession, loop: GuestLoop) {
        self.descriptor = socket.descriptor
        self.serial = serial
        self.peerDescription = peer
        self.socket = socket
        self.session = session
        self.loop = loop
    }

    var executor: any SessionExecutor { self.loop }

    /// The socket is registered: the session begins (the guest speaks first).
    func start() {
        self.session.attach(self)
    }

    // MARK: Events from the loop

    func handle(events: UInt32) {
        switch self.state {
        case .handshaking:
            self.advanceHandshake()
        case .open, .closing:
            if events & pbl_writable != 0 || self.waitingToWrite { self.flushUnsent() }
            if events & (pbl_readable | pbl_hangup | pbl_error) != 0 { self.readAvailable() }
        case .closed:
            break
        }
    }

    /// The loop's tick: the session's timeouts and heartbeats (as ``SessionHandler``'s timer,
    /// from the accept until the socket closes).
    func tick() {
        if case .closed = self.state { return }
        self.session.tick()
    }

    func handshakeDeadlinePassed() {
        guard case .handshaking = self.state else { return }
        let timeout = self.loop.settings.handshakeTimeout
        self.session.failed(TLSError(code: .handshakeTimeout, reason: "handshake did not complete within \(timeout)"))
        self.closeNow()
    }

    func closeDeadlinePassed() {
        guard case .closing(sentCloseNotify: true) = self.state else { return }
        self.closeNow()
    }

    /// Closes the socket now (no TLS goodbye).
    func closeNow() {
        if case .closed = self.state { return }
        self.state = .closed
        self.loop.remove(self)
        Glibc.close(self.descriptor)
        self.unsent = nil
    }

    /// After the socket closed, outside any call of the session's own: the session ends.
    func sessionEnded() {
        guard !self.sessionOver else { return }
        self.sessionOver = true
        self.session.closed()
    }

    // MARK: Handshake

    private func advanceHandshake() {
        do {
            switch try self.socket.handshake() {
            case .wantRead:
                self.watch(pbl_readable)
            case .wantWrite:
                self.watch(pbl_readable | pbl_writable)
            case .done:
                self.state = .open
                self.watch(pbl_readable)
                self.session.handshakeCompleted(self.socket.handshakeInfo)
                // Application data can arrive with the peer's last handshake message.
                if case .open = self.state { self.readAvailable() }
            }
        } catch {
            self.session.failed(error)
            self.closeNow()
        }
    }

    // MARK: Reading

    private func readAvailable() {
        guard self.readingEnabled || self.isClosing else {
            // Paused (a punch runs): stop watching until reading resumes, or a level-triggered
            // socket would wake the loop again and again.
            self.watch(self.watching & ~pbl_readable)
            return
        }
        // The loop's buffer, not one per connection: the session copies what it keeps (a partial
        // frame), so ten thousand idle sessions hold no read buffer each.
        var inbound = self.loop.takeReadBuffer()
        defer { self.loop.returnReadBuffer(inbound) }
        var ended: TLSSocket.ReadOutcome?
        var failure: TLSError?
        // A bounded batch per turn, so that one guest's bulk sync does not hold the others up.
        var budget = 16
        while budget > 0 {
            budget -= 1
            var outcome = TLSSocket.ReadOutcome.wantRead
            var thrown: TLSError?
            let socket = self.socket
            inbound.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.readSize) { space in
                do throws(TLSError) {
                    outcome = try socket.read(into: space)
                } catch {
                    thrown = error
                }
                if case .bytes(let count) = outcome { return count }
                return 0
            }
            if let thrown {
                failure = thrown
                break
            }
            switch outcome {
            case .bytes:
                if !socket.hasPending { budget = 0 }
                continue
            case .wantRead:
                budget = 0
            case .wantWrite:
                self.watch(self.watching | pbl_writable)
                budget = 0
            case .closeNotify:
                ended = .closeNotify
                budget = 0
            }
        }
        if ended == nil && failure == nil && self.socket.hasPending { self.loop.deferRead(self) }

        if self.isClosing {
            // Closing: what the peer still sends is dropped; its close_notify or end finishes.
            if ended != nil || failure != nil {
                self.peerEnded = true
                self.closeNow()
            }
            return
        }
        if inbound.readableBytes > 0 {
            self.session.received(&inbound)
            self.session.readComplete()
        }
        if let failure {
            self.peerEnded = true
            self.session.failed(failure)
            self.closeNow()
        } else if ended == .closeNotify {
            self.peerEnded = true
            self.session.inputClosed()
            // Answer with ours, best effort, and close.
            if case .open = self.state { self.flushUnsent() }
            _ = try? self.socket.shutdown()
            self.closeNow()
        }
    }

    private var isClosing: Bool {
        if case .closing = self.state { return true }
        return false
    }

    // MARK: Writing

    func send(_ bytes: ByteBuffer) {
        guard case .open = self.state else { return }
        if var unsent = self.unsent {
            self.unsent = nil
            var bytes = bytes
            unsent.writeBuffer(&bytes)
            self.unsent = unsent
            return
        }
        var remaining = bytes
        do {
            while remaining.readableBytes > 0 {
                let outcome = try remaining.withUnsafeReadableBytes { bytes throws(TLSError) in
                    try self.socket.write(bytes)
                }
                guard case .wrote(let count) = outcome else {
                    // The socket is full: keep the rest (copied: the session reuses its buffer).
                    var kept = ByteBufferAllocator().buffer(capacity: remaining.readableBytes)
                    kept.writeBuffer(&remaining)
                    self.unsent = kept
                    self.waitingToWrite = true
                    self.watch(self.watching | pbl_writable)
                    return
                }
                remaining.moveReaderIndex(forwardBy: count)
            }
        } catch {
            self.writeFailed(error)
        }
    }

    func sendThenClose(_ bytes: ByteBuffer?) {
        if let bytes { self.send(bytes) }
        self.close()
    }

    func close() {
        switch self.state {
        case .handshaking:
            self.closeNow()
        case .open:
            self.state = .closing(sentCloseNotify: false)
            if self.unsent == nil { self.sendCloseNotify() }
        case .closing, .closed:
            break
        }
    }

    /// Pausing is lazy: the socket stays watched, and only a readable event that comes while
    /// reading is paused stops watching it (see ``readAvailable()``). A guest waits for its
    /// report's result, so usually none comes, and a paused report costs no `epoll_ctl` (two per
    /// punched report otherwise).
    func setReading(_ reading: Bool) {
        guard self.readingEnabled != reading else { return }
        self.readingEnabled = reading
        guard reading, case .open = self.state else { return }
        if self.watching & pbl_readable == 0 {
            // Something came while paused: read it now (the event that stopped the watching
            // was taken, and a re-armed level-triggered socket may not say it again this turn).
            self.watch(self.watching | pbl_readable)
            self.loop.deferRead(self)
        } else if self.socket.hasPending {
            self.loop.deferRead(self)
        }
    }

    /// Retries what the socket did not take; once it is all gone, a close that waited for it
    /// goes on.
    private func flushUnsent() {
        if var unsent = self.unsent {
            self.unsent = nil
            do {
                while unsent.readableBytes > 0 {
                    let outcome = try unsent.withUnsafeReadableBytes { bytes throws(TLSError) in
                        try self.socket.write(bytes)
                    }
                    guard case .wrote(let count) = outcome else {
                        self.unsent = unsent
                        return
                    }
                    unsent.moveReaderIndex(forwardBy: count)
                }
            } catch {
                self.writeFailed(error)
                return
            }
        }
        if case .closing(sentCloseNotify: false) = self.state {
            self.sendCloseNotify()
            return
        }
        self.waitingToWrite = false
        self.watch(self.watching & ~pbl_writable)
    }

    private func sendCloseNotify() {
        do {
            switch try self.socket.shutdown() {
            case .done:
                self.state = .closing(sentCloseNotify: true)
                self.waitingToWrite = false
                if self.peerEnded {
                    self.closeNow()
                } else {
                    self.watch(pbl_readable)
                    self.loop.armCloseDeadline(self)
                }
            case .wantWrite, .wantRead:
                self.waitingToWrite = true
                self.watch(pbl_readable | pbl_writable)
            }
        } catch {
            self.closeNow()
        }
    }

    /// The socket failed under a write (reset, or the peer gone): the connection ends, and with
    /// it the session (after the current event, not inside the session's own call).
    private func writeFailed(_ error: TLSError) {
        self.loop.settings.logger.debug("guest \(self.peerDescription): \(error)")
        self.peerEnded = true
        self.unsent = nil
        self.closeNow()
    }

    private func watch(_ events: UInt32) {
        guard case .closed = self.state else {
            guard events != self.watching else { return }
            self.watching = events
            self.loop.watch(self.descriptor, events: events)
            return
        }
    }
}

@available(*, unavailable)
extension GuestConnection: Sendable {}
