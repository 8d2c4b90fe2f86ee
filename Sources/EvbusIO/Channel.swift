import CEvbusLinux
import Glibc

/// What a channel's owner hears about it. All calls arrive on the loop thread.
public protocol ChannelDelegate: AnyObject {
    /// New bytes (with any partial frame kept from before in front). Return how many were used; the
    /// rest is kept and offered again with the next bytes. Returning less than all while reading is
    /// paused is how a delegate stops mid-buffer.
    func channelReceived(_ channel: Channel, _ bytes: UnsafeRawBufferPointer) -> Int
    /// The write queue drained below the low watermark after having gone over the high one.
    func channelBecameWritable(_ channel: Channel)
    /// The channel closed (by either side); it is already deregistered and its fd closed.
    func channelClosed(_ channel: Channel, _ reason: Channel.CloseReason)
}

/// One connected non-blocking socket on an event loop: reads into the loop's shared buffer, queues
/// writes and flushes them once per loop iteration, and tracks high/low watermarks.
///
/// Loop-bound: every method must be called on the loop thread.
public final class Channel: Selectable {
    public enum CloseReason: Sendable, Equatable, CustomStringConvertible {
        /// The other side closed the connection.
        case endOfFile
        /// A read or write failed.
        case error(IOError)
        /// `close()` was called on this side.
        case local

        public var description: String {
            switch self {
            case .endOfFile: "closed by peer"
            case .error(let e): e.description
            case .local: "closed locally"
            }
        }
    }

    public unowned let loop: EventLoop
    /// Strong while open (the loop's registration keeps the channel, the channel keeps its owner);
    /// cleared on close, which breaks the cycle.
    @exclusivity(unchecked) public var delegate: (any ChannelDelegate)?
    public let highWatermark: Int
    public let lowWatermark: Int

    // Hot-path state below is only touched on the loop thread, one access at a time; dynamic
    // exclusivity checks on it cost more than the work itself (measured with perf), so they are off.
    @usableFromInline @exclusivity(unchecked) var outbound = WriteQueue()
    /// A partial frame left over from the last read; empty (unallocated) for an idle connection.
    @exclusivity(unchecked) private var pending: [UInt8] = []
    @exclusivity(unchecked) private var registration: EventLoop.Registration?
    // `fd`, `interest` and the Booleans are declared together so they pack into the padding after
    // `registration`: an idle connection is mostly these objects.
    public let fd: Int32
    @exclusivity(unchecked) private var interest: UInt32
    @exclusivity(unchecked) private var isDirty = false
    /// Open, then (optionally) closing while queued output flushes, then closed: one value, so
    /// no combination of flags can contradict another.
    public enum Lifecycle: Sendable { case open, closing, closed }
    @exclusivity(unchecked) public private(set) var lifecycle = Lifecycle.open
    /// Closed: deregistered and its fd closed.
    public var isClosed: Bool { lifecycle == .closed }
    /// Flushing its output before it closes (`closeAfterFlush`), or closed.
    public var isClosing: Bool { lifecycle != .open }
    @exclusivity(unchecked) public private(set) var isReadingPaused = false
    /// False from the moment the write queue passes `highWatermark` until it drains below `lowWatermark`.
    @exclusivity(unchecked) public private(set) var isWritable = true

    /// Wraps a connected fd (non-blocking) and registers it with `loop`. Loop thread only.
    public init(fd: Int32, loop: EventLoop, highWatermark: Int = 1 << 20, lowWatermark: Int = 256 << 10) throws(IOError) {
        precondition(lowWatermark <= highWatermark, "low watermark above high watermark")
        self.fd = fd
        self.loop = loop
        self.highWatermark = highWatermark
        self.lowWatermark = lowWatermark
        self.interest = CEvbus_EPOLLIN | CEvbus_EPOLLRDHUP
        registration = try loop.register(fd, events: interest, handler: self)
    }

    /// Bytes queued for writing and not yet accepted by the kernel.
    public var bufferedBytes: Int { outbound.count }

    // MARK: Reading

    public func ready(_ events: UInt32) {
        if events & CEvbus_EPOLLOUT != 0 { flushNow() }
        if isClosed { return }
        if isReadingPaused {
            // epoll reports a hang-up or an error whatever the interest, on every wait while it
            // lasts (level-triggered): left unread while paused, it would spin the loop. The other
            // side has gone for good, so the connection closes now, and what it sent that was not
            // read yet is discarded (it was never confirmed: PROTOCOL.md §8).
            if events & (CEvbus_EPOLLHUP | CEvbus_EPOLLERR) != 0 { closeOnHangUp(events) }
            return
        }
        if events & (CEvbus_EPOLLIN | CEvbus_EPOLLHUP | CEvbus_EPOLLERR | CEvbus_EPOLLRDHUP) != 0 {
            readOnce()
        }
    }

    private func closeOnHangUp(_ events: UInt32) {
        guard events & CEvbus_EPOLLERR != 0 else { return close(.endOfFile) }
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
        close(.error(IOError("socket", errno: code == 0 ? ECONNRESET : code)))
    }

