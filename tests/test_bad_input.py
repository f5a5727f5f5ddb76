"""Hand-made frames on raw sockets: well-formed requests are answered byte-exactly, and
bad input closes only the offending connection.

Every bad-input test holds a second, healthy raw connection open across the abuse
and checks it still answers afterwards, then checks a brand-new confluent-kafka
producer and consumer still work.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

import kafka_wire as kw
from rafka_harness import Delivery, consume_until_eof, create_topic, flush_all, unique_topic

CORRUPT_MESSAGE = 2
UNSUPPORTED_VERSION = 35


def assert_broker_still_serves(broker, bystander: kw.KafkaSocket) -> None:
    """The connection opened before the abuse still answers, and new real clients work."""
    res = kw.api_versions(bystander, correlation_id=4242)
    assert res.error_code == 0

    topic = unique_topic("after-abuse")
    producer = broker.producer()
    d = Delivery()
    for i in range(3):
        producer.produce(topic, partition=0, value=f"still alive {i}".encode(), on_delivery=d.callback)
    flush_all(producer)
    assert d.failed == [] and [m.offset() for m in d.ok] == [0, 1, 2]
    consumer = broker.consumer()
    try:
        got = consume_until_eof(consumer, [TopicPartition(topic, 0, OFFSET_BEGINNING)])
    finally:
        consumer.close()
    assert [m.value() for m in got] == [f"still alive {i}".encode() for i in range(3)]


@pytest.fixture
def bystander(broker):
    """A healthy raw connection, opened (and used) before the bad input."""
    with kw.KafkaSocket(broker.port) as ks:
        assert kw.api_versions(ks, correlation_id=1).error_code == 0
        yield ks


# --------------------------------------------------------------------------- well-formed


def test_api_versions_v0_is_answered_with_echoed_correlation_id_and_supported_apis(broker):
    with kw.KafkaSocket(broker.port) as ks:
        ks.send_raw(kw.frame(kw.request_header_v1(kw.API_API_VERSIONS, 0, 0x5EED1234) + b""))
        corr, body = ks.recv_frame()
        res = kw.parse_api_versions_v0(corr, body)
        trailing = body.remaining()

    assert corr == 0x5EED1234
    assert res.error_code == 0
    assert trailing == 0, f"{trailing} bytes after the v0 body"
    for key in (kw.API_PRODUCE, kw.API_FETCH, kw.API_METADATA, kw.API_API_VERSIONS):
        assert key in res.ranges, f"api key {key} not advertised: {sorted(res.ranges)}"
    assert all(0 <= lo <= hi for lo, hi in res.ranges.values()), res.ranges
    assert res.ranges[kw.API_API_VERSIONS][0] == 0 and res.ranges[kw.API_API_VERSIONS][1] >= 3


def test_pipelined_requests_are_answered_in_order(broker):
    with kw.KafkaSocket(broker.port) as ks:
        ks.send_raw(b"".join(kw.frame(kw.request_header_v1(kw.API_API_VERSIONS, 0, c)) for c in (11, 12, 13)))
        corrs = [ks.recv_frame()[0] for _ in range(3)]
    assert corrs == [11, 12, 13]


def test_api_versions_with_unsupported_version_answers_error_35_with_v0_body(broker):
    with kw.KafkaSocket(broker.port) as ks:
        # A future ApiVersions version: header v2 (flexible) and a v3-style body, as clients send.
        body = kw.compact_string("rafka-tests") + kw.compact_string("1.0") + kw.EMPTY_TAGGED_FIELDS
        ks.send_raw(kw.frame(kw.request_header_v2(kw.API_API_VERSIONS, 999, 77) + body))
        corr, r = ks.recv_frame()
        res = kw.parse_api_versions_v0(corr, r)
        trailing = r.remaining()

    assert corr == 77
    assert res.error_code == UNSUPPORTED_VERSION
    assert trailing == 0, f"{trailing} bytes after the v0 body"
    assert kw.API_API_VERSIONS in res.ranges and res.ranges[kw.API_API_VERSIONS][1] < 999
    assert kw.API_PRODUCE in res.ranges and kw.API_FETCH in res.ranges


# The exact frame confluent-kafka 2.16.1 (librdkafka 2.16.0) sends for AdminClient.list_topics():
# Metadata v13, all topics.  librdkafka leaves 3 bytes after the body (it reserves 4 bytes for the
# topic array count and writes a 1-byte compact count); Kafka ignores trailing bytes, so must we.
LIBRDKAFKA_2_16_METADATA_V13_ALL_TOPICS = bytes.fromhex(
    "000000190003000d00000003000772646b61666b610000000000010000")


def test_librdkafka_metadata_v13_with_trailing_bytes_is_answered(broker):
    with kw.KafkaSocket(broker.port) as ks:
        ks.send_raw(LIBRDKAFKA_2_16_METADATA_V13_ALL_TOPICS)
        (size,) = struct.unpack(">i", ks.recv_exact(4))
        r = kw.Reader(ks.recv_exact(size))

    assert r.i32() == 3, "correlation id"
    assert r.uvarint() == 0, "response header v1 tagged fields"
    r.i32()  # throttle
    brokers = []
    for _ in range(r.uvarint() - 1):
        node_id = r.i32()
        host = r.take(r.uvarint() - 1).decode()
        port = r.i32()
        rack_len = r.uvarint()
        if rack_len:
            r.take(rack_len - 1)
        assert r.uvarint() == 0
        brokers.append((node_id, host, port))
    assert brokers == [(1, "127.0.0.1", broker.port)]


def test_hand_built_batch_with_valid_crc_is_appended_and_fetched_back(broker):
    topic = unique_topic("raw-ok")
    create_topic(broker, topic)
    ts = int(time.time() * 1000)
    batch = kw.record_batch([kw.Record(b"k0", b"v0", [("h", b"\x00\x01")]),
                             kw.Record(None, b"v1", [], timestamp_delta=5)], base_timestamp=ts)
    with kw.KafkaSocket(broker.port) as ks:
        ranges = kw.api_versions(ks).ranges
        pv = kw.pick_version(ranges, kw.API_PRODUCE, *kw.PRODUCE_VERSIONS)
        fv = kw.pick_version(ranges, kw.API_FETCH, *kw.FETCH_VERSIONS)
        first = kw.produce(ks, pv, topic, 0, batch, acks=1)
        second = kw.produce(ks, pv, topic, 0, batch, acks=-1, correlation_id=8)
        fetched = kw.fetch(ks, fv, topic, 0, 0)

    assert (first.error_code, first.base_offset) == (0, 0)
    assert (second.error_code, second.base_offset) == (0, 2)
    assert (fetched.error_code, fetched.high_watermark) == (0, 4)
    batches = kw.parse_batches(fetched.records)
    assert [(b.base_offset, b.record_count, b.crc_ok) for b in batches] == [(0, 2, True), (2, 2, True)]
    records = [r for b in batches for r in b.records]
    assert [(r["offset"], r["key"], r["value"], r["headers"], r["timestamp"]) for r in records] == [
        (0, b"k0", b"v0", [("h", b"\x00\x01")], ts), (1, None, b"v1", [], ts + 5),
        (2, b"k0", b"v0", [("h", b"\x00\x01")], ts), (3, None, b"v1", [], ts + 5)]


def test_produce_with_crc_mismatch_fails_with_corrupt_message_and_appends_nothing(broker):
    topic = unique_topic("raw-crc")
    create_topic(broker, topic)
    batch = bytearray(kw.record_batch([kw.Record(b"k", b"value")], base_timestamp=int(time.time() * 1000)))
    batch[-1] ^= 0xFF  # flip the last byte of the record: CRC-32C no longer matches
    with kw.KafkaSocket(broker.port) as ks:
        ranges = kw.api_versions(ks).ranges
        pv = kw.pick_version(ranges, kw.API_PRODUCE, *kw.PRODUCE_VERSIONS)
        fv = kw.pick_version(ranges, kw.API_FETCH, *kw.FETCH_VERSIONS)
        res = kw.produce(ks, pv, topic, 0, bytes(batch), acks=1)
        fetched = kw.fetch(ks, fv, topic, 0, 0)

    assert res.error_code == CORRUPT_MESSAGE
    assert (fetched.error_code, fetched.high_watermark, fetched.records) == (0, 0, b"")


def test_produce_with_acks_0_gets_no_response(broker):
    topic = unique_topic("raw-acks0")
    create_topic(broker, topic)
    batch = kw.record_batch([kw.Record(b"k", b"fire and forget")], base_timestamp=int(time.time() * 1000))
    with kw.KafkaSocket(broker.port) as ks:
        ranges = kw.api_versions(ks).ranges
        pv = kw.pick_version(ranges, kw.API_PRODUCE, *kw.PRODUCE_VERSIONS)
        body = (kw.nullable_string(None) + kw.i16(0) + kw.i32(10000)
                + kw.array([kw.string(topic) + kw.array([kw.i32(0) + kw.kbytes(batch)])]))
        ks.send_raw(kw.frame(kw.request_header_v1(kw.API_PRODUCE, pv, 500) + body))
        ks.send_raw(kw.frame(kw.request_header_v1(kw.API_API_VERSIONS, 0, 501)))
        corr, _ = ks.recv_frame()
    assert corr == 501, "the first response on the connection must answer the request after acks=0 Produce"


# --------------------------------------------------------------------------- bad framing


def test_negative_length_prefix_closes_connection(broker, bystander):
    with kw.KafkaSocket(broker.port) as ks:
        ks.send_raw(struct.pack(">i", -1) + b"\x00" * 16)
        ks.wait_closed()
    assert_broker_still_serves(broker, bystander)


def test_length_prefix_over_default_socket_request_max_bytes_closes_connection(broker, bystander):
    with kw.KafkaSocket(broker.port) as ks:
        ks.send_raw(struct.pack(">i", 104857600 + 1) + b"\x00" * 64)
        ks.wait_closed()
    assert_broker_still_serves(broker, bystander)


def test_length_prefix_over_configured_socket_request_max_bytes_closes_connection(broker_factory):
    broker = broker_factory(overrides={"socket.request.max.bytes": "4096"})
    with kw.KafkaSocket(broker.port) as bystander:
        assert kw.api_versions(bystander).error_code == 0
        with kw.KafkaSocket(broker.port) as ks:
            header = kw.request_header_v1(kw.API_API_VERSIONS, 0, 3)
            payload = header + b"\x00" * (4097 - len(header))  # one byte over the limit
            ks.send_raw(kw.frame(payload))
            ks.wait_closed()
        assert_broker_still_serves(broker, bystander)


def test_truncated_frame_followed_by_close_leaves_broker_serving(broker, bystander):
    with kw.KafkaSocket(broker.port) as ks:
        ks.send_raw(struct.pack(">i", 200) + kw.request_header_v1(kw.API_METADATA, 1, 5)[:10])
        ks.sock.shutdown(socket.SHUT_WR)
        ks.wait_closed()  # the broker sees EOF mid-frame and closes its side
    assert_broker_still_serves(broker, bystander)


def test_unknown_api_key_closes_connection(broker, bystander):
    with kw.KafkaSocket(broker.port) as ks:
        ks.send_raw(kw.frame(kw.request_header_v1(32000, 0, 6) + b"\x00\x00\x00\x00"))
        ks.wait_closed()
    assert_broker_still_serves(broker, bystander)


def test_unsupported_version_of_known_api_closes_connection(broker, bystander):
    with kw.KafkaSocket(broker.port) as ks:
        # Metadata v999 (flexible, so header v2) with an empty topic list.
        ks.send_raw(kw.frame(kw.request_header_v2(kw.API_METADATA, 999, 7) + b"\x01\x00\x00\x00"))
        ks.wait_closed()
    assert_broker_still_serves(broker, bystander)


GARBAGE_FRAMES = {
    # Metadata v1 whose topic array claims 2^31-1 entries in a 6-byte body.
    "array-count-beyond-frame": kw.request_header_v1(kw.API_METADATA, 1, 8) + kw.i32(0x7FFFFFFF) + b"\xde\xad",
    # A client id string longer than the whole frame.
    "string-length-beyond-frame": kw.i16(kw.API_METADATA) + kw.i16(1) + kw.i32(9) + kw.i16(1000) + b"abc",
    # Produce v3 cut off in the middle of its topic name.
    "produce-body-truncated": kw.request_header_v1(kw.API_PRODUCE, 3, 10) + kw.i16(-1) + kw.i16(1)
    + kw.i32(1000) + kw.i32(1) + kw.i16(40) + b"only-part-of-the-name",
    # A frame too short to hold even a request header.
    "shorter-than-header": b"\x00\x03\x00",
}


@pytest.mark.parametrize("payload", list(GARBAGE_FRAMES.values()), ids=list(GARBAGE_FRAMES))
def test_garbage_inside_frame_closes_connection(broker, bystander, payload):
    with kw.KafkaSocket(broker.port) as ks:
        ks.send_raw(kw.frame(payload))
        ks.wait_closed()
    assert_broker_still_serves(broker, bystander)
