/// A small, fast, seedable generator (xoshiro256**, seeded through SplitMix64), so that a
/// simulation with the same seed does exactly the same thing on every machine.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var mix = seed
        func splitMix() -> UInt64 {
            mix &+= 0x9E37_79B9_7F4A_7C15
            var z = mix
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        self.state = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    public mutating func next() -> UInt64 {
        let result = ((self.state.1 &* 5) << 7 | (self.state.1 &* 5) >> 57) &* 9
        let t = self.state.1 << 17
        self.state.2 ^= self.state.0
        self.state.3 ^= self.state.1
        self.state.1 ^= self.state.2
        self.state.0 ^= self.state.3
        self.state.2 ^= t
        self.state.3 = self.state.3 << 45 | self.state.3 >> 19
        return result
    }

    /// A uniformly distributed value in `0 ..< bound` (`bound > 0`).
    public mutating func below(_ bound: Int) -> Int { Int(self.next(upperBound: UInt64(bound))) }

    /// `true` with probability `p`.
    public mutating func chance(_ p: Double) -> Bool { Double(self.next() >> 11) / Double(1 << 53) < p }
}
