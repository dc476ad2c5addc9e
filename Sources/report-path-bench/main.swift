// The broker's per-report logic under callgrind: `report-path-bench [REPORTS] [GUESTS]` runs
// REPORTS reports (default 10000) through `ReportPathDriver` (GUESTS guests, default 64).
// Instructions per report are the difference between two runs' totals over the difference in
// reports (docs/benchmarks.md, "The per-report logic, in instructions"):
//
//     valgrind --tool=callgrind --callgrind-out-file=cg.20000 report-path-bench 20000
//     valgrind --tool=callgrind --callgrind-out-file=cg.10000 report-path-bench 10000
@_spi(Benchmarks) import Broker

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let arguments = CommandLine.arguments.dropFirst()
guard let reports = Int(arguments.first ?? "10000"), reports >= 0,
    let guests = Int(arguments.dropFirst().first ?? "64"), guests > 0
else {
    print("usage: report-path-bench [REPORTS] [GUESTS]")
    exit(2)
}
let driver = ReportPathDriver(guests: guests)
let ok = driver.run(reports: reports)
precondition(ok == reports, "\(reports - ok) reports were not answered OK")
print("\(ok) reports OK")
