import BrokerAdminClient
import Foundation

/// Turns the broker's figures into what `pagebrokerctl` prints.
enum Render {
    /// JSON with snake_case keys (the snapshots' own keys, and `BrokerStatus`'s
    /// property names converted), sorted so that output is stable for diffs and tests.
    static func json(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static func status(_ status: BrokerStatus) -> String {
        let rows: [(String, String)] = [
            ("version", status.version),
            ("state", status.shuttingDown ? "shutting down" : "running"),
            ("uptime", Self.duration(status.uptimeSeconds)),
            ("listening", status.listening.isEmpty ? "-" : status.listening.joined(separator: ", ")),
            ("tenants", "\(status.tenants)"),
            ("guests", "\(status.guests) (\(status.guestsConnected) connected)"),
            ("sessions", "\(status.sessions)"),
            ("reclaimable", Self.bytes(status.reclaimableBytes)),
            ("reports ok", "\(status.reportsOK)"),
            ("reports failed", "\(status.reportsFailed)"),
        ]
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { Self.pad($0.0, width) + "  " + $0.1 }.joined(separator: "\n")
    }

    static func tenants(_ tenants: [TenantSnapshot]) -> String {
        guard !tenants.isEmpty else { return "no tenants" }
        return Self.table(
            header: [
                "TENANT", "GUESTS", "CONNECTED", "RECLAIMABLE", "RESIDENT", "REPORTS OK", "FAILED", "REPORTED",
                "REUSED",
            ],
            rightAligned: [false, true, true, true, true, true, true, true, true],
            rows: tenants.map {
                [
                    $0.tenant, "\($0.guests)", "\($0.guestsConnected)", Self.bytes($0.reclaimableBytes),
                    Self.bytes($0.residentBytes), "\($0.reportsOK)", "\($0.reportsFailed)",
                    Self.bytes($0.bytesReported),
                    Self.bytes($0.bytesReused),
                ]
            }
        )
    }

    static func guests(_ guests: [GuestSnapshot]) -> String {
        guard !guests.isEmpty else { return "no guests" }
        return Self.table(
            header: ["TENANT", "GUEST", "CONNECTED", "RECLAIMABLE", "RESIDENT", "RANGES", "SYNCING", "DISCARD"],
            rightAligned: [false, false, false, true, true, true, false, false],
            rows: guests.map {
                [
                    $0.tenant, $0.guest, $0.connected ? "yes" : "no", Self.bytes($0.reclaimableBytes),
                    $0.residentBytes.map(Self.bytes) ?? "-", "\($0.ranges)", $0.syncing ? "yes" : "no",
                    Self.discard($0),
                ]
            }
        )
    }

    /// A guest's discard state: `host` (memory attached), `none` (accounting only), and why it
    /// does not discard now (`paused`, `inhibited`).
    static func discard(_ guest: GuestSnapshot) -> String {
        var words = [guest.memoryAttached ? "host" : "none"]
        if guest.paused { words.append("paused") }
        if guest.discardInhibitedBy != nil { words.append("inhibited") }
        return words.joined(separator: ",")
    }

    /// Columns as wide as their widest cell, two spaces apart; numbers right-aligned
    /// so that magnitudes line up.
    static func table(header: [String], rightAligned: [Bool], rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.indices.map { column in
                rightAligned[column]
                    ? String(repeating: " ", count: widths[column] - row[column].count) + row[column]
                    : Self.pad(row[column], widths[column])
            }
            .joined(separator: "  ")
            .trimmingTrailingSpaces()
        }
        .joined(separator: "\n")
    }

    /// Bytes in binary units with one decimal ("1.5 GiB"), exact below 1 KiB.
    static func bytes(_ count: Int) -> String { AdminFormat.bytes(count) }

    /// A duration as the two largest units that matter ("3d 4h", "5m 2s").
    static func duration(_ seconds: Double) -> String { AdminFormat.duration(seconds) }

    private static func pad(_ text: String, _ width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}
