@testable import EvbusBroker
import Evbus
import EvbusIO
import EvbusTestSupport
import Foundation
import Testing

/// The broker's log lines: logfmt, the journal's priorities, and the rate limit on refusals.
@Suite struct LogFormatTests {
    func fields(_ line: String) -> [(String, String)] { Logfmt.fields(line) }

    @Test func linesAreKeyValuePairsInAStableOrder() {
        let lines = LogCapture()
        let log = Logger(label: "t", level: .debug, sink: { lines.append($0) })
        log.log(.warning, fields: [("conn", "12"), ("uid", "1000"), ("pid", "4242"), ("name", "thermo stat"), ("event", "closed"), ("reason", "slow-consumer")],
                #"disconnected: "quoted" \ and"# + "\nnewline")
        let line = lines.all[0]
        let parsed = fields(line)
        #expect(parsed.map(\.0) == ["ts", "level", "conn", "uid", "pid", "name", "event", "reason", "msg"])
        #expect(parsed[1].1 == "warning" && parsed[5].1 == "thermo stat")
        #expect(parsed.last?.1 == #"disconnected: "quoted" \ and"# + "\nnewline")
        #expect(!line.contains("\n"))
        #expect(line.contains(#"name="thermo stat" event=closed reason=slow-consumer"#))
    }

    @Test func forTheJournalLinesCarryThePriorityAndNoTimestamp() {
        let lines = LogCapture()
        let log = Logger(label: "t", level: .debug, sink: { lines.append($0) }, toJournal: true)
        log.error("e")
        log.warning("w")
        log.info("i")
        log.debug("d")
        #expect(lines.all == ["<3>level=error msg=e", "<4>level=warning msg=w", "<6>level=info msg=i", "<7>level=debug msg=d"])
    }

    @Test func theRateLimitLetsABurstThroughPerUidThenCounts() {
        var limit = LogRateLimit(burst: 3, windowNanos: 1_000)
        let admitted = (0..<10).filter { _ in limit.admit(event: "access-refused", uid: "1000", now: 10) }
        #expect(admitted.count == 3)
        let otherUid = limit.admit(event: "access-refused", uid: "1001", now: 10)
        let notARefusal = limit.admit(event: "closed", uid: "1000", now: 10)
        #expect(otherUid && notARefusal)  // another uid has its own window; other events are never limited
        let early = limit.expired(now: 500)
        #expect(early.isEmpty)  // the window has not ended
        let ended = limit.expired(now: 2_000)
        #expect(ended.count == 1 && ended[0].event == "access-refused" && ended[0].uid == "1000" && ended[0].suppressed == 7)
        let fresh = limit.admit(event: "access-refused", uid: "1000", now: 2_001)
        #expect(fresh)  // a new window
    }

    @Test func aClientRepeatingARefusedRequestCannotFloodTheLog() async throws {
        let broker = try InProcessBroker()
        defer { broker.shutdown() }
        let peer = try await broker.connect("noisy")
        let started = ContinuousClock.now
        for _ in 0..<100 {
            await #expect(throws: EvbusError.self) { _ = try await peer.declareQueue("amq.reserved") }
        }
        // At most a burst per window begun (a slow machine may see more than one window).
        let windows = Int((ContinuousClock.now - started) / .seconds(10)) + 1
        let refusals = broker.logLines.all.filter { $0.contains("event=request-refused") }
        #expect(refusals.count <= LogRateLimit().burst * windows && refusals.count < 100, "\(refusals.count) refusal lines in \(windows) windows")
        #expect(refusals.allSatisfy { $0.contains("uid=\(getuid()) pid=\(getpid()) name=noisy") })
        await peer.close()
    }
}
