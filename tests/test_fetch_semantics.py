"""Fetch and offset semantics checked on raw sockets, where the client cannot paper over them."""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaError

import kafka_wire as kw
from rafka_harness import Delivery, create_topic, flush_all, unique_topic

OFFSET_OUT_OF_RANGE = 1
NOT_ENOUGH_REPLICAS = 19


def produce_values(broker, topic: str, values: list[bytes], conf: dict | None = None) -> Delivery:
    producer = broker.producer({"linger.ms": 0, **(conf or {})})
    d = Delivery()
    for v in values:
        producer.produce(topic, partition=0, value=v, on_delivery=d.callback)
    flush_all(producer)
    return d


def fetch_version(ks: kw.KafkaSocket) -> int:
    return kw.pick_version(kw.api_versions(ks).ranges, kw.API_FETCH, *kw.FETCH_VERSIONS)


def test_fetch_on_empty_partition_waits_for_max_wait_ms(broker):
    topic = unique_topic("longpoll-empty")
    create_topic(broker, topic)
    with kw.KafkaSocket(broker.port) as ks:
        version = fetch_version(ks)
        started = time.monotonic()
        res = kw.fetch(ks, version, topic, 0, 0, max_wait_ms=1500)
        elapsed = time.monotonic() - started

    assert (res.error_code, res.high_watermark, res.records) == (0, 0, b"")
    assert 1.2 <= elapsed <= 5.0, f"an empty long poll with max_wait_ms=1500 returned after {elapsed:.2f}s"


def test_fetch_long_poll_returns_as_soon_as_data_arrives(broker):
    topic = unique_topic("longpoll-wake")
    create_topic(broker, topic)
    result = {}

    def long_poll():
        with kw.KafkaSocket(broker.port, timeout=30) as ks:
            version = fetch_version(ks)
            started = time.monotonic()
            result["res"] = kw.fetch(ks, version, topic, 0, 0, max_wait_ms=20000)
            result["elapsed"] = time.monotonic() - started

    t = threading.Thread(target=long_poll)
    t.start()
    d = produce_values(broker, topic, [b"wake up"])
    t.join(timeout=30)

    assert not t.is_alive(), "the long poll never returned"
    assert d.failed == []
    assert result["elapsed"] < 10.0, f"long poll took {result['elapsed']:.2f}s although data arrived"
    records = [r for b in kw.parse_batches(result["res"].records) for r in b.records]
    assert [(r["offset"], r["value"]) for r in records] == [(0, b"wake up")]


def test_fetch_beyond_log_end_fails_with_offset_out_of_range(broker):
    topic = unique_topic("oor")
    create_topic(broker, topic)
    assert produce_values(broker, topic, [b"a", b"b", b"c"]).failed == []
    with kw.KafkaSocket(broker.port) as ks:
        version = fetch_version(ks)
        at_end = kw.fetch(ks, version, topic, 0, 3)
        beyond = kw.fetch(ks, version, topic, 0, 1000)

    assert (at_end.error_code, at_end.high_watermark, at_end.records) == (0, 3, b"")
    assert beyond.error_code == OFFSET_OUT_OF_RANGE


def test_fetch_from_middle_of_batch_returns_that_batch_and_clients_skip_earlier_records(broker):
    topic = unique_topic("mid-batch")
    create_topic(broker, topic)
    # One produce request, one batch of 5 records.
    producer = broker.producer({"linger.ms": 100})
    d = Delivery()
    for i in range(5):
        producer.produce(topic, partition=0, value=f"r{i}".encode(), on_delivery=d.callback)
    flush_all(producer)
    assert [m.offset() for m in d.ok] == [0, 1, 2, 3, 4]
    with kw.KafkaSocket(broker.port) as ks:
        res = kw.fetch(ks, fetch_version(ks), topic, 0, 3)

    batches = kw.parse_batches(res.records)
    assert batches and batches[0].base_offset <= 3 <= batches[0].base_offset + batches[0].last_offset_delta
    offsets = [r["offset"] for b in batches for r in b.records]
    assert offsets[-1] == 4 and 3 in offsets


def test_offset_for_leader_epoch_returns_log_end_for_current_epoch(broker):
    topic = unique_topic("epoch")
    create_topic(broker, topic)
    assert produce_values(broker, topic, [b"x"] * 7).failed == []
    with kw.KafkaSocket(broker.port) as ks:
        ranges = kw.api_versions(ks).ranges
        batches = kw.parse_batches(kw.fetch(ks, kw.pick_version(ranges, kw.API_FETCH, *kw.FETCH_VERSIONS),
                                            topic, 0, 0).records)
        epoch = batches[-1].leader_epoch  # the broker stamps its leader epoch into every batch
        version = kw.pick_version(ranges, kw.API_OFFSET_FOR_LEADER_EPOCH, *kw.OFFSET_FOR_LEADER_EPOCH_VERSIONS)
        res = kw.offset_for_leader_epoch(ks, version, topic, 0, leader_epoch=epoch)

    assert epoch >= 0, f"batches carry leader epoch {epoch}"
    assert (res.error_code, res.leader_epoch, res.end_offset) == (0, epoch, 7)


