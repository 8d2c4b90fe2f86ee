/// What a controller's handlers and dispatches may name (the Twisted dispatcher's declared phases
/// and match keywords): its ordered phases, fixed at construction, and, when declared, the context
/// keywords that match specs and dispatches may use.
struct HandlerVocabulary: Sendable {
    let phases: [Phase]
    /// The allowed match keywords; nil allows any.
    var keywords: Set<String>?

    init(phases: [Phase], keywords: Set<String>?, controller: String) throws(ControllerError) {
        guard !phases.isEmpty else {
            throw ControllerError(.unknownPhase, "the controller '\(controller)' needs at least one phase")
        }
        if let twice = phases.enumerated().first(where: { phases.firstIndex(of: $0.element) != $0.offset }) {
            throw ControllerError(.unknownPhase, "the controller '\(controller)' lists the phase '\(twice.element)' twice")
        }
        self.phases = phases
        self.keywords = keywords
    }

    /// Context keys the library itself adds (`controller.forwardedFrom`, `evbus.message`): always
    /// allowed, and never valid in a match spec's vocabulary of their own.
    static func isReserved(_ key: String) -> Bool { key.hasPrefix("controller.") || key.hasPrefix("evbus.") }

    /// The position of `phase` in this controller's phases, or a refusal naming the known ones.
    func rank(of phase: Phase, event: String, controller: String) throws(ControllerError) -> Int {
        guard let rank = phases.firstIndex(of: phase) else {
            throw ControllerError(
                .unknownPhase,
                "a handler for '\(event)' names the phase '\(phase)', but the controller '\(controller)' has only \(phases.map(\.name))")
        }
        return rank
    }

    /// Refuses a match spec using a keyword the controller did not declare.
    func check(match: [String: String], event: String, controller: String) throws(ControllerError) {
        guard let keywords, let bad = match.keys.sorted().first(where: { !keywords.contains($0) }) else { return }
        throw ControllerError(
            .unknownKeyword,
            "a handler for '\(event)' matches on '\(bad)', which the controller '\(controller)' does not allow (allowed: \(keywords.sorted()))")
    }

    /// The refusal of a dispatch whose context uses an undeclared keyword, if it does.
    func refusal(context: [String: any Sendable], event: String, controller: String) -> ControllerError? {
        guard let keywords else { return nil }
        guard let bad = context.keys.sorted().first(where: { !keywords.contains($0) && !Self.isReserved($0) }) else { return nil }
        return ControllerError(
            .unknownKeyword,
            "a dispatch of '\(event)' carries the keyword '\(bad)', which the controller '\(controller)' does not allow (allowed: \(keywords.sorted()))")
    }
}
