//! Readiness, liveness and startup probes in real containers: `exec` in the container,
//! `http` and `tcp` in the pod's network namespace; `depends_on: healthy` waits for
//! readiness; a failing liveness probe restarts the container.

use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, rcompose, require, stderr,
    stdout,
};

#[test]
fn a_dependency_that_becomes_ready_after_a_delay_holds_its_dependents_that_long() {
    require(&[Need::Root]);
    let dir = TempDir::new("probe-healthy");
    let p = project("probe-healthy");
    // `db` is ready 1 s after it starts (exec probe); `web` serves HTTP (http probe) and is
    // alive while its port answers (tcp probe); `client` waits for `web` to be healthy
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  db:
    containers:
      - name: db
        command: [ sh, -c, 'sleep 1; touch /tmp/ready; exec sleep 1000' ]
        readiness: { exec: [ test, -f, /tmp/ready ], period: 30s }
  web:
    replicas: 2
    depends_on: { db: { condition: healthy } }
    containers:
      - name: web
        command: [ python3, -m, http.server, "8080", --bind, 127.0.0.1 ]
        readiness: { http: { port: 8080, path: / } }
        liveness: { tcp: { port: 8080 } }
  client:
    depends_on: { web: { condition: healthy } }
    containers: [ { name: client, command: [ sleep, "1000" ] } ]
"#,
    );
    let _guard = Cleanup(p.clone());
    let start = Instant::now();
    let child = std::process::Command::new(crate::test::bin())
        .args(["-p", &p, "up", "-d"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // meanwhile `ps` says what `web` waits for
    let mut seen = false;
    while !seen && start.elapsed() < Duration::from_secs(3) {
        let ps = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).unwrap_or_default();
        seen = rows.iter().any(|r| {
            r["pod"] == "web"
                && r["state"] == "waiting"
                && r["reason"] == "waiting for db (healthy)"
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    assert_code(&out, 0);
    assert!(seen, "`ps` never showed `web` waiting for db (healthy)");
    let err = stderr(&out);
    let at = |line: &str| {
        err.find(line)
            .unwrap_or_else(|| panic!("`{line}` missing:\n{err}"))
    };
    assert!(
        at("web: waiting for db (healthy)") < at("db-1: ready"),
        "{err}"
    );
    assert!(at("db-1: ready") < at("web-1: started"), "{err}");
    assert!(at("web-1: ready") < at("client-1: started"), "{err}");
    assert!(at("web-2: ready") < at("client-1: started"), "{err}");
    // held about as long as `db` took: 1 s, probed every 100 ms, plus the start of python
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    let ps = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["ready"] == true), "{rows:?}");
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    require(&[Need::Root]);
    let dir = TempDir::new("probe-liveness");
    let p = project("probe-liveness");
    // alive for half a second, then the probe fails twice: stop signal, restart
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  app:
    restart: on-failure
    containers:
      - name: app
        command: [ sh, -c, 'touch /tmp/alive; sleep 0.5; rm /tmp/alive; exec sleep 1000' ]
        liveness: { exec: [ test, -f, /tmp/alive ], period: 200ms, failure_threshold: 2 }
        stop_grace_period: 1s
"#,
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let row = loop {
        let ps = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).unwrap();
        if rows[0]["restarts"].as_u64().unwrap_or(0) >= 1 {
            break rows[0].clone();
        }
        assert!(Instant::now() < deadline, "no restart: {rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // the last exit's reason says why
    let reason = row["reason"].as_str().unwrap_or_default().to_string();
    let ps = stdout(&rcompose(dir.path(), &["-p", &p, "ps"]));
    assert!(
        reason.starts_with("liveness probe failed 2 times: exit code 1"),
        "{row:?}\n{ps}"
    );
    let code = crate::test::stopped_sleep_code();
    assert_eq!(row["exit_code"], code, "{row:?}");
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn a_startup_probe_gates_readiness_and_a_healthcheck_is_a_readiness_probe() {
    require(&[Need::Root]);
    let dir = TempDir::new("probe-startup");
    let p = project("probe-startup");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  slow:
    containers:
      - name: slow
        command: [ sh, -c, 'sleep 0.5; touch /tmp/up; exec sleep 1000' ]
        startup: { exec: [ test, -f, /tmp/up ], period: 100ms, failure_threshold: 50 }
  compose:
    containers:
      - name: c
        command: [ sleep, "1000" ]
        healthcheck: { test: [ CMD-SHELL, "test -d /proc/1" ], interval: 1s }
  after:
    depends_on: { slow: { condition: healthy }, compose: { condition: service_healthy } }
    containers: [ { name: a, command: [ "true" ] } ]
"#,
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up", "-d"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    for (before, after) in [
        ("slow-1: ready", "after-1: started"),
        ("compose-1: ready", "after-1: started"),
    ] {
        let (b, a) = (err.find(before), err.find(after));
        assert!(
            b.is_some() && a.is_some() && b < a,
            "{before} < {after}:\n{err}"
        );
    }
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn a_dependency_that_exits_before_it_is_healthy_fails_up() {
    require(&[Need::Root]);
    let dir = TempDir::new("probe-exit");
    let p = project("probe-exit");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  db:
    containers:
      # a probe that never passes: one that does (`true`) may run before `sh` gets to
      # exit on a loaded machine, and then db is healthy first
      - { name: db, command: [ sh, -c, 'exit 4' ], readiness: { exec: [ "false" ] } }
  web:
    depends_on: { db: { condition: healthy } }
    containers: [ { name: web, command: [ sleep, "1000" ] } ]
"#,
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up", "-d"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("pod `db` stopped before it was healthy (`db-1` exited with code 4); `web` depends on it"),
        "{err}"
    );
    assert_no_trace(&p);
}

#[test]
fn up_wait_returns_once_every_pod_is_ready_or_completed_and_fails_otherwise() {
    require(&[Need::Root]);
    let dir = TempDir::new("probe-wait");
    let p = project("probe-wait");
    let stack = |migrate: &str, db: &str| {
        format!(
            r#"
pods:
  db:
    containers:
      - name: db
        command: [ sh, -c, '{db}; exec sleep 1000' ]
        readiness: {{ exec: [ test, -f, /tmp/ready ] }}
  migrate:
    containers: [ {{ name: m, command: [ sh, -c, '{migrate}' ] }} ]
  web:
    replicas: 2
    containers: [ {{ name: w, command: [ sleep, "1000" ] }} ]
"#
        )
    };
    let _guard = Cleanup(p.clone());
    // ready after 0.5 s; `migrate` completes with 0, which `--wait` takes as fine
    dir.write(
        "rcompose.yaml",
        &stack("sleep 0.2", "sleep 0.5; touch /tmp/ready"),
    );
    let start = Instant::now();
    let out = rcompose(dir.path(), &["-p", &p, "up", "-d", "--wait"]);
    assert_code(&out, 0);
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    let ps = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).unwrap();
    for r in &rows {
        let done = r["state"] == "exited" && r["exit_code"] == 0;
        assert!(
            done || (r["state"] == "running" && r["ready"] == true),
            "{rows:?}"
        );
    }
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);

    // a pod that exits with another code first: an error, and nothing is left
    dir.write(
        "rcompose.yaml",
        &stack("exit 5", "sleep 0.5; touch /tmp/ready"),
    );
    let out = rcompose(dir.path(), &["-p", &p, "up", "-d", "--wait"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("error: `migrate-1` exited with code 5 before every pod was ready"),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);

    // never ready: the timeout, naming what was not ready
    dir.write("rcompose.yaml", &stack("true", "true"));
    let out = rcompose(
        dir.path(),
        &["-p", &p, "up", "-d", "--wait", "--wait-timeout", "1"],
    );
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("error: not ready after 1 s: db-1"),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);
}

