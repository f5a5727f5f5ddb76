"""`rafka topics`: the kafka-topics.sh equivalent, run as a real process against a broker.

Each test drives the CLI the way people type it and checks what they see: Kafka's
exact `--describe` layout (tab-separated, TopicId in URL-safe base64), the
`Error while executing topic command : …` line and exit code 1 on failures.  What
the CLI reports is compared with what an independent client (confluent-kafka)
sees of the same broker.
"""

from __future__ import annotations

import base64
import subprocess
import time

import pytest
from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import NewTopic

from rafka_harness import Broker, free_port, hermetic_env, rafka_bin, unique_topic, wait_until

CLI_TIMEOUT_S = 30
ERROR_PREFIX = "Error while executing topic command : "


def rafka_topics(bootstrap: str | None, *args: str) -> subprocess.CompletedProcess:
    argv = [rafka_bin(), "topics"]
    if bootstrap is not None:
        argv += ["--bootstrap-server", bootstrap]
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                          env=hermetic_env(), stdin=subprocess.DEVNULL)


def ok(result: subprocess.CompletedProcess) -> str:
    """stdout of a run that must succeed."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess) -> str:
    """The error message of a run that must fail the way kafka-topics.sh fails."""
    assert result.returncode == 1, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stdout == "", result.stdout
    assert result.stderr.startswith(ERROR_PREFIX) and result.stderr.endswith("\n"), result.stderr
    return result.stderr[len(ERROR_PREFIX):-1]


def kafka_topic_id(broker: Broker, topic: str) -> str:
    """The topic id as Kafka's tools print it, from confluent-kafka's view of the broker."""
    desc = broker.admin().describe_topics(TopicCollection([topic]))[topic].result(timeout=15)
    uid = desc.topic_id
    raw = (uid.get_most_significant_bits() & (2**64 - 1)).to_bytes(8, "big") + \
          (uid.get_least_significant_bits() & (2**64 - 1)).to_bytes(8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def partition_count(broker: Broker, topic: str) -> int:
    return len(broker.admin().list_topics(topic=topic, timeout=10).topics[topic].partitions)


def test_create_with_config_then_describe_prints_kafkas_layout(broker: Broker):
    topic = unique_topic("cli")
    out = ok(rafka_topics(broker.bootstrap, "--create", "--topic", topic, "--partitions", "3",
                          "--replication-factor", "1", "--config", "retention.ms=3600000",
                          "--config", "cleanup.policy=delete"))
    assert out == f"Created topic {topic}.\n"

    topic_id = kafka_topic_id(broker, topic)
    assert len(topic_id) == 22
    expected = (
        f"Topic: {topic}\tTopicId: {topic_id}\tPartitionCount: 3\tReplicationFactor: 1\t"
        f"Configs: cleanup.policy=delete,retention.ms=3600000\n"
        + "".join(f"\tTopic: {topic}\tPartition: {p}\tLeader: 1\tReplicas: 1\tIsr: 1\t"
                  f"Elr: N/A\tLastKnownElr: N/A\n" for p in range(3))
    )
    assert ok(rafka_topics(broker.bootstrap, "--describe", "--topic", topic)) == expected


def test_describe_without_a_topic_shows_every_topic_sorted(broker: Broker):
    names = sorted(unique_topic(p) for p in ("b", "a"))
    for name in reversed(names):
        ok(rafka_topics(broker.bootstrap, "--create", "--topic", name, "--partitions", "1"))
    out = ok(rafka_topics(broker.bootstrap, "--describe"))
    topic_lines = [line for line in out.splitlines() if line.startswith("Topic: ")]
    assert [line.split("\t")[0] for line in topic_lines] == [f"Topic: {n}" for n in names]
    # Created without --config: nothing overridden.
    assert all(line.endswith("\tConfigs: ") for line in topic_lines), topic_lines


def test_create_without_counts_uses_the_broker_defaults(broker_factory):
    broker = broker_factory(overrides={"num.partitions": "4"})
    topic = unique_topic("defaults")
    ok(rafka_topics(broker.bootstrap, "--create", "--topic", topic))
    first = ok(rafka_topics(broker.bootstrap, "--describe", "--topic", topic)).splitlines()[0]
    assert "\tPartitionCount: 4\tReplicationFactor: 1\t" in first, first
    assert partition_count(broker, topic) == 4


def test_list_prints_every_topic_sorted(broker: Broker):
    created = [unique_topic(p) for p in ("zeta", "alpha", "mid")]
    for name in created:
        ok(rafka_topics(broker.bootstrap, "--create", "--topic", name))
    listed = ok(rafka_topics(broker.bootstrap, "--list")).splitlines()
    assert listed == sorted(listed)
    assert set(created) <= set(listed)
    assert set(listed) == set(broker.admin().list_topics(timeout=10).topics)


def test_alter_raises_the_partition_count(broker: Broker):
    topic = unique_topic("alter")
    ok(rafka_topics(broker.bootstrap, "--create", "--topic", topic, "--partitions", "2"))
    assert ok(rafka_topics(broker.bootstrap, "--alter", "--topic", topic, "--partitions", "5")) == ""
    wait_until(lambda: partition_count(broker, topic) == 5, 10, message="5 partitions in Metadata")
    described = ok(rafka_topics(broker.bootstrap, "--describe", "--topic", topic)).splitlines()
    assert "\tPartitionCount: 5\t" in described[0]
    assert [line.split("\t")[2] for line in described[1:]] == [f"Partition: {p}" for p in range(5)]


def test_alter_cannot_shrink_a_topic(broker: Broker):
    topic = unique_topic("shrink")
    ok(rafka_topics(broker.bootstrap, "--create", "--topic", topic, "--partitions", "3"))
    message = failed(rafka_topics(broker.bootstrap, "--alter", "--topic", topic, "--partitions", "2"))
    assert "3" in message and "2" in message, message
    assert partition_count(broker, topic) == 3


def test_delete_removes_the_topic(broker: Broker):
    topic = unique_topic("delete")
    ok(rafka_topics(broker.bootstrap, "--create", "--topic", topic))
    assert ok(rafka_topics(broker.bootstrap, "--delete", "--topic", topic)) == ""
    wait_until(lambda: topic not in broker.admin().list_topics(timeout=5).topics, 10,
               message=f"{topic} to leave Metadata")
    assert topic not in ok(rafka_topics(broker.bootstrap, "--list")).splitlines()
    # Deleting it again is Kafka's "does not exist" error, unless --if-exists.
    assert failed(rafka_topics(broker.bootstrap, "--delete", "--topic", topic)) == \
        f"Topic '{topic}' does not exist as expected"
    assert ok(rafka_topics(broker.bootstrap, "--delete", "--topic", topic, "--if-exists")) == ""


def test_describing_a_missing_topic_fails(broker: Broker):
    topic = unique_topic("missing")
    assert failed(rafka_topics(broker.bootstrap, "--describe", "--topic", topic)) == \
        f"Topic '{topic}' does not exist as expected"


def test_duplicate_create_fails_with_kafkas_message(broker: Broker):
    topic = unique_topic("dup")
    ok(rafka_topics(broker.bootstrap, "--create", "--topic", topic, "--partitions", "2"))
    assert failed(rafka_topics(broker.bootstrap, "--create", "--topic", topic)) == \
        f"Topic '{topic}' already exists."
    assert ok(rafka_topics(broker.bootstrap, "--create", "--topic", topic, "--if-not-exists")) == ""
    assert partition_count(broker, topic) == 2


def test_invalid_topic_name_fails_and_creates_nothing(broker: Broker):
    before = set(broker.admin().list_topics(timeout=10).topics)
    message = failed(rafka_topics(broker.bootstrap, "--create", "--topic", "bad name!"))
    assert "bad name!" in message, message
    assert set(broker.admin().list_topics(timeout=10).topics) == before


def test_replication_factor_errors_carry_the_brokers_message(broker: Broker):
    # What the broker says, as an independent client receives it.
    refused = broker.admin().create_topics([NewTopic(unique_topic("rf"), 1, 3)], request_timeout=15)
    (future,) = refused.values()
    with pytest.raises(KafkaException) as broker_error:
        future.result(timeout=20)
    broker_message = broker_error.value.args[0].str()

    topic = unique_topic("rf")
    assert failed(rafka_topics(broker.bootstrap, "--create", "--topic", topic,
                               "--replication-factor", "3")) == broker_message
    assert topic not in broker.admin().list_topics(timeout=10).topics


def test_an_unreachable_bootstrap_server_is_named_quickly():
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    message = failed(rafka_topics(dead, "--list"))
    assert dead in message, message
    assert time.monotonic() - started < 15


def test_the_first_answering_bootstrap_server_is_used(broker: Broker):
    dead = f"127.0.0.1:{free_port()}"
    topic = unique_topic("boot")
    ok(rafka_topics(f"{dead},{broker.bootstrap}", "--create", "--topic", topic))
    assert topic in ok(rafka_topics(f"{dead},{broker.bootstrap}", "--list")).splitlines()


@pytest.mark.parametrize("args, message", [
    ([], "Command must include exactly one action: --list, --describe, --create, --alter or --delete"),
    (["--list", "--describe"],
     "Command must include exactly one action: --list, --describe, --create, --alter or --delete"),
    (["--create"], 'Missing required argument "[topic]"'),
    (["--alter", "--topic", "t"], 'Missing required argument "[partitions]"'),
    (["--list", "--partitions", "3"], 'Option "[partitions]" can\'t be used with option "[list]"'),
    (["--create", "--topic", "t", "--partitions", "0"], "The partitions must be greater than 0"),
])
def test_usage_errors_exit_1_before_connecting(args: list[str], message: str):
    # Nothing listens on this address: a usage error must not even try to connect.
    result = rafka_topics(f"127.0.0.1:{free_port()}", *args)
    assert result.returncode == 1, result
    assert result.stderr.splitlines()[0] == message, result.stderr


def test_help_documents_every_flag():
    result = subprocess.run([rafka_bin(), "topics", "--help"], capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_S, env=hermetic_env())
    assert result.returncode == 0, result.stderr
    for flag in ("--bootstrap-server", "--create", "--list", "--describe", "--alter", "--delete", "--topic",
                 "--partitions", "--replication-factor", "--config", "--if-exists", "--if-not-exists",
                 "--exclude-internal"):
        assert flag in result.stdout, f"{flag} missing from --help:\n{result.stdout}"
