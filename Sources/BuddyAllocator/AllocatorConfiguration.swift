/// The shape of the memory a ``BuddyAllocator`` manages.
///
/// Defaults follow x86-64 Linux: 4 KiB pages, 11 orders (`MAX_ORDER` 11, blocks up to 4 MiB),
/// pageblock order 9 (2 MiB), one zone spanning every frame, watermarks computed the way
/// `init_per_zone_wmark_min()` and `__setup_per_zone_wmarks()` do.
public struct AllocatorConfiguration: Sendable, Hashable {
    /// Size of one page frame in bytes. A power of two, at least 512.
    public var pageSize: Int
    /// Number of page frames; frame numbers run from 0 to `frameCount - 1`.
    public var frameCount: Int
    /// Number of orders (the kernel's `MAX_ORDER`): blocks have orders `0 ..< orderCount`.
    public var orderCount: Int
    /// Order of a pageblock, the unit that carries a migratetype.
    public var pageblockOrder: Int
    /// The zones, in `for_each_zone` order. They must tile `0 ..< frameCount` without gaps.
    public var zones: [ZoneLayout]
    /// How each zone's min/low/high watermarks are set.
    public var watermarks: WatermarkPolicy

    /// A configuration with `frameCount` frames and the kernel's defaults for everything else.
    public init(
        frameCount: Int,
        pageSize: Int = 4096,
        orderCount: Int = 11,
        pageblockOrder: Int = 9,
        zones: [ZoneLayout]? = nil,
        watermarks: WatermarkPolicy = .kernelDefault
    ) {
        self.pageSize = pageSize
        self.frameCount = frameCount
        self.orderCount = orderCount
        self.pageblockOrder = pageblockOrder
        self.zones = zones ?? [ZoneLayout(name: "Normal", frames: 0..<frameCount)]
        self.watermarks = watermarks
    }

    /// A configuration for `memoryBytes` of memory in pages of `pageSize` bytes.
    public init(memoryBytes: Int, pageSize: Int = 4096) {
        self.init(frameCount: memoryBytes / max(pageSize, 1), pageSize: pageSize)
    }

    /// Checks that the configuration describes memory the allocator can manage.
    public func validate() throws(BuddyError) {
        func bad(_ detail: String) -> BuddyError { BuddyError(.invalidConfiguration, detail: detail) }
        guard self.pageSize >= 512, self.pageSize & (self.pageSize - 1) == 0 else {
            throw bad("page_size must be a power of two of at least 512, got \(self.pageSize)")
        }
        guard self.frameCount > 0, self.frameCount < Int(UInt32.max) else {
            throw bad("frame_count must be in 1 ..< \(UInt32.max), got \(self.frameCount)")
        }
        guard (1...20).contains(self.orderCount) else {
            throw bad("order_count must be in 1...20, got \(self.orderCount)")
        }
        guard (0..<self.orderCount).contains(self.pageblockOrder) else {
            throw bad("pageblock_order must be below order_count (\(self.orderCount)), got \(self.pageblockOrder)")
        }
        guard !self.zones.isEmpty else { throw bad("at least one zone is needed") }
        var next = 0
        for zone in self.zones {
            guard zone.frames.lowerBound == next, !zone.frames.isEmpty else {
                throw bad("zone \(zone.name) must start at frame \(next) and be non-empty, got \(zone.frames)")
            }
            next = zone.frames.upperBound
        }
        guard next == self.frameCount else {
            throw bad("zones end at frame \(next) but frame_count is \(self.frameCount)")
        }
        if case .fixed(let marks) = self.watermarks {
            guard marks.min >= 0, marks.min <= marks.low, marks.low <= marks.high else {
                throw bad("watermarks must satisfy 0 <= min <= low <= high, got \(marks)")
            }
        }
    }
}

/// A zone: a named, contiguous range of frames with its own lock, free lists and watermarks.
public struct ZoneLayout: Sendable, Hashable {
    public var name: String
    public var frames: Range<Int>

    public init(name: String, frames: Range<Int>) {
        self.name = name
        self.frames = frames
    }
}

/// A zone's watermarks in pages.
public struct Watermarks: Sendable, Hashable, CustomStringConvertible {
    public var min: Int
    public var low: Int
    public var high: Int

    public init(min: Int, low: Int, high: Int) {
        self.min = min
        self.low = low
        self.high = high
    }

    public var description: String { "min \(self.min) low \(self.low) high \(self.high) pages" }
}

/// How zone watermarks are chosen.
public enum WatermarkPolicy: Sendable, Hashable {
    /// As Linux does: `min_free_kbytes = sqrt(lowmem_kbytes * 16)` clamped to 128 KiB ... 256 MiB,
    /// shared between zones by size; low and high add `max(min / 4, managed * 10 / 10000)` once
    /// and twice (`watermark_scale_factor` 10).
    case kernelDefault
    /// The same watermarks, in pages, for every zone.
    case fixed(Watermarks)
    /// No reserve at all (every watermark 0): handy for tests that want every page usable.
    case none

    func watermarks(zonePages: Int, totalPages: Int, pageSize: Int) -> Watermarks {
        switch self {
        case .fixed(let marks):
            return marks
        case .none:
            return Watermarks(min: 0, low: 0, high: 0)
        case .kernelDefault:
            let kib = pageSize / 1024
            let lowmemKiB = totalPages * kib
            var minFreeKiB = Int(Double(lowmemKiB * 16).squareRoot())
            minFreeKiB = Swift.min(Swift.max(minFreeKiB, 128), 262_144)
            let minFreePages = minFreeKiB / Swift.max(kib, 1)
            let zoneMin = totalPages > 0 ? minFreePages * zonePages / totalPages : 0
            let step = Swift.max(zoneMin / 4, zonePages * 10 / 10_000)
            return Watermarks(min: zoneMin, low: zoneMin + step, high: zoneMin + 2 * step)
        }
    }
}
