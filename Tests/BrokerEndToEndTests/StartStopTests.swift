import BrokerProtocol
import Foundation
import Testing

/// Starting and stopping as systemd expects: a stop bounded by `shutdown_timeout` whatever the
/// guests do, exit status 2 for every broken configuration (from a start exactly as from
/// `--check`), one plain line of error output, listeners named when they cannot bind, and a
/// live broker's admin socket left alone.
@Suite(.serialized) struct StartStopTests {
    // MARK: Stopping

    /// The broker's configuration with `shutdown_timeout` replaced.
    static func configuration(shutdownTimeout seconds: Int) -> String {
        BrokerProcess.configuration.replacingOccurrences(
            of: "shutdown_timeout: 2s",
            with: "shutdown_timeout: \(seconds)s"
        )
    }

    struct Tenant: Decodable {
        var tenant: String
        var reportsFailed: Int

        enum CodingKeys: String, CodingKey {
            case tenant
            case reportsFailed = "reports_failed"
        }
    }

    @Test(arguments: [1, 3, 8])
    func sigtermWithAGuestThatStoppedReadingExitsWithinShutdownTimeout(seconds: Int) async throws {
        let broker = try BrokerProcess(configuration: Self.configuration(shutdownTimeout: seconds))
        let fleet = GuestFleetTests()
        // A guest that behaves, to be told goodbye.
        let polite = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        #expect(try await polite.start() != nil)

        // A guest that stops reading, then sends more reports than the broker's answers (about
        // 45 bytes of TLS record each) can fit in its small receive buffer.
        let stalled = try await RawGuest.connect(port: broker.port, tenant: "t2", guest: "g1", receiveBuffer: 4096)
        #expect(try await stalled.start() != nil)
        try await stalled.stopReading()
        let reports = 20_000
        var bytes: [UInt8] = []
        bytes.reserveCapacity(reports * 8)
        for seq in 1...reports {
            bytes += try RawGuest.encoded(.with { $0.report = .with { $0.seq = UInt64(seq) } })
        }
        try await stalled.send(bytes: bytes)
        // Every report answered (refused: empty) means every answer is queued behind a reader
        // that does not read.
        let deadline = ContinuousClock.now + .seconds(120)
        while try fleet.ctl(broker, ["tenants"], as: [Tenant].self).first(where: { $0.tenant == "t2" })?
            .reportsFailed ?? 0 < reports && ContinuousClock.now < deadline
        {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(
            try fleet.ctl(broker, ["tenants"], as: [Tenant].self).first { $0.tenant == "t2" }?.reportsFailed == reports
        )
        // The kernel holds bytes the broker sent and the guest has not taken: whatever the broker
        // sends next (its Goodbye, its close_notify) waits behind them.
        let guestPort = try #require(stalled.channel.localAddress?.port)
        let queued = try #require(try Self.sendQueue(from: broker.port, to: guestPort))
        #expect(queued > 0)

        let started = ContinuousClock.now
        kill(broker.process.processIdentifier, SIGTERM)
        // The polite guest is told goodbye while the broker still runs.
        let goodbye = await polite.receive()
        #expect(goodbye.map { if case .goodbye(let g) = $0.body { g.reason == .shuttingDown } else { false } } == true)
        broker.process.waitUntilExit()
        let elapsed = ContinuousClock.now - started
        #expect(broker.process.terminationStatus == 0)
        // The stalled session can never finish, so the broker waits the whole timeout for it,
        // then closes it: no longer.
        #expect(elapsed >= .seconds(seconds), "exited after \(elapsed)")
        #expect(elapsed <= .seconds(seconds) + .milliseconds(1500), "exited after \(elapsed):\n\(broker.logText)")
        #expect(await broker.waitForLog("closing 1 sessions without waiting for them"))
        await polite.close()
        await stalled.close()
    }

    /// The bytes waiting in the send queue of the loopback TCP socket from port `local` to
    /// port `remote` (`tx_queue` in /proc/net/tcp), or `nil` if there is no such socket.
    static func sendQueue(from local: Int, to remote: Int) throws -> Int? {
        // Read to the end: /proc files report size 0, and the table runs past one page.
        let file = try #require(FileHandle(forReadingAtPath: "/proc/net/tcp"))
        defer { try? file.close() }
        let table = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
        let want = (String(format: "0100007F:%04X", local), String(format: "0100007F:%04X", remote))
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 4, fields[1] == want.0, fields[2] == want.1 else { continue }
            return fields[4].split(separator: ":").first.flatMap { Int($0, radix: 16) }
        }
        return nil
    }

    // MARK: Broken configurations

    /// A scratch directory with a configuration file and the test PKI's good files.
    struct Scratch {
        let directory: String
        var config: String { "\(self.directory)/pagebrokerd.yaml" }

