#!/usr/bin/env bash
# `just bench`, part i: rolling updates under load (issue 7).
#
#   i1. Three replicas of an HTTP server (python3's http.server on the `host` image, ready by
#       a TCP probe every 1 s) behind a published port, with the update `max_surge: 1,
#       max_unavailable: 0`; four clients loop GET / on the port the whole time. Each round
#       changes the container's environment (V=vN) and runs `up -d`, which returns once the
#       rollout is complete: its time, ROUNDS times, and every request's outcome. Target:
#       zero failed requests during every rollout (issue 7, point 5).
#   i2. The same, with a version whose command exits at once (ROLLBACKS times): `up -d`
#       fails once the rollout is rolled back; its time, and the requests during it (the old
#       version keeps serving: zero failed requests too).
#   i3. redeploy: the same three replicas serving a `layers:` directory of their image
#       (`site`, at /srv), a `redeploy` rule on it and `rcompose watch` (debounce 100 ms)
#       beside the stack, the clients still looping. Each round writes site/index.html and
#       times, from just before the write, until the watcher prints that the pod was rolled
#       out (REDEPLOYS times). Target (issue 7): zero failed requests during every rollout;
#       the time is reported.
#
# No peer: Docker Compose recreates a changed service (stop, then start: no rolling update,
# docker/compose#13149) and podman-compose likewise; Kubernetes' Deployment is the model.
#
# Appends its section to docs/benchmarks.md (replacing one from an earlier run of this
# script). Run as root; needs python3. Removes the project and its temp dir, also on failure
# or Ctrl-C.
#
# Environment:
#   RCOMPOSE_BIN    use this binary (rcompose-init next to it) instead of building
#                   ${CARGO_TARGET_DIR:-target}/<host triple>/release/rcompose (static, see rc_build_release in bench/lib.sh)
#   OUT             report path (default docs/benchmarks.md)
#   ROUNDS (10)     rollouts measured
#   ROLLBACKS (3)   rollbacks measured
#   REDEPLOYS (5)   redeploys measured
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
OUT=${OUT:-$REPO/docs/benchmarks.md}
ROUNDS=${ROUNDS:-10}
ROLLBACKS=${ROLLBACKS:-3}
REDEPLOYS=${REDEPLOYS:-5}
BEGIN_MARK="<!-- bench/rollout.sh: begin -->"
END_MARK="<!-- bench/rollout.sh: end -->"

log() { printf '[bench rollout %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }

[ "$(id -u)" = 0 ] || die "run as root (containers need namespaces and cgroups)"
command -v python3 >/dev/null || die "python3 is missing (apt python3)"

RC=$(rc_binary)
[ -x "$RC" ] || die "no rcompose binary at $RC"
COMMIT=$(rc_commit)
PROJECT=br$$-ro
WORK=$(mktemp -d /tmp/rcbench-rollout.XXXXXX)
LOADER_PID=""
WATCH_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$LOADER_PID" ] && kill "$LOADER_PID" 2>/dev/null && wait "$LOADER_PID" 2>/dev/null
    [ -n "$WATCH_PID" ] && kill -INT "$WATCH_PID" 2>/dev/null && wait "$WATCH_PID" 2>/dev/null
    "$RC" -p "$PROJECT" down -t 1 >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# the manifest of i3: the server serves the image's `site` layer; a redeploy rule on it
site_manifest() {
    sed -e "s|@PORT@|$PORT|" >"$WORK/rcompose.yaml" <<'YAML'
images:
  site:
    layers: [ { source: site, target: /srv } ]
pods:
  web:
    replicas: 3
    restart: always
    labels: { app: web }
    update: { max_surge: 1, max_unavailable: 0, progress_deadline: 60s }
    containers:
      - name: web
        image: site
        command: [ python3, -m, http.server, "8000", --directory, /srv ]
        readiness: { tcp: { port: 8000 }, period: 1s }
services:
  web: { selector: { app: web }, ports: [ { port: 80, target: 8000, publish: @PORT@ } ] }
watch:
  - { paths: [site], action: redeploy, pods: [web] }
YAML
}

# manifest VERSION [COMMAND]
manifest() {
    local cmd=${2:-'mkdir -p /tmp/h \&\& echo $V > /tmp/h/index.html \&\& cd /tmp/h \&\& exec python3 -m http.server 8000'}
    sed -e "s|@V@|$1|" -e "s|@CMD@|$cmd|" -e "s|@PORT@|$PORT|" >"$WORK/rcompose.yaml" <<'YAML'
pods:
  web:
    replicas: 3
    restart: always
    labels: { app: web }
    update: { max_surge: 1, max_unavailable: 0, progress_deadline: 60s }
    containers:
      - name: web
        env: { V: "@V@" }
        command: [ sh, -c, '@CMD@' ]
        readiness: { tcp: { port: 8000 }, period: 1s }
services:
  web: { selector: { app: web }, ports: [ { port: 80, target: 8000, publish: @PORT@ } ] }
YAML
}

# four clients looping until $WORK/stop exists; per request one line: the body or ERR ...
cat >"$WORK/load.py" <<'PY'
import os, sys, threading, urllib.request
port, out, stop = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
f = open(out, "a", buffering=1)
def run():
    while not os.path.exists(stop):
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=15).read().decode().strip()
            line = body
        except Exception as e:
            line = "ERR " + repr(e)
        with lock:
            f.write(line + "\n")
