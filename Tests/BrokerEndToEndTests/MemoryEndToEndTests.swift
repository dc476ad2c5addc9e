import BrokerProtocol
import Foundation
import Testing

/// Host-side discard end to end: a real broker, memfds made by the test, attached through
/// `scripts/memory-attach` (from another uid with `runuser`), reports from a real TLS guest,
/// and every memory figure checked against the kernel (`st_blocks` of the test's own descriptor).
@Suite(.serialized) struct MemoryEndToEndTests {
    /// t1 may be attached by root (the test), t2 by nobody (uid 65534); t3 by no one.
    static let configuration = """
        trust_domain: example.org
        limits:
          heartbeat_interval: 30s
          handshake_timeout: 20s
        shutdown_timeout: 2s
        tenants:
          t1:
            memory:
              uids: [0]
          t2:
            memory:
              uids: [65534]
          t3: {}
        """

    static let twoMiB = 2 << 20

    /// A broker whose memory socket is there: it is bound after the guest listener, whose log
    /// line `BrokerProcess` waits for.
    func startBroker(directory: String? = nil, extraArguments: [String] = []) async throws -> BrokerProcess {
        let broker = try BrokerProcess(
            extraArguments: extraArguments,
            directory: directory,
            configuration: Self.configuration
        )
        #expect(await broker.waitForLog("memory socket listening"))
        return broker
    }

    func socket(_ broker: BrokerProcess) -> String { "\(broker.directory)/memory.sock" }

    /// Attaches with `options` and returns the first response's code name, detaching at once.
    func attachCode(
        _ broker: BrokerProcess,
        _ tenant: String,
        _ guest: String,
        _ options: [String],
        user: String? = nil
    )
        async throws -> String?
    {
        let attacher = try MemoryAttacher(
            socket: self.socket(broker),
            tenant: tenant,
            guest: guest,
            options,
            user: user
        )
        let code = await attacher.nextCode()
        attacher.finish()
        return code
    }

    func ctl(_ broker: BrokerProcess, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try SpawnedProcess.run(builtProduct("pagebrokerctl"), ["--socket", broker.adminSocket] + arguments)
    }

    func guestJSON(_ broker: BrokerProcess, _ tenant: String, _ guest: String) throws -> [String: Any]? {
        let (status, output) = try self.ctl(broker, ["guests", "--json"])
        guard status == 0, let data = output.data(using: .utf8),
            let list = try JSONSerialization.jsonObject(with: data) as? [[String: Any]]
        else { return nil }
        return list.first { $0["tenant"] as? String == tenant && $0["guest"] as? String == guest }
    }

