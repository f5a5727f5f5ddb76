"""The test harness: a real `rafka` process and helpers to drive it with real clients.

`Broker` runs the binary named by `$RAFKA_BIN` as `rafka server` on a free
127.0.0.1 port with its own data directory; stdout and stderr go to `rafka.log`
beside it.  It is ready when the port accepts TCP and a confluent-kafka
AdminClient gets Metadata.  `stop()` sends SIGTERM, `kill9()` SIGKILL, and
`restart()` starts it again on the same port and data directory.  A `wrapper`
(e.g. an `strace ... --` command) runs the broker as its child; signals then go to
the process group, so they reach the broker itself and not only the wrapper.

Helpers: `wait_until` (poll a condition instead of sleeping), client
constructors with settings that suit a broker without consumer groups
(assign only, no commits), `consume_until_eof`, `consume_n`, `create_topic`.
`Cluster` runs several nodes (`process.roles=broker,controller`) that form the
metadata quorum over their gRPC (BROKER) listeners; `ClusterNode` is one of them,
a `Broker` configured entirely by a server.properties file.
The fixtures that hand brokers and clusters to tests live in conftest.py.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# How long a broker may take to accept connections and answer Metadata.
BROKER_START_TIMEOUT_S = 20.0
# After this many brokers in a row never became ready, later starts wait only
# BROKER_START_TIMEOUT_AFTER_FAILURES_S: a broken binary fails every test quickly.
CONSECUTIVE_START_FAILURES_LIMIT = 3
BROKER_START_TIMEOUT_AFTER_FAILURES_S = 5.0
_consecutive_start_failures = 0
# How long SIGTERM may take before we give up and SIGKILL.
BROKER_STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 80

# librdkafka's own log lines go through Python logging: pytest shows them with a
# failing test ("Captured log"), and a client left behind by a failed test stays quiet.
RDKAFKA_LOGGER = logging.getLogger("librdkafka")


def client_base(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "logger": RDKAFKA_LOGGER}


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


class StopWaiting(AssertionError):
    """Raised by a wait_until condition to give up at once (e.g. the broker process died)."""


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; return that value.

    An exception raised by `condition` counts as "not yet", except StopWaiting,
    which propagates.  On time-out an AssertionError names `message` and the
    last exception or value seen.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = value
        except StopWaiting:
            raise
        except Exception as exc:  # noqa: BLE001 - "not yet" by design
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}; last: {last!r}")
        time.sleep(interval)


def holds_for(condition: Callable[[], Any], duration: float, interval: float = 0.1,
              message: str = "condition") -> None:
    """Assert that `condition` stays truthy for `duration` seconds (checked every `interval`)."""
    deadline = time.monotonic() + duration
    while True:
        value = condition()
        assert value, f"{message} stopped holding: {value!r}"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def rafka_bin() -> str:
    """The broker binary under test; a missing one is a hard failure, never a skip."""
    path = os.environ.get("RAFKA_BIN")
    if not path:
        pytest.fail("RAFKA_BIN is not set: run the suite through scripts/test.sh "
                    "or export RAFKA_BIN=$PWD/target/x86_64-unknown-linux-gnu/debug/rafka (what scripts/test.sh builds)", pytrace=False)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"RAFKA_BIN={path} is not an executable file (did `cargo build --bins` run?)",
                    pytrace=False)
    return path


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required tool `{name}` is not on PATH (scripts/test.sh installs it)", pytrace=False)
    return path


def hermetic_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process environment without any inherited KAFKA_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.setdefault("RUST_BACKTRACE", "1")
    env.setdefault("NO_COLOR", "1")  # plain broker logs in rafka.log
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------
# The broker process
# --------------------------------------------------------------------------


class BrokerStartError(StopWaiting):
    """The broker exited during start-up or never became ready."""


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """`sig` to the process group `proc` leads (started with start_new_session=True)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # the whole group is gone already
        pass


