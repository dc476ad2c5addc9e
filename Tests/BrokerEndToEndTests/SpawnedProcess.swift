import Foundation
import Synchronization

/// A child process started with `posix_spawn` and reaped with `waitpid`, for tests whose
/// children outlive each other: Foundation's `Process.waitUntilExit` was seen to hang for a
/// child that had already exited while a socket-activated broker (another child) ran on.
final class SpawnedProcess: Sendable {
    let pid: pid_t
    /// What the child wrote to standard error (and standard output, when captured), so far.
    let output = BrokerProcess.Output()
    private let exitStatus = Mutex<Int32?>(nil)
    private let drained = DispatchSemaphore(value: 0)

    /// Starts `executable` with `arguments`; standard output and error go to one pipe read by a
    /// thread, and `onOutput` sees the text so far after every read.
    /// `asJournal` sets `JOURNAL_STREAM` to the output pipe's device and inode, as systemd
    /// does when a service's output goes to journald.
    init(
        _ executable: String,
        _ arguments: [String],
        asJournal: Bool = false,
        onOutput: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        var pipe: [CInt] = [0, 0]
        guard Glibc.pipe(&pipe) == 0 else { throw POSIXError(.EMFILE) }
        // Not inherited by other children spawned meanwhile: only this child's dup2 copies live on.
        _ = fcntl(pipe[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[1], F_SETFD, FD_CLOEXEC)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipe[1], 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var environment = ProcessInfo.processInfo.environment
        if asJournal {
            var info = stat()
            fstat(pipe[1], &info)
            environment["JOURNAL_STREAM"] = "\(info.st_dev):\(info.st_ino)"
        }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        close(pipe[1])
        guard result == 0 else {
            close(pipe[0])
            throw POSIXError(POSIXErrorCode(rawValue: result) ?? .ENOENT)
        }
        self.pid = pid
        let reader = pipe[0]
        let output = self.output
        let drained = self.drained
        Thread {
            var buffer = [UInt8](repeating: 0, count: 16_384)
            while true {
                let count = read(reader, &buffer, buffer.count)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                output.append(String(decoding: buffer[0..<count], as: UTF8.self))
                onOutput(output.text.withLock { $0 })
            }
            close(reader)
            output.close()
            drained.signal()
        }.start()
    }

    var text: String { self.output.text.withLock { $0 } }

    func signal(_ number: Int32) { kill(self.pid, number) }

    /// Waits for the child to exit and its output to be read; returns the exit status (128+N
    /// for a signal).
    @discardableResult
    func wait() -> Int32 {
        if let status = self.exitStatus.withLock({ $0 }) { return status }
        var raw: Int32 = 0
        while waitpid(self.pid, &raw, 0) < 0 && errno == EINTR {}
        self.drained.wait()
        let status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        self.exitStatus.withLock { $0 = status }
        return status
    }

    /// Whether the child has exited (reaping it if so).
    var hasExited: Bool {
        if self.exitStatus.withLock({ $0 }) != nil { return true }
        var raw: Int32 = 0
        guard waitpid(self.pid, &raw, WNOHANG) == self.pid else { return false }
        self.drained.wait()
        let status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        self.exitStatus.withLock { $0 = status }
        return true
    }

    /// Runs a command to completion; returns its status and output.
    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = try SpawnedProcess(executable, arguments)
        let status = process.wait()
        return (status, process.text)
    }
}
