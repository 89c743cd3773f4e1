//! `stats` and `top` on real containers: CPU under a quota, memory in tmpfs, pids, the
//! processes of each container, streaming until a signal or `down`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, bin, busybox_rootfs, project, rcompose,
    require, stdout,
};

const MIB: u64 = 1 << 20;

/// A container burning CPU under a 0.5 CPU quota, and one holding 32 MiB in its /dev/shm.
const MANIFEST: &str = r"
images:
  bb: { rootfs: ./rootfs }
pods:
  burn:
    containers:
      - name: c
        image: bb
        command: [/bin/sh, -c, 'while :; do :; done']
        resources: { cpu: '0.5', memory: 64Mi, pids: 16 }
  mem:
    containers:
      - name: c
        image: bb
        command: [/bin/sh, -c, 'dd if=/dev/zero of=/dev/shm/fill bs=1M count=32 && exec sleep 3600']
        resources: { memory: 64Mi }
";

fn stats_json(dir: &TempDir, p: &str, interval: &str) -> Vec<Value> {
    let out = rcompose(
        dir.path(),
        &[
            "-p",
            p,
            "stats",
            "--no-stream",
            "--format",
            "json",
            "--interval",
            interval,
        ],
    );
    assert_code(&out, 0);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn pod<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["pod"] == name)
        .unwrap_or_else(|| panic!("no row for pod `{name}` in {rows:?}"))
}

#[test]
fn stats_and_top_report_what_running_containers_use() {
    require(&[Need::Root, Need::Busybox]);
    let dir = TempDir::new("stats");
    busybox_rootfs(&dir.path().join("rootfs"));
    dir.write("rcompose.yaml", MANIFEST);
    let p = project("stats");
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);

    // wait until `mem` holds its 32 MiB
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = stats_json(&dir, &p, "0.2");
        let used = pod(&rows, "mem")["memory_usage_bytes"]
            .as_u64()
            .unwrap_or(0);
        if used >= 32 * MIB {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`mem` never reached 32 MiB: {rows:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }

    // one sample over 1.5 s
    let rows = stats_json(&dir, &p, "1.5");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let burn = pod(&rows, "burn");
    let cpu = burn["cpu_percent"].as_f64().unwrap();
    assert!(
        (20.0..=70.0).contains(&cpu),
        "CPU % of a busy loop under a 0.5 CPU quota: {cpu}"
    );
    assert_eq!(burn["memory_limit_bytes"].as_u64(), Some(64 * MIB));
    let burn_mem = burn["memory_usage_bytes"].as_u64().unwrap();
    assert!(
        burn_mem > 0 && burn_mem < 16 * MIB,
        "memory of a shell loop: {burn_mem}"
    );
    let pids = burn["pids"].as_u64().unwrap();
    assert!(pids >= 1, "{burn}");
    assert_eq!(burn["pids_limit"].as_u64(), Some(16));
    assert_eq!(burn["state"], "running");

    let mem = pod(&rows, "mem");
    let used = mem["memory_usage_bytes"].as_u64().unwrap();
    assert!(
        (32 * MIB..64 * MIB).contains(&used),
        "memory of a container holding 32 MiB in tmpfs: {used}"
    );
    assert_eq!(mem["memory_limit_bytes"].as_u64(), Some(64 * MIB));
    assert!(mem["pids"].as_u64().unwrap() >= 1, "{mem}");
    assert!(mem["pids_limit"].is_null(), "{mem}");
    assert!(mem["cpu_percent"].as_f64().unwrap() < 10.0, "{mem}");
    let percent = mem["memory_percent"].as_f64().unwrap();
    assert!((50.0..100.0).contains(&percent), "{mem}");

    // the same container pids as `ps`
    let ps: Value =
        serde_json::from_slice(&rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]).stdout)
            .unwrap();
    for r in ps.as_array().unwrap() {
        let pod = r["pod"].as_str().unwrap();
        assert_eq!(pod_pid(&rows, pod), r["pid"], "{pod}");
    }

    // the table
    let out = rcompose(dir.path(), &["-p", &p, "stats", "--no-stream"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("POD   REPLICA  CONTAINER  STATE    CPU %"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("burn  1        c          running  ")
            && lines[1].contains(" / 64MiB"),
        "{text}"
    );

    // top: the busy loop, with its host pid, in the right cgroup
    let out = rcompose(dir.path(), &["-p", &p, "top", "--format", "json"]);
    assert_code(&out, 0);
    let procs: Vec<Value> = serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let busy = procs
        .iter()
        .find(|r| r["command"] == serde_json::json!(["/bin/sh", "-c", "while :; do :; done"]))
        .unwrap_or_else(|| panic!("no busy loop in {procs:?}"));
    assert_eq!(busy["pod"], "burn");
    assert_eq!(busy["user"], "root");
    let busy_pid = busy["pid"].as_i64().unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{busy_pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains(&format!("rcompose/{p}/burn-1/c")),
        "{busy_pid}: {cgroup}"
    );
    assert!(
        procs
            .iter()
            .any(|r| r["pod"] == "mem" && r["command"] == serde_json::json!(["sleep", "3600"])),
        "{procs:?}"
    );
    // each container's PID 1 is listed too, by its host pid
    for pod_name in ["burn", "mem"] {
        let init = pod_pid(&rows, pod_name);
        assert!(
            procs
                .iter()
                .any(|r| r["pod"] == pod_name && r["pid"] == init),
            "{pod_name}: {procs:?}"
        );
    }
    let out = rcompose(dir.path(), &["-p", &p, "top"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).starts_with("POD   REPLICA  CONTAINER  PID"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(" root  /bin/sh -c while :; do :; done\n"),
        "{}",
        stdout(&out)
    );

    // streaming: a JSON array per sample until Ctrl-C, exit 0
    let mut child = Command::new(bin())
        .args(["-p", &p, "stats", "--format", "json", "--interval", "0.3"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let samples: Vec<&str> = text.lines().collect();
    assert!(samples.len() >= 2, "{text}");
    for s in samples {
        let rows: Value = serde_json::from_str(s).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 2, "{s}");
    }

    // streaming ends when nobody reads any more (`rcompose stats | head -1`)
    let mut child = Command::new(bin())
        .args(["-p", &p, "stats", "--format", "json", "--interval", "0.2"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let status = wait_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));

    // streaming ends by itself when the project goes down
    let mut child = Command::new(bin())
        .args(["-p", &p, "stats", "--interval", "0.2"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(500));
    assert_code(&rcompose(dir.path(), &["-p", &p, "down", "-t", "1"]), 0);
    let status = wait_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert_no_trace(&p);
}

fn pod_pid(rows: &[Value], name: &str) -> Value {
    pod(rows, name)["pid"].clone()
}

/// Waits for `child`, killing it (and failing) after `timeout`.
fn wait_timeout(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`rcompose stats` did not end within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}
