"""Partition replication between real `rafka` processes, driven by real clients.

Every test runs its own three-node cluster (each node `process.roles=broker,controller`,
see rafka_harness.Cluster): most of them kill, stop or freeze nodes.  Leaders,
replicas and in-sync replicas are read from one node at a time over a raw socket
(kafka_wire.metadata_v12), so "node i says X" is node i's own view.

1. kill -9 of a partition leader under an idempotent confluent-kafka producer
   (acks=all, min.insync.replicas=2) writing sequence numbers without pause: a
   surviving in-sync replica leads, the ISR is the two survivors, and acks go on.  The
   killed broker is restarted while the producer still runs: it rejoins the ISR and
   leads again as the preferred replica.  No delivery error at any point, every
   acknowledged value is read back exactly once and in order, and the partition's
   segment files end up byte-identical on all three nodes.
2. A SIGSTOPped follower (session timeout 30 s, so it is never fenced) leaves the ISR
   after `replica.lag.time.max.ms` while acks=all writes go on, and rejoins it after
   SIGCONT.
3. min.insync.replicas=2 on an RF=2 partition whose follower was killed: acks=all is
   refused with NOT_ENOUGH_REPLICAS and nothing of it is written, acks=1 still works,
   nothing acknowledged earlier is lost, and acks=all works again once the follower is
   back.
4. SIGTERM (controlled shutdown) of a leader under an idempotent producer: leadership
   moves, the client sees no error at all and only a short pause in acknowledgements,
   the broker exits promptly, and every acknowledged value is read once.
5. Divergence: the leader writes acks=1 records its frozen followers never get, dies,
   a follower leads in a new epoch and takes new writes; the old leader, restarted,
   truncates its divergent tail (KIP-320) and ends up byte-identical to the others.
6. kafka-python (idempotent by default with acks=all): InitProducerId and sequence
   numbers seen in the stored batches, 200 records read back, replicas identical.
7. The same idempotent batch sent twice on the wire is written once, before and after
   a leader change (the new leader rebuilt the producer state from replicated batches);
   a sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER.
8. A preferred replica takes back an idle partition (its interim leader wrote
   nothing in its epoch): the interim leader, now a follower, reconciles its log once
   and acks=all writes complete at once.
9. A preferred replica that caught up and takes its leadership back is a clean
   election: no node may log it as an unclean one (with records lost).
10. A node that is shutting down (draining a consumer's long poll after its
   controlled shutdown) never becomes the metadata controller.

Test 1 runs twice: once killing a leader that is not the metadata controller, once
killing the node that is both (the survivors must elect a controller before anything
can be fenced).  Elsewhere the node that is stopped, frozen or killed is chosen, with
an explicit replica assignment, not to be the controller, so that each failover has
one cause (losing the controller itself is test_cluster.py's subject).
Measured timings are printed and repeated in the run's "measured timings" summary.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import threading
import time
import uuid
from typing import Any, Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire as kw
from rafka_harness import Cluster, ClusterNode, Delivery, client_base, consume_until_eof, unique_topic, wait_until

IDS = (1, 2, 3)
# Sanity bound on the longest pause in acknowledgements during a failover (the target
# is about 1.5 s; the measured value is recorded, this only catches a broken failover).
ACK_GAP_SANITY_S = 5.0
# A controlled shutdown hands leadership off in milliseconds; its connection drain
# gives up after 10 s (rafka-server node.rs DRAIN_TIMEOUT).
SHUTDOWN_SANITY_S = 5.0
NOT_LEADER_OR_FOLLOWER = 6
NOT_ENOUGH_REPLICAS = 19
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
API_INIT_PRODUCER_ID = 22


# --------------------------------------------------------------------------
# Cluster and metadata helpers
# --------------------------------------------------------------------------


def bootstrap(c: Cluster, ids=IDS) -> str:
    return ",".join(c[i].bootstrap for i in ids)


def settle(c: Cluster, ids=IDS, timeout: float = 15.0) -> int:
    """Wait until every node in `ids` lists exactly those brokers and names the same
    controller, one of them; return the controller id."""
    def agreed():
        metas = {i: c.metadata(i) for i in ids}
        controllers = {m.controller_id for m in metas.values()}
        brokers = {i: sorted(m.brokers) for i, m in metas.items()}
        if len(controllers) == 1 and controllers <= set(ids) and all(b == sorted(ids) for b in brokers.values()):
            return controllers.pop()
        raise AssertionError(f"controllers {controllers}, brokers {brokers}")
    return wait_until(agreed, timeout, message=f"nodes {list(ids)} to agree on brokers and a controller")


def partition_at(c: Cluster, via: int, topic: str, index: int = 0) -> kw.PartitionMeta:
    return c.metadata(via, [topic]).topics[topic].partitions[index]


def describe(p: kw.PartitionMeta) -> str:
    return f"leader {p.leader} epoch {p.leader_epoch} replicas {p.replicas} isr {sorted(p.isr)}"


def wait_partition(c: Cluster, topic: str, ids, pred: Callable[[kw.PartitionMeta], bool], timeout: float,
                   message: str, interval: float = 0.05) -> dict[int, kw.PartitionMeta]:
    """Wait until partition 0 of `topic` satisfies `pred` in the Metadata of every node
    in `ids`; return {node: its view}.  A time-out reports the last views."""
    def cond():
        views = {i: partition_at(c, i, topic) for i in ids}
        if all(pred(v) for v in views.values()):
            return views
        raise AssertionError("; ".join(f"node {i}: {describe(v)}" for i, v in views.items()))
    return wait_until(cond, timeout, interval=interval, message=message)


def create_topic(c: Cluster, name: str, replicas: list[int], config: dict[str, str] | None = None) -> None:
    """One partition with `replicas` (the first is the preferred leader); wait until every
    node says that replica leads with the full ISR."""
    admin = AdminClient(client_base(bootstrap(c)))
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replica_assignment=[replicas],
                                            config=config or {})], operation_timeout=15, request_timeout=20)
    futures[name].result(timeout=30)
    wait_partition(c, name, IDS, lambda p: p.leader == replicas[0] and sorted(p.isr) == sorted(replicas)
                   and p.replicas == replicas, 15, message=f"{name} led by {replicas[0]} with ISR {replicas} everywhere")


def partition_logs(node: ClusterNode, topic: str, index: int = 0) -> dict[str, bytes]:
    """The segment (.log) files of one partition on one node: {file name: content}."""
    d = node.data_dir / f"{topic}-{index}"
    return {f.name: f.read_bytes() for f in sorted(d.glob("*.log"))}


def summary(files: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    return {name: (len(b), hashlib.sha1(b).hexdigest()[:10]) for name, b in files.items()}


def wait_identical_logs(c: Cluster, topic: str, timeout: float = 20.0) -> dict[str, bytes]:
    """Wait until the partition's segment files are byte-identical (and not empty) on every node."""
    def cond():
        files = {i: partition_logs(c[i], topic) for i in IDS}
        ref = files[IDS[0]]
        if ref and sum(len(b) for b in ref.values()) > 0 and all(f == ref for f in files.values()):
            return ref
        raise AssertionError({i: summary(f) for i, f in files.items()})
    return wait_until(cond, timeout, interval=0.2, message=f"{topic}'s segment files to be identical on nodes {IDS}")


