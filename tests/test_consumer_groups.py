"""Consumer groups on a three-node cluster, driven by real clients.

The group coordinator is the leader of the group's `__consumer_offsets` partition
(Kafka's hash of the group id); group state and committed offsets are records in that
compacted, replicated topic.

1. Three confluent-kafka consumers in one group on a six-partition topic get disjoint
   assignments covering every partition, with each of the range, roundrobin and
   cooperative-sticky assignors; every record is read; when one consumer leaves, the
   other two take over all six partitions and read what comes next.
2. Committed offsets come back from OffsetFetch (the client's `committed()`, and the
   admin client's ListConsumerGroupOffsets); a consumer restarted in the same group
   resumes exactly after the last committed offset. ListGroups and DescribeGroups
   through the admin client show the group, its state and members.
3. A standalone consumer (assign(), manual commit of each message, never joins) commits
   and resumes; its group is Empty with the offsets.
4. kafka-python's KafkaConsumer with a group id consumes and commits.
5. kill -9 of the group's coordinator: the group goes on through the new coordinator
   (another broker, which reloaded the group from __consumer_offsets) with its committed
   offsets intact, and every record is consumed.
6. A static member (group.instance.id) restarted within its session keeps its
   partitions, and the other member's assignment does not change.
7. DeleteGroups removes an empty group (and refuses a non-empty one).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from rafka_harness import Cluster, client_base, wait_until

OFFSETS_TOPIC = "__consumer_offsets"
PARTITIONS = 6
EXTRA = {"group.initial.rebalance.delay.ms": "0"}


def bootstrap(c: Cluster, ids=(1, 2, 3)) -> str:
    return ",".join(c[i].bootstrap for i in ids)


def java_hash_partition(group: str, partitions: int) -> int:
    """Kafka's coordinator partition: abs(String.hashCode()) % partitions."""
    h = 0
    data = group.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (h * 31 + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def coordinator_of(c: Cluster, group: str, via: int) -> int:
    meta = c.metadata(via, [OFFSETS_TOPIC]).topics[OFFSETS_TOPIC]
    return meta.partitions[java_hash_partition(group, len(meta.partitions))].leader


def make_topic(c: Cluster, name: str, partitions: int = PARTITIONS) -> None:
    admin = AdminClient(client_base(bootstrap(c)))
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=3)],
                        operation_timeout=15)[name].result(timeout=30)


