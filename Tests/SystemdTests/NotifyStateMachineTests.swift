import Systemd
import Testing

@Suite struct NotifyStateMachineTests {
    @Test func startupSendsReadyThenStatus() {
        var machine = NotifyStateMachine()
        #expect(machine.healthy().isEmpty, "no WATCHDOG=1 before start-up finished")
        #expect(machine.statusChanged("starting").isEmpty, "no STATUS= before READY=1")
        #expect(machine.started(status: "2 tenants") == [.ready, .status("2 tenants")])
        #expect(machine.state == .ready)
        #expect(machine.started(status: "2 tenants").isEmpty, "READY=1 once")
    }

    @Test func statusOnlyWhenTheTextChanges() {
        var machine = NotifyStateMachine()
        _ = machine.started(status: "a")
        #expect(machine.statusChanged("a").isEmpty)
        #expect(machine.statusChanged("b") == [.status("b")])
        #expect(machine.statusChanged("b").isEmpty)
    }

    @Test func reloadIsReloadingThenReady() {
        var machine = NotifyStateMachine()
        _ = machine.started(status: "a")
        #expect(machine.reloadBegan(monotonicMicroseconds: 42) == [.reloading(monotonicMicroseconds: 42)])
        #expect(machine.reloadBegan(monotonicMicroseconds: 43).isEmpty, "one reload at a time")
        #expect(machine.statusChanged("during").isEmpty, "STATUS= waits for the reload's READY=1")
        // The status did not change across the reload, but READY=1 is still sent.
        #expect(machine.reloadFinished(status: "a") == [.ready])
        #expect(machine.reloadFinished(status: "a").isEmpty)
    }

    @Test func stoppingIsFinal() {
        var machine = NotifyStateMachine()
        _ = machine.started(status: "a")
        #expect(machine.stopBegan(status: "stopping") == [.stopping, .status("stopping")])
        #expect(machine.stopBegan(status: "stopping").isEmpty)
        #expect(machine.reloadBegan(monotonicMicroseconds: 1).isEmpty)
        #expect(machine.reloadFinished(status: "x").isEmpty)
        #expect(machine.statusChanged("x").isEmpty)
        #expect(machine.healthy() == [.watchdog], "the watchdog stays fed while draining")
    }

    @Test func stopDuringReload() {
        var machine = NotifyStateMachine()
        _ = machine.started(status: "a")
        _ = machine.reloadBegan(monotonicMicroseconds: 1)
        #expect(machine.stopBegan(status: "s") == [.stopping, .status("s")])
        #expect(machine.reloadFinished(status: "a").isEmpty, "no READY=1 after STOPPING=1")
    }

    @Test func messageText() {
        #expect(NotifyMessage.reloading(monotonicMicroseconds: 7).description == "RELOADING=1\nMONOTONIC_USEC=7")
        #expect(NotifyMessage.status("two\nlines").description == "STATUS=two lines")
        let parsed = NotifyMessage(parsing: "READY=1\nSTATUS=a=b\n")
        #expect(parsed["READY"] == "1")
        #expect(parsed["STATUS"] == "a=b")
        #expect(parsed.fields.count == 2)
        #expect(NotifyMessage.monotonicMicroseconds() > 0)
    }
}
