import ArgumentParser
import Dispatch
import Foundation
import GuestAgent
import GuestMemory
import GuestSimulator
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TLSTransport

/// `pagebroker-agent load`: many guests in one process, each its own TLS session, reporting as
/// fast as their pipelines allow.
struct LoadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Load a broker with many guests, each its own mutual-TLS session.",
        discussion: """
            Every guest keeps --window reports outstanding: small synthetic blocks of order 9, unique \
            seqs, no allocator. Measures reports per second and round trips (submit to result, as the \
            reporting device sees it). With --cert-dir, guest i presents guest-<i>.pem / guest-<i>.key \
            from that directory (scripts/make-load-certs makes them); otherwise all guests present \
            --cert, and a broker that replaces sessions of the same guest keeps only one of them.
            """
    )

    @OptionGroup var brokerOptions: BrokerOptions

    @Option(
        name: .customLong("cert-dir"),
        help: "Directory with guest-<i>.pem and guest-<i>.key for guests 0..<N."
    )
    var certDirectory: String?

    @Option(help: "Guests (sessions) to run.")
    var guests: Int = 64

    @Option(help: "How long to load the broker, e.g. 10s.", transform: parseTimeSpan)
    var duration: Duration = .seconds(10)

    @Option(help: "Reports each guest keeps outstanding.")
    var window: Int = 1

    @Option(help: "Blocks per report.")
    var blocks: Int = 4

    @Option(help: "Event loop threads (default: one per core).")
    var threads: Int = System.coreCount

    @Option(
        name: .customLong("connect-timeout"),
        help: "How long to wait for every guest's session before loading, e.g. 30s.",
        transform: parseTimeSpan
    )
    var connectTimeout: Duration = .seconds(30)

    @Flag(help: "Print one JSON object instead of the summary.")
    var json = false

    @Option(
        name: .customLong("idle-sessions"),
        help:
            "Instead of loading: open this many sessions (guest i as with --cert-dir), let them idle, and measure the broker's RSS per session (needs --broker-pid)."
    )
    var idleSessions: Int?

    @Option(
        name: .customLong("broker-pid"),
        help: "The broker's process id: its CPU time per report is shown too; needed by --idle-sessions."
    )
    var brokerPID: Int32?

    @Option(name: .customLong("connect-batch"), help: "With --idle-sessions: sessions opened at a time.")
    var connectBatch: Int = 250

    @Option(
        help:
            "none: accounting only; host: every guest attaches a memfd of its pool to the broker, which punches each report; both: none, then host, in one run, with the ratio."
    )
    var discard: LoadDiscard = .none

    @Option(name: .customLong("memory-socket"), help: "The broker's memory socket, for --discard host or both.")
    var memorySocket: String = MemoryAttachment.defaultSocketPath

    func validate() throws {
        guard self.guests > 0 else { throw ValidationError("--guests must be positive") }
        guard self.window > 0 else { throw ValidationError("--window must be positive") }
        guard (1...256).contains(self.blocks) else { throw ValidationError("--blocks must be in 1...256") }
        guard self.threads > 0 else { throw ValidationError("--threads must be positive") }
        guard self.duration > .zero else { throw ValidationError("--duration must be positive") }
        if let idle = self.idleSessions {
            guard idle > 0 else { throw ValidationError("--idle-sessions must be positive") }
            guard self.brokerPID != nil else { throw ValidationError("--idle-sessions needs --broker-pid") }
            guard self.certDirectory != nil else { throw ValidationError("--idle-sessions needs --cert-dir") }
            guard self.connectBatch > 0 else { throw ValidationError("--connect-batch must be positive") }
        }
        if self.discard != .none && self.idleSessions != nil {
            throw ValidationError("--idle-sessions measures sessions only: leave out --discard")
        }
        if self.certDirectory == nil {
            guard self.brokerOptions.cert != nil, self.brokerOptions.key != nil else {
                throw ValidationError("give --cert and --key, or --cert-dir")
            }
        }
    }

    func run() throws {
        self.brokerOptions.bootstrapLogging()
        var logger = Logger(label: "pagebroker.load")
        logger.logLevel = Logger.Level(rawValue: self.brokerOptions.logLevel) ?? .info
        if let sessions = self.idleSessions, let pid = self.brokerPID, let directory = self.certDirectory {
            try IdleSessionsMeasurement(
                brokerOptions: self.brokerOptions,
                certDirectory: directory,
                sessions: sessions,
                brokerPID: pid,
                batch: self.connectBatch,
                threads: self.threads,
                hold: self.duration,
                connectTimeout: self.connectTimeout,
                json: self.json,
                logger: logger
            ).run()
            return
        }
        let contexts = try (0..<self.guests).map { index in
            if let directory = self.certDirectory {
                return try self.brokerOptions.tlsContext(
                    cert: "\(directory)/guest-\(index).pem",
                    key: "\(directory)/guest-\(index).key"
                )
            }
            return try self.brokerOptions.tlsContext(cert: self.brokerOptions.cert!, key: self.brokerOptions.key!)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        defer { try? group.syncShutdownGracefully() }
        var stdout = FileHandleStream.standardOutput
        switch self.discard {
        case .none, .host:
            var summary = try self.measure(
                contexts: contexts,
                group: group,
                hostDiscard: self.discard == .host,
                logger: logger
            )
            summary.discard = self.discard.rawValue
            stdout.write((self.json ? summary.json() : summary.text()) + "\n")
        case .both:
            var plain = try self.measure(contexts: contexts, group: group, hostDiscard: false, logger: logger)
            plain.discard = "none"
            var host = try self.measure(contexts: contexts, group: group, hostDiscard: true, logger: logger)
            host.discard = "host"
            let ratio = plain.reportsPerSecond > 0 ? host.reportsPerSecond / plain.reportsPerSecond : 0
            if self.json {
                stdout.write(
                    #"{"host":\#(host.json()),"none":\#(plain.json()),"ratio":\#(Units.fixed(ratio, 3))}"# + "\n"
                )
            } else {
                stdout.write("accounting only: " + plain.text() + "\n")
                stdout.write("host discard:    " + host.text() + "\n")
                stdout.write("reports/s host / none: \(Units.fixed(ratio, 3))\n")
            }
        }
    }

    /// One load phase: connects every guest (attaching a memfd each with `hostDiscard`), pumps
    /// reports for --duration, closes them.
    private func measure(
        contexts: [TLSContext],
        group: MultiThreadedEventLoopGroup,
        hostDiscard: Bool,
        logger: Logger
    ) throws -> LoadSummary {
        // 4 GiB guests reporting order-9 blocks: room for 2048 distinct blocks each.
        let geometry = GuestGeometry(pageSize: 4096, totalPages: 1 << 20, minOrder: 9, maxOrder: 10)
        let sessionLogger = Self.sessionLogger(logger)
        let connections = try contexts.map { context in
            AgentConnection(
                configuration: self.brokerOptions.agentConfiguration(context: context),
                geometry: geometry,
                eventLoopGroup: group,
                logger: sessionLogger,
                hostDiscard: try hostDiscard ? self.makeHostDiscard(geometry: geometry) : nil
            )
        }
        for connection in connections { connection.start() }
        let sessions = EventLoopFuture.whenAllSucceed(
            connections.map { $0.activeSession() },
            on: group.next()
        )
        let deadline = group.next().scheduleTask(in: TimeAmount(self.connectTimeout)) {}
        let ready = sessions.map { _ in () }
        let waitOutcome = Self.wait(ready, orUntil: deadline.futureResult)
        guard waitOutcome else {
            let connected = connections.filter { $0.statistics.sessions > 0 }.count
            var stderr = FileHandleStream.standardError
            stderr.write("load: only \(connected) of \(self.guests) guests connected within \(self.connectTimeout)\n")
            for connection in connections { _ = try? connection.shutdown().wait() }
            throw ExitCode.failure
        }
        deadline.cancel()

        let recorder = LatencyRecorder(guests: self.guests)
        let stopAt = NIODeadline.now() + TimeAmount(self.duration)
        let finished = DispatchGroup()
        let started = ContinuousClock.now
        let agentCPUBefore = CPUTime.ofThisProcess()
        let brokerCPUBefore = self.brokerPID.flatMap(CPUTime.ofProcess)
        for (index, connection) in connections.enumerated() {
            for lane in 0..<self.window {
                finished.enter()
                let pump = ReportPump(
                    connection: connection,
                    recorder: recorder,
                    guest: index,
                    firstBlock: lane * self.blocks,
                    stride: self.window * self.blocks,
                    blocks: self.blocks,
                    stopAt: stopAt,
                    done: { finished.leave() }
                )
                connection.eventLoop.execute { pump.next() }
            }
        }
        finished.wait()
        let elapsed = Units.seconds(ContinuousClock.now - started)
        let agentCPU = CPUTime.ofThisProcess() - agentCPUBefore
        let brokerCPU = brokerCPUBefore.flatMap { before in
            self.brokerPID.flatMap(CPUTime.ofProcess).map { $0 - before }
        }
        for connection in connections {
            do { try connection.shutdown().wait() } catch {
                logger.debug("close failed", metadata: ["error": "\(error)"])
            }
        }
        var summary = recorder.summary(
            seconds: elapsed,
            guests: self.guests,
            reconnects: connections.reduce(0) { $0 + $1.statistics.reconnects }
        )
        if summary.reports > 0 {
            summary.agentCPUPerReport = agentCPU / Double(summary.reports)
            summary.brokerCPUPerReport = brokerCPU.map { $0 / Double(summary.reports) }
        }
        for connection in connections { connection.hostDiscard?.attachment.detach() }
        return summary
    }

    /// A memfd of the guest's pool size (sparse: never touched) to attach, for --discard host.
    private func makeHostDiscard(geometry: GuestGeometry) throws -> HostDiscard {
        do {
            let memory = try GuestMemory.memfd(
                length: geometry.totalPages * geometry.pageSize,
                pageSize: geometry.pageSize
            )
            let attachment = try MemoryAttachment(socketPath: self.memorySocket, memory: memory)
            return HostDiscard(attachment: attachment, allocator: nil, policy: .required)
        } catch {
            throw ValidationError("--discard host: \(error)")
        }
    }

    /// The connections' logger. A connection logs "session established" and "session ended"
    /// at info, which suits one `run` guest; for `load`'s many guests they are two lines per
    /// guest before the result, so they are shown only at `--log-level debug` (or trace).
    /// Warnings and errors pass as at the chosen level.
    static func sessionLogger(_ logger: Logger) -> Logger {
        var sessionLogger = logger
        if logger.logLevel > .debug { sessionLogger.logLevel = max(logger.logLevel, .notice) }
        return sessionLogger
    }

    /// Waits for `future` or `deadline`, whichever completes first; `true` if `future` did.
    static func wait(_ future: EventLoopFuture<Void>, orUntil deadline: EventLoopFuture<Void>) -> Bool {
        let done = DispatchSemaphore(value: 0)
        let succeeded = Atomic<Int>(0)
        future.whenComplete { result in
            if case .success = result { succeeded.store(1, ordering: .relaxed) }
            done.signal()
        }
        deadline.whenComplete { _ in done.signal() }
        done.wait()
        return succeeded.load(ordering: .relaxed) == 1
    }
}

