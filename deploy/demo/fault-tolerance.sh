#!/usr/bin/env bash
# Fault-tolerance demo: kill the leader of a replicated partition under steady load
# and show that nothing acknowledged is lost and nothing is duplicated.
#
#   deploy/demo/fault-tolerance.sh [--keep]
#
# 1. brings up deploy/docker-compose.yml (image $RAFKA_IMAGE, default rafka:latest;
#    build it with scripts/build-image.sh) and waits until all three nodes are healthy
# 2. creates a topic with 3 partitions, replication factor 3, min.insync.replicas=2
# 3. starts one producer (acks=all, idempotent) and one consumer (assign(), no group)
#    from the host, on localhost:19092/29092/39092 (deploy/demo/load.py)
# 4. kills the container of partition 0's leader (docker kill), shows the new leader
#    and the ISR shrunk to the survivors while the load goes on
# 5. starts the container again and shows the ISR growing back to all three
# 6. stops the load, prints the verdict (produced, acknowledged, consumed, lost,
#    duplicated), stops the cluster with SIGTERM (controlled shutdown: each node must
#    exit 0) and removes it with its volumes (`down -v`); --keep leaves it running
#
# Exit status: 0 only when nothing acknowledged was lost, nothing was duplicated and
# every step happened in time. Non-interactive; about 40 s of load.
# Environment: RAFKA_IMAGE, PYTHON (default .venv/bin/python, made by scripts/test.sh),
# COMPOSE_PROJECT (default rafka-demo), RAFKA_EXTERNAL_PORT_1/2/3 (the host ports,
# default 19092, 29092, 39092).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
COMPOSE_FILE="$ROOT/deploy/docker-compose.yml"
LOAD="$ROOT/deploy/demo/load.py"
export RAFKA_IMAGE="${RAFKA_IMAGE:-rafka:latest}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
PROJECT="${COMPOSE_PROJECT:-rafka-demo}"
BOOTSTRAP="localhost:${RAFKA_EXTERNAL_PORT_1:-19092},localhost:${RAFKA_EXTERNAL_PORT_2:-29092},localhost:${RAFKA_EXTERNAL_PORT_3:-39092}"
TOPIC="demo-$(date +%s)"
KEEP=0

for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

now_ms() { date +%s%3N; }
# Seconds since a now_ms time, with one decimal.
since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d' $(( ms / 1000 )) $(( ms % 1000 / 100 )); }
T0=$(now_ms)
say() { printf '\n[%6ss] == %s\n' "$(since "$T0")" "$*"; }
die() { printf '\nDEMO FAILED: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not on PATH"
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    die "neither 'docker compose' nor 'docker-compose' is available"
fi
COMPOSE+=(-p "$PROJECT" -f "$COMPOSE_FILE")
docker image inspect "$RAFKA_IMAGE" >/dev/null 2>&1 \
    || die "image $RAFKA_IMAGE not found: build it with scripts/build-image.sh (nothing can be pulled)"
"$PYTHON" -c 'import confluent_kafka' 2>/dev/null \
    || die "$PYTHON cannot import confluent_kafka: run scripts/test.sh once, or set PYTHON"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/rafka-demo.XXXXXX")"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ "$KEEP" -eq 1 ]; then
        echo "cluster kept (--keep): ${COMPOSE[*]} down -v   removes it"
    else
        "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

container_of() { "${COMPOSE[@]}" ps -q "broker-$1"; }
health_of() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(container_of "$1")" 2>/dev/null || echo gone; }
# rafka topics, run inside a (live) node's container.
topics() { local node=$1; shift; "${COMPOSE[@]}" exec -T "broker-$node" rafka topics --bootstrap-server "broker-$node:9092" "$@"; }
describe() { topics "$1" --describe --topic "$TOPIC"; }
# Field of a partition's line in the describe output: field NODE PARTITION Leader|Isr|Replicas
field() { describe "$1" 2>/dev/null | awk -v p="$2" -v f="$3:" '$0 ~ "Partition: "p"\t" { for (i = 1; i < NF; i++) if ($i == f) print $(i+1) }'; }
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local timeout=$1; shift
    local deadline=$(( $(date +%s) + timeout ))
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}
all_healthy() { for n in 1 2 3; do [ "$(health_of "$n")" = healthy ] || return 1; done; }
isr_full_everywhere() {
    local out
    out="$(describe "$1" 2>/dev/null)" || return 1
    [ "$(grep -c 'Partition:' <<<"$out")" -eq 3 ] || return 1
    ! grep 'Partition:' <<<"$out" | awk '{ for (i = 1; i < NF; i++) if ($i == "Isr:") print $(i+1) }' | grep -vq '^[0-9]*,[0-9]*,[0-9]*$'
}

