import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

/// `pagebroker-agent`: runs the guest engine against a workload.
@main
struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pagebroker-agent",
        abstract: "Run the pagebroker guest engine against a workload.",
        discussion: """
            Exit codes: 0 success, 1 the run failed (for example a broken allocator invariant), \
            2 bad flags or values.
            """,
        subcommands: [SimulateCommand.self, RunCommand.self, LoadCommand.self, BenchCommand.self]
    )

    /// Parses and runs like `ParsableCommand.main()`, except that bad flags exit with status 2,
    /// the convention of command-line tools on Linux, instead of ArgumentParser's 64.
    static func main() {
        do {
            var command = try Self.parseAsRoot()
            try command.run()
        } catch {
            let code = Self.exitCode(for: error)
            if code == .validationFailure {
                let message = Self.fullMessage(for: error)
                var stderr = FileHandleStream.standardError
                stderr.write(message + "\n")
                Glibc.exit(2)
            }
            Self.exit(withError: error)
        }
    }
}

/// Writes to a file descriptor without Foundation.
struct FileHandleStream: TextOutputStream {
    let descriptor: Int32

    static var standardError: FileHandleStream { FileHandleStream(descriptor: 2) }
    static var standardOutput: FileHandleStream { FileHandleStream(descriptor: 1) }

    mutating func write(_ string: String) {
        var text = string
        text.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(self.descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { return }
                offset += written
            }
        }
    }

    var isTerminal: Bool { isatty(self.descriptor) == 1 }
}
