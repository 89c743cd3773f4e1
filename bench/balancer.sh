#!/usr/bin/env bash
# `just bench`, part g (after bench/lifecycle.sh): the built-in L4 balancer against HAProxy
# and nginx `stream` (issue 6).
#
#   Backends: 3 replicas of one rcompose pod running nginx from the host image
#   (`worker_processes 1`, `access_log off`, `return 200 "ok\n"` with an `X-Backend:
#   $hostname` header, `keepalive_requests 10000000`, a tcp readiness probe), on the
#   project bridge. In front of the SAME three pod addresses:
#     - rcompose: the service's published port on 127.0.0.1 (the supervisor's balancer,
#       current-thread tokio workers, one per two CPUs (1 here), round robin);
#     - HAProxy `mode tcp`, `balance roundrobin`, `nbthread 1`, and a second row with its
#       default thread count (= CPUs);
#     - nginx `stream {}` (libnginx-mod-stream), upstream round robin, `worker_processes 1`;
#     - direct: wrk straight at the first pod's address (the ceiling, no balancer).
#   HAProxy and nginx run on the host, in the foreground, listening on 127.0.0.1.
#   Client: `wrk -t1 -cN -dDURATION s --latency --timeout 5s` on the host, N = 16, 64, 256,
#   keep-alive and with `-H 'Connection: close'` (one TCP connection per request). For each
#   cell (mode, N) every config runs once per repetition, the order rotated each repetition.
#   CPU per request: utime+stime (all threads; for nginx its master and worker) of the
#   balancer's process over the wrk run, /proc/PID/stat, divided by the requests. For
#   rcompose that process is the detached supervisor (`supervisor_pid` of its state.json),
#   whose threads include the balancer's: its own work (probes every 10 s, the control
#   socket) is counted too (its idle CPU is measured and reported).
#   Before measuring: each pod address is asked directly for its hostname, and 6 fresh
#   connections through each balancer must reach the 3 replicas in turn (round robin); the
#   rcompose balancer's connection counter (`ps --services`) is read around each of its runs,
#   so the report shows that its traffic went through it.
#   Other CPU: whole-machine busy time (/proc/stat) over each run minus the balancer, the 3
#   backends' processes and wrk, in cores: what other jobs (and softirq) took from the run.
#   Target (issue 6): in every cell at least HAProxy nbthread 1's requests/s and no worse p99.
#
# Installs what is missing with apt (haproxy nginx libnginx-mod-stream wrk jq curl), retrying
# while the dpkg lock is held; never starts a system service (the processes it starts have
# their own configs, pid files and logs in its temp dir). Run as root.
#
# Appends its section to docs/benchmarks.md (replacing one from an earlier run of this
# script). Stops every process it started by its PID, removes the rcompose project (`down`)
# and its temp dir, also on failure or Ctrl-C.
#
# Environment:
#   RCOMPOSE_BIN    use this binary (rcompose-init next to it) instead of building
#                   ${CARGO_TARGET_DIR:-target}/<host triple>/release/rcompose (static, see rc_build_release in bench/lib.sh)
#   OUT             report path (default docs/benchmarks.md)
#   REPS (5)        repetitions of every (config, mode, connections) run
#   DURATION (6)    seconds per wrk run (5 x 6 s rather than 3 x 10 s: the host's noise comes
#                   in bursts of seconds, and the median of 5 runs shrugs off two bad ones)
#   CONNS ("16 64 256")  connection counts
#   MODES ("keepalive close"), CONFIGS ("direct rcompose haproxy-t1 haproxy-tdef nginx-stream")
#                   a subset, for a quick look while working on the balancer (the report's
#                   verdicts need rcompose and haproxy-t1)
#   QUIET_WAIT (90) before measuring, wait up to this many seconds for CPU pressure (PSI some
#                   avg10) under 10 % (the machine is shared; the report says what it found)
#   SKIP_INSTALL=1  do not call apt-get
#   HOLD=1          for profiling: after the checks, write the URLs and PIDs to
#                   $WORK/targets.sh, then wait until killed (the cleanup still runs)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
OUT=${OUT:-$REPO/docs/benchmarks.md}
REPS=${REPS:-5}
QUIET_WAIT=${QUIET_WAIT:-90}
DURATION=${DURATION:-6}
read -r -a CONNS <<<"${CONNS:-16 64 256}"
read -r -a MODES <<<"${MODES:-keepalive close}"
read -r -a CONFIGS <<<"${CONFIGS:-direct rcompose haproxy-t1 haproxy-tdef nginx-stream}"
BEGIN_MARK="<!-- bench/balancer.sh: begin -->"
END_MARK="<!-- bench/balancer.sh: end -->"
BACKEND_PORT=8000
NGINX=/usr/sbin/nginx
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so

