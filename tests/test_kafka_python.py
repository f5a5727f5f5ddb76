"""kafka-python 3.x (a pure-Python client with its own protocol code) against rafka."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from rafka_harness import unique_topic


def consume(broker, topic: str, partition: int, n: int, timeout: float = 30.0) -> list:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             client_id="rafka-tests-kafka-python")
    try:
        consumer.assign([TopicPartition(topic, partition)])
        out: list = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


@pytest.mark.parametrize("compression", [None, "gzip"], ids=["none", "gzip"])
def test_produce_to_auto_created_topic_and_consume_back(broker, compression):
    topic = unique_topic("kp-auto")  # never created explicitly: Metadata/Produce auto-create it
    # kafka-python 3 is idempotent by default (InitProducerId, then sequence-numbered batches).
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                             compression_type=compression, linger_ms=5,
                             client_id="rafka-tests-kafka-python")
    try:
        futures = [producer.send(topic, key=f"k{i}".encode(), value=f"kafka-python {i}".encode(),
                                 headers=[("i", str(i).encode()), ("i", b"\x00\xff")])
                   for i in range(30)]
        producer.flush(timeout=30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)
    assert [(m.topic, m.partition, m.offset) for m in metas] == [(topic, 0, i) for i in range(30)]

    got = consume(broker, topic, 0, 30)

    assert [(r.offset, r.key, r.value) for r in got] == \
        [(i, f"k{i}".encode(), f"kafka-python {i}".encode()) for i in range(30)]
    assert [list(r.headers) for r in got] == [[("i", str(i).encode()), ("i", b"\x00\xff")] for i in range(30)]
