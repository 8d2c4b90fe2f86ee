import EvbusWire
import Testing

/// One of every frame, with awkward values (empty strings, non-ASCII, zero and max integers).
let sampleFrames: [Frame] = [
    .hello(clientName: "sensor-daemon"),
    .hello(clientName: ""),
    .welcome(version: 1, maxFrame: 1 << 20, connectionID: 42, brokerName: "evbus"),
    .ping(token: 0),
    .pong(token: .max),
    .close(code: 0, reason: "bye"),
    .error(code: .invalidTopic, requestID: 7, message: "invalid topic 'a..b'"),
    .ok(requestID: 9),
    .publish(topic: "sensors.kitchen.temp", payload: Array("21.5".utf8)),
    .publish(topic: "a", payload: []),
    .publish(topic: "température.cuisine", payload: [0, 255, 10, 13]),
    .publish(topic: "rpc.fib", properties: MessageProperties(
        contentType: "text/plain", correlationID: "42", replyTo: "evbus.reply.7", messageID: "m-1",
        timestamp: 1_700_000_000_000, headers: ["b": "2", "a": "1", "ünï": "cödé"]), payload: Array("30".utf8)),
    .publish(topic: "p", properties: MessageProperties(replyTo: "r"), payload: []),
    .subscribe(subscriptionID: 1, pattern: "sensors.*.temp"),
    .unsubscribe(subscriptionID: 1),
    .deliver(subscriptionID: 3, publisher: 12, topic: "logs.app.error", payload: Array(repeating: 0xAB, count: 300)),
    .deliver(subscriptionID: 4, publisher: 1, topic: "x", properties: MessageProperties(headers: ["k": ""]), payload: [1]),
    .stats(requestID: 4),
    .statsReply(requestID: 4, entries: [StatEntry("published", 10), StatEntry("delivered", 20)]),
    .statsReply(requestID: 5, entries: []),
    .topology(requestID: 6),
    .topologyReply(
        requestID: 6,
        exchanges: [ExchangeSummary(name: "logs", kind: .fanout, bindings: [.init(queue: "q", key: "")], subscriptions: 0)],
        queues: [QueueSummary(
            name: "q", exclusive: true, autoDelete: false, ready: 3, readyBytes: 30, unacked: 1, consumers: 2, published: 9,
            delivered: 6, acked: 5, publishRate: 100, deliverRate: 90, ackRate: 80)]),
    .declareExchange(requestID: 7, name: "logs", kind: .topic, passive: true),
    .deleteExchange(requestID: 8, name: "logs", ifUnused: true),
    .declareQueue(requestID: 9, name: "", options: QueueOptions(
        exclusive: true, autoDelete: true, maxLength: 10, maxBytes: 0, overflow: .rejectPublish, messageTTL: 5,
        deadLetterExchange: "", deadLetterRoutingKey: "dead")),
    .declareQueue(requestID: 10, name: "plain"),
    .queueOK(requestID: 9, info: QueueInfo(name: "amq.gen-1-1", messageCount: 4, consumerCount: 1)),
    .deleteQueue(requestID: 11, name: "q", ifUnused: true, ifEmpty: true),
    .purgeQueue(requestID: 12, name: "q"),
    .bind(requestID: 13, queue: "q", exchange: "logs", key: "a.#"),
    .unbind(requestID: 14, queue: "q", exchange: "logs", key: ""),
    .publishTo(flags: 3, exchange: "", routingKey: "q", properties: MessageProperties(expiration: 500), payload: [1, 2]),
    .consume(consumerID: 15, queue: "q", flags: 1, prefetch: 100),
    .cancel(consumerID: 15),
    .message(consumerID: 15, deliveryTag: 99, flags: 1, publisher: 3, exchange: "logs", routingKey: "k", payload: [7]),
    .ack(deliveryTag: 99, flags: 1),
    .nack(deliveryTag: 98, flags: 3),
    .confirm(sequence: 12, flags: 2),
    .routed(reached: 3, correlationID: "7-1"),
    .returned(code: .unroutable, exchange: "logs", routingKey: "k", properties: MessageProperties(messageID: "m"), payload: []),
]

