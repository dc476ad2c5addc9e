/// The samples of a Prometheus text exposition, for exact assertions in tests.
struct Exposition {
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    let samples: [Sample]
    /// `# TYPE` lines: metric family name to type.
    let types: [String: String]
    /// Families with a `# HELP` line.
    let documented: Set<String>

    init(_ text: String) {
        var samples: [Sample] = []
        var types: [String: String] = [:]
        var documented = Set<String>()
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                types[String(parts[2])] = String(parts[3])
                continue
            }
            if line.hasPrefix("# HELP ") {
                documented.insert(String(line.split(separator: " ")[2]))
                continue
            }
            guard let space = line.lastIndex(of: " ") else { continue }
            let series = line[..<space]
            let value = Double(line[line.index(after: space)...].replacingOccurrences(of: "+Inf", with: "inf")) ?? .nan
            var labels: [String: String] = [:]
            let name: Substring
            if let brace = series.firstIndex(of: "{") {
                name = series[..<brace]
                // Label values in these tests hold no commas, quotes or braces.
                for pair in series[series.index(after: brace)..<series.index(before: series.endIndex)]
                    .split(separator: ",")
                {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
                }
            } else {
                name = series
            }
            samples.append(Sample(name: String(name), labels: labels, value: value))
        }
        self.samples = samples
        self.types = types
        self.documented = documented
    }

    /// The value of the one sample with exactly these labels, or `nil`.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matches = self.samples.filter { $0.name == name && $0.labels == labels }
        return matches.count == 1 ? matches[0].value : nil
    }

    /// Every sample of `name`.
    func series(_ name: String) -> [Sample] { self.samples.filter { $0.name == name } }
}
