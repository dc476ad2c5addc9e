import BrokerProtocol

/// The checks an attach request and its descriptor must pass, as pure functions of the
/// request and the ``MemoryDescriptorFacts`` (who may attach is the core's check: it needs the
/// tenant's policy). The order is the order docs/protocol.md lists the codes in, so one request
/// with several faults always gets the same code.
public enum MemoryAttachmentValidator {
    /// The memory socket protocol version this broker speaks.
    public static let protocolVersion: UInt32 = 1

    /// Checks the request alone: version, descriptor count, ids, geometry.
    public static func checkRequest(
        _ request: Pagebroker_V1_AttachMemory,
        descriptorCount: Int
    ) -> MemoryRefusal? {
        guard request.protocolVersion == Self.protocolVersion else {
            return MemoryRefusal(
                .unsupportedVersion,
                "memory protocol version \(request.protocolVersion) is not supported; this broker speaks \(Self.protocolVersion)"
            )
        }
        guard descriptorCount == 1 else {
            return MemoryRefusal(
                .noDescriptor,
                descriptorCount == 0
                    ? "the attach request carried no descriptor (send it as SCM_RIGHTS with the request's first byte)"
                    : "the attach request carried \(descriptorCount) descriptors; exactly one is expected"
            )
        }
        guard GuestIdentity.isValidSegment(Substring(request.tenantID)),
            GuestIdentity.isValidSegment(Substring(request.guestID))
        else {
            return MemoryRefusal(
                .unknownGuest,
                "'\(request.tenantID)/\(request.guestID)' is not a valid tenant and guest id"
            )
        }
        guard request.pageSize >= ProtocolLimits.minPageSize, request.pageSize.nonzeroBitCount == 1 else {
            return MemoryRefusal(
                .invalidGeometry,
                "page_size \(request.pageSize) is not a power of two of at least \(ProtocolLimits.minPageSize) bytes"
            )
        }
        guard request.totalPages > 0 else {
            return MemoryRefusal(.invalidGeometry, "total_pages is 0")
        }
        if let violation = ProtocolLimits.violation(pageSize: request.pageSize, totalPages: request.totalPages) {
            return MemoryRefusal(.invalidGeometry, violation)
        }
        return nil
    }

    /// Checks the descriptor against the request's geometry.
    public static func checkDescriptor(
        _ facts: MemoryDescriptorFacts,
        pageSize: UInt32,
        totalPages: UInt64
    ) -> MemoryRefusal? {
        switch facts.fileSystem {
        case .tmpfs, .hugetlbfs:
            break
        case .other(let magic):
            return MemoryRefusal(
                .notSharedMemory,
                "the descriptor is not a memfd or a file on tmpfs or hugetlbfs (file system magic 0x\(String(UInt64(bitPattern: magic), radix: 16)))"
            )
        }
        guard facts.accessMode == .readWrite else {
            return MemoryRefusal(
                .readOnly,
                "the descriptor is open \(facts.accessMode == .readOnly ? "read-only" : "write-only"); it must be open read-write"
            )
        }
        guard let seals = facts.seals, seals.contains(.shrink) else {
            return MemoryRefusal(
                .notSealed,
                facts.seals == nil
                    ? "the file does not support seals; it must be sealed with F_SEAL_SHRINK"
                    : "the file is not sealed with F_SEAL_SHRINK: it could shrink under the guest"
            )
        }
        guard !seals.contains(.write), !seals.contains(.futureWrite) else {
            return MemoryRefusal(
                .writeSealed,
                "the file is sealed with \(seals.contains(.write) ? "F_SEAL_WRITE" : "F_SEAL_FUTURE_WRITE"): punching holes would fail with EPERM"
            )
        }
        // ProtocolLimits bounds page_size * total_pages well below Int64.max.
        let expected = Int64(pageSize) * Int64(totalPages)
        guard facts.size == expected else {
            return MemoryRefusal(
                .sizeMismatch,
                "the file is \(facts.size) bytes; \(totalPages) pages of \(pageSize) bytes are \(expected)"
            )
        }
        if case .hugetlbfs = facts.fileSystem {
            // hugetlbfs frees whole huge pages only: a frame smaller than one could never be
            // punched on its own.
            guard facts.blockSize > 0, Int64(pageSize) % facts.blockSize == 0 else {
                return MemoryRefusal(
                    .invalidGeometry,
                    "page size \(pageSize) is not a multiple of the file's huge page size \(facts.blockSize)"
                )
            }
        }
        return nil
    }
}
