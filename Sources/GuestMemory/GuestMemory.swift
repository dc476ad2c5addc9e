import CGuestMemory
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A guest's pool of real memory: `frameCount` frames of `pageSize` bytes, frame N at
/// `base + N * pageSize`, on one of four backings (see ``Backing``).
///
/// It sits beside `BuddyAllocator`, which says which frames are free, and the reporting engine,
/// which says which free frames the host has discarded; neither knows about it. It knows how to
/// discard a range the right way for its backing, how to prefault itself, and asks the kernel
/// how much of it is resident (``residentBytes()``), never its own bookkeeping.
///
/// All methods may be called from any thread; the memory itself is the caller's to share.
public final class GuestMemory: @unchecked Sendable {
    // @unchecked: the stored properties are immutable after init; `base` points at memory whose
    // use the caller coordinates (the allocator hands each frame to one owner at a time).

    /// How the pool's memory is obtained, which decides how it is discarded and measured.
    public enum Backing: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
        /// A sealed memfd mapped shared: what a VMM's guest RAM is, and what a broker can be
        /// handed. Discard punches a hole (`fallocate(PUNCH_HOLE|KEEP_SIZE)`); residency is the
        /// memfd's `st_blocks`.
        case memfd
        /// A private anonymous mapping (an embedder's own heap). Discard is `MADV_DONTNEED`;
        /// residency comes from `mincore`.
        case anonymous
        /// A memfd of huge pages; the page size is the huge page size. Discard punches whole huge
        /// pages; residency is `st_blocks`.
        case hugetlb
        /// Memory the embedder already has. With its file descriptor, discard punches a hole and
        /// residency comes from `SEEK_DATA`/`SEEK_HOLE`; without, `MADV_REMOVE` (shared) or
        /// `MADV_DONTNEED` (private anonymous), and `mincore`.
        case external