/// One lane of one guest: sends a report, and the next when its result arrives, until the
/// deadline. Runs entirely on the guest's event loop.
private final class ReportPump: Sendable {
    let connection: AgentConnection
    let recorder: LatencyRecorder
    let guest: Int
    let firstBlock: Int
    let stride: Int
    let blocks: Int
    let stopAt: NIODeadline
    let done: @Sendable () -> Void
    private let round = Atomic<Int>(0)

    init(
        connection: AgentConnection,
        recorder: LatencyRecorder,
        guest: Int,
        firstBlock: Int,
        stride: Int,
        blocks: Int,
        stopAt: NIODeadline,
        done: @escaping @Sendable () -> Void
    ) {
        self.connection = connection
        self.recorder = recorder
        self.guest = guest
        self.firstBlock = firstBlock
        self.stride = stride
        self.blocks = blocks
        self.stopAt = stopAt
        self.done = done
    }

    func next() {
        guard NIODeadline.now() < self.stopAt else {
            self.done()
            return
        }
        let round = self.round.add(1, ordering: .relaxed).newValue
        // Blocks of order 9 walk through the guest's 2048 slots; lanes never share one.
        let slots = (self.connection.geometry.totalPages >> 9)
        var list: [UInt64] = []
        list.reserveCapacity(2 * self.blocks)
        let base = self.firstBlock + round * self.stride
        for offset in 0..<self.blocks {
            list.append(UInt64(((base + offset) % slots) << 9))
            list.append(9)
        }
        let sent = NIODeadline.now()
        self.connection.submitReport(blocks: list).whenComplete { result in
            let microseconds = (NIODeadline.now() - sent).nanoseconds / 1000
            switch result {
            case .success: self.recorder.record(guest: self.guest, microseconds: microseconds)
            case .failure(let error): self.recorder.fail(guest: self.guest, error: error)
            }
            self.next()
        }
    }
}

