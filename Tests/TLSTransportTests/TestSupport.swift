import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TLSTransport

/// Certificates made once per test process by `scripts/make-test-pki` in a temporary directory.
struct TestPKI: Sendable {
    let directory: String

    static let shared: Result<TestPKI, any Error> = Result { try TestPKI.make() }

    static func get() throws -> TestPKI { try shared.get() }

    static var scriptsDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts").path
    }

    private static func make() throws -> TestPKI {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("pagebroker-tls-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [scriptsDirectory + "/make-test-pki", directory]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestFailure("make-test-pki exited with \(process.terminationStatus)")
        }
        return TestPKI(directory: directory)
    }

    func path(_ name: String) -> String { self.directory + "/" + name }

    func serverConfiguration(caBundle: String = "ca.pem") -> TLSConfiguration {
        .server(
            certificateChainPath: path("server.pem"),
            privateKeyPath: path("server.key"),
            caBundlePath: path(caBundle)
        )
    }

    func clientConfiguration(_ name: String = "client-t1-g1", caBundle: String = "ca.pem") -> TLSConfiguration {
        .client(
            certificateChainPath: path("\(name).pem"),
            privateKeyPath: path("\(name).key"),
            caBundlePath: path(caBundle)
        )
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// An append-only log that async tests can wait on: a wait returns the first entry, past or
/// future, that matches, or fails after a timeout. This is how the tests synchronise with
/// other threads and processes instead of sleeping.
final class EventLog<Event: Sendable>: Sendable {
    private struct Waiter {
        let id: Int
        let matches: @Sendable (Event) -> Bool
        let continuation: CheckedContinuation<Event, any Error>
    }

    private struct State {
        var events: [Event] = []
        var waiters: [Waiter] = []
        var nextID = 0
    }

    private let state = Mutex(State())

    init() {}

    var events: [Event] { self.state.withLock { $0.events } }

    func append(_ event: Event) {
        let ready = self.state.withLock { state in
            state.events.append(event)
            var ready: [CheckedContinuation<Event, any Error>] = []
            state.waiters.removeAll { waiter in
                guard waiter.matches(event) else { return false }
                ready.append(waiter.continuation)
                return true
            }
            return ready
        }
        for continuation in ready { continuation.resume(returning: event) }
    }

    @discardableResult
    func wait(
        for what: String,
        timeout: Duration = .seconds(20),
        until matches: @escaping @Sendable (Event) -> Bool
    ) async throws -> Event {
        try await withCheckedThrowingContinuation { continuation in
            let (found, id) = self.state.withLock { state -> (Event?, Int) in
                if let event = state.events.first(where: matches) { return (event, -1) }
                let id = state.nextID
                state.nextID += 1
                state.waiters.append(Waiter(id: id, matches: matches, continuation: continuation))
                return (nil, id)
            }
            if let found {
                continuation.resume(returning: found)
                return
            }
            Task {
                try? await Task.sleep(for: timeout)
                self.expire(id, what: what)
            }
        }
    }

    private func expire(_ id: Int, what: String) {
        let (waiter, events) = self.state.withLock { state -> (Waiter?, [Event]) in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return (nil, []) }
            return (state.waiters.remove(at: index), state.events)
        }
        waiter?.continuation.resume(throwing: TestFailure("timed out waiting for \(what); log: \(events)"))
    }
}

/// What a ``Recorder`` saw on one connection.
enum ConnectionEvent: Sendable, CustomStringConvertible {
    case handshake(TLSHandshakeInfo)
    case tlsError(TLSError)
    case otherError(String)
    /// Everything received so far, as text.
    case received(String)
    case closeNotify
    case inactive

    var tlsError: TLSError? {
        if case .tlsError(let error) = self { return error }
        return nil
    }

