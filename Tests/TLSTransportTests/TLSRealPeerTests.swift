import NIOCore
import NIOPosix
import TLSTransport
import Testing

private let expectedURI = "spiffe://example.org/tenant/t1/guest/g1"

/// The handler against real OpenSSL peers over loopback: `openssl s_client` against a NIO
/// server, and a NIO client against `openssl s_server`.
@Suite("TLSHandler against openssl s_client / s_server")
struct TLSRealPeerTests {
    // MARK: NIO server, openssl s_client

    private func sClient(port: Int, pki: TestPKI, certificate: String?) throws -> OpenSSLProcess {
        var arguments = [
            "s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", "ca.pem", "-verify_return_error",
            "-brief",
        ]
        if let certificate {
            arguments += ["-cert", "\(certificate).pem", "-key", "\(certificate).key"]
        }
        return try OpenSSLProcess(arguments, workingDirectory: pki.directory)
    }

    @Test func sClientMutualHandshakeDataAndCleanClose() async throws {
        let pki = try TestPKI.get()
        let log = EventLog<ConnectionEvent>()
        let server = try await startServer(
            context: TLSContext(configuration: pki.serverConfiguration()),
            log: log,
            greeting: "hello from nio\n"
        )
        defer { server.channel.close(promise: nil) }

        let client = try self.sClient(port: server.port, pki: pki, certificate: "client-t1-g1")
        let handshake = try await log.wait(for: "handshake") { if case .handshake = $0 { true } else { false } }
        guard case .handshake(let info) = handshake else { return }
        #expect(info.peerCertificate?.uriSANs == [expectedURI])
        #expect(info.protocolVersion == "TLSv1.3")

        try await client.waitForLine(containing: "hello from nio")
        try client.send("hello from s_client\n")
        try await log.wait(for: "data from s_client") {
            if case .received(let text) = $0 { text.contains("hello from s_client") } else { false }
        }

        // EOF on its stdin makes s_client send close_notify.
        try client.closeInput()
        try await log.wait(for: "close_notify") { if case .closeNotify = $0 { true } else { false } }
        try await log.wait(for: "inactive") { if case .inactive = $0 { true } else { false } }
        try await client.waitForExit()
        #expect(log.events.compactMap(\.tlsError).isEmpty)
    }

    @Test(arguments: [
        (String?.none, TLSError.Code.peerCertificateMissing),
        ("client-wrong-ca", .peerCertificateUntrusted),
        ("client-expired", .certificateExpired),
        ("client-no-uri", .missingURISAN),
    ])
    func sClientWithBadCertificateIsRefused(certificate: String?, code: TLSError.Code) async throws {
        let pki = try TestPKI.get()
        let log = EventLog<ConnectionEvent>()
        let server = try await startServer(
            context: TLSContext(configuration: pki.serverConfiguration()),
            log: log,
            greeting: "must never be sent\n"
        )
        defer { server.channel.close(promise: nil) }

        let client = try self.sClient(port: server.port, pki: pki, certificate: certificate)
        let event = try await log.wait(for: "refusal") { $0.tlsError != nil }
        #expect(event.tlsError?.code == code, "\(event)")
        try await log.wait(for: "inactive") { if case .inactive = $0 { true } else { false } }
        #expect(!log.events.contains { if case .handshake = $0 { true } else { false } })
        // s_client learns of the refusal through the server's alert and gives up.
        try await client.waitForExit()
        #expect(!client.lines.events.contains { $0.contains("must never be sent") })
    }

    @Test func sClientKilledIsAnUncleanShutdown() async throws {
        let pki = try TestPKI.get()
        let log = EventLog<ConnectionEvent>()
        let server = try await startServer(
            context: TLSContext(configuration: pki.serverConfiguration()),
            log: log,
            greeting: "hello from nio\n"
        )
        defer { server.channel.close(promise: nil) }

        let client = try self.sClient(port: server.port, pki: pki, certificate: "client-t1-g1")
        try await client.waitForLine(containing: "hello from nio")
        client.kill()
        let event = try await log.wait(for: "unclean shutdown") { $0.tlsError != nil }
        #expect(event.tlsError?.code == .uncleanShutdown)
        try await log.wait(for: "inactive") { if case .inactive = $0 { true } else { false } }
        #expect(!log.events.contains { if case .closeNotify = $0 { true } else { false } })
    }

    // MARK: NIO client, openssl s_server

