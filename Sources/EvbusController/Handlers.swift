/// When a handler runs relative to the others for the same event. A controller has an ordered
/// list of phases (`before`, `during`, `after` unless it was given others, see `Controller.init`);
/// every handler of one phase finishes (async ones included) before any of the next starts.
public struct Phase: Hashable, Sendable, ExpressibleByStringLiteral, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public init(stringLiteral name: String) { self.name = name }
    public var description: String { name }

    public static let before = Phase("before")
    public static let during = Phase("during")
    public static let after = Phase("after")
    /// The phases of a controller given none.
    public static let standard: [Phase] = [.before, .during, .after]
}

/// Names one registration, for removal.
public struct HandlerID: Hashable, Sendable {
    let raw: UInt64
}

/// A handler body: plain (runs inline on the loop) or async (awaited on the loop before anything else
/// of this controller runs).
enum HandlerBody: Sendable {
    case sync(PlainHandler)
    case async(@Sendable (Session) async throws -> (any Sendable)?)

    var isAsync: Bool { if case .async = self { true } else { false } }
}

typealias PlainHandler = @Sendable (Session) throws -> (any Sendable)?

/// One handler registered for one event.
struct Registration: Sendable {
    let id: HandlerID
    let event: String
    /// The position of its phase in the controller's list of phases.
    let rank: Int
    /// Keyword values the dispatch's context must carry (compared as text), e.g. ["role": "admin"].
    let match: [String: String]
    /// Runs left before it removes itself; nil = unlimited.
    var remaining: Int?
    let body: HandlerBody

    func matches(_ context: [String: any Sendable]) -> Bool {
        for (key, wanted) in match {
            guard let value = context[key], "\(value)" == wanted else { return false }
        }
        return true
    }
}

/// The handlers one dispatch runs, in order, prepared for running: when none is async, their
/// bodies are also kept as a plain list, so the engine calls them without inspecting registrations.
final class HandlerSet: Sendable {
    let registrations: [Registration]
    /// Every body, when all are plain; nil when at least one is async (the engine then awaits).
    let plainBodies: [PlainHandler]?

    init(_ registrations: [Registration]) {
        self.registrations = registrations
        var bodies: [PlainHandler] = []
        for r in registrations {
            guard case .sync(let body) = r.body else {
                plainBodies = nil
                return
            }
            bodies.append(body)
        }
        plainBodies = bodies
    }

    static let empty = HandlerSet([])
}

/// Every controller's handlers by event name, each list kept in phase order, then registration order.
struct HandlerTable {
    private(set) var byEvent: [String: [Registration]] = [:]
    /// Events whose handlers all run unconditionally and forever, prepared once: `take` hands out
    /// the same set every time (no filtering, no copy) — the common case, and the hot path.
    private var plain: [String: HandlerSet] = [:]
    /// The last plain event taken and its handlers: a stream of one event name costs a string
    /// compare instead of a hash. Cleared on every change.
    private var last: (event: String, set: HandlerSet)?

    private mutating func store(_ event: String, _ list: [Registration]) {
        byEvent[event] = list.isEmpty ? nil : list
        if !list.isEmpty && list.allSatisfy({ $0.match.isEmpty && $0.remaining == nil }) {
            plain[event] = HandlerSet(list)
        } else {
            plain[event] = nil
        }
        last = nil
    }

    func has(_ event: String) -> Bool { byEvent[event] != nil }

    mutating func add(_ r: Registration) {
        var list = byEvent[r.event, default: []]
        let index = list.firstIndex { $0.rank > r.rank } ?? list.endIndex
        list.insert(r, at: index)
        store(r.event, list)
    }

    @discardableResult
    mutating func remove(_ id: HandlerID) -> Bool {
        for (event, list) in byEvent {
            if let i = list.firstIndex(where: { $0.id == id }) {
                var l = list
                l.remove(at: i)
                store(event, l)
                return true
            }
        }
        return false
    }

    /// The handlers to run for one dispatch, counting down (and dropping) limited ones.
    mutating func take(_ event: String, context: [String: any Sendable]) -> HandlerSet {
        if let last, last.event == event { return last.set }
        if let set = plain[event] {
            last = (event, set)
            return set
        }
        guard var list = byEvent[event] else { return .empty }
        var chosen: [Registration] = []
        var i = 0
        while i < list.count {
            if list[i].matches(context) {
                chosen.append(list[i])
                if let left = list[i].remaining {
                    if left <= 1 {
                        list.remove(at: i)
                        continue
                    }
                    list[i].remaining = left - 1
                }
            }
            i += 1
        }
        store(event, list)
        return HandlerSet(chosen)
    }

    func handlers(for event: String) -> [Registration] { byEvent[event] ?? [] }
}

/// A reusable set of registrations (EventDriven's MappingBlueprint): build it once, install it on
/// any number of controllers.
public struct Blueprint: Sendable {
    struct Entry: Sendable {
        var event: String
        var phase: Phase
        var match: [String: String]
        var times: Int?
        var body: HandlerBody
    }

    var entries: [Entry] = []

    public init() {}

    /// Adds a handler; see `Controller.on`.
    public mutating func on(
        _ event: String, phase: Phase = .during, match: [String: String] = [:], times: Int? = nil,
        _ body: @escaping @Sendable (Session) throws -> (any Sendable)?
    ) {
        entries.append(Entry(event: event, phase: phase, match: match, times: times, body: .sync(body)))
    }

    public mutating func on(
        _ event: String, phase: Phase = .during, match: [String: String] = [:], times: Int? = nil,
        _ body: @escaping @Sendable (Session) async throws -> (any Sendable)?
    ) {
        entries.append(Entry(event: event, phase: phase, match: match, times: times, body: .async(body)))
    }
}
