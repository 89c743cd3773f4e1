#!/usr/bin/env bash
# `just bench`: rcompose and its peers side by side, in one run, on this machine.
#
#   a. start+exit of one container running /bin/true: rcompose `up` vs `crun run` (and runc)
#   b. a 10-pod stack (busybox sleep): rcompose `up -d` / `down` vs podman-compose
#   c. memory of the rcompose processes of that stack vs podman's conmon
#
# Writes docs/benchmarks.md (overwrites it). Run as root. It installs what it needs (apt:
# crun runc podman hyperfine busybox-static jq uidmap; pip: podman-compose), applies the host
# tweaks the peers need (podman default_ulimits in /etc/containers/containers.conf; hugetlb as
# its own cgroup v1 hierarchy so crun accepts this hybrid layout) and undoes them on exit,
# removing every container, image, network, cgroup and temp dir it made.
#
# Environment:
#   RCBENCH_DIR   work dir (default /tmp/rcbench; must not exist or be a leftover of this script)
#   RCOMPOSE_BIN  use this binary instead of building the static release binary
#   OUT           report path (default docs/benchmarks.md)
#   A_ROUNDS (3) x A_RUNS (10)   runs of benchmark a per tool (rounds rotate the tool order)
#   B_ROUNDS (5)                 rounds of benchmark b (tool order alternates)
#   B_T0_ROUNDS (2)              extra podman-compose rounds with `down -t 0` (context only)
#   QUIET_WAIT (90)              before measuring, wait up to this many seconds for CPU pressure
#                                (PSI some avg10) under 10 % (the machine is shared)
#   SKIP_INSTALL=1               do not call apt-get / pip
#   RCOMPOSE_EXE                 (harness tests only) the file /proc/PID/exe of rcompose's
#                                processes resolves to, if not RCOMPOSE_BIN
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
WORK=${RCBENCH_DIR:-/tmp/rcbench}
OUT=${OUT:-$REPO/docs/benchmarks.md}
A_ROUNDS=${A_ROUNDS:-3}
A_RUNS=${A_RUNS:-10}
B_ROUNDS=${B_ROUNDS:-5}
B_T0_ROUNDS=${B_T0_ROUNDS:-2}
IMG=localhost/rcbench-bb:latest
PC_PROJ=rcbench-pc
MARK="rcbench: written by rcompose bench/run.sh"
CONF=/etc/containers/containers.conf
# 15 MB target for the rcompose processes of the 10-pod stack (decimal MB: the stricter reading)
MEM_TARGET_KB=$((15000000 / 1024))

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
# microsecond timestamp into variable $1, without a fork
stamp() { printf -v "$1" '%s' "${EPOCHREALTIME/./}"; }
ms_between() { echo $((($2 - $1) / 1000)); } # start_us end_us -> ms
cgroup_layout() {
    case "$(stat -fc %T /sys/fs/cgroup)" in
    cgroup2fs) echo "v2 (unified)" ;;
    tmpfs)
        if [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
            echo "v1 hybrid (v1 controllers, cgroup2 at /sys/fs/cgroup/unified)"
        else
            echo "v1"
        fi
        ;;
    *) stat -fc %T /sys/fs/cgroup ;;
    esac
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
cpu_psi() { sed -n '1s/^some //p' /proc/pressure/cpu 2>/dev/null | cut -d' ' -f1-3 || echo n/a; }

[ "$(id -u)" = 0 ] || die "run as root (containers, cgroups, mounts)"
[ "${BASH_VERSINFO[0]}" -ge 5 ] || die "bash >= 5 needed (EPOCHREALTIME)"

# what podman had made on this machine before (checked before any podman command)
NETDIR_BEFORE=0
[ -e /etc/containers/networks ] && NETDIR_BEFORE=1
STORAGE_BEFORE=0
[ -e /var/lib/containers ] && STORAGE_BEFORE=1
RUNDIR_BEFORE=0
[ -e /run/rcompose ] && RUNDIR_BEFORE=1
START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
START_LOAD=$(loadavg)
START_PSI=$(cpu_psi)
stamp T_BEGIN

# ---------------------------------------------------------------------------------------------
# install
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    log "installing peers (apt, pip)"
    need=()
    # docker.io and docker-compose: bench/lifecycle.sh starts a dockerd of its own (part f1)
    for p in crun runc podman hyperfine busybox-static jq uidmap docker.io docker-compose; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        apt_get update >/dev/null
        apt_get install -y "${need[@]}" >/dev/null
    fi
    command -v podman-compose >/dev/null || python3 -m pip install -q podman-compose
    hash -r
fi
for t in crun runc podman hyperfine busybox jq podman-compose conmon; do
    command -v "$t" >/dev/null || die "$t not found"
done

# ---------------------------------------------------------------------------------------------
# rcompose binary
RC_BUILD_LOG=$(mktemp /tmp/rcbench-build.XXXXXX)
RC_STATUS=ok  # ok | "reason why rcompose could not be measured"
if [ -n "${RCOMPOSE_BIN:-}" ]; then
    RC=$(readlink -f "$RCOMPOSE_BIN")
else
    log "cargo build --release (static, as \`just build\`)"
    RC=$(rc_release_path)
    if ! rc_build_release >"$RC_BUILD_LOG" 2>&1; then
        RC_STATUS="cargo build --release failed: $(grep -m1 -E '^error' "$RC_BUILD_LOG" || tail -1 "$RC_BUILD_LOG")"
    fi
fi
rm -f "$RC_BUILD_LOG"
[ "$RC_STATUS" != ok ] || [ -x "$RC" ] || RC_STATUS="no binary at $RC"
RC_VERSION=$("$RC" --version 2>/dev/null | head -1 || true)
RC_COMMIT=$(rc_commit)

# ---------------------------------------------------------------------------------------------
# work dir, host tweaks and their undo
if [ -e "$WORK" ]; then
    [ -f "$WORK/.rcbench-run" ] || die "$WORK exists and was not made by bench/run.sh; set RCBENCH_DIR"
    log "removing the leftover $WORK of an earlier run"
    rm -rf "$WORK"
