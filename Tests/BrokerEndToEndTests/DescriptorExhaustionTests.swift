import BrokerProtocol
import Foundation
import Glibc
import Testing

/// A broker out of file descriptors: connections past its limit wait in the listen backlog
/// while it pauses accepting (it must not spin on a listener that stays readable, nor stop
/// accepting for good), and once descriptors are free again guests are served as before.
@Suite(.serialized) struct DescriptorExhaustionTests {
    /// A plain TCP connection that never starts TLS: it holds one of the broker's descriptors
    /// until closed (or until the handshake timeout).
    static func idleConnection(port: Int) throws -> CInt {
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

    @Test func aBrokerOutOfDescriptorsPausesAcceptingAndServesOnceTheyAreFree() async throws {
        let broker = try BrokerProcess(descriptorLimit: 96)
        // More connections than the broker has descriptors for: the kernel completes them all
        // (the backlog is 1024), the broker accepts until accept(2) fails with EMFILE.
        var idle: [CInt] = []
        defer { for fd in idle { close(fd) } }
        for _ in 0..<160 { idle.append(try Self.idleConnection(port: broker.port)) }
        if BrokerProcess.guestTransport != "nio" {
            // The epoll transport says so (NIO's pipeline backs off on its own, silently).
            #expect(await broker.waitForLog("cannot accept guest connections for now"))
        }
        for fd in idle { close(fd) }
        idle.removeAll()

        // The broker closes what it accepted (each end arrives as a handshake that failed),
        // accepts the rest of the backlog and closes those too, then serves a guest.
        let guest = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g1")
        #expect(try await guest.start() != nil)
        let result = try await guest.report(seq: 1, [(0, 9)])
        #expect(result?.reason == .ok, "\(String(describing: result))")
        await guest.close()
        #expect(broker.terminate() == 0, "\(broker.logText)")
    }
}
