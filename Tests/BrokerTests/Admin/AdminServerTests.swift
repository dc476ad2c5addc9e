import BrokerProtocol
import Foundation
import NIOCore
import Testing

@testable import Broker
@testable import BrokerAdminClient

#if canImport(Glibc)
import Glibc
#endif

/// The admin server on a real Unix socket, spoken to by ``AdminClient`` and by raw bytes.
@Suite("Admin server")
struct AdminServerTests {
    @Test("every request round-trips with the backend's figures")
    func everyRequestRoundTrips() async throws {
        try await withAdminServer { path, backend in
            let client = try await AdminClient.connect(socketPath: path)
            let status = try await client.send(.statusRequest)
            #expect(status.status == backend.fixedStatus.wireMessage)
            #expect(BrokerStatus(status.status) == backend.fixedStatus)

            let tenants = try await client.send(.tenantsRequest)
            #expect(tenants.tenants.tenants.map(TenantSnapshot.init) == backend.fixedTenants)

            let all = try await client.send(.guestsRequest(tenant: nil))
            #expect(all.guests.guests.map(GuestSnapshot.init) == backend.fixedGuests)
            let acme = try await client.send(.guestsRequest(tenant: "acme"))
            #expect(acme.guests.guests.map(\.guest) == ["vm-1", "vm-2"])
            let none = try await client.send(.guestsRequest(tenant: "nobody"))
            #expect(none.body == .guests(Pagebroker_V1_GuestList()))

            let pause = try await client.send(.pauseRequest("beta"))
            #expect(pause.body == .ok(Pagebroker_V1_AdminOk()))
            #expect(backend.paused.withLock { $0 } == ["beta"])
            let resume = try await client.send(.resumeRequest("beta"))
            #expect(resume.body == .ok(Pagebroker_V1_AdminOk()))
            #expect(backend.paused.withLock { $0 }.isEmpty)
            await client.close()
        }
    }

    @Test("a refused request answers with its code and keeps the connection")
    func refusedRequestKeepsTheConnection() async throws {
        try await withAdminServer { path, _ in
            let client = try await AdminClient.connect(socketPath: path)
            let unknown = try await client.send(.pauseRequest("nobody"))
            #expect(unknown.error.code == .unknownTenant)
            #expect(unknown.error.message.contains("nobody"))
            let unnamed = try await client.send(.resumeRequest(""))
            #expect(unnamed.error.code == .badRequest)
            // Still serving on the same connection.
            #expect(try await client.send(.statusRequest).status.version == "1.2.3")
            await client.close()
        }
    }

