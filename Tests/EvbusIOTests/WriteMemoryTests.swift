@testable import EvbusIO
import Testing

/// A connection's first chunk is sized to what it writes, and the memory a burst took is given
/// back once the write queues drain, but not while they stay busy.
@Suite struct WriteMemoryTests {
    @Test func anEmptyQueueStartsWithASmallChunkAndGrowsInStandardOnes() {
        var q = WriteQueue()
        q.append([UInt8](repeating: 1, count: 100))
        #expect(q.chunks.map(\.capacity) == [WriteQueue.firstChunkSize])
        q.append([UInt8](repeating: 2, count: WriteQueue.firstChunkSize))  // does not fit what is left
        #expect(q.chunks.map(\.capacity) == [WriteQueue.firstChunkSize, WriteQueue.chunkSize])
        q.consume(q.count)
        #expect(q.chunks.isEmpty)
        // A frame larger than a first chunk gets a chunk of its own size.
        q.append([UInt8](repeating: 3, count: 10_000))
        #expect(q.chunks.map(\.capacity) == [10_000])
    }

    @Test func aDrainedBurstIsTrimmedOnceAndSteadyLoadNever() {
        let gauge = WriteMemory()
        var trims = 0
        // Steady load: chunks come and go, the bytes held never fall far below their peak.
        for _ in 0..<100 {
            gauge.allocated(WriteQueue.chunkSize)
            gauge.freed(WriteQueue.chunkSize)
        }
        #expect(!gauge.returnAfterBurst { trims += 1 })
        // A burst: 16 MiB taken, then drained.
        for _ in 0..<4096 { gauge.allocated(4096) }
        #expect(gauge.liveBytes == 16 << 20)
        #expect(!gauge.returnAfterBurst { trims += 1 }, "still held: nothing to give back")
        for _ in 0..<4096 { gauge.freed(4096) }
        #expect(gauge.returnAfterBurst { trims += 1 })
        #expect(!gauge.returnAfterBurst { trims += 1 }, "the peak restarted: a second call has nothing new")
        #expect(trims == 1)
    }
}
