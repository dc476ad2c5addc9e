import CSystemd
import Glibc

/// A listening socket handed over by the service manager (`pagebrokerd.socket`).
public struct ActivatedSocket: Hashable, Sendable {
    /// The socket's `FileDescriptorName=`; systemd says `unknown` when the unit sets none.
    public var name: String
    /// The file descriptor, already bound and listening.
    public var descriptor: CInt

    public init(name: String, descriptor: CInt) {
        self.name = name
        self.descriptor = descriptor
    }
}

/// Socket activation (`sd_listen_fds_with_names(3)`).
public enum SocketActivation {
    /// Takes the sockets passed in `LISTEN_FDS`/`LISTEN_FDNAMES`, and clears those variables so
    /// that child processes do not think the sockets are theirs. Empty when the process was not
    /// socket-activated (or `LISTEN_PID` names another process).
    ///
    /// Every returned descriptor is marked close-on-exec.
    public static func takeSockets() throws(SystemdError) -> [ActivatedSocket] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count >= 0 else {
            throw SystemdError(.listenDescriptors, "sd_listen_fds_with_names: \(String(cString: strerror(-count)))")
        }
        defer {
            if let names {
                for index in 0..<Int(count) { free(names[index]) }
                free(names)
            }
        }
        var sockets: [ActivatedSocket] = []
        for index in 0..<Int(count) {
            let descriptor = SD_LISTEN_FDS_START + CInt(index)
            let name = names?[index].map { String(cString: $0) } ?? "unknown"
            // systemd leaves the descriptors inheritable; nothing we spawn should hold the listener.
            _ = fcntl(descriptor, F_SETFD, fcntl(descriptor, F_GETFD) | FD_CLOEXEC)
            sockets.append(ActivatedSocket(name: name, descriptor: descriptor))
        }
        return sockets
    }

    /// Assigns passed sockets to the roles a daemon knows by name. A socket without a name
    /// (`unknown`) is given to `unnamedRole` when that role is still free, so a single-socket
    /// `systemd-socket-activate -l ADDR` works too.
    ///
    /// - Throws: ``SystemdError/Code-swift.struct/unknownDescriptorName`` for a name outside
    ///   `roles`, ``SystemdError/Code-swift.struct/duplicateDescriptorName`` when two sockets
    ///   claim one role.
    public static func assign(
        _ sockets: [ActivatedSocket],
        roles: Set<String>,
        unnamedRole: String?
    ) throws(SystemdError) -> [String: CInt] {
        var assigned: [String: CInt] = [:]
        for socket in sockets {
            var role = socket.name
            if role == "unknown" || role.isEmpty, let unnamedRole, assigned[unnamedRole] == nil {
                role = unnamedRole
            }
            guard roles.contains(role) else {
                throw SystemdError(
                    .unknownDescriptorName,
                    "socket \(socket.descriptor) is named '\(socket.name)'; FileDescriptorName= must be one of "
                        + roles.sorted().joined(separator: ", ")
                )
            }
            guard assigned[role] == nil else {
                throw SystemdError(.duplicateDescriptorName, "two sockets are named '\(role)'")
            }
            assigned[role] = socket.descriptor
        }
        return assigned
    }
}