    private func sServer(pki: TestPKI) async throws -> (process: OpenSSLProcess, port: Int) {
        let server = try OpenSSLProcess(
            [
                "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-cert", "server.pem", "-key", "server.key",
                "-CAfile", "ca.pem", "-Verify", "1", "-verify_return_error",
            ],
            workingDirectory: pki.directory
        )
        // s_server prints "ACCEPT 127.0.0.1:<port>" once it listens on the port the OS picked.
        let line = try await server.waitForLine(containing: "ACCEPT ")
        let port = try #require(line.split(separator: ":").last.flatMap { Int($0) })
        return (server, port)
    }

    @Test func nioClientAgainstSServerMutualHandshakeDataAndCleanClose() async throws {
        let pki = try TestPKI.get()
        let (server, port) = try await self.sServer(pki: pki)
        let log = EventLog<ConnectionEvent>()
        let channel = try await connectClient(
            context: TLSContext(configuration: pki.clientConfiguration()),
            port: port,
            log: log
        )

        let handshake = try await log.wait(for: "handshake") { if case .handshake = $0 { true } else { false } }
        guard case .handshake(let info) = handshake else { return }
        #expect(info.peerCertificate?.subject == "CN=pagebroker server,O=pagebroker test")
        #expect(info.protocolVersion == "TLSv1.3")

        try await channel.writeAndFlush(ByteBuffer(string: "hello from nio\n"))
        try await server.waitForLine(containing: "hello from nio")
        // s_server printed the client's certificate, so it did verify one.
        #expect(server.lines.events.contains { $0.contains("guest g1") })
        try server.send("hello from s_server\n")
        try await log.wait(for: "data from s_server") {
            if case .received(let text) = $0 { text.contains("hello from s_server") } else { false }
        }

        // Our close_notify is answered by s_server's: the close completes cleanly.
        try await channel.close()
        try await log.wait(for: "close_notify") { if case .closeNotify = $0 { true } else { false } }
        #expect(log.events.compactMap(\.tlsError).isEmpty)
        try await server.waitForLine(containing: "DONE")
    }

    @Test func sServerKilledIsAnUncleanShutdown() async throws {
        let pki = try TestPKI.get()
        let (server, port) = try await self.sServer(pki: pki)
        let log = EventLog<ConnectionEvent>()
        let channel = try await connectClient(
            context: TLSContext(configuration: pki.clientConfiguration()),
            port: port,
            log: log
        )
        try await log.wait(for: "handshake") { if case .handshake = $0 { true } else { false } }
        try await channel.writeAndFlush(ByteBuffer(string: "ping\n"))
        try await server.waitForLine(containing: "ping")
        server.kill()
        let event = try await log.wait(for: "unclean shutdown") { $0.tlsError != nil }
        #expect(event.tlsError?.code == .uncleanShutdown)
        try await channel.closeFuture.get()
        #expect(!log.events.contains { if case .closeNotify = $0 { true } else { false } })
    }

    @Test func nioClientToNIOServerOverLoopback() async throws {
        let pki = try TestPKI.get()
        let serverLog = EventLog<ConnectionEvent>()
        let server = try await startServer(
            context: TLSContext(configuration: pki.serverConfiguration()),
            log: serverLog,
            greeting: "welcome"
        )
        defer { server.channel.close(promise: nil) }
        let clientLog = EventLog<ConnectionEvent>()
        let channel = try await connectClient(
            context: TLSContext(configuration: pki.clientConfiguration("client-t2-g7")),
            port: server.port,
            serverHostname: "localhost",
            log: clientLog
        )
        try await clientLog.wait(for: "greeting") {
            if case .received(let text) = $0 { text == "welcome" } else { false }
        }
        let handshake = try await serverLog.wait(for: "handshake") { if case .handshake = $0 { true } else { false } }
        guard case .handshake(let info) = handshake else { return }
        #expect(info.peerCertificate?.uriSANs == ["spiffe://example.org/tenant/t2/guest/g7"])
        try await channel.close()
        try await serverLog.wait(for: "close_notify") { if case .closeNotify = $0 { true } else { false } }
        try await clientLog.wait(for: "close_notify answered") { if case .closeNotify = $0 { true } else { false } }
        #expect(serverLog.events.compactMap(\.tlsError).isEmpty)
        #expect(clientLog.events.compactMap(\.tlsError).isEmpty)
    }
}
