# shellcheck shell=bash
# Shared by the parts of `just bench` that append a section to docs/benchmarks.md
# and their statistics (bench/run.sh, bench/images.sh, bench/memory.sh, bench/lifecycle.sh,
# bench/balancer.sh).
# Source it; it defines functions only.

# apt-get ARGS..., non-interactive, waiting for the dpkg lock and retrying for up to about
# 10 minutes (another apt run on this shared machine); uses the caller's `log`
apt_get() {
    local i
    for i in $(seq 1 40); do
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=60 -q "$@" && return 0
        log "apt-get $* failed (attempt $i); retrying in 15 s"
        sleep 15
    done
    return 1
}

# The commit measured: `git describe --always`, with `-dirty` when a tracked file other than
# docs/benchmarks.md differs (the bench scripts rewrite that one themselves as they go).
rc_commit() {
    local c
    c=$(git -C "$REPO" describe --always 2>/dev/null) || { echo unknown; return; }
    if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- . ':!docs/benchmarks.md' 2>/dev/null)" ]; then
        c+=-dirty
    fi
    echo "$c"
}

# The release binary as `just build` makes it: glibc linked in statically, and not
# position-independent (-C relocation-model=static), so that nothing is relocated at each
# start: a dynamic binary's loader resolved about 14,000 relocations against libc and
# libgcc_s (0.5-0.7 ms of a 7 ms container start); a static-pie still applied 27,000
# relative relocations over 450 KB of .data.rel.ro, each page a copy-on-write fault (about
# 2 ms of CPU per foreground `up`). It is also optimized across crates as one unit (fat LTO,
# one codegen unit: a 20 % smaller binary, about 0.5 ms less per foreground `up`; the plain
# `cargo build --release` keeps thin LTO, which builds twice as fast). See
# docs/architecture.md ("Release binary"). The flags go through --target so that they apply
# to rcompose, not to the build scripts and proc macros.
# rc_release_path prints where it lands; rc_build_release [CARGO ARGS...] builds it.
rc_target() { rustc -vV | sed -n 's/^host: //p'; }
rc_release_path() { echo "${CARGO_TARGET_DIR:-$REPO/target}/$(rc_target)/release/rcompose"; }
rc_build_release() {
    (cd "$REPO" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
        CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
        cargo build --release --locked --target "$(rc_target)" "$@")
}

# rc_binary NAME: RCOMPOSE_BIN if set, else the static release binary, built (quietly) now;
# logs through the caller's `log`
rc_binary() {
    if [ -n "${RCOMPOSE_BIN:-}" ]; then
        echo "$RCOMPOSE_BIN"
    else
        log "building rcompose (release, static)"
        rc_build_release -q >&2
        rc_release_path
    fi
}

# statistics over a file of one number per line: the median, "min-max" (one decimal each),
# and whether a < b (or a <= b), both set
med() { sort -g "$1" | awk '{a[NR]=$1} END{if(NR==0){print "";exit} if(NR%2){m=a[(NR+1)/2]}else{m=(a[NR/2]+a[NR/2+1])/2} printf "%.1f\n", m}'; }
minmax() { sort -g "$1" | awk 'NR==1{lo=$1} {hi=$1} END{if(NR) printf "%.1f-%.1f\n", lo, hi}'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a!="" && b!="" && a+0<b+0)}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a!="" && b!="" && a+0<=b+0)}'; }
# the non-empty lines of a file (nothing when it is missing), and a / b ("n/a" without both)
count() { grep -c . "$1" 2>/dev/null || true; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if(a==""||b==""||b==0){print "n/a"}else{r=a/b; printf (r<0.1 ? "%.3f\n" : "%.2f\n"), r}}'; }

# replace_section BEGIN_MARK END_MARK SECTION_FILE OUT
# Appends SECTION_FILE (which starts with BEGIN_MARK and ends with END_MARK) to OUT, after
# removing a section between the same marks that an earlier run left there; what other
# parts wrote is kept, with exactly one blank line before the section.
replace_section() {
    local begin=$1 end=$2 section=$3 out=$4
    if [ -f "$out" ]; then
        awk -v b="$begin" -v e="$end" '$0==b{skip=1} !skip{print} $0==e{skip=0}' "$out" >"$out.tmp"
        sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$out.tmp"
        echo >>"$out.tmp"
    else
        : >"$out.tmp"
    fi
    cat "$section" >>"$out.tmp"
    mv "$out.tmp" "$out"
}
