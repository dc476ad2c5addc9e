/// The sink free page reporting reports to: the kernel's `page_reporting_dev_info`.
///
/// ``report(_:)`` runs on the engine's worker with no zone lock held. It may block for as long
/// as the host takes; returning means the host has discarded the memory of every block in the
/// batch, throwing means it has not (the blocks go back unmarked and the pass stops, as in the
/// kernel). An error that conforms to ``ReportRetryHint`` asks for the next pass to wait.
public protocol PageReportingDevice: AnyObject, Sendable {
    /// The order the device would like reported (the kernel's `prdev->order`); `nil` for the
    /// engine's default, the pageblock order.
    var preferredOrder: Int? { get }

    /// Reports a batch of isolated free blocks. Valid only during the call: copy what you keep.
    func report(_ batch: ReportBatch) throws
}

extension PageReportingDevice {
    public var preferredOrder: Int? { nil }
}

/// An error from a device that knows when the host will take reports again.
public protocol ReportRetryHint: Error {
    /// How long to wait before the next pass; `nil` for the usual behaviour.
    var retryAfter: Duration? { get }
}

/// One free block in a report: `2^order` frames from `frame`.
public struct ReportEntry: Sendable, Hashable, CustomStringConvertible {
    public var frame: Int
    public var order: Int

    public init(frame: Int, order: Int) {
        self.frame = frame
        self.order = order
    }

    /// The frames the block covers.
    public var frames: Range<Int> { self.frame..<(self.frame + 1 << self.order) }

    public var description: String { "\(self.frame)/\(self.order)" }
}

/// The blocks of one report (the kernel's scatterlist). A view into the engine's own buffer:
/// no allocation per report, valid only during ``PageReportingDevice/report(_:)``.
public struct ReportBatch: RandomAccessCollection, @unchecked Sendable {
    // @unchecked: the buffer belongs to the engine, which does not touch it while a report runs.
    @usableFromInline let entries: UnsafeBufferPointer<ReportEntry>

    @usableFromInline init(entries: UnsafeBufferPointer<ReportEntry>) { self.entries = entries }

    public var startIndex: Int { 0 }
    public var endIndex: Int { self.entries.count }

    @inlinable
    public subscript(position: Int) -> ReportEntry { self.entries[position] }

    /// Total frames in the batch.
    public var frameCount: Int { self.entries.reduce(0) { $0 + 1 << $1.order } }
}