fi
mkdir -p "$WORK"
echo "$$" >"$WORK/.rcbench-run"

CONF_WRITTEN=0
V1_MOUNTED=()
IMAGES_BEFORE=$(podman images -q --no-trunc 2>/dev/null | sort -u || true)
CG_BEFORE=$(ls -d /sys/fs/cgroup/*/libpod_parent 2>/dev/null || true)
RC_PROJECTS=()

rc_projects_left() { # state dirs of our rcompose projects that still exist
    local d
    for d in /run/rcompose/bt-* /run/rcompose/bs-*; do [ -e "$d" ] && basename "$d"; done
    return 0
}

cleanup() {
    local rc=$? p c i id
    trap - EXIT INT TERM
    set +e
    log "cleanup"
    # rcompose projects this script started (bt-<pid> from benchmark a, bs-<round> from b)
    if [ -x "${RC:-}" ]; then
        for p in $(rc_projects_left); do
            timeout 60 "$RC" -p "$p" down >/dev/null 2>&1 || log "rcompose -p $p down failed"
        done
    fi
    # podman-compose project, its pod and network, our image and images podman made for us
    podman ps -aq --filter "label=io.podman.compose.project=$PC_PROJ" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
    podman pod rm -f "pod_$PC_PROJ" >/dev/null 2>&1
    podman network rm -f "${PC_PROJ}_default" >/dev/null 2>&1
    podman rmi -f "$IMG" >/dev/null 2>&1
    for id in $(podman images -q --no-trunc 2>/dev/null | sort -u); do
        grep -qxF "$id" <<<"$IMAGES_BEFORE" || podman rmi -f "$id" >/dev/null 2>&1
    done
    for id in $(crun list -q 2>/dev/null | grep '^rcb-'); do crun delete -f "$id"; done
    for id in $(runc list -q 2>/dev/null | grep '^rcb-'); do runc delete -f "$id"; done
    if [ "$CONF_WRITTEN" = 1 ] && grep -qF "$MARK" "$CONF" 2>/dev/null; then
        rm -f "$CONF" && log "removed $CONF"
    fi
    # podman's storage, if this run made it and nothing else is in it
    if [ "$STORAGE_BEFORE" = 0 ] && [ -d /var/lib/containers ] && [ -z "$(podman ps -aq 2>/dev/null)" ] &&
        [ -z "$(podman images -q 2>/dev/null)" ] && [ -z "$(podman pod ls -q 2>/dev/null)" ]; then
        podman system reset --force >/dev/null 2>&1
        rm -rf /var/lib/containers
        log "removed podman's storage (/var/lib/containers), which this run created"
    fi
    # netavark's lock dir, if podman made it during this run and it holds nothing else
    if [ "$NETDIR_BEFORE" = 0 ] && [ -d /etc/containers/networks ] &&
        [ -z "$(ls -A /etc/containers/networks | grep -vx netavark.lock)" ]; then
        rm -rf /etc/containers/networks
    fi
    # empty libpod_parent cgroups podman made (only if they were not there before)
    for c in /sys/fs/cgroup/*/libpod_parent; do
        [ -d "$c" ] || continue
        grep -qxF "$c" <<<"$CG_BEFORE" || find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    # give the controllers we moved to cgroup v1 back to cgroup2 (see peers/99-cleanup.sh:
    # dying child cgroups keep an unmounted v1 hierarchy alive, so verify and retry)
    for c in "${V1_MOUNTED[@]}"; do
        for i in 1 2 3 4 5; do
            mkdir -p "/sys/fs/cgroup/$c"
            mountpoint -q "/sys/fs/cgroup/$c" || mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
            find "/sys/fs/cgroup/$c" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null
            sleep 1
            umount "/sys/fs/cgroup/$c" && rmdir "/sys/fs/cgroup/$c"
            sleep 1
            if [ "$(awk -v c="$c" '$1==c{print $2}' /proc/cgroups)" = 0 ]; then
                log "cgroup controller $c is back on cgroup2"
                break
            fi
            [ "$i" = 5 ] && log "WARNING: could not give $c back to cgroup2 (still a v1 hierarchy)"
        done
    done
    rm -rf "$WORK"
    [ "$RUNDIR_BEFORE" = 1 ] || rmdir /run/rcompose 2>/dev/null
    local left
    left=$(rc_projects_left | tr '\n' ' ')
    [ -z "$left" ] || log "WARNING: rcompose state left in /run/rcompose: $left"
    log "cleanup done (cgroup2 controllers: '$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)')"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# podman as root asks for rlimits above the hard limits this machine allows (no CAP_SYS_RESOURCE)
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    grep -q '^default_ulimits' "$CONF" ||
        die "$CONF exists and is not ours: add default_ulimits = [\"nofile=$(ulimit -Hn):$(ulimit -Hn)\", ...] by hand"
    log "keeping the existing $CONF (it sets default_ulimits)"
else
    NOFILE=$(ulimit -Hn)
    NPROC=$(ulimit -Hu)
    # podman lowers its own RLIMIT_NPROC to 32768 before starting the runtime
    if [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 32768 ]; then NPROC=32768; fi
    mkdir -p /etc/containers
    printf '# %s; removed when it ends\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' \
        "$MARK" "$NOFILE" "$NOFILE" "$NPROC" "$NPROC" >"$CONF"
    CONF_WRITTEN=1
    log "wrote $CONF (nofile=$NOFILE nproc=$NPROC)"
fi
# crun refuses a hybrid layout whose cgroup2 holds a controller: move them to v1 hierarchies
CG2_CTRL_BEFORE=$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true)
for c in $CG2_CTRL_BEFORE; do
    mkdir -p "/sys/fs/cgroup/$c"
    mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
    V1_MOUNTED+=("$c")
    log "mounted cgroup controller $c as a v1 hierarchy (for crun)"
done

