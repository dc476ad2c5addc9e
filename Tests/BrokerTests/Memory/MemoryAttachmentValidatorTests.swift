import Broker
import BrokerProtocol
import Testing

/// The attach checks at their seam: requests and descriptor facts as values, one fault each.
@Suite struct MemoryAttachmentValidatorTests {
    static func request(
        pageSize: UInt32 = 4096,
        totalPages: UInt64 = 1024,
        version: UInt32 = 1
    ) -> Pagebroker_V1_AttachMemory {
        .with {
            $0.protocolVersion = version
            $0.tenantID = "t1"
            $0.guestID = "g1"
            $0.pageSize = pageSize
            $0.totalPages = totalPages
        }
    }

    static func facts(
        _ fileSystem: MemoryDescriptorFacts.FileSystem = .tmpfs,
        access: MemoryDescriptorFacts.AccessMode = .readWrite,
        seals: MemoryDescriptorFacts.Seals? = [.shrink],
        size: Int64 = 4096 * 1024,
        blockSize: Int64 = 4096
    ) -> MemoryDescriptorFacts {
        MemoryDescriptorFacts(
            fileSystem: fileSystem,
            accessMode: access,
            seals: seals,
            size: size,
            blockSize: blockSize
        )
    }

    func code(
        _ facts: MemoryDescriptorFacts,
        pageSize: UInt32 = 4096,
        totalPages: UInt64 = 1024
    ) -> Pagebroker_V1_MemoryCode {
        MemoryAttachmentValidator.checkDescriptor(facts, pageSize: pageSize, totalPages: totalPages)?.code ?? .ok
    }

    @Test func requestChecks() {
        #expect(MemoryAttachmentValidator.checkRequest(Self.request(), descriptorCount: 1) == nil)
        #expect(
            MemoryAttachmentValidator.checkRequest(Self.request(version: 2), descriptorCount: 1)?.code
                == .unsupportedVersion
        )
        #expect(MemoryAttachmentValidator.checkRequest(Self.request(), descriptorCount: 0)?.code == .noDescriptor)
        #expect(MemoryAttachmentValidator.checkRequest(Self.request(), descriptorCount: 3)?.code == .noDescriptor)
        var badGuest = Self.request()
        badGuest.guestID = "a/b"
        #expect(MemoryAttachmentValidator.checkRequest(badGuest, descriptorCount: 1)?.code == .unknownGuest)
        #expect(
            MemoryAttachmentValidator.checkRequest(Self.request(pageSize: 3000), descriptorCount: 1)?.code
                == .invalidGeometry
        )
        #expect(
            MemoryAttachmentValidator.checkRequest(Self.request(pageSize: 2048), descriptorCount: 1)?.code
                == .invalidGeometry
        )
        #expect(
            MemoryAttachmentValidator.checkRequest(Self.request(totalPages: 0), descriptorCount: 1)?.code
                == .invalidGeometry
        )
        #expect(
            MemoryAttachmentValidator.checkRequest(
                Self.request(totalPages: ProtocolLimits.maxTotalPages + 1),
                descriptorCount: 1
            )?
            .code == .invalidGeometry
        )
    }

    @Test func descriptorChecks() {
        #expect(self.code(Self.facts()) == .ok)
        #expect(self.code(Self.facts(.other(0xEF53))) == .notSharedMemory)
        #expect(self.code(Self.facts(access: .readOnly)) == .readOnly)
        #expect(self.code(Self.facts(access: .writeOnly)) == .readOnly)
        #expect(self.code(Self.facts(seals: nil)) == .notSealed)
        #expect(self.code(Self.facts(seals: [])) == .notSealed)
        #expect(self.code(Self.facts(seals: [.shrink, .write])) == .writeSealed)
        #expect(self.code(Self.facts(seals: [.shrink, .futureWrite])) == .writeSealed)
        #expect(self.code(Self.facts(size: 4096 * 1024 + 1)) == .sizeMismatch)
        #expect(self.code(Self.facts(size: 4096 * 1023)) == .sizeMismatch)
    }

    @Test func hugetlbfsNeedsWholeHugePages() {
        let huge: Int64 = 2 << 20
        #expect(
            self.code(Self.facts(.hugetlbfs, size: huge * 8, blockSize: huge), pageSize: 2 << 20, totalPages: 8) == .ok
        )
        #expect(
            self.code(Self.facts(.hugetlbfs, size: huge * 8, blockSize: huge), pageSize: 4096, totalPages: 4096)
                == .invalidGeometry
        )
    }

    @Test func checksComeInTheDocumentedOrder() {
        // Not tmpfs, read-only, unsealed and the wrong size at once: the first in the list wins.
        #expect(self.code(Self.facts(.other(1), access: .readOnly, seals: nil, size: 1)) == .notSharedMemory)
        #expect(self.code(Self.facts(access: .readOnly, seals: nil, size: 1)) == .readOnly)
        #expect(self.code(Self.facts(seals: [], size: 1)) == .notSealed)
    }
}
