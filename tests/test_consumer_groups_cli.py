"""`rafka consumer-groups`: the kafka-consumer-groups.sh equivalent, run as a real
process against a 3-node cluster whose groups are made by real clients (confluent-kafka).

The story: a 6-partition topic with a known number of records in each partition; a
group of two consumers that consume them and commit chosen offsets.  The CLI must
list the group (asking every broker: each lists only the groups it coordinates),
describe each partition's committed offset, log-end offset, lag and owner exactly
as the consumers see themselves, and refuse to reset the offsets while the
consumers are there.  Once they have left, resets to the earliest offset, to a given
offset (moved into the partition's range) and to the latest offset are checked
against what a consumer of the group reads back with `committed()`.  Deletion, and
the errors for groups that do not exist, finish it.

One cluster serves the whole module (starting one per test would cost more than the
tests); every test uses its own topics and groups.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, TopicPartition

from rafka_harness import CLUSTERS_KEY, Cluster, flush_all, free_port, hermetic_env, rafka_bin, unique_topic, wait_until

CLI_TIMEOUT_S = 60
# The first test also waits for the module's cluster and live group.
pytestmark = pytest.mark.timeout(120)
# Records per partition of the live group's topic, and how far behind the log end
# the consumers commit in each partition.
COUNTS = [3, 5, 7, 2, 4, 6]
BEHIND = [0, 1, 2, 0, 1, 2]
OFFSETS_HEADER = ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                  "CONSUMER-ID", "HOST", "CLIENT-ID"]


def unique_group(prefix: str = "g") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def consumer_groups(bootstrap: str | None, *args: str) -> subprocess.CompletedProcess:
    argv = [rafka_bin(), "consumer-groups"]
    if bootstrap is not None:
        argv += ["--bootstrap-server", bootstrap]
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                          env=hermetic_env(), stdin=subprocess.DEVNULL)


def ok(result: subprocess.CompletedProcess, stderr: str = "") -> str:
    """stdout of a run that must succeed (with exactly `stderr` on stderr)."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stderr == stderr, result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess) -> str:
    """stderr of a run that must fail."""
    assert result.returncode != 0, f"exit 0\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stderr


def table(stdout: str) -> list[list[str]]:
    """The rows (header first) of a table the CLI printed after its empty line."""
    lines = stdout.splitlines()
    assert lines and lines[0] == "", f"a table starts with an empty line:\n{stdout}"
    return [line.split() for line in lines[1:]]


# --------------------------------------------------------------------------
# Fixtures: one cluster, one live group
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("groups-cli"), size=3,
                extra={"group.initial.rebalance.delay.ms": "0"})
    try:
        c.start()
        yield c
    finally:
        if c.teardown():
            c.kill_all()


@pytest.fixture(autouse=True)
def _attach_cluster_logs(request: pytest.FixtureRequest):
    # A failing test's report carries the tail of every node's log (conftest.py's hook).
    if "cluster" in request.fixturenames:
        request.node.stash[CLUSTERS_KEY] = [request.getfixturevalue("cluster")]


def bootstrap_all(c: Cluster) -> str:
    return ",".join(n.bootstrap for n in c.nodes.values())


def make_topic(c: Cluster, counts: list[int]) -> str:
    topic = unique_topic("cg")
    ok_create = subprocess.run([rafka_bin(), "topics", "--bootstrap-server", c[1].bootstrap, "--create",
                                "--topic", topic, "--partitions", str(len(counts)), "--replication-factor", "3"],
                               capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=hermetic_env())
    assert ok_create.returncode == 0, ok_create.stderr
    producer = c[1].producer({"bootstrap.servers": bootstrap_all(c), "acks": "all"})
    for partition, count in enumerate(counts):
        for i in range(count):
            producer.produce(topic, value=f"{partition}-{i}".encode(), partition=partition)
    flush_all(producer)
    return topic


def group_consumer(c: Cluster, group: str, conf: dict | None = None) -> Consumer:
    return c[1].consumer({"bootstrap.servers": bootstrap_all(c), "group.id": group,
                          "enable.partition.eof": False, **(conf or {})})


def committed(c: Cluster, group: str, topic: str, partitions: int) -> list[int]:
    """The group's committed offsets as an independent consumer of the group reads them."""
    reader = group_consumer(c, group)
    try:
        found = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
        return [tp.offset for tp in sorted(found, key=lambda tp: tp.partition)]
    finally:
        reader.close()


