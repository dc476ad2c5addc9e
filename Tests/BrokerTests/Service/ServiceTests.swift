import Broker
import BrokerAdminClient
import Foundation
import NIOCore
import NIOPosix
import Testing

@Suite struct PauseStoreTests {
    func directory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("pause-store-\(UUID().uuidString)").path
    }

    @Test func roundTripAndMissingFile() throws {
        let store = PauseStore(directory: self.directory() + "/nested")
        #expect(try store.load() == [:], "no file yet: no overrides")
        try store.save(["acme": true, "globex": false])
        #expect(try store.load() == ["acme": true, "globex": false])
        let text = try String(contentsOfFile: store.path, encoding: .utf8)
        #expect(text.contains("\"acme\" : \"paused\""))
        #expect(text.contains("\"globex\" : \"resumed\""))
    }

    @Test func corruptFilesAreRefusedNotIgnored() throws {
        let directory = self.directory()
        let store = PauseStore(directory: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (text, fragment) in [
            ("not json", "not a pause-state file"),
            (#"{"format": 2, "tenants": {}}"#, "format 2"),
            (#"{"format": 1, "tenants": {"acme": "sleeping"}}"#, "acme"),
        ] {
            try text.write(toFile: store.path, atomically: true, encoding: .utf8)
            do {
                _ = try store.load()
                Issue.record("\(text) was accepted")
            } catch {
                #expect(error.code == .corrupt)
                #expect(error.description.contains(fragment), "\(error)")
            }
        }
    }

    @Test func unwritableDirectory() {
        let store = PauseStore(directory: "/proc/pagebroker-cannot-exist")
        do {
            try store.save(["acme": true])
            Issue.record("saved under /proc")
        } catch {
            #expect(error.code == .unwritable)
        }
    }
}

@Suite struct PersistentPauseBackendTests {
    @Test func pauseIsSavedAndSurvivesReload() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pause-\(UUID().uuidString)").path
        let store = PauseStore(directory: directory)
        let core = BrokerCore(policies: PolicySet(tenants: ["acme": TenantPolicy(), "globex": TenantPolicy()]))
        let backend = PersistentPauseBackend(core: core, store: store)
        try backend.setPaused(tenant: "acme", paused: true)
        #expect(try store.load() == ["acme": true])
        #expect(core.isPaused(tenant: "acme"))
        // A reload with the same policies keeps the operator's pause.
        core.updatePolicies(PolicySet(tenants: ["acme": TenantPolicy(), "globex": TenantPolicy()]))
        #expect(core.isPaused(tenant: "acme"))
        #expect(backend.tenants().first { $0.tenant == "acme" }?.paused == true)
        // Resume overrides a configuration that says paused.
        var paused = TenantPolicy()
        paused.paused = true
        core.updatePolicies(PolicySet(tenants: ["acme": TenantPolicy(), "globex": paused]))
        #expect(core.isPaused(tenant: "globex"))
        try backend.setPaused(tenant: "globex", paused: false)
        #expect(!core.isPaused(tenant: "globex"))
        #expect(try store.load() == ["acme": true, "globex": false])

        // A restarted core restores from the file.
        let restarted = BrokerCore(policies: PolicySet(tenants: ["acme": TenantPolicy(), "globex": paused]))
        restarted.restorePauseOverrides(try store.load())
        #expect(restarted.isPaused(tenant: "acme"))
        #expect(!restarted.isPaused(tenant: "globex"))
    }

    @Test func aChangeThatCannotBeSavedIsUndone() {
        let core = BrokerCore(policies: PolicySet(tenants: ["acme": TenantPolicy()]))
        let backend = PersistentPauseBackend(core: core, store: PauseStore(directory: "/proc/pagebroker-cannot-exist"))
        do {
            try backend.setPaused(tenant: "acme", paused: true)
            Issue.record("an unsaved pause was acknowledged")
        } catch {
            #expect(error.code == .internalError)
        }
        #expect(!core.isPaused(tenant: "acme"), "what the broker enforces matches what would survive a restart")
        #expect(core.pauseOverrides == [:])
    }

    @Test func unknownTenant() {
        let core = BrokerCore(policies: PolicySet(tenants: ["acme": TenantPolicy()]))
        #expect(throws: AdminError.self) { try core.setPaused(tenant: "nobody", paused: true) }
    }
}

@Suite struct ServiceStatusLineTests {
    func status(shuttingDown: Bool = false) -> BrokerStatus {
        BrokerStatus(
            version: "v",
            uptimeSeconds: 1,
            listening: [],
            tenants: 3,
            guests: 8,
            guestsConnected: 6,
            sessions: 6,
            reclaimableBytes: 3 << 29,
            reportsOK: 1,
            reportsFailed: 0,
            shuttingDown: shuttingDown
        )
    }

    @Test func lines() {
        #expect(
            ServiceStatusLine.render(self.status(), lastReload: nil)
                == "3 tenants, 6 guests connected, 1.5 GiB reclaimable"
        )
        #expect(
            ServiceStatusLine.render(self.status(), lastReload: .applied(restartNeeded: []))
                == "3 tenants, 6 guests connected, 1.5 GiB reclaimable; last reload applied"
        )
        #expect(
            ServiceStatusLine.render(self.status(), lastReload: .applied(restartNeeded: ["listen", "limits"]))
                .hasSuffix("; last reload applied, restart needed for listen, limits")
        )
        #expect(
            ServiceStatusLine.render(self.status(), lastReload: .refused(reason: "tls: no such file"))
                .hasSuffix("; last reload REFUSED (old configuration in force): tls: no such file")
        )
        #expect(
            ServiceStatusLine.render(self.status(shuttingDown: true), lastReload: nil)
                == "stopping: 6 sessions draining"
        )
        #expect(AdminFormat.bytes(1023) == "1023 B")
        #expect(AdminFormat.bytes(1536) == "1.5 KiB")
    }

    @Test func restartOnlyKeys() {
        let old = BrokerConfiguration()
        var new = old
        new.policies = PolicySet(tenants: ["acme": TenantPolicy()])
        new.shutdownTimeout = .seconds(1)
        new.certificate = "/new.pem"
        #expect(ConfigurationChange.restartNeeded(from: old, to: new).isEmpty)
        new.listen = "0.0.0.0:1"
        new.session.heartbeatInterval = .seconds(99)
        new.metricsListen = "127.0.0.1:9"
        #expect(ConfigurationChange.restartNeeded(from: old, to: new) == ["listen", "metrics.listen", "limits"])
    }
}

@Suite struct EventLoopHealthTests {
    @Test func healthyLoopsAnswer() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        #expect(await EventLoopHealth.check(group, within: .seconds(30)))
        try await group.shutdownGracefully()
    }

    @Test func aStuckLoopFailsTheCheck() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let release = DispatchSemaphore(value: 0)
        let loops = Array(group.makeIterator())
        loops[1].execute { release.wait() }
        #expect(await EventLoopHealth.check(group, within: .milliseconds(200)) == false)
        release.signal()
        #expect(await EventLoopHealth.check(group, within: .seconds(30)), "healthy again once the loop is free")
        try await group.shutdownGracefully()
    }
}
