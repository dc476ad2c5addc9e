import BrokerProtocol
import CGuestMemory
import Glibc
import GuestMemory
import NIOCore
import SwiftProtobuf
import Synchronization

/// Host discard: hands the guest's memory to the broker over its memory socket, so that the
/// broker punches out every report it accepts before it answers OK (`docs/protocol.md`,
/// "Memory socket").
///
/// The attachment is one Unix stream connection: `AttachMemory` goes out with the memfd as
/// `SCM_RIGHTS`, the broker answers with a `MemoryCode`, and the memory stays attached for as long
/// as the connection is open. When the broker stops or restarts the connection ends with it;
/// ``ensureAttached(tenant:guest:)`` notices and attaches again (the agent calls it before the
/// `Sync` of every session). ``setDiscardInhibited(_:reason:)`` is the embedder's switch for
/// memory that must not be discarded for a while (pinned for a passthrough device, a snapshot);
/// the state is sent again after a re-attach.
///
/// Every method blocks for at most the socket round trip (``responseTimeout`` per answer); call
/// them from a thread that may block, never from an event loop.
public final class MemoryAttachment: Sendable {
    /// The broker's memory socket.
    public let socketPath: String
    /// The memory attached: a memfd or hugetlb backing (or an external one with a descriptor).
    public let memory: GuestMemory
    /// The longest wait for one answer of the broker.
    public let responseTimeout: Duration
    /// Sent in `AttachMemory` for the broker's logs.
    public let clientVersion: String

    private let state = Mutex(State())

    private struct State {
        var socket: Int32 = -1
        var tenant = ""
        var guest = ""
        /// The embedder's last inhibit request, replayed after a re-attach.
        var inhibited: (Bool, String)?
        var attaches = 0
    }

    /// The default memory socket of a packaged broker.
    public static let defaultSocketPath = "/run/pagebrokerd/memory.sock"

    /// Prepares an attachment of `memory` to the broker at `socketPath`; connects nothing yet.
    ///
    /// - Throws: ``AgentError/Code/memoryNotShareable`` if `memory` has no file descriptor
    ///   (anonymous memory cannot be handed to another process).
    public init(
        socketPath: String = MemoryAttachment.defaultSocketPath,
        memory: GuestMemory,
        responseTimeout: Duration = .seconds(5),
        clientVersion: String = AgentConfiguration.defaultAgentVersion
    ) throws(AgentError) {
        guard memory.fileDescriptor != nil, memory.fileOffset == 0 else {
            throw AgentError(
                code: .memoryNotShareable,
                message: "host discard needs memory with a file descriptor at offset 0 (memfd or hugetlb), "
                    + "not \(memory.backing) memory"
            )
        }
        self.socketPath = socketPath
        self.memory = memory
        self.responseTimeout = responseTimeout
        self.clientVersion = clientVersion
    }

    deinit {
        let socket = self.state.withLock { $0.socket }
        if socket >= 0 { close(socket) }
    }

    /// Whether the memory is attached now: the connection is open and the broker has not closed
    /// its end. Reads nothing and never blocks.
    public var isAttached: Bool {
        self.state.withLock { state in
            guard state.socket >= 0 else { return false }
            return pb_socket_peer_closed(state.socket) == 0
        }
    }

    /// Successful attaches so far (one per broker process the memory was handed to, usually).
    public var attachCount: Int { self.state.withLock { $0.attaches } }

    /// Makes sure the memory is attached for `tenant`/`guest`: nothing to do while the existing
    /// attachment is alive; otherwise the old connection is closed and a new one attaches.
    ///
    /// - Returns: `true` if this call attached (a new connection), `false` if it was attached.
    /// - Throws: ``AgentError/Code/memorySocketUnavailable``, ``AgentError/Code/memoryAttachRefused``
    ///   (with ``AgentError/memoryCode``) or ``AgentError/Code/memoryDetached``.
    @discardableResult
    public func ensureAttached(tenant: String, guest: String) throws(AgentError) -> Bool {
        try self.state.withLock { (state) throws(AgentError) -> Bool in
            if state.socket >= 0 {
                if pb_socket_peer_closed(state.socket) == 0, state.tenant == tenant, state.guest == guest {
                    return false
                }
                close(state.socket)
                state.socket = -1
            }
            let socket = try self.connect()
            do throws(AgentError) {
                var attach = Pagebroker_V1_AttachMemory()
                attach.protocolVersion = 1
                attach.tenantID = tenant
                attach.guestID = guest
                attach.pageSize = UInt32(clamping: self.memory.pageSize)
                attach.totalPages = UInt64(self.memory.frameCount)
                attach.clientVersion = self.clientVersion
                var request = Pagebroker_V1_MemoryRequest()
                request.attach = attach
                try Self.exchange(request, on: socket, passing: self.memory.fileDescriptor)
                if let (inhibited, reason) = state.inhibited {
                    var replay = Pagebroker_V1_MemoryRequest()
                    replay.setDiscardInhibited = .with {
                        $0.inhibited = inhibited
                        $0.reason = reason
                    }
                    try Self.exchange(replay, on: socket, passing: nil)
                }
            } catch {
                close(socket)
                throw error
            }
            state.socket = socket
            state.tenant = tenant
            state.guest = guest
            state.attaches += 1
            return true
        }
    }