# ---------------------------------------------------------------------------------------------
# busybox rootfs, podman image, OCI bundles, manifests
log "busybox rootfs, podman image, bundles"
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,var/www}
cp /bin/busybox "$ROOTFS/bin/busybox"
chroot "$ROOTFS" /bin/busybox --install -s
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOTFS/etc/passwd"
echo 'root:x:0:' >"$ROOTFS/etc/group"
chmod 1777 "$ROOTFS/tmp"
podman rmi -f "$IMG" >/dev/null 2>&1 || true
tar -C "$ROOTFS" -c . | podman import --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' - "$IMG" >/dev/null 2>"$WORK/podman-import.log"
for rt in crun runc; do
    B=$WORK/bundle-$rt
    mkdir -p "$B"
    (cd "$B" && $rt spec)
    # same rootfs as rcompose (read-only root), no terminal, /bin/true
    jq --arg root "$ROOTFS" '.process.terminal=false | .process.args=["/bin/true"] | .root.path=$root' \
        "$B/config.json" >"$B/config.json.new"
    mv "$B/config.json.new" "$B/config.json"
done
for m in true stack10 smoke; do
    sed "s#/tmp/rcbench/rootfs#$ROOTFS#" "$REPO/bench/$m.yaml" >"$WORK/$m.yaml"
done
cp "$REPO/bench/compose10.yml" "$WORK/compose10.yml"

# smoke test of the peers (a failure here is a harness problem, not a result)
crun run -b "$WORK/bundle-crun" "rcb-crun-smoke-$$" || die "crun cannot run the bundle"
runc run -b "$WORK/bundle-runc" "rcb-runc-smoke-$$" || die "runc cannot run the bundle"

# does rcompose work at all? (a failure is reported, and the peers are still measured)
RC_ERR=""
if [ "$RC_STATUS" = ok ]; then
    log "rcompose smoke test: up of bench/smoke.yaml"
    smoke_rc=0
    timeout 60 "$RC" -f "$WORK/smoke.yaml" -p "bt-smoke$$" up >"$WORK/rc-smoke.log" 2>&1 || smoke_rc=$?
    if [ "$smoke_rc" != 0 ]; then
        RC_STATUS="\`rcompose -f bench/smoke.yaml -p bt-smoke up\` failed (exit $smoke_rc)"
        RC_ERR=$(tail -5 "$WORK/rc-smoke.log")
    elif ! grep -q 'rcbench-smoke-42' "$WORK/rc-smoke.log"; then
        RC_STATUS="\`rcompose -f bench/smoke.yaml up\` exited 0 but did not show the container's output (did it run it?)"
        RC_ERR=$(tail -5 "$WORK/rc-smoke.log")
    elif [ -e "/run/rcompose/bt-smoke$$" ]; then
        RC_STATUS="\`rcompose up\` of bench/smoke.yaml returned but left /run/rcompose/bt-smoke$$ behind"
    fi
fi
[ "$RC_STATUS" = ok ] || log "rcompose is not measured: $RC_STATUS"

# ---------------------------------------------------------------------------------------------
# helpers (statistics: bench/lib.sh)

# ---------------------------------------------------------------------------------------------
# wait (a bounded time) for a quiet machine: the build above and other jobs load the CPUs
psi10() { sed -n '1s/.*avg10=\([0-9.]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null || echo 0; }
QUIET_WAIT=${QUIET_WAIT:-90}
stamp t_q0
QUIET_NOTE="did not get quiet within ${QUIET_WAIT} s (CPU PSI avg10 $(psi10) %)"
for i in $(seq 0 "$QUIET_WAIT"); do
    if lt "$(psi10)" 10; then
        stamp t_q1
        QUIET_NOTE="CPU PSI avg10 $(psi10) % after waiting $(((t_q1 - t_q0) / 1000000)) s"
        break
    fi
    sleep 1
done
log "quiet wait: $QUIET_NOTE"
MEASURE_LOAD=$(loadavg)

# ---------------------------------------------------------------------------------------------
# a. start + exit of one /bin/true container
log "benchmark a: /bin/true container, $A_ROUNDS rounds x $A_RUNS runs per tool"
declare -A A_CMD=(
    [rcompose]="timeout 60 $RC -f $WORK/true.yaml -p bt-\$\$ up"
    [crun]="timeout 60 crun run -b $WORK/bundle-crun rcb-crun-\$\$"
    [runc]="timeout 60 runc run -b $WORK/bundle-runc rcb-runc-\$\$"
)
A_TOOLS=(crun runc)
[ "$RC_STATUS" = ok ] && A_TOOLS=(rcompose crun runc)
A_NOTES=""
for t in rcompose crun runc; do : >"$WORK/a-$t.ms"; done
for r in $(seq 1 "$A_ROUNDS"); do
    # rotate the order every round so no tool always runs first
    n=${#A_TOOLS[@]}
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${A_TOOLS[$(((i + r - 1) % n))]}"); done
    cmds=()
    for t in "${order[@]}"; do cmds+=("${A_CMD[$t]}"); done
    if ! hyperfine --style basic --warmup 2 --runs "$A_RUNS" --export-json "$WORK/a-$r.json" \
        "${cmds[@]}" >"$WORK/a-$r.log" 2>&1; then
        if [ "$RC_STATUS" = ok ]; then
            RC_STATUS="rcompose \`up\` of bench/true.yaml failed during benchmark a, round $r"
            RC_ERR=$(grep -iE 'error|fail' "$WORK/a-$r.log" | tail -5)
            A_NOTES+="round $r: hyperfine stopped on a failed command; rcompose dropped, round rerun with the peers. "
            A_TOOLS=(crun runc)
            : >"$WORK/a-rcompose.ms"
            cmds=("${A_CMD[crun]}" "${A_CMD[runc]}")
            hyperfine --style basic --warmup 2 --runs "$A_RUNS" --export-json "$WORK/a-$r.json" \
                "${cmds[@]}" >"$WORK/a-$r.log" 2>&1 || die "hyperfine failed for the peers: $(tail -3 "$WORK/a-$r.log")"
        else
            die "hyperfine failed for the peers: $(tail -3 "$WORK/a-$r.log")"
        fi
    fi
    for t in "${A_TOOLS[@]}"; do
        jq -r --arg c "${A_CMD[$t]}" '.results[] | select(.command==$c) | .times[] | . * 1000' \
            "$WORK/a-$r.json" >>"$WORK/a-$t.ms"
    done
    log "  round $r ($(
        IFS=,
        echo "${order[*]}"
    )): loadavg $(loadavg)"
