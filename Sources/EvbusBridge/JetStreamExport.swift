import Evbus
import EvbusNATS
import EvbusIO
import Foundation
import Synchronization

/// Exports a durable local queue to a JetStream stream without losing a message: the queue is
/// consumed with manual acks, each message is published to JetStream as a request, and acked
/// locally only when JetStream's PubAck says it is stored. A publish JetStream did not confirm
/// (NATS down, a timeout, an error) is nacked back to the queue and tried again; the message's
/// `messageID`, when it has one, becomes `Nats-Msg-Id`, so JetStream stores a retried message once.
struct JetStreamExport: Sendable {
    let queue: String
    let stream: String
    let subject: String
    let log: @Sendable (String) -> Void
    let retryDelay = RetryDelay()

    /// Makes the stream if it does not exist (file storage, this subject), then consumes.
    func start(peer: Peer, nats: NATSClient, onExported: @escaping @Sendable () -> Void, onRefused: @escaping @Sendable () -> Void) async throws -> Consumer {
        await ensureStream(nats)
        return try await peer.consume(queue, ack: .manual, prefetch: 256) { delivery in
            // On the loop both connections share, whose executor starts tasks in the order they
            // are made: each publish is queued before the next delivery's, so the stream stores
            // the queue's order (while nothing fails; a retried message comes later). On the
            // global executor the tasks raced, and the stream held them out of order.
            Task(executorPreference: peer.executor) { await self.forward(delivery, nats: nats, onExported: onExported, onRefused: onRefused) }
        }
    }

    private func ensureStream(_ nats: NATSClient) async {
        let config = #"{"name":"\#(stream)","subjects":["\#(subject)"],"storage":"file"}"#
        do {
            let reply = try await nats.request("$JS.API.STREAM.CREATE.\(stream)", Array(config.utf8), timeout: .seconds(5))
            log("event=jetstream-stream stream=\(Logger.quoted(stream)) reply=\(Logger.quoted(String(decoding: reply.payload, as: UTF8.self)))")
        } catch {
            log("event=jetstream-stream-unavailable stream=\(Logger.quoted(stream)) reason=\(Logger.quoted("\(error)"))")  // retried per message
        }
    }

    /// JetStream's error code for "message size exceeds maximum allowed" (`JSStreamMessageExceedsMaximumErr`).
    static let messageTooLargeForStream = 10054

    private func forward(_ d: Delivery, nats: NATSClient, onExported: @Sendable () -> Void, onRefused: @Sendable () -> Void) async {
        var fields: [(name: String, value: String)] = []
        if let id = d.properties.messageID { fields.append(("Nats-Msg-Id", id)) }
        for (k, v) in d.properties.headers.sorted(by: { $0.key < $1.key }) { fields.append((k, v)) }
        do {
            let reply = try await nats.request(subject, d.payload, headers: fields.isEmpty ? nil : NATSHeaders(fields: fields), timeout: .seconds(5))
            let ack = (try? JSONSerialization.jsonObject(with: Data(reply.payload))) as? [String: Any]
            guard ack?["stream"] as? String == stream, ack?["error"] == nil else {
                let text = String(decoding: reply.payload, as: UTF8.self)
                // The stream's own limit on a message's size (its max_msg_size): this one will
                // never be stored. Any other refusal (stream full, not enough resources, no
                // leader yet) may pass later, so it is retried.
                let code = ((ack?["error"] as? [String: Any])?["err_code"] as? NSNumber)?.intValue
                if code == Self.messageTooLargeForStream { throw NATSError(.payloadTooLarge, "JetStream refuses it: \(text)") }
                throw NATSError(.protocolViolation, "JetStream did not store it: \(text)")
            }
            try d.ack()
            retryDelay.succeeded()
            onExported()
        } catch let error as NATSError where error.code == .payloadTooLarge || error.code == .invalidArgument {
            // This message can never be stored (too large for the server or the stream, a
            // header NATS cannot carry): retrying would loop on it for ever. Refused, so the
            // queue dead-letters it if it has a dead-letter exchange (ROUTING.md), and said.
            log("event=jetstream-export-refused queue=\(Logger.quoted(queue)) reason=\(Logger.quoted("\(error)"))")
            try? d.reject()
            onRefused()
        } catch {
            // Not stored (or not known to be): back to the queue, to be tried again after a
            // while. Nobody answering the subject means the stream is missing (JetStream was
            // not up when the bridge started, or it was deleted): make it again.
            if (error as? NATSError)?.code == .noResponders { await ensureStream(nats) }
            try? await Task.sleep(for: retryDelay.failed())
            try? d.nack(requeue: true)
        }
    }
}

/// How long a message JetStream did not store waits before it goes back to its queue: 200 ms,
/// doubling up to 5 s while JetStream keeps refusing (a full stream, no leader, NATS away), and
/// 200 ms again after the next success. Shared by every message of one export: a refusal that
/// lasts costs a few tries a second, not one per message in flight every 200 ms.
final class RetryDelay: Sendable {
    static let shortest = Duration.milliseconds(200), longest = Duration.seconds(5)
    private let next = Mutex(RetryDelay.shortest)

    /// The wait for this failure; the next one waits twice as long.
    func failed() -> Duration {
        next.withLock { next in
            defer { next = min(next * 2, Self.longest) }
            return next
        }
    }

    func succeeded() { next.withLock { $0 = Self.shortest } }
}