        init(yaml: String = BrokerProcess.configuration) throws {
            self.directory =
                FileManager.default.temporaryDirectory.appendingPathComponent(
                    "pagebrokerd-config-\(UUID().uuidString)"
                ).path
            try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
            try yaml.write(toFile: self.config, atomically: true, encoding: .utf8)
        }

        /// Flags for a broker that would start: loopback, free port, own admin socket and state.
        func arguments(_ overrides: [String: String] = [:]) -> [String] {
            var flags: [(String, String)] = [
                ("--listen", "127.0.0.1:0"), ("--tls-cert", TestPKI.path("server.pem")),
                ("--tls-key", TestPKI.path("server.key")), ("--client-ca", TestPKI.path("ca.pem")),
                ("--admin-socket", "\(self.directory)/admin.sock"),
                ("--state-directory", "\(self.directory)/state"),
            ]
            flags = flags.filter { overrides[$0.0] != "" }.map { ($0.0, overrides[$0.0] ?? $0.1) }
            for (flag, value) in overrides where !flags.contains(where: { $0.0 == flag }) && value != "" {
                flags.append((flag, value))
            }
            return ["--config", self.config] + flags.flatMap { [$0.0, $0.1] }
        }
    }

    /// Runs `pagebrokerd` to its exit (killing it if it is still up after 30 s: a broker that
    /// starts although it should not fails the test rather than hang it).
    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = try SpawnedProcess(builtProduct("pagebrokerd"), arguments)
        let deadline = ContinuousClock.now + .seconds(30)
        while !process.hasExited && ContinuousClock.now < deadline {
            usleep(20_000)
        }
        if !process.hasExited { process.signal(SIGKILL) }
        return (process.wait(), process.text)
    }

    /// `--check` and a real start both exit 2 and print exactly `expected` (one line).
    static func expectRefused(
        _ arguments: [String],
        _ expected: String,
        sourceLocation: SourceLocation = #_sourceLocation
    )
        throws
    {
        for mode in ["--check", "start"] {
            let (status, output) = try Self.run(mode == "--check" ? arguments + ["--check"] : arguments)
            #expect(status == 2, "\(mode): \(output)", sourceLocation: sourceLocation)
            #expect(output == expected + "\n", "\(mode)", sourceLocation: sourceLocation)
        }
    }

    @Test func aMissingCertificateOrCAExitsTwoFromStartAsFromCheck() throws {
        let scratch = try Scratch()
        try Self.expectRefused(
            scratch.arguments(["--tls-cert": "\(scratch.directory)/missing.pem"]),
            "pagebrokerd: --tls-cert (tls.certificate): cannot read \(scratch.directory)/missing.pem: No such file or directory"
        )
        // Named in the file instead of a flag: the file and the key.
        let fromFile = try Scratch(
            yaml: BrokerProcess.configuration + "\ntls:\n  client_ca: /nonexistent/ca.pem\n"
        )
        try Self.expectRefused(
            fromFile.arguments(["--client-ca": ""]),
            "pagebrokerd: \(fromFile.config): tls.client_ca: cannot read /nonexistent/ca.pem: No such file or directory"
        )
    }

    @Test func anUnreadableJunkOrMismatchedKeyExitsTwo() throws {
        let scratch = try Scratch()
        // A directory cannot be read as a file, even by root (whom mode bits do not stop).
        try FileManager.default.createDirectory(
            atPath: "\(scratch.directory)/key-dir",
            withIntermediateDirectories: true
        )
        try Self.expectRefused(
            scratch.arguments(["--tls-key": "\(scratch.directory)/key-dir"]),
            "pagebrokerd: --tls-key (tls.key): cannot read \(scratch.directory)/key-dir: it is a directory"
        )
        try "not a key\n".write(toFile: "\(scratch.directory)/junk.key", atomically: true, encoding: .utf8)
        try Self.expectRefused(
            scratch.arguments(["--tls-key": "\(scratch.directory)/junk.key"]),
            "pagebrokerd: --tls-key (tls.key): \(scratch.directory)/junk.key holds no usable PEM private key (or it is encrypted)"
        )
        try Self.expectRefused(
            scratch.arguments(["--tls-key": TestPKI.path("client-t1-g1.key")]),
            "pagebrokerd: --tls-key (tls.key): \(TestPKI.path("client-t1-g1.key")) is not the key of the certificate in "
                + TestPKI.path("server.pem")
        )
    }

    @Test func openSSLsErrorQueueIsShownOnlyAtDebugLevel() throws {
        let scratch = try Scratch()
        try "not a key\n".write(toFile: "\(scratch.directory)/junk.key", atomically: true, encoding: .utf8)
        let arguments = scratch.arguments(["--tls-key": "\(scratch.directory)/junk.key"]) + ["--check"]
        let quiet = try Self.run(arguments)
        #expect(quiet.status == 2)
        #expect(!quiet.output.contains("OpenSSL error queue"))
        #expect(!quiet.output.contains("error:"))
        let debug = try Self.run(arguments + ["--log-level", "debug"])
        #expect(debug.status == 2)
        #expect(debug.output.hasPrefix("pagebrokerd: --tls-key (tls.key): "))
        #expect(debug.output.contains("OpenSSL error queue: error:"), "\(debug.output)")
    }

    @Test func aClientCAThatIsALeafCertificateIsRefused() throws {
        let scratch = try Scratch()
        try Self.expectRefused(
            scratch.arguments(["--client-ca": TestPKI.path("server.pem")]),
            "pagebrokerd: --client-ca (tls.client_ca): \(TestPKI.path("server.pem")): certificate 1 "
                + "(CN=pagebroker server,O=pagebroker test) is not a CA certificate (no basicConstraints CA:TRUE): "
                + "name the CA that issues the guests' certificates"
        )
    }

    @Test func aCorruptPauseFileOrAStateDirectoryThatCannotBeWrittenExitsTwo() throws {
        let scratch = try Scratch()
        let state = "\(scratch.directory)/state"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        try "{ not json".write(toFile: "\(state)/paused-tenants.json", atomically: true, encoding: .utf8)
        let (status, output) = try Self.run(scratch.arguments() + ["--check"])
        #expect(status == 2)
        #expect(
            output.hasPrefix(
                "pagebrokerd: --state-directory (state_directory): corrupt: \(state)/paused-tenants.json: "
            )
        )
        let started = try Self.run(scratch.arguments())
        #expect(started.status == 2)
        #expect(started.output == output)

        // A regular file where the directory should be: no uid, root included, can write there.
        let file = "\(scratch.directory)/state-file"
        try "".write(toFile: file, atomically: true, encoding: .utf8)
        try Self.expectRefused(
            scratch.arguments(["--state-directory": file]),
            "pagebrokerd: --state-directory (state_directory): unwritable: \(file): not a directory"
        )
        // Under it, too: the nearest existing parent is the file.
        try Self.expectRefused(
            scratch.arguments(["--state-directory": "\(file)/sub"]),
            "pagebrokerd: --state-directory (state_directory): unwritable: \(file)/sub: Not a directory"
        )
    }

    @Test func aConfigurationErrorIsOneLineWithFileLineAndKeyAndNoUsage() throws {
        let scratch = try Scratch(yaml: "trust_domain: example.org\ntenants:\n  acme:\n    max_guest: 3\n")
        try Self.expectRefused(
            scratch.arguments(),
            "pagebrokerd: \(scratch.config): line 4: tenants.acme.max_guest: unknown key; "
                + "known here: burst, max_guests, max_reports_per_second, memory, paused"
        )
    }

    // MARK: Listeners

    @Test func addressAlreadyInUseNamesTheListenerAndTheAddress() async throws {
        let first = try BrokerProcess()
        let scratch = try Scratch()
        let guest = try Self.run(scratch.arguments(["--listen": "127.0.0.1:\(first.port)"]))
        #expect(guest.status == 1)
        #expect(
            guest.output.contains(
                "pagebrokerd: guest listener 127.0.0.1:\(first.port): cannot listen: Address already in use\n"
            ),
            "\(guest.output)"
        )
        let metrics = try Self.run(scratch.arguments(["--metrics-listen": "127.0.0.1:\(first.port)"]))
        #expect(metrics.status == 1)
        #expect(
            metrics.output.contains(
                "pagebrokerd: metrics listener 127.0.0.1:\(first.port): cannot listen: Address already in use\n"
            ),
            "\(metrics.output)"
        )
        #expect(first.terminate() == 0)
    }

    @Test func aSecondBrokerOnALiveAdminSocketRefusesAndTheFirstStaysReachable() async throws {
        struct Status: Decodable { var sessions: Int }
        let first = try BrokerProcess()
        let fleet = GuestFleetTests()
        let scratch = try Scratch()
        let second = try Self.run(scratch.arguments(["--admin-socket": first.adminSocket]))
        #expect(second.status == 1)
        #expect(
            second.output.hasSuffix(
                "pagebrokerd: admin socket \(first.adminSocket) is in use: another pagebrokerd is listening on it\n"
            ),
            "\(second.output)"
        )
        // The first broker's socket is still there and still answers.
        #expect(FileManager.default.fileExists(atPath: first.adminSocket))
        #expect(try fleet.ctl(first, ["status"], as: Status.self).sessions == 0)

        // A socket file nobody listens on (the first broker killed) is replaced.
        first.kill()
        #expect(FileManager.default.fileExists(atPath: first.adminSocket))
        let third = try BrokerProcess(extraArguments: [], directory: first.directory)
        #expect(try fleet.ctl(third, ["status"], as: Status.self).sessions == 0)
        #expect(third.terminate() == 0)
    }
}
