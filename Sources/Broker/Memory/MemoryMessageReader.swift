import CBrokerMemory

#if canImport(Glibc)
import Glibc
#endif

/// Reads length-prefixed messages (4-byte big-endian length, as the guest protocol) from a
/// blocking Unix stream socket, with the descriptors that arrive as `SCM_RIGHTS` beside them.
///
/// Descriptors are given to the message being read when they arrive: a peer that waits for
/// each response before its next request (the protocol's rule) always gets its descriptor
/// paired with the request whose bytes it was sent with. Every descriptor it hands out is the
/// caller's to close; the ones it holds when dropped are closed by ``closeAll()``.
struct MemoryMessageReader {
    enum Next {
        /// `descriptors` holds at most one; `descriptorCount` says how many came (the others
        /// are closed at once, so a peer cannot exhaust the broker's descriptor table).
        case message([UInt8], descriptors: [CInt], descriptorCount: Int)
        /// The peer closed the connection.
        case end
        /// The broker is stopping (the wake descriptor became readable).
        case stopped
        case timedOut
        /// The length prefix announces more than the limit; nothing of the body was read.
        case tooLarge(UInt32)
        case failed(errno: CInt)
    }

    let socket: CInt
    let wake: CInt
    let maxMessageSize: Int
    private var buffer: [UInt8] = []
    private var descriptors: [CInt] = []
    private var descriptorCount = 0

    init(socket: CInt, wake: CInt, maxMessageSize: Int) {
        self.socket = socket
        self.wake = wake
        self.maxMessageSize = maxMessageSize
    }

    /// The next message, waiting until `deadline` (forever when `nil`).
    mutating func next(deadline: ContinuousClock.Instant?) -> Next {
        while true {
            if self.buffer.count >= 4 {
                let length =
                    UInt32(self.buffer[0]) << 24 | UInt32(self.buffer[1]) << 16 | UInt32(self.buffer[2]) << 8
                    | UInt32(self.buffer[3])
                guard Int(length) <= self.maxMessageSize else { return .tooLarge(length) }
                if self.buffer.count >= 4 + Int(length) {
                    let body = Array(self.buffer[4..<(4 + Int(length))])
                    self.buffer.removeFirst(4 + Int(length))
                    let descriptors = self.descriptors
                    let count = self.descriptorCount
                    self.descriptors = []
                    self.descriptorCount = 0
                    return .message(body, descriptors: descriptors, descriptorCount: count)
                }
            }
            switch self.wait(deadline: deadline) {
            case .ready: break
            case .stopped: return .stopped
            case .timedOut: return .timedOut
            case .failed(let error): return .failed(errno: error)
            }
            var chunk = [UInt8](repeating: 0, count: 16 * 1024)
            var received = [CInt](repeating: -1, count: Int(PBM_MAX_FDS))
            var count: CInt = 0
            var truncated: CInt = 0
            let read = chunk.withUnsafeMutableBytes { bytes in
                pbm_recv_with_fds(self.socket, bytes.baseAddress, bytes.count, &received, &count, &truncated)
            }
            // Kept even when the read failed or ended: they are ours to close.
            for descriptor in received.prefix(Int(count)) {
                self.descriptorCount += 1
                if self.descriptors.isEmpty { self.descriptors.append(descriptor) } else { close(descriptor) }
            }
            if truncated != 0 { self.descriptorCount += 1 }
            if read < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                return .failed(errno: errno)
            }
            if read == 0 { return .end }
            self.buffer.append(contentsOf: chunk.prefix(Int(read)))
        }
    }

    private enum Wait {
        case ready, stopped, timedOut
        case failed(CInt)
    }

    private func wait(deadline: ContinuousClock.Instant?) -> Wait {
        var fds = [
            pollfd(fd: self.socket, events: Int16(POLLIN), revents: 0),
            pollfd(fd: self.wake, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            var timeout: CInt = -1
            if let deadline {
                let left = deadline - .now
                if left <= .zero { return .timedOut }
                timeout = CInt(
                    clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1
                )
            }
            let ready = poll(&fds, 2, timeout)
            if ready < 0 {
                if errno == EINTR { continue }
                return .failed(errno)
            }
            if ready == 0 { continue }
            if fds[1].revents != 0 { return .stopped }
            return .ready
        }
    }

    /// Closes the descriptors received but not handed out.
    mutating func closeAll() {
        for descriptor in self.descriptors { close(descriptor) }
        self.descriptors = []
    }
}
