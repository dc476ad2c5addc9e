extension Sequence<Int> {
    /// The sum, saturating at `Int.max` and `Int.min` instead of trapping.
    ///
    /// For figures that add up counts or bytes from many guests or tenants, where an exact
    /// total may not fit an `Int` and a trap would take down every session of the broker.
    func saturatingSum() -> Int {
        var total = 0
        for value in self {
            let (sum, overflow) = total.addingReportingOverflow(value)
            if overflow { return value > 0 ? .max : .min }
            total = sum
        }
        return total
    }
}

extension Int {
    /// `self + other`, saturating at `Int.max` and `Int.min` instead of trapping.
    func addingSaturating(_ other: Int) -> Int {
        let (sum, overflow) = self.addingReportingOverflow(other)
        if overflow { return other > 0 ? .max : .min }
        return sum
    }
}