log() { printf '[bench balancer %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (containers need namespaces and cgroups)"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer, not '$REPS'"
[[ "$QUIET_WAIT" =~ ^[0-9]+$ ]] || die "QUIET_WAIT must be a number of seconds, not '$QUIET_WAIT'"
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds), not '$DURATION'"
for n in "${CONNS[@]}"; do [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "CONNS must be positive integers, not '$n'"; done

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    need=()
    for p in haproxy nginx libnginx-mod-stream wrk jq curl; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        log "installing ${need[*]} (apt; policy-rc.d or not, no service of theirs is used)"
        apt_get update >/dev/null
        apt_get install -y "${need[@]}" >/dev/null
        hash -r
    fi
fi
for t in haproxy "$NGINX" wrk jq curl ss; do
    command -v "$t" >/dev/null || die "$t not found (apt: haproxy nginx wrk jq curl iproute2)"
done
[ -f "$STREAM_MODULE" ] || die "no $STREAM_MODULE (apt libnginx-mod-stream)"

COMMIT=$(rc_commit)
if [ -n "${RCOMPOSE_BIN:-}" ]; then
    RC=$RCOMPOSE_BIN
    BUILT="RCOMPOSE_BIN $RC (built $(date -u -r "$RC" '+%H:%M UTC' 2>/dev/null || echo '?'); the checkout is at $COMMIT)"
else
    BUILT="commit $COMMIT"
    log "building rcompose (release)"
    rc_build_release -q
    RC=$(rc_release_path)
fi
[ -x "$RC" ] || die "no rcompose binary at $RC"
TAG=bb$$
PROJECT=$TAG-lb
PIDS=() # the processes this script started (haproxy x2, nginx stream's master)

# a process is alive (not gone, not a zombie)
alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$st" ] && [ "$st" != Z ]
}
stop_pid() { # PID: SIGTERM, up to 5 s, then SIGKILL
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        alive "$pid" || break
        sleep 0.1
    done
    alive "$pid" && kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? pid d
    trap - EXIT INT TERM
    set +e
    exec 2>&"$STDERR"
    [ -n "${WRK_PID:-}" ] && stop_pid "$WRK_PID"
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    for d in /run/rcompose/"$TAG"-*; do
        [ -e "$d" ] && timeout 60 "$RC" -p "$(basename "$d")" down -t 1 >/dev/null 2>&1
    done
    rm -rf "$WORK"
    exit "$rc"
}
WORK=$(mktemp -d /tmp/rcbench-balancer.XXXXXX)
chmod 755 "$WORK"
exec {STDERR}>&2
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/data" "$WORK/wrk" "$WORK/conf" "$WORK/stream"
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
CLK_TCK=$(getconf CLK_TCK)

# the first port from $1 up that nothing listens on and this script did not take yet
TAKEN=" "
free_port() {
    local p=$1
    while [[ "$TAKEN" == *" $p "* ]] || [ -n "$(ss -Hltn "sport = :$p")" ]; do p=$((p + 1)); done
    TAKEN+="$p "
    echo "$p"
}
RC_PORT=$(free_port 18080)
HAP1_PORT=$(free_port 18101)
HAPD_PORT=$(free_port 18102)
NGX_PORT=$(free_port 18104)

# ---------------------------------------------------------------------------------------------
log "backends: 3 nginx replicas of one pod, service published on 127.0.0.1:$RC_PORT"
cat >"$WORK/conf/backend.conf" <<EOF
# a backend replica: nginx from the host image; pid and temp files in the container's /tmp
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 10000000;
    client_body_temp_path /tmp/nginx-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    server {
        listen $BACKEND_PORT backlog=4096;
        location / {
            default_type text/plain;
            add_header X-Backend \$hostname;
            return 200 "ok\n";
        }
    }
}
EOF
cat >"$WORK/lb.yaml" <<EOF
pods:
  web:
    replicas: 3
    labels: { app: web }
    containers:
      - name: nginx
        command: [ $NGINX, -p, /tmp/, -e, stderr, -c, /bench/backend.conf, -g, "daemon off;" ]
        volumes: [ "$WORK/conf:/bench:ro" ]
        readiness: { tcp: { port: $BACKEND_PORT } }
services:
  web:
    selector: { app: web }
    ports: [ { port: 80, target: $BACKEND_PORT, publish: $RC_PORT } ]
EOF
"$RC" -f "$WORK/lb.yaml" -p "$PROJECT" up -d --wait >/dev/null 2>"$WORK/up.log" || die "up failed: $(tail -5 "$WORK/up.log")"
mapfile -t IPS < <("$RC" -p "$PROJECT" ps --format json | jq -r 'sort_by(.replica) | .[] | select(.state == "running") | .ip')
[ "${#IPS[@]}" = 3 ] || die "expected 3 running replicas with an address, got: ${IPS[*]:-none}"
SUP=$(jq -r .supervisor_pid "/run/rcompose/$PROJECT/state.json")
alive "$SUP" || die "no supervisor process (pid '$SUP' from /run/rcompose/$PROJECT/state.json)"
services() { "$RC" -p "$PROJECT" ps --services --format json; }
for _ in $(seq 1 50); do
    [ "$(services | jq '.web.endpoints | length')" = 3 ] && break
    sleep 0.1