def log_lines_with(node: ClusterNode, *words: str, since: int = 0) -> list[str]:
    """Lines of the node's log (from character `since` on) containing every one of `words`."""
    return [line for line in node.log_text()[since:].splitlines() if all(w in line for w in words)]


def read_partition(c: Cluster, topic: str, ids=IDS, timeout: float = 30.0) -> list[Any]:
    """Every record of partition 0 up to the high watermark, read by a fresh consumer."""
    node = c[ids[0]]
    consumer = node.consumer({"bootstrap.servers": bootstrap(c, ids), "group.id": f"repl-{uuid.uuid4().hex[:8]}"})
    try:
        return consume_until_eof(consumer, [TopicPartition(topic, 0, OFFSET_BEGINNING)], timeout=timeout)
    finally:
        consumer.close()


def read_at_least(c: Cluster, topic: str, n: int, ids=IDS, timeout: float = 30.0) -> list[Any]:
    """The first `n` or more records of partition 0 (for a partition still being written,
    where a consumer may never reach the end)."""
    consumer = c[ids[0]].consumer({"bootstrap.servers": bootstrap(c, ids), "group.id": f"repl-{uuid.uuid4().hex[:8]}"})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            assert time.monotonic() < deadline, f"read only {len(out)} of {n} records within {timeout}s"
            msg = consumer.poll(0.2)
            if msg is None or (msg.error() is not None and msg.error().code() == KafkaError._PARTITION_EOF):
                continue
            assert msg.error() is None, f"consumer error: {msg.error()}"
            out.append(msg)
        return out
    finally:
        consumer.close()


def assert_exactly_once_in_order(msgs: list[Any], produced: int) -> None:
    """The partition holds 0, 1, ..., produced-1 at offsets 0, 1, ...: no loss, no duplicate."""
    values = [int(m.value()) for m in msgs]
    dupes = sorted({v for v in values if values.count(v) > 1}) if len(set(values)) != len(values) else []
    assert not dupes, f"values read more than once: {dupes[:20]}"
    missing = sorted(set(range(produced)) - set(values))
    assert not missing, f"{len(missing)} acknowledged values missing, first {missing[:20]}"
    assert values == list(range(produced)), f"values out of order or unexpected: first differences " \
        f"{[(i, v) for i, v in enumerate(values) if v != i][:10]}"
    offsets = [m.offset() for m in msgs]
    assert offsets == list(range(len(offsets))), "offsets are not contiguous from 0"


# --------------------------------------------------------------------------
# A producer writing sequence numbers without pause
# --------------------------------------------------------------------------


class SequenceProducer:
    """Produces b"00000000", b"00000001", ... to partition 0 from a background thread,
    one record every `interval` seconds, and records each delivery report with the time
    it arrived (the delivery callbacks run on the same thread, served every interval)."""

    def __init__(self, bootstrap_servers: str, topic: str, conf: dict[str, Any] | None = None,
                 interval: float = 0.004):
        self.topic = topic
        self.interval = interval
        self.producer = Producer({
            **client_base(bootstrap_servers),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "none",
            "message.timeout.ms": 60000,
            **(conf or {}),
        })
        self.sent_at: list[float] = []                      # index: sequence number
        self.acks: list[tuple[float, int, int]] = []        # (time, value, offset)
        self.errors: list[tuple[float, int, KafkaError]] = []
        self._stop = threading.Event()
        self._flush_timeout = 60.0
        self._unflushed: int | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"producer-{topic}", daemon=True)

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        now = time.monotonic()
        value = int(msg.value())
        if err is None:
            self.acks.append((now, value, msg.offset()))
        else:
            self.errors.append((now, value, err))

    def _run(self) -> None:
        try:
            seq = 0
            while not self._stop.is_set():
                self.sent_at.append(time.monotonic())
                self.producer.produce(self.topic, partition=0, value=b"%08d" % seq, on_delivery=self._on_delivery)
                seq += 1
                self.producer.poll(0)
                self._stop.wait(self.interval)
            self._unflushed = self.producer.flush(self._flush_timeout)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._failure = exc

    def start(self) -> "SequenceProducer":
        self._thread.start()
        return self

    @property
    def produced(self) -> int:
        return len(self.sent_at)

    def wait_acks(self, n: int, timeout: float, message: str) -> None:
        def enough():
            if self._failure is not None:
                raise AssertionError(f"producer thread failed: {self._failure!r}")
            return len(self.acks) >= n
        wait_until(enough, timeout, message=f"{message} ({len(self.acks)} acks so far, errors {self.errors[:3]})")

    def stop(self, flush_timeout: float = 60.0) -> None:
        """Stop producing and wait until every record got its delivery report."""
        self._flush_timeout = flush_timeout
        self._stop.set()
        self._thread.join(flush_timeout + 10)
        assert not self._thread.is_alive(), "producer thread did not finish"
        if self._failure is not None:
            raise AssertionError(f"producer thread failed: {self._failure!r}")
        assert self._unflushed == 0, f"{self._unflushed} records without a delivery report after flush({flush_timeout})"

    def close_quietly(self) -> None:
        self._flush_timeout = 1.0
        self._stop.set()
        self._thread.join(15)

    # -- measurements ------------------------------------------------------

    def ack_times(self) -> list[float]:
        return sorted(t for t, _, _ in self.acks)

    def largest_ack_gap(self, since: float | None = None, until: float | None = None) -> tuple[float, float]:
        """(largest gap between consecutive acknowledgements, time it started), counting
        only gaps that end after `since` and begin before `until`, if given."""
        times = self.ack_times()
        if since is not None:
            earlier = [t for t in times if t <= since]
            times = earlier[-1:] + [t for t in times if t > since]
        if until is not None:
            later = [t for t in times if t >= until]
            times = [t for t in times if t < until] + later[:1]
        gaps = [(b - a, a) for a, b in zip(times, times[1:])]
        return max(gaps) if gaps else (0.0, 0.0)

    def gap_around(self, t: float) -> float:
        """From the last acknowledgement before `t` to the first one after it."""
        times = self.ack_times()
        before = [x for x in times if x <= t]
        after = [x for x in times if x > t]
        assert before and after, f"no acknowledgement before or after the event ({len(before)}, {len(after)})"
        return after[0] - before[-1]

    def first_ack_of_a_record_sent_after(self, t: float) -> float:
        """Seconds from `t` to the acknowledgement of the first record produced after `t`."""
        times = [at for at, value, _ in self.acks if self.sent_at[value] > t]
        assert times, "no record produced after the event was acknowledged"
        return min(times) - t


