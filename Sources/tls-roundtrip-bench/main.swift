// Round trip of a report-sized frame between two processes over loopback mutual TLS:
// the NIO TLSHandler against plain OpenSSL code (scripts/tls-echo-peer.c), in one run.
//
//   tls-roundtrip-bench [--rounds N] [--size BYTES] [--scripts DIR]
//
// Pairs measured (client ↔ echo server, each a separate process except the NIO client):
//   (a) NIO+handler client ↔ C server     (b) C client ↔ C server (baseline)
//   (c) NIO+handler client ↔ NIO+handler server (child process)   (d) C client ↔ NIO+handler server
// The figure of merit is rate(a) / rate(b): the handler's cost on one side of the exchange.
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TLSTransport

struct Options {
    var rounds = 20_000
    var size = 300
    var scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts").path
    var serveDirectory: String?

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--rounds": self.rounds = Int(iterator.next() ?? "") ?? self.rounds
            case "--size": self.size = Int(iterator.next() ?? "") ?? self.size
            case "--scripts": self.scripts = iterator.next() ?? self.scripts
            case "--serve": self.serveDirectory = iterator.next()
            default:
                FileHandle.standardError.write(
                    Data("usage: tls-roundtrip-bench [--rounds N] [--size BYTES] [--scripts DIR]\n".utf8)
                )
                exit(2)
            }
        }
    }
}

struct Figures {
    var name: String
    var p50Microseconds: Double
    var p99Microseconds: Double
    var ratePerSecond: Double

    init(name: String, p50: Double, p99: Double, rate: Double) {
        self.name = name
        self.p50Microseconds = p50
        self.p99Microseconds = p99
        self.ratePerSecond = rate
    }

    /// Parses the C client's "RESULT ... p50_us=.. p99_us=.. rate_per_s=.." line.
    init(name: String, resultLine: String) throws {
        var fields: [String: Double] = [:]
        for part in resultLine.split(separator: " ") {
            let pair = part.split(separator: "=")
            if pair.count == 2 { fields[String(pair[0])] = Double(pair[1]) }
        }
        guard let p50 = fields["p50_us"], let p99 = fields["p99_us"], let rate = fields["rate_per_s"] else {
            throw BenchError("unexpected C client output: \(resultLine)")
        }
        self.init(name: name, p50: p50, p99: p99, rate: rate)
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: Child processes

/// A child process whose stdout lines can be awaited (the port announcement, the result).
final class Child: Sendable {
    private let process: Process
    private let lines = Mutex<(complete: [String], partial: String, waiters: [CheckedContinuation<String, any Error>])>(
        ([], "", [])
    )

    init(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        self.process = process
        output.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else {
                handle.readabilityHandler = nil
                self?.finish()
                return
            }
            self.consume(String(decoding: data, as: UTF8.self))
        }
        try process.run()
    }

    private func consume(_ text: String) {
        let ready = self.lines.withLock { state -> [(CheckedContinuation<String, any Error>, String)] in
            state.partial += text
            var parts = state.partial.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            state.partial = parts.removeLast()
            state.complete += parts
            var ready: [(CheckedContinuation<String, any Error>, String)] = []
            while !state.waiters.isEmpty && !state.complete.isEmpty {
                ready.append((state.waiters.removeFirst(), state.complete.removeFirst()))
            }
            return ready
        }
        for (continuation, line) in ready { continuation.resume(returning: line) }
    }

    private func finish() {
        let waiters = self.lines.withLock { state in
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(throwing: BenchError("child exited before printing its result")) }
    }

    /// The next line the child prints.
    func nextLine() async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            let line = self.lines.withLock { state -> String? in
                if !state.complete.isEmpty { return state.complete.removeFirst() }
                state.waiters.append(continuation)
                return nil
            }
            if let line { continuation.resume(returning: line) }
        }
    }

    /// The port from a "LISTENING <port>" line.
    func listeningPort() async throws -> Int {
        let line = try await self.nextLine()
        guard line.hasPrefix("LISTENING "), let port = Int(line.dropFirst("LISTENING ".count)) else {
            throw BenchError("expected LISTENING <port>, got \(line)")
        }
        return port
    }

    /// SIGKILL: children spawned by Foundation's Process inherit a signal mask that blocks
    /// SIGTERM, so terminate() would leave the echo servers running.
    func stop() {
        if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
    }
}

func run(_ executable: String, _ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw BenchError("\(executable) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
    }
}

// MARK: NIO client

