/// The mobility class of a pageblock or a free list, with the kernel's numbering.
///
/// The first three are what allocations ask for. `highAtomic` and `cma` blocks are set aside by
/// ``BuddyAllocator/setPageblockMigratetype(frame:to:)``; `isolate` blocks are taken out of
/// service by ``BuddyAllocator/isolatePageblock(frame:)``: their free pages are neither allocated
/// nor reported.
public enum Migratetype: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case unmovable = 0
    case movable = 1
    case reclaimable = 2
    case highAtomic = 3
    case cma = 4
    case isolate = 5

    /// `MIGRATE_TYPES`: the number of free lists per order.
    public static let count = 6

    /// The kernel's `fallbacks[]` table: where an allocation of this type may steal from when its
    /// own lists are empty, in order of preference.
    @inlinable
    public var fallbacks: (Migratetype, Migratetype)? {
        switch self {
        case .unmovable: return (.reclaimable, .movable)
        case .movable: return (.reclaimable, .unmovable)
        case .reclaimable: return (.unmovable, .movable)
        case .highAtomic, .cma, .isolate: return nil
        }
    }

    /// Whether allocations may ask for this type directly.
    public var isAllocatable: Bool {
        switch self {
        case .unmovable, .movable, .reclaimable: return true
        case .highAtomic, .cma, .isolate: return false
        }
    }

    /// `migratetype_is_mergeable`: free blocks of pageblocks of these types may merge with each
    /// other across a pageblock boundary; the others only with pageblocks of their own type.
    @inlinable
    var isMergeable: Bool { self.rawValue < Migratetype.highAtomic.rawValue }

    public var description: String {
        switch self {
        case .unmovable: return "Unmovable"
        case .movable: return "Movable"
        case .reclaimable: return "Reclaimable"
        case .highAtomic: return "HighAtomic"
        case .cma: return "CMA"
        case .isolate: return "Isolate"
        }
    }
}
