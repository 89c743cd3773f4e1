#!/usr/bin/env bash
# `just bench`, part d (after bench/run.sh): images, side by side with their peers in one run.
#
#   d1. unpack of one ~200 MB layer: `rcompose image import` of an OCI layout vs `tar -xzf` of
#       the same gzip blob (`gzip -dc` of it as context)
#   d2. a 4-layer image (~50 MB a layer): `rcompose image import` (parallel, default --jobs)
#       vs `rcompose image import --jobs 1` vs `umoci unpack`
#   d3. pull of both images from a local registry (Debian's docker-registry on 127.0.0.1):
#       `rcompose pull` (download and unpack) vs `skopeo copy` to an OCI layout (download only)
#
# The images are built here from real files of this machine (/usr/lib/x86_64-linux-gnu and
# /usr/share), gzip -6, as OCI layouts (blobs, config, manifest, index.json, oci-layout).
# Appends its section to docs/benchmarks.md, which bench/run.sh rewrites first; a section
# from an earlier run of this script is replaced, everything else is kept. Run as root.
# It installs what it needs (apt: hyperfine umoci skopeo docker-registry jq), and on exit
# kills the registry it started and removes every store, layout, bundle and temp dir it made.
#
# Environment:
#   RCBENCH_DIR   work dir (default /tmp/rcbench-images; must not exist or be a leftover of
#                 this script)
#   RCOMPOSE_BIN  use this binary instead of building the static release binary
#                 (${CARGO_TARGET_DIR:-target}/<host triple>/release/rcompose (static, see rc_build_release in bench/lib.sh))
#   OUT           report path (default docs/benchmarks.md)
#   ROUNDS (3) x RUNS (5)   hyperfine runs per command (plus 1 warm-up per round); the order
#                           of the commands rotates every round
#   IMAGE_MB (200)          uncompressed size of the image (the single layer; 4 x 1/4 of it)
#   QUIET_WAIT (90)         before measuring, wait up to this many seconds for CPU pressure
#                           (PSI some avg10) under 10 % (the machine is shared)
#   STEP_WAIT (15)          the same wait, at most this long, before each hyperfine
#   BENCH_FS (loop)         loop: the measured commands write on a fresh ext4 (with journal)
#                           on a loop device, its image in the work dir; dir: in the work dir
#   SKIP_INSTALL=1          do not call apt-get
#   HOLD=1                  for profiling: after the smoke test, write the commands (and the
#                           prepare command) to $WORK/commands.sh, then wait until killed
#                           (the cleanup still runs); nothing is measured or written
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
WORK=${RCBENCH_DIR:-/tmp/rcbench-images}
OUT=${OUT:-$REPO/docs/benchmarks.md}
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-5}
IMAGE_MB=${IMAGE_MB:-200}
QUIET_WAIT=${QUIET_WAIT:-90}
STEP_WAIT=${STEP_WAIT:-15}
BEGIN_MARK="<!-- bench/images.sh: begin -->"
END_MARK="<!-- bench/images.sh: end -->"
# files above this size are left out of the image (one libLLVM would be half of it)
MAX_FILE=$((16 * 1024 * 1024))
SKOPEO_CACHE=/var/lib/containers/cache/blob-info-cache-v1.boltdb

