import Foundation
import Logging
import Synchronization
import Systemd
import Testing

@Suite struct JournalLogHandlerTests {
    final class Lines: Sendable {
        let lines = Mutex<[String]>([])
    }

    @Test func linesCarrySyslogPriorities() {
        let sink = Lines()
        var handler = JournalLogHandler(label: "pagebrokerd") { line in sink.lines.withLock { $0.append(line) } }
        handler.logLevel = .trace
        handler[metadataKey: "unit"] = "test"
        let logger = Logger(label: "pagebrokerd") { _ in handler }
        logger.debug("d")
        logger.info("ready", metadata: ["tenants": "2"])
        logger.notice("n")
        logger.warning("w")
        logger.error("two\nlines")
        logger.critical("c")
        #expect(
            sink.lines.withLock { $0 } == [
                "<7>pagebrokerd: d unit=test\n",
                "<6>pagebrokerd: ready tenants=2 unit=test\n",
                "<5>pagebrokerd: n unit=test\n",
                "<4>pagebrokerd: w unit=test\n",
                "<3>pagebrokerd: two lines unit=test\n",
                "<2>pagebrokerd: c unit=test\n",
            ]
        )
    }

    @Test func levelFilters() {
        let sink = Lines()
        var handler = JournalLogHandler(label: "x") { line in sink.lines.withLock { $0.append(line) } }
        handler.logLevel = .warning
        let logger = Logger(label: "x") { _ in handler }
        logger.info("dropped")
        logger.warning("kept")
        #expect(sink.lines.withLock { $0 } == ["<4>x: kept\n"])
    }

    @Test func journalStreamMustNameTheDescriptor() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(getpid())").path
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        defer { unlink(path) }
        let descriptor = open(path, O_RDONLY)
        #expect(descriptor >= 0)
        defer { close(descriptor) }
        var info = stat()
        #expect(fstat(descriptor, &info) == 0)
        #expect(JournalStream.matches("\(info.st_dev):\(info.st_ino)", descriptor: descriptor))
        #expect(!JournalStream.matches("\(info.st_dev):\(info.st_ino + 1)", descriptor: descriptor))
        #expect(!JournalStream.matches("garbage", descriptor: descriptor))
        #expect(!JournalStream.matches("1:2:3", descriptor: descriptor))
    }
}
