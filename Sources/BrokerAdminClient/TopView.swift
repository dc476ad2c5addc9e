import Foundation

/// One poll of a broker for `pagebrokerctl top`: its status and tenants, and when the
/// answers arrived on the client's monotonic clock.
public struct TopSample: Hashable, Sendable {
    public var status: BrokerStatus
    public var tenants: [TenantSnapshot]
    /// Seconds on a monotonic clock of the client's choosing; only differences matter.
    public var time: Double

    public init(status: BrokerStatus, tenants: [TenantSnapshot], time: Double) {
        self.status = status
        self.tenants = tenants
        self.time = time
    }
}

/// Reports per second over the interval between two samples.
public struct TopRate: Hashable, Sendable {
    public var okPerSecond: Double
    public var failedPerSecond: Double

    public init(okPerSecond: Double, failedPerSecond: Double) {
        self.okPerSecond = okPerSecond
        self.failedPerSecond = failedPerSecond
    }

    /// The rate of counters that went from `previous` to `current` in `seconds`; `nil`
    /// when there is no interval or a counter went down, which only a restarted broker
    /// does (its counters start again at zero, and the difference would be meaningless).
    public static func between(
        previous: (ok: Int, failed: Int),
        current: (ok: Int, failed: Int),
        seconds: Double
    ) -> TopRate? {
        guard seconds > 0, current.ok >= previous.ok, current.failed >= previous.failed else { return nil }
        return TopRate(
            okPerSecond: Double(current.ok - previous.ok) / seconds,
            failedPerSecond: Double(current.failed - previous.failed) / seconds
        )
    }
}

/// What one refresh of `pagebrokerctl top` shows: the broker's figures and, from the
/// difference to the previous sample, report rates. A value, computed without I/O, so
/// that rates and rendering are tested without a broker or a terminal.
public struct TopFrame: Hashable, Sendable {
    /// One tenant's row.
    public struct Tenant: Hashable, Sendable {
        public var tenant: String
        public var guests: Int
        public var guestsConnected: Int
        public var reclaimableBytes: Int
        public var reportsOK: Int
        public var reportsFailed: Int
        public var paused: Bool
        /// `nil` on the first frame, and after the broker restarted.
        public var rate: TopRate?
    }

    public var version: String
    public var uptimeSeconds: Double
    public var sessions: Int
    public var guests: Int
    public var guestsConnected: Int
    public var reclaimableBytes: Int
    public var reportsOK: Int
    public var reportsFailed: Int
    public var shuttingDown: Bool
    /// Seconds since the previous sample; `nil` on the first frame.
    public var intervalSeconds: Double?
    /// The whole broker's report rate; `nil` when there is no previous sample or the
    /// broker restarted in between.
    public var rate: TopRate?
    /// Sorted by name.
    public var tenants: [Tenant]

    /// The frame for `current`, with rates over the time since `previous` when given.
    ///
    /// A tenant missing from `previous` is new to the broker (the ledger learns tenants as
    /// their first guests connect), so its counters are taken to have been zero. A broker
    /// whose uptime went down has restarted: no rates, rather than negative or inflated ones.
    public init(current: TopSample, previous: TopSample?) {
        let status = current.status
        self.version = status.version
        self.uptimeSeconds = status.uptimeSeconds
        self.sessions = status.sessions
        self.guests = status.guests
        self.guestsConnected = status.guestsConnected
        self.reclaimableBytes = status.reclaimableBytes
        self.reportsOK = status.reportsOK
        self.reportsFailed = status.reportsFailed
        self.shuttingDown = status.shuttingDown

        var interval: Double?
        if let previous, current.time > previous.time, status.uptimeSeconds >= previous.status.uptimeSeconds {
            interval = current.time - previous.time
        }
        self.intervalSeconds = interval
        var before: [String: (ok: Int, failed: Int)] = [:]
        if let previous {
            self.rate = interval.flatMap {
                TopRate.between(
                    previous: (previous.status.reportsOK, previous.status.reportsFailed),
                    current: (status.reportsOK, status.reportsFailed),
                    seconds: $0
                )
            }
            for tenant in previous.tenants { before[tenant.tenant] = (tenant.reportsOK, tenant.reportsFailed) }
        } else {
            self.rate = nil
        }
        self.tenants = current.tenants.sorted { $0.tenant < $1.tenant }.map { tenant in
            Tenant(
                tenant: tenant.tenant,
                guests: tenant.guests,
                guestsConnected: tenant.guestsConnected,
                reclaimableBytes: tenant.reclaimableBytes,
                reportsOK: tenant.reportsOK,
                reportsFailed: tenant.reportsFailed,
                paused: tenant.paused,
                rate: interval.flatMap {
                    TopRate.between(
                        previous: before[tenant.tenant] ?? (0, 0),
                        current: (tenant.reportsOK, tenant.reportsFailed),
                        seconds: $0
                    )
                }
            )
        }
    }