done
[ "$(services | jq '.web.endpoints | length')" = 3 ] || die "the service has not 3 endpoints: $(services | jq -c .web.endpoints)"
grep -qx balancer /proc/"$SUP"/task/*/comm || die "the supervisor (pid $SUP) has no balancer thread"
BAL_THREADS=$(grep -lx balancer /proc/"$SUP"/task/*/comm | wc -l)
# every process of the 3 backends (their inits, nginx masters and workers)
mapfile -t BACKEND_PIDS < <("$RC" -p "$PROJECT" top --format json | jq -r '.[].pid')
[ "${#BACKEND_PIDS[@]}" -ge 6 ] || die "expected the 3 backends' processes, got pids ${BACKEND_PIDS[*]:-none}"

# ---------------------------------------------------------------------------------------------
log "HAProxy (tcp, nbthread 1 and default) on $HAP1_PORT/$HAPD_PORT, nginx stream on $NGX_PORT"
haproxy_cfg() { # PORT NBTHREAD_LINE
    printf 'global\n%s    maxconn 8000\ndefaults\n    mode tcp\n' "$2"
    printf '    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n'
    printf 'frontend fe\n    bind 127.0.0.1:%s\n    default_backend be\nbackend be\n    balance roundrobin\n' "$1"
    for i in 0 1 2; do printf '    server s%d %s:%s\n' $((i + 1)) "${IPS[$i]}" "$BACKEND_PORT"; done
}
haproxy_cfg "$HAP1_PORT" "    nbthread 1
" >"$WORK/conf/haproxy-t1.cfg"
haproxy_cfg "$HAPD_PORT" "" >"$WORK/conf/haproxy-tdef.cfg"
cat >"$WORK/conf/stream.conf" <<EOF
load_module $STREAM_MODULE;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $WORK/stream/nginx.pid;
error_log $WORK/stream/error.log warn;
events { worker_connections 8192; }
stream {
    upstream be {
        server ${IPS[0]}:$BACKEND_PORT;
        server ${IPS[1]}:$BACKEND_PORT;
        server ${IPS[2]}:$BACKEND_PORT;
    }
    server {
        listen 127.0.0.1:$NGX_PORT backlog=4096;
        proxy_pass be;
        proxy_connect_timeout 5s;
        proxy_timeout 60s;
    }
}
EOF
for c in t1 tdef; do
    haproxy -c -q -f "$WORK/conf/haproxy-$c.cfg" || die "haproxy-$c.cfg is not valid"
done
"$NGINX" -t -q -p "$WORK/stream/" -e "$WORK/stream/error.log" -c "$WORK/conf/stream.conf" || die "stream.conf is not valid"
# own sessions: a Ctrl-C reaches this script, which stops them by PID
setsid haproxy -db -f "$WORK/conf/haproxy-t1.cfg" </dev/null >"$WORK/haproxy-t1.log" 2>&1 &
HAP1_PID=$!
PIDS+=("$HAP1_PID")
setsid haproxy -db -f "$WORK/conf/haproxy-tdef.cfg" </dev/null >"$WORK/haproxy-tdef.log" 2>&1 &
HAPD_PID=$!
PIDS+=("$HAPD_PID")
setsid "$NGINX" -p "$WORK/stream/" -e "$WORK/stream/error.log" -c "$WORK/conf/stream.conf" \
    -g 'daemon off;' </dev/null >"$WORK/stream/stdout.log" 2>&1 &
NGX_PID=$!
PIDS+=("$NGX_PID")
listening() { [ -n "$(ss -Hltn "sport = :$1")" ]; }
for p in "$HAP1_PORT" "$HAPD_PORT" "$NGX_PORT" "$RC_PORT"; do
    for _ in $(seq 1 50); do
        listening "$p" && break
        sleep 0.1
    done
    listening "$p" || die "nothing listens on 127.0.0.1:$p"
done
for pid in "${PIDS[@]}"; do alive "$pid" || die "process $pid exited at its start: $(tail -3 "$WORK"/*.log "$WORK/stream/error.log" 2>/dev/null)"; done
# nginx stream: its master and worker (the worker is up once the port listens)
read -r -a NGX_PIDS <<<"$NGX_PID $(cat "/proc/$NGX_PID/task/$NGX_PID/children")"
[ "${#NGX_PIDS[@]}" = 2 ] || die "nginx stream: expected a master and 1 worker, got pids ${NGX_PIDS[*]}"
HAPD_THREADS=$(awk '/^Threads:/{print $2}' "/proc/$HAPD_PID/status")

