/// Jittered exponential backoff for reconnecting: `initial`, doubling up to `maximum`, each
/// delay spread by ±`jitter` so that many guests that lost the same broker do not all come
/// back in the same millisecond.
public struct ReconnectBackoff: Sendable, Hashable {
    /// The first delay.
    public var initial: Duration
    /// The largest delay.
    public var maximum: Duration
    /// The spread, as a fraction of the delay (0.2 is ±20%).
    public var jitter: Double
    /// Delays handed out since the last ``reset()``.
    public private(set) var attempts = 0

    /// Creates a backoff; the defaults are 100 ms doubling to 30 s, ±20%.
    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(30), jitter: Double = 0.2) {
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
    }

    /// The delay before the next attempt.
    public mutating func next<Random: RandomNumberGenerator>(using random: inout Random) -> Duration {
        let base = Self.nominal(initial: self.initial, maximum: self.maximum, attempt: self.attempts)
        self.attempts += 1
        guard self.jitter > 0 else { return base }
        let factor = 1 + Double.random(in: -self.jitter...self.jitter, using: &random)
        return base * factor
    }

    /// The delay before the next attempt, with the system's random numbers.
    public mutating func next() -> Duration {
        var random = SystemRandomNumberGenerator()
        return self.next(using: &random)
    }

    /// Back to the first delay: a session was established.
    public mutating func reset() {
        self.attempts = 0
    }

    /// `initial * 2^attempt`, capped at `maximum`, without overflowing.
    static func nominal(initial: Duration, maximum: Duration, attempt: Int) -> Duration {
        var delay = initial
        var remaining = attempt
        while remaining > 0 && delay < maximum {
            delay = delay * 2
            remaining -= 1
        }
        return min(delay, maximum)
    }
}
