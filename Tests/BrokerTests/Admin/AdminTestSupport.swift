import BrokerProtocol
import Foundation
import NIOCore
import NIOPosix
import Synchronization

@testable import Broker
@testable import BrokerAdminClient

/// An ``AdminBackend`` with fixed figures and a real pause switch, so the admin tests
/// need no ledger or sessions.
final class FakeAdminBackend: AdminBackend {
    let fixedStatus: BrokerStatus
    let fixedTenants: [TenantSnapshot]
    let fixedGuests: [GuestSnapshot]
    /// Tenants paused through the admin socket.
    let paused = Mutex(Set<String>())

    init() {
        self.fixedStatus = BrokerStatus(
            version: "1.2.3",
            uptimeSeconds: 93_784.5,
            listening: ["0.0.0.0:7443"],
            tenants: 2,
            guests: 3,
            guestsConnected: 2,
            sessions: 2,
            reclaimableBytes: 3 << 29,
            reportsOK: 1200,
            reportsFailed: 7,
            shuttingDown: false
        )
        self.fixedTenants = [
            Self.tenant(
                "acme",
                guests: 2,
                connected: 2,
                reclaimable: 3 << 29,
                ok: 1200,
                failed: 7,
                byReason: [7: 5, 6: 2],
                reported: 4 << 30,
                reused: 512 << 20
            ),
            Self.tenant("beta", guests: 1, connected: 0, reclaimable: 0, ok: 0, failed: 0),
        ]
        self.fixedGuests = [
            Self.guest("vm-1", tenant: "acme", connected: true, frames: 1 << 18, ranges: 12),
            Self.guest("vm-2", tenant: "acme", connected: true, frames: 1 << 17, ranges: 3),
            Self.guest("vm-9", tenant: "beta", connected: false, frames: 0, ranges: 0),
        ]
    }

    func status() -> BrokerStatus { self.fixedStatus }

    /// The fixed figures, with the tenants paused through the admin socket marked so.
    func tenants() -> [TenantSnapshot] {
        let paused = self.paused.withLock { $0 }
        return self.fixedTenants.map { tenant in
            var tenant = tenant
            tenant.paused = paused.contains(tenant.tenant)
            return tenant
        }
    }

    func guests(tenant: String?) -> [GuestSnapshot] {
        self.fixedGuests.filter { tenant == nil || $0.tenant == tenant }
    }

    func setPaused(tenant: String, paused: Bool) throws(AdminError) {
        guard self.fixedTenants.contains(where: { $0.tenant == tenant }) else {
            throw AdminError(.unknownTenant, "no tenant named \(tenant)")
        }
        self.paused.withLock { set in
            if paused { set.insert(tenant) } else { set.remove(tenant) }
        }
    }

    static func tenant(
        _ name: String,
        guests: Int,
        connected: Int,
        reclaimable: Int,
        ok: Int,
        failed: Int,
        byReason: [UInt32: UInt64] = [:],
        reported: Int = 0,
        reused: Int = 0
    ) -> TenantSnapshot {
        var message = Pagebroker_V1_TenantStatus()
        message.tenant = name
        message.guests = UInt64(guests)
        message.guestsConnected = UInt64(connected)
        message.reclaimableBytes = UInt64(reclaimable)
        message.reportsOk = UInt64(ok)
        message.reportsFailed = UInt64(failed)
        message.reportsFailedByReason = byReason
        message.bytesReported = UInt64(reported)
        message.bytesReused = UInt64(reused)
        return TenantSnapshot(message)
    }

    static func guest(_ name: String, tenant: String, connected: Bool, frames: Int, ranges: Int) -> GuestSnapshot {
        var message = Pagebroker_V1_GuestStatus()
        message.guest = name
        message.tenant = tenant
        message.connected = connected
        message.frames = UInt64(frames)
        message.ranges = UInt64(ranges)
        message.pageSize = 4096
        message.reclaimableBytes = UInt64(frames * 4096)
        return GuestSnapshot(message)
    }
}

/// A socket path of its own for each test, short enough for `sun_path` (108 bytes).
func temporarySocketPath() -> String {
    "/tmp/pb-admin-\(UUID().uuidString.prefix(12)).sock"
}

/// Runs `body` with an admin server listening on a fresh socket, and shuts it down after.
func withAdminServer<Result>(
    access: AdminAccessPolicy = AdminAccessPolicy(),
    backend: FakeAdminBackend = FakeAdminBackend(),
    _ body: (String, FakeAdminBackend) async throws -> Result
) async throws -> Result {
    let path = temporarySocketPath()
    let server = AdminServer(configuration: AdminServerConfiguration(access: access), backend: backend)
    try await server.start(.unixDomainSocket(path: path))
    do {
        let result = try await body(path, backend)
        await server.shutdown()
        return result
    } catch {
        await server.shutdown()
        throw error
    }
}

extension Pagebroker_V1_AdminRequest {
    static var statusRequest: Self {
        var request = Self()
        request.status = Pagebroker_V1_StatusRequest()
        return request
    }

    static var tenantsRequest: Self {
        var request = Self()
        request.tenants = Pagebroker_V1_TenantsRequest()
        return request
    }

    static func guestsRequest(tenant: String?) -> Self {
        var guests = Pagebroker_V1_GuestsRequest()
        if let tenant { guests.tenant = tenant }
        var request = Self()
        request.guests = guests
        return request
    }

    static func pauseRequest(_ tenant: String) -> Self {
        var pause = Pagebroker_V1_PauseRequest()
        pause.tenant = tenant
        var request = Self()
        request.pause = pause
        return request
    }

    static func resumeRequest(_ tenant: String) -> Self {
        var resume = Pagebroker_V1_ResumeRequest()
        resume.tenant = tenant
        var request = Self()
        request.resume = resume
        return request
    }
}

/// Connects to `path`, writes `bytes` as they are, and returns everything the server
/// sends until it closes the connection: for input no well-behaved client produces.
/// With `thenCloseOutput`, the client half-closes after writing, so the server sees
/// the end of the stream.
func exchangeRawBytes(_ bytes: [UInt8], socketPath path: String, thenCloseOutput: Bool = false) async throws -> [UInt8]
{
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        // A server that refuses us greets and half-closes at once; our write must
        // still go out after that end of stream has arrived.
        .channelOption(.allowRemoteHalfClosure, value: true)
        .connect(unixDomainSocketPath: path) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                    wrappingChannelSynchronously: channel,
                    configuration: .init(isOutboundHalfClosureEnabled: true)
                )
            }
        }
    return try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(bytes: bytes))
        if thenCloseOutput { outbound.finish() }
        var received: [UInt8] = []
        do {
            for try await chunk in inbound {
                received += chunk.readableBytesView
            }
        } catch let error as IOError where error.errnoCode == ECONNRESET {
            // The server closed with our unread bytes still queued; what it sent
            // before closing has been read by then.
        }
        return received
    }
}

/// The responses in a byte stream the server sent.
func parseResponses(_ bytes: [UInt8]) throws -> [Pagebroker_V1_AdminResponse] {
    var responses: [Pagebroker_V1_AdminResponse] = []
    var offset = 0
    while offset < bytes.count {
        let rest = Array(bytes[offset...])
        let parsed = try LengthPrefixedMessages<Pagebroker_V1_AdminResponse>.parse(
            rest.span.bytes,
            maxMessageSize: 1 << 20
        )
        guard let (response, consumed) = parsed else { throw FrameError(code: .truncatedFrame) }
        responses.append(response)
        offset += consumed
    }
    return responses
}
