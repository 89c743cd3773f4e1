#!/usr/bin/env bash
# `just bench`, part h (after bench/balancer.sh): file watching (`rcompose watch`).
#
#   h1. sync: a stack of 3 replicas of a pod and a `sync` rule from `site/` to `/srv/site`;
#       `rcompose watch` (default debounce, 100 ms) runs beside it. Each round writes a new
#       content to site/page.html and times, from just before the write, until all 3
#       replicas show the new content (read from the host through /proc/PID/root, polled
#       every 2 ms). Target: median under 150 ms.
#   h2. restart: a pod whose service is ready about 50 ms after it starts (it sleeps 50 ms,
#       then touches /tmp/ready; an exec readiness probe tests for it) and a `restart` rule
#       on conf/app.conf. Each round writes the file and times, from just before the write,
#       until the supervisor's `ready` event of the restarted container (its timestamp, from
#       `rcompose events --format json`). Target: median under 500 ms.
#
# The peers are not run: Docker Compose Watch and Tilt are compared through their documented
# debounce floors (the quiet time they wait after a change before acting at all), constants
# below, not measurements: Compose Watch waits 500 ms, Tilt 200 ms. Their action time comes on
# top; rcompose's measured time includes its own 100 ms debounce.
#
# Appends its section to docs/benchmarks.md (replacing one from an earlier run of this
# script). Run as root. Removes the projects, the watcher and the temp dir it made, also on
# failure or Ctrl-C.
#
# Environment:
#   RCOMPOSE_BIN    use this binary (rcompose-init next to it) instead of building
#                   ${CARGO_TARGET_DIR:-target}/<host triple>/release/rcompose (static, see rc_build_release in bench/lib.sh)
#   OUT             report path (default docs/benchmarks.md)
#   ROUNDS (10)     rounds of each measurement
#   DEBOUNCE (100ms) the watcher's --debounce
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
OUT=${OUT:-$REPO/docs/benchmarks.md}
ROUNDS=${ROUNDS:-10}
DEBOUNCE=${DEBOUNCE:-100ms}
BEGIN_MARK="<!-- bench/watch.sh: begin -->"
END_MARK="<!-- bench/watch.sh: end -->"
SYNC_TARGET_MS=150
RESTART_TARGET_MS=500
# documented debounce floors of the peers (not measured here)
COMPOSE_DEBOUNCE_MS=500
TILT_DEBOUNCE_MS=200

log() { printf '[bench watch %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }

[ "$(id -u)" = 0 ] || die "run as root (containers need namespaces and cgroups)"
case "$ROUNDS" in '' | *[!0-9]* | 0) die "ROUNDS must be a positive integer, not '$ROUNDS'" ;; esac

RC=$(rc_binary)
[ -x "$RC" ] || die "no rcompose binary at $RC"
TAG=bw$$
WATCHER=""
EVENTS=""

