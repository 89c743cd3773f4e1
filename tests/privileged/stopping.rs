//! Per-container `stop_signal` and `stop_grace_period`, and a `read_only` root.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, bin, project, rcompose, require, stderr,
    stdout,
};

/// Starts `up` in the foreground, waits for `ready` in its output, sends it SIGINT (a
/// Ctrl-C) and returns everything it printed.
fn up_then_interrupt(dir: &TempDir, p: &str, ready: &str) -> String {
    let out_file = dir.path().join("up.out");
    let child = Command::new(bin())
        .args(["-p", p, "up"])
        .current_dir(dir.path())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .contains(ready)
    {
        assert!(Instant::now() < deadline, "`{ready}` never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id().cast_signed()), Signal::SIGINT).unwrap();
    let status = child.wait_with_output().unwrap().status;
    assert!(status.code().is_some(), "up was killed: {status:?}");
    std::fs::read_to_string(&out_file).unwrap()
}

#[test]
fn each_container_gets_its_own_stop_signal() {
    require(&[Need::Root]);
    let dir = TempDir::new("stop-sig");
    let p = project("stop-sig");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  a:
    containers:
      - name: int
        stop_signal: SIGINT
        command: [/bin/sh, -c, 'trap "echo got INT; exit 0" INT; trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.05; done']
      - name: term
        command: [/bin/sh, -c, 'trap "echo got INT; exit 0" INT; trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.05; done']
"#,
    );
    let _guard = Cleanup(p.clone());
    let out = up_then_interrupt(&dir, &p, "a-1/term | ready");
    let out = out.as_str();
    // prefixes are padded to the longest name
    let said = |who: &str, what: &str| {
        out.lines().any(|l| {
            l.split_once('|')
                .is_some_and(|(name, text)| name.trim() == who && text.trim() == what)
        })
    };
    assert!(said("a-1/int", "got INT"), "{out}");
    assert!(said("a-1/term", "got TERM"), "{out}");
    assert_no_trace(&p);
}

#[test]
fn a_short_stop_grace_period_is_not_the_default_ten_seconds() {
    require(&[Need::Root]);
    let dir = TempDir::new("stop-grace");
    let p = project("stop-grace");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  a:
    containers:
      - name: stubborn
        stop_grace_period: 300ms
        command: [/bin/sh, -c, 'trap "" TERM; while :; do sleep 0.05; done']
"#,
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let start = Instant::now();
    let out = rcompose(dir.path(), &["-p", &p, "down"]);
    assert_code(&out, 0);
    // the container ignores SIGTERM: it is killed after its 300 ms, not the default 10 s
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "down took {:?}",
        start.elapsed()
    );
    assert_no_trace(&p);
}

#[test]
fn a_read_only_root_keeps_tmp_run_and_volumes_writable() {
    require(&[Need::Root]);
    let dir = TempDir::new("stop-ro");
    let p = project("stop-ro");
    dir.write("data/.keep", "");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  a:
    containers:
      - name: c
        read_only: true
        volumes: [ ./data:/data ]
        command: [/bin/sh, -c, 'for d in / /etc /tmp /run /data /dev/shm; do touch $d/rcompose-ro-test 2>/dev/null && echo "$d=rw" || echo "$d=ro"; done; cat /etc/hostname']
"#,
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    for line in [
        "a-1 | /=ro",
        "a-1 | /etc=ro",
        "a-1 | /tmp=rw",
        "a-1 | /run=rw",
        "a-1 | /data=rw",
        "a-1 | /dev/shm=rw",
        "a-1 | a-1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no `{line}` in:\n{text}\n{}",
            stderr(&out)
        );
    }
    assert_no_trace(&p);
}
