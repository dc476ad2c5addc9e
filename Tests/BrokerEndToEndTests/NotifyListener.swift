import Foundation
import Synchronization

/// A Unix datagram socket of the test's own, given to the broker as `NOTIFY_SOCKET`: what
/// systemd would receive from `sd_notify`, in order.
final class NotifyListener: @unchecked Sendable {
    let path: String
    private let socket: CInt
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var received: [[String: String]] = []
    private var closed = false
    private let finished = DispatchSemaphore(value: 0)

    init(path: String) throws {
        unlink(path)
        let socket = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard socket >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            path.utf8CString.withUnsafeBytes { raw.copyMemory(from: $0) }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        // A receive timeout only so the reader thread can notice close(); waiting is done on
        // the condition, for what arrives.
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.path = path
        self.socket = socket
        Thread { [self] in
            self.readLoop()
            self.finished.signal()
        }.start()
    }

    private func readLoop() {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            self.condition.lock()
            let closed = self.closed
            self.condition.unlock()
            if closed { return }
            let count = recv(self.socket, &buffer, buffer.count, 0)
            guard count > 0 else { continue }
            var message: [String: String] = [:]
            for line in String(decoding: buffer[0..<count], as: UTF8.self).split(separator: "\n") {
                guard let equals = line.firstIndex(of: "=") else { continue }
                message[String(line[..<equals])] = String(line[line.index(after: equals)...])
            }
            self.condition.lock()
            self.received.append(message)
            self.condition.broadcast()
            self.condition.unlock()
        }
    }

    /// Everything received so far.
    var messages: [[String: String]] {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.received
    }

    /// Waits (at most `timeout`) until a message after the first `after` satisfies `matches`;
    /// returns it and its index.
    func wait(
        after: Int = 0,
        timeout: TimeInterval = 30,
        for matches: ([String: String]) -> Bool
    ) -> (index: Int, message: [String: String])? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        self.condition.lock()
        defer { self.condition.unlock() }
        while true {
            if let index = self.received.indices.dropFirst(after).first(where: { matches(self.received[$0]) }) {
                return (index, self.received[index])
            }
            guard self.condition.wait(until: deadline) else { return nil }
        }
    }

    /// The messages as a sequence of kinds, without WATCHDOG=1 and with repeated STATUS=
    /// collapsed: what the lifecycle looked like to systemd.
    var lifecycle: [String] {
        var kinds: [String] = []
        for message in self.messages {
            for kind in ["READY", "RELOADING", "STOPPING", "STATUS"] where message[kind] != nil {
                if kind == "STATUS" && kinds.last == "STATUS" { continue }
                kinds.append(kind)
            }
        }
        return kinds
    }

    func close() {
        self.condition.lock()
        self.closed = true
        self.condition.unlock()
        self.finished.wait()
        Glibc.close(self.socket)
        unlink(self.path)
    }
}
