import Foundation
import Systemd
import Testing

/// `sd_notify` against a Unix datagram socket of the test's own, as systemd would listen.
@Suite(.serialized) struct ServiceNotifierTests {
    @Test func sendsDatagramsToNotifySocket() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(getpid()).sock").path
        unlink(path)
        let socket = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(socket >= 0)
        defer {
            close(socket)
            unlink(path)
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            path.utf8CString.withUnsafeBytes { raw.copyMemory(from: $0) }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0)

        setenv("NOTIFY_SOCKET", path, 1)
        defer { unsetenv("NOTIFY_SOCKET") }
        let notifier = ServiceNotifier()
        #expect(notifier.isEnabled)
        #expect(try notifier.send(.ready))
        #expect(try notifier.send(.status("3 tenants")))

        var buffer = [UInt8](repeating: 0, count: 4096)
        var received: [NotifyMessage] = []
        for _ in 0..<2 {
            let count = recv(socket, &buffer, buffer.count, 0)
            #expect(count > 0)
            received.append(NotifyMessage(parsing: String(decoding: buffer[0..<max(count, 0)], as: UTF8.self)))
        }
        #expect(received == [.ready, .status("3 tenants")])
    }

    @Test func withoutNotifySocketNothingIsSent() throws {
        unsetenv("NOTIFY_SOCKET")
        let notifier = ServiceNotifier()
        #expect(!notifier.isEnabled)
        #expect(try notifier.send(.ready) == false)
    }

    @Test func watchdogTimeoutFromEnvironment() throws {
        let notifier = ServiceNotifier()
        unsetenv("WATCHDOG_USEC")
        #expect(try notifier.watchdogTimeout() == nil)
        setenv("WATCHDOG_USEC", "4000000", 1)
        defer { unsetenv("WATCHDOG_USEC") }
        #expect(try notifier.watchdogTimeout() == .seconds(4))
        setenv("WATCHDOG_USEC", "soon", 1)
        #expect(throws: SystemdError.self) { try notifier.watchdogTimeout() }
    }
}
