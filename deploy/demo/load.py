"""Steady load for deploy/demo/fault-tolerance.sh, with real Kafka clients (confluent-kafka).

    load.py produce --bootstrap B --topic T --out produced.json --stop-file F [--rate 200] [--max-seconds 90]
    load.py consume --bootstrap B --topic T --out consumed.json --producer-result produced.json [--max-seconds 150]
    load.py verdict produced.json consumed.json

produce: an idempotent acks=all producer sends records numbered 0, 1, 2, ... at a
steady rate until the stop file appears, then flushes; it writes which numbers were
acknowledged and the longest time a partition went without an acknowledgement (the
failover pause).

consume: reads every partition of the topic from the beginning with assign() (no
consumer group), until the producer's result exists and every acknowledged record
has been read (or nothing new came for a while); it writes how often each number
was read.

verdict: produced / acknowledged / consumed / lost (acknowledged, never read) /
duplicated (read more than once); exit 1 when anything was lost or duplicated.

Each role prints a progress line every few seconds, prefixed with its name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

PROGRESS_EVERY_S = 5.0


def log(role: str, text: str) -> None:
    print(f"[{role}] {text}", flush=True)


def client_base(bootstrap: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        # The host listeners are published on 127.0.0.1 only; "localhost" may resolve
        # to ::1 first.
        "broker.address.family": "v4",
        "client.id": "rafka-fault-tolerance-demo",
    }


def produce(args: argparse.Namespace) -> int:
    acked: list[int] = []
    failed: list[tuple[int, str]] = []
    ack_times: dict[int, list[float]] = {}  # partition -> when its records were acknowledged

    def on_delivery(err, msg) -> None:
        n = int(msg.value())
        if err is None:
            acked.append(n)
            ack_times.setdefault(msg.partition(), []).append(time.monotonic())
        else:
            failed.append((n, str(err)))

    producer = Producer({
        **client_base(args.bootstrap),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        # Long enough that no record gives up while a new leader is elected.
        "message.timeout.ms": 60000,
    })
    interval = 1.0 / args.rate
    started = time.monotonic()
    next_send = started
    next_report = started + PROGRESS_EVERY_S
    produced = 0
    while not os.path.exists(args.stop_file) and time.monotonic() - started < args.max_seconds:
        now = time.monotonic()
        if now < next_send:
            producer.poll(min(next_send - now, 0.05))
            continue
        try:
            producer.produce(args.topic, key=str(produced).encode(), value=str(produced).encode(),
                             on_delivery=on_delivery)
            produced += 1
            next_send += interval
        except BufferError:
            producer.poll(0.1)
        producer.poll(0)
        if now >= next_report:
            next_report += PROGRESS_EVERY_S
            log("producer", f"t={now - started:5.1f}s produced={produced} acknowledged={len(acked)} "
                            f"failed={len(failed)} in flight={len(producer)}")
    log("producer", f"stopping after {time.monotonic() - started:.1f}s: flushing {len(producer)} in flight")
    remaining = producer.flush(90)
    # The failover pause: the longest time a partition went without an acknowledgement
    # (the other partitions' leaders keep acknowledging meanwhile).
    gaps = [(b - a, a - started, p) for p, times in ack_times.items() for a, b in zip(times, times[1:])]
    longest_gap, gap_at, gap_partition = max(gaps, default=(0.0, 0.0, -1))
    result = {
        "produced": produced,
        "acknowledged": sorted(acked),
        "failed": len(failed),
        "failed_samples": failed[:5],
        "unfinished": remaining,
        "longest_ack_gap_s": round(longest_gap, 3),
        "longest_ack_gap_at_s": round(gap_at, 3),
        "longest_ack_gap_partition": gap_partition,
        "seconds": round(time.monotonic() - started, 3),
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)
    log("producer", f"done: produced={produced} acknowledged={len(acked)} failed={len(failed)} "
                    f"longest pause between acknowledgements {longest_gap * 1000:.0f} ms "
                    f"(partition {gap_partition}, at t={gap_at:.1f}s)")
    return 0


def consume(args: argparse.Namespace) -> int:
    consumer = Consumer({
        **client_base(args.bootstrap),
        # librdkafka wants a group id; with assign() and no commits no group is joined.
        "group.id": "rafka-demo-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    })
    deadline = time.monotonic() + 30
    while True:
        md = consumer.list_topics(args.topic, timeout=10)
        topic = md.topics.get(args.topic)
        if topic is not None and topic.error is None and topic.partitions:
            break
        if time.monotonic() > deadline:
            log("consumer", f"topic {args.topic} not found")
            return 2
        time.sleep(0.5)
    partitions = sorted(topic.partitions)
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])
    log("consumer", f"assigned partitions {partitions} of {args.topic} from the beginning")

    seen: Counter[int] = Counter()
    started = time.monotonic()
    last_new = started
    next_report = started + PROGRESS_EVERY_S
    acked: set[int] | None = None
    errors = 0
    reason = "time limit"
    while time.monotonic() - started < args.max_seconds:
        msg = consumer.poll(0.2)
        now = time.monotonic()
        if msg is not None:
            if msg.error() is not None:
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    errors += 1
            else:
                seen[int(msg.value())] += 1
                last_new = now
        if now >= next_report:
            next_report += PROGRESS_EVERY_S
            log("consumer", f"t={now - started:5.1f}s consumed={sum(seen.values())} distinct={len(seen)}")
        if acked is None and os.path.exists(args.producer_result):
            with open(args.producer_result) as f:
                acked = set(json.load(f)["acknowledged"])
        if acked is not None:
            if acked.issubset(seen.keys()):
                reason = "every acknowledged record read"
                # A little longer, to catch duplicates that would follow.
                end = time.monotonic() + 1.0
                while time.monotonic() < end:
                    msg = consumer.poll(0.1)
                    if msg is not None and msg.error() is None:
                        seen[int(msg.value())] += 1
                break
            if now - last_new > args.idle_seconds:
                reason = f"nothing new for {args.idle_seconds:.0f}s"
                break
    consumer.close()
    with open(args.out + ".tmp", "w") as f:
        json.dump({"counts": {str(k): v for k, v in seen.items()}, "errors": errors}, f)
    os.replace(args.out + ".tmp", args.out)
    log("consumer", f"done ({reason}): consumed={sum(seen.values())} distinct={len(seen)}")
    return 0


def verdict(args: argparse.Namespace) -> int:
    with open(args.produced) as f:
        produced = json.load(f)
    with open(args.consumed) as f:
        counts = {int(k): v for k, v in json.load(f)["counts"].items()}
    acked = set(produced["acknowledged"])
    consumed = sum(counts.values())
    lost = sorted(acked - counts.keys())
    duplicated = sum(v - 1 for v in counts.values() if v > 1)
    unacked_but_read = len(counts.keys() - acked)
    ok = not lost and duplicated == 0
    print(f"failover pause: longest gap between acknowledgements {produced['longest_ack_gap_s'] * 1000:.0f} ms "
          f"on partition {produced['longest_ack_gap_partition']} "
          f"(at t={produced['longest_ack_gap_at_s']:.1f}s of {produced['seconds']:.1f}s of load)")
    if produced["failed"]:
        print(f"not acknowledged: {produced['failed']} records, e.g. {produced['failed_samples'][:2]}")
    if unacked_but_read:
        print(f"read although not acknowledged: {unacked_but_read} (allowed: the client gave up, the write landed)")
    if lost:
        print(f"lost record numbers (first 20): {lost[:20]}")
    print(f"VERDICT: produced={produced['produced']} acknowledged={len(acked)} consumed={consumed} "
          f"lost={len(lost)} duplicated={duplicated} -> {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--rate", type=float, default=200.0, help="records per second")
    p.add_argument("--max-seconds", type=float, default=90.0)
    c = sub.add_parser("consume")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--producer-result", required=True)
    c.add_argument("--max-seconds", type=float, default=150.0)
    c.add_argument("--idle-seconds", type=float, default=15.0)
    v = sub.add_parser("verdict")
    v.add_argument("produced")
    v.add_argument("consumed")
    args = parser.parse_args()
    return {"produce": produce, "consume": consume, "verdict": verdict}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