# config -> URL, the pids whose CPU is its cost, and its label
url_of() {
    case $1 in
        direct) echo "http://${IPS[0]}:$BACKEND_PORT/" ;;
        rcompose) echo "http://127.0.0.1:$RC_PORT/" ;;
        haproxy-t1) echo "http://127.0.0.1:$HAP1_PORT/" ;;
        haproxy-tdef) echo "http://127.0.0.1:$HAPD_PORT/" ;;
        nginx-stream) echo "http://127.0.0.1:$NGX_PORT/" ;;
    esac
}
pids_of() {
    case $1 in
        direct) ;;
        rcompose) echo "$SUP" ;;
        haproxy-t1) echo "$HAP1_PID" ;;
        haproxy-tdef) echo "$HAPD_PID" ;;
        nginx-stream) echo "${NGX_PIDS[*]}" ;;
    esac
}
label_of() {
    case $1 in
        direct) echo "direct (wrk -> first pod, no balancer)" ;;
        rcompose) echo "**rcompose** (supervisor's balancer, $BAL_THREADS threads)" ;;
        haproxy-t1) echo "HAProxy tcp, nbthread 1" ;;
        haproxy-tdef) echo "HAProxy tcp, default threads ($HAPD_THREADS)" ;;
        nginx-stream) echo "nginx stream, 1 worker" ;;
    esac
}
# utime+stime (every thread) of the given processes, in clock ticks (0 for one that is gone)
ticks() {
    local t=0 p s
    for p in "$@"; do
        s=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        t=$((t + $(awk '{print $12 + $13}' <<<"$s")))
    done
    echo "$t"
}
# busy and total clock ticks of the whole machine (/proc/stat: all but idle and iowait)
machine() { awk '/^cpu /{t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
# VAR = the CPU of this shell's waited-for children (wrk, once waited for), in clock ticks;
# `times` must run in this shell, not in a subshell of a pipe or $(...)
child_ticks() {
    times >"$WORK/times"
    printf -v "$1" '%s' "$(awk -v hz="$CLK_TCK" 'NR == 2 {split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * hz}' "$WORK/times")"
}
# the same for the supervisor's balancer threads only
bal_ticks() {
    local t=0 d s
    for d in /proc/"$SUP"/task/*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = balancer ] || continue
        s=$(sed 's/.*) //' "$d/stat" 2>/dev/null) || continue
        t=$((t + $(awk '{print $12 + $13}' <<<"$s")))
    done
    echo "$t"
}
# nanoseconds the balancer's threads spent runnable but waiting for a CPU (schedstat, field
# 2: run-queue wait), summed: for rcompose its balancer threads only, for nginx its worker
wait_ns() { # CONFIG
    local t=0 f w d
    case $1 in
        rcompose) for d in /proc/"$SUP"/task/*; do [ "$(cat "$d/comm" 2>/dev/null)" = balancer ] && f+=" $d/schedstat"; done ;;
        haproxy-t1) f=$(echo /proc/"$HAP1_PID"/task/*/schedstat) ;;
        haproxy-tdef) f=$(echo /proc/"$HAPD_PID"/task/*/schedstat) ;;
        nginx-stream) f=$(echo /proc/"${NGX_PIDS[1]}"/task/*/schedstat) ;;
        *) f="" ;;
    esac
    for d in $f; do read -r _ w _ <"$d" 2>/dev/null && t=$((t + w)); done
    echo "$t"
}
# the rcompose balancer's counters: connections accepted, not taken by any endpoint, retried
rc_counters() { services | jq -r '.web | "\(.total) \(.errors) \(.retries)"'; }

