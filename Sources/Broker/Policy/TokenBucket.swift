/// A token bucket: `rate` tokens a second up to `capacity`, time given by the caller so that
/// tests run on a virtual clock.
public struct TokenBucket: Hashable, Sendable {
    public let rate: Double
    public let capacity: Double
    private var tokens: Double
    private var updated: Duration

    /// A full bucket at time `now`.
    public init(rate: Double, capacity: Double, now: Duration) {
        self.rate = rate
        self.capacity = max(capacity, 1)
        self.tokens = self.capacity
        self.updated = now
    }

    /// What taking a token decided.
    public enum Decision: Hashable, Sendable {
        case allowed
        /// Refused; a token will be there after this long.
        case limited(retryAfter: Duration)
    }

    /// Takes one token if there is one.
    public mutating func take(now: Duration) -> Decision {
        if now > self.updated {
            let elapsed =
                Double((now - self.updated).components.seconds) + Double((now - self.updated).components.attoseconds)
                / 1e18
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.updated = now
        }
        if self.tokens >= 1 {
            self.tokens -= 1
            return .allowed
        }
        let wait = (1 - self.tokens) / self.rate
        return .limited(retryAfter: .nanoseconds(Int64((wait * 1e9).rounded(.up))))
    }
}