/// Splits a byte stream into owned frames the way a reader does; nil entries mean "need more".
func decodeAll(_ bytes: [UInt8], maxFrame: Int = WireFormat.maxMaxFrame) throws -> (frames: [Frame], leftover: Int) {
    var frames: [Frame] = []
    var offset = 0
    try bytes.withUnsafeBytes { raw in
        while true {
            let rest = UnsafeRawBufferPointer(rebasing: raw[offset...])
            guard case .frame(let f, let consumed) = try FrameSplitter.next(rest, maxFrame: maxFrame) else { return }
            frames.append(try Frame.decode(type: f.type, body: f.body))
            offset += consumed
        }
    }
    return (frames, bytes.count - offset)
}

@Suite struct FrameCodecTests {
    @Test(arguments: sampleFrames)
    func roundTrip(_ frame: Frame) throws {
        let (frames, leftover) = try decodeAll(frame.encoded())
        #expect(frames == [frame])
        #expect(leftover == 0)
    }

    @Test func headerLayoutIsLengthThenType() {
        let bytes = Frame.ping(token: 0x0102030405060708).encoded()
        // length 9 (type + 8), little-endian; type 0x03; token little-endian.
        #expect(bytes == [9, 0, 0, 0, 0x03, 8, 7, 6, 5, 4, 3, 2, 1])
    }

    @Test func publishLayoutMatchesProtocolDoc() {
        let bytes = Frame.publish(topic: "a.b", payload: [0x68, 0x69]).encoded()
        #expect(bytes == [9, 0, 0, 0, 0x10, 3, 0, 0x61, 0x2E, 0x62, 0x00, 0x68, 0x69])
        // Properties: flags 0x04|0x02 (reply-to, correlation id), then correlation id, then reply-to.
        let withProps = Frame.publish(topic: "a", properties: MessageProperties(correlationID: "c", replyTo: "r"), payload: []).encoded()
        #expect(withProps == [11, 0, 0, 0, 0x10, 1, 0, 0x61, 0x06, 1, 0, 0x63, 1, 0, 0x72])
    }

    @Test func dripFeedingOneByteAtATimeYieldsEveryFrame() throws {
        let channel = sampleFrames.flatMap { $0.encoded() }
        var received: [UInt8] = []
        var decoded: [Frame] = []
        for byte in channel {
            received.append(byte)
            let (frames, leftover) = try decodeAll(received)
            decoded.append(contentsOf: frames)
            received = Array(received.suffix(leftover))
        }
        #expect(decoded == sampleFrames)
        #expect(received.isEmpty)
    }

    @Test func splittingTheStreamAtEveryOffsetYieldsEveryFrame() throws {
        let channel = sampleFrames.flatMap { $0.encoded() }
        for cut in 0...channel.count {
            let (first, leftover) = try decodeAll(Array(channel[..<cut]))
            let (second, rest) = try decodeAll(Array(channel[(cut - leftover)...]))
            #expect(first + second == sampleFrames, "cut at \(cut)")
            #expect(rest == 0)
        }
    }

    @Test func hotPathEncodersMatchTheOwnedEncoding() {
        let topic = Array("x.y".utf8), payload: [UInt8] = [1, 2, 3]
        let properties = MessageProperties(correlationID: "7", headers: ["h": "v"])
        let block = properties.encoded()
        var deliver = [UInt8](repeating: 0, count: DeliverEncoder.size(topicCount: 3, propertiesCount: block.count, payloadCount: 3))
        var publish = [UInt8](repeating: 0, count: PublishEncoder.size(topicCount: 3, propertiesCount: block.count, payloadCount: 3))
        topic.withUnsafeBytes { t in
            payload.withUnsafeBytes { p in
                block.withUnsafeBytes { b in
                    deliver.withUnsafeMutableBytes {
                        DeliverEncoder.write(into: $0.baseAddress!, subscriptionID: 5, publisher: 6, topic: t, properties: b, payload: p)
                    }
                    publish.withUnsafeMutableBytes { PublishEncoder.write(into: $0.baseAddress!, topic: t, properties: b, payload: p) }
                }
            }
        }
        #expect(deliver == Frame.deliver(subscriptionID: 5, publisher: 6, topic: "x.y", properties: properties, payload: payload).encoded())
        #expect(publish == Frame.publish(topic: "x.y", properties: properties, payload: payload).encoded())
        // The zero-copy views find the same fields.
        let view = try! Array(publish[5...]).withUnsafeBytes { b in
            let v = try PublishView(body: b)
            return (Array(v.topic), Array(v.properties), Array(v.payload))
        }
        #expect(view.0 == topic && view.1 == block && view.2 == payload)
    }
}