    /// The frame as text, at most `width` columns wide (the bars shrink to fit, down to
    /// 10 cells). Each tenant's bar is its reclaimable memory as a share of the largest
    /// tenant's, so the biggest one always spans the whole bar and the others compare
    /// against it; rates show as `-` when unknown.
    public func render(width: Int = 100) -> String {
        var lines: [String] = []
        let state = self.shuttingDown ? "  SHUTTING DOWN" : ""
        // pagebrokerd reports its version as "pagebrokerd 0.1"; other backends may send a bare number.
        let name = self.version.hasPrefix("pagebrokerd") ? self.version : "pagebrokerd \(self.version)"
        lines.append("\(name)  up \(AdminFormat.duration(self.uptimeSeconds))\(state)")
        lines.append(
            "sessions \(self.sessions)  guests \(self.guestsConnected)/\(self.guests) connected  "
                + "reclaimable \(AdminFormat.bytes(self.reclaimableBytes))"
        )
        lines.append(
            "reports \(self.reportsOK) ok, \(self.reportsFailed) failed"
                + (self.rate.map { "  (\(Self.rate($0.okPerSecond)) ok/s, \(Self.rate($0.failedPerSecond)) failed/s)" }
                    ?? "")
        )
        lines.append("")
        guard !self.tenants.isEmpty else {
            lines.append("no tenants")
            return lines.joined(separator: "\n")
        }
        let header = ["TENANT", "RECLAIMABLE", "GUESTS", "OK/S", "FAILED/S", ""]
        let rows = self.tenants.map { tenant in
            [
                tenant.tenant, AdminFormat.bytes(tenant.reclaimableBytes),
                "\(tenant.guestsConnected)/\(tenant.guests)",
                tenant.rate.map { Self.rate($0.okPerSecond) } ?? "-",
                tenant.rate.map { Self.rate($0.failedPerSecond) } ?? "-",
                tenant.paused ? "PAUSED" : "",
            ]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        // Name, bar, then the figures; two spaces between columns.
        let fixed = widths.reduce(0, +) + 2 * widths.count
        let barWidth = max(10, width - fixed)
        let largest = self.tenants.map(\.reclaimableBytes).max() ?? 0
        func line(_ cells: [String], bar: String) -> String {
            var text = Self.pad(cells[0], widths[0]) + "  " + Self.pad(bar, barWidth)
            for column in 1..<5 { text += "  " + Self.padLeft(cells[column], widths[column]) }
            if !cells[5].isEmpty { text += "  " + cells[5] }
            return text.trimmingTrailingSpaces()
        }
        lines.append(line(header, bar: "MEMORY"))
        for (tenant, row) in zip(self.tenants, rows) {
            let fraction = largest > 0 ? Double(tenant.reclaimableBytes) / Double(largest) : 0
            lines.append(line(row, bar: Self.bar(fraction: fraction, width: barWidth)))
        }
        return lines.joined(separator: "\n")
    }

    /// A horizontal bar `fraction` (clamped to 0…1) of `width` cells long, in eighths of
    /// a cell, so that small differences still show.
    public static func bar(fraction: Double, width: Int) -> String {
        guard width > 0, fraction.isFinite else { return "" }
        let eighths = Int((min(1, max(0, fraction)) * Double(width * 8)).rounded())
        let partials = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"]
        return String(repeating: "█", count: eighths / 8) + partials[eighths % 8]
    }

    /// A rate with one decimal below 100 a second, whole above ("12.5", "340").
    static func rate(_ perSecond: Double) -> String {
        perSecond < 100 ? String(format: "%.1f", perSecond) : String(format: "%.0f", perSecond)
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }

    private static func padLeft(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }
}

extension TopFrame: Encodable {
    // One JSON object per refresh (`pagebrokerctl top --json`): snake_case keys like the
    // other admin JSON, byte figures in bytes, unknown rates as null rather than absent,
    // so that every line has the same keys.
    private enum CodingKeys: String, CodingKey {
        case version
        case uptimeSeconds = "uptime_seconds"
        case sessions
        case guests
        case guestsConnected = "guests_connected"
        case reclaimableBytes = "reclaimable_bytes"
        case reportsOK = "reports_ok"
        case reportsFailed = "reports_failed"
        case shuttingDown = "shutting_down"
        case intervalSeconds = "interval_seconds"
        case reportsOKPerSecond = "reports_ok_per_second"
        case reportsFailedPerSecond = "reports_failed_per_second"
        case tenants
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.version, forKey: .version)
        try container.encode(self.uptimeSeconds, forKey: .uptimeSeconds)
        try container.encode(self.sessions, forKey: .sessions)
        try container.encode(self.guests, forKey: .guests)
        try container.encode(self.guestsConnected, forKey: .guestsConnected)
        try container.encode(self.reclaimableBytes, forKey: .reclaimableBytes)
        try container.encode(self.reportsOK, forKey: .reportsOK)
        try container.encode(self.reportsFailed, forKey: .reportsFailed)
        try container.encode(self.shuttingDown, forKey: .shuttingDown)
        try container.encode(self.intervalSeconds, forKey: .intervalSeconds)
        try container.encode(self.rate?.okPerSecond, forKey: .reportsOKPerSecond)
        try container.encode(self.rate?.failedPerSecond, forKey: .reportsFailedPerSecond)
        try container.encode(self.tenants, forKey: .tenants)
    }
}