    private func readOnce() {
        let kept = pending.count
        loop.ensureReadCapacity(kept + 64 * 1024)
        let buffer = loop.readBuffer
        if kept > 0 {
            pending.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: kept) }
            pending.removeAll(keepingCapacity: false)
        }
        let n: Int?
        do {
            n = try syscall("read") { Glibc.read(fd, buffer.baseAddress! + kept, buffer.count - kept) }
        } catch {
            close(.error(error))
            return
        }
        guard let n else {
            keep(UnsafeRawBufferPointer(rebasing: buffer[0..<kept]))
            return
        }
        if n == 0 {
            if kept > 0 { deliver(UnsafeRawBufferPointer(rebasing: buffer[0..<kept])) }
            close(.endOfFile)
            return
        }
        deliver(UnsafeRawBufferPointer(rebasing: buffer[0..<(kept + n)]))
    }

    private func deliver(_ bytes: UnsafeRawBufferPointer) {
        guard let delegate, !isClosing else { return }
        let used = delegate.channelReceived(self, bytes)
        if isClosing { return }
        if used < bytes.count { keep(UnsafeRawBufferPointer(rebasing: bytes[used...])) }
    }

    private func keep(_ bytes: UnsafeRawBufferPointer) {
        if !bytes.isEmpty { pending = Array(bytes) }
    }

    /// Stops reading from the socket (the kernel buffer then fills and the sender blocks).
    public func pauseReading() {
        guard !isReadingPaused, !isClosed else { return }
        isReadingPaused = true
        setInterest(interest & ~(CEvbus_EPOLLIN | CEvbus_EPOLLRDHUP))
    }

    /// Resumes reading; bytes kept while paused are offered again before anything new is read.
    public func resumeReading() {
        guard isReadingPaused, !isClosing else { return }
        isReadingPaused = false
        setInterest(interest | CEvbus_EPOLLIN | CEvbus_EPOLLRDHUP)
        if !pending.isEmpty {
            loop.deferWork { [self] in
                guard !isReadingPaused, !isClosed, !pending.isEmpty else { return }
                let bytes = pending
                pending = []
                bytes.withUnsafeBytes { deliver($0) }
            }
        }
    }

    private func setInterest(_ events: UInt32) {
        guard events != interest, let registration else { return }
        interest = events
        do { try loop.modify(fd, registration, events: events) } catch { close(.error(error)) }
    }

    // MARK: Writing

    /// Contiguous space for `n` bytes of output; call `commit` with what was written into it.
    @inlinable
    public func reserve(_ n: Int) -> UnsafeMutableRawPointer { outbound.reserve(n) }

    /// Queues bytes written at `reserve`'s pointer; they leave at the end of this loop iteration.
    public func commit(_ n: Int) {
        outbound.commit(n)
        noteQueued()
    }

    public func write(_ bytes: UnsafeRawBufferPointer) {
        outbound.append(bytes)
        noteQueued()
    }

    /// Queues all of `queue`'s bytes without copying them.
    public func write(contentsOf queue: consuming WriteQueue) {
        guard !queue.isEmpty else { return }
        outbound.append(contentsOf: queue)
        noteQueued()
    }

    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    @inline(__always)
    private func noteQueued() {
        if !isDirty && !isClosed {
            isDirty = true
            loop.markDirty(self)
        }
        if isWritable && outbound.count > highWatermark { isWritable = false }
    }

    /// Writes what is queued now, instead of at the end of the loop's turn: for a frame the
    /// other side must have before this side does anything else (a request's ACK before its
    /// handler runs). Loop thread only.
    public func flush() {
        if !isClosed { flushNow() }
    }

    func flushFromLoop() {
        isDirty = false
        if !isClosed { flushNow() }
    }

    /// Writes as much of the queue as the kernel takes now; waits for EPOLLOUT for the rest.
    private func flushNow() {
        while !outbound.isEmpty {
            let count = outbound.gather(into: loop.iovecs)
            let written: Int?
            do {
                written = try syscall("sendmsg") { CEvbus_sendv(fd, loop.iovecs.baseAddress, Int32(count)) }
            } catch {
                close(.error(error))
                return
            }
            guard let written else {
                setInterest(interest | CEvbus_EPOLLOUT)
                return
            }
            outbound.consume(written)
        }
        setInterest(interest & ~CEvbus_EPOLLOUT)
        if lifecycle == .closing {
            close(.local)
            return
        }
        if !isWritable && outbound.count <= lowWatermark {
            isWritable = true
            delegate?.channelBecameWritable(self)
        }
    }

    /// Drops the queued frames not yet begun (see `WriteQueue.dropUnstartedFrames`): for a
    /// connection about to be told it is being cut off, so that message is not stuck behind them.
    public func discardUnsentFrames() {
        outbound.dropUnstartedFrames()
    }

    // MARK: Closing

    /// Closes now; queued output is discarded. The delegate hears `channelClosed` once.
    public func close(_ reason: CloseReason = .local) {
        guard !isClosed else { return }
        lifecycle = .closed
        if let registration { loop.deregister(fd, registration) }
        registration = nil
        Glibc.close(fd)
        pending = []
        let d = delegate
        delegate = nil
        d?.channelClosed(self, reason)
    }

    /// Stops reading, writes what is queued, then closes. Closes anyway after `graceNanos`.
    public func closeAfterFlush(graceNanos: UInt64 = 2_000_000_000) {
        guard lifecycle == .open else { return }
        pauseReading()
        lifecycle = .closing
        if outbound.isEmpty {
            close(.local)
            return
        }
        if !isDirty {
            isDirty = true
            loop.markDirty(self)
        }
        loop.scheduleTimer(afterNanos: graceNanos) { [weak self] in self?.close(.local) }
    }
}
