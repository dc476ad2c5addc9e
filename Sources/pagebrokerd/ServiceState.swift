import Broker
import Logging
import Synchronization
import Systemd

/// What the daemon's tasks share: the notification state machine, the configuration in force
/// and the last reload's outcome.
final class ServiceState: Sendable {
    private struct State {
        var machine = NotifyStateMachine()
        var configuration: BrokerConfiguration
        var lastReload: ServiceStatusLine.Reload?
        var notifyFailed = false
    }

    private let state: Mutex<State>
    private let notifier = ServiceNotifier()
    private let logger: Logger

    init(configuration: BrokerConfiguration, logger: Logger) {
        self.state = Mutex(State(configuration: configuration))
        self.logger = logger
    }

    var shutdownTimeout: Duration { self.state.withLock { $0.configuration.shutdownTimeout } }

    func statusLine(_ core: BrokerCore) -> String {
        let reload = self.state.withLock { $0.lastReload }
        return ServiceStatusLine.render(core.status(), lastReload: reload)
    }

    /// Feeds an event to the state machine and sends what it returns, in order. Sending under
    /// the lock keeps datagrams in the machine's order across tasks; `event` must not call back
    /// into this object (compute status lines first).
    func notify(_ event: (inout NotifyStateMachine) -> [NotifyMessage]) {
        self.state.withLock { state in
            for message in event(&state.machine) {
                do {
                    try self.notifier.send(message)
                } catch {
                    // Said once: a service manager that went away would otherwise flood the log.
                    if !state.notifyFailed { self.logger.warning("cannot notify systemd: \(error)") }
                    state.notifyFailed = true
                }
            }
        }
    }

    /// Reloads: reads the configuration, swaps TLS material, then tenant policy. Anything
    /// wrong refuses the whole reload and the running configuration stays.
    @discardableResult
    func reload(
        from read: () throws -> BrokerConfiguration,
        server: BrokerServer,
        core: BrokerCore
    ) -> ServiceStatusLine.Reload {
        let outcome: ServiceStatusLine.Reload
        let current = self.state.withLock { $0.configuration }
        do {
            let new = try read()
            guard let certificate = new.certificate, let key = new.key, let clientCA = new.clientCA,
                new.trustDomain != nil
            else {
                throw ReloadError(
                    "tls.certificate, tls.key, tls.client_ca and trust_domain are required"
                )
            }
            try server.reloadTLS(certificateChainPath: certificate, privateKeyPath: key, clientCAPath: clientCA)
            core.updatePolicies(new.policies)
            // What runs now: the reloadable keys from the new file, the rest as started.
            var applied = current
            applied.certificate = certificate
            applied.key = key
            applied.clientCA = clientCA
            applied.policies = new.policies
            applied.shutdownTimeout = new.shutdownTimeout
            let restartNeeded = ConfigurationChange.restartNeeded(from: current, to: new)
            self.state.withLock { $0.configuration = applied }
            outcome = .applied(restartNeeded: restartNeeded)
            self.logger.notice(
                "configuration reloaded",
                metadata: [
                    "tenants": "\(new.policies.tenants.count)",
                    "restart_needed": "\(restartNeeded.joined(separator: ","))",
                ]
            )
            if !restartNeeded.isEmpty {
                self.logger.warning(
                    "changed keys take effect only after a restart: \(restartNeeded.joined(separator: ", "))"
                )
            }
        } catch {
            outcome = .refused(reason: "\(error)")
            self.logger.error("reload refused, previous configuration stays in force: \(error)")
        }
        self.state.withLock { $0.lastReload = outcome }
        return outcome
    }
}

/// A reloaded configuration that cannot be applied.
struct ReloadError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
