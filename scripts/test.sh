#!/usr/bin/env bash
# The project's test command: bash scripts/test.sh [extra pytest args]
#
# On a fresh Debian machine (root, apt and PyPI reachable, cargo present) it
# installs what the tests need, idempotently, then runs every test:
#   1. kcat and strace from apt (if absent), python3 + venv support (if absent)
#   2. a virtualenv at .venv with tests/requirements.txt (re-installed when that file changes)
#   3. cargo build --workspace --bins, once, as static binaries for x86_64-unknown-linux-gnu
#      (the same build serves cargo test, the pytest suite, the FROM-scratch
#      container image of tests/test_deploy.py and rafka-bench --quick of tests/test_bench.py)
#   4. cargo test --workspace
#   5. pytest tests/ -v against target/x86_64-unknown-linux-gnu/debug/rafka (extra
#      arguments go to pytest)
# Any failure, including a missing tool, stops it with a non-zero exit: nothing is skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CURRENT_SECTION="start"
section() {
    CURRENT_SECTION="$*"
    printf '\n==================== %s ====================\n' "$*"
}
trap 'rc=$?; if [ $rc -ne 0 ]; then printf "\nFAILED in section: %s (exit %s)\n" "$CURRENT_SECTION" "$rc" >&2; fi' EXIT

die() { echo "error: $*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

APT_UPDATED=0
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install $*"
        sudo="sudo -n"
    fi
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        $sudo apt-get update -q
        APT_UPDATED=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# ---------------------------------------------------------------------------
section "system tools"
command -v cargo >/dev/null || die "cargo not found on PATH"

if ! command -v kcat >/dev/null; then
    echo "kcat not found: installing it from apt"
    apt_install kcat
fi
command -v kcat >/dev/null || die "kcat still missing after apt-get install"

# tests/test_durable.py watches (and delays, and fails) the brokers' fdatasyncs with
# strace: the brokers are static binaries, out of reach of LD_PRELOAD.
if ! command -v strace >/dev/null; then
    echo "strace not found: installing it from apt"
    apt_install strace
fi
command -v strace >/dev/null || die "strace still missing after apt-get install"
strace -f -qq -o /dev/null true || die "strace cannot trace a process here (is ptrace(2) allowed?)"

if ! command -v python3 >/dev/null; then
    echo "python3 not found: installing it from apt"
    apt_install python3 python3-venv
fi
command -v python3 >/dev/null || die "python3 still missing after apt-get install"

# The deployment tests drive the Docker engine with Compose (v2 plugin or v1).
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    echo "docker compose not found: installing docker-compose from apt"
    apt_install docker-compose
fi

echo "cargo:   $(cargo --version)"
echo "kcat:    $(kcat -V 2>&1 | grep -m1 '^Version' || echo '(version unknown)')"
echo "strace:  $(strace -V 2>&1 | head -1)"
echo "python3: $(command -v python3) ($(python3 --version 2>&1))"
echo "docker:  $(docker version --format 'engine {{.Server.Version}}' 2>&1 | head -1)"

# ---------------------------------------------------------------------------
section "python virtualenv (.venv)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
REQ="$ROOT/tests/requirements.txt"
STAMP="$VENV/.requirements.sha256"

if [ -x "$PY" ] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    echo "$VENV is broken (its python does not run): recreating it"
    rm -rf "$VENV"
fi
if [ ! -x "$PY" ]; then
    if ! python3 -m venv "$VENV"; then
        echo "python3 -m venv failed (Debian needs python3-venv): installing it"
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
fi
[ -x "$PY" ] || die "no python in $VENV after creating it"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r "$REQ"
    echo "$want" > "$STAMP"
else
    echo "requirements unchanged since the last install"
fi
"$PY" - <<'EOF'
import confluent_kafka, kafka, kubernetes_validate, pytest, pytest_timeout, yaml  # noqa: F401  (a missing one fails here)
print(f"confluent-kafka {confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]}), "
      f"kafka-python {kafka.__version__}, pytest {pytest.__version__}")
EOF

# ---------------------------------------------------------------------------
section "cargo build --workspace --bins (static, x86_64-unknown-linux-gnu)"
# One build for everything: statically linked (glibc), so the very binary the tests
# run also goes into the FROM-scratch image. With an explicit target, RUSTFLAGS apply
# to the target's code only, not to build scripts and proc macros.
export CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"
cargo build --workspace --bins

RAFKA_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$CARGO_BUILD_TARGET/debug/rafka"
[ -x "$RAFKA_BIN" ] || die "$RAFKA_BIN was not built"
export RAFKA_BIN

# ---------------------------------------------------------------------------
section "cargo test --workspace"
cargo test --workspace

# ---------------------------------------------------------------------------
section "pytest tests/ (RAFKA_BIN=$RAFKA_BIN)"
"$PY" -m pytest tests/ -v "$@"

section "all tests passed"
