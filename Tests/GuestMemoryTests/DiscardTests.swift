import CGuestMemory
import Glibc
import Testing

@testable import GuestMemory

/// Each backing on real memory: a discard frees exactly the discarded bytes by the kernel's own
/// figure, the discarded frames read back as zero, and every other frame keeps its data.
@Suite struct DiscardTests {
    static let frames = 64
    static let discarded = 8..<24

    static func pattern(_ frame: Int) -> UInt64 { 0xA5A5_0000_0000_0000 | UInt64(frame) << 16 | 0x5A }

    /// Writes every frame, discards `discarded`, and checks the kernel figure, zeroes and data.
    /// `afterDiscard` runs between the discard and the zero check (reading a discarded page of a
    /// shared mapping faults a fresh page in, so the kernel's figure is only meaningful before).
    static func checkDiscard(
        _ memory: GuestMemory,
        frames: Range<Int> = Self.discarded,
        afterDiscard: () throws -> Void = {}
    ) throws {
        for frame in 0..<memory.frameCount { memory.fill(frame: frame, with: Self.pattern(frame)) }
        let before = try memory.residentBytes()
        #expect(before == memory.length, "every written page is resident")
        try memory.discard(frames: frames)
        let after = try memory.residentBytes()
        #expect(before - after == frames.count * memory.pageSize, "the kernel freed exactly the discarded bytes")
        // Residency first: reading a discarded anonymous page maps the zero page, which mincore counts.
        #expect(try memory.residentBytes(frames: frames) == 0)
        try afterDiscard()
        for frame in frames { #expect(memory.frame(frame, holds: 0), "discarded frame \(frame) reads zero") }
        for frame in 0..<memory.frameCount where !frames.contains(frame) {
            #expect(memory.frame(frame, holds: Self.pattern(frame)), "frame \(frame) kept its data")
        }
    }

    @Test func memfdPunchesHoles() throws {
        let memory = try GuestMemory.memfd(length: Self.frames * 4096, pageSize: 4096)
        #expect(memory.backing == .memfd)
        #expect(try memory.residentBytes() == 0, "a new memfd holds no memory")
        try Self.checkDiscard(memory)
    }

    @Test func memfdIsSealedAgainstResizeButNotWrites() throws {
        let memory = try GuestMemory.memfd(length: Self.frames * 4096)
        let seals = pb_get_seals(memory.fileDescriptor!)
        #expect(seals & pb_seal_shrink_bit() != 0)
        #expect(seals & pb_seal_grow_bit() != 0)
        #expect(seals & pb_seal_seal_bit() != 0, "nobody can add F_SEAL_WRITE, which would make discard fail")
        #expect(seals & pb_seal_write_bit() == 0)
        #expect(ftruncate(memory.fileDescriptor!, 4096) != 0 && errno == EPERM)
        #expect(fcntl(memory.fileDescriptor!, F_GETFD) & FD_CLOEXEC != 0)
    }

    @Test func anonymousDropsPages() throws {
        let memory = try GuestMemory.anonymous(length: Self.frames * 4096)
        #expect(try memory.residentBytes() == 0)
        try Self.checkDiscard(memory)
    }

    @Test func largerFramesDiscardWhole() throws {
        let memory = try GuestMemory.memfd(length: 16 * 65536, pageSize: 65536)
        try Self.checkDiscard(memory, frames: 3..<7)
    }

    @Test func externalWithDescriptorPunchesTheFile() throws {
        // The embedder's own memfd, mapped at an offset of 16 pages into the file.
        let fd = pb_memfd_create("external-test", 0)
        defer { close(fd) }
        let length = Self.frames * 4096
        #expect(ftruncate(fd, off_t(length + 16 * 4096)) == 0)
        let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(16 * 4096))!
        defer { munmap(base, length) }
        // Data the pool does not own, before its range in the same file: never touched.
        let head = mmap(nil, 16 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        defer { munmap(head, 16 * 4096) }
        memset(head, 0x77, 16 * 4096)
        let memory = try GuestMemory.external(base: base, length: length, fileDescriptor: fd, fileOffset: 16 * 4096)
        try Self.checkDiscard(memory) {
            var info = stat()
            fstat(fd, &info)
            #expect(Int(info.st_blocks) * 512 == (16 + Self.frames - Self.discarded.count) * 4096)
        }
        // Reading the discarded frames back faulted fresh zero pages in: shmem allocates on a read fault.
        var info = stat()
        fstat(fd, &info)
        #expect(Int(info.st_blocks) * 512 == (16 + Self.frames) * 4096)
        #expect(head.load(fromByteOffset: 16 * 4096 - 1, as: UInt8.self) == 0x77)
    }

    @Test func externalPrivateAnonymousUsesDontneed() throws {
        let length = Self.frames * 4096
        let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        defer { munmap(base, length) }
        let memory = try GuestMemory.external(base: base, length: length)
        try Self.checkDiscard(memory)
    }

    @Test func externalSharedWithoutDescriptorUsesRemove() throws {
        // Shared anonymous memory is shmem: MADV_DONTNEED would free nothing, MADV_REMOVE frees it.
        let length = Self.frames * 4096
        let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)!
        defer { munmap(base, length) }
        let memory = try GuestMemory.external(base: base, length: length, shared: true)
        try Self.checkDiscard(memory)
    }