/// Round trips per guest, kept apart so guests on different loops do not contend.
private final class LatencyRecorder: Sendable {
    private let lanes: [LaneBox]

    private struct Lane {
        var samples: [UInt32] = []
        var errors = 0
        var errorCodes: [String: Int] = [:]
    }

    private final class LaneBox: Sendable {
        let lane = Mutex(Lane())
    }

    init(guests: Int) {
        self.lanes = (0..<guests).map { _ in LaneBox() }
    }

    func record(guest: Int, microseconds: Int64) {
        self.lanes[guest].lane.withLock { $0.samples.append(UInt32(clamping: microseconds)) }
    }

    func fail(guest: Int, error: any Error) {
        let name = (error as? AgentError).map { $0.reason?.stableName ?? $0.code.name } ?? "\(error)"
        self.lanes[guest].lane.withLock {
            $0.errors += 1
            $0.errorCodes[name, default: 0] += 1
        }
    }

    func summary(seconds: Double, guests: Int, reconnects: Int) -> LoadSummary {
        var samples: [UInt32] = []
        var errors = 0
        var codes: [String: Int] = [:]
        for box in self.lanes {
            box.lane.withLock { lane in
                samples.append(contentsOf: lane.samples)
                errors += lane.errors
                codes.merge(lane.errorCodes, uniquingKeysWith: +)
            }
        }
        samples.sort()
        func percentile(_ p: Double) -> Int {
            guard !samples.isEmpty else { return 0 }
            let rank = Int((p * Double(samples.count)).rounded(.up)) - 1
            return Int(samples[min(max(rank, 0), samples.count - 1)])
        }
        return LoadSummary(
            guests: guests,
            seconds: seconds,
            reports: samples.count,
            errors: errors,
            errorCodes: codes,
            reportsPerSecond: seconds > 0 ? Double(samples.count) / seconds : 0,
            p50: percentile(0.50),
            p99: percentile(0.99),
            p999: percentile(0.999),
            max: Int(samples.last ?? 0),
            reconnects: reconnects,
            agentCPUPerReport: nil,
            brokerCPUPerReport: nil
        )
    }
}

