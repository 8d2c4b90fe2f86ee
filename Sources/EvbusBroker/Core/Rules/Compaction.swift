import EvbusWire

/// Compaction (docs/DURABILITY.md §3): segments are deleted oldest first once nothing in them is
/// live, so a few messages nobody settles would keep the oldest segment, and so every later one,
/// on disk for ever. When the oldest segment holds few live messages, they are rewritten into the
/// current one (same ids, so recovery keeps one copy each and their order), and once that is synced
/// the old segment has nothing live and goes.
extension BrokerCore {
    /// Starts compacting the oldest segment if it is worth it and none is under way: when few of
    /// its messages are live (at most 4 in 100), or when rewriting them would free at least four
    /// times as many bytes in the dead segments it holds back, and at least two segments' worth (so
    /// messages that stay for ever are rewritten once every few segments, not once per segment). A
    /// segment followed by live ones is a real backlog: copying it forward would only write it again.
    func compactIfWorthIt() {
        let segments = store!.segments
        // Never a segment a region still reads from: its messages are not in memory to rewrite.
        guard let oldest = segments.first, segments.count >= 3, store!.compacting == 0, oldest.live > 0, store!.healthy,
            segments[1].firstID <= pagedFloor()
        else { return }
        var deadBehind = 0
        for s in segments.dropFirst().dropLast() {
            if s.live > 0 { break }
            deadBehind += s.bytes
        }
        let rewriteCost = oldest.live * oldest.messageBytes / max(oldest.recorded, oldest.live)
        let freesEnough = rewriteCost * 4 <= deadBehind && deadBehind >= 2 * store!.segmentBytes
        guard oldest.live * 100 <= oldest.recorded * 4 || freesEnough else { return }
        store!.compacting = oldest.number
        store!.compactions &+= 1
        let rewrite: (StoredMessage, MessageQueue, Bool) -> Void = { m, q, delivered in
            guard m.storeID != 0, q.durableID != 0, self.store!.segmentIndex(of: m.storeID) == 0,
                !self.store!.pendingMoves.contains(m.storeID)
            else { return }
            let expires = self.wallMillis(at: m.expiresAt)
            let bytes = m.tail.withUnsafeBytes { tail in
                // A transient message read back from a region stays transient in its copy.
                let transient = (try? MessageTailView(tail: tail)).map { !MessageProperties.isPersistent(block: $0.properties) } ?? false
                return self.store!.writer.appendMessage(
                    queue: q.durableID, id: m.storeID, delivered: delivered, moved: true, transient: transient, request: m.isRequest,
                    expiresAtMillis: expires, tail: tail)
            }
            self.store!.openMessageBytes += bytes
            self.store!.pendingMoves.insert(m.storeID)
            self.store!.movingOpen.append(m.storeID)
            self.store!.rewritten &+= 1
        }
        for q in topology.liveQueues where q.durableID != 0 {
            q.forEachReady { rewrite($0, q, $0.redelivered) }
        }
        for case let s? in sessions {
            s.ledger.forEachOutstanding { m, consumer in rewrite(m, consumer.queue, true) }
        }
        output.log(.debug, nil, event: "compaction", "compacting segment \(oldest.number): rewriting its \(oldest.live) live messages")
    }
}
