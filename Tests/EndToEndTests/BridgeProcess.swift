import EvbusTestSupport
import Foundation
import Testing

/// Starts `evbus bridge` as a process on `socket`, configured with these NATS servers and
/// rules, and waits for its `event=started` line.
func startBridge(
    _ name: String, socket: String, servers: [String], export: [String] = [], import imports: [String] = [],
    services: [String: Any]? = nil, jetstream: [[String: String]]? = nil, outage: [String: Any]? = nil, nats: [String: Any] = [:]
) async throws -> RunningProcess {
    let file = TestPaths.dataDirectory("bridge-\(name)") + ".json"
    let natsObject = nats.merging(["servers": servers]) { _, new in new }
    var json: [String: Any] = ["name": name, "nats": natsObject, "export": export, "import": imports]
    if let services { json["services"] = services }
    if let jetstream { json["jetstream"] = jetstream }
    if let outage { json["outage"] = outage }
    try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: file))
    let p = try RunningProcess(TestPaths.evbusBinary, ["bridge", "--config", file, "--socket", socket])
    #expect(await eventually { p.stderr.contains("event=started") || !p.isRunning }, "\(p.stderr)")
    return p
}

/// How many lines of a process's log contain `text`.
func occurrences(_ text: String, in log: String) -> Int {
    log.components(separatedBy: text).count - 1
}
