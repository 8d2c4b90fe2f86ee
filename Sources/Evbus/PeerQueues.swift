public import EvbusWire
import EvbusIO
import Synchronization

/// Exchanges, queues, bindings and consumers (docs/ROUTING.md): the AMQP 0-9-1 model on evbus.
extension Peer {
    // MARK: Declaring

    /// Creates an exchange, or checks that one of that name, kind and durability exists (declaring
    /// is idempotent). A `durable` exchange survives a broker restart (docs/DURABILITY.md).
    /// - Throws: `refused` with `precondition-failed` if it exists with another kind or durability,
    ///   `invalid-name`, `access-refused` for `amq.` names, `storage-failed` for a durable one while
    ///   the broker cannot write its data directory; with `passive`, `unknown-exchange` if it does
    ///   not exist.
    public func declareExchange(_ name: String, kind: ExchangeKind, passive: Bool = false, durable: Bool = false) async throws {
        _ = try await call { .declareExchange(requestID: $0, name: name, kind: kind, passive: passive, durable: durable) }
    }

    /// Deletes an exchange and its bindings; `ifUnused` refuses while queues are bound to it.
    public func deleteExchange(_ name: String, ifUnused: Bool = false) async throws {
        _ = try await call { .deleteExchange(requestID: $0, name: name, ifUnused: ifUnused) }
    }

    /// Creates a queue, or checks that one with that name and the same options exists. An empty
    /// name asks the broker to make one up (returned in `QueueInfo.name`).
    public func declareQueue(_ name: String = "", _ options: QueueOptions = QueueOptions(), passive: Bool = false) async throws -> QueueInfo {
        let reply = try await call { .declareQueue(requestID: $0, name: name, options: options, passive: passive) }
        return try Self.queueInfo(reply)
    }

    /// Deletes a queue with its messages; its consumers elsewhere are cancelled. Returns how many
    /// ready messages it held.
    @discardableResult
    public func deleteQueue(_ name: String, ifUnused: Bool = false, ifEmpty: Bool = false) async throws -> Int {
        let reply = try await call { .deleteQueue(requestID: $0, name: name, ifUnused: ifUnused, ifEmpty: ifEmpty) }
        return Int(try Self.queueInfo(reply).messageCount)
    }

    /// Removes every ready message (not the unacknowledged ones); returns how many.
    @discardableResult
    public func purgeQueue(_ name: String) async throws -> Int {
        let reply = try await call { .purgeQueue(requestID: $0, name: name) }
        return Int(try Self.queueInfo(reply).messageCount)
    }

    /// Routes messages `exchange` receives with a matching `key` into `queue` (fanout ignores the key;
    /// topic exchanges take a pattern). Binding twice is harmless.
    public func bind(queue: String, exchange: String, key: String = "") async throws {
        _ = try await call { .bind(requestID: $0, queue: queue, exchange: exchange, key: key) }
    }

    /// Removes a binding; removing one that does not exist is harmless.
    public func unbind(queue: String, exchange: String, key: String = "") async throws {
        _ = try await call { .unbind(requestID: $0, queue: queue, exchange: exchange, key: key) }
    }

    /// The broker's open connections (CONNECTIONS, PROTOCOL.md §5.5): each one's name, uid, pid,
    /// subscriptions, consumers, bytes queued to it and rates. Under access rules, only those of
    /// this peer's own uid.
    public func connections() async throws -> [ConnectionSummary] {
        let reply = try await call { .connections(requestID: $0) }
        guard case .connectionsReply(_, let list) = reply else {
            throw EvbusError(.protocolViolation, "expected CONNECTIONS_REPLY, got \(reply.type.name)")
        }
        return list
    }

    /// Every exchange (kind, bindings) and queue (depth, unacked, consumers, counters and rates).
    public func topology() async throws -> (exchanges: [ExchangeSummary], queues: [QueueSummary]) {
        let reply = try await call { .topology(requestID: $0) }
        guard case .topologyReply(_, let exchanges, let queues) = reply else {
            throw EvbusError(.protocolViolation, "expected TOPOLOGY_REPLY, got \(reply.type.name)")
        }
        return (exchanges, queues)
    }

    // MARK: Publishing to exchanges

