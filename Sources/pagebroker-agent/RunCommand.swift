import ArgumentParser
import BuddyAllocator
import Dispatch
import Foundation
import GuestAgent
import GuestMemory
import GuestSimulator
import Logging
import NIOCore
import NIOPosix
import PageReporting

/// `pagebroker-agent run`: the engine in real time against a workload and a real broker.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a workload in real time, reporting free memory to a broker over mutual TLS.",
        discussion: """
            Runs for --duration, or until SIGINT or SIGTERM with --duration 0. Figures go to standard \
            error every --stats-interval and at exit; with --json, one JSON object is printed at exit \
            (keys in docs/agent.md). Exit codes: 0 ok, 1 broken allocator invariant, isolated pages \
            left or an integrity error, 2 bad flags.
            """
    )

    @OptionGroup var brokerOptions: BrokerOptions

    @Option(help: "Guest memory, e.g. 4GiB, 512MiB.", transform: parseByteSize)
    var memory: Int = 4 << 30

    @Option(
        name: .customLong("page-size"),
        help: "Page size, e.g. 4KiB (hugetlb: the huge page size).",
        transform: parseByteSize
    )
    var pageSizeOption: Int?

    @Option(help: "What is behind the frames: \(BackingChoice.names) (none: numbers only, as before).")
    var backing: BackingChoice = .memfd

    @Option(
        help:
            "Who frees reported memory: host (the broker, which holds the memfd), guest (this agent, after the broker's OK) or none (accounting only); default host when the memory socket exists and the broker takes the memory (memfd, hugetlb), else guest; none with --backing none."
    )
    var discard: DiscardMode?

    @Option(
        name: .customLong("memory-socket"),
        help: "The broker's memory socket, for host discard."
    )
    var memorySocket: String = MemoryAttachment.defaultSocketPath

    @Flag(help: "Touch the whole pool first, like a VM whose guest has used all of its memory once.")
    var prefault = false

    @Option(
        help: "Workload: \(WorkloadKind.allCases.map(\.rawValue).joined(separator: ", ")).",
        transform: parseWorkloadKind
    )
    var workload: WorkloadKind = .idle

    @Option(help: "How long to run, e.g. 60s; 0 runs until SIGINT or SIGTERM.", transform: parseTimeSpan)
    var duration: Duration = .seconds(60)

    @Option(name: .customLong("report-order"), help: "Lowest order reported (default: the pageblock order, 9).")
    var reportOrder: Int?

    @Option(help: "Delay from a request to the reporting pass, e.g. 2s.", transform: parseTimeSpan)
    var delay: Duration = .seconds(2)

    @Option(
        name: .customLong("stats-interval"),
        help: "How often to print figures to standard error; 0 only at exit.",
        transform: parseTimeSpan
    )
    var statsInterval: Duration = .seconds(5)

    @Option(help: "Random seed of the workload.")
    var seed: UInt64 = 1

    @Flag(help: "Print one JSON object at exit.")
    var json = false

    @Flag(
        help:
            "With host discard: after the run (figures printed), keep the memory attached until standard input closes, so that the broker's figures can be read against the kernel's."
    )
    var linger = false

    /// The page size: the huge page size for hugetlb, else --page-size (4 KiB by default).
    var pageSize: Int { (try? resolvePageSize(self.backing, requested: self.pageSizeOption)) ?? 4096 }

    /// --discard, or its default for the backing: host when the backing can be handed to the
    /// broker and its memory socket exists (falling back to guest if the first attach fails),
    /// guest for other real memory, none without.
    var discardMode: DiscardMode {
        if let discard { return discard }
        switch self.backing {
        case .none: return .none
        case .anonymous: return .guest
        case .memfd, .hugetlb: return memorySocketExists(self.memorySocket) ? .host : .guest
        }
    }

    func validate() throws {
        guard self.brokerOptions.cert != nil, self.brokerOptions.key != nil else {
            throw ValidationError("--cert and --key are required")
        }
        let pageSize = try resolvePageSize(self.backing, requested: self.pageSizeOption)
        // Huge pages are big: a pool of 16 is plenty to try them.
        let minimumPages = self.backing == .hugetlb ? 16 : 1024
        guard self.memory >= pageSize * minimumPages else {
            throw ValidationError("--memory must be at least \(minimumPages) pages")
        }
        if self.discard == .host && (self.backing == .anonymous || self.backing == .none) {
            throw ValidationError(
                "--discard host needs memory the broker can hold: --backing memfd or hugetlb, not \(self.backing.rawValue)"
            )
        }
        if self.backing == .none && self.discardMode == .guest {
            throw ValidationError("--discard guest needs real memory: use --backing memfd, anonymous or hugetlb")
        }
        if self.backing == .none && self.prefault {
            throw ValidationError("--prefault needs real memory: use --backing memfd, anonymous or hugetlb")
        }
        guard self.duration >= .zero else { throw ValidationError("--duration must not be negative") }
        guard self.delay >= .zero else { throw ValidationError("--delay must not be negative") }
        guard self.statsInterval >= .zero else { throw ValidationError("--stats-interval must not be negative") }
        let orders = AllocatorConfiguration(memoryBytes: self.memory, pageSize: self.pageSize).orderCount
        if let order = self.reportOrder, !(0..<orders).contains(order) {
            throw ValidationError("--report-order must be in 0..<\(orders)")
        }
    }

    func run() throws {
        self.brokerOptions.bootstrapLogging()
        let logger = Logger(label: "pagebroker.agent")
        let context = try self.brokerOptions.tlsContext(cert: self.brokerOptions.cert!, key: self.brokerOptions.key!)
        let allocatorConfiguration = AllocatorConfiguration(memoryBytes: self.memory, pageSize: self.pageSize)
        let allocator: BuddyAllocator
        do {
            allocator = try BuddyAllocator(allocatorConfiguration)
        } catch {
            throw ValidationError("cannot make the allocator: \(error)")
        }
        // Huge-page frames are reported one by one unless told otherwise: a pageblock of them is 1 GiB.
        let order = self.reportOrder ?? (self.backing == .hugetlb ? 0 : allocatorConfiguration.pageblockOrder)
        let memory = try makeGuestMemory(
            self.backing,
            memory: allocatorConfiguration.frameCount * self.pageSize,
            pageSize: self.pageSize
        )
        if let memory, self.prefault {
            do {
                try memory.prefault()
            } catch {
                var stderr = FileHandleStream.standardError
                stderr.write("pagebroker-agent: cannot prefault the pool: \(error)\n")
                throw ExitCode.failure
            }
        }
        // The kernel's figure before anything is reported: what the guest's memory costs the host.
        let residentAtStart = try? memory?.residentBytes()
        if let residentAtStart {
            logger.info(
                "guest memory ready",
                metadata: [
                    "backing": "\(self.backing.rawValue)", "bytes": "\(memory?.length ?? 0)",
                    "resident_bytes": "\(residentAtStart)",
                ]
            )
        }
        let patterned = memory.map {
            PatternedMemory(
                zeroing: ZeroedAllocator(
                    allocator: allocator,
                    memory: $0,
                    discardedReadsZero: self.discardMode != .none
                )
            )
        }

        let hostDiscard = try self.makeHostDiscard(memory: memory, allocator: allocator, logger: logger)

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let connection = AgentConnection(
            configuration: self.brokerOptions.agentConfiguration(context: context),
            allocator: allocator,
            reportingOrder: order,
            eventLoopGroup: group,
            logger: logger,
            hostDiscard: hostDiscard
        )
        connection.start()

        let workload = RealTimeWorkload(kind: self.workload, allocator: allocator, seed: self.seed, memory: patterned)
        workload.start()
        let remote = RemoteReportingDevice(connection: connection)
        // Guest discard, also the fallback of a default host discard whose attach failed.
        var guestDiscard: GuestDiscardingDevice?
        if let memory, self.discardMode == .guest || hostDiscard?.policy == .preferred {
            guestDiscard = GuestDiscardingDevice(remote: remote, memory: memory, repopulateOnFailure: self.prefault)
        }
        let device: any PageReportingDevice
        if let hostDiscard {
            device = HostDiscardingDevice(remote: remote, hostDiscard: hostDiscard, fallback: guestDiscard)
        } else if let guestDiscard {
            device = guestDiscard
        } else {
            device = remote
        }
        let engine = try PageReportingEngine.register(
            device: device,
            allocator: allocator,
            scheduler: DispatchReportingScheduler(label: "pagebroker.agent.reporting"),
            configuration: PageReportingConfiguration(delay: self.delay, orderOverride: order)
        )
        // Frames back from quarantine are free blocks nobody reported: have them reported.
        hostDiscard?.quarantine?.setReleaseHandler { [engine] in engine.request() }

        let figures = Figures(
            allocator: allocator,
            engine: engine,
            connection: connection,
            workload: workload,
            memory: memory,
            patterned: patterned,
            guestDiscard: guestDiscard,
            hostDiscard: hostDiscard,
            residentAtStart: residentAtStart
        )
        let ticker = self.startTicker(figures)
        let started = ContinuousClock.now
        let signalName = waitForDurationOrSignal(self.duration == .zero ? nil : self.duration)
        if let signalName { logger.info("stopping", metadata: ["signal": "\(signalName)"]) }
        ticker?.cancel()

        // Order matters: no new allocations, then no report in flight, then the last reuse and
        // Goodbye, so the broker's record ends equal to the guest's.
        workload.stop()
        // Blocks still held were never freed: check them now, before anything else can touch them.
        if let patterned {
            for block in workload.heldBlocks { patterned.check(frame: block.frame, order: block.order) }
        }
        engine.unregister()
        do {
            try connection.shutdown().wait()
        } catch {
            logger.warning("closing the broker connection failed", metadata: ["error": "\(error)"])
        }
        hostDiscard?.quarantine?.setReleaseHandler(nil)
        let result = figures.result(
            seconds: Units.seconds(ContinuousClock.now - started),
            workload: self.workload.rawValue,
            reportOrder: order,
            backing: self.backing.rawValue,
            discard: hostDiscard.map { $0.mode == .guest ? "guest" : "host" } ?? self.discardMode.rawValue,
            prefault: self.prefault
        )
        var stderr = FileHandleStream.standardError
        stderr.write(figures.line(prefix: "final") + "\n")
        if let error = patterned?.firstIntegrityError {
            stderr.write("pagebroker-agent: integrity error: \(error)\n")
        }
        if self.json {
            var stdout = FileHandleStream.standardOutput
            stdout.write(result.json() + "\n")
        }
        if self.linger, let hostDiscard {
            logger.notice("run done; the memory stays attached until standard input closes")
            var byte: UInt8 = 0
            while read(0, &byte, 1) > 0 {}
            hostDiscard.attachment.detach()
        }
        hostDiscard?.attachment.detach()
        if result.invariants != "ok" || result.isolatedPages != 0 || result.integrityErrors != 0 {
            throw ExitCode.failure
        }
    }

    /// Host discard for `--discard host`, or by default when the memory socket exists.
    private func makeHostDiscard(memory: GuestMemory?, allocator: BuddyAllocator, logger: Logger) throws -> HostDiscard?
    {
        guard let memory, self.backing == .memfd || self.backing == .hugetlb else {
            if self.discard == nil, self.backing == .anonymous {
                logger.notice("anonymous memory cannot be handed to the broker: the guest discards its own memory")
            }
            return nil
        }
        guard self.discardMode == .host else {
            if self.discard == nil {
                logger.warning(
                    "no broker memory socket: the guest discards its own memory (host discard needs the broker's memory socket)",
                    metadata: ["memory_socket": "\(self.memorySocket)"]
                )
            }
            return nil
        }
        let attachment: MemoryAttachment
        do {
            attachment = try MemoryAttachment(socketPath: self.memorySocket, memory: memory)
        } catch {
            throw ValidationError("--discard host: \(error)")
        }
        return HostDiscard(
            attachment: attachment,
            allocator: allocator,
            policy: self.discard == .host ? .required : .preferred
        )
    }

    private func startTicker(_ figures: Figures) -> (any DispatchSourceTimer)? {
        guard self.statsInterval > .zero else { return nil }
        let (seconds, attoseconds) = self.statsInterval.components
        let interval = DispatchTimeInterval.nanoseconds(Int(seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "pagebroker-agent.stats"))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler {
            var stderr = FileHandleStream.standardError
            stderr.write(figures.line(prefix: "agent") + "\n")
        }
        timer.resume()
        return timer
    }
}

