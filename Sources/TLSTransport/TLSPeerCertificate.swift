import COpenSSL
import CPagebrokerOpenSSLShims

/// What the transport tells the application about the verified peer certificate.
public struct TLSPeerCertificate: Sendable, Hashable {
    /// Every URI subjectAltName, in certificate order (e.g. `spiffe://example.org/tenant/t1/guest/g1`).
    public var uriSANs: [String]
    /// The subject distinguished name in RFC 2253 form (`CN=guest g1,O=pagebroker test`).
    public var subject: String
    /// End of validity, in seconds since the Unix epoch (UTC).
    public var notAfterSecondsSinceEpoch: Int64

    public init(uriSANs: [String], subject: String, notAfterSecondsSinceEpoch: Int64) {
        self.uriSANs = uriSANs
        self.subject = subject
        self.notAfterSecondsSinceEpoch = notAfterSecondsSinceEpoch
    }

    /// Reads the fields out of an `X509`; the caller keeps ownership of `certificate`.
    init(certificate: OpaquePointer) {
        var names: UnsafeMutableRawPointer?
        let count = pb_x509_uri_san_count(certificate, &names)
        defer { pb_general_names_free(names) }
        var uris: [String] = []
        uris.reserveCapacity(Int(count))
        for index in 0..<count {
            var data: UnsafePointer<UInt8>?
            var length: Int32 = 0
            if pb_x509_uri_san_at(names, index, &data, &length) == 1, let data {
                uris.append(String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self))
            }
        }
        self.uriSANs = uris

        if let subject = pb_x509_subject_string(certificate) {
            self.subject = String(cString: subject)
            pb_openssl_free(subject)
        } else {
            self.subject = ""
        }

        var notAfter: Int64 = 0
        self.notAfterSecondsSinceEpoch = pb_x509_not_after(certificate, &notAfter) == 1 ? notAfter : 0
    }
}

/// Facts about a completed handshake, fired as ``TLSEvent/handshakeCompleted(_:)``.
public struct TLSHandshakeInfo: Sendable, Hashable {
    /// The peer's verified certificate. Always present: both roles require one.
    public var peerCertificate: TLSPeerCertificate?
    /// Negotiated protocol, as OpenSSL names it (`TLSv1.3`, `TLSv1.2`).
    public var protocolVersion: String
    /// Negotiated cipher suite, as OpenSSL names it.
    public var cipherSuite: String

    public init(peerCertificate: TLSPeerCertificate?, protocolVersion: String, cipherSuite: String) {
        self.peerCertificate = peerCertificate
        self.protocolVersion = protocolVersion
        self.cipherSuite = cipherSuite
    }
}

/// User inbound events fired by ``TLSHandler``.
public enum TLSEvent: Sendable, Hashable {
    /// The handshake succeeded and the peer passed every check; application data may flow.
    case handshakeCompleted(TLSHandshakeInfo)
    /// The peer sent close_notify: a clean end of its stream. The handler answers with its own
    /// close_notify and closes the channel.
    case closeNotifyReceived
}

/// One OpenSSL `SSL` and its two memory BIOs, freed together.
///
/// Not Sendable: it belongs to one handler on one event loop.
final class TLSConnection {
    let ssl: OpaquePointer
    /// Ciphertext from the network, read by OpenSSL.
    private(set) var inbound: OpaquePointer
    /// Ciphertext produced by OpenSSL, to be sent to the network.
    private(set) var outbound: OpaquePointer

    init(ssl: OpaquePointer, inbound: OpaquePointer, outbound: OpaquePointer) {
        self.ssl = ssl
        self.inbound = inbound
        self.outbound = outbound
    }

    deinit {
        SSL_free(self.ssl)  // frees both BIOs too
    }

    /// Swaps in fresh memory BIOs, moving over any bytes still in the old ones.
    ///
    /// A memory BIO's buffer only ever grows: after the handshake both hold a buffer sized for
    /// the largest handshake flight (certificates included, kilobytes each), for the life of
    /// the connection. Fresh BIOs grow only to what application records need, which across
    /// thousands of idle sessions is most of the difference. Does nothing if OpenSSL cannot
    /// allocate the new BIOs.
    func replaceBIOs() {
        guard let inbound = BIO_new(BIO_s_mem()) else { return }
        guard let outbound = BIO_new(BIO_s_mem()) else {
            BIO_free(inbound)
            return
        }
        pb_bio_set_mem_eof_return(inbound, -1)
        Self.move(from: self.inbound, to: inbound)
        Self.move(from: self.outbound, to: outbound)
        SSL_set_bio(self.ssl, inbound, outbound)  // frees the old pair
        self.inbound = inbound
        self.outbound = outbound
    }

    private static func move(from old: OpaquePointer, to new: OpaquePointer) {
        let pending = Int(BIO_ctrl_pending(old))
        guard pending > 0 else { return }
        var bytes = [UInt8](repeating: 0, count: pending)
        let count = bytes.withUnsafeMutableBytes { pb_bio_read(old, $0.baseAddress, Int32(clamping: pending)) }
        // A memory BIO grows to take everything; the write cannot be partial.
        _ = bytes.withUnsafeBytes { BIO_write(new, $0.baseAddress, count) }
    }

    var handshakeInfo: TLSHandshakeInfo { Self.handshakeInfo(of: self.ssl) }

    /// What the handshake of `ssl` settled: the peer's certificate, the version and the cipher.
    static func handshakeInfo(of ssl: OpaquePointer) -> TLSHandshakeInfo {
        var peer: TLSPeerCertificate?
        if let certificate = SSL_get1_peer_certificate(ssl) {
            peer = TLSPeerCertificate(certificate: certificate)
            X509_free(certificate)
        }
        let cipher = SSL_get_current_cipher(ssl).flatMap { SSL_CIPHER_get_name($0) }.map { String(cString: $0) }
        return TLSHandshakeInfo(
            peerCertificate: peer,
            protocolVersion: String(cString: SSL_get_version(ssl)),
            cipherSuite: cipher ?? ""
        )
    }
}

/// An outbound user event that makes ``TLSHandler`` close the transport at once, without the
/// close_notify exchange and its ``TLSConfiguration/closeTimeout``: for a stopping server whose
/// deadline has passed, where a peer that stopped reading must not hold the stop up.
///
///     channel.triggerUserOutboundEvent(TLSForceClose(), promise: nil)
public struct TLSForceClose: Sendable, Hashable {
    public init() {}
}