log() { printf '[bench images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
stamp() { printf -v "$1" '%s' "${EPOCHREALTIME/./}"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
cpu_psi() { sed -n '1s/^some //p' /proc/pressure/cpu 2>/dev/null | cut -d' ' -f1-3 || echo n/a; }
psi10() { sed -n '1s/.*avg10=\([0-9.]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null || echo 0; }

failed() { awk '{s+=$1} END{print s+0}' "$1" 2>/dev/null || echo 0; }

[ "$(id -u)" = 0 ] || die "run as root (rcompose's store, umoci unpack as root)"
[ "${BASH_VERSINFO[0]}" -ge 5 ] || die "bash >= 5 needed (EPOCHREALTIME)"
[ "$ROUNDS" -ge 1 ] && [ "$RUNS" -ge 2 ] || die "ROUNDS >= 1 and RUNS >= 2"

START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
START_LOAD=$(loadavg)
START_PSI=$(cpu_psi)
stamp T_BEGIN
CACHE_BEFORE=0
[ -e "$SKOPEO_CACHE" ] && CACHE_BEFORE=1
VLC_BEFORE=0
[ -e /var/lib/containers ] && VLC_BEFORE=1

# ---------------------------------------------------------------------------------------------
# install
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    need=()
    for p in hyperfine umoci skopeo docker-registry jq curl python3; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        log "installing ${need[*]} (apt)"
        apt_get update >/dev/null
        apt_get install -y "${need[@]}" >/dev/null
    fi
    hash -r
fi
for t in hyperfine umoci skopeo docker-registry jq curl python3 tar gzip sha256sum; do
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
    build_log=$(mktemp /tmp/rcbench-images-build.XXXXXX)
    if ! rc_build_release >"$build_log" 2>&1; then
        RC_STATUS="cargo build --release failed: $(grep -m1 -E '^error' "$build_log" || tail -1 "$build_log")"
    fi
    rm -f "$build_log"
fi
[ "$RC_STATUS" != ok ] || [ -x "$RC" ] || RC_STATUS="no binary at $RC"
RC_VERSION=$("$RC" --version 2>/dev/null | head -1 || true)
RC_COMMIT=$(rc_commit)

# ---------------------------------------------------------------------------------------------
# work dir, registry, cleanup
if [ -e "$WORK" ]; then
    [ -f "$WORK/.rcbench-images" ] || die "$WORK exists and was not made by bench/images.sh; set RCBENCH_DIR"
    log "removing the leftover $WORK of an earlier run"
    rm -rf "$WORK"
fi
mkdir -p "$WORK"/{lists,json,log,ms}
echo "$$" >"$WORK/.rcbench-images"
REG_PID=""
FS_MNT=""

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    log "cleanup"
    if [ -n "$REG_PID" ] && kill -0 "$REG_PID" 2>/dev/null; then
        kill "$REG_PID"
        for i in $(seq 1 50); do kill -0 "$REG_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$REG_PID" 2>/dev/null && kill -KILL "$REG_PID"
        wait "$REG_PID" 2>/dev/null
        log "stopped docker-registry (pid $REG_PID)"
    fi
    if [ -n "$FS_MNT" ] && mountpoint -q "$FS_MNT"; then
        for i in 1 2 3 4 5; do umount "$FS_MNT" && break; sleep 1; done
        mountpoint -q "$FS_MNT" && log "WARNING: could not unmount $FS_MNT"
    fi
    rm -rf --one-file-system "$WORK"
    # skopeo's blob info cache (root: a fixed path), if this run made it
    if [ "$CACHE_BEFORE" = 0 ] && [ -e "$SKOPEO_CACHE" ]; then
        rm -f "$SKOPEO_CACHE"
        if [ "$VLC_BEFORE" = 0 ]; then
            rmdir /var/lib/containers/cache /var/lib/containers 2>/dev/null
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Where the measured commands write. This machine's root file system is ext4 without a
# journal: there ext4 checks every free inode it considers for a recent deletion
# (recently_deleted() in fs/ext4/ialloc.c runs only without a journal), and as every run
# starts by deleting the last run's thousands of files, inode allocation would rescan the
# just-deleted inodes for every new file (about half of the CPU time of an import and of
# `tar -xzf` in a perf profile). So by default the outputs go to a fresh ext4 with the usual
# journal (mkfs.ext4 defaults) on a loop device, its image a sparse file in the work dir:
# the file system an image store usually sits on. BENCH_FS=dir writes in the work dir itself.
BENCH_FS=${BENCH_FS:-loop}
FS_NOTE=""
if [ "$BENCH_FS" = loop ]; then
    FS_MNT=$WORK/fs
    mkdir -p "$FS_MNT"
    if truncate -s 4G "$WORK/fs.img" && mkfs.ext4 -q -F "$WORK/fs.img" >"$WORK/log/mkfs.log" 2>&1 &&
        mount -o loop "$WORK/fs.img" "$FS_MNT" 2>>"$WORK/log/mkfs.log"; then
        FS_NOTE="a fresh ext4 (mkfs.ext4 defaults, with journal) on $(findmnt -no SOURCE "$FS_MNT"), its image a sparse file on the work dir's $(df -PT "$WORK" | awk 'NR==2{print $2 " (" $1 ")"}')"
        OUTD=$FS_MNT/out
    else
        log "no loop-mounted ext4 ($(tail -1 "$WORK/log/mkfs.log")); writing in the work dir"
        FS_MNT=""
        BENCH_FS=dir
    fi
fi
if [ "$BENCH_FS" != loop ]; then
    OUTD=$WORK/out
    FS_NOTE="the work dir's file system, $(df -PT "$WORK" | awk 'NR==2{print $2 " (" $1 ")"}')"
    jt=/sys/fs/ext4/$(basename "$(df -P "$WORK" | awk 'NR==2{print $1}')")/journal_task
    [ "$(cat "$jt" 2>/dev/null)" = "<none>" ] && FS_NOTE+=", without a journal"
fi
log "outputs on $FS_NOTE"

# ---------------------------------------------------------------------------------------------
# the images: file lists, layer tars, OCI layouts
log "building the images (~$IMAGE_MB MB of /usr/lib/x86_64-linux-gnu and /usr/share)"
# Regular files and symlinks, names sorted, half of the bytes from each tree, without setuid
# or setgid files (refused by default on import), files over 16 MiB and usr/share/package-lists
# (this machine's package indexes, no package's files). Hard links count once. The 4-layer
# image holds the same entries, cut into four runs of about a quarter of the bytes each; every
# list names the parent directories of its entries first.
(
    cd /
    find usr/lib/x86_64-linux-gnu usr/share -xdev \
        -path usr/share/package-lists -prune -o \
        \( -type f -o -type l \) ! -perm /6000 ! -name "$(printf '*\n*')" \
        -printf '%s\t%y\t%D:%i\t%p\n'
) | LC_ALL=C sort -t $'\t' -k4,4 | awk -F '\t' -v budget=$((IMAGE_MB * 1000000 / 2)) \
    -v max="$MAX_FILE" -v dir="$WORK/lists" '
    function emit(list, path,   parts, k, j, pre) {
        k = split(path, parts, "/"); pre = ""
        for (j = 1; j < k; j++) {
            pre = (j == 1) ? parts[1] : pre "/" parts[j]
            if (!((list SUBSEP pre) in seen)) { seen[list, pre] = 1; print pre > (dir "/" list ".list") }
        }
        print path > (dir "/" list ".list")
    }
    {
        size = $1; type = $2; ino = $3; path = $4
        root = (index(path, "usr/share/") == 1) ? "share" : "lib"
        if (used[root] >= budget) next
        if (type == "f") {
            if (size > max) next
            if (ino in inode) size = 0; else inode[ino] = 1
        } else size = 0
        used[root] += size
        n++; P[n] = path; S[n] = size; total += size
    }
    END {
        cum = 0
        for (i = 1; i <= n; i++) {
            emit("one", P[i])
            c = int(cum * 4 / total) + 1; if (c > 4) c = 4
            emit("four" c, P[i])
            cum += S[i]
        }
    }'
for l in one four1 four2 four3 four4; do
    [ -s "$WORK/lists/$l.list" ] || die "empty file list $l"
done

# a layer: tar of a list -> $WORK/layers/NAME.tar.gz, with NAME.diffid and NAME.tarsize
mkdir -p "$WORK/layers"
make_layer() {
    local name=$1 t=$WORK/layers/$1.tar
    tar -C / --no-recursion --numeric-owner --sort=none -cf "$t" -T "$WORK/lists/$name.list"
    sha256sum "$t" | cut -d' ' -f1 >"$t.diffid"
    stat -c %s "$t" >"$t.size"
    gzip -6 -n -c "$t" >"$t.gz"
    rm -f "$t"
}
pids=()
for l in one four1 four2 four3 four4; do
    make_layer "$l" &
    pids+=($!)
    # as many at once as there are CPUs (tar, then gzip: one core each)
    if [ "${#pids[@]}" -ge "$(nproc)" ]; then wait "${pids[0]}" || die "making layer failed"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || die "making a layer failed"; done

# an OCI layout: DIR TAG LAYER-NAMES...
put_blob() { # LAYOUT FILE -> "sha256-hex size"; moves FILE into the layout's blobs
    local h s
    h=$(sha256sum "$2" | cut -d' ' -f1)
    s=$(stat -c %s "$2")
    mv "$2" "$1/blobs/sha256/$h"
    echo "$h $s"
}
make_layout() {
    local dir=$1 tag=$2 l h s
    shift 2
    mkdir -p "$dir/blobs/sha256"
    local diff_ids=() layers=()
    for l in "$@"; do
        diff_ids+=("sha256:$(cat "$WORK/layers/$l.tar.diffid")")
        cp "$WORK/layers/$l.tar.gz" "$dir/layer.tmp"
        read -r h s < <(put_blob "$dir" "$dir/layer.tmp")
        layers+=("$(jq -cn --arg d "sha256:$h" --argjson s "$s" \
            '{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}')")
    done
    jq -cn --args '{created: "2026-01-01T00:00:00Z", architecture: "amd64", os: "linux",
        config: {Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/bin/sh"]},
        rootfs: {type: "layers", diff_ids: $ARGS.positional},
        history: [$ARGS.positional[] | {created: "2026-01-01T00:00:00Z", created_by: "bench/images.sh"}]}' \
        "${diff_ids[@]}" >"$dir/config.tmp"
    read -r h s < <(put_blob "$dir" "$dir/config.tmp")
    printf '%s\n' "${layers[@]}" | jq -cs --arg d "sha256:$h" --argjson s "$s" \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $d, size: $s},
          layers: .}' >"$dir/manifest.tmp"
    read -r h s < <(put_blob "$dir" "$dir/manifest.tmp")
    jq -cn --arg d "sha256:$h" --argjson s "$s" --arg t "$tag" \
        '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": $t}}]}' \
        >"$dir/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
}
L1=$WORK/layout-one
L4=$WORK/layout-four
make_layout "$L1" t one
make_layout "$L4" t four1 four2 four3 four4
rm -f "$WORK"/layers/four*.tar.gz
BLOB1=$WORK/layers/one.tar.gz # the single layer's blob (same bytes as in $L1), for tar and gzip

# what the images hold (for the report)
declare -A L_ENTRIES L_FILES L_TAR L_GZ
for l in one four1 four2 four3 four4; do
    L_ENTRIES[$l]=$(wc -l <"$WORK/lists/$l.list")
    L_FILES[$l]=$(cd / && xargs -d '\n' -a "$WORK/lists/$l.list" stat -c %F | grep -c '^regular')
    L_TAR[$l]=$(cat "$WORK/layers/$l.tar.size")
done
L_GZ[one]=$(stat -c %s "$BLOB1")
i=0
for s in $(jq -r '.layers[].size' "$L4/blobs/sha256/$(jq -r '.manifests[0].digest' "$L4/index.json" | cut -d: -f2)"); do
    i=$((i + 1))
    L_GZ[four$i]=$s
done
log "single layer: ${L_ENTRIES[one]} entries, ${L_TAR[one]} bytes tar, ${L_GZ[one]} bytes gzip"

# ---------------------------------------------------------------------------------------------
# local registry (as tests/privileged/registry.rs Server::start), both images pushed
log "starting docker-registry on 127.0.0.1, pushing both images with skopeo"
mkdir -p "$WORK/registry"
PORT=""
for _ in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%s\n' \
        "$WORK/registry/storage" "$port" >"$WORK/registry/config.yml"
    docker-registry serve "$WORK/registry/config.yml" </dev/null >>"$WORK/registry/log" 2>&1 &
    REG_PID=$!
    for i in $(seq 1 300); do
        kill -0 "$REG_PID" 2>/dev/null || break
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")" = 200 ]; then
            PORT=$port
            break
        fi
        sleep 0.05
    done
    [ -n "$PORT" ] && break
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
    REG_PID=""
