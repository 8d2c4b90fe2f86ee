/// Encoding and decoding of the exchange, queue and consumer frames (PROTOCOL.md §6), split from
/// `Frame.swift` so each file stays about one family of frames.

extension Frame {
    func encodeRouting(into body: inout BodyBuilder) {
        switch self {
        case .topologyReply(let requestID, let exchanges, let queues):
            body.u32(requestID)
            body.u32(UInt32(truncatingIfNeeded: exchanges.count))
            for e in exchanges {
                body.string(e.name)
                body.u8(e.kind.rawValue)
                body.u8((e.builtIn ? ExchangeSummary.Flag.builtIn : 0) | (e.durable ? ExchangeSummary.Flag.durable : 0))
                body.u32(e.subscriptions)
                body.u32(UInt32(truncatingIfNeeded: e.bindings.count))
                for b in e.bindings {
                    body.string(b.queue)
                    body.string(b.key)
                }
            }
            body.u32(UInt32(truncatingIfNeeded: queues.count))
            for q in queues {
                body.string(q.name)
                body.u8((q.exclusive ? QueueSummary.Flag.exclusive : 0) | (q.autoDelete ? QueueSummary.Flag.autoDelete : 0)
                    | (q.durable ? QueueSummary.Flag.durable : 0))
                body.u32(q.ready)
                body.u64(q.readyBytes)
                body.u32(q.unacked)
                body.u32(q.consumers)
                body.u64(q.published)
                body.u64(q.delivered)
                body.u64(q.acked)
                body.u32(q.publishRate)
                body.u32(q.deliverRate)
                body.u32(q.ackRate)
                body.u64(q.diskBytes)
            }
        case .declareExchange(let requestID, let name, let kind, let passive, let durable):
            body.u32(requestID)
            body.string(name)
            body.u8(kind.rawValue)
            body.u8((passive ? ExchangeFlag.passive : 0) | (durable ? ExchangeFlag.durable : 0))
        case .deleteExchange(let requestID, let name, let ifUnused):
            body.u32(requestID)
            body.string(name)
            body.u8(ifUnused ? 0x01 : 0)
        case .declareQueue(let requestID, let name, let o, let passive):
            body.u32(requestID)
            body.string(name)
            var flags: UInt8 = 0
            if o.exclusive { flags |= QueueOptions.Flag.exclusive }
            if o.autoDelete { flags |= QueueOptions.Flag.autoDelete }
            if passive { flags |= QueueOptions.Flag.passive }
            if o.deadLetterExchange != nil { flags |= QueueOptions.Flag.deadLetter }
            if o.deadLetterRoutingKey != nil { flags |= QueueOptions.Flag.deadLetterKey }
            if o.durable { flags |= QueueOptions.Flag.durable }
            body.u8(flags)
            body.u8(o.overflow.rawValue)
            body.u64(o.maxLength ?? QueueOptions.unset64)
            body.u64(o.maxBytes ?? QueueOptions.unset64)
            body.u32(o.messageTTL ?? QueueOptions.unset32)
            body.string(o.deadLetterExchange ?? "")
            body.string(o.deadLetterRoutingKey ?? "")
        case .queueOK(let requestID, let info):
            body.u32(requestID)
            body.string(info.name)
            body.u32(info.messageCount)
            body.u32(info.consumerCount)
        case .deleteQueue(let requestID, let name, let ifUnused, let ifEmpty):
            body.u32(requestID)
            body.string(name)
            body.u8((ifUnused ? 0x01 : 0) | (ifEmpty ? 0x02 : 0))
        case .purgeQueue(let requestID, let name):
            body.u32(requestID)
            body.string(name)
        case .bind(let requestID, let queue, let exchange, let key), .unbind(let requestID, let queue, let exchange, let key):
            body.u32(requestID)
            body.string(queue)
            body.string(exchange)
            body.string(key)
        case .publishTo(let flags, let exchange, let key, let properties, let payload):
            body.u8(flags)
            body.string(exchange)
            body.string(key)
            body.bytes.append(contentsOf: properties.encoded())
            body.bytes.append(contentsOf: payload)
        case .consume(let id, let queue, let flags, let prefetch):
            body.u32(id)
            body.string(queue)
            body.u8(flags)
            body.u16(prefetch)
        case .cancel(let id):
            body.u32(id)
        case .message(let id, let tag, let flags, let publisher, let exchange, let key, let properties, let payload):
            body.u32(id)
            body.u64(tag)
            body.u8(flags)
            body.u64(publisher)
            body.string(exchange)
            body.string(key)
            body.bytes.append(contentsOf: properties.encoded())
            body.bytes.append(contentsOf: payload)
        case .ack(let tag, let flags), .nack(let tag, let flags):
            body.u64(tag)
            body.u8(flags)
        case .confirm(let sequence, let flags):
            body.u64(sequence)
            body.u8(flags)
        case .returned(let code, let exchange, let key, let properties, let payload):
            body.u16(code.rawValue)
            body.string(exchange)
            body.string(key)
            body.bytes.append(contentsOf: properties.encoded())
            body.bytes.append(contentsOf: payload)
        case .routed(let reached, let correlationID):
            body.u32(reached)
            body.string(correlationID)
        case .hello, .welcome, .ping, .pong, .close, .error, .ok, .publish, .subscribe, .unsubscribe, .deliver, .sender,
            .stats, .statsReply, .topology, .connections, .connectionsReply:
            preconditionFailure("\(type.name) is encoded by Frame.encoded()")
        }
    }

