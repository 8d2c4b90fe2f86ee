import EvbusIO
@_exported import EvbusTestSupport
import Foundation
import Synchronization

/// Records what a channel delivers, from the loop thread, for assertions on the test thread.
final class Recorder: ChannelDelegate, @unchecked Sendable {
    // @unchecked Sendable: every mutable property is behind `state`; the class is handed to the
    // loop thread only to be called there.
    struct State {
        var bytes: [UInt8] = []
        var closed: Channel.CloseReason?
        var writableCallbacks = 0
    }
    let state = Mutex(State())
    /// How many bytes to accept per callback (nil = all).
    let acceptAtMost: Int?

    init(acceptAtMost: Int? = nil) { self.acceptAtMost = acceptAtMost }

    func channelReceived(_ channel: Channel, _ bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, acceptAtMost ?? bytes.count)
        state.withLock { $0.bytes.append(contentsOf: bytes[0..<n]) }
        return n
    }

    func channelBecameWritable(_ channel: Channel) { state.withLock { $0.writableCallbacks += 1 } }
    func channelClosed(_ channel: Channel, _ reason: Channel.CloseReason) { state.withLock { $0.closed = reason } }

    var received: [UInt8] { state.withLock { $0.bytes } }
    var closeReason: Channel.CloseReason? { state.withLock { $0.closed } }
}



/// Reads whatever is available on a blocking-ish raw fd (non-blocking fd: loops until `count` bytes).
func readExactly(_ fd: Int32, _ count: Int) -> [UInt8] {
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    let deadline = Date().addingTimeInterval(20)
    while out.count < count && Date() < deadline {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, count - out.count)) }
        if n > 0 { out.append(contentsOf: chunk[0..<n]) } else if n == 0 { break } else { usleep(1_000) }
    }
    return out
}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n > 0 { offset += n } else { usleep(1_000) }
    }
}