ts = [threading.Thread(target=run) for _ in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
PY

cd "$WORK"
manifest v0
"$RC" -p "$PROJECT" up -d --wait >"$WORK/up.log" 2>&1 || die "up failed: $(tail -3 "$WORK/up.log")"
python3 "$WORK/load.py" "$PORT" "$WORK/requests.txt" "$WORK/stop" &
LOADER_PID=$!
sleep 1

: >"$WORK/h1.ms"
: >"$WORK/h2.ms"
ROLL_NOTES=()
# tally KIND FILE ROUND BEFORE T0 T1: the round's time into $WORK/FILE.ms and, half a second
# later, its line: the requests since line BEFORE of requests.txt and how many failed
tally() {
    local after failed
    echo $(($6 - $5)) >>"$WORK/$2.ms"
    sleep 0.5
    after=$(wc -l <"$WORK/requests.txt")
    failed=$(sed -n "$(($4 + 1)),${after}p" "$WORK/requests.txt" | grep -c '^ERR' || true)
    ROLL_NOTES+=("$1 $3: $(($6 - $5)) ms, $((after - $4)) requests, $failed failed")
    log "${ROLL_NOTES[-1]}"
}
for r in $(seq 1 "$ROUNDS"); do
    manifest "v$r"
    before=$(wc -l <"$WORK/requests.txt")
    t0=$(now_ms)
    if ! "$RC" -p "$PROJECT" up -d >"$WORK/roll.log" 2>&1; then
        die "rollout $r failed: $(tail -3 "$WORK/roll.log")"
    fi
    t1=$(now_ms)
    tally rollout h1 "$r" "$before" "$t0" "$t1"
done
for r in $(seq 1 "$ROLLBACKS"); do
    manifest "broken$r" 'exit 3'
    before=$(wc -l <"$WORK/requests.txt")
    t0=$(now_ms)
    if "$RC" -p "$PROJECT" up -d >"$WORK/roll.log" 2>&1; then
        die "the broken version $r was rolled out"
    fi
    t1=$(now_ms)
    grep -q "rolled back to revision" "$WORK/roll.log" || die "no rollback message: $(tail -3 "$WORK/roll.log")"
    tally rollback h2 "$r" "$before" "$t0" "$t1"
done
# i3: the site's image, and `rcompose watch` beside the stack (its store in the work dir)
mkdir -p "$WORK/site"
echo site0 >"$WORK/site/index.html"
site_manifest
STORE=(--store "$WORK/store")
if ! "$RC" "${STORE[@]}" -p "$PROJECT" up -d >"$WORK/roll.log" 2>&1; then
    die "up of the site's manifest failed: $(tail -3 "$WORK/roll.log")"
fi
"$RC" "${STORE[@]}" -p "$PROJECT" watch >"$WORK/watch.log" 2>&1 &
WATCH_PID=$!
for _ in $(seq 1 200); do grep -q '(debounce ' "$WORK/watch.log" && break; sleep 0.05; done
grep -q '(debounce ' "$WORK/watch.log" || die "rcompose watch did not start: $(tail -3 "$WORK/watch.log")"
: >"$WORK/i3.ms"
for r in $(seq 1 "$REDEPLOYS"); do
    done_before=$(grep -c 'rolled out' "$WORK/watch.log" || true)
    before=$(wc -l <"$WORK/requests.txt")
    t0=$(now_ms)
    echo "site$r" >"$WORK/site/index.html"
    t1=""
    for _ in $(seq 1 3000); do
        if [ "$(grep -c 'rolled out' "$WORK/watch.log" || true)" -gt "$done_before" ]; then
            t1=$(now_ms)
            break
        fi
        sleep 0.01
    done
    [ -n "$t1" ] || die "redeploy $r did not roll out within 30 s: $(tail -3 "$WORK/watch.log")"
    grep -q 'rollout failed' "$WORK/watch.log" && die "redeploy $r failed: $(tail -3 "$WORK/watch.log")"
    tally redeploy i3 "$r" "$before" "$t0" "$t1"
done
SERVED_SITE=$(grep -c "^site$REDEPLOYS\$" "$WORK/requests.txt" || true)
kill -INT "$WATCH_PID" 2>/dev/null || true
wait "$WATCH_PID" || true
WATCH_PID=""
touch "$WORK/stop"
wait "$LOADER_PID" || true
LOADER_PID=""
TOTAL=$(wc -l <"$WORK/requests.txt")
FAILED=$(grep -c '^ERR' "$WORK/requests.txt" || true)
SERVED_LAST=$(grep -c "^v$ROUNDS\$" "$WORK/requests.txt" || true)
SERVED_BROKEN=$(grep -c '^broken' "$WORK/requests.txt" || true)
"$RC" "${STORE[@]}" -p "$PROJECT" down -t 1 >/dev/null 2>&1 || die "down failed"

H1_MED=$(med "$WORK/h1.ms")
H2_MED=$(med "$WORK/h2.ms")
I3_MED=$(med "$WORK/i3.ms")
if [ "$FAILED" = 0 ] && [ "$SERVED_BROKEN" = 0 ]; then VERDICT="**met**"; else VERDICT="**MISSED**"; fi
{
    echo "$BEGIN_MARK"
    echo
    echo "## i. Rolling updates under load"
    echo
    echo "bench/rollout.sh (commit $COMMIT), $(date -u '+%Y-%m-%d %H:%M UTC'): three replicas of python3's"
    echo "http.server behind a published port (\`update: { max_surge: 1, max_unavailable: 0 }\`, TCP readiness"
    echo "every 1 s), four clients looping GET on the port throughout. Each rollout changes the"
    echo "container's environment and runs \`up -d\`, which returns when the rollout is complete; each"
    echo "rollback runs \`up -d\` with a command that exits at once, which fails once it is rolled back;"
    echo "each redeploy writes a page of the image's watched \`layers:\` directory beside \`rcompose watch\`."
    echo "No peer: Docker Compose and podman-compose stop and recreate a changed service."
    echo
    echo "| target | rcompose | verdict |"
    echo "|---|---|---|"
    echo "| zero failed requests during every rollout and rollback | $FAILED failed of $TOTAL | $VERDICT |"
    echo
    echo "| what | runs | median ms | min-max ms |"
    echo "|---|---|---|---|"
    echo "| rollout of 3 replicas, \`up -d\` until complete | $(count "$WORK/h1.ms") | $H1_MED | $(minmax "$WORK/h1.ms") |"
    echo "| rollback of a version that exits at once, \`up -d\` until it fails | $(count "$WORK/h2.ms") | $H2_MED | $(minmax "$WORK/h2.ms") |"
    echo "| redeploy: a write to a watched layer until \`rcompose watch\` printed the rollout complete | $(count "$WORK/i3.ms") | $I3_MED | $(minmax "$WORK/i3.ms") |"
    echo
    echo "Requests answered by the last version after its rollout: $SERVED_LAST; by a broken one: $SERVED_BROKEN;"
    echo "by the last redeployed page: $SERVED_SITE. The redeploy time includes the watcher's 100 ms debounce,"
    echo "the copy of the layer into the store, the image preparation and the rollout; Compose Watch waits"
    echo "500 ms before it acts and then recreates (no rollout), Tilt 200 ms (documented constants, not measured)."
    echo
    echo "<details><summary>per round</summary>"
    echo
    echo '```'
    printf '%s\n' "${ROLL_NOTES[@]}"
    echo '```'
    echo "</details>"
    echo
    echo "$END_MARK"
} >"$WORK/section.md"
replace_section "$BEGIN_MARK" "$END_MARK" "$WORK/section.md" "$OUT"
log "wrote $OUT"
