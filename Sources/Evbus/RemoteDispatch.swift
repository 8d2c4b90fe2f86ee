public import EvbusController
import EvbusIO
import EvbusWire

/// Dispatching to a controller in another process, over the bus (EventDriven's Subprocess adapter,
/// generalised to any process on the machine), built on request/reply (docs/RPC.md).
///
/// A controller exposed under `name` is a responder on the auto-delete queue
/// `evbus.controller.<name>`. A dispatch is a request there with the event name in the header
/// `evbus-event` and the event's payload; the reply carries the handlers' results (`u16` count,
/// then per result a `u32` length and its bytes), or a remote error (code `handler-error`, the
/// first error's message). Handlers of an exposed controller receive `[UInt8]` payloads and return
/// `[UInt8]` or `String` results (sent as they are) or any other `Encodable` value (sent in the
/// compact codec, `CompactEncoder`). Several processes exposing one name share its dispatches.
enum Remote {
    static let eventHeader = "evbus-event"

    static func queue(_ name: String) -> String { "evbus.controller.\(name)" }

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

    /// A value as bytes: `[UInt8]` and `String` as they are, other `Encodable`s in the compact
    /// codec; or why it cannot cross processes.
    static func bytes(of value: any Sendable) throws -> [UInt8] {
        if let bytes = value as? [UInt8] { return bytes }
        if let text = value as? String { return Array(text.utf8) }
        if let encodable = value as? any Encodable {
            do { return try CompactEncoder().encode(encodable) } catch {
                throw EvbusError(.invalidArgument, "a result of type \(type(of: value)) could not be encoded: \(error)")
            }
        }
        throw EvbusError(.invalidArgument, "a result of type \(type(of: value)) cannot cross processes; return [UInt8], String or an Encodable value")
    }

    /// The inverse of `bytes(of:)` for a known type.
    static func value<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        if T.self == [UInt8].self { return bytes as! T }
        if T.self == String.self { return String(decoding: bytes, as: UTF8.self) as! T }
        return try CompactDecoder().decode(T.self, from: bytes)
    }
}

extension Peer {
    /// Exposes `controller` on the bus under `name`: other processes can `dispatch(to: name, ...)` to
    /// it. Payloads arrive as `[UInt8]`; handlers return `[UInt8]` or `String` results. The session's
    /// `bus` holds the request's metadata. Cancel the returned responder to stop.
    @discardableResult
    public func expose(_ controller: Controller, as name: String, concurrency: Int = 64) async throws -> Responder {
        let queue = Remote.queue(name)
        // Gone with its last exposer, so that a dispatch to nobody is answered "no responder".
        _ = try await declareQueue(queue, QueueOptions(autoDelete: true))
        return try await respond(on: queue, prefetch: concurrency) { [self] (request: Request) -> [UInt8] in
            guard let eventName = request.headers[Remote.eventHeader] else {
                throw RemoteError("invalid-request", "a dispatch needs the header \(Remote.eventHeader)")
            }
            let message = BusMessage(
                topic: request.routingKey, payload: request.payload, publisher: request.publisher,
                routingKey: request.routingKey, properties: request.properties, peer: self)
            let result = try await controller.dispatch(eventName, request.payload, context: [Session.busKey: message]).value
            do {
                return Remote.encodeResults(try result.results.map(Remote.bytes(of:)))
            } catch let error as EvbusError {
                throw RemoteError("handler-error", error.message)
            }
        }
    }

    /// Dispatches `event` to the controller another process exposed under `name`, and waits for
    /// its handlers' results.
    /// - Throws: `EvbusError` `remote` with the remote handler's error message; `noResponder` at once
    ///   when nothing is exposed under that name; `responderGone` if the exposing process goes away
    ///   mid-dispatch; `timeout` when no answer arrives in time.
    public func dispatch(to name: String, _ event: String, _ payload: [UInt8] = [], timeout: Duration = .seconds(30)) async throws -> [[UInt8]] {
        try await remoteResults(name, event, payload, timeout)
    }

    /// Dispatches `event` with a typed `input` (sent in the compact codec; `String` and `[UInt8]`
    /// as they are) and decodes each handler's result as `Output`; the handlers read the input with
    /// `session.payload(decoding:)`.
    /// - Throws: as the untyped `dispatch(to:)`, and a `DecodingError` when a result is not an `Output`.
    public func dispatch<Input: Encodable & Sendable, Output: Decodable & Sendable>(
        to name: String, _ event: String, _ input: Input, as output: Output.Type, timeout: Duration = .seconds(30)
    ) async throws -> [Output] {
        try await remoteResults(name, event, try Remote.bytes(of: input), timeout).map { try Remote.value(Output.self, from: $0) }
    }

    private func remoteResults(_ name: String, _ event: String, _ payload: [UInt8], _ timeout: Duration) async throws -> [[UInt8]] {
        let reply = try await request(to: .queue(Remote.queue(name)), payload, headers: [Remote.eventHeader: event], timeout: timeout)
        guard let results = Remote.decodeResults(reply.payload) else {
            throw EvbusError(.protocolViolation, "the reply from controller '\(name)' is not a list of results")
        }
        return results
    }
}

extension Session {
    /// The payload of a dispatch from another process (`peer.dispatch(to:_:_:as:)`), decoded as
    /// `T`: `[UInt8]` and `String` as sent, anything else from the compact codec.
    public func payload<T: Decodable>(decoding type: T.Type) throws -> T {
        guard let bytes = payload as? [UInt8] else {
            throw EvbusError(.invalidArgument, "the payload is a \(Swift.type(of: payload)), not bytes from another process")
        }
        return try Remote.value(T.self, from: bytes)
    }
}