done

# ---------------------------------------------------------------------------------------------
# b + c. ten-pod stack
pc_running() { podman ps -q --filter "label=io.podman.compose.project=$PC_PROJ" --filter status=running | wc -l; }
pc_all() { podman ps -aq --filter "label=io.podman.compose.project=$PC_PROJ" | wc -l; }

# pids of the descendants of the given pids (the pids themselves included)
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
rc_state() { cat "/run/rcompose/$1/state.json" 2>/dev/null; }
rc_roots() { # supervisor pid and container pids of project $1, from state.json
    rc_state "$1" | jq -r '[.supervisor_pid // empty] + [(.containers // [])[] | .pid // empty] | .[] | select(. > 0)' 2>/dev/null || true
}
rc_sleepers() { # `sleep` processes (not zombies) under the supervisor and containers of project $1
    local roots
    roots=$(rc_roots "$1" | tr '\n' ' ')
    [ -n "$roots" ] || { echo 0; return; }
    ps -e -o pid=,ppid=,stat=,comm= | awk -v roots="$roots" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { par[$1] = $2; st[$1] = $3; comm[$1] = $4; pids[NR] = $1 }
        END {
            changed = 1
            while (changed) { changed = 0
                for (i in pids) { p = pids[i]; if (!(p in keep) && (par[p] in keep)) { keep[p] = 1; changed = 1 } } }
            c = 0; for (p in keep) if (comm[p] == "sleep" && st[p] !~ /^Z/) c++
            print c }'
}

# RCOMPOSE_EXE: only to test this harness with a mock whose processes run another binary
RC_INO=$(stat -Lc '%d:%i' "${RCOMPOSE_EXE:-$RC}" 2>/dev/null || echo none)
# the tiny PID 1 each container ends up with (src/bin/rcompose-init.rs), installed next to rcompose
RC_INIT_INO=$(stat -Lc '%d:%i' "$(dirname "$RC")/rcompose-init" 2>/dev/null || echo none)
is_rcompose() {
    local ino
    ino=$(stat -Lc '%d:%i' "/proc/$1/exe" 2>/dev/null) || return 1
    [ "$ino" = "$RC_INO" ] || [ "$ino" = "$RC_INIT_INO" ]
}
kb() { # FIELD FILE -> kB value
    awk -v f="$1:" '$1==f{print $2; exit}' "$2" 2>/dev/null || true
}

# c. memory of the rcompose processes of project $1 -> $WORK/c-rcompose.txt
rc_memory() {
    local proj=$1 sup pids p
    sup=$(rc_state "$proj" | jq -r '.supervisor_pid // empty' 2>/dev/null || true)
    {
        echo "supervisor_pid=${sup:-missing}"
        if [ -n "$sup" ] && [ -d "/proc/$sup" ]; then
            echo "supervisor VmHWM_kB=$(kb VmHWM "/proc/$sup/status") VmRSS_kB=$(kb VmRSS "/proc/$sup/status")"
        fi
        # the supervisor, the per-container init processes and anything else running the
        # rcompose binary under them or in the project's cgroups
        pids=$( (
            descendants $(rc_roots "$proj" | tr '\n' ' ')
            grep -l "rcompose/$proj\b" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3
        ) | sort -un)
        for p in $pids; do
            is_rcompose "$p" || continue
            printf 'proc pid=%s comm=%s role=%s VmHWM_kB=%s VmRSS_kB=%s Rss_kB=%s Pss_kB=%s\n' "$p" \
                "$(cat "/proc/$p/comm" 2>/dev/null)" "$([ "$p" = "$sup" ] && echo supervisor || echo init/other)" \
                "$(kb VmHWM "/proc/$p/status")" "$(kb VmRSS "/proc/$p/status")" \
                "$(kb Rss "/proc/$p/smaps_rollup")" "$(kb Pss "/proc/$p/smaps_rollup")"
        done
        # rcompose processes on the machine not attributed to this project (should be none)
        local other=0
        for p in $(ls /proc | grep -E '^[0-9]+$'); do
            is_rcompose "$p" && ! grep -qxF "$p" <<<"$pids" && other=$((other + 1))
        done
        echo "unattributed_rcompose_processes=$other"
    } >"$WORK/c-rcompose.txt"
}

# c. podman: conmon of every container of the project (as peers/rss.sh), plus helpers
pc_memory() {
    local id name cpid pid
    {
        for id in $(podman ps -q --filter "label=io.podman.compose.project=$PC_PROJ"); do
            read -r name cpid pid < <(podman inspect -f '{{.Name}} {{.State.ConmonPid}} {{.State.Pid}}' "$id")
            printf 'conmon container=%s pid=%s VmHWM_kB=%s VmRSS_kB=%s Pss_kB=%s\n' "$name" "$cpid" \
                "$(kb VmHWM "/proc/$cpid/status")" "$(kb VmRSS "/proc/$cpid/status")" "$(kb Pss "/proc/$cpid/smaps_rollup")"
        done
        for h in aardvark-dns catatonit; do
            for pid in $(pgrep -x "$h" || true); do
                printf 'helper %s pid=%s VmRSS_kB=%s Pss_kB=%s\n' "$h" "$pid" \
                    "$(kb VmRSS "/proc/$pid/status")" "$(kb Pss "/proc/$pid/smaps_rollup")"
            done
        done
    } >"$WORK/c-podman.txt"
}

