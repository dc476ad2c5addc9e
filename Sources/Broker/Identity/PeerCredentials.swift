/// Who is at the other end of a Unix socket connection (the admin socket, the memory socket),
/// as the kernel saw it when the peer connected (`SO_PEERCRED`): not something the peer can
/// claim.
public struct PeerCredentials: Hashable, Sendable, CustomStringConvertible {
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
