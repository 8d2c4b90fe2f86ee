import EvbusWire

/// What a peer has set up on the broker and must set up again after reconnecting: the exchanges,
/// queues and bindings it declared, its subscriptions and its consumers. Loop-bound, kept by
/// `PeerConnection` as the broker confirms each one, and replayed in the order it was made (so an
/// exchange is declared again before the bindings that name it).
struct RestorableTopology {
    enum Entry: Equatable {
        case exchange(name: String, kind: ExchangeKind, durable: Bool)
        /// `asked` is the name declared; "" for a broker-named queue, which gets a new name when
        /// declared again (bindings and consumers made after it follow the new name).
        case queue(asked: String, name: String, options: QueueOptions)
        case binding(queue: String, exchange: String, key: String)
        case subscription(pattern: String, policy: UInt8)
        case consumer(queue: String, flags: UInt8, prefetch: UInt16)
    }

    /// By the id of the request that made each (a subscription's or consumer's own id).
    private(set) var entries: [UInt32: Entry] = [:]
    /// Declarations by what they declare, so declaring the same thing twice is kept once.
    private var declared: [String: UInt32] = [:]

    var isEmpty: Bool { entries.isEmpty }

    /// The broker answered `request` with `reply` (success): remember what it set up or undid.
    mutating func succeeded(_ request: Frame, reply: Frame) {
        switch request {
        case .declareExchange(let id, let name, let kind, let passive, let durable) where !passive:
            remember(id, .exchange(name: name, kind: kind, durable: durable), key: "e\0" + name)
        case .declareQueue(let id, let asked, let options, let passive) where !passive:
            guard case .queueOK(_, let info) = reply else { return }
            remember(id, .queue(asked: asked, name: info.name, options: options), key: "q\0" + info.name)
        case .bind(let id, let queue, let exchange, let key):
            remember(id, .binding(queue: queue, exchange: exchange, key: key), key: Self.bindingKey(queue, exchange, key))
        case .unbind(_, let queue, let exchange, let key):
            if let id = declared.removeValue(forKey: Self.bindingKey(queue, exchange, key)) { entries[id] = nil }
        case .deleteExchange(_, let name, _):
            if let id = declared.removeValue(forKey: "e\0" + name) { entries[id] = nil }
            removeAll { if case .binding(_, name, _) = $0 { true } else { false } }
        case .deleteQueue(_, let name, _, _):
            if let id = declared.removeValue(forKey: "q\0" + name) { entries[id] = nil }
            removeAll { if case .binding(name, _, _) = $0 { true } else { false } }
        default:
            break
        }
    }

    mutating func subscribed(_ id: UInt32, pattern: String, policy: UInt8) {
        entries[id] = .subscription(pattern: pattern, policy: policy)
    }

    mutating func consuming(_ id: UInt32, queue: String, flags: UInt8, prefetch: UInt16) {
        entries[id] = .consumer(queue: queue, flags: flags, prefetch: prefetch)
    }

    /// A subscription or consumer ended (or a declaration could not be restored).
    mutating func forget(_ id: UInt32) {
        switch entries.removeValue(forKey: id) {
        case .exchange, .queue, .binding:
            if let key = declared.first(where: { $0.value == id })?.key { declared[key] = nil }
        case .subscription, .consumer, nil:
            break
        }
    }

    /// A broker-named queue came back as `new`: what was made after it follows.
    mutating func renamed(queue old: String, to new: String, declaredBy id: UInt32) {
        guard old != new, case .queue(let asked, _, let options) = entries[id] else { return }
        entries[id] = .queue(asked: asked, name: new, options: options)
        if declared.removeValue(forKey: "q\0" + old) != nil { declared["q\0" + new] = id }
        for (other, entry) in entries where other > id {
            switch entry {
            case .binding(old, let exchange, let key):
                declared.removeValue(forKey: Self.bindingKey(old, exchange, key))
                entries[other] = .binding(queue: new, exchange: exchange, key: key)
                declared[Self.bindingKey(new, exchange, key)] = other
            case .consumer(old, let flags, let prefetch):
                entries[other] = .consumer(queue: new, flags: flags, prefetch: prefetch)
            default:
                break
            }
        }
    }

    /// Everything to set up again, in the order it was first made.
    func inOrder() -> [(id: UInt32, entry: Entry)] {
        entries.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// The frame that sets `entry` up again, under its original id.
    static func frame(_ id: UInt32, _ entry: Entry) -> Frame {
        switch entry {
        case .exchange(let name, let kind, let durable): .declareExchange(requestID: id, name: name, kind: kind, durable: durable)
        case .queue(let asked, _, let options): .declareQueue(requestID: id, name: asked, options: options)
        case .binding(let queue, let exchange, let key): .bind(requestID: id, queue: queue, exchange: exchange, key: key)
        case .subscription(let pattern, let policy): .subscribe(subscriptionID: id, pattern: pattern, policy: policy)
        case .consumer(let queue, let flags, let prefetch): .consume(consumerID: id, queue: queue, flags: flags, prefetch: prefetch)
        }
    }

    private mutating func remember(_ id: UInt32, _ entry: Entry, key: String) {
        if let existing = declared[key], entries[existing] != nil { return }  // declared before: keep the first
        entries[id] = entry
        declared[key] = id
    }

    private mutating func removeAll(where matches: (Entry) -> Bool) {
        for (id, entry) in entries where matches(entry) { forget(id) }
    }

    private static func bindingKey(_ queue: String, _ exchange: String, _ key: String) -> String {
        "b\0" + queue + "\0" + exchange + "\0" + key
    }
}
