import ArgumentParser
import Dispatch
import Foundation
import GuestAgent
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
            Every guest keeps --window reports outstanding: small synthetic blocks of order 9, unique
            seqs, no allocator. Measures reports per second and round trips (submit to result, as the
            reporting device sees it). With --cert-dir, guest i presents guest-<i>.pem / guest-<i>.key
            from that directory (scripts/make-load-certs makes them); otherwise all guests present
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

    func validate() throws {
        guard self.guests > 0 else { throw ValidationError("--guests must be positive") }
        guard self.window > 0 else { throw ValidationError("--window must be positive") }
        guard (1...256).contains(self.blocks) else { throw ValidationError("--blocks must be in 1...256") }
        guard self.threads > 0 else { throw ValidationError("--threads must be positive") }
        guard self.duration > .zero else { throw ValidationError("--duration must be positive") }
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
        // 4 GiB guests reporting order-9 blocks: room for 2048 distinct blocks each.
        let geometry = GuestGeometry(pageSize: 4096, totalPages: 1 << 20, minOrder: 9, maxOrder: 10)
        let connections = contexts.map { context in
            AgentConnection(
                configuration: self.brokerOptions.agentConfiguration(context: context),
                geometry: geometry,
                eventLoopGroup: group,
                logger: logger
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
        for connection in connections {
            do { try connection.shutdown().wait() } catch {
                logger.debug("close failed", metadata: ["error": "\(error)"])
            }
        }
        let summary = recorder.summary(
            seconds: elapsed,
            guests: self.guests,
            reconnects: connections.reduce(0) { $0 + $1.statistics.reconnects }
        )
        var stdout = FileHandleStream.standardOutput
        stdout.write((self.json ? summary.json() : summary.text()) + "\n")
    }

    /// Waits for `future` or `deadline`, whichever completes first; `true` if `future` did.
    private static func wait(_ future: EventLoopFuture<Void>, orUntil deadline: EventLoopFuture<Void>) -> Bool {
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
            reconnects: reconnects
        )
    }
}

/// What `load` prints (see docs/agent.md).
struct LoadSummary: Encodable {
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

    enum CodingKeys: String, CodingKey {
        case guests, seconds, reports, errors, reconnects
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
        return text
    }
}
