"""Log compaction (cleanup.policy=compact) seen by a real client.

The broker runs its log cleaner every 200 ms (log.cleaner.backoff.ms). Topics use
segment.bytes=1024 so that a few hundred-byte records fill several segments, and
the last write is a record larger than a segment: it rolls the log, so every
record written before it lies in closed segments, which are the only ones the
cleaner touches, and the active segment holds just that last record.
"""

from __future__ import annotations

import os

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

from rafka_harness import Delivery, consume_until_eof, create_topic, flush_all, unique_topic, wait_until

SEGMENT_BYTES = 1024
KEYS = [f"key-{i}" for i in range(5)]
ROUNDS = 4
DELETED = "key-1"
SENTINEL = "roll-the-segment"
COMPACT_CONFIG = {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES), "delete.retention.ms": "1000"}


@pytest.fixture
def fast_cleaner_broker(broker_factory):
    return broker_factory(overrides={"log.cleaner.backoff.ms": "200"})


def value(key: str, round_: int) -> bytes:
    # Random bytes, so that compressed batches are as large as plain ones.
    return f"{key}-v{round_}-".encode() + os.urandom(100)


def write_history(broker, topic: str, compression: str) -> dict[str, tuple[int, bytes | None]]:
    """ROUNDS values per key, then a tombstone for DELETED, then the segment-rolling
    sentinel. Returns the last (offset, value) written per key."""
    producer = broker.producer({"compression.type": compression, "enable.idempotence": True})
    d = Delivery()
    for round_ in range(ROUNDS):
        for key in KEYS:
            producer.produce(topic, partition=0, key=key.encode(), value=value(key, round_), on_delivery=d.callback)
        flush_all(producer)
    producer.produce(topic, partition=0, key=DELETED.encode(), value=None, on_delivery=d.callback)
    flush_all(producer)
    producer.produce(topic, partition=0, key=SENTINEL.encode(), value=os.urandom(SEGMENT_BYTES + 100),
                     on_delivery=d.callback)
    flush_all(producer)
    assert d.failed == [], d.failed
    assert len(d.ok) == ROUNDS * len(KEYS) + 2
    latest: dict[str, tuple[int, bytes | None]] = {}
    for msg in sorted(d.ok, key=lambda m: m.offset()):
        latest[msg.key().decode()] = (msg.offset(), msg.value())
    return latest


def read_from_start(broker, topic: str) -> list[tuple[int, str, bytes | None]]:
    consumer = broker.consumer()
    try:
        got = consume_until_eof(consumer, [TopicPartition(topic, 0, OFFSET_BEGINNING)], timeout=30)
    finally:
        consumer.close()
    return [(m.offset(), m.key().decode(), m.value()) for m in got]


def segment_files(broker, topic: str) -> list:
    return sorted((broker.data_dir / f"{topic}-0").glob("*.log"))


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_compaction_keeps_the_latest_value_per_key_and_drops_deleted_keys(fast_cleaner_broker, compression):
    broker = fast_cleaner_broker
    topic = unique_topic("compacted")
    create_topic(broker, topic, config=COMPACT_CONFIG)

    latest = write_history(broker, topic, compression)
    assert len(segment_files(broker, topic)) >= 3, "the history should span several segments"

    # Exactly what must survive: the latest value of every live key at its original
    # offset, and the sentinel (alone in the active segment); the deleted key is gone
    # once its tombstone is older than delete.retention.ms.
    expected = sorted((offset, key, v) for key, (offset, v) in latest.items() if key != DELETED)
    wait_until(lambda: read_from_start(broker, topic) == expected, 30, interval=0.5,
               message="the cleaner to compact the log and drop the tombstone")

    assert all(key != DELETED for _, key, _ in read_from_start(broker, topic))
    # The compacted log (offset gaps, emptied batches) survives a restart as it is.
    broker.restart()
    assert read_from_start(broker, topic) == expected


def test_a_record_without_key_is_refused_by_a_compacted_topic(fast_cleaner_broker):
    broker = fast_cleaner_broker
    topic = unique_topic("compacted-nokey")
    create_topic(broker, topic, config=COMPACT_CONFIG)
    producer = broker.producer({"retries": 0})
    d = Delivery()

    # One batch each: the broker refuses a whole batch when one record lacks a key.
    producer.produce(topic, partition=0, value=b"no key", on_delivery=d.callback)
    flush_all(producer)
    producer.produce(topic, partition=0, key=b"k", value=b"keyed", on_delivery=d.callback)
    flush_all(producer)

    assert [err.code() for err, _ in d.failed] == [KafkaError.INVALID_RECORD], d.failed
    assert [m.key() for m in d.ok] == [b"k"]
    assert [key for _, key, _ in read_from_start(broker, topic)] == ["k"]


def test_describe_configs_shows_the_compaction_settings(fast_cleaner_broker):
    broker = fast_cleaner_broker
    topic = unique_topic("compacted-describe")
    create_topic(broker, topic, config=COMPACT_CONFIG)

    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = broker.admin().describe_configs([resource], request_timeout=15)[resource].result(timeout=20)

    def cfg(name):
        entry = entries[name]
        source = entry.source if isinstance(entry.source, ConfigSource) else ConfigSource(entry.source)
        return entry.value, source

    assert cfg("cleanup.policy") == ("compact", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert cfg("delete.retention.ms") == ("1000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert cfg("min.cleanable.dirty.ratio") == ("0.5", ConfigSource.DEFAULT_CONFIG)
    assert cfg("min.compaction.lag.ms") == ("0", ConfigSource.DEFAULT_CONFIG)
    assert cfg("max.compaction.lag.ms") == ("9223372036854775807", ConfigSource.DEFAULT_CONFIG)
