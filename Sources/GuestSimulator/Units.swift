/// Parsing and printing of the byte sizes and durations the simulator's flags take.
public enum Units {
    /// An error naming what could not be parsed and what is accepted.
    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    private static let byteSuffixes: [(String, Int)] = [
        ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
        ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000),
        ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40), ("B", 1),
    ]

    /// Parses `4GiB`, `512MiB`, `4KiB`, `4096` (bytes), `1.5GiB`; binary suffixes K/M/G/T too.
    public static func parseBytes(_ text: String) throws(ParseError) -> Int {
        let trimmed = text.trimmingSpaces
        for (suffix, scale) in Self.byteSuffixes where trimmed.hasSuffix(suffix) {
            let number = String(trimmed.dropLast(suffix.count)).trimmingSpaces
            guard let value = Double(number), value >= 0, value.isFinite else { break }
            let bytes = value * Double(scale)
            guard bytes == bytes.rounded(), bytes < 9.0e18 else { break }
            return Int(bytes)
        }
        if let value = Int(trimmed), value >= 0 { return value }
        throw ParseError(description: "'\(text)' is not a size; use e.g. 4GiB, 512MiB, 4KiB or a byte count")
    }

    /// Parses `120s`, `2ms`, `500us`, `1.5s`, `2m`, `1h`, `250ns`.
    public static func parseDuration(_ text: String) throws(ParseError) -> Duration {
        let trimmed = text.trimmingSpaces
        let units: [(String, Double)] = [
            ("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600),
        ]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            let number = String(trimmed.dropLast(suffix.count))
            // "ms" also ends in "s": make sure what is left is a number.
            guard let value = Double(number), value >= 0, value.isFinite else { continue }
            let nanoseconds = (value * scale * 1e9).rounded()
            guard nanoseconds < 9.0e18 else { break }
            return .nanoseconds(Int64(nanoseconds))
        }
        throw ParseError(description: "'\(text)' is not a duration; use e.g. 120s, 2ms, 500us, 2m")
    }

    /// `4.00 GiB`-style text for people.
    public static func formatBytes(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while abs(value) >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : "\(Self.fixed(value, 2)) \(units[unit])"
    }

    /// Seconds of a duration as a `Double`.
    public static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// `value` with `digits` decimals, without Foundation.
    public static func fixed(_ value: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        let whole = Int(scaled / scale)
        let fraction = Int(scaled) - whole * Int(scale)
        var text = "\(value < 0 && scaled != 0 ? "-" : "")\(whole)"
        if digits > 0 {
            let digitsText = String(fraction)
            text += "." + String(repeating: "0", count: digits - digitsText.count) + digitsText
        }
        return text
    }
}

extension String {
    var trimmingSpaces: String {
        var slice = Substring(self)
        while slice.first == " " { slice = slice.dropFirst() }
        while slice.last == " " { slice = slice.dropLast() }
        return String(slice)
    }
}
