import BrokerProtocol
import Prometheus
import Synchronization

/// The broker's Prometheus metrics, in a registry the caller owns (the daemon makes one; tests
/// make their own and read exact values from it).
///
/// What is recorded where, and why:
///
/// - The report round-trip histogram is the only metric recorded per report: its value exists
///   nowhere else. The session handler records it, and only when the broker has metrics at all:
///   one more clock read and one observation under the histogram's own lock, no allocation,
///   about 130 ns in a release build (the broker spends about 25 µs on a report, TLS included).
/// - Everything per tenant (reclaimable bytes, reports by result and reason, bytes reported and
///   reused), the session count and the handshake failures are already counted by
///   ``BrokerCore`` under its lock, for the admin API. Counting them a second time on every
///   report would add a label-set lookup and atomic increments to the hot path and a second
///   source of truth that could drift from `pagebrokerctl`. Instead ``refresh(from:)``, run at
///   each scrape, reads the core's snapshot and advances each counter by what its source counted
///   since the previous scrape (the core's counters only grow, so the Prometheus counters stay
///   monotonic), and sets the gauges. A scrape costs one pass over the tenants; a report costs
///   nothing extra.
///
/// Metric handles are made on first sight of a label set and kept, so a scrape allocates only
/// for tenants and reasons it has not seen before.
public final class BrokerMetrics: Sendable {
    /// Names, as exposed (docs/admin.md lists them with their labels).
    public enum Name {
        public static let reclaimableBytes = "pagebroker_reclaimable_bytes"
        public static let reports = "pagebroker_reports_total"
        public static let reportedBytes = "pagebroker_reported_bytes_total"
        public static let reusedBytes = "pagebroker_reused_bytes_total"
        public static let sessions = "pagebroker_sessions"
        public static let handshakeFailures = "pagebroker_handshake_failures_total"
        public static let reportRoundTrip = "pagebroker_report_round_trip_seconds"
        public static let residentBytes = "pagebroker_resident_bytes"
        public static let discardedBytes = "pagebroker_discarded_bytes_total"
        public static let discardFailures = "pagebroker_discard_failures_total"
        public static let punchDuration = "pagebroker_discard_punch_seconds"
    }

