#!/usr/bin/env bash
# `just bench`, part j (after bench/rollout.sh): loading real Compose files.
#
#   j1. `config` of the Compose files of ../shared/corpus/compose-files (the awesome-compose
#       samples, compose-go's loader fixtures, docker/compose's e2e fixtures) that every tool
#       measured accepts: rcompose `-f FILE config` (the Compose loader:
#       interpolation, extends/include, mapping to pods and services, validation) against
#       docker-compose 1.29 (Debian) and podman-compose (pip) doing the same (`-f FILE
#       config`: load, interpolate, validate, print). Each file RUNS times per tool, the tools
#       interleaved per file; a file's time is the median of its runs, and the report gives
#       the median over the files, their min-max, and the ratios. Target: rcompose faster
#       than both (ratio < 1).
#   j2. `export kubernetes -o -` of the same files with rcompose (no peer here: kompose and
#       compose bridge are not packaged for this machine); reported, no target.
#
# Appends its section to docs/benchmarks.md (replacing one from an earlier run of this
# script). Needs no root and no container: every command only reads files. Removes its temp
# dir, also on failure or Ctrl-C.
#
# Environment:
#   RCOMPOSE_BIN    use this binary instead of building the static release binary
#   OUT             report path (default docs/benchmarks.md)
#   RUNS (5)        runs per file and tool
#   CORPUS          the Compose corpus (default ../shared/corpus/compose-files next to the repo)
#   SKIP_INSTALL=1  do not call apt-get / pip
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
OUT=${OUT:-$REPO/docs/benchmarks.md}
RUNS=${RUNS:-5}
CORPUS=${CORPUS:-$REPO/../shared/corpus/compose-files}
BEGIN_MARK="<!-- bench/compose.sh: begin -->"
END_MARK="<!-- bench/compose.sh: end -->"

