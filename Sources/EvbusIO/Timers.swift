import CEvbusLinux
import Glibc

/// Identifies a scheduled timer so it can be cancelled or re-timed.
public struct TimerID: Hashable, Sendable {
    let raw: UInt64
}

/// All of a loop's timers in one min-heap; the timerfd is armed for the earliest deadline only.
/// Cancelled timers are removed from `actions` and their heap entries skipped when they surface.
struct TimerHeap {
    struct Entry {
        var deadline: UInt64
        var id: UInt64
    }
    struct Action {
        var interval: UInt64?
        var deadline: UInt64
        var body: () -> Void
    }

    var heap: [Entry] = []
    var actions: [UInt64: Action] = [:]
    var nextID: UInt64 = 1
    /// The deadline the timerfd is armed for (0 = disarmed), to skip re-arming it for nothing.
    var armed: UInt64 = 0

    mutating func push(_ e: Entry) {
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if heap[parent].deadline <= heap[i].deadline { break }
            heap.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        siftDown(from: 0)
        return top
    }

    /// Moves the entry at `i` down until neither child is earlier.
    private mutating func siftDown(from start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && heap[l].deadline < heap[m].deadline { m = l }
            if r < heap.count && heap[r].deadline < heap[m].deadline { m = r }
            if m == i { return }
            heap.swapAt(i, m)
            i = m
        }
    }

    /// Drops every cancelled or re-timed entry once they outnumber the live ones, so timeouts
    /// cancelled long before their deadline (a request answered at once, with 30 s to spare)
    /// do not pile up in the heap. Amortised O(1) per cancel: a rebuild of n entries follows
    /// at least n/2 cancels.
    mutating func compactIfMostlyStale() {
        guard heap.count > 64, heap.count > 2 * actions.count else { return }
        heap.removeAll { entry in actions[entry.id].map { $0.deadline != entry.deadline } ?? true }
        // Floyd's heapify: sift down every parent, last first.
        for parent in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(from: parent) }
    }

    /// The earliest live deadline, dropping cancelled or re-timed entries from the top.
    mutating func earliest() -> UInt64? {
        while let top = heap.first {
            if let action = actions[top.id], action.deadline == top.deadline { return top.deadline }
            _ = pop()
        }
        return nil
    }
}

extension EventLoop {
    /// Runs `body` on the loop after `delay` nanoseconds, and then every `interval` nanoseconds if given.
    /// Loop thread only.
    @discardableResult
    public func scheduleTimer(afterNanos delay: UInt64, everyNanos interval: UInt64? = nil, _ body: @escaping () -> Void) -> TimerID {
        assertInLoop()
        let id = timers.nextID
        timers.nextID += 1
        let deadline = monotonicNanos() &+ delay
        timers.actions[id] = TimerHeap.Action(interval: interval, deadline: deadline, body: body)
        timers.push(.init(deadline: deadline, id: id))
        armTimerFD()
        return TimerID(raw: id)
    }

    /// Changes a repeating timer's interval (the next run is `interval` from now). Loop thread only.
    public func retime(_ timer: TimerID, everyNanos interval: UInt64) {
        assertInLoop()
        guard var action = timers.actions[timer.raw] else { return }
        action.interval = interval
        action.deadline = monotonicNanos() &+ interval
        timers.actions[timer.raw] = action
        timers.push(.init(deadline: action.deadline, id: timer.raw))
        armTimerFD()
    }

    /// Cancels a timer; harmless if it already ran or was cancelled. Loop thread only.
    public func cancelTimer(_ timer: TimerID) {
        assertInLoop()
        timers.actions[timer.raw] = nil
        timers.compactIfMostlyStale()
    }

    func armTimerFD() {
        // A timer later than the armed deadline changes nothing: skip the syscall (request/reply
        // schedules one timeout per call).
        let earliest = timers.earliest() ?? 0
        guard earliest != timers.armed else { return }
        timers.armed = earliest
        var spec = itimerspec()
        if let deadline = timers.earliest() {
            // Absolute time; a deadline already past fires at once (0 would disarm, so use 1 ns).
            let at = max(deadline, 1)
            spec.it_value = timespec(tv_sec: Int(at / 1_000_000_000), tv_nsec: Int(at % 1_000_000_000))
        }
        _ = timerfd_settime(timerFD, Int32(TFD_TIMER_ABSTIME), &spec, nil)
    }

    func fireTimers() {
        var expirations: UInt64 = 0
        _ = Glibc.read(timerFD, &expirations, 8)
        timers.armed = 0  // it fired: whatever comes next must be armed anew
        let now = monotonicNanos()
        while let deadline = timers.earliest(), deadline <= now, let entry = timers.pop() {
            guard var action = timers.actions[entry.id] else { continue }
            if let interval = action.interval {
                action.deadline = now &+ interval
                timers.actions[entry.id] = action
                timers.push(.init(deadline: action.deadline, id: entry.id))
            } else {
                timers.actions[entry.id] = nil
            }
            action.body()
        }
        armTimerFD()
    }
}

extension Duration {
    /// Whole nanoseconds, for the loop's timers: negative durations count as zero, and one too
    /// long to be a deadline (such as `.seconds(Int64.max)`, meant as "never") as about 146
    /// years, so that now plus it still fits a timer's 64-bit signed deadline.
    public var wholeNanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        let longest: Int64 = Int64.max / 2
        guard seconds >= 0 else { return 0 }
        guard seconds < longest / 1_000_000_000 else { return UInt64(longest) }
        return UInt64(max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
    }
}
