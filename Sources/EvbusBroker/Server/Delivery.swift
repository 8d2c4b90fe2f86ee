import EvbusIO
import EvbusWire

/// The hot path: a PUBLISH or PUBLISH_TO in, one DELIVER per matching subscription and one queued
/// message per matching queue out, and the slow-consumer policy for subscriptions.
extension BrokerServer {
    /// PUBLISH: a topic on the default topic exchange.
    func publish(from publisher: BrokerConnection, body: UnsafeRawBufferPointer) throws(WireError) {
        let view = try PublishView(body: body)
        let targets: [RouteTarget]
        do {
            targets = try topology.defaultTopic.topics.route(view.topic)
        } catch {
            publisher.refuse(error, requestID: 0)
            return
        }
        stats.published &+= 1
        if targets.isEmpty {
            stats.unroutable &+= 1
            return
        }
        let exchange = defaultTopicName
        _ = exchange.withUnsafeBytes { name in
            deliver(to: targets, from: publisher, publisherID: publisher.id, exchange: name, routingKey: view.topic,
                    properties: view.properties, payload: view.payload)
        }
    }

    /// What became of one routed message.
    struct Outcome {
        /// The first queue that refused it (reject-publish), if any.
        var rejectedBy: MessageQueue?
    }

    /// Hands one message to every target: subscriptions get a DELIVER written at once, queues get a
    /// stored copy (one allocation shared by all of them) and dispatch to their consumers.
    /// `publisher` is nil for dead letters (nobody to slow down).
    @inline(__always)
    func deliver(
        to targets: [RouteTarget], from publisher: BrokerConnection?, publisherID: UInt64,
        exchange: UnsafeRawBufferPointer, routingKey: UnsafeRawBufferPointer, properties: UnsafeRawBufferPointer,
        payload: UnsafeRawBufferPointer, isRequest: Bool = false
    ) -> Outcome {
        var outcome = Outcome()
        var stored: StoredMessage?
        let deliverSize = DeliverEncoder.size(
            topicCount: routingKey.count, propertiesCount: properties.count, payloadCount: payload.count)
        for target in targets {
            if target.isQueue {
                guard let queue = topology.queues[Int(target.queueSlot)] else { continue }
                if stored == nil {
                    stored = StoredMessage(
                        publisher: publisherID, exchange: exchange, routingKey: routingKey, properties: properties,
                        payload: payload, expiresAt: 0)
                    stored!.isRequest = isRequest
                }
                var message = stored!
                message.expiresAt = expiry(for: queue, properties: properties)
                if !enqueue(message, into: queue) && outcome.rejectedBy == nil { outcome.rejectedBy = queue }
                if queue.readyMemory > config.highWatermarkBytes, let publisher { queueOverHighWatermark(queue, publisher: publisher) }
                continue
            }
            guard let receiver = connections[Int(target.connection)], receiver.phase == .open else { continue }
            let channel = receiver.channel
            if config.slowConsumerPolicy == .drop && !channel.isWritable {
                stats.dropped &+= 1
                continue
            }
            DeliverEncoder.write(
                into: channel.reserve(deliverSize), subscriptionID: target.subscription, publisher: publisherID,
                topic: routingKey, properties: properties, payload: payload)
            channel.commit(deliverSize)
            stats.delivered &+= 1
            if !channel.isWritable, let publisher { overHighWatermark(receiver, publisher: publisher) }
        }
        return outcome
    }

    /// `receiver`'s queue just passed the high watermark (or was already over it).
    private func overHighWatermark(_ receiver: BrokerConnection, publisher: BrokerConnection) {
        switch config.slowConsumerPolicy {
        case .drop:
            break  // later deliveries are dropped until it drains
        case .disconnect:
            stats.slowConsumerDisconnects &+= 1
            log.warning("\(receiver.label): disconnected as a slow consumer (\(receiver.channel.bufferedBytes) bytes queued)")
            receiver.send(.error(code: .slowConsumer, requestID: 0,
                message: "more than \(config.highWatermarkBytes) bytes queued for this connection; it is not reading fast enough"))
            receiver.phase = .closing
            receiver.channel.closeAfterFlush(graceNanos: 500_000_000)
        case .backpressure:
            pause(publisher, into: &receiver.blockedPublishers)
        }
    }

    /// A queue holds more than the high watermark of ready messages (its consumers are slower than
    /// its publishers, or it has none): stop reading from this publisher until it drains, so memory
    /// stays bounded. A publisher that is also a consumer is never paused: it could not send the
    /// acks that would drain the queue (RabbitMQ's advice is separate connections; this is safe by default).
    private func queueOverHighWatermark(_ queue: MessageQueue, publisher: BrokerConnection) {
        guard publisher.consumers.isEmpty, publisher.phase == .open else { return }
        pause(publisher, into: &queue.blockedPublishers)
    }

    /// Pauses reading from `publisher` until everything in `list` that holds it releases it.
    private func pause(_ publisher: BrokerConnection, into list: inout [(slot: UInt32, id: UInt64)]) {
        if list.contains(where: { $0.slot == publisher.slot && $0.id == publisher.id }) { return }
        list.append((publisher.slot, publisher.id))
        publisher.blockedBy += 1
        if publisher.blockedBy == 1 {
            stats.backpressurePauses &+= 1
            publisher.channel.pauseReading()
        }
    }

    /// `receiver` drained below the low watermark, or closed: let its publishers go on.
    func releasePublishers(blockedOn receiver: BrokerConnection) {
        let blocked = receiver.blockedPublishers
        receiver.blockedPublishers.removeAll()
        resume(blocked)
    }

    /// A queue drained below the low watermark, or went away: let its publishers go on.
    func releasePublishers(blockedOn queue: MessageQueue) {
        let blocked = queue.blockedPublishers
        queue.blockedPublishers.removeAll()
        resume(blocked)
    }

    private func resume(_ blocked: [(slot: UInt32, id: UInt64)]) {
        for (slot, id) in blocked {
            guard let publisher = connections[Int(slot)], publisher.id == id else { continue }
            publisher.blockedBy -= 1
            if publisher.blockedBy == 0 { publisher.channel.resumeReading() }
        }
    }
}