/// The WireError `body` throws, or nil if it succeeds.
func wireError(_ body: () throws -> Void) -> WireError? {
    do {
        try body()
        return nil
    } catch {
        return error as? WireError
    }
}

@Suite struct FrameRefusalTests {
    func splitError(_ bytes: [UInt8], maxFrame: Int = 1024) -> WireError? {
        wireError { _ = try bytes.withUnsafeBytes { try FrameSplitter.next($0, maxFrame: maxFrame) } }
    }

    func decodeError(_ type: FrameType, _ body: [UInt8]) -> WireError? {
        wireError { _ = try body.withUnsafeBytes { try Frame.decode(type: type, body: $0) } }
    }

    @Test func oversizedLengthIsRefusedFromTheLengthAlone() {
        // Only the 4 length bytes have arrived: the refusal must not wait for (or allocate) the body.
        let error = splitError([0x01, 0x10, 0x00, 0x00], maxFrame: 4096)
        #expect(error?.code == .frameTooLarge)
        #expect(error?.message.contains("4097") == true)
    }

    @Test func zeroLengthIsMalformed() {
        #expect(splitError([0, 0, 0, 0, 0x03])?.code == .malformedFrame)
    }

    @Test func unknownTypeIsRefused() {
        let error = splitError([1, 0, 0, 0, 0x7F])
        #expect(error?.code == .unknownFrameType)
        #expect(error?.message.contains("0x7f") == true)
    }

    @Test func truncatedFieldIsMalformedAndNamesTheField() {
        // SUBSCRIBE whose pattern length says 10 bytes but only 2 follow.
        let body: [UInt8] = [1, 0, 0, 0, 10, 0, 0x61, 0x62]
        let error = decodeError(.subscribe, body)
        #expect(error?.code == .malformedFrame)
        #expect(error?.message.contains("pattern") == true)
    }

    @Test func trailingBytesAreMalformed() {
        let body: [UInt8] = [1, 0, 0, 0, 0xFF]  // UNSUBSCRIBE id 1 + a stray byte
        let error = decodeError(.unsubscribe, body)
        #expect(error?.code == .malformedFrame)
    }

