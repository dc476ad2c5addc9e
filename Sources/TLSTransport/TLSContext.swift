import COpenSSL
import CPagebrokerOpenSSLShims
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A configured OpenSSL `SSL_CTX`: certificate, key, CA bundle and policy loaded once,
/// shared by every connection made from it.
///
/// A context never changes after it is built. To pick up new certificates, build a new one
/// (``ReloadableTLSContext`` does that on request): connections made afterwards use the new
/// context, connections already open keep the one they were made from, because each `SSL`
/// holds its own reference on its `SSL_CTX`.
// @unchecked Sendable: the only stored state is the `SSL_CTX` pointer and an immutable
// configuration. OpenSSL documents an `SSL_CTX` as safe to use from many threads at once once
// it is no longer being configured (SSL_new takes its internal locks), and this class never
// configures it after `init`.
public final class TLSContext: @unchecked Sendable {
    /// The configuration this context was built from.
    public let configuration: TLSConfiguration
    let sslContext: OpaquePointer

    /// Builds a context, reading the certificate chain, key and CA bundle from disk now.
    ///
    /// - Throws: ``TLSError`` with ``TLSError/Code/contextSetupFailed`` naming the file and
    ///   OpenSSL's reason when anything cannot be loaded or the key does not match the certificate.
    public init(configuration: TLSConfiguration) throws(TLSError) {
        ERR_clear_error()
        let method = configuration.role == .server ? TLS_server_method() : TLS_client_method()
        guard let context = SSL_CTX_new(method) else {
            throw TLSError(code: .contextSetupFailed, reason: "SSL_CTX_new: \(TLSError.drainOpenSSLErrors())")
        }
        self.sslContext = context
        self.configuration = configuration
        // From here on `deinit` frees the context if a step below throws.
        try Self.configure(context, configuration)
    }

    deinit {
        SSL_CTX_free(self.sslContext)
    }

    private static func configure(_ context: OpaquePointer, _ configuration: TLSConfiguration) throws(TLSError) {
        func fail(_ step: String) -> TLSError {
            TLSError(code: .contextSetupFailed, reason: "\(step): \(TLSError.drainOpenSSLErrors())")
        }

        let minimum = configuration.minimumVersion == .tls13 ? TLS1_3_VERSION : TLS1_2_VERSION
        guard pb_ssl_ctx_set_min_proto_version(context, minimum) == 1,
            pb_ssl_ctx_set_max_proto_version(context, TLS1_3_VERSION) == 1
        else { throw fail("setting protocol versions") }
        pb_ssl_ctx_set_hardened_options(context)
        if let fragment = configuration.maxSendFragment {
            guard (512...16_384).contains(fragment),
                SSL_CTX_ctrl(context, SSL_CTRL_SET_MAX_SEND_FRAGMENT, fragment, nil) == 1
            else { throw fail("setting the maximum send fragment to \(fragment)") }
        }
        // SSL_MODE_RELEASE_BUFFERS is deliberately left unset: it frees and reallocates the
        // record buffers between records (a malloc per read) and has a history of
        // use-after-free bugs with memory BIOs.

        // Each file is first opened by us, so that a missing or unreadable one is said plainly
        // (errno's words) rather than as OpenSSL's error queue.
        func fileFailure(_ file: TLSError.File, _ reason: String) -> TLSError {
            TLSError(
                code: .contextSetupFailed,
                reason: reason,
                file: file,
                openSSLErrors: TLSError.drainOpenSSLErrors()
            )
        }
        let chain = configuration.certificateChainPath
        let key = configuration.privateKeyPath
        let bundle = configuration.caBundlePath
        if let problem = Self.unreadable(chain) { throw fileFailure(.certificateChain, problem) }
        guard SSL_CTX_use_certificate_chain_file(context, chain) == 1 else {
            throw fileFailure(.certificateChain, "\(chain) holds no usable PEM certificate chain")
        }
        if let problem = Self.unreadable(key) { throw fileFailure(.privateKey, problem) }
        guard SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) == 1 else {
            var failure = fileFailure(.privateKey, "\(key) holds no usable PEM private key (or it is encrypted)")
            // OpenSSL refuses a key of the certificate's type that is not its key here already.
            if Self.holdsPrivateKey(key) { failure.reason = "\(key) is not the key of the certificate in \(chain)" }
            throw failure
        }
        guard SSL_CTX_check_private_key(context) == 1 else {
            throw fileFailure(.privateKey, "\(key) is not the key of the certificate in \(chain)")
        }
        if let problem = Self.unreadable(bundle) { throw fileFailure(.caBundle, problem) }
        guard SSL_CTX_load_verify_locations(context, bundle, nil) == 1 else {
            throw fileFailure(.caBundle, "\(bundle) holds no usable PEM certificate")
        }
        if configuration.role == .server, let problem = Self.notCertificateAuthorities(bundle) {
            throw fileFailure(.caBundle, problem)
        }

