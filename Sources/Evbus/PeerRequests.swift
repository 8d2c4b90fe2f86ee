import EvbusWire
import EvbusIO
import Synchronization

/// Request/reply (docs/RPC.md): every peer has a private inbox; requests carry a correlation id
/// and the inbox as reply-to; the broker says at once how many responders a request reached.
extension Peer {
    /// This peer's private reply address (`amq.inbox.<connection id>`): anyone may publish to it
    /// (through the default exchange), only this peer receives it. Needs no declaration. It
    /// changes when the peer reconnects.
    public var inbox: String { Inbox.name(connectionID: connectionID) }

    /// Sends a request and waits for its reply.
    /// - Throws: `EvbusError` with code `noResponder` (at once, when nothing that can answer is
    ///   consuming or subscribed where it went), `responderGone` (the responder that accepted it went
    ///   away before replying), `remote` (the responder's handler threw: `remoteCode`, `message`),
    ///   `timeout`, `connectionLost`; `refused` if the broker refused it (e.g. an unknown exchange).
    ///   `CancellationError` when the calling task is cancelled: at once, and before sending if it
    ///   already was; a reply that comes after is dropped (`lateReplyCount`).
    public func request(
        to destination: Destination, _ payload: [UInt8], headers: [String: String] = [:], timeout: Duration = .seconds(30)
    ) async throws -> Reply {
        try Task.checkCancellation()  // a task cancelled already sends nothing
        let request = try outgoingRequest(destination, payload, headers, timeout: timeout)
        return try await call(request, timeout: timeout) { RequestTable.Call(.one($0)) }
    }

    /// Sends a UTF-8 text request.
    public func request(
        to destination: Destination, _ text: String, headers: [String: String] = [:], timeout: Duration = .seconds(30)
    ) async throws -> Reply {
        try await request(to: destination, Array(text.utf8), headers: headers, timeout: timeout)
    }

    /// Scatter-gather: sends one request to an exchange and returns every reply from the responders
    /// it reached. Ends as soon as all of them have answered (the broker says how many it reached),
    /// or at the deadline with the replies that arrived. Replies carrying a remote error are
    /// included (check `headers["evbus-status"]`).
    public func requestAll(
        to exchange: String, key: String, _ payload: [UInt8], headers: [String: String] = [:], within limit: Duration
    ) async throws -> [Reply] {
        try Task.checkCancellation()
        let request = try outgoingRequest(
            .exchange(exchange, key: key), payload, headers, flags: PublishFlag.request | PublishFlag.reportReached, timeout: limit)
        return try await call(request, timeout: limit) { RequestTable.Call(.all($0)) }
    }

    private static var loopStopped: EvbusError { EvbusError(.closed, "the peer's event loop has stopped") }

