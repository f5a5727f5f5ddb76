"""`rafka dev`: the README's one-command local cluster, run as a real process.

The stories: the cluster comes up and says where to connect; a replicated topic
created with `rafka topics` has its partitions and leaders spread over every node;
SIGTERM stops it with exit 0 and no node left behind; the next start on the same data
directory still has the topic; a taken port is refused before anything starts; a node
that dies takes the cluster down with a report naming it.

Each test picks its own range of ports below the kernel's ephemeral range (so ports
the OS hands to other tests never land in it) and bind-tests every port first.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rafka_harness import hermetic_env, rafka_bin, unique_topic, wait_until

BROKERS = 3
GRPC_PORT_OFFSET = 100
# rafka dev waits up to 30 s for a controlled shutdown before SIGKILL; allow the
# margin of its own bookkeeping on a loaded machine.
STOP_GRACE_S = 30.0
STOP_BUDGET_S = STOP_GRACE_S + 10.0
START_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 30

UP_LINE = re.compile(r"^Rafka dev cluster of (\d+) brokers? is up\. Bootstrap servers: (\S+)$")
NODE_LINE = re.compile(r"^  node (\d+): pid (\d+), ")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_base_port(brokers: int = BROKERS) -> int:
    """A base port P with P..P+n-1 and P+100..P+100+n-1 all free right now."""
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    top = min(low, 32768) - GRPC_PORT_OFFSET - brokers
    for _ in range(500):
        base = random.randint(20000, top)
        ports = [base + i for i in range(brokers)] + [base + GRPC_PORT_OFFSET + i for i in range(brokers)]
        if all(can_bind(p) for p in ports):
            return base
    pytest.fail("no free port range found for rafka dev", pytrace=False)


def processes_using(path: Path) -> list[int]:
    """Pids of live (non-zombie) processes whose command line mentions `path`."""
    needle = str(path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def rafka_topics(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([rafka_bin(), "topics", "--bootstrap-server", bootstrap, *args],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=hermetic_env(),
                          stdin=subprocess.DEVNULL)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


class DevRun:
    """One `rafka dev` process; its output is collected line by line as it comes."""

    def __init__(self, data_dir: Path, base_port: int, brokers: int = BROKERS):
        self.data_dir = data_dir
        self.base_port = base_port
        self.brokers = brokers
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [rafka_bin(), "dev", "--brokers", str(brokers), "--data-dir", str(data_dir),
             "--base-port", str(base_port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=hermetic_env(), start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def report(self) -> str:
        """The supervisor's output and the tail of every node's log, for failure messages."""
        parts = [f"--- rafka dev output ---\n{self.output()}"]
        for log in sorted(self.data_dir.glob("node*/rafka.log")):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            parts.append(f"--- {log} (tail) ---\n{tail}")
        return "\n".join(parts)

    def wait_up(self, timeout: float = START_TIMEOUT_S) -> str:
        """Wait for the bootstrap line; return the bootstrap string."""
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"rafka dev exited with {self.proc.returncode} before it was up\n"
                                     f"{self.report()}")
            for line in self.lines:
                m = UP_LINE.match(line)
                if m:
                    return m.group(2)
            return None
        try:
            return wait_until(up, timeout, interval=0.1, message="rafka dev to print its bootstrap line")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.report()}") from None

    def node_pids(self) -> dict[int, int]:
        return {int(m.group(1)): int(m.group(2)) for m in map(NODE_LINE.match, self.lines) if m}

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"rafka dev still running {timeout:.0f}s later\n{self.report()}") from None
        self._reader.join(timeout=5)
        return code

    def terminate_and_wait(self, timeout: float = STOP_BUDGET_S) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        return code, time.monotonic() - started

    def kill_everything(self) -> None:
        """Teardown: whatever is still running of this run, SIGKILLed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pid in processes_using(self.data_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def dev_runs(tmp_path: Path):
    """start(data_dir=None, base_port=None) -> DevRun; everything is killed at teardown."""
    runs: list[DevRun] = []

    def start(data_dir: Path | None = None, base_port: int | None = None) -> DevRun:
        run = DevRun(data_dir or tmp_path / "dev", base_port or free_base_port())
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill_everything()


def describe_partitions(bootstrap: str, topic: str) -> list[dict[str, str]]:
    """The partition lines of `rafka topics --describe` as field dicts."""
    out = ok(rafka_topics(bootstrap, "--describe", "--topic", topic))
    rows = []
    for line in out.splitlines()[1:]:
        fields = dict(f.split(": ", 1) for f in line.strip("\t").split("\t"))
        rows.append(fields)
    return rows


def stop_cleanly(run: DevRun) -> None:
    code, seconds = run.terminate_and_wait()
    print(f"rafka dev stopped in {seconds:.1f}s")
    assert code == 0, f"rafka dev exited with {code} after SIGTERM\n{run.report()}"
    assert seconds < STOP_BUDGET_S
    # Every node finished its controlled shutdown by itself: none needed SIGKILL.
    assert "SIGKILL" not in run.output(), run.report()
    leftovers = processes_using(run.data_dir)
    assert leftovers == [], f"processes still running after rafka dev exited: {leftovers}\n{run.report()}"
    assert all(not pid_alive(pid) for pid in run.node_pids().values())


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_dev_cluster_spreads_a_replicated_topic_and_stops_on_sigterm(dev_runs):
    run = dev_runs()
    bootstrap = run.wait_up()
    assert bootstrap == ",".join(f"127.0.0.1:{run.base_port + i}" for i in range(BROKERS))
    assert sorted(run.node_pids()) == [1, 2, 3]
    assert f"rafka topics --bootstrap-server {bootstrap} --describe" in run.output()

    topic = unique_topic("dev")
    assert ok(rafka_topics(bootstrap, "--create", "--topic", topic, "--replication-factor", "3",
                           "--partitions", "6")) == f"Created topic {topic}.\n"
    partitions = describe_partitions(bootstrap, topic)
    assert [p["Partition"] for p in partitions] == [str(i) for i in range(6)]
    for p in partitions:
        assert sorted(p["Replicas"].split(",")) == ["1", "2", "3"], p
        assert p["Leader"] in p["Replicas"].split(","), p
    assert {p["Leader"] for p in partitions} == {"1", "2", "3"}, partitions

    stop_cleanly(run)


def test_dev_cluster_keeps_its_topics_across_restarts(dev_runs, tmp_path: Path):
    data_dir = tmp_path / "dev"
    first = dev_runs(data_dir=data_dir)
    bootstrap = first.wait_up()
    topic = unique_topic("kept")
    ok(rafka_topics(bootstrap, "--create", "--topic", topic, "--replication-factor", "3", "--partitions", "2"))
    before = ok(rafka_topics(bootstrap, "--describe", "--topic", topic)).splitlines()[0]
    stop_cleanly(first)

    second = dev_runs(data_dir=data_dir, base_port=first.base_port)
    assert second.wait_up() == bootstrap
    assert topic in ok(rafka_topics(bootstrap, "--list")).splitlines()
    # The same topic (same id), not a new one of the same name.
    after = ok(rafka_topics(bootstrap, "--describe", "--topic", topic)).splitlines()[0]
    assert after == before
    stop_cleanly(second)


def test_dev_refuses_a_port_that_is_in_use(dev_runs, tmp_path: Path):
    base = free_base_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        run = dev_runs(data_dir=tmp_path / "busy", base_port=base)
        code = run.wait_exit(15)
    assert code != 0
    assert f"port {base + 1}" in run.output() and "already in use" in run.output(), run.output()
    assert "is up" not in run.output()
    assert processes_using(run.data_dir) == []


def test_a_node_that_dies_leaves_the_others_running_and_says_how_to_restart_it(dev_runs):
    run = dev_runs()
    run.wait_up()
    pids = run.node_pids()
    victim, pid = 2, pids[2]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: f"node {victim} (pid {pid}) exited" in run.output(), 15)
    out = run.output()
    assert "the other nodes keep running" in out, out
    assert re.search(rf"server --config \S*node{victim}/server\.properties", out), out
    assert run.proc.poll() is None, "the supervisor must keep running: " + run.report()
    assert all(pid_alive(p) for i, p in pids.items() if i != victim), run.report()
    code, _ = run.terminate_and_wait()
    assert code == 0, run.report()
    assert processes_using(run.data_dir) == [], run.report()
