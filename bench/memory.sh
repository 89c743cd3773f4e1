#!/usr/bin/env bash
# `just bench`, part e (after bench/run.sh and bench/images.sh): memory rcompose keeps on the
# host per running container, against podman's conmon.
#
#   For N = N_SMALL (1) and N_LARGE (20) containers of busybox `sleep 3600`, ROUNDS (5) times:
#   - rcompose: `up -d` of N one-container pods, then the RSS and PSS of every process it
#     keeps for the project, summed from /proc: the supervisor, its fork server, each
#     container's PID 1 (`rcompose-init`), and any other process in the supervisor's tree or
#     the project's cgroups except the containers' commands (`sleep`);
#   - podman: N x `podman run -d --runtime runc --network none` of the same rootfs, then the
#     RSS and PSS of each container's conmon (podman keeps no other process per container
#     here: no pod, no network helper).
#   The per-container cost is the slope (total at N_LARGE - total at N_SMALL) / (N_LARGE -
#   N_SMALL), per round, judged by the larger of RSS and PSS against 0.5 MB; the average at
#   N_LARGE (total / N_LARGE, the supervisor and fork server shared out) is judged too. The
#   report gives medians and min-max over the rounds.
#
# Appends its section to docs/benchmarks.md (bench/run.sh rewrites the file first); a
# section from an earlier run of this script is replaced, everything else is kept. Run as
# root. It installs what it needs (apt: podman runc jq busybox-static) and on exit removes
# every project, container, image and temp dir it made, also on failure or Ctrl-C.
#
# Environment:
#   RCBENCH_DIR   work dir (default /tmp/rcbench-memory; must not exist or be a leftover of
#                 this script)
#   RCOMPOSE_BIN  use this binary (rcompose-init next to it) instead of building
#                 ${CARGO_TARGET_DIR:-target}/<host triple>/release/rcompose (static, see rc_build_release in bench/lib.sh)
#   OUT           report path (default docs/benchmarks.md)
#   ROUNDS (5)    rounds; each measures both tools at both sizes, the tool order alternating
#   N_SMALL (1), N_LARGE (20)   the two stack sizes
#   SETTLE (2)    seconds to wait after every container runs, before reading /proc
#   SKIP_INSTALL=1             do not call apt-get
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
WORK=${RCBENCH_DIR:-/tmp/rcbench-memory}
OUT=${OUT:-$REPO/docs/benchmarks.md}
ROUNDS=${ROUNDS:-5}
N_SMALL=${N_SMALL:-1}
N_LARGE=${N_LARGE:-20}
SETTLE=${SETTLE:-2}
BEGIN_MARK="<!-- bench/memory.sh: begin -->"
END_MARK="<!-- bench/memory.sh: end -->"
IMG=localhost/rcbench-mem-bb:latest
# 0.5 MB per container, decimal (500,000 bytes = 488.3 KiB): the stricter reading; /proc
# counts in KiB ("kB")
TARGET_BYTES=500000