def commit(consumer: Consumer, offsets: list[TopicPartition]) -> None:
    """A synchronous commit that must succeed for every partition.  A partition error
    (the coordinator has not yet seen a topic created a moment ago) is retried briefly:
    confluent-kafka reports those in the result instead of raising."""
    def committed_all() -> bool:
        result = consumer.commit(offsets=offsets, asynchronous=False)
        errors = [(tp.partition, tp.error) for tp in result if tp.error is not None]
        assert not errors, f"partition errors: {errors}"
        return True
    wait_until(committed_all, 15, interval=0.2, message="a commit without partition errors")


def standalone_commit(c: Cluster, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for `group` without joining it (assign + commit): an Empty group.
    The commit must be readable back at once."""
    consumer = group_consumer(c, group)
    wanted = [TopicPartition(topic, p, o) for p, o in offsets.items()]
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        commit(consumer, wanted)
        back = consumer.committed([TopicPartition(topic, p) for p in offsets], timeout=10)
        assert {tp.partition: tp.offset for tp in back} == offsets
    finally:
        consumer.close()


@dataclass
class LiveGroup:
    group: str
    topic: str
    consumers: dict[str, Consumer]
    # partition -> client id of the consumer it is assigned to
    owner: dict[int, str] = field(default_factory=dict)
    member_id: dict[str, str] = field(default_factory=dict)
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for consumer in self.consumers.values():
                consumer.close()


@pytest.fixture(scope="module")
def live_group(cluster: Cluster):
    """Two subscribed consumers that read every record and commit COUNTS[p] - BEHIND[p]."""
    topic = make_topic(cluster, COUNTS)
    group = unique_group("live")
    consumers = {cid: group_consumer(cluster, group, {"client.id": cid, "auto.offset.reset": "earliest",
                                                      "enable.auto.commit": False})
                 for cid in ("cli-test-a", "cli-test-b")}
    live = LiveGroup(group, topic, consumers)
    try:
        for consumer in consumers.values():
            consumer.subscribe([topic])
        read = 0

        def settled() -> bool:
            nonlocal read
            for consumer in consumers.values():
                msg = consumer.poll(0.1)
                if msg is not None and msg.error() is None:
                    read += 1
            assignments = [consumer.assignment() for consumer in consumers.values()]
            return read == sum(COUNTS) and all(assignments) and sum(map(len, assignments)) == len(COUNTS)

        wait_until(settled, 60, interval=0, message="both consumers assigned and every record read")
        for cid, consumer in consumers.items():
            mine = consumer.assignment()
            for tp in mine:
                live.owner[tp.partition] = cid
            live.member_id[cid] = consumer.memberid()
            commit(consumer, [TopicPartition(topic, tp.partition, COUNTS[tp.partition] - BEHIND[tp.partition])
                              for tp in mine])
        yield live
    finally:
        live.close()


def wait_for_state(c: Cluster, group: str, state: str) -> None:
    def current() -> str:
        out = consumer_groups(c[1].bootstrap, "--describe", "--state", "--group", group).stdout
        rows = table(out)[1:] if out else []
        return rows[0][-2] if rows else ""
    wait_until(lambda: current() == state, 30, interval=0.2, message=f"group {group} to be {state}")


# --------------------------------------------------------------------------
# The live group
# --------------------------------------------------------------------------


def test_list_shows_the_live_group_and_its_state(cluster: Cluster, live_group: LiveGroup):
    assert live_group.group in ok(consumer_groups(cluster[2].bootstrap, "--list")).splitlines()
    lines = ok(consumer_groups(cluster[2].bootstrap, "--list", "--state")).splitlines()
    assert lines[0].split() == ["GROUP", "STATE"]
    assert [live_group.group, "Stable"] in [line.split() for line in lines[1:]]
    empty_only = ok(consumer_groups(cluster[2].bootstrap, "--list", "--state", "Empty")).splitlines()
    assert live_group.group not in [line.split()[0] for line in empty_only[1:]]


def test_describe_shows_offsets_lag_and_the_owning_member(cluster: Cluster, live_group: LiveGroup):
    out = ok(consumer_groups(cluster[3].bootstrap, "--describe", "--group", live_group.group))
    rows = table(out)
    assert rows[0] == OFFSETS_HEADER
    # Aligned like Kafka's table: each header starts where its column's values start.
    lines = out.splitlines()[1:]
    for name in ("PARTITION", "CURRENT-OFFSET", "CONSUMER-ID", "CLIENT-ID"):
        column = lines[0].index(name)
        assert all(line[column - 1] == " " and line[column] != " " for line in lines[1:]), (name, out)
    by_partition = {int(r[2]): r for r in rows[1:]}
    assert sorted(by_partition) == list(range(len(COUNTS))), out
    for p, row in by_partition.items():
        owner = live_group.owner[p]
        assert row == [live_group.group, live_group.topic, str(p), str(COUNTS[p] - BEHIND[p]), str(COUNTS[p]),
                       str(BEHIND[p]), live_group.member_id[owner], "/127.0.0.1", owner], out


def test_describe_members_and_state(cluster: Cluster, live_group: LiveGroup):
    rows = table(ok(consumer_groups(cluster[1].bootstrap, "--describe", "--members", "--group", live_group.group)))
    assert rows[0] == ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
    assert sorted(rows[1:]) == sorted(
        [live_group.group, live_group.member_id[cid], "/127.0.0.1", cid,
         str(sum(1 for o in live_group.owner.values() if o == cid))] for cid in live_group.consumers)

    rows = table(ok(consumer_groups(cluster[1].bootstrap, "--describe", "--state", "--group", live_group.group)))
    assert rows[0] == ["GROUP", "COORDINATOR", "(ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"]
    group, address, node_id, strategy, state, members = rows[1]
    assert (group, state, members) == (live_group.group, "Stable", "2")
    assert strategy in ("range", "roundrobin"), strategy
    node = cluster[int(node_id.strip("()"))]
    assert address == node.bootstrap


def test_reset_offsets_is_refused_while_the_group_is_active(cluster: Cluster, live_group: LiveGroup):
    result = consumer_groups(cluster[1].bootstrap, "--reset-offsets", "--group", live_group.group,
                             "--all-topics", "--to-earliest", "--execute")
    assert failed(result) == (f"Error: Assignments can only be reset if the group '{live_group.group}' is "
                              f"inactive, but the current state is Stable.\n")
    assert result.stdout == ""
    assert committed(cluster, live_group.group, live_group.topic, len(COUNTS)) == \
        [c - b for c, b in zip(COUNTS, BEHIND)]


def test_once_the_members_leave_offsets_can_be_reset(cluster: Cluster, live_group: LiveGroup):
    group, topic, n = live_group.group, live_group.topic, len(COUNTS)
    live_group.close()
    wait_for_state(cluster, group, "Empty")

    result = consumer_groups(cluster[1].bootstrap, "--describe", "--group", group)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"\nConsumer group '{group}' has no active members.\n"
    rows = table(result.stdout)[1:]
    assert [(int(r[2]), r[6:]) for r in rows] == [(p, ["-", "-", "-"]) for p in range(n)]

    # --to-earliest --execute: every partition back to 0.
    out = ok(consumer_groups(cluster[1].bootstrap, "--reset-offsets", "--group", group, "--all-topics",
                             "--to-earliest", "--execute"))
    assert table(out) == [["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]] + \
        [[group, topic, str(p), "0"] for p in range(n)]
    assert committed(cluster, group, topic, n) == [0] * n

    # --to-offset 4 on partitions 0 and 1: partition 0 has only 3 records, so 3.
    out = ok(consumer_groups(cluster[2].bootstrap, "--reset-offsets", "--group", group, "--topic", f"{topic}:0,1",
                             "--to-offset", "4", "--execute"),
             stderr=f"WARN: New offset (4) is higher than the latest offset of {topic}-0; it is set to 3.\n")
    assert table(out)[1:] == [[group, topic, "0", "3"], [group, topic, "1", "4"]]
    assert committed(cluster, group, topic, n) == [3, 4, 0, 0, 0, 0]

    # Without --execute nothing changes, and a warning says so.
    result = consumer_groups(cluster[3].bootstrap, "--reset-offsets", "--group", group, "--topic", topic,
                             "--to-latest")
    assert result.returncode == 0 and result.stderr.startswith("WARN: No action will be performed"), result
    assert table(result.stdout)[1:] == [[group, topic, str(p), str(c)] for p, c in enumerate(COUNTS)]
    assert committed(cluster, group, topic, n) == [3, 4, 0, 0, 0, 0]

    out = ok(consumer_groups(cluster[3].bootstrap, "--reset-offsets", "--group", group, "--topic", topic,
                             "--to-latest", "--execute"))
    assert table(out)[1:] == [[group, topic, str(p), str(c)] for p, c in enumerate(COUNTS)]
    assert committed(cluster, group, topic, n) == COUNTS

    described = table(ok(consumer_groups(cluster[1].bootstrap, "--describe", "--group", group),
                         stderr=f"\nConsumer group '{group}' has no active members.\n"))
    assert [r[3:6] for r in described[1:]] == [[str(c), str(c), "0"] for c in COUNTS]


# --------------------------------------------------------------------------
# Groups made by standalone commits
# --------------------------------------------------------------------------


def test_list_asks_every_broker(cluster: Cluster):
    topic = make_topic(cluster, [1])
    groups = [unique_group("spread") for _ in range(8)]
    for g in groups:
        standalone_commit(cluster, g, topic, {0: 1})
    admin = cluster[1].admin()
    coordinators = {d.coordinator.id for d in (f.result(timeout=15) for f in
                                               admin.describe_consumer_groups(groups).values())}
    assert len(coordinators) > 1, f"all 8 groups landed on broker(s) {coordinators}; the test proves nothing"
    listed = ok(consumer_groups(cluster[1].bootstrap, "--list")).splitlines()
    assert listed == sorted(listed)
    assert set(groups) <= set(listed)


def test_delete_removes_an_empty_group(cluster: Cluster):
    topic = make_topic(cluster, [2])
    group = unique_group("del")
    standalone_commit(cluster, group, topic, {0: 2})
    assert group in ok(consumer_groups(cluster[1].bootstrap, "--list")).splitlines()
    assert ok(consumer_groups(cluster[2].bootstrap, "--delete", "--group", group)) == \
        f"Deletion of requested consumer groups ('{group}') was successful.\n"
    assert group not in ok(consumer_groups(cluster[1].bootstrap, "--list")).splitlines()
    assert committed(cluster, group, topic, 1) == [-1001]  # librdkafka's OFFSET_INVALID: nothing committed


def test_delete_of_a_missing_group_fails(cluster: Cluster):
    group = unique_group("nope")
    other = unique_group("del")
    standalone_commit(cluster, other, make_topic(cluster, [1]), {0: 1})
    result = consumer_groups(cluster[1].bootstrap, "--delete", "--group", group, "--group", other)
    assert failed(result) == ("Error: Deletion of some consumer groups failed:\n"
                              f"* Group '{group}' could not be deleted due to: GROUP_ID_NOT_FOUND: "
                              "The group id does not exist.\n")
    assert result.stdout == f"\nThese consumer groups were deleted successfully: '{other}'\n"


def test_delete_of_a_group_with_members_fails(cluster: Cluster):
    topic = make_topic(cluster, [1])
    group = unique_group("busy")
    consumer = group_consumer(cluster, group)
    try:
        consumer.subscribe([topic])
        wait_until(lambda: consumer.poll(0.1) is None and bool(consumer.assignment()), 30,
                   message="the consumer to be assigned")
        result = consumer_groups(cluster[1].bootstrap, "--delete", "--group", group)
        assert "could not be deleted due to: NON_EMPTY_GROUP: The group is not empty." in failed(result)
    finally:
        consumer.close()


def test_describing_a_missing_group_fails(cluster: Cluster):
    group = unique_group("nope")
    result = consumer_groups(cluster[1].bootstrap, "--describe", "--group", group)
    assert failed(result) == f"Error: Consumer group '{group}' does not exist.\n"
    assert result.stdout == ""


# --------------------------------------------------------------------------
# Without a cluster
# --------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    ([], "Command must include exactly one action: --list, --describe, --reset-offsets or --delete"),
    (["--describe"], "--describe needs --group GROUP (repeatable) or --all-groups"),
    (["--reset-offsets", "--group", "g", "--to-earliest"],
     "--reset-offsets needs --topic TOPIC[:P,P...] (repeatable) or --all-topics"),
    (["--reset-offsets", "--group", "g", "--all-topics"],
     "--reset-offsets needs one of --to-earliest, --to-latest, --to-offset N"),
    (["--reset-offsets", "--group", "g", "--to-latest", "--topic", "t:one"],
     'invalid --topic "t:one": "one" is not a partition number (expected TOPIC or TOPIC:P,P...)'),
    (["--list", "--group", "g"], 'Option "[group]" can\'t be used with option "[list]"'),
])
def test_usage_errors_exit_1_before_connecting(args: list[str], message: str):
    # Nothing listens on this address: a usage error must not even try to connect.
    result = consumer_groups(f"127.0.0.1:{free_port()}", *args)
    assert result.returncode == 1, result
    assert result.stderr.splitlines()[0] == message, result.stderr


def test_help_documents_every_flag():
    result = subprocess.run([rafka_bin(), "consumer-groups", "--help"], capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_S, env=hermetic_env())
    assert result.returncode == 0, result.stderr
    for flag in ("--bootstrap-server", "--list", "--describe", "--reset-offsets", "--delete", "--group",
                 "--all-groups", "--members", "--offsets", "--state", "--topic", "--all-topics", "--to-earliest",
                 "--to-latest", "--to-offset", "--dry-run", "--execute"):
        assert flag in result.stdout, f"{flag} missing from --help:\n{result.stdout}"
