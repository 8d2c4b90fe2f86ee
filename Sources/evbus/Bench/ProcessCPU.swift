import Foundation
import Glibc

/// CPU time (user + system) of processes and threads, from /proc: what a scenario spends per
/// message in each part, steadier than its rate on a shared machine. Clock-tick resolution
/// (10 ms): meaningful over phases of a second or more.
enum ProcessCPU {
    /// CPU nanoseconds of `/proc/<path>/stat` (a process, or `self/task/<tid>`), 0 if unreadable.
    static func nanos(_ path: String) -> UInt64 {
        guard let stat = read("/proc/\(path)/stat"), let close = stat.lastIndex(of: ")") else { return 0 }
        // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return 0 }
        return (user + system) * (1_000_000_000 / UInt64(sysconf(Int32(_SC_CLK_TCK))))
    }

    static func nanos(pid: Int32) -> UInt64 { nanos("\(pid)") }

    /// CPU nanoseconds of this process's threads whose name starts with `prefix`.
    static func threadNanos(named prefix: String) -> UInt64 {
        guard let dir = opendir("/proc/self/task") else { return 0 }
        defer { closedir(dir) }
        var total: UInt64 = 0
        while let entry = readdir(dir) {
            let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard tid.first?.isNumber == true, let comm = read("/proc/self/task/\(tid)/comm"), comm.hasPrefix(prefix) else { continue }
            total += nanos("self/task/\(tid)")
        }
        return total
    }

    private static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        return n > 0 ? String(decoding: bytes[..<n], as: UTF8.self) : nil
    }
}

/// CPU spent by each part of the bridge scenario between two samples.
struct BridgeCPU {
    var bridges: UInt64, brokers: UInt64, natsServer: UInt64, clients: UInt64

    static func sample(brokers: [Int32], natsServer: Int32?) -> BridgeCPU {
        let bridges = ProcessCPU.threadNanos(named: "bridge-")
        return BridgeCPU(
            bridges: bridges, brokers: brokers.reduce(0) { $0 + ProcessCPU.nanos(pid: $1) },
            natsServer: natsServer.map { ProcessCPU.nanos(pid: $0) } ?? 0, clients: ProcessCPU.nanos("self") - bridges)
    }

    static func - (a: BridgeCPU, b: BridgeCPU) -> BridgeCPU {
        BridgeCPU(bridges: a.bridges - b.bridges, brokers: a.brokers - b.brokers, natsServer: a.natsServer - b.natsServer, clients: a.clients - b.clients)
    }

    /// `cpu/msg <label>: bridges … brokers … nats-server … clients … total … µs`.
    func line(_ label: String, messages: Int) -> String {
        func us(_ n: UInt64) -> String { BenchReport.format(Double(n) / Double(max(messages, 1)) / 1000, 2) }
        return "cpu/msg \(label.padding(toLength: 22, withPad: " ", startingAt: 0)) bridges \(us(bridges)) µs  brokers \(us(brokers)) µs  nats-server \(us(natsServer)) µs  clients \(us(clients)) µs  total \(us(bridges + brokers + natsServer + clients)) µs"
    }
}
