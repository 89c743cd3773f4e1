//! Links `rcompose-init` as a static executable without libc or start files (it is `no_std`
//! with its own `_start`).

fn main() {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bin=rcompose-init={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
