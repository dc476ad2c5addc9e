/// The limits on a guest's pool that every broker of protocol version 1 enforces at the
/// `ClientHello` (`docs/protocol.md`, "Limits"), and that `ServerHello` announces.
///
/// They exist so that every figure derived from a pool has a proven bound: the ledger numbers
/// frames in 32 bits, a guest's bytes fit an `Int` with room to spare, and sums over guests are
/// kept in a width chosen from these bounds (see `TenantLedger`). A hello beyond them is refused
/// with `REASON_CODE_LIMIT_EXCEEDED`, so no accepted session can announce a frame the broker
/// cannot account.
public enum ProtocolLimits {
    /// The smallest page size, 4 KiB: the smallest page of every 64-bit architecture Linux runs on.
    public static let minPageSize: UInt32 = 1 << 12

    /// The largest page size, 1 GiB: the largest page (x86-64's gigantic page) a guest could
    /// meaningfully report in.
    public static let maxPageSize: UInt32 = 1 << 30

    /// The largest `total_pages`: frames are numbered `0 ..< 2^32`, the range the broker's frame
    /// sets store in 32 bits.
    public static let maxTotalPages: UInt64 = 1 << 32

    /// The largest pool, `page_size × total_pages`, in bytes: 4 PiB, the largest physical address
    /// space of a 64-bit machine (52 address bits on x86-64 and AArch64).
    public static let maxPoolBytes: UInt64 = 1 << 52

    /// Which limit a pool of `pageSize × totalPages` breaks, for the refusal's message; `nil`
    /// when it is within every limit. `pageSize` is assumed to have passed the hello's value
    /// checks (a power of two, at least ``minPageSize``).
    public static func violation(pageSize: UInt32, totalPages: UInt64) -> String? {
        if pageSize > Self.maxPageSize {
            return "page_size \(pageSize) is above the limit of \(Self.maxPageSize) bytes"
        }
        if totalPages > Self.maxTotalPages {
            return "total_pages \(totalPages) is above the limit of \(Self.maxTotalPages)"
        }
        // At most 2^30 × 2^32 = 2^62 here, so the product cannot overflow; checked anyway so the
        // function is total for any input.
        let (bytes, overflow) = UInt64(pageSize).multipliedReportingOverflow(by: totalPages)
        if overflow || bytes > Self.maxPoolBytes {
            return "a pool of \(totalPages) pages of \(pageSize) bytes is above the limit of \(Self.maxPoolBytes) bytes"
        }
        return nil
    }
}