done
[ -n "$PORT" ] || die "docker-registry did not come up: $(tail -5 "$WORK/registry/log")"
REG=127.0.0.1:$PORT
for n in one four; do
    L=$WORK/layout-$n
    skopeo copy -q --dest-tls-verify=false "oci:$L:t" "docker://$REG/bench/$n:t" >"$WORK/log/push-$n.log" 2>&1 ||
        die "skopeo copy to the registry failed: $(tail -3 "$WORK/log/push-$n.log")"
    # the registry must serve the very manifest of the layout (no conversion on the way)
    want=$(jq -r '.manifests[0].digest' "$L/index.json")
    got=$(curl -s -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$REG/v2/bench/$n/manifests/t" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
    [ "$got" = "$want" ] || die "the registry serves bench/$n:t as $got, the layout has $want"
done

# ---------------------------------------------------------------------------------------------
# the commands
declare -A CMD LABEL
CMD[rc1]="$RC --store $OUTD/store image import $L1"
CMD[tar1]="tar -xzf $BLOB1 -C $OUTD/tar"
CMD[gz1]="gzip -dc $BLOB1 >/dev/null"
CMD[rc4]="$RC --store $OUTD/store image import $L4"
CMD[rc4seq]="$RC --store $OUTD/store image import --jobs 1 $L4"
CMD[umoci4]="umoci unpack --image $L4:t $OUTD/bundle"
CMD[rcpull1]="$RC --store $OUTD/store pull $REG/bench/one:t"
CMD[skopeo1]="skopeo copy -q --src-tls-verify=false docker://$REG/bench/one:t oci:$OUTD/skopeo:t"
CMD[rcpull4]="$RC --store $OUTD/store pull $REG/bench/four:t"
CMD[skopeo4]="skopeo copy -q --src-tls-verify=false docker://$REG/bench/four:t oci:$OUTD/skopeo:t"
LABEL[rc1]="\`rcompose --store S image import layout-one\`"
LABEL[tar1]="\`tar -xzf BLOB -C DIR\`"
LABEL[gz1]="\`gzip -dc BLOB >/dev/null\` (context: decompression alone)"
LABEL[rc4]="\`rcompose --store S image import layout-four\` (parallel, default --jobs = $(nproc))"
LABEL[rc4seq]="\`rcompose --store S image import --jobs 1 layout-four\` (one after another)"
LABEL[umoci4]="\`umoci unpack --image layout-four:t BUNDLE\`"
LABEL[rcpull1]="\`rcompose --store S pull $REG/bench/one:t\` (download + unpack)"
LABEL[skopeo1]="\`skopeo copy docker://$REG/bench/one:t oci:DIR:t\` (download only)"
LABEL[rcpull4]="\`rcompose --store S pull $REG/bench/four:t\` (download + unpack)"
LABEL[skopeo4]="\`skopeo copy docker://$REG/bench/four:t oci:DIR:t\` (download only)"
# before every run (not timed): a fresh store, bundle, layout and tar directory
PREP="rm -rf $OUTD && mkdir -p $OUTD/tar"
RC_KEYS=(rc1 rc4 rc4seq rcpull1 rcpull4)
is_rc_key() { [[ " ${RC_KEYS[*]} " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
# smoke test: every command once; rcompose's unpacked layers against tar's and umoci's trees
tree() { # DIR... -> sorted "path type size mode link" of everything below the DIRs (merged)
    local d
    for d in "$@"; do (cd "$d" && find . -mindepth 1 -printf '%P\t%y\t%s\t%m\t%l\n'); done |
        awk -F '\t' -v OFS='\t' '$2 == "d" {$3 = "-"} {print}' | LC_ALL=C sort -u
}
rc_layers() { # STORE LAYER-NAME... -> the store's dirs of those layers (by their diff-ids)
    local s=$1 l
    shift
    for l in "$@"; do echo "$s/layers/sha256/$(cat "$WORK/layers/$l.tar.diffid")"; done
}
log "smoke test"
SMOKE_NOTES=()
smoke() { # KEY
    bash -c "$PREP" && bash -c "${CMD[$1]}" >"$WORK/log/smoke-$1.log" 2>&1
}
for k in tar1 umoci4 skopeo1; do
    smoke "$k" || die "peer command failed: ${CMD[$k]}: $(tail -3 "$WORK/log/smoke-$k.log")"
    case $k in
    tar1) tree "$OUTD/tar" >"$WORK/tree-tar1" ;;
    umoci4) tree "$OUTD/bundle/rootfs" >"$WORK/tree-umoci4" ;;
    esac
done
if [ "$RC_STATUS" = ok ]; then
    for k in rc1 rc4 rc4seq rcpull1 rcpull4; do
        if ! smoke "$k"; then
            RC_STATUS="\`${CMD[$k]}\` failed in the smoke test"
            RC_ERR=$(tail -5 "$WORK/log/smoke-$k.log")
            break
        fi
        case $k in
        rc1 | rcpull1) ref=tar1 names=(one) ;;
        *) ref=umoci4 names=(four1 four2 four3 four4) ;;
        esac
        got=$("$RC" --store "$OUTD/store" images --format json 2>/dev/null | jq -r '[.[].layers] | tostring' || true)
        if [ "$got" != "[${#names[@]}]" ]; then
            RC_STATUS="after \`${CMD[$k]}\` the store lists images with layers $got, not [${#names[@]}]"
            break
        fi
        mapfile -t dirs < <(rc_layers "$OUTD/store" "${names[@]}")
        for d in "${dirs[@]}"; do [ -d "$d" ] || { RC_STATUS="after \`${CMD[$k]}\` the layer $d is missing"; break 2; }; done
        tree "${dirs[@]}" >"$WORK/tree-$k"
        if ! cmp -s "$WORK/tree-$k" "$WORK/tree-$ref"; then
            nd=$(diff "$WORK/tree-$k" "$WORK/tree-$ref" | grep -c '^[<>]' || true)
            SMOKE_NOTES+=("\`$k\`: the unpacked tree differs from ${ref%?}'s in $nd lines (path type size mode link): $(diff "$WORK/tree-$k" "$WORK/tree-$ref" | grep '^[<>]' | head -3 | tr '\n' ';')")
        fi
    done
