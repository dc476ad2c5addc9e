import CBrokerMemory

#if canImport(Glibc)
import Glibc
#endif

/// What the kernel says of a descriptor offered on the memory socket: everything attach checks,
/// read with `fstatfs`, `fcntl` and `fstat` only (the broker never maps it).
///
/// A value, so that ``MemoryAttachmentValidator`` is tested without making descriptors of
/// every kind.
public struct MemoryDescriptorFacts: Hashable, Sendable {
    public enum FileSystem: Hashable, Sendable {
        /// tmpfs, which memfds (without `MFD_HUGETLB`) live on.
        case tmpfs
        /// hugetlbfs (memfds made with `MFD_HUGETLB` too): holes are punched in huge pages.
        case hugetlbfs
        /// Anything else, with its `f_type` magic number (ext4, a pipe's pipefs, a socket…).
        case other(Int64)
    }

    public enum AccessMode: Hashable, Sendable {
        case readOnly, writeOnly, readWrite
    }

    public var fileSystem: FileSystem
    public var accessMode: AccessMode
    /// `F_GET_SEALS`, or `nil` when the file does not support sealing.
    public var seals: Seals?
    public var size: Int64
    /// `st_blksize`: on hugetlbfs, the huge page size.
    public var blockSize: Int64

    /// The seals attach cares about.
    public struct Seals: OptionSet, Hashable, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let shrink = Seals(rawValue: pbm_seal_shrink_bit())
        public static let write = Seals(rawValue: pbm_seal_write_bit())
        public static let futureWrite = Seals(rawValue: pbm_seal_future_write_bit())
    }

    public init(fileSystem: FileSystem, accessMode: AccessMode, seals: Seals?, size: Int64, blockSize: Int64) {
        self.fileSystem = fileSystem
        self.accessMode = accessMode
        self.seals = seals
        self.size = size
        self.blockSize = blockSize
    }

    /// Reads the facts of `descriptor`, or fails with the errno's name.
    public static func read(_ descriptor: CInt) -> Result<MemoryDescriptorFacts, MemoryRefusal> {
        var type: Int64 = 0
        guard pbm_filesystem_type(descriptor, &type) == 0 else {
            return .failure(MemoryRefusal(.notSharedMemory, "fstatfs failed: \(errnoName(errno))"))
        }
        let fileSystem: FileSystem =
            switch type {
            case pbm_tmpfs_magic(): .tmpfs
            case pbm_hugetlbfs_magic(): .hugetlbfs
            default: .other(type)
            }
        let mode = pbm_access_mode(descriptor)
        let accessMode: AccessMode
        switch mode {
        case pbm_o_rdwr(): accessMode = .readWrite
        case pbm_o_wronly(): accessMode = .writeOnly
        default: accessMode = .readOnly
        }
        let rawSeals = pbm_get_seals(descriptor)
        let seals = rawSeals < 0 ? nil : Seals(rawValue: rawSeals)
        var size: Int64 = 0
        var allocated: Int64 = 0
        var blockSize: Int64 = 0
        guard pbm_file_figures(descriptor, &size, &allocated, &blockSize) == 0 else {
            return .failure(MemoryRefusal(.notSharedMemory, "fstat failed: \(errnoName(errno))"))
        }
        return .success(
            MemoryDescriptorFacts(
                fileSystem: fileSystem,
                accessMode: accessMode,
                seals: seals,
                size: size,
                blockSize: blockSize
            )
        )
    }
}

/// `EPERM` for EPERM; the number when glibc has no name for it.
func errnoName(_ error: CInt) -> String {
    pbm_errno_name(error).map { String(cString: $0) } ?? "errno \(error)"
}
