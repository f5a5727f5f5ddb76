"""The benchmark harness's smoke run (`rafka-bench --quick`) works end to end.

This checks that every scenario runs against a real 3-node cluster and reports
a figure; it does not read the figures against the targets (performance is
measured by `target/release/rafka-bench` (see docs/benchmarks.md), never
in timed tests).  The bench binary is the one scripts/test.sh built beside
$RAFKA_BIN (or $RAFKA_BENCH_BIN).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from rafka_harness import rafka_bin

pytestmark = pytest.mark.timeout(600)

# (scenario, a piece of the figure's name) for every row the smoke run must print.
EXPECTED_ROWS = [
    ("machine", "sequential write, page cache"),
    ("machine", "sequential write, fdatasync"),
    ("machine", "fdatasync of a 4 KiB append"),
    ("machine", "loopback TCP"),
    ("machine", "memcpy"),
    ("machine", "sequential rewrite of pages already in the page cache"),
    ("footprint", "broker RSS, idle"),
    ("produce", "RF=1 acks=1, 100 B"),
    ("produce", "RF=1 acks=1, 1 KiB"),
    ("produce", "RF=3 acks=all idempotent, 100 B"),
    ("produce", "RF=3 acks=all idempotent, 1 KiB"),
    ("produce", "RF=3 acks=all idempotent, fsync before ack, 100 B"),
    ("produce", "RF=3 acks=all idempotent, fsync before ack, 1 KiB"),
    ("footprint", "broker RSS under load"),
    ("footprint", "CPU-seconds per GB"),
    ("durability", "fsync-before-ack cost, RF=3 acks=all 100 B"),
    ("durability", "fsync-before-ack cost, RF=3 acks=all 1 KiB"),
    ("durability", "diagnosis: fsync-before-ack cost, 100 B, client at nice 19"),
    ("durability", "diagnosis: fsync-before-ack cost, 1 KiB, client at nice 19"),
    ("durability", "fdatasync of a 4 KiB append beside the fsync-before-ack run, 100 B"),
    ("durability", "fdatasync of a 4 KiB append beside the fsync-before-ack run, 1 KiB"),
    ("consume", "from the beginning"),
    ("latency", "produce → consume"),
    ("latency", "produce → acknowledged"),
    ("latency", "diagnosis: produce → consume"),
    ("latency", "linger.ms=1, preallocate=true"),
    ("failover", "kill -9 partition leader"),
    ("failover", "active controller"),
    ("footprint", "create 100 partitions"),
    ("footprint", "start-up to serving, 100 partitions"),
]


def bench_bin() -> str:
    path = os.environ.get("RAFKA_BENCH_BIN") or str(Path(rafka_bin()).with_name("rafka-bench"))
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is not an executable file (scripts/test.sh builds rafka-bench with --bins)",
                    pytrace=False)
    return path


def markdown_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(cells)
    return rows


def test_quick_run_reports_every_scenario(tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    data = tmp_path / "data"
    proc = subprocess.run(
        [bench_bin(), "--quick", "--rafka-bin", rafka_bin(), "--data-dir", str(data),
         "--base-port", "26092", "--markdown", str(table)],
        capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, f"rafka-bench --quick failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    print(proc.stdout)
    rows = markdown_rows(table.read_text())
    assert all(len(r) == 5 for r in rows), rows
    for scenario, figure in EXPECTED_ROWS:
        matching = [r for r in rows if r[0] == scenario and figure in r[1]]
        assert matching, f"no {scenario} row for {figure!r} in:\n{table.read_text()}"
        for row in matching:
            assert re.search(r"\d", row[2]), f"row without a figure: {row}"
    # Targets are stated with a verdict (met or MISSED), never silently dropped.
    verdicts = [r for r in rows if r[3]]
    assert len(verdicts) >= 8 and all(re.search(r"\((met|MISSED)\)$", r[3]) for r in verdicts), verdicts
    # The failover rounds lost nothing, and the scratch data is gone afterwards.
    assert all("0 failed" in r[4] for r in rows if r[0] == "failover" and r[4]), rows
    assert not data.exists(), f"{data} was left behind"
