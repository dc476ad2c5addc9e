import BrokerProtocol
import CGuestMemory
import Dispatch
import Glibc
import SwiftProtobuf
import Synchronization

/// A broker's memory socket for tests: a Unix stream listener in a temporary directory that reads
/// length-prefixed `MemoryRequest`s with their `SCM_RIGHTS` descriptors, records them, and
/// answers each with the code it is told. Blocking sockets on dispatch threads, no NIO: NIO does
/// not pass descriptors.
final class FakeMemorySocket: Sendable {
    struct Received: Sendable {
        var connection: Int
        var request: Pagebroker_V1_MemoryRequest
        /// `fstat` of each descriptor that came with the request (the descriptor is closed).
        var descriptors: [FileIdentity]
    }

    struct FileIdentity: Sendable, Hashable {
        var device: UInt
        var inode: UInt
        var size: Int
    }

    let directory: String
    let path: String
    private let listener: Int32
    private let state = Mutex(State())

    private struct State {
        var answers: [Pagebroker_V1_MemoryCode] = []
        var received: [Received] = []
        var connections: [Int32] = []
        var accepted = 0
    }

    init() throws {
        var template = Array("/tmp/pb-memsock-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure("mkdtemp") }
        self.directory = String(cString: made)
        self.path = self.directory + "/memory.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(self.path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(listener, 8) == 0 else { throw Failure("bind/listen \(errno)") }
        self.listener = listener
        // Queues of their own: each blocks a thread, which the small global pool may not have.
        DispatchQueue(label: "fake-memory-socket.accept").async { self.acceptLoop() }
    }

    /// Codes to answer with, in order; `OK` once they run out.
    func script(_ answers: [Pagebroker_V1_MemoryCode]) {
        self.state.withLock { $0.answers = answers }
    }

    var received: [Received] { self.state.withLock { $0.received } }
    var accepted: Int { self.state.withLock { $0.accepted } }

    /// Closes every accepted connection, as a broker that stops does.
    func dropConnections() {
        // Under the lock: a connection's thread closes its descriptor under it too, so the number
        // shut down here cannot have been reused for another socket meanwhile.
        self.state.withLock { state in
            for connection in state.connections { shutdown(connection, Int32(SHUT_RDWR)) }
            state.connections = []
        }
    }

    /// Waits (polling the recorded state every millisecond, at most `seconds`) for `predicate`.
    func waitFor(seconds: Int = 10, _ predicate: ([Received]) -> Bool) -> Bool {
        for _ in 0..<(seconds * 1000) {
            if predicate(self.received) { return true }
            usleep(1000)
        }
        return predicate(self.received)
    }

    func stop() {
        // The accept loop closes the listener when accept fails: closing it here could hand its
        // number to another test's socket while the loop still uses it.
        shutdown(self.listener, Int32(SHUT_RDWR))
        self.dropConnections()
        unlink(self.path)
        rmdir(self.directory)
    }

    private func acceptLoop() {
        while true {
            let connection = accept(self.listener, nil, nil)
            guard connection >= 0 else {
                close(self.listener)
                return
            }
            let index = self.state.withLock { state in
                state.accepted += 1
                state.connections.append(connection)
                return state.accepted
            }
            DispatchQueue(label: "fake-memory-socket.\(index)").async { self.serve(connection, index: index) }
        }
    }

    private func serve(_ connection: Int32, index: Int) {
        defer {
            self.state.withLock { state in
                state.connections.removeAll { $0 == connection }
                close(connection)
            }
        }
        while let (body, descriptors) = self.readMessage(connection) {
            let request: Pagebroker_V1_MemoryRequest
            do {
                request = try Pagebroker_V1_MemoryRequest(serializedBytes: body)
            } catch {
                return
            }
            let code = self.state.withLock { state in
                state.received.append(Received(connection: index, request: request, descriptors: descriptors))
                return state.answers.isEmpty ? .ok : state.answers.removeFirst()
            }
            var response = Pagebroker_V1_MemoryResponse()
            response.code = code
            response.message = "scripted"
            guard let bytes: [UInt8] = try? response.serializedBytes() else { return }
            var framed = withUnsafeBytes(of: UInt32(bytes.count).bigEndian) { Array($0) }
            framed += bytes
            guard send(connection, framed, framed.count, Int32(MSG_NOSIGNAL)) == framed.count else { return }
        }
    }

    /// One length-prefixed message and the descriptors that came with its bytes.
    private func readMessage(_ connection: Int32) -> ([UInt8], [FileIdentity])? {
        var identities: [FileIdentity] = []
        func readExactly(_ count: Int) -> [UInt8]? {
            var bytes = [UInt8](repeating: 0, count: count)
            var offset = 0
            while offset < count {
                var fds = [Int32](repeating: -1, count: 4)
                var fdCount: Int32 = 0
                let got = bytes.withUnsafeMutableBytes { raw in
                    pb_recv_with_fds(connection, raw.baseAddress! + offset, count - offset, &fds, 4, &fdCount)
                }
                guard got > 0 else { return nil }
                for fd in fds.prefix(Int(fdCount)) {
                    var status = stat()
                    fstat(fd, &status)
                    identities.append(
                        FileIdentity(device: UInt(status.st_dev), inode: UInt(status.st_ino), size: Int(status.st_size))
                    )
                    close(fd)
                }
                offset += Int(got)
            }
            return bytes
        }
        guard let prefix = readExactly(4) else { return nil }
        let length = prefix.reduce(0) { $0 << 8 | Int($1) }
        guard let body = readExactly(length) else { return nil }
        return (body, identities)
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
