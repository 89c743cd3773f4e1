//! The container tests again, with every pod run by crun (`RCOMPOSE_RUNTIME=crun`): the
//! same namespaces, mounts, limits, confinement, probes, exec and teardown as with the
//! built-in runtime (issue 4: "the same integration tests pass with the built-in runtime and
//! with crun"). The few expectations that differ (the command is PID 1, without
//! rcompose-init; no `tty` yet) are spelled out in those tests (`test::external_runtime`).

use std::process::Command;

use crate::test::{Need, require};

/// The modules whose tests start containers through `rcompose up` (image, registry and
/// unpacking tests do not depend on the runtime; `oci` tests crun and runc directly).
const MODULES: [&str; 17] = [
    "privileged::balancer::",
    "privileged::commands::",
    "privileged::examples::",
    "privileged::exec::",
    "privileged::files::",
    "privileged::init::",
    "privileged::isolation::",
    "privileged::lifecycle::",
    "privileged::network::",
    "privileged::probes::",
    "privileged::reconcile::",
    "privileged::security::",
    "privileged::stats::",
    "privileged::stopping::",
    "privileged::teardown::",
    "privileged::tty::",
    "privileged::volumes::",
];

#[test]
fn the_container_tests_pass_with_crun_too() {
    require(&[Need::Root, Need::Busybox, Need::Tool("crun")]);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(MODULES)
        // two at a time: this runs beside the rest of the suite on a 2-CPU machine
        .args(["--test-threads", "2"])
        .env("RCOMPOSE_RUNTIME", "crun")
        .output()
        .expect("failed to run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("test result:") || l.contains("FAILED") || l.starts_with("---- "))
        .collect();
    assert!(
        out.status.success(),
        "with crun:\n{}\n--- stdout (end)\n{}\n--- stderr (end)\n{}",
        summary.join("\n"),
        tail(&stdout, 150),
        tail(&String::from_utf8_lossy(&out.stderr), 50)
    );
    // they ran: a filter that matched nothing would pass too
    let ran: usize = summary
        .iter()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(
        ran >= 60,
        "only {ran} tests ran with crun:\n{}",
        summary.join("\n")
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn a_runtime_that_is_not_installed_is_an_error_before_anything_starts() {
    require(&[Need::Root]);
    let dir = crate::test::TempDir::new("rt-missing");
    let p = crate::test::project("rt-missing");
    dir.write(
        "rcompose.yaml",
        "pods:\n  a:\n    runtime: runc\n    containers: [ { name: c, command: [ \"true\" ] } ]\n",
    );
    // a PATH without crun and runc
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    // the pod's `runtime:`, then `--runtime` (a global option) over it
    for (args, runtime) in [
        (vec!["-p", p.as_str(), "up"], "runc"),
        (
            vec!["-p", p.as_str(), "--runtime", "crun", "up", "-d"],
            "crun",
        ),
    ] {
        let out = Command::new(crate::test::bin())
            .args(&args)
            .current_dir(dir.path())
            .env("PATH", &empty)
            .output()
            .unwrap();
        let err = crate::test::stderr(&out);
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains(&format!(
                "runtime `{runtime}` is not installed (not found in PATH)"
            )),
            "{err}"
        );
        crate::test::assert_no_trace(&p);
    }
}