cleanup() {
    local rc=$? d
    trap - EXIT INT TERM
    set +e
    for pid in $WATCHER $EVENTS; do
        kill -INT "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for d in /run/rcompose/"$TAG"-*; do
        [ -e "$d" ] && timeout 60 "$RC" -p "$(basename "$d")" down -t 1 >/dev/null 2>&1
    done
    rm -rf "$WORK"
    exit "$rc"
}
WORK=$(mktemp -d /tmp/rcbench-watch.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/data"
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

# starts `rcompose watch` on project $1 (manifest $2) in the background, waits until it watches
start_watcher() {
    "$RC" -f "$2" -p "$1" watch --debounce "$DEBOUNCE" >"$WORK/watch-$1.log" 2>&1 &
    WATCHER=$!
    for _ in $(seq 1 500); do
        grep -qF '(debounce ' "$WORK/watch-$1.log" && return 0
        sleep 0.01
    done
    die "rcompose watch did not start: $(cat "$WORK/watch-$1.log")"
}
stop_watcher() {
    kill -INT "$WATCHER" 2>/dev/null || true
    wait "$WATCHER" 2>/dev/null || true
    WATCHER=""
}

# ---------------------------------------------------------------------------------------------
log "h1: write to visible in 3 replicas (sync)"
mkdir -p "$WORK/sync/site"
echo start >"$WORK/sync/site/page.html"
cat >"$WORK/sync/rcompose.yaml" <<'EOF'
pods:
  web:
    replicas: 3
    containers: [ { name: web, command: [ sleep, "3600" ] } ]
watch:
  - { paths: [site], action: sync, pods: [web], target: /srv/site }
EOF
p=$TAG-sync
"$RC" -f "$WORK/sync/rcompose.yaml" -p "$p" up -d >/dev/null 2>&1 || die "up of the sync stack failed"
mapfile -t PIDS < <("$RC" -p "$p" ps --format json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
[ "${#PIDS[@]}" = 3 ] || die "expected 3 running replicas, found ${#PIDS[@]}"
start_watcher "$p" "$WORK/sync/rcompose.yaml"
for r in $(seq 1 "$ROUNDS"); do
    content="round $r $RANDOM"
    t0=$(now_ms)
    echo "$content" >"$WORK/sync/site/page.html"
    ok=0
    for _ in $(seq 1 2500); do
        ok=1
        for pid in "${PIDS[@]}"; do
            # `read`, a builtin: no process per poll
            line=""
            read -r line 2>/dev/null <"/proc/$pid/root/srv/site/page.html" || true
            [ "$line" = "$content" ] || { ok=0; break; }
        done
        [ "$ok" = 1 ] && break
        sleep 0.002
    done
    t1=$(now_ms)
    [ "$ok" = 1 ] || die "round $r: the content did not reach every replica within 5 s: $(tail -5 "$WORK/watch-$p.log")"
    echo $((t1 - t0)) >>"$WORK/data/sync"
    sleep 0.3
done
stop_watcher
"$RC" -p "$p" down -t 1 >/dev/null 2>&1

# ---------------------------------------------------------------------------------------------
log "h2: write to restarted pod ready again (restart)"
mkdir -p "$WORK/restart/conf"
echo 0 >"$WORK/restart/conf/app.conf"
cat >"$WORK/restart/rcompose.yaml" <<'EOF'
pods:
  app:
    containers:
      - name: app
        command: [ sh, -c, "rm -f /tmp/ready; sleep 0.05; touch /tmp/ready; exec sleep 3600" ]
        readiness: { exec: [ test, -f, /tmp/ready ] }
watch:
  - { paths: [conf], action: restart, pods: [app] }
EOF
p=$TAG-restart
"$RC" -f "$WORK/restart/rcompose.yaml" -p "$p" up -d --wait >/dev/null 2>&1 || die "up of the restart stack failed"
"$RC" -p "$p" events --format json >"$WORK/events.jsonl" &
EVENTS=$!
start_watcher "$p" "$WORK/restart/rcompose.yaml"
sleep 0.3
for r in $(seq 1 "$ROUNDS"); do
    before=$(grep -c '"event":"ready"' "$WORK/events.jsonl" || true)
    t0=$(now_ms)
    echo "$r" >"$WORK/restart/conf/app.conf"
    n=$before
    for _ in $(seq 1 1000); do
        n=$(grep -c '"event":"ready"' "$WORK/events.jsonl" || true)
        [ "$n" -gt "$before" ] && break
        sleep 0.01
    done
    [ "$n" -gt "$before" ] || die "round $r: no ready event within 10 s: $(tail -5 "$WORK/watch-$p.log")"
    t1=$(grep '"event":"ready"' "$WORK/events.jsonl" | tail -1 | sed 's/.*"time_ms":\([0-9]*\).*/\1/')
    echo $((t1 - t0)) >>"$WORK/data/restart"
    sleep 0.3
done
stop_watcher
"$RC" -p "$p" down -t 1 >/dev/null 2>&1
kill -INT "$EVENTS" 2>/dev/null || true
wait "$EVENTS" 2>/dev/null || true
EVENTS=""

# ---------------------------------------------------------------------------------------------
SYNC=$(med "$WORK/data/sync")
RESTART=$(med "$WORK/data/restart")
verdict() { if lt "$1" "$2"; then echo "**met**"; else echo "**MISSED**"; fi; }
{
    echo "$BEGIN_MARK"
    echo "## h. File watching: sync and restart"
    echo
    echo "Written by \`just bench\` (bench/watch.sh) on $STARTED; $ROUNDS rounds each,"
    echo "rcompose $("$RC" --version | cut -d' ' -f2) (commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo n/a)), host image, \`rcompose watch --debounce $DEBOUNCE\`, loadavg $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo
    echo "| target | rcompose median (min-max) | verdict |"
    echo "|---|---|---|"
    echo "| h1. \`sync\`: a file write to the new content visible in all 3 replicas < ${SYNC_TARGET_MS} ms | ${SYNC} ms ($(minmax "$WORK/data/sync")) | $(verdict "$SYNC" "$SYNC_TARGET_MS") |"
    echo "| h2. \`restart\`: a file write to the restarted pod ready again (service ready ~50 ms after its start) < ${RESTART_TARGET_MS} ms | ${RESTART} ms ($(minmax "$WORK/data/restart")) | $(verdict "$RESTART" "$RESTART_TARGET_MS") |"
    echo
    echo "Against the debounce floors of the peers (documented constants, not measured here: the"
    echo "quiet time each waits after a change before it acts at all; its action comes on top):"
    echo
    echo "| tool | debounce before acting | h1 sync median, or the floor | h2 restart median, or the floor |"
    echo "|---|---|---|---|"
    echo "| rcompose \`watch\` | $DEBOUNCE (\`--debounce\`) | ${SYNC} ms, measured | ${RESTART} ms, measured |"
    echo "| Docker Compose Watch | ${COMPOSE_DEBOUNCE_MS} ms | >= ${COMPOSE_DEBOUNCE_MS} ms | >= ${COMPOSE_DEBOUNCE_MS} ms |"
    echo "| Tilt | ${TILT_DEBOUNCE_MS} ms | >= ${TILT_DEBOUNCE_MS} ms | >= ${TILT_DEBOUNCE_MS} ms |"
    echo
    echo "- h1 times, from just before the write, until the new content is read in every replica"
    echo "  (through /proc/PID/root, polled every 2 ms): inotify, the debounce, the state file"
    echo "  read, and a temp file written and renamed in each container's root (openat2"
    echo "  RESOLVE_IN_ROOT)."
    echo "- h2 times, from just before the write, until the supervisor's \`ready\` event of the"
    echo "  restarted container (its timestamp in \`rcompose events\`): the debounce, the \`restart\`"
    echo "  control request (stop with SIGTERM, start), the service's 50 ms, and the readiness"
    echo "  probe (exec, every 100 ms while the container starts)."
    echo "$END_MARK"
} >"$WORK/section.md"
# keep what the other parts wrote; replace an earlier section of this script
replace_section "$BEGIN_MARK" "$END_MARK" "$WORK/section.md" "$OUT"
log "done: $OUT"
sed -n '/^| /p' "$WORK/section.md" >&2
