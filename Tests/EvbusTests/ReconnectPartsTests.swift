import CEvbusLinux
@testable import Evbus
@testable import EvbusIO
import EvbusWire
import Testing

/// The pieces a reconnecting peer is built from, each alone: the backoff, the record of what to
/// set up again, the in-doubt confirms and the outbox's dropping of stale acknowledgements.
@Suite struct ReconnectPartsTests {
    @Test func backoffDoublesToTheCapAndJitterStaysWithinItsSpread() {
        let p = ReconnectPolicy(initialDelay: .milliseconds(100), maxDelay: .seconds(1), multiplier: 2, jitter: 0.2)
        #expect((1...6).map { p.baseDelay(attempt: $0) } == [100, 200, 400, 800, 1000, 1000].map { .milliseconds($0) })
        #expect(p.delay(attempt: 1, random: 0) == .milliseconds(80))
        #expect(p.delay(attempt: 1, random: 1) == .milliseconds(120))
        #expect(p.delay(attempt: 1, random: 0.5) == .milliseconds(100))
        for _ in 0..<1000 {
            let d = p.delay(attempt: 3, random: Double.random(in: 0...1))
            #expect(d >= .milliseconds(320) && d <= .milliseconds(480))
        }
        // Out-of-range settings are brought into range, not trusted.
        let odd = ReconnectPolicy(initialDelay: .seconds(2), maxDelay: .seconds(1), multiplier: 0.5, jitter: 7)
        #expect(odd.maxDelay == .seconds(2) && odd.multiplier == 1 && odd.jitter == 1)
        #expect(!ReconnectPolicy.never.reconnects && ReconnectPolicy.standard.reconnects)
    }

    @Test func topologyReplaysInOrderOnceEachAndForgetsWhatWasUndone() {
        var t = RestorableTopology()
        let ok = Frame.ok(requestID: 0)
        t.succeeded(.declareExchange(requestID: 1, name: "logs", kind: .fanout, durable: false), reply: ok)
        t.succeeded(.declareQueue(requestID: 2, name: "jobs", options: QueueOptions(durable: true)),
                    reply: .queueOK(requestID: 2, info: QueueInfo(name: "jobs", messageCount: 0, consumerCount: 0)))
        t.succeeded(.declareQueue(requestID: 3, name: "jobs", options: QueueOptions(durable: true)),
                    reply: .queueOK(requestID: 3, info: QueueInfo(name: "jobs", messageCount: 0, consumerCount: 0)))  // again: kept once
        t.succeeded(.declareQueue(requestID: 4, name: "jobs", options: QueueOptions(), passive: true),
                    reply: .queueOK(requestID: 4, info: QueueInfo(name: "jobs", messageCount: 0, consumerCount: 0)))  // passive: nothing to redo
        t.succeeded(.bind(requestID: 5, queue: "jobs", exchange: "logs", key: ""), reply: ok)
        t.subscribed(6, pattern: "a.#", policy: 0)
        t.consuming(7, queue: "jobs", flags: 0, prefetch: 3)
        #expect(t.inOrder().map(\.id) == [1, 2, 5, 6, 7])
        #expect(RestorableTopology.frame(7, t.entries[7]!) == .consume(consumerID: 7, queue: "jobs", flags: 0, prefetch: 3))

        t.succeeded(.unbind(requestID: 8, queue: "jobs", exchange: "logs", key: ""), reply: ok)
        t.forget(6)
        #expect(t.inOrder().map(\.id) == [1, 2, 7])
        t.succeeded(.bind(requestID: 9, queue: "jobs", exchange: "logs", key: "k"), reply: ok)
        t.succeeded(.deleteExchange(requestID: 10, name: "logs", ifUnused: false), reply: ok)  // takes its bindings along
        #expect(t.inOrder().map(\.id) == [2, 7])
        t.succeeded(.deleteQueue(requestID: 11, name: "jobs", ifUnused: false, ifEmpty: false), reply: ok)
        #expect(t.inOrder().map(\.id) == [7])  // the consumer ends by its own CANCEL
    }

