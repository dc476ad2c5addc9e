/// Byte counts for people: binary units with one decimal ("1.5 GiB"), exact below 1 KiB.
public enum ByteCountFormat {
    public static func string(_ count: Int) -> String {
        guard count >= 1024 else { return "\(count) B" }
        let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(count) / 1024
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        // Tenths by integer rounding: String(format:) would pull in Foundation for one digit.
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }
}