/// The run's figures, read from the allocator, the engine and the connection.
private struct Figures: Sendable {
    let allocator: BuddyAllocator
    let engine: PageReportingEngine
    let connection: AgentConnection
    let workload: RealTimeWorkload
    let memory: GuestMemory?
    let patterned: PatternedMemory?
    let guestDiscard: GuestDiscardingDevice?
    let hostDiscard: HostDiscard?
    let residentAtStart: Int?

    /// The kernel's figure for the pool, `nil` without one (or if the kernel would not say).
    var residentBytes: Int? { try? self.memory?.residentBytes() }

    func line(prefix: String) -> String {
        let stats = self.allocator.statistics
        let engine = self.engine.statistics
        let agent = self.connection.statistics
        let pageSize = stats.pageSize
        return "\(prefix): discarded \(Units.formatBytes(stats.discardedPages * pageSize))"
            + " free \(Units.formatBytes(stats.freePages * pageSize))"
            + " reports \(engine.reports) failed \(engine.reportsFailed)"
            + " (refused \(agent.reportsRefused), timed out \(agent.reportsTimedOut),"
            + " not delivered \(agent.reportsNotDelivered))"
            + " sessions \(agent.sessions) reuse frames \(agent.reuseFrames)"
            + " tenant \(agent.lastSession?.tenant ?? "-") guest \(agent.lastSession?.guest ?? "-")"
            + (self.residentBytes.map { " resident \(Units.formatBytes($0))" } ?? "")
            + (self.patterned.map { " integrity errors \($0.integrityErrors)" } ?? "")
            + (self.hostDiscard.flatMap { hostDiscard in
                hostDiscard.quarantine.map {
                    " quarantined \(Units.formatBytes($0.quarantinedBytes)) (\($0.figures.reports) reports)"
                        + " discard \(hostDiscard.mode)"
                }
            } ?? "")
    }