    @Test func aBrokerNamedQueueCarriesItsBindingsAndConsumersToItsNewName() {
        var t = RestorableTopology()
        t.succeeded(.declareQueue(requestID: 1, name: "", options: QueueOptions(exclusive: true)),
                    reply: .queueOK(requestID: 1, info: QueueInfo(name: "amq.gen-1", messageCount: 0, consumerCount: 0)))
        t.succeeded(.bind(requestID: 2, queue: "amq.gen-1", exchange: "amq.topic", key: "x.#"), reply: .ok(requestID: 2))
        t.consuming(3, queue: "amq.gen-1", flags: 0, prefetch: 0)
        #expect(RestorableTopology.frame(1, t.entries[1]!) == .declareQueue(requestID: 1, name: "", options: QueueOptions(exclusive: true)))
        t.renamed(queue: "amq.gen-1", to: "amq.gen-9", declaredBy: 1)
        #expect(t.entries[2] == .binding(queue: "amq.gen-9", exchange: "amq.topic", key: "x.#"))
        #expect(t.entries[3] == .consumer(queue: "amq.gen-9", flags: 0, prefetch: 0))
        t.succeeded(.unbind(requestID: 4, queue: "amq.gen-9", exchange: "amq.topic", key: "x.#"), reply: .ok(requestID: 4))
        #expect(t.inOrder().map(\.id) == [1, 3])
    }

    @Test func confirmsSentOnADroppedConnectionAreReportedInDoubtNeverConfirmed() {
        var c = ConfirmTracker()
        _ = c.confirmed(1, flags: 0)
        // 2...4 were sent, then the connection dropped; 5 was still queued.
        _ = c.connectionEnded(sentThrough: 4)
        #expect(c.settled(through: 1).map { (try? $0.get()) != nil } == true)
        #expect(c.settled(through: 5) == nil)  // still to go out
        guard case .failure(let e)? = c.settled(through: 4) else { Issue.record("not in doubt"); return }
        #expect(e.code == .connectionLost && e.message.contains("3 confirmed publish(es) (sequence 2-4)"), "\(e.message)")
        // The next connection numbers its confirms from 1 again: that is the peer's 5.
        _ = c.confirmed(1, flags: 0)
        #expect(c.settled(through: 5).map { (try? $0.get()) != nil } == true)  // the doubt was reported once
    }

    @Test func disconnectingDropsQueuedAcksAndStaleTagsAfterwards() {
        let outbox = Outbox(highWatermark: 1 << 20, lowWatermark: 1 << 10)
        let publish = Frame.publish(topic: "t", payload: [1]).encoded()
        _ = outbox.appendAck(.ack, tag: 1, flags: 0)
        _ = outbox.append(size: publish.count) { p in publish.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        _ = outbox.appendAck(.nack, tag: 2, flags: 0)
        _ = outbox.disconnect(EvbusError(.connectionLost, "gone"), failWhenFull: false, tagBase: 2)
        outbox.reconnected()
        #expect(outbox.appendAck(.ack, tag: 2, flags: 0) == nil)  // the old connection's
        #expect(outbox.appendAck(.ack, tag: 3, flags: 0) != nil)  // the new one's first: wire tag 1
        var queue = outbox.take()
        #expect(Self.bytes(of: &queue) == publish + Frame.ack(deliveryTag: 1, flags: 0).encoded())
    }

    @Test func removeFramesKeepsTheOthersInOrderAcrossChunks() {
        var q = WriteQueue()
        var expected: [UInt8] = []
        for i in 0..<5000 {
            let keep = Frame.publish(topic: "t", payload: [UInt8](repeating: UInt8(i & 0xff), count: i % 300)).encoded()
            q.append(keep)
            expected += keep
            q.append(Frame.ack(deliveryTag: UInt64(i), flags: 0).encoded())
        }
        q.removeFrames { $0 == FrameType.ack.rawValue }
        #expect(q.count == expected.count)
        #expect(Self.bytes(of: &q) == expected)
    }

    static func bytes(of q: inout WriteQueue) -> [UInt8] {
        var out: [UInt8] = []
        while !q.isEmpty {
            var iov = [iovec](repeating: iovec(), count: 64)
            let n = iov.withUnsafeMutableBufferPointer { q.gather(into: $0) }
            var taken = 0
            for v in iov[..<n] {
                out += UnsafeRawBufferPointer(start: v.iov_base, count: v.iov_len)
                taken += v.iov_len
            }
            q.consume(taken)
        }
        return out
    }
}