fi
[ "$RC_STATUS" = ok ] || log "rcompose is not measured: $RC_STATUS"
for n in "${SMOKE_NOTES[@]}"; do log "smoke: $n"; done
rm -rf "$OUTD"

if [ "${HOLD:-0}" = 1 ]; then
    {
        echo "PREP='$PREP'"
        for k in "${!CMD[@]}"; do printf '%s=%q\n' "$k" "${CMD[$k]}"; done
    } >"$WORK/commands.sh"
    log "HOLD: commands in $WORK/commands.sh; waiting until killed"
    while :; do sleep 3600 & wait $!; done # wait: a signal runs the cleanup at once
fi

# ---------------------------------------------------------------------------------------------
# quiet wait
# quiet_wait MAX: wait up to MAX seconds for CPU PSI avg10 < 10 %; says how it went in QUIET_NOTE
quiet_wait() {
    local i t0 t1
    stamp t0
    QUIET_NOTE="did not get quiet within $1 s (CPU PSI avg10 $(psi10) %)"
    for i in $(seq 0 "$1"); do
        if lt "$(psi10)" 10; then
            stamp t1
            QUIET_NOTE="CPU PSI avg10 $(psi10) % after waiting $(((t1 - t0) / 1000000)) s"
            return 0
        fi
        sleep 1
    done
    return 1
}
quiet_wait "$QUIET_WAIT" || true
START_QUIET_NOTE=$QUIET_NOTE
log "quiet wait: $START_QUIET_NOTE"
MEASURE_LOAD=$(loadavg)

