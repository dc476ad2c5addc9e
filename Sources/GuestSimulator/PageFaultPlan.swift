#if canImport(Glibc)
import Glibc
#endif

/// The order in which `pagebroker-agent bench page-fault` runs its phases, and how it reads
/// the figures they give.
///
/// A machine's speed drifts during a run (other load, CPU frequency, the page cache), and the
/// first phase of a process pays for cold code and page tables. So the plan starts with a
/// warm-up phase that is not counted, and alternates which kind of phase comes first in each
/// round (off-on, on-off, off-on, …): a drift that is linear over two rounds then costs both
/// kinds alike. Each round gives one ratio on/off of two phases that ran next to each other,
/// and the run's ratio is the median of those, which one disturbed round cannot move.
public struct PageFaultPlan: Sendable, Hashable {
    /// One phase of the run.
    public struct Phase: Sendable, Hashable, CustomStringConvertible {
        /// The round it counts in, from 1; 0 for the warm-up.
        public var round: Int
        /// Whether reporting is on during it.
        public var reporting: Bool

        /// Whether its figure counts (every phase but the warm-up).
        public var counted: Bool { self.round > 0 }

        public init(round: Int, reporting: Bool) {
            self.round = round
            self.reporting = reporting
        }

        public var description: String {
            self.counted ? "round \(self.round) reporting \(self.reporting ? "on" : "off")" : "warm-up"
        }
    }

    /// Counted rounds (each one phase off and one on).
    public let rounds: Int
    /// Whether a warm-up phase (reporting off, not counted) comes first.
    public let warmUp: Bool

    /// `rounds` rounds of one phase off and one on, after a warm-up if `warmUp`.
    public init(rounds: Int, warmUp: Bool = true) {
        precondition(rounds >= 1, "a plan needs at least one round")
        self.rounds = rounds
        self.warmUp = warmUp
    }

    /// The phases in the order they run: odd rounds off then on, even rounds on then off.
    public var phases: [Phase] {
        var phases: [Phase] = []
        if self.warmUp { phases.append(Phase(round: 0, reporting: false)) }
        for round in 1...self.rounds {
            let onFirst = round.isMultiple(of: 2)
            phases.append(Phase(round: round, reporting: onFirst))
            phases.append(Phase(round: round, reporting: !onFirst))
        }
        return phases
    }
}

/// The counted figures of a run, by round: `off[i]` and `on[i]` are round `i + 1`'s.
public struct PageFaultRounds: Sendable, Hashable {
    /// Operations per second with reporting off, by round.
    public var off: [Double]
    /// Operations per second with reporting on, by round.
    public var on: [Double]

    public init(off: [Double], on: [Double]) {
        precondition(off.count == on.count, "every round has one phase of each kind")
        self.off = off
        self.on = on
    }

    /// Each round's on / off (0 where off was 0).
    public var ratios: [Double] {
        zip(self.on, self.off).map { on, off in off > 0 ? on / off : 0 }
    }

    /// The median of the rounds' ratios: the run's figure.
    public var medianRatio: Double { Self.median(self.ratios) }
    /// The median of the rounds with reporting off.
    public var medianOff: Double { Self.median(self.off) }
    /// The median of the rounds with reporting on.
    public var medianOn: Double { Self.median(self.on) }

    /// A distribution-free confidence interval for the median of the rounds' ratios (see
    /// ``medianInterval(_:confidence:)``); nil when there are too few rounds for one.
    public func ratioInterval(confidence: Double = 0.95) -> ClosedRange<Double>? {
        Self.medianInterval(self.ratios, confidence: confidence)
    }

    /// A confidence interval for the median of the distribution `values` were drawn from,
    /// from their order statistics alone (no assumption about that distribution, which on a
    /// shared machine is anything but normal): with the values sorted, `[x(k), x(n+1-k)]` holds
    /// the median with probability `1 - 2 P(B < k)`, `B` binomial(n, 1/2), and `k` is the
    /// largest rank that keeps that at least `confidence`. Nil when even `[min, max]` falls
    /// short (fewer than 6 values at 95%).
    public static func medianInterval(_ values: [Double], confidence: Double = 0.95) -> ClosedRange<Double>? {
        precondition(confidence > 0 && confidence < 1, "a confidence level is a probability")
        let n = values.count
        guard n > 0 else { return nil }
        let sorted = values.sorted()
        // P(B = i) in logarithms, so that large counts do not underflow 2^-n.
        let logHalfToN = Double(n) * log(0.5)
        func probability(_ i: Int) -> Double {
            exp(lgamma(Double(n + 1)) - lgamma(Double(i + 1)) - lgamma(Double(n - i + 1)) + logHalfToN)
        }
        // P(B < k), grown one term at a time while the interval [x(k), x(n+1-k)] still
        // reaches the confidence asked for.
        var below = 0.0
        var rank = 0
        for k in 1...((n + 1) / 2) {
            below += probability(k - 1)
            guard 1 - 2 * below >= confidence else { break }
            rank = k
        }
        guard rank > 0 else { return nil }
        return sorted[rank - 1]...sorted[n - rank]
    }

    /// The middle value, or the mean of the two middle ones; 0 for no values.
    public static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count.isMultiple(of: 2) ? (sorted[middle - 1] + sorted[middle]) / 2 : sorted[middle]
    }
}