@pytest.fixture
def cluster(cluster_factory):
    """make(extra=None) -> a started three-node Cluster.  At teardown every node still
    running gets SIGTERM at once (Cluster.stop): the harness's one-by-one teardown leaves
    the last voter waiting several seconds for a quorum that is gone, per test."""
    made: list[Cluster] = []

    def make(extra: dict[str, str] | None = None) -> Cluster:
        c = cluster_factory(extra=extra)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


@pytest.fixture
def producers():
    """Every SequenceProducer a test started is stopped at teardown (without waiting long)."""
    made: list[SequenceProducer] = []

    def make(*args, **kwargs) -> SequenceProducer:
        p = SequenceProducer(*args, **kwargs)
        made.append(p)
        return p.start()

    yield make
    for p in made:
        p.close_quietly()


def record_failover_acks(prod: SequenceProducer, t_event: float, what: str, record_timing,
                         until: float | None = None) -> float:
    """Record the acknowledgement pauses around a failover (from `t_event` until `until`);
    return the largest one."""
    gap_around = prod.gap_around(t_event)
    largest, started = prod.largest_ack_gap(since=t_event, until=until)
    first_new = prod.first_ack_of_a_record_sent_after(t_event)
    record_timing(f"{what}: pause in acks=all acknowledgements around it", gap_around)
    record_timing(f"{what}: largest pause between consecutive acknowledgements "
                  f"(began {started - t_event:+.2f}s from the event)", largest)
    record_timing(f"{what} -> acknowledgement of the first record produced after it", first_new)
    return largest


# --------------------------------------------------------------------------
# 1. kill -9 of the leader under an idempotent producer
# --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("also_controller", [False, True], ids=["leader", "leader-and-controller"])
def test_kill_9_of_the_leader_under_an_idempotent_producer_loses_and_duplicates_nothing(
        cluster, producers, record_timing, also_controller):
    c: Cluster = cluster()
    controller = settle(c)
    victim = controller if also_controller else min(i for i in IDS if i != controller)
    replicas = [victim] + [i for i in IDS if i != victim]
    survivors = sorted(i for i in IDS if i != victim)
    topic = unique_topic("kill9")
    create_topic(c, topic, replicas, {"min.insync.replicas": "2"})
    before = partition_at(c, survivors[0], topic)
    leader = before.leader  # found via Metadata
    assert leader == victim, describe(before)
    print(f"controller {controller}; {topic}: {describe(before)}; killing the leader {leader}")

    prod = producers(bootstrap(c), topic)
    prod.wait_acks(1, 15, "a first acknowledgement")
    time.sleep(2.0)
    acked_before_kill = len(prod.acks)
    assert acked_before_kill > 50, f"only {acked_before_kill} acks in 2 s"

    t_kill = time.monotonic()
    c[leader].kill9()
    views = wait_partition(
        c, topic, survivors,
        lambda p: p.leader in survivors and p.leader in before.isr and sorted(p.isr) == survivors,
        30, interval=0.02, message=f"a new leader among {survivors} and ISR {survivors} on both survivors")
    record_timing(f"kill -9 of leader {leader} -> new leader and ISR {survivors} in both survivors' Metadata",
                  time.monotonic() - t_kill)
    new_leader = views[survivors[0]].leader
    assert views[survivors[1]].leader == new_leader
    assert views[new_leader].leader_epoch > before.leader_epoch, f"{describe(views[new_leader])} vs {describe(before)}"
    print(f"after the kill: {describe(views[new_leader])}")

    # The producer keeps getting acknowledgements from the new leader.
    n = len(prod.acks)
    prod.wait_acks(n + 200, 30, "200 more acknowledgements after the failover")
    assert prod.errors == [], f"delivery errors after the kill: {prod.errors[:10]}"

    # While it goes on, a fresh consumer reads a gap-free, duplicate-free prefix holding
    # everything acknowledged so far.
    acked_so_far = {v for _, v, _ in prod.acks}
    values = [int(m.value()) for m in read_at_least(c, topic, max(acked_so_far) + 1, survivors)]
    assert values == list(range(len(values))), \
        f"read {len(values)} values that are not 0..n-1: first differences {[(i, v) for i, v in enumerate(values) if v != i][:10]}"
    assert acked_so_far <= set(values), f"acknowledged but not readable: {sorted(acked_so_far - set(values))[:20]}"

    # The killed broker comes back (still under load): it rejoins the ISR and, as the
    # preferred replica, leads again.
    t_restart = time.monotonic()
    c[victim].restart()
    wait_partition(c, topic, IDS, lambda p: sorted(p.isr) == list(IDS), 30,
                   message=f"broker {victim} back in the ISR on every node")
    record_timing(f"restart of broker {victim} -> ISR {list(IDS)} on every node", time.monotonic() - t_restart)
    views = wait_partition(c, topic, IDS, lambda p: p.leader == replicas[0] and sorted(p.isr) == list(IDS), 30,
                           message=f"the preferred replica {replicas[0]} to lead again")
    record_timing(f"restart of broker {victim} -> preferred replica {victim} leads again", time.monotonic() - t_restart)
    print(f"after the restart: {describe(views[1])}")
    n = len(prod.acks)
    prod.wait_acks(n + 200, 30, "200 more acknowledgements after the preferred replica took over")

    prod.stop()
    print(f"produced {prod.produced}, acknowledged {len(prod.acks)} ({acked_before_kill} before the kill), "
          f"errors {len(prod.errors)}")
    kill_gap = record_failover_acks(prod, t_kill, f"kill -9 of leader {leader}", record_timing, until=t_restart)
    back_gap, _ = prod.largest_ack_gap(since=t_restart)
    record_timing(f"restart of broker {victim} and its return as leader: largest pause between acknowledgements",
                  back_gap)
    assert prod.errors == [], f"delivery errors: {prod.errors[:10]}"
    assert sorted(v for _, v, _ in prod.acks) == list(range(prod.produced)), "not every record was acknowledged once"

    msgs = read_partition(c, topic)
    assert_exactly_once_in_order(msgs, prod.produced)
    assert {v: off for _, v, off in prod.acks} == {int(m.value()): m.offset() for m in msgs}, \
        "acknowledged offsets differ from where the values are stored"
    files = wait_identical_logs(c, topic)
    print(f"identical segment files on {IDS}: {summary(files)}")

    assert kill_gap < ACK_GAP_SANITY_S, \
        f"acknowledgements stopped for {kill_gap:.2f}s after the kill (sanity bound {ACK_GAP_SANITY_S}s)"
    assert back_gap < ACK_GAP_SANITY_S, \
        f"acknowledgements stopped for {back_gap:.2f}s while leadership moved back (sanity bound {ACK_GAP_SANITY_S}s)"


