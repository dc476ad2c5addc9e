extension SimulationResult {
    /// The human-readable summary `pagebroker-agent simulate` prints: the figures, then a
    /// timeline of discarded memory as a bar chart of at most `rows` rows.
    public func summary(rows: Int = 24, barWidth: Int = 40) -> String {
        let onOff = { (flag: Bool) in flag ? "on" : "off" }
        var lines: [String] = []
        lines.append(
            "\(self.workload) workload, \(Units.formatBytes(self.totalBytes)) in \(Units.formatBytes(self.pageSize)) pages, "
                + "\(Units.fixed(self.virtualSeconds, 1)) s of virtual time, seed \(self.seed)"
        )
        if self.reportingEnabled {
            lines.append(
                "reporting: order \(self.reportOrder), capacity \(self.capacity), delay \(Units.fixed(self.delaySeconds, 3)) s, "
                    + "budget \(onOff(self.budget)), rotation \(onOff(self.rotation)), "
                    + "tail putback \(onOff(self.tailPutback)), device \(self.device)"
            )
        } else {
            lines.append("reporting: disabled")
        }
        lines.append("")
        func row(_ label: String, _ value: String) {
            lines.append("  " + label.padding(21) + value)
        }
        let share =
            self.reportableFreeBytes > 0
            ? " (\(Units.fixed(100 * Double(self.discardedBytes) / Double(self.reportableFreeBytes), 1))% of free memory in blocks of order \(self.reportOrder)+)"
            : ""
        row("free now", Units.formatBytes(self.freeBytes))
        row("discarded now", Units.formatBytes(self.discardedBytes) + share)
        row(
            "reported in total",
            "\(Units.formatBytes(self.reportedBytesTotal)) in \(self.reports) reports (\(self.reportsFailed) failed) over \(self.passes) passes"
        )
        row("reused by the guest", Units.formatBytes(self.reusedBytesTotal))
        row("workload", "\(self.allocations) allocations, \(self.frees) frees, \(self.allocationFailures) failed")
        row("isolated pages", "\(self.isolatedPages)")
        if let seconds = self.timeToDiscard99PctSeconds {
            row("99% discarded after", "\(Units.fixed(seconds, 1)) s (pass \(self.passesToDiscard99Pct ?? 0))")
        } else {
            row("99% discarded after", "never")
        }
        row("invariants", self.invariants)

        guard !self.timeline.isEmpty else { return lines.joined(separator: "\n") }
        lines.append("")
        lines.append("discarded memory over time (bar = share of \(Units.formatBytes(self.totalBytes)))")
        let step = max(1, (self.timeline.count + rows - 1) / rows)
        var index = 0
        while index < self.timeline.count {
            let point = self.timeline[index]
            let filled =
                self.totalBytes > 0
                ? Int((Double(point.discardedBytes) / Double(self.totalBytes) * Double(barWidth)).rounded()) : 0
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: barWidth - filled)
            lines.append(
                "  \(Units.fixed(point.t, 1).leftPadding(7)) s |\(bar)| \(Units.formatBytes(point.discardedBytes))"
            )
            index += step
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    fileprivate func padding(_ width: Int) -> String {
        self.count >= width ? self + " " : self + String(repeating: " ", count: width - self.count)
    }

    fileprivate func leftPadding(_ width: Int) -> String {
        self.count >= width ? self : String(repeating: " ", count: width - self.count) + self
    }
}