class Broker:
    """One `rafka server` process on 127.0.0.1:<port> with its own data dir.

    `overrides` are passed as `--override key=value` after the defaults
    (node.id, listeners, advertised.listeners, log.dirs); a value of None drops
    that default.  `env` is added to a KAFKA_*-free copy of our environment.
    `config_text`, if given, is written to server.properties and passed with
    `--config`.

    `wrapper`, if set before `start()`, is a command prefix the broker runs under
    (`wrapper + argv()`), such as `["strace", ..., "--"]`; it must run the broker as
    its child and exit when the broker does.  Every signal the harness sends then
    goes to the process group of that start (its own session): the broker gets it
    even from a wrapper that ignores or does not forward it.
    """

    def __init__(self, workdir: Path, overrides: dict[str, str | None] | None = None,
                 env: dict[str, str] | None = None, config_text: str | None = None,
                 port: int | None = None):
        self.binary = rafka_bin()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log_path = workdir / "rafka.log"
        self.port = port or free_port()
        self.env = dict(env or {})
        self.config_path: Path | None = None
        if config_text is not None:
            self.config_path = workdir / "server.properties"
            self.config_path.write_text(config_text)
        defaults: dict[str, str | None] = {
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "log.dirs": str(self.data_dir),
            # A single broker cannot hold Kafka's default of three offsets replicas.
            "offsets.topic.replication.factor": "1",
        }
        defaults.update(overrides or {})
        self.overrides = {k: v for k, v in defaults.items() if v is not None}
        self.wrapper: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._wrapped = False  # whether `proc` is a wrapper (signals go to its group)
        self.starts = 0
        self._admin: AdminClient | None = None

    # -- identity ----------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        args = [self.binary, "server"]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        for key, value in self.overrides.items():
            args += ["--override", f"{key}={value}"]
        return args

    # -- life cycle --------------------------------------------------------

    def start(self, wait: bool = True) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.starts += 1
        self._admin = None  # a fresh client per start: no state carried over from the last process
        command = [*self.wrapper, *self.argv()]
        self._wrapped = bool(self.wrapper)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== test harness: start #{self.starts}: {' '.join(command)}\n".encode())
            log.flush()
            # Its own session: the process group is the broker (and its wrapper) alone.
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=hermetic_env(self.env), cwd=self.workdir, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the port accepts TCP and a Kafka AdminClient gets Metadata."""
        global _consecutive_start_failures
        if timeout is None:
            timeout = (BROKER_START_TIMEOUT_AFTER_FAILURES_S
                       if _consecutive_start_failures >= CONSECUTIVE_START_FAILURES_LIMIT
                       else BROKER_START_TIMEOUT_S)
        try:
            self._wait_ready(timeout)
        except BrokerStartError:
            _consecutive_start_failures += 1
            raise
        _consecutive_start_failures = 0

    def _wait_ready(self, timeout: float) -> None:
        def alive_and(check: Callable[[], bool]) -> Callable[[], bool]:
            def cond() -> bool:
                if self.proc is not None and self.proc.poll() is not None:
                    raise BrokerStartError(
                        f"rafka exited with code {self.proc.returncode} during start-up\n"
                        f"--- {self.log_path} (tail) ---\n{self.log_tail()}")
                return check()
            return cond

        deadline = time.monotonic() + timeout
        try:
            wait_until(alive_and(lambda: port_accepts(self.port)), timeout,
                       message=f"rafka to accept TCP on {self.bootstrap}")
            admin = self.admin()
            wait_until(alive_and(lambda: admin.list_topics(timeout=2) is not None),
                       max(1.0, deadline - time.monotonic()),
                       message=f"rafka at {self.bootstrap} to answer Metadata")
        except BrokerStartError:
            raise
        except AssertionError as exc:
            raise BrokerStartError(f"{exc}\n--- {self.log_path} (tail) ---\n{self.log_tail()}") from None

    def signal(self, sig: int) -> None:
        """Send `sig` to the broker: to the process itself, or under a `wrapper` to the
        process group of its start (the wrapper and the broker)."""
        assert self.proc is not None, "broker was never started"
        if self._wrapped:
            # Even after the wrapper exited: the broker it left behind is still in the group.
            _signal_group(self.proc, sig)
        else:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = BROKER_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise AssertionError(f"rafka did not exit within {timeout}s of SIGTERM; killed it")

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "broker is not running"
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart(self, wait: bool = True) -> "Broker":
        """Start again on the same data dir and port (after stop() or kill9())."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        # The old process is gone; its listening socket may linger briefly.
        wait_until(lambda: not port_accepts(self.port), 10, message=f"port {self.port} to be released")
        return self.start(wait=wait)

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- clients -----------------------------------------------------------

    def admin(self, conf: dict[str, Any] | None = None) -> AdminClient:
        """An AdminClient for this broker.

        Without `conf` it is one shared client per broker start, so that the
        futures it returns outlive expressions like `broker.admin().create_topics(...)`
        (a garbage-collected client fails its pending futures with _DESTROY).
        """
        if conf is None:
            if self._admin is None:
                self._admin = AdminClient(client_base(self.bootstrap))
            return self._admin
        return AdminClient({**client_base(self.bootstrap), **conf})

    def drop_clients(self) -> None:
        """Forget the shared AdminClient (called at teardown)."""
        self._admin = None

    def producer(self, conf: dict[str, Any] | None = None) -> Producer:
        base = {
            **client_base(self.bootstrap),
            "linger.ms": 5,
            "message.timeout.ms": 20000,
        }
        base.update(conf or {})
        return Producer(base)

    def consumer(self, conf: dict[str, Any] | None = None) -> Consumer:
        base = {
            **client_base(self.bootstrap),
            # Required by the client; never used: no subscribe(), no commits.
            "group.id": "rafka-tests-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "check.crcs": True,
            "fetch.wait.max.ms": 100,
        }
        base.update(conf or {})
        return Consumer(base)


