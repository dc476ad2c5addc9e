import GuestSimulator
import Testing

@Suite struct UnitsTests {
    @Test(arguments: [
        ("4GiB", 4 << 30), ("512MiB", 512 << 20), ("4KiB", 4096), ("4096", 4096), ("1.5GiB", 3 << 29), ("2G", 2 << 30),
        ("1MB", 1_000_000),
    ])
    func parsesSizes(text: String, bytes: Int) throws {
        #expect(try Units.parseBytes(text) == bytes)
    }

    @Test(arguments: ["", "GiB", "4XB", "-1GiB", "four"])
    func refusesBadSizes(text: String) {
        #expect(throws: Units.ParseError.self) { try Units.parseBytes(text) }
    }

    @Test(arguments: [
        ("120s", Duration.seconds(120)), ("2ms", .milliseconds(2)), ("500us", .microseconds(500)),
        ("1.5s", .milliseconds(1500)),
        ("2m", .seconds(120)), ("250ns", .nanoseconds(250)),
    ])
    func parsesDurations(text: String, duration: Duration) throws {
        #expect(try Units.parseDuration(text) == duration)
    }

    @Test(arguments: ["", "s", "10", "ten seconds", "-1s"])
    func refusesBadDurations(text: String) {
        #expect(throws: Units.ParseError.self) { try Units.parseDuration(text) }
    }

    @Test func parsesDeviceBehaviours() throws {
        #expect(try DeviceBehaviour.parseList("ok") == [.ok])
        #expect(try DeviceBehaviour.parseList("flaky=0.1") == [.flaky(0.1)])
        #expect(try DeviceBehaviour.parseList("flaky=0.25,latency=2ms") == [.flaky(0.25), .latency(.milliseconds(2))])
        #expect(throws: Units.ParseError.self) { try DeviceBehaviour.parseList("flaky=2") }
        #expect(throws: Units.ParseError.self) { try DeviceBehaviour.parseList("sometimes") }
    }

    @Test func formatsBytes() {
        #expect(Units.formatBytes(512) == "512 B")
        #expect(Units.formatBytes(4 << 30) == "4.00 GiB")
        #expect(Units.formatBytes(1536 << 10) == "1.50 MiB")
    }
}