# --------------------------------------------------------------------------
# 2. A frozen follower leaves the ISR after replica.lag.time.max.ms and comes back
# --------------------------------------------------------------------------

LAG_MS = 2000


@pytest.mark.slow
def test_a_sigstopped_follower_leaves_the_isr_after_the_lag_time_and_rejoins_after_sigcont(
        cluster, producers, record_timing):
    c: Cluster = cluster(extra={"replica.lag.time.max.ms": str(LAG_MS), "broker.session.timeout.ms": "30000"})
    controller = settle(c)
    frozen = max(i for i in IDS if i != controller)
    leader = min(i for i in IDS if i != frozen)
    third = next(i for i in IDS if i not in (leader, frozen))
    replicas = [leader, frozen, third]
    topic = unique_topic("frozen")
    create_topic(c, topic, replicas, {"min.insync.replicas": "2"})
    print(f"controller {controller}; {topic} replicas {replicas}; freezing follower {frozen}")

    prod = producers(bootstrap(c), topic, interval=0.01)
    prod.wait_acks(50, 15, "50 acknowledgements")
    node = c[frozen]
    assert node.proc is not None
    pid = node.proc.pid
    os.kill(pid, signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        views = wait_partition(c, topic, [leader, third],
                               lambda p: p.leader == leader and sorted(p.isr) == sorted([leader, third]),
                               LAG_MS / 1000 + 10, interval=0.05,
                               message=f"frozen follower {frozen} to leave the ISR")
        out_after = time.monotonic() - t_stop
        record_timing(f"SIGSTOP of follower {frozen} -> out of the ISR (replica.lag.time.max.ms={LAG_MS})", out_after)
        print(f"while frozen: {describe(views[leader])}")
        for i in (leader, third):
            assert frozen in c.metadata(i).brokers, f"node {i} no longer lists the frozen broker {frozen}: it was fenced"
        assert out_after >= LAG_MS / 1000 / 2, f"follower left the ISR {out_after:.2f}s after SIGSTOP, before the lag time"
        assert log_lines_with(c[leader], "ISR", "lag"), "the leader did not log an ISR shrink for lagging followers"

        # acks=all goes on with the two remaining in-sync replicas.
        n = len(prod.acks)
        prod.wait_acks(n + 50, 15, "50 acknowledgements with the follower out of the ISR")
        assert prod.errors == [], f"delivery errors while the follower was frozen: {prod.errors[:5]}"
    finally:
        os.kill(pid, signal.SIGCONT)
    t_cont = time.monotonic()
    views = wait_partition(c, topic, IDS, lambda p: sorted(p.isr) == list(IDS) and p.leader == leader, 20,
                           message=f"follower {frozen} back in the ISR on every node")
    record_timing(f"SIGCONT of follower {frozen} -> back in the ISR on every node", time.monotonic() - t_cont)
    print(f"after SIGCONT: {describe(views[leader])}")

    n = len(prod.acks)
    prod.wait_acks(n + 50, 15, "50 acknowledgements after the follower rejoined")
    prod.stop()
    assert prod.errors == [], f"delivery errors: {prod.errors[:10]}"
    largest, _ = prod.largest_ack_gap()
    record_timing("largest pause between acks=all acknowledgements (frozen follower still in the ISR)", largest)
    assert_exactly_once_in_order(read_partition(c, topic), prod.produced)
    wait_identical_logs(c, topic)


# --------------------------------------------------------------------------
# 3. NOT_ENOUGH_REPLICAS
# --------------------------------------------------------------------------


def produce_values(c: Cluster, topic: str, values: list[str], conf: dict[str, Any], ids=None) -> Delivery:
    """Produce `values` to partition 0 with a fresh producer bootstrapped at `ids` (default:
    the running nodes) and wait for every delivery report."""
    ids = ids if ids is not None else [i for i in IDS if c[i].is_running()]
    producer = Producer({**client_base(bootstrap(c, ids)),
                         "linger.ms": 5, "message.timeout.ms": 15000, **conf})
    d = Delivery()
    for v in values:
        producer.produce(topic, partition=0, value=v.encode(), on_delivery=d.callback)
    remaining = producer.flush(conf.get("message.timeout.ms", 15000) / 1000 + 15)
    assert remaining == 0, f"{remaining} records without a delivery report"
    return d


def test_acks_all_below_min_insync_replicas_is_not_enough_replicas_and_acks_1_still_works(cluster):
    c: Cluster = cluster()
    controller = settle(c)
    follower = max(i for i in IDS if i != controller)
    leader = min(i for i in IDS if i != follower)
    topic = unique_topic("min-isr")
    create_topic(c, topic, [leader, follower], {"min.insync.replicas": "2"})
    print(f"controller {controller}; {topic} replicas [{leader}, {follower}], min.insync.replicas=2")
    strict = {"acks": "all", "enable.idempotence": False, "retries": 0}

    before = [f"before-{i}" for i in range(50)]
    d = produce_values(c, topic, before, strict)
    assert d.failed == [] and len(d.ok) == len(before), f"failures before the kill: {d.failed[:3]}"

    c[follower].kill9()
    others = [i for i in IDS if i != follower]
    views = wait_partition(c, topic, others, lambda p: p.leader == leader and p.isr == [leader], 20,
                           message=f"ISR [{leader}] after the follower {follower} was killed")
    print(f"follower killed: {describe(views[leader])}")

    refused = [f"refused-{i}" for i in range(5)]
    d = produce_values(c, topic, refused, strict)
    codes = [(e.code(), e.str()) for e, _ in d.failed]
    print(f"acks=all with ISR [{leader}]: {codes}")
    assert d.ok == [], f"acks=all was acknowledged below min.insync.replicas: {[m.value() for m in d.ok]}"
    assert [code for code, _ in codes] == [NOT_ENOUGH_REPLICAS] * len(refused), codes

    one = [f"acks1-{i}" for i in range(10)]
    d = produce_values(c, topic, one, {"acks": 1, "enable.idempotence": False})
    assert d.failed == [] and len(d.ok) == len(one), f"acks=1 failed: {d.failed[:3]}"

    # Everything acknowledged before the kill is still there; nothing refused was written.
    got = [m.value().decode() for m in read_partition(c, topic, others)]
    assert got[:len(before)] == before, f"records acknowledged before the kill are missing: {got[:5]}..."
    assert got == (before + one)[:len(got)], f"unexpected records: {got[len(before):]}"

    c[follower].restart()
    views = wait_partition(c, topic, IDS, lambda p: p.leader == leader and sorted(p.isr) == sorted([leader, follower]),
                           30, message=f"follower {follower} back in the ISR")
    print(f"follower back: {describe(views[leader])}")
    after = [f"after-{i}" for i in range(10)]
    d = produce_values(c, topic, after, strict)
    assert d.failed == [] and len(d.ok) == len(after), f"acks=all after the follower came back: {d.failed[:3]}"

    msgs = read_partition(c, topic)
    assert [m.value().decode() for m in msgs] == before + one + after
    assert [m.offset() for m in msgs] == list(range(len(msgs)))


# --------------------------------------------------------------------------
# 4. SIGTERM of the leader: no error visible to the client
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_of_the_leader_under_an_idempotent_producer_shows_the_client_no_error(
        cluster, producers, record_timing):
    c: Cluster = cluster()
    controller = settle(c)
    victim = min(i for i in IDS if i != controller)
    replicas = [victim] + [i for i in IDS if i != victim]
    survivors = sorted(i for i in IDS if i != victim)
    topic = unique_topic("sigterm")
    create_topic(c, topic, replicas, {"min.insync.replicas": "2"})
    before = partition_at(c, survivors[0], topic)
    assert before.leader == victim, describe(before)
    print(f"controller {controller}; {topic}: {describe(before)}; SIGTERM to the leader {victim}")

    prod = producers(bootstrap(c), topic)
    prod.wait_acks(1, 15, "a first acknowledgement")
    time.sleep(2.0)

    t_term = time.monotonic()
    code = c[victim].stop()
    exit_s = time.monotonic() - t_term
    record_timing(f"SIGTERM of leader {victim} -> process exit", exit_s)
    assert code == 0, f"broker {victim} exited with {code} after SIGTERM"
    views = wait_partition(c, topic, survivors, lambda p: p.leader in survivors and sorted(p.isr) == survivors, 15,
                           message=f"a new leader among {survivors} on both survivors")
    new_leader = views[survivors[0]].leader
    print(f"after SIGTERM: {describe(views[new_leader])}")

    n = len(prod.acks)
    prod.wait_acks(n + 200, 30, "200 more acknowledgements after the controlled shutdown")
    prod.stop()
    print(f"produced {prod.produced}, acknowledged {len(prod.acks)}, errors {len(prod.errors)}")
    gap = record_failover_acks(prod, t_term, f"SIGTERM of leader {victim}", record_timing)
    assert prod.errors == [], f"delivery errors: {prod.errors[:10]}"
    msgs = read_partition(c, topic, survivors)
    assert_exactly_once_in_order(msgs, prod.produced)
    assert gap < ACK_GAP_SANITY_S, (
        f"acknowledgements stopped for {gap:.2f}s after SIGTERM (sanity bound {ACK_GAP_SANITY_S}s); "
        f"broker {victim} took {exit_s:.2f}s to exit")
    assert exit_s < SHUTDOWN_SANITY_S, f"broker {victim} took {exit_s:.2f}s to exit after SIGTERM"


# --------------------------------------------------------------------------
# 5. Divergence: the old leader truncates what only it had
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_returning_leader_truncates_records_only_it_had_and_matches_the_new_leader(cluster, record_timing):
    # A long session timeout: after SIGCONT only the probe of the dead leader fences
    # anything, never the followers' own missed heartbeats while they were frozen.
    c: Cluster = cluster(extra={"broker.session.timeout.ms": "10000"})
    controller = settle(c)
    old = min(i for i in IDS if i != controller)
    followers = [i for i in IDS if i != old]
    replicas = [old] + followers
    topic = unique_topic("diverge")
    create_topic(c, topic, replicas)
    print(f"controller {controller}; {topic} replicas {replicas}")

    committed = [f"committed-{i:04d}" for i in range(30)]
    d = produce_values(c, topic, committed, {"acks": "all", "enable.idempotence": False})
    assert d.failed == [] and len(d.ok) == len(committed)
    # Both followers have everything: their logs equal the leader's.
    wait_identical_logs(c, topic)

    pids = {i: c[i].proc.pid for i in followers}
    lone = [f"lone-{i:04d}" for i in range(20)]
    try:
        for pid in pids.values():
            os.kill(pid, signal.SIGSTOP)
        time.sleep(0.3)
        # A follower may have had a fetch waiting at the leader: it is answered with the
        # first new batch, into the frozen process's socket.  Let that happen first...
        d = produce_values(c, topic, ["first-after-freeze"], {"acks": 1, "enable.idempotence": False}, ids=[old])
        assert d.failed == []
        time.sleep(0.3)
        # ...so these are on the leader only.
        d = produce_values(c, topic, lone, {"acks": 1, "enable.idempotence": False, "linger.ms": 0}, ids=[old])
        assert d.failed == [] and len(d.ok) == len(lone), f"acks=1 on the lone leader: {d.failed[:3]}"
        c[old].kill9()
    finally:
        for pid in pids.values():
            os.kill(pid, signal.SIGCONT)
    t_cont = time.monotonic()
    old_log = b"".join(partition_logs(c[old], topic).values())
    assert all(v.encode() in old_log for v in lone), "the lone leader's acks=1 records are not in its log"

    views = wait_partition(c, topic, followers, lambda p: p.leader in followers and sorted(p.isr) == followers, 30,
                           message=f"a new leader among {followers}")
    record_timing(f"SIGCONT of the followers (leader {old} killed) -> new leader", time.monotonic() - t_cont)
    new_leader = views[followers[0]].leader
    print(f"new leader: {describe(views[new_leader])}")

    newer = [f"newer-{i:04d}" for i in range(30)]
    d = produce_values(c, topic, newer, {"acks": "all", "enable.idempotence": False})
    assert d.failed == [] and len(d.ok) == len(newer), f"acks=all on the new leader: {d.failed[:3]}"

    log_before = len(c[old].log_text())
    t0 = time.monotonic()
    c[old].restart()
    wait_partition(c, topic, IDS, lambda p: sorted(p.isr) == list(IDS) and p.leader == old, 30,
                   message=f"broker {old} back in the ISR and leading again")
    record_timing(f"restart of the diverged broker {old} -> in the ISR and preferred leader again", time.monotonic() - t0)
    files = wait_identical_logs(c, topic)
    content = b"".join(files.values())
    assert not any(v.encode() in content for v in lone), "records only the old leader had survived"
    truncations = log_lines_with(c[old], "diverg", "truncat", since=log_before)
    assert truncations, f"broker {old} did not log a divergence truncation after its restart"
    print(f"broker {old}: {truncations[0]}")

    got = [m.value().decode() for m in read_partition(c, topic)]
    middle = got[len(committed):len(got) - len(newer)]
    assert got[:len(committed)] == committed and got[len(got) - len(newer):] == newer, got
    assert middle in ([], ["first-after-freeze"]), f"unexpected records between the epochs: {middle}"


# --------------------------------------------------------------------------
# 6. kafka-python, idempotent by default
# --------------------------------------------------------------------------


def batch_producer_fields(records: bytes) -> list[tuple[int, int, int, int, int]]:
    """(base offset, record count, producer id, producer epoch, base sequence) per batch."""
    out = []
    pos = 0
    while len(records) - pos >= 61:
        base_offset, length = struct.unpack_from(">qi", records, pos)
        if pos + 12 + length > len(records):
            break
        producer_id, epoch, base_seq, count = struct.unpack_from(">qhii", records, pos + 43)
        out.append((base_offset, count, producer_id, epoch, base_seq))
        pos += 12 + length
    return out


def fetch_all_raw(node: ClusterNode, topic: str) -> tuple[int, bytes]:
    """(high watermark, every record batch up to it) from `node`, which must lead partition 0."""
    with node.kafka_socket(timeout=10) as ks:
        version = kw.pick_version(kw.api_versions(ks).ranges, kw.API_FETCH, *kw.FETCH_VERSIONS)
        blob = b""
        offset = 0
        while True:
            res = kw.fetch(ks, version, topic, 0, offset)
            assert res.error_code == 0, f"Fetch error {res.error_code}"
            batches = kw.parse_batches(res.records)
            if not batches:
                return res.high_watermark, blob
            for b in batches:
                assert b.crc_ok, f"batch at {b.base_offset}: bad CRC"
            end = batches[-1].base_offset + batches[-1].last_offset_delta + 1
            blob += res.records[:sum(12 + b.batch_length for b in batches)]
            offset = end


def test_kafka_python_idempotent_producer_writes_sequenced_batches_to_an_rf3_partition(cluster):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KpTopicPartition

    c: Cluster = cluster()
    settle(c)
    topic = unique_topic("kp-idem")
    create_topic(c, topic, [1, 2, 3])
    servers = [c[i].bootstrap for i in IDS]
    # Small batches: many sequence-numbered batches, several in flight at once.
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=2, batch_size=400,
                             client_id="rafka-tests-replication")
    try:
        assert producer.config["enable_idempotence"] is True, "kafka-python did not default to idempotence"
        futures = [producer.send(topic, partition=0, value=f"kp-{i:04d}".encode()) for i in range(200)]
        producer.flush(timeout=30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)
    assert [m.offset for m in metas] == list(range(200))

    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, client_id="rafka-tests-replication")
    try:
        consumer.assign([KpTopicPartition(topic, 0)])
        got: list = []
        deadline = time.monotonic() + 30
        while len(got) < 200 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
    finally:
        consumer.close()
    assert [(r.offset, r.value) for r in got] == [(i, f"kp-{i:04d}".encode()) for i in range(200)]

    hw, blob = fetch_all_raw(c[1], topic)
    assert hw == 200
    batches = batch_producer_fields(blob)
    print(f"{len(batches)} batches; first {batches[0]}, last {batches[-1]}")
    assert len(batches) > 5, f"expected many small batches, got {len(batches)}"
    assert {(pid, epoch) for _, _, pid, epoch, _ in batches} == {(batches[0][2], batches[0][3])}, \
        "batches carry more than one producer id/epoch"
    assert batches[0][2] >= 0 and batches[0][3] >= 0, f"not an idempotent batch: producer id/epoch {batches[0][2:4]}"
    # Sequence numbers follow the offsets: the first record of each batch has sequence = its offset.
    assert [(base, seq) for base, _, _, _, seq in batches] == [(base, base) for base, *_ in batches]
    wait_identical_logs(c, topic)


