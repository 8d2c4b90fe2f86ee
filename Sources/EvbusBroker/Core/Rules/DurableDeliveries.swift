import EvbusWire

/// Deliveries and confirms that wait for the disk (docs/DURABILITY.md §1): a delivery from a durable
/// queue goes out once its delivered (or settled) record is written, so a restart flags exactly the
/// messages a consumer may have seen; a confirm of a persistent publish goes out once its batch is
/// synced, in sequence order with the connection's other confirms.
extension BrokerCore {
    // MARK: Deliveries

    /// Whether a delivery from `q` to `receiver` must wait for the log: it writes a record (a
    /// first delivery of a persistent message, or one without acknowledgement, which settles it),
    /// or earlier deliveries to the same connection wait (order is kept).
    @inline(__always)
    func mustHold(_ m: StoredMessage, from q: MessageQueue, consumer: ConsumerRecord, to receiver: ConnectionState) -> Bool {
        q.durableID != 0 && isPersisting
            && ((m.storeID != 0 && (!m.redelivered || !consumer.manualAck)) || receiver.heldDeliveries > 0)
    }

    /// Records the delivery and holds its MESSAGE until that record is written. A delivery that
    /// writes nothing itself waits only for the one held before it.
    func hold(_ m: StoredMessage, from q: MessageQueue, consumer: ConsumerRecord, to receiver: ConnectionState, tag: UInt64) {
        var batch = store!.openBatch
        if m.storeID != 0 && !consumer.manualAck {
            recordSettled(m, from: q)
        } else if m.storeID != 0 && !m.redelivered {
            store!.writer.appendListed(.delivered, queue: q.durableID, id: m.storeID)
        } else if let previous = store!.held.last {
            batch = previous.batch
        }
        receiver.durableLink().heldDeliveries += 1
        store!.held.append(.init(
            batch: batch, slot: receiver.slot, connectionID: receiver.id, consumerID: consumer.id, tag: tag, message: m))
    }

    /// Sends the held deliveries whose records are written.
    func releaseHeld() {
        while let h = store!.held.first, h.batch <= store!.written {
            _ = store!.held.popFirst()
            guard let receiver = session(h.slot), receiver.id == h.connectionID else { continue }
            receiver.durable?.heldDeliveries -= 1
            guard receiver.isOpen, let consumer = receiver.consumers[h.consumerID] else { continue }
            if consumer.manualAck && !receiver.ledger.isOutstanding(h.tag) { continue }
            writeMessage(h.message, consumer: consumer, tag: h.tag, to: receiver)
        }
    }

    // MARK: Confirms

    /// Confirms of publishes whose records are synced go out, in sequence order; those whose batch
    /// failed are nacked, one by one.
    func releaseConfirms() {
        var still: [PublisherRef] = []
        for ref in store!.waitingConfirms {
            guard let s = session(ref.slot), s.id == ref.id, let link = s.durable else { continue }
            var upTo: UInt64 = 0
            while let w = link.confirmWaits.first, w.batch <= store!.synced || w.failed {
                _ = link.confirmWaits.popFirst()
                if w.nack || w.failed {
                    if upTo != 0 { sendConfirm(upTo, to: s); upTo = 0 }
                    let from = w.nack ? w.sequence : s.confirmAnswered + 1
                    for seq in from...max(from, w.sequence) { sendNack(seq, to: s) }
                } else {
                    upTo = w.sequence
                }
            }
            if upTo != 0 { sendConfirm(upTo, to: s) }
            if !link.confirmWaits.isEmpty { still.append(ref) } else { link.waitsForStore = false }
        }
        store!.waitingConfirms = still
    }

    func sendConfirm(_ sequence: UInt64, to s: ConnectionState) {
        send(.confirm(sequence: sequence, flags: AckFlag.multiple), to: s)
        s.confirmAnswered = sequence
    }

    func sendNack(_ sequence: UInt64, to s: ConnectionState) {
        send(.confirm(sequence: sequence, flags: AckFlag.nack), to: s)
        s.confirmAnswered = sequence
    }

    /// Queues a confirm (or nack) behind the disk.
    func waitForStore(_ s: ConnectionState, sequence: UInt64, batch: UInt64, nack: Bool) {
        let link = s.durableLink()
        let after = link.confirmWaits.last?.batch ?? 0
        link.confirmWaits.append(ConfirmWait(sequence: sequence, batch: max(batch, after), nack: nack))
        if !link.waitsForStore {
            link.waitsForStore = true
            store!.waitingConfirms.append(PublisherRef(slot: s.slot, id: s.id))
        }
    }
}

/// A confirm waiting for the disk: every sequence up to `sequence` is answered once batch `batch`
/// is synced (a nack answers `sequence` alone).
struct ConfirmWait {
    var sequence: UInt64
    var batch: UInt64
    var nack: Bool
    var failed = false
}
