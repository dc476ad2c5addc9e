/// What a `Type=notify` daemon tells systemd, and when: a value-type state machine that takes
/// the daemon's lifecycle events and returns the datagrams to send.
///
/// It keeps the protocol's rules in one place: `READY=1` only after start-up, `RELOADING=1`
/// followed by `READY=1` for every reload, `STOPPING=1` once, no `READY=1` after it, and `STATUS=`
/// only when the text changes.
public struct NotifyStateMachine: Sendable {
    /// Where the daemon is in its life.
    public enum State: Hashable, Sendable {
        case starting
        case ready
        case reloading
        case stopping
    }

    public private(set) var state: State = .starting
    private var lastStatus: String?

    public init() {}

    /// Start-up finished: listening, configuration loaded.
    public mutating func started(status: String) -> [NotifyMessage] {
        guard self.state == .starting else { return [] }
        self.state = .ready
        return [.ready] + self.statusMessage(status)
    }

    /// The live figures changed; sends `STATUS=` if the text differs from the last one sent.
    public mutating func statusChanged(_ status: String) -> [NotifyMessage] {
        guard self.state == .ready else { return [] }
        return self.statusMessage(status)
    }

    /// SIGHUP arrived: the reload begins.
    public mutating func reloadBegan(monotonicMicroseconds: UInt64) -> [NotifyMessage] {
        guard self.state == .ready else { return [] }
        self.state = .reloading
        return [.reloading(monotonicMicroseconds: monotonicMicroseconds)]
    }

    /// The reload finished, applied or refused; either way the daemon serves again.
    public mutating func reloadFinished(status: String) -> [NotifyMessage] {
        guard self.state == .reloading else { return [] }
        self.state = .ready
        return [.ready] + self.statusMessage(status)
    }

    /// SIGTERM arrived: shutdown begins.
    public mutating func stopBegan(status: String) -> [NotifyMessage] {
        guard self.state != .stopping else { return [] }
        self.state = .stopping
        return [.stopping] + self.statusMessage(status)
    }

    /// The daemon checked its own health and found it good.
    public func healthy() -> [NotifyMessage] {
        self.state == .starting ? [] : [.watchdog]
    }

    private mutating func statusMessage(_ status: String) -> [NotifyMessage] {
        guard status != self.lastStatus else { return [] }
        self.lastStatus = status
        return [.status(status)]
    }
}
