import NIOCore
import NIOEmbedded
import Testing

@testable import TLSTransport

/// Two EmbeddedChannels, a server and a client, joined back to back in memory.
private struct Pair {
    let server: EmbeddedChannel
    let client: EmbeddedChannel
    let serverLog = EventLog<ConnectionEvent>()
    let clientLog = EventLog<ConnectionEvent>()

    init(
        server serverConfiguration: TLSConfiguration,
        client clientConfiguration: TLSConfiguration,
        serverHostname: String = "localhost"
    ) throws {
        // One loop for both, so time advances for both at once.
        let loop = EmbeddedEventLoop()
        self.server = EmbeddedChannel(loop: loop)
        self.client = EmbeddedChannel(loop: loop)
        try self.server.pipeline.syncOperations.addHandler(
            TLSTransport.serverHandler(context: TLSContext(configuration: serverConfiguration))
        )
        try self.server.pipeline.syncOperations.addHandler(Recorder(log: self.serverLog))
        try self.client.pipeline.syncOperations.addHandler(
            TLSTransport.clientHandler(
                context: TLSContext(configuration: clientConfiguration),
                serverHostname: serverHostname
            )
        )
        try self.client.pipeline.syncOperations.addHandler(Recorder(log: self.clientLog))
    }

    var loop: EmbeddedEventLoop { self.server.embeddedEventLoop }

    func connect() throws {
        try self.server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try self.client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        try self.pump()
    }

    /// Moves ciphertext between the two until neither has anything more to say.
    func pump() throws {
        var moved = true
        while moved {
            moved = false
            while let bytes = try self.client.readOutbound(as: ByteBuffer.self) {
                if self.server.isActive { try self.server.writeInbound(bytes) }
                moved = true
            }
            while let bytes = try self.server.readOutbound(as: ByteBuffer.self) {
                if self.client.isActive { try self.client.writeInbound(bytes) }
                moved = true
            }
        }
    }

    func write(_ text: String, on channel: EmbeddedChannel) -> EventLoopFuture<Void> {
        channel.writeAndFlush(ByteBuffer(string: text))
    }
}

private func received(_ log: EventLog<ConnectionEvent>) -> String {
    for event in log.events.reversed() {
        if case .received(let text) = event { return text }
    }
    return ""
}

private func handshake(_ log: EventLog<ConnectionEvent>) -> TLSHandshakeInfo? {
    for event in log.events {
        if case .handshake(let info) = event { return info }
    }
    return nil
}

private func tlsErrors(_ log: EventLog<ConnectionEvent>) -> [TLSError.Code] {
    log.events.compactMap { $0.tlsError?.code }
}

private func contains(_ log: EventLog<ConnectionEvent>, _ predicate: (ConnectionEvent) -> Bool) -> Bool {
    log.events.contains(where: predicate)
}

@Suite("TLSHandler over EmbeddedChannel")
struct TLSHandlerEmbeddedTests {
    @Test func handshakeDataBothWaysAndCloseNotify() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        try pair.connect()

        let serverInfo = try #require(handshake(pair.serverLog))
        #expect(serverInfo.protocolVersion == "TLSv1.3")
        #expect(serverInfo.peerCertificate?.uriSANs == ["spiffe://example.org/tenant/t1/guest/g1"])
        #expect(serverInfo.peerCertificate?.subject == "CN=guest g1,O=pagebroker test")
        let notAfter = try #require(serverInfo.peerCertificate?.notAfterSecondsSinceEpoch)
        #expect(notAfter > 1_700_000_000)
        let clientInfo = try #require(handshake(pair.clientLog))
        #expect(clientInfo.peerCertificate?.subject == "CN=pagebroker server,O=pagebroker test")
        #expect(clientInfo.peerCertificate?.uriSANs == [])

        let clientWrite = pair.write("from client", on: pair.client)
        let serverWrite = pair.write("from server", on: pair.server)
        try pair.pump()
        try clientWrite.wait()
        try serverWrite.wait()
        #expect(received(pair.serverLog) == "from client")
        #expect(received(pair.clientLog) == "from server")

