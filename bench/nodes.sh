#!/usr/bin/env bash
# `just bench`, part k (after bench/compose.sh): a simulated node failing.
#
#   k1. node down to every affected replica ready elsewhere: a project with three simulated
#       nodes (`nodes:`) and a pod of 30 replicas (spread 10 per node by the scheduler), each
#       ready about 50 ms after its start (an exec readiness probe on a file its command
#       touches). Each round: `rcompose node down worker-1`, then the time from just before
#       that command until the last `ready` event of the replicas that ran on worker-1 (their
#       timestamps in `rcompose events`), which all run on the other nodes by then; then
#       `node up worker-1` and the stack is made anew for the next round. Target (issue 9):
#       median under 2 s.
#
# No peer is run: Kubernetes is compared through its documented default, a node's pods are
# evicted 300 s after it becomes unreachable (the `node.kubernetes.io/unreachable`
# toleration's tolerationSeconds), a constant below, not a measurement.
#
# Appends its section to docs/benchmarks.md (replacing one from an earlier run of this
# script). Run as root. Removes the projects and the temp dir it made, also on failure or
# Ctrl-C.
#
# Environment:
#   RCOMPOSE_BIN    use this binary instead of building the static release binary
#   OUT             report path (default docs/benchmarks.md)
#   ROUNDS (5)      rounds
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
OUT=${OUT:-$REPO/docs/benchmarks.md}
ROUNDS=${ROUNDS:-5}
BEGIN_MARK="<!-- bench/nodes.sh: begin -->"
END_MARK="<!-- bench/nodes.sh: end -->"
TARGET_MS=2000
K8S_EVICTION_S=300
REPLICAS=30

log() { printf '[bench nodes %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

[ "$(id -u)" = 0 ] || die "run as root (containers need namespaces and cgroups)"
case "$ROUNDS" in '' | *[!0-9]* | 0) die "ROUNDS must be a positive integer, not '$ROUNDS'" ;; esac
command -v jq >/dev/null || die "jq is missing (apt jq)"

