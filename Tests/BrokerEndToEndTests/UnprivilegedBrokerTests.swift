import BrokerProtocol
import Foundation
import Testing

/// The service runs as `User=pagebroker`, with no capabilities. A socket option that only root
/// may set (`.socketOption(.tcp_nodelay)` is SOL_SOCKET option 1, SO_DEBUG) made every accept
/// fail there, while every test run as root passed.
@Suite(.serialized) struct UnprivilegedBrokerTests {
    @Test(
        "a broker run as an unprivileged user serves guests",
        .enabled(if: getuid() == 0, "runuser needs root; CI runs the suites as root")
    )
    func unprivilegedBrokerServesGuests() async throws {
        let broker = try BrokerProcess(user: "nobody")
        let guest = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        #expect(try await guest.start() != nil, "no ServerHello; broker log:\n\(broker.logText)")
        let result = try await guest.report(seq: 1, [(1024, 10)])
        #expect(result?.reason == .ok, "report: \(String(describing: result))")
        await guest.close()
        // runuser is the process here: its status is the signal, not the broker's exit.
        _ = broker.terminate()
    }
}