        public var description: String { self.rawValue }
    }

    /// The backing.
    public let backing: Backing
    /// Frame 0's address.
    public let base: UnsafeMutableRawPointer
    /// The pool's length in bytes, `frameCount * pageSize`.
    public let length: Int
    /// The size of one frame.
    public let pageSize: Int
    /// The smallest unit the backing can discard and the kernel counts: the system page size,
    /// or the huge page size for hugetlb.
    public let granularity: Int
    /// The memfd (memfd, hugetlb) or the embedder's file descriptor (external), if any. It is
    /// sealed against shrinking and growing but never against writes, so it can be handed to a
    /// broker that punches holes in it.
    public let fileDescriptor: Int32?
    /// Where frame 0 lies in ``fileDescriptor``.
    public let fileOffset: Int
    private let shared: Bool
    private let ownsMapping: Bool
    private let discardCalls = Atomic<Int>(0)
    private let discardedBytesCounter = Atomic<Int>(0)

    /// Number of frames.
    public var frameCount: Int { self.length / self.pageSize }

    private init(
        backing: Backing,
        base: UnsafeMutableRawPointer,
        length: Int,
        pageSize: Int,
        granularity: Int,
        fileDescriptor: Int32?,
        fileOffset: Int,
        shared: Bool,
        ownsMapping: Bool
    ) {
        self.backing = backing
        self.base = base
        self.length = length
        self.pageSize = pageSize
        self.granularity = granularity
        self.fileDescriptor = fileDescriptor
        self.fileOffset = fileOffset
        self.shared = shared
        self.ownsMapping = ownsMapping
    }

    deinit {
        guard self.ownsMapping else { return }
        munmap(self.base, self.length)
        if let fileDescriptor { close(fileDescriptor) }
    }

    /// The system's page size.
    public static var systemPageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }

    /// The default huge page size (`Hugepagesize` in `/proc/meminfo`), or `nil` without hugetlb.
    public static var hugePageSize: Int? {
        let size = pb_default_huge_page_size()
        return size > 0 ? Int(size) : nil
    }

    // MARK: Making pools

    /// A pool of `length` bytes in frames of `pageSize` bytes on `backing` (not `external`: use
    /// ``external(base:length:pageSize:fileDescriptor:fileOffset:shared:)``). For hugetlb,
    /// `pageSize` must be the huge page size.
    public static func make(
        _ backing: Backing,
        length: Int,
        pageSize: Int,
        name: String = "pagebroker-guest"
    ) throws(GuestMemoryError) -> GuestMemory {
        switch backing {
        case .memfd: return try self.memfd(length: length, pageSize: pageSize, name: name)
        case .anonymous: return try self.anonymous(length: length, pageSize: pageSize)
        case .hugetlb: return try self.hugetlb(length: length, name: name)
        case .external:
            throw GuestMemoryError(.invalidArgument, message: "an external pool needs the embedder's mapping")
        }
    }

    /// A memfd (`MFD_CLOEXEC | MFD_ALLOW_SEALING`) of `length` bytes, sealed against shrinking
    /// and growing (and against further seals, so nobody can add `F_SEAL_WRITE`, which would make
    /// every discard fail), mapped shared.
    public static func memfd(
        length: Int,
        pageSize: Int = GuestMemory.systemPageSize,
        name: String = "pagebroker-guest"
    ) throws(GuestMemoryError) -> GuestMemory {
        try self.checkGeometry(length: length, pageSize: pageSize, granularity: self.systemPageSize)
        let fd = try self.createMemfd(name: name, length: length, hugetlb: false)
        let base: UnsafeMutableRawPointer
        do {
            base = try self.map(length: length, fd: fd, hugetlb: false)
        } catch {
            close(fd)
            throw error
        }
        return GuestMemory(
            backing: .memfd,
            base: base,
            length: length,
            pageSize: pageSize,
            granularity: self.systemPageSize,
            fileDescriptor: fd,
            fileOffset: 0,
            shared: true,
            ownsMapping: true
        )
    }

    /// A private anonymous mapping of `length` bytes.
    public static func anonymous(
        length: Int,
        pageSize: Int = GuestMemory.systemPageSize
    ) throws(GuestMemoryError) -> GuestMemory {
        try self.checkGeometry(length: length, pageSize: pageSize, granularity: self.systemPageSize)
        let address = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let address, address != MAP_FAILED else {
            throw .system(.mapFailed, "mmap of \(length) bytes of anonymous memory")
        }
        return GuestMemory(
            backing: .anonymous,
            base: address,
            length: length,
            pageSize: pageSize,
            granularity: self.systemPageSize,
            fileDescriptor: nil,
            fileOffset: 0,
            shared: false,
            ownsMapping: true
        )
    }

    /// A memfd of huge pages (`MFD_HUGETLB`), sealed like ``memfd(length:pageSize:name:)`` and
    /// mapped shared; frames are huge pages. The mapping reserves its huge pages up front, so a
    /// host without enough free ones fails here with ``GuestMemoryError/Code/noHugePages``.
    public static func hugetlb(length: Int, name: String = "pagebroker-guest") throws(GuestMemoryError) -> GuestMemory {
        guard let huge = self.hugePageSize else {
            throw GuestMemoryError(.noHugePages, message: "this kernel has no hugetlb support (/proc/meminfo)")
        }
        try self.checkGeometry(length: length, pageSize: huge, granularity: huge)
        let fd = try self.createMemfd(name: name, length: length, hugetlb: true)
        let base: UnsafeMutableRawPointer
        do {
            base = try self.map(length: length, fd: fd, hugetlb: true)
        } catch {
            close(fd)
            throw error
        }
        return GuestMemory(
            backing: .hugetlb,
            base: base,
            length: length,
            pageSize: huge,
            granularity: huge,
            fileDescriptor: fd,
            fileOffset: 0,
            shared: true,
            ownsMapping: true
        )
    }

    /// Memory the embedder already has mapped at `base`, which it keeps owning (it is neither
    /// unmapped nor closed here). Give its file descriptor and the file offset of `base` if it is
    /// file or memfd backed, so that discard frees the memory instead of dropping page tables.
    /// Without a descriptor, `shared` says whether the mapping is shared (discarded with
    /// `MADV_REMOVE`) or private anonymous (`MADV_DONTNEED`).
    public static func external(
        base: UnsafeMutableRawPointer,
        length: Int,
        pageSize: Int = GuestMemory.systemPageSize,
        fileDescriptor: Int32? = nil,
        fileOffset: Int = 0,
        shared: Bool = false
    ) throws(GuestMemoryError) -> GuestMemory {
        let granularity = self.systemPageSize
        try self.checkGeometry(length: length, pageSize: pageSize, granularity: granularity)
        guard Int(bitPattern: base) % granularity == 0 else {
            throw GuestMemoryError(.invalidArgument, message: "base \(base) is not page aligned")
        }
        guard fileOffset >= 0, fileOffset % granularity == 0 else {
            throw GuestMemoryError(.invalidArgument, message: "file offset \(fileOffset) is not page aligned")
        }
        return GuestMemory(
            backing: .external,
            base: base,
            length: length,
            pageSize: pageSize,
            granularity: granularity,
            fileDescriptor: fileDescriptor,
            fileOffset: fileOffset,
            shared: shared || fileDescriptor != nil,
            ownsMapping: false
        )
    }

    private static func checkGeometry(length: Int, pageSize: Int, granularity: Int) throws(GuestMemoryError) {
        guard pageSize > 0, pageSize & (pageSize - 1) == 0, pageSize % granularity == 0 else {
            throw GuestMemoryError(
                .invalidArgument,
                message: "page size \(pageSize) must be a power of two and a multiple of \(granularity)"
            )
        }
        guard length > 0, length % pageSize == 0 else {
            throw GuestMemoryError(
                .invalidArgument,
                message: "length \(length) must be a positive multiple of \(pageSize)"
            )
        }
    }

    private static func createMemfd(name: String, length: Int, hugetlb: Bool) throws(GuestMemoryError) -> Int32 {
        let fd = pb_memfd_create(name, hugetlb ? 1 : 0)
        guard fd >= 0 else {
            throw .system(.createFailed, "memfd_create\(hugetlb ? " with MFD_HUGETLB" : "")")
        }
        guard ftruncate(fd, off_t(length)) == 0 else {
            let error = GuestMemoryError.system(.createFailed, "ftruncate of the memfd to \(length) bytes")
            close(fd)
            throw error
        }
        guard pb_seal_size(fd) == 0 else {
            let error = GuestMemoryError.system(.sealFailed, "F_ADD_SEALS F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL")
            close(fd)
            throw error
        }
        return fd
    }

    /// Maps the memfd shared; the caller closes `fd` if this throws.
    private static func map(length: Int, fd: Int32, hugetlb: Bool) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        let address = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let address, address != MAP_FAILED else {
            if hugetlb && Glibc.errno == ENOMEM {
                let huge = self.hugePageSize ?? 0
                throw GuestMemoryError(
                    .noHugePages,
                    errno: ENOMEM,
                    message:
                        "\(length / max(huge, 1)) huge pages of \(huge >> 20) MiB needed, \(freeHugePages() ?? 0) free;"
                        + " raise /proc/sys/vm/nr_hugepages"
                )
            }
            throw .system(.mapFailed, "mmap of \(length) bytes of the memfd, MAP_SHARED")
        }
        return address
    }

    /// `HugePages_Free` from `/proc/meminfo`.
    static func freeHugePages() -> Int? {
        guard let text = try? readText("/proc/meminfo") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("HugePages_Free:") {
            return Int(line.dropFirst("HugePages_Free:".count).trimmingCharacters(in: " "))
        }
        return nil
    }

    // MARK: Addresses

    /// The address of frame `frame`.
    @inlinable
    public func address(ofFrame frame: Int) -> UnsafeMutableRawPointer {
        self.base + frame &* self.pageSize
    }

    /// Bytes of the frames `frames`.
    public func byteRange(of frames: Range<Int>) -> Range<Int> {
        (frames.lowerBound * self.pageSize)..<(frames.upperBound * self.pageSize)
    }

    func check(_ bytes: Range<Int>, aligned: Bool) throws(GuestMemoryError) {
        guard bytes.lowerBound >= 0, bytes.upperBound <= self.length else {
            throw GuestMemoryError(.outOfRange, message: "bytes \(bytes) are outside the pool of \(self.length)")
        }
        guard !aligned || (bytes.lowerBound % self.granularity == 0 && bytes.upperBound % self.granularity == 0) else {
            throw GuestMemoryError(
                .unaligned,
                message: "bytes \(bytes) are not aligned to the \(self.backing) granularity of \(self.granularity)"
            )
        }
    }

    // MARK: Discard

    /// Pool-wide counters: discard calls made and bytes they covered.
    public var discardStatistics: (calls: Int, bytes: Int) {
        (self.discardCalls.load(ordering: .relaxed), self.discardedBytesCounter.load(ordering: .relaxed))
    }

    /// Discards the frames `frames`: their memory goes back to the host and they read back as
    /// zeroes. Only for frames nobody uses.
    public func discard(frames: Range<Int>) throws(GuestMemoryError) {
        try self.discard(bytes: self.byteRange(of: frames))
    }

    /// Discards `bytes` (offsets into the pool) the way the backing needs:
    ///
    /// - memfd, hugetlb, external with a descriptor: `fallocate(PUNCH_HOLE | KEEP_SIZE)`, which
    ///   frees the page cache pages and unmaps them everywhere. `MADV_DONTNEED` would only drop
    ///   this mapping's page tables and free nothing (Firecracker issue 6167).
    /// - anonymous: `MADV_DONTNEED`.
    /// - external without a descriptor: `MADV_REMOVE` if shared, `MADV_DONTNEED` if private.
    public func discard(bytes: Range<Int>) throws(GuestMemoryError) {
        try self.check(bytes, aligned: true)
        guard !bytes.isEmpty else { return }
        let address = self.base + bytes.lowerBound
        let result: Int32
        let call: String
        if let fd = self.fileDescriptor {
            result = pb_punch_hole(fd, Int64(self.fileOffset + bytes.lowerBound), Int64(bytes.count))
            call = "fallocate(PUNCH_HOLE|KEEP_SIZE)"
        } else if self.shared {
            result = pb_madvise_remove(address, bytes.count)
            call = "madvise(MADV_REMOVE)"
        } else {
            result = pb_madvise_dontneed(address, bytes.count)
            call = "madvise(MADV_DONTNEED)"
        }
        guard result == 0 else { throw .system(.discardFailed, "\(call) of bytes \(bytes)") }
        self.discardCalls.add(1, ordering: .relaxed)
        self.discardedBytesCounter.add(bytes.count, ordering: .relaxed)
    }

    // MARK: Prefault

    /// Makes every page of the pool resident, as in a VM whose guest has used all of its memory
    /// once: `MADV_POPULATE_WRITE`, or, on a kernel without it (before 5.14), a write of each
    /// page's first byte back to itself. Contents are unchanged.
    public func prefault() throws(GuestMemoryError) {
        try self.prefault(bytes: 0..<self.length)
    }

    /// Prefaults `bytes` (offsets into the pool); contents are unchanged.
    public func prefault(bytes: Range<Int>) throws(GuestMemoryError) {
        try self.check(bytes, aligned: true)
        guard !bytes.isEmpty else { return }
        let address = self.base + bytes.lowerBound
        if pb_madvise_populate_write(address, bytes.count) == 0 { return }
        let error = Glibc.errno
        guard error == EINVAL else {
            throw GuestMemoryError(
                .prefaultFailed,
                errno: error,
                message: "madvise(MADV_POPULATE_WRITE) of bytes \(bytes)"
            )
        }
        pb_touch_pages(address, bytes.count, self.granularity)
    }

    // MARK: Contents

    /// Writes zeroes over the frames `frames`.
    public func zero(frames: Range<Int>) {
        guard !frames.isEmpty else { return }
        memset(self.address(ofFrame: frames.lowerBound), 0, frames.count * self.pageSize)
    }

    /// Fills every 64-bit word of frame `frame` with `value`.
    @inlinable
    public func fill(frame: Int, with value: UInt64) {
        pb_fill_words(self.address(ofFrame: frame).assumingMemoryBound(to: UInt64.self), self.pageSize / 8, value)
    }

    /// Whether every 64-bit word of frame `frame` is `value`.
    @inlinable
    public func frame(_ frame: Int, holds value: UInt64) -> Bool {
        let words = self.pageSize / 8
        return pb_find_mismatch(self.address(ofFrame: frame).assumingMemoryBound(to: UInt64.self), words, value)
            == words
    }

    // MARK: Residency

    /// The bytes of the pool the kernel holds in memory now:
    ///
    /// - memfd, hugetlb: the memfd's `st_blocks * 512` (`fstat`).
    /// - external with a descriptor: the data extents of its range (`lseek` `SEEK_DATA`/`SEEK_HOLE`).
    /// - anonymous, external without a descriptor: `mincore` over the mapping.
    public func residentBytes() throws(GuestMemoryError) -> Int {
        switch (self.backing, self.fileDescriptor) {
        case (.memfd, let fd?), (.hugetlb, let fd?):
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw .system(.residencyFailed, "fstat of the memfd") }
            return Int(info.st_blocks) * 512
        case (.external, let fd?):
            return try self.dataBytes(fd: fd, from: self.fileOffset, to: self.fileOffset + self.length)
        default:
            return try self.residentBytes(bytes: 0..<self.length)
        }
    }

    /// The bytes of `bytes` (offsets into the pool) that `mincore` says are resident, in units
    /// of the granularity. For a shared mapping this is the file's page cache.
    public func residentBytes(bytes: Range<Int>) throws(GuestMemoryError) -> Int {
        try self.check(bytes, aligned: true)
        guard !bytes.isEmpty else { return 0 }
        // mincore counts in system pages, even over a hugetlb mapping.
        let page = Self.systemPageSize
        let pages = pb_mincore_resident_pages(self.base + bytes.lowerBound, bytes.count, page)
        guard pages >= 0 else { throw .system(.residencyFailed, "mincore of bytes \(bytes)") }
        return Int(pages) * page
    }

    /// The resident bytes of the frames `frames` (``residentBytes(bytes:)``).
    public func residentBytes(frames: Range<Int>) throws(GuestMemoryError) -> Int {
        try self.residentBytes(bytes: self.byteRange(of: frames))
    }

    private func dataBytes(fd: Int32, from start: Int, to end: Int) throws(GuestMemoryError) -> Int {
        var total = 0
        var position = start
        while position < end {
            let data = pb_seek_data(fd, Int64(position))
            if data < 0 {
                if Glibc.errno == ENXIO { break }  // no data after position
                throw .system(.residencyFailed, "lseek SEEK_DATA")
            }
            guard Int(data) < end else { break }
            let hole = pb_seek_hole(fd, data)
            guard hole >= 0 else { throw .system(.residencyFailed, "lseek SEEK_HOLE") }
            total += min(Int(hole), end) - Int(data)
            position = Int(hole)
        }
        return total
    }
}

/// Reads a small text file (procfs) without Foundation.
func readText(_ path: String) throws(GuestMemoryError) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .system(.invalidArgument, "open \(path)") }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count <= 0 { break }
        bytes += buffer[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

extension Substring {
    fileprivate func trimmingCharacters(in character: Character) -> Substring {
        var text = self
        while text.first == character { text = text.dropFirst() }
        while text.last == character { text = text.dropLast() }
        return text
    }
}
