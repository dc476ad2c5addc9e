import BrokerProtocol
import Foundation
import Testing

/// The hostile guest of issue 11 against a live broker: hellos that crashed it are refused with
/// their documented code, the largest pools the limits allow are accounted, and a guest of
/// another tenant is served throughout.
@Suite(.serialized) struct HostileGuestTests {
    let broker: BrokerProcess

    init() throws { self.broker = try BrokerProcess() }

    func errorCode(_ frame: Pagebroker_V1_Frame?) -> Pagebroker_V1_ReasonCode? {
        guard case .error(let error) = frame?.body else { return nil }
        return error.code
    }

    static func hello(pageSize: UInt32, totalPages: UInt64) -> Pagebroker_V1_Frame {
        var hello = RawGuest.hello
        hello.clientHello.pageSize = pageSize
        hello.clientHello.totalPages = totalPages
        return hello
    }

    static func sync(_ ranges: [UInt64]) -> Pagebroker_V1_Frame {
        .with {
            $0.sync = .with {
                $0.chunk = 0
                $0.ranges = ranges
                $0.final = true
            }
        }
    }

    func ctlStatus() throws -> [String: Any] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("pagebrokerctl"))
        process.arguments = ["--socket", self.broker.adminSocket, "status", "--json"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }

    @Test func hostileHellosAreRefusedWithLimitExceededAndABystanderIsServed() async throws {
        let bystander = try await RawGuest.connect(port: self.broker.port, tenant: "t2", guest: "g1")
        #expect(try await bystander.start() != nil)
        var seq: UInt64 = 0
        func bystanderStillServed() async throws {
            seq += 1
            let result = try await bystander.report(seq: seq, [(seq * 1024, 10)])
            #expect(result?.reason == .ok, "bystander report \(seq): \(String(describing: result))")
        }
        try await bystanderStillServed()

        let hostile: [(UInt32, UInt64)] = [
            (1 << 31, 1 << 32),  // the hello that crashed the broker on its whole-pool sync
            (1 << 31, 1 << 18),  // a page size above 2^30
            (4096, (1 << 32) + 1),  // frames at and above 2^32
            (4096, .max),
            (1 << 30, 1 << 23),  // 2^53 bytes
        ]
        for (pageSize, totalPages) in hostile {
            let guest = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g2")
            try await guest.send(Self.hello(pageSize: pageSize, totalPages: totalPages))
            let answer = await guest.receive()
            #expect(
                self.errorCode(answer) == .limitExceeded,
                "\(pageSize) × \(totalPages): \(String(describing: answer))"
            )
            // What crashed the broker before: a sync and a report of the whole pool.
            try? await guest.send(Self.sync([0, totalPages]))
            try? await guest.send(
                .with {
                    $0.report = .with {
                        $0.seq = 1
                        $0.blocks = [0, 10]
                    }
                }
            )
            #expect(await guest.waitClosed())
            try await bystanderStillServed()
        }
        await bystander.close()
    }

    /// Two tenants at the largest pool the limits allow, whole pools synced and reported: every
    /// frame is accounted (no backend_failed), `status` answers, and the bystander is served.
    @Test func theLargestPoolsAreAccountedAcrossTenants() async throws {
        let bystander = try await RawGuest.connect(port: self.broker.port, tenant: "t2", guest: "g1")
        #expect(try await bystander.start() != nil)
        let pageSize: UInt32 = 1 << 20
        let totalPages: UInt64 = 1 << 32
        var guests: [RawGuest] = []
        for (tenant, name) in [("t1", "g3"), ("t3", "g1")] {
            let guest = try await RawGuest.connect(port: self.broker.port, tenant: tenant, guest: name)
            try await guest.send(Self.hello(pageSize: pageSize, totalPages: totalPages))
            guard case .serverHello(let hello) = await guest.receive()?.body else {
                Issue.record("the largest pool was refused")
                return
            }
            #expect(hello.maxPoolBytes == 1 << 52 && hello.maxTotalPages == 1 << 32 && hello.maxPageSize == 1 << 30)
            try await guest.send(Self.sync([0, totalPages]))
            // The last block of the pool, at frames just below 2^32.
            let result = try await guest.report(seq: 1, [(totalPages - 1024, 10)])
            #expect(result?.reason == .ok, "\(String(describing: result))")
            guests.append(guest)
        }
        let status = try self.ctlStatus()
        #expect((status["reclaimable_bytes"] as? NSNumber)?.int64Value == 1 << 53)
        let result = try await bystander.report(seq: 1, [(0, 10)])
        #expect(result?.reason == .ok)
        for guest in guests { await guest.close() }
        await bystander.close()
    }

    @Test func aPingBeforeTheHelloIsAProtocolViolationAndNotAnswered() async throws {
        let guest = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g2")
        try await guest.send(.with { $0.ping = .with { $0.nonce = 42 } })
        let answer = await guest.receive()
        #expect(self.errorCode(answer) == .protocolViolation, "\(String(describing: answer))")
        #expect(await guest.waitClosed())
    }

    @Test func aReplacedSessionGetsGoodbyeSessionReplaced() async throws {
        let older = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g3")
        #expect(try await older.start() != nil)
        let newer = try await RawGuest.connect(port: self.broker.port, tenant: "t1", guest: "g3")
        #expect(try await newer.start() != nil)
        guard case .goodbye(let goodbye) = await older.receive()?.body else {
            Issue.record("the older session got no Goodbye")
            return
        }
        #expect(goodbye.reason == .sessionReplaced)
        #expect(await older.waitClosed())
        let result = try await newer.report(seq: 1, [(0, 9)])
        #expect(result?.reason == .ok)
        await newer.close()
    }
}

/// Whether a partly received frame is a sign of life: it is not (docs/protocol.md,
/// "Heartbeats"). A guest that trickles a frame's bytes slower than the silence limit is closed
/// like a silent one, without an Error.
@Suite(.serialized) struct PartialFrameLivenessTests {
    @Test func aTrickledFrameIsNotASignOfLife() async throws {
        let configuration = BrokerProcess.configuration.replacingOccurrences(
            of: "heartbeat_interval: 30s",
            with: "heartbeat_interval: 1s"
        )
        let broker = try BrokerProcess(configuration: configuration)
        let guest = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        #expect(try await guest.start() != nil)
        // A 200-block report: over 600 bytes, one byte every 100 ms is a minute for the whole
        // frame, far past the 3 s silence limit. The pacing is the test's input, not a wait for
        // the broker: the assertion is only that the broker closed before the frame completed.
        var frame = Pagebroker_V1_Frame()
        frame.report.seq = 1
        frame.report.blocks = (0..<200).flatMap { [UInt64($0) * 1024, 10] }
        let body: [UInt8] = try frame.serializedBytes()
        let bytes = withUnsafeBytes(of: UInt32(body.count).bigEndian, Array.init) + body
        var sent = 0
        for byte in bytes.dropLast() {
            do { try await guest.send(bytes: [byte]) } catch { break }
            sent += 1
            if await guest.waitClosed(timeout: .milliseconds(100)) { break }
        }
        #expect(await guest.waitClosed(timeout: .seconds(20)))
        #expect(sent < bytes.count - 1, "the broker waited for the whole trickled frame")
        // Closed for silence: the broker's only frames were Pings, no Error.
        while let received = await guest.receive(timeout: .milliseconds(100)) {
            if case .error = received.body { Issue.record("closed with an Error: \(received)") }
        }
        _ = broker.terminate()
    }
}
