#!/usr/bin/env bash
# `just bench`, part f (after bench/memory.sh): start order by readiness, and self-healing.
#
#   f1. `up -d --wait` of a stack whose `db` becomes ready 1 s after it starts (an exec
#       readiness probe) and whose 3 dependents (`depends_on: healthy`) are ready at once:
#       the time until the command returns, ROUNDS times. The dependency's own second is the
#       floor; what rcompose adds on top is what is judged (target: under 0.3 s, so the
#       dependents are released "in about 1 s", as issue 5 asks).
#       Peers, in the same rounds (the tools take turns, the first one rotating per round):
#       - docker-compose 1.29 (Debian) with Docker 20.10, the equivalent compose file: db's
#         `healthcheck` runs test -f /tmp/ready every 1 s (a second row: every 100 ms), the
#         dependents have `depends_on: { db: { condition: service_healthy } }` and a check
#         that passes at once. Timed: `up -d` until it returns (1.29 has no --wait; it starts
#         the dependents once db is healthy but does not wait for their own health).
#       - podman-compose (pip) with podman, same file (1 s): podman 4.3 runs healthchecks
#         from systemd timers, there is no systemd here, and podman-compose ignores
#         `service_healthy` ("Ignored db condition check"), so its time has no gate in it.
#       Whether the gate held is checked for every tool: the start time of the dependents'
#       first process minus db's (/proc/PID/stat), which is >= 1 s only if they waited.
#       The peers' `down -t 0` is not timed.
#   f2. restart latency: `restart: always` with `backoff: { initial: 0s }`, kill -9 of the
#       container's command from the host, time until the supervisor's `started` event of the
#       new run (from `rcompose events --format json`), ROUNDS times; target: under 200 ms.
#
# Docker: a dockerd that answers on $DOCKER_HOST (default unix:///var/run/docker.sock) is used
# and left running. Otherwise this script starts /usr/sbin/dockerd in its own session with its
# socket, config, key.json, data root and exec root in the script's temp dir and
# --bridge=none --iptables=false --ip-forward=false (no docker0, no iptables rules, no sysctl;
# compose's own bridge network still works), and stops it by its PID at the end, removing its
# data root, the /run/docker and /run/containerd dirs it made and any link it left. Image: a
# rootfs of /bin/busybox (busybox-static) and links sh, sleep, test, touch, true, imported
# with `docker import` and `podman import` under a per-run name and removed at the end.
# Podman runs with CONTAINERS_CONF set to a copy of its containers.conf in the temp dir that
# adds `default_ulimits` (this host's hard limits are below podman's defaults; nothing under
# /etc is written) and with runtime crun, or runc when cgroup2 holds controllers (crun 1.8
# refuses that hybrid layout).
#
# Prerequisites, not installed by this script (a missing one is an error that names it,
# unless PEERS=0): apt docker.io docker-compose podman busybox-static, pip podman-compose
# (bench/run.sh, which runs before it in `just bench`, installs them all).
#
# Appends its section to docs/benchmarks.md (replacing one from an earlier run of this
# script). Run as root. Removes every project, container, network, image and temp dir it
# made, and the dockerd it started, also on failure or Ctrl-C.
#
# Environment:
#   RCOMPOSE_BIN    use this binary (rcompose-init next to it) instead of building
#                   ${CARGO_TARGET_DIR:-target}/<host triple>/release/rcompose (static, see rc_build_release in bench/lib.sh)
#   OUT             report path (default docs/benchmarks.md)
#   ROUNDS (10)     rounds of each measurement
#   PEERS (1)       0: measure rcompose only, no docker-compose / podman-compose rows
#   PODMAN_RUNTIME  crun or runc for podman-compose (default: see above)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
OUT=${OUT:-$REPO/docs/benchmarks.md}
ROUNDS=${ROUNDS:-10}
PEERS=${PEERS:-1}
BEGIN_MARK="<!-- bench/lifecycle.sh: begin -->"
END_MARK="<!-- bench/lifecycle.sh: end -->"
WAIT_EXTRA_TARGET_MS=300
RESTART_TARGET_MS=200
DEPENDENTS=(api worker web)
DOCKER=/usr/bin/docker # Debian's client (a newer one may be first in PATH)
DOCKERD=/usr/sbin/dockerd
BUSYBOX=/bin/busybox

