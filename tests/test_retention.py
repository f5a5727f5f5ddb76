"""Segments and retention: segment.bytes rolls segments; retention.ms / retention.bytes delete old ones.

segment.bytes is 1 MiB here (Kafka 4's minimum); each test writes ~3 MiB.
The retention checker runs every 300 ms (log.retention.check.interval.ms override).
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from rafka_harness import (Delivery, consume_until_eof, create_topic, flush_all, holds_for, unique_topic,
                           wait_until)

SEGMENT_BYTES = 1024 * 1024
RECORD = 10 * 1024
COUNT = 320  # ~3.2 MiB: at least three segments


@pytest.fixture
def fast_retention_broker(broker_factory):
    return broker_factory(overrides={"log.retention.check.interval.ms": "300"})


def fill(broker, topic: str, timestamp: int | None = None) -> None:
    producer = broker.producer({"compression.type": "none", "linger.ms": 5})
    d = Delivery()
    for i in range(COUNT):
        kwargs = {"timestamp": timestamp} if timestamp is not None else {}
        producer.produce(topic, partition=0, key=str(i).encode(), value=bytes([i % 251]) * RECORD,
                         on_delivery=d.callback, **kwargs)
    flush_all(producer, timeout=60)
    assert d.failed == [] and len(d.ok) == COUNT


def watermarks(broker, topic: str) -> tuple[int, int]:
    consumer = broker.consumer()
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()


def read_from_start(broker, topic: str) -> list:
    consumer = broker.consumer()
    try:
        return consume_until_eof(consumer, [TopicPartition(topic, 0, OFFSET_BEGINNING)], timeout=60)
    finally:
        consumer.close()


def test_segment_bytes_rolls_segments_and_all_records_stay_readable(broker):
    topic = unique_topic("segments")
    create_topic(broker, topic, config={"segment.bytes": str(SEGMENT_BYTES)})

    fill(broker, topic)

    segments = sorted((broker.data_dir / f"{topic}-0").glob("*.log"))
    assert len(segments) >= 3, f"{len(segments)} segment files for ~3.2 MiB with segment.bytes=1 MiB"
    assert all(s.stat().st_size <= SEGMENT_BYTES + RECORD * 2 for s in segments[:-1]), \
        [s.stat().st_size for s in segments]
    got = read_from_start(broker, topic)
    assert [(m.offset(), m.key()) for m in got] == [(i, str(i).encode()) for i in range(COUNT)]

    broker.restart()
    got = read_from_start(broker, topic)
    assert [m.offset() for m in got] == list(range(COUNT)), "records lost across segments after restart"


def test_retention_ms_deletes_expired_closed_segments(fast_retention_broker):
    broker = fast_retention_broker
    topic = unique_topic("retention-ms")
    create_topic(broker, topic, config={"segment.bytes": str(SEGMENT_BYTES), "retention.ms": "3600000"})
    fill(broker, topic, timestamp=int(time.time() * 1000) - 2 * 3600_000)  # two hours old

    low, high = wait_until(lambda: (w := watermarks(broker, topic))[0] > 0 and w, 20,
                           message="the log start offset to move past expired segments")

    assert high == COUNT, "retention must never move the high watermark"
    got = read_from_start(broker, topic)
    assert [m.offset() for m in got] == list(range(low, COUNT))


def test_retention_ms_keeps_segments_that_are_not_expired(fast_retention_broker):
    broker = fast_retention_broker
    topic = unique_topic("retention-keep")
    create_topic(broker, topic, config={"segment.bytes": str(SEGMENT_BYTES), "retention.ms": "3600000"})
    fill(broker, topic)  # timestamps: now

    # Several rounds of the retention checker (every 300 ms) must delete nothing.
    holds_for(lambda: watermarks(broker, topic) == (0, COUNT), 2.0, interval=0.3,
              message="watermarks (0, COUNT)")


def test_retention_bytes_trims_oldest_segments_to_the_limit(fast_retention_broker):
    broker = fast_retention_broker
    topic = unique_topic("retention-bytes")
    create_topic(broker, topic, config={"segment.bytes": str(SEGMENT_BYTES)})
    fill(broker, topic)
    assert watermarks(broker, topic) == (0, COUNT)

    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.bytes", str(SEGMENT_BYTES), incremental_operation=AlterConfigOpType.SET)])
    broker.admin().incremental_alter_configs([resource], request_timeout=15)[resource].result(timeout=20)

    low, high = wait_until(lambda: (w := watermarks(broker, topic))[0] > 0 and w, 20,
                           message="retention.bytes to delete the oldest segments")
    assert high == COUNT
    remaining = sum(s.stat().st_size for s in (broker.data_dir / f"{topic}-0").glob("*.log"))
    assert remaining <= 2 * SEGMENT_BYTES + RECORD * 4, f"{remaining} bytes left with retention.bytes=1 MiB"
    got = read_from_start(broker, topic)
    assert [m.offset() for m in got] == list(range(low, COUNT))


def allocated(path) -> int:
    return path.stat().st_blocks * 512


def test_preallocate_reserves_blocks_ahead_of_the_active_segment_and_gives_them_back(broker):
    """preallocate=true reserves blocks past the active segment's data without changing its
    size (up to segment.bytes here); rolled segments, and the active one after a clean
    stop, hold only their data. A topic without it never holds more than its data."""
    topic, plain = unique_topic("prealloc"), unique_topic("no-prealloc")
    create_topic(broker, topic, config={"segment.bytes": str(SEGMENT_BYTES), "preallocate": "true"})
    create_topic(broker, plain, config={"segment.bytes": str(SEGMENT_BYTES)})
    fill(broker, topic)
    fill(broker, plain)

    segments = sorted((broker.data_dir / f"{topic}-0").glob("*.log"))
    assert len(segments) >= 3
    page = 4096
    for s in segments[:-1]:
        assert allocated(s) <= s.stat().st_size + page, (s.name, s.stat().st_size, allocated(s))
    active = segments[-1]
    assert active.stat().st_size < SEGMENT_BYTES // 2
    assert allocated(active) >= SEGMENT_BYTES, (active.stat().st_size, allocated(active))
    for s in (broker.data_dir / f"{plain}-0").glob("*.log"):
        assert allocated(s) <= s.stat().st_size + page, (s.name, s.stat().st_size, allocated(s))

    broker.restart()
    assert allocated(active) <= active.stat().st_size + page, (active.stat().st_size, allocated(active))
    got = read_from_start(broker, topic)
    assert [m.offset() for m in got] == list(range(COUNT))
