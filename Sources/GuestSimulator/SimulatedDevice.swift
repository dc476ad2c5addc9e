import PageReporting
import Synchronization

/// The host side of a simulation: answers reports as the ``DeviceBehaviour`` list says.
///
/// Latency is virtual: the device advances the simulation clock while it "waits", so workload
/// steps that fall due meanwhile run with the zone lock released, as they would on a real guest.
final class SimulatedDevice: PageReportingDevice {
    struct Refused: Error, CustomStringConvertible {
        var description: String { "simulated host refused the report" }
    }

    private let behaviours: [DeviceBehaviour]
    private let clock: VirtualClock
    private let random: Mutex<SeededRandom>

    init(behaviours: [DeviceBehaviour], clock: VirtualClock, seed: UInt64) {
        self.behaviours = behaviours
        self.clock = clock
        self.random = Mutex(SeededRandom(seed: seed ^ 0xD1B5_4A32_D192_ED03))
    }

    func report(_ batch: ReportBatch) throws {
        var failed = false
        for behaviour in self.behaviours {
            switch behaviour {
            case .ok:
                break
            case .fail:
                failed = true
            case .flaky(let probability):
                if self.random.withLock({ $0.chance(probability) }) { failed = true }
            case .latency(let latency):
                self.clock.advance(by: latency)
            }
        }
        if failed { throw Refused() }
    }
}