log() { printf '[bench lifecycle %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }

[ "$(id -u)" = 0 ] || die "run as root (containers need namespaces and cgroups)"
case "$PEERS" in 0 | 1) ;; *) die "PEERS must be 0 or 1, not '$PEERS'" ;; esac

# the peers' tools, checked before anything is built or made
DHOST=${DOCKER_HOST:-unix:///var/run/docker.sock}
DOCKERD_OURS=0
if [ "$PEERS" = 1 ]; then
    missing=()
    [ -x "$DOCKER" ] || missing+=("$DOCKER (apt docker.io)")
    command -v docker-compose >/dev/null || missing+=("docker-compose (apt docker-compose)")
    command -v podman >/dev/null || missing+=("podman (apt podman)")
    command -v podman-compose >/dev/null || missing+=("podman-compose (pip podman-compose)")
    # a dynamic busybox would need a libc in the image: ldd fails on a static one
    if [ ! -x "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
        missing+=("a static $BUSYBOX (apt busybox-static)")
    fi
    if ! { [ -x "$DOCKER" ] && DOCKER_HOST=$DHOST timeout 20 "$DOCKER" info >/dev/null 2>&1; }; then
        DOCKERD_OURS=1
        [ -x "$DOCKERD" ] || missing+=("$DOCKERD (apt docker.io; no dockerd answers on $DHOST)")
    fi
    list=$(printf '%s; ' "${missing[@]}")
    [ "${#missing[@]}" = 0 ] || die "missing for the f1 peers (install them, or PEERS=0 to measure rcompose only): ${list%; }"
fi

RC=$(rc_binary)
[ -x "$RC" ] || die "no rcompose binary at $RC"
TAG=bl$$
DOCKER_IMG=rcbench-$TAG:latest
PODMAN_IMG=localhost/rcbench-$TAG:latest
DOCKER_USED=0 # docker / podman commands were run (so cleanup asks them)
PODMAN_USED=0
DOCKERD_PID=""

dk() { DOCKER_HOST=$DHOST "$DOCKER" "$@"; }
dkc() { DOCKER_HOST=$DHOST docker-compose "$@"; }
pm() { CONTAINERS_CONF=$PCONF podman "$@"; }
pmc() { CONTAINERS_CONF=$PCONF podman-compose "--podman-args=--runtime=$PODMAN_RUNTIME" "$@"; }
# a process is alive (not gone, not a zombie)
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]; }