    /// Sends `request` from the loop and waits for its call to end. The continuation is unsafe
    /// (unchecked): the request table resumes each call exactly once (see RequestTable).
    /// Cancelling the task ends the call at once with `CancellationError`.
    private func call<T: Sendable>(
        _ request: OutgoingRequest, timeout: Duration, _ waiter: @escaping @Sendable (UnsafeContinuation<T, any Error>) -> RequestTable.Call
    ) async throws -> T {
        let core = self.core, loop = self.loop, number = request.number
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<T, any Error>) in
                if loop.inEventLoop {
                    core.value.startCall(request, waiter(c), timeout: timeout)  // already there: no hop
                } else {
                    do {
                        try loop.execute { core.value.startCall(request, waiter(c), timeout: timeout) }
                    } catch {
                        c.resume(throwing: Self.loopStopped)
                        return
                    }
                }
                // The cancellation handler may have run before the call was registered on the loop
                // (a task cancelled just now) and found nothing to cancel. Checked once the start is
                // queued, whichever way the two race, a cancel lands after the start.
                if Task.isCancelled { cancelCall(number) }
            }
        } onCancel: {
            cancelCall(number)
        }
    }

    /// Ends call `number` with `CancellationError`, on the loop after anything queued there.
    private func cancelCall(_ number: UInt64) {
        let core = self.core
        try? loop.execute { core.value.cancelCall(number) }
    }

    /// Replies that arrived after their request had timed out, and were discarded.
    public func lateReplyCount() async -> Int {
        let core = self.core
        return await withCheckedContinuation { c in
            do { try loop.execute { c.resume(returning: core.value.calls.lateReplies) } } catch { c.resume(returning: 0) }
        }
    }

    /// Deadline entries the request table holds (for tests: it must stay bounded by the calls in flight).
    package func deadlineEntryCount() async -> Int {
        let core = self.core
        return await withCheckedContinuation { c in
            do { try loop.execute { c.resume(returning: core.value.calls.deadlineEntries) } } catch { c.resume(returning: 0) }
        }
    }

    private func outgoingRequest(
        _ destination: Destination, _ payload: [UInt8], _ headers: [String: String], flags: UInt8 = PublishFlag.request,
        timeout: Duration
    ) throws -> OutgoingRequest {
        guard destination.exchange.utf8.count <= WireFormat.maxTopicBytes, destination.key.utf8.count <= WireFormat.maxTopicBytes else {
            throw EvbusError(.invalidArgument, "exchange names and routing keys are at most \(WireFormat.maxTopicBytes) bytes")
        }
        if let reason = MessageProperties.unsendableReason(headers: headers) { throw EvbusError(.invalidArgument, reason) }
        let request = OutgoingRequest(
            flags: flags, destination: destination, number: nextCorrelation.add(1, ordering: .relaxed).oldValue,
            replyTo: facts.inbox, headers: headers, payload: payload, timeout: timeout)
        guard request.size - 4 <= maxFrameBytes else {
            throw EvbusError(.invalidArgument, wireCode: .frameTooLarge,
                "a \(payload.count)-byte request makes a \(request.size - 4)-byte frame; the broker's limit is \(maxFrameBytes)")
        }
        return request
    }

    // MARK: Responding

    /// Serves requests from `queue` (declaring it if it does not exist): each goes to `handler`,
    /// whose return value is sent back to the request's reply-to with its correlation id; a thrown
    /// error goes back as a remote error (`RemoteError` keeps its code). At most `concurrency`
    /// handlers run at once (default: `prefetch`).
    ///
    /// A request is acknowledged when its handler starts. Requests waiting for a free handler are
    /// not: if this peer dies they go back to the queue for another responder; callers of requests
    /// whose handler had started get `responderGone` at once.
    public func respond(
        on queue: String, prefetch: Int = 1, concurrency: Int? = nil,
        handler: @escaping @Sendable (Request) async throws -> [UInt8]
    ) async throws -> Responder {
        try await startResponder(on: queue, prefetch: prefetch, concurrency: concurrency, handler: .async(handler))
    }

    private func startResponder(
        on queue: String, prefetch: Int, concurrency: Int?, handler: ResponderState.Handler
    ) async throws -> Responder {
        let limit = concurrency ?? prefetch
        guard limit > 0 else { throw EvbusError(.invalidArgument, "concurrency must be at least 1") }
        do {
            _ = try await declareQueue(queue, passive: true)
        } catch let error as EvbusError where error.wireCode == .unknownQueue {
            _ = try await declareQueue(queue)
        }
        let state = ResponderState(peer: self, limit: limit, handler: handler)
        let consumer = try await consume(queue, ack: .manual, prefetch: prefetch) { delivery in state.arrived(delivery) }
        return Responder(queue: queue, consumer: consumer, state: state)
    }

    /// `respond` with a plain (non-async) handler: it runs on the peer's event loop as each request
    /// arrives, with no task per request — the fastest form, for handlers that only compute.
    public func respond(
        on queue: String, prefetch: Int = 1, concurrency: Int? = nil,
        handler: @escaping @Sendable (Request) throws -> [UInt8]
    ) async throws -> Responder {
        try await startResponder(on: queue, prefetch: prefetch, concurrency: concurrency, handler: .sync(handler))
    }

    /// The plain form with a handler returning text.
    public func respond(
        on queue: String, prefetch: Int = 1, concurrency: Int? = nil,
        handler: @escaping @Sendable (Request) throws -> String
    ) async throws -> Responder {
        try await startResponder(on: queue, prefetch: prefetch, concurrency: concurrency, handler: .sync({ Array(try handler($0).utf8) }))
    }

    /// `respond` with a handler returning text.
    public func respond(
        on queue: String, prefetch: Int = 1, concurrency: Int? = nil,
        handler: @escaping @Sendable (Request) async throws -> String
    ) async throws -> Responder {
        try await respond(on: queue, prefetch: prefetch, concurrency: concurrency) { request -> [UInt8] in
            Array(try await handler(request).utf8)
        }
    }

    /// Publishes a reply (or a remote error) to a request's reply-to.
    /// Replies go out without waiting for outbox room: there are at most `concurrency` of them in
    /// flight per responder, so they cannot grow the outbox without bound.
    func sendReply(to request: Delivery, _ outcome: Result<[UInt8], any Error>) {
        guard let replyTo = request.properties.replyTo, let id = request.properties.correlationID else { return }
        // A success carries no headers (no status means ok): nothing to encode or decode per call.
        var headers: [String: String] = [:]
        var payload: [UInt8]
        switch outcome {
        case .success(let bytes):
            payload = bytes
        case .failure(let error as RemoteError):
            headers = [ReplyHeader.status: ReplyHeader.error, ReplyHeader.errorCode: error.code]
            payload = Array(error.message.utf8)
        case .failure(let error):
            headers = [ReplyHeader.status: ReplyHeader.error, ReplyHeader.errorCode: "error"]
            payload = Array("\(error)".utf8)
        }
        if payload.count > maxFrameBytes - 1024 - replyTo.utf8.count - id.utf8.count {
            headers = [ReplyHeader.status: ReplyHeader.error, ReplyHeader.errorCode: "reply-too-large"]
            payload = Array("the reply was \(payload.count) bytes; the broker's frame limit is \(maxFrameBytes)".utf8)
        }
        var key = replyTo
        var correlation = id
        key.withUTF8 { k in
            payload.withUnsafeBytes { p in
                let noExchange = UnsafeRawBufferPointer(start: nil, count: 0)
                // The properties block (the correlation id, and headers if any) is built on the stack.
                let encodedHeaders = MessageProperties.encodedHeaders(headers)
                correlation.withUTF8 { i in
                    let size = RequestPropertiesEncoder.size(correlationIDCount: i.count, replyToCount: nil, headersCount: encodedHeaders.count)
                    withUnsafeTemporaryAllocation(byteCount: size, alignment: 1) { block in
                        var w = ByteWriter(block.baseAddress!)
                        encodedHeaders.withUnsafeBytes { headerBytes in
                            RequestPropertiesEncoder.write(
                                into: &w, correlationIDCount: i.count, { $0.bytes(UnsafeRawBufferPointer(i)) },
                                replyTo: nil, headers: headerBytes)
                        }
                        _ = try? enqueuePublishTo(0, noExchange, UnsafeRawBufferPointer(k), UnsafeRawBufferPointer(block), p)
                    }
                }
            }
        }
    }
}

