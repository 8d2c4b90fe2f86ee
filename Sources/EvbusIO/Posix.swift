import Glibc

/// A failed system call: which call, and errno.
public struct IOError: Error, Equatable, Sendable, CustomStringConvertible {
    public var call: String
    public var errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// The one wrapper every system call goes through: retries EINTR, reports EAGAIN as `nil`
/// ("would block"), throws everything else with the call's name.
@inline(__always)
func syscall<T: FixedWidthInteger>(_ name: @autoclosure () -> String, _ body: () -> T) throws(IOError) -> T? {
    while true {
        let r = body()
        if r >= 0 { return r }
        let e = Glibc.errno
        if e == EINTR { continue }
        if e == EAGAIN || e == EWOULDBLOCK { return nil }
        throw IOError(name(), errno: e)
    }
}

/// Like `syscall` for calls that never legitimately block.
@inline(__always)
@discardableResult
func syscallNoWait<T: FixedWidthInteger>(_ name: @autoclosure () -> String, _ body: () -> T) throws(IOError) -> T {
    while true {
        let r = body()
        if r >= 0 { return r }
        let e = Glibc.errno
        if e == EINTR { continue }
        throw IOError(name(), errno: e)
    }
}

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC): for timers and latency, never wall time.
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
