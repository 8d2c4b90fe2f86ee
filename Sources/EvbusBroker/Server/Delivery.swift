import EvbusIO
import EvbusWire

/// The hot path: one PUBLISH in, one DELIVER per matching subscription out, and the slow-consumer policy.
extension BrokerServer {
    func publish(from publisher: BrokerConnection, body: UnsafeRawBufferPointer) throws(WireError) {
        let view = try PublishView(body: body)
        let targets: [SubscriptionTarget]
        do {
            targets = try router.route(view.topic)
        } catch {
            publisher.refuse(error, requestID: 0)
            return
        }
        stats.published &+= 1
        if targets.isEmpty {
            stats.unroutable &+= 1
            return
        }
        let size = DeliverEncoder.size(
            topicCount: view.topic.count, propertiesCount: view.properties.count, payloadCount: view.payload.count)
        for target in targets {
            guard let receiver = connections[Int(target.connection)], receiver.phase == .open else { continue }
            let channel = receiver.channel
            if config.slowConsumerPolicy == .drop && !channel.isWritable {
                stats.dropped &+= 1
                continue
            }
            DeliverEncoder.write(
                into: channel.reserve(size), subscriptionID: target.subscription, publisher: publisher.id,
                topic: view.topic, properties: view.properties, payload: view.payload)
            channel.commit(size)
            stats.delivered &+= 1
            if !channel.isWritable { overHighWatermark(receiver, publisher: publisher) }
        }
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
            if receiver.blockedPublishers.contains(where: { $0.slot == publisher.slot && $0.id == publisher.id }) { return }
            receiver.blockedPublishers.append((publisher.slot, publisher.id))
            publisher.blockedBy += 1
            if publisher.blockedBy == 1 {
                stats.backpressurePauses &+= 1
                publisher.channel.pauseReading()
            }
        }
    }

    /// `receiver` drained below the low watermark, or closed: let its publishers go on.
    func releasePublishers(blockedOn receiver: BrokerConnection) {
        let blocked = receiver.blockedPublishers
        receiver.blockedPublishers.removeAll()
        for (slot, id) in blocked {
            guard let publisher = connections[Int(slot)], publisher.id == id else { continue }
            publisher.blockedBy -= 1
            if publisher.blockedBy == 0 { publisher.channel.resumeReading() }
        }
    }
}