/// A running responder; keep it to stop serving.
public final class Responder: Sendable {
    public let queue: String
    let consumer: Consumer
    let state: ResponderState

    init(queue: String, consumer: Consumer, state: ResponderState) {
        self.queue = queue
        self.consumer = consumer
        self.state = state
    }

    /// Stops taking requests; those not yet started go back to the queue. Handlers already running finish.
    public func cancel() async throws {
        try await consumer.cancel()
    }

    /// Requests handled so far.
    public var handled: Int { state.counts.withLock { $0.handled } }
}

/// Requests waiting for a free handler, and how many handlers run. Deliveries arrive on the peer's
/// loop; handlers finish on any thread, so the state is behind a lock.
final class ResponderState: Sendable {
    struct Counts {
        /// With when each arrived (monotonic ns), to drop those whose caller gave up meanwhile.
        var waiting: [(delivery: Delivery, arrivedAt: UInt64)] = []
        var running = 0
        var handled = 0
    }

    enum Handler: Sendable {
        /// Runs inline on the peer's loop: no task per request.
        case sync(@Sendable (Request) throws -> [UInt8])
        /// Runs in a task on the peer's loop (it may await other work).
        case async(@Sendable (Request) async throws -> [UInt8])
    }

    let counts = Mutex(Counts())
    let limit: Int
    let handler: Handler
    /// Strong on purpose: a responder keeps serving, and so keeps its peer alive, until it is
    /// cancelled or the peer is closed (which drops the consumer's handler and with it this state).
    /// An unowned reference could dangle if the peer were dropped while requests were arriving.
    let peer: Peer

