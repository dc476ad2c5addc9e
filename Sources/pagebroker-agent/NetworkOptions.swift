import ArgumentParser
import Dispatch
import GuestAgent
import GuestSimulator
import Logging
import Synchronization
import TLSTransport

#if canImport(Glibc)
import Glibc
#endif

/// Where the broker is and which certificate to present: the flags `run` and `load` share.
struct BrokerOptions: ParsableArguments {
    @Option(help: "The broker, HOST:PORT ([IPv6]:PORT for an IPv6 address).", transform: parseEndpoint)
    var broker: Endpoint

    @Option(help: "PEM file with the guest's client certificate (SPIFFE URI SAN).")
    var cert: String?

    @Option(help: "PEM file with the client certificate's private key.")
    var key: String?

    @Option(help: "PEM file with the CA that issued the broker's certificate.")
    var ca: String

    @Option(
        name: .customLong("server-name"),
        help: "Name the broker's certificate must carry (default: the host of --broker)."
    )
    var serverName: String?

    @Option(
        name: .customLong("report-timeout"),
        help: "How long a report waits for its result, e.g. 1s, 250ms.",
        transform: parseTimeSpan
    )
    var reportTimeout: Duration = .seconds(1)

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard Logger.Level(rawValue: self.logLevel) != nil else {
            throw ValidationError("'\(self.logLevel)' is not a log level")
        }
        guard self.reportTimeout > .zero else { throw ValidationError("--report-timeout must be positive") }
    }

    /// A client TLS context for `cert` and `key`, trusting `ca`.
    func tlsContext(cert: String, key: String) throws -> TLSContext {
        do {
            return try TLSContext(
                configuration: .client(certificateChainPath: cert, privateKeyPath: key, caBundlePath: self.ca)
            )
        } catch {
            throw ValidationError("cannot load the TLS credentials (\(cert), \(key), \(self.ca)): \(error)")
        }
    }

    func agentConfiguration(context: TLSContext) -> AgentConfiguration {
        AgentConfiguration(
            host: self.broker.host,
            port: self.broker.port,
            transport: .tls(context, serverHostname: self.serverName ?? self.broker.host),
            reportTimeout: self.reportTimeout
        )
    }

    /// Sends swift-log output to standard error at the chosen level.
    func bootstrapLogging() {
        let level = Logger.Level(rawValue: self.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// A broker address from `--broker`.
struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    var host: String
    var port: Int

    var description: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }
}

func parseEndpoint(_ text: String) throws -> Endpoint {
    let host: Substring
    let portText: Substring
    if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
        host = text[text.index(after: text.startIndex)..<close]
        let rest = text[text.index(after: close)...]
        guard rest.hasPrefix(":") else { throw ValidationError("'\(text)' is not [HOST]:PORT") }
        portText = rest.dropFirst()
    } else {
        guard let colon = text.lastIndex(of: ":") else { throw ValidationError("'\(text)' is not HOST:PORT") }
        host = text[..<colon]
        portText = text[text.index(after: colon)...]
    }
    guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else {
        throw ValidationError("'\(text)' is not HOST:PORT with a port in 1...65535")
    }
    return Endpoint(host: String(host), port: port)
}

/// A duration as `Units.parseDuration` reads it, or a bare `0` (no unit needed for nothing).
func parseTimeSpan(_ text: String) throws -> Duration {
    if text == "0" { return .zero }
    do { return try Units.parseDuration(text) } catch { throw ValidationError(error.description) }
}

func parseByteSize(_ text: String) throws -> Int {
    do { return try Units.parseBytes(text) } catch { throw ValidationError(error.description) }
}

/// Waits until `duration` has passed or SIGINT/SIGTERM arrives; `nil` waits for a signal only.
/// Returns the signal's name, or `nil` when the time ran out.
func waitForDurationOrSignal(_ duration: Duration?) -> String? {
    let queue = DispatchQueue(label: "pagebroker-agent.signals")
    let stop = DispatchSemaphore(value: 0)
    let received = SignalName()
    var sources: [any DispatchSourceSignal] = []
    for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
        source.setEventHandler {
            received.set(name)
            stop.signal()
        }
        source.resume()
        sources.append(source)
    }
    defer {
        for source in sources { source.cancel() }
    }
    if let duration {
        let (seconds, attoseconds) = duration.components
        let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        _ = stop.wait(timeout: .now() + .nanoseconds(Int(clamping: nanoseconds)))
    } else {
        stop.wait()
    }
    return received.get()
}

/// The name of the signal that ended the wait, set on the signal queue.
private final class SignalName: Sendable {
    private let name = Mutex<String?>(nil)
    func set(_ name: String) { self.name.withLock { $0 = $0 ?? name } }
    func get() -> String? { self.name.withLock { $0 } }
}