    @Test func thePersistentBitHasNoFieldAndKeepsExpirationLast() throws {
        // PUBLISH "a" with only the persistent bit: the block is that one byte.
        let body: [UInt8] = [1, 0, 0x61, 0x80]
        let frame = try body.withUnsafeBytes { try Frame.decode(type: .publish, body: $0) }
        #expect(frame == .publish(topic: "a", properties: MessageProperties(persistent: true), payload: []))
        // Persistent with an expiration: the expiration is still the block's last four bytes.
        let block = MessageProperties(expiration: 7, persistent: true).encoded()
        #expect(block == [0xC0, 7, 0, 0, 0])
        block.withUnsafeBytes { #expect(MessageProperties.isPersistent(block: $0)) }
        var none: UInt8 = 0
        withUnsafeBytes(of: &none) { #expect(!MessageProperties.isPersistent(block: $0)) }
    }

    /// A string longer than its u16 length can say is cut between characters: the block stays
    /// valid UTF-8, which the broker checks.
    @Test func anOverlongStringIsCutBetweenCharacters() throws {
        let value = String(repeating: "x", count: 65_534) + "é" + "tail"  // é's two bytes straddle 65,535
        let block = MessageProperties(headers: ["k": value]).encoded()
        let decoded = try block.withUnsafeBytes { b throws(WireError) in
            var r = ByteReader(b)
            let (p, _) = try MessageProperties.read(&r)
            #expect(r.remaining == 0)
            return p
        }
        #expect(decoded.headers["k"] == String(repeating: "x", count: 65_534))
        let ascii = String(repeating: "y", count: 70_000)
        let asciiBlock = MessageProperties(messageID: ascii).encoded()
        #expect(asciiBlock.withUnsafeBytes { MessageProperties.decode(block: $0).messageID }?.utf8.count == 65_535)
    }

    @Test func truncatedPropertiesAreMalformed() {
        let body: [UInt8] = [1, 0, 0x61, 0x02, 9, 0, 0x63]  // correlation id says 9 bytes, 1 follows
        #expect(decodeError(.publish, body)?.message.contains("correlation id") == true)
    }

    @Test func invalidUTF8InAStringFieldIsMalformed() {
        let body: [UInt8] = [2, 0, 0xC3, 0x28]  // HELLO name: invalid UTF-8
        let error = decodeError(.hello, body)
        #expect(error?.code == .malformedFrame)
        #expect(error?.message.contains("UTF-8") == true)
    }

    @Test func relayedPropertiesAreCheckedInPlaceLikeDecoding() throws {
        // The views (what the broker relays) validate without decoding; they must refuse exactly
        // what `read` refuses, and accept the same bytes.
        let good = MessageProperties(
            contentType: "text/plain", correlationID: "r42", replyTo: "amq.inbox.7", messageID: "m", timestamp: 9,
            headers: ["ünï": "cödé", "k": ""], expiration: 5).encoded()
        let badCorrelation: [UInt8] = [0x02, 2, 0, 0xC3, 0x28]  // correlation id: invalid UTF-8
        let badHeader: [UInt8] = [0x20, 1, 0, 1, 0, 0x6B, 1, 0, 0xFF]  // header value: 0xFF
        let badCount: [UInt8] = [0x20, 0x01, 0x04]  // 1025 headers
        for (block, accepted) in [(good, true), (badCorrelation, false), (badHeader, false), (badCount, false), ([0], true)] {
            let body: [UInt8] = [1, 0, 0x61] + block + [0xAA]  // PUBLISH "a", properties, 1-byte payload
            let viewError = body.withUnsafeBytes { raw -> WireError? in
                do throws(WireError) {
                    let view = try PublishView(body: raw)
                    #expect(view.properties.count == block.count)
                    #expect(view.payload.count == 1)
                    return nil
                } catch { return error }
            }
            #expect((viewError == nil) == accepted, "block \(block)")
            if !accepted { #expect(viewError?.code == .malformedFrame) }
            #expect((decodeError(.publish, body) == nil) == accepted)
        }
        #expect(MessageProperties.decode(block: good.withUnsafeBytes { UnsafeRawBufferPointer($0) }).headers["ünï"] == "cödé")
    }

    @Test func asciiCheckLooksAtEveryByte() {
        for length in 0..<20 {
            let ascii = [UInt8](repeating: 0x61, count: length)
            #expect(ascii.withUnsafeBytes { UTF8Check.isASCII($0) })
            for position in 0..<length {
                var bytes = ascii
                bytes[position] = 0xC3
                #expect(!bytes.withUnsafeBytes { UTF8Check.isASCII($0) }, "length \(length), position \(position)")
            }
        }
    }

    @Test func preambleChecks() throws {
        let good = WireFormat.preamble
        #expect(try good.withUnsafeBytes { try Preamble.check($0) } == 1)
        #expect(try Array(good.prefix(5)).withUnsafeBytes { try Preamble.check($0) } == nil)
        let http = Array("GET / HTTP/1.1\r\n".utf8)
        #expect(wireError { _ = try http.withUnsafeBytes { try Preamble.check($0) } }?.code == .badMagic)
        let v2 = WireFormat.magic + [2, 0]
        let error = wireError { _ = try v2.withUnsafeBytes { try Preamble.check($0) } }
        #expect(error?.code == .unsupportedVersion)
        #expect(error?.message.contains("version 2") == true)
    }

    @Test func errorCodesSayWhetherTheConnectionCloses() {
        #expect(ErrorCode.frameTooLarge.closesConnection)
        #expect(ErrorCode.slowConsumer.closesConnection)
        #expect(!ErrorCode.invalidTopic.closesConnection)
        #expect(!ErrorCode.unknownSubscription.closesConnection)
    }
}