    init(peer: Peer, limit: Int, handler: Handler) {
        self.peer = peer
        self.limit = limit
        self.handler = handler
    }

    private func finished() {
        counts.withLock {
            $0.running -= 1
            $0.handled += 1
        }
    }

    func arrived(_ delivery: Delivery) {
        if case .sync(let body) = handler {
            // Inline on the loop, one at a time: nothing ever waits for a free handler.
            accept(delivery)
            peer.sendReply(to: delivery, Result { try body(makeRequest(delivery)) })
            counts.withLock { $0.handled += 1 }
            return
        }
        counts.withLock { $0.waiting.append((delivery, monotonicNanos())) }
        startWhatFits()
    }

    /// Accepted: from here on, if this peer dies the caller hears `responderGone`. The ACK is
    /// written before the handler starts (one write more per request), so that holds even for a
    /// handler that blocks the loop or a process killed in it.
    private func accept(_ delivery: Delivery) {
        try? delivery.ack()
        peer.core.value.writeNow()
    }

    private func makeRequest(_ d: Delivery) -> Request {
        Request(payload: d.payload, properties: d.properties, routingKey: d.routingKey, publisher: d.publisher, redelivered: d.redelivered)
    }

    /// A request that waited here for a free handler longer than its expiration (its caller's
    /// timeout, set by `request`): its caller has given up, so it is acknowledged (the broker
    /// forgets it) and not run.
    private func expiredWhileWaiting(_ delivery: Delivery, arrivedAt: UInt64) -> Bool {
        guard let ms = delivery.properties.expiration else { return false }
        return monotonicNanos() &- arrivedAt > UInt64(ms) * 1_000_000
    }

    private func startWhatFits() {
        while let (next, arrivedAt) = counts.withLock({ c -> (Delivery, UInt64)? in
            guard c.running < limit, !c.waiting.isEmpty else { return nil }
            c.running += 1
            return c.waiting.removeFirst()
        }) {
            if expiredWhileWaiting(next, arrivedAt: arrivedAt) {
                try? next.ack()
                counts.withLock { $0.running -= 1 }
                continue
            }
            accept(next)
            let request = makeRequest(next)
            guard case .async(let body) = handler else { continue }  // sync handlers never wait (see `arrived`)
            // On the peer's loop: a handler that does not await anything else never leaves it.
            Task(executorPreference: peer.executor) { [peer] in
                let outcome: Result<[UInt8], any Error>
                do { outcome = .success(try await body(request)) } catch { outcome = .failure(error) }
                peer.sendReply(to: next, outcome)
                self.finished()
                self.startWhatFits()  // a waiting request may take its place
            }
        }
    }
}
