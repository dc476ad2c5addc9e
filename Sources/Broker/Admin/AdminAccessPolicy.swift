#if canImport(Glibc)
import Glibc
#endif

/// Who is at the other end of an admin connection.
public typealias AdminPeer = PeerCredentials

/// Which peers may use the admin socket.
///
/// A peer is admitted when its uid is in ``allowedUIDs``, its gid (the primary
/// group `SO_PEERCRED` reports) is in ``allowedGIDs``, or it is root or the
/// daemon's own user: those can read the broker's state and signal it anyway, so
/// refusing them would protect nothing and only break `sudo pagebrokerctl`.
public struct AdminAccessPolicy: Hashable, Sendable {
    public var allowedUIDs: Set<UInt32>
    public var allowedGIDs: Set<UInt32>
    /// Uids admitted whatever the lists say: root and the daemon's effective uid.
    let exemptUIDs: Set<UInt32>

    /// Creates a policy admitting the listed uids and gids, root, and this process's user.
    public init(allowedUIDs: Set<UInt32> = [], allowedGIDs: Set<UInt32> = []) {
        self.init(allowedUIDs: allowedUIDs, allowedGIDs: allowedGIDs, exemptRootAndDaemonUser: true)
    }

    /// For tests, which run as root or as the daemon's user and must still see a refusal.
    init(allowedUIDs: Set<UInt32>, allowedGIDs: Set<UInt32>, exemptRootAndDaemonUser: Bool) {
        self.allowedUIDs = allowedUIDs
        self.allowedGIDs = allowedGIDs
        self.exemptUIDs = exemptRootAndDaemonUser ? [0, UInt32(geteuid())] : []
    }

    /// Whether `peer` may use the admin socket.
    public func admits(_ peer: AdminPeer) -> Bool {
        self.exemptUIDs.contains(peer.uid) || self.allowedUIDs.contains(peer.uid)
            || self.allowedGIDs.contains(peer.gid)
    }
}
