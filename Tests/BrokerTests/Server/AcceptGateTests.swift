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
        var configuration = BrokerServerConfiguration(
            host: "127.0.0.1",
            port: 0,
            certificateChainPath: "\(pki)/server.pem",
            privateKeyPath: "\(pki)/server.key",
            clientCAPath: "\(pki)/ca.pem",
            trustDomain: "example.org"
        )
        configuration.transport = transport
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
        for _ in 0..<clients { sockets.append(try DescriptorHelpers.connect(port: port)) }

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

/// Plain TCP connections for tests that only need a socket to be connected.
enum DescriptorHelpers {
    static func connect(port: Int) throws -> CInt {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        return fd
    }
}
