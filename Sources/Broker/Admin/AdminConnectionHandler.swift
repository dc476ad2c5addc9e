import BrokerAdminClient
import BrokerProtocol
import Logging
import NIOCore

/// Serves one admitted admin connection: answers each decoded request from the backend.
final class AdminConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Pagebroker_V1_AdminRequest
    typealias OutboundOut = Pagebroker_V1_AdminResponse

    private let backend: any AdminBackend
    private let logger: Logger

    init(backend: any AdminBackend, logger: Logger) {
        self.backend = backend
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let request = Self.unwrapInboundIn(data)
        switch AdminRequestServing.respond(to: request, backend: self.backend) {
        case .reply(let response):
            if case .error(let error)? = response.body {
                self.logger.notice(
                    "admin request refused",
                    metadata: ["request": "\(AdminRequestServing.name(of: request))", "error": "\(AdminError(error))"]
                )
            } else {
                self.logger.debug(
                    "admin request served",
                    metadata: ["request": "\(AdminRequestServing.name(of: request))"]
                )
            }
            context.writeAndFlush(Self.wrapOutboundOut(response), promise: nil)
        case .replyAndClose(let error):
            self.logger.warning("admin request refused, closing", metadata: ["error": "\(error)"])
            self.fail(context: context, error)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The decoder gave up on the stream: its position is lost, so the connection
        // cannot continue. Say why, then close; other connections are unaffected.
        if let frameError = error as? FrameError {
            self.logger.warning("malformed admin request, closing", metadata: ["error": "\(frameError)"])
            self.fail(context: context, AdminError(.badRequest, "malformed request: \(frameError.code)"))
        } else {
            self.logger.warning("admin connection failed", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// Sends `error`, then closes once it has been written (or could not be).
    private func fail(context: ChannelHandlerContext, _ error: AdminError) {
        let response = Pagebroker_V1_AdminResponse.failure(error)
        context.writeAndFlush(Self.wrapOutboundOut(response)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension AdminConnectionHandler: Sendable {}

/// Turns away a peer the access policy refused: greets it with `permission_denied`
/// and closes once it has sent its request (or after ``patience``).
///
/// Closing straight after the greeting would race the client's request: a write to
/// a closed Unix socket fails with `EPIPE` and the client might never read the
/// answer. So the greeting is followed by a half-close, and whatever the peer sends
/// is dropped unparsed as the cue to close.
final class AdminRefusalHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = Pagebroker_V1_AdminResponse

    /// How long a refused peer may keep the connection open without sending anything.
    static let patience = TimeAmount.seconds(5)

    private let logger: Logger
    private var deadline: Scheduled<Void>?

    init(logger: Logger) {
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        self.logger.warning("admin connection refused: peer is not on the allow-list")
        let response = Pagebroker_V1_AdminResponse.failure(
            AdminError(.permissionDenied, "this user may not use the pagebrokerd admin socket")
        )
        context.writeAndFlush(Self.wrapOutboundOut(response)).assumeIsolated().whenComplete { _ in
            context.close(mode: .output, promise: nil)
        }
        self.deadline = context.eventLoop.assumeIsolated().scheduleTask(in: Self.patience) {
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.deadline?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension AdminRefusalHandler: Sendable {}

/// What the admin server does with one request, apart from the channel: kept a pure
/// function of the request and the backend so every case is plain to read and test.
enum AdminRequestServing {
    enum Outcome: Equatable {
        /// Send this response and keep the connection.
        case reply(Pagebroker_V1_AdminResponse)
        /// Send this error and close: the request says the peer does not speak the protocol.
        case replyAndClose(AdminError)
    }

    static func respond(to request: Pagebroker_V1_AdminRequest, backend: any AdminBackend) -> Outcome {
        var response = Pagebroker_V1_AdminResponse()
        switch request.body {
        case .status:
            response.status = backend.status().wireMessage
        case .tenants:
            var list = Pagebroker_V1_TenantList()
            list.tenants = backend.tenants().map(\.wireMessage)
            response.tenants = list
        case .guests(let guests):
            var list = Pagebroker_V1_GuestList()
            list.guests = backend.guests(tenant: guests.hasTenant ? guests.tenant : nil).map(\.wireMessage)
            response.guests = list
        case .pause(let pause):
            return Self.setPaused(
                tenant: pause.tenant,
                guest: pause.hasGuest ? pause.guest : nil,
                paused: true,
                backend: backend
            )
        case .resume(let resume):
            return Self.setPaused(
                tenant: resume.tenant,
                guest: resume.hasGuest ? resume.guest : nil,
                paused: false,
                backend: backend
            )
        case .setDiscardInhibited(let inhibit):
            guard !inhibit.tenant.isEmpty, !inhibit.guest.isEmpty else {
                return .reply(.failure(AdminError(.badRequest, "no tenant and guest named")))
            }
            return Self.carryOut { () throws(AdminError) in
                try backend.setDiscardInhibited(
                    tenant: inhibit.tenant,
                    guest: inhibit.guest,
                    inhibited: inhibit.inhibited,
                    reason: inhibit.reason
                )
            }
        case nil:
            // Unset, or a request a newer pagebrokerctl knows and this broker does not.
            return .replyAndClose(AdminError(.badRequest, "request has no body this broker knows"))
        }
        return .reply(response)
    }

    /// A short name for logs.
    static func name(of request: Pagebroker_V1_AdminRequest) -> String {
        switch request.body {
        case .status: "status"
        case .tenants: "tenants"
        case .guests: "guests"
        case .pause(let pause): "pause \(pause.tenant)\(pause.hasGuest ? " \(pause.guest)" : "")"
        case .resume(let resume): "resume \(resume.tenant)\(resume.hasGuest ? " \(resume.guest)" : "")"
        case .setDiscardInhibited(let inhibit):
            "\(inhibit.inhibited ? "inhibit" : "allow-discard") \(inhibit.tenant) \(inhibit.guest)"
        case nil: "unknown"
        }
    }

    private static func setPaused(tenant: String, guest: String?, paused: Bool, backend: any AdminBackend) -> Outcome {
        guard !tenant.isEmpty else {
            return .reply(.failure(AdminError(.badRequest, "no tenant named")))
        }
        return Self.carryOut { () throws(AdminError) in
            if let guest {
                try backend.setPaused(tenant: tenant, guest: guest, paused: paused)
            } else {
                try backend.setPaused(tenant: tenant, paused: paused)
            }
        }
    }

    private static func carryOut(_ body: () throws(AdminError) -> Void) -> Outcome {
        do {
            try body()
        } catch {
            return .reply(.failure(error))
        }
        var response = Pagebroker_V1_AdminResponse()
        response.ok = Pagebroker_V1_AdminOk()
        return .reply(response)
    }
}