# ---------------------------------------------------------------------------
say "starting the three-node cluster ($RAFKA_IMAGE, project $PROJECT)"
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
UP_START=$(now_ms)
"${COMPOSE[@]}" up -d
wait_for 90 all_healthy || { "${COMPOSE[@]}" logs --tail 30 >&2 || true; die "the nodes did not all become healthy within 90 s"; }
say "all three nodes healthy $(since "$UP_START") s after 'up -d'"
"${COMPOSE[@]}" ps

say "creating topic $TOPIC: 3 partitions, replication factor 3, min.insync.replicas=2"
topics 1 --create --topic "$TOPIC" --partitions 3 --replication-factor 3 --config min.insync.replicas=2
wait_for 30 isr_full_everywhere 1 || die "the new topic's partitions did not all get a full ISR"
describe 1

say "starting one producer (acks=all, idempotent, 200 records/s) and one consumer (assign(), no group) on $BOOTSTRAP"
"$PYTHON" -u "$LOAD" produce --bootstrap "$BOOTSTRAP" --topic "$TOPIC" --out "$WORK/produced.json" \
    --stop-file "$WORK/stop" --rate 200 --max-seconds 120 &
PRODUCER=$!; PIDS+=("$PRODUCER")
"$PYTHON" -u "$LOAD" consume --bootstrap "$BOOTSTRAP" --topic "$TOPIC" --out "$WORK/consumed.json" \
    --producer-result "$WORK/produced.json" --max-seconds 200 &
CONSUMER=$!; PIDS+=("$CONSUMER")
sleep 8

LEADER="$(field 1 0 Leader)"
[[ "$LEADER" =~ ^[123]$ ]] || die "cannot tell partition 0's leader (got '$LEADER')"
SURVIVOR=$(( LEADER % 3 + 1 ))
say "partition 0 is led by node $LEADER: docker kill $(container_of "$LEADER" | cut -c1-12) (broker-$LEADER)"
KILLED_AT=$(now_ms)
docker kill "$(container_of "$LEADER")" >/dev/null
new_leader_elected() {
    local l isr
    l="$(field "$SURVIVOR" 0 Leader)"; isr="$(field "$SURVIVOR" 0 Isr)"
    [[ "$l" =~ ^[123]$ ]] && [ "$l" != "$LEADER" ] && [ -n "$isr" ] && [[ ",$isr," != *",$LEADER,"* ]]
}
wait_for 30 new_leader_elected || die "no new leader for partition 0 within 30 s of the kill"
say "partition 0 has a new leader, node $(field "$SURVIVOR" 0 Leader), and node $LEADER left the ISR," \
    "$(since "$KILLED_AT") s after the kill (as seen by polling rafka topics):"
describe "$SURVIVOR"
sleep 8

say "load goes on with two nodes; starting broker-$LEADER again (docker start)"
RESTARTED_AT=$(now_ms)
docker start "$(container_of "$LEADER")" >/dev/null
wait_for 60 all_healthy || die "broker-$LEADER did not become healthy within 60 s of its restart"
say "broker-$LEADER healthy again $(since "$RESTARTED_AT") s after docker start"
wait_for 60 isr_full_everywhere "$SURVIVOR" || { describe "$SURVIVOR" || true; die "the ISR did not grow back to three within 60 s"; }
say "node $LEADER is back in every ISR $(since "$RESTARTED_AT") s after docker start:"
describe "$SURVIVOR"
sleep 5

say "stopping the load"
touch "$WORK/stop"
wait "$PRODUCER" || die "the producer failed"
wait "$CONSUMER" || die "the consumer failed"
PIDS=()

say "verdict"
VERDICT_RC=0
"$PYTHON" "$LOAD" verdict "$WORK/produced.json" "$WORK/consumed.json" || VERDICT_RC=$?

UNCLEAN=0
if [ "$KEEP" -eq 0 ]; then
    say "stopping the cluster with SIGTERM (controlled shutdown)"
    STOP_START=$(now_ms)
    "${COMPOSE[@]}" stop -t 30 >/dev/null 2>&1
    for n in 1 2 3; do
        code="$(docker inspect -f '{{.State.ExitCode}}' "$(container_of "$n")")"
        echo "broker-$n exited with code $code"
        [ "$code" = 0 ] || UNCLEAN=1
    done
    echo "all stopped $(since "$STOP_START") s after SIGTERM"
fi

[ "$VERDICT_RC" -eq 0 ] || die "records were lost or duplicated"
[ "$UNCLEAN" -eq 0 ] || die "a node did not exit cleanly on SIGTERM"
say "demo passed"
