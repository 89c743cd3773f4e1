//! Teardown leaves nothing: after `down`, Ctrl-C, a killed supervisor, or a failed `up`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, bin, footprint, project, rcompose,
    require,
};

const STACK: &str = r"
pods:
  db:
    containers:
      - name: db
        command: [sleep, '600']
  web:
    replicas: 2
    depends_on: [db]
    containers:
      - name: app
        command: [sleep, '600']
      - name: sidecar
        command: [/bin/sh, -c, 'while true; do sleep 1; done']
";

/// Sends `sig` to the project's supervisor (its pid is in state.json).
fn signal_supervisor(p: &str, sig: nix::sys::signal::Signal) {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("/run/rcompose/{p}/state.json")).unwrap())
            .unwrap();
    let sup = i32::try_from(state["supervisor_pid"].as_i64().unwrap()).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup), sig).unwrap();
}

fn wait_running(p: &str, dir: &TempDir, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = rcompose(dir.path(), &["-p", p, "ps", "--format", "json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let running = rows
            .as_array()
            .map_or(0, |r| r.iter().filter(|r| r["state"] == "running").count());
        if running == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {running} of {n} containers running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn interrupt_of_foreground_up_removes_everything() {
    require(&[Need::Root]);
    let dir = TempDir::new("td-int");
    let p = project("td-int");
    dir.write("rcompose.yaml", STACK);
    let _guard = Cleanup(p.clone());
    let mut child = Command::new(bin())
        .args(["-p", &p, "up"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_running(&p, &dir, 5);
    let fp = footprint(&p);
    assert!(
        fp.state_dir && !fp.cgroups.is_empty() && !fp.processes.is_empty(),
        "{fp:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().cast_signed()),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_no_trace(&p);
}

#[test]
fn down_removes_everything_after_the_supervisor_was_killed() {
    require(&[Need::Root]);
    let dir = TempDir::new("td-kill");
    let p = project("td-kill");
    dir.write("rcompose.yaml", STACK);
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    wait_running(&p, &dir, 5);
    signal_supervisor(&p, nix::sys::signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(100));
    // the containers outlive their supervisor ...
    assert!(!footprint(&p).processes.is_empty());
    // ... and down removes them from the state files alone
    let out = rcompose(dir.path(), &["-p", &p, "down", "-t", "1"]);
    assert_code(&out, 0);
    assert_no_trace(&p);
}

#[test]
fn up_after_a_crash_cleans_the_leftovers_first() {
    require(&[Need::Root]);
    let dir = TempDir::new("td-restart");
    let p = project("td-restart");
    dir.write("rcompose.yaml", STACK);
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    wait_running(&p, &dir, 5);
    signal_supervisor(&p, nix::sys::signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(100));
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    wait_running(&p, &dir, 5);
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn down_of_an_unknown_project_succeeds_quietly() {
    require(&[Need::Root]);
    let dir = TempDir::new("td-none");
    let p = project("td-none");
    let out = rcompose(dir.path(), &["-p", &p, "down"]);
    assert_code(&out, 0);
    assert_eq!(
        crate::test::stderr(&out),
        format!("project {p}: nothing to remove\n")
    );
}

#[test]
fn teardown_stops_dependents_before_their_dependencies() {
    require(&[Need::Root]);
    let dir = TempDir::new("td-order");
    let p = project("td-order");
    // each container takes 0.3 s to stop, so the order is visible in the events
    let slow_stop = "trap 'sleep 0.3; exit 0' TERM; while :; do sleep 0.05; done";
    dir.write(
        "rcompose.yaml",
        &format!(
            r#"
pods:
  db:
    containers:
      - name: c
        command: [/bin/sh, -c, "{slow_stop}"]
  api:
    depends_on: [db]
    containers:
      - name: c
        command: [/bin/sh, -c, "{slow_stop}"]
  web:
    depends_on: [api]
    containers:
      - name: c
        command: [/bin/sh, -c, "{slow_stop}"]
"#
        ),
    );
    let _guard = Cleanup(p.clone());
    let child = Command::new(bin())
        .args(["-p", &p, "up"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_running(&p, &dir, 3);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().cast_signed()),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let exits: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(": exited with code"))
        .map(|l| {
            l.split(']')
                .nth(1)
                .unwrap()
                .trim()
                .split(':')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(exits, ["web-1", "api-1", "db-1"], "{err}");
    assert_no_trace(&p);
}

#[test]
fn down_removes_everything_when_the_supervisor_does_not_respond() {
    require(&[Need::Root]);
    let dir = TempDir::new("td-stuck");
    let p = project("td-stuck");
    dir.write("rcompose.yaml", STACK);
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    wait_running(&p, &dir, 5);
    // a supervisor that cannot act on SIGTERM
    signal_supervisor(&p, nix::sys::signal::SIGSTOP);
    let start = Instant::now();
    let out = rcompose(dir.path(), &["-p", &p, "down", "-t", "1"]);
    assert_code(&out, 0);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "down took {:?}",
        start.elapsed()
    );
    assert_no_trace(&p);
}