        // The client's close waits for the server's close_notify.
        let closed = pair.client.close()
        var closeDone = false
        closed.assumeIsolated().whenComplete { _ in closeDone = true }
        #expect(!closeDone)
        try pair.pump()
        try closed.wait()
        #expect(contains(pair.serverLog) { if case .closeNotify = $0 { return true } else { return false } })
        #expect(contains(pair.clientLog) { if case .closeNotify = $0 { return true } else { return false } })
        #expect(!pair.server.isActive)
        #expect(!pair.client.isActive)
        #expect(tlsErrors(pair.serverLog).isEmpty)
        #expect(tlsErrors(pair.clientLog).isEmpty)
    }

    @Test func writesBeforeTheHandshakeAreSentAfterIt() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        try pair.server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try pair.client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        let early = pair.write("early bird", on: pair.client)
        try pair.pump()
        try early.wait()
        #expect(received(pair.serverLog) == "early bird")
    }

    @Test func manySmallWritesAndOneLargeWriteArriveInOrder() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        try pair.connect()
        var expected = ""
        var futures: [EventLoopFuture<Void>] = []
        for index in 0..<500 {
            let piece = "\(index),"
            expected += piece
            futures.append(pair.client.write(ByteBuffer(string: piece)))
        }
        let large = String(repeating: "0123456789abcdef", count: 6_000)  // 96 KiB: several records
        expected += large
        futures.append(pair.client.write(ByteBuffer(string: large)))
        pair.client.flush()
        try pair.pump()
        for future in futures { try future.wait() }
        #expect(received(pair.serverLog) == expected)
    }

    @Test func doubleCloseCompletesBothWithoutCrashing() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        try pair.connect()
        let first = pair.client.close()
        let second = pair.client.close()
        try pair.pump()
        try first.wait()
        try second.wait()
        // A third close after the channel is gone is answered by the channel, not by us.
        #expect(throws: ChannelError.alreadyClosed) { try pair.client.close().wait() }
    }

    @Test func applicationDataArrivingWhileClosingIsDropped() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        try pair.connect()
        // The client says goodbye; before the server has read that, it sends more data.
        let closed = pair.client.close()
        let late = pair.write("late data", on: pair.server)
        try pair.pump()
        try closed.wait()
        try late.wait()
        #expect(received(pair.clientLog) == "")
        #expect(tlsErrors(pair.clientLog).isEmpty)
        // Writes after close are refused with a typed error.
        #expect(throws: TLSError.self) { try pair.write("too late", on: pair.client).wait() }
    }

    @Test func closeTimesOutWhenThePeerNeverAnswers() throws {
        let pki = try TestPKI.get()
        var client = pki.clientConfiguration()
        client.closeTimeout = .seconds(3)
        let pair = try Pair(server: pki.serverConfiguration(), client: client)
        try pair.connect()
        let closed = pair.client.close()
        _ = try pair.client.readOutbound(as: ByteBuffer.self)  // the close_notify, lost on the way
        pair.loop.advanceTime(by: .seconds(2))
        #expect(pair.client.isActive)
        pair.loop.advanceTime(by: .seconds(1))
        let error = try #require(throws: TLSError.self) { try closed.wait() }
        #expect(error.code == .closeTimeout)
        #expect(!pair.client.isActive)
    }

    @Test func forceCloseEndsAClosingConnectionWithoutWaitingForThePeer() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        try pair.connect()
        let closed = pair.client.close()
        _ = try pair.client.readOutbound(as: ByteBuffer.self)  // the close_notify, never answered
        #expect(pair.client.isActive)
        pair.client.pipeline.triggerUserOutboundEvent(TLSForceClose(), promise: nil)
        // No time passes: the close that was waiting for the peer completes with the channel's.
        #expect(!pair.client.isActive)
        try closed.wait()
    }

    @Test func transportEndingWithoutCloseNotifyIsUnclean() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        try pair.connect()
        // The server's TCP connection ends with no close_notify.
        pair.server.pipeline.fireChannelInactive()
        #expect(tlsErrors(pair.serverLog) == [.uncleanShutdown])
        #expect(!contains(pair.serverLog) { if case .closeNotify = $0 { return true } else { return false } })
    }

    @Test func handshakeTimesOut() throws {
        let pki = try TestPKI.get()
        var server = pki.serverConfiguration()
        server.handshakeTimeout = .seconds(5)
        let pair = try Pair(server: server, client: pki.clientConfiguration())
        try pair.server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        pair.loop.advanceTime(by: .seconds(5))
        #expect(tlsErrors(pair.serverLog) == [.handshakeTimeout])
        #expect(!pair.server.isActive)
    }

    @Test(arguments: [
        ("client-wrong-ca", TLSError.Code.peerCertificateUntrusted),
        ("client-expired", .certificateExpired),
        ("client-no-uri", .missingURISAN),
    ])
    func serverRefusesBadClientCertificates(certificate: String, code: TLSError.Code) throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration(certificate))
        try pair.connect()
        #expect(tlsErrors(pair.serverLog).first == code)
        #expect(handshake(pair.serverLog) == nil)
        #expect(!pair.server.isActive)
        // The client hears why: the server's alert maps to an error on its side too.
        #expect(!tlsErrors(pair.clientLog).isEmpty)
        #expect(received(pair.serverLog) == "")
    }

    @Test func clientRefusesAServerFromAnUnknownCA() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(
            server: pki.serverConfiguration(),
            client: pki.clientConfiguration(caBundle: "wrong-ca.pem")
        )
        try pair.connect()
        let error = try #require(pair.clientLog.events.compactMap(\.tlsError).first)
        #expect(error.code == .peerCertificateUntrusted)
        // The server sends its CA along (OpenSSL completes the chain from its store), so the
        // failure is "self-signed certificate in certificate chain", X509_V_ERR 19.
        #expect(error.verifyResult == 19)
        #expect(error.reason.contains("self-signed certificate in certificate chain"))
    }

    @Test func clientRefusesAServerCertificateForAnotherName() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(
            server: pki.serverConfiguration(),
            client: pki.clientConfiguration(),
            serverHostname: "broker.elsewhere.example"
        )
        try pair.connect()
        #expect(tlsErrors(pair.clientLog).first == .peerCertificateUntrusted)
    }

    @Test func peerValidatorCanRefuseATenant() throws {
        let pki = try TestPKI.get()
        var server = pki.serverConfiguration()
        server.peerValidator = { certificate in
            certificate.uriSANs.contains { $0.hasPrefix("spiffe://example.org/tenant/t2/") }
                ? nil : TLSError(code: .peerRejected, reason: "tenant not served here")
        }
        let refused = try Pair(server: server, client: pki.clientConfiguration("client-t1-g1"))
        try refused.connect()
        #expect(tlsErrors(refused.serverLog) == [.peerRejected])
        #expect(handshake(refused.serverLog) == nil)
        // The refused client is told why: an access_denied alert after the TLS 1.3 handshake.
        #expect(tlsErrors(refused.clientLog) == [.accessDenied])

        let accepted = try Pair(server: server, client: pki.clientConfiguration("client-t2-g7"))
        try accepted.connect()
        #expect(tlsErrors(accepted.serverLog).isEmpty)
        #expect(handshake(accepted.serverLog)?.peerCertificate?.uriSANs == ["spiffe://example.org/tenant/t2/guest/g7"])
    }

    @Test func reloadAffectsNewConnectionsOnly() throws {
        let pki = try TestPKI.get()
        let reloadable = try ReloadableTLSContext(configuration: pki.serverConfiguration())
        let loop = EmbeddedEventLoop()
        func connection(_ context: TLSContext, _ log: EventLog<ConnectionEvent>) throws -> EmbeddedChannel {
            let channel = EmbeddedChannel(loop: loop)
            try channel.pipeline.syncOperations.addHandler(TLSTransport.serverHandler(context: context))
            try channel.pipeline.syncOperations.addHandler(Recorder(log: log))
            return channel
        }
        func client(_ log: EventLog<ConnectionEvent>) throws -> EmbeddedChannel {
            let channel = EmbeddedChannel(loop: loop)
            let context = try TLSContext(configuration: pki.clientConfiguration())
            try channel.pipeline.syncOperations.addHandler(
                TLSTransport.clientHandler(context: context, serverHostname: "localhost")
            )
            try channel.pipeline.syncOperations.addHandler(Recorder(log: log))
            return channel
        }
        func run(_ server: EmbeddedChannel, _ client: EmbeddedChannel) throws {
            try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
            var moved = true
            while moved {
                moved = false
                while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                    if server.isActive { try server.writeInbound(bytes) }
                    moved = true
                }
                while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                    if client.isActive { try client.writeInbound(bytes) }
                    moved = true
                }
            }
        }

        // Made before the reload: half way through its handshake when the context changes.
        let oldLog = EventLog<ConnectionEvent>()
        let oldServer = try connection(reloadable.current, oldLog)
        let oldClient = try client(EventLog())

        // The reloaded context trusts only the wrong CA, so our client can no longer get in.
        try reloadable.reload(configuration: pki.serverConfiguration(caBundle: "wrong-ca.pem"))
        let newLog = EventLog<ConnectionEvent>()
        let newServer = try connection(reloadable.current, newLog)
        let newClient = try client(EventLog())

        try run(oldServer, oldClient)
        try run(newServer, newClient)
        #expect(handshake(oldLog) != nil)
        #expect(tlsErrors(newLog) == [.peerCertificateUntrusted])

        // A reload that fails leaves the current context in place.
        var broken = pki.serverConfiguration()
        broken.privateKeyPath = pki.path("client-t1-g1.key")
        let error = try #require(throws: TLSError.self) { try reloadable.reload(configuration: broken) }
        #expect(error.code == .contextSetupFailed)
        #expect(reloadable.current.configuration.caBundlePath.hasSuffix("wrong-ca.pem"))
    }

    @Test func contextSetupErrorsNameTheFile() throws {
        let pki = try TestPKI.get()
        var configuration = pki.serverConfiguration()
        configuration.certificateChainPath = pki.path("does-not-exist.pem")
        let error = try #require(throws: TLSError.self) { try TLSContext(configuration: configuration) }
        #expect(error.code == .contextSetupFailed)
        #expect(error.reason.contains("does-not-exist.pem"))
    }
}
