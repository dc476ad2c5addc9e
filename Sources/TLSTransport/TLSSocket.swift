import COpenSSL
import CPagebrokerOpenSSLShims

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// TLS on a non-blocking socket that its owner polls (epoll): OpenSSL reads and writes the
/// socket itself, as a plain C server does (its socket BIO, with writes that cannot raise
/// SIGPIPE: `pb_bio_new_socket_nosignal`).
///
/// ``TLSHandler`` runs TLS inside a SwiftNIO pipeline over memory BIOs: every record is copied
/// into a BIO and out of it again, and the pipeline's machinery runs per read and per write.
/// This is the other way, for a transport that owns its socket and its event loop
/// (the broker's guest transport; docs/benchmarks.md, "The broker against the floor"). The
/// policy is the same: the same context, the same verification, the same peer validator after
/// the handshake, a refused peer told why with an `access_denied` alert.
///
/// Every call returns at once. A call that needs the socket to become readable or writable says
/// so (``Progress/wantRead``, ``Progress/wantWrite``), and is made again when it is. The socket
/// belongs to the caller: this class never closes it.
public final class TLSSocket {
    /// Where a handshake, write or shutdown stands.
    public enum Progress: Equatable, Sendable {
        /// Finished.
        case done
        /// Call again once the socket is readable.
        case wantRead
        /// Call again once the socket is writable.
        case wantWrite
    }

    /// What one ``read(into:)`` gave.
    public enum ReadOutcome: Equatable, Sendable {
        /// This many bytes of plaintext (more than zero).
        case bytes(Int)
        /// Nothing more until the socket is readable.
        case wantRead
        /// Nothing until the socket is writable (OpenSSL must send first, e.g. a key update).
        case wantWrite
        /// The peer sent close_notify: its stream ended cleanly.
        case closeNotify
    }

    /// What one ``write(_:)`` did.
    public enum WriteOutcome: Equatable, Sendable {
        /// This many bytes were taken (partial writes are on: at least one record's worth).
        case wrote(Int)
        /// Nothing was taken: call again, with the same bytes first, once the socket is writable.
        case wantWrite
        /// Nothing was taken: call again once the socket is readable.
        case wantRead
    }

    /// The socket (not owned).
    public let descriptor: CInt
    private let context: TLSContext
    private let ssl: OpaquePointer
    private var judged = false