# --------------------------------------------------------------------------
# 7. Duplicate batches on the wire, before and after a leader change
# --------------------------------------------------------------------------


def init_producer_id(ks: kw.KafkaSocket) -> tuple[int, int, int]:
    """InitProducerId v1 without a transactional id: (error code, producer id, epoch)."""
    body = kw.nullable_string(None) + kw.i32(60000)
    corr, r = ks.request(kw.request_header_v1(API_INIT_PRODUCER_ID, 1, 31), body)
    assert corr == 31
    r.i32()  # throttle
    return r.i16(), r.i64(), r.i16()


def idempotent_batch(values: list[bytes], producer_id: int, epoch: int, base_sequence: int) -> bytes:
    """An uncompressed v2 batch carrying a producer id, epoch and base sequence."""
    recs = b"".join(kw.encode_record(i, kw.Record(None, v)) for i, v in enumerate(values))
    ts = int(time.time() * 1000)
    after_crc = (kw.i16(0) + kw.i32(len(values) - 1) + kw.i64(ts) + kw.i64(ts)
                 + kw.i64(producer_id) + kw.i16(epoch) + kw.i32(base_sequence)
                 + kw.i32(len(values)) + recs)
    after_length = kw.i32(-1) + kw.i8(2) + kw.u32(kw.crc32c(after_crc)) + after_crc
    return kw.i64(0) + kw.i32(len(after_length)) + after_length


