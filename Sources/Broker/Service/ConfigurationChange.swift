/// What a reload can apply to a running broker, and what only a restart can.
///
/// A reload swaps the TLS certificate, key and CA bundle (new handshakes use them), the tenant
/// policies, and the shutdown timeout, without touching sessions. Listeners, the trust domain
/// (it is part of every session's identity), session limits (announced in each `ServerHello`),
/// admin access, the metrics listener and the state directory stay as they were until a restart.
public enum ConfigurationChange {
    /// The keys whose change a reload from `old` to `new` does not apply, as
    /// `docs/configuration.md` names them.
    public static func restartNeeded(from old: BrokerConfiguration, to new: BrokerConfiguration) -> [String] {
        var keys: [String] = []
        func check(_ key: String, _ changed: Bool) { if changed { keys.append(key) } }
        check("listen", old.listen != new.listen)
        check("admin_socket", old.adminSocket != new.adminSocket)
        check("state_directory", old.stateDirectory != new.stateDirectory)
        check("metrics.listen", old.metricsListen != new.metricsListen)
        check("trust_domain", old.trustDomain != new.trustDomain)
        check("limits.max_sessions", old.maxSessions != new.maxSessions)
        check("limits", old.session != new.session)
        check("admin", old.allowedUIDs != new.allowedUIDs || old.allowedGIDs != new.allowedGIDs)
        return keys
    }
}
