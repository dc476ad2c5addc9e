import Foundation
import Testing

/// `--help` of every command and subcommand, as a user on an 80-column terminal sees it.
///
/// The parser wraps help text to the terminal's width itself. Text that is also wrapped by
/// hand in the source gets wrapped twice, which leaves lines broken early mid-sentence ("ID in
/// its" then "client certificate ..."). The check is what a single greedy wrap guarantees: no
/// line is wider than the terminal, and no line ends while the first word of the line that
/// continues it would still have fitted on it.
@Suite struct HelpTextTests {
    static let width = 80

    /// Every command line whose help is checked: each binary, and each subcommand found in
    /// the SUBCOMMANDS sections of the help itself (so new subcommands are checked too).
    static func helpOutputs(_ binary: String) throws -> [(command: String, text: String)] {
        var outputs: [(String, String)] = []
        var queue: [[String]] = [[]]
        while let path = queue.first {
            queue.removeFirst()
            let (status, text) = try Self.run(binary, path + ["--help"])
            let command = ([binary] + path).joined(separator: " ")
            #expect(status == 0, "\(command) --help exited \(status): \(text)")
            outputs.append((command, text))
            queue += HelpLayout.subcommands(in: text).map { path + [$0] }
        }
        return outputs
    }

    static func run(_ binary: String, _ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct(binary))
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["COLUMNS"] = "\(Self.width)"
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test(arguments: ["pagebrokerd", "pagebrokerctl", "pagebroker-agent"])
    func helpIsWrappedOnceAtEightyColumns(binary: String) throws {
        let outputs = try Self.helpOutputs(binary)
        // The binaries have subcommands (pagebrokerd has none): the walk must have found them.
        if binary != "pagebrokerd" { #expect(outputs.count > 1, "no subcommands found in \(binary) --help") }
        for (command, text) in outputs {
            let problems = HelpLayout.problems(in: text, width: Self.width)
            #expect(
                problems.isEmpty,
                "\(command) --help at \(Self.width) columns:\n\(problems.joined(separator: "\n"))"
            )
        }
    }

    // The check itself, on text wrapped twice and once.

    @Test func aParagraphWrappedByHandAndAgainIsCaught() {
        // What the parser made of pagebrokerd's discussion when the source broke its lines.
        let text = """
            OVERVIEW: Host-side memory broker for free page reporting.

            Guests connect over mutual TLS; each is authenticated to a tenant by the SPIFFE
            ID in its
            client certificate (spiffe://<trust-domain>/tenant/<tenant>/guest/<guest>).

            """
        let problems = HelpLayout.problems(in: text, width: 80)
        #expect(problems.count == 1)
        #expect(problems.first?.contains("ID in its") == true)
    }

    @Test func anOptionsHelpWrappedEarlyIsCaught() {
        let text = """
            OPTIONS:
              --config <config>       Configuration file
                                      (YAML).
              -h, --help              Show help information.

            """
        #expect(HelpLayout.problems(in: text, width: 80).count == 1)
    }

    @Test func aLineWiderThanTheTerminalIsCaught() {
        let text = String(repeating: "word ", count: 17) + "\n"
        #expect(HelpLayout.problems(in: text, width: 80).count == 1)
    }

    @Test func greedilyWrappedTextPasses() {
        let text = """
            OVERVIEW: Inspect and control a running pagebrokerd through its admin socket.

            Exit codes: 0 success; 1 the broker refused or failed the request (the reason
            is printed); 2 bad usage; 3 cannot connect to the admin socket.

            OPTIONS:
              --socket <path>         The broker's admin socket (default:
                                      $PAGEBROKER_ADMIN_SOCKET, else
                                      /run/pagebrokerd/admin.sock).
              -h, --help              Show help information.

            SUBCOMMANDS:
              status                  Print the broker's status.
              tenants                 Print per-tenant figures.

            """
        #expect(HelpLayout.problems(in: text, width: 80).isEmpty)
        #expect(HelpLayout.subcommands(in: text) == ["status", "tenants"])
    }
}

/// Reading the parser's help layout: sections, entries and their text columns.
enum HelpLayout {
    /// The names listed under SUBCOMMANDS (an entry is indented two columns; its wrapped
    /// abstract deeper).
    static func subcommands(in text: String) -> [String] {
        var names: [String] = []
        var inSection = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("SUBCOMMANDS:") {
                inSection = true
            } else if inSection {
                guard line.hasPrefix("  "), !line.hasPrefix("   ") else {
                    if !line.isEmpty && !line.hasPrefix(" ") { inSection = false }
                    continue
                }
                let name = line.dropFirst(2).prefix { $0 != " " }
                // "See 'x help <subcommand>' ..." is not an entry.
                if !name.isEmpty, name != "See", name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) {
                    names.append(String(name))
                }
            }
        }
        return names
    }

    /// Lines wider than `width`, and lines that end while the next word would have fitted.
    static func problems(in text: String, width: Int) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var problems: [String] = []
        for (index, line) in lines.enumerated() {
            if line.count > width {
                problems.append("line \(index + 1) is \(line.count) columns: \(line)")
            }
            guard index + 1 < lines.count else { continue }
            let next = lines[index + 1]
            guard !line.trimmingCharacters(in: .whitespaces).isEmpty,
                let nextWord = next.split(separator: " ").first,
                Self.indent(of: next) == Self.textColumn(of: line),
                !nextWord.hasPrefix("-")
            else { continue }
            // The parser breaks a line at the last space within `width` columns, so a line
            // followed by another word keeps its last column free.
            if line.count + 1 + nextWord.count < width {
                problems.append(
                    "line \(index + 1) ends early (\"\(nextWord)\" would have fitted): \(line) / \(next)"
                )
            }
        }
        return problems
    }

    static func indent(of line: String) -> Int { line.prefix { $0 == " " }.count }

    /// Where a line's text starts: after the gap of two or more spaces that follows an
    /// option's or subcommand's name, or at its indentation for prose.
    static func textColumn(of line: String) -> Int {
        let indent = Self.indent(of: line)
        let characters = Array(line)
        let isEntry = indent == 2 || (indent > 0 && characters[indent] == "-")
        guard isEntry else { return indent }
        var position = indent
        while position + 1 < characters.count {
            if characters[position] == " " && characters[position + 1] == " " {
                var end = position
                while end < characters.count && characters[end] == " " { end += 1 }
                return end
            }
            position += 1
        }
        return indent
    }
}
