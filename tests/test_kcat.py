"""kcat from Debian (librdkafka 2.0.2, an old client) against rafka."""

from __future__ import annotations

import json
import subprocess

from rafka_harness import create_topic, require_tool, unique_topic

KCAT_TIMEOUT_S = 30


def kcat(broker, *args: str, stdin: str | None = None) -> str:
    cmd = [require_tool("kcat"), "-b", broker.bootstrap, "-X", "broker.address.family=v4", *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=KCAT_TIMEOUT_S)
    assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc.stdout


def test_kcat_metadata_lists_broker_and_topics(broker):
    topic = unique_topic("kcat-md")
    create_topic(broker, topic, partitions=2)

    out = kcat(broker, "-L")

    assert " 1 brokers:" in out, out
    assert f"broker 1 at 127.0.0.1:{broker.port}" in out, out
    assert f'topic "{topic}" with 2 partitions:' in out, out
    assert "partition 0, leader 1, replicas: 1, isrs: 1" in out, out
    assert "partition 1, leader 1, replicas: 1, isrs: 1" in out, out


def test_kcat_produces_keyed_lines_from_stdin_and_consumes_them_back(broker):
    topic = unique_topic("kcat-pc")
    lines = [f"key-{i}:value number {i}" for i in range(25)]

    kcat(broker, "-P", "-t", topic, "-K:", stdin="\n".join(lines) + "\n")
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k:%s\n")

    assert out.splitlines() == lines


def test_kcat_consume_reports_offsets_and_partition(broker):
    topic = unique_topic("kcat-off")
    kcat(broker, "-P", "-t", topic, stdin="a\nb\nc\n")

    out = kcat(broker, "-C", "-t", topic, "-o", "1", "-e", "-f", "%p/%o=%s\n")

    assert out.splitlines() == ["0/1=b", "0/2=c"]


def test_kcat_metadata_json_parses_and_names_the_broker(broker):
    topic = unique_topic("kcat-json")
    create_topic(broker, topic, partitions=3)

    doc = json.loads(kcat(broker, "-L", "-J"))

    assert doc["brokers"] == [{"id": 1, "name": f"127.0.0.1:{broker.port}"}]
    (t,) = [t for t in doc["topics"] if t["topic"] == topic]
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    for p in t["partitions"]:
        assert p["leader"] == 1
        assert p["replicas"] == [{"id": 1}]
        assert p["isrs"] == [{"id": 1}]