    static func decodeRouting(type: FrameType, _ r: inout ByteReader) throws(WireError) -> Frame {
        switch type {
        case .topology:
            return .topology(requestID: try r.u32("request id"))
        case .topologyReply:
            let id = try r.u32("request id")
            var exchanges: [ExchangeSummary] = []
            for _ in 0..<(try r.u32("exchange count")) {
                let name = try r.string("exchange name")
                let kind = try exchangeKind(&r)
                let flags = try r.u8("exchange flags")
                let subscriptions = try r.u32("subscription count")
                var bindings: [ExchangeSummary.Binding] = []
                for _ in 0..<(try r.u32("binding count")) {
                    bindings.append(.init(queue: try r.string("queue name"), key: try r.string("binding key")))
                }
                exchanges.append(ExchangeSummary(
                    name: name, kind: kind, bindings: bindings, subscriptions: subscriptions,
                    builtIn: flags & ExchangeSummary.Flag.builtIn != 0, durable: flags & ExchangeSummary.Flag.durable != 0))
            }
            var queues: [QueueSummary] = []
            for _ in 0..<(try r.u32("queue count")) {
                let name = try r.string("queue name")
                let flags = try r.u8("queue flags")
                queues.append(QueueSummary(
                    name: name, exclusive: flags & QueueSummary.Flag.exclusive != 0,
                    autoDelete: flags & QueueSummary.Flag.autoDelete != 0, ready: try r.u32("ready"),
                    readyBytes: try r.u64("ready bytes"), unacked: try r.u32("unacked"), consumers: try r.u32("consumers"),
                    published: try r.u64("published"), delivered: try r.u64("delivered"), acked: try r.u64("acked"),
                    publishRate: try r.u32("publish rate"), deliverRate: try r.u32("deliver rate"), ackRate: try r.u32("ack rate"),
                    durable: flags & QueueSummary.Flag.durable != 0, diskBytes: try r.u64("disk bytes")))
            }
            return .topologyReply(requestID: id, exchanges: exchanges, queues: queues)
        case .declareExchange:
            let id = try r.u32("request id")
            let name = try r.string("exchange name")
            let kind = try exchangeKind(&r)
            let flags = try checkedFlags(&r, reserved: ExchangeFlag.reserved)
            return .declareExchange(
                requestID: id, name: name, kind: kind, passive: flags & ExchangeFlag.passive != 0,
                durable: flags & ExchangeFlag.durable != 0)
        case .deleteExchange:
            let id = try r.u32("request id")
            let name = try r.string("exchange name")
            let flags = try checkedFlags(&r, reserved: 0xFE)
            return .deleteExchange(requestID: id, name: name, ifUnused: flags & 0x01 != 0)
        case .declareQueue:
            let id = try r.u32("request id")
            let name = try r.string("queue name")
            let flags = try checkedFlags(&r, reserved: QueueOptions.Flag.reserved)
            let overflowByte = try r.u8("overflow")
            guard let overflow = OverflowPolicy(rawValue: overflowByte) else {
                throw WireError(.malformedFrame, "unknown overflow policy \(overflowByte)")
            }
            let maxLength = try r.u64("max length")
            let maxBytes = try r.u64("max bytes")
            let ttl = try r.u32("message ttl")
            let dlx = try r.string("dead-letter exchange")
            let dlrk = try r.string("dead-letter routing key")
            let options = QueueOptions(
                exclusive: flags & QueueOptions.Flag.exclusive != 0, autoDelete: flags & QueueOptions.Flag.autoDelete != 0,
                maxLength: maxLength == QueueOptions.unset64 ? nil : maxLength,
                maxBytes: maxBytes == QueueOptions.unset64 ? nil : maxBytes, overflow: overflow,
                messageTTL: ttl == QueueOptions.unset32 ? nil : ttl,
                deadLetterExchange: flags & QueueOptions.Flag.deadLetter != 0 ? dlx : nil,
                deadLetterRoutingKey: flags & QueueOptions.Flag.deadLetterKey != 0 ? dlrk : nil,
                durable: flags & QueueOptions.Flag.durable != 0)
            return .declareQueue(requestID: id, name: name, options: options, passive: flags & QueueOptions.Flag.passive != 0)
        case .queueOK:
            let id = try r.u32("request id")
            let info = QueueInfo(name: try r.string("queue name"), messageCount: try r.u32("message count"), consumerCount: try r.u32("consumer count"))
            return .queueOK(requestID: id, info: info)
        case .deleteQueue:
            let id = try r.u32("request id")
            let name = try r.string("queue name")
            let flags = try checkedFlags(&r, reserved: 0xFC)
            return .deleteQueue(requestID: id, name: name, ifUnused: flags & 0x01 != 0, ifEmpty: flags & 0x02 != 0)
        case .purgeQueue:
            return .purgeQueue(requestID: try r.u32("request id"), name: try r.string("queue name"))
        case .bind, .unbind:
            let id = try r.u32("request id")
            let queue = try r.string("queue name")
            let exchange = try r.string("exchange name")
            let key = try r.string("binding key")
            return type == .bind
                ? .bind(requestID: id, queue: queue, exchange: exchange, key: key)
                : .unbind(requestID: id, queue: queue, exchange: exchange, key: key)
        case .publishTo:
            let flags = try checkedFlags(&r, reserved: PublishFlag.reserved)
            let exchange = try r.string("exchange name")
            let key = try r.string("routing key")
            let (properties, _) = try MessageProperties.read(&r)
            return .publishTo(flags: flags, exchange: exchange, routingKey: key, properties: properties, payload: Array(r.rest()))
        case .consume:
            let id = try r.u32("consumer id")
            let queue = try r.string("queue name")
            let flags = try checkedFlags(&r, reserved: ConsumeFlag.reserved)
            return .consume(consumerID: id, queue: queue, flags: flags, prefetch: try r.u16("prefetch"))
        case .cancel:
            return .cancel(consumerID: try r.u32("consumer id"))
        case .message:
            let id = try r.u32("consumer id")
            let tag = try r.u64("delivery tag")
            let flags = try r.u8("flags")
            let publisher = try r.u64("publisher")
            let exchange = try r.string("exchange name")
            let key = try r.string("routing key")
            let (properties, _) = try MessageProperties.read(&r)
            return .message(
                consumerID: id, deliveryTag: tag, flags: flags, publisher: publisher, exchange: exchange, routingKey: key,
                properties: properties, payload: Array(r.rest()))
        case .ack:
            return .ack(deliveryTag: try r.u64("delivery tag"), flags: try checkedFlags(&r, reserved: 0xFE))
        case .nack:
            return .nack(deliveryTag: try r.u64("delivery tag"), flags: try checkedFlags(&r, reserved: 0xFC))
        case .confirm:
            return .confirm(sequence: try r.u64("sequence"), flags: try checkedFlags(&r, reserved: 0xFC))
        case .returned:
            let code = ErrorCode(rawValue: try r.u16("code"))
            let exchange = try r.string("exchange name")
            let key = try r.string("routing key")
            let (properties, _) = try MessageProperties.read(&r)
            return .returned(code: code, exchange: exchange, routingKey: key, properties: properties, payload: Array(r.rest()))
        case .routed:
            return .routed(reached: try r.u32("reached"), correlationID: try r.string("correlation id"))
        case .hello, .welcome, .ping, .pong, .close, .error, .ok, .publish, .subscribe, .unsubscribe, .deliver, .sender,
            .stats, .statsReply, .connections, .connectionsReply:
            preconditionFailure("\(type.name) is decoded by Frame.decode")
        }
    }

    private static func exchangeKind(_ r: inout ByteReader) throws(WireError) -> ExchangeKind {
        let raw = try r.u8("exchange kind")
        guard let kind = ExchangeKind(rawValue: raw) else {
            throw WireError(.malformedFrame, "unknown exchange kind \(raw) (1 fanout, 2 direct, 3 topic)")
        }
        return kind
    }

    private static func checkedFlags(_ r: inout ByteReader, reserved: UInt8) throws(WireError) -> UInt8 {
        let flags = try r.u8("flags")
        guard flags & reserved == 0 else {
            throw WireError(.malformedFrame, "reserved flag bits set (0x\(String(flags, radix: 16)))")
        }
        return flags
    }
}
