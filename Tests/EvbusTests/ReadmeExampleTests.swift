import Evbus
import EvbusTestSupport
import Testing

/// The README's library example, line for line (plus the socket path), so it keeps compiling and working.
@Suite struct ReadmeExampleTests {
    @Test func libraryExampleRuns() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        var printed: [String] = []

        let peer = try await broker.connect("thermostat")
        let temps = try await peer.subscribe("sensors.*.temp")
        try await peer.publish("sensors.kitchen.temp", "21.5")
        try await peer.publish("sensors.kitchen.temp", "stop")
        for try await event in temps {
            printed.append("\(event.topic) \(event.text)")
            if event.text == "stop" { break }
        }
        await peer.close()

        #expect(printed == ["sensors.kitchen.temp 21.5", "sensors.kitchen.temp stop"])
    }
}
