/// An error from registering or configuring the free page reporting engine.
public struct PageReportingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A stable, matchable identifier for the kind of error.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case busy
            case invalidOrder = "invalid_order"
            case invalidCapacity = "invalid_capacity"
            case invalidDelay = "invalid_delay"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A device is already registered with this allocator (the kernel's `-EBUSY`).
        public static let busy = Code(.busy)
        /// The reporting order is not an order the allocator has.
        public static let invalidOrder = Code(.invalidOrder)
        /// The batch capacity is not positive.
        public static let invalidCapacity = Code(.invalidCapacity)
        /// The delay is negative.
        public static let invalidDelay = Code(.invalidDelay)

        public var description: String { self.base.rawValue }
    }

    public let code: Code
    public let detail: String

    public init(_ code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "PageReportingError(\(self.code)): \(self.detail)" }
}
