public import EvbusController
import EvbusIO
import EvbusWire
import Synchronization

/// Dispatching to a controller in another process, over the bus (EventDriven's Subprocess adapter,
/// generalised to any process on the machine).
///
/// A controller exposed under `name` listens on the topic `evbus.controller.<name>`. A request is a
/// message there with the event name in the header `evbus-event`, a correlation id, and the
/// caller's reply topic `evbus.reply.<connectionID>` as reply-to; the payload is the event's
/// payload. The reply carries the same correlation id and the header `evbus-status`: `ok` with the
/// handlers' results in the payload (`u16` count, then per result a `u32` length and its bytes), or
/// `error` with the first error's message as the payload. Handlers of an exposed controller receive
/// `[UInt8]` payloads and return `[UInt8]` or `String` results. This runs on plain topics until the
/// RPC layer (private reply inboxes, no-responder detection) replaces the transport; the API stays.
enum Remote {
    static let eventHeader = "evbus-event"
    static let statusHeader = "evbus-status"

    static func requestTopic(_ name: String) -> String { "evbus.controller.\(name)" }
    static func replyTopic(_ connectionID: UInt64) -> String { "evbus.reply.\(connectionID)" }

    static func encodeResults(_ results: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = [UInt8(results.count & 0xFF), UInt8((results.count >> 8) & 0xFF)]
        for r in results {
            withUnsafeBytes(of: UInt32(r.count).littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: r)
        }
        return out
    }

    static func decodeResults(_ bytes: [UInt8]) -> [[UInt8]]? {
        bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            guard let count = try? r.u16("count") else { return nil }
            var results: [[UInt8]] = []
            for _ in 0..<count {
                guard let n = try? r.u32("length"), let body = try? r.fixed(Int(n)) else { return nil }
                results.append(Array(body))
            }
            return results
        }
    }

    /// A handler's return value as bytes, or why it cannot cross processes.
    static func bytes(of value: any Sendable) throws -> [UInt8] {
        if let bytes = value as? [UInt8] { return bytes }
        if let text = value as? String { return Array(text.utf8) }
        throw EvbusError(.invalidArgument, "a result of type \(type(of: value)) cannot cross processes; return [UInt8] or String")
    }
}

/// Calls waiting for replies, by correlation id.
final class RemoteCalls: Sendable {
    let waiting = Mutex<[String: CheckedContinuation<[[UInt8]], any Error>]>([:])
    let nextCorrelation = Atomic<UInt64>(1)
    let inbox = Mutex<Subscription?>(nil)
}

extension Peer {
    /// Exposes `controller` on the bus under `name`: other processes can `dispatch(to: name, ...)` to
    /// it. Payloads arrive as `[UInt8]`; handlers return `[UInt8]` or `String` results.
    @discardableResult
    public func expose(_ controller: Controller, as name: String) async throws -> Subscription {
        try await subscribe([Remote.requestTopic(name)], sink: .handler { [self] event in
            guard let eventName = event.properties.headers[Remote.eventHeader], event.properties.replyTo != nil else { return }
            let message = BusMessage(
                topic: event.topic, payload: event.payload, publisher: event.publisher, routingKey: event.topic,
                properties: event.properties, peer: self)
            let pending = controller.dispatch(eventName, event.payload, context: [Session.busKey: message])
            Task {
                do {
                    let results = try await pending.value.results.map(Remote.bytes(of:))
                    try await message.reply(Remote.encodeResults(results), headers: [Remote.statusHeader: "ok"])
                } catch {
                    let text = (error as? EvbusError)?.message ?? "\(error)"
                    try? await message.reply(Array(text.utf8), headers: [Remote.statusHeader: "error"])
                }
            }
        }, queue: nil)
    }

    /// Dispatches `event` to the controller another process exposed under `name`, and waits for
    /// its handlers' results.
    /// - Throws: `EvbusError` `refused` with the remote handler's error message; `timeout` when no
    ///   answer arrives in time (including when nothing is exposed under that name).
    public func dispatch(to name: String, _ event: String, _ payload: [UInt8] = [], timeout: Duration = .seconds(30)) async throws -> [[UInt8]] {
        try await ensureReplyInbox()
        let calls = remoteCalls
        let correlation = String(calls.nextCorrelation.add(1, ordering: .relaxed).oldValue)
        let properties = MessageProperties(
            correlationID: correlation, replyTo: Remote.replyTopic(connectionID), headers: [Remote.eventHeader: event])
        let loop = self.loop
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<[[UInt8]], any Error>) in
            calls.waiting.withLock { $0[correlation] = c }
            Task {
                do {
                    try await publish(Remote.requestTopic(name), payload, properties: properties)
                } catch {
                    calls.waiting.withLock { $0.removeValue(forKey: correlation) }?.resume(throwing: error)
                }
            }
            loop.execute {
                loop.scheduleTimer(afterNanos: timeout.wholeNanoseconds) {
                    calls.waiting.withLock { $0.removeValue(forKey: correlation) }?.resume(
                        throwing: EvbusError(.timeout, "no reply from controller '\(name)' within \(timeout) (is it exposed?)"))
                }
            }
        }
    }

    /// Subscribes this peer's reply topic once.
    private func ensureReplyInbox() async throws {
        let calls = remoteCalls
        if calls.inbox.withLock({ $0 }) != nil { return }
        let subscription = try await subscribe([Remote.replyTopic(connectionID)], sink: .handler { event in
            guard let correlation = event.properties.correlationID,
                let waiter = calls.waiting.withLock({ $0.removeValue(forKey: correlation) })
            else { return }  // late (after a timeout) or foreign: dropped
            if event.properties.headers[Remote.statusHeader] == "ok", let results = Remote.decodeResults(event.payload) {
                waiter.resume(returning: results)
            } else {
                waiter.resume(throwing: EvbusError(.refused, "remote handler failed: \(event.text)"))
            }
        }, queue: nil)
        let extra = calls.inbox.withLock { inbox -> Subscription? in
            if inbox == nil {
                inbox = subscription
                return nil
            }
            return subscription
        }
        if let extra { try await unsubscribe(extra) }  // lost a race with another first call
    }
}
