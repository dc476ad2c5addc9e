import Foundation
import TLSTransport
import Testing

/// A guest whose certificate verifies but whose identity the broker refuses (another trust
/// domain, a malformed or non-SPIFFE ID, two IDs, a tenant the broker does not admit) learns
/// why: a fatal `access_denied` alert right after the TLS 1.3 handshake, not a bare TCP close.
@Suite(.serialized) struct IdentityAlertTests {
    /// Issues a client certificate from the test CA with the given subjectAltName, in `directory`.
    static func issue(_ name: String, san: String, in directory: String) throws -> (cert: String, key: String) {
        let key = "\(directory)/\(name).key"
        let csr = "\(directory)/\(name).csr"
        let ext = "\(directory)/\(name).ext"
        let cert = "\(directory)/\(name).pem"
        try
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=\(san)\n"
            .write(toFile: ext, atomically: true, encoding: .utf8)
        for arguments in [
            ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
            ["req", "-new", "-key", key, "-out", csr, "-subj", "/O=pagebroker test/CN=\(name)"],
            [
                "x509", "-req", "-in", csr, "-CA", TestPKI.path("ca.pem"), "-CAkey", TestPKI.path("ca.key"),
                "-CAcreateserial", "-CAserial", "\(directory)/ca.srl", "-days", "30", "-extfile", ext, "-out", cert,
            ],
        ] {
            let (status, output) = try SpawnedProcess.run("/usr/bin/openssl", arguments)
            #expect(status == 0, "openssl \(arguments.joined(separator: " ")): \(output)")
        }
        return (cert, key)
    }

    /// `openssl s_client` as a guest with `certificate`, TLS 1.3, reading until the broker ends
    /// the connection; returns what it printed.
    static func sClient(port: Int, certificate: String, key: String) throws -> String {
        try SpawnedProcess.run(
            "/usr/bin/openssl",
            [
                "s_client", "-connect", "127.0.0.1:\(port)", "-tls1_3", "-servername", "localhost",
                "-CAfile", TestPKI.path("ca.pem"), "-cert", certificate, "-key", key, "-ign_eof", "-brief",
            ]
        ).output
    }

    @Test func everyIdentityRefusalEndsWithAnAccessDeniedAlert() async throws {
        let broker = try BrokerProcess()
        let directory = broker.directory
        let nonSPIFFE = try Self.issue("non-spiffe", san: "URI:https://example.org/tenant/t1/guest/g1", in: directory)
        let twoIDs = try Self.issue(
            "two-ids",
            san: "URI:spiffe://example.org/tenant/t1/guest/g1,URI:spiffe://example.org/tenant/t2/guest/g1",
            in: directory
        )
        let refused: [(String, (cert: String, key: String))] = [
            ("wrong trust domain", (TestPKI.path("client-other-domain.pem"), TestPKI.path("client-other-domain.key"))),
            ("malformed SPIFFE ID", (TestPKI.path("client-malformed-id.pem"), TestPKI.path("client-malformed-id.key"))),
            ("unknown tenant", (TestPKI.path("client-t9-g1.pem"), TestPKI.path("client-t9-g1.key"))),
            ("non-SPIFFE URI", nonSPIFFE),
            ("two IDs", twoIDs),
        ]
        for (what, files) in refused {
            let output = try Self.sClient(port: broker.port, certificate: files.cert, key: files.key)
            // OpenSSL's words for a received alert 49.
            #expect(output.contains("alert access denied"), "\(what): \(output)")
            #expect(output.contains("SSL alert number 49"), "\(what): \(output)")
        }
        // An admitted guest's handshake is untouched: no alert, the session waits for its hello.
        let admitted = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        #expect(try await admitted.start() != nil)
        await admitted.close()

        // The agent's own TLS stack names the refusal.
        let guest = try await RawGuest.connect(
            port: broker.port,
            certificate: TestPKI.path("client-other-domain.pem"),
            key: TestPKI.path("client-other-domain.key")
        )
        try? await guest.send(RawGuest.hello)
        #expect(await guest.waitClosed())
        #expect((guest.error as? TLSError)?.code == .accessDenied, "\(String(describing: guest.error))")
        #expect(broker.terminate() == 0)
    }
}