B_LOG=$WORK/b-rounds.txt
: >"$B_LOG"
for f in rc-up rc-running rc-down pc-up pc-running pc-down pc-down-t0; do : >"$WORK/b-$f.ms"; done
B_FAIL=""

rc_cycle() { # round
    local r=$1 proj=bs-$1 t0 t1 t2 t3 t4 ok=1 n=0 i left
    RC_PROJECTS+=("$proj")
    stamp t0
    if ! timeout 120 "$RC" -f "$WORK/stack10.yaml" -p "$proj" up -d >"$WORK/rc-up-$r.log" 2>&1; then
        B_FAIL+="round $r: \`rcompose up -d\` failed: $(tail -2 "$WORK/rc-up-$r.log" | tr '\n' ' '). "
        ok=0
    fi
    stamp t1
    if [ "$ok" = 1 ]; then
        for i in $(seq 1 300); do
            n=$(rc_sleepers "$proj")
            [ "$n" -ge 10 ] && break
            sleep 0.05
        done
        stamp t2
        if [ "$n" -lt 10 ]; then
            B_FAIL+="round $r: only $n/10 rcompose pods running 15 s after \`up -d\` returned. "
            ok=0
        fi
    fi
    [ "$r" = 1 ] && rc_memory "$proj"
    stamp t3
    timeout 120 "$RC" -p "$proj" down >"$WORK/rc-down-$r.log" 2>&1 ||
        B_FAIL+="round $r: \`rcompose down\` failed: $(tail -2 "$WORK/rc-down-$r.log" | tr '\n' ' '). "
    stamp t4
    left=$(rc_sleepers "$proj")
    [ -e "/run/rcompose/$proj" ] && left="$left (state dir left)"
    if [ "$ok" = 1 ]; then
        ms_between "$t0" "$t1" >>"$WORK/b-rc-up.ms"
        ms_between "$t0" "$t2" >>"$WORK/b-rc-running.ms"
        ms_between "$t3" "$t4" >>"$WORK/b-rc-down.ms"
        echo "rcompose round $r: up_return=$(ms_between "$t0" "$t1")ms all_running=$(ms_between "$t0" "$t2")ms down=$(ms_between "$t3" "$t4")ms left=$left load1=$(cut -d' ' -f1 /proc/loadavg)" >>"$B_LOG"
    else
        echo "rcompose round $r: FAILED (see notes) left=$left" >>"$B_LOG"
    fi
    [ "$ok" = 1 ]
}

