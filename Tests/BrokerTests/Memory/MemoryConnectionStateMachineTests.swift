import BrokerProtocol
import Testing

@testable import Broker

/// The memory socket's connection rules, without sockets.
@Suite struct MemoryConnectionStateMachineTests {
    static let attach = Pagebroker_V1_MemoryRequest.with { $0.attach = .with { $0.tenantID = "t1" } }
    static func inhibit(_ on: Bool) -> Pagebroker_V1_MemoryRequest {
        .with {
            $0.setDiscardInhibited = .with {
                $0.inhibited = on
                $0.reason = "snapshot"
            }
        }
    }
    static let token = BrokerCore.MemoryAttachToken(tenant: "t1", guest: "g1", value: 1)

    @Test func attachFirstThenInhibit() {
        var machine = MemoryConnectionStateMachine()
        guard case .attach = machine.receive(Self.attach) else {
            Issue.record("attach not passed on")
            return
        }
        #expect(machine.attached(Self.token) == .respond(MemoryConnectionStateMachine.response(.ok, "attached")))
        #expect(machine.token == Self.token)
        #expect(machine.receive(Self.inhibit(true)) == .setInhibited(Self.token, inhibited: true, reason: "snapshot"))
        // A second attach on the connection is refused and the attachment stays.
        guard case .respond(let response) = machine.receive(Self.attach) else {
            Issue.record("second attach not refused")
            return
        }
        #expect(response.code == .protocolViolation)
        #expect(machine.token == Self.token)
    }

    @Test func inhibitBeforeAttachAndGarbageClose() {
        var machine = MemoryConnectionStateMachine()
        guard case .respondAndClose(let response) = machine.receive(Self.inhibit(true)) else {
            Issue.record("inhibit before attach not refused")
            return
        }
        #expect(response.code == .protocolViolation)
        var garbage = MemoryConnectionStateMachine()
        guard case .respondAndClose(let refused) = garbage.receive(nil) else {
            Issue.record("garbage not refused")
            return
        }
        #expect(refused.code == .protocolViolation)
        var empty = MemoryConnectionStateMachine()
        guard case .respondAndClose = empty.receive(Pagebroker_V1_MemoryRequest()) else {
            Issue.record("a request without a body was not refused")
            return
        }
    }

    @Test func aRefusedAttachMayBeRetried() {
        var machine = MemoryConnectionStateMachine()
        _ = machine.receive(Self.attach)
        #expect(
            machine.refused(MemoryRefusal(.sizeMismatch, "x"))
                == .respond(MemoryConnectionStateMachine.response(.sizeMismatch, "x"))
        )
        #expect(machine.token == nil)
        guard case .attach = machine.receive(Self.attach) else {
            Issue.record("retry not passed on")
            return
        }
    }
}
