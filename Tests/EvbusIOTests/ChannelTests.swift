import EvbusIO
import Foundation
import Synchronization
import Testing

@Suite(.serialized) struct ChannelTests {
    /// Runs `body` on a fresh loop thread with one end of a socketpair wrapped in a Channel.
    func withChannel(
        high: Int = 1 << 20, low: Int = 256 << 10, recorder: Recorder = Recorder(),
        _ body: (EventLoop, LoopBound<Channel>, Int32) throws -> Void
    ) throws {
        let loop = try EventLoop.startThread(name: "io-test")
        defer { loop.stopAndJoin() }
        let (a, b) = try UnixSocket.pair()
        defer { close(b) }
        let channel = try loop.runAndWait {
            let s = try Channel(fd: a, loop: loop, highWatermark: high, lowWatermark: low)
            s.delegate = recorder
            return LoopBound(s, loop: loop)
        }
        try body(loop, channel, b)
        try loop.runAndWait { channel.value.close() }
    }

    @Test func bytesWrittenOnOneEndArriveInOrderOnTheOther() throws {
        let recorder = Recorder()
        try withChannel(recorder: recorder) { loop, channel, peer in
            let payload = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            writeAll(peer, payload)
            #expect(blockUntil { recorder.received.count == payload.count })
            #expect(recorder.received == payload)
            // And back: many writes in one iteration leave in one flush.
            let chunks = (0..<50).map { i in [UInt8](repeating: UInt8(i), count: 1000) }
            try loop.runAndWait { for c in chunks { channel.value.write(c) } }
            #expect(readExactly(peer, 50_000) == chunks.flatMap { $0 })
        }
    }

    @Test func unconsumedBytesAreOfferedAgainWithTheNextRead() throws {
        // The delegate takes at most 3 bytes per call (as a frame decoder leaves a partial frame):
        // the rest must be kept and offered again, in front of the next bytes, never lost or repeated.
        let recorder = Recorder(acceptAtMost: 3)
        try withChannel(recorder: recorder) { _, _, peer in
            writeAll(peer, Array(0..<10))
            #expect(blockUntil { recorder.received.count == 3 })
            writeAll(peer, Array(10..<20))
            #expect(blockUntil { recorder.received.count == 6 })
            usleep(20_000)
            #expect(recorder.received == Array(0..<6))
        }
    }

    @Test func largeWritesSpanChunksAndArriveIntact() throws {
        try withChannel(high: 64 << 20, low: 1 << 20) { loop, channel, peer in
            let big = (0..<(3 * WriteQueue.chunkSize + 123)).map { UInt8(truncatingIfNeeded: $0) }
            try loop.runAndWait { channel.value.write(big) }
            #expect(readExactly(peer, big.count) == big)
        }
    }

    @Test func watermarksTurnWritabilityOffAndBackOn() throws {
        let recorder = Recorder()
        try withChannel(high: 64 << 10, low: 16 << 10, recorder: recorder) { loop, channel, peer in
            // Nobody reads `peer`: the kernel buffer fills, then our queue grows past the high watermark.
            let block = [UInt8](repeating: 1, count: 32 << 10)
            var written = 0
            let isWritable = { try loop.runAndWait { channel.value.isWritable } }
            while try isWritable() && written < 64 << 20 {
                try loop.runAndWait { channel.value.write(block) }
                written += block.count
            }
            #expect(try !isWritable())
            #expect(try loop.runAndWait { channel.value.bufferedBytes } > 64 << 10)
            // Drain from the other end: the queue falls below the low watermark and the delegate hears it.
            #expect(readExactly(peer, written).count == written)
            #expect(blockUntil { (try? isWritable()) == true })
            #expect(recorder.state.withLock { $0.writableCallbacks } == 1)
        }
    }

    @Test func pausedReadingKeepsBytesUntilResumed() throws {
        let recorder = Recorder()
        try withChannel(recorder: recorder) { loop, channel, peer in
            try loop.runAndWait { channel.value.pauseReading() }
            writeAll(peer, [1, 2, 3])
            usleep(50_000)
            #expect(recorder.received.isEmpty)
            try loop.runAndWait { channel.value.resumeReading() }
            #expect(blockUntil { recorder.received == [1, 2, 3] })
        }
    }

    @Test func endOfFileClosesWithThatReason() throws {
        let recorder = Recorder()
        let loop = try EventLoop.startThread(name: "io-test")
        defer { loop.stopAndJoin() }
        let (a, b) = try UnixSocket.pair()
        _ = try loop.runAndWait {
            let s = try Channel(fd: a, loop: loop)
            s.delegate = recorder
            return LoopBound(s, loop: loop)
        }
        writeAll(b, [9, 9])
        close(b)
        #expect(blockUntil { recorder.closeReason != nil })
        #expect(recorder.closeReason == .endOfFile)
        #expect(recorder.received == [9, 9])
        #expect(try loop.runAndWait { loop.registrationCount } == 0)
    }

    @Test func closeAfterFlushDeliversQueuedBytesFirst() throws {
        let loop = try EventLoop.startThread(name: "io-test")
        defer { loop.stopAndJoin() }
        let (a, b) = try UnixSocket.pair()
        defer { close(b) }
        try loop.runAndWait {
            let s = try Channel(fd: a, loop: loop)
            s.write([UInt8](repeating: 5, count: 200_000))
            s.closeAfterFlush()
        }
        let got = readExactly(b, 200_001)
        #expect(got.count == 200_000)
    }

    @Test func peerCredentialsNameThisProcess() throws {
        let (a, b) = try UnixSocket.pair()
        defer { close(a); close(b) }
        let creds = try UnixSocket.peerCredentials(a)
        #expect(creds.pid == getpid())
        #expect(creds.uid == getuid())
    }
}