#[test]
fn events_stream_starts_readiness_exits_and_restarts_until_down() {
    require(&[Need::Root]);
    let dir = TempDir::new("probe-events");
    let p = project("probe-events");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  app:
    restart: always
    backoff: { initial: 0s }
    containers:
      - { name: app, command: [ sleep, "1000" ], readiness: { exec: [ "true" ] } }
"#,
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d", "--wait"]), 0);
    let follower = std::process::Command::new(crate::test::bin())
        .args(["-p", &p, "events", "--format", "json"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // kill -9 of the container's command from outside: restarted, and counted
    let ps = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).unwrap();
    let init = rows[0]["pid"].as_i64().unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap_or_default();
    let victim = children
        .split_whitespace()
        .next()
        .map_or(init, |c| c.parse().unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(victim).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).unwrap();
        if rows[0]["restarts"] == 1 && rows[0]["state"] == "running" && rows[0]["ready"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    // the stream ends with the project
    let out = follower.wait_with_output().unwrap();
    assert_code(&out, 0);
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let at = |kind: &str, from: usize| {
        kinds[from..]
            .iter()
            .position(|k| *k == kind)
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("no `{kind}` after {from} in {kinds:?}"))
    };
    let started = at("started", 0);
    let ready = at("ready", started);
    let exited = at("exited", ready);
    assert_eq!(events[exited]["code"], 137, "{events:?}");
    let restarting = at("restarting", exited);
    // `backoff: { initial: 0s }`: at once
    assert_eq!(events[restarting]["reason"], "in 0 ms", "{events:?}");
    let again = at("started", restarting);
    at("ready", again);
    assert!(events.iter().all(|e| e["time_ms"].as_u64().is_some()));
    assert_no_trace(&p);
}