# what dockerd and podman may create that this script must take away again
RUN_DOCKER_BEFORE=0
[ -e /run/docker ] && RUN_DOCKER_BEFORE=1
RUN_CONTAINERD_BEFORE=0
[ -e /run/containerd ] && RUN_CONTAINERD_BEFORE=1
LINKS_BEFORE=$(cd /sys/class/net && printf '%s\n' *)
STORAGE_BEFORE=0
[ -e /var/lib/containers ] && STORAGE_BEFORE=1
CG_BEFORE=$(ls -d /sys/fs/cgroup/*/libpod_parent 2>/dev/null || true)

stop_dockerd() {
    local pid=$DOCKERD_PID cpid="" i l d m links
    [ -n "$pid" ] || return 0
    # its bridges (docker0 and br-<network id>) are removed by `down`; these are in case not
    links="docker0 $(dk network ls -q 2>/dev/null | sed 's/^/br-/' | tr '\n' ' ')"
    [ -f "$WORK/docker/exec/containerd/containerd.pid" ] && cpid=$(cat "$WORK/docker/exec/containerd/containerd.pid")
    kill "$pid" 2>/dev/null
    for i in $(seq 1 150); do
        alive "$pid" || break
        sleep 0.2
    done
    if alive "$pid"; then
        log "dockerd (pid $pid) still running after 30 s: SIGKILL"
        kill -9 "$pid"
        sleep 0.5
    fi
    wait "$pid" 2>/dev/null
    # its containerd normally ends with it; not after a SIGKILL of dockerd
    if [ -n "$cpid" ] && alive "$cpid" && [ "$(cat "/proc/$cpid/comm")" = containerd ]; then
        kill "$cpid"
        sleep 1
        alive "$cpid" && kill -9 "$cpid"
    fi
    log "stopped dockerd (pid $pid)"
    # mounts it may have left under its data root, then what it made outside the temp dir
    awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m"
    done
    for d in /run/docker:"$RUN_DOCKER_BEFORE" /run/containerd:"$RUN_CONTAINERD_BEFORE"; do
        [ "${d#*:}" = 1 ] || [ ! -d "${d%:*}" ] || find "${d%:*}" -depth -type d -empty -delete
        [ "${d#*:}" = 1 ] || [ ! -e "${d%:*}" ] || log "WARNING: ${d%:*} (made by this run's dockerd) is not empty: left"
    done
    for l in $links; do
        [ -e "/sys/class/net/$l" ] && ! grep -qxF "$l" <<<"$LINKS_BEFORE" && ip link del "$l" && log "removed link $l left by dockerd"
    done
}

cleanup() {
    local rc=$? d id p
    trap - EXIT INT TERM
    set +e
    # a Ctrl-C during a command whose stderr goes to a log in $WORK must not hide what follows
    exec 2>&"$STDERR"
    for d in /run/rcompose/"$TAG"-*; do
        [ -e "$d" ] && timeout 60 "$RC" -p "$(basename "$d")" down -t 1 >/dev/null 2>&1
    done
    if [ "$PODMAN_USED" = 1 ]; then
        for id in $(pm ps -a --filter label=io.podman.compose.project --format \
            '{{.ID}} {{index .Labels "io.podman.compose.project"}}' 2>/dev/null | awk -v t="$TAG-" 'index($2, t) == 1 {print $1}'); do
            pm rm -f -t 0 "$id" >/dev/null 2>&1
        done
        for p in $(pm pod ls --format '{{.Name}}' 2>/dev/null | grep "^pod_$TAG-"); do pm pod rm -f "$p" >/dev/null 2>&1; done
        for p in $(pm network ls --format '{{.Name}}' 2>/dev/null | grep "^$TAG-"); do pm network rm -f "$p" >/dev/null 2>&1; done
        pm rmi -f "$PODMAN_IMG" >/dev/null 2>&1
        # podman's storage, if this run made it and nothing else is in it
        if [ "$STORAGE_BEFORE" = 0 ] && [ -d /var/lib/containers ] && [ -z "$(pm ps -aq 2>/dev/null)" ] &&
            [ -z "$(pm images -q 2>/dev/null)" ] && [ -z "$(pm pod ls -q 2>/dev/null)" ]; then
            pm system reset --force >/dev/null 2>&1
            rm -rf /var/lib/containers
        fi
        # the empty libpod_parent cgroups podman made (only if they were not there before)
        for d in /sys/fs/cgroup/*/libpod_parent; do
            [ -d "$d" ] || continue
            grep -qxF "$d" <<<"$CG_BEFORE" || find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
        done
    fi
    if [ "$DOCKER_USED" = 1 ]; then
        for id in $(dk ps -a --filter label=com.docker.compose.project --format \
            '{{.ID}} {{.Label "com.docker.compose.project"}}' 2>/dev/null | awk -v t="$TAG-" 'index($2, t) == 1 {print $1}'); do
            dk rm -f "$id" >/dev/null 2>&1
        done
        for p in $(dk network ls --format '{{.Name}}' 2>/dev/null | grep "^$TAG-"); do dk network rm "$p" >/dev/null 2>&1; done
        dk rmi -f "$DOCKER_IMG" >/dev/null 2>&1
    fi
    stop_dockerd
    rm -rf "$WORK"
    exit "$rc"
}
WORK=$(mktemp -d /tmp/rcbench-lifecycle.XXXXXX)
PEER_DIR=$WORK/peers
PCONF=$PEER_DIR/containers.conf
exec {STDERR}>&2
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/data"
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
CLK_TCK=$(getconf CLK_TCK)

