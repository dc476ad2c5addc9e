import Foundation
import Testing

@testable import Broker
@testable import BrokerAdminClient

#if canImport(Glibc)
import Glibc
#endif

/// `pagebrokerctl` as an operator runs it: a real process against a real admin server.
@Suite("pagebrokerctl")
struct PagebrokerctlTests {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String

        /// The standard output as JSON.
        func json() throws -> Any {
            try JSONSerialization.jsonObject(with: Data(self.stdout.utf8))
        }
    }

    /// The built `pagebrokerctl`, next to this test bundle in the build directory.
    static var ctlPath: String {
        let exe =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // The test binary lives inside `<name>.xctest` on some layouts.
        while directory.path != "/"
            && !FileManager.default.fileExists(atPath: directory.appendingPathComponent("pagebrokerctl").path)
        {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("pagebrokerctl").path
    }

    func ctl(_ arguments: [String], environment: [String: String] = [:]) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.ctlPath)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: AdminSocket.environmentVariable)
        env.merge(environment) { $1 }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes to the end before waiting, so a full pipe cannot stall the child.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus,
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self)
        )
    }

    // MARK: Human output

    @Test("status prints aligned figures with human-readable bytes")
    func statusTable() async throws {
        try await withAdminServer { path, _ in
            let output = try self.ctl(["--socket", path, "status"])
            #expect(output.status == 0, "\(output.stderr)")
            #expect(
                output.stdout == """
                    version         1.2.3
                    state           running
                    uptime          1d 2h
                    listening       0.0.0.0:7443
                    tenants         2
                    guests          3 (2 connected)
                    sessions        2
                    reclaimable     1.5 GiB
                    reports ok      1200
                    reports failed  7

                    """
            )
        }
    }

    @Test("tenants prints a table with right-aligned numbers")
    func tenantsTable() async throws {
        try await withAdminServer { path, _ in
            let output = try self.ctl(["tenants", "--socket", path])
            #expect(output.status == 0, "\(output.stderr)")
            #expect(
                output.stdout == """
                    TENANT  GUESTS  CONNECTED  RECLAIMABLE  RESIDENT  REPORTS OK  FAILED  REPORTED     REUSED
                    acme         2          2      1.5 GiB       0 B        1200       7   4.0 GiB  512.0 MiB
                    beta         1          0          0 B       0 B           0       0       0 B        0 B

                    """
            )
        }
    }

    @Test("guests prints a table, of all tenants or of one")
    func guestsTable() async throws {
        try await withAdminServer { path, _ in
            let all = try self.ctl(["guests", "--socket", path])
            #expect(all.status == 0, "\(all.stderr)")
            #expect(
                all.stdout == """
                    TENANT  GUEST  CONNECTED  RECLAIMABLE  RESIDENT  RANGES  SYNCING  DISCARD
                    acme    vm-1   yes            1.0 GiB         -      12  no       none
                    acme    vm-2   yes          512.0 MiB         -       3  no       none
                    beta    vm-9   no                 0 B         -       0  no       none

                    """
            )
            let beta = try self.ctl(["guests", "--tenant", "beta", "--socket", path])
            #expect(beta.status == 0)
            #expect(beta.stdout.split(separator: "\n").count == 2)
            #expect(beta.stdout.contains("vm-9") && !beta.stdout.contains("vm-1"))
        }
    }

    @Test("pause and resume change the tenant and say so")
    func pauseAndResume() async throws {
        try await withAdminServer { path, backend in
            let pause = try self.ctl(["pause", "acme", "--socket", path])
            #expect(pause.status == 0, "\(pause.stderr)")
            #expect(pause.stdout == "paused tenant acme\n")
            #expect(backend.paused.withLock { $0 } == ["acme"])
            let resume = try self.ctl(["resume", "acme", "--socket", path, "--json"])
            #expect(resume.status == 0)
            #expect(resume.stdout == #"{"paused":false,"tenant":"acme"}"# + "\n")
            #expect(backend.paused.withLock { $0 }.isEmpty)
        }
    }

    @Test("top --once prints one frame of the view, paused tenants marked")
    func topOnce() async throws {
        try await withAdminServer { path, backend in
            try backend.setPaused(tenant: "beta", paused: true)
            let output = try self.ctl(["--socket", path, "top", "--once"])
            #expect(output.status == 0, "\(output.stderr)")
            let lines = output.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(lines.first == "pagebrokerd 1.2.3  up 1d 2h")
            #expect(lines.contains("sessions 2  guests 2/3 connected  reclaimable 1.5 GiB"))
            #expect(lines.contains("reports 1200 ok, 7 failed"))
            let acme = try #require(lines.first { $0.hasPrefix("acme ") })
            let beta = try #require(lines.first { $0.hasPrefix("beta ") })
            #expect(
                acme.contains("1.5 GiB") && acme.contains("2/2") && acme.hasSuffix("-") && !acme.hasSuffix("PAUSED")
            )
            #expect(acme.contains(String(repeating: "█", count: 10)))
            #expect(beta.contains("0 B") && beta.contains("0/1") && beta.hasSuffix("PAUSED") && !beta.contains("█"))
        }
    }

    @Test("top --json --iterations 2: one object a line, rates from the second on")
    func topJSON() async throws {
        try await withAdminServer { path, _ in
            let output = try self.ctl(["--socket", path, "top", "--json", "--iterations", "2", "--interval", "100ms"])
            #expect(output.status == 0, "\(output.stderr)")
            let lines = output.stdout.split(separator: "\n")
            try #require(lines.count == 2, "\(output.stdout)")
            let frames = try lines.map {
                try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
            }
            #expect(frames[0]["reports_ok_per_second"] is NSNull)
            #expect(frames[0]["interval_seconds"] is NSNull)
            // The fake broker's counters stand still: zero a second, measured over >= 100 ms.
            #expect(frames[1]["reports_ok_per_second"] as? Double == 0)
            #expect((frames[1]["interval_seconds"] as? Double ?? 0) >= 0.1)
            let tenants = try #require(frames[1]["tenants"] as? [[String: Any]])
            #expect(tenants.map { $0["tenant"] as? String } == ["acme", "beta"])
            #expect(tenants[0]["reclaimable_bytes"] as? Int == 3 << 29)
            #expect(tenants[0]["reports_failed_per_second"] as? Double == 0)
        }
    }

    @Test("top exits 1 when the broker refuses, like the other commands")
    func topRefused() async throws {
        let access = AdminAccessPolicy(allowedUIDs: [], allowedGIDs: [], exemptRootAndDaemonUser: false)
        try await withAdminServer(access: access) { path, _ in
            let output = try self.ctl(["--socket", path, "top", "--once"])
            #expect(output.status == 1)
            #expect(output.stderr.contains("permission_denied"), "\(output.stderr)")
        }
    }

    // MARK: JSON

    @Test("tenants --json has the documented keys and values")
    func tenantsJSON() async throws {
        try await withAdminServer { path, _ in
            let output = try self.ctl(["--socket", path, "tenants", "--json"])
            #expect(output.status == 0, "\(output.stderr)")
            let tenants = try #require(try output.json() as? [[String: Any]])
            #expect(tenants.count == 2)
            let acme = try #require(tenants.first)
            for key in [
                "tenant", "guests", "guests_connected", "reclaimable_bytes", "reports_ok", "reports_failed",
                "reports_failed_by_reason", "bytes_reported", "bytes_reused", "paused",
            ] {
                #expect(acme[key] != nil, "missing \(key)")
            }
            #expect(acme["tenant"] as? String == "acme")
            #expect(acme["guests"] as? Int == 2)
            #expect(acme["reclaimable_bytes"] as? Int == 3 << 29)
            #expect(acme["reports_ok"] as? Int == 1200)
            #expect(acme["reports_failed"] as? Int == 7)
            #expect(acme["reports_failed_by_reason"] as? [String: Int] == ["7": 5, "6": 2])
        }
    }

    @Test("guests --json has the documented keys and values")
    func guestsJSON() async throws {
        try await withAdminServer { path, _ in
            let output = try self.ctl(["--socket", path, "guests", "--tenant", "acme", "--json"])
            #expect(output.status == 0, "\(output.stderr)")
            let guests = try #require(try output.json() as? [[String: Any]])
            #expect(guests.map { $0["guest"] as? String } == ["vm-1", "vm-2"])
            let first = try #require(guests.first)
            for key in [
                "guest", "tenant", "connected", "reclaimable_bytes", "frames", "ranges", "page_size", "syncing",
            ] {
                #expect(first[key] != nil, "missing \(key)")
            }
            #expect(first["tenant"] as? String == "acme")
            #expect(first["connected"] as? Bool == true)
            #expect(first["reclaimable_bytes"] as? Int == 1 << 30)
        }
    }

    @Test("status --json is one object with snake_case keys")
    func statusJSON() async throws {
        try await withAdminServer { path, _ in
            let output = try self.ctl(["--socket", path, "status", "--json"])
            #expect(output.status == 0, "\(output.stderr)")
            let status = try #require(try output.json() as? [String: Any])
            #expect(
                Set(status.keys) == [
                    "version", "uptime_seconds", "listening", "tenants", "guests", "guests_connected", "sessions",
                    "reclaimable_bytes", "reports_ok", "reports_failed", "shutting_down",
                ]
            )
            #expect(status["reclaimable_bytes"] as? Int == 3 << 29)
            #expect(status["uptime_seconds"] as? Double == 93_784.5)
            #expect(status["listening"] as? [String] == ["0.0.0.0:7443"])
            #expect(status["shutting_down"] as? Bool == false)
        }
    }

    // MARK: Socket path and exit codes

    @Test("PAGEBROKER_ADMIN_SOCKET names the socket when --socket does not")
    func environmentNamesTheSocket() async throws {
        try await withAdminServer { path, _ in
            let output = try self.ctl(["status", "--json"], environment: [AdminSocket.environmentVariable: path])
            #expect(output.status == 0, "\(output.stderr)")
            let flagWins = try self.ctl(
                ["status", "--socket", path],
                environment: [AdminSocket.environmentVariable: "/nonexistent/admin.sock"]
            )
            #expect(flagWins.status == 0, "\(flagWins.stderr)")
        }
    }

    @Test("exit 1 when the broker refuses, with its reason")
    func brokerRefusalExitsOne() async throws {
        try await withAdminServer { path, _ in
            let output = try self.ctl(["pause", "nobody", "--socket", path])
            #expect(output.status == 1)
            #expect(output.stdout.isEmpty)
            #expect(output.stderr.contains("unknown_tenant"))
            #expect(output.stderr.contains("nobody"))
        }
    }

    @Test("exit 1 with permission_denied when the allow-list excludes the user")
    func permissionDeniedExitsOne() async throws {
        let access = AdminAccessPolicy(
            allowedUIDs: [getuid() &+ 4242],
            allowedGIDs: [],
            exemptRootAndDaemonUser: false
        )
        try await withAdminServer(access: access) { path, _ in
            let output = try self.ctl(["status", "--socket", path])
            #expect(output.status == 1)
            #expect(output.stderr.contains("permission_denied"))
        }
    }

    @Test("exit 2 on bad usage", arguments: [["--bogus"], ["pause"], ["guests", "--tenant"], ["frobnicate"]])
    func badUsageExitsTwo(arguments: [String]) throws {
        let output = try self.ctl(arguments)
        #expect(output.status == 2, "\(arguments): \(output.stderr)")
        #expect(!output.stderr.isEmpty)
    }

    @Test("exit 3 when nothing listens, naming the path and the likely cause")
    func cannotConnectExitsThree() throws {
        let missing = temporarySocketPath()
        let output = try self.ctl(["status", "--socket", missing])
        #expect(output.status == 3)
        #expect(output.stderr.contains(missing))
        #expect(output.stderr.contains("No such file or directory"))
        #expect(output.stderr.contains("is pagebrokerd running?"))
    }

    @Test(
        "the default socket is the unit's path",
        .enabled(
            if: !FileManager.default.fileExists(atPath: AdminSocket.defaultPath),
            "a broker is installed on this machine; the test needs nothing at the default path"
        )
    )
    func defaultSocketPath() throws {
        let output = try self.ctl(["status"])
        #expect(output.status == 3)
        #expect(output.stderr.contains(AdminSocket.defaultPath))
        #expect(try self.ctl(["status", "--help"]).stdout.contains(AdminSocket.defaultPath))
    }

    @Test("shell completion scripts come from ArgumentParser")
    func completionScripts() throws {
        for shell in ["bash", "zsh", "fish"] {
            let output = try self.ctl(["--generate-completion-script", shell])
            #expect(output.status == 0)
            #expect(output.stdout.contains("pagebrokerctl"))
            #expect(output.stdout.contains("tenants"))
        }
    }
}
