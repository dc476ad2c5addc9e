import CGuestMemory
import Foundation
import Synchronization

/// `scripts/memory-attach` as a child process: it attaches memory to a broker's memory socket
/// and keeps the connection (the attachment) open until ``finish()``; ``send(_:)`` gives it a
/// command (`inhibit REASON`, `allow`, `seal-future-write`, `attach-again`).
final class MemoryAttacher: Sendable {
    let pid: pid_t
    private let input: CInt
    private let output = BrokerProcess.Output()
    private let answered = Mutex(0)
    private let drained = DispatchSemaphore(value: 0)

    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/memory-attach").path

    /// A copy of the script another user can read: the checkout may sit under a directory only
    /// its owner can enter (a clone in `mktemp -d`), where `runuser -u nobody` cannot reach it.
    static let scriptForOtherUsers: String = {
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent(
            "pagebroker-memory-attach-\(getpid())"
        ).path
        try? FileManager.default.removeItem(atPath: copy)
        try! FileManager.default.copyItem(atPath: script, toPath: copy)
        try! FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: copy)
        return copy
    }()

    /// Starts the attacher; `user` runs it as that user (through `runuser`; the test is root).
    init(socket: String, tenant: String, guest: String, _ options: [String], user: String? = nil) throws {
        var stdinPipe: [CInt] = [0, 0]
        var stdoutPipe: [CInt] = [0, 0]
        guard pipe(&stdinPipe) == 0, pipe(&stdoutPipe) == 0 else { throw POSIXError(.EMFILE) }
        for descriptor in stdinPipe + stdoutPipe { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 2)
        let script = user == nil ? Self.script : Self.scriptForOtherUsers
        let command = ["/usr/bin/env", "python3", script, socket, tenant, guest] + options
        let full = user.map { ["/usr/sbin/runuser", "-u", $0, "--"] + command } ?? command
        let argv = full.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let envp = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, full[0], &actions, nil, argv, envp)
        close(stdinPipe[0])
        close(stdoutPipe[1])
        guard result == 0 else {
            close(stdinPipe[1])
            close(stdoutPipe[0])
            throw POSIXError(POSIXErrorCode(rawValue: result) ?? .ENOENT)
        }
        self.pid = pid
        self.input = stdinPipe[1]
        let reader = stdoutPipe[0]
        let output = self.output
        let drained = self.drained
        Thread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(reader, &buffer, buffer.count)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                output.append(String(decoding: buffer[0..<count], as: UTF8.self))
            }
            close(reader)
            output.close()
            drained.signal()
        }.start()
    }

    /// The next line the attacher printed ("7 size_mismatch the file is…", "SEALED",
    /// "CLOSED"), without its number; `nil` if it exited first.
    func next() async -> String? {
        let number = self.answered.withLock {
            $0 += 1
            return $0
        }
        // The script ends each line with "#N.", so the line is whole once that arrived.
        guard await self.output.wait(for: " #\(number).") else { return nil }
        let all = self.output.text.withLock { $0 }
        guard let start = all.range(of: "#\(number) "), let end = all.range(of: " #\(number).") else { return nil }
        return String(all[start.upperBound..<end.lowerBound])
    }

    /// The code name of the next response (`ok`, `size_mismatch`…), or `CLOSED`/`SEALED`.
    func nextCode() async -> String? {
        guard let line = await self.next() else { return nil }
        let words = line.split(separator: " ")
        if words.first == "CLOSED" || words.first == "SEALED" { return String(words[0]) }
        return words.count > 1 ? String(words[1]) : nil
    }

    func send(_ command: String) {
        let bytes = Array((command + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(self.input, $0.baseAddress, $0.count) }
    }

    /// Closes its standard input: it closes the connection (detaching the memory) and exits.
    @discardableResult
    func finish() -> Int32 {
        close(self.input)
        var raw: Int32 = 0
        while waitpid(self.pid, &raw, 0) < 0 && errno == EINTR {}
        self.drained.wait()
        return (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
    }

    var log: String { self.output.text.withLock { $0 } }
}

/// A memfd the test owns, sized like ``RawGuest/hello``'s pool and sealed against shrinking
/// only (so a test can still add F_SEAL_FUTURE_WRITE), with helpers to fill it and to ask the
/// kernel how much of it is allocated.
final class TestMemfd: Sendable {
    let descriptor: CInt
    static let pageSize = 4096
    static let totalPages = 1 << 18

    init(size: Int = TestMemfd.pageSize * TestMemfd.totalPages) throws {
        let descriptor = pb_memfd_create("pagebroker-e2e", 0)
        guard descriptor >= 0 else { throw POSIXError(.ENOMEM) }
        guard ftruncate(descriptor, off_t(size)) == 0,
            fcntl(descriptor, 1033 /* F_ADD_SEALS */, pb_seal_shrink_bit() | pb_seal_grow_bit()) == 0
        else {
            close(descriptor)
            throw POSIXError(.EINVAL)
        }
        self.descriptor = descriptor
    }

    deinit { close(self.descriptor) }

    /// The path another process opens to get this memfd: the same file.
    var procPath: String { "/proc/\(getpid())/fd/\(self.descriptor)" }

    /// Writes a non-zero pattern over frames `[first, first + count)`, allocating them.
    func fill(frames first: Int, count: Int) {
        let chunk = [UInt8](repeating: 0xA5, count: TestMemfd.pageSize * 64)
        var offset = first * TestMemfd.pageSize
        let end = (first + count) * TestMemfd.pageSize
        while offset < end {
            let length = min(chunk.count, end - offset)
            let written = chunk.withUnsafeBytes { pwrite(self.descriptor, $0.baseAddress, length, off_t(offset)) }
            precondition(written == length)
            offset += length
        }
    }

    /// The kernel's allocated bytes of the file: `st_blocks * 512`.
    var allocatedBytes: Int {
        var info = stat()
        precondition(fstat(self.descriptor, &info) == 0)
        return Int(info.st_blocks) * 512
    }

    /// Whether frame `frame` still holds the pattern (not punched to zeroes).
    func holdsPattern(frame: Int) -> Bool {
        var byte: UInt8 = 0
        _ = pread(self.descriptor, &byte, 1, off_t(frame * TestMemfd.pageSize))
        return byte == 0xA5
    }
}
