import ArgumentParser

/// `pagebroker-agent bench`: measurements on real memory.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the cost of free page reporting on real memory.",
        subcommands: [PageFaultBench.self]
    )
}