def test_acks_all_below_min_insync_replicas_fails_with_not_enough_replicas(broker):
    topic = unique_topic("min-isr")
    create_topic(broker, topic, config={"min.insync.replicas": "2"})  # one broker: ISR is 1

    all_acks = produce_values(broker, topic, [b"needs two replicas"], {"acks": "all", "retries": 0})
    one_ack = produce_values(broker, topic, [b"leader only"], {"acks": "1"})

    assert [e.code() for e, _ in all_acks.failed] == [KafkaError.NOT_ENOUGH_REPLICAS], \
        [str(e) for e, _ in all_acks.failed]
    assert one_ack.failed == [] and [m.offset() for m in one_ack.ok] == [0]


def test_metadata_without_allow_auto_topic_creation_does_not_create_the_topic(broker):
    topic = unique_topic("no-create")
    with kw.KafkaSocket(broker.port) as ks:
        ranges = kw.api_versions(ks).ranges
        assert ranges[kw.API_METADATA][0] <= kw.METADATA_V4 <= ranges[kw.API_METADATA][1]
        res = kw.metadata_v4(ks, [topic], allow_auto_topic_creation=False)
        again = kw.metadata_v4(ks, None, allow_auto_topic_creation=False)

    assert res[topic][0] == 3, f"error code {res[topic][0]}, want UNKNOWN_TOPIC_OR_PARTITION (3)"
    assert topic not in again


def test_metadata_with_allow_auto_topic_creation_creates_the_topic(broker):
    topic = unique_topic("create")
    with kw.KafkaSocket(broker.port) as ks:
        first = kw.metadata_v4(ks, [topic], allow_auto_topic_creation=True)
        second = kw.metadata_v4(ks, [topic], allow_auto_topic_creation=False)

    # Kafka answers the creating request with LEADER_NOT_AVAILABLE (5) or with the new topic.
    assert first[topic][0] in (0, 5), first
    assert second[topic] == (0, [0])


def test_produce_to_missing_partition_fails_with_unknown_topic_or_partition(broker):
    topic = unique_topic("no-such-partition")
    create_topic(broker, topic, partitions=1)
    batch = kw.record_batch([kw.Record(None, b"v")], base_timestamp=int(time.time() * 1000))
    with kw.KafkaSocket(broker.port) as ks:
        version = kw.pick_version(kw.api_versions(ks).ranges, kw.API_PRODUCE, *kw.PRODUCE_VERSIONS)
        res = kw.produce(ks, version, topic, 5, batch, acks=1)
    assert res.error_code == 3


def test_batch_larger_than_fetch_max_bytes_is_still_returned_whole(broker):
    """KIP-74: the first batch is returned even when it exceeds max_bytes, so consumers make progress."""
    topic = unique_topic("big-batch")
    create_topic(broker, topic)
    assert produce_values(broker, topic, [b"B" * 20000], {"compression.type": "none"}).failed == []
    with kw.KafkaSocket(broker.port) as ks:
        res = kw.fetch(ks, fetch_version(ks), topic, 0, 0, max_bytes=1000)

    batches = kw.parse_batches(res.records)
    assert len(batches) == 1, f"got {len(res.records)} bytes, {len(batches)} complete batches"
    assert batches[0].records[0]["value"] == b"B" * 20000


def test_concurrent_producers_to_one_partition_get_unique_contiguous_offsets(broker):
    topic = unique_topic("concurrent")
    create_topic(broker, topic)
    results: dict[int, Delivery] = {}

    def run(n: int) -> None:
        results[n] = produce_values(broker, topic, [f"p{n}-{i}".encode() for i in range(400)],
                                    {"linger.ms": 1})

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    offsets = sorted(m.offset() for d in results.values() for m in d.ok)
    assert [len(d.failed) for d in results.values()] == [0, 0, 0, 0]
    assert offsets == list(range(1600)), "offsets are duplicated or have gaps"
    by_offset = {m.offset(): m.value() for d in results.values() for m in d.ok}
    with kw.KafkaSocket(broker.port) as ks:
        version = fetch_version(ks)
        got = {}
        while len(got) < 1600:
            res = kw.fetch(ks, version, topic, 0, len(got))
            recs = [r for b in kw.parse_batches(res.records) for r in b.records if r["offset"] >= len(got)]
            assert recs, f"fetch at {len(got)} returned nothing"
            got.update({r["offset"]: r["value"] for r in recs})
    assert got == by_offset


def test_fetch_of_unknown_topic_fails_with_unknown_topic_or_partition(broker):
    with kw.KafkaSocket(broker.port) as ks:
        res = kw.fetch(ks, fetch_version(ks), unique_topic("never-created"), 0, 0)
    assert res.error_code == 3
