import Foundation
import Synchronization
import Testing

/// A test PKI made once per test process with `scripts/make-test-pki`.
enum TestPKI {
    /// Guests of t1–t3, of the paused and rate-limited tenants, and of t9, which no broker
    /// configuration names.
    static let guests = ["t1/g2", "t1/g3", "t2/g1", "t2/g2", "t3/g1", "t3/g2", "paused/g1", "limited/g1", "t9/g1"]

    /// The PKI directory (made on first use).
    static let directory: String = {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pagebroker-e2e-pki-\(getpid())")
            .path
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/make-test-pki").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script, directory, "example.org"]
        process.environment = ProcessInfo.processInfo.environment.merging([
            "PKI_GUESTS": Self.guests.joined(separator: " ")
        ]) { $1 }
        try! process.run()
        process.waitUntilExit()
        precondition(process.terminationStatus == 0, "make-test-pki failed")
        return directory
    }()

    static func path(_ name: String) -> String { "\(Self.directory)/\(name)" }
}

/// Finds a built product next to the test bundle.
func builtProduct(_ name: String) -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var directory = URL(fileURLWithPath: exe).deletingLastPathComponent()
    while directory.path != "/" && !FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path)
    {
        directory = directory.deletingLastPathComponent()
    }
    return directory.appendingPathComponent(name).path
}

/// A real `pagebrokerd` process on a loopback port the OS picked.
final class BrokerProcess: Sendable {
    let process: Process
    let port: Int
    let directory: String
    private let output: Output

    /// What the broker wrote to standard error, and the port read from it.
    final class Output: Sendable {
        let text = Mutex("")
        let port = Mutex<Int?>(nil)
        /// Tests waiting for a line: resumed when it arrives or when the pipe closes.
        let waiters = Mutex<[(needle: String, continuation: CheckedContinuation<Bool, Never>)]>([])
        let closed = Mutex(false)

        /// Appends what the broker wrote and resumes every waiter whose text is now there.
        func append(_ more: String) {
            let text = self.text.withLock {
                $0 += more
                return $0
            }
            let ready = self.waiters.withLock { waiters in
                let ready = waiters.filter { text.contains($0.needle) }
                waiters.removeAll { text.contains($0.needle) }
                return ready
            }
            for waiter in ready { waiter.continuation.resume(returning: true) }
        }

        /// The pipe reached end of file: nothing more will come, so every waiter is answered.
        func close() {
            self.closed.withLock { $0 = true }
            let text = self.text.withLock { $0 }
            let all = self.waiters.withLock { waiters in
                defer { waiters.removeAll() }
                return waiters
            }
            for waiter in all { waiter.continuation.resume(returning: text.contains(waiter.needle)) }
        }

        /// Waits until `needle` is in the log or the broker's standard error closes.
        func wait(for needle: String) async -> Bool {
            await withCheckedContinuation { continuation in
                let resumeNow: Bool? = self.waiters.withLock { waiters in
                    let text = self.text.withLock { $0 }
                    if text.contains(needle) { return true }
                    if self.closed.withLock({ $0 }) { return false }
                    waiters.append((needle, continuation))
                    return nil
                }
                if let resumeNow { continuation.resume(returning: resumeNow) }
            }
        }
    }

    var adminSocket: String { "\(self.directory)/admin.sock" }

    /// `PAGEBROKER_E2E_GUEST_TRANSPORT` (epoll or nio): the transport every broker started here
    /// uses; unset, the broker's default.
    static let guestTransport = ProcessInfo.processInfo.environment["PAGEBROKER_E2E_GUEST_TRANSPORT"]

    /// The tenants every end-to-end broker knows: t1–t3 plain, `paused` paused, `limited` at
    /// 2 reports a second.
    static let configuration = """
        trust_domain: example.org
        limits:
          heartbeat_interval: 30s
          handshake_timeout: 20s
        shutdown_timeout: 2s
        tenants:
          t1: {}
          t2: {}
          t3: {}
          paused:
            paused: true
          limited:
            max_reports_per_second: 2
            burst: 2
        """

