import BrokerProtocol
import Foundation
import Synchronization
import Testing

/// `pagebrokerd` as systemd runs it, without a running systemd: `systemd-socket-activate` binds
/// the two named sockets and starts the broker on the first connection, and a datagram socket
/// of the test's own stands in for systemd's `NOTIFY_SOCKET`.
@Suite(.serialized) struct SystemdServiceTests {
    /// A free loopback port: systemd-socket-activate needs a number (it refuses port 0), so the
    /// OS picks one and the test hands it on.
    static func freePort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0
            }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A socket-activated broker and what it says to systemd.
    final class ActivatedBroker: Sendable {
        let process: SpawnedProcess
        let directory: String
        let port: Int
        let notify: NotifyListener
        var logText: String { self.process.text }
        /// Waits until the broker has logged `text` or its output has closed without it.
        func waitForLog(_ text: String) async -> Bool { await self.process.output.wait(for: text) }
        var adminSocket: String { "\(self.directory)/admin.sock" }
        var configPath: String { "\(self.directory)/pagebrokerd.yaml" }

        static func configuration(tenants: [String], certificate: String = TestPKI.path("server.pem")) -> String {
            """
            trust_domain: example.org
            state_directory: STATE
            tls:
              certificate: \(certificate)
              key: \(TestPKI.path("server.key"))
              client_ca: \(TestPKI.path("ca.pem"))
            limits:
              heartbeat_interval: 30s
            shutdown_timeout: 3s
            tenants:
            \(tenants.map { "  \($0): {}" }.joined(separator: "\n"))
            """
        }

        static func writeConfiguration(
            to path: String,
            directory: String,
            tenants: [String],
            certificate: String = TestPKI.path("server.pem")
        ) throws {
            try Self.configuration(tenants: tenants, certificate: certificate)
                .replacingOccurrences(of: "STATE", with: "\(directory)/state")
                .write(toFile: path, atomically: true, encoding: .utf8)
        }

        func writeConfiguration(tenants: [String], certificate: String = TestPKI.path("server.pem")) throws {
            try Self.writeConfiguration(
                to: self.configPath,
                directory: self.directory,
                tenants: tenants,
                certificate: certificate
            )
        }

        init() throws {
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("pagebrokerd-systemd-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            self.directory = directory
            let port = try SystemdServiceTests.freePort()
            self.port = port
            let notify = try NotifyListener(path: "\(directory)/notify.sock")
            self.notify = notify
            try Self.writeConfiguration(
                to: "\(directory)/pagebrokerd.yaml",
                directory: directory,
                tenants: ["t1", "t2"]
            )
            let listening = DispatchSemaphore(value: 0)
            self.process = try SpawnedProcess(
                "/usr/bin/systemd-socket-activate",
                [
                    "--listen=127.0.0.1:\(port)", "--listen=\(directory)/admin.sock", "--fdname=guest:admin",
                    "-E", "NOTIFY_SOCKET=\(notify.path)", "-E", "WATCHDOG_USEC=2000000",
                    builtProduct("pagebrokerd"), "--config", "\(directory)/pagebrokerd.yaml",
                ]
            ) { text in
                // systemd-socket-activate says so once both sockets are bound.
                if text.contains("Listening on \(directory)/admin.sock") { listening.signal() }
            }
            guard listening.wait(timeout: .now() + .seconds(30)) == .success else {
                self.process.signal(SIGKILL)
                throw BrokerProcess.BrokerFailedToStart(log: self.process.text)
            }
        }

        /// Runs `pagebrokerctl ARGS --json`; the first call is what starts the broker.
        func ctl(_ arguments: [String]) throws -> (status: Int32, output: Data) {
            let result = try SpawnedProcess.run(
                builtProduct("pagebrokerctl"),
                ["--socket", self.adminSocket] + arguments + ["--json"]
            )
            return (result.status, Data(result.output.utf8))
        }

        func signal(_ number: Int32) { self.process.signal(number) }

        deinit {
            if !self.process.hasExited {
                self.process.signal(SIGKILL)
                self.process.wait()
            }
            self.notify.close()
        }
    }

    struct Status: Decodable {
        var listening: [String]
        var tenants: Int
        var sessions: Int
    }

    struct Tenant: Decodable {
        var tenant: String
    }

    @Test func socketActivatedLifecycleReloadAndStop() async throws {
        let broker = try ActivatedBroker()

        // The first admin connection starts the broker; it is served on the adopted socket.
        let first = try broker.ctl(["status"])
        #expect(first.status == 0, "\(broker.logText)")
        let status = try JSONDecoder().decode(Status.self, from: first.output)
        #expect(status.listening.first == "127.0.0.1:\(broker.port)", "the guest listener is the adopted socket")
        #expect(status.tenants == 2)
        let ready = try #require(broker.notify.wait { $0["READY"] == "1" })
        #expect(ready.index == 0, "READY=1 is the first thing systemd hears")
        #expect(broker.notify.wait(after: ready.index) { $0["STATUS"]?.contains("2 tenants") == true } != nil)

        // A guest on the adopted guest socket is served.
        let guest = try await RawGuest.connect(port: broker.port, tenant: "t1", guest: "g2")
        #expect(try await guest.start() != nil)
        let result = try await guest.report(seq: 1, [(512, 9)])
        #expect(result?.reason == .ok)

        // The watchdog is fed from the event loops' health.
        #expect(broker.notify.wait { $0["WATCHDOG"] == "1" } != nil, "WATCHDOG=1 within the 2 s WatchdogSec")

        // A good reload: a new tenant, without dropping the guest.
        try broker.writeConfiguration(tenants: ["t1", "t2", "t3"])
        var mark = broker.notify.messages.count
        broker.signal(SIGHUP)
        let reloading = try #require(broker.notify.wait(after: mark) { $0["RELOADING"] == "1" })
        #expect(UInt64(reloading.message["MONOTONIC_USEC"] ?? "") != nil, "RELOADING=1 carries MONOTONIC_USEC")
        let reloaded = try #require(broker.notify.wait(after: reloading.index) { $0["READY"] == "1" })
        #expect(
            broker.notify.wait(after: reloaded.index) {
                let status = $0["STATUS"] ?? ""
                return status.hasPrefix("3 tenants") && status.hasSuffix("; last reload applied")
            }
                != nil
        )
        #expect(try await guest.report(seq: 2, [(1024, 9)])?.reason == .ok, "the session survived the reload")

        // A broken reload: refused, shown in STATUS, the old configuration stays.
        try broker.writeConfiguration(tenants: ["t1"], certificate: "\(broker.directory)/missing.pem")
        mark = broker.notify.messages.count
        broker.signal(SIGHUP)
        let refusedReady = try #require(
            broker.notify.wait(after: mark) { $0["READY"] == "1" },
            "READY=1 follows a refused reload too"
        )
        let refused = try #require(
            broker.notify.wait(after: refusedReady.index) { $0["STATUS"]?.contains("REFUSED") == true }
        )
        #expect(refused.message["STATUS"]?.contains("missing.pem") == true, "the reason names the file")
        #expect(await broker.waitForLog("reload refused"))
        let tenants = try JSONDecoder().decode([Tenant].self, from: try broker.ctl(["tenants"]).output)
        #expect(tenants.map(\.tenant) == ["t1", "t2", "t3"], "the previous policy is still in force")
        #expect(try await guest.report(seq: 3, [(2048, 9)])?.reason == .ok)

        // SIGTERM: STOPPING=1, the guest is told goodbye (shutting_down), exit 0 in the bound.
        let stopAsked = ContinuousClock.now
        broker.signal(SIGTERM)
        #expect(broker.notify.wait { $0["STOPPING"] == "1" } != nil)
        let goodbye = await guest.receive()
        if case .goodbye(let body)? = goodbye?.body {
            #expect(body.reason == .shuttingDown)
        } else {
            Issue.record("expected a Goodbye(shutting_down), got \(String(describing: goodbye))")
        }
        #expect(broker.process.wait() == 0, "\(broker.logText)")
        #expect(ContinuousClock.now - stopAsked < .seconds(3 + 5), "exits within shutdown_timeout")

        #expect(
            broker.notify.lifecycle == [
                "READY", "STATUS", "RELOADING", "READY", "STATUS", "RELOADING", "READY", "STATUS", "STOPPING",
                "STATUS",
            ]
        )
    }

    @Test func pauseSurvivesARestart() async throws {
        let broker = try ActivatedBroker()
        #expect(try broker.ctl(["pause", "t2"]).status == 0)
        let state = try String(contentsOfFile: "\(broker.directory)/state/paused-tenants.json", encoding: .utf8)
        #expect(state.contains("\"t2\" : \"paused\""), "\(state)")
        broker.signal(SIGTERM)
        #expect(broker.process.wait() == 0)

        // The same state directory, a fresh (not socket-activated) broker.
        let restarted = try BrokerProcess(
            extraArguments: ["--state-directory", "\(broker.directory)/state"]
        )
        let guest = try await RawGuest.connect(port: restarted.port, tenant: "t2", guest: "g1")
        #expect(try await guest.start() != nil)
        #expect(try await guest.report(seq: 1, [(512, 9)])?.reason == .tenantPaused)
        await guest.close()
        #expect(restarted.terminate() == 0)
    }

    @Test func unknownSocketNamesAreRefused() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("pagebrokerd-systemd-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let configPath = "\(directory)/pagebrokerd.yaml"
        try ActivatedBroker.configuration(tenants: ["t1"]).replacingOccurrences(of: "STATE", with: "\(directory)/state")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        let port = try Self.freePort()
        let listening = DispatchSemaphore(value: 0)
        let process = try SpawnedProcess(
            "/usr/bin/systemd-socket-activate",
            ["--listen=127.0.0.1:\(port)", "--fdname=metrics", builtProduct("pagebrokerd"), "--config", configPath]
        ) { text in
            if text.contains("Listening on 127.0.0.1:\(port)") { listening.signal() }
        }
        #expect(listening.wait(timeout: .now() + .seconds(30)) == .success)
        // Connecting starts the broker, which must refuse the socket it cannot place.
        let client = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        let status = process.wait()
        close(client)
        #expect(status == 1)
        let log = process.text
        #expect(log.contains("unknown_descriptor_name"), "\(log)")
    }

    @Test func underJournaldLinesCarryPriorities() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("pagebrokerd-journal-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try ActivatedBroker.writeConfiguration(to: "\(directory)/c.yaml", directory: directory, tenants: ["t1"])
        let listening = DispatchSemaphore(value: 0)
        let broker = try SpawnedProcess(
            builtProduct("pagebrokerd"),
            [
                "--config", "\(directory)/c.yaml", "--listen", "127.0.0.1:0", "--admin-socket",
                "\(directory)/admin.sock",
            ],
            asJournal: true
        ) { text in
            if text.contains("admin socket ready") { listening.signal() }
        }
        #expect(listening.wait(timeout: .now() + .seconds(30)) == .success)
        broker.signal(SIGTERM)
        #expect(broker.wait() == 0)
        let lines = broker.text.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("<6>pagebrokerd: listening for guests") }, "\(broker.text)")
        #expect(lines.allSatisfy { $0.first == "<" }, "every line has a priority: \(broker.text)")
        #expect(!broker.text.contains("+0000"), "no timestamps: the journal has its own")
    }
}
