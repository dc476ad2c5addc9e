import Systemd
import Testing

@Suite struct SocketActivationTests {
    let roles: Set<String> = ["guest", "admin"]

    @Test func namedSockets() throws {
        let assigned = try SocketActivation.assign(
            [ActivatedSocket(name: "guest", descriptor: 3), ActivatedSocket(name: "admin", descriptor: 4)],
            roles: self.roles,
            unnamedRole: "guest"
        )
        #expect(assigned == ["guest": 3, "admin": 4])
    }

    @Test func anUnnamedSocketIsTheGuestListener() throws {
        let assigned = try SocketActivation.assign(
            [ActivatedSocket(name: "unknown", descriptor: 3)],
            roles: self.roles,
            unnamedRole: "guest"
        )
        #expect(assigned == ["guest": 3])
    }

    @Test func unknownNamesAreRefused() {
        #expect(throws: SystemdError.self) {
            try SocketActivation.assign(
                [ActivatedSocket(name: "metrics", descriptor: 3)],
                roles: self.roles,
                unnamedRole: "guest"
            )
        }
        do {
            _ = try SocketActivation.assign(
                [ActivatedSocket(name: "guest", descriptor: 3), ActivatedSocket(name: "unknown", descriptor: 4)],
                roles: self.roles,
                unnamedRole: "guest"
            )
            Issue.record("a second unnamed socket has no role left")
        } catch {
            #expect(error.code == .unknownDescriptorName)
        }
    }

    @Test func duplicatesAreRefused() {
        do {
            _ = try SocketActivation.assign(
                [ActivatedSocket(name: "admin", descriptor: 3), ActivatedSocket(name: "admin", descriptor: 4)],
                roles: self.roles,
                unnamedRole: nil
            )
            Issue.record("expected duplicate_descriptor_name")
        } catch {
            #expect(error.code == .duplicateDescriptorName)
            #expect(error.description.hasPrefix("duplicate_descriptor_name: "))
        }
    }

    @Test func notActivatedMeansNoSockets() throws {
        // The test runner is not socket-activated: LISTEN_PID is unset or not ours.
        #expect(try SocketActivation.takeSockets().isEmpty)
    }
}
