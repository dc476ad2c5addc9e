/// Who a guest is: its trust domain, tenant and guest id, from the SPIFFE ID in the URI SAN of
/// its client certificate, `spiffe://<trust-domain>/tenant/<tenant>/guest/<guest>`.
///
/// SPIRE-issued X.509 SVIDs work as they are. A session can only ever touch the tenant and
/// guest its certificate names.
public struct GuestIdentity: Hashable, Sendable, CustomStringConvertible {
    public let trustDomain: String
    public let tenant: String
    public let guest: String

    public init(trustDomain: String, tenant: String, guest: String) {
        self.trustDomain = trustDomain
        self.tenant = tenant
        self.guest = guest
    }

    /// The SPIFFE ID.
    public var spiffeID: String { "spiffe://\(self.trustDomain)/tenant/\(self.tenant)/guest/\(self.guest)" }

    public var description: String { self.spiffeID }

    /// The identity named by a certificate's URI SANs, which must hold exactly one SPIFFE ID, of
    /// `trustDomain`, with the path `/tenant/<tenant>/guest/<guest>`.
    public static func fromURISANs(_ uris: [String], trustDomain: String) throws(IdentityError) -> GuestIdentity {
        let spiffe = uris.filter { $0.lowercased().hasPrefix("spiffe://") }
        guard !spiffe.isEmpty else {
            throw IdentityError(
                .missingSPIFFEID,
                detail: uris.isEmpty ? "no URI SAN" : "URI SANs \(uris) hold no SPIFFE ID"
            )
        }
        guard spiffe.count == 1 else {
            throw IdentityError(.multipleSPIFFEIDs, detail: "\(spiffe.count) SPIFFE IDs: \(spiffe)")
        }
        return try Self.parse(spiffe[0], trustDomain: trustDomain)
    }

    /// Parses and checks one SPIFFE ID.
    public static func parse(_ uri: String, trustDomain expected: String) throws(IdentityError) -> GuestIdentity {
        // The SPIFFE ID spec: lowercase scheme, no userinfo, port, query or fragment.
        guard uri.hasPrefix("spiffe://") else {
            throw IdentityError(.malformedSPIFFEID, detail: "'\(uri)' must start with spiffe://")
        }
        let rest = uri.dropFirst("spiffe://".count)
        guard !rest.contains("?"), !rest.contains("#") else {
            throw IdentityError(.malformedSPIFFEID, detail: "'\(uri)' has a query or fragment")
        }
        let domainEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        let domain = String(rest[..<domainEnd])
        guard !domain.isEmpty, domain.utf8.allSatisfy(Self.isTrustDomainByte) else {
            throw IdentityError(
                .malformedSPIFFEID,
                detail: "'\(domain)' is not a valid trust domain (lowercase letters, digits, '.', '-', '_')"
            )
        }
        guard domain == expected else {
            throw IdentityError(.wrongTrustDomain, detail: "trust domain '\(domain)', expected '\(expected)'")
        }
        let path = rest[domainEnd...]
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard segments.count == 4, segments.allSatisfy({ Self.isValidSegment($0) }) else {
            throw IdentityError(.malformedSPIFFEID, detail: "path '\(path)' is not /tenant/<tenant>/guest/<guest>")
        }
        let parts = Array(segments)
        guard parts[0] == "tenant", parts[2] == "guest" else {
            throw IdentityError(.malformedSPIFFEID, detail: "path '\(path)' is not /tenant/<tenant>/guest/<guest>")
        }
        return GuestIdentity(trustDomain: domain, tenant: String(parts[1]), guest: String(parts[3]))
    }

    private static func isTrustDomainByte(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
    }

    /// A SPIFFE path segment: non-empty, not `.` or `..`, letters, digits, `.`, `-`, `_`.
    static func isValidSegment(_ segment: Substring) -> Bool {
        guard !segment.isEmpty, segment != ".", segment != ".." else { return false }
        return segment.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: ".")
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
        }
    }
}

/// Why a certificate does not identify a guest.
public struct IdentityError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case missingSPIFFEID = "missing_spiffe_id"
            case multipleSPIFFEIDs = "multiple_spiffe_ids"
            case malformedSPIFFEID = "malformed_spiffe_id"
            case wrongTrustDomain = "wrong_trust_domain"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The certificate has no SPIFFE ID among its URI SANs.
        public static let missingSPIFFEID = Code(.missingSPIFFEID)
        /// The certificate has more than one SPIFFE ID (the SPIFFE spec allows exactly one).
        public static let multipleSPIFFEIDs = Code(.multipleSPIFFEIDs)
        /// The SPIFFE ID is not `spiffe://<trust-domain>/tenant/<tenant>/guest/<guest>`.
        public static let malformedSPIFFEID = Code(.malformedSPIFFEID)
        /// The SPIFFE ID belongs to another trust domain.
        public static let wrongTrustDomain = Code(.wrongTrustDomain)

        public var description: String { self.base.rawValue }
    }

    public let code: Code
    public let detail: String

    public init(_ code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "\(self.code): \(self.detail)" }
}
