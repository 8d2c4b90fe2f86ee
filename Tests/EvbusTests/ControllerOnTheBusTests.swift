import Evbus
import EvbusController
import EvbusIO
import EvbusTestSupport
import Foundation
import Synchronization
import Testing

@Suite struct ControllerOnTheBusTests {
    @Test func aPeerFeedsMatchingEventsIntoAControllerWithBusMetadata() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (peer, sensor) = try await broker.connect("thermostat", "sensor")
        let controller = try Controller(name: "thermostat")
        defer { controller.shutdown() }
        let seen = Collected()
        try controller.on("sensors.kitchen.temp") { s in
            let bus = s.bus!
            #expect(s.controller.loop.inEventLoop)
            #expect(bus.publisher == sensor.connectionID)
            #expect(bus.routingKey == "sensors.kitchen.temp")
            #expect(s.payload(as: [UInt8].self) == bus.payload)
            seen.add(Event(topic: bus.topic, payload: bus.payload))
            // Handlers publish through the peer that fed them.
            // (Each from its own task, so the two replies may come in either order.)
            Task { try await bus.peer.publish("heating.kitchen", bus.text + (bus.text == "15" ? ":on" : ":off")) }
            return nil
        }
        let heating = try await sensor.subscribe("heating.*")
        try await peer.feed(controller, "sensors.#")
        try await sensor.publish("sensors.kitchen.temp", "15")
        try await sensor.publish("sensors.kitchen.temp", "25")
        #expect(try await take(2, from: heating).map(\.text).sorted() == ["15:on", "25:off"])
        #expect(seen.texts == ["15", "25"])
        await peer.close()
        await sensor.close()
    }

    @Test func aFedHandlersReplyAnswersAPeerRequest() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (server, caller) = try await broker.connect("server", "caller")
        let controller = try Controller(name: "fib")
        defer { controller.shutdown() }
        try controller.on("rpc.fib") { s in
            let bus = s.bus!
            Task { try await bus.reply(Array("fib(\(bus.text)) = 832040".utf8)) }
            return nil
        }
        try await server.feed(controller, "rpc.#")
        // A request to the topic exchange reaches plain subscribers (the feed); the reply goes
        // back to the caller's inbox, matched by correlation id, instead of timing out.
        let reply = try await caller.request(to: .exchange("amq.topic", key: "rpc.fib"), "30", timeout: .seconds(20))
        #expect(reply.text == "fib(30) = 832040")
        #expect(reply.publisher == server.connectionID)
        await caller.close()
        await server.close()
    }

    @Test func handlersSeeHeadersAndReplyToAndCanReply() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (server, client) = try await broker.connect("server", "client")
        let controller = try Controller(name: "fib")
        defer { controller.shutdown() }
        try controller.on("rpc.fib") { s in
            let bus = s.bus!
            #expect(bus.headers["unit"] == "steps")
            #expect(bus.replyTo == "replies.client")
            Task { try await bus.reply(Array("832040".utf8)) }
            return nil
        }
        try controller.on("no.reply.to") { s in
            let bus = s.bus!
            Task {
                do {
                    try await bus.reply([1])
                } catch let error as EvbusError {
                    try await bus.peer.publish("replies.client", error.message)
                }
            }
            return nil
        }
        try await server.feed(controller, "rpc.#", "no.#")
        let replies = try await client.subscribe("replies.client")
        try await client.publish("rpc.fib", "30", properties: MessageProperties(
            correlationID: "c-1", replyTo: "replies.client", headers: ["unit": "steps"]))
        let reply = try await take(1, from: replies)[0]
        #expect(reply.text == "832040")
        #expect(reply.properties.correlationID == "c-1")
        try await client.publish("no.reply.to", "x")
        #expect(try await take(1, from: replies)[0].text.contains("has no reply-to"))
        await server.close()
        await client.close()
    }

    @Test func dispatchToAControllerExposedByAnotherPeer() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let (server, client) = try await broker.connect("worker-process", "ui-process")
        let controller = try Controller(name: "worker")
        defer { controller.shutdown() }
        try controller.on("upper") { s in String(decoding: s.payload(as: [UInt8].self)!, as: UTF8.self).uppercased() }
        try controller.on("upper") { s in s.payload(as: [UInt8].self)!.reversed() as [UInt8] }
        try controller.on("fail") { _ in throw Boom() }
        try controller.on("opaque") { _ in Boom() }  // neither bytes, text nor Encodable
        try controller.on("answer") { _ in 42 }
        try await server.expose(controller, as: "worker")

        let results = try await client.dispatch(to: "worker", "upper", Array("abc".utf8))
        #expect(results.map { String(decoding: $0, as: UTF8.self) } == ["ABC", "cba"])

        // Many calls in flight at once are matched by correlation id.
        let many = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for i in 0..<50 {
                group.addTask { (i, String(decoding: try await client.dispatch(to: "worker", "upper", Array("x\(i)".utf8))[0], as: UTF8.self)) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(many.count == 50 && many.allSatisfy { $0.value == "X\($0.key)" })

        await #expect { _ = try await client.dispatch(to: "worker", "fail") } throws: {
            ($0 as? EvbusError)?.code == .remote && "\($0)".contains("Boom")
        }
        await #expect { _ = try await client.dispatch(to: "worker", "opaque") } throws: {
            "\($0)".contains("cannot cross processes")
        }
        #expect(try await client.dispatch(to: "worker", "answer", 0, as: Int.self) == [42])
        await #expect(throws: DecodingError.self) { _ = try await client.dispatch(to: "worker", "answer", 0, as: [String].self) }
        // Nothing exposed under that name: answered at once, not at the timeout.
        await #expect { _ = try await client.dispatch(to: "nobody", "x", timeout: .seconds(20)) } throws: {
            ($0 as? EvbusError)?.code == .noResponder
        }
        await server.close()
        await client.close()
    }
}

struct Boom: Error {}
