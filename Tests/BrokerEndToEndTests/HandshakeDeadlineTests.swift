import Foundation
import Glibc
import Testing

/// The handshake timeout: a connection that never starts TLS is closed when it passes, not
/// before, and not by the deadline of an earlier connection whose socket number it reused.
@Suite(.serialized) struct HandshakeDeadlineTests {
    /// Waits until the peer closes `fd` (end of stream or reset); false if `timeout` passed first.
    static func waitForEnd(_ fd: CInt, timeout: Duration) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var byte: UInt8 = 0
        while clock.now < deadline {
            let left = deadline - clock.now
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(
                max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)
            )
            let ready = poll(&poller, 1, milliseconds)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { continue }
            let received = recv(fd, &byte, 1, 0)
            if received == 0 || (received < 0 && errno == ECONNRESET) { return true }
        }
        return false
    }

    @Test func aSilentConnectionIsClosedAtTheHandshakeTimeoutAndNotByAnEarlierOnesDeadline() async throws {
        let configuration = BrokerProcess.configuration.replacingOccurrences(
            of: "handshake_timeout: 20s",
            with: "handshake_timeout: 2s"
        )
        let broker = try BrokerProcess(configuration: configuration)
        // The first connection leaves at once: the broker closes its socket, and the next one
        // accepted most likely gets the same number. Its deadline still passes, a second later
        // than that of the first.
        close(try DescriptorExhaustionTests.idleConnection(port: broker.port))
        // Pacing, not synchronisation: the second connection starts a second after the first,
        // so the first's deadline falls inside the second's handshake time.
        try await Task.sleep(for: .seconds(1))
        let clock = ContinuousClock()
        let started = clock.now
        let silent = try DescriptorExhaustionTests.idleConnection(port: broker.port)
        defer { close(silent) }
        #expect(Self.waitForEnd(silent, timeout: .seconds(30)), "the broker never closed a silent connection")
        let waited = clock.now - started
        // The broker's deadline runs from its accept, after the connect began: never sooner.
        #expect(waited >= .seconds(2), "closed after \(waited), before the 2 s handshake timeout")
        #expect(waited < .seconds(30))
        // The broker still serves guests.
        let guest = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g1")
        #expect(try await guest.start() != nil)
        await guest.close()
        #expect(broker.terminate() == 0, "\(broker.logText)")
    }
}
