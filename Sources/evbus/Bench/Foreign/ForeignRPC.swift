import EvbusIO
import Foundation
import Synchronization

/// The `rpc` and `rpc-8` scenarios relayed through NATS or Redis, the way their users do request/
/// reply: NATS's reply subjects (`PUB subject reply-to`), and Redis pub/sub (each client subscribes
/// to its own reply channel; the responder publishes there, from a second connection because a
/// subscribed Redis connection cannot publish). Same 16-byte payload, warm-up, counts and
/// percentiles as evbus's scenario; every client is a thread doing sequential round trips.
enum ForeignRPC {
    static func roundTrips(_ bus: ForeignBus, name: String, calls: Int, clients: Int) throws -> String {
        guard bus.kind != .rabbitmq else { throw BenchError(ForeignBus.pubSubOnly) }
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
        let label = "\(bus.kind.rawValue) \(name)"
        return "\(label.padding(toLength: 26, withPad: " ", startingAt: 0)) round trips/s \(BenchReport.human(BenchReport.rate(sorted.count, nanos: elapsed)))  "
            + "calls \(sorted.count) clients \(clients)  latency p50 \(BenchReport.micros(BenchReport.percentile(sorted, 50)))"
            + " p99 \(BenchReport.micros(BenchReport.percentile(sorted, 99))) p99.9 \(BenchReport.micros(BenchReport.percentile(sorted, 99.9)))"
    }

    /// One party: a connection subscribed to `listenOn`, and (Redis) a second one to publish from.
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
            switch bus.kind {
            case .nats:
                outbound = inbound
                inbound.write("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB \(subject) 1\r\nPING\r\n")
            default:
                outbound = try RawSocket(address: bus.address)
                inbound.write(bus.resp(["SUBSCRIBE", subject]))
                let drain = outbound
                Thread.detachNewThread {  // PUBLISH answers ":<receivers>"; nobody needs them
                    var scratch = ReceiveBuffer()
                    while scratch.fill(from: drain) { scratch.start = scratch.end }
                }
            }
            _ = nextMessage(untilReady: true)
        }

        /// One round trip: publish a request naming this endpoint as the reply address, wait for the answer.
        func call(_ service: String, client: Int) {
            switch bus.kind {
            case .nats:
                outbound.write(Array("PUB \(service) \(subject) \(payload.count)\r\n".utf8) + payload + [13, 10])
            default:
                var request = payload
                request.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(client), as: UInt64.self) }
                outbound.write(publishCommand(service, request))
            }
            _ = nextMessage()
        }

        /// The responder: echo every request to its reply address.
        func serve(service: String) {
            while let (replyTo, body) = nextMessage() {
                switch bus.kind {
                case .nats:
                    guard let replyTo else { continue }
                    outbound.write(Array("PUB \(replyTo) \(body.count)\r\n".utf8) + body + [13, 10])
                default:
                    let client = body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                    outbound.write(publishCommand("\(service).reply.\(client)", body))
                }
            }
        }

        private func publishCommand(_ channel: String, _ body: [UInt8]) -> [UInt8] {
            Array("*3\r\n$7\r\nPUBLISH\r\n$\(channel.utf8.count)\r\n\(channel)\r\n$\(body.count)\r\n".utf8) + body + [13, 10]
        }

        /// The next message on the inbound connection (reply-to, payload), answering NATS PINGs and
        /// skipping everything else; with `untilReady`, returns at the subscription's confirmation
        /// (NATS's PONG, Redis's subscribe reply) instead. Nil at EOF.
        private func nextMessage(untilReady: Bool = false) -> (String?, [UInt8])? {
            while true {
                if let found = parseOne(untilReady: untilReady) { return found }
                guard buffer.fill(from: inbound) else { return nil }
            }
        }

        private func parseOne(untilReady: Bool) -> (String?, [UInt8])?? {
            let b = buffer
            guard let e = b.crlf(from: b.start) else { return nil }
            let line = String(decoding: UnsafeRawBufferPointer(rebasing: b.storage[b.start..<e]), as: UTF8.self)
            switch bus.kind {
            case .nats:
                if line.hasPrefix("MSG ") {
                    let tokens = line.split(separator: " ")
                    let n = Int(tokens.last!) ?? 0
                    guard e + 2 + n + 2 <= b.end else { return nil }
                    let body = Array(UnsafeRawBufferPointer(rebasing: b.storage[(e + 2)..<(e + 2 + n)]))
                    buffer.start = e + 2 + n + 2
                    return .some((tokens.count == 5 ? String(tokens[3]) : nil, body))
                }
                buffer.start = e + 2
                if line == "PING" { outbound.write("PONG\r\n") }
                if line == "PONG" && untilReady { return .some((nil, [])) }
                return parseOne(untilReady: untilReady)
            default:
                // A push is "*3" then three items: kind, channel, then the payload (or a count).
                guard line.hasPrefix("*") else {
                    buffer.start = e + 2
                    return parseOne(untilReady: untilReady)
                }
                var p = e + 2
                var items: [[UInt8]] = []
                for _ in 0..<(Int(line.dropFirst()) ?? 0) {
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
                if items.first == Array("message".utf8), items.count == 3 { return .some((nil, items[2])) }
                if untilReady { return .some((nil, [])) }
                return parseOne(untilReady: untilReady)
            }
        }
    }
}
