// Round trip of a report-sized frame between two processes over loopback mutual TLS:
// the NIO TLSHandler against plain OpenSSL code (scripts/tls-echo-peer.c), in one run.
//
//   tls-roundtrip-bench [--rounds N] [--size BYTES] [--repeat K] [--pairs abcd] [--scripts DIR]
//
// Pairs measured (client ↔ echo server, each a separate process except the NIO client):
//   (a) NIO+handler client ↔ C server     (b) C client ↔ C server (baseline)
//   (c) NIO+handler client ↔ NIO+handler server (child process)   (d) C client ↔ NIO+handler server
//   (e) NIO client ↔ C server over plain TCP   (f) C client ↔ C server over plain TCP
//   (g) TLSSocket client ↔ C server: the project's other TLS layer, OpenSSL on a non-blocking
//       socket (what the broker's epoll guest transport runs on), in a poll(2) loop
// (e) and (f) are the same exchange without TLS: (a) − (e) is what the handler and OpenSSL add
// to a NIO client, (b) − (f) what OpenSSL adds to a C client, and (e) / (f) is NIO's own cost
// against a blocking C loop, which no TLS handler can take away.
// The figure of merit is rate(a) / rate(b): the handler's cost on one side of the exchange.
// Each pair runs K times (default 5), interleaved (b, a, c, d, b, a, …) so drift on a shared
// machine hits every pair alike; the figures shown are the medians. Beside wall-clock rates the
// bench shows the client's CPU time per round trip (getrusage), which load on the machine
// disturbs far less than the rate. Against the C server each run also shows what the server
// counted on that one connection (its "CONN" line): TCP segments each way per frame from the
// kernel's TCP_INFO (exact, and blind to any other traffic on the machine), TLS records each way
// per frame, and the negotiated protocol and cipher suite, so that pairs (a) and (b) can be
// checked to be like for like.
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
    var repeats = 5
    var pairs = "abcd"

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--rounds": self.rounds = Int(iterator.next() ?? "") ?? self.rounds
            case "--size": self.size = Int(iterator.next() ?? "") ?? self.size
            case "--scripts": self.scripts = iterator.next() ?? self.scripts
            case "--serve": self.serveDirectory = iterator.next()
            case "--repeat": self.repeats = max(1, Int(iterator.next() ?? "") ?? self.repeats)
            case "--pairs": self.pairs = iterator.next() ?? self.pairs
            default:
                FileHandle.standardError.write(
                    Data(
                        "usage: tls-roundtrip-bench [--rounds N] [--size BYTES] [--repeat K] [--pairs abcd] [--scripts DIR]\n"
                            .utf8
                    )
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
    /// Client CPU time (user + system) per round trip.
    var cpuMicroseconds: Double
    /// The system (kernel) part of `cpuMicroseconds`.
    var systemMicroseconds: Double
    /// The client's context switches (voluntary + involuntary) per round trip: each time it
    /// slept waiting for the echo, or was preempted.
    var contextSwitches: Double = .nan
    /// What the C server counted on this connection, when it was the server.
    var connection: ServerCounts?

    init(name: String, p50: Double, p99: Double, rate: Double, cpu: Double, system: Double) {
        self.name = name
        self.p50Microseconds = p50
        self.p99Microseconds = p99
        self.ratePerSecond = rate
        self.cpuMicroseconds = cpu
        self.systemMicroseconds = system
    }

    /// Parses the C client's "RESULT ... p50_us=.. p99_us=.. rate_per_s=.." line.
    init(name: String, resultLine: String) throws {
        var fields: [String: Double] = [:]
        for part in resultLine.split(separator: " ") {
            let pair = part.split(separator: "=")
            if pair.count == 2 { fields[String(pair[0])] = Double(pair[1]) }
        }
        guard let p50 = fields["p50_us"], let p99 = fields["p99_us"], let rate = fields["rate_per_s"],
            let cpu = fields["cpu_us"], let system = fields["sys_us"]
        else {
            throw BenchError("unexpected C client output: \(resultLine)")
        }
        self.init(name: name, p50: p50, p99: p99, rate: rate, cpu: cpu, system: system)
        self.contextSwitches = fields["csw"] ?? .nan
    }
}

