import Foundation

@testable import Broker

/// What the in-process server tests share: a server's configuration over the test PKI, and a
/// plain TCP connection to it.
enum ServerTestSupport {
    /// A server on an OS-picked loopback port with the test PKI (`make-test-pki`), trust domain
    /// example.org, on `transport`.
    static func configuration(pki: String, transport: GuestTransportKind) -> BrokerServerConfiguration {
        var configuration = BrokerServerConfiguration(
            host: "127.0.0.1",
            port: 0,
            certificateChainPath: "\(pki)/server.pem",
            privateKeyPath: "\(pki)/server.key",
            clientCAPath: "\(pki)/ca.pem",
            trustDomain: "example.org"
        )
        configuration.transport = transport
        return configuration
    }

    /// A blocking TCP socket connected to 127.0.0.1:`port`.
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
            let failure = errno
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: failure) ?? .EIO)
        }
        return fd
    }
}