    func result(
        seconds: Double,
        workload: String,
        reportOrder: Int,
        backing: String,
        discard: String,
        prefault: Bool
    ) -> RunResult {
        let stats = self.allocator.statistics
        let engine = self.engine.statistics
        let agent = self.connection.statistics
        let work = self.workload.statistics
        let invariants: String
        do {
            try self.allocator.validate()
            invariants = "ok"
        } catch {
            invariants = "\(error)"
        }
        return RunResult(
            discardedBytes: stats.discardedPages * stats.pageSize,
            reports: engine.reports,
            reportsFailed: engine.reportsFailed,
            reportsRefused: agent.reportsRefused,
            reportsTimedOut: agent.reportsTimedOut,
            reportsNotDelivered: agent.reportsNotDelivered,
            lateResults: agent.lateResults,
            isolatedPages: stats.isolatedPages,
            invariants: invariants,
            reconnects: agent.reconnects,
            sessions: agent.sessions,
            reusedBytesTotal: (self.connection.reuseBuffer?.reusedPages ?? 0) * stats.pageSize,
            reuseFrames: agent.reuseFrames,
            syncChunks: agent.syncChunks,
            tenant: agent.lastSession?.tenant,
            guest: agent.lastSession?.guest,
            sessionID: agent.lastSession?.sessionID,
            freeBytes: stats.freePages * stats.pageSize,
            totalBytes: stats.totalPages * stats.pageSize,
            pageSize: stats.pageSize,
            reportOrder: reportOrder,
            workload: workload,
            seconds: seconds,
            allocations: work.allocations,
            frees: work.frees,
            allocationFailures: work.allocationFailures,
            backing: backing,
            discard: discard,
            prefault: prefault,
            residentBytes: self.residentBytes,
            integrityErrors: self.patterned?.integrityErrors ?? 0,
            zeroingSkippedBytes: self.patterned?.zeroing.skippedBytes ?? 0,
            zeroedBytes: self.patterned?.zeroing.zeroedBytes ?? 0,
            discardFailures: self.guestDiscard?.statistics.discardFailures ?? 0,
            residentBytesAtStart: self.residentAtStart,
            quarantine: self.hostDiscard.flatMap { hostDiscard in
                guard let quarantine = hostDiscard.quarantine else { return nil }
                let figures = quarantine.figures
                return QuarantineResult(
                    quarantinedBytes: quarantine.quarantinedBytes,
                    quarantinedReports: figures.reports,
                    quarantinedReportsTotal: figures.quarantinedTotal,
                    releasedByLateResult: figures.releasedByLateResult,
                    releasedBySettledSession: figures.releasedBySettledSession,
                    memoryAttaches: hostDiscard.attachment.attachCount
                )
            }
        )
    }
}

