"""Deployment: the container image, the compose cluster with its fault-tolerance demo,
the Kubernetes manifests, and the start-up of one pod from the manifest's environment.

- The image test builds the FROM-scratch image from $RAFKA_BIN (which must be static,
  as scripts/test.sh builds it) with scripts/build-image.sh, then runs
  deploy/demo/fault-tolerance.sh against deploy/docker-compose.yml: the demo kills a
  partition leader's container under load and must end with nothing lost or
  duplicated, every node exiting 0 on SIGTERM. Docker is required: without it the
  test fails, it is never skipped.
- The manifests under deploy/k8s/ are validated offline with kubernetes-validate in
  strict mode, and checked against each other (service names, quorum size, probes).
- The pod test starts `rafka server` with the environment deploy/k8s/statefulset.yaml
  gives pod rafka-2 in namespace prod (listeners moved to loopback, and the quorum
  reduced to this one node, whose peers' names do not resolve here) and checks with
  a real client that it is node 2 advertising its own headless-service name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from confluent_kafka.admin import AdminClient

from rafka_harness import StopWaiting, free_ports, hermetic_env, port_accepts, rafka_bin, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The oldest version the optional external patch supports (the pod-index label) and
# the newest kubernetes-validate bundles.
K8S_VERSIONS = ["1.28.0", "1.37.0"]
IMAGE_CONFIG = DEPLOY / "image" / "rootfs" / "etc" / "rafka" / "server.properties"


def require_docker() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail("docker is not on PATH: the deployment tests need the Docker engine", pytrace=False)
    info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        pytest.fail(f"the Docker engine does not answer: {info.stderr.strip()}", pytrace=False)
    return docker


# --------------------------------------------------------------------------- image + compose + demo


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_image_builds_and_the_compose_cluster_survives_losing_a_leader(record_timing, tmp_path: Path):
    docker = require_docker()
    binary = rafka_bin()
    tag = f"rafka:deploy-test-{os.getpid()}"
    project = f"rafka-deploy-test-{os.getpid()}"
    try:
        started = time.monotonic()
        build = subprocess.run(["bash", str(ROOT / "scripts" / "build-image.sh"), "--binary", binary, "--tag", tag],
                               capture_output=True, text=True, timeout=600)
        assert build.returncode == 0, f"build-image.sh failed:\n{build.stdout}\n{build.stderr}"
        record_timing("image build (build-image.sh --binary)", time.monotonic() - started)
        print(build.stdout)

        config = json.loads(subprocess.check_output([docker, "image", "inspect", tag]))[0]["Config"]
        assert config["User"] == "10001:10001", "the image must run as the non-root user"
        assert config["Entrypoint"] == ["rafka"]
        assert_image_holds_only_the_binary(docker, tag, tmp_path)

        started = time.monotonic()
        demo = subprocess.run(
            ["bash", str(DEPLOY / "demo" / "fault-tolerance.sh")],
            env={**hermetic_env(), "RAFKA_IMAGE": tag, "COMPOSE_PROJECT": project, "PYTHON": sys.executable,
                 # Free host ports rather than the fixed 19092/29092/39092, which another
                 # process may hold (39092 is in the ephemeral port range).
                 **{f"RAFKA_EXTERNAL_PORT_{i}": str(p) for i, p in enumerate(free_ports(3), start=1)}},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=800)
        record_timing("fault-tolerance demo, compose up to down -v", time.monotonic() - started)
        print(demo.stdout)
        assert demo.returncode == 0, f"the demo failed (exit {demo.returncode}):\n{demo.stdout[-6000:]}"
        verdict = re.search(r"VERDICT: produced=(\d+) acknowledged=(\d+) consumed=(\d+) lost=(\d+) "
                            r"duplicated=(\d+) -> PASS", demo.stdout)
        assert verdict, demo.stdout[-3000:]
        produced, acked, consumed, lost, duplicated = map(int, verdict.groups())
        assert lost == 0 and duplicated == 0
        assert acked > 1000 and consumed >= acked, verdict.group(0)
        for label, pattern in [("compose up -d to all healthy", r"all three nodes healthy ([\d.]+) s"),
                               ("kill to new leader seen", r"([\d.]+) s after the kill"),
                               ("restart to back in every ISR", r"back in every ISR ([\d.]+) s")]:
            m = re.search(pattern, demo.stdout)
            assert m, f"no '{label}' line in the demo output"
            record_timing(label, float(m.group(1)))
        pause = re.search(r"longest gap between acknowledgements (\d+) ms", demo.stdout)
        assert pause, demo.stdout[-3000:]
        record_timing("failover pause (longest gap between acks)", int(pause.group(1)) / 1000)
    finally:
        compose_down(docker, project)
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)


def assert_image_holds_only_the_binary(docker: str, tag: str, tmp_path: Path) -> None:
    """The exported file system holds one executable, rafka, plus its /etc files (the
    empty files Docker itself adds, /etc/hosts and the like, aside)."""
    container = subprocess.check_output([docker, "create", tag], text=True).strip()
    try:
        tar = tmp_path / "image.tar"
        subprocess.run([docker, "export", "-o", str(tar), container], check=True)
    finally:
        subprocess.run([docker, "rm", "-f", "-v", container], capture_output=True)
    with tarfile.open(tar) as t:
        members = {m.name.rstrip("/"): m for m in t.getmembers()}
    executables = [name for name, m in members.items() if m.isfile() and m.size > 0 and m.mode & 0o111]
    assert executables == ["usr/local/bin/rafka"], executables
    assert {"etc/passwd", "etc/group", "etc/rafka/server.properties"} <= members.keys(), sorted(members)
    data_dir = members["var/lib/rafka"]
    assert (data_dir.uid, data_dir.gid) == (10001, 10001), "the data directory must belong to the broker's user"


def compose_down(docker: str, project: str) -> None:
    """Remove whatever the demo left (it cleans up itself; this is the safety net)."""
    compose = [docker, "compose"] if subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0 \
        else [shutil.which("docker-compose") or "docker-compose"]
    subprocess.run([*compose, "-p", project, "-f", str(DEPLOY / "docker-compose.yml"), "down", "-v", "--remove-orphans"],
                   capture_output=True, env={**os.environ, "RAFKA_IMAGE": "unused"})


# --------------------------------------------------------------------------- Kubernetes manifests


def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every full resource under deploy/k8s/, by file (patches excluded)."""
    found = {}
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name.endswith("-patch.yaml"):
            continue
        found[str(path.relative_to(ROOT))] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    for docs in manifests().values():
        for d in docs:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
    raise AssertionError(f"no {kind} {name} under deploy/k8s")