RC=$(rc_binary)
[ -x "$RC" ] || die "no rcompose binary at $RC"
P=rcbench-nodes-$$
EVENTS=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [ -n "$EVENTS" ] && kill -TERM "$EVENTS" 2>/dev/null && wait "$EVENTS" 2>/dev/null
    [ -e "/run/rcompose/$P" ] && timeout 60 "$RC" -p "$P" down -t 1 >/dev/null 2>&1
    rm -rf "$WORK"
    exit "$rc"
}
WORK=$(mktemp -d /tmp/rcbench-nodes.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

cat >"$WORK/rcompose.yaml" <<EOF
nodes:
  worker-1: { cpu: 4, memory: 4Gi, labels: { zone: a } }
  worker-2: { cpu: 4, memory: 4Gi, labels: { zone: b } }
  worker-3: { cpu: 4, memory: 4Gi, labels: { zone: c } }
pods:
  web:
    replicas: $REPLICAS
    restart: always
    containers:
      - name: web
        command: [ sh, -c, 'sleep 0.05; touch /tmp/ready; exec sleep 3600' ]
        resources: { cpu: 100m, memory: 32Mi }
        readiness: { exec: [ test, -f, /tmp/ready ], period: 100ms }
EOF

for r in $(seq 1 "$ROUNDS"); do
    "$RC" -f "$WORK/rcompose.yaml" -p "$P" up -d --wait --wait-timeout 120 >/dev/null 2>&1 ||
        die "round $r: up of the $REPLICAS-replica stack failed"
    # the replicas on worker-1 (ps: pod, replica, node)
    mapfile -t MOVED < <("$RC" -p "$P" ps --format json | jq -r '.[] | select(.node == "worker-1") | "\(.pod)-\(.replica)"' | sort -u)
    [ "${#MOVED[@]}" -ge 5 ] || die "round $r: only ${#MOVED[@]} replicas on worker-1"
    "$RC" -p "$P" events --format json >"$WORK/events.jsonl" 2>/dev/null &
    EVENTS=$!
    sleep 0.5
    t0=$(now_ms)
    "$RC" -p "$P" node down worker-1 >/dev/null 2>&1 || die "round $r: node down failed"
    # every moved replica ready again (a ready event after t0), on another node
    done_ms=""
    for _ in $(seq 1 1000); do
        last=0
        all=1
        for name in "${MOVED[@]}"; do
            t=$(jq -r --arg n "$name" --argjson t0 "$t0" 'select(.event == "ready" and .time_ms >= $t0 and (.name == $n or (.name | startswith($n + "/")))) | .time_ms' "$WORK/events.jsonl" 2>/dev/null | head -1)
            if [ -z "$t" ]; then all=0; break; fi
            [ "$t" -gt "$last" ] && last=$t
        done
        if [ "$all" = 1 ]; then done_ms=$((last - t0)); break; fi
        sleep 0.02
    done
    [ -n "$done_ms" ] || die "round $r: not every replica of worker-1 was ready elsewhere within 20 s"
    on_failed=$("$RC" -p "$P" ps --format json | jq '[.[] | select(.node == "worker-1" and .state == "running")] | length')
    [ "$on_failed" = 0 ] || die "round $r: $on_failed containers still run on worker-1"
    echo "$done_ms" >>"$WORK/k1"
    echo "${#MOVED[@]}" >>"$WORK/moved"
    log "round $r: ${#MOVED[@]} replicas ready elsewhere in $done_ms ms"
    # SIGTERM: a background job of a script ignores SIGINT
    kill -TERM "$EVENTS" 2>/dev/null || true
    wait "$EVENTS" 2>/dev/null || true
    EVENTS=""
    "$RC" -p "$P" down -t 1 >/dev/null 2>&1 || die "round $r: down failed"
done

K1=$(med "$WORK/k1")
verdict() { if lt "$1" "$2"; then echo "**met**"; else echo "**MISSED**"; fi; }
{
    echo "$BEGIN_MARK"
    echo "## k. A simulated node failing"
    echo
    echo "Written by \`just bench\` (bench/nodes.sh) on $STARTED; $ROUNDS rounds, rcompose"
    echo "$("$RC" --version | cut -d' ' -f2-), host image, three nodes and one pod of $REPLICAS replicas"
    echo "(ready ~50 ms after their start, exec readiness probe every 100 ms); $(sort -nu "$WORK/moved" | paste -sd/) replicas on the"
    echo "failed node (median); loadavg $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo
    echo "| target | rcompose median (min-max) | Kubernetes (documented default) | verdict |"
    echo "|---|---|---|---|"
    echo "| k1. \`node down\` to every replica of the node ready on the others < ${TARGET_MS} ms | ${K1} ms ($(minmax "$WORK/k1")) | ${K8S_EVICTION_S} s before eviction starts | $(verdict "$K1" "$TARGET_MS") |"
    echo
    echo "- Timed from just before \`rcompose node down worker-1\` until the last \`ready\` event of the"
    echo "  replicas that ran there (the supervisor's timestamps): SIGKILL of every container on"
    echo "  the node, their exits reaped, the scheduler placing each on worker-2 or worker-3, a new"
    echo "  network namespace with an address of the new node's block, the start, and the"
    echo "  readiness probe."
    echo "- Kubernetes waits for the node to be unreachable (40 s of missed heartbeats by default),"
    echo "  then 300 s of tolerations before evicting its pods; that is a documented constant here,"
    echo "  not a measurement (no cluster runs on this machine)."
    echo "$END_MARK"
} >"$WORK/section.md"
replace_section "$BEGIN_MARK" "$END_MARK" "$WORK/section.md" "$OUT"
log "done: $OUT"
sed -n '/^| /p' "$WORK/section.md" >&2
