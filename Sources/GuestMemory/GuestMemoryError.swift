import CGuestMemory

#if canImport(Glibc)
import Glibc
#endif

/// Why a ``GuestMemory`` operation failed: a stable code, and the `errno` of the system call
/// that failed (with its name, such as `EPERM`) when there was one.
public struct GuestMemoryError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A stable identifier for the kind of failure, safe to match on and to log.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The stable number; never reused or renumbered.
        public let rawValue: Int
        /// The stable name, as logs and JSON show it.
        public let name: String

        private init(_ rawValue: Int, _ name: String) {
            self.rawValue = rawValue
            self.name = name
        }

        public static func == (lhs: Code, rhs: Code) -> Bool { lhs.rawValue == rhs.rawValue }
        public func hash(into hasher: inout Hasher) { hasher.combine(self.rawValue) }
        public var description: String { self.name }

        /// A length, page size, offset or descriptor that cannot describe a pool.
        public static let invalidArgument = Code(1, "invalid_argument")
        /// `memfd_create` or `ftruncate` failed.
        public static let createFailed = Code(2, "create_failed")
        /// The memfd could not be sealed against shrinking and growing.
        public static let sealFailed = Code(3, "seal_failed")
        /// `mmap` failed.
        public static let mapFailed = Code(4, "map_failed")
        /// A hugetlb pool needs more free huge pages than the host has
        /// (`/proc/sys/vm/nr_hugepages`).
        public static let noHugePages = Code(5, "no_huge_pages")
        /// The discard call failed (for instance `EPERM` on a write-sealed memfd): nothing can be
        /// assumed about the range's contents except that it is no longer guaranteed to be
        /// resident.
        public static let discardFailed = Code(6, "discard_failed")
        /// Prefaulting failed (`MADV_POPULATE_WRITE` with an error other than "not supported").
        public static let prefaultFailed = Code(7, "prefault_failed")
        /// The kernel's residency figure could not be read (`fstat`, `mincore`, `lseek`).
        public static let residencyFailed = Code(8, "residency_failed")
        /// A range outside the pool.
        public static let outOfRange = Code(9, "out_of_range")
        /// A range not aligned to the backing's discard granularity (the huge page size for
        /// hugetlb, which frees whole huge pages only).
        public static let unaligned = Code(10, "unaligned")
    }

    /// What went wrong.
    public var code: Code
    /// The `errno` of the failed call, 0 if no call failed.
    public var errno: Int32
    /// Detail for humans; never parse it.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, errno: Int32 = 0, message: String) {
        self.code = code
        self.errno = errno
        self.message = message
    }

    /// The errno's symbolic name (`EPERM`), or `nil` without one.
    public var errnoName: String? {
        guard self.errno != 0 else { return nil }
        guard let name = pb_errno_name(self.errno) else { return "errno \(self.errno)" }
        return String(cString: name)
    }

    public var description: String {
        var text = "GuestMemoryError(\(self.code)"
        if let errnoName { text += ", \(errnoName)" }
        if !self.message.isEmpty { text += ": \(self.message)" }
        return text + ")"
    }

    /// An error for the system call that just failed, with the current `errno`.
    static func system(_ code: Code, _ message: String) -> GuestMemoryError {
        GuestMemoryError(code, errno: Glibc.errno, message: message)
    }
}