    @Test("the socket file gets mode 0660 and is removed at shutdown")
    func socketFileModeAndCleanup() async throws {
        let path = temporarySocketPath()
        let server = AdminServer(configuration: AdminServerConfiguration(), backend: FakeAdminBackend())
        try await server.start(.unixDomainSocket(path: path))
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o660)
        #expect(info.st_mode & S_IFMT == S_IFSOCK)
        await server.shutdown()
        #expect(access(path, F_OK) != 0)
        await #expect(throws: AdminServerError.self) { try await server.start(.unixDomainSocket(path: path)) }
    }

    @Test("a leftover socket file is replaced, any other file at the path is left alone")
    func leftoverSocketFile() async throws {
        let path = temporarySocketPath()
        defer { unlink(path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data("not a socket".utf8)))
        let refused = AdminServer(configuration: AdminServerConfiguration(), backend: FakeAdminBackend())
        let error = await #expect(throws: AdminServerError.self) {
            try await refused.start(.unixDomainSocket(path: path))
        }
        #expect(error?.code == .cannotListen)
        #expect(FileManager.default.contents(atPath: path) == Data("not a socket".utf8))
        unlink(path)

        // What a crashed broker leaves: a socket file nobody listens on.
        close(try Self.listeningSocket(at: path))
        let server = AdminServer(configuration: AdminServerConfiguration(), backend: FakeAdminBackend())
        try await server.start(.unixDomainSocket(path: path))
        let client = try await AdminClient.connect(socketPath: path)
        #expect(try await client.send(.statusRequest).status.version == "1.2.3")
        await client.close()
        await server.shutdown()
    }

    @Test("an inherited listening socket is adopted (socket activation)")
    func adoptsABoundSocket() async throws {
        let path = temporarySocketPath()
        let fd = try Self.listeningSocket(at: path)
        defer { unlink(path) }
        let server = AdminServer(configuration: AdminServerConfiguration(), backend: FakeAdminBackend())
        try await server.start(.boundSocket(fd))
        let client = try await AdminClient.connect(socketPath: path)
        #expect(try await client.send(.tenantsRequest).tenants.tenants.map(\.tenant) == ["acme", "beta"])
        await client.close()
        await server.shutdown()
        // The socket file belongs to whoever bound it (systemd), so it stays.
        #expect(access(path, F_OK) == 0)
    }

    @Test("shutdown closes open admin connections")
    func shutdownClosesConnections() async throws {
        let path = temporarySocketPath()
        let server = AdminServer(configuration: AdminServerConfiguration(), backend: FakeAdminBackend())
        try await server.start(.unixDomainSocket(path: path))
        let client = try await AdminClient.connect(socketPath: path)
        #expect(try await client.send(.statusRequest).status.version == "1.2.3")
        await server.shutdown()
        let error = await #expect(throws: AdminClientError.self) { try await client.send(.statusRequest) }
        #expect(error?.code == .connectionClosed)
        await client.close()
    }

    // MARK: Malformed input

    @Test("malformed request bytes get bad_request and a close; other clients are served throughout")
    func malformedRequestClosesOnlyThatConnection() async throws {
        try await withAdminServer { path, _ in
            let bystander = try await AdminClient.connect(socketPath: path)
            #expect(try await bystander.send(.statusRequest).status.version == "1.2.3")

            let cases: [(String, [UInt8])] = [
                // Length 5, then bytes that are not a protobuf (field 0 is invalid).
                ("garbage body", [0, 0, 0, 5, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]),
                // A length far above the request limit: refused before the body arrives.
                ("length over the limit", [0x7F, 0xFF, 0xFF, 0xFF, 1, 2, 3]),
                // A valid message with no body set.
                ("empty request", [0, 0, 0, 0]),
                // A request field number this version does not define (field 15, empty).
                ("unknown request", [0, 0, 0, 2, 0x7A, 0x00]),
            ]
            for (name, bytes) in cases {
                let received = try await exchangeRawBytes(bytes, socketPath: path)
                let responses = try parseResponses(received)
                #expect(responses.count == 1, "\(name)")
                #expect(responses.first?.error.code == .badRequest, "\(name)")
                // The server closed that connection, and still serves this one.
                #expect(try await bystander.send(.tenantsRequest).tenants.tenants.count == 2, "\(name)")
            }
            // And new connections.
            let fresh = try await AdminClient.connect(socketPath: path)
            #expect(try await fresh.send(.statusRequest).status.version == "1.2.3")
            await fresh.close()
            await bystander.close()
        }
    }

    @Test("a request cut off by the client's close gets no answer and harms nothing")
    func truncatedRequest() async throws {
        try await withAdminServer { path, _ in
            let received = try await exchangeRawBytes([0, 0, 0, 9, 0x0A], socketPath: path, thenCloseOutput: true)
            // The client is gone by the time the server knows; nothing useful to say,
            // but whatever was sent must be a well-formed error, never a reply.
            for response in try parseResponses(received) {
                #expect(response.error.code == .badRequest)
            }
            let client = try await AdminClient.connect(socketPath: path)
            #expect(try await client.send(.statusRequest).status.version == "1.2.3")
            await client.close()
        }
    }

    // MARK: SO_PEERCRED

    @Test("root and the daemon's own user are admitted with empty allow-lists")
    func selfIsAdmitted() async throws {
        try await withAdminServer(access: AdminAccessPolicy()) { path, _ in
            let client = try await AdminClient.connect(socketPath: path)
            #expect(try await client.send(.statusRequest).status.version == "1.2.3")
            await client.close()
        }
    }

    @Test("a listed uid is admitted without the exemptions")
    func listedUIDIsAdmitted() async throws {
        let access = AdminAccessPolicy(allowedUIDs: [getuid()], allowedGIDs: [], exemptRootAndDaemonUser: false)
        try await withAdminServer(access: access) { path, _ in
            let client = try await AdminClient.connect(socketPath: path)
            #expect(try await client.send(.statusRequest).status.version == "1.2.3")
            await client.close()
        }
    }

    @Test("a listed gid is admitted without the exemptions")
    func listedGIDIsAdmitted() async throws {
        let access = AdminAccessPolicy(allowedUIDs: [], allowedGIDs: [getgid()], exemptRootAndDaemonUser: false)
        try await withAdminServer(access: access) { path, _ in
            let client = try await AdminClient.connect(socketPath: path)
            #expect(try await client.send(.tenantsRequest).tenants.tenants.count == 2)
            await client.close()
        }
    }

    @Test("a peer on neither list gets permission_denied and a close")
    func unlistedPeerIsRefused() async throws {
        let access = AdminAccessPolicy(
            allowedUIDs: [getuid() &+ 4242],
            allowedGIDs: [getgid() &+ 4242],
            exemptRootAndDaemonUser: false
        )
        try await withAdminServer(access: access) { path, backend in
            let client = try await AdminClient.connect(socketPath: path)
            let response = try await client.send(.pauseRequest("acme"))
            #expect(response.error.code == .permissionDenied)
            // The request was never carried out, and the connection is over.
            #expect(backend.paused.withLock { $0 }.isEmpty)
            let error = await #expect(throws: AdminClientError.self) { try await client.send(.statusRequest) }
            #expect(error?.code == .connectionClosed)
            await client.close()

            // The refused peer's bytes are not parsed: even garbage gets the same answer.
            let received = try await exchangeRawBytes([0xFF, 0xFF, 0xFF, 0xFF], socketPath: path)
            #expect(try parseResponses(received).map(\.error.code) == [.permissionDenied])
        }
    }

    @Test("the access policy's rules")
    func accessPolicy() {
        let strict = AdminAccessPolicy(allowedUIDs: [1000], allowedGIDs: [50], exemptRootAndDaemonUser: false)
        #expect(strict.admits(AdminPeer(pid: 1, uid: 1000, gid: 1000)))
        #expect(strict.admits(AdminPeer(pid: 1, uid: 1001, gid: 50)))
        #expect(!strict.admits(AdminPeer(pid: 1, uid: 1001, gid: 1001)))
        #expect(!strict.admits(AdminPeer(pid: 1, uid: 0, gid: 0)))

        let standard = AdminAccessPolicy(allowedUIDs: [1000])
        #expect(standard.admits(AdminPeer(pid: 1, uid: 0, gid: 0)))
        #expect(standard.admits(AdminPeer(pid: 1, uid: geteuid(), gid: 12345)))
        #expect(standard.admits(AdminPeer(pid: 1, uid: 1000, gid: 1000)))
    }

    /// A Unix socket bound at `path` and listening, as systemd would pass it.
    static func listeningSocket(at path: String) throws -> CInt {
        let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path.utf8)
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(bound == 0, "bind: \(String(cString: strerror(errno)))")
        try #require(listen(fd, 16) == 0)
        return fd
    }
}
