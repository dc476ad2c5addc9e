import Glibc

/// One `sd_notify(3)` datagram: newline-separated `KEY=VALUE` assignments, in order.
public struct NotifyMessage: Hashable, Sendable, CustomStringConvertible {
    /// The assignments, in the order they are sent.
    public private(set) var fields: [(key: String, value: String)]

    public init(_ fields: [(key: String, value: String)] = []) {
        self.fields = fields
    }

    /// Adds `KEY=VALUE`. Newlines in `value` would start a new assignment, so they become spaces.
    public mutating func append(_ key: String, _ value: String) {
        self.fields.append((key, String(value.map { $0 == "\n" ? " " : $0 })))
    }

    /// The value of `key`, if present.
    public subscript(key: String) -> String? {
        self.fields.first { $0.key == key }?.value
    }

    /// The datagram's text.
    public var description: String {
        self.fields.map { "\($0.key)=\($0.value)" }.joined(separator: "\n")
    }

    /// Parses a datagram (for tests and tools that listen on a `NOTIFY_SOCKET`).
    public init(parsing text: String) {
        self.fields = text.split(separator: "\n").compactMap { line in
            guard let equals = line.firstIndex(of: "=") else { return nil }
            return (String(line[..<equals]), String(line[line.index(after: equals)...]))
        }
    }

    public static func == (lhs: NotifyMessage, rhs: NotifyMessage) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.key == $1.key && $0.value == $1.value }
    }

    public func hash(into hasher: inout Hasher) {
        for field in self.fields {
            hasher.combine(field.key)
            hasher.combine(field.value)
        }
    }

    // MARK: The messages a daemon sends

    /// `READY=1`: start-up (or a reload) is complete.
    public static let ready = NotifyMessage([("READY", "1")])
    /// `WATCHDOG=1`: the service is alive.
    public static let watchdog = NotifyMessage([("WATCHDOG", "1")])
    /// `STOPPING=1`: shutdown has begun.
    public static let stopping = NotifyMessage([("STOPPING", "1")])

    /// `STATUS=…`: a one-line description shown by `systemctl status`.
    public static func status(_ text: String) -> NotifyMessage {
        var message = NotifyMessage()
        message.append("STATUS", text)
        return message
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=`, which systemd ≥ 253 requires to pair the reload
    /// with the `systemctl reload` that caused it (older versions ignore it).
    public static func reloading(monotonicMicroseconds: UInt64) -> NotifyMessage {
        NotifyMessage([("RELOADING", "1"), ("MONOTONIC_USEC", "\(monotonicMicroseconds)")])
    }

    /// CLOCK_MONOTONIC now, in microseconds: the clock `MONOTONIC_USEC=` is read against.
    public static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}
