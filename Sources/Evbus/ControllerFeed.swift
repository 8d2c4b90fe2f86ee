public import EvbusController

/// A bus message as a controller handler sees it (`session.bus`): where it came from, its
/// properties, and the peer it arrived on, so the handler can reply or publish follow-ups.
public struct BusMessage: Sendable {
    /// The topic it was published to (also the dispatched event's name).
    public var topic: String
    public var payload: [UInt8]
    /// The publishing connection's id (the sender).
    public var publisher: UInt64
    /// The routing key; for topic pub/sub it is the topic.
    public var routingKey: String
    /// Content type, correlation id, reply-to, message id, timestamp and headers.
    public var properties: MessageProperties
    /// The peer that received it: publish replies and follow-ups through it.
    public var peer: Peer

    public var headers: [String: String] { properties.headers }
    public var replyTo: String? { properties.replyTo }

    /// The payload as UTF-8 text.
    public var text: String { String(decoding: payload, as: UTF8.self) }

    /// Publishes `payload` to this message's reply-to with its correlation id: to a caller's inbox
    /// (`amq.inbox.N`, what `Peer.request` sets) through the default exchange, so it answers
    /// `request(...)`; to any other reply-to as a topic.
    /// - Throws: `invalidArgument` if the message has no reply-to.
    public func reply(_ payload: [UInt8], headers: [String: String] = [:]) async throws {
        guard let replyTo = properties.replyTo else {
            throw EvbusError(.invalidArgument, "the message on '\(topic)' has no reply-to; there is nowhere to reply")
        }
        let reply = MessageProperties(correlationID: properties.correlationID, headers: headers)
        if replyTo.hasPrefix(Inbox.prefix) {
            // A caller's inbox (`Peer.request`) is reached through the default exchange, not as a topic.
            try await peer.publish(to: "", key: replyTo, payload, properties: reply)
        } else {
            try await peer.publish(replyTo, payload, properties: reply)
        }
    }
}

extension Session {
    static let busKey = "evbus.message"

    /// The bus message this event came from, when a peer fed it (`Peer.feed`).
    public var bus: BusMessage? { context[Self.busKey] as? BusMessage }
}

extension Peer {
    /// Feeds every event matching `patterns` into `controller`: each becomes a dispatch named by its
    /// topic, with the payload (`[UInt8]`) as the session's payload and the bus metadata in
    /// `session.bus`. Handlers run on the controller's thread, in arrival order.
    ///
    /// ```swift
    /// controller.on("sensors.kitchen.temp") { s in
    ///     let reading = s.bus!.text
    ///     ...
    /// }
    /// try await peer.feed(controller, "sensors.#")
    /// ```
    /// - Returns: the subscription; cancel it to stop feeding.
    @discardableResult
    public func feed(_ controller: Controller, _ patterns: String...) async throws -> Subscription {
        try await feed(controller, patterns)
    }

    @discardableResult
    public func feed(_ controller: Controller, _ patterns: [String]) async throws -> Subscription {
        try await subscribe(patterns, sink: .handler { [self] event in
            let message = BusMessage(
                topic: event.topic, payload: event.payload, publisher: event.publisher, routingKey: event.topic,
                properties: event.properties, peer: self)
            controller.dispatch(event.topic, event.payload, context: [Session.busKey: message])
        }, queue: nil)
    }
}
