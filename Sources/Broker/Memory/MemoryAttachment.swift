import BrokerProtocol
import CBrokerMemory
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One guest's attached memory: the descriptor the attaching process sent, owned by the broker
/// until the attaching connection ends.
///
/// The broker only ever calls `fallocate(PUNCH_HOLE | KEEP_SIZE)` and `fstat` on it: it never
/// maps it, so its address space never holds a guest's data. The descriptor is closed when the
/// connection ends *and* no punch is using it: closing it under a running punch would let the
/// number be reused by another file, which the punch would then cut holes in.
public final class MemoryAttachment: Sendable {
    public let tenant: String
    public let guest: String
    public let pageSize: UInt32
    public let totalPages: UInt64
    /// Where the descriptor lives; punches on hugetlbfs must cover whole huge pages.
    public let fileSystem: MemoryDescriptorFacts.FileSystem
    public let peer: MemoryPeer

    private struct State {
        var descriptor: CInt?
        var users = 0
        var detached = false
    }

    private let state: Mutex<State>

    /// Takes ownership of `descriptor`.
    public init(
        descriptor: CInt,
        tenant: String,
        guest: String,
        pageSize: UInt32,
        totalPages: UInt64,
        fileSystem: MemoryDescriptorFacts.FileSystem,
        peer: MemoryPeer
    ) {
        self.state = Mutex(State(descriptor: descriptor))
        self.tenant = tenant
        self.guest = guest
        self.pageSize = pageSize
        self.totalPages = totalPages
        self.fileSystem = fileSystem
        self.peer = peer
    }

    deinit {
        self.state.withLock { state in
            if let descriptor = state.descriptor { close(descriptor) }
            state.descriptor = nil
        }
    }

    /// The attaching connection ended: close the descriptor once no punch uses it.
    public func detach() {
        let toClose: CInt? = self.state.withLock { state in
            state.detached = true
            guard state.users == 0, let descriptor = state.descriptor else { return nil }
            state.descriptor = nil
            return descriptor
        }
        if let toClose { close(toClose) }
    }

    /// Whether the attaching connection is still open.
    public var isAttached: Bool { self.state.withLock { !$0.detached } }

    /// Runs `body` with the descriptor, or returns `nil` if the attachment was detached.
    private func using<T>(_ body: (CInt) -> T) -> T? {
        let descriptor: CInt? = self.state.withLock { state in
            guard !state.detached, let descriptor = state.descriptor else { return nil }
            state.users += 1
            return descriptor
        }
        guard let descriptor else { return nil }
        defer {
            let toClose: CInt? = self.state.withLock { state in
                state.users -= 1
                guard state.detached, state.users == 0, let descriptor = state.descriptor else { return nil }
                state.descriptor = nil
                return descriptor
            }
            if let toClose { close(toClose) }
        }
        return body(descriptor)
    }

    /// What punching a report's blocks came to.
    public enum PunchOutcome: Hashable, Sendable {
        /// Every block was punched; `bytes` in all.
        case punched(bytes: Int64)
        /// `fallocate` failed with `errno` at the block starting at `frame`; the blocks before it
        /// were punched (`bytesBefore`). Those frames were free in the guest, so discarding
        /// them is harmless; the report fails as a whole and the ledger does not count any.
        case failed(errno: CInt, frame: UInt64, bytesBefore: Int64)
        /// The attachment was detached before the punch could start.
        case detached
    }

    /// Punches every block out of the file, block by block, in report order:
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE, frame * page_size, 2^order * page_size)`.
    ///
    /// The blocks were checked against the session's geometry, which the caller checked equals
    /// this attachment's, so every offset and length is within the file and their products
    /// fit in `Int64` (ProtocolLimits bounds the pool well below 2^63 bytes).
    public func punch(_ blocks: [ReportedBlock]) -> PunchOutcome {
        let pageSize = Int64(self.pageSize)
        return self.using { descriptor -> PunchOutcome in
            var bytes: Int64 = 0
            for block in blocks {
                let length = pageSize << Int64(block.order)
                if pbm_punch_hole(descriptor, Int64(block.frame) * pageSize, length) != 0 {
                    return .failed(errno: errno, frame: block.frame, bytesBefore: bytes)
                }
                bytes += length
            }
            return .punched(bytes: bytes)
        } ?? .detached
    }

    /// The kernel's allocated bytes of the file now (`st_blocks * 512`), or `nil` once detached
    /// or if `fstat` fails. Read when asked: it is the kernel's figure, not ours.
    public func residentBytes() -> Int64? {
        self.using { descriptor -> Int64? in
            var size: Int64 = 0
            var allocated: Int64 = 0
            var blockSize: Int64 = 0
            guard pbm_file_figures(descriptor, &size, &allocated, &blockSize) == 0 else { return nil }
            return allocated
        } ?? nil
    }
}