def wire_produce(node: ClusterNode, topic: str, batch: bytes) -> kw.ProducePartitionResult:
    """Produce v3+ with acks=all.  NOT_LEADER_OR_FOLLOWER is retried for a moment, as a
    client would: a broker's Metadata may name it leader a few milliseconds before its
    partition has taken the leadership (nothing is written then)."""
    with node.kafka_socket(timeout=15) as ks:
        version = kw.pick_version(kw.api_versions(ks).ranges, kw.API_PRODUCE, *kw.PRODUCE_VERSIONS)
        deadline = time.monotonic() + 5
        while True:
            res = kw.produce(ks, version, topic, 0, batch, acks=-1, timeout_ms=10000)
            if res.error_code != NOT_LEADER_OR_FOLLOWER or time.monotonic() > deadline:
                return res
            time.sleep(0.05)


def stored_values(node: ClusterNode, topic: str) -> list[tuple[int, bytes]]:
    _, blob = fetch_all_raw(node, topic)
    return [(r["offset"], r["value"]) for b in kw.parse_batches(blob) for r in b.records]


def test_a_resent_idempotent_batch_is_written_once_before_and_after_a_leader_change(cluster):
    c: Cluster = cluster()
    controller = settle(c)
    leader = min(i for i in IDS if i != controller)
    replicas = [leader] + [i for i in IDS if i != leader]
    survivors = sorted(i for i in IDS if i != leader)
    topic = unique_topic("dup")
    create_topic(c, topic, replicas)

    with c[leader].kafka_socket() as ks:
        err, pid, epoch = init_producer_id(ks)
    assert err == 0 and pid >= 0 and epoch >= 0, (err, pid, epoch)
    b0 = idempotent_batch([b"a0", b"a1", b"a2"], pid, epoch, 0)
    b1 = idempotent_batch([b"b3", b"b4"], pid, epoch, 3)
    b2 = idempotent_batch([b"c5"], pid, epoch, 5)

    first = wire_produce(c[leader], topic, b0)
    again = wire_produce(c[leader], topic, b0)
    assert (first.error_code, first.base_offset) == (0, 0), first
    assert (again.error_code, again.base_offset) == (0, 0), f"a resent batch was not answered as the original: {again}"
    gap = wire_produce(c[leader], topic, idempotent_batch([b"gap"], pid, epoch, 7))
    assert gap.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER, gap
    nxt = wire_produce(c[leader], topic, b1)
    assert (nxt.error_code, nxt.base_offset) == (0, 3), nxt
    expected = [(0, b"a0"), (1, b"a1"), (2, b"a2"), (3, b"b3"), (4, b"b4")]
    assert stored_values(c[leader], topic) == expected

    # Leadership moves; the new leader knows the producer's sequences from replication.
    c[leader].stop()
    views = wait_partition(c, topic, survivors, lambda p: p.leader in survivors, 15,
                           message=f"a new leader among {survivors}")
    new = c[views[survivors[0]].leader]
    for batch, base in ((b1, 3), (b0, 0)):
        res = wire_produce(new, topic, batch)
        assert (res.error_code, res.base_offset) == (0, base), \
            f"new leader {new.node_id}: resent batch (base sequence {base}) answered {res}"
    res = wire_produce(new, topic, b2)
    assert (res.error_code, res.base_offset) == (0, 5), res
    assert stored_values(new, topic) == expected + [(5, b"c5")]


