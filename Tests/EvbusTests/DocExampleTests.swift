// Generated from the examples in docs/CONTROLLER.md: each runs as a test, and
// DocSyncTests checks that the doc's code blocks still appear here verbatim.

import Evbus
import EvbusTestSupport
import Testing

@Suite struct DocExampleTests {
    /// Feeding a controller from the bus
    @Test func feedingAControllerFromTheBus() async throws {
        let broker = try InProcessBroker()
        let socketPath = broker.socketPath
        let peer = try await Peer.connect(to: socketPath, name: "thermostat")
        let thermostat = try Controller(name: "thermostat")
        try thermostat.on("sensors.kitchen.temp") { session in
            let bus = session.bus!
            let command = Double(bus.text)! < 18 ? "on" : "off"
            Task { try await bus.peer.publish("heating.kitchen", command) }
            return nil
        }
        try await peer.feed(thermostat, "sensors.#")
        let heating = try await peer.subscribe("heating.kitchen")
        try await peer.publish("sensors.kitchen.temp", "16.5")
        for try await event in heating {
            #expect(event.text == "on")
            break
        }
        thermostat.shutdown()
        await peer.close()
        broker.shutdown()
    }

    /// Dispatching to a controller in another process
    @Test func dispatchingToAControllerInAnotherProcess() async throws {
        let broker = try InProcessBroker()
        let socketPath = broker.socketPath
        // In the worker process:
        let workerPeer = try await Peer.connect(to: socketPath, name: "worker")
        let worker = try Controller(name: "worker")
        try worker.on("resize") { session in "resized \(session.payload(as: [UInt8].self)!.count) bytes" }
        try await workerPeer.expose(worker, as: "images")

        // In any other process:
        let app = try await Peer.connect(to: socketPath, name: "app")
        let replies = try await app.dispatch(to: "images", "resize", [UInt8](repeating: 0, count: 1024))
        #expect(replies.map { String(decoding: $0, as: UTF8.self) } == ["resized 1024 bytes"])
        worker.shutdown()
        await app.close()
        await workerPeer.close()
        broker.shutdown()
    }

    /// Dispatching to a controller in another process: typed values
    @Test func dispatchingTypedValuesToAControllerInAnotherProcess() async throws {
        let broker = try InProcessBroker()
        let socketPath = broker.socketPath
        let calculatorPeer = try await Peer.connect(to: socketPath, name: "calculator")
        let calculator = try Controller(name: "calculator")
        try calculator.on("sum") { session in try session.payload(decoding: [Int].self).reduce(0, +) }
        try await calculatorPeer.expose(calculator, as: "calculator")
        let app = try await Peer.connect(to: socketPath, name: "app")
        #expect(try await app.dispatch(to: "calculator", "sum", [1, 2, 3, 4], as: Int.self) == [10])
        calculator.shutdown()
        await app.close()
        await calculatorPeer.close()
        broker.shutdown()
    }
}
