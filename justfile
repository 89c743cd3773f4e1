# rcompose tasks. `just --list` shows them; `just check` is the pre-push command.
# CI (.ci/run) runs the same test, lint, layers and forbid steps.

set shell := ["bash", "-euo", "pipefail", "-c"]

# list the recipes
default:
    @just --list

# release build, glibc linked in statically, fat LTO (target/<host triple>/release/rcompose:
# no dynamic loader at each start; bench/lib.sh rc_build_release, which `just bench` measures)
build:
    #!/usr/bin/env bash
    set -euo pipefail
    REPO=$PWD
    source bench/lib.sh
    rc_build_release
    echo "built $(rc_release_path)"

# every test tier, privileged integration tests included: run as root, as CI does
test:
    @if [ "$(id -u)" != 0 ]; then echo "warning: not root: the privileged integration tests will fail (CI runs as root)" >&2; fi
    cargo test --locked

# clippy (warnings are errors) and rustfmt check
lint:
    cargo clippy --all-targets --locked -- -D warnings
    cargo fmt --check

# format the code
fmt:
    cargo fmt

# regenerate the JSON Schema of the manifest from the Rust types
schema:
    mkdir -p schemas
    cargo run --quiet -- schema > schemas/rcompose.schema.json

# fail on imports that cross the module layers (STYLE.md 5.3)
layers:
    #!/usr/bin/env bash
    set -euo pipefail
    fail=0
    check() { # PATTERN DIR...
        local pat=$1; shift
        local dirs=() d hits
        for d in "$@"; do [ -d "$d" ] && dirs+=("$d"); done
        [ "${#dirs[@]}" -gt 0 ] || return 0
        # comment lines (`//`, `//!`, `///`) may name what they must not use
        hits=$(grep -rnE --include='*.rs' "$pat" "${dirs[@]}" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
        if [ -n "$hits" ]; then
            echo "forbidden import (/$pat/) in $*:"; echo "$hits"; fail=1
        fi
    }
    check 'crate::(cli|supervisor|runtime)\b|crate::\{[^}]*\b(cli|supervisor|runtime)\b' src/manifest src/plan
    # std::net's address types are plain values; its sockets are I/O
    check 'std::(fs|process|env)\b|std::\{[^}]*\b(fs|process|env)\b|std::net::(Tcp|Udp|ToSocket)|\bnix::' src/manifest src/plan
    check 'crate::(supervisor|cli|network)\b|crate::\{[^}]*\b(supervisor|cli|network)\b' src/runtime
    check 'crate::(supervisor|cli|runtime|image)\b|crate::\{[^}]*\b(supervisor|cli|runtime|image)\b' src/network
    check 'crate::(supervisor|cli|runtime|network|image|balancer)\b|crate::\{[^}]*\b(supervisor|cli|runtime|network|image|balancer)\b' src/watch
    check '\b(clap|indicatif)::|use (clap|indicatif)\b' src/supervisor
    # export is pure and sits on manifest and plan only: the CLI reads and writes its files
    check 'crate::(cli|supervisor|runtime|network|image|balancer|watch)\b|crate::\{[^}]*\b(cli|supervisor|runtime|network|image|balancer|watch)\b' src/export
    check 'std::(fs|process)\b|std::\{[^}]*\b(fs|process)\b|std::net::(Tcp|Udp|ToSocket)|\bnix::' src/export
    [ "$fail" = 0 ] && echo "layers: ok"
    exit "$fail"

# fail on dbg!/todo!/unimplemented!/FIXME/XXX in src
forbid:
    @if grep -rnE 'dbg!|todo!|unimplemented!|FIXME|XXX' src; then echo "forbid: remove the lines above" >&2; exit 1; fi
    @echo "forbid: ok"

# everything CI checks
check: lint layers forbid test

# run the hello example in the foreground
example:
    cargo run --release -- -f examples/hello/rcompose.yaml up

# rcompose vs crun/runc/podman-compose, image unpack/pull vs tar/umoci/skopeo, memory per container vs conmon, readiness gating (vs docker-compose, podman-compose) and restart latency, the built-in L4 balancer vs HAProxy and nginx stream (wrk), file watching (sync and restart latency vs the debounce floors of Compose Watch and Tilt), rolling updates under load, loading Compose files (vs docker-compose, podman-compose), a simulated node failing (node down to its replicas ready elsewhere), side by side; writes docs/benchmarks.md (root; about 45 min; bench/run.sh installs the peers; PEERS=0 skips the readiness peers)
bench:
    bash bench/run.sh
    bash bench/images.sh
    bash bench/memory.sh
    bash bench/lifecycle.sh
    bash bench/balancer.sh
    bash bench/watch.sh
    bash bench/rollout.sh
    bash bench/compose.sh
    bash bench/nodes.sh
