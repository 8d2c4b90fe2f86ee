import EvbusIO
import Foundation
import Synchronization

/// The `rpc` and `rpc-8` scenarios relayed through Redis, the way its users do request/reply:
/// pub/sub, each client subscribed to its own reply channel; the responder publishes there, from
/// a second connection because a subscribed Redis connection cannot publish. Same 16-byte
/// payload, warm-up, counts and percentiles as evbus's scenario; every client is a thread doing
/// sequential round trips. (NATS's side is `NATSBench.roundTrips`.)
enum ForeignRPC {
    static func roundTrips(_ bus: ForeignBus, name: String, calls: Int, clients: Int) throws -> String {
        guard bus.kind == .redis else { throw BenchError("ForeignRPC drives Redis only") }
        let service = "bench.\(name).\(getpid())"
        let responder = try Endpoint(bus, listenOn: service)
        Thread.detachNewThread { responder.serve(service: service) }
        let endpoints = try (0..<clients).map { try Endpoint(bus, listenOn: "\(service).reply.\($0)") }
        for (i, e) in endpoints.enumerated() { for _ in 0..<200 { e.call(service, client: i) } }  // warm-up
        let perClient = calls / clients
        let latencies = Mutex<[UInt64]>([])
        let done = DispatchGroup()
        let start = monotonicNanos()
        for (i, e) in endpoints.enumerated() {
            done.enter()
            Thread.detachNewThread {
                var mine: [UInt64] = []
                mine.reserveCapacity(perClient)
                for _ in 0..<perClient {
                    let t0 = monotonicNanos()
                    e.call(service, client: i)
                    mine.append(monotonicNanos() - t0)
                }
                latencies.withLock { $0 += mine }
                done.leave()
            }
        }
        done.wait()
        let elapsed = monotonicNanos() - start
        let sorted = latencies.withLock { $0.sorted() }
        withExtendedLifetime((responder, endpoints)) {}
        return BenchReport.roundTripLine("redis \(name)", sorted, nanos: elapsed, clients: clients)
    }

    /// One party: a connection subscribed to `listenOn`, and a second one to publish from.
    ///
    /// `@unchecked Sendable` proof: the only mutable state is `buffer`. The creating thread uses it
    /// (subscribing, then the warm-up calls) and only afterwards starts the one thread that uses
    /// the endpoint from then on (its client thread, or the responder's); starting a thread orders
    /// everything before it. The Redis drain thread touches only its own buffer and the socket.
    final class Endpoint: @unchecked Sendable {
        let bus: ForeignBus
        let inbound: RawSocket
        let outbound: RawSocket
        let subject: String
        private var buffer = ReceiveBuffer()
        private let payload: [UInt8]

        init(_ bus: ForeignBus, listenOn subject: String) throws {
            self.bus = bus
            self.subject = subject
            payload = [UInt8](repeating: 0x61, count: 16)
            inbound = try RawSocket(address: bus.address)
            outbound = try RawSocket(address: bus.address)
            inbound.write(bus.resp(["SUBSCRIBE", subject]))
            let drain = outbound
            Thread.detachNewThread {  // PUBLISH answers ":<receivers>"; nobody needs them
                var scratch = ReceiveBuffer()
                while scratch.fill(from: drain) { scratch.start = scratch.end }
            }
            _ = nextMessage(untilReady: true)
        }

        /// One round trip: publish a request naming this endpoint as the reply address, wait for the answer.
        func call(_ service: String, client: Int) {
            var request = payload
            request.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(client), as: UInt64.self) }
            outbound.write(publishCommand(service, request))
            _ = nextMessage()
        }

        /// The responder: echo every request to its reply address.
        func serve(service: String) {
            while let body = nextMessage() {
                let client = body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                outbound.write(publishCommand("\(service).reply.\(client)", body))
            }
        }

        private func publishCommand(_ channel: String, _ body: [UInt8]) -> [UInt8] {
            Array("*3\r\n$7\r\nPUBLISH\r\n$\(channel.utf8.count)\r\n\(channel)\r\n$\(body.count)\r\n".utf8) + body + [13, 10]
        }

        /// The next message's payload on the inbound connection, skipping everything else; with
        /// `untilReady`, returns at the subscription's confirmation instead. Nil at EOF.
        private func nextMessage(untilReady: Bool = false) -> [UInt8]? {
            while true {
                if let found = parseOne(untilReady: untilReady) { return found }
                guard buffer.fill(from: inbound) else { return nil }
            }
        }

        private func parseOne(untilReady: Bool) -> [UInt8]?? {
            let b = buffer
            guard let e = b.crlf(from: b.start) else { return nil }
            // A push is "*3" then three items: kind, channel, then the payload (or a count).
            guard b.storage[b.start] == UInt8(ascii: "*") else {
                buffer.start = e + 2
                return parseOne(untilReady: untilReady)
            }
            var p = e + 2
            var items: [[UInt8]] = []
            for _ in 0..<b.number(b.start + 1, e) {
                guard p < b.end, let le = b.crlf(from: p) else { return nil }
                if b.storage[p] == UInt8(ascii: ":") {
                    items.append([])
                    p = le + 2
                    continue
                }
                let n = b.number(p + 1, le)
                guard le + 2 + n + 2 <= b.end else { return nil }
                items.append(Array(UnsafeRawBufferPointer(rebasing: b.storage[(le + 2)..<(le + 2 + n)])))
                p = le + 2 + n + 2
            }
            buffer.start = p
            if items.first == Array("message".utf8), items.count == 3 { return .some(items[2]) }
            if untilReady { return .some([]) }
            return parseOne(untilReady: untilReady)
        }
    }
}
