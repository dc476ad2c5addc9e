import Broker
import Foundation
import Testing

/// `memory_socket` and `tenants.<id>.memory` in the configuration, and guest pauses in the
/// pause store.
@Suite struct MemoryConfigurationTests {
    @Test func memoryAccessIsPerNamedTenant() throws {
        let configuration = try BrokerConfiguration.parse(
            """
            tenants:
              acme:
                memory:
                  uids: [64055]
                  gids: [998]
              globex: {}
            """
        )
        let acme = try #require(configuration.policies.tenants["acme"])
        #expect(acme.memoryAccess.admits(MemoryPeer(pid: 1, uid: 64055, gid: 5)))
        #expect(acme.memoryAccess.admits(MemoryPeer(pid: 1, uid: 7, gid: 998)))
        #expect(!acme.memoryAccess.admits(MemoryPeer(pid: 1, uid: 0, gid: 0)))
        let globex = try #require(configuration.policies.tenants["globex"])
        #expect(!globex.memoryAccess.admits(MemoryPeer(pid: 1, uid: 64055, gid: 998)))
    }

    @Test func defaultTenantCannotGrantMemoryAccess() {
        #expect(throws: ConfigError.self) {
            try BrokerConfiguration.parse("default_tenant:\n  memory:\n    uids: [0]\n")
        }
        do {
            _ = try BrokerConfiguration.parse("default_tenant:\n  memory:\n    uids: [0]\n")
        } catch {
            #expect(error.code == .unknownKey)
            #expect(error.key == "default_tenant.memory")
            #expect(error.line != nil)
        }
    }

    @Test func theMemorySocketDefaultsBesideTheAdminSocket() throws {
        #expect(BrokerConfiguration().memorySocketPath == "/run/pagebrokerd/memory.sock")
        var moved = BrokerConfiguration()
        moved.adminSocket = "/tmp/x/admin.sock"
        #expect(moved.memorySocketPath == "/tmp/x/memory.sock")
        let explicit = try BrokerConfiguration.parse("memory_socket: /srv/m.sock\n")
        #expect(explicit.memorySocketPath == "/srv/m.sock")
        #expect(throws: ConfigError.self) { try BrokerConfiguration.parse("memory_socket: relative.sock\n") }
    }

    @Test func guestPausesRoundTripThroughThePauseStore() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pause-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = PauseStore(directory: directory)
        try store.save(["acme": true], pausedGuests: ["acme/vm-7", "globex/db-1"])
        let loaded = try store.loadAll()
        #expect(loaded.tenants == ["acme": true])
        #expect(loaded.guests == ["acme/vm-7", "globex/db-1"])
        // A file of a broker before guest pauses (no "guests") reads as none paused.
        try #"{"format": 1, "tenants": {"acme": "paused"}}"#.write(
            toFile: store.path,
            atomically: true,
            encoding: .utf8
        )
        #expect(try store.loadAll().guests.isEmpty)
        try #"{"format": 1, "tenants": {}, "guests": ["no-slash"]}"#.write(
            toFile: store.path,
            atomically: true,
            encoding: .utf8
        )
        #expect(throws: StateError.self) { try store.loadAll() }
    }
}
