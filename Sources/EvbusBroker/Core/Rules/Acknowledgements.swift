import EvbusWire

/// ACK and NACK: settling deliveries, refilling prefetch windows, requeueing and dead-lettering.
extension BrokerCore {
    func ack(_ tag: UInt64, multiple: Bool, from c: ConnectionState) {
        if !multiple {
            // One tag: the per-message path of a work queue.
            let consumer: ConsumerRecord
            do {
                let (m, settled) = try c.ledger.settle(tag)
                consumer = settled
                if m.isRequest { openRequest(m, acceptedBy: c) }
                if m.storeID != 0 { recordSettled(m, from: settled.queue) }
            } catch {
                refuse(error, requestID: 0, to: c)
                return
            }
            let queue = consumer.queue
            queue.settled(consumer, acked: true)
            stats.acked &+= 1
            // Refill the window once per batch of frames read, not once per ACK: one dispatch then
            // writes all the messages the batch's acks made room for.
            if queue !== pendingDispatch {
                if let previous = pendingDispatch { dispatch(previous) }
                pendingDispatch = queue
            }
            return
        }
        settledScratch.removeAll(keepingCapacity: true)
        do {
            try c.ledger.settleUpTo(tag, into: &settledScratch)
        } catch {
            refuse(error, requestID: 0, to: c)
            return
        }
        touchedQueues.removeAll(keepingCapacity: true)
        for s in settledScratch {
            if s.message.isRequest { openRequest(s.message, acceptedBy: c) }
            if s.message.storeID != 0 { recordSettled(s.message, from: s.consumer.queue) }
            s.consumer.queue.settled(s.consumer, acked: true)
            stats.acked &+= 1
            if touchedQueues.last !== s.consumer.queue { touchedQueues.append(s.consumer.queue) }
        }
        settledScratch.removeAll(keepingCapacity: true)
        for q in touchedQueues { dispatch(q) }
    }

    func nack(_ tag: UInt64, flags: UInt8, from c: ConnectionState) {
        var back: [UnackedLedger.Settled] = []
        do {
            if flags & AckFlag.multiple != 0 {
                try c.ledger.settleUpTo(tag, into: &back)
            } else {
                let (m, consumer) = try c.ledger.settle(tag)
                back.append(.init(message: m, consumer: consumer))
            }
        } catch {
            refuse(error, requestID: 0, to: c)
            return
        }
        for s in back { s.consumer.queue.settled(s.consumer, acked: false) }
        if flags & AckFlag.requeue != 0 {
            requeue(back)
        } else {
            for s in back { deadLetter(s.message, from: s.consumer.queue, reason: "rejected") }
            for q in Self.distinct(back.map(\.consumer.queue)) { dispatch(q) }
        }
    }
}
