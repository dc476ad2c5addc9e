/// Where the admin socket lives unless configured otherwise.
public enum AdminSocket {
    /// The path the systemd units give the socket (`RuntimeDirectory=pagebrokerd`).
    public static let defaultPath = "/run/pagebrokerd/admin.sock"
    /// The environment variable with which a user points `pagebrokerctl` elsewhere.
    public static let environmentVariable = "PAGEBROKER_ADMIN_SOCKET"
}
