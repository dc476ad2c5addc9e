import Foundation
import Testing

@testable import TLSTransport

/// ``TLSSocket``: OpenSSL on non-blocking sockets. Both ends run in the test's own thread over a
/// socket pair, each step made when the other end has made its own (no sleeps, no threads): a
/// `wantRead` or `wantWrite` means "the other end must move first".
@Suite struct TLSSocketTests {
    /// Two connected non-blocking stream sockets with TLS on each: a server and a client.
    final class Pair {
        let server: TLSSocket
        let client: TLSSocket
        let serverFD: CInt
        let clientFD: CInt
        private var closed: Set<CInt> = []

        init(
            server: TLSConfiguration,
            client: TLSConfiguration
        ) throws {
            var fds: [CInt] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
                throw TestFailure("socketpair: \(String(cString: strerror(errno)))")
            }
            for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
            self.serverFD = fds[0]
            self.clientFD = fds[1]
            self.server = try TLSSocket(context: TLSContext(configuration: server), descriptor: fds[0])
            self.client = try TLSSocket(
                context: TLSContext(configuration: client),
                descriptor: fds[1],
                serverHostname: "localhost"
            )
        }

        deinit {
            for fd in [self.serverFD, self.clientFD] where !self.closed.contains(fd) { close(fd) }
        }

        func closeSocket(_ fd: CInt) {
            close(fd)
            self.closed.insert(fd)
        }

        /// Steps both handshakes in turn until both are done, or one throws. Returns the
        /// server's and the client's error (the first to fail stops both).
        func handshake() -> (server: TLSError?, client: TLSError?) {
            var serverDone = false
            var clientDone = false
            for _ in 0..<32 {
                if !clientDone {
                    do { clientDone = try self.client.handshake() == .done } catch { return (nil, error) }
                }
                if !serverDone {
                    do { serverDone = try self.server.handshake() == .done } catch { return (error, nil) }
                }
                if serverDone && clientDone { return (nil, nil) }
            }
            return (TLSError(code: .handshakeFailed, reason: "no progress in 32 steps"), nil)
        }

