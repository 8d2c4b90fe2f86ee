import Foundation

/// Formatting and statistics for benchmark output.
enum BenchReport {
    /// The p-th percentile (0...100) of sorted samples.
    static func percentile(_ sorted: [UInt64], _ p: Double) -> UInt64 {
        guard !sorted.isEmpty else { return 0 }
        let index = min(sorted.count - 1, Int((Double(sorted.count - 1) * p / 100).rounded()))
        return sorted[index]
    }

    static func rate(_ count: Int, nanos: UInt64) -> Double {
        nanos == 0 ? 0 : Double(count) * 1e9 / Double(nanos)
    }

    /// 2534567.8 -> "2.53 M"
    static func human(_ v: Double) -> String {
        if v >= 1e6 { return format(v / 1e6, 2) + " M" }
        if v >= 1e3 { return format(v / 1e3, 1) + " k" }
        return format(v, 0)
    }

    static func format(_ v: Double, _ decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let rounded = (v * scale).rounded() / scale
        var s = String(rounded)
        if decimals == 0, s.hasSuffix(".0") { s.removeLast(2) }
        if let dot = s.firstIndex(of: ".") {
            let have = s.distance(from: dot, to: s.endIndex) - 1
            if have < decimals { s += String(repeating: "0", count: decimals - have) }
        }
        return s
    }

    static func micros(_ nanos: UInt64) -> String { format(Double(nanos) / 1000, 1) + " µs" }

    /// A request/reply result: round trips per second and latency percentiles of sorted samples.
    static func roundTripLine(_ label: String, _ sorted: [UInt64], nanos: UInt64, clients: Int) -> String {
        "\(label.padding(toLength: 26, withPad: " ", startingAt: 0)) round trips/s \(human(rate(sorted.count, nanos: nanos)))  "
            + "calls \(sorted.count) clients \(clients)  latency p50 \(micros(percentile(sorted, 50)))"
            + " p99 \(micros(percentile(sorted, 99))) p99.9 \(micros(percentile(sorted, 99.9)))"
    }
}
