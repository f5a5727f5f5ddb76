"""Durability: acknowledged records survive `kill -9` and a restart on the same data dir."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, ResourceType

import kafka_wire as kw
from rafka_harness import Delivery, consume_until_eof, create_topic, flush_all, unique_topic, wait_until

PARTITIONS = 3
PADDING = "p" * 80


def produce_acked(broker, topic: str, count: int, tag: str, first: int = 0) -> tuple[dict, list]:
    """Produce `count` records round-robin over the partitions with acks=all.

    Returns ({(partition, offset): (key, value)} of acknowledged records, failures).
    """
    producer = broker.producer({"acks": "all", "linger.ms": 5})
    d = Delivery()
    for i in range(first, first + count):
        producer.produce(topic, partition=i % PARTITIONS, key=f"{tag}-k{i}".encode(),
                         value=f"{tag}-v{i}-{PADDING}".encode(), on_delivery=d.callback)
        if i % 500 == 0:
            producer.poll(0)
    flush_all(producer, timeout=60)
    acked = {(m.partition(), m.offset()): (m.key(), m.value()) for m in d.ok}
    assert len(acked) == len(d.ok), "two acknowledgements for the same (partition, offset)"
    return acked, d.failed


def read_everything(broker, topic: str) -> dict:
    consumer = broker.consumer()
    try:
        msgs = consume_until_eof(consumer, [TopicPartition(topic, p, OFFSET_BEGINNING)
                                            for p in range(PARTITIONS)], timeout=60)
    finally:
        consumer.close()
    out = {}
    for m in msgs:
        assert (m.partition(), m.offset()) not in out, f"offset {m.partition()}/{m.offset()} read twice"
        out[(m.partition(), m.offset())] = (m.key(), m.value())
    return out


def per_partition_counts(records: dict) -> dict[int, int]:
    return {p: sum(1 for (pp, _) in records if pp == p) for p in range(PARTITIONS)}


def assert_contiguous_from_zero(records: dict) -> None:
    for p in range(PARTITIONS):
        offsets = sorted(o for (pp, o) in records if pp == p)
        assert offsets == list(range(len(offsets))), f"partition {p}: offsets have gaps or do not start at 0"


@pytest.mark.timeout(180)
def test_every_acknowledged_record_survives_kill_9_exactly_once_and_offsets_continue(broker):
    topic = unique_topic("crash")
    create_topic(broker, topic, partitions=PARTITIONS)

    acked, failed = produce_acked(broker, topic, 5000, "before")
    assert failed == [], f"{len(failed)} deliveries failed before the crash: {failed[0][0]}"
    assert len(acked) == 5000

    broker.kill9()
    broker.restart()

    recovered = read_everything(broker, topic)
    missing = sorted(set(acked) - set(recovered))
    assert missing == [], f"{len(missing)} acknowledged records lost, first {missing[:5]}"
    extra = sorted(set(recovered) - set(acked))
    assert extra == [], f"{len(extra)} records that were never acknowledged, first {extra[:5]}"
    changed = [k for k in acked if recovered[k] != acked[k]]
    assert changed == [], f"{len(changed)} records changed, first {changed[:5]}"
    assert_contiguous_from_zero(recovered)

    before_counts = per_partition_counts(recovered)
    more, failed = produce_acked(broker, topic, 300, "after", first=5000)
    assert failed == []
    for p in range(PARTITIONS):
        new_offsets = sorted(o for (pp, o) in more if pp == p)
        assert new_offsets == list(range(before_counts[p], before_counts[p] + 100)), \
            f"partition {p}: offsets after restart do not continue from {before_counts[p]}"
    assert read_everything(broker, topic) == {**acked, **more}


@pytest.mark.timeout(180)
def test_kill_9_during_produce_keeps_acknowledged_records_and_a_gapless_log(broker):
    topic = unique_topic("crash-mid")
    create_topic(broker, topic, partitions=PARTITIONS)
    sent = {}
    producer = broker.producer({"acks": "all", "linger.ms": 2, "message.timeout.ms": 5000,
                                "retries": 0})
    d = Delivery()
    i = 0
    deadline = time.monotonic() + 60
    while len(d.ok) < 2000:
        assert time.monotonic() < deadline, f"only {len(d.ok)} acknowledged in 60 s"
        key, value = f"mid-k{i}".encode(), f"mid-v{i}-{PADDING}".encode()
        sent[key] = value
        producer.produce(topic, partition=i % PARTITIONS, key=key, value=value, on_delivery=d.callback)
        i += 1
        producer.poll(0)
    # Keep records in flight while the broker dies.
    for _ in range(500):
        key, value = f"mid-k{i}".encode(), f"mid-v{i}-{PADDING}".encode()
        sent[key] = value
        producer.produce(topic, partition=i % PARTITIONS, key=key, value=value, on_delivery=d.callback)
        i += 1
    broker.kill9()
    producer.flush(15)  # whatever is still pending fails or times out; we only trust acks
    acked = {(m.partition(), m.offset()): (m.key(), m.value()) for m in d.ok}

    broker.restart()

    recovered = read_everything(broker, topic)
    missing = sorted(set(acked) - set(recovered))
    assert missing == [], f"{len(missing)} acknowledged records lost, first {missing[:5]}"
    assert all(recovered[k] == acked[k] for k in acked)
    assert_contiguous_from_zero(recovered)
    foreign = [k for k, (key, value) in recovered.items() if sent.get(key) != value]
    assert foreign == [], f"records that were never sent: {foreign[:5]}"


@pytest.mark.timeout(120)
def test_graceful_restart_keeps_records_and_offsets_continue(broker):
    topic = unique_topic("graceful")
    create_topic(broker, topic, partitions=PARTITIONS)
    acked, failed = produce_acked(broker, topic, 600, "g")
    assert failed == []

    exit_code = broker.stop()  # SIGTERM; fails the test if the broker does not exit in time
    assert exit_code == 0, f"rafka exited with {exit_code} after SIGTERM"
    broker.restart()

    assert read_everything(broker, topic) == acked
    more, failed = produce_acked(broker, topic, 30, "g2", first=600)
    assert failed == []
    assert sorted(more) == sorted((p, 200 + j) for p in range(PARTITIONS) for j in range(10))


def test_topics_their_configs_and_partition_counts_survive_kill_9(broker):
    topic = unique_topic("meta")
    create_topic(broker, topic, partitions=1, config={"retention.ms": "123456789"})
    broker.admin().create_partitions([NewPartitions(topic, 2)], request_timeout=15)[topic].result(timeout=20)
    deleted = unique_topic("meta-deleted")
    create_topic(broker, deleted)
    broker.admin().delete_topics([deleted], request_timeout=15)[deleted].result(timeout=20)

    broker.kill9()
    broker.restart()

    md = wait_until(lambda: broker.admin().list_topics(timeout=5).topics.get(topic), 10,
                    message=f"{topic} after restart")
    assert sorted(md.partitions) == [0, 1]
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = broker.admin().describe_configs([resource], request_timeout=15)[resource].result(timeout=20)
    assert entries["retention.ms"].value == "123456789"
    assert deleted not in broker.admin().list_topics(timeout=5).topics, "a deleted topic came back"


TORN_TAILS = {
    # A write cut short: the first 40 bytes of a 2-record batch whose header promises more.
    "partial-batch": lambda: kw.record_batch([kw.Record(b"torn", b"x" * 200)] * 2,
                                             base_timestamp=int(time.time() * 1000), base_offset=10**6)[:40],
    # A whole batch whose bytes no longer match its CRC-32C.
    "crc-mismatch": lambda: (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]))(
        kw.record_batch([kw.Record(b"torn", b"y" * 50)], base_timestamp=int(time.time() * 1000),
                        base_offset=10**6)),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tail", list(TORN_TAILS), ids=list(TORN_TAILS))
def test_torn_tail_after_kill_9_is_truncated_and_offsets_continue(broker, tail):
    topic = unique_topic("torn")
    create_topic(broker, topic, partitions=PARTITIONS)
    acked, failed = produce_acked(broker, topic, 300, "t")
    assert failed == []
    broker.kill9()

    # Kafka's on-disk layout (ARCHITECTURE.md, storage): <log.dirs>/<topic>-<partition>/<base offset>.log
    segments = sorted((broker.data_dir / f"{topic}-0").glob("*.log"))
    assert segments, f"no segment files under {broker.data_dir / f'{topic}-0'}"
    with open(segments[-1], "ab") as f:
        f.write(TORN_TAILS[tail]())

    broker.restart()

    assert read_everything(broker, topic) == acked
    more, failed = produce_acked(broker, topic, 30, "t2", first=300)
    assert failed == []
    assert sorted(o for (p, o) in more if p == 0) == list(range(100, 110)), \
        "offsets after recovery must continue right after the last good record"
