"""flush.messages=1, the durable mode, on three-node clusters with real clients.

Every node runs with an LD_PRELOAD shim around fdatasync(2) (tests/fsync_shim.c,
built here with cc): it logs every call with its time, result and file, and for the
files of the topic under test it can delay the call or fail it with EIO, switched per
node by files in a control directory while the node runs.  So the fsyncs are seen
from outside the broker, and the tests can fail if one is skipped:

1. An RF=3 topic with flush.messages=1 takes an idempotent acks=all producer's
   records and gives every one back in order; every node fdatasyncs the topic's
   segment; DescribeConfigs reports flush.messages=1 as a topic override and flush.ms
   as Kafka's default; flush.messages=0 is INVALID_CONFIG on create and on alter.
   A topic with the default settings gets no fdatasync at all from producing to it.
2. Acknowledgements wait for the fsyncs: with the followers' fdatasync of the topic
   delayed by D, every acks=all produce takes at least D (the leader counts only what
   a follower fsynced); with the leader's delayed, every acks=1 produce takes at
   least D.  With the leader's fdatasync failing, an acks=1 produce gets
   KAFKA_STORAGE_ERROR and the leader logs the failure with topic and partition;
   once the disk "heals" the partition commits again.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic, ResourceType

from rafka_harness import Cluster, Delivery, client_base, consume_until_eof, flush_all, require_tool, wait_until

IDS = (1, 2, 3)
KAFKA_STORAGE_ERROR = 56
LONG_MAX = "9223372036854775807"
DELAY_MS = 400


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    cc = require_tool("cc")
    out = tmp_path_factory.mktemp("shim") / "fsync_shim.so"
    src = Path(__file__).with_name("fsync_shim.c")
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(out), str(src), "-ldl"],
                   check=True, capture_output=True, text=True)
    return out


def start_cluster(cluster_factory, shim: Path, match: str) -> Cluster:
    """Three nodes, each with the shim; delays and failures apply to paths containing `match`."""
    # No periodic flush during a test: the fdatasyncs seen are the flush policy's.
    c = cluster_factory(start=False, extra={"log.flush.offset.checkpoint.interval.ms": "600000"})
    for i in IDS:
        node = c[i]
        control = node.workdir / "fsync-control"
        control.mkdir()
        node.env.update({
            "LD_PRELOAD": str(shim),
            "FSYNC_SHIM_LOG": str(node.workdir / "fsync.log"),
            "FSYNC_SHIM_MATCH": match,
            "FSYNC_SHIM_CONTROL": str(control),
        })
    c.start()
    return c


def control(c: Cluster, node: int) -> Path:
    return c[node].workdir / "fsync-control"


def fsyncs(c: Cluster, node: int, topic: str) -> list[tuple[int, int, str]]:
    """(time ms, result, path) of every fdatasync node `node` made on a segment of `topic`."""
    try:
        text = (c[node].workdir / "fsync.log").read_text()
    except FileNotFoundError:
        return []
    calls = [line.split(" ", 2) for line in text.splitlines()]
    return [(int(t), int(r), p) for t, r, p in calls if f"/{topic}-0/" in p and p.endswith(".log")]


def bootstrap(c: Cluster) -> str:
    return ",".join(c[i].bootstrap for i in IDS)


def admin(c: Cluster) -> AdminClient:
    """One AdminClient per cluster, kept alive (a collected client fails its futures)."""
    if not hasattr(c, "durable_test_admin"):
        c.durable_test_admin = AdminClient(client_base(bootstrap(c)))
    return c.durable_test_admin


def create_rf3_topic(c: Cluster, name: str, config: dict[str, str] | None = None) -> int:
    """One partition on all three nodes; waits for a leader and the full ISR. Returns the leader."""
    futures = admin(c).create_topics([NewTopic(name, num_partitions=1, replica_assignment=[[1, 2, 3]],
                                               config=config or {})], operation_timeout=15, request_timeout=20)
    futures[name].result(timeout=30)

    def led_in_sync():
        views = [c.metadata(i, [name]).topics[name].partitions[0] for i in IDS]
        if all(v.leader in IDS and sorted(v.isr) == [1, 2, 3] for v in views) and len({v.leader for v in views}) == 1:
            return views[0].leader
        raise AssertionError(f"{[(v.leader, sorted(v.isr)) for v in views]}")
    return wait_until(led_in_sync, 20, message=f"{name} to have one leader and ISR [1, 2, 3] on every node")


def producer(c: Cluster, conf: dict) -> Producer:
    return Producer({**client_base(bootstrap(c)), "linger.ms": 0, "message.timeout.ms": 30000, **conf})


def timed_produce(p, topic: str, value: bytes) -> tuple[float, Delivery]:
    d = Delivery()
    t0 = time.monotonic()
    p.produce(topic, value=value, on_delivery=d.callback)
    flush_all(p)
    return time.monotonic() - t0, d


def describe(c: Cluster, topic: str) -> dict[str, tuple[str, ConfigSource]]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin(c).describe_configs([resource], request_timeout=15)[resource].result(timeout=20)

    def source(e):
        return e.source if isinstance(e.source, ConfigSource) else ConfigSource(e.source)
    return {name: (e.value, source(e)) for name, e in entries.items()}


def test_a_durable_topic_replicates_reads_back_and_fsyncs_on_every_node(cluster_factory, shim):
    tag = uuid.uuid4().hex[:8]
    durable, plain = f"durable-{tag}", f"plain-{tag}"
    c = start_cluster(cluster_factory, shim, match=durable)
    create_rf3_topic(c, durable, {"flush.messages": "1"})
    create_rf3_topic(c, plain)

    p = producer(c, {"acks": "all", "enable.idempotence": True, "linger.ms": 2})
    d = Delivery()
    values = [f"v{i}".encode() for i in range(300)]
    for v in values:
        p.produce(durable, value=v, on_delivery=d.callback)
    flush_all(p)
    assert d.failed == [], [str(e) for e, _ in d.failed[:3]]
    assert sorted(m.offset() for m in d.ok) == list(range(300))

    consumer = Consumer({**client_base(bootstrap(c)), "group.id": "unused", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    try:
        got = consume_until_eof(consumer, [TopicPartition(durable, 0, 0)])
    finally:
        consumer.close()
    assert [m.value() for m in got] == values

    for i in IDS:
        calls = fsyncs(c, i, durable)
        assert calls and all(r == 0 for _, r, _ in calls), f"node {i} fdatasyncs of {durable}: {calls[:5]}"

    # The default settings: producing costs no fdatasync (opening the partition did some).
    wait_until(lambda: all(fsyncs(c, i, plain) for i in IDS), 10, message=f"{plain} opened on every node")
    before = {i: len(fsyncs(c, i, plain)) for i in IDS}
    d = Delivery()
    for i in range(50):
        p.produce(plain, value=b"x", on_delivery=d.callback)
    flush_all(p)
    assert len(d.ok) == 50
    time.sleep(1.5)  # a syncer period: nothing may come late either
    assert {i: len(fsyncs(c, i, plain)) for i in IDS} == before

    configs = describe(c, durable)
    assert configs["flush.messages"] == ("1", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert configs["flush.ms"] == (LONG_MAX, ConfigSource.DEFAULT_CONFIG)
    assert describe(c, plain)["flush.messages"] == (LONG_MAX, ConfigSource.DEFAULT_CONFIG)

    bad = f"bad-{tag}"
    futures = admin(c).create_topics([NewTopic(bad, num_partitions=1, replication_factor=3,
                                               config={"flush.messages": "0"})], request_timeout=15)
    with pytest.raises(KafkaException) as exc_info:
        futures[bad].result(timeout=20)
    err = exc_info.value.args[0]
    assert err.code() == KafkaError.INVALID_CONFIG, err.str()
    assert "flush.messages" in err.str() and '"0"' in err.str(), err.str()
    resource = ConfigResource(ResourceType.TOPIC, durable, incremental_configs=[
        ConfigEntry("flush.messages", "0", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as exc_info:
        admin(c).incremental_alter_configs([resource], request_timeout=15)[resource].result(timeout=20)
    assert exc_info.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert describe(c, durable)["flush.messages"][0] == "1"


def test_acknowledgements_wait_for_the_fsyncs_and_a_failed_fsync_is_a_storage_error(cluster_factory, shim):
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    c = start_cluster(cluster_factory, shim, match=topic)
    leader = create_rf3_topic(c, topic, {"flush.messages": "1"})
    followers = [i for i in IDS if i != leader]
    acks_all = producer(c, {"acks": "all", "enable.idempotence": True})
    acks_one = producer(c, {"acks": "1", "enable.idempotence": False, "retries": 0})
    for p in (acks_all, acks_one):  # connections and metadata, outside the measurements
        _, d = timed_produce(p, topic, b"warm-up")
        assert d.failed == [], d.failed

    # Followers' fsyncs are slow: acks=all waits for them.
    for i in followers:
        (control(c, i) / "delay_ms").write_text(str(DELAY_MS))
    took = []
    for n in range(3):
        elapsed, d = timed_produce(acks_all, topic, f"all-{n}".encode())
        assert d.failed == [], d.failed
        took.append(elapsed)
    print(f"acks=all with followers' fdatasync delayed {DELAY_MS} ms: {[round(t, 3) for t in took]} s")
    assert min(took) >= DELAY_MS / 1000, f"acknowledged before the followers' fsync: {took}"
    for i in followers:
        (control(c, i) / "delay_ms").unlink()

    # The leader's fsync is slow: even acks=1 waits for it.
    (control(c, leader) / "delay_ms").write_text(str(DELAY_MS))
    took = []
    for n in range(3):
        elapsed, d = timed_produce(acks_one, topic, f"one-{n}".encode())
        assert d.failed == [], d.failed
        took.append(elapsed)
    print(f"acks=1 with the leader's fdatasync delayed {DELAY_MS} ms: {[round(t, 3) for t in took]} s")
    assert min(took) >= DELAY_MS / 1000, f"acks=1 acknowledged before the leader's fsync: {took}"
    (control(c, leader) / "delay_ms").unlink()

    # The leader's disk fails: no acknowledgement, KAFKA_STORAGE_ERROR instead.
    (control(c, leader) / "fail").write_text("")
    _, d = timed_produce(acks_one, topic, b"lost?")
    assert d.ok == [] and len(d.failed) == 1, (d.ok, d.failed)
    assert d.failed[0][0].code() == KAFKA_STORAGE_ERROR, d.failed[0][0]
    assert any(r == -1 for _, r, _ in fsyncs(c, leader, topic)), "the shim saw no failed fdatasync"
    wait_until(lambda: any("fsync of the partition log failed" in line and topic in line
                           for line in c[leader].log_text().splitlines()),
               10, message="the leader to log the failed fsync with the topic")

    # Healed: the next produce commits (and so does the one that failed, now durable).
    (control(c, leader) / "fail").unlink()
    _, d = timed_produce(acks_all, topic, b"after")
    assert d.failed == [], d.failed
