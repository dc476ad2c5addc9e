import BrokerProtocol
import Foundation
import Testing

/// Bad input against a live broker: each gets its documented answer, and a well-behaved guest
/// connected throughout keeps being served.
@Suite(.serialized) struct MalformedInputTests {
    let broker: BrokerProcess

    init() throws { self.broker = try BrokerProcess() }

    /// A guest of another tenant that reports before and after every bad input.
    func bystander() async throws -> RawGuest {
        let guest = try await RawGuest.connect(port: self.broker.port, tenant: "t2", guest: "g1")
        #expect(try await guest.start() != nil)
        return guest
    }

    func errorCode(_ frame: Pagebroker_V1_Frame?) -> Pagebroker_V1_ReasonCode? {
        guard case .error(let error) = frame?.body else { return nil }
        return error.code
    }

    @Test func framingAndProtocolViolationsGetAnErrorAndAClose() async throws {
        let bystander = try await self.bystander()
        var seq: UInt64 = 0
        func bystanderStillServed() async throws {
            seq += 1
            let result = try await bystander.report(seq: seq, [(seq * 1024, 10)])
            #expect(result?.reason == .ok, "bystander report \(seq): \(String(describing: result))")
        }
        try await bystanderStillServed()

        // Length over the limit: refused from the prefix alone.
        var guest = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g2")
        try await guest.send(bytes: [0x00, 0x10, 0x00, 0x00])
        #expect(self.errorCode(await guest.receive()) == .frameTooLarge)
        #expect(await guest.waitClosed())
        try await bystanderStillServed()

        // Garbage bytes.
        guest = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g2")
        try await guest.send(bytes: [0, 0, 0, 5, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(self.errorCode(await guest.receive()) == .protocolViolation)
        #expect(await guest.waitClosed())
        try await bystanderStillServed()

        // A valid Frame with only a field this version does not define (field 99, varint 1).
        guest = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g2")
        try await guest.send(bytes: [0, 0, 0, 3, 0x98, 0x06, 0x01])
        #expect(self.errorCode(await guest.receive()) == .protocolViolation)
        #expect(await guest.waitClosed())
        try await bystanderStillServed()

        // A report before the hello.
        guest = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g2")
        try await guest.send(
            .with {
                $0.report = .with {
                    $0.seq = 1
                    $0.blocks = [0, 9]
                }
            }
        )
        #expect(self.errorCode(await guest.receive()) == .protocolViolation)
        #expect(await guest.waitClosed())
        try await bystanderStillServed()

        // A truncated frame, then the guest goes away: nothing to answer, the session ends.
        guest = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g2")
        #expect(try await guest.start() != nil)
        try await guest.send(bytes: [0, 0, 0, 100, 1, 2, 3])
        await guest.close()
        try await bystanderStillServed()

        // An unsupported protocol version.
        guest = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g2")
        var hello = RawGuest.hello
        hello.clientHello.protocolVersion = 7
        try await guest.send(hello)
        #expect(self.errorCode(await guest.receive()) == .unsupportedVersion)
        try await bystanderStillServed()
        await bystander.close()
    }

    @Test func badReportsGetTheirReasonAndTheSessionGoesOn() async throws {
        let bystander = try await self.bystander()
        let guest = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g2")
        let hello = try #require(try await guest.start())
        #expect(hello.tenantID == "t1" && hello.guestID == "g2")
        let cases: [(UInt64, [(UInt64, UInt64)], Pagebroker_V1_ReasonCode)] = [
            (1, [(0, 9)], .ok),
            (1, [(512, 9)], .sequenceReplayed),
            (2, [(1 << 18, 9)], .outOfBounds),
            (3, [(256, 9)], .notAligned),
            (4, [(0, 10), (512, 9)], .overlapInBatch),
            (5, [(0, 8)], .orderOutOfBounds),
            (6, [(0, 11)], .orderOutOfBounds),
            (7, [], .invalidRange),
            (8, [(1024, 10)], .ok),
        ]
        for (index, (seq, blocks, reason)) in cases.enumerated() {
            let result = try await guest.report(seq: seq, blocks)
            #expect(result?.reason == reason, "case \(index): \(String(describing: result))")
            #expect(result?.seq == seq)
            let bystanderResult = try await bystander.report(seq: UInt64(index + 1), [(UInt64(index) * 512, 9)])
            #expect(bystanderResult?.reason == .ok)
        }
        await guest.close()
        await bystander.close()
    }

    @Test func pausedAndRateLimitedTenantsAreToldWhenToRetry() async throws {
        let paused = try await RawGuest.connect(port: self.broker.port, tenant: "paused", guest: "g1")
        #expect(try await paused.start() != nil)
        let refused = try await paused.report(seq: 1, [(0, 9)])
        #expect(refused?.reason == .tenantPaused)
        #expect((refused?.retryAfterMs ?? 0) > 0)

        let limited = try await RawGuest.connect(port: self.broker.port, tenant: "limited", guest: "g1")
        #expect(try await limited.start() != nil)
        var reasons: [Pagebroker_V1_ReasonCode] = []
        for seq in 1...4 {
            let result = try await limited.report(seq: UInt64(seq), [(UInt64(seq) * 512, 9)])
            reasons.append(result?.reason ?? .unspecified)
            if result?.reason == .rateLimited { #expect((result?.retryAfterMs ?? 0) > 0) }
        }
        // A burst of 2, then over the rate: the last ones are limited.
        #expect(reasons.prefix(2).allSatisfy { $0 == .ok })
        #expect(reasons.contains(.rateLimited))
        await paused.close()
        await limited.close()
    }

    @Test func aNewerSessionOfTheSameGuestReplacesTheOlder() async throws {
        let first = try await RawGuest.connect(port: self.broker.port, tenant: "t3", guest: "g1")
        #expect(try await first.start() != nil)
        let second = try await RawGuest.connect(port: self.broker.port, tenant: "t3", guest: "g1")
        #expect(try await second.start() != nil)
        guard case .goodbye = await first.receive()?.body else {
            Issue.record("the older session got no goodbye")
            return
        }
        #expect(await first.waitClosed())
        #expect(try await second.report(seq: 1, [(0, 9)])?.reason == .ok)
        await second.close()
    }
}

/// Certificates that must not get a session.
@Suite struct HandshakeRefusalTests {
    let broker: BrokerProcess

    init() throws { self.broker = try BrokerProcess() }

    /// A real `openssl s_client` with no client certificate: the broker closes on it and logs why.
    @Test func noClientCertificate() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "openssl", "s_client", "-connect", "127.0.0.1:\(self.broker.port)", "-CAfile", TestPKI.path("ca.pem"),
            "-quiet",
        ]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let body: [UInt8] = try RawGuest.hello.serializedBytes()
        input.fileHandleForWriting.write(Data([0, 0, 0, UInt8(body.count)] + body))
        // The broker closes the connection: s_client reaches end of stream having received nothing.
        let received = output.fileHandleForReading.readDataToEndOfFile()
        process.terminate()
        process.waitUntilExit()
        #expect(received.isEmpty)
        #expect(await self.broker.waitForLog("peer_certificate_missing"), "\(self.broker.logText)")
    }

    @Test(arguments: [
        ("wrong CA", "client-wrong-ca"),
        ("expired", "client-expired"),
        ("no URI SAN", "client-no-uri"),
        ("another trust domain", "client-other-domain"),
        ("not a guest SPIFFE ID", "client-malformed-id"),
        ("unknown tenant", "client-t9-g1"),
    ])
    func refusedBeforeAnySession(name: String, certificate: String?) async throws {
        let directory = TestPKI.directory
        let guest = try await RawGuest.connect(
            port: self.broker.port,
            certificate: certificate.map { "\(directory)/\($0).pem" },
            key: certificate.map { "\(directory)/\($0).key" }
        )
        // TLS 1.3 lets the client finish before the server has judged its certificate: the
        // refusal shows as the connection closing with nothing received.
        try? await guest.send(RawGuest.hello)
        #expect(await guest.receive() == nil, "\(name): got a frame")
        #expect(await guest.waitClosed(), "\(name): not closed")
        // The broker keeps serving good guests.
        let good = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g3")
        #expect(try await good.start() != nil, "after \(name)")
        await good.close()
    }
}