# ---------------------------------------------------------------------------------------------
log "checks: each pod's hostname, round robin through each balancer"
declare -A HOST_OF
backend_of() { curl -s -m 5 -D - -o /dev/null "$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-backend"{print $2}'; }
for ip in "${IPS[@]}"; do
    h=$(backend_of "http://$ip:$BACKEND_PORT/")
    [ -n "$h" ] || die "pod address $ip answers no X-Backend header"
    HOST_OF[$ip]=$h
done
[ "$(printf '%s\n' "${HOST_OF[@]}" | sort -u | wc -l)" = 3 ] || die "the 3 pod addresses are not 3 replicas: ${HOST_OF[*]}"
declare -A SEEN
for c in "${CONFIGS[@]}"; do
    seq6=()
    for _ in 1 2 3 4 5 6; do seq6+=("$(backend_of "$(url_of "$c")")"); done
    SEEN[$c]=${seq6[*]}
    if [ "$c" = direct ]; then
        [ "$(printf '%s\n' "${seq6[@]}" | sort -u)" = "${HOST_OF[${IPS[0]}]}" ] || die "direct: answers from ${seq6[*]}"
        continue
    fi
    [ "$(printf '%s\n' "${seq6[@]}" | sort -u | grep -c .)" = 3 ] || die "$c: 6 new connections reached ${seq6[*]}, not the 3 replicas"
    for i in 0 1 2; do
        [ "${seq6[$i]}" = "${seq6[$((i + 3))]}" ] || die "$c: not round robin: ${seq6[*]}"
    done
done
for c in "${CONFIGS[@]}"; do log "  $c: ${SEEN[$c]}"; done

if [ "${HOLD:-0}" = 1 ]; then
    {
        for c in "${CONFIGS[@]}"; do printf 'URL_%s=%q\n' "${c//-/_}" "$(url_of "$c")"; done
        printf 'SUP=%s\nHAP1_PID=%s\nHAPD_PID=%s\nNGX_PIDS=%q\nPROJECT=%q\n' \
            "$SUP" "$HAP1_PID" "$HAPD_PID" "${NGX_PIDS[*]}" "$PROJECT"
    } >"$WORK/targets.sh"
    log "HOLD: URLs and PIDs in $WORK/targets.sh; waiting until killed"
    while :; do sleep 3600 & wait $!; done # wait: a signal runs the cleanup at once
fi

# the supervisor's CPU while idle (probes, its event loop), over 5 s
t0=$(ticks "$SUP")
sleep 5
IDLE_MS_PER_S=$(awk -v d=$(($(ticks "$SUP") - t0)) -v hz="$CLK_TCK" \
    'BEGIN{if (d == 0) printf "under %.0f", 1000 / hz / 5; else printf "%.1f", d / hz * 1000 / 5}')

# ---------------------------------------------------------------------------------------------
# one wrk run: parse it, store req/s, p50/p99 (us), CPU us/request
to_us() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) f = 1; else if (v ~ /ms$/) f = 1e3; else if (v ~ /s$/) f = 1e6; else if (v ~ /m$/) f = 6e7; else f = 0; printf "%.1f\n", (v + 0) * f }'; }
run_one() { # CONFIG MODE CONNS REP
    local c=$1 mode=$2 n=$3 rep=$4 f pids t0 t1 b0 b1 k0 k1 m0 m1 w0 w1 o0 o1 q0 q1 rps p50 p99 req err non2xx
    f=$WORK/wrk/$mode-$n-$c-$rep.txt
    read -r -a pids <<<"$(pids_of "$c")"
    local args=(-t1 "-c$n" "-d${DURATION}s" --latency --timeout 5s)
    [ "$mode" = close ] && args+=(-H 'Connection: close')
    [ "$c" = rcompose ] && read -r -a k0 <<<"$(rc_counters)"
    t0=$(ticks "${pids[@]}")
    b0=$(bal_ticks)
    q0=$(wait_ns "$c")
    o0=$(ticks "${BACKEND_PIDS[@]}")
    child_ticks w0
    read -r -a m0 <<<"$(machine)"
    wrk "${args[@]}" "$(url_of "$c")" >"$f" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || die "wrk failed ($c $mode c=$n): $(tail -3 "$f")"
    WRK_PID=""
    read -r -a m1 <<<"$(machine)"
    child_ticks w1
    t1=$(ticks "${pids[@]}")
    b1=$(bal_ticks)
    q1=$(wait_ns "$c")
    o1=$(ticks "${BACKEND_PIDS[@]}")
    rps=$(awk '/^Requests\/sec:/{print $2}' "$f")
    p50=$(to_us "$(awk '$1=="50%"{print $2}' "$f")")
    p99=$(to_us "$(awk '$1=="99%"{print $2}' "$f")")
    req=$(awk '/requests in/{print $1}' "$f")
    err=$(awk -F'[ ,]+' '/Socket errors/{print $4 + $6 + $8 + $10}' "$f")
    non2xx=$(awk '/Non-2xx/{print $NF}' "$f")
    { [ -n "$rps" ] && [ -n "$req" ] && [ "$req" -gt 0 ]; } || die "no requests in $c $mode c=$n: $(tail -3 "$f")"
    local d=$WORK/data/$mode-$n-$c
    echo "$rps" >>"$d.rps"
    echo "$p50" >>"$d.p50"
    echo "$p99" >>"$d.p99"
    echo "$((${err:-0} + ${non2xx:-0}))" >>"$d.err"
    # other jobs (and softirq), in % of a core: machine busy minus balancer, backends and wrk
    awk -v busy=$((m1[0] - m0[0])) -v tot=$((m1[1] - m0[1])) -v ours=$((t1 - t0 + o1 - o0 + w1 - w0)) -v cpus="$(nproc)" \
        'BEGIN{if (tot > 0) printf "%.1f\n", (busy - ours) / (tot / cpus) * 100}' >>"$d.other"
    if [ "$c" != direct ]; then
        awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$req" 'BEGIN{printf "%.2f\n", d / hz * 1e6 / r}' >>"$d.cpu"
        # in % of a core, as med prints one decimal
        awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v w="$DURATION" 'BEGIN{printf "%.1f\n", d / hz / w * 100}' >>"$d.cores"
        # ms per second of the run the balancer waited for a CPU
        awk -v q=$((q1 - q0)) -v w="$DURATION" 'BEGIN{printf "%.1f\n", q / 1e6 / w}' >>"$d.wait"
    fi
    if [ "$c" = rcompose ]; then
        read -r -a k1 <<<"$(rc_counters)"
        echo "$((k1[0] - k0[0])) $req $((k1[1] - k0[1])) $((k1[2] - k0[2]))" >>"$WORK/data/$mode-$n-conns"
        # the balancer threads' share of the supervisor's CPU in this run
        awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN{if (t > 0) printf "%.3f\n", b / t}' >>"$WORK/data/bal-share"
    fi
    log "$mode c=$n rep=$rep $c: $rps req/s, p50 $p50 us, p99 $p99 us, errors ${err:-0}+${non2xx:-0}$([ "$c" = direct ] || echo ", cpu $(tail -1 "$d.cpu") us/req")"
}