/// `load --discard`.
enum LoadDiscard: String, CaseIterable, ExpressibleByArgument, Sendable {
    case none, host, both
}

/// What `load` prints (see docs/agent.md).
struct LoadSummary: Encodable {
    /// `none` or `host`.
    var discard = "none"
    var guests: Int
    var seconds: Double
    var reports: Int
    var errors: Int
    var errorCodes: [String: Int]
    var reportsPerSecond: Double
    var p50: Int
    var p99: Int
    var p999: Int
    var max: Int
    var reconnects: Int
    /// This process's CPU time (user + system) per accepted report, in microseconds.
    var agentCPUPerReport: Double?
    /// The broker's CPU time per accepted report, in microseconds (with --broker-pid).
    var brokerCPUPerReport: Double?

    enum CodingKeys: String, CodingKey {
        case guests, seconds, reports, errors, reconnects, discard
        case agentCPUPerReport = "agent_cpu_us_per_report"
        case brokerCPUPerReport = "broker_cpu_us_per_report"
        case errorCodes = "error_codes"
        case reportsPerSecond = "reports_per_second"
        case p50 = "p50_us"
        case p99 = "p99_us"
        case p999 = "p999_us"
        case max = "max_us"
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    func text() -> String {
        var text = "\(self.guests) guests, \(Units.fixed(self.seconds, 1)) s: \(self.reports) reports accepted,"
        text += " \(Units.fixed(self.reportsPerSecond, 0)) reports/s; round trip p50 \(self.p50) us,"
        text += " p99 \(self.p99) us, p99.9 \(self.p999) us, max \(self.max) us; \(self.errors) errors"
        if !self.errorCodes.isEmpty {
            text +=
                " ("
                + self.errorCodes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                + ")"
        }
        if self.reconnects > 0 { text += "; \(self.reconnects) reconnects" }
        if let agent = self.agentCPUPerReport {
            text += "; CPU per report: agent \(Units.fixed(agent, 1)) us"
            if let broker = self.brokerCPUPerReport { text += ", broker \(Units.fixed(broker, 1)) us" }
        }
        return text
    }
}

/// `load --idle-sessions N --broker-pid PID`: the broker's resident memory per idle session.
///
/// Opens N sessions in batches (each waits for its ServerHello before the next batch starts, so
/// the broker's handshake timeout never bites), lets them settle, and reads VmRSS from
/// /proc/PID/status: before the first session, after the first batch, after all N. The figure is
/// (after - before) / N; (after - first batch) / (N - batch) leaves out one-time costs (thread
/// caches, OpenSSL's lazy initialisation) and is printed beside it.
private struct IdleSessionsMeasurement {
    var brokerOptions: BrokerOptions
    var certDirectory: String
    var sessions: Int
    var brokerPID: Int32
    var batch: Int
    var threads: Int
    var hold: Duration
    var connectTimeout: Duration
    var json: Bool
    var logger: Logger

