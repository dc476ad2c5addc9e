import CGuestLoop
import Logging
import NIOCore
import Synchronization
import TLSTransport

#if canImport(Glibc)
import Glibc
#endif

/// The broker's epoll guest transport: the listening socket and the ``GuestLoop``s that accept
/// from it and carry the sessions (`guest_transport: epoll`, the default; docs/configuration.md).
final class GuestTransport: Sendable {
    private let loops: [GuestLoop]
    private let listener = Mutex<CInt?>(nil)
    let connections: GuestConnectionCount

    /// Makes `threads` loops (not started).
    init(threads: Int, settings: GuestLoop.Settings) throws(GuestTransportError) {
        var loops: [GuestLoop] = []
        for index in 0..<max(1, threads) {
            loops.append(try GuestLoop(name: "guest-\(index)", settings: settings))
        }
        self.loops = loops
        self.connections = settings.connections
    }

    /// Binds `host`:`port` (or adopts `socket`, a listening socket handed over by systemd) and
    /// starts the loops; with `accepting` false they accept nothing until ``beginAccepting()``
    /// (guests that connect meanwhile wait in the listen backlog). Returns the bound address.
    func start(
        host: String,
        port: Int,
        adopting socket: CInt?,
        accepting: Bool = true
    ) throws(GuestTransportError) -> SocketAddress {
        let fd: CInt
        if let socket {
            guard pbl_set_nonblocking(socket) == 0 else {
                throw GuestTransportError(.cannotListen, "", errno: errno)
            }
            fd = socket
        } else {
            var reason = [CChar](repeating: 0, count: 256)
            fd = pbl_listen(host, Int32(port), 1_024, &reason, reason.count)
            guard fd >= 0 else {
                throw GuestTransportError(
                    .cannotListen,
                    String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                )
            }
        }
        self.listener.withLock { $0 = fd }
        let address: SocketAddress
        do {
            address = try Self.localAddress(of: fd)
            for (index, loop) in self.loops.enumerated() {
                try loop.start(
                    listener: index == 0 ? fd : nil,
                    dealingTo: index == 0 ? self.loops : [],
                    accepting: accepting
                )
            }
        } catch {
            if socket == nil { Glibc.close(fd) }
            throw error
        }
        return address
    }

    /// Starts accepting guests, after a ``start(host:port:adopting:accepting:)`` that did not.
    func beginAccepting() async throws(GuestTransportError) {
        try await self.loops[0].beginAccepting()
    }

    /// Stops accepting and closes the listening socket.
    func stopAccepting() async {
        for loop in self.loops { await loop.stopAccepting() }
        if let fd = self.listener.withLock({ fd -> CInt? in
            defer { fd = nil }
            return fd
        }) {
            Glibc.close(fd)
        }
    }

    /// Ends the loops' threads, closing every connection still open at once, without waiting
    /// for the peers (a stop past its deadline); returns once they are closed. Idempotent.
    func shutdown() async {
        for loop in self.loops { await loop.shutdown() }
    }

    /// The loops, as executors (the watchdog's probe runs on each).
    var executors: [any SessionExecutor] { self.loops }

    private static func localAddress(of fd: CInt) throws(GuestTransportError) -> SocketAddress {
        var text = [CChar](repeating: 0, count: 64)
        var port: Int32 = 0
        guard pbl_local_address(fd, &text, text.count, &port) == 0 else {
            throw GuestTransportError(.cannotListen, "getsockname", errno: errno)
        }
        let address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        do {
            return try SocketAddress(ipAddress: address, port: Int(port))
        } catch {
            throw GuestTransportError(.cannotListen, "the listening socket's address \(address) is not IP")
        }
    }
}
