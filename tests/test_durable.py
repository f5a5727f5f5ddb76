"""flush.messages=1, the durable mode, on three-node clusters with real clients.

Every node runs under strace(1) (`Broker.wrapper`; the suite runs the statically
linked broker, out of reach of an LD_PRELOAD shim): `-e trace=fdatasync -y` logs
each fdatasync(2) with its file and result to the node's fsync.log.  On some nodes
`-P <segment file>` with `-e inject=fdatasync:...` also delays the fdatasyncs of
given topics' segment files, or fails them with EIO, and touches no other file.
Injection is fixed when strace starts, so each node gets its part before it starts
and changes it by restarting: a topic's leader is the first replica of the
assignment the test gives it (and leads again once back in the ISR), so the test
knows in advance which node leads and which ones follow.  The fsyncs are seen from
outside the broker, and the tests fail if one is skipped:

1. An RF=3 topic with flush.messages=1 takes an idempotent acks=all producer's
   records and gives every one back in order; every node fdatasyncs the topic's
   segment for them; DescribeConfigs reports flush.messages=1 as a topic override
   and flush.ms as Kafka's default; flush.messages=0 is INVALID_CONFIG on create and
   on alter.
   A topic with the default settings gets no fdatasync at all from producing to it.
2. Acknowledgements wait for the fsyncs: with the followers' fdatasyncs of a topic
   delayed by D, every acks=all produce to it takes at least D (the leader counts
   only what a follower fsynced); with the leader's delayed, every acks=1 produce
   takes at least D.
3. With the leader's fdatasyncs of a topic failing, an acks=1 produce gets
   KAFKA_STORAGE_ERROR and the leader logs the failure with topic and partition;
   restarted on a "healed" disk, it leads the partition again and it commits again.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Iterable, NamedTuple

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic, ResourceType

from rafka_harness import Cluster, ClusterNode, Delivery, client_base, consume_until_eof, flush_all, require_tool, wait_until

IDS = (1, 2, 3)
KAFKA_STORAGE_ERROR = 56
LONG_MAX = "9223372036854775807"
DELAY_MS = 400
FIRST_SEGMENT = "00000000000000000000.log"


# --------------------------------------------------------------------------
# strace: the nodes' fdatasyncs, logged and perturbed
# --------------------------------------------------------------------------


def segment_file(node: ClusterNode, topic: str) -> Path:
    """The first segment of partition 0 of `topic` on `node`, as /proc/<pid>/fd names it
    (which is what strace's -P compares; the file need not exist yet)."""
    return Path(node.props["log.dirs"]).resolve() / f"{topic}-0" / FIRST_SEGMENT


def strace(node: ClusterNode, inject: str | None = None, topics: Iterable[str] = ()) -> list[str]:
    """A `wrapper` for `node`: every fdatasync it makes goes to its fsync.log (appended
    to across restarts).  With `inject` (strace's `-e inject=fdatasync:<inject>`, e.g.
    "delay_exit=400ms" or "error=EIO"), only the fdatasyncs of the first segment of
    `topics` are traced, and those get the injection.

    strace stops the broker only at fdatasyncs (--seccomp-bpf), and it never detaches
    on a signal (-I3): the harness signals the process group, the broker exits on its
    own SIGTERM, and strace exits with it."""
    command = [require_tool("strace"), "-f", "--seccomp-bpf", "-I3", "-qq", "-tt", "-y", "-A",
               "-o", str(node.workdir / "fsync.log"), "-e", "trace=fdatasync", "-e", "signal=none"]
    if inject is not None:
        topics = list(topics)
        assert topics, "an injection needs the topics whose segments it hits"
        for topic in topics:
            command += ["-P", str(segment_file(node, topic))]
        command += ["-e", f"inject=fdatasync:{inject}"]
    return [*command, "--"]


class Fsync(NamedTuple):
    path: str
    result: int
    detail: str  # what strace added after the result: "EIO (...) (INJECTED)", "(DELAYED)"


# strace -f -tt -y: "<pid> <time> fdatasync(<fd><<path>>) = <result> [detail]".  When
# another thread's call comes in between, a call's line is split in two:
# "... <unfinished ...>", then "<pid> <time> <... fdatasync resumed>) = <result> [detail]".
_CALL = re.compile(r"^(?:(?P<pid>\d+) +)?(?:[\d:.]+ +)?fdatasync\(\d+<(?P<path>.*?)>"
                   r"(?:\) += (?P<result>-?\d+) *(?P<detail>.*)| <unfinished \.\.\.>)$")
_RESUMED = re.compile(r"^(?:(?P<pid>\d+) +)?(?:[\d:.]+ +)?<\.\.\. fdatasync resumed>\) += "
                      r"(?P<result>-?\d+) *(?P<detail>.*)$")


def fsync_log(node: ClusterNode) -> list[Fsync]:
    """Every finished fdatasync in the node's fsync.log, in order."""
    try:
        text = (node.workdir / "fsync.log").read_text(errors="replace")
    except FileNotFoundError:
        return []
    calls: list[Fsync] = []
    unfinished: dict[str | None, str] = {}
    for line in text.splitlines():
        if m := _CALL.match(line):
            if m["result"] is None:
                unfinished[m["pid"]] = m["path"]
            else:
                calls.append(Fsync(m["path"], int(m["result"]), m["detail"]))
        elif (m := _RESUMED.match(line)) and m["pid"] in unfinished:
            calls.append(Fsync(unfinished.pop(m["pid"]), int(m["result"]), m["detail"]))
    return calls


def fsyncs(c: Cluster, node: int, topic: str) -> list[Fsync]:
    """The fdatasyncs node `node` made of segment files of partition 0 of `topic`."""
    return [f for f in fsync_log(c[node]) if f"/{topic}-0/" in f.path and f.path.endswith(".log")]


# --------------------------------------------------------------------------
# Clusters, topics, clients
# --------------------------------------------------------------------------


def new_cluster(cluster_factory) -> Cluster:
    """Three nodes, not started; each runs under strace() unless the test says otherwise."""
    # No periodic flush during a test: the fdatasyncs seen are the flush policy's.
    c = cluster_factory(start=False, extra={"log.flush.offset.checkpoint.interval.ms": "600000"})
    for i in IDS:
        c[i].wrapper = strace(c[i])
    return c


def restart(c: Cluster, node: int, wrapper: list[str]) -> None:
    """Stop node `node` and start it again under `wrapper`."""
    c.stop([node])
    c[node].wrapper = wrapper
    c.start([node])


def bootstrap(c: Cluster) -> str:
    return ",".join(c[i].bootstrap for i in IDS)


def admin(c: Cluster) -> AdminClient:
    """One AdminClient per cluster, kept alive (a collected client fails its futures)."""
    if not hasattr(c, "durable_test_admin"):
        c.durable_test_admin = AdminClient(client_base(bootstrap(c)))
    return c.durable_test_admin


def wait_led_in_sync(c: Cluster, topic: str, leader: int, timeout: float = 20) -> None:
    """Until every node sees `leader` lead partition 0 of `topic` with ISR [1, 2, 3]."""
    def led_in_sync():
        views = [c.metadata(i, [topic]).topics[topic].partitions[0] for i in IDS]
        states = [(v.leader, sorted(v.isr)) for v in views]
        assert all(s == (leader, [1, 2, 3]) for s in states), states
        return True
    wait_until(led_in_sync, timeout, message=f"node {leader} to lead {topic} with ISR [1, 2, 3] on every node")


def create_rf3_topic(c: Cluster, name: str, config: dict[str, str] | None = None,
                     replicas: list[int] | None = None) -> int:
    """One partition on all three nodes, `replicas` in that order (the first leads;
    default [1, 2, 3]); waits until it leads with the full ISR. Returns the leader."""
    replicas = replicas or [1, 2, 3]
    futures = admin(c).create_topics([NewTopic(name, num_partitions=1, replica_assignment=[replicas],
                                               config=config or {})], operation_timeout=15, request_timeout=20)
    futures[name].result(timeout=30)
    wait_led_in_sync(c, name, replicas[0])
    return replicas[0]


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


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


def test_a_durable_topic_replicates_reads_back_and_fsyncs_on_every_node(cluster_factory):
    tag = uuid.uuid4().hex[:8]
    durable, plain = f"durable-{tag}", f"plain-{tag}"
    c = new_cluster(cluster_factory)
    c.start()
    create_rf3_topic(c, durable, {"flush.messages": "1"})
    create_rf3_topic(c, plain)
    opened = {i: len(fsyncs(c, i, durable)) for i in IDS}  # opening a partition fsyncs its segment

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

    for i in IDS:  # the records were fsynced on every node (in fewer fsyncs than records: group commits)
        calls = fsyncs(c, i, durable)
        assert len(calls) > opened[i] and all(f.result == 0 for f in calls), \
            f"node {i}: {len(calls)} fdatasyncs of {durable}, {opened[i]} on opening it: {calls[:5]}"

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


def test_acknowledgements_wait_for_the_fsyncs(cluster_factory):
    tag = uuid.uuid4().hex[:8]
    all_topic, one_topic = f"acks-all-{tag}", f"acks-one-{tag}"
    c = new_cluster(cluster_factory)
    # Node 1 leads all_topic, which its followers 2 and 3 fsync slowly; node 2 leads
    # one_topic and fsyncs it slowly (nodes 1 and 3 follow it at full speed).
    delay = f"delay_exit={DELAY_MS}ms"
    c[2].wrapper = strace(c[2], delay, [all_topic, one_topic])
    c[3].wrapper = strace(c[3], delay, [all_topic])
    c.start()
    create_rf3_topic(c, all_topic, {"flush.messages": "1"}, replicas=[1, 2, 3])
    create_rf3_topic(c, one_topic, {"flush.messages": "1"}, replicas=[2, 1, 3])
    acks_all = producer(c, {"acks": "all", "enable.idempotence": True})
    acks_one = producer(c, {"acks": "1", "enable.idempotence": False, "retries": 0})
    # Connections and metadata, outside the measurements.
    for p, topic in ((acks_all, all_topic), (acks_one, one_topic)):
        _, d = timed_produce(p, topic, b"warm-up")
        assert d.failed == [], d.failed

    # The followers' fsyncs are slow: acks=all waits for them.
    took = []
    for n in range(3):
        elapsed, d = timed_produce(acks_all, all_topic, f"all-{n}".encode())
        assert d.failed == [], d.failed
        took.append(elapsed)
    print(f"acks=all with the followers' fdatasync delayed {DELAY_MS} ms: {[round(t, 3) for t in took]} s")
    assert min(took) >= DELAY_MS / 1000, f"acknowledged before the followers' fsync: {took}"

    # The leader's fsync is slow: even acks=1 waits for it.
    took = []
    for n in range(3):
        elapsed, d = timed_produce(acks_one, one_topic, f"one-{n}".encode())
        assert d.failed == [], d.failed
        took.append(elapsed)
    print(f"acks=1 with the leader's fdatasync delayed {DELAY_MS} ms: {[round(t, 3) for t in took]} s")
    assert min(took) >= DELAY_MS / 1000, f"acks=1 acknowledged before the leader's fsync: {took}"

    # The delays hit what they were meant to, and nothing else.
    for node, topic in ((2, all_topic), (3, all_topic), (2, one_topic)):
        calls = fsyncs(c, node, topic)
        assert calls and all(f.result == 0 and "DELAYED" in f.detail for f in calls), \
            f"node {node} fdatasyncs of {topic}: {calls[:5]}"
    for node, topic in ((1, all_topic), (1, one_topic)):
        calls = fsyncs(c, node, topic)
        assert calls and all(f.result == 0 and "DELAYED" not in f.detail for f in calls), \
            f"node {node} fdatasyncs of {topic}: {calls[:5]}"
    assert all(f"/{all_topic}-0/" in f.path or f"/{one_topic}-0/" in f.path for f in fsync_log(c[2])), \
        "node 2 traced fdatasyncs of other files"


def test_a_failed_fsync_is_a_storage_error_until_the_disk_heals(cluster_factory):
    topic = f"failing-{uuid.uuid4().hex[:8]}"
    c = new_cluster(cluster_factory)
    c.start()
    create_rf3_topic(c, topic, {"flush.messages": "1"}, replicas=[1, 2, 3])

    # Node 1's disk fails the topic's fdatasyncs from its next start on.  Its replica
    # is empty and was closed cleanly, so opening it takes no fdatasync; back in the
    # ISR, node 1 leads it again.
    restart(c, 1, strace(c[1], "error=EIO", [topic]))
    wait_led_in_sync(c, topic, 1, timeout=30)
    acks_one = producer(c, {"acks": "1", "enable.idempotence": False, "retries": 0})
    _, d = timed_produce(acks_one, topic, b"lost?")
    assert d.ok == [] and len(d.failed) == 1, (d.ok, d.failed)
    assert d.failed[0][0].code() == KAFKA_STORAGE_ERROR, d.failed[0][0]
    assert any(f.result == -1 and "EIO" in f.detail for f in fsyncs(c, 1, topic)), \
        f"strace saw no failed fdatasync: {fsyncs(c, 1, topic)[:5]}"
    wait_until(lambda: any("fsync of the partition log failed" in line and topic in line
                           for line in c[1].log_text().splitlines()),
               10, message="the leader to log the failed fsync with the topic")

    # Healed: node 1 restarts on a sound disk, leads again, and a produce commits.
    restart(c, 1, strace(c[1]))
    wait_led_in_sync(c, topic, 1, timeout=30)
    acks_all = producer(c, {"acks": "all", "enable.idempotence": True})
    _, d = timed_produce(acks_all, topic, b"after")
    assert d.failed == [], d.failed
    calls = fsyncs(c, 1, topic)
    assert calls[-1].result == 0, f"node 1 did not fsync the topic after healing: {calls[-5:]}"
