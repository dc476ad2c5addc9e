/// Told when frames whose memory the host had discarded are allocated again.
///
/// Runs are delivered in batches, in the order they happened: each zone buffers up to 128 and
/// delivers them when the buffer fills or on ``BuddyAllocator/flushReuse()`` (which the
/// reporting engine calls before every report). Called with the zone lock held, from whatever
/// thread allocates or flushes: keep it short, never call back into the allocator, and hand the
/// ranges to another thread if there is real work to do (the network agent appends them to a
/// batch it sends as `Reuse`).
public protocol ReuseObserver: AnyObject, Sendable {
    /// Frames `first ..< first + count` are in use again and no longer discarded.
    func framesReused(first: Int, count: Int)
}

/// Told when a free leaves a block at or above the order it registered for
/// (`page_reporting_notify_free`), unless the allocator's `reportingState` says a pass is
/// already requested. Called without any zone lock held, with the allocator's notifier lock
/// held: never attach or detach a notifier from it.
public protocol FreeBlockNotifier: AnyObject, Sendable {
    /// A free produced a free block of `order` (after merging).
    func blockFreed(order: Int)
}
