import ArgumentParser
import Glibc
import GuestMemory

/// `--backing`: what is behind the guest's frames.
enum BackingChoice: String, CaseIterable, ExpressibleByArgument, Sendable {
    case memfd, anonymous, hugetlb, none

    /// The GuestMemory backing, `nil` for `none` (frames are numbers only).
    var backing: GuestMemory.Backing? {
        switch self {
        case .memfd: return .memfd
        case .anonymous: return .anonymous
        case .hugetlb: return .hugetlb
        case .none: return nil
        }
    }

    static var names: String { Self.allCases.map(\.rawValue).joined(separator: ", ") }
}

/// `--discard`: who frees the memory of a reported block.
enum DiscardMode: String, CaseIterable, ExpressibleByArgument, Sendable {
    /// The guest discards its own pool after the broker's OK.
    case guest
    /// Accounting only.
    case none
    /// The broker holds the guest's memfd (attached over its memory socket) and punches holes
    /// before it acks; the agent discards nothing itself.
    case host

    init?(argument: String) {
        self.init(rawValue: argument)
    }
}

/// Makes the pool for `--backing`, `--memory` and the page size; prints the reason and exits 1
/// when the kernel refuses (for instance no free huge pages).
func makeGuestMemory(_ choice: BackingChoice, memory: Int, pageSize: Int) throws -> GuestMemory? {
    guard let backing = choice.backing else { return nil }
    do {
        return try GuestMemory.make(backing, length: memory, pageSize: pageSize)
    } catch {
        var stderr = FileHandleStream.standardError
        stderr.write("pagebroker-agent: cannot make the \(choice.rawValue) pool of \(memory) bytes: \(error)\n")
        throw ExitCode.failure
    }
}

/// The page size a backing needs: the huge page size for hugetlb, else `requested` or 4 KiB.
func resolvePageSize(_ choice: BackingChoice, requested: Int?) throws -> Int {
    if choice == .hugetlb {
        guard let huge = GuestMemory.hugePageSize else {
            throw ValidationError("--backing hugetlb: this kernel has no huge pages (/proc/meminfo)")
        }
        if let requested, requested != huge {
            throw ValidationError("--backing hugetlb uses the huge page size (\(huge >> 10)KiB) as --page-size")
        }
        return huge
    }
    let size = requested ?? 4096
    guard size >= 4096, size & (size - 1) == 0 else {
        throw ValidationError("--page-size must be a power of two of at least 4KiB")
    }
    return size
}

/// Whether `path` is a Unix socket that exists: the broker offers host discard there.
func memorySocketExists(_ path: String) -> Bool {
    var status = stat()
    guard stat(path, &status) == 0 else { return false }
    return status.st_mode & S_IFMT == S_IFSOCK
}
