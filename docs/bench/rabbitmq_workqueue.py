#!/usr/bin/python3
"""The RabbitMQ side of `evbus bench`'s work-queue scenarios (docs/BENCHMARKS.md).

Same shape as evbus's `workqueue`: 1 producer -> 1 queue -> N consumers, 16-byte messages, manual
ack of every message, prefetch 100, optionally publisher confirms. Producer and consumers are
separate processes (pika is single-threaded). Needs Debian's python3-pika and a local
rabbitmq-server; neither is a dependency of evbus.

    /usr/bin/python3 docs/bench/rabbitmq_workqueue.py [--messages N] [--consumers N] [--confirm]
"""
import argparse, multiprocessing, struct, time
import pika

QUEUE = "bench.workqueue"


def consume(n, ready, done):
    conn = pika.BlockingConnection(pika.ConnectionParameters("localhost"))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=100)
    count = [0]

    def on_message(ch, method, _props, _body):
        ch.basic_ack(delivery_tag=method.delivery_tag)
        count[0] += 1
        if count[0] >= n:
            ch.stop_consuming()

    ch.basic_consume(queue=QUEUE, on_message_callback=on_message, auto_ack=False)
    ready.set()
    ch.start_consuming()
    done.put((count[0], time.monotonic()))
    conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--consumers", type=int, default=1)
    p.add_argument("--confirm", action="store_true")
    a = p.parse_args()
    conn = pika.BlockingConnection(pika.ConnectionParameters("localhost"))
    ch = conn.channel()
    ch.queue_delete(queue=QUEUE)
    ch.queue_declare(queue=QUEUE)
    if a.confirm:
        ch.confirm_delivery()
    share = a.messages // a.consumers
    done = multiprocessing.Queue()
    workers = []
    for i in range(a.consumers):
        ready = multiprocessing.Event()
        n = share + (a.messages - share * a.consumers if i == 0 else 0)
        w = multiprocessing.Process(target=consume, args=(n, ready, done))
        w.start()
        ready.wait()
        workers.append(w)
    time.sleep(0.5)
    start = time.monotonic()
    for i in range(a.messages):
        ch.basic_publish(exchange="", routing_key=QUEUE, body=struct.pack("<QQ", i, 0))
    results = [done.get() for _ in workers]
    for w in workers:
        w.join()
    acked = sum(r[0] for r in results)
    end = max(r[1] for r in results)
    ch.queue_delete(queue=QUEUE)
    conn.close()
    name = "workqueue" + ("-%d" % a.consumers if a.consumers > 1 else "") + ("-confirm" if a.confirm else "")
    print("rabbitmq %-18s msgs/s %8.1f k  sent %d acked %d lost %d" % (name, a.messages / (end - start) / 1000, a.messages, acked, a.messages - acked))


if __name__ == "__main__":
    main()