        /// Reads what `socket` has now (until wantRead).
        static func readAll(_ socket: TLSSocket) throws -> (bytes: [UInt8], outcome: TLSSocket.ReadOutcome) {
            var collected: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4_096)
            while true {
                let outcome = try buffer.withUnsafeMutableBytes { space in try socket.read(into: space) }
                guard case .bytes(let count) = outcome else { return (collected, outcome) }
                collected += buffer[0..<count]
            }
        }

        static func writeAll(_ socket: TLSSocket, _ bytes: [UInt8]) throws {
            let outcome = try bytes.withUnsafeBytes { raw in try socket.write(raw) }
            #expect(outcome == .wrote(bytes.count))
        }
    }

    @Test func handshakeDataBothWaysAndCloseNotify() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        let (serverError, clientError) = pair.handshake()
        #expect(serverError == nil && clientError == nil, "\(String(describing: serverError ?? clientError))")
        #expect(pair.server.handshakeInfo.peerCertificate?.uriSANs == ["spiffe://example.org/tenant/t1/guest/g1"])
        #expect(pair.server.handshakeInfo.protocolVersion == "TLSv1.3")

        try Pair.writeAll(pair.client, Array("report".utf8))
        let (toServer, serverOutcome) = try Pair.readAll(pair.server)
        #expect(String(decoding: toServer, as: UTF8.self) == "report")
        #expect(serverOutcome == .wantRead)
        try Pair.writeAll(pair.server, Array("ok".utf8))
        #expect(String(decoding: try Pair.readAll(pair.client).bytes, as: UTF8.self) == "ok")

        // The client says goodbye: the server reads close_notify, answers, and the client sees it.
        #expect(try pair.client.shutdown() == .done)
        #expect(try Pair.readAll(pair.server).outcome == .closeNotify)
        #expect(try pair.server.shutdown() == .done)
        #expect(try Pair.readAll(pair.client).outcome == .closeNotify)
    }

    @Test func aRefusedPeerIsToldAccessDenied() throws {
        let pki = try TestPKI.get()
        var server = pki.serverConfiguration()
        server.peerValidator = { _ in TLSError(code: .peerRejected, reason: "tenant t1 is not configured") }
        let pair = try Pair(server: server, client: pki.clientConfiguration())
        let (serverError, clientError) = pair.handshake()
        // TLS 1.3: the client's handshake is over before the server judges it.
        #expect(clientError == nil)
        #expect(serverError?.code == .peerRejected)
        #expect(serverError?.reason == "tenant t1 is not configured")
        // The client learns why on its first read: the server's access_denied alert.
        let error = #expect(throws: TLSError.self) { try Pair.readAll(pair.client) }
        #expect(error?.code == .accessDenied, "\(String(describing: error))")
    }

    @Test(arguments: [
        ("client-wrong-ca", TLSError.Code.peerCertificateUntrusted),
        ("client-expired", .certificateExpired),
        ("client-no-uri", .missingURISAN),
    ])
    func aBadClientCertificateFailsTheServersHandshake(certificate: String, code: TLSError.Code) throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration(certificate))
        let (serverError, _) = pair.handshake()
        #expect(serverError?.code == code, "\(String(describing: serverError))")
    }

    @Test func theConnectionClosedDuringTheHandshakeIsAHandshakeFailure() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        #expect(try pair.client.handshake() == .wantRead)  // the ClientHello is sent
        pair.closeSocket(pair.clientFD)
        var failure: TLSError?
        for _ in 0..<4 where failure == nil {
            do { _ = try pair.server.handshake() } catch { failure = error }
        }
        #expect(failure?.code == .handshakeFailed, "\(String(describing: failure))")
    }

    @Test func anEndWithoutCloseNotifyIsAnUncleanShutdown() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        #expect(pair.handshake() == (nil, nil))
        try Pair.writeAll(pair.client, Array("last words".utf8))
        pair.closeSocket(pair.clientFD)
        // The data before the end is still read, then the end is judged.
        var buffer = [UInt8](repeating: 0, count: 64)
        let first = try buffer.withUnsafeMutableBytes { space in try pair.server.read(into: space) }
        #expect(first == .bytes(10))
        #expect(String(decoding: buffer[0..<10], as: UTF8.self) == "last words")
        let error = #expect(throws: TLSError.self) { try Pair.readAll(pair.server) }
        #expect(error?.code == .uncleanShutdown, "\(String(describing: error))")
    }

    @Test func aFullSocketTakesPartOfAWriteAndTheRestLaterFromAnotherAddress() throws {
        let pki = try TestPKI.get()
        let pair = try Pair(server: pki.serverConfiguration(), client: pki.clientConfiguration())
        #expect(pair.handshake() == (nil, nil))
        let message = (0..<4_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var sent = 0
        var received: [UInt8] = []
        received.reserveCapacity(message.count)
        var sawFull = false
        var sawPartial = false
        while sent < message.count || received.count < message.count {
            // Writes until the socket is full (the reader waits meanwhile), then reads.
            while sent < message.count {
                // A fresh copy of the rest each time: the retry comes from another address.
                let rest = Array(message[sent...])
                let outcome = try rest.withUnsafeBytes { raw in try pair.server.write(raw) }
                guard case .wrote(let count) = outcome else {
                    #expect(outcome == .wantWrite)
                    sawFull = true
                    break
                }
                if count < rest.count { sawPartial = true }
                sent += count
            }
            received += try Pair.readAll(pair.client).bytes
        }
        #expect(sawFull, "the socket never filled: the test did not test a retried write")
        #expect(sawPartial, "every write was taken whole: the test did not test a partial write")
        #expect(received == message)
    }
}
