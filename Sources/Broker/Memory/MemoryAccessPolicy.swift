/// Who is at the other end of a memory socket connection, as the kernel saw it when the peer
/// connected (`SO_PEERCRED`): not something the peer can claim.
public struct MemoryPeer: Hashable, Sendable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    public var description: String { "pid \(self.pid) uid \(self.uid) gid \(self.gid)" }
}

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
