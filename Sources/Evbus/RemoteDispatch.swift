public import EvbusController
import EvbusIO
import EvbusWire
import Synchronization

/// Dispatching to a controller in another process, over the bus (EventDriven's Subprocess adapter,
/// generalised to any process on the machine).
///
/// A controller exposed under `name` listens on the topic `evbus.controller.<name>`; a caller
/// publishes a request there carrying a correlation id and its reply topic
/// `evbus.reply.<connectionID>`, and the exposing peer publishes the handlers' results (or the first
/// error) back. Payloads and results cross as bytes: handlers of an exposed controller receive
/// `[UInt8]` payloads and must return `[UInt8]` or `String` results. This runs on plain topics until
/// the RPC layer (reply inboxes, no-responder detection) replaces the transport; the API stays.
enum RemoteEnvelope {
    static func requestTopic(_ name: String) -> String { "evbus.controller.\(name)" }
    static func replyTopic(_ connectionID: UInt64) -> String { "evbus.reply.\(connectionID)" }

    /// request: u64 correlation, str reply topic, str event, payload rest.
    static func request(correlation: UInt64, replyTo: String, event: String, payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        append(&out, correlation)
        appendString(&out, replyTo)
        appendString(&out, event)
        return out + payload
    }

    static func parseRequest(_ bytes: [UInt8]) -> (correlation: UInt64, replyTo: String, event: String, payload: [UInt8])? {
        bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            guard let correlation = try? r.u64("correlation"), let replyTo = try? r.string("reply topic"),
                let event = try? r.string("event")
            else { return nil }
            return (correlation, replyTo, event, Array(r.rest()))
        }
    }

    /// reply: u64 correlation, u8 status (0 results, 1 error), then u16 count + (u32 length, bytes)*,
    /// or str message.
    static func reply(correlation: UInt64, _ outcome: RemoteOutcome) -> [UInt8] {
        var out: [UInt8] = []
        append(&out, correlation)
        switch outcome {
        case .results(let results):
            out.append(0)
            out.append(contentsOf: [UInt8(results.count & 0xFF), UInt8(results.count >> 8)])
            for r in results {
                append(&out, UInt32(r.count))
                out.append(contentsOf: r)
            }
        case .failed(let message):
            out.append(1)
            appendString(&out, message)
        }
        return out
    }

    static func parseReply(_ bytes: [UInt8]) -> (correlation: UInt64, outcome: RemoteOutcome)? {
        bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            guard let correlation = try? r.u64("correlation"), let status = try? r.u8("status") else { return nil }
            if status == 1 {
                guard let message = try? r.string("message") else { return nil }
                return (correlation, .failed(message))
            }
            guard let count = try? r.u16("count") else { return nil }
            var results: [[UInt8]] = []
            for _ in 0..<count {
                guard let n = try? r.u32("length"), let body = try? r.fixed(Int(n)) else { return nil }
                results.append(Array(body))
            }
            return (correlation, .results(results))
        }
    }

    static func append<T: FixedWidthInteger>(_ out: inout [UInt8], _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    static func appendString(_ out: inout [UInt8], _ s: String) {
        let utf8 = Array(s.utf8.prefix(Int(UInt16.max)))
        append(&out, UInt16(utf8.count))
        out.append(contentsOf: utf8)
    }
}

/// What came back from a remote controller: the handlers' results, or the first error's message.
enum RemoteOutcome {
    case results([[UInt8]])
    case failed(String)
}

/// Calls waiting for replies, by correlation id.
final class RemoteCalls: Sendable {
    let waiting = Mutex<[UInt64: CheckedContinuation<[[UInt8]], any Error>]>([:])
    let nextCorrelation = Atomic<UInt64>(1)
    let inbox = Mutex<Subscription?>(nil)
}

extension Peer {
    /// Exposes `controller` on the bus under `name`: other processes can `dispatch(to: name, ...)` to
    /// it. Payloads arrive as `[UInt8]`; handlers return `[UInt8]` or `String` results.
    @discardableResult
    public func expose(_ controller: Controller, as name: String) async throws -> Subscription {
        let topic = RemoteEnvelope.requestTopic(name)
        return try await subscribe([topic], sink: .handler { [self] event in
            guard let request = RemoteEnvelope.parseRequest(event.payload) else { return }
            let message = BusMessage(topic: event.topic, payload: request.payload, publisher: event.publisher, routingKey: event.topic, peer: self)
            let pending = controller.dispatch(request.event, request.payload, context: [Session.busKey: message])
            Task { [self] in
                let outcome: RemoteOutcome
                do {
                    let result = try await pending.value
                    outcome = .results(try result.results.map { value in
                        if let bytes = value as? [UInt8] { return bytes }
                        if let text = value as? String { return Array(text.utf8) }
                        throw EvbusError(.invalidArgument, "a result of type \(type(of: value)) cannot cross processes; return [UInt8] or String")
                    })
                } catch let error as EvbusError {
                    outcome = .failed(error.message)
                } catch {
                    outcome = .failed("\(error)")
                }
                try? await publish(request.replyTo, RemoteEnvelope.reply(correlation: request.correlation, outcome))
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
        let correlation = calls.nextCorrelation.add(1, ordering: .relaxed).oldValue
        let request = RemoteEnvelope.request(
            correlation: correlation, replyTo: RemoteEnvelope.replyTopic(connectionID), event: event, payload: payload)
        let loop = self.loop
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<[[UInt8]], any Error>) in
            calls.waiting.withLock { $0[correlation] = c }
            Task {
                do {
                    try await publish(RemoteEnvelope.requestTopic(name), request)
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
        let subscription = try await subscribe([RemoteEnvelope.replyTopic(connectionID)], sink: .handler { event in
            guard let reply = RemoteEnvelope.parseReply(event.payload),
                let waiter = calls.waiting.withLock({ $0.removeValue(forKey: reply.correlation) })
            else { return }  // late (after a timeout) or foreign: dropped
            switch reply.outcome {
            case .results(let results): waiter.resume(returning: results)
            case .failed(let message): waiter.resume(throwing: EvbusError(.refused, "remote handler failed: \(message)"))
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