# --------------------------------------------------------------------------
# 8, 9. A preferred replica taking back an idle partition
# --------------------------------------------------------------------------


def move_leadership_away_and_back(c: Cluster, topic: str, preferred: int) -> None:
    """SIGTERM the preferred leader (controlled shutdown: another replica leads, in a new
    epoch in which nothing is written), restart it and wait until it leads again."""
    others = [i for i in IDS if i != preferred]
    c[preferred].stop()
    views = wait_partition(c, topic, others, lambda p: p.leader in others and sorted(p.isr) == others, 15,
                           message=f"leadership to move off the stopped broker {preferred}")
    print(f"broker {preferred} stopped: {describe(views[others[0]])}")
    c[preferred].restart()
    views = wait_partition(c, topic, IDS, lambda p: p.leader == preferred and sorted(p.isr) == list(IDS), 30,
                           message=f"the preferred replica {preferred} in the ISR and leading again")
    print(f"broker {preferred} restarted: {describe(views[preferred])}")


def test_writes_still_complete_after_the_preferred_replica_takes_back_an_idle_partition(cluster, record_timing):
    # The interim leader opened an epoch (an epoch-cache entry at its log end) without
    # writing in it; the returning leader never saw that epoch.  The interim leader, now
    # a follower, must reconcile its log with the leader's (KIP-320) once and go on
    # replicating: it is in the ISR, so acks=all writes wait for it.
    c: Cluster = cluster()
    controller = settle(c)
    preferred = min(i for i in IDS if i != controller)
    replicas = [preferred] + [i for i in IDS if i != preferred]
    topic = unique_topic("idle-return")
    create_topic(c, topic, replicas)
    before = [f"before-{i}" for i in range(20)]
    d = produce_values(c, topic, before, {"acks": "all"})
    assert d.failed == [] and len(d.ok) == len(before)

    move_leadership_away_and_back(c, topic, preferred)
    after = [f"after-{i}" for i in range(10)]
    t0 = time.monotonic()
    d = produce_values(c, topic, after, {"acks": "all", "message.timeout.ms": 10000})
    elapsed = time.monotonic() - t0
    record_timing("acks=all write after the preferred replica took back an idle partition", elapsed)
    truncations = {i: len(log_lines_with(c[i], "diverg", "truncat")) for i in IDS}
    isr = partition_at(c, preferred, topic).isr
    print(f"after {elapsed:.2f}s: acked {len(d.ok)}, failed {[e.str() for e, _ in d.failed][:2]}; "
          f"ISR {sorted(isr)}; divergence truncations logged per node {truncations}")
    assert d.failed == [] and len(d.ok) == len(after), (
        f"acks=all writes failed after {elapsed:.1f}s: {[e.str() for e, _ in d.failed][:2]}; ISR {sorted(isr)}; "
        f"divergence truncations logged per node: {truncations}")
    assert max(truncations.values()) <= 2, f"a follower keeps truncating to the same offset: {truncations}"
    wait_identical_logs(c, topic)
    assert [m.value().decode() for m in read_partition(c, topic)] == before + after