def strategic_merge(base: Any, patch: Any) -> Any:
    """Enough of kubectl's strategic merge for our patch: maps merge, lists of maps
    with a `name` merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for k, v in patch.items():
            merged[k] = strategic_merge(base[k], v) if k in base else v
        return merged
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in base + patch):
        merged = list(base)
        for item in patch:
            at = next((i for i, x in enumerate(merged) if x["name"] == item["name"]), None)
            if at is None:
                merged.append(item)
            else:
                merged[at] = strategic_merge(merged[at], item)
        return merged
    return patch


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_strictly(version: str):
    found = manifests()
    assert {"deploy/k8s/statefulset.yaml", "deploy/k8s/services.yaml", "deploy/k8s/pdb.yaml"} <= found.keys()
    for path, docs in found.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path}: {doc['kind']} {doc['metadata']['name']} is invalid for Kubernetes {version}: {exc}")
    patched = strategic_merge(resource("StatefulSet", "rafka"),
                              yaml.safe_load((K8S / "external" / "statefulset-patch.yaml").read_text()))
    kubernetes_validate.validate(patched, version, strict=True)
    # Strict mode is on: a misspelt field is refused.
    misspelt = resource("Service", "rafka-headless")
    misspelt["spec"]["publishNotReadyAddress"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, version, strict=True)


def container_env(statefulset: dict[str, Any]) -> list[dict[str, Any]]:
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container["env"]


def test_k8s_manifests_agree_with_each_other():
    sts = resource("StatefulSet", "rafka")
    headless = resource("Service", "rafka-headless")
    pod = sts["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}

    assert sts["spec"]["serviceName"] == "rafka-headless"
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["podManagementPolicy"] == "Parallel", "OrderedReady would wait forever for a quorum"
    assert int(env["KAFKA_RAFKA_QUORUM_VOTERS_COUNT"]) == sts["spec"]["replicas"]
    assert env["KAFKA_RAFKA_QUORUM_VOTERS_PATTERN"].startswith(f"{sts['metadata']['name']}-{{id}}.rafka-headless.")
    assert "KAFKA_NODE_ID" not in env, "node.id comes from the pod's ordinal"
    for labels_of in (headless["spec"]["selector"], resource("Service", "rafka")["spec"]["selector"],
                      resource("PodDisruptionBudget", "rafka")["spec"]["selector"]["matchLabels"]):
        assert labels_of.items() <= pod["metadata"]["labels"].items()
    assert resource("PodDisruptionBudget", "rafka")["spec"]["maxUnavailable"] == 1
    assert container["readinessProbe"]["exec"]["command"][:2] == ["rafka", "healthcheck"]
    assert "tcpSocket" in container["livenessProbe"]
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 30
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    assert env["KAFKA_LOG_DIRS"].startswith(mounts["data"] + "/")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


# --------------------------------------------------------------------------- a pod's start-up


def pod_environment(pod_name: str, namespace: str) -> dict[str, str]:
    """The variables deploy/k8s/statefulset.yaml gives a pod (downward API filled in)."""
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    env = {}
    for e in container_env(resource("StatefulSet", "rafka")):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def loopback_pod_env(tmp_path: Path, client_port: int, grpc_port: int) -> dict[str, str]:
    env = pod_environment("rafka-2", "prod")
    # What differs from a real pod: bind to loopback, keep data in the test's
    # directory, and let this node alone be the quorum (rafka-0 and rafka-1's names do
    # not resolve here). Advertised listeners and the node id stay as the pod derives them.
    env["KAFKA_LISTENERS"] = f"CLIENT://127.0.0.1:{client_port},BROKER://127.0.0.1:{grpc_port}"
    del env["KAFKA_RAFKA_QUORUM_VOTERS_COUNT"], env["KAFKA_RAFKA_QUORUM_VOTERS_PATTERN"]
    env["KAFKA_CONTROLLER_QUORUM_VOTERS"] = f"2@127.0.0.1:{grpc_port}"
    env["KAFKA_LOG_DIRS"] = str(tmp_path / "data")
    env["NO_COLOR"] = "1"
    return hermetic_env(env)


def server_argv() -> list[str]:
    """The pod's command line, with the image's server.properties from the repository."""
    (container,) = resource("StatefulSet", "rafka")["spec"]["template"]["spec"]["containers"]
    args = [str(IMAGE_CONFIG) if a == "/etc/rafka/server.properties" else a for a in container["args"]]
    return [rafka_bin(), *args]


def healthcheck(env: dict[str, str], port: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([rafka_bin(), "healthcheck", "--bootstrap-server", f"127.0.0.1:{port}", "--timeout-ms", "2000",
                           *extra], env=env, capture_output=True, text=True, timeout=20)


@pytest.mark.timeout(90)
def test_a_pod_is_the_node_of_its_ordinal_and_advertises_its_own_name(tmp_path: Path, record_timing):
    client_port, grpc_port = free_ports(2)
    env = loopback_pod_env(tmp_path, client_port, grpc_port)
    log_path = tmp_path / "rafka.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(server_argv(), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True)
    try:
        started = time.monotonic()
        def listening() -> bool:
            if proc.poll() is not None:
                raise StopWaiting(f"rafka exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            return port_accepts(client_port)

        wait_until(listening, 30,
                   message=f"the pod's client listener on 127.0.0.1:{client_port}")
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{client_port}", "broker.address.family": "v4"})

        def brokers():
            if proc.poll() is not None:
                raise StopWaiting(f"rafka exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            listed = admin.list_topics(timeout=5).brokers
            return listed if 2 in listed else None

        listed = wait_until(brokers, 30, message="Metadata to list node 2")
        record_timing("pod start-up to Metadata listing itself", time.monotonic() - started)
        assert list(listed) == [2]
        assert listed[2].host == "rafka-2.rafka-headless.prod.svc.cluster.local"
        assert listed[2].port == 9092

        # The readiness probe, run with the pod's environment, checks node 2.
        ok = healthcheck(env, client_port)
        assert ok.returncode == 0, ok.stderr
        assert "node 2" in ok.stdout and ok.stdout.count("\n") == 1, ok.stdout
        wrong = healthcheck(env, client_port, "--node-id", "1")
        assert wrong.returncode == 1 and "node 1" in wrong.stderr and wrong.stderr.count("\n") == 1, wrong.stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                pytest.fail("rafka did not stop within 30 s of SIGTERM")
    assert proc.returncode == 0, f"exit code {proc.returncode} after SIGTERM:\n{log_path.read_text()[-3000:]}"
    down = healthcheck(env, client_port)
    assert down.returncode == 1 and down.stderr.startswith("unhealthy: ") and down.stderr.count("\n") == 1, down.stderr


def test_a_pod_without_its_namespace_variable_stops_naming_it(tmp_path: Path):
    client_port, grpc_port = free_ports(2)
    env = loopback_pod_env(tmp_path, client_port, grpc_port)
    del env["POD_NAMESPACE"]
    proc = subprocess.run(server_argv(), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=15, cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "POD_NAMESPACE" in lines[0] and "advertised.listeners" in lines[0], lines[0]