    /// Makes the TLS side of `descriptor`, a connected non-blocking stream socket, in the
    /// context's role.
    ///
    /// - Parameter serverHostname: client role only: the name or address the server's
    ///   certificate must match (DNS SAN or IP SAN). DNS names are also sent as SNI.
    public init(context: TLSContext, descriptor: CInt, serverHostname: String? = nil) throws(TLSError) {
        let ssl = try context.makeSSL(serverHostname: serverHostname)
        // Not SSL_set_fd: OpenSSL's socket BIO writes with write(2), and a write to a reset
        // connection would raise SIGPIPE in the embedding process.
        guard let bio = pb_bio_new_socket_nosignal(descriptor) else {
            SSL_free(ssl)
            throw TLSError(code: .contextSetupFailed, reason: "socket BIO: \(TLSError.drainOpenSSLErrors())")
        }
        SSL_set_bio(ssl, bio, bio)  // the SSL owns the BIO from here
        // Partial writes: a write the socket cannot take whole returns what it took, so the
        // caller keeps only the rest. Moving buffer: the rest may be retried from another
        // address (the caller's buffer grows as later frames are appended to it).
        _ = SSL_ctrl(
            ssl,
            SSL_CTRL_MODE,
            Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER),
            nil
        )
        self.descriptor = descriptor
        self.context = context
        self.ssl = ssl
    }

    deinit {
        SSL_free(self.ssl)
    }

    /// Whether OpenSSL holds bytes not yet returned: decrypted plaintext, or ciphertext it read
    /// ahead from the socket. The socket may not become readable again for them, so a reader
    /// must call ``read(into:)`` until this is false.
    public var hasPending: Bool { SSL_has_pending(self.ssl) == 1 }

    /// Advances the handshake. When it completes, the context's peer validator (if any) judges
    /// the peer's certificate; a refused peer is sent a fatal `access_denied` alert and the
    /// refusal is thrown.
    ///
    /// - Throws: ``TLSError``, classified as ``TLSHandler`` does (untrusted certificate, no
    ///   certificate, no URI SAN, expired, refused by the validator, or the connection closed
    ///   during the handshake).
    public func handshake() throws(TLSError) -> Progress {
        Self.clearErrors()
        let result = SSL_do_handshake(self.ssl)
        if result == 1 {
            try self.judgePeer()
            return .done
        }
        switch self.status(after: result, of: "SSL_do_handshake", duringHandshake: true) {
        case .wantRead: return .wantRead
        case .wantWrite: return .wantWrite
        case .closeNotify, .endOfStream:
            throw TLSError(code: .handshakeFailed, reason: "connection closed during the handshake")
        case .failed(let error) where error.code == .connectionClosed:
            // A reset during the handshake is a failed handshake, as TLSHandler reports it.
            throw TLSError(code: .handshakeFailed, reason: error.reason)
        case .failed(let error):
            throw error
        }
    }

    /// The peer's certificate, the protocol version and the cipher suite (after the handshake).
    public var handshakeInfo: TLSHandshakeInfo { TLSConnection.handshakeInfo(of: self.ssl) }

    /// Reads plaintext into `buffer` (at most its count).
    ///
    /// - Throws: ``TLSError``: ``TLSError/Code/uncleanShutdown`` when the stream ended without
    ///   close_notify, ``TLSError/Code/protocolError`` (or the alert's meaning) on a bad record,
    ///   ``TLSError/Code/connectionClosed`` when the socket failed (reset).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(TLSError) -> ReadOutcome {
        Self.clearErrors()
        let result = SSL_read(self.ssl, buffer.baseAddress, Int32(clamping: buffer.count))
        if result > 0 { return .bytes(Int(result)) }
        switch self.status(after: result, of: "read", duringHandshake: false) {
        case .wantRead: return .wantRead
        case .wantWrite: return .wantWrite
        case .closeNotify: return .closeNotify
        case .endOfStream:
            throw TLSError(code: .uncleanShutdown, reason: "peer closed the connection without close_notify")
        case .failed(let error):
            throw error
        }
    }

    /// Encrypts and sends plaintext. Empty input is ``WriteOutcome/wrote(_:)`` 0.
    ///
    /// - Throws: ``TLSError/Code/connectionClosed`` when the socket failed (reset, or the peer
    ///   closed its end), or the OpenSSL failure.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(TLSError) -> WriteOutcome {
        guard bytes.count > 0 else { return .wrote(0) }
        Self.clearErrors()
        let result = SSL_write(self.ssl, bytes.baseAddress, Int32(clamping: bytes.count))
        if result > 0 { return .wrote(Int(result)) }
        switch self.status(after: result, of: "write", duringHandshake: false) {
        case .wantRead: return .wantRead
        case .wantWrite: return .wantWrite
        case .closeNotify, .endOfStream:
            throw TLSError(code: .connectionClosed, reason: "write: the peer closed the connection")
        case .failed(let error):
            throw error
        }
    }

    /// Sends close_notify (once; later calls only retry sending it). ``Progress/done`` once it
    /// is on its way; whether the peer's close_notify came is learnt from ``read(into:)``.
    ///
    /// - Throws: ``TLSError/Code/connectionClosed`` when the socket failed, or the OpenSSL
    ///   failure.
    public func shutdown() throws(TLSError) -> Progress {
        Self.clearErrors()
        let result = SSL_shutdown(self.ssl)
        if result >= 0 { return .done }
        switch self.status(after: result, of: "close_notify", duringHandshake: false) {
        case .wantRead: return .wantRead
        case .wantWrite: return .wantWrite
        case .closeNotify, .endOfStream:
            throw TLSError(code: .connectionClosed, reason: "close_notify: the peer closed the connection")
        case .failed(let error):
            throw error
        }
    }

    // MARK: Internals

    /// Runs the peer validator once, after the handshake, as ``TLSHandler`` does.
    private func judgePeer() throws(TLSError) {
        guard !self.judged else { return }
        self.judged = true
        guard let validator = self.context.configuration.peerValidator else { return }
        guard let certificate = self.handshakeInfo.peerCertificate else {
            throw TLSError(code: .peerCertificateMissing, reason: "no peer certificate after the handshake")
        }
        let refusal = validator(certificate)
        if refusal != nil { self.sendAlert(TLSHandler.accessDenied) }
        pb_ssl_forget_traffic_secret(self.ssl)
        if let refusal { throw refusal }
    }

    /// Sends a fatal alert after the handshake (TLS 1.3; see `pb_ssl_seal_tls13_alert`),
    /// straight to the socket: OpenSSL has no call that sends one. Best effort: the
    /// connection closes next either way.
    private func sendAlert(_ description: UInt8) {
        var record = [UInt8](repeating: 0, count: 64)
        let length = Int(pb_ssl_seal_tls13_alert(self.ssl, description, &record, record.count))
        guard length > 0 else { return }
        _ = record.withUnsafeBytes { send(self.descriptor, $0.baseAddress, length, Int32(MSG_NOSIGNAL)) }
    }

    /// What a failed SSL_* call (`result` ≤ 0) means, the same for every call; each call then
    /// says what an end of the stream means for it.
    private enum Status {
        case wantRead
        case wantWrite
        /// The peer's close_notify.
        case closeNotify
        /// The stream ended without close_notify.
        case endOfStream
        case failed(TLSError)
    }

    private func status(after result: Int32, of call: String, duringHandshake: Bool) -> Status {
        switch SSL_get_error(self.ssl, result) {
        case SSL_ERROR_WANT_READ:
            return .wantRead
        case SSL_ERROR_WANT_WRITE:
            return .wantWrite
        case SSL_ERROR_ZERO_RETURN:
            return .closeNotify
        case SSL_ERROR_SSL where self.isUnexpectedEOF():
            ERR_clear_error()
            return .endOfStream
        case SSL_ERROR_SSL:
            return .failed(TLSError.sslFailure(ssl: self.ssl, duringHandshake: duringHandshake))
        case SSL_ERROR_SYSCALL:
            let failure = errno
            ERR_clear_error()
            guard failure != 0 else { return .endOfStream }
            return .failed(TLSError(code: .connectionClosed, reason: "\(call): \(Self.errnoText(failure))"))
        case let code:
            return .failed(
                TLSError(
                    code: duringHandshake ? .handshakeFailed : .protocolError,
                    reason: "\(call): SSL_get_error \(code): \(TLSError.drainOpenSSLErrors())"
                )
            )
        }
    }

    /// OpenSSL 3 reports an EOF without close_notify as an SSL error of its own.
    private func isUnexpectedEOF() -> Bool {
        let first = ERR_peek_error()
        return first != 0 && pb_err_get_reason(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING
    }

    /// Empties OpenSSL's error queue before a call, as SSL_get_error needs. Usually it is
    /// empty already (every failure here drains it): looking costs less than clearing its
    /// sixteen slots, which was ~1.4% of the broker's CPU per report.
    @inline(__always)
    private static func clearErrors() {
        if ERR_peek_error() != 0 { ERR_clear_error() }
    }

    private static func errnoText(_ code: CInt = errno) -> String {
        String(cString: strerror(code))
    }
}

@available(*, unavailable)
extension TLSSocket: Sendable {}