def test_a_preferred_replica_taking_back_its_leadership_is_not_logged_as_an_unclean_election(cluster):
    c: Cluster = cluster()
    controller = settle(c)
    preferred = min(i for i in IDS if i != controller)
    replicas = [preferred] + [i for i in IDS if i != preferred]
    topic = unique_topic("preferred")
    create_topic(c, topic, replicas)
    values = [f"v{i}" for i in range(20)]
    d = produce_values(c, topic, values, {"acks": "all"})
    assert d.failed == [] and len(d.ok) == len(values)

    move_leadership_away_and_back(c, topic, preferred)
    assert [m.value().decode() for m in read_partition(c, topic)] == values
    # unclean.leader.election.enable is false: no election here may lose records, and
    # the preferred replica only leads again once it is in sync.
    warnings = {i: log_lines_with(c[i], "unclean leader election") for i in IDS}
    warnings = {i: lines for i, lines in warnings.items() if lines}
    assert not warnings, ("a clean return of the preferred replica was logged as an unclean election "
                          f"(records lost): {warnings}")


# --------------------------------------------------------------------------
# 10. A node on its way out does not become the controller
# --------------------------------------------------------------------------

LONG_POLL_MS = 5000


def test_a_node_draining_its_connections_at_shutdown_never_becomes_the_controller(cluster, record_timing):
    # A consumer's long-poll Fetch keeps the stopping node draining for a while after
    # its controlled shutdown; meanwhile the others must keep a reachable controller.
    c: Cluster = cluster()
    controller = settle(c)
    leaving = min(i for i in IDS if i != controller)
    others = [i for i in IDS if i != leaving]
    topic = unique_topic("leaving")
    create_topic(c, topic, [leaving] + others)
    d = produce_values(c, topic, ["x"], {"acks": "all"})
    assert d.failed == [] and len(d.ok) == 1

    ks = c[leaving].kafka_socket(timeout=LONG_POLL_MS / 1000 + 15)
    version = kw.pick_version(kw.api_versions(ks).ranges, kw.API_FETCH, *kw.FETCH_VERSIONS)
    poll_done = threading.Event()

    def long_poll() -> None:
        try:
            kw.fetch(ks, version, topic, 0, 1, max_wait_ms=LONG_POLL_MS)  # at the end: waits
        except Exception:  # noqa: BLE001 - only its duration matters
            pass
        finally:
            poll_done.set()

    poller = threading.Thread(target=long_poll, daemon=True)
    poller.start()
    time.sleep(0.3)
    node = c[leaving]
    assert node.proc is not None
    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    seen: dict[int, list[tuple[float, int]]] = {i: [] for i in others}
    try:
        while node.proc.poll() is None and time.monotonic() - t0 < LONG_POLL_MS / 1000 + 15:
            for i in others:
                cid = c.metadata(i).controller_id
                if not seen[i] or seen[i][-1][1] != cid:
                    seen[i].append((round(time.monotonic() - t0, 2), cid))
                assert cid != leaving, (
                    f"{time.monotonic() - t0:.2f}s after SIGTERM, while still draining, broker {leaving} "
                    f"is the controller in node {i}'s Metadata (controller changes seen: {seen})")
            time.sleep(0.05)
        exit_s = time.monotonic() - t0
        record_timing(f"SIGTERM of broker {leaving} with a {LONG_POLL_MS} ms long-poll open -> exit", exit_s)
        print(f"controller changes seen during the shutdown: {seen}")
    finally:
        ks.close()
        poller.join(5)
    assert node.proc.poll() == 0, f"broker {leaving} exit code {node.proc.poll()}"
    assert set(c.metadata(others[0]).brokers) == set(others)
