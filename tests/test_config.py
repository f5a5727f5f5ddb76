"""Start-up configuration: server.properties < KAFKA_* / KAFKA_CFG_* env < --override."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from confluent_kafka import KafkaError

from rafka_harness import Broker, Delivery, flush_all, free_port, hermetic_env, unique_topic, wait_until


def auto_created_partition_count(broker: Broker) -> int:
    """Produce to a new topic (auto-created with num.partitions) and count its partitions."""
    topic = unique_topic("auto")
    producer = broker.producer()
    d = Delivery()
    producer.produce(topic, value=b"x", on_delivery=d.callback)
    flush_all(producer)
    assert d.failed == [], [str(e) for e, _ in d.failed]
    return len(broker.admin().list_topics(topic=topic, timeout=10).topics[topic].partitions)


def advertised(broker: Broker) -> tuple[int, str, int]:
    """(node id, host, port) of the one broker that Metadata reports."""
    md = broker.admin().list_topics(timeout=10)
    assert len(md.brokers) == 1, md.brokers
    (b,) = md.brokers.values()
    return b.id, b.host, b.port


# --------------------------------------------------------------------------- invalid and unknown keys


def run_to_exit(b: Broker, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    try:
        proc = subprocess.run(b.argv(), env=hermetic_env(env), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"rafka kept running for 15s; stderr: {exc.stderr!r}")
    return proc, time.monotonic() - started


def assert_one_line_naming(proc: subprocess.CompletedProcess, key: str, value: str) -> None:
    assert proc.returncode != 0, f"exit code 0 with {key}={value}; stderr:\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    assert key in lines[0] and value in lines[0], lines[0]


@pytest.mark.parametrize("key,value", [
    ("num.partitions", "abc"),
    ("num.partitions", "0"),
    ("auto.create.topics.enable", "maybe"),
    ("socket.request.max.bytes", "lots"),
    ("node.id", "one"),
])
def test_invalid_value_exits_nonzero_fast_with_one_line_naming_key_and_value(tmp_path, key, value):
    proc, elapsed = run_to_exit(Broker(tmp_path, overrides={key: value}))

    assert_one_line_naming(proc, key, value)
    assert elapsed < 5, f"took {elapsed:.1f}s to reject {key}={value}"


def test_invalid_value_from_env_is_rejected_the_same_way(tmp_path):
    proc, _ = run_to_exit(Broker(tmp_path), env={"KAFKA_NUM_PARTITIONS": "lots"})
    assert_one_line_naming(proc, "num.partitions", "lots")


def test_invalid_value_from_config_file_is_rejected_the_same_way(tmp_path):
    proc, _ = run_to_exit(Broker(tmp_path, config_text="auto.create.topics.enable=perhaps\n"))
    assert_one_line_naming(proc, "auto.create.topics.enable", "perhaps")


def test_unknown_key_logs_a_warning_naming_it_and_broker_still_starts(broker_factory):
    broker = broker_factory(overrides={"rafka.tests.no.such.key": "42"})

    assert auto_created_partition_count(broker) == 1  # it serves
    lines = [line for line in broker.log_text().splitlines() if "rafka.tests.no.such.key" in line]
    assert lines, "no log line names the unknown key"
    assert any(re.search(r"warn", line, re.IGNORECASE) for line in lines), lines


def test_unknown_key_from_env_is_named_with_kafka_image_name_mapping(broker_factory):
    # Official image convention: '_' -> '.', '__' -> '_', '___' -> '-'.
    broker = broker_factory(env={"KAFKA_RAFKA_TESTS__UNDER___DASH": "1"})

    assert auto_created_partition_count(broker) == 1
    lines = [line for line in broker.log_text().splitlines() if "rafka.tests_under-dash" in line]
    assert lines, "no log line names the unknown key rafka.tests_under-dash"
    assert any(re.search(r"warn", line, re.IGNORECASE) for line in lines), lines


def test_config_file_allows_comments_blank_lines_and_spaces_around_equals(broker_factory):
    broker = broker_factory(config_text="# comment\n! another comment\n\n  num.partitions = 3\n")
    assert auto_created_partition_count(broker) == 3


# --------------------------------------------------------------------------- defaults


def test_defaults_auto_create_topics_with_one_partition(broker):
    assert auto_created_partition_count(broker) == 1


def test_auto_create_disabled_metadata_reports_unknown_topic_or_partition(broker_factory):
    broker = broker_factory(overrides={"auto.create.topics.enable": "false"})
    topic = unique_topic("no-auto")

    # A producer's Metadata request asks for auto-creation; the broker must refuse.
    md = broker.producer().list_topics(topic=topic, timeout=10)

    assert md.topics[topic].error is not None
    assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert topic not in broker.admin().list_topics(timeout=10).topics


def test_node_id_is_reported_as_broker_and_partition_leader(broker_factory):
    broker = broker_factory(overrides={"node.id": "7"})
    topic = unique_topic("node7")
    auto_created = broker.producer()
    d = Delivery()
    auto_created.produce(topic, value=b"x", on_delivery=d.callback)
    flush_all(auto_created)

    md = broker.admin().list_topics(timeout=10)

    assert [(b.id, b.host, b.port) for b in md.brokers.values()] == [(7, "127.0.0.1", broker.port)]
    assert md.topics[topic].partitions[0].leader == 7


# --------------------------------------------------------------------------- precedence


def test_env_advertised_listeners_is_what_metadata_reports(broker_factory):
    port = free_port()
    broker = broker_factory(port=port, overrides={"advertised.listeners": None},
                            env={"KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://localhost:{port}"})

    assert advertised(broker) == (1, "localhost", port)


def test_override_beats_env_for_advertised_listeners(broker_factory):
    port = free_port()
    broker = broker_factory(port=port,  # the default overrides advertise 127.0.0.1
                            env={"KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://localhost:{port}"})

    assert advertised(broker) == (1, "127.0.0.1", port)


def test_config_file_value_is_used(broker_factory):
    broker = broker_factory(config_text="num.partitions=4\n")
    assert auto_created_partition_count(broker) == 4


def test_env_beats_config_file(broker_factory):
    broker = broker_factory(config_text="num.partitions=4\n", env={"KAFKA_NUM_PARTITIONS": "3"})
    assert auto_created_partition_count(broker) == 3


def test_override_beats_env_and_config_file(broker_factory):
    broker = broker_factory(config_text="num.partitions=4\n", env={"KAFKA_NUM_PARTITIONS": "3"},
                            overrides={"num.partitions": "2"})
    assert auto_created_partition_count(broker) == 2


def test_bitnami_kafka_cfg_env_is_honoured(broker_factory):
    broker = broker_factory(env={"KAFKA_CFG_NUM_PARTITIONS": "5"})
    assert auto_created_partition_count(broker) == 5


def test_env_name_with_several_dots_maps_to_its_key(broker_factory):
    broker = broker_factory(env={"KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false"})
    topic = unique_topic("env-no-auto")
    md = broker.producer().list_topics(topic=topic, timeout=10)
    assert md.topics[topic].error is not None
    assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_config_file_can_carry_the_whole_configuration(broker_factory):
    port = free_port()
    broker = broker_factory(port=port, start=False)
    broker.config_path = broker.workdir / "all.properties"
    broker.config_path.write_text(
        "# a complete server.properties\n"
        "node.id=3\n"
        f"listeners=PLAINTEXT://127.0.0.1:{port}\n"
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n"
        f"log.dirs={broker.data_dir}\n"
        "num.partitions=2\n")
    broker.overrides = {}
    broker.start()

    assert advertised(broker) == (3, "127.0.0.1", port)
    assert auto_created_partition_count(broker) == 2
    assert wait_until(lambda: any(broker.data_dir.iterdir()), 5, message="data written under log.dirs")
