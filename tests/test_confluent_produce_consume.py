"""Produce and consume with confluent-kafka (librdkafka 2.16) against a real rafka.

Consumers never join a group: they assign() partitions and never commit.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME,
                             KafkaError, TopicPartition)

import kafka_wire as kw
from rafka_harness import (Delivery, consume_n, consume_until_eof, create_topic, flush_all,
                           unique_topic)

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def make_records(n: int, base_ts: int) -> list[dict]:
    """Records exercising keys, null keys/values, duplicate header keys and binary header values.

    Values are repetitive so every codec actually shrinks them (librdkafka sends
    a batch uncompressed when compression would not help).
    """
    records = []
    for i in range(n):
        headers = [("seq", str(i).encode()), ("dup", b"first"), ("dup", b"second"),
                   ("bin", bytes(range(256)))]
        if i % 7 == 0:
            headers.append(("null-valued", None))
        records.append({
            "key": None if i == 3 else f"key-{i}".encode(),
            "value": None if i == 7 else (f"value-{i}-" + "abcdefgh" * 40).encode(),
            "headers": headers,
            "timestamp": base_ts + i * 10,
        })
    return records


def produce_records(producer, topic: str, records: list[dict], partition: int | None = None) -> Delivery:
    d = Delivery()
    for r in records:
        kwargs = dict(key=r["key"], value=r["value"], headers=r["headers"],
                      timestamp=r["timestamp"], on_delivery=d.callback)
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
    flush_all(producer)
    return d


def raw_fetch_batches(port: int, topic: str, partition: int, offset: int = 0) -> list[kw.Batch]:
    with kw.KafkaSocket(port) as ks:
        ranges = kw.api_versions(ks).ranges
        version = kw.pick_version(ranges, kw.API_FETCH, *kw.FETCH_VERSIONS)
        res = kw.fetch(ks, version, topic, partition, offset)
    assert res.error_code == 0, f"Fetch {topic}[{partition}]@{offset}: error {res.error_code}"
    return kw.parse_batches(res.records)


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("codec", list(CODECS))
def test_roundtrip_preserves_keys_values_headers_timestamps_and_offsets(broker, codec):
    topic = unique_topic(f"rt-{codec}")
    base_ts = int(time.time() * 1000) - 60_000
    records = make_records(40, base_ts)
    producer = broker.producer({"compression.type": codec, "linger.ms": 50, "acks": "all"})

    d = produce_records(producer, topic, records)

    assert d.failed == [], f"delivery failures: {[(str(e), m.offset()) for e, m in d.failed]}"
    assert [(m.partition(), m.offset()) for m in d.ok] == [(0, i) for i in range(40)]

    consumer = broker.consumer()
    try:
        got = consume_until_eof(consumer, [TopicPartition(topic, 0, OFFSET_BEGINNING)])
    finally:
        consumer.close()
    assert len(got) == 40
    for i, (msg, want) in enumerate(zip(got, records)):
        assert msg.offset() == i
        assert msg.key() == want["key"], f"key of offset {i}"
        assert msg.value() == want["value"], f"value of offset {i}"
        assert msg.headers() == want["headers"], f"headers of offset {i}"
        assert msg.timestamp() == (TIMESTAMP_CREATE_TIME, want["timestamp"]), f"timestamp of offset {i}"


@pytest.mark.parametrize("codec", list(CODECS))
def test_fetched_batches_keep_producer_codec_contiguous_offsets_and_valid_crc(broker, codec):
    topic = unique_topic(f"codec-{codec}")
    records = make_records(60, int(time.time() * 1000))
    # Several produce requests, so the broker has to assign base offsets to later batches.
    producer = broker.producer({"compression.type": codec, "linger.ms": 0, "batch.num.messages": 10})
    d = produce_records(producer, topic, records)
    assert d.failed == []

    batches = raw_fetch_batches(broker.port, topic, 0)

    assert batches, "Fetch returned no batches"
    assert [b.codec for b in batches] == [CODECS[codec]] * len(batches)
    assert all(b.magic == 2 for b in batches)
    assert [b.crc_ok for b in batches] == [True] * len(batches), "a fetched batch fails its CRC-32C"
    expected_base = 0
    for b in batches:
        assert b.base_offset == expected_base, "batches are not contiguous"
        expected_base = b.base_offset + b.last_offset_delta + 1
    assert expected_base == 60
    assert sum(b.record_count for b in batches) == 60


def test_consumer_assigned_at_offset_starts_exactly_there(broker):
    topic = unique_topic("at-offset")
    producer = broker.producer()
    d = Delivery()
    for i in range(20):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), on_delivery=d.callback)
    flush_all(producer)
    assert len(d.ok) == 20 and d.failed == []

    consumer = broker.consumer()
    try:
        got = consume_until_eof(consumer, [TopicPartition(topic, 0, 7)])
    finally:
        consumer.close()

    assert [m.offset() for m in got] == list(range(7, 20))
    assert [m.value() for m in got] == [f"v{i}".encode() for i in range(7, 20)]


def test_offsets_for_times_returns_first_offset_at_or_after_timestamp(broker):
    topic = unique_topic("for-times")
    base_ts = int(time.time() * 1000) - 3_600_000
    producer = broker.producer({"linger.ms": 0})
    d = Delivery()
    for i in range(10):
        producer.produce(topic, value=f"v{i}".encode(), timestamp=base_ts + i * 1000,
                         on_delivery=d.callback)
        flush_all(producer)  # one batch per record: the lookup must look inside the log, not one batch
    assert len(d.ok) == 10 and d.failed == []

    consumer = broker.consumer()
    try:
        queries = {
            base_ts - 5_000: 0,          # before everything -> first record
            base_ts: 0,
            base_ts + 5_000: 5,          # exact match
            base_ts + 5_500: 6,          # between two records -> the later one
            base_ts + 9_000: 9,          # the last record
            base_ts + 9_001: -1,         # after the last record -> -1 (end)
        }
        # One lookup per call: a partition may appear only once in a ListOffsets request.
        results = {ts: consumer.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=15)[0]
                   for ts in queries}
    finally:
        consumer.close()

    assert {ts: tp.error for ts, tp in results.items()} == {ts: None for ts in queries}
    assert {ts: tp.offset for ts, tp in results.items()} == queries


def test_watermark_offsets_right_after_produce(broker):
    topic = unique_topic("watermarks")
    create_topic(broker, topic, partitions=1)
    consumer = broker.consumer()
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 0)

        producer = broker.producer()
        d = Delivery()
        for i in range(13):
            producer.produce(topic, value=b"x", on_delivery=d.callback)
        flush_all(producer)
        assert len(d.ok) == 13

        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 13)
    finally:
        consumer.close()


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_with_acks_is_readable(broker, acks):
    topic = unique_topic(f"acks-{acks}")
    create_topic(broker, topic, partitions=1)
    producer = broker.producer({"acks": acks})
    d = Delivery()
    for i in range(25):
        producer.produce(topic, key=f"k{i}".encode(), value=f"acks-{acks}-{i}".encode(),
                         on_delivery=d.callback)
    flush_all(producer)
    assert d.failed == []
    assert len(d.ok) == 25
    if acks != "0":  # with acks=0 the broker sends no response, so offsets are unknown
        assert [m.offset() for m in d.ok] == list(range(25))

    consumer = broker.consumer()
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = consume_n(consumer, 25)
    finally:
        consumer.close()
    assert [(m.offset(), m.value()) for m in got] == [(i, f"acks-{acks}-{i}".encode()) for i in range(25)]


def test_message_over_topic_max_message_bytes_fails_with_msg_size_too_large(broker):
    topic = unique_topic("too-large")
    create_topic(broker, topic, partitions=1, config={"max.message.bytes": "2000"})
    producer = broker.producer({"compression.type": "none", "linger.ms": 0, "retries": 0})

    big = Delivery()
    producer.produce(topic, value=b"x" * 5000, on_delivery=big.callback)
    flush_all(producer)
    small = Delivery()
    producer.produce(topic, value=b"small", on_delivery=small.callback)
    flush_all(producer)

    assert big.ok == [], "a 5000-byte record was accepted by a topic with max.message.bytes=2000"
    assert [e.code() for e, _ in big.failed] == [KafkaError.MSG_SIZE_TOO_LARGE], \
        f"got {[str(e) for e, _ in big.failed]}"
    assert small.failed == []
    assert [m.offset() for m in small.ok] == [0], "the rejected record must not take an offset"


def test_log_append_time_topic_gives_broker_timestamp_to_consumer(broker):
    topic = unique_topic("log-append")
    create_topic(broker, topic, partitions=1, config={"message.timestamp.type": "LogAppendTime"})
    producer = broker.producer()
    d = Delivery()
    before = int(time.time() * 1000)
    producer.produce(topic, value=b"v", timestamp=1_000_000, on_delivery=d.callback)  # 1970
    flush_all(producer)
    after = int(time.time() * 1000)
    assert d.failed == [] and len(d.ok) == 1

    consumer = broker.consumer()
    try:
        (msg,) = consume_until_eof(consumer, [TopicPartition(topic, 0, OFFSET_BEGINNING)])
    finally:
        consumer.close()

    ts_type, ts = msg.timestamp()
    assert ts_type == TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= ts <= after + 1000, f"log append time {ts} not within [{before}, {after}]"


def test_log_append_time_is_returned_in_produce_response(broker):
    topic = unique_topic("log-append-dr")
    create_topic(broker, topic, partitions=1, config={"message.timestamp.type": "LogAppendTime"})
    producer = broker.producer()
    d = Delivery()
    before = int(time.time() * 1000)
    producer.produce(topic, value=b"v", timestamp=1_000_000, on_delivery=d.callback)
    flush_all(producer)
    after = int(time.time() * 1000)

    (msg,) = d.ok
    ts_type, ts = msg.timestamp()
    assert ts_type == TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= ts <= after + 1000


def test_multi_partition_topic_each_partition_written_and_read_explicitly(broker):
    topic = unique_topic("multi")
    partitions = 4
    create_topic(broker, topic, partitions=partitions)
    producer = broker.producer()
    d = Delivery()
    for p in range(partitions):
        for i in range(10):
            producer.produce(topic, partition=p, key=f"p{p}".encode(), value=f"p{p}-m{i}".encode(),
                             on_delivery=d.callback)
    flush_all(producer)
    assert d.failed == []
    by_partition = {p: [m.offset() for m in d.ok if m.partition() == p] for p in range(partitions)}
    assert by_partition == {p: list(range(10)) for p in range(partitions)}

    for p in range(partitions):
        consumer = broker.consumer()
        try:
            got = consume_until_eof(consumer, [TopicPartition(topic, p, OFFSET_BEGINNING)])
        finally:
            consumer.close()
        assert [(m.partition(), m.offset(), m.value()) for m in got] == \
            [(p, i, f"p{p}-m{i}".encode()) for i in range(10)], f"partition {p}"