    /// Upper bounds of the punch histogram's buckets: 10 µs (one small block) to 1 s (a report
    /// of many large blocks on a loaded host).
    public static let punchBuckets: [Duration] = [
        .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250),
        .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
    ]

    /// Upper bounds of the round-trip histogram's buckets: 50 µs to 1 s, roughly 1-2.5-5 per
    /// decade. An accepted report takes tens of microseconds on an idle broker; the upper
    /// buckets catch a broker whose event loops or core lock are saturated.
    public static let roundTripBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
    ]

    /// The registry every metric is in; render it with `emit(into:)` after ``refresh(from:)``.
    public let registry: PrometheusCollectorRegistry
    /// In seconds, as a `Double`: swift-prometheus's `Duration` histogram compares and adds
    /// 128-bit values under its lock and took twice as long per observation (about 120 ns
    /// against 55 ns, measured in a release build).
    private let roundTrip: ValueHistogram
    /// Per report with memory attached: the time its blocks took to punch, in seconds.
    private let punch: ValueHistogram
    private let sessions: Gauge
    private let exported: Mutex<Exported>

    /// A counter and the source's value it was last advanced to.
    private struct Tracked {
        let counter: Counter
        var value: Int = 0

        // Sources are never negative and saturate at Int.max (TenantSnapshot), so the difference
        // fits an Int64 and the counter's increments sum to at most Int.max: its wrapping add
        // never wraps. A saturated source stops the counter there rather than trapping.
        mutating func advance(to value: Int) {
            if value > self.value { self.counter.increment(by: Int64(value - self.value)) }
            self.value = value
        }
    }

    private struct TenantHandles {
        let reclaimable: Gauge
        var reportsOK: Tracked
        var reportsFailed: [Int: Tracked] = [:]
        var reported: Tracked
        var reused: Tracked
        let resident: Gauge
        var discarded: Tracked
        var discardFailures: [String: Tracked] = [:]
    }

    private struct Exported {
        var tenants: [String: TenantHandles] = [:]
        var handshakeFailures: [String: Tracked] = [:]
    }

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        self.roundTrip = registry.makeValueHistogram(
            descriptor: Self.descriptor(
                Name.reportRoundTrip,
                "Time from a report frame reaching its session to its result being written, in seconds."
            ),
            buckets: Self.roundTripBuckets.map(Self.seconds)
        )
        self.punch = registry.makeValueHistogram(
            descriptor: Self.descriptor(
                Name.punchDuration,
                "Time to punch one report's blocks out of a guest's attached memory, in seconds."
            ),
            buckets: Self.punchBuckets.map(Self.seconds)
        )
        self.sessions = registry.makeGauge(
            descriptor: Self.descriptor(Name.sessions, "Guest sessions the broker holds now.")
        )
        self.exported = Mutex(Exported())
    }

    // MARK: Hot path

    /// Records one report's round trip: from its frame reaching the session handler to its
    /// `ReportResult` being written.
    public func recordReportRoundTrip(_ duration: Duration) {
        self.roundTrip.record(Self.seconds(duration))
    }

    /// Records the punch of one report's blocks (host-side discard).
    public func recordPunch(_ duration: Duration) {
        self.punch.record(Self.seconds(duration))
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }

    // MARK: Scrape

    /// Brings every metric derived from the core up to date: call before rendering the registry.
    /// Scrapes are serialized here, so two at once cannot count the same difference twice.
    public func refresh(from core: BrokerCore) {
        let tenants = core.tenants()
        let handshakeFailures = core.handshakeFailures
        let sessions = core.sessionCount
        self.exported.withLock { exported in
            for tenant in tenants {
                var handles = exported.tenants[tenant.tenant] ?? self.makeTenantHandles(tenant.tenant)
                handles.reclaimable.set(Int64(tenant.reclaimableBytes))
                handles.reportsOK.advance(to: tenant.reportsOK)
                for (reason, count) in tenant.reportsFailedByReason {
                    var tracked =
                        handles.reportsFailed[reason]
                        ?? Tracked(
                            counter: self.reportsCounter(
                                tenant: tenant.tenant,
                                result: "failed",
                                reason: Pagebroker_V1_ReasonCode(rawValue: reason) ?? .UNRECOGNIZED(reason)
                            )
                        )
                    tracked.advance(to: count)
                    handles.reportsFailed[reason] = tracked
                }
                handles.reported.advance(to: tenant.bytesReported)
                handles.reused.advance(to: tenant.bytesReused)
                handles.resident.set(Int64(tenant.residentBytes))
                handles.discarded.advance(to: tenant.discardedBytes)
                for (name, count) in tenant.discardFailuresByErrno {
                    var tracked =
                        handles.discardFailures[name]
                        ?? Tracked(
                            counter: self.registry.makeCounter(
                                descriptor: Self.descriptor(
                                    Name.discardFailures,
                                    "Punches of a report's blocks that failed, by tenant and errno."
                                ),
                                labels: [("tenant", tenant.tenant), ("errno", name)]
                            )
                        )
                    tracked.advance(to: count)
                    handles.discardFailures[name] = tracked
                }
                exported.tenants[tenant.tenant] = handles
            }
            for (reason, count) in handshakeFailures {
                var tracked =
                    exported.handshakeFailures[reason]
                    ?? Tracked(
                        counter: self.registry.makeCounter(
                            descriptor: Self.descriptor(
                                Name.handshakeFailures,
                                "Guest connections refused during the TLS handshake, by reason."
                            ),
                            labels: [("reason", reason)]
                        )
                    )
                tracked.advance(to: count)
                exported.handshakeFailures[reason] = tracked
            }
            self.sessions.set(Int64(sessions))
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of the registry, refreshed from `core`.
    public func exposition(from core: BrokerCore) -> [UInt8] {
        self.refresh(from: core)
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        self.registry.emit(into: &buffer)
        return buffer
    }

    // MARK: Handles

    private func makeTenantHandles(_ tenant: String) -> TenantHandles {
        let labels = [("tenant", tenant)]
        return TenantHandles(
            reclaimable: self.registry.makeGauge(
                descriptor: Self.descriptor(
                    Name.reclaimableBytes,
                    "Bytes of guest memory the host holds discarded for the tenant now."
                ),
                labels: labels
            ),
            reportsOK: Tracked(counter: self.reportsCounter(tenant: tenant, result: "ok", reason: .ok)),
            reported: Tracked(
                counter: self.registry.makeCounter(
                    descriptor: Self.descriptor(
                        Name.reportedBytes,
                        "Bytes newly discarded by accepted reports (frames already discarded are not counted again)."
                    ),
                    labels: labels
                )
            ),
            reused: Tracked(
                counter: self.registry.makeCounter(
                    descriptor: Self.descriptor(Name.reusedBytes, "Bytes of discarded memory guests took back."),
                    labels: labels
                )
            ),
            resident: self.registry.makeGauge(
                descriptor: Self.descriptor(
                    Name.residentBytes,
                    "Bytes the kernel holds of the tenant's attached guest memory now (st_blocks of each memfd)."
                ),
                labels: labels
            ),
            discarded: Tracked(
                counter: self.registry.makeCounter(
                    descriptor: Self.descriptor(
                        Name.discardedBytes,
                        "Bytes punched out of the tenant's attached guest memory."
                    ),
                    labels: labels
                )
            )
        )
    }

    private func reportsCounter(tenant: String, result: String, reason: Pagebroker_V1_ReasonCode) -> Counter {
        self.registry.makeCounter(
            descriptor: Self.descriptor(Name.reports, "Reports answered, by tenant, result (ok or failed) and reason."),
            labels: [("tenant", tenant), ("result", result), ("reason", reason.stableName)]
        )
    }

    /// A descriptor for a full metric name: the name already carries the `pagebroker_` prefix
    /// and its unit, so they are not split into the descriptor's parts.
    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
