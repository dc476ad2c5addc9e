/// Who is at the other end of a memory socket connection: the same `SO_PEERCRED` triple as the
/// admin socket's peer.
public typealias MemoryPeer = PeerCredentials

/// Which processes may attach memory for the guests of one tenant (`tenants.NAME.memory` in the
/// configuration).
///
/// Unlike the admin socket there is no exemption for root or the daemon's user: attaching
/// memory lets the broker discard it, so only what the configuration names is let in, and a
/// process allowed for one tenant is never allowed for another by default.
public struct MemoryAccessPolicy: Hashable, Sendable {
    public var allowedUIDs: Set<UInt32>
    public var allowedGIDs: Set<UInt32>

    public init(allowedUIDs: Set<UInt32> = [], allowedGIDs: Set<UInt32> = []) {
        self.allowedUIDs = allowedUIDs
        self.allowedGIDs = allowedGIDs
    }

    /// Whether `peer` may attach memory for this tenant: its uid or its primary gid is listed.
    public func admits(_ peer: MemoryPeer) -> Bool {
        self.allowedUIDs.contains(peer.uid) || self.allowedGIDs.contains(peer.gid)
    }
}
