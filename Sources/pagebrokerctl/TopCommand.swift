import ArgumentParser
import BrokerAdminClient
import BrokerProtocol
import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `pagebrokerctl top`: the broker's figures, refreshed. What is computed and drawn is
/// ``TopFrame`` (in the BrokerAdminClient library, where it is tested); this command polls, keeps
/// the previous sample for rates, and writes frames.
struct TopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top",
        abstract: "Watch the broker: reclaimable memory and report rates per tenant, refreshed.",
        // The parser does not wrap usage lines, and the generated one is 103 columns: broken
        // by hand where an 80-column terminal needs it (later lines get the parser's indent).
        usage: """
            pagebrokerctl top [--socket <path>] [--interval <duration>]
            [--iterations <n>] [--once] [--json]
            """,
        discussion: """
            On a terminal the view is redrawn in place until Ctrl-C; otherwise each refresh is \
            printed after the previous one. Rates are reports per second since the previous \
            refresh, so the first frame has none. --json prints one JSON object per refresh, \
            one a line.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(
        help: ArgumentHelp("Time between refreshes: 500ms, 1s, 2m (at least 100ms).", valueName: "duration"),
        transform: { text in
            do { return try TopInterval.parse(text) } catch { throw ValidationError("\(error)") }
        }
    )
    var interval: Duration = .seconds(1)

    @Option(help: ArgumentHelp("Stop after this many refreshes (default: until interrupted).", valueName: "n"))
    var iterations: Int?

    @Flag(help: "Print one frame, without rates, and exit.")
    var once = false

    @Flag(help: "Print one JSON object per refresh instead of the view.")
    var json = false

    func validate() throws {
        if let iterations, iterations < 1 { throw ValidationError("--iterations must be at least 1") }
        if self.once, self.iterations != nil { throw ValidationError("--once and --iterations exclude each other") }
    }

    func run() async throws {
        let limit = self.once ? 1 : self.iterations
        let screen = Screen(redraw: !self.json && !self.once && isatty(STDOUT_FILENO) == 1, separated: !self.json)
        let client = try await self.connection.connect()
        screen.begin()
        let signals = Self.stopOnSignals(screen)
        defer {
            for source in signals { source.cancel() }
            screen.end()
        }
        let clock = ContinuousClock()
        let start = clock.now
        var previous: TopSample?
        var refreshes = 0
        do {
            while true {
                let sample = try await Self.poll(client, time: (clock.now - start).seconds)
                let frame = TopFrame(current: sample, previous: previous)
                screen.show(self.json ? try Render.json(frame) : frame.render(width: screen.width))
                previous = sample
                refreshes += 1
                if let limit, refreshes >= limit { break }
                try await Task.sleep(for: self.interval)
            }
        } catch {
            await client.close()
            throw error
        }
        await client.close()
    }

    /// Status and tenants, asked on one connection; the sample's time is taken once both
    /// answers are in.
    static func poll(_ client: AdminClient, time: @autoclosure () -> Double) async throws -> TopSample {
        var request = Pagebroker_V1_AdminRequest()
        request.status = Pagebroker_V1_StatusRequest()
        let statusResponse = try await ConnectionOptions.ask(client, request)
        guard case .status(let status)? = statusResponse.body else {
            throw unexpected(statusResponse, expected: "status")
        }
        request.tenants = Pagebroker_V1_TenantsRequest()
        let tenantsResponse = try await ConnectionOptions.ask(client, request)
        guard case .tenants(let list)? = tenantsResponse.body else {
            throw unexpected(tenantsResponse, expected: "tenants")
        }
        return TopSample(status: BrokerStatus(status), tenants: list.tenants.map(TenantSnapshot.init), time: time())
    }

    /// Ctrl-C (and SIGTERM, SIGHUP) end the view cleanly: the terminal gets its cursor back
    /// before the process exits with status 0, as after the last of --iterations.
    static func stopOnSignals(_ screen: Screen) -> [any DispatchSourceSignal] {
        [SIGINT, SIGTERM, SIGHUP].map { signal in
            Glibc.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal, queue: .global())
            source.setEventHandler {
                screen.end()
                Glibc.exit(0)
            }
            source.resume()
            return source
        }
    }
}

/// Standard output for `top`: either a view redrawn in place on a terminal (clear and
/// home, on the normal screen, so that the last frame and any error stay readable after
/// exit), or frames one after another. Writes are serialized so that a signal arriving in the
/// middle of a frame restores the terminal after it, not inside it.
final class Screen: Sendable {
    private let redraw: Bool
    private let separated: Bool
    private let state = Mutex<(started: Bool, frames: Int)>((false, 0))

    /// - Parameters:
    ///   - redraw: draw each frame over the previous one (a terminal).
    ///   - separated: when not redrawing, put a blank line between frames (not for JSON,
    ///     which is one object a line).
    init(redraw: Bool, separated: Bool) {
        self.redraw = redraw
        self.separated = separated
    }

    /// Columns of the terminal, or 100 when standard output is not one.
    var width: Int {
        var size = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        return 100
    }

    /// Hides the cursor, when redrawing.
    func begin() {
        self.state.withLock { state in
            guard self.redraw, !state.started else { return }
            state.started = true
            Self.write("\u{1B}[?25l")
        }
    }

    /// Shows `text` as the next frame.
    func show(_ text: String) {
        self.state.withLock { state in
            if self.redraw {
                Self.write("\u{1B}[H\u{1B}[2J" + text + "\n")
            } else {
                let separator = state.frames > 0 && self.separated ? "\n" : ""
                Self.write(separator + text + "\n")
            }
            state.frames += 1
        }
    }

    /// Gives the terminal its cursor back. Safe to call more than once.
    func end() {
        self.state.withLock { state in
            guard state.started else { return }
            state.started = false
            Self.write("\u{1B}[?25h")
        }
    }

    private static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    fileprivate var seconds: Double {
        let (seconds, attoseconds) = self.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