extension TopFrame.Tenant: Encodable {
    private enum CodingKeys: String, CodingKey {
        case tenant
        case guests
        case guestsConnected = "guests_connected"
        case reclaimableBytes = "reclaimable_bytes"
        case reportsOK = "reports_ok"
        case reportsFailed = "reports_failed"
        case reportsOKPerSecond = "reports_ok_per_second"
        case reportsFailedPerSecond = "reports_failed_per_second"
        case paused
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.tenant, forKey: .tenant)
        try container.encode(self.guests, forKey: .guests)
        try container.encode(self.guestsConnected, forKey: .guestsConnected)
        try container.encode(self.reclaimableBytes, forKey: .reclaimableBytes)
        try container.encode(self.reportsOK, forKey: .reportsOK)
        try container.encode(self.reportsFailed, forKey: .reportsFailed)
        try container.encode(self.rate?.okPerSecond, forKey: .reportsOKPerSecond)
        try container.encode(self.rate?.failedPerSecond, forKey: .reportsFailedPerSecond)
        try container.encode(self.paused, forKey: .paused)
    }
}

/// `--interval` of `pagebrokerctl top`: a whole number of `ms`, `s` or `m`, as in the
/// configuration file, and at least 100 ms so that a typo cannot flood the admin socket.
public enum TopInterval {
    /// The shortest interval accepted.
    public static let minimum: Duration = .milliseconds(100)

    /// Parses `text` ("1s", "250ms", "2m").
    ///
    /// - Throws: ``Invalid`` with a message naming the text and what is accepted.
    public static func parse(_ text: String) throws(Invalid) -> Duration {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000)]
        for (suffix, milliseconds) in units where text.hasSuffix(suffix) {
            guard let value = Int64(text.dropLast(suffix.count)), value > 0,
                value <= Int64.max / 1_000_000 / milliseconds
            else { break }
            let duration = Duration.milliseconds(value * milliseconds)
            guard duration >= Self.minimum else {
                throw Invalid(description: "interval '\(text)' is shorter than the minimum, 100ms")
            }
            return duration
        }
        throw Invalid(description: "'\(text)' is not an interval like 500ms, 1s or 2m")
    }

    /// Why an interval was refused.
    public struct Invalid: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}
