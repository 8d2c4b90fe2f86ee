import Glibc
import Synchronization

/// Where the core's time comes from: the monotonic clock, or a clock a test moves by hand (so TTL
/// and timeout rules are tested without sleeping). Nanoseconds, only ever compared and subtracted.
public enum BrokerClock: Sendable {
    case monotonic
    case manual(ManualClock)

    @inline(__always)
    public func now() -> UInt64 {
        switch self {
        case .monotonic:
            var t = timespec()
            clock_gettime(CLOCK_MONOTONIC, &t)
            return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
        case .manual(let clock):
            return clock.now
        }
    }
}

/// A clock that stands still until told to move.
public final class ManualClock: Sendable {
    private let nanos: Atomic<UInt64>

    public init(start: UInt64 = 1_000_000_000) { nanos = Atomic(start) }

    public var now: UInt64 { nanos.load(ordering: .relaxed) }

    public func advance(by duration: Duration) {
        let (s, a) = duration.components
        nanos.add(UInt64(s) * 1_000_000_000 + UInt64(a / 1_000_000_000), ordering: .relaxed)
    }
}
