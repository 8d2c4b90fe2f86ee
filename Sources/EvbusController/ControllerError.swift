/// Why a controller refused or failed a piece of work.
public struct ControllerError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// `dispatch`/`submit` after `shutdown()`, or work still queued when the controller stopped.
        public static let shutDown = Code(name: "shut-down")
        /// `Pending.wait` or `next` ran out of time.
        public static let timedOut = Code(name: "timed-out")
        /// A blocking wait on the controller's own loop thread, which would never return.
        public static let wouldDeadlock = Code(name: "would-deadlock")
        /// A handler names a phase the controller does not have (or its phase list is invalid).
        public static let unknownPhase = Code(name: "unknown-phase")
        /// A match spec or a dispatch's context uses a keyword the controller did not declare.
        public static let unknownKeyword = Code(name: "unknown-keyword")
        /// A socket address that cannot be used (not numeric, or a Unix path too long).
        public static let badAddress = Code(name: "bad-address")
        /// A socket call failed (bind, listen, connect...): the message names the call and errno.
        public static let socketFailed = Code(name: "socket-failed")
        /// A process pool's worker ran the work and its handler threw (or it had no handler).
        public static let workerFailed = Code(name: "worker-failed")
        /// A process pool's worker died while running the work.
        public static let workerCrashed = Code(name: "worker-crashed")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