log() { printf '[bench compose %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$RUNS" in '' | *[!0-9]* | 0) die "RUNS must be a positive integer, not '$RUNS'" ;; esac
[ -d "$CORPUS/awesome-compose" ] || die "no Compose corpus at $CORPUS (../shared/corpus)"

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    command -v docker-compose >/dev/null || apt_get install -y -q --no-install-recommends docker-compose
    command -v podman-compose >/dev/null || pip install -q podman-compose
fi
command -v docker-compose >/dev/null || die "docker-compose is missing (apt docker-compose)"
command -v podman-compose >/dev/null || die "podman-compose is missing (pip podman-compose)"

RC=$(rc_binary)
[ -x "$RC" ] || die "no rcompose binary at $RC"
WORK=$(mktemp -d /tmp/rcbench-compose.XXXXXX)
cleanup() {
    local rc=$?
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

# the tools, each as a function of the file (run in the file's directory, output discarded)
t_rcompose() { "$RC" -f "$1" config; }
t_docker_compose() { docker-compose -f "$1" config; }
t_podman_compose() { podman-compose -f "$1" config; }
t_export() { "$RC" -f "$1" export kubernetes -o -; }
TOOLS=(rcompose docker_compose podman_compose)

# runs "$@" (a shell function) killed after $TIMEOUT seconds
bounded() {
    "$@" &
    local pid=$! i
    for ((i = 0; i < TIMEOUT * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 124
    fi
    wait "$pid"
}

# every Compose file of the corpus; kept when every tool accepts it
mapfile -t ALL < <(find "$CORPUS" -name '*.y*ml' | sort)
[ "${#ALL[@]}" -gt 0 ] || die "no Compose file under $CORPUS"
FILES=()
declare -A REFUSED=()
for f in "${ALL[@]}"; do
    ok=1
    for t in "${TOOLS[@]}" export; do
        # at most 20 s and 2 GiB each: docker-compose 1.29 expands compose-go's alias bomb
        # without bound (5 GB and climbing after 9 minutes)
        if ! (cd "$(dirname "$f")" && ulimit -v 2097152 && TIMEOUT=20 bounded "t_$t" "$f" >/dev/null 2>&1); then
            REFUSED[$t]=$((${REFUSED[$t]:-0} + 1))
            ok=0
        fi
    done
    [ "$ok" = 1 ] && FILES+=("$f")
done
log "${#FILES[@]} of ${#ALL[@]} files accepted by every tool"
[ "${#FILES[@]}" -ge 5 ] || die "only ${#FILES[@]} files accepted by every tool"

# one run of tool $1 on file $2, in ms (3 decimals)
time_ms() {
    local t0 t1
    t0=${EPOCHREALTIME/./}
    (cd "$(dirname "$2")" && "t_$1" "$2" >/dev/null 2>&1) || die "$1 failed on $2 during the measurement"
    t1=${EPOCHREALTIME/./}
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", (b-a)/1000}'
}

for f in "${FILES[@]}"; do
    for t in "${TOOLS[@]}" export; do : >"$WORK/runs.$t"; done
    for _ in $(seq 1 "$RUNS"); do
        for t in "${TOOLS[@]}" export; do time_ms "$t" "$f" >>"$WORK/runs.$t"; done
    done
    for t in "${TOOLS[@]}" export; do med "$WORK/runs.$t" >>"$WORK/files.$t"; done
done

declare -A MED MINMAX
for t in "${TOOLS[@]}" export; do
    MED[$t]=$(med "$WORK/files.$t")
    MINMAX[$t]=$(minmax "$WORK/files.$t")
done
verdict() { if lt "$1" "$2"; then echo "**met**"; else echo "**MISSED**"; fi; }
DC_VERSION=$(docker-compose version --short 2>/dev/null || echo "?")
PC_VERSION=$(podman-compose --version 2>/dev/null | sed -n 's/^podman-compose version //p' | head -1)
{
    echo "$BEGIN_MARK"
    echo "## j. Loading Compose files"
    echo
    echo "Written by \`just bench\` (bench/compose.sh) on $STARTED; the ${#FILES[@]} Compose files of"
    echo "../shared/corpus/compose-files that every tool accepts (of ${#ALL[@]}), $RUNS runs per file and"
    echo "tool, tools interleaved;"
    echo "rcompose $("$RC" --version | cut -d' ' -f2-), docker-compose $DC_VERSION, podman-compose ${PC_VERSION:-?};"
    echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg) at the end. A file's time is the median of its runs"
    echo "(process start to exit, output discarded); the table gives the median over the files"
    echo "and their min-max."
    echo
    echo "| command | median per file (min-max), ms | rcompose ratio | verdict |"
    echo "|---|---|---|---|"
    echo "| rcompose \`-f FILE config\` | ${MED[rcompose]} (${MINMAX[rcompose]}) | 1 | |"
    for t in docker_compose podman_compose; do
        name=${t//_/-}
        echo "| $name \`-f FILE config\` | ${MED[$t]} (${MINMAX[$t]}) | $(ratio "${MED[rcompose]}" "${MED[$t]}") | j1: rcompose faster: $(verdict "${MED[rcompose]}" "${MED[$t]}") |"
    done
    echo "| rcompose \`-f FILE export kubernetes -o -\` | ${MED[export]} (${MINMAX[export]}) | | j2: reported |"
    echo
    echo "Refused files (by any tool, so left out of the timing): rcompose ${REFUSED[rcompose]:-0},"
    echo "rcompose export ${REFUSED[export]:-0}, docker-compose ${REFUSED[docker_compose]:-0},"
    echo "podman-compose ${REFUSED[podman_compose]:-0}. docs/compose-compatibility.md has rcompose's"
    echo "reasons (mostly \`build:\`, which rcompose does not do yet)."
    echo "$END_MARK"
} >"$WORK/section.md"
replace_section "$BEGIN_MARK" "$END_MARK" "$WORK/section.md" "$OUT"
log "done: $OUT"
sed -n '/^| /p' "$WORK/section.md" >&2
