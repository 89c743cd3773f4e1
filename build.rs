//! Links `rcompose-init` as a static executable without libc or start files (it is `no_std`
//! with its own `_start`), and records the commit the binary is built from for
//! `rcompose version` (`unknown` outside a git checkout, e.g. from a source tarball).

use std::path::Path;
use std::process::Command;

fn main() {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bin=rcompose-init={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let hash = git(&["rev-parse", "--short=12", "HEAD"]);
    let date = git(&["log", "-1", "--format=%cs", "HEAD"]);
    println!(
        "cargo:rustc-env=RCOMPOSE_GIT_HASH={}",
        hash.as_deref().unwrap_or("unknown")
    );
    println!(
        "cargo:rustc-env=RCOMPOSE_GIT_DATE={}",
        date.as_deref().unwrap_or("unknown")
    );
    println!(
        "cargo:rustc-env=RCOMPOSE_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // rebuild when HEAD moves: HEAD itself (a checkout), the branch it names (a commit),
    // and packed-refs (a gc); in a worktree these live in different git directories
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let (Some(common), Some(head)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        let branch = Path::new(&common).join(head);
        if branch.exists() {
            println!("cargo:rerun-if-changed={}", branch.display());
        }
        let packed = Path::new(&common).join("packed-refs");
        if packed.exists() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
    }
}

/// The trimmed output of a successful `git` command, run in the package directory.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