    /// Publishes to an exchange with a routing key. `""` is the default exchange: the key names the queue.
    /// - Parameters:
    ///   - mandatory: if it reaches no queue, the broker returns it (`Options.onReturn`).
    ///   - confirm: the broker confirms it once routed and queued (for a persistent message in a
    ///     durable queue: once it is on disk); `waitForConfirms()` waits for that.
    ///   - persistent: marks it persistent (`MessageProperties.persistent`): durable queues keep it
    ///     across a broker restart.
    /// - Throws: `invalidArgument` for an over-long name or key or an oversized frame (nothing sent).
    ///   Refusals by the broker (unknown exchange, full queue) arrive as nacks with `confirm`, or
    ///   through `Options.onAsyncError` without.
    public func publish(
        to exchange: String, key: String, _ payload: [UInt8], properties: MessageProperties = .none,
        mandatory: Bool = false, confirm: Bool = false, persistent: Bool = false
    ) async throws {
        // Properties that are only the persistent flag (or nothing) are one byte, on the stack: the
        // plain path allocates nothing.
        var none: UInt8 = persistent ? MessageProperties.Flag.persistent : 0
        let block: [UInt8]?
        if properties.isEmpty {
            block = nil
        } else if persistent && !properties.persistent {
            var marked = properties
            marked.persistent = true
            block = try Self.encoded(marked)
        } else {
            block = try Self.encoded(properties)
        }
        let flags = (mandatory ? PublishFlag.mandatory : 0) | (confirm ? PublishFlag.confirm : 0)
        var exchange = exchange
        var key = key
        let mustWait = try exchange.withUTF8 { e in
            try key.withUTF8 { k in
                try payload.withUnsafeBytes { p in
                    try withUnsafeBytes(of: &none) { noneBlock in
                        if let block {
                            try block.withUnsafeBytes { try enqueuePublishTo(flags, UnsafeRawBufferPointer(e), UnsafeRawBufferPointer(k), $0, p) }
                        } else {
                            try enqueuePublishTo(flags, UnsafeRawBufferPointer(e), UnsafeRawBufferPointer(k), noneBlock, p)
                        }
                    }
                }
            }
        }
        if mustWait { try await outbox.waitForRoom() }
    }

    /// Publishes UTF-8 text to an exchange.
    public func publish(
        to exchange: String, key: String, _ text: String, properties: MessageProperties = .none,
        mandatory: Bool = false, confirm: Bool = false, persistent: Bool = false
    ) async throws {
        try await publish(
            to: exchange, key: key, Array(text.utf8), properties: properties, mandatory: mandatory, confirm: confirm,
            persistent: persistent)
    }

    func enqueuePublishTo(
        _ flags: UInt8, _ exchange: UnsafeRawBufferPointer, _ key: UnsafeRawBufferPointer,
        _ properties: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer
    ) throws -> Bool {
        guard exchange.count <= WireFormat.maxTopicBytes, key.count <= WireFormat.maxTopicBytes else {
            throw EvbusError(.invalidArgument, "exchange names and routing keys are at most \(WireFormat.maxTopicBytes) bytes")
        }
        let size = PublishToEncoder.size(
            exchangeCount: exchange.count, keyCount: key.count, propertiesCount: properties.count, payloadCount: payload.count)
        guard size - 4 <= maxFrameBytes else {
            throw EvbusError(.invalidArgument, wireCode: .frameTooLarge,
                "a \(payload.count)-byte payload makes a \(size - 4)-byte frame; the broker's limit is \(maxFrameBytes)")
        }
        return try admitted(outbox.append(size: size, confirm: flags & PublishFlag.confirm != 0) {
            PublishToEncoder.write(into: $0, flags: flags, exchange: exchange, routingKey: key, properties: properties, payload: payload)
        })
    }

