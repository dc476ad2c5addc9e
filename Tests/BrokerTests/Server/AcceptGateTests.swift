import Foundation
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import Broker

/// `BrokerServer.start(accepting: false)`: the listener is bound and guests can connect, but
/// nothing is accepted until `beginAccepting()` (the daemon brings its other listeners up in
/// between). Checked against the kernel's own count of the listener's accept queue.
@Suite(.serialized) struct AcceptGateTests {
    /// The accept queue of the TCP listener on 127.0.0.1:`port`, from /proc/net/tcp (for a
    /// listening socket its rx_queue field is the number of connections waiting to be accepted).
    static func acceptQueue(port: Int) throws -> Int? {
        let table = try String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)
        let local = String(format: "0100007F:%04X", port)
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 4, fields[1] == local, fields[3] == "0A" else { continue }
            let queues = fields[4].split(separator: ":")
            return queues.count == 2 ? Int(queues[1], radix: 16) : nil
        }
        return nil
    }

    /// Polls `condition` until it holds or `timeout` passes.
    static func eventually(within timeout: Duration, _ condition: () throws -> Bool) async rethrows -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if try condition() { return true }
            await Task.yield()
            try? await Task.sleep(for: .milliseconds(5))
        }
        return try condition()
    }

    @Test(arguments: [GuestTransportKind.epoll, .nio])
    func connectionsWaitInTheBacklogUntilAcceptingBegins(transport: GuestTransportKind) async throws {
        let pki = try GuestTransportThreadTests.pki.get()
        let core = BrokerCore(policies: PolicySet(tenants: ["t1": TenantPolicy()]))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let configuration = ServerTestSupport.configuration(pki: pki, transport: transport)
        let server = try BrokerServer(
            configuration: configuration,
            core: core,
            group: group,
            logger: Logger(label: "accept-gate-test")
        )
        let port = try await server.start(accepting: false).port!
        let clients = 20
        var sockets: [CInt] = []
        defer { for fd in sockets { close(fd) } }
        for _ in 0..<clients { sockets.append(try ServerTestSupport.connect(port: port)) }

        // Every connection reaches the accept queue and stays there: a listener being accepted
        // from would never hold all of them.
        let queued = try await Self.eventually(within: .seconds(20)) { try Self.acceptQueue(port: port) == clients }
        let waiting = try Self.acceptQueue(port: port)
        #expect(queued, "accept queue \(String(describing: waiting)) of \(clients)")
        #expect(server.connectionCount == 0)

        try await server.beginAccepting()
        let accepted = await Self.eventually(within: .seconds(20)) { server.connectionCount == clients }
        #expect(accepted, "\(server.connectionCount) of \(clients) accepted")
        #expect(try Self.acceptQueue(port: port) == 0)

        for fd in sockets { close(fd) }
        sockets.removeAll()
        await server.stop(drainTimeout: .seconds(5))
        #expect(server.connectionCount == 0)
        try await group.shutdownGracefully()
    }
}