log() { printf '[bench memory %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
stamp() { printf -v "$1" '%s' "${EPOCHREALTIME/./}"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
cpu_psi() { sed -n '1s/^some //p' /proc/pressure/cpu 2>/dev/null | cut -d' ' -f1-3 || echo n/a; }

mb() { awk -v k="$1" 'BEGIN{if(k==""){print "n/a"}else{printf "%.3f MB\n", k*1024/1e6}}'; } # KiB -> decimal MB

[ "$(id -u)" = 0 ] || die "run as root (containers, cgroups, /proc of every process)"
[ "${BASH_VERSINFO[0]}" -ge 5 ] || die "bash >= 5 needed (EPOCHREALTIME)"
[ "$ROUNDS" -ge 1 ] || die "ROUNDS >= 1"
[ "$N_LARGE" -gt "$N_SMALL" ] && [ "$N_SMALL" -ge 1 ] || die "need 1 <= N_SMALL < N_LARGE"

START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
START_LOAD=$(loadavg)
START_PSI=$(cpu_psi)
stamp T_BEGIN

# ---------------------------------------------------------------------------------------------
# install
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    need=()
    for p in podman runc jq busybox-static; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        log "installing ${need[*]} (apt)"
        apt_get update >/dev/null
        apt_get install -y "${need[@]}" >/dev/null
    fi
    hash -r
fi
for t in podman conmon runc jq busybox; do
    command -v "$t" >/dev/null || die "$t not found"
done

# ---------------------------------------------------------------------------------------------
# rcompose binary
RC_STATUS=ok # ok | why rcompose could not be measured
RC_ERR=""
if [ -n "${RCOMPOSE_BIN:-}" ]; then
    RC=$(readlink -f "$RCOMPOSE_BIN")
else
    RC=$(rc_release_path)
    log "cargo build --release (static, as \`just build\`)"
    build_log=$(mktemp /tmp/rcbench-memory-build.XXXXXX)
    if ! rc_build_release >"$build_log" 2>&1; then
        RC_STATUS="cargo build --release failed: $(grep -m1 -E '^error' "$build_log" || tail -1 "$build_log")"
    fi
    rm -f "$build_log"
fi
[ "$RC_STATUS" != ok ] || [ -x "$RC" ] || RC_STATUS="no binary at $RC"
[ "$RC_STATUS" != ok ] || [ -x "$(dirname "$RC")/rcompose-init" ] ||
    RC_STATUS="no rcompose-init next to $RC (each container's PID 1 would stay the Rust init)"
RC_VERSION=$("$RC" --version 2>/dev/null | head -1 || true)
RC_COMMIT=$(rc_commit)

# ---------------------------------------------------------------------------------------------
# work dir, cleanup
if [ -e "$WORK" ]; then
    [ -f "$WORK/.rcbench-memory" ] || die "$WORK exists and was not made by bench/memory.sh; set RCBENCH_DIR"
    old=$(cat "$WORK/.rcbench-memory")
    [[ "$old" =~ ^[0-9]+$ ]] || die "$WORK/.rcbench-memory does not hold a pid; remove $WORK by hand"
    if tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q 'bench/memory.sh'; then
        die "another bench/memory.sh (pid $old) is running with the work dir $WORK"
    fi
    # an earlier run that could not clean up (killed): its projects and containers, then its files
    log "removing the leftovers of an earlier run (pid $old): $WORK, projects bm$old-*, containers rcbm$old-*"
    for d in /run/rcompose/bm"$old"-*; do
        [ -e "$d" ] && [ -x "$RC" ] && { timeout 60 "$RC" -p "$(basename "$d")" down -t 1 >/dev/null 2>&1 || true; }
    done
    podman ps -aq --filter "name=^rcbm$old-" 2>/dev/null | xargs -r podman rm -f -t 0 >/dev/null 2>&1 || true
    rm -rf "$WORK"
fi
mkdir -p "$WORK"/{data,log}
echo "$$" >"$WORK/.rcbench-memory"
# names of everything this run makes: rcompose projects bm<pid>-..., podman containers rcbm<pid>-...
TAG=$$
STORAGE_BEFORE=0
[ -e /var/lib/containers ] && STORAGE_BEFORE=1
NETDIR_BEFORE=0
[ -e /etc/containers/networks ] && NETDIR_BEFORE=1
RUNDIR_BEFORE=0
[ -e /run/rcompose ] && RUNDIR_BEFORE=1
IMAGE_BEFORE=0
podman image exists "$IMG" 2>/dev/null && IMAGE_BEFORE=1
CG_BEFORE=$(ls -d /sys/fs/cgroup/*/libpod_parent 2>/dev/null || true)

rc_projects_left() { # state dirs of this run's rcompose projects that still exist
    local d
    for d in /run/rcompose/bm"$TAG"-*; do [ -e "$d" ] && basename "$d"; done
    return 0
}
pm_left() { podman ps -aq --filter "name=^rcbm$TAG-" 2>/dev/null | wc -l; }

cleanup() {
    local rc=$? p c
    trap - EXIT INT TERM
    set +e
    log "cleanup"
    if [ -x "${RC:-}" ]; then
        for p in $(rc_projects_left); do
            timeout 60 "$RC" -p "$p" down -t 1 >/dev/null 2>&1 || log "rcompose -p $p down failed"
        done
    fi
    podman ps -aq --filter "name=^rcbm$TAG-" 2>/dev/null | xargs -r podman rm -f -t 0 >/dev/null 2>&1
    [ "$IMAGE_BEFORE" = 1 ] || podman rmi -f "$IMG" >/dev/null 2>&1
    # podman's storage, if this run made it and nothing else is in it
    if [ "$STORAGE_BEFORE" = 0 ] && [ -d /var/lib/containers ] && [ -z "$(podman ps -aq 2>/dev/null)" ] &&
        [ -z "$(podman images -q 2>/dev/null)" ] && [ -z "$(podman pod ls -q 2>/dev/null)" ]; then
        podman system reset --force >/dev/null 2>&1
        rm -rf /var/lib/containers
        log "removed podman's storage (/var/lib/containers), which this run created"
    fi
    if [ "$NETDIR_BEFORE" = 0 ] && [ -d /etc/containers/networks ] &&
        [ -z "$(ls -A /etc/containers/networks | grep -vx netavark.lock)" ]; then
        rm -rf /etc/containers/networks
    fi
    # empty libpod_parent cgroups podman made (only if they were not there before)
    for c in /sys/fs/cgroup/*/libpod_parent; do
        [ -d "$c" ] || continue
        grep -qxF "$c" <<<"$CG_BEFORE" || find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -rf "$WORK"
    [ "$RUNDIR_BEFORE" = 1 ] || rmdir /run/rcompose 2>/dev/null
    [ -z "$(rc_projects_left)" ] || log "WARNING: rcompose state left in /run/rcompose: $(rc_projects_left | tr '\n' ' ')"
    [ "$(pm_left)" = 0 ] || log "WARNING: podman containers rcbm$TAG-* left"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# busybox rootfs, podman image, manifests
log "busybox rootfs, podman image, manifests"
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root}
cp /bin/busybox "$ROOTFS/bin/busybox"
chroot "$ROOTFS" /bin/busybox --install -s
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOTFS/etc/passwd"
echo 'root:x:0:' >"$ROOTFS/etc/group"
chmod 1777 "$ROOTFS/tmp"
if [ "$IMAGE_BEFORE" = 0 ]; then
    tar -C "$ROOTFS" -c . | podman import --change 'CMD ["/bin/sh"]' \
        --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' - "$IMG" >/dev/null 2>"$WORK/log/podman-import.log" ||
        die "podman import failed: $(tail -2 "$WORK/log/podman-import.log")"
fi
manifest() { # N -> $WORK/stackN.yaml
    local n=$1 i f=$WORK/stack$1.yaml
    {
        echo "images:"
        echo "  bb: { rootfs: $ROOTFS }"
        echo "pods:"
        for i in $(seq -w 1 "$n"); do
            printf '  p%s:\n    containers:\n      - name: sleep\n        image: bb\n        command: [/bin/sleep, "3600"]\n' "$i"
        done
    } >"$f"
}
manifest "$N_SMALL"
manifest "$N_LARGE"

# podman as root asks for rlimits above this machine's hard limits (it withholds
# CAP_SYS_RESOURCE; ../shared/bench-reference/README.md): pass limits it may set, per run,
# instead of writing /etc/containers/containers.conf. runc rather than podman's default crun,
# which refuses this hybrid cgroup layout while cgroup2 holds a controller; conmon is the
# same whatever the runtime.
NOFILE=$(ulimit -Hn)
NPROC=$(ulimit -Hu)
if [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 32768 ]; then NPROC=32768; fi
PM_RUN=(podman run -d --runtime runc --network none --ulimit "nofile=$NOFILE:$NOFILE"
    --ulimit "nproc=$NPROC:$NPROC" --log-driver k8s-file)

# smoke tests (a failure of podman is a harness problem; one of rcompose is reported)
"${PM_RUN[@]}" --name "rcbm$TAG-smoke" "$IMG" sleep 3600 >/dev/null 2>"$WORK/log/pm-smoke.log" ||
    die "podman cannot run the image: $(tail -2 "$WORK/log/pm-smoke.log")"
podman rm -f -t 0 "rcbm$TAG-smoke" >/dev/null
if [ "$RC_STATUS" = ok ]; then
    if ! timeout 60 "$RC" -f "$WORK/stack$N_SMALL.yaml" -p "bm$TAG-smoke" up -d >"$WORK/log/rc-smoke.log" 2>&1; then
        RC_STATUS="\`rcompose up -d\` of $N_SMALL sleep container(s) failed"
        RC_ERR=$(tail -5 "$WORK/log/rc-smoke.log")
    fi
    timeout 60 "$RC" -p "bm$TAG-smoke" down -t 1 >/dev/null 2>&1 || true
    [ ! -e "/run/rcompose/bm$TAG-smoke" ] || RC_STATUS="\`rcompose down\` left /run/rcompose/bm$TAG-smoke behind"
fi
[ "$RC_STATUS" = ok ] || log "rcompose is not measured: $RC_STATUS"

# ---------------------------------------------------------------------------------------------
# measuring
kb() { awk -v f="$1:" '$1==f{print $2; exit}' "$2" 2>/dev/null || true; } # FIELD FILE -> kB

# pids of the given pids and all their descendants
descendants() {
    ps -e -o pid=,ppid= | awk -v roots="$*" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { par[$1] = $2; pids[NR] = $1 }
        END {
            changed = 1
            while (changed) { changed = 0
                for (i in pids) { p = pids[i]; if (!(p in keep) && (par[p] in keep)) { keep[p] = 1; changed = 1 } } }
            for (p in keep) print p }'
}

RC_INO=$(stat -Lc '%d:%i' "$RC" 2>/dev/null || echo none)
RC_INIT_INO=$(stat -Lc '%d:%i' "$(dirname "$RC")/rcompose-init" 2>/dev/null || echo none)
is_rcompose() {
    local ino
    ino=$(stat -Lc '%d:%i' "/proc/$1/exe" 2>/dev/null) || return 1
    [ "$ino" = "$RC_INO" ] || [ "$ino" = "$RC_INIT_INO" ]
}

# The processes rcompose keeps for project $1 with $2 containers: appends one line per process
# to $WORK/data/procs.txt and prints "rss_kB pss_kB processes sup_rss sup_pss fs_rss fs_pss
# init_rss init_pss other_rss other_pss". Fails when the workload is not exactly $2 `sleep`s.
rc_measure() {
    local proj=$1 n=$2 tag=$3 st sup fs inits p comm ppid role rss pss sleepers=0 all
    st=/run/rcompose/$proj/state.json
    sup=$(jq -r '.supervisor_pid // empty' "$st")
    fs=$(jq -r '.forkserver[0] // empty' "$st")
    inits=" $(jq -r '[.containers[].pid // empty] | map(tostring) | join(" ")' "$st") "
    all=$( (
        descendants "$sup" ${fs:+"$fs"}
        grep -l "rcompose/$proj/" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3
    ) | sort -un)
    local -A sum=([all_rss]=0 [all_pss]=0 [supervisor_rss]=0 [supervisor_pss]=0 [forkserver_rss]=0
        [forkserver_pss]=0 [init_rss]=0 [init_pss]=0 [other_rss]=0 [other_pss]=0 [procs]=0)
    for p in $all; do
        [ -r "/proc/$p/status" ] || continue
        comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
        ppid=$(kb PPid "/proc/$p/status")
        # the containers' own command: the workload, counted on neither side
        if [ "$comm" = sleep ] && [[ "$inits" == *" $ppid "* ]]; then
            sleepers=$((sleepers + 1))
            continue
        fi
        if [ "$p" = "$sup" ]; then role=supervisor
        elif [ "$p" = "$fs" ]; then role=forkserver
        elif [[ "$inits" == *" $p "* ]]; then role=init
        else role=other
        fi
        rss=$(kb VmRSS "/proc/$p/status")
        pss=$(kb Pss "/proc/$p/smaps_rollup")
        rss=${rss:-0} pss=${pss:-0}
        printf '%s pid=%s comm=%s role=%s rcompose_exe=%s VmRSS_kB=%s Pss_kB=%s\n' "$tag" "$p" "$comm" "$role" \
            "$(is_rcompose "$p" && echo yes || echo no)" "$rss" "$pss" >>"$WORK/data/procs.txt"
        sum[${role}_rss]=$((sum[${role}_rss] + rss))
        sum[${role}_pss]=$((sum[${role}_pss] + pss))
        sum[all_rss]=$((sum[all_rss] + rss))
        sum[all_pss]=$((sum[all_pss] + pss))
        sum[procs]=$((sum[procs] + 1))
    done
    [ "$sleepers" = "$n" ] || { log "rcompose $tag: $sleepers sleep processes, expected $n"; return 1; }
    echo "${sum[all_rss]} ${sum[all_pss]} ${sum[procs]} ${sum[supervisor_rss]} ${sum[supervisor_pss]}" \
        "${sum[forkserver_rss]} ${sum[forkserver_pss]} ${sum[init_rss]} ${sum[init_pss]} ${sum[other_rss]} ${sum[other_pss]}"
}

rc_sleepers() { # project -> running `sleep` children of its container inits
    local st=/run/rcompose/$1/state.json inits
    inits=$(jq -r '[.containers[].pid // empty] | map(tostring) | join(",")' "$st" 2>/dev/null) || { echo 0; return; }
    [ -n "$inits" ] || { echo 0; return; }
    ps -o stat=,comm= --ppid "$inits" 2>/dev/null | awk '$2=="sleep" && $1 !~ /^Z/' | wc -l
}

# one rcompose measurement: round, N -> data/rc-N.txt gets the sums
rc_cycle() {
    local r=$1 n=$2 proj=bm$TAG-$1-$2 i got=0 line
    if ! timeout 120 "$RC" -f "$WORK/stack$n.yaml" -p "$proj" up -d >"$WORK/log/rc-up-$r-$n.log" 2>&1; then
        RC_FAIL+="round $r, N=$n: \`up -d\` failed: $(tail -2 "$WORK/log/rc-up-$r-$n.log" | tr '\n' ' '). "
        timeout 60 "$RC" -p "$proj" down -t 1 >/dev/null 2>&1 || true
        return 1
    fi
    for i in $(seq 1 300); do
        got=$(rc_sleepers "$proj")
        [ "$got" -ge "$n" ] && break
        sleep 0.1
    done
    sleep "$SETTLE"
    if [ "$got" -ge "$n" ] && line=$(rc_measure "$proj" "$n" "rcompose round=$r N=$n"); then
        echo "$line" >>"$WORK/data/rc-$n.txt"
        echo "$r $line" >>"$WORK/data/rc-$n.rounds"
    else
        RC_FAIL+="round $r, N=$n: only $got/$n containers running, or not measurable. "
    fi
    timeout 120 "$RC" -p "$proj" down -t 1 >"$WORK/log/rc-down-$r-$n.log" 2>&1 ||
        RC_FAIL+="round $r, N=$n: \`down\` failed: $(tail -2 "$WORK/log/rc-down-$r-$n.log" | tr '\n' ' '). "
    [ ! -e "/run/rcompose/$proj" ] || RC_FAIL+="round $r, N=$n: \`down\` left /run/rcompose/$proj. "
}

# one podman measurement: round, N -> data/pm-N.txt gets "rss pss conmons"
pm_cycle() {
    local r=$1 n=$2 i name cpid rss pss trss=0 tpss=0 k=0 running
    for i in $(seq -w 1 "$n"); do
        "${PM_RUN[@]}" --name "rcbm$TAG-$r-$n-$i" "$IMG" sleep 3600 >/dev/null 2>>"$WORK/log/pm-run.log" ||
            die "podman run failed (round $r, N=$n): $(tail -2 "$WORK/log/pm-run.log")"
    done
    running=$(podman ps -q --filter "name=^rcbm$TAG-$r-$n-" --filter status=running | wc -l)
    [ "$running" = "$n" ] || die "podman: $running/$n containers running (round $r)"
    sleep "$SETTLE"
    for i in $(seq -w 1 "$n"); do
        name=rcbm$TAG-$r-$n-$i
        cpid=$(podman inspect -f '{{.State.ConmonPid}}' "$name")
        rss=$(kb VmRSS "/proc/$cpid/status")
        pss=$(kb Pss "/proc/$cpid/smaps_rollup")
        [ "$(cat "/proc/$cpid/comm" 2>/dev/null)" = conmon ] || die "pid $cpid of $name is not conmon"
        printf 'podman round=%s N=%s container=%s pid=%s comm=conmon VmRSS_kB=%s Pss_kB=%s\n' "$r" "$n" "$name" \
            "$cpid" "$rss" "$pss" >>"$WORK/data/procs.txt"
        trss=$((trss + rss))
        tpss=$((tpss + pss))
        k=$((k + 1))
    done
    echo "$trss $tpss $k" >>"$WORK/data/pm-$n.txt"
    echo "$r $trss $tpss $k" >>"$WORK/data/pm-$n.rounds"
    podman ps -aq --filter "name=^rcbm$TAG-$r-$n-" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
    [ "$(podman ps -aq --filter "name=^rcbm$TAG-$r-$n-" | wc -l)" = 0 ] || die "podman rm left containers (round $r)"
}

RC_FAIL=""
MEASURE_LOAD=$(loadavg)
log "measuring: $ROUNDS rounds of N=$N_SMALL and N=$N_LARGE for rcompose and podman"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="rc pm"; else order="pm rc"; fi
    for t in $order; do
        for n in "$N_SMALL" "$N_LARGE"; do
            if [ "$t" = rc ]; then
                [ "$RC_STATUS" = ok ] && { rc_cycle "$r" "$n" || true; }
            else
                pm_cycle "$r" "$n"
            fi
        done
    done
    log "  round $r: loadavg $(loadavg)"
done
[ -z "$RC_FAIL" ] || log "rcompose failures: $RC_FAIL"

# ---------------------------------------------------------------------------------------------
# slopes per round: (total at N_LARGE - total at N_SMALL) / (N_LARGE - N_SMALL), in KiB
DN=$((N_LARGE - N_SMALL))
slopes() { # small.rounds large.rounds column out
    join <(sort -k1,1 "$1") <(sort -k1,1 "$2") 2>/dev/null |
        awk -v c="$3" -v nf="$(awk '{print NF; exit}' "$1" 2>/dev/null)" -v dn="$DN" \
            '{printf "%.1f\n", ($(c + nf - 1) - $c) / dn}' >"$4"
}
touch "$WORK"/data/{rc,pm}-{"$N_SMALL","$N_LARGE"}.{txt,rounds}
slopes "$WORK/data/rc-$N_SMALL.rounds" "$WORK/data/rc-$N_LARGE.rounds" 2 "$WORK/data/rc-slope-rss"
slopes "$WORK/data/rc-$N_SMALL.rounds" "$WORK/data/rc-$N_LARGE.rounds" 3 "$WORK/data/rc-slope-pss"
slopes "$WORK/data/pm-$N_SMALL.rounds" "$WORK/data/pm-$N_LARGE.rounds" 2 "$WORK/data/pm-slope-rss"
slopes "$WORK/data/pm-$N_SMALL.rounds" "$WORK/data/pm-$N_LARGE.rounds" 3 "$WORK/data/pm-slope-pss"
col() { awk -v c="$2" '{print $c}' "$1" >"$3"; } # FILE COLUMN OUT
for n in "$N_SMALL" "$N_LARGE"; do
    i=1
    for k in rss pss procs sup_rss sup_pss fs_rss fs_pss init_rss init_pss other_rss other_pss; do
        col "$WORK/data/rc-$n.txt" "$i" "$WORK/data/rc-$n-$k"
        i=$((i + 1))
    done
    col "$WORK/data/pm-$n.txt" 1 "$WORK/data/pm-$n-rss"
    col "$WORK/data/pm-$n.txt" 2 "$WORK/data/pm-$n-pss"
    col "$WORK/data/pm-$n.txt" 3 "$WORK/data/pm-$n-procs"
done

# the average at N_LARGE: everything (fixed part included) divided by the containers
for k in rc-$N_LARGE-rss rc-$N_LARGE-pss pm-$N_LARGE-rss pm-$N_LARGE-pss; do
    awk -v n="$N_LARGE" '{printf "%.1f\n", $1 / n}' "$WORK/data/$k" >"$WORK/data/$k-avg"
done
RC_AVG_RSS=$(med "$WORK/data/rc-$N_LARGE-rss-avg")
RC_AVG_PSS=$(med "$WORK/data/rc-$N_LARGE-pss-avg")
PM_AVG_RSS=$(med "$WORK/data/pm-$N_LARGE-rss-avg")
PM_AVG_PSS=$(med "$WORK/data/pm-$N_LARGE-pss-avg")
RC_SLOPE_RSS=$(med "$WORK/data/rc-slope-rss")
RC_SLOPE_PSS=$(med "$WORK/data/rc-slope-pss")
PM_SLOPE_RSS=$(med "$WORK/data/pm-slope-rss")
PM_SLOPE_PSS=$(med "$WORK/data/pm-slope-pss")
TARGET_KIB=$(awk -v b="$TARGET_BYTES" 'BEGIN{printf "%.1f", b/1024}')
RC_ROUNDS_OK=$(count "$WORK/data/rc-slope-rss")
# the verdict's figure: the larger of the two median slopes (see the report for why)
RC_SLOPE=$(awk -v a="$RC_SLOPE_RSS" -v b="$RC_SLOPE_PSS" 'BEGIN{if(a==""||b==""){print ""}else{print (a+0>b+0)?a:b}}')
RC_SLOPE_BY=$(awk -v a="$RC_SLOPE_RSS" -v b="$RC_SLOPE_PSS" 'BEGIN{print (a+0>b+0)?"RSS":"PSS"}')
if [ "$RC_STATUS" = ok ] && [ "$RC_ROUNDS_OK" = "$ROUNDS" ] && lt "$RC_SLOPE" "$TARGET_KIB"; then
    VERDICT="**MET**"
elif [ "$RC_STATUS" != ok ]; then
    VERDICT="**MISSED** (rcompose not measured)"
elif [ "$RC_ROUNDS_OK" != "$ROUNDS" ]; then
    VERDICT="**MISSED** (only $RC_ROUNDS_OK of $ROUNDS rounds measured)"
else
    VERDICT="**MISSED**"
fi
RC_AVG=$(awk -v a="$RC_AVG_RSS" -v b="$RC_AVG_PSS" 'BEGIN{if(a==""||b==""){print ""}else{print (a+0>b+0)?a:b}}')
RC_AVG_BY=$(awk -v a="$RC_AVG_RSS" -v b="$RC_AVG_PSS" 'BEGIN{print (a+0>b+0)?"RSS":"PSS"}')
if [ "$RC_STATUS" = ok ] && [ "$(count "$WORK/data/rc-$N_LARGE-rss-avg")" = "$ROUNDS" ] && lt "$RC_AVG" "$TARGET_KIB"; then
    AVG_VERDICT="**MET**"
elif [ "$RC_STATUS" != ok ]; then
    AVG_VERDICT="**MISSED** (rcompose not measured)"
else
    AVG_VERDICT="**MISSED**"
fi
# the highest per-round slopes, to show how robust the verdict is
RC_SLOPE_RSS_MAX=$(sort -g "$WORK/data/rc-slope-rss" | tail -1)
RC_SLOPE_PSS_MAX=$(sort -g "$WORK/data/rc-slope-pss" | tail -1)

# ---------------------------------------------------------------------------------------------
# leftovers (before the cleanup trap, so that they show up in the report)
RC_LEFT=$(rc_projects_left | tr '\n' ' ')
CG_LEFT=$(ls -d /sys/fs/cgroup/*/rcompose/bm"$TAG"-* /sys/fs/cgroup/rcompose/bm"$TAG"-* 2>/dev/null | tr '\n' ' ' || true)
PM_LEFT=$(pm_left)
RC_OTHER=0
for p in $(ls /proc | grep -E '^[0-9]+$'); do
    is_rcompose "$p" && RC_OTHER=$((RC_OTHER + 1))
done
END_LOAD=$(loadavg)
END_PSI=$(cpu_psi)
stamp T_END
DURATION_S=$(((T_END - T_BEGIN) / 1000000))

# ---------------------------------------------------------------------------------------------
# report
vers() { "$@" 2>/dev/null | head -1 || echo "?"; }
row() { # label file -> "| label | runs | median | min-max |"
    if [ "$(count "$2")" -gt 0 ]; then
        echo "| $1 | $(count "$2") | $(med "$2") | $(minmax "$2") |"
    else
        echo "| $1 | 0 | not measured | |"
    fi
}
{
    echo "$BEGIN_MARK"
    echo "## e. Memory per running container"
    echo
    echo "Written by \`just bench\` (bench/memory.sh, after bench/images.sh) on $START_DATE; this part took"
    echo "${DURATION_S} s. The same shared machine (nproc $(nproc), kernel $(uname -r), $(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo));"
    echo "loadavg $START_LOAD at start, $MEASURE_LOAD before measuring, $END_LOAD at end; CPU PSI"
    echo "$START_PSI / $END_PSI. Memory figures do not depend on the load the way times do."
    echo
    echo "| tool | version |"
    echo "|---|---|"
    echo "| rcompose | ${RC_VERSION:-?} (commit $RC_COMMIT, \`just build\`: static) |"
    echo "| podman | $(vers podman --version) (\`--runtime runc --network none\`) |"
    echo "| conmon | $(vers conmon --version) |"
    echo "| runc | $(vers runc --version) |"
    echo "| busybox | $(vers busybox) |"
    echo
    if [ "$RC_STATUS" != ok ]; then
        echo "> **rcompose could not be measured in this run:** $RC_STATUS"
        if [ -n "$RC_ERR" ]; then
            echo ">"
            echo '> ```'
            sed 's/^/> /' <<<"$RC_ERR"
            echo '> ```'
        fi
        echo
    fi
    echo "### Target"
    echo
    echo "| target | rcompose | podman (conmon) | ratio | verdict |"
    echo "|---|---|---|---|---|"
    echo "| e. memory rcompose keeps per running container < 0.5 MB (500,000 bytes = $TARGET_KIB KiB), per container added: the larger of the median per-container slopes of summed RSS and PSS | ${RC_SLOPE:-n/a} KiB ($(mb "$RC_SLOPE"), by $RC_SLOPE_BY); RSS ${RC_SLOPE_RSS:-n/a}, PSS ${RC_SLOPE_PSS:-n/a} KiB | RSS ${PM_SLOPE_RSS:-n/a} KiB ($(mb "$PM_SLOPE_RSS")), PSS ${PM_SLOPE_PSS:-n/a} KiB | RSS $(ratio "$RC_SLOPE_RSS" "$PM_SLOPE_RSS"), PSS $(ratio "$RC_SLOPE_PSS" "$PM_SLOPE_PSS") | $VERDICT |"
    echo "| e. (fixed part shared out) everything rcompose keeps for $N_LARGE containers, divided by $N_LARGE (the supervisor and fork server shared out) < 0.5 MB, by the larger of RSS and PSS | ${RC_AVG:-n/a} KiB ($(mb "$RC_AVG"), by $RC_AVG_BY); RSS ${RC_AVG_RSS:-n/a}, PSS ${RC_AVG_PSS:-n/a} KiB | RSS ${PM_AVG_RSS:-n/a} KiB, PSS ${PM_AVG_PSS:-n/a} KiB | RSS $(ratio "$RC_AVG_RSS" "$PM_AVG_RSS"), PSS $(ratio "$RC_AVG_PSS" "$PM_AVG_PSS") | $AVG_VERDICT |"
    echo
    echo "The highest rcompose slope of any round: RSS ${RC_SLOPE_RSS_MAX:-n/a} KiB, PSS ${RC_SLOPE_PSS_MAX:-n/a} KiB."
    echo
    echo "How it is measured and judged:"
    echo "- For N = $N_SMALL and N = $N_LARGE containers of busybox \`sleep 3600\`, $ROUNDS rounds, the tool order"
    echo "  alternating: rcompose \`up -d\` of N one-container pods (one manifest per N, the same busybox"
    echo "  rootfs), podman N x \`podman run -d --runtime runc --network none\` of that rootfs imported"
    echo "  with \`podman import\`. ${SETTLE} s after every \`sleep\` runs, VmRSS (/proc/PID/status) and Pss"
    echo "  (/proc/PID/smaps_rollup) are summed, then the stack is removed (\`down -t 1\`, \`podman rm -f -t 0\`)."
    echo "- rcompose: every process of the supervisor's tree (\`supervisor_pid\` in state.json), of its fork"
    echo "  server's (\`forkserver\`) and of the project's cgroups, except the containers' own commands"
    echo "  (\`sleep\` children of a container's PID 1): the supervisor (its log thread per container"
    echo "  included), the fork server, each container's PID 1 (\`rcompose-init\`) and any other helper."
    echo "  A detached supervisor stops its fork server once the stack is up (the server only speeds"
    echo "  up the start; restarts re-execute rcompose), so the fork server rows below read 0."
    echo "  podman: each container's conmon (with \`--network none\` and no pod there is no other"
    echo "  per-container process; the runtime exits once the container runs)."
    echo "- The per-container cost is the slope (total at N=$N_LARGE - total at N=$N_SMALL) / $DN, computed per"
    echo "  round: what one more container adds, the fixed part (supervisor and fork server) counted once"
    echo "  whatever N. The second row shares that fixed part out instead: the total at N=$N_LARGE"
    echo "  divided by $N_LARGE (medians of the rounds), which falls as N grows; both readings of \"per"
    echo "  container\" are judged, and the first is the slope the target was stated for."
    echo "- The verdict takes the larger of the median RSS and PSS slopes, so it holds under both"
    echo "  readings; neither bounds the other for a difference. RSS charges a page to every process"
    echo "  that maps it: conmon's ~2 MB are mostly libc and glib pages every conmon shares, so its RSS"
    echo "  slope is several times what the host pays. But RSS misses copy-on-write breaks: when the"
    echo "  supervisor writes a page it still shares with its fork server (forked from it), the host"
    echo "  pays a new page while neither RSS changes. PSS splits each page between the processes"
    echo "  mapping it, so its sum is the processes' physical memory and sees those breaks. The"
    echo "  ratios compare each reading with the same reading of conmon."
    echo "- Not counted on either side: kernel memory (task structs and kernel stacks of the processes"
    echo "  and of the supervisor's log threads, pipes, cgroups, namespaces, overlay mounts), which /proc"
    echo "  does not attribute to a process."
    echo
    echo "### Totals (KiB, medians over the rounds)"
    echo
    echo "| | runs | median | min-max |"
    echo "|---|---|---|---|"
    for n in "$N_SMALL" "$N_LARGE"; do
        row "rcompose N=$n: RSS of its processes" "$WORK/data/rc-$n-rss"
        row "rcompose N=$n: PSS of its processes" "$WORK/data/rc-$n-pss"
        row "rcompose N=$n: processes counted" "$WORK/data/rc-$n-procs"
        row "rcompose N=$n: supervisor RSS" "$WORK/data/rc-$n-sup_rss"
        row "rcompose N=$n: supervisor PSS" "$WORK/data/rc-$n-sup_pss"
        row "rcompose N=$n: fork server RSS" "$WORK/data/rc-$n-fs_rss"
        row "rcompose N=$n: fork server PSS" "$WORK/data/rc-$n-fs_pss"
        row "rcompose N=$n: container PID 1s (rcompose-init), RSS summed" "$WORK/data/rc-$n-init_rss"
        row "rcompose N=$n: container PID 1s (rcompose-init), PSS summed" "$WORK/data/rc-$n-init_pss"
        row "rcompose N=$n: other processes RSS" "$WORK/data/rc-$n-other_rss"
        row "podman N=$n: conmon RSS" "$WORK/data/pm-$n-rss"
        row "podman N=$n: conmon PSS" "$WORK/data/pm-$n-pss"
    done
    echo
    echo "### Per container (KiB per container, over the rounds)"
    echo
    echo "| | runs | median | min-max |"
    echo "|---|---|---|---|"
    row "rcompose, RSS" "$WORK/data/rc-slope-rss"
    row "rcompose, PSS" "$WORK/data/rc-slope-pss"
    row "podman conmon, RSS" "$WORK/data/pm-slope-rss"
    row "podman conmon, PSS" "$WORK/data/pm-slope-pss"
    row "rcompose at N=$N_LARGE, RSS / $N_LARGE" "$WORK/data/rc-$N_LARGE-rss-avg"
    row "rcompose at N=$N_LARGE, PSS / $N_LARGE" "$WORK/data/rc-$N_LARGE-pss-avg"
    row "podman conmon at N=$N_LARGE, RSS / $N_LARGE" "$WORK/data/pm-$N_LARGE-rss-avg"
    row "podman conmon at N=$N_LARGE, PSS / $N_LARGE" "$WORK/data/pm-$N_LARGE-pss-avg"
    echo
    echo "| ratio rcompose / conmon (medians) | |"
    echo "|---|---|"
    echo "| RSS slope | $(ratio "$RC_SLOPE_RSS" "$PM_SLOPE_RSS") |"
    echo "| PSS slope | $(ratio "$RC_SLOPE_PSS" "$PM_SLOPE_PSS") |"
    [ -z "$RC_FAIL" ] || { echo; echo "**rcompose failures:** $RC_FAIL"; }
    echo
    echo "<details><summary>per process, round 1</summary>"
    echo
    echo '```'
    grep -E '^(rcompose|podman) round=1 ' "$WORK/data/procs.txt" 2>/dev/null || echo "(none)"
    echo '```'
    echo "</details>"
    echo
    echo "### Leftovers"
    echo
    if [ -n "$RC_LEFT$CG_LEFT" ]; then
        echo "- **rcompose left something behind** before the final cleanup: state dirs '$RC_LEFT', cgroups '$CG_LEFT'."
    else
        echo "- rcompose left no state directory and no cgroup of its projects (bm$TAG-*) behind."
    fi
    if [ "$PM_LEFT" != 0 ]; then
        echo "- **podman left $PM_LEFT container(s)** rcbm$TAG-* before the final cleanup."
    else
        echo "- podman left no container (rcbm$TAG-*) behind."
    fi
    echo "- Processes running this rcompose binary or its rcompose-init after the last \`down\`: $RC_OTHER."
    echo "- On exit the script removes its work dir, the podman image $IMG (unless it existed), podman's"
    echo "  storage, \`/etc/containers/networks\` and \`libpod_parent\` cgroups if this run created them"
    echo "  (and they hold nothing else). It changes no host setting: podman gets its rlimits per run."
    echo "$END_MARK"
} >"$WORK/section.md"

# keep what the other parts wrote; replace an earlier section of this script
replace_section "$BEGIN_MARK" "$END_MARK" "$WORK/section.md" "$OUT"
log "done: $OUT"
sed -n '/^### Target/,/^How it is/p' "$WORK/section.md" >&2