pc_cycle() { # round [down args...]
    local r=$1 t0 t1 t2 t3 t4 n=0 i left tag=""
    shift
    [ $# -gt 0 ] && tag=" (down $*)"
    stamp t0
    timeout 300 podman-compose -f "$WORK/compose10.yml" -p "$PC_PROJ" up -d >"$WORK/pc-up.log" 2>&1 ||
        log "podman-compose up -d failed (round $r): $(tail -2 "$WORK/pc-up.log")"
    stamp t1
    for i in $(seq 1 600); do
        n=$(pc_running)
        [ "$n" -ge 10 ] && break
        sleep 0.05
    done
    stamp t2
    [ "$n" -ge 10 ] || die "podman-compose: only $n/10 containers running (round $r): $(tail -3 "$WORK/pc-up.log")"
    [ "$r" = 1 ] && [ $# = 0 ] && pc_memory
    stamp t3
    timeout 300 podman-compose -f "$WORK/compose10.yml" -p "$PC_PROJ" down "$@" >"$WORK/pc-down.log" 2>&1 ||
        log "podman-compose down failed (round $r): $(tail -2 "$WORK/pc-down.log")"
    stamp t4
    left=$(pc_all)
    [ "$left" = 0 ] || podman ps -aq --filter "label=io.podman.compose.project=$PC_PROJ" | xargs -r podman rm -f -t 0 >/dev/null 2>&1
    if [ $# = 0 ]; then
        ms_between "$t0" "$t1" >>"$WORK/b-pc-up.ms"
        ms_between "$t0" "$t2" >>"$WORK/b-pc-running.ms"
        ms_between "$t3" "$t4" >>"$WORK/b-pc-down.ms"
    else
        ms_between "$t3" "$t4" >>"$WORK/b-pc-down-t0.ms"
    fi
    echo "podman-compose round $r$tag: up_return=$(ms_between "$t0" "$t1")ms all_running=$(ms_between "$t0" "$t2")ms down=$(ms_between "$t3" "$t4")ms left=$left load1=$(cut -d' ' -f1 /proc/loadavg)" >>"$B_LOG"
}

log "benchmark b/c: 10-pod stack, $B_ROUNDS rounds (+$B_T0_ROUNDS podman-compose rounds with down -t 0)"
for r in $(seq 1 "$B_ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
        [ "$RC_STATUS" = ok ] && { rc_cycle "$r" || true; }
        pc_cycle "$r"
    else
        pc_cycle "$r"
        [ "$RC_STATUS" = ok ] && { rc_cycle "$r" || true; }
    fi
    log "  round $r: loadavg $(loadavg)"
done
for r in $(seq 1 "$B_T0_ROUNDS"); do
    pc_cycle "$r" -t 0
done
[ -n "$B_FAIL" ] && log "rcompose failures in benchmark b: $B_FAIL"

# ---------------------------------------------------------------------------------------------
# leftovers (checked before the cleanup trap, so that they show up in the report)
RC_LEFT=$(rc_projects_left | tr '\n' ' ')
END_LOAD=$(loadavg)
END_PSI=$(cpu_psi)
stamp T_END
DURATION_S=$(((T_END - T_BEGIN) / 1000000))

# ---------------------------------------------------------------------------------------------
# report
log "writing $OUT"
verdict() {
    if "$@"; then
        echo "**met**"
    elif [ "$RC_STATUS" != ok ]; then
        echo "**MISSED** (rcompose not measured)"
    else
        echo "**MISSED**"
    fi
}

A_RC_MED=$(med "$WORK/a-rcompose.ms")
A_CRUN_MED=$(med "$WORK/a-crun.ms")
A_RUNC_MED=$(med "$WORK/a-runc.ms")
B_RC_UP=$(med "$WORK/b-rc-running.ms")
B_PC_UP_RET=$(med "$WORK/b-pc-up.ms")
B_PC_UP_RUN=$(med "$WORK/b-pc-running.ms")
B_PC_UP_MIN=$(awk -v a="$B_PC_UP_RET" -v b="$B_PC_UP_RUN" 'BEGIN{print (a+0<b+0)?a:b}')
B_RC_DOWN=$(med "$WORK/b-rc-down.ms")
B_RC_DOWN_MAX=$(sort -n "$WORK/b-rc-down.ms" | tail -1)
B_PC_DOWN=$(med "$WORK/b-pc-down.ms")

# memory totals
C_SUP_HWM=$(awk '/^supervisor /{for(i=1;i<=NF;i++) if($i~/^VmHWM_kB=/){split($i,a,"=");print a[2]}}' "$WORK/c-rcompose.txt" 2>/dev/null || true)
C_SUP_RSS=$(awk '/^supervisor /{for(i=1;i<=NF;i++) if($i~/^VmRSS_kB=/){split($i,a,"=");print a[2]}}' "$WORK/c-rcompose.txt" 2>/dev/null || true)
C_SUP_PSS=$(awk '/role=supervisor /{for(i=1;i<=NF;i++) if($i~/^Pss_kB=/){split($i,a,"=");print a[2]}}' "$WORK/c-rcompose.txt" 2>/dev/null || true)
sum_field() { # FILE LINE_PREFIX FIELD
    awk -v pre="$2" -v f="$3=" 'index($0,pre)==1{for(i=1;i<=NF;i++) if(index($i,f)==1){v=substr($i,length(f)+1); s+=v; n++}} END{printf "%d %d\n", s, n}' "$1" 2>/dev/null || echo "0 0"
}
read -r C_RC_HWM C_RC_N < <(sum_field "$WORK/c-rcompose.txt" proc VmHWM_kB)
read -r C_RC_RSS _ < <(sum_field "$WORK/c-rcompose.txt" proc VmRSS_kB)
read -r C_RC_PSS _ < <(sum_field "$WORK/c-rcompose.txt" proc Pss_kB)
read -r C_PM_RSS C_PM_N < <(sum_field "$WORK/c-podman.txt" conmon VmRSS_kB)
read -r C_PM_PSS _ < <(sum_field "$WORK/c-podman.txt" conmon Pss_kB)
read -r C_PM_HWM _ < <(sum_field "$WORK/c-podman.txt" conmon VmHWM_kB)
read -r C_PH_RSS C_PH_N < <(sum_field "$WORK/c-podman.txt" helper VmRSS_kB)
read -r C_PH_PSS _ < <(sum_field "$WORK/c-podman.txt" helper Pss_kB)
C_UNATTR=$(sed -n 's/^unattributed_rcompose_processes=//p' "$WORK/c-rcompose.txt" 2>/dev/null || true)
mb() { awk -v k="$1" 'BEGIN{if(k==""){print "n/a"}else{printf "%.1f MB\n", k*1024/1e6}}'; }
per() { awk -v s="$1" -v n="$2" 'BEGIN{if(n+0==0){print "n/a"}else{printf "%.0f\n", s/n}}'; }

rc_ok() { [ "$RC_STATUS" = ok ]; }
A_VERDICT=$(verdict eval 'rc_ok && [ "$(count "$WORK/a-rcompose.ms")" -gt 0 ] && le "$(ratio "$A_RC_MED" "$A_CRUN_MED")" 1.0')
B_UP_VERDICT=$(verdict eval 'rc_ok && [ "$(count "$WORK/b-rc-running.ms")" = "$B_ROUNDS" ] && lt "$B_RC_UP" "$(awk -v x="$B_PC_UP_MIN" "BEGIN{print x/10}")"')
B_DOWN_VERDICT=$(verdict eval 'rc_ok && [ "$(count "$WORK/b-rc-down.ms")" = "$B_ROUNDS" ] && lt "$B_RC_DOWN" 1000')
C_VERDICT=$(verdict eval 'rc_ok && [ "${C_RC_N:-0}" -gt 0 ] && [ -n "$C_SUP_HWM" ] && [ "$C_RC_HWM" -lt "$MEM_TARGET_KB" ]')

row_ms() { # label file
    local f=$2
    if [ "$(count "$f")" -gt 0 ]; then
        echo "| $1 | $(count "$f") | $(med "$f") | $(minmax "$f") |"
    else
        echo "| $1 | 0 | not measured | |"
    fi
}

{
    echo "# Benchmarks"
    echo
    echo "Written by \`just bench\` (bench/run.sh) on $START_DATE; the whole run took ${DURATION_S} s."
    echo "Every figure below comes from this one run, with rcompose and its peers interleaved, on a"
    echo "shared, noisy machine: compare the ratios, not the absolute times. Rerun with \`just bench\`."
    echo
    echo "## Machine"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| CPUs (nproc) | $(nproc) |"
    echo "| kernel | $(uname -r) |"
    echo "| OS | $(. /etc/os-release && echo "$PRETTY_NAME") |"
    echo "| memory | $(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
    echo "| cgroups | $(cgroup_layout); cgroup2 controllers before the run: '${CG2_CTRL_BEFORE}' |"
    echo "| loadavg (1/5/15 min) at start | $START_LOAD |"
    echo "| before measuring (wait for CPU PSI avg10 < 10 %) | $QUIET_NOTE; loadavg $MEASURE_LOAD |"
    echo "| loadavg at end | $END_LOAD |"
    echo "| CPU pressure (PSI some) at start / end | $START_PSI / $END_PSI |"
    echo
    echo "## Versions"
    echo
    echo "| tool | version |"
    echo "|---|---|"
    echo "| rcompose | ${RC_VERSION:-?} (commit $RC_COMMIT, \`just build\`: static) |"
    echo "| crun | $(crun --version | head -1) |"
    echo "| runc | $(runc --version | head -1) |"
    echo "| podman | $(podman --version) |"
    echo "| conmon | $(conmon --version | head -1) |"
    echo "| podman-compose | $(podman-compose --version 2>/dev/null | grep -i 'podman-compose' | head -1) |"
    echo "| hyperfine | $(hyperfine --version) |"
    echo "| busybox | $(busybox | head -1) |"
    echo
    if [ "$RC_STATUS" != ok ]; then
        echo "> **rcompose could not be measured in this run:** $RC_STATUS"
        if [ -n "$RC_ERR" ]; then
            echo ">"
            echo '> ```'
            sed 's/^/> /' <<<"$RC_ERR"
            echo '> ```'
        fi
        echo ">"
        echo "> Its rows say \"not measured\" and its targets count as missed."
        echo
    fi
    echo "## Targets"
    echo
    echo "| target | rcompose | peer | ratio | verdict |"
    echo "|---|---|---|---|---|"
    echo "| a. start+exit of a /bin/true container: rcompose no slower than crun (median ratio <= 1.0) | ${A_RC_MED:-n/a} ms | crun ${A_CRUN_MED:-n/a} ms | $(ratio "$A_RC_MED" "$A_CRUN_MED") | $A_VERDICT |"
    echo "| b. 10-pod \`up -d\` < 1/10 of podman-compose \`up -d\` | ${B_RC_UP:-n/a} ms | ${B_PC_UP_MIN:-n/a} ms | $(ratio "$B_RC_UP" "$B_PC_UP_MIN") (target < 0.10) | $B_UP_VERDICT |"
    echo "| b. 10-pod \`down\` < 1 s (default 10 s grace period) | ${B_RC_DOWN:-n/a} ms (max ${B_RC_DOWN_MAX:-n/a}) | podman-compose ${B_PC_DOWN:-n/a} ms | $(ratio "$B_RC_DOWN" "$B_PC_DOWN") | $B_DOWN_VERDICT |"
    echo "| c. rcompose processes of the 10-pod stack < 15 MB in total (sum of peak RSS, VmHWM) | $(mb "$C_RC_HWM") in $C_RC_N processes | conmon $(mb "$C_PM_HWM") in $C_PM_N | $(ratio "$C_RC_HWM" "$C_PM_HWM") | $C_VERDICT |"
    echo
    if [ "${C_RC_N:-0}" -gt 0 ]; then
        echo "Memory by the other readings: total RSS $(mb "$C_RC_RSS"), total PSS $(mb "$C_RC_PSS") of the rcompose"
        echo "processes ($(lt "$C_RC_PSS" "$MEM_TARGET_KB" && echo "PSS is under" || echo "PSS is over") 15 MB); the verdict above uses the peak RSS sum."
        echo "Each container's PID 1 starts as the Rust init (about 1.9 MB resident during the few"
        echo "milliseconds it builds the container), then replaces itself with the 2 KiB \`rcompose-init\`;"
        echo "VmHWM belongs to a process image, so this start-up transient is not in the sum: the figure is"
        echo "the running stack's, as conmon's is."
        echo
    fi
    echo "How the targets are judged (the stricter reading each time):"
    echo "- b \`up\`: rcompose's time is until \`up -d\` returned **and** all 10 \`sleep\` processes were seen"
    echo "  running; the peer's is the smaller of podman-compose's two medians (until \`up -d\` returns,"
    echo "  until all 10 containers are \`running\`)."
    echo "- b \`down\`: median of the rounds; the slowest round is shown too."
    echo "- c: peak RSS (VmHWM) summed over every process running the rcompose binary for the project"
    echo "  (the supervisor, its fork server and the per-container init processes), against 15 MB = 15,000,000 bytes."
    echo "  RSS counts the shared pages of the binary once per process; PSS (below) splits them."
    echo
    echo "## a. Start and exit of one container running /bin/true"
    echo
    echo "hyperfine, $A_ROUNDS rounds x $A_RUNS runs per tool (plus 2 warm-up runs per round), the tool"
    echo "order rotated every round, all on the same busybox rootfs (\`busybox --install -s\`, $(find "$ROOTFS" | wc -l) entries)."
    echo "crun and runc run an OCI bundle from \`crun spec\` / \`runc spec\` (terminal false, args"
    echo "/bin/true, read-only root, a unique id per run); rcompose runs \`rcompose -f bench/true.yaml -p bt-\$\$ up\`"
    echo "(foreground \`up\` returns once the container has exited and the stack is torn down). Like the"
    echo "bundles, whose network namespace has only \`lo\`, the pod has \`network_mode: none\`; the project"
    echo "network (a bridge and a veth per replica) is in part b's ten-pod stack."
    echo "Each command is wrapped in \`timeout 60\` (same cost for every tool)."
    echo
    echo "| command | runs | median ms | min-max ms | ratio rcompose/this |"
    echo "|---|---|---|---|---|"
    echo "| \`rcompose -f bench/true.yaml -p bt-\$\$ up\` | $(count "$WORK/a-rcompose.ms") | ${A_RC_MED:-not measured} | $(minmax "$WORK/a-rcompose.ms") | $(ratio "$A_RC_MED" "$A_RC_MED") |"
    echo "| \`crun run -b bundle-crun rcb-crun-\$\$\` | $(count "$WORK/a-crun.ms") | $A_CRUN_MED | $(minmax "$WORK/a-crun.ms") | $(ratio "$A_RC_MED" "$A_CRUN_MED") |"
    echo "| \`runc run -b bundle-runc rcb-runc-\$\$\` | $(count "$WORK/a-runc.ms") | $A_RUNC_MED | $(minmax "$WORK/a-runc.ms") | $(ratio "$A_RC_MED" "$A_RUNC_MED") |"
    [ -z "$A_NOTES" ] || { echo; echo "Note: $A_NOTES"; }
    echo
    echo "## b. Ten-pod stack: \`up -d\` and \`down\`"
    echo
    echo "Ten pods, one \`/bin/sleep 3600\` each, on the same busybox rootfs: bench/stack10.yaml for"
    echo "rcompose, bench/compose10.yml for podman-compose (the rootfs imported with \`podman import\`)."
    echo "$B_ROUNDS rounds, tool order alternating. Times are wall clock around each command; \"all running\""
    echo "polls every 50 ms (rcompose: \`sleep\` processes under the project's supervisor and container"
    echo "pids from /run/rcompose/<project>/state.json; podman: \`podman ps --filter status=running\`)."
    echo
    echo "| command | runs | median ms | min-max ms |"
    echo "|---|---|---|---|"
    row_ms "\`rcompose -f bench/stack10.yaml -p bs-N up -d\` (until it returns)" "$WORK/b-rc-up.ms"
    row_ms "\`rcompose ... up -d\` (until all 10 running)" "$WORK/b-rc-running.ms"
    row_ms "\`rcompose -p bs-N down\`" "$WORK/b-rc-down.ms"
    row_ms "\`podman-compose up -d\` (until it returns)" "$WORK/b-pc-up.ms"
    row_ms "\`podman-compose up -d\` (until all 10 running)" "$WORK/b-pc-running.ms"
    row_ms "\`podman-compose down\` (default 10 s stop timeout)" "$WORK/b-pc-down.ms"
    row_ms "\`podman-compose down -t 0\` (context only: SIGKILL at once)" "$WORK/b-pc-down-t0.ms"
    echo
    echo "| ratio rcompose/podman-compose | median |"
    echo "|---|---|"
    echo "| up -d (all running / podman until running) | $(ratio "$B_RC_UP" "$B_PC_UP_RUN") |"
    echo "| up -d (returns / podman returns) | $(ratio "$(med "$WORK/b-rc-up.ms")" "$B_PC_UP_RET") |"
    echo "| down (both with the default grace period) | $(ratio "$B_RC_DOWN" "$B_PC_DOWN") |"
    echo
    echo "busybox \`sleep\` ignores SIGTERM when it is PID 1, which is why podman-compose's default \`down\`"
    echo "waits out the 10 s stop timeout; under rcompose the container's PID 1 is rcompose's own init,"
    echo "which passes SIGTERM on to \`sleep\` (not PID 1 there), so \`down\` does not wait for the timeout."
    [ -z "$B_FAIL" ] || { echo; echo "**rcompose failures:** $B_FAIL"; }
    echo
    echo "<details><summary>per round</summary>"
    echo
    echo '```'
    cat "$B_LOG"
    echo '```'
    echo "</details>"
    echo
    echo "## c. Memory with the ten pods running"
    echo
    echo "Measured once, in round 1, after \`up -d\` (rcompose) / after all containers were running (podman)."
    echo "The supervisor pid is \`supervisor_pid\` in /run/rcompose/bs-1/state.json; the rcompose processes"
    echo "are those whose /proc/PID/exe is the rcompose binary or its \`rcompose-init\` (the PID 1 of each"
    echo "container), among the supervisor's descendants, the"
    echo "state file's \`containers[].pid\` and the project's cgroups. kB from /proc/PID/status (VmHWM,"
    echo "VmRSS) and /proc/PID/smaps_rollup (Pss). The workload (\`sleep\`) is counted on neither side."
    echo
    echo "| | processes | total peak RSS (VmHWM) | total RSS | total PSS | total RSS / containers |"
    echo "|---|---|---|---|---|---|"
    echo "| rcompose supervisor | 1 | ${C_SUP_HWM:-n/a} kB | ${C_SUP_RSS:-n/a} kB | ${C_SUP_PSS:-n/a} kB | |"
    echo "| rcompose, all processes of the project | ${C_RC_N} | ${C_RC_HWM} kB ($(mb "$C_RC_HWM")) | ${C_RC_RSS} kB | ${C_RC_PSS} kB | $(per "$C_RC_RSS" 10) kB |"
    echo "| podman: conmon (one per container) | ${C_PM_N} | ${C_PM_HWM} kB ($(mb "$C_PM_HWM")) | ${C_PM_RSS} kB | ${C_PM_PSS} kB | $(per "$C_PM_RSS" "$C_PM_N") kB |"
    echo "| podman: helpers (aardvark-dns, catatonit) | ${C_PH_N} | | ${C_PH_RSS} kB | ${C_PH_PSS} kB | |"
    echo
    [ "${C_UNATTR:-0}" = 0 ] || echo "Note: $C_UNATTR other process(es) running the rcompose binary were not attributed to the project."
    echo
    echo "<details><summary>per process</summary>"
    echo
    echo '```'
    cat "$WORK/c-rcompose.txt" 2>/dev/null || echo "(rcompose not measured)"
    cat "$WORK/c-podman.txt" 2>/dev/null || true
    echo '```'
    echo "</details>"
    echo
    echo "## Leftovers and host changes"
    echo
    if [ -n "$RC_LEFT" ]; then
        echo "- **rcompose left state behind** before the final cleanup: /run/rcompose/{$RC_LEFT} (the cleanup ran \`rcompose down\` on them)."
    else
        echo "- rcompose left no state directories behind (/run/rcompose/bt-*, bs-*)."
    fi
    echo "- The run wrote /etc/containers/containers.conf (podman's default_ulimits: this machine withholds"
    echo "  CAP_SYS_RESOURCE) and mounted the cgroup2 controllers '${CG2_CTRL_BEFORE}' as v1 hierarchies"
    echo "  (crun refuses a hybrid layout whose cgroup2 holds a controller); both are undone when it ends,"
    echo "  together with the containers, pod, network, images and $WORK it made. Installed packages"
    echo "  (apt: crun runc podman hyperfine busybox-static jq uidmap; pip: podman-compose) stay."
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "done: $OUT"
cat "$OUT" | sed -n '/^## Targets/,/^How the/p' >&2
