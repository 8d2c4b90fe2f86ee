import EvbusIO
import Testing

/// Dropping what a connection has not begun to receive keeps the stream whole frames.
@Suite struct WriteQueueDropTests {
    /// A frame as PROTOCOL.md §4 has it: `u32 length` (type and body), type, body.
    func frame(_ type: UInt8, _ bodyCount: Int) -> [UInt8] {
        withUnsafeBytes(of: UInt32(bodyCount + 1).littleEndian, Array.init) + [type] + [UInt8](repeating: type, count: bodyCount)
    }

    @Test func droppingKeepsThePartlyWrittenFrameWholeAndNothingAfterIt() {
        var q = WriteQueue()
        for i in 0..<10 { q.append(frame(UInt8(i + 1), 1000)) }  // 1005 bytes each, one chunk
        q.consume(1005 + 300)  // frame 1 written, 300 bytes of frame 2
        q.dropUnstartedFrames()
        let left = q.count
        #expect(left == 1005 - 300, "the rest of frame 2 only")
        // At a frame boundary nothing is kept; an untouched queue keeps nothing either.
        var r = WriteQueue()
        for i in 0..<3 { r.append(frame(UInt8(i + 1), 10)) }
        r.consume(15)
        r.dropUnstartedFrames()
        let rEmpty = r.isEmpty
        #expect(rEmpty)
        var t = WriteQueue()
        t.append(frame(9, 10))
        t.dropUnstartedFrames()
        let tEmpty = t.isEmpty
        #expect(tEmpty)
    }

    @Test func framesInLaterChunksGoToo() {
        var q = WriteQueue()
        // Frames of 40,005 bytes: the second does not fit the first 64 KiB chunk and starts another.
        for i in 0..<4 { q.append(frame(UInt8(i + 1), 40_000)) }
        q.consume(10)
        q.dropUnstartedFrames()
        let left = q.count
        #expect(left == 40_005 - 10)
    }
}