    var description: String {
        switch self {
        case .handshake(let info): return "handshake(\(info.protocolVersion), \(info.peerCertificate?.uriSANs ?? []))"
        case .tlsError(let error): return error.description
        case .otherError(let error): return "error(\(error))"
        case .received(let text): return "received(\(text.count) chars)"
        case .closeNotify: return "closeNotify"
        case .inactive: return "inactive"
        }
    }
}

/// The application end of a test connection: records events, optionally greets the peer
/// after the handshake and echoes what it receives.
final class Recorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let log: EventLog<ConnectionEvent>
    private let greeting: String?
    private var received = ""

    init(log: EventLog<ConnectionEvent>, greeting: String? = nil) {
        self.log = log
        self.greeting = greeting
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received += String(buffer: self.unwrapInboundIn(data))
        self.log.append(.received(self.received))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event as? TLSEvent {
        case .handshakeCompleted(let info):
            self.log.append(.handshake(info))
            if let greeting {
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: greeting)), promise: nil)
            }
        case .closeNotifyReceived:
            self.log.append(.closeNotify)
        case nil:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? TLSError {
            self.log.append(.tlsError(error))
        } else {
            self.log.append(.otherError("\(error)"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.log.append(.inactive)
    }
}

/// A NIO TLS server on 127.0.0.1 with an OS-picked port; every connection records into `log`.
func startServer(
    context: TLSContext,
    log: EventLog<ConnectionEvent>,
    greeting: String? = nil
) async throws -> (channel: any Channel, port: Int) {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(TLSTransport.serverHandler(context: context))
                try channel.pipeline.syncOperations.addHandler(Recorder(log: log, greeting: greeting))
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    return (channel, channel.localAddress!.port!)
}

/// A NIO TLS client connected to 127.0.0.1:`port`.
func connectClient(
    context: TLSContext,
    port: Int,
    serverHostname: String = "127.0.0.1",
    log: EventLog<ConnectionEvent>
) async throws -> any Channel {
    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    TLSTransport.clientHandler(context: context, serverHostname: serverHostname)
                )
                try channel.pipeline.syncOperations.addHandler(Recorder(log: log))
            }
        }
        .connect(host: "127.0.0.1", port: port).get()
}

/// A real `openssl` process (s_client / s_server) whose merged stdout and stderr lines can be
/// waited on.
final class OpenSSLProcess: Sendable {
    let lines = EventLog<String>()
    let exited = EventLog<Int32>()
    private let process: Process
    private let stdin: FileHandle
    private let partial = Mutex("")

    init(_ arguments: [String], workingDirectory: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory)
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        self.process = process
        self.stdin = input.fileHandleForWriting
        output.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else {
                handle.readabilityHandler = nil
                return
            }
            let complete = self.partial.withLock { partial -> [String] in
                partial += String(decoding: data, as: UTF8.self)
                var parts = partial.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                partial = parts.removeLast()
                return parts
            }
            for line in complete { self.lines.append(line) }
        }
        let exited = self.exited
        process.terminationHandler = { process in exited.append(process.terminationStatus) }
        try process.run()
    }

    func send(_ text: String) throws {
        try self.stdin.write(contentsOf: Data(text.utf8))
    }

    /// Closes the process's stdin: s_client then sends close_notify and exits.
    func closeInput() throws {
        try self.stdin.close()
    }

    /// SIGKILL: the kernel closes the socket, no close_notify is sent.
    func kill() {
        if self.process.isRunning {
            Foundation.kill(self.process.processIdentifier, SIGKILL)
        }
    }

    @discardableResult
    func waitForLine(containing text: String, timeout: Duration = .seconds(20)) async throws -> String {
        try await self.lines.wait(for: "openssl output line containing \"\(text)\"", timeout: timeout) {
            $0.contains(text)
        }
    }

    func waitForExit() async throws {
        try await self.exited.wait(for: "openssl to exit") { _ in true }
    }

    deinit {
        if self.process.isRunning {
            Foundation.kill(self.process.processIdentifier, SIGKILL)
        }
    }
}