/// The host-discard figures of `run --json`.
struct QuarantineResult {
    var quarantinedBytes: Int
    var quarantinedReports: Int
    var quarantinedReportsTotal: Int
    var releasedByLateResult: Int
    var releasedBySettledSession: Int
    var memoryAttaches: Int
}

/// What `run --json` prints (see docs/agent.md).
struct RunResult: Encodable {
    var discardedBytes: Int
    var reports: Int
    var reportsFailed: Int
    var reportsRefused: Int
    var reportsTimedOut: Int
    var reportsNotDelivered: Int
    var lateResults: Int
    var isolatedPages: Int
    var invariants: String
    var reconnects: Int
    var sessions: Int
    var reusedBytesTotal: Int
    var reuseFrames: Int
    var syncChunks: Int
    var tenant: String?
    var guest: String?
    var sessionID: String?
    var freeBytes: Int
    var totalBytes: Int
    var pageSize: Int
    var reportOrder: Int
    var workload: String
    var seconds: Double
    var allocations: Int
    var frees: Int
    var allocationFailures: Int
    var backing: String
    var discard: String
    var prefault: Bool
    var residentBytes: Int?
    var integrityErrors: Int
    var zeroingSkippedBytes: Int
    var zeroedBytes: Int
    var discardFailures: Int
    var residentBytesAtStart: Int?
    /// Host discard only; the keys are absent otherwise.
    var quarantine: QuarantineResult?