# start time of a process, in ms since boot
start_ms() { echo $(( $(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20) * 1000 / CLK_TCK )); }
# gap WHAT DB_PID DEPENDENT_PID...: ms from db's first process start to the earliest dependent's
gap() {
    local what=$1 db=$2 min="" t p
    shift 2
    [ "$#" = "${#DEPENDENTS[@]}" ] || die "$what: $# dependents' pids, not ${#DEPENDENTS[@]}"
    for p in "$db" "$@"; do
        if ! [[ "$p" =~ ^[1-9][0-9]*$ ]] || [ ! -r "/proc/$p/stat" ]; then die "$what: no running process for pid '$p'"; fi
    done
    for p in "$@"; do
        t=$(start_ms "$p")
        if [ -z "$min" ] || [ "$t" -lt "$min" ]; then min=$t; fi
    done
    echo $((min - $(start_ms "$db")))
}

# ---------------------------------------------------------------------------------------------
# the peers: image, dockerd, podman config, compose files
if [ "$PEERS" = 1 ]; then
    log "f1 peers: busybox image, dockerd, compose files"
    mkdir -p "$PEER_DIR/rootfs/bin" "$PEER_DIR/rootfs/tmp"
    chmod 1777 "$PEER_DIR/rootfs/tmp"
    cp "$BUSYBOX" "$PEER_DIR/rootfs/bin/busybox"
    for l in sh sleep test touch true; do ln -s busybox "$PEER_DIR/rootfs/bin/$l"; done

    if [ "$DOCKERD_OURS" = 1 ]; then
        mkdir -p "$WORK/docker"
        DHOST=unix://$WORK/docker/docker.sock
        printf '{ "deprecated-key-path": "%s" }\n' "$WORK/docker/key.json" >"$WORK/docker/daemon.json"
        # own session: a Ctrl-C on the terminal reaches this script, which stops it in order
        setsid "$DOCKERD" --data-root "$WORK/docker/root" --exec-root "$WORK/docker/exec" \
            --pidfile "$WORK/docker/dockerd.pid" -H "$DHOST" --config-file "$WORK/docker/daemon.json" \
            --bridge=none --iptables=false --ip-forward=false </dev/null >"$WORK/docker/dockerd.log" 2>&1 &
        DOCKERD_PID=$!
        for _ in $(seq 1 150); do
            dk info >/dev/null 2>&1 && break
            alive "$DOCKERD_PID" || die "dockerd exited: $(tail -3 "$WORK/docker/dockerd.log")"
            sleep 0.2
        done
        dk info >/dev/null 2>&1 || die "dockerd did not answer within 30 s: $(tail -3 "$WORK/docker/dockerd.log")"
        [ "$(cat "$WORK/docker/dockerd.pid")" = "$DOCKERD_PID" ] ||
            die "dockerd's pid file says $(cat "$WORK/docker/dockerd.pid"), not $DOCKERD_PID"
        log "started dockerd (pid $DOCKERD_PID, data root $WORK/docker/root)"
        DOCKERD_NOTE="started by this script (data root in its temp dir, --bridge=none --iptables=false --ip-forward=false)"
    else
        log "using the dockerd that answers on $DHOST"
        DOCKERD_NOTE="already running on $DHOST (used, left running)"
    fi
    DOCKER_USED=1
    tar -C "$PEER_DIR/rootfs" -c . | dk import --change 'ENV PATH=/bin' - "$DOCKER_IMG" >/dev/null ||
        die "docker import failed"

    # podman: its own containers.conf (the system one + default_ulimits), crun or runc
    NOFILE=$(ulimit -Hn)
    [ "$NOFILE" = unlimited ] && NOFILE=1048576
    NPROC=$(ulimit -Hu)
    # podman lowers its own RLIMIT_NPROC to 32768 before starting the runtime
    if [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 32768 ]; then NPROC=32768; fi
    base=/dev/null
    for f in /etc/containers/containers.conf /usr/share/containers/containers.conf; do
        if [ -f "$f" ]; then base=$f && break; fi
    done
    awk -v u="default_ulimits = [\"nofile=$NOFILE:$NOFILE\", \"nproc=$NPROC:$NPROC\"]" '
        /^[ \t]*default_ulimits[ \t]*=/ {have=1}
        {lines[NR]=$0}
        END {
            for (i = 1; i <= NR; i++) {
                print lines[i]
                if (!have && lines[i] ~ /^\[containers\][ \t]*$/) {print u; done=1}
            }
            if (!have && !done) {print "[containers]"; print u}
        }' "$base" >"$PCONF"
    if [ -z "${PODMAN_RUNTIME:-}" ]; then
        PODMAN_RUNTIME=crun
        [ -z "$(tr -d ' \n' </sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ] || PODMAN_RUNTIME=runc
    fi
    PODMAN_USED=1
    tar -C "$PEER_DIR/rootfs" -c . | pm import --change 'ENV PATH=/bin' - "$PODMAN_IMG" >/dev/null 2>"$PEER_DIR/import.log" ||
        die "podman import failed: $(tail -3 "$PEER_DIR/import.log")"

    compose_file() { # IMAGE INTERVAL
        printf 'services:\n  db:\n    image: %s\n' "$1"
        printf "    command: [ sh, -c, 'sleep 1; touch /tmp/ready; exec sleep 3600' ]\n"
        printf '    healthcheck: { test: [ CMD, test, -f, /tmp/ready ], interval: %s, timeout: 1s, retries: 30 }\n' "$2"
        for s in "${DEPENDENTS[@]}"; do
            printf '  %s:\n    image: %s\n    command: [ sleep, "3600" ]\n' "$s" "$1"
            printf '    depends_on: { db: { condition: service_healthy } }\n'
            printf '    healthcheck: { test: [ CMD, "true" ], interval: %s, timeout: 1s, retries: 30 }\n' "$2"
        done
    }
    compose_file "$DOCKER_IMG" 1s >"$PEER_DIR/dc1000.yml"
    compose_file "$DOCKER_IMG" 100ms >"$PEER_DIR/dc100.yml"
    compose_file "$PODMAN_IMG" 1s >"$PEER_DIR/pc1000.yml"

    DC_VERSION=$(docker-compose version --short 2>/dev/null || echo "?")
    DOCKERD_VERSION=$(dk version --format '{{.Server.Version}}' 2>/dev/null || echo "?")
    PC_VERSION=$(podman-compose --version 2>/dev/null | sed -n 's/^podman-compose version //p' | head -1)
    PODMAN_VERSION=$(podman --version | awk '{print $NF}')
    RUNTIME_VERSION=$("$PODMAN_RUNTIME" --version 2>/dev/null | head -1 | awk '{print $NF}')
fi

# ---------------------------------------------------------------------------------------------
log "f1: up -d --wait, db ready after 1 s, 3 dependents$([ "$PEERS" = 1 ] && echo "; docker-compose, podman-compose")"
cat >"$WORK/gate.yaml" <<'EOF'
pods:
  db:
    containers:
      - name: db
        command: [ sh, -c, 'sleep 1; touch /tmp/ready; exec sleep 3600' ]
        readiness: { exec: [ test, -f, /tmp/ready ], period: 10s }
  api:
    depends_on: { db: { condition: healthy } }
    containers: [ { name: api, command: [ sleep, "3600" ], readiness: { exec: [ "true" ] } } ]
  worker:
    depends_on: { db: { condition: healthy } }
    containers: [ { name: worker, command: [ sleep, "3600" ], readiness: { exec: [ "true" ] } } ]
  web:
    depends_on: { db: { condition: healthy } }
    containers: [ { name: web, command: [ sleep, "3600" ], readiness: { exec: [ "true" ] } } ]
EOF
f1_rcompose() { # ROUND
    local p=$TAG-gate-$1 t0 t1 pids
    t0=$(now_ms)
    "$RC" -f "$WORK/gate.yaml" -p "$p" up -d --wait >/dev/null 2>"$WORK/up.log" || die "up failed: $(tail -3 "$WORK/up.log")"
    t1=$(now_ms)
    echo $((t1 - t0)) >>"$WORK/data/gate"
    # "pod NAME" / "pid N" pairs from the pretty-printed JSON of `ps`
    pids=$("$RC" -p "$p" ps --format json | awk -F': ' '
        /"pod":/ {pod=$2; gsub(/[",]/, "", pod)}
        /"pid":/ {pid=$2; gsub(/[",]/, "", pid); print pod, pid}')
    # shellcheck disable=SC2046 # one word per pid
    gap "rcompose round $1" "$(awk '$1=="db"{print $2}' <<<"$pids")" $(awk '$1!="db"{print $2}' <<<"$pids") >>"$WORK/data/gate-gap"
    "$RC" -p "$p" down -t 1 >/dev/null 2>&1
}
f1_docker() { # ROUND INTERVAL_MS
    local p=$TAG-dc$2-$1 t0 t1 s pids=()
    t0=$(now_ms)
    dkc -f "$PEER_DIR/dc$2.yml" -p "$p" up -d >"$PEER_DIR/up.log" 2>&1 ||
        die "docker-compose up failed: $(tail -3 "$PEER_DIR/up.log")"
    t1=$(now_ms)
    echo $((t1 - t0)) >>"$WORK/data/dc$2"
    for s in db "${DEPENDENTS[@]}"; do pids+=("$(dk inspect -f '{{.State.Pid}}' "${p}_${s}_1" || true)"); done
    gap "docker-compose round $1" "${pids[@]}" >>"$WORK/data/dc$2-gap"
    dkc -f "$PEER_DIR/dc$2.yml" -p "$p" down -t 0 >"$PEER_DIR/down.log" 2>&1 ||
        die "docker-compose down failed: $(tail -3 "$PEER_DIR/down.log")"
}
f1_podman() { # ROUND
    local p=$TAG-pc-$1 t0 t1 s pids=()
    t0=$(now_ms)
    pmc -f "$PEER_DIR/pc1000.yml" -p "$p" up -d >"$PEER_DIR/up.log" 2>&1 ||
        die "podman-compose up failed: $(tail -3 "$PEER_DIR/up.log")"
    t1=$(now_ms)
    echo $((t1 - t0)) >>"$WORK/data/pc"
    grep -q 'Ignored db condition check' "$PEER_DIR/up.log" && echo "$1" >>"$WORK/data/pc-ignored"
    for s in db "${DEPENDENTS[@]}"; do pids+=("$(pm inspect -f '{{.State.Pid}}' "${p}_${s}_1" 2>/dev/null || true)"); done
    gap "podman-compose round $1" "${pids[@]}" >>"$WORK/data/pc-gap"
    pmc -f "$PEER_DIR/pc1000.yml" -p "$p" down -t 0 >"$PEER_DIR/down.log" 2>&1 ||
        die "podman-compose down failed: $(tail -3 "$PEER_DIR/down.log")"
}
TOOLS=("f1_rcompose")
[ "$PEERS" = 0 ] || TOOLS+=("f1_docker 1000" "f1_docker 100" "f1_podman")
for r in $(seq 1 "$ROUNDS"); do
    for i in "${!TOOLS[@]}"; do
        read -r fn arg <<<"${TOOLS[$(((r - 1 + i) % ${#TOOLS[@]}))]}"
        "$fn" "$r" ${arg:+"$arg"}
    done
done

# ---------------------------------------------------------------------------------------------
log "f2: restart latency after kill -9 (backoff 0 s)"
cat >"$WORK/heal.yaml" <<'EOF'
pods:
  app:
    restart: always
    backoff: { initial: 0s }
    containers: [ { name: app, command: [ sleep, "3600" ] } ]
EOF
p=$TAG-heal
"$RC" -f "$WORK/heal.yaml" -p "$p" up -d >/dev/null 2>&1 || die "up of the restart stack failed"
"$RC" -p "$p" events --format json >"$WORK/events.jsonl" &
EVENTS=$!
sleep 0.3
for r in $(seq 1 "$ROUNDS"); do
    init=$("$RC" -p "$p" ps --format json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p' | head -1)
    [ -n "$init" ] || die "no running container in round $r"
    cmd=$(cut -d' ' -f1 "/proc/$init/task/$init/children")
    before=$(grep -c '"event":"started"' "$WORK/events.jsonl" || true)
    t0=$(now_ms)
    kill -9 "$cmd"
    for _ in $(seq 1 500); do
        n=$(grep -c '"event":"started"' "$WORK/events.jsonl" || true)
        [ "$n" -gt "$before" ] && break
        sleep 0.01
    done
    t1=$(grep '"event":"started"' "$WORK/events.jsonl" | tail -1 | sed 's/.*"time_ms":\([0-9]*\).*/\1/')
    [ "$n" -gt "$before" ] || die "no restart in round $r"
    echo $((t1 - t0)) >>"$WORK/data/restart"
    sleep 0.2
done
"$RC" -p "$p" down -t 1 >/dev/null 2>&1
wait "$EVENTS" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
GATE=$(med "$WORK/data/gate")
EXTRA=$(awk -v g="$GATE" 'BEGIN{printf "%.1f", g-1000}')
RESTART=$(med "$WORK/data/restart")
verdict() { if lt "$1" "$2"; then echo "**met**"; else echo "**MISSED**"; fi; }
# the gate held in a round if the first dependent started >= 1 s after db (db is ready 1 s
# after its start at the earliest)
held() {
    local n k
    n=$(count "$1")
    k=$(awk '$1 >= 1000' "$1" | grep -c . || true)
    [ -n "$n" ] || { echo "n/a"; return; }
    if [ "$k" = "$n" ]; then echo "held ($k of $n rounds)"; elif [ "$k" = 0 ]; then echo "**not held** (0 of $n rounds)"; else echo "held in $k of $n rounds"; fi
}
f1_row() { # TOOL COMMAND DATA_NAME GATE_NOTE
    local m
    m=$(med "$WORK/data/$3")
    echo "| $1 | $2 | $m ms ($(minmax "$WORK/data/$3")) | $(ratio "$m" "$GATE") | $(med "$WORK/data/$3-gap") ms ($(minmax "$WORK/data/$3-gap")) | $(held "$WORK/data/$3-gap")$4 |"
}
{
    echo "$BEGIN_MARK"
    echo "## f. Start order by readiness, and self-healing"
    echo
    echo "Written by \`just bench\` (bench/lifecycle.sh) on $STARTED; $ROUNDS rounds each,"
    echo "rcompose $("$RC" --version | cut -d' ' -f2) (commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo n/a)), host image, loadavg $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo
    echo "| target | rcompose median (min-max) | verdict |"
    echo "|---|---|---|"
    echo "| f1. \`up -d --wait\`: db ready 1 s after its start, 3 dependents \`depends_on: healthy\`; time to return minus the dependency's 1 s < ${WAIT_EXTRA_TARGET_MS} ms | ${GATE} ms ($(minmax "$WORK/data/gate")), so ${EXTRA} ms on top of the dependency | $(verdict "$EXTRA" "$WAIT_EXTRA_TARGET_MS") |"
    echo "| f2. kill -9 of a container's command to its \`started\` event again (\`restart: always\`, \`backoff: { initial: 0s }\`) < ${RESTART_TARGET_MS} ms | ${RESTART} ms ($(minmax "$WORK/data/restart")) | $(verdict "$RESTART" "$RESTART_TARGET_MS") |"
    echo
    echo "f1 side by side (the same stack, the tools taking turns within each round):"
    echo
    echo "| tool | timed | median (min-max) | ratio to rcompose | dependents' start after db's, median (min-max) | gate (dependents >= 1 s after db) |"
    echo "|---|---|---|---|---|---|"
    f1_row rcompose "\`up -d --wait\` (returns when db and the 3 dependents are ready)" gate ""
    if [ "$PEERS" = 1 ]; then
        f1_row "docker-compose $DC_VERSION, healthcheck interval 1 s" "\`up -d\` (returns when the dependents are started)" dc1000 ""
        f1_row "docker-compose $DC_VERSION, healthcheck interval 100 ms" "\`up -d\` (same)" dc100 ""
        f1_row "podman-compose $PC_VERSION, healthcheck interval 1 s" "\`up -d\` (returns when the dependents are started)" pc \
            "; \"Ignored db condition check\" logged in $(count "$WORK/data/pc-ignored" | grep . || echo 0) of $ROUNDS rounds"
    fi
    echo
    if [ "$PEERS" = 1 ]; then
        echo "Peers: docker-compose $DC_VERSION (Debian) with Docker $DOCKERD_VERSION, dockerd $DOCKERD_NOTE;"
        echo "podman-compose $PC_VERSION (pip) with podman $PODMAN_VERSION, runtime $PODMAN_RUNTIME $RUNTIME_VERSION. Both run a"
        echo "busybox-static rootfs imported for this run (\`docker import\`, \`podman import\`)."
    else
        echo "Peers not measured in this run (PEERS=0)."
    fi
    echo
    echo "- f1 includes everything \`up -d --wait\` does: validation, the detached supervisor, the"
    echo "  start of db, its readiness probed every 100 ms until first ready (then every \`period\`),"
    echo "  the start of the 3 dependents and their own readiness probes. The peers get the"
    echo "  equivalent compose file (db: \`healthcheck: { test: [CMD, test, -f, /tmp/ready] }\`,"
    echo "  dependents: \`depends_on: { db: { condition: service_healthy } }\`). docker-compose 1.29"
    echo "  has no \`--wait\`: its \`up -d\` returns once the dependents are started, without waiting"
    echo "  for their own healthchecks, which rcompose's \`--wait\` does. podman-compose with podman"
    echo "  4.3 ignores \`service_healthy\` on this machine (podman runs healthchecks from systemd"
    echo "  timers, and there is no systemd): it starts the dependents right after db, so its time"
    echo "  has no 1 s floor and is no gate time. \"dependents' start after db's\": the start time"
    echo "  (/proc/PID/stat) of the earliest dependent's first process minus db's; under 1 s means"
    echo "  the dependents did not wait for db. The peers' \`down -t 0\` is not timed."
    echo "- f2: the time from \`kill -9\` (the host kills the container's command; its init, PID 1"
    echo "  in the container, exits with 137) to the supervisor's \`started\` event of the new run,"
    echo "  its timestamp from \`rcompose events\`: reaping, the restart decision and a full container"
    echo "  start (namespaces joined, overlay, cgroup, exec)."
    echo "$END_MARK"
} >"$WORK/section.md"
# keep what the other parts wrote; replace an earlier section of this script
replace_section "$BEGIN_MARK" "$END_MARK" "$WORK/section.md" "$OUT"
log "done: $OUT"
sed -n '/^| /p' "$WORK/section.md" >&2
