import BuddyAllocator
import PageReporting
import Synchronization

/// A device that records every batch and runs an optional hook (which may throw) per report.
final class RecordingDevice: PageReportingDevice {
    typealias Hook = @Sendable (_ entries: [ReportEntry], _ call: Int) throws -> Void

    private let state = Mutex<(batches: [[ReportEntry]], hook: Hook?)>(([], nil))
    let preferredOrder: Int?

    init(preferredOrder: Int? = nil, hook: Hook? = nil) {
        self.preferredOrder = preferredOrder
        self.state.withLock { $0.hook = hook }
    }

    func setHook(_ hook: Hook?) { self.state.withLock { $0.hook = hook } }

    var batches: [[ReportEntry]] { self.state.withLock { $0.batches } }

    var reportedBlocks: [ReportEntry] { self.batches.flatMap { $0 } }

    func report(_ batch: ReportBatch) throws {
        let entries = Array(batch)
        let (call, hook) = self.state.withLock { state -> (Int, Hook?) in
            state.batches.append(entries)
            return (state.batches.count, state.hook)
        }
        try hook?(entries, call)
    }
}

struct HostRefused: Error, ReportRetryHint {
    var retryAfter: Duration?
}

/// A small guest: `orderCount` orders, pageblock order 3, no watermark reserve unless given.
func makeAllocator(
    frames: Int = 1024,
    orderCount: Int = 6,
    pageblockOrder: Int = 3,
    watermarks: WatermarkPolicy = .none
) throws -> BuddyAllocator {
    try BuddyAllocator(
        AllocatorConfiguration(
            frameCount: frames,
            pageSize: 4096,
            orderCount: orderCount,
            pageblockOrder: pageblockOrder,
            watermarks: watermarks
        )
    )
}

/// Frees of every block in `blocks`.
func freeAll(_ allocator: BuddyAllocator, _ blocks: [(Int, Int)]) throws {
    for (frame, order) in blocks { try allocator.free(frame: frame, order: order) }
}

/// The frames of one free list, head to tail.
func freeList(_ allocator: BuddyAllocator, order: Int, migratetype: Migratetype = .movable, zone: Int = 0) -> [Int] {
    allocator.zones[zone].withLock { locked in
        var frames: [Int] = []
        var cursor = locked.firstFreeBlock(order: order, migratetype: migratetype)
        while let frame = cursor {
            frames.append(frame)
            cursor = locked.nextFreeBlock(after: frame)
        }
        return frames
    }
}

/// Frames of all blocks currently marked Reported.
func reportedHeads(_ allocator: BuddyAllocator) -> [Int] {
    (0..<allocator.configuration.frameCount).filter { allocator.frameInfo($0)?.isReported == true }
}