psi10() { sed -n '1s/.*avg10=\([0-9.]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null | grep . || echo 0; }
QUIET_NOTE="did not get quiet within ${QUIET_WAIT} s (CPU PSI some avg10 $(psi10) %)"
for i in $(seq 0 "$QUIET_WAIT"); do
    if lt "$(psi10)" 10; then
        QUIET_NOTE="CPU PSI some avg10 $(psi10) % after waiting $i s"
        break
    fi
    sleep 1
done
log "quiet wait: $QUIET_NOTE"
MEASURE_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
log "warm-up: 1 s of wrk through each config"
for c in "${CONFIGS[@]}"; do wrk -t1 -c16 -d1s "$(url_of "$c")" >/dev/null 2>&1 || die "warm-up of $c failed"; done
TOTAL_RUNS=$((${#MODES[@]} * ${#CONNS[@]} * REPS * ${#CONFIGS[@]}))
log "measuring: $TOTAL_RUNS wrk runs of $DURATION s (about $((TOTAL_RUNS * (DURATION + 2) / 60 + 1)) min)"
for mode in "${MODES[@]}"; do
    for n in "${CONNS[@]}"; do
        for rep in $(seq 1 "$REPS"); do
            k=$(((rep - 1) % ${#CONFIGS[@]}))
            for c in "${CONFIGS[@]:k}" "${CONFIGS[@]:0:k}"; do
                run_one "$c" "$mode" "$n" "$rep"
                sleep 1
            done
        done
    done
done
alive "$SUP" || die "the supervisor exited during the runs"
STATS_END=$(services | jq -c '.web | {total, errors, retries, active}')

# ---------------------------------------------------------------------------------------------
ms() { awk -v v="$1" 'BEGIN{if (v == "") print "n/a"; else printf "%.2f\n", v / 1000}'; }
int() { awk -v v="$1" 'BEGIN{if (v == "") print "n/a"; else printf "%.0f\n", v}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{if (a == "" || b == "" || b == 0) print "n/a"; else printf "%+.0f %%\n", (a / b - 1) * 100}'; }
sum() { awk '{s += $1} END{print s + 0}' "$1" 2>/dev/null || echo 0; }
MET=0
RPS_MET=0
P99_MET=0
CELLS=0
verdict_row() { # MODE CONNS
    local d=$WORK/data/$1-$2 r h rp hp rc hc v
    r=$(med "$d-rcompose.rps")
    h=$(med "$d-haproxy-t1.rps")
    rp=$(med "$d-rcompose.p99")
    hp=$(med "$d-haproxy-t1.p99")
    rc=$(med "$d-rcompose.cpu")
    hc=$(med "$d-haproxy-t1.cpu")
    CELLS=$((CELLS + 1))
    local ok_r=0 ok_p=0 miss=()
    if le "$h" "$r"; then
        ok_r=1 RPS_MET=$((RPS_MET + 1))
    else
        # why: is the shortfall inside the run-to-run spread, and whose CPU per request?
        local rmax hmin why=()
        rmax=$(sort -g "$d-rcompose.rps" | tail -1)
        hmin=$(sort -g "$d-haproxy-t1.rps" | head -1)
        le "$hmin" "$rmax" && why+=("ranges overlap: rcompose up to $(int "$rmax"), HAProxy t1 from $(int "$hmin")")
        lt "$rc" "$hc" && why+=("rcompose's CPU per request lower")
        if [ "${#why[@]}" -gt 0 ]; then
            miss+=("req/s $(pct "$r" "$h") ($(printf '%s; ' "${why[@]}" | sed 's/; $//'))")
        else
            miss+=("req/s $(pct "$r" "$h")")
        fi
    fi
    if le "$rp" "$hp"; then
        ok_p=1 P99_MET=$((P99_MET + 1))
    else
        local pmin hpmax pwhy
        pmin=$(sort -g "$d-rcompose.p99" | head -1)
        hpmax=$(sort -g "$d-haproxy-t1.p99" | tail -1)
        pwhy=""
        le "$pmin" "$hpmax" && pwhy="; ranges overlap: rcompose from $(ms "$pmin") ms, HAProxy t1 up to $(ms "$hpmax") ms"
        miss+=("p99 $(pct "$rp" "$hp") (+$(ms "$(awk -v a="$rp" -v b="$hp" 'BEGIN{print a - b}')") ms$pwhy)")
    fi
    if [ "$ok_r$ok_p" = 11 ]; then
        v="**met**"
        MET=$((MET + 1))
    else
        v="**MISSED**: $(printf '%s, ' "${miss[@]}")"
        v=${v%, }
    fi
    echo "| $1 | $2 | $(int "$r") | $(int "$h") | $(ratio "$r" "$h") | $(ms "$rp") | $(ms "$hp") | $(ratio "$rp" "$hp") | $rc | $hc | $v |"
}
detail_rows() { # MODE CONNS
    local d=$WORK/data/$1-$2 c h e cpu cores other wait
    h=$(med "$d-haproxy-t1.rps")
    for c in "${CONFIGS[@]}"; do
        e=$(sum "$d-$c.err")
        cpu=-
        cores=-
        wait=-
        if [ "$c" != direct ]; then
            cpu=$(med "$d-$c.cpu")
            cores=$(awk -v v="$(med "$d-$c.cores")" 'BEGIN{printf "%.2f", v / 100}')
            wait=$(med "$d-$c.wait")
        fi
        other=$(awk -v v="$(med "$d-$c.other")" 'BEGIN{printf "%.2f", v / 100}')
        echo "| $1 | $2 | $(label_of "$c") | $(int "$(med "$d-$c.rps")") ($(minmax "$d-$c.rps" | awk -F- '{printf "%.0f-%.0f", $1, $2}')) | $(ratio "$(med "$d-$c.rps")" "$h") | $(ms "$(med "$d-$c.p50")") | $(ms "$(med "$d-$c.p99")") ($(minmax "$d-$c.p99" | awk -F- '{printf "%.2f-%.2f", $1 / 1000, $2 / 1000}')) | $cpu | $cores | $wait | $other | $e |"
    done
}
conn_note() { # MODE CONNS: the balancer's counted connections per request in its runs
    local f=$WORK/data/$1-$2-conns
    awk -v m="$1" -v n="$2" '{c += $1; r += $2; e += $3; t += $4} END{if (r) printf "%s c=%s: %d for %d requests (%d taken by no endpoint, %d connects retried); ", m, n, c, r, e, t}' "$f"
}
{
    echo "$BEGIN_MARK"
    echo "## g. Built-in L4 balancer vs HAProxy and nginx stream"
    echo
    echo "Written by \`just bench\` (bench/balancer.sh) on $STARTED; $REPS repetitions of ${DURATION} s per"
    echo "run, rcompose $("$RC" --version | cut -d' ' -f2) ($BUILT),"
    echo "$(haproxy -v | head -1 | cut -d' ' -f1-3), nginx $("$NGINX" -v 2>&1 | sed 's|.*nginx/||'), wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo '?'),"
    echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), loadavg $LOAD_START at the start,"
    echo "$MEASURE_LOAD when measuring began ($QUIET_NOTE), $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo
    echo "Target (issue 6): in every cell, at least HAProxy \`mode tcp\` nbthread 1's requests/s and no"
    echo "worse p99. Medians over the repetitions; ratios are rcompose / HAProxy nbthread 1; CPU in"
    echo "µs of the balancer process per request."
    echo
    echo "| mode | conns | rcompose req/s | HAProxy t1 req/s | ratio | rcompose p99 ms | HAProxy t1 p99 ms | ratio | rcompose CPU µs/req | HAProxy t1 CPU µs/req | verdict |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for mode in "${MODES[@]}"; do for n in "${CONNS[@]}"; do verdict_row "$mode" "$n"; done; done
    echo
    echo "**Target met in $MET of $CELLS cells** (req/s at least HAProxy t1's in $RPS_MET of $CELLS, p99 no worse in $P99_MET of $CELLS)."
    echo
    if [ "$MET" != "$CELLS" ]; then
        echo "Where a cell falls short, its verdict says by how much and whether the shortfall lies inside"
        echo "the spread of the repetitions (the min-max ranges of rcompose and HAProxy t1 overlap: for"
        echo "req/s rcompose's best run reaches HAProxy t1's worst, for p99 rcompose's lowest is at most"
        echo "HAProxy t1's highest), and whether rcompose spent less CPU per request than HAProxy t1."
        echo "Why such misses happen: wrk, the balancer, the backends and softirq share the same $(nproc) CPUs,"
        echo "and each balancer here is one thread, so while it waits for a CPU every connection it"
        echo "carries waits too: a balancer that does less work per request can still lose a few percent"
        echo "of throughput, or its tail, to scheduling on a given run. The CPU wait column below shows how"
        echo "long each balancer waited for a CPU per second of its runs."
        echo
    fi
    echo "Every config, per cell (req/s and p99: median (min-max); ratio to HAProxy t1; cores = balancer CPU"
    echo "seconds per second of the run; CPU wait = milliseconds per second of the run the balancer's"
    echo "threads were runnable but waited for a CPU (schedstat run-queue wait; rcompose: its balancer"
    echo "threads, nginx: its worker); other cores = the machine's busy time minus the balancer,"
    echo "the backends and wrk, per second: other jobs and softirq; errors = wrk socket errors +"
    echo "non-2xx, summed over the runs):"
    echo
    echo "| mode | conns | config | req/s | ratio to HAProxy t1 | p50 ms | p99 ms | CPU µs/req | cores | CPU wait ms/s | other cores | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for mode in "${MODES[@]}"; do for n in "${CONNS[@]}"; do detail_rows "$mode" "$n"; done; done
    echo
    echo "- Backends: 3 replicas of one rcompose pod (host image), each \`nginx -g 'daemon off;'\` with"
    printf '%s\n' "  \`worker_processes 1\`, \`access_log off\`, \`return 200 \"ok\\n\"\`, \`keepalive_requests 10000000\`,"
    echo "  at ${IPS[*]} port $BACKEND_PORT on the project bridge. rcompose's balancer is reached on the"
    echo "  service's published port on 127.0.0.1; HAProxy (\`mode tcp\`, \`balance roundrobin\`) and nginx"
    echo "  \`stream\` (upstream round robin) run on the host, listen on 127.0.0.1 and have the same 3 pod"
    echo "  addresses as servers; direct is wrk at the first pod's address. wrk: \`wrk -t1 -cN -d${DURATION}s"
    echo "  --latency --timeout 5s\`, close mode with \`-H 'Connection: close'\` (a TCP connection per"
    echo "  request; the backend closes it). wrk's latency excludes connect time. The order of the"
    echo "  configs rotates each repetition. Everything (wrk, balancer, backends, softirq) shares the"
    echo "  same $(nproc) CPUs, so the numbers are what a balancer costs on a loaded box, not its maximum."
    echo "- Checked before measuring: each pod address answers with its own hostname ($(for ip in "${IPS[@]}"; do printf '%s=%s ' "$ip" "${HOST_OF[$ip]}"; done | sed 's/ $//'));"
    echo "  6 new connections through each balancer reach the 3 replicas in turn (rcompose: ${SEEN[rcompose]:-not run};"
    echo "  HAProxy t1: ${SEEN[haproxy-t1]:-not run}; nginx stream: ${SEEN[nginx-stream]:-not run})."
    echo "  The rcompose balancer's own counter (\`ps --services\`, connections accepted) over its runs:"
    echo "  $(for mode in "${MODES[@]}"; do for n in "${CONNS[@]}"; do conn_note "$mode" "$n"; done; done | sed 's/; $//');"
    echo "  at the end: $STATS_END. wrk opens a connection before each run that it closes without"
    echo "  a byte, and leaves some half-open at its end: the balancer counts them as accepted (hence"
    echo "  a few more connections than requests in close mode) and closes them quietly, no error."
    echo "- CPU: utime+stime of every thread from /proc/PID/stat over the wrk run, divided by its"
    echo "  requests (nginx stream: master + worker). rcompose's is the whole detached supervisor"
    echo "  (pid $SUP), whose $BAL_THREADS \`balancer\` thread(s) run the balancer (current-thread tokio"
    echo "  runtimes; one per two CPUs unless RCOMPOSE_BALANCER_THREADS says otherwise); its own work (tcp"
    echo "  readiness probes every 10 s) is included, the \`ps --services\` calls are made between runs:"
    echo "  idle, it used $IDLE_MS_PER_S ms of CPU per second (over 5 s, in clock ticks of $((1000 / CLK_TCK)) ms)."
    echo "  The balancer threads alone were $(med "$WORK/data/bal-share" | awk '{printf "%.0f", $1 * 100}') % (median) of the supervisor's CPU in the measured runs."
    echo "$END_MARK"
} >"$WORK/section.md"
# keep what the other parts wrote; replace an earlier section of this script
replace_section "$BEGIN_MARK" "$END_MARK" "$WORK/section.md" "$OUT"
log "done: $OUT"
sed -n '/^\*\*Target/p; /^| [a-z]* | [0-9]* | [0-9]/p' "$WORK/section.md" >&2