/// Sends one frame, waits for its whole echo, records the time, sends the next.
final class RoundTripHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let frame: ByteBuffer
    private let warmup: Int
    private let rounds: Int
    private let done: EventLoopPromise<[UInt64]>
    private var latencies: [UInt64]
    private var round = 0
    private var pendingBytes = 0
    private var sentAt: UInt64 = 0
    private var started = false

    init(size: Int, warmup: Int, rounds: Int, done: EventLoopPromise<[UInt64]>) {
        var frame = ByteBuffer()
        frame.writeInteger(UInt32(size))
        frame.writeBytes((0..<size).map { UInt8(truncatingIfNeeded: $0) })
        self.frame = frame
        self.warmup = warmup
        self.rounds = rounds
        self.done = done
        self.latencies = []
        self.latencies.reserveCapacity(rounds + 1)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSEvent, !self.started {
            self.started = true
            self.send(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func send(context: ChannelHandlerContext) {
        self.pendingBytes = self.frame.readableBytes
        self.sentAt = DispatchTime.now().uptimeNanoseconds
        context.writeAndFlush(self.wrapOutboundOut(self.frame), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.pendingBytes -= self.unwrapInboundIn(data).readableBytes
        guard self.pendingBytes <= 0 else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        if self.round == self.warmup {
            self.latencies.append(now)  // start marker, removed below
        } else if self.round > self.warmup {
            self.latencies.append(now - self.sentAt)
        }
        self.round += 1
        if self.round > self.warmup + self.rounds {
            self.done.succeed(self.latencies)
        } else {
            self.send(context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.done.fail(error)
        context.close(promise: nil)
    }
}

func nioClient(name: String, port: Int, context: TLSContext, options: Options) async throws -> Figures {
    let group = MultiThreadedEventLoopGroup.singleton
    let done = group.any().makePromise(of: [UInt64].self)
    let loop = done.futureResult.eventLoop
    let channel = try await ClientBootstrap(group: loop)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    TLSTransport.clientHandler(context: context, serverHostname: "localhost")
                )
                try channel.pipeline.syncOperations.addHandler(
                    RoundTripHandler(size: options.size, warmup: 200, rounds: options.rounds, done: done)
                )
            }
        }
        .connect(host: "127.0.0.1", port: port).get()
    var measured = try await done.futureResult.get()
    let finished = DispatchTime.now().uptimeNanoseconds
    try? await channel.close()
    // The first entry marks the end of the warm-up; the measured rounds follow it.
    let measuredStart = measured.removeFirst()
    measured.sort()
    let total = Double(finished - measuredStart)
    return Figures(
        name: name,
        p50: Double(measured[measured.count / 2]) / 1000,
        p99: Double(measured[measured.count * 99 / 100]) / 1000,
        rate: Double(measured.count) / (total / 1e9)
    )
}

// MARK: NIO echo server (child process)

final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

func serve(pki: String) async throws -> Never {
    let context = try TLSContext(
        configuration: .server(
            certificateChainPath: pki + "/server.pem",
            privateKeyPath: pki + "/server.key",
            caBundlePath: pki + "/ca.pem"
        )
    )
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup(numberOfThreads: 1))
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(TLSTransport.serverHandler(context: context))
                try channel.pipeline.syncOperations.addHandler(EchoHandler())
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    // Straight to the fd: print() is block-buffered into a pipe and the parent waits on this line.
    FileHandle.standardOutput.write(Data("LISTENING \(channel.localAddress!.port!)\n".utf8))
    try await channel.closeFuture.get()
    exit(0)
}

// MARK: Driver

func main() async throws {
    let options = Options(CommandLine.arguments)
    if let directory = options.serveDirectory {
        try await serve(pki: directory)
    }

    let work = FileManager.default.temporaryDirectory.appendingPathComponent("tls-roundtrip-bench-\(getpid())").path
    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: work) }
    let pki = work + "/pki"
    try run("/bin/bash", [options.scripts + "/make-test-pki", pki])
    let peer = work + "/tls-echo-peer"
    try run("/bin/bash", [options.scripts + "/build-tls-echo-peer", peer])

    let clientContext = try TLSContext(
        configuration: .client(
            certificateChainPath: pki + "/client-t1-g1.pem",
            privateKeyPath: pki + "/client-t1-g1.key",
            caBundlePath: pki + "/ca.pem"
        )
    )
    let clientArguments = [
        pki + "/client-t1-g1.pem", pki + "/client-t1-g1.key", pki + "/ca.pem",
        "\(options.rounds)", "\(options.size)",
    ]

    func cClient(name: String, port: Int) async throws -> Figures {
        let child = try Child(peer, ["client", "\(port)"] + clientArguments)
        let line = try await child.nextLine()
        child.stop()
        return try Figures(name: name, resultLine: line)
    }

    let cServer = try Child(peer, ["server", pki + "/server.pem", pki + "/server.key", pki + "/ca.pem"])
    let cPort = try await cServer.listeningPort()
    let nioServer = try Child(CommandLine.arguments[0], ["--serve", pki])
    let nioPort = try await nioServer.listeningPort()
    defer {
        cServer.stop()
        nioServer.stop()
    }

    // Baseline and handler side by side, twice each, interleaved, so drift on a shared
    // machine hits both; the better of each pair is kept.
    var results: [String: Figures] = [:]
    func keep(_ figures: Figures) {
        FileHandle.standardError.write(Data("\(figures.name): rate \(Int(figures.ratePerSecond))/s\n".utf8))
        if let existing = results[figures.name], existing.ratePerSecond >= figures.ratePerSecond { return }
        results[figures.name] = figures
    }
    for _ in 0..<2 {
        keep(try await cClient(name: "(b) C client <-> C server", port: cPort))
        keep(
            try await nioClient(
                name: "(a) NIO client <-> C server",
                port: cPort,
                context: clientContext,
                options: options
            )
        )
        keep(
            try await nioClient(
                name: "(c) NIO client <-> NIO server",
                port: nioPort,
                context: clientContext,
                options: options
            )
        )
        keep(try await cClient(name: "(d) C client <-> NIO server", port: nioPort))
    }

    print(
        "round trips of a \(options.size)-byte frame (+4-byte length), \(options.rounds) per run, loopback mutual TLS 1.3"
    )
    print("pair                               p50 µs    p99 µs    round trips/s")
    for figures in results.values.sorted(by: { $0.name < $1.name }) {
        print(
            figures.name.padding(toLength: 34, withPad: " ", startingAt: 0)
                + String(
                    format: "%8.1f  %8.1f  %12.0f",
                    figures.p50Microseconds,
                    figures.p99Microseconds,
                    figures.ratePerSecond
                )
        )
    }
    let baseline = results["(b) C client <-> C server"]!.ratePerSecond
    for name in ["(a) NIO client <-> C server", "(c) NIO client <-> NIO server", "(d) C client <-> NIO server"] {
        print("rate ratio \(name) / (b): " + String(format: "%.2f", results[name]!.ratePerSecond / baseline))
    }
}

try await main()
exit(0)