    enum CodingKeys: String, CodingKey {
        case discardedBytes = "discarded_bytes"
        case reports
        case reportsFailed = "reports_failed"
        case reportsRefused = "reports_refused"
        case reportsTimedOut = "reports_timed_out"
        case reportsNotDelivered = "reports_not_delivered"
        case lateResults = "late_results"
        case isolatedPages = "isolated_pages"
        case invariants
        case reconnects
        case sessions
        case reusedBytesTotal = "reused_bytes_total"
        case reuseFrames = "reuse_frames"
        case syncChunks = "sync_chunks"
        case tenant
        case guest
        case sessionID = "session_id"
        case freeBytes = "free_bytes"
        case totalBytes = "total_bytes"
        case pageSize = "page_size"
        case reportOrder = "report_order"
        case workload
        case seconds
        case allocations
        case frees
        case allocationFailures = "allocation_failures"
        case backing
        case discard
        case prefault
        case residentBytes = "resident_bytes"
        case integrityErrors = "integrity_errors"
        case zeroingSkippedBytes = "zeroing_skipped_bytes"
        case zeroedBytes = "zeroed_bytes"
        case discardFailures = "discard_failures"
        case residentBytesAtStart = "resident_bytes_at_start"
        case quarantinedBytes = "quarantined_bytes"
        case quarantinedReports = "quarantined_reports"
        case quarantinedReportsTotal = "quarantined_reports_total"
        case quarantineReleasedLate = "quarantine_released_late"
        case quarantineReleasedSettled = "quarantine_released_settled"
        case memoryAttaches = "memory_attaches"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.discardedBytes, forKey: .discardedBytes)
        try container.encode(self.reports, forKey: .reports)
        try container.encode(self.reportsFailed, forKey: .reportsFailed)
        try container.encode(self.reportsRefused, forKey: .reportsRefused)
        try container.encode(self.reportsTimedOut, forKey: .reportsTimedOut)
        try container.encode(self.reportsNotDelivered, forKey: .reportsNotDelivered)
        try container.encode(self.lateResults, forKey: .lateResults)
        try container.encode(self.isolatedPages, forKey: .isolatedPages)
        try container.encode(self.invariants, forKey: .invariants)
        try container.encode(self.reconnects, forKey: .reconnects)
        try container.encode(self.sessions, forKey: .sessions)
        try container.encode(self.reusedBytesTotal, forKey: .reusedBytesTotal)
        try container.encode(self.reuseFrames, forKey: .reuseFrames)
        try container.encode(self.syncChunks, forKey: .syncChunks)
        // Never connected: null, so a reader can tell it from an empty identity.
        try container.encode(self.tenant, forKey: .tenant)
        try container.encode(self.guest, forKey: .guest)
        try container.encode(self.sessionID, forKey: .sessionID)
        try container.encode(self.freeBytes, forKey: .freeBytes)
        try container.encode(self.totalBytes, forKey: .totalBytes)
        try container.encode(self.pageSize, forKey: .pageSize)
        try container.encode(self.reportOrder, forKey: .reportOrder)
        try container.encode(self.workload, forKey: .workload)
        try container.encode(self.seconds, forKey: .seconds)
        try container.encode(self.allocations, forKey: .allocations)
        try container.encode(self.frees, forKey: .frees)
        try container.encode(self.allocationFailures, forKey: .allocationFailures)
        try container.encode(self.backing, forKey: .backing)
        try container.encode(self.discard, forKey: .discard)
        try container.encode(self.prefault, forKey: .prefault)
        // No pool (--backing none): null, not 0, which would claim that nothing is resident.
        try container.encode(self.residentBytes, forKey: .residentBytes)
        try container.encode(self.integrityErrors, forKey: .integrityErrors)
        try container.encode(self.zeroingSkippedBytes, forKey: .zeroingSkippedBytes)
        try container.encode(self.zeroedBytes, forKey: .zeroedBytes)
        try container.encode(self.discardFailures, forKey: .discardFailures)
        try container.encode(self.residentBytesAtStart, forKey: .residentBytesAtStart)
        if let quarantine = self.quarantine {
            try container.encode(quarantine.quarantinedBytes, forKey: .quarantinedBytes)
            try container.encode(quarantine.quarantinedReports, forKey: .quarantinedReports)
            try container.encode(quarantine.quarantinedReportsTotal, forKey: .quarantinedReportsTotal)
            try container.encode(quarantine.releasedByLateResult, forKey: .quarantineReleasedLate)
            try container.encode(quarantine.releasedBySettledSession, forKey: .quarantineReleasedSettled)
            try container.encode(quarantine.memoryAttaches, forKey: .memoryAttaches)
        }
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}

func parseWorkloadKind(_ text: String) throws -> WorkloadKind {
    guard let kind = WorkloadKind(rawValue: text) else {
        throw ValidationError(
            "'\(text)' is not a workload; use one of \(WorkloadKind.allCases.map(\.rawValue).joined(separator: ", "))"
        )
    }
    return kind
}