    func run() throws {
        var stderr = FileHandleStream.standardError
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        defer { try? group.syncShutdownGracefully() }
        let geometry = GuestGeometry(pageSize: 4096, totalPages: 1 << 20, minOrder: 9, maxOrder: 10)
        guard let before = Self.residentKiB(pid: self.brokerPID) else {
            stderr.write("load: cannot read /proc/\(self.brokerPID)/status\n")
            throw ExitCode.failure
        }
        stderr.write("broker RSS before: \(before) KiB\n")
        var connections: [AgentConnection] = []
        connections.reserveCapacity(self.sessions)
        var afterFirstBatch = before
        let started = ContinuousClock.now
        while connections.count < self.sessions {
            let first = connections.count
            let count = min(self.batch, self.sessions - first)
            var wave: [AgentConnection] = []
            for index in first..<(first + count) {
                let context = try self.brokerOptions.tlsContext(
                    cert: "\(self.certDirectory)/guest-\(index).pem",
                    key: "\(self.certDirectory)/guest-\(index).key"
                )
                let connection = AgentConnection(
                    configuration: self.brokerOptions.agentConfiguration(context: context),
                    geometry: geometry,
                    eventLoopGroup: group,
                    logger: LoadCommand.sessionLogger(self.logger)
                )
                connection.start()
                wave.append(connection)
            }
            connections += wave
            let ready = EventLoopFuture.whenAllSucceed(wave.map { $0.activeSession() }, on: group.next())
            let deadline = group.next().scheduleTask(in: TimeAmount(self.connectTimeout)) {}
            let cameUp = LoadCommand.wait(ready.map { _ in () }, orUntil: deadline.futureResult)
            deadline.cancel()
            guard cameUp else {
                let connected = connections.filter { $0.statistics.sessions > 0 }.count
                stderr.write("load: only \(connected) of \(connections.count) sessions came up\n")
                for connection in connections { _ = try? connection.shutdown().wait() }
                throw ExitCode.failure
            }
            let rss = Self.residentKiB(pid: self.brokerPID) ?? 0
            if first == 0 { afterFirstBatch = rss }
            let seconds = Units.seconds(ContinuousClock.now - started)
            stderr.write(
                "\(connections.count)/\(self.sessions) sessions, broker RSS \(rss) KiB, \(Units.fixed(seconds, 1)) s\n"
            )
        }
        // Let the last handshakes' garbage go and the sessions go quiet.
        Thread.sleep(forTimeInterval: 3)
        let after = Self.residentKiB(pid: self.brokerPID) ?? 0
        let reconnects = connections.reduce(0) { $0 + $1.statistics.reconnects }
        let perSession = Double(after - before) / Double(self.sessions)
        let marginal =
            self.sessions > self.batch
            ? Double(after - afterFirstBatch) / Double(self.sessions - self.batch) : perSession
        if self.json {
            print(
                "{\"sessions\":\(self.sessions),\"rss_before_kib\":\(before),\"rss_after_kib\":\(after),"
                    + "\"kib_per_session\":\(Units.fixed(perSession, 2)),"
                    + "\"kib_per_session_after_first_batch\":\(Units.fixed(marginal, 2)),\"reconnects\":\(reconnects)}"
            )
        } else {
            print(
                "\(self.sessions) idle sessions: broker RSS \(before) KiB -> \(after) KiB, "
                    + "\(Units.fixed(perSession, 2)) KiB per session "
                    + "(\(Units.fixed(marginal, 2)) KiB after the first \(self.batch)); \(reconnects) reconnects"
            )
        }
        if self.hold > .zero && self.hold < .seconds(3600) {
            Thread.sleep(forTimeInterval: Units.seconds(self.hold))
        }
        stderr.write("closing \(connections.count) sessions\n")
        let closed = connections.map { $0.shutdown() }
        for future in closed { _ = try? future.wait() }
    }

    /// VmRSS of `pid` in KiB.
    static func residentKiB(pid: Int32) -> Int? {
        guard let status = readProcFile("/proc/\(pid)/status") else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.dropFirst("VmRSS:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "")
        }
        return nil
    }
}

/// The text of a /proc file (which report a size of 0, so they are read until EOF).
func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { break }
        bytes += chunk[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// CPU time (user + system) of a process, in microseconds.
enum CPUTime {
    static func ofThisProcess() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
    }

    /// From /proc/PID/stat (utime and stime, fields 14 and 15, in clock ticks).
    static func ofProcess(_ pid: Int32) -> Double? {
        guard let stat = readProcFile("/proc/\(pid)/stat"),
            let afterName = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the parenthesised name start with field 3 (state).
        let fields = stat[stat.index(after: afterName)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (user + system) / ticks * 1e6
    }
}
