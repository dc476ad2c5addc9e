import Glibc

/// Whether standard error goes straight to the journal.
///
/// systemd sets `JOURNAL_STREAM=DEVICE:INODE` for a service whose output it connects to
/// journald; the variable is inherited by children whose output goes elsewhere, so it only
/// counts when it names the stream standard error actually is (`systemd.exec(5)`).
public enum JournalStream {
    public static func isStandardErrorConnected() -> Bool {
        guard let value = getenv("JOURNAL_STREAM") else { return false }
        return self.matches(String(cString: value), descriptor: STDERR_FILENO)
    }

    /// Whether `value` (`DEVICE:INODE`) names `descriptor`.
    public static func matches(_ value: String, descriptor: CInt) -> Bool {
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }
}