    @Test func everyRefusalHasItsCode() async throws {
        let broker = try await self.startBroker()
        let memfd = try TestMemfd()
        let path = memfd.procPath
        // Nobody must reach the socket file to be refused by the broker rather than by its mode.
        chmod(self.socket(broker), 0o666)

        #expect(
            try await self.attachCode(broker, "t1", "g2", ["--memfd", "1073741824", "--seal-shrink"], user: "nobody")
                == "permission_denied"
        )
        #expect(
            try await self.attachCode(broker, "t2", "g1", ["--memfd", "1073741824", "--seal-shrink"], user: "nobody")
                == "ok"
        )
        #expect(try await self.attachCode(broker, "t3", "g1", ["--file", path]) == "permission_denied")
        #expect(try await self.attachCode(broker, "t9", "g1", ["--file", path]) == "unknown_guest")
        #expect(
            try await self.attachCode(broker, "t1", "g2", ["--file", path, "--version", "7"]) == "unsupported_version"
        )
        #expect(try await self.attachCode(broker, "t1", "g2", ["--memfd", "1073741824"]) == "not_sealed")
        #expect(
            try await self.attachCode(broker, "t1", "g2", ["--memfd", "1073741824", "--seal-shrink", "--seal-write"])
                == "write_sealed"
        )
        #expect(
            try await self.attachCode(
                broker,
                "t1",
                "g2",
                ["--memfd", "1073741824", "--seal-shrink", "--seal-future-write"]
            ) == "write_sealed"
        )
        #expect(
            try await self.attachCode(broker, "t1", "g2", ["--memfd", "1073745920", "--seal-shrink"]) == "size_mismatch"
        )
        #expect(try await self.attachCode(broker, "t1", "g2", ["--file", path, "--read-only"]) == "read_only")
        #expect(try await self.attachCode(broker, "t1", "g2", ["--pipe"]) == "not_shared_memory")
        #expect(try await self.attachCode(broker, "t1", "g2", ["--no-fd"]) == "no_descriptor")
        #expect(try await self.attachCode(broker, "t1", "g2", ["--file", path, "--two-fds"]) == "no_descriptor")
        #expect(
            try await self.attachCode(broker, "t1", "g2", ["--file", path, "--page-size", "3000", "--pages", "1024"])
                == "invalid_geometry"
        )
        #expect(try await self.attachCode(broker, "t1", "g2", ["--garbage"]) == "protocol_violation")
        #expect(try await self.attachCode(broker, "t1", "g2", ["--huge-length"]) == "protocol_violation")

        // A file on a disk file system (not tmpfs), where /var/tmp is one.
        let fileSystem = try SpawnedProcess.run("/usr/bin/stat", ["-f", "-c", "%T", "/var/tmp"]).output
        if !fileSystem.hasPrefix("tmpfs") {
            let file = "/var/tmp/pagebroker-e2e-\(UUID().uuidString)"
            #expect(FileManager.default.createFile(atPath: file, contents: nil))
            defer { unlink(file) }
            truncate(file, 1 << 30)
            #expect(try await self.attachCode(broker, "t1", "g2", ["--file", file]) == "not_shared_memory")
        }

        // One attachment per guest; a second attach on the same connection is a violation.
        let first = try MemoryAttacher(socket: self.socket(broker), tenant: "t1", guest: "g2", ["--file", path])
        #expect(await first.nextCode() == "ok")
        #expect(try await self.attachCode(broker, "t1", "g2", ["--file", path]) == "already_attached")
        first.send("attach-again")
        #expect(await first.nextCode() == "protocol_violation")
        first.finish()
        #expect(await broker.waitForLog("memory detached"))
        // Detached: the guest can be attached again.
        #expect(try await self.attachCode(broker, "t1", "g2", ["--file", path]) == "ok")

        // Still serving after all of it.
        #expect(try self.ctl(broker, ["status"]).status == 0)
        #expect(broker.terminate() == 0)
    }

    /// The broker's metrics exposition (it was started with `--metrics-listen 127.0.0.1:0`).
    func scrape(_ broker: BrokerProcess) async throws -> String {
        let (status, output) = try self.ctl(broker, ["status", "--json"])
        #expect(status == 0)
        let match = try #require(output.firstMatch(of: /http:\/\/127\.0\.0\.1:(\d+)\/metrics/))
        return try await MetricsEndToEndTests.get(port: Int(match.1)!, path: "/metrics").body
    }

    @Test func reportToAttachedGuestIsPunchedBeforeItsOK() async throws {
        let broker = try await self.startBroker(extraArguments: ["--metrics-listen", "127.0.0.1:0"])
        let memfd = try TestMemfd()
        memfd.fill(frames: 0, count: 4096)
        let before = memfd.allocatedBytes
        #expect(before == 4096 * 4096)
        let attacher = try MemoryAttacher(
            socket: self.socket(broker),
            tenant: "t1",
            guest: "g2",
            ["--file", memfd.procPath]
        )
        #expect(await attacher.nextCode() == "ok")

        let guest = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        let hello = try await guest.start()
        #expect(hello?.priorReportsSettled == true)
        let result = try await guest.report(seq: 1, [(0, 9), (1024, 10)])
        #expect(result?.reason == .ok)
        // Punched before the OK: 2 MiB + 4 MiB fewer allocated bytes, exactly, seen by the test's
        // own descriptor; the frames outside the report still hold their data.
        #expect(memfd.allocatedBytes == before - 3 * Self.twoMiB)
        #expect(!memfd.holdsPattern(frame: 0) && !memfd.holdsPattern(frame: 2047))
        #expect(memfd.holdsPattern(frame: 512) && memfd.holdsPattern(frame: 2048))

        let figures = try #require(try self.guestJSON(broker, "t1", "g2"))
        #expect(figures["memory_attached"] as? Bool == true)
        #expect(figures["resident_bytes"] as? Int == memfd.allocatedBytes)
        #expect(figures["discarded_bytes"] as? Int == 3 * Self.twoMiB)
        // The same figures in the metrics: the kernel's resident bytes, what was punched, one
        // punch timed.
        let exposition = try await self.scrape(broker)
        #expect(
            MetricsEndToEndTests.sample(exposition, #"pagebroker_resident_bytes{tenant="t1"}"#)
                == Double(memfd.allocatedBytes)
        )
        #expect(
            MetricsEndToEndTests.sample(exposition, #"pagebroker_discarded_bytes_total{tenant="t1"}"#)
                == Double(3 * Self.twoMiB)
        )
        #expect(MetricsEndToEndTests.sample(exposition, "pagebroker_discard_punch_seconds_count") == 1)

        // The broker never maps guest memory.
        let maps = try String(contentsOfFile: "/proc/\(broker.process.processIdentifier)/maps", encoding: .utf8)
        #expect(!maps.contains("memfd:"))

        // Detached: reports are accounted only; the memory keeps its data.
        attacher.finish()
        #expect(await broker.waitForLog("memory detached"))
        memfd.fill(frames: 0, count: 512)
        let refilled = memfd.allocatedBytes
        #expect(try await guest.report(seq: 2, [(0, 9)])?.reason == .ok)
        #expect(memfd.allocatedBytes == refilled)
        #expect(memfd.holdsPattern(frame: 0))
        #expect(try self.guestJSON(broker, "t1", "g2")?["memory_attached"] as? Bool == false)
        await guest.close()
        #expect(broker.terminate() == 0)
    }

    @Test func failedPunchFailsTheReportAndChangesNothing() async throws {
        let broker = try await self.startBroker()
        let memfd = try TestMemfd()
        memfd.fill(frames: 0, count: 1024)
        let attacher = try MemoryAttacher(
            socket: self.socket(broker),
            tenant: "t1",
            guest: "g2",
            ["--file", memfd.procPath]
        )
        #expect(await attacher.nextCode() == "ok")
        // Sealed after the attach: every punch now fails with EPERM.
        attacher.send("seal-future-write")
        #expect(await attacher.nextCode() == "SEALED")
        let before = memfd.allocatedBytes

        let guest = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        _ = try await guest.start()
        let result = try #require(try await guest.report(seq: 1, [(0, 9)]))
        #expect(result.reason == .backendFailed)
        #expect(result.message.contains("EPERM"))
        #expect(result.retryAfterMs > 0)
        #expect(memfd.allocatedBytes == before)
        #expect(memfd.holdsPattern(frame: 0))
        let figures = try #require(try self.guestJSON(broker, "t1", "g2"))
        #expect(figures["reclaimable_bytes"] as? Int == 0)
        #expect((figures["discard_failures_by_errno"] as? [String: Int])?["EPERM"] == 1)
        await guest.close()
        attacher.finish()
        #expect(broker.terminate() == 0)
    }

    @Test func inhibitByTheAttacherAndByPagebrokerctl() async throws {
        let broker = try await self.startBroker()
        let memfd = try TestMemfd()
        memfd.fill(frames: 0, count: 2048)
        let attacher = try MemoryAttacher(
            socket: self.socket(broker),
            tenant: "t1",
            guest: "g2",
            ["--file", memfd.procPath]
        )
        #expect(await attacher.nextCode() == "ok")
        let guest = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        _ = try await guest.start()
        let full = memfd.allocatedBytes

        attacher.send("inhibit snapshot")
        #expect(await attacher.nextCode() == "ok")
        let inhibited = try #require(try await guest.report(seq: 1, [(0, 9)]))
        #expect(inhibited.reason == .discardInhibited)
        #expect(inhibited.retryAfterMs > 0)
        #expect(memfd.allocatedBytes == full)
        attacher.send("allow")
        #expect(await attacher.nextCode() == "ok")
        #expect(try await guest.report(seq: 2, [(0, 9)])?.reason == .ok)
        #expect(memfd.allocatedBytes == full - Self.twoMiB)

        #expect(try self.ctl(broker, ["inhibit", "t1", "g2", "--reason", "vfio"]).status == 0)
        #expect(try self.guestJSON(broker, "t1", "g2")?["discard_inhibited_by"] as? String == "pagebrokerctl: vfio")
        #expect(try await guest.report(seq: 3, [(512, 9)])?.reason == .discardInhibited)
        #expect(memfd.allocatedBytes == full - Self.twoMiB)
        #expect(try self.ctl(broker, ["allow-discard", "t1", "g2"]).status == 0)
        #expect(try await guest.report(seq: 4, [(512, 9)])?.reason == .ok)
        #expect(memfd.allocatedBytes == full - 2 * Self.twoMiB)
        await guest.close()
        attacher.finish()
        #expect(broker.terminate() == 0)
    }

    @Test func guestPauseOutlivesARestart() async throws {
        var broker = try await self.startBroker()
        let directory = broker.directory
        #expect(try self.ctl(broker, ["pause", "t1", "g2"]).status == 0)
        var paused = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        _ = try await paused.start()
        let refused = try #require(try await paused.report(seq: 1, [(0, 9)]))
        #expect(refused.reason == .guestPaused)
        #expect(refused.retryAfterMs > 0)
        let other = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g3")
        _ = try await other.start()
        #expect(try await other.report(seq: 1, [(0, 9)])?.reason == .ok)
        await other.close()
        await paused.close()
        #expect(broker.terminate() == 0)

        broker = try BrokerProcess(directory: directory, configuration: Self.configuration)
        paused = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        _ = try await paused.start()
        #expect(try await paused.report(seq: 1, [(0, 9)])?.reason == .guestPaused)
        #expect(try self.ctl(broker, ["resume", "t1", "g2"]).status == 0)
        #expect(try await paused.report(seq: 2, [(0, 9)])?.reason == .ok)
        await paused.close()
        #expect(broker.terminate() == 0)
    }
}