def produce(c: Cluster, topic: str, per_partition: int, start: int = 0, partitions: int = PARTITIONS) -> set[str]:
    p = Producer({**client_base(bootstrap(c)), "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    values = set()
    for i in range(start, start + per_partition):
        for part in range(partitions):
            v = f"{part}:{i}"
            p.produce(topic, value=v.encode(), partition=part)
            values.add(v)
    assert p.flush(30) == 0
    return values


def group_consumer(c: Cluster, group: str, conf: dict[str, Any] | None = None) -> Consumer:
    base = {
        **client_base(bootstrap(c)),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 100,
    }
    base.update(conf or {})
    return Consumer(base)


def assignment(consumer: Consumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


def poll_until(consumers: list[Consumer], done, timeout: float, seen: list[tuple[int, str]] | None = None,
               on_message=None) -> None:
    """Poll every consumer in turn (rebalances only progress while consumers poll) until
    `done()` holds."""
    deadline = time.monotonic() + timeout
    while True:
        for idx, consumer in enumerate(consumers):
            m = consumer.poll(0.05)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consumer {idx}: {m.error()}")
                continue
            if seen is not None:
                seen.append((idx, m.value().decode()))
            if on_message:
                on_message(idx, consumer, m)
        if done():
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out; assignments {[sorted(assignment(x)) for x in consumers]}, seen {len(seen or [])}")


def partitioned(consumers: list[Consumer]) -> bool:
    """Disjoint assignments, none empty, together covering every partition."""
    sets = [assignment(x) for x in consumers]
    union = set().union(*sets)
    return all(sets) and sum(len(s) for s in sets) == PARTITIONS and union == set(range(PARTITIONS))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("groups"), size=3, extra=EXTRA)
    c.start()
    yield c
    c.teardown()


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_three_consumers_split_six_partitions_and_take_over_when_one_leaves(cluster, strategy):
    topic = f"split-{strategy}-{uuid.uuid4().hex[:6]}"
    group = f"g-{strategy}-{uuid.uuid4().hex[:6]}"
    make_topic(cluster, topic)
    first = produce(cluster, topic, 10)
    consumers = [group_consumer(cluster, group, {"partition.assignment.strategy": strategy, "client.id": f"c{i}"})
                 for i in range(3)]
    for x in consumers:
        x.subscribe([topic])
    seen: list[tuple[int, str]] = []
    try:
        poll_until(consumers, lambda: partitioned(consumers) and {v for _, v in seen} >= first, 40, seen)
        assignments = [sorted(assignment(x)) for x in consumers]
        print(f"{strategy}: assignments {assignments}")
        # The leaving consumer's partitions go to the other two.
        consumers[2].close()
        rest = consumers[:2]
        second = produce(cluster, topic, 10, start=10)
        seen.clear()
        poll_until(rest, lambda: partitioned(rest) and {v for _, v in seen} >= second, 40, seen)
        print(f"{strategy}: after one left {[sorted(assignment(x)) for x in rest]}")
    finally:
        for x in consumers[:2]:
            x.close()


def test_committed_offsets_are_fetched_and_a_restarted_consumer_resumes_after_them(cluster):
    topic = f"resume-{uuid.uuid4().hex[:6]}"
    group = f"g-resume-{uuid.uuid4().hex[:6]}"
    make_topic(cluster, topic)
    produce(cluster, topic, 20)
    consumer = group_consumer(cluster, group, {"enable.auto.commit": False, "client.id": "resumer"})
    consumer.subscribe([topic])
    last: dict[int, int] = {}

    def take(_idx, c, m):
        # Commit exactly up to the 8th record of each partition.
        if m.offset() < 8:
            c.commit(message=m, asynchronous=False)
            last[m.partition()] = m.offset()

    poll_until([consumer], lambda: len(last) == PARTITIONS and all(v == 7 for v in last.values()), 40, on_message=take)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    assert {tp.partition: tp.offset for tp in committed} == {p: 8 for p in range(PARTITIONS)}

    admin = AdminClient(client_base(bootstrap(cluster)))
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    assert group in {g.group_id for g in listed.valid}
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    assert described.state == ConsumerGroupState.STABLE
    assert [m.client_id for m in described.members] == ["resumer"]
    assert {tp.partition for tp in described.members[0].assignment.topic_partitions} == set(range(PARTITIONS))
    fetched = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=15)
    assert {tp.partition: tp.offset for tp in fetched.topic_partitions if tp.topic == topic} == {p: 8 for p in range(PARTITIONS)}
    consumer.close()

    # A new consumer in the group starts exactly at the committed offsets.
    restarted = group_consumer(cluster, group, {"enable.auto.commit": False})
    restarted.subscribe([topic])
    firsts: dict[int, int] = {}

    def first_seen(_idx, _c, m):
        firsts.setdefault(m.partition(), m.offset())

    poll_until([restarted], lambda: len(firsts) == PARTITIONS, 40, on_message=first_seen)
    restarted.close()
    assert firsts == {p: 8 for p in range(PARTITIONS)}


def test_a_standalone_consumer_commits_each_message_without_joining(cluster):
    topic = f"standalone-{uuid.uuid4().hex[:6]}"
    group = f"g-standalone-{uuid.uuid4().hex[:6]}"
    make_topic(cluster, topic, partitions=2)
    produce(cluster, topic, 5, partitions=2)
    conf = {"enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True}
    consumer = group_consumer(cluster, group, conf)
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    count = 0

    def commit_each(_idx, c, m):
        nonlocal count
        c.store_offsets(message=m)
        c.commit(asynchronous=False)
        count += 1

    poll_until([consumer], lambda: count == 10, 30, on_message=commit_each)
    consumer.close()
    admin = AdminClient(client_base(bootstrap(cluster)))
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    assert described.state == ConsumerGroupState.EMPTY and not described.members
    fetched = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=15)
    assert sorted((tp.partition, tp.offset) for tp in fetched.topic_partitions) == [(0, 5), (1, 5)]

    produce(cluster, topic, 1, start=5, partitions=2)
    again = group_consumer(cluster, group, conf)
    again.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    offsets: list[tuple[int, int]] = []
    poll_until([again], lambda: len(offsets) == 2, 30, on_message=lambda _i, _c, m: offsets.append((m.partition(), m.offset())))
    again.close()
    assert sorted(offsets) == [(0, 5), (1, 5)]


def test_kafka_python_group_consumer(cluster):
    from kafka import KafkaConsumer, TopicPartition as KTP

    topic = f"kp-{uuid.uuid4().hex[:6]}"
    group = f"g-kp-{uuid.uuid4().hex[:6]}"
    make_topic(cluster, topic, partitions=3)
    values = produce(cluster, topic, 10, partitions=3)
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap(cluster).split(","), group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=20000, request_timeout_ms=30000)
    got = set()
    for m in consumer:
        got.add(m.value.decode())
        if got >= values:
            break
    assert got == values
    consumer.commit()
    assert {p: consumer.committed(KTP(topic, p)) for p in range(3)} == {0: 10, 1: 10, 2: 10}
    consumer.close()