# ---------------------------------------------------------------------------------------------
# measure
# hf ID ROUND KEY...: one hyperfine of the commands, their order rotated by ROUND; the times
# (ms) of successful runs go to ms/KEY.ms, failed runs are counted in ms/KEY.failed
ROUND_LOG=$WORK/rounds.txt
: >"$ROUND_LOG"
hf() {
    local id=$1 r=$2 n i k
    shift 2
    local keys=() order=() cmds=()
    for k in "$@"; do
        if is_rc_key "$k" && [ "$RC_STATUS" != ok ]; then continue; fi
        keys+=("$k")
    done
    n=${#keys[@]}
    for i in $(seq 0 $((n - 1))); do order+=("${keys[$(((i + r - 1) % n))]}"); done
    # other jobs on the machine (and the last hyperfine) load the CPUs: a bounded wait
    quiet_wait "$STEP_WAIT" || true
    local before=$QUIET_NOTE
    for k in "${order[@]}"; do cmds+=("${CMD[$k]}"); done
    local reg0
    reg0=$(reg_ticks)
    hyperfine --style basic --ignore-failure --warmup 1 --runs "$RUNS" --prepare "$PREP" \
        --export-json "$WORK/json/$id-$r.json" "${cmds[@]}" >"$WORK/log/$id-$r.log" 2>&1 ||
        die "hyperfine failed ($id, round $r): $(tail -3 "$WORK/log/$id-$r.log")"
    # the registry's CPU time (clock ticks) over the pulls of this hyperfine (warm-ups included)
    [[ $id != d3-* ]] || echo "$(($(reg_ticks) - reg0)) $((n * (RUNS + 1)))" >>"$WORK/ms/reg-$id.cpu"
    local line="round $r $id:"
    for k in "${order[@]}"; do
        jq -r --arg c "${CMD[$k]}" '.results[] | select(.command == $c) | [.times, .exit_codes] | transpose[]
            | select(.[1] == 0) | .[0] * 1000' "$WORK/json/$id-$r.json" | tee "$WORK/ms/$k.$r" >>"$WORK/ms/$k.ms"
        jq -r --arg c "${CMD[$k]}" '[.results[] | select(.command == $c) | .exit_codes[] | select(. != 0)] | length' \
            "$WORK/json/$id-$r.json" >>"$WORK/ms/$k.failed"
        # mean CPU time (user + system, the command's processes) and mean wall time, seconds
        jq -r --arg c "${CMD[$k]}" '.results[] | select(.command == $c) | "\(.user + .system) \(.mean)"' \
            "$WORK/json/$id-$r.json" >>"$WORK/ms/$k.cpu"
        line+=" $k=$(med "$WORK/ms/$k.$r")ms"
    done
    echo "$line (before: $before; after: CPU PSI $(cpu_psi), loadavg $(loadavg))" >>"$ROUND_LOG"
    log "  $line"
}

# the registry's CPU time so far, clock ticks (user + system)
reg_ticks() { awk '{print $14 + $15}' "/proc/$REG_PID/stat" 2>/dev/null || echo 0; }
for k in "${!CMD[@]}"; do : >"$WORK/ms/$k.ms"; : >"$WORK/ms/$k.failed"; : >"$WORK/ms/$k.cpu"; done
log "measuring: $ROUNDS rounds x $RUNS runs per command (+1 warm-up)"
for r in $(seq 1 "$ROUNDS"); do
    hf d1 "$r" rc1 tar1 gz1
    hf d2 "$r" rc4 rc4seq umoci4
    hf d3-one "$r" rcpull1 skopeo1
    hf d3-four "$r" rcpull4 skopeo4
done

END_LOAD=$(loadavg)
END_PSI=$(cpu_psi)
stamp T_END
DURATION_S=$(((T_END - T_BEGIN) / 1000000))

# ---------------------------------------------------------------------------------------------
# report
M() { med "$WORK/ms/$1.ms"; }
# CPUs busy on average while KEY ran: its CPU time (user + system) over its wall time
busy() { awk '{c += $1; w += $2} END{if (w > 0) printf "%.2f\n", c / w}' "$WORK/ms/$1.cpu" 2>/dev/null; }
# mean CPU time of KEY, ms (user + system)
cpu_ms() { awk '{c += $1; n++} END{if (n > 0) printf "%.0f\n", c / n * 1000}' "$WORK/ms/$1.cpu" 2>/dev/null; }
# the registry's mean CPU time per pull in the d3 hyperfines of ID, ms
reg_ms() {
    awk -v hz="$(getconf CLK_TCK)" '{t += $1; p += $2} END{if (p > 0) printf "%.0f\n", t / p * 1000 / hz}' \
        "$WORK/ms/reg-$1.cpu" 2>/dev/null
}
MS() { local m; m=$(M "$1"); if [ -n "$m" ]; then echo "$m ms"; else echo "not measured"; fi; }
rc_ok() { [ "$RC_STATUS" = ok ]; }
all_ok() { # KEY... : every key has all its runs, none failed
    local k
    for k in "$@"; do
        [ "$(count "$WORK/ms/$k.ms")" -gt 0 ] && [ "$(failed "$WORK/ms/$k.failed")" = 0 ] || return 1
    done
}
verdict() {
    if "$@"; then
        echo "**MET**"
    elif [ "$RC_STATUS" != ok ]; then
        echo "**MISSED** (rcompose not measured)"
    else
        echo "**MISSED**"
    fi
}
R1=$(ratio "$(M rc1)" "$(M tar1)")
SPEEDUP=$(ratio "$(M rc4seq)" "$(M rc4)")
R4U=$(ratio "$(M rc4)" "$(M umoci4)")
RP1=$(ratio "$(M rcpull1)" "$(M skopeo1)")
RP4=$(ratio "$(M rcpull4)" "$(M skopeo4)")
V1=$(verdict eval 'rc_ok && all_ok rc1 && le "$R1" 1.0')
V2=$(verdict eval 'rc_ok && all_ok rc4 rc4seq && le 1.5 "$SPEEDUP"')
V3A=$(verdict eval 'rc_ok && all_ok rcpull1 && le "$RP1" 1.0')
V3B=$(verdict eval 'rc_ok && all_ok rcpull4 && le "$RP4" 1.0')
V3=$(verdict eval 'rc_ok && all_ok rcpull1 rcpull4 && le "$RP1" 1.0 && le "$RP4" 1.0')
mbs() { awk -v b="$1" 'BEGIN{printf "%.1f MB", b/1e6}'; }
row() { # KEY REF_KEY
    local k=$1
    if [ "$(count "$WORK/ms/$k.ms")" -gt 0 ]; then
        echo "| ${LABEL[$k]} | $(count "$WORK/ms/$k.ms") | $(M "$k") | $(minmax "$WORK/ms/$k.ms") | $(ratio "$(M "$2")" "$(M "$k")") | $(busy "$k") |"
    else
        echo "| ${LABEL[$k]} | 0 | not measured | | | |"
    fi
    [ "$(failed "$WORK/ms/$k.failed")" = 0 ] || echo "| (failed runs of the command above, not in its times) | $(failed "$WORK/ms/$k.failed") | | | | |"
}
vers() { "$@" 2>&1 | head -1; }

log "writing the images section of $OUT"
{
    echo "$BEGIN_MARK"
    echo "## d. Images: unpack and pull"
    echo
    echo "Written by \`just bench\` (bench/images.sh, after bench/run.sh) on $START_DATE; this part took"
    echo "${DURATION_S} s. The same shared, noisy machine as above (nproc $(nproc), kernel $(uname -r));"
    echo "the measured commands write on $FS_NOTE."
    echo "Every figure of this section comes from this one run, the tools interleaved: compare the"
    echo "ratios, not the absolute times."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| loadavg (1/5/15 min) at start | $START_LOAD |"
    echo "| before measuring (wait for CPU PSI avg10 < 10 %) | $START_QUIET_NOTE; loadavg $MEASURE_LOAD |"
    echo "| loadavg at end | $END_LOAD |"
    echo "| CPU pressure (PSI some) at start / end | $START_PSI / $END_PSI |"
    echo
    echo "| tool | version |"
    echo "|---|---|"
    echo "| rcompose | ${RC_VERSION:-?} (commit $RC_COMMIT, \`just build\`: static) |"
    echo "| tar | $(vers tar --version) |"
    echo "| gzip | $(vers gzip --version) |"
    echo "| umoci | $(vers umoci --version) |"
    echo "| skopeo | $(vers skopeo --version) |"
    echo "| docker-registry | $(vers docker-registry --version) |"
    echo "| hyperfine | $(vers hyperfine --version) |"
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
    echo "### Targets"
    echo
    echo "| target | rcompose | peer | ratio | verdict |"
    echo "|---|---|---|---|---|"
    echo "| d1. one ~$IMAGE_MB MB layer: \`image import\` at least as fast as \`tar -xzf\` of the same blob (median ratio rcompose/tar <= 1.0) | $(MS rc1) | tar $(MS tar1) | $R1 | $V1 |"
    echo "| d2. four ~$((IMAGE_MB / 4)) MB layers: parallel \`image import\` at least 1.5x faster than \`--jobs 1\` (median speed-up >= 1.5) | $(MS rc4) | \`--jobs 1\` $(MS rc4seq) | speed-up $SPEEDUP | $V2 |"
    echo "| d2. (context, no target) the same against \`umoci unpack\` | $(MS rc4) | umoci $(MS umoci4) | $R4U | |"
    echo "| d3. pull no slower than \`skopeo copy\` (median ratio rcompose/skopeo <= 1.0), one-layer image | $(MS rcpull1) | skopeo $(MS skopeo1) | $RP1 | $V3A |"
    echo "| d3. the same, four-layer image | $(MS rcpull4) | skopeo $(MS skopeo4) | $RP4 | $V3B |"
    echo
    echo "- Target d1 (one layer at least as fast as \`tar -xzf\`): $V1 (ratio $R1)"
    echo "- Target d2 (four layers at least 1.5x faster in parallel than one after another): $V2 (speed-up $SPEEDUP; rcompose/umoci $R4U)"
    echo "- Target d3 (pull no slower than skopeo, both images): $V3 (ratios $RP1 and $RP4)"
    echo
    echo "How they are judged: medians over all rounds; a command with a failed run misses its"
    echo "target. rcompose's pull downloads **and** unpacks, skopeo's copy only downloads (the target"
    echo "as the issue names it)."
    echo
    echo "### The images"
    echo
    echo "Built by the script from this machine's files: regular files and symlinks of"
    echo "/usr/lib/x86_64-linux-gnu and /usr/share in name order, $((IMAGE_MB / 2)) MB from each (files over 16 MiB,"
    echo "setuid/setgid files and /usr/share/package-lists left out), with their parent directories;"
    echo "tar (GNU, numeric owners), \`gzip -6 -n\`; OCI layouts written by the script (config with"
    echo "\`rootfs.diff_ids\`, manifest, index.json with the tag \`t\`, oci-layout). The four-layer image"
    echo "holds the same entries cut into four runs of about a quarter of the bytes each."
    echo
    echo "| layer | entries | regular files | tar (uncompressed) | gzip blob |"
    echo "|---|---|---|---|---|"
    for l in one four1 four2 four3 four4; do
        echo "| $l | ${L_ENTRIES[$l]} | ${L_FILES[$l]} | $(mbs "${L_TAR[$l]}") | $(mbs "${L_GZ[$l]}") |"
    done
    echo
    if [ "${#SMOKE_NOTES[@]}" -gt 0 ]; then
        echo "Smoke test (before measuring; the trees rcompose unpacked against tar's / umoci's):"
        for n in "${SMOKE_NOTES[@]}"; do echo "- $n"; done
    else
        echo "Smoke test (before measuring): every rcompose command ran once, and the layers it unpacked"
        echo "hold the same tree (path, type, size, mode, link target) as \`tar -xzf\`'s (one layer) and"
        echo "\`umoci unpack\`'s rootfs (four layers, merged)."
    fi
    echo
    echo "hyperfine, $ROUNDS rounds x $RUNS runs per command (plus 1 warm-up per round), the order of"
    echo "the commands rotated every round; before each hyperfine, a wait of up to $STEP_WAIT s for CPU"
    echo "pressure (PSI some avg10) under 10 % (see the per-round log). Before every run (not timed): \`$PREP\`"
    echo "(so a fresh store, bundle, tar directory and skopeo layout each time). The blobs are read"
    echo "from the page cache (the warm-up run reads them first). \"CPUs busy\": the command's CPU time"
    echo "(user + system, from hyperfine) over its wall time, averaged over the runs."
    echo
    if [ "$BENCH_FS" = loop ]; then
        echo "Why a loop-mounted ext4: this machine's root file system is ext4 without a journal, and"
        echo "there ext4 checks each free inode it considers for a recent deletion (\`recently_deleted()\`"
        echo "in fs/ext4/ialloc.c, only without a journal). Every run starts by deleting the last run's"
        echo "thousands of files, so on the root file system each new file rescanned the just-deleted"
        echo "inodes: in a trial perf profile of an import there, about half of the CPU time was ext4's"
        echo "inode search (\`find_get_block_common\`, \`recently_deleted\`), and \`tar -xzf\` paid the"
        echo "same. That cost comes from the benchmark's own deletions, so the commands write on a fresh"
        echo "ext4 with the default journal instead (\`BENCH_FS=dir\` measures in the work dir)."
        echo
    fi
    echo "### d1. One ~$IMAGE_MB MB layer"
    echo
    echo "| command | runs | median ms | min-max ms | ratio rcompose/this | CPUs busy |"
    echo "|---|---|---|---|---|---|"
    row rc1 rc1
    row tar1 rc1
    row gz1 rc1
    echo
    echo "### d2. Four ~$((IMAGE_MB / 4)) MB layers"
    echo
    echo "| command | runs | median ms | min-max ms | ratio parallel rcompose/this | CPUs busy |"
    echo "|---|---|---|---|---|---|"
    row rc4 rc4
    row rc4seq rc4
    row umoci4 rc4
    echo
    echo "umoci unpacks the layers one after another into one rootfs and also writes the bundle's"
    echo "config.json and an mtree manifest of the rootfs (its normal \`unpack\`)."
    if [ -n "$(busy rc4seq)" ]; then
        echo
        echo "One after another, rcompose already keeps $(busy rc4seq) CPUs busy (each layer inflates on a"
        echo "thread of its own, beside the one writing files), so with $(nproc) CPUs the parallel import can be"
        echo "at most about $(awk -v n="$(nproc)" -v b="$(busy rc4seq)" 'BEGIN{printf "%.2f", n / b}')x faster than \`--jobs 1\` on this machine (less when other jobs take CPU time)."
    fi
    echo
    echo "### d3. Pull from a local registry"
    echo
    echo "Debian's docker-registry on $REG (plain HTTP, filesystem storage in the work dir), both"
    echo "layouts pushed with \`skopeo copy --dest-tls-verify=false oci:LAYOUT:t docker://$REG/bench/NAME:t\`"
    echo "(the registry serves the layouts' own manifests, checked). skopeo runs with \`-q --src-tls-verify=false\`."
    echo
    echo "| command | runs | median ms | min-max ms | ratio rcompose/this | CPUs busy |"
    echo "|---|---|---|---|---|---|"
    row rcpull1 rcpull1
    row skopeo1 rcpull1
    row rcpull4 rcpull4
    row skopeo4 rcpull4
    echo
    if [ -n "$(cpu_ms rc4)" ] && [ -n "$(reg_ms d3-four)" ] && [ -n "$(M skopeo4)" ]; then
        floor=$(awk -v a="$(cpu_ms rc4)" -v b="$(reg_ms d3-four)" -v n="$(nproc)" 'BEGIN{printf "%.0f", (a + b) / n}')
        echo "A lower bound for the four-layer pull on this machine: a pull does at least the work of"
        echo "\`image import\` of the same layout (inflate, both SHA-256 digests, the files: $(cpu_ms rc4) ms of"
        echo "CPU in d2, mean) and the registry serves it ($(reg_ms d3-four) ms of CPU per pull, mean, read from"
        echo "/proc for the docker-registry process), all on the same $(nproc) CPUs: ($(cpu_ms rc4) + $(reg_ms d3-four)) / $(nproc) = $floor ms,"
        echo "against skopeo's median of $(M skopeo4) ms (download only; it kept $(busy skopeo4) CPUs busy)."
        echo
    fi
    echo "<details><summary>per round (medians)</summary>"
    echo
    echo '```'
    cat "$ROUND_LOG"
    echo '```'
    echo "</details>"
    echo
    echo "Leftovers: none. The registry is stopped, the loop file system unmounted, and the layouts,"
    echo "stores, bundles and registry storage ($WORK) are removed when the script ends (also on"
    echo "failure or Ctrl-C), and skopeo's blob info cache ($SKOPEO_CACHE) if the"
    echo "run created it. Installed packages (apt: hyperfine umoci skopeo docker-registry jq) stay."
    echo "$END_MARK"
} >"$WORK/section.md"

# keep what the other parts wrote; replace an earlier section of this script
replace_section "$BEGIN_MARK" "$END_MARK" "$WORK/section.md" "$OUT"
log "done: $OUT"
sed -n '/^### Targets/,/^How they/p' "$WORK/section.md" >&2
