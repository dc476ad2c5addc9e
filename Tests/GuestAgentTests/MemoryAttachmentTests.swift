import BrokerProtocol
import Glibc
import GuestMemory
import Testing

@testable import GuestAgent

@Suite("Memory attachment")
struct MemoryAttachmentTests {
    @Test("attach sends tenant, guest and geometry with the memfd itself as SCM_RIGHTS")
    func attachPassesTheMemfd() throws {
        let server = try FakeMemorySocket()
        defer { server.stop() }
        let memory = try GuestMemory.memfd(length: 1 << 22)
        let attachment = try MemoryAttachment(socketPath: server.path, memory: memory)
        #expect(!attachment.isAttached)
        #expect(try attachment.ensureAttached(tenant: "t1", guest: "g1"))
        #expect(attachment.isAttached)
        let received = server.received
        try #require(received.count == 1)
        guard case .attach(let attach) = received[0].request.body else {
            Issue.record("expected AttachMemory, got \(received[0].request)")
            return
        }
        #expect(attach.protocolVersion == 1)
        #expect(attach.tenantID == "t1" && attach.guestID == "g1")
        #expect(attach.pageSize == 4096 && attach.totalPages == 1024)
        var own = stat()
        fstat(memory.fileDescriptor!, &own)
        #expect(
            received[0].descriptors
                == [.init(device: UInt(own.st_dev), inode: UInt(own.st_ino), size: 1 << 22)]
        )
        // Alive: nothing is sent again.
        #expect(try !attachment.ensureAttached(tenant: "t1", guest: "g1"))
        #expect(server.received.count == 1)
        #expect(attachment.attachCount == 1)
    }

    @Test("each refusal is memory_attach_refused with the broker's code")
    func refusalsMapToTheirCode() throws {
        let server = try FakeMemorySocket()
        defer { server.stop() }
        let memory = try GuestMemory.memfd(length: 1 << 22)
        let attachment = try MemoryAttachment(socketPath: server.path, memory: memory)
        let codes: [Pagebroker_V1_MemoryCode] = [
            .permissionDenied, .unknownGuest, .noDescriptor, .notSharedMemory, .readOnly, .sizeMismatch,
            .notSealed, .writeSealed, .alreadyAttached, .invalidGeometry, .protocolViolation,
            .unsupportedVersion, .shuttingDown,
        ]
        server.script(codes)
        for code in codes {
            do {
                try attachment.ensureAttached(tenant: "t1", guest: "g1")
                Issue.record("\(code) was taken as attached")
            } catch {
                #expect(error.code == .memoryAttachRefused)
                #expect(error.memoryCode == code)
                #expect("\(error)".contains(code.stableName))
            }
            #expect(!attachment.isAttached)
        }
        #expect(Pagebroker_V1_MemoryCode.writeSealed.stableName == "write_sealed")
        #expect(try attachment.ensureAttached(tenant: "t1", guest: "g1"))
    }

    @Test("no socket is memory_socket_unavailable; anonymous memory is memory_not_shareable")
    func unavailableAndNotShareable() throws {
        let memory = try GuestMemory.memfd(length: 1 << 22)
        let attachment = try MemoryAttachment(socketPath: "/nonexistent/memory.sock", memory: memory)
        #expect {
            try attachment.ensureAttached(tenant: "t1", guest: "g1")
        } throws: { error in
            (error as? AgentError)?.code == .memorySocketUnavailable && "\(error)".contains("ENOENT")
        }
        let anonymous = try GuestMemory.anonymous(length: 1 << 22)
        #expect {
            _ = try MemoryAttachment(socketPath: "/nonexistent/memory.sock", memory: anonymous)
        } throws: { error in
            (error as? AgentError)?.code == .memoryNotShareable
        }
    }

    @Test("after the broker closes the connection the next ensureAttached attaches again and replays the inhibit")
    func reattachAfterBrokerLeft() throws {
        let server = try FakeMemorySocket()
        defer { server.stop() }
        let memory = try GuestMemory.memfd(length: 1 << 22)
        let attachment = try MemoryAttachment(socketPath: server.path, memory: memory)
        try attachment.ensureAttached(tenant: "t1", guest: "g1")
        try attachment.setDiscardInhibited(true, reason: "snapshot")
        guard case .setDiscardInhibited(let inhibit) = server.received.last?.request.body else {
            Issue.record("expected SetDiscardInhibited")
            return
        }
        #expect(inhibit.inhibited && inhibit.reason == "snapshot")
        server.dropConnections()
        #expect(waitUntil { !attachment.isAttached })
        #expect(try attachment.ensureAttached(tenant: "t1", guest: "g1"))
        let second = server.received.filter { $0.connection == 2 }
        try #require(second.count == 2)
        guard case .attach = second[0].request.body, case .setDiscardInhibited(let replay) = second[1].request.body
        else {
            Issue.record("expected attach then the inhibit again, got \(second.map(\.request))")
            return
        }
        #expect(second[0].descriptors.count == 1)
        #expect(replay.inhibited && replay.reason == "snapshot")
        #expect(attachment.attachCount == 2)
    }

    @Test("a broker that closes without answering is memory_detached")
    func closedWithoutAnswer() throws {
        let server = try FakeMemorySocket()
        let path = server.path
        let memory = try GuestMemory.memfd(length: 1 << 22)
        let attachment = try MemoryAttachment(socketPath: path, memory: memory, responseTimeout: .seconds(5))
        try attachment.ensureAttached(tenant: "t1", guest: "g1")
        server.stop()
        #expect(waitUntil { !attachment.isAttached })
        #expect {
            try attachment.setDiscardInhibited(false)
        } throws: { error in
            (error as? AgentError)?.code == .memoryDetached
        }
    }
}

/// Polls `condition` every millisecond for up to 10 s.
func waitUntil(_ condition: () -> Bool) -> Bool {
    for _ in 0..<10_000 {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}
