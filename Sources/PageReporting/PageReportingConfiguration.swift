/// How the free page reporting engine behaves.
///
/// The defaults are today's Linux. Every upstream change to the seed patch that alters behaviour
/// is a switch here, so its effect can be measured against the seed (`.seed` turns them all off).
public struct PageReportingConfiguration: Sendable, Hashable {
    /// `PAGE_REPORTING_CAPACITY`: blocks per report.
    public var capacity: Int
    /// `PAGE_REPORTING_DELAY`: how long after a request a pass starts, so a sizable queue builds.
    public var delay: Duration
    /// Linux 5.7: report at most `ceil(nr_free / (capacity * 16))` batches per free list per pass,
    /// then request another pass, so no list is processed for too long.
    public var budget: Bool
    /// Linux 5.7: rotate each free list so the next unreported block is first, so the next pass
    /// does not walk past blocks it already reported.
    public var rotation: Bool
    /// Linux 5.10 (`FPI_TO_TAIL`): put reported blocks back at the tail of their free list, so
    /// allocations prefer memory the host still backs. Off, the seed's `__free_one_page` choice
    /// (head unless a merge looks likely) applies.
    public var tailPutback: Bool
    /// Linux 6.2 (`page_reporting.page_reporting_order`): an order that wins over the device's.
    /// `nil` uses the device's preferred order, else the pageblock order (Linux 5.14).
    public var orderOverride: Int?

    public init(
        capacity: Int = 32,
        delay: Duration = .seconds(2),
        budget: Bool = true,
        rotation: Bool = true,
        tailPutback: Bool = true,
        orderOverride: Int? = nil
    ) {
        self.capacity = capacity
        self.delay = delay
        self.budget = budget
        self.rotation = rotation
        self.tailPutback = tailPutback
        self.orderOverride = orderOverride
    }

    /// Today's Linux behaviour (the default).
    public static let linux = PageReportingConfiguration()

    /// The seed patch (v16 4/9) as posted: no budget, no rotation, no tail putback.
    public static let seed = PageReportingConfiguration(budget: false, rotation: false, tailPutback: false)
}
