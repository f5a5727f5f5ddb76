"""Topic and config administration with the confluent-kafka AdminClient."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewPartitions, NewTopic, ResourceType)

from rafka_harness import Delivery, create_topic, flush_all, unique_topic, wait_until

TIMEOUTS = dict(request_timeout=15)


def create_error(broker, topic: NewTopic) -> KafkaError:
    futures = broker.admin().create_topics([topic], operation_timeout=10, **TIMEOUTS)
    with pytest.raises(KafkaException) as exc_info:
        futures[topic.topic].result(timeout=20)
    return exc_info.value.args[0]


def describe_topic_configs(broker, topic: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    futures = broker.admin().describe_configs([resource], **TIMEOUTS)
    return futures[resource].result(timeout=20)


def cfg(entry: ConfigEntry) -> tuple[str | None, ConfigSource]:
    """(value, source) of a described config entry; the client hands sources back as ints."""
    source = entry.source if isinstance(entry.source, ConfigSource) else ConfigSource(entry.source)
    return entry.value, source


def incremental_alter(broker, topic: str, *entries: ConfigEntry) -> None:
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
    futures = broker.admin().incremental_alter_configs([resource], **TIMEOUTS)
    futures[resource].result(timeout=20)


def partition_count(broker, topic: str) -> int:
    return len(broker.admin().list_topics(topic=topic, timeout=10).topics[topic].partitions)


# --------------------------------------------------------------------------- create / list


def test_created_topic_is_listed_with_its_partitions_led_by_node_1(broker):
    topic = unique_topic("create")
    futures = broker.admin().create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1, config={"retention.ms": "3600000"})],
        operation_timeout=10, **TIMEOUTS)
    assert futures[topic].result(timeout=20) is None

    md = wait_until(lambda: broker.admin().list_topics(timeout=5).topics.get(topic), 10,
                    message=f"{topic} in list_topics")
    assert md.error is None
    assert sorted(md.partitions) == [0, 1, 2]
    for p in md.partitions.values():
        assert p.error is None
        assert (p.leader, p.replicas, p.isrs) == (1, [1], [1]), f"partition {p.id}"


def test_create_topic_with_default_partition_count_uses_num_partitions(broker_factory):
    broker = broker_factory(overrides={"num.partitions": "3"})
    topic = unique_topic("default-parts")
    futures = broker.admin().create_topics([NewTopic(topic)], operation_timeout=10, **TIMEOUTS)
    futures[topic].result(timeout=20)
    assert partition_count(broker, topic) == 3


def test_create_duplicate_topic_fails_with_topic_already_exists(broker):
    topic = unique_topic("dup")
    create_topic(broker, topic, partitions=2)

    err = create_error(broker, NewTopic(topic, num_partitions=2, replication_factor=1))

    assert err.code() == KafkaError.TOPIC_ALREADY_EXISTS, str(err)
    assert partition_count(broker, topic) == 2


@pytest.mark.parametrize("name", ["bad/name", "..", "x" * 250], ids=["slash", "dotdot", "250-chars"])
def test_create_topic_with_invalid_name_fails_with_invalid_topic_exception(broker, name):
    err = create_error(broker, NewTopic(name, num_partitions=1, replication_factor=1))

    assert err.code() == KafkaError.TOPIC_EXCEPTION, str(err)  # 17 INVALID_TOPIC_EXCEPTION
    assert name not in broker.admin().list_topics(timeout=10).topics


def test_create_topic_with_invalid_config_value_fails_with_invalid_config(broker):
    topic = unique_topic("bad-config")
    err = create_error(broker, NewTopic(topic, num_partitions=1, replication_factor=1,
                                        config={"retention.ms": "not-a-number"}))

    assert err.code() == KafkaError.INVALID_CONFIG, str(err)
    assert topic not in broker.admin().list_topics(timeout=10).topics


def test_create_topic_with_an_unknown_cleanup_policy_fails_with_invalid_config(broker):
    topic = unique_topic("shred")
    err = create_error(broker, NewTopic(topic, num_partitions=1, replication_factor=1,
                                        config={"cleanup.policy": "compact,shred"}))

    assert err.code() == KafkaError.INVALID_CONFIG, str(err)
    assert "shred" in str(err), str(err)


def test_create_topic_with_replication_factor_above_broker_count_fails(broker):
    topic = unique_topic("rf3")
    err = create_error(broker, NewTopic(topic, num_partitions=1, replication_factor=3))

    assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR, str(err)  # 38
    assert topic not in broker.admin().list_topics(timeout=10).topics


def test_create_topic_validate_only_creates_nothing(broker):
    topic = unique_topic("validate-only")
    futures = broker.admin().create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)],
                                           validate_only=True, operation_timeout=10, **TIMEOUTS)
    assert futures[topic].result(timeout=20) is None

    assert topic not in broker.admin().list_topics(timeout=10).topics


# --------------------------------------------------------------------------- configs


def test_describe_configs_of_unknown_topic_fails_with_unknown_topic_or_partition(broker):
    with pytest.raises(KafkaException) as exc_info:
        describe_topic_configs(broker, unique_topic("nope"))
    assert exc_info.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_configs_shows_override_as_dynamic_topic_config_and_defaults(broker):
    topic = unique_topic("describe")
    create_topic(broker, topic, config={"retention.ms": "3600000"})

    entries = describe_topic_configs(broker, topic)

    assert cfg(entries["retention.ms"]) == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert not entries["retention.ms"].is_default
    # Kafka's defaults, not set anywhere in this broker's configuration.
    for name, value in {"cleanup.policy": "delete", "retention.bytes": "-1",
                        "min.insync.replicas": "1", "flush.messages": "9223372036854775807",
                        "flush.ms": "9223372036854775807"}.items():
        assert name in entries, f"{name} missing from DescribeConfigs"
        assert cfg(entries[name]) == (value, ConfigSource.DEFAULT_CONFIG), name
    for name in ("segment.bytes", "max.message.bytes", "message.timestamp.type"):
        assert name in entries, f"{name} missing from DescribeConfigs"


def test_incremental_alter_configs_set_is_seen_by_describe(broker):
    topic = unique_topic("alter")
    create_topic(broker, topic, config={"retention.ms": "3600000"})

    incremental_alter(broker, topic,
                      ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
                      ConfigEntry("max.message.bytes", "50000", incremental_operation=AlterConfigOpType.SET))

    entries = describe_topic_configs(broker, topic)
    assert cfg(entries["retention.ms"]) == ("7200000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert cfg(entries["max.message.bytes"]) == ("50000", ConfigSource.DYNAMIC_TOPIC_CONFIG)


def test_incremental_alter_configs_delete_restores_default(broker):
    topic = unique_topic("alter-del")
    create_topic(broker, topic, config={"retention.bytes": "123456"})

    incremental_alter(broker, topic,
                      ConfigEntry("retention.bytes", None, incremental_operation=AlterConfigOpType.DELETE))

    entry = describe_topic_configs(broker, topic)["retention.bytes"]
    assert cfg(entry) == ("-1", ConfigSource.DEFAULT_CONFIG)


@pytest.mark.parametrize("name,value", [("cleanup.policy", "shred"), ("retention.ms", "soon"),
                                        ("message.timestamp.type", "WallClock"), ("flush.messages", "0"),
                                        ("flush.ms", "-1")])
def test_incremental_alter_configs_with_invalid_value_fails_with_invalid_config(broker, name, value):
    topic = unique_topic("alter-bad")
    create_topic(broker, topic)
    before = describe_topic_configs(broker, topic)[name].value

    with pytest.raises(KafkaException) as exc_info:
        incremental_alter(broker, topic,
                          ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET))

    err = exc_info.value.args[0]
    assert err.code() == KafkaError.INVALID_CONFIG, str(err)
    assert describe_topic_configs(broker, topic)[name].value == before


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")  # the legacy API is the point
def test_legacy_alter_configs_replaces_the_topic_overrides(broker):
    topic = unique_topic("alter-legacy")
    create_topic(broker, topic, config={"retention.ms": "3600000"})
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.bytes": "999999"})

    futures = broker.admin().alter_configs([resource], **TIMEOUTS)
    futures[resource].result(timeout=20)

    entries = describe_topic_configs(broker, topic)
    assert cfg(entries["retention.bytes"]) == ("999999", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    # AlterConfigs (non-incremental) replaces the whole set: retention.ms is back to its default.
    assert cfg(entries["retention.ms"])[1] == ConfigSource.DEFAULT_CONFIG


def test_broker_message_max_bytes_is_the_topic_default_described_as_static_broker_config(broker_factory):
    broker = broker_factory(overrides={"message.max.bytes": "3000"})
    topic = unique_topic("broker-default")
    create_topic(broker, topic)

    assert cfg(describe_topic_configs(broker, topic)["max.message.bytes"]) == \
        ("3000", ConfigSource.STATIC_BROKER_CONFIG)
    producer = broker.producer({"compression.type": "none", "linger.ms": 0, "retries": 0})
    d = Delivery()
    producer.produce(topic, value=b"x" * 5000, on_delivery=d.callback)
    flush_all(producer)
    assert [e.code() for e, _ in d.failed] == [KafkaError.MSG_SIZE_TOO_LARGE], [str(e) for e, _ in d.failed]


def test_altered_max_message_bytes_takes_effect_without_restart(broker):
    topic = unique_topic("alter-effect")
    create_topic(broker, topic)
    producer = broker.producer({"compression.type": "none", "linger.ms": 0, "retries": 0})
    before = Delivery()
    producer.produce(topic, value=b"x" * 5000, on_delivery=before.callback)
    flush_all(producer)
    assert before.failed == []

    incremental_alter(broker, topic,
                      ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET))
    after = Delivery()
    producer.produce(topic, value=b"x" * 5000, on_delivery=after.callback)
    flush_all(producer)

    assert [e.code() for e, _ in after.failed] == [KafkaError.MSG_SIZE_TOO_LARGE], \
        [str(e) for e, _ in after.failed]


# --------------------------------------------------------------------------- partitions


def test_create_partitions_grows_topic_and_new_partition_accepts_writes(broker):
    topic = unique_topic("grow")
    create_topic(broker, topic, partitions=1)

    futures = broker.admin().create_partitions([NewPartitions(topic, 3)], operation_timeout=10, **TIMEOUTS)
    futures[topic].result(timeout=20)

    assert wait_until(lambda: partition_count(broker, topic) == 3, 10, message="3 partitions")
    producer = broker.producer({"topic.metadata.refresh.interval.ms": 500})
    d = Delivery()
    producer.produce(topic, partition=2, value=b"in the new partition", on_delivery=d.callback)
    flush_all(producer)
    assert d.failed == []
    assert [(m.partition(), m.offset()) for m in d.ok] == [(2, 0)]


@pytest.mark.parametrize("new_count", [2, 3], ids=["shrink", "same"])
def test_create_partitions_not_growing_fails_with_invalid_partitions(broker, new_count):
    topic = unique_topic("shrink")
    create_topic(broker, topic, partitions=3)

    futures = broker.admin().create_partitions([NewPartitions(topic, new_count)],
                                               operation_timeout=10, **TIMEOUTS)
    with pytest.raises(KafkaException) as exc_info:
        futures[topic].result(timeout=20)

    err = exc_info.value.args[0]
    assert err.code() == KafkaError.INVALID_PARTITIONS, str(err)
    assert partition_count(broker, topic) == 3


# --------------------------------------------------------------------------- delete


def test_deleted_topic_is_gone_and_cannot_be_produced_to_without_auto_create(broker_factory):
    broker = broker_factory(overrides={"auto.create.topics.enable": "false"})
    topic = unique_topic("delete")
    create_topic(broker, topic, partitions=2)
    before = Delivery()
    producer = broker.producer()
    producer.produce(topic, value=b"before delete", on_delivery=before.callback)
    flush_all(producer)
    assert before.failed == [] and len(before.ok) == 1

    futures = broker.admin().delete_topics([topic], operation_timeout=10, **TIMEOUTS)
    futures[topic].result(timeout=20)

    wait_until(lambda: topic not in broker.admin().list_topics(timeout=5).topics, 10,
               message=f"{topic} to disappear from list_topics")
    fresh = broker.producer({"topic.metadata.propagation.max.ms": 1000, "message.timeout.ms": 10000})
    after = Delivery()
    fresh.produce(topic, value=b"after delete", on_delivery=after.callback)
    flush_all(fresh, timeout=20)
    assert after.ok == []
    codes = [e.code() for e, _ in after.failed]
    # librdkafka reports the broker's UNKNOWN_TOPIC_OR_PARTITION either as is or as its local _UNKNOWN_TOPIC;
    # a timeout (_MSG_TIMED_OUT) would mean the broker never said "unknown".
    assert codes in ([KafkaError.UNKNOWN_TOPIC_OR_PART], [KafkaError._UNKNOWN_TOPIC]), \
        f"got {[str(e) for e, _ in after.failed]}"
    assert topic not in broker.admin().list_topics(timeout=5).topics


def test_recreated_topic_starts_empty(broker):
    topic = unique_topic("recreate")
    create_topic(broker, topic, partitions=1)
    producer = broker.producer()
    old = Delivery()
    for i in range(5):
        producer.produce(topic, value=f"old {i}".encode(), on_delivery=old.callback)
    flush_all(producer)
    assert len(old.ok) == 5
    broker.admin().delete_topics([topic], operation_timeout=10, **TIMEOUTS)[topic].result(timeout=20)
    wait_until(lambda: topic not in broker.admin().list_topics(timeout=5).topics, 10,
               message=f"{topic} to disappear")

    create_topic(broker, topic, partitions=1)

    consumer = broker.consumer()
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 0)
    finally:
        consumer.close()
    fresh = broker.producer()
    new = Delivery()
    fresh.produce(topic, value=b"new", on_delivery=new.callback)
    flush_all(fresh)
    assert [m.offset() for m in new.ok] == [0]


def test_delete_unknown_topic_fails_with_unknown_topic_or_partition(broker):
    topic = unique_topic("never-existed")
    futures = broker.admin().delete_topics([topic], operation_timeout=10, **TIMEOUTS)
    with pytest.raises(KafkaException) as exc_info:
        futures[topic].result(timeout=20)
    assert exc_info.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


# --------------------------------------------------------------------------- cluster


def test_describe_cluster_returns_node_1_and_a_cluster_id(broker):
    result = broker.admin().describe_cluster(**TIMEOUTS).result(timeout=20)

    assert isinstance(result.cluster_id, str) and result.cluster_id, f"cluster id {result.cluster_id!r}"
    assert [(n.id, n.host, n.port) for n in result.nodes] == [(1, "127.0.0.1", broker.port)]
    assert result.controller is not None and result.controller.id == 1


def test_cluster_id_is_the_same_in_metadata_and_survives_restart(broker):
    first = broker.admin().describe_cluster(**TIMEOUTS).result(timeout=20).cluster_id
    assert broker.admin().list_topics(timeout=10).cluster_id == first

    broker.restart()

    assert broker.admin().describe_cluster(**TIMEOUTS).result(timeout=20).cluster_id == first
