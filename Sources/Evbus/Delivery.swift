public import EvbusWire

/// One message delivered from a queue to a consumer.
///
/// With manual acknowledgement, call `ack()` once it is handled (or `nack`/`reject`); until then
/// the broker counts it against the consumer's prefetch window and redelivers it if this peer
/// goes away. Auto-ack deliveries have `deliveryTag` 0 and nothing to acknowledge.
public struct Delivery: Sendable {
    public var exchange: String
    public var routingKey: String
    public var payload: [UInt8]
    public var properties: MessageProperties
    /// Identifies it for ACK/NACK on this peer (unique across reconnects); 0 for auto-ack.
    public var deliveryTag: UInt64
    /// It was delivered before (to this or another consumer) and not acknowledged.
    public var redelivered: Bool
    /// The broker's id for the publishing connection.
    public var publisher: UInt64
    public var consumerID: UInt32
    let acker: Acker?
    /// Who published it, as the kernel told the broker; nil if the broker did not say (the
    /// message was published before the broker restarted, or by a connection long gone).
    public var sender: Sender? = nil

    /// The payload as UTF-8 text (invalid bytes become U+FFFD).
    public var text: String { String(decoding: payload, as: UTF8.self) }

    /// Acknowledges it: the broker forgets it. Throws if this peer is closed or the delivery was auto-acked.
    public func ack() throws {
        try settle(.ack, 0)
    }

    /// Refuses it: back to the queue (`requeue`, the default) or to the dead-letter exchange / discarded.
    public func nack(requeue: Bool = true) throws {
        try settle(.nack, requeue ? AckFlag.requeue : 0)
    }

    /// AMQP's reject: refuses this one message; by default it is dead-lettered or discarded.
    public func reject(requeue: Bool = false) throws {
        try nack(requeue: requeue)
    }

    private func settle(_ type: FrameType, _ flags: UInt8) throws {
        guard let acker, deliveryTag != 0 else {
            throw EvbusError(.invalidArgument, "this delivery was auto-acknowledged; there is nothing to \(type == .ack ? "ack" : "nack")")
        }
        try acker.send(type, tag: deliveryTag, flags: flags)
    }
}

/// A delivery seen in place, for handlers that must not allocate per message. Its buffers are valid
/// only during the handler call. Acknowledge with `peer.ack(view.deliveryTag)`.
public struct DeliveryView {
    public let exchangeBytes: UnsafeRawBufferPointer
    public let routingKeyBytes: UnsafeRawBufferPointer
    public let payload: UnsafeRawBufferPointer
    public let propertiesBytes: UnsafeRawBufferPointer
    public let deliveryTag: UInt64
    public let redelivered: Bool
    public let publisher: UInt64
    public let consumerID: UInt32
    /// Who published it, as the kernel told the broker; nil if the broker did not say.
    public let sender: Sender?

    public var routingKey: String { String(decoding: routingKeyBytes, as: UTF8.self) }
    public var properties: MessageProperties { MessageProperties.decode(block: propertiesBytes) }
}

/// A mandatory publish that reached no queue and no subscription, sent back by the broker.
public struct ReturnedMessage: Sendable, Hashable {
    /// Why (`unroutable`).
    public var code: ErrorCode
    public var exchange: String
    public var routingKey: String
    public var properties: MessageProperties
    public var payload: [UInt8]
}

/// Sends ACK/NACK frames through the peer's outbox (so they keep their order with publishes).
final class Acker: Sendable {
    let outbox: Outbox
    let scheduleDrain: @Sendable () -> Void

    init(outbox: Outbox, scheduleDrain: @escaping @Sendable () -> Void) {
        self.outbox = outbox
        self.scheduleDrain = scheduleDrain
    }

    /// An ack for a delivery made before the peer reconnected is dropped: the broker put that
    /// message back in its queue when the old connection ended.
    func send(_ type: FrameType, tag: UInt64, flags: UInt8) throws {
        switch outbox.appendAck(type, tag: tag, flags: flags) {
        case .closed(let error):
            throw error
        case .queued(let drain, _):
            if drain { scheduleDrain() }
        case nil:
            break
        }
    }
}