# --------------------------------------------------------------------------
# Client helpers
# --------------------------------------------------------------------------


class Delivery:
    """Collects delivery reports: on_delivery=d.callback."""

    def __init__(self) -> None:
        self.ok: list[Any] = []
        self.failed: list[tuple[KafkaError, Any]] = []

    def callback(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.ok.append(msg)
        else:
            self.failed.append((err, msg))


def flush_all(producer: Producer, timeout: float = 30.0) -> None:
    remaining = producer.flush(timeout)
    assert remaining == 0, f"{remaining} messages still queued after flush({timeout})"


def consume_until_eof(consumer: Consumer, partitions: Iterable[TopicPartition],
                      timeout: float = 30.0) -> list[Any]:
    """assign() `partitions` and read until every one of them reports end-of-partition.

    The consumer must have enable.partition.eof=True (Broker.consumer does).
    Any error other than EOF fails the test.  Returns the messages in arrival order.
    """
    partitions = list(partitions)
    consumer.assign(partitions)
    pending = {(tp.topic, tp.partition) for tp in partitions}
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise AssertionError(f"no end-of-partition for {sorted(pending)} within {timeout}s; "
                                 f"read {len(out)} messages")
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                pending.discard((msg.topic(), msg.partition()))
                continue
            raise AssertionError(f"consumer error on {msg.topic()}[{msg.partition()}]: {err}")
        out.append(msg)
    return out


def consume_n(consumer: Consumer, n: int, timeout: float = 30.0) -> list[Any]:
    """Read exactly n messages from an already-assigned consumer (EOF events ignored)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"read only {len(out)} of {n} messages within {timeout}s")
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            raise AssertionError(f"consumer error: {err}")
        out.append(msg)
    return out


def create_topic(broker: Broker, name: str, partitions: int = 1,
                 config: dict[str, str] | None = None) -> None:
    futures = broker.admin().create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10, request_timeout=15)
    futures[name].result(timeout=20)
    wait_until(lambda: name in broker.admin().list_topics(timeout=5).topics, 10,
               message=f"topic {name} to appear in Metadata")


# --------------------------------------------------------------------------
# A cluster of real `rafka` processes (the metadata quorum)
# --------------------------------------------------------------------------

# Every cluster a test uses is recorded here in the test item's stash so that the
# report hook in conftest.py can attach the tail of each node's log to a failure.
CLUSTERS_KEY = pytest.StashKey[list]()

# Processes started by ClusterNode, killed at interpreter exit if a test run is cut
# short before its fixtures could stop them (they run in their own sessions, so a
# Ctrl-C or a timeout of the test runner does not reach them).  The whole process
# group is killed: a node's wrapper and the broker under it.
_LIVE_PROCS: list[subprocess.Popen] = []


def _kill_leftovers() -> None:
    for proc in _LIVE_PROCS:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


atexit.register(_kill_leftovers)


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


class ClusterNode(Broker):
    """One node of a `Cluster`: a `Broker` whose whole configuration is a properties file.

    `props` is the node's server.properties as a dict; it is rewritten on every
    start, so a test may change a key (node.id, broker.session.timeout.ms) and
    start the node again.  The log dir is `workdir/data`; rafka.log and the
    properties file sit beside it, so wiping the log dir keeps the node's log.
    """

    def __init__(self, workdir: Path, node_id: int, kafka_port: int, grpc_port: int,
                 props: dict[str, str]):
        # No --override flags: every setting comes from the file.
        no_defaults: dict[str, str | None] = {
            "node.id": None, "listeners": None, "advertised.listeners": None, "log.dirs": None,
            "offsets.topic.replication.factor": None}
        super().__init__(workdir, overrides=no_defaults, config_text="", port=kafka_port)
        self.node_id = node_id
        self.grpc_port = grpc_port
        self.props = dict(props)
        self.write_config()

    def write_config(self) -> None:
        assert self.config_path is not None
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.props.items()))

    def start(self, wait: bool = True) -> "ClusterNode":
        self.write_config()
        super().start(wait=False)
        assert self.proc is not None
        _LIVE_PROCS.append(self.proc)
        if wait:
            self.wait_ready()
        return self

    def run_to_exit(self, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run `rafka server` with this node's config in the foreground, stdout and
        stderr captured apart; for start-ups that must fail.  A process still running
        after `timeout` is killed and the test fails.  The `wrapper` is not used here."""
        assert not self.is_running(), "node is already running"
        self.write_config()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== test harness: foreground run: {' '.join(self.argv())}\n".encode())
        try:
            done = subprocess.run(self.argv(), stdin=subprocess.DEVNULL, capture_output=True,
                                  env=hermetic_env(self.env), cwd=self.workdir, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            err = (exc.stderr or b"").decode(errors="replace")
            with open(self.log_path, "ab") as log:
                log.write((exc.stderr or b""))
            raise AssertionError(f"node {self.node_id} was expected to refuse to start, but it was "
                                 f"still running after {timeout}s (killed it); stderr tail:\n"
                                 + "\n".join(err.splitlines()[-30:])) from None
        with open(self.log_path, "ab") as log:
            log.write(done.stdout + done.stderr)
        return done

    def kafka_socket(self, timeout: float = 5.0):
        import kafka_wire
        return kafka_wire.KafkaSocket(self.port, timeout=timeout)

    def metadata(self, topics: list[str] | None = None, timeout: float = 5.0):
        """Metadata v12 from this node only (a raw socket: no client-side routing)."""
        import kafka_wire
        with self.kafka_socket(timeout) as ks:
            return kafka_wire.metadata_v12(ks, topics)

    def meta_properties(self) -> dict[str, str]:
        text = (self.data_dir / "meta.properties").read_text()
        return dict(line.split("=", 1) for line in text.splitlines()
                    if "=" in line and not line.startswith("#"))


# How long a test waits for cluster nodes it stops itself (Cluster.stop) to exit.
CLUSTER_STOP_TIMEOUT_S = 30.0
# Teardown grace: a node not gone this long after SIGTERM is SIGKILLed and a
# RafkaShutdownWarning names it.  Normal shutdown is quick, except that the last
# node of a quorum waits up to 5 s for its controlled-shutdown request.  Slow
# shutdowns are tested on their own (test_cluster.py); at teardown they would only
# make unrelated tests fail and blow the time budget.
CLUSTER_TEARDOWN_GRACE_S = 10.0


class RafkaShutdownWarning(UserWarning):
    """A cluster node did not exit within the teardown grace after SIGTERM."""


class Cluster:
    """`size` rafka nodes on loopback, each `process.roles=broker,controller`.

    Node i (1-based) serves Kafka clients on `nodes[i].port` (PLAINTEXT) and
    node-to-node gRPC on `nodes[i].grpc_port` (BROKER).  `extra` adds
    server.properties keys to every node.
    """

    def __init__(self, workdir: Path, size: int = 3, extra: dict[str, str] | None = None):
        self.workdir = workdir
        ports = free_ports(2 * size)
        kafka_ports, grpc_ports = ports[:size], ports[size:]
        voters = ",".join(f"{i + 1}@127.0.0.1:{grpc_ports[i]}" for i in range(size))
        self.nodes: dict[int, ClusterNode] = {}
        for i in range(1, size + 1):
            props = {
                "node.id": str(i),
                "process.roles": "broker,controller",
                "listeners": f"PLAINTEXT://127.0.0.1:{kafka_ports[i - 1]},BROKER://127.0.0.1:{grpc_ports[i - 1]}",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT",
                "inter.broker.listener.name": "BROKER",
                "controller.quorum.voters": voters,
                "log.dirs": str(workdir / f"node{i}" / "data"),
                "default.replication.factor": "3",
                "offsets.topic.replication.factor": str(min(3, size)),
            }
            props.update(extra or {})
            self.nodes[i] = ClusterNode(workdir / f"node{i}", i, kafka_ports[i - 1], grpc_ports[i - 1], props)

    def __getitem__(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id]

    def running(self) -> list[ClusterNode]:
        return [n for n in self.nodes.values() if n.is_running()]

    def start(self, ids: Iterable[int] | None = None, timeout: float = 30.0) -> float:
        """Start the nodes (all by default) at once, then wait until each answers
        Metadata.  Returns the seconds that took."""
        t0 = time.monotonic()
        nodes = [self.nodes[i] for i in (ids if ids is not None else self.nodes)]
        for n in nodes:
            n.start(wait=False)
        for n in nodes:
            n.wait_ready(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def stop(self, ids: Iterable[int] | None = None, timeout: float = CLUSTER_STOP_TIMEOUT_S) -> float:
        """SIGTERM the nodes (all running ones by default) at once and wait for every
        one to exit; SIGKILL stragglers and fail.  Returns the seconds that took."""
        t0 = time.monotonic()
        nodes = [self.nodes[i] for i in ids] if ids is not None else list(self.nodes.values())
        nodes = [n for n in nodes if n.is_running()]
        for n in nodes:
            n.drop_clients()
            n.signal(signal.SIGTERM)
        hung = []
        for n in nodes:
            assert n.proc is not None
            try:
                n.proc.wait(timeout=max(0.1, timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                n.signal(signal.SIGKILL)
                n.proc.wait(timeout=10)
                hung.append(n.node_id)
        if hung:
            raise AssertionError(f"node(s) {hung} did not exit within {timeout}s of SIGTERM; killed them")
        return time.monotonic() - t0

    def teardown(self, grace: float = CLUSTER_TEARDOWN_GRACE_S) -> list[int]:
        """Stop every running node: SIGTERM the ones that are not the controller (at
        once), then the controller, so every controlled shutdown but the last finds a
        quorum.  Nodes still running `grace` seconds after their SIGTERM are SIGKILLed.
        Returns the ids of the nodes that had to be killed."""
        running = self.running()
        controller = -1
        for n in running:
            try:
                controller = n.metadata(timeout=2).controller_id
                break
            except Exception:  # noqa: BLE001 - a node that cannot answer is just stopped
                continue
        killed: list[int] = []
        for phase in ([n for n in running if n.node_id != controller],
                      [n for n in running if n.node_id == controller]):
            for n in phase:
                n.drop_clients()
                if n.is_running():
                    n.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for n in phase:
                assert n.proc is not None
                try:
                    n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    n.signal(signal.SIGKILL)
                    n.proc.wait(timeout=10)
                    killed.append(n.node_id)
        return killed

    def kill_all(self) -> None:
        for n in self.nodes.values():
            if n.is_running():
                n.kill9()

    def metadata(self, node_id: int, topics: list[str] | None = None):
        return self.nodes[node_id].metadata(topics)

    def controller_id(self, via: int | None = None) -> int:
        """The controller id in Metadata from node `via` (default: any running node)."""
        via = via if via is not None else self.running()[0].node_id
        return self.metadata(via).controller_id

    def log_tails(self, lines: int = 40) -> list[tuple[str, str]]:
        return [(f"node {i} ({n.log_path})", n.log_tail(lines)) for i, n in self.nodes.items()]