    /// Inhibits (or allows again) discard of this guest's memory: while inhibited, the broker
    /// fails the guest's reports with `DISCARD_INHIBITED` and a retry-after instead of freeing
    /// memory that must stay (pinned for a device, a snapshot in progress). Remembered and sent
    /// again after a re-attach; while not attached it only takes effect at the next attach.
    ///
    /// - Throws: ``AgentError/Code/memoryAttachRefused`` or ``AgentError/Code/memoryDetached``
    ///   when the attached broker did not take it.
    public func setDiscardInhibited(_ inhibited: Bool, reason: String = "") throws(AgentError) {
        try self.state.withLock { (state) throws(AgentError) in
            state.inhibited = (inhibited, reason)
            guard state.socket >= 0 else { return }
            var request = Pagebroker_V1_MemoryRequest()
            request.setDiscardInhibited = .with {
                $0.inhibited = inhibited
                $0.reason = reason
            }
            do throws(AgentError) {
                try Self.exchange(request, on: state.socket, passing: nil)
            } catch {
                if error.code == .memoryDetached {
                    close(state.socket)
                    state.socket = -1
                }
                throw error
            }
        }
    }

    /// Ends the attachment: the broker stops discarding for this guest.
    public func detach() {
        self.state.withLock { state in
            if state.socket >= 0 { close(state.socket) }
            state.socket = -1
        }
    }

    // MARK: The socket

    private func connect() throws(AgentError) -> Int32 {
        let socket = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else {
            throw AgentError(code: .memorySocketUnavailable, message: "socket(AF_UNIX): \(Self.errnoText())")
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(self.socketPath.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else {
            close(socket)
            throw AgentError(
                code: .memorySocketUnavailable,
                message: "memory socket path longer than \(capacity - 1) bytes"
            )
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
            raw[path.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let text = Self.errnoText()
            close(socket)
            throw AgentError(code: .memorySocketUnavailable, message: "connect to \(self.socketPath): \(text)")
        }
        var timeout = timeval(
            tv_sec: Int(self.responseTimeout.components.seconds),
            tv_usec: Int(self.responseTimeout.components.attoseconds / 1_000_000_000_000)
        )
        _ = setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return socket
    }

    /// Sends one request (with `descriptor` on its first byte if given) and reads its answer;
    /// anything but `OK` throws.
    static func exchange(
        _ request: Pagebroker_V1_MemoryRequest,
        on socket: Int32,
        passing descriptor: Int32?
    ) throws(AgentError) {
        var buffer = ByteBuffer()
        do {
            try LengthPrefixedMessages<Pagebroker_V1_MemoryRequest>.write(
                request,
                into: &buffer,
                maxMessageSize: Self.maxMessageSize
            )
        } catch {
            throw AgentError(code: .memoryDetached, message: "cannot encode the memory request: \(error)")
        }
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { raw -> Int64 in
                let rest = UnsafeRawBufferPointer(rebasing: raw[offset...])
                if offset == 0, let descriptor {
                    return pb_send_with_fd(socket, rest.baseAddress, rest.count, descriptor)
                }
                return Int64(send(socket, rest.baseAddress, rest.count, Int32(MSG_NOSIGNAL)))
            }
            guard sent > 0 else {
                if sent < 0 && errno == EINTR { continue }
                throw AgentError(code: .memoryDetached, message: "send on the memory socket: \(Self.errnoText())")
            }
            offset += Int(sent)
        }
        let response = try Self.readResponse(on: socket)
        guard response.code == .ok else {
            throw AgentError(
                code: .memoryAttachRefused,
                memoryCode: response.code,
                message: "the broker answered \(response.code.stableName): \(response.message)"
            )
        }
    }

    private static func readResponse(on socket: Int32) throws(AgentError) -> Pagebroker_V1_MemoryResponse {
        let prefix = try Self.read(count: WireProtocol.lengthPrefixSize, from: socket)
        let length = prefix.reduce(0) { $0 << 8 | Int($1) }
        guard length <= Self.maxMessageSize else {
            throw AgentError(code: .memoryDetached, message: "memory response of \(length) bytes is too large")
        }
        let body = try Self.read(count: length, from: socket)
        do {
            var options = BinaryDecodingOptions()
            options.discardUnknownFields = true
            return try Pagebroker_V1_MemoryResponse(serializedBytes: body, options: options)
        } catch {
            throw AgentError(code: .memoryDetached, message: "malformed memory response: \(error)")
        }
    }

    private static func read(count: Int, from socket: Int32) throws(AgentError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = bytes.withUnsafeMutableBytes { raw in
                recv(socket, raw.baseAddress! + offset, count - offset, 0)
            }
            if got == 0 {
                throw AgentError(code: .memoryDetached, message: "the broker closed the memory socket")
            }
            if got < 0 {
                if errno == EINTR { continue }
                let timedOut = errno == EAGAIN || errno == EWOULDBLOCK
                throw AgentError(
                    code: .memoryDetached,
                    message: timedOut ? "no answer on the memory socket in time" : "recv: \(Self.errnoText())"
                )
            }
            offset += got
        }
        return bytes
    }

    /// Generous: answers are a code and a line of text.
    static let maxMessageSize = 65_536

    private static func errnoText() -> String {
        let number = errno
        let name = pb_errno_name(number).map { String(cString: $0) } ?? "errno \(number)"
        return "\(name) (\(String(cString: strerror(number))))"
    }
}
