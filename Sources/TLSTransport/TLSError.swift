import COpenSSL
import CPagebrokerOpenSSLShims

/// An error from the TLS transport.
///
/// Match on ``code``: codes are stable (their numeric value and name never change meaning),
/// the ``reason`` text is for people and comes from OpenSSL where OpenSSL had something to say.
public struct TLSError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A stable, extensible error code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// Stable numeric value, for logs, metrics and the wire.
        public let rawValue: Int
        /// Stable name, for logs and humans.
        public let name: String

        private init(_ rawValue: Int, _ name: String) {
            self.rawValue = rawValue
            self.name = name
        }

        public var description: String { self.name }

        public static func == (lhs: Code, rhs: Code) -> Bool { lhs.rawValue == rhs.rawValue }
        public func hash(into hasher: inout Hasher) { hasher.combine(self.rawValue) }

        /// The TLS context could not be built: unreadable or mismatched certificate, key or CA bundle.
        public static let contextSetupFailed = Code(1, "context_setup_failed")
        /// The handshake failed for a reason not covered by a more specific code; see ``TLSError/reason``.
        public static let handshakeFailed = Code(2, "handshake_failed")
        /// The peer sent no certificate although one is required.
        public static let peerCertificateMissing = Code(3, "peer_certificate_missing")
        /// The peer's certificate does not verify against the CA bundle (unknown CA, bad signature,
        /// wrong name...). ``TLSError/verifyResult`` holds OpenSSL's X509_V_ERR code.
        public static let peerCertificateUntrusted = Code(4, "peer_certificate_untrusted")
        /// The peer's certificate (or one in its chain) is outside its validity period.
        public static let certificateExpired = Code(5, "certificate_expired")
        /// The peer's certificate carries no URI subjectAltName, so it names no identity.
        public static let missingURISAN = Code(6, "missing_uri_san")
        /// The configured peer validator refused the peer's identity.
        public static let peerRejected = Code(7, "peer_rejected")
        /// The peer closed the transport without a TLS close_notify: data may have been truncated.
        public static let uncleanShutdown = Code(8, "unclean_shutdown")
        /// Our close_notify got no answer from the peer in time; the connection was closed anyway.
        public static let closeTimeout = Code(9, "close_timeout")
        /// The handshake did not finish in time.
        public static let handshakeTimeout = Code(10, "handshake_timeout")
        /// A TLS protocol error after the handshake (bad record MAC, fatal alert from the peer...).
        public static let protocolError = Code(11, "protocol_error")
        /// A write was attempted after the connection started closing or closed.
        public static let connectionClosed = Code(12, "connection_closed")
        /// The peer refused our identity after the handshake with an `access_denied` alert (a
        /// broker that does not admit the guest's SPIFFE ID, trust domain or tenant).
        public static let accessDenied = Code(13, "access_denied")
    }

    /// Which of a context's files a ``Code/contextSetupFailed`` is about.
    public enum File: Sendable, Hashable {
        /// ``TLSConfiguration/certificateChainPath``.
        case certificateChain
        /// ``TLSConfiguration/privateKeyPath``.
        case privateKey
        /// ``TLSConfiguration/caBundlePath``.
        case caBundle
    }

    /// What went wrong, stably.
    public var code: Code
    /// Human-readable detail, usually OpenSSL's error string or verify result string. For a
    /// context that could not be built it is one sentence naming the file (OpenSSL's error
    /// queue is in ``openSSLErrors``).
    public var reason: String
    /// OpenSSL's certificate verify result (X509_V_ERR_*), when certificate verification was involved.
    public var verifyResult: Int?
    /// The file at fault, when building a context failed because of one.
    public var file: File?
    /// OpenSSL's error queue at the failure, oldest first: detail for a debug log, not for the
    /// one line an operator reads.
    public var openSSLErrors: String?

    public init(
        code: Code,
        reason: String,
        verifyResult: Int? = nil,
        file: File? = nil,
        openSSLErrors: String? = nil
    ) {
        self.code = code
        self.reason = reason
        self.verifyResult = verifyResult
        self.file = file
        self.openSSLErrors = openSSLErrors
    }

    public var description: String { "TLSError(\(self.code.name) [\(self.code.rawValue)]: \(self.reason))" }
}

extension TLSError {
    /// Drains OpenSSL's thread-local error queue into one string, oldest first.
    ///
    /// Every failing call site uses this so the queue is left empty for the next call; a stale
    /// entry would otherwise be blamed on an unrelated later failure.
    static func drainOpenSSLErrors() -> String {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            parts.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.isEmpty ? "no OpenSSL error recorded" : parts.joined(separator: "; ")
    }

    /// Text for an X509_V_ERR_* value.
    static func verifyResultString(_ result: Int) -> String {
        String(cString: X509_verify_cert_error_string(result))
    }

    /// Classifies a failed SSL_* call whose SSL_get_error was SSL_ERROR_SSL.
    ///
    /// Must be called before the error queue is drained. Our own verify result wins (we refused
    /// the peer); otherwise the alert the peer sent us names why it refused us. Outside the
    /// handshake anything unrecognised is a protocol error: in TLS 1.3 a client learns that the
    /// server refused its certificate only on its first read after the handshake.
    static func sslFailure(ssl: OpaquePointer, duringHandshake: Bool) -> TLSError {
        let firstError = ERR_peek_error()
        let reasonCode = firstError == 0 ? 0 : pb_err_get_reason(firstError)
        let reason = Self.drainOpenSSLErrors()
        let verifyResult = Int(SSL_get_verify_result(ssl))

        if duringHandshake && verifyResult != Int(X509_V_OK) {
            let detail = "\(Self.verifyResultString(verifyResult)) (\(reason))"
            switch verifyResult {
            case Int(X509_V_ERR_CERT_HAS_EXPIRED), Int(X509_V_ERR_CERT_NOT_YET_VALID):
                return TLSError(code: .certificateExpired, reason: detail, verifyResult: verifyResult)
            case pb_verify_error_missing_uri_san:
                return TLSError(
                    code: .missingURISAN,
                    reason: "peer certificate has no URI subjectAltName (\(reason))",
                    verifyResult: verifyResult
                )
            default:
                return TLSError(code: .peerCertificateUntrusted, reason: detail, verifyResult: verifyResult)
            }
        }
        switch reasonCode {
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE, SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
            return TLSError(code: .peerCertificateMissing, reason: reason)
        case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
            return TLSError(code: .certificateExpired, reason: reason)
        case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
            return TLSError(
                code: .accessDenied,
                reason: "the peer refused our identity (alert access_denied): \(reason)"
            )
        case SSL_R_TLSV1_ALERT_UNKNOWN_CA, SSL_R_SSLV3_ALERT_BAD_CERTIFICATE,
            SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
            return TLSError(code: .peerCertificateUntrusted, reason: reason)
        default:
            return TLSError(code: duringHandshake ? .handshakeFailed : .protocolError, reason: reason)
        }
    }
}