    /// `user`: run the broker as that user (through `runuser`, so the test must be root), as
    /// the service's `User=pagebroker` does; its directory and TLS files are handed to it.
    /// `descriptorLimit`: run it with that `RLIMIT_NOFILE` (through `prlimit`).
    init(
        extraArguments: [String] = [],
        directory existing: String? = nil,
        configuration: String? = nil,
        user: String? = nil,
        descriptorLimit: Int? = nil
    ) throws {
        let directory =
            existing
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("pagebrokerd-e2e-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try (configuration ?? Self.configuration).write(
            toFile: "\(directory)/pagebrokerd.yaml",
            atomically: true,
            encoding: .utf8
        )
        self.directory = directory
        var key = TestPKI.path("server.key")
        var executable = builtProduct("pagebrokerd")
        if let user {
            // The shared test PKI's key is root's: give the user a copy of its own. The binary
            // too: the checkout's path need not be open to other users.
            executable = "\(directory)/pagebrokerd"
            try FileManager.default.copyItem(atPath: builtProduct("pagebrokerd"), toPath: executable)
            key = "\(directory)/server.key"
            try FileManager.default.copyItem(atPath: TestPKI.path("server.key"), toPath: key)
            for path in [directory, key, "\(directory)/pagebrokerd.yaml"] {
                try FileManager.default.setAttributes([.ownerAccountName: user], ofItemAtPath: path)
            }
        }
        let process = Process()
        let brokerArguments =
            [
                "--config", "\(directory)/pagebrokerd.yaml", "--listen", "127.0.0.1:0",
                "--tls-cert", TestPKI.path("server.pem"), "--tls-key", key,
                "--client-ca", TestPKI.path("ca.pem"), "--admin-socket", "\(directory)/admin.sock",
            ]
            // CI runs these suites once more with the other guest transport (.ci/run).
            + (Self.guestTransport.map { ["--guest-transport", $0] } ?? [])
            // Each broker keeps its pause state to itself unless a test shares one on purpose.
            + (extraArguments.contains("--state-directory") ? [] : ["--state-directory", "\(directory)/state"])
            + extraArguments
        if let user {
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
            process.arguments = ["-u", user, "--", executable] + brokerArguments
        } else if let descriptorLimit {
            // util-linux's prlimit sets RLIMIT_NOFILE, then execs the broker.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
            process.arguments = ["--nofile=\(descriptorLimit):\(descriptorLimit)", "--", executable] + brokerArguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = brokerArguments
        }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        let output = Output()
        let ready = DispatchSemaphore(value: 0)
        errors.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            guard !data.isEmpty else {
                handle.readabilityHandler = nil
                output.close()
                ready.signal()
                return
            }
            output.append(String(decoding: data, as: UTF8.self))
            // "listening for guests" log line: address=[IPv4]127.0.0.1/127.0.0.1:PORT
            if output.port.withLock({ $0 }) == nil,
                let line = output.text.withLock({ $0 }).split(separator: "\n").first(where: {
                    $0.contains("listening for guests")
                }),
                let range = line.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression)
            {
                let port = Int(line[range].split(separator: ":").last!)!
                output.port.withLock { $0 = port }
                ready.signal()
            }
        }
        try process.run()
        self.process = process
        self.output = output
        guard ready.wait(timeout: .now() + .seconds(60)) == .success, let port = output.port.withLock({ $0 }) else {
            process.terminate()
            throw BrokerFailedToStart(log: output.text.withLock { $0 })
        }
        self.port = port
    }

    struct BrokerFailedToStart: Error, CustomStringConvertible {
        var log: String
        var description: String { "pagebrokerd did not start:\n\(self.log)" }
    }

    var logText: String { self.output.text.withLock { $0 } }

    /// Waits until the broker has logged `text` (the log is read from a pipe, so a line can
    /// arrive after the event it reports), or until its standard error closes without it.
    func waitForLog(_ text: String) async -> Bool { await self.output.wait(for: text) }

    /// SIGKILL: the broker dies without a word.
    func kill() {
        Foundation.kill(self.process.processIdentifier, SIGKILL)
        self.process.waitUntilExit()
    }

    /// SIGTERM, then waits for the exit status.
    func terminate() -> Int32 {
        Foundation.kill(self.process.processIdentifier, SIGTERM)
        self.process.waitUntilExit()
        return self.process.terminationStatus
    }

    deinit {
        if self.process.isRunning {
            Foundation.kill(self.process.processIdentifier, SIGKILL)
            self.process.waitUntilExit()
        }
    }
}