    /// Waits until the broker has answered every confirmed publish made so far.
    /// - Throws: `nacked` if it refused any of them (each is reported once), `timeout` (at the
    ///   deadline, whatever the broker does), `connectionLost`, or `CancellationError` at once when
    ///   the calling task is cancelled.
    public func waitForConfirms(timeout: Duration = .seconds(30)) async throws {
        try Task.checkCancellation()
        let through = outbox.confirmSequence
        let number = nextWaiter.add(1, ordering: .relaxed).newValue
        let core = self.core, loop = self.loop
        let stop: @Sendable () -> Void = { try? loop.execute { core.value.stopWaitingForConfirms(number, CancellationError()) } }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                Self.onLoop(loop, else: c) { core.value.waitForConfirms(through: through, number: number, timeout: timeout, c) }
                // A cancellation that came before the wait was registered found nothing to stop:
                // checked once it is queued, a stop always lands after it.
                if Task.isCancelled { stop() }
            }
        } onCancel: {
            stop()
        }
    }

    // MARK: Consuming

    /// How a consumer's deliveries are acknowledged.
    public enum AckMode: Sendable {
        /// Counted as acknowledged when sent: fastest; lost if this peer dies before handling them.
        case auto
        /// Each must be acknowledged (`Delivery.ack()`); unacknowledged ones are redelivered if this peer goes.
        case manual
    }

    /// Consumes from a queue; iterate the result. With `prefetch` > 0 the broker sends at most that
    /// many unacknowledged deliveries at once (1 = fair dispatch among competing consumers).
    public func consume(_ queue: String, ack: AckMode = .manual, prefetch: Int = 0) async throws -> Consumer {
        let core = self.core
        let loop = self.loop
        let buffer = DeliveryBuffer<Delivery>(capacity: subscriptionBuffer) {
            try? loop.execute { core.value.queueHasRoom() }
        }
        return try await consume(queue, ack: ack, prefetch: prefetch, sink: .deliveries(buffer), buffer: buffer)
    }

    /// Consumes with a handler called on the peer's event loop for each delivery, in order.
    public func consume(
        _ queue: String, ack: AckMode = .manual, prefetch: Int = 0, handler: @escaping @Sendable (Delivery) -> Void
    ) async throws -> Consumer {
        try await consume(queue, ack: ack, prefetch: prefetch, sink: .deliveryHandler(handler), buffer: nil)
    }

    /// Consumes with a zero-copy handler (no allocation per delivery); acknowledge with `ack(_:)`.
    public func consumeViews(
        _ queue: String, ack: AckMode = .manual, prefetch: Int = 0, handler: @escaping @Sendable (DeliveryView) -> Void
    ) async throws -> Consumer {
        try await consume(queue, ack: ack, prefetch: prefetch, sink: .deliveryView(handler), buffer: nil)
    }

    private func consume(
        _ queue: String, ack: AckMode, prefetch: Int, sink: Sink, buffer: DeliveryBuffer<Delivery>?
    ) async throws -> Consumer {
        guard (0...Int(UInt16.max)).contains(prefetch) else {
            throw EvbusError(.invalidArgument, "prefetch must be between 0 (no limit) and 65535, got \(prefetch)")
        }
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let frame = Frame.consume(
            consumerID: id, queue: queue, flags: ack == .manual ? ConsumeFlag.manualAck : 0, prefetch: UInt16(prefetch))
        try await withConnection(asking: "CONSUME") { $0.consume(frame, id: id, sink: sink, $1) }
        return Consumer(queue: queue, id: id, buffer: buffer, peer: self)
    }

    /// Stops a consumer; its unacknowledged deliveries go back to the queue.
    public func cancel(_ consumer: Consumer) async throws {
        let id = consumer.id
        try await withConnection(asking: "CANCEL", evenIfCancelled: true) { $0.cancelConsumer(id, $1) }
    }

    /// Acknowledges a delivery by tag (with `multiple`, every outstanding one up to it).
    public func ack(_ deliveryTag: UInt64, multiple: Bool = false) throws {
        try acker.send(.ack, tag: deliveryTag, flags: multiple ? AckFlag.multiple : 0)
    }

    /// Refuses a delivery by tag: requeued, or dead-lettered/discarded when `requeue` is false.
    public func nack(_ deliveryTag: UInt64, multiple: Bool = false, requeue: Bool = true) throws {
        try acker.send(.nack, tag: deliveryTag, flags: (multiple ? AckFlag.multiple : 0) | (requeue ? AckFlag.requeue : 0))
    }

    // MARK: Plumbing

    /// Sends a request and waits for its reply frame (OK, QUEUE_OK, ...); an ERROR becomes `refused`.
    func call(_ make: (UInt32) -> Frame) async throws -> Frame {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let frame = make(id)
        return try await withConnection(asking: "\(frame.type.name)") { $0.request(frame, id: id, $1) }
    }

    static func queueInfo(_ reply: Frame) throws -> QueueInfo {
        guard case .queueOK(_, let info) = reply else {
            throw EvbusError(.protocolViolation, "expected QUEUE_OK, got \(reply.type.name)")
        }
        return info
    }
}
