/// An error from a call into ``BuddyAllocator``.
///
/// Every misuse of the allocator is refused with one of these before any state is touched, so a
/// bad call never corrupts the free lists. The ``code`` is stable and can be matched on; the
/// ``description`` is for people.
public struct BuddyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A stable, matchable identifier for the kind of error.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case orderOutOfRange = "order_out_of_range"
            case frameOutOfRange = "frame_out_of_range"
            case unalignedFrame = "unaligned_frame"
            case notAllocated = "not_allocated"
            case wrongOrder = "wrong_order"
            case outOfMemory = "out_of_memory"
            case invalidMigratetype = "invalid_migratetype"
            case invalidConfiguration = "invalid_configuration"
            case busy = "busy"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The order is negative or not below the allocator's order count.
        public static let orderOutOfRange = Code(.orderOutOfRange)
        /// The frame (or the block starting at it) lies outside the allocator's frames.
        public static let frameOutOfRange = Code(.frameOutOfRange)
        /// The frame is not a multiple of `2^order`, so it cannot start a block of that order.
        public static let unalignedFrame = Code(.unalignedFrame)
        /// The frame does not start an allocated block: a double free, or a frame never allocated.
        public static let notAllocated = Code(.notAllocated)
        /// The frame starts an allocated block of a different order than the one given.
        public static let wrongOrder = Code(.wrongOrder)
        /// No free block of the requested order exists in any zone.
        public static let outOfMemory = Code(.outOfMemory)
        /// The migratetype cannot be used for this call (for example allocating from `isolate`).
        public static let invalidMigratetype = Code(.invalidMigratetype)
        /// The configuration is inconsistent; the message names the field.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// A free page reporting device is already attached (the kernel's `-EBUSY`).
        public static let busy = Code(.busy)

        /// The stable name of the code, e.g. `double_free`.
        public var description: String { self.base.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// The frame the call named, when there was one.
    public let frame: Int?
    /// The order the call named, when there was one.
    public let order: Int?
    /// Extra detail for people, e.g. the order the block really has.
    public let detail: String

    public init(_ code: Code, frame: Int? = nil, order: Int? = nil, detail: String = "") {
        self.code = code
        self.frame = frame
        self.order = order
        self.detail = detail
    }

    public var description: String {
        var text = "BuddyError(\(self.code)"
        if let frame = self.frame { text += ", frame: \(frame)" }
        if let order = self.order { text += ", order: \(order)" }
        if !self.detail.isEmpty { text += ", \(self.detail)" }
        return text + ")"
    }
}
