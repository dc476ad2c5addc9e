/// Everything needed to build a ``TLSContext``: which side we are, our certificate and key,
/// which CA we trust for the peer, and what else we demand of the peer.
public struct TLSConfiguration: Sendable {
    /// Which side of the handshake we play.
    public enum Role: Sendable, Hashable {
        /// Accepts connections; with ``TLSConfiguration/PeerVerification/requireCertificate``
        /// it demands and verifies a client certificate (mutual TLS).
        case server
        /// Opens connections and always verifies the server's certificate.
        case client
    }

    /// Lowest TLS version we accept. TLS 1.3 is always preferred when both sides speak it.
    public enum MinimumVersion: Sendable, Hashable {
        case tls12
        case tls13
    }

    /// How the peer's certificate is checked.
    public enum PeerVerification: Sendable, Hashable {
        /// The peer must present a certificate that chains to ``TLSConfiguration/caBundlePath``.
        case requireCertificate
        /// As ``requireCertificate``, and the leaf must carry at least one URI subjectAltName
        /// (the SPIFFE-style identity); a certificate without one is refused during the handshake.
        case requireCertificateWithURISAN
    }

    public var role: Role
    /// PEM file with our certificate first, then any intermediates.
    public var certificateChainPath: String
    /// PEM file with the private key for the first certificate in the chain.
    public var privateKeyPath: String
    /// PEM file with the CA certificates that may issue the peer's certificate.
    public var caBundlePath: String
    public var minimumVersion: MinimumVersion
    public var peerVerification: PeerVerification
    /// How long a handshake may take before the connection is dropped with
    /// ``TLSError/Code/handshakeTimeout``. `nil` waits forever.
    public var handshakeTimeout: Duration?
    /// How long to wait for the peer's close_notify after sending ours before closing anyway
    /// (``TLSError/Code/closeTimeout``).
    public var closeTimeout: Duration
    /// Called on the event loop once the handshake succeeded, with the verified peer certificate.
    /// Returning an error refuses the peer: the error is fired down the pipeline and the
    /// connection is closed before any application data is delivered.
    public var peerValidator: (@Sendable (TLSPeerCertificate) -> TLSError?)?
    /// Largest plaintext per record this side sends (512 ... 16384; `nil`: OpenSSL's 16384).
    ///
    /// OpenSSL keeps a write buffer of this size plus overhead for each connection's life. A
    /// peer that only ever sends small messages (the broker: results, hellos, pings) loses
    /// nothing by a smaller limit, and ten thousand sessions keep 12 KiB less each at 4096.
    public var maxSendFragment: Int? = nil

    public init(
        role: Role,
        certificateChainPath: String,
        privateKeyPath: String,
        caBundlePath: String,
        minimumVersion: MinimumVersion = .tls12,
        peerVerification: PeerVerification = .requireCertificate,
        handshakeTimeout: Duration? = .seconds(10),
        closeTimeout: Duration = .seconds(5),
        peerValidator: (@Sendable (TLSPeerCertificate) -> TLSError?)? = nil
    ) {
        self.role = role
        self.certificateChainPath = certificateChainPath
        self.privateKeyPath = privateKeyPath
        self.caBundlePath = caBundlePath
        self.minimumVersion = minimumVersion
        self.peerVerification = peerVerification
        self.handshakeTimeout = handshakeTimeout
        self.closeTimeout = closeTimeout
        self.peerValidator = peerValidator
    }

    /// A mutual-TLS server configuration that demands a client certificate with a URI SAN.
    public static func server(
        certificateChainPath: String,
        privateKeyPath: String,
        caBundlePath: String
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .server,
            certificateChainPath: certificateChainPath,
            privateKeyPath: privateKeyPath,
            caBundlePath: caBundlePath,
            peerVerification: .requireCertificateWithURISAN
        )
    }

    /// A client configuration presenting our certificate and verifying the server's.
    public static func client(
        certificateChainPath: String,
        privateKeyPath: String,
        caBundlePath: String
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .client,
            certificateChainPath: certificateChainPath,
            privateKeyPath: privateKeyPath,
            caBundlePath: caBundlePath
        )
    }
}