/// The C echo server's "CONN key=value ..." line for one connection: counts per frame include
/// the warm-up rounds and the handshake (a handful of segments and records in thousands).
struct ServerCounts {
    var fields: [String: String] = [:]

    init(line: String) throws {
        guard line.hasPrefix("CONN ") else { throw BenchError("expected CONN ..., got \(line)") }
        for part in line.dropFirst(5).split(separator: " ") {
            let pair = part.split(separator: "=", maxSplits: 1)
            if pair.count == 2 { self.fields[String(pair[0])] = String(pair[1]) }
        }
    }

    /// `key`'s count divided by the frames echoed.
    func perFrame(_ key: String) -> Double {
        guard let value = Double(self.fields[key] ?? ""), let frames = Double(self.fields["frames"] ?? ""), frames > 0
        else { return .nan }
        return value / frames
    }

    /// Per frame: the client's segments out and in, its records out and in, the server's reads.
    var summary: String {
        String(
            format: "client segments out/in %.3f/%.3f, records out/in %.3f/%.3f, server reads %.3f per frame",
            self.perFrame("segs_in"),
            self.perFrame("segs_out"),
            self.perFrame("records_in"),
            self.perFrame("records_out"),
            self.perFrame("reads")
        ) + ", \(self.fields["version"] ?? "?") \(self.fields["cipher"] ?? "?")"
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
    private let startOnActive: Bool
    private var cpuAtStart = 0.0
    private var systemAtStart = 0.0
    private var switchesAtStart = 0
    /// Set when done: the process's CPU time per measured round (the NIO client is the only
    /// busy thread in this process while it runs).
    private let cpuPerRound: CPUFigure
    /// Set when done: the system part of `cpuPerRound`.
    private let systemPerRound: CPUFigure
    /// Set when done: context switches per measured round.
    private let switchesPerRound: CPUFigure

    init(
        size: Int,
        warmup: Int,
        rounds: Int,
        done: EventLoopPromise<[UInt64]>,
        cpuPerRound: CPUFigure,
        systemPerRound: CPUFigure,
        switchesPerRound: CPUFigure,
        startOnActive: Bool
    ) {
        self.switchesPerRound = switchesPerRound
        self.startOnActive = startOnActive
        self.cpuPerRound = cpuPerRound
        self.systemPerRound = systemPerRound
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

    /// Plain TCP: start once connected, there is no handshake to wait for.
    func channelActive(context: ChannelHandlerContext) {
        if self.startOnActive && !self.started {
            self.started = true
            self.send(context: context)
        }
        context.fireChannelActive()
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
            self.cpuAtStart = processCPUMicroseconds()
            self.systemAtStart = processSystemMicroseconds()
            self.switchesAtStart = processContextSwitches()
        } else if self.round > self.warmup {
            self.latencies.append(now - self.sentAt)
        }
        self.round += 1
        if self.round > self.warmup + self.rounds {
            self.cpuPerRound.store((processCPUMicroseconds() - self.cpuAtStart) / Double(self.rounds))
            self.systemPerRound.store((processSystemMicroseconds() - self.systemAtStart) / Double(self.rounds))
            self.switchesPerRound.store(Double(processContextSwitches() - self.switchesAtStart) / Double(self.rounds))
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

/// `context` nil: plain TCP, no TLS handler in the pipeline.
func nioClient(name: String, port: Int, context: TLSContext?, options: Options) async throws -> Figures {
    let group = MultiThreadedEventLoopGroup.singleton
    let done = group.any().makePromise(of: [UInt64].self)
    let loop = done.futureResult.eventLoop
    let cpuPerRound = CPUFigure()
    let systemPerRound = CPUFigure()
    let switchesPerRound = CPUFigure()
    let channel = try await ClientBootstrap(group: loop)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let context {
                    try channel.pipeline.syncOperations.addHandler(
                        TLSTransport.clientHandler(context: context, serverHostname: "localhost")
                    )
                }
                try channel.pipeline.syncOperations.addHandler(
                    RoundTripHandler(
                        size: options.size,
                        warmup: 200,
                        rounds: options.rounds,
                        done: done,
                        cpuPerRound: cpuPerRound,
                        systemPerRound: systemPerRound,
                        switchesPerRound: switchesPerRound,
                        startOnActive: context == nil
                    )
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
    var figures = Figures(
        name: name,
        p50: Double(measured[measured.count / 2]) / 1000,
        p99: Double(measured[measured.count * 99 / 100]) / 1000,
        rate: Double(measured.count) / (total / 1e9),
        cpu: cpuPerRound.load(),
        system: systemPerRound.load()
    )
    figures.contextSwitches = switchesPerRound.load()
    return figures
}

/// Pair (g): ``TLSSocket`` over a non-blocking socket, waiting in poll(2) like a C client, on
/// this thread (the driver's task blocks for the run: it has nothing else to do meanwhile).
func socketClient(name: String, port: Int, context: TLSContext, options: Options) throws -> Figures {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { throw BenchError("connect: \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    let tls = try TLSSocket(context: context, descriptor: fd, serverHostname: "localhost")

    func wait(_ events: Int16) {
        var poller = pollfd(fd: fd, events: events, revents: 0)
        _ = poll(&poller, 1, -1)
    }
    while true {
        switch try tls.handshake() {
        case .done: break
        case .wantRead:
            wait(Int16(POLLIN))
            continue
        case .wantWrite:
            wait(Int16(POLLOUT))
            continue
        }
        break
    }
    var frame = [UInt8](repeating: 0, count: 4 + options.size)
    withUnsafeBytes(of: UInt32(options.size).bigEndian) { frame.replaceSubrange(0..<4, with: $0) }
    for index in 0..<options.size { frame[4 + index] = UInt8(truncatingIfNeeded: index) }
    var inbound = [UInt8](repeating: 0, count: 16_384)
    let warmup = 200
    var latencies: [UInt64] = []
    latencies.reserveCapacity(options.rounds)
    var cpuAtStart = 0.0
    var systemAtStart = 0.0
    var switchesAtStart = 0
    var measuredStart: UInt64 = 0
    for round in 0..<(warmup + options.rounds) {
        if round == warmup {
            measuredStart = DispatchTime.now().uptimeNanoseconds
            cpuAtStart = processCPUMicroseconds()
            systemAtStart = processSystemMicroseconds()
            switchesAtStart = processContextSwitches()
        }
        let sentAt = DispatchTime.now().uptimeNanoseconds
        var written = 0
        while written < frame.count {
            let outcome = try frame.withUnsafeBytes { try tls.write(UnsafeRawBufferPointer(rebasing: $0[written...])) }
            switch outcome {
            case .wrote(let count): written += count
            case .wantWrite: wait(Int16(POLLOUT))
            case .wantRead: wait(Int16(POLLIN))
            }
        }
        var received = 0
        while received < frame.count {
            let outcome = try inbound.withUnsafeMutableBytes { try tls.read(into: $0) }
            switch outcome {
            case .bytes(let count): received += count
            case .wantRead: wait(Int16(POLLIN))
            case .wantWrite: wait(Int16(POLLOUT))
            case .closeNotify: throw BenchError("the echo server closed the connection")
            }
        }
        if round >= warmup { latencies.append(DispatchTime.now().uptimeNanoseconds - sentAt) }
    }
    let finished = DispatchTime.now().uptimeNanoseconds
    let cpu = (processCPUMicroseconds() - cpuAtStart) / Double(options.rounds)
    let system = (processSystemMicroseconds() - systemAtStart) / Double(options.rounds)
    let switches = Double(processContextSwitches() - switchesAtStart) / Double(options.rounds)
    _ = try? tls.shutdown()
    latencies.sort()
    var figures = Figures(
        name: name,
        p50: Double(latencies[latencies.count / 2]) / 1000,
        p99: Double(latencies[latencies.count * 99 / 100]) / 1000,
        rate: Double(latencies.count) / (Double(finished - measuredStart) / 1e9),
        cpu: cpu,
        system: system
    )
    figures.contextSwitches = switches
    return figures
}

/// A figure handed from the event loop to the driver.
final class CPUFigure: Sendable {
    private let bits = Atomic<UInt64>(0)
    func store(_ value: Double) { self.bits.store(value.bitPattern, ordering: .releasing) }
    func load() -> Double { Double(bitPattern: self.bits.load(ordering: .acquiring)) }
}

/// User + system CPU time of this process so far, in microseconds.
func processCPUMicroseconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
}

/// Voluntary plus involuntary context switches of this process so far.
func processContextSwitches() -> Int {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return usage.ru_nvcsw + usage.ru_nivcsw
}

/// System (kernel) CPU time of this process so far, in microseconds.
func processSystemMicroseconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_stime.tv_sec) * 1e6 + Double(usage.ru_stime.tv_usec)
}

/// The first three fields of /proc/loadavg, to print beside each figure.
func loadAverage() -> String {
    guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return "?" }
    return text.split(separator: " ").prefix(3).joined(separator: " ")
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

    func cClient(name: String, port: Int, plain: Bool = false) async throws -> Figures {
        let child = try Child(peer, [plain ? "plain-client" : "client", "\(port)"] + clientArguments)
        let line = try await child.nextLine()
        child.stop()
        return try Figures(name: name, resultLine: line)
    }

    let cServer = try Child(peer, ["server", pki + "/server.pem", pki + "/server.key", pki + "/ca.pem"])
    let cPort = try await cServer.listeningPort()
    let nioServer = try Child(CommandLine.arguments[0], ["--serve", pki])
    let nioPort = try await nioServer.listeningPort()
    let plainServer = try Child(peer, ["plain-server", pki + "/server.pem", pki + "/server.key", pki + "/ca.pem"])
    let plainPort = try await plainServer.listeningPort()
    defer {
        cServer.stop()
        nioServer.stop()
        plainServer.stop()
    }

    let loadBefore = loadAverage()
    // Every pair K times, interleaved, so drift on a shared machine hits all of them alike.
    var runs: [String: [Figures]] = [:]
    func keep(_ figures: Figures) {
        let counts = (figures.connection.map { "; \($0.summary)" } ?? "") + "; load \(loadAverage())"
        FileHandle.standardError.write(
            Data(
                "\(figures.name): rate \(Int(figures.ratePerSecond))/s, client CPU \(String(format: "%.1f (system %.1f)", figures.cpuMicroseconds, figures.systemMicroseconds)) µs/round trip, \(String(format: "%.3f", figures.contextSwitches)) context switches/round trip\(counts)\n"
                    .utf8
            )
        )
        runs[figures.name, default: []].append(figures)
    }
    let names = [
        "a": "(a) NIO client <-> C server", "b": "(b) C client <-> C server",
        "c": "(c) NIO client <-> NIO server", "d": "(d) C client <-> NIO server",
        "e": "(e) NIO client <-> C server, TCP", "f": "(f) C client <-> C server, TCP",
        "g": "(g) TLSSocket client <-> C server",
    ]
    for _ in 0..<options.repeats {
        for pair in ["b", "a", "g", "c", "d", "f", "e"] where options.pairs.contains(pair) {
            switch pair {
            case "a":
                var figures = try await nioClient(
                    name: names["a"]!,
                    port: cPort,
                    context: clientContext,
                    options: options
                )
                figures.connection = try ServerCounts(line: try await cServer.nextLine())
                keep(figures)
            case "b":
                var figures = try await cClient(name: names["b"]!, port: cPort)
                figures.connection = try ServerCounts(line: try await cServer.nextLine())
                keep(figures)
            case "c":
                keep(try await nioClient(name: names["c"]!, port: nioPort, context: clientContext, options: options))
            case "d":
                keep(try await cClient(name: names["d"]!, port: nioPort))
            case "g":
                var figures = try socketClient(name: names["g"]!, port: cPort, context: clientContext, options: options)
                figures.connection = try ServerCounts(line: try await cServer.nextLine())
                keep(figures)
            case "e":
                var figures = try await nioClient(name: names["e"]!, port: plainPort, context: nil, options: options)
                figures.connection = try ServerCounts(line: try await plainServer.nextLine())
                keep(figures)
            default:
                var figures = try await cClient(name: names["f"]!, port: plainPort, plain: true)
                figures.connection = try ServerCounts(line: try await plainServer.nextLine())
                keep(figures)
            }
        }
    }

    func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
    print(
        "round trips of a \(options.size)-byte frame (+4-byte length), \(options.rounds) per run, \(options.repeats) runs per pair interleaved, loopback mutual TLS 1.3; medians"
    )
    print("pair                               p50 µs    p99 µs    round trips/s   client CPU µs/rt (system)")
    for (name, figures) in runs.sorted(by: { $0.key < $1.key }) {
        print(
            name.padding(toLength: 34, withPad: " ", startingAt: 0)
                + String(
                    format: "%8.1f  %8.1f  %12.0f   %10.1f (%.1f)",
                    median(figures.map(\.p50Microseconds)),
                    median(figures.map(\.p99Microseconds)),
                    median(figures.map(\.ratePerSecond)),
                    median(figures.map(\.cpuMicroseconds)),
                    median(figures.map(\.systemMicroseconds))
                )
        )
    }
    for (name, figures) in runs.sorted(by: { $0.key < $1.key }) {
        guard let counts = figures.last?.connection else { continue }
        print("\(name.prefix(3)) last run, as the C server counted it: \(counts.summary)")
    }
    if let a = runs[names["a"]!], let b = runs[names["b"]!], let e = runs[names["e"]!], let f = runs[names["f"]!] {
        // Per run of each pair, in the order they ran (neighbours in time).
        let handler = zip(a, e).map { $0.cpuMicroseconds - $1.cpuMicroseconds }
        let openSSL = zip(b, f).map { $0.cpuMicroseconds - $1.cpuMicroseconds }
        let ratios = zip(handler, openSSL).map { $0 / $1 }
        let floor = zip(e, f).map { $0.cpuMicroseconds / $1.cpuMicroseconds }
        print(
            String(
                format:
                    "client CPU that TLS adds, medians: NIO handler + OpenSSL (a)-(e) %.1f µs, C OpenSSL (b)-(f) %.1f µs, ratio %.2f",
                median(handler),
                median(openSSL),
                median(ratios)
            ) + " (per run " + ratios.map { String(format: "%.2f", $0) }.joined(separator: " ")
                + String(format: "); NIO without TLS against C without TLS (e)/(f) %.2f", median(floor))
        )
    }
    guard let baseline = runs[names["b"]!] else { return }
    // The ratio of each run to the baseline run next to it, then the median of those ratios:
    // neighbours see the same machine, so this is the steadiest figure on a shared host.
    // One figure of a pair against (b): the median of the per-run ratios, the ratio of the
    // medians, and each run's ratio.
    func printRatio(_ label: String, _ pair: String, _ figures: [Figures], _ value: (Figures) -> Double) {
        let ratios = zip(figures, baseline).map { value($0) / value($1) }
        print(
            "\(label) \(names[pair]!) / (b): median of per-run ratios "
                + String(format: "%.2f", median(ratios)) + " (ratio of medians "
                + String(format: "%.2f", median(figures.map(value)) / median(baseline.map(value)))
                + ", runs " + ratios.map { String(format: "%.2f", $0) }.joined(separator: " ") + ")"
        )
    }
    for pair in ["a", "g", "c", "d", "e", "f"] {
        guard let figures = runs[names[pair]!] else { continue }
        printRatio("rate ratio", pair, figures, \.ratePerSecond)
        // The issue's target is this one: client CPU per round trip, (a) over (b).
        printRatio("client CPU ratio", pair, figures, \.cpuMicroseconds)
    }
    print("load average before: \(loadBefore), after: \(loadAverage())")
}

try await main()
exit(0)
