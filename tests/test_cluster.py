"""The metadata quorum with three real `rafka` processes on loopback.

Each node runs `process.roles=broker,controller`: a voter in the openraft quorum
(gRPC on its BROKER listener) and a Kafka broker (PLAINTEXT).  Metadata is read
from one node at a time over a raw socket (kafka_wire.metadata_v12), so "node i
says X" really is node i's own view, never a client's routing.

Tests 1-4 and DescribeQuorum share one cluster (they only add topics); the tests
that kill, stop, wipe or misconfigure nodes each get a cluster of their own.
Measured timings are printed and repeated in the run's "measured timings" summary.
Data replication itself (acks, ISR, failover with real clients) is tested in
test_replication.py.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
import warnings
from collections import Counter

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire as kw
from rafka_harness import (CLUSTER_TEARDOWN_GRACE_S, CLUSTERS_KEY, Broker, Cluster, ClusterNode,
                           RafkaShutdownWarning, client_base, holds_for, unique_topic, wait_until)

INVALID_REPLICATION_FACTOR = 38
IDS = {1, 2, 3}
# "A new controller within a few seconds" (election timeout is 300-600 ms).
FAILOVER_LIMIT_S = 5.0
FAST_SESSION_TIMEOUT_MS = 2000


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _module_cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("shared-cluster"))
    try:
        elapsed = c.start()
        print(f"shared cluster ready in {elapsed:.2f}s")
        yield c
    finally:
        try:
            killed = c.teardown()
            if killed:
                warnings.warn(RafkaShutdownWarning(
                    f"shared cluster: node(s) {killed} still running {CLUSTER_TEARDOWN_GRACE_S}s "
                    "after SIGTERM at teardown; killed"))
        finally:
            c.kill_all()


@pytest.fixture
def cluster(_module_cluster: Cluster, request: pytest.FixtureRequest) -> Cluster:
    """The shared three-node cluster, all nodes running (checked before each test)."""
    request.node.stash[CLUSTERS_KEY] = [_module_cluster]
    dead = {i: n.proc.returncode for i, n in _module_cluster.nodes.items() if not n.is_running()}
    assert not dead, f"nodes of the shared cluster exited (node: exit code): {dead}"
    return _module_cluster


def admin_at(node: ClusterNode) -> AdminClient:
    """A confluent-kafka AdminClient bootstrapped only at `node`."""
    return AdminClient(client_base(node.bootstrap))


def create_raw(node: ClusterNode, name: str, partitions: int, rf: int) -> kw.CreateTopicResult:
    """CreateTopics v4 sent to `node` itself (librdkafka would route it to the controller)."""
    with node.kafka_socket(timeout=20) as ks:
        return kw.create_topics_v4(ks, name, partitions, rf)


def topic_view(meta: kw.ClusterMeta, name: str):
    """What a node says about one topic: (topic id, {partition: (leader, epoch, replicas, isr)})."""
    t = meta.topics[name]
    return (t.topic_id, {i: (p.leader, p.leader_epoch, p.replicas, p.isr) for i, p in t.partitions.items()})


def wait_same_topic_everywhere(c: Cluster, name: str, ids=IDS, timeout: float = 15.0):
    """Wait until every node in `ids` lists `name` and all describe it identically."""
    seen = {}  # the last view of each node, for the failure message

    def agreed():
        views = {}
        for i in sorted(ids):
            meta = c.metadata(i)
            if name not in meta.topics:
                seen[i] = "does not list it"
                return False
            views[i] = seen[i] = topic_view(meta, name)
        return views if len({repr(v) for v in views.values()}) == 1 else False
    try:
        return wait_until(agreed, timeout, interval=0.05, message=f"every node {sorted(ids)} to describe {name} identically")
    except AssertionError as e:
        raise AssertionError(f"{e}; last views (leader, epoch, replicas, isr): {seen}") from None


def stderr_rafka_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode(errors="replace").splitlines() if line.startswith("rafka:")]


def wait_for_controller_among(c: Cluster, ids: list[int], timeout: float = 10.0) -> int:
    """Wait until the nodes `ids` all name the same controller, one of them; return it.
    (After a refused start the remaining nodes must still have a working quorum.)"""
    def agreed():
        seen = {c.metadata(i).controller_id for i in ids}
        if len(seen) != 1:
            return False
        (controller,) = seen
        return controller if controller in ids else False
    return wait_until(agreed, timeout, message=f"nodes {ids} to agree on a controller among themselves")


def other_node(c: Cluster, not_this: int) -> ClusterNode:
    return next(n for i, n in sorted(c.nodes.items()) if i != not_this and n.is_running())


# --------------------------------------------------------------------------
# 1-4, 9: one shared cluster
# --------------------------------------------------------------------------


def test_all_three_brokers_registered_with_the_same_cluster_id_and_controller_everywhere(cluster: Cluster):
    expected_brokers = {i: ("127.0.0.1", n.port, None) for i, n in cluster.nodes.items()}

    def views():
        metas = {i: cluster.metadata(i) for i in sorted(IDS)}
        ok = (all(m.brokers == expected_brokers for m in metas.values())
              and len({(m.cluster_id, m.controller_id) for m in metas.values()}) == 1)
        return metas if ok else False

    metas = wait_until(views, 15, message="every node to list brokers 1,2,3 with one cluster id and controller")
    cluster_id = metas[1].cluster_id
    controller = metas[1].controller_id
    print(f"cluster id {cluster_id}, controller {controller}, brokers {expected_brokers}")
    assert cluster_id, f"empty cluster id: {cluster_id!r}"
    assert controller in IDS, f"controller id {controller} is not one of the voters"
    for i, node in cluster.nodes.items():
        stamped = node.meta_properties()
        assert stamped.get("cluster.id") == cluster_id, f"node {i} meta.properties: {stamped}"
        assert stamped.get("node.id") == str(i), f"node {i} meta.properties: {stamped}"


def test_create_topics_through_a_node_that_is_not_the_controller(cluster: Cluster, record_timing):
    controller = cluster.controller_id(via=1)
    follower = other_node(cluster, controller)
    print(f"controller {controller}; creating through node {follower.node_id}")

    # Raw CreateTopics on the follower's own socket: the follower must forward it.
    raw_topic = unique_topic("fwd-raw")
    t0 = time.monotonic()
    result = create_raw(follower, raw_topic, 3, 3)
    record_timing("CreateTopics (raw, via a non-controller) answered", time.monotonic() - t0)
    assert (result.error_code, result.error_message) in {(0, None), (0, "")}, result

    # A real client bootstrapped only at the follower.  (librdkafka sends CreateTopics to
    # the controller named in Metadata, so this also proves that address is usable.)
    client_topic = unique_topic("fwd-client")
    admin = admin_at(follower)
    t0 = time.monotonic()
    admin.create_topics([NewTopic(client_topic, num_partitions=3, replication_factor=3)],
                        operation_timeout=15, request_timeout=20)[client_topic].result(timeout=30)
    record_timing("CreateTopics (confluent-kafka bootstrapped at a non-controller)", time.monotonic() - t0)

    for name in (raw_topic, client_topic):
        views = wait_same_topic_everywhere(cluster, name)
        topic_id, parts = views[1]
        assert topic_id != kw.ZERO_UUID, f"{name}: zero topic id"
        assert sorted(parts) == [0, 1, 2], f"{name}: partitions {sorted(parts)}"


def test_rf3_six_partitions_have_three_distinct_replicas_leaders_spread_2_2_2_and_full_isr(cluster: Cluster):
    name = unique_topic("rf3")
    controller = cluster.controller_id(via=1)
    result = create_raw(other_node(cluster, controller), name, 6, 3)
    assert result.error_code == 0, result
    wait_same_topic_everywhere(cluster, name)
    parts = cluster.metadata(1, [name]).topics[name].partitions
    assert sorted(parts) == list(range(6)), f"partitions: {sorted(parts)}"
    for i, p in sorted(parts.items()):
        print(f"{name}[{i}] leader {p.leader} replicas {p.replicas} isr {p.isr}")
        assert p.error_code == 0, f"partition {i}: error {p.error_code}"
        assert len(p.replicas) == 3 and set(p.replicas) == IDS, f"partition {i}: replicas {p.replicas}"
        assert sorted(p.isr) == sorted(p.replicas), f"partition {i}: isr {p.isr} != replicas {p.replicas}"
        assert p.leader in p.replicas, f"partition {i}: leader {p.leader} not a replica {p.replicas}"
    leaders = Counter(p.leader for p in parts.values())
    assert leaders == Counter({1: 2, 2: 2, 3: 2}), f"leaders per broker: {dict(leaders)}"


def test_replication_factor_larger_than_the_broker_count_is_invalid_replication_factor(cluster: Cluster):
    controller = cluster.controller_id(via=1)
    follower = other_node(cluster, controller)

    raw_topic = unique_topic("rf4-raw")
    result = create_raw(follower, raw_topic, 1, 4)
    print(f"raw CreateTopics RF=4: {result}")
    assert result.error_code == INVALID_REPLICATION_FACTOR, result
    assert result.error_message, f"no error message: {result}"

    client_topic = unique_topic("rf4-client")
    admin = admin_at(follower)  # keep a reference: a collected client fails its futures
    future = admin.create_topics([NewTopic(client_topic, num_partitions=1, replication_factor=4)],
                                 operation_timeout=15, request_timeout=20)[client_topic]
    with pytest.raises(KafkaException) as info:
        future.result(timeout=30)
    err = info.value.args[0]
    print(f"confluent-kafka CreateTopics RF=4: code {err.code()} {err.str()!r}")
    assert err.code() == INVALID_REPLICATION_FACTOR, err
    assert err.str(), "no error message"

    for i in IDS:
        topics = cluster.metadata(i).topics
        assert raw_topic not in topics and client_topic not in topics, f"node {i} lists a refused topic"


def test_describe_quorum_names_the_controller_as_leader_and_three_caught_up_voters(cluster: Cluster):
    with cluster[1].kafka_socket() as ks:
        ranges = kw.api_versions(ks).ranges
    if kw.API_DESCRIBE_QUORUM not in ranges:
        pytest.xfail("ApiVersions does not list DescribeQuorum (key 55) yet")
    lo, hi = ranges[kw.API_DESCRIBE_QUORUM]
    assert lo == 0, f"DescribeQuorum versions {lo}..{hi}: v0 not offered"

    for via in sorted(IDS):
        def described():
            controller = cluster.metadata(via).controller_id
            with cluster[via].kafka_socket() as ks:
                res = kw.describe_quorum_v0(ks)
            part = res.topics[kw.CLUSTER_METADATA_TOPIC][0]
            # The leader's end offset equals the high watermark once nothing is in flight.
            settled = part.voters.get(part.leader_id) == part.high_watermark
            return (controller, res, part) if settled else False

        controller, res, part = wait_until(described, 10, message=f"a settled DescribeQuorum answer from node {via}")
        print(f"via node {via}: controller {controller}, {part}")
        assert res.error_code == 0, res
        assert list(res.topics) == [kw.CLUSTER_METADATA_TOPIC], res
        assert part.error_code == 0, part
        assert part.leader_id == controller, f"DescribeQuorum leader {part.leader_id} != Metadata controller {controller}"
        assert part.leader_epoch >= 1, part
        assert set(part.voters) == IDS, f"voters {sorted(part.voters)}"
        assert all(leo > 0 for leo in part.voters.values()), f"voters' log end offsets {part.voters}"
        assert part.voters[part.leader_id] == part.high_watermark, part
        assert part.observers == {}, f"observers {part.observers} (every node is a voter)"


# --------------------------------------------------------------------------
# 5: losing the active controller
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_of_the_controller_elects_a_new_one_writes_continue_and_the_dead_broker_is_fenced(
        cluster_factory, record_timing):
    c: Cluster = cluster_factory(extra={"broker.session.timeout.ms": str(FAST_SESSION_TIMEOUT_MS)})
    before = unique_topic("before")
    assert create_raw(c[1], before, 3, 3).error_code == 0
    wait_same_topic_everywhere(c, before)

    old = c.controller_id(via=1)
    survivors = sorted(IDS - {old})
    print(f"killing controller {old}; survivors {survivors}")
    socks: dict[int, kw.KafkaSocket] = {}

    def new_controller():
        seen = {}
        for i in survivors:
            try:
                if i not in socks:
                    socks[i] = c[i].kafka_socket(timeout=2)
                seen[i] = kw.metadata_v12(socks[i], []).controller_id
            except (OSError, AssertionError, ValueError):
                socks.pop(i, None)
        fresh = [cid for cid in seen.values() if cid not in (old, -1)]
        return fresh[0] if fresh else False

    t_kill = time.monotonic()
    c[old].kill9()
    try:
        new = wait_until(new_controller, 30, interval=0.01, message="a Metadata answer naming a new controller")
    finally:
        for s in socks.values():
            s.close()
    failover = time.monotonic() - t_kill
    record_timing(f"kill -9 of controller {old} -> first Metadata naming controller {new}", failover)
    assert new in survivors, f"new controller {new} is not a survivor {survivors}"
    assert failover < FAILOVER_LIMIT_S, f"failover took {failover:.2f}s"
    wait_until(lambda: all(c.metadata(i).controller_id == new for i in survivors), 10,
               message=f"both survivors to name controller {new}")

    # Metadata writes with two of three voters.
    during = unique_topic("two-of-three")
    t0 = time.monotonic()
    result = create_raw(c[survivors[0]], during, 2, 2)
    record_timing("CreateTopics RF=2 with 2 of 3 nodes", time.monotonic() - t0)
    assert result.error_code == 0, result
    placed = wait_same_topic_everywhere(c, during, ids=survivors)[survivors[0]][1]
    print(f"{during} created {failover:.2f}s after the kill, before fencing: {placed}")

    # The dead broker is fenced: gone from brokers and every ISR.
    def fenced():
        metas = [c.metadata(i) for i in survivors]
        for m in metas:
            if set(m.brokers) != set(survivors):
                return False
            for t in m.topics.values():
                for p in t.partitions.values():
                    if old in p.isr or p.leader == old:
                        return False
        return metas

    metas = wait_until(fenced, FAST_SESSION_TIMEOUT_MS / 1000 + 10, interval=0.05,
                       message=f"broker {old} to be fenced (gone from brokers and every ISR)")
    fence_time = time.monotonic() - t_kill
    record_timing(f"kill -9 -> broker {old} fenced (its peers report it, the controller's probe confirms)", fence_time)
    # A killed broker is fenced when its replication peers report it and the controller's
    # connection probe is refused, well before the session timeout; the timeout is only
    # the fallback (a frozen broker).
    assert fence_time < FAST_SESSION_TIMEOUT_MS / 1000 + 5, f"broker {old} fenced only {fence_time:.2f}s after the kill"
    for name, t in metas[0].topics.items():
        for i, p in t.partitions.items():
            print(f"after fencing {name}[{i}]: leader {p.leader} replicas {p.replicas} isr {p.isr}")
            assert p.leader in survivors and p.leader in p.isr, f"{name}[{i}]: leader {p.leader}, isr {p.isr}"


# Controlled shutdown asks the controller to fence the node for at most 5 s
# (rafka-server node.rs); everything after that is local work.
LOST_QUORUM_SHUTDOWN_LIMIT_S = 10.0
LOST_QUORUM_GIVE_UP_S = 20.0


def test_sigterm_of_a_node_that_lost_its_quorum_exits_promptly(cluster_factory, record_timing):
    c: Cluster = cluster_factory()
    leader = c.controller_id(via=1)
    follower = min(IDS - {leader})
    third = (IDS - {leader, follower}).pop()
    c[leader].kill9()
    c[third].kill9()
    # The follower notices: no controller any more (its heartbeats now fail).
    wait_until(lambda: c.metadata(follower).controller_id == -1, 10,
               message=f"node {follower} to report no controller after losing its quorum")

    node = c[follower]
    assert node.proc is not None
    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    try:
        code = node.proc.wait(timeout=LOST_QUORUM_GIVE_UP_S)
    except subprocess.TimeoutExpired:
        node.proc.kill()
        node.proc.wait(timeout=10)
        code = None
    elapsed = time.monotonic() - t0
    record_timing(f"SIGTERM -> exit of node {follower}, alone without a quorum"
                  + (" (gave up, SIGKILL)" if code is None else ""), elapsed)
    assert code is not None, f"node {follower} still running {LOST_QUORUM_GIVE_UP_S:.0f}s after SIGTERM (killed it)"
    assert elapsed < LOST_QUORUM_SHUTDOWN_LIMIT_S, (
        f"node {follower} took {elapsed:.1f}s to exit after SIGTERM without a quorum (exit code {code})")


# --------------------------------------------------------------------------
# 6: full restart
# --------------------------------------------------------------------------


def _make_topics(c: Cluster) -> dict[str, int]:
    topics = {unique_topic("keep1"): 1, unique_topic("keep3"): 3, unique_topic("keep6"): 6}
    for name, n in topics.items():
        assert create_raw(c[1], name, n, 3).error_code == 0
        wait_same_topic_everywhere(c, name)
    return topics


def test_full_restart_keeps_every_topic_id_partition_count_and_the_cluster_id(cluster_factory, record_timing):
    c: Cluster = cluster_factory()
    topics = _make_topics(c)
    meta = c.metadata(1)
    before = {name: (t.topic_id, len(t.partitions)) for name, t in meta.topics.items()}
    assert set(before) == set(topics)
    cluster_id = meta.cluster_id

    record_timing("SIGTERM of all three nodes at once", c.stop())
    record_timing("start of all three nodes (until each answers Metadata)", c.start())

    def restored():
        metas = {i: c.metadata(i) for i in sorted(IDS)}
        views = {i: {n: (t.topic_id, len(t.partitions)) for n, t in m.topics.items()} for i, m in metas.items()}
        return (metas, views) if all(v == before for v in views.values()) else False

    metas, views = wait_until(restored, 15, message=f"every node to list exactly {before}")
    for i, m in metas.items():
        assert m.cluster_id == cluster_id, f"node {i}: cluster id {m.cluster_id} != {cluster_id} before the restart"


def test_after_a_full_restart_every_partition_has_a_leader_again(cluster_factory):
    c: Cluster = cluster_factory()
    topics = _make_topics(c)
    c.stop()
    c.start()

    def all_led():
        for i in sorted(IDS):
            m = c.metadata(i)
            for name in topics:
                for p in m.topics[name].partitions.values():
                    if p.leader not in IDS or p.leader not in p.isr:
                        return False
        return True

    try:
        wait_until(all_led, 15, message="every partition to have a live leader in its ISR on every node")
    finally:
        m = c.metadata(1)
        for name in topics:
            for i, p in m.topics[name].partitions.items():
                print(f"{name}[{i}]: leader {p.leader} replicas {p.replicas} isr {p.isr}")


# --------------------------------------------------------------------------
# 7: a node with a wiped data dir
# --------------------------------------------------------------------------


def test_a_wiped_node_rejoins_and_catches_up_with_topics_created_before_and_while_it_was_down(
        cluster_factory, record_timing):
    c: Cluster = cluster_factory()
    early = unique_topic("early")
    assert create_raw(c[1], early, 3, 3).error_code == 0
    wait_same_topic_everywhere(c, early)

    c.stop([3])
    shutil.rmtree(c[3].data_dir)
    while_down = unique_topic("while-down")
    result = create_raw(c[1], while_down, 2, 2)  # node 3 is fenced: RF=3 is impossible now
    assert result.error_code == 0, result
    wait_same_topic_everywhere(c, while_down, ids=[1, 2])
    expected = {n: t.topic_id for n, t in c.metadata(1).topics.items()}
    assert set(expected) == {early, while_down}

    t0 = time.monotonic()
    c[3].start()
    node3 = wait_until(lambda: (lambda m: m if {n: t.topic_id for n, t in m.topics.items()} == expected else False)(
        c.metadata(3)), 20, message=f"node 3 to list {expected}")
    record_timing("wiped node 3: start -> Metadata lists every topic", time.monotonic() - t0)
    assert node3.cluster_id == c.metadata(1).cluster_id
    assert c[3].meta_properties().get("cluster.id") == node3.cluster_id
    for name in expected:
        wait_same_topic_everywhere(c, name)


# --------------------------------------------------------------------------
# 8: identity checks at start-up
# --------------------------------------------------------------------------


def test_a_node_started_with_another_node_id_on_existing_data_refuses_with_one_line_naming_both_ids(
        cluster_factory):
    c: Cluster = cluster_factory()
    node = c[3]
    c.stop([3])
    stamped_before = node.meta_properties()
    assert stamped_before.get("node.id") == "3"

    node.props["node.id"] = "4"
    node.props["process.roles"] = "broker"  # a broker-only node 4: a valid configuration
    done = node.run_to_exit(timeout=30)
    lines = stderr_rafka_lines(done.stderr)
    print(f"exit {done.returncode}; {lines}")
    assert done.returncode != 0, "node 4 started on node 3's data"
    assert len(lines) == 1, f"expected one 'rafka:' line on stderr, got {lines}"
    without_paths = lines[0].replace(str(c.workdir), "<dir>")
    assert re.search(r"\b3\b", without_paths) and re.search(r"\b4\b", without_paths), (
        f"error does not name both node ids 3 and 4: {lines[0]}")
    assert node.meta_properties() == stamped_before, "meta.properties was changed by the refused start"
    wait_for_controller_among(c, [1, 2])


@pytest.fixture
def foreign_meta_properties(broker_factory) -> dict[str, str]:
    """meta.properties of a second, independent single-node cluster whose node is node 3."""
    other: Broker = broker_factory(overrides={"node.id": "3"})
    other.stop()
    text = (other.data_dir / "meta.properties").read_text()
    return {"text": text, "cluster.id": re.search(r"^cluster\.id=(.*)$", text, re.M).group(1)}


def _join_with_foreign_identity(c: Cluster, foreign: dict[str, str]):
    node = c[3]
    c.stop([3])
    (node.data_dir / "meta.properties").write_text(foreign["text"])
    return node.run_to_exit(timeout=30)


def test_a_node_whose_data_belongs_to_another_cluster_refuses_to_start_naming_both_cluster_ids(
        cluster_factory, foreign_meta_properties):
    c: Cluster = cluster_factory()
    ours = c.metadata(1).cluster_id
    theirs = foreign_meta_properties["cluster.id"]
    assert ours != theirs
    done = _join_with_foreign_identity(c, foreign_meta_properties)
    lines = stderr_rafka_lines(done.stderr)
    print(f"exit {done.returncode}; {lines}")
    assert done.returncode != 0, "node 3 started with another cluster's meta.properties"
    assert len(lines) == 1, f"expected one 'rafka:' line on stderr, got {lines}"
    assert ours in lines[0] and theirs in lines[0], f"error does not name both cluster ids {ours}, {theirs}: {lines[0]}"
    assert c[3].meta_properties().get("cluster.id") == theirs, "the foreign meta.properties was overwritten"
    wait_for_controller_among(c, [1, 2])


def test_a_node_refused_for_another_clusters_data_never_appears_as_a_live_broker(
        cluster_factory, foreign_meta_properties):
    c: Cluster = cluster_factory()
    c.stop([3])
    wait_until(lambda: set(c.metadata(1).brokers) == {1, 2}, 10, message="node 3 to leave Metadata after SIGTERM")

    done = _join_with_foreign_identity(c, foreign_meta_properties)
    assert done.returncode != 0, "node 3 started with another cluster's meta.properties"
    # Whatever the refused node did before exiting, the cluster must not advertise it.
    for i in (1, 2):
        def not_listed(i=i) -> bool:
            brokers = c.metadata(i).brokers
            assert 3 not in brokers, (f"node {i}'s Metadata lists broker 3, which refused to join "
                                      f"(exit code {done.returncode}): {brokers}")
            return True
        holds_for(not_listed, 1.0, message=f"node {i}'s Metadata not listing the refused broker 3")