    @Test func dontneedOnSharedMemoryFreesNothing() throws {
        // The defect the memfd backing avoids: MADV_DONTNEED on a shared memfd drops page tables
        // only, and the kernel's figure does not move.
        let memory = try GuestMemory.memfd(length: Self.frames * 4096)
        for frame in 0..<memory.frameCount { memory.fill(frame: frame, with: 1) }
        #expect(pb_madvise_dontneed(memory.base, memory.length) == 0)
        #expect(try memory.residentBytes() == memory.length)
    }

    @Test func prefaultMakesEverythingResidentAndKeepsContents() throws {
        for memory in [
            try GuestMemory.memfd(length: Self.frames * 4096), try GuestMemory.anonymous(length: Self.frames * 4096),
        ] {
            memory.fill(frame: 5, with: 42)
            try memory.prefault()
            #expect(try memory.residentBytes() == memory.length, "\(memory.backing)")
            #expect(memory.frame(5, holds: 42))
            #expect(memory.frame(6, holds: 0))
        }
    }

    @Test func discardOfAWriteSealedMemfdFailsWithEPERM() throws {
        let fd = pb_memfd_create("sealed-test", 0)
        defer { close(fd) }
        let length = Self.frames * 4096
        #expect(ftruncate(fd, off_t(length)) == 0)
        #expect(pb_seal_write(fd) == 0)
        // A write-sealed memfd can only be mapped read-only shared, or privately.
        let base = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0)!
        defer { munmap(base, length) }
        let memory = try GuestMemory.external(base: base, length: length, fileDescriptor: fd)
        #expect {
            try memory.discard(frames: 0..<4)
        } throws: { error in
            let error = error as! GuestMemoryError
            return error.code == .discardFailed && error.errno == EPERM && error.errnoName == "EPERM"
        }
    }

    @Test func rangesAreChecked() throws {
        let memory = try GuestMemory.memfd(length: Self.frames * 4096)
        #expect(throws: GuestMemoryError.self) { try memory.discard(frames: 60..<70) }
        #expect {
            try memory.discard(bytes: 100..<4096)
        } throws: { ($0 as! GuestMemoryError).code == .unaligned }
        #expect {
            _ = try GuestMemory.memfd(length: 4096 * 3, pageSize: 8192)
        } throws: { ($0 as! GuestMemoryError).code == .invalidArgument }
        #expect {
            _ = try GuestMemory.make(.external, length: 4096, pageSize: 4096)
        } throws: { ($0 as! GuestMemoryError).code == .invalidArgument }
    }

    @Test func errorsCarryStableCodesAndErrnoNames() {
        let error = GuestMemoryError(.discardFailed, errno: EPERM, message: "x")
        #expect(error.code.rawValue == 6)
        #expect(error.code.name == "discard_failed")
        #expect(error.description == "GuestMemoryError(discard_failed, EPERM: x)")
        #expect(GuestMemoryError(.outOfRange, message: "").errnoName == nil)
    }
}