        var mode = SSL_VERIFY_PEER
        if configuration.role == .server {
            // Advertise which CAs we accept so clients holding several certificates pick the right one.
            guard let names = SSL_load_client_CA_file(configuration.caBundlePath) else {
                throw fail("reading CA names from \(configuration.caBundlePath)")
            }
            SSL_CTX_set_client_CA_list(context, names)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        }
        pb_ssl_ctx_set_verify(context, mode, configuration.peerVerification == .requireCertificateWithURISAN ? 1 : 0)
        // A server that judges the peer after the handshake tells a refused peer why, with an
        // alert (TLSHandler); that needs each connection's traffic secret until it has judged.
        if configuration.role == .server && configuration.peerValidator != nil {
            guard pb_ssl_ctx_enable_post_handshake_alerts(context) == 1 else {
                throw fail("preparing post-handshake alerts")
            }
        }
        ERR_clear_error()
    }

    /// Why `path` cannot be read, in errno's words, or `nil` if it can.
    private static func unreadable(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return "cannot read \(path): \(String(cString: strerror(errno)))" }
        defer { close(descriptor) }
        var info = stat()
        if fstat(descriptor, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
            return "cannot read \(path): it is a directory"
        }
        return nil
    }

    /// Whether `path` holds an unencrypted PEM private key (of any type). Never asks for a
    /// passphrase: an encrypted key counts as none.
    private static func holdsPrivateKey(_ path: String) -> Bool {
        guard let bio = BIO_new_file(path, "r") else { return false }
        defer { BIO_free(bio) }
        let key = PEM_read_bio_PrivateKey(bio, nil, { _, _, _, _ in -1 }, nil)
        ERR_clear_error()
        guard let key else { return false }
        EVP_PKEY_free(key)
        return true
    }

    /// Why the bundle at `path` is not a set of certificate authorities (a leaf certificate
    /// named by mistake would make every guest's chain fail, or trust one certificate as an
    /// issuer), or `nil` if every certificate in it is one (`X509_check_ca`: CA:TRUE, or a v1
    /// self-signed root).
    private static func notCertificateAuthorities(_ path: String) -> String? {
        guard let bio = BIO_new_file(path, "r") else { return "cannot read \(path)" }
        defer { BIO_free(bio) }
        var index = 0
        while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
            defer { X509_free(certificate) }
            index += 1
            if X509_check_ca(certificate) == 0 {
                let subject = TLSPeerCertificate(certificate: certificate).subject
                ERR_clear_error()
                return "\(path): certificate \(index) (\(subject)) is not a CA certificate "
                    + "(no basicConstraints CA:TRUE): name the CA that issues the guests' certificates"
            }
        }
        ERR_clear_error()  // the loop ends on "no start line" at the end of the file
        return nil
    }

    /// A new `SSL` for one connection, wired to a fresh pair of memory BIOs.
    func makeConnection(serverHostname: String?) throws(TLSError) -> TLSConnection {
        let ssl = try self.makeSSL(serverHostname: serverHostname)
        guard let networkToSSL = BIO_new(BIO_s_mem()), let sslToNetwork = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError(code: .contextSetupFailed, reason: "BIO_new: \(TLSError.drainOpenSSLErrors())")
        }
        // An empty inbound BIO must mean "no bytes yet" (retry), never EOF: the end of the TCP
        // stream reaches us as channelInactive and is judged there, with knowledge of whether a
        // close_notify came first.
        pb_bio_set_mem_eof_return(networkToSSL, -1)
        SSL_set_bio(ssl, networkToSSL, sslToNetwork)  // the SSL owns both BIOs from here
        return TLSConnection(ssl: ssl, inbound: networkToSSL, outbound: sslToNetwork)
    }

    /// A new `SSL` in the context's role, with no BIOs yet (``makeConnection(serverHostname:)``
    /// gives it memory BIOs, ``TLSSocket`` a socket).
    func makeSSL(serverHostname: String?) throws(TLSError) -> OpaquePointer {
        ERR_clear_error()
        guard let ssl = SSL_new(self.sslContext) else {
            throw TLSError(code: .contextSetupFailed, reason: "SSL_new: \(TLSError.drainOpenSSLErrors())")
        }
        // Read ahead: OpenSSL takes all the ciphertext there is in one read instead of a 5-byte
        // header and then the body, so one record costs one read, not two. Reading ahead never
        // blocks (memory BIOs, or a non-blocking socket); what it buffers is seen by
        // SSL_has_pending, which every read loop checks.
        SSL_set_read_ahead(ssl, 1)

        switch self.configuration.role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client:
            SSL_set_connect_state(ssl)
            if let serverHostname {
                guard pb_ssl_set_expected_peer_name(ssl, serverHostname) == 1 else {
                    SSL_free(ssl)
                    throw TLSError(
                        code: .contextSetupFailed,
                        reason: "invalid server hostname \(serverHostname): \(TLSError.drainOpenSSLErrors())"
                    )
                }
                // SNI carries DNS names only (RFC 6066); an address literal is not sent.
                if !serverHostname.isIPAddressLiteral {
                    _ = pb_ssl_set_tlsext_host_name(ssl, serverHostname)
                }
            }
        }
        return ssl
    }
}

/// A ``TLSContext`` that can be rebuilt from its configuration, e.g. on SIGHUP.
///
/// ``current`` is read once per new connection; ``reload()`` swaps in a freshly built context
/// only if building it succeeded, so a bad certificate on disk leaves the old context serving.
public final class ReloadableTLSContext: Sendable {
    private let state: Mutex<(configuration: TLSConfiguration, context: TLSContext)>

    public init(configuration: TLSConfiguration) throws(TLSError) {
        let context = try TLSContext(configuration: configuration)
        self.state = Mutex((configuration, context))
    }

    /// The context new connections should use.
    public var current: TLSContext {
        self.state.withLock { $0.context }
    }

    /// Rebuilds the context from the files named in the configuration (or a new configuration).
    ///
    /// - Throws: the build error; the previous context stays current.
    @discardableResult
    public func reload(configuration: TLSConfiguration? = nil) throws(TLSError) -> TLSContext {
        let configuration = configuration ?? self.state.withLock { $0.configuration }
        let context = try TLSContext(configuration: configuration)
        self.state.withLock { $0 = (configuration, context) }
        return context
    }
}

extension String {
    var isIPAddressLiteral: Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, self, &v4) == 1 || inet_pton(AF_INET6, self, &v6) == 1
    }
}
