import BrokerProtocol
import Foundation
import NIOCore
import NIOPosix
import TLSTransport
import Testing

@testable import GuestAgent

/// Makes the test PKI once per process with `scripts/make-test-pki`.
private enum TestPKI {
    static let directory: String? = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("guest-agent-pki-\(getpid())").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [root.appendingPathComponent("scripts/make-test-pki").path, directory]
        do {
            try process.run()
            process.waitUntilExit()
        } catch {
            return nil
        }
        return process.terminationStatus == 0 ? directory : nil
    }()
}

@Suite("Agent over mutual TLS", .serialized)
struct TLSSessionTests {
    @Test("the agent completes TLS, hello and sync against a TLS broker, and says goodbye")
    func tlsSession() throws {
        let pki = try #require(TestPKI.directory, "scripts/make-test-pki failed")
        let server = try TLSContext(
            configuration: .server(
                certificateChainPath: "\(pki)/server.pem",
                privateKeyPath: "\(pki)/server.key",
                caBundlePath: "\(pki)/ca.pem"
            )
        )
        let client = try TLSContext(
            configuration: .client(
                certificateChainPath: "\(pki)/client-t1-g1.pem",
                privateKeyPath: "\(pki)/client-t1-g1.key",
                caBundlePath: "\(pki)/ca.pem"
            )
        )
        let broker = try FakeBroker(tls: server)
        defer { try? broker.shutdown() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let connection = AgentConnection(
            configuration: AgentConfiguration(
                host: "127.0.0.1",
                port: broker.port,
                transport: .tls(client, serverHostname: "localhost")
            ),
            geometry: GuestGeometry(pageSize: 4096, totalPages: 1 << 20, minOrder: 9, maxOrder: 10),
            eventLoopGroup: group
        )
        connection.start()
        let session = try wait(connection.activeSession())
        #expect(session.tenant == "t1")
        #expect(session.guest == "g1")
        try wait(connection.submitReport(blocks: [512, 9]))
        #expect(connection.statistics.reportsAccepted == 1)
        try wait(connection.shutdown())
        try broker.waitFor { frames in frames.contains { if case .goodbye = $0.frame.body { true } else { false } } }
    }

    @Test("a broker certificate for another name is refused and the agent keeps retrying")
    func wrongServerName() throws {
        let pki = try #require(TestPKI.directory, "scripts/make-test-pki failed")
        let server = try TLSContext(
            configuration: .server(
                certificateChainPath: "\(pki)/server.pem",
                privateKeyPath: "\(pki)/server.key",
                caBundlePath: "\(pki)/ca.pem"
            )
        )
        let client = try TLSContext(
            configuration: .client(
                certificateChainPath: "\(pki)/client-t1-g1.pem",
                privateKeyPath: "\(pki)/client-t1-g1.key",
                caBundlePath: "\(pki)/ca.pem"
            )
        )
        let broker = try FakeBroker(tls: server)
        defer { try? broker.shutdown() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let connection = AgentConnection(
            configuration: AgentConfiguration(
                host: "127.0.0.1",
                port: broker.port,
                transport: .tls(client, serverHostname: "broker.elsewhere.example"),
                reconnectBackoff: ReconnectBackoff(initial: .milliseconds(10), maximum: .milliseconds(50))
            ),
            geometry: GuestGeometry(pageSize: 4096, totalPages: 1 << 20, minOrder: 9, maxOrder: 10),
            eventLoopGroup: group
        )
        connection.start()
        // Several attempts reach the broker's TCP port, none gets as far as a frame.
        try broker.waitFor(timeout: .seconds(10)) { _, connections in connections >= 3 }
        #expect(broker.frames.isEmpty)
        #expect(connection.statistics.sessions == 0)
        #expect(throws: AgentError.self) { try wait(connection.submitReport(blocks: [512, 9])) }
        try wait(connection.shutdown())
    }
}
