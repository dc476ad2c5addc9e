import BrokerAdminClient

/// The one line `systemctl status pagebrokerd` shows (`STATUS=`), in `pagebrokerctl`'s units:
/// the live figures and how the last reload went.
public enum ServiceStatusLine {
    /// The outcome of the last SIGHUP.
    public enum Reload: Hashable, Sendable {
        /// Applied; `restartNeeded` lists changed keys that only a restart applies.
        case applied(restartNeeded: [String])
        /// Refused; the previous configuration stays in force.
        case refused(reason: String)
    }

    public static func render(_ status: BrokerStatus, lastReload: Reload?) -> String {
        if status.shuttingDown {
            return "stopping: \(status.sessions) sessions draining"
        }
        var line =
            "\(status.tenants) tenants, \(status.guestsConnected) guests connected, "
            + "\(AdminFormat.bytes(status.reclaimableBytes)) reclaimable"
        switch lastReload {
        case nil:
            break
        case .applied(let restartNeeded) where restartNeeded.isEmpty:
            line += "; last reload applied"
        case .applied(let restartNeeded):
            line += "; last reload applied, restart needed for " + restartNeeded.joined(separator: ", ")
        case .refused(let reason):
            line += "; last reload REFUSED (old configuration in force): \(reason)"
        }
        return line
    }
}
