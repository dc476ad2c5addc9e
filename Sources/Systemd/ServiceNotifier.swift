import CSystemd
import Glibc

/// Sends `sd_notify(3)` messages to the service manager.
///
/// Without `NOTIFY_SOCKET` (not run by systemd as `Type=notify`) every send is a no-op, so a
/// daemon can call it unconditionally.
public struct ServiceNotifier: Sendable {
    public init() {}

    /// Whether a service manager is listening (`NOTIFY_SOCKET` is set).
    public var isEnabled: Bool { getenv("NOTIFY_SOCKET") != nil }

    /// Sends `message` as one datagram.
    ///
    /// - Returns: whether it was sent (`false` when `NOTIFY_SOCKET` is unset).
    /// - Throws: ``SystemdError/Code-swift.struct/notify`` when the socket cannot be reached.
    @discardableResult
    public func send(_ message: NotifyMessage) throws(SystemdError) -> Bool {
        // unset_environment 0: later messages (STATUS, WATCHDOG, STOPPING) need the variable.
        let result = sd_notify(0, message.description)
        guard result >= 0 else {
            throw SystemdError(.notify, "sd_notify: \(String(cString: strerror(-result)))")
        }
        return result > 0
    }

    /// The watchdog timeout systemd expects `WATCHDOG=1` within (`WatchdogSec=`), or `nil` when
    /// the watchdog is off for this process. Send at half this interval.
    public func watchdogTimeout() throws(SystemdError) -> Duration? {
        var microseconds: UInt64 = 0
        let result = sd_watchdog_enabled(0, &microseconds)
        guard result >= 0 else {
            throw SystemdError(.watchdog, "WATCHDOG_USEC: \(String(cString: strerror(-result)))")
        }
        guard result > 0, microseconds > 0 else { return nil }
        return .microseconds(Int64(clamping: microseconds))
    }
}