def test_the_group_survives_kill_9_of_its_coordinator(cluster_factory):
    c = cluster_factory(3, extra=EXTRA)
    topic = f"failover-{uuid.uuid4().hex[:6]}"
    group = f"g-failover-{uuid.uuid4().hex[:6]}"
    make_topic(c, topic)
    before = produce(c, topic, 20)
    consumers = [group_consumer(c, group, {"enable.auto.commit": False, "client.id": f"c{i}"}) for i in range(2)]
    for x in consumers:
        x.subscribe([topic])
    seen: list[tuple[int, str]] = []
    commits: dict[int, int] = {}

    def commit(_idx, consumer, m):
        consumer.commit(message=m, asynchronous=False)
        commits[m.partition()] = m.offset() + 1

    poll_until(consumers, lambda: {v for _, v in seen} >= before, 60, seen, on_message=commit)
    assert commits == {p: 20 for p in range(PARTITIONS)}
    victim = coordinator_of(c, group, via=1)
    survivors = [i for i in (1, 2, 3) if i != victim]
    print(f"group coordinator is node {victim}; killing it")
    c[victim].kill9()
    t0 = time.monotonic()

    # The new coordinator (a survivor) serves the offsets committed before the kill.
    def moved():
        leader = coordinator_of(c, group, via=survivors[0])
        assert leader in survivors, f"coordinator still {leader}"
        return leader
    new = wait_until(moved, 15, message="a new coordinator")
    print(f"new coordinator: node {new}, {time.monotonic() - t0:.2f}s after the kill")
    admin = AdminClient(client_base(bootstrap(c, survivors)))

    def offsets_intact():
        fetched = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=10)
        got = {tp.partition: tp.offset for tp in fetched.topic_partitions}
        assert got == {p: 20 for p in range(PARTITIONS)}, got
        return True
    wait_until(offsets_intact, 20, interval=0.5, message="committed offsets from the new coordinator")

    after = produce(c, topic, 10, start=20)
    seen.clear()
    poll_until(consumers, lambda: {v for _, v in seen} >= after, 60, seen, on_message=commit)
    print(f"all records after the kill consumed {time.monotonic() - t0:.2f}s after it; assignments "
          f"{[sorted(assignment(x)) for x in consumers]}")
    assert not {v for _, v in seen} & before, "records committed before the kill were read again"
    for x in consumers:
        x.close()
    fetched = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=10)
    assert {tp.partition: tp.offset for tp in fetched.topic_partitions} == {p: 30 for p in range(PARTITIONS)}


def test_a_restarted_static_member_keeps_its_partitions(cluster):
    topic = f"static-{uuid.uuid4().hex[:6]}"
    group = f"g-static-{uuid.uuid4().hex[:6]}"
    make_topic(cluster, topic)
    produce(cluster, topic, 2)
    conf = {"partition.assignment.strategy": "range", "session.timeout.ms": 10000}
    a = group_consumer(cluster, group, {**conf, "group.instance.id": "static-a"})
    b = group_consumer(cluster, group, {**conf, "group.instance.id": "static-b"})
    for x in (a, b):
        x.subscribe([topic])
    poll_until([a, b], lambda: partitioned([a, b]), 40)
    a_parts, b_parts = assignment(a), assignment(b)
    revoked = []
    b_conf_assign = b.assignment()
    # A static member's close sends no LeaveGroup: its place is kept for the session.
    a.close()
    a2 = group_consumer(cluster, group, {**conf, "group.instance.id": "static-a"})
    a2.subscribe([topic], on_revoke=lambda _c, ps: revoked.append(ps))
    poll_until([a2, b], lambda: assignment(a2) == a_parts, 30)
    assert assignment(b) == b_parts and b.assignment() == b_conf_assign
    assert not revoked
    a2.close()
    b.close()


def test_delete_groups_removes_an_empty_group_only(cluster):
    topic = f"delete-{uuid.uuid4().hex[:6]}"
    group = f"g-delete-{uuid.uuid4().hex[:6]}"
    make_topic(cluster, topic, partitions=1)
    produce(cluster, topic, 3, partitions=1)
    consumer = group_consumer(cluster, group, {"enable.auto.commit": False})
    consumer.subscribe([topic])
    got = []
    poll_until([consumer], lambda: len(got) == 3, 30, on_message=lambda _i, c, m: (got.append(m), c.commit(message=m, asynchronous=False)))
    admin = AdminClient(client_base(bootstrap(cluster)))
    with pytest.raises(KafkaException) as refused:
        admin.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    assert refused.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
    consumer.close()
    admin.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    assert group not in {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(timeout=15).valid}
    fetched = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=15)
    assert all(tp.offset < 0 for tp in fetched.topic_partitions)
