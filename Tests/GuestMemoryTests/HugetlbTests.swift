import Glibc
import Testing

@testable import GuestMemory

/// hugetlb on real huge pages. The test reserves its own (as root, through
/// `/proc/sys/vm/nr_hugepages`) and gives them back after; where that is refused it cancels
/// itself and says why.
@Suite(.serialized) struct HugetlbTests {
    static let path = "/proc/sys/vm/nr_hugepages"

    static func readCount() -> Int? {
        guard let text = try? readText(Self.path) else { return nil }
        return Int(text.split(separator: "\n").first ?? "")
    }

    static func writeCount(_ count: Int) -> Bool {
        let fd = open(Self.path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let text = Array("\(count)\n".utf8)
        return text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == text.count
    }

    /// Runs `body` with `count` more free huge pages, then restores the old setting.
    static func withHugePages(_ count: Int, _ body: (Int) throws -> Void) throws {
        guard let huge = GuestMemory.hugePageSize else { try Test.cancel("this kernel has no hugetlb support") }
        guard let old = Self.readCount() else { try Test.cancel("cannot read \(Self.path)") }
        let free = GuestMemory.freeHugePages() ?? 0
        if free < count {
            guard Self.writeCount(old + count - free) else {
                try Test.cancel(
                    "cannot reserve huge pages: writing \(Self.path) failed (\(String(cString: strerror(errno)))); needs root"
                )
            }
        }
        defer { _ = Self.writeCount(old) }
        guard (GuestMemory.freeHugePages() ?? 0) >= count else {
            try Test.cancel("the kernel gave fewer than \(count) free huge pages (memory too fragmented)")
        }
        try body(huge)
    }

    @Test func hugetlbPunchesWholeHugePages() throws {
        try Self.withHugePages(8) { huge in
            let memory = try GuestMemory.hugetlb(length: 8 * huge)
            #expect(memory.pageSize == huge)
            #expect(memory.granularity == huge)
            #expect(try memory.residentBytes() == 0)
            // st_blocks on a hugetlbfs memfd counts the huge pages in its page cache.
            try DiscardTests.checkDiscard(memory, frames: 2..<5) { () throws in
                #expect(try memory.residentBytes() == 5 * huge)
            }
            // Reading them back as zero faulted the three huge pages in again.
            #expect(try memory.residentBytes() == 8 * huge)
            try memory.discard(frames: 0..<8)
            #expect(try memory.residentBytes() == 0)
            #expect {
                try memory.discard(bytes: 4096..<huge)
            } throws: { ($0 as! GuestMemoryError).code == .unaligned }
            try memory.prefault()
            #expect(try memory.residentBytes() == 8 * huge)
        }
    }

    @Test func noFreeHugePagesNamesTheKnob() throws {
        guard let huge = GuestMemory.hugePageSize else { try Test.cancel("this kernel has no hugetlb support") }
        let overcommit = (try? readText("/proc/sys/vm/nr_overcommit_hugepages")).flatMap {
            Int($0.split(separator: "\n").first ?? "")
        }
        if let overcommit, overcommit > 0 {
            try Test.cancel("nr_overcommit_hugepages is \(overcommit): the kernel may hand out surplus huge pages")
        }
        let free = GuestMemory.freeHugePages() ?? 0
        // More than are free: the mapping's reservation fails.
        #expect {
            _ = try GuestMemory.hugetlb(length: (free + 1) * huge)
        } throws: { error in
            let error = error as! GuestMemoryError
            return error.code == .noHugePages && error.message.contains("/proc/sys/vm/nr_hugepages")
        }
    }
}
