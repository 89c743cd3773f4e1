//! Start order, dependency conditions, restarts, failed starts, the detached supervisor.

use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, rcompose, require, stderr,
    stdout,
};

#[test]
fn dependency_completes_before_its_dependent_starts() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-order");
    let p = project("lc-order");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  migrate:
    containers:
      - name: c
        command: [/bin/sh, -c, 'sleep 0.3; echo migrated']
  api:
    depends_on: { migrate: { condition: completed } }
    containers:
      - name: c
        command: [echo, serving]
",
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "migrate-1 | migrated\napi-1     | serving\n");
    assert!(
        stderr(&out).contains("api: waiting for migrate (completed)"),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);
}

#[test]
fn failed_dependency_fails_up_and_names_it() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-depfail");
    let p = project("lc-depfail");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  migrate:
    containers:
      - name: c
        command: [/bin/sh, -c, 'exit 3']
  api:
    depends_on: { migrate: { condition: completed } }
    containers:
      - name: c
        command: [echo, never]
",
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).ends_with(
            "error: pod `migrate` did not complete (`migrate-1` exited with code 3); `api` depends on it\n\
             hint: fix what the message names and run `rcompose up` again\n"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("never"));
    assert_no_trace(&p);
}

#[test]
fn missing_command_fails_up_names_the_pod_and_leaves_nothing() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-nocmd");
    let p = project("lc-nocmd");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  ok:
    containers:
      - name: c
        command: [sleep, '60']
  broken:
    depends_on: [ok]
    containers:
      - name: c
        command: [no-such-program-rc, --flag]
",
    );
    let _guard = Cleanup(p.clone());
    for args in [vec!["-p", &p, "up"], vec!["-p", &p, "up", "-d"]] {
        let out = rcompose(dir.path(), &args);
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("broken-1: failed to start: `no-such-program-rc`: executable file not found in $PATH"),
            "{err}"
        );
        assert!(
            err.ends_with(
                "error: pod `broken` failed to start: `no-such-program-rc`: executable file not found in $PATH\n\
                 hint: fix what the message names and run `rcompose up` again\n"
            ),
            "{err}"
        );
        assert_no_trace(&p);
    }
}

#[test]
fn on_failure_restarts_with_backoff_and_counts() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-restart");
    let p = project("lc-restart");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  flaky:
    restart: on-failure
    containers:
      - name: c
        command: [/bin/sh, -c, 'echo try; exit 1']
",
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let restarts = loop {
        let out = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let n = rows[0]["restarts"].as_u64().unwrap();
        if n >= 3 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(restarts >= 3, "restarted {restarts} times");
    let logs = rcompose(dir.path(), &["-p", &p, "logs", "flaky"]);
    assert!(
        stdout(&logs).matches("flaky-1 | try\n").count() >= 3,
        "{}",
        stdout(&logs)
    );
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn restarted_container_keeps_what_it_wrote() {
    // the writable layer outlives a restart (the restart mounts the same, volatile, overlay
    // upper and work directories again)
    require(&[Need::Root]);
    let dir = TempDir::new("lc-keep");
    let p = project("lc-keep");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  job:
    restart: on-failure
    containers:
      - name: c
        command: [/bin/sh, -c, 'if [ -f /marker ]; then echo again; exit 0; fi; touch /marker; echo first; exit 1']
",
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "job-1 | first\njob-1 | again\n",
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);
}

#[test]
fn detached_stack_lists_in_ps_and_logs_then_downs_fast() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-detached");
    let p = project("lc-detached");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  db:
    containers:
      - name: db
        command: [/bin/sh, -c, 'echo ready; exec sleep 600']
  api:
    replicas: 2
    depends_on: [db]
    containers:
      - name: server
        command: [sleep, '600']
",
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let out = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}-{}/{} {}",
                r["pod"].as_str().unwrap(),
                r["replica"],
                r["container"].as_str().unwrap(),
                r["state"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "db-1/db running",
            "api-1/server running",
            "api-2/server running"
        ]
    );
    for r in rows.as_array().unwrap() {
        assert!(r["pid"].as_i64().unwrap() > 0);
        assert_eq!(r["restarts"], 0);
        assert!(r["exit_code"].is_null());
    }
    // once up, the detached supervisor keeps no fork server (less memory per project)
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new("/run/rcompose")
                .join(&p)
                .join("state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(state["forkserver"].is_null(), "{state}");
    let table = stdout(&rcompose(dir.path(), &["-p", &p, "ps"]));
    assert!(
        table.starts_with("POD  REPLICA  CONTAINER  STATE    READY  PID"),
        "{table}"
    );
    let logs = rcompose(dir.path(), &["-p", &p, "logs", "db"]);
    assert_eq!(stdout(&logs), "db-1 | ready\n");
    let start = Instant::now();
    // `sleep` as PID 1 (an external runtime: no init) ignores SIGTERM: a short grace then
    let down = if crate::test::external_runtime().is_some() {
        rcompose(dir.path(), &["-p", &p, "down", "-t", "1"])
    } else {
        rcompose(dir.path(), &["-p", &p, "down"])
    };
    assert_code(&down, 0);
    // sleep ignores nothing, so the default 10 s grace period must not be spent
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "down took {:?}",
        start.elapsed()
    );
    assert_no_trace(&p);
}

#[test]
fn second_up_of_a_running_project_applies_instead_of_starting_another() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-busy");
    let p = project("lc-busy");
    dir.write(
        "rcompose.yaml",
        "pods:\n  a:\n    containers:\n      - name: c\n        command: [sleep, '60']\n",
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let before = stdout(&rcompose(dir.path(), &["-p", &p, "ps"]));
    // in the foreground too: the running supervisor answers, and this `up` returns
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    assert_eq!(stderr(&out), format!("[{p}] up to date\n"));
    assert_eq!(stdout(&rcompose(dir.path(), &["-p", &p, "ps"])), before);
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn not_root_is_one_clear_sentence_and_exit_code_4() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-noroot");
    dir.write(
        "rcompose.yaml",
        "pods:\n  a:\n    containers:\n      - name: c\n        command: [true]\n",
    );
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            crate::test::bin(),
            "up",
        ])
        .current_dir(dir.path())
        .output()
        .expect("setpriv (util-linux) is needed");
    assert_code(&out, 4);
    assert_eq!(
        stderr(&out),
        "error: rcompose must run as root to create namespaces, mounts and cgroups\n\
         hint: run rcompose as root on a Linux machine with cgroups, overlayfs and network namespaces (README: \"What runs where\")\n"
    );
}

#[test]
fn many_pods_start_in_parallel_every_time() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-many");
    let mut manifest = String::from("pods:\n");
    for i in 0..12 {
        manifest.push_str(&format!(
            "  p{i}:\n    replicas: 2\n    containers:\n      - name: c\n        command: [sleep, '60']\n"
        ));
    }
    dir.write("rcompose.yaml", &manifest);
    for round in 0..3 {
        let p = project(&format!("lc-many-{round}"));
        let _guard = Cleanup(p.clone());
        let out = rcompose(dir.path(), &["-p", &p, "up", "-d"]);
        assert_code(&out, 0);
        let ps = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
        let rows: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
        let running = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "running")
            .count();
        assert_eq!(running, 24, "round {round}: {rows:#}");
        assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
        assert_no_trace(&p);
    }
}

#[test]
fn logs_follow_prints_new_lines_and_ends_with_the_project() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-follow");
    let p = project("lc-follow");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  ticker:
    containers:
      - name: c
        command: [/bin/sh, -c, 'i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done']
",
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let follower = std::process::Command::new(crate::test::bin())
        .args(["-p", &p, "logs", "-f", "ticker"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    // `logs -f` ends by itself once the project is gone
    let out = follower.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let ticks: Vec<&str> = text.lines().collect();
    assert!(ticks.len() >= 5, "{text}");
    for (i, line) in ticks.iter().enumerate() {
        assert_eq!(*line, format!("ticker-1 | tick {}", i + 1));
    }
    assert_no_trace(&p);
}

#[test]
fn missing_layer_directory_fails_up_and_leaves_nothing() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-nolayer");
    let p = project("lc-nolayer");
    dir.write(
        "rcompose.yaml",
        "images:\n  x: { rootfs: ./does-not-exist }\npods:\n  a:\n    containers:\n      - name: c\n        image: x\n        command: [sleep, '10']\n",
    );
    let missing = dir.path().join("does-not-exist");
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 1);
    assert_eq!(
        stderr(&out),
        format!(
            "error: failed to prepare image `x` of pod `a`\ncaused by: layer directory `{}` does not exist or is not a directory\n\
             hint: check the image's `layers`, `archive` or `ref` in the manifest and run `rcompose up` again\n",
            missing.display()
        )
    );
    assert_no_trace(&p);
    let out = rcompose(dir.path(), &["-p", &p, "up", "-d"]);
    assert_code(&out, 1);
    assert_eq!(
        stderr(&out),
        format!(
            "error: failed to prepare image `x` of pod `a`: layer directory `{}` does not exist or is not a directory\n\
             hint: fix what the message names and run `rcompose up` again\n",
            missing.display()
        )
    );
    assert_no_trace(&p);
}

#[test]
fn containers_also_start_without_the_fork_server() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-noforkserver");
    let p = project("lc-noforkserver");
    dir.write(
        "rcompose.yaml",
        "pods:\n  a:\n    replicas: 2\n    containers:\n      - name: c\n        command: [/bin/sh, -c, 'echo up $(hostname)']\n",
    );
    let _guard = Cleanup(p.clone());
    let out = std::process::Command::new(crate::test::bin())
        .args(["-p", &p, "up"])
        .current_dir(dir.path())
        .env("RCOMPOSE_NO_FORKSERVER", "1")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, ["a-1 | up a-1", "a-2 | up a-2"]);
    assert_no_trace(&p);
}

/// On a terminal, log lines get a coloured `name |` prefix; `NO_COLOR` turns the colour
/// off (<https://no-color.org>), and so does a pipe (the other tests).
#[test]
fn log_prefixes_are_coloured_on_a_terminal_unless_no_color() {
    require(&[Need::Root, Need::Tool("script")]);
    let dir = TempDir::new("lc-colour");
    let p = project("lc-colour");
    dir.write(
        "rcompose.yaml",
        "pods:\n  hello:\n    containers: [ { name: h, command: [ echo, coloured ] } ]\n",
    );
    let _guard = Cleanup(p.clone());
    // `script` gives the command a pseudo-terminal as stdout
    let on_terminal = |no_color: Option<&str>| {
        // (a hang fails after 60 s: before the signals were blocked early, the spinner's
        // thread took SIGCHLD and `up` never saw the container exit)
        let mut cmd = std::process::Command::new("timeout");
        cmd.args(["60", "script", "-qec"])
            .arg(format!("{} -p {p} up --abort-on-exit", crate::test::bin()))
            .arg("/dev/null")
            .current_dir(dir.path())
            .env_remove("NO_COLOR")
            .stdin(std::process::Stdio::null());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        assert_code(&out, 0);
        assert_no_trace(&p);
        stdout(&out)
    };
    let coloured = on_terminal(None);
    assert!(
        coloured.contains("\x1b[36mhello-1 |\x1b[0m coloured"),
        "{coloured:?}"
    );
    let plain = on_terminal(Some("1"));
    assert!(plain.contains("hello-1 | coloured"), "{plain:?}");
    // no SGR (colour) sequence; the spinner's line clearing (`ESC[2K`) is not colour
    let sgr = |t: &str| {
        t.split("\x1b[").skip(1).any(|rest| {
            let code: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ';')
                .collect();
            rest[code.len()..].starts_with('m')
        })
    };
    assert!(sgr(&coloured), "{coloured:?}");
    assert!(!sgr(&plain), "{plain:?}");

    // Ctrl-C on a terminal (where the progress spinner runs its own thread) tears the
    // stack down: exit 130, nothing left
    dir.write(
        "rcompose.yaml",
        "pods:\n  hello:\n    containers: [ { name: h, command: [ sleep, '1000' ] } ]\n",
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!("{} -p {p} up -t 1", crate::test::bin()))
        .arg("/dev/null")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = std::path::Path::new("/run/rcompose")
        .join(&p)
        .join("state.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    let supervisor = loop {
        let running = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter(|v| v["containers"][0]["state"] == "running");
        if let Some(v) = running {
            break v["supervisor_pid"].as_i64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the stack did not come up on a terminal"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill has no memory effects; the pid is the project's supervisor
    assert_eq!(unsafe { libc::kill(supervisor as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "up did not end after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_no_trace(&p);
}

#[test]
fn exit_code_from_and_abort_on_exit_return_the_code_and_remove_everything() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-abort");
    let p = project("lc-abort");
    let stack = |code: &str| {
        format!(
            "pods:\n  db:\n    containers: [ {{ name: db, command: [ sleep, \"1000\" ] }} ]\n  tests:\n    depends_on: [ db ]\n    containers: [ {{ name: t, command: [ sh, -c, 'echo testing; {code}' ] }} ]\n"
        )
    };
    let _guard = Cleanup(p.clone());
    let stopped = crate::test::stopped_sleep_code();
    for (code, args, want) in [
        ("exit 0", vec!["--exit-code-from", "tests"], 0),
        ("exit 1", vec!["--exit-code-from", "tests"], 1),
        // a child killed by SIGKILL (the command itself may be PID 1, which SIGKILL from
        // inside its own pid namespace does not kill)
        (
            "sh -c \"kill -9 \\$\\$\"",
            vec!["--exit-code-from", "tests"],
            137,
        ),
        ("exit 3", vec!["--abort-on-exit"], 3),
        // the named pod is stopped by the abort: its own code
        ("exit 3", vec!["--exit-code-from", "db"], stopped),
    ] {
        dir.write("rcompose.yaml", &stack(code));
        let mut all = vec!["-p", p.as_str(), "up", "-t", "1"];
        all.extend(&args);
        let out = rcompose(dir.path(), &all);
        assert_code(&out, want);
        assert!(stdout(&out).contains("testing"), "{}", stdout(&out));
        assert_no_trace(&p);
    }
    let out = rcompose(dir.path(), &["-p", &p, "up", "--exit-code-from", "nope"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("--exit-code-from: project"),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);
}

#[test]
fn run_starts_the_dependencies_runs_one_pod_and_returns_its_exit_code() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-run");
    let p = project("lc-run");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  migrate:
    containers: [ { name: m, command: [ sh, -c, 'echo migrated' ] } ]
  db:
    containers: [ { name: db, command: [ sleep, "1000" ] } ]
  tests:
    replicas: 3
    restart: always
    depends_on: { db: { condition: started }, migrate: { condition: completed } }
    containers: [ { name: t, command: [ sh, -c, 'echo default; exit 9' ] } ]
  unrelated:
    containers: [ { name: u, command: [ sleep, "1000" ] } ]
"#,
    );
    let _guard = Cleanup(p.clone());
    for (command, code, says) in [
        (vec![], 9, "default"),
        (vec!["sh", "-c", "echo replaced; exit 0"], 0, "replaced"),
        // killed by SIGKILL: a child shell (the command may be PID 1, which SIGKILL from inside
        // its own pid namespace does not kill)
        (vec!["sh", "-c", "sh -c 'kill -9 $$'"], 137, ""),
    ] {
        let mut args = vec!["-p", p.as_str(), "run", "--rm", "-t", "1", "tests"];
        args.extend(&command);
        let out = rcompose(dir.path(), &args);
        assert_code(&out, code);
        let text = stdout(&out);
        // one replica, never restarted, after its dependencies; `unrelated` never ran
        assert!(text.contains(says), "{text}");
        assert!(text.contains("migrated"), "{text}");
        assert!(!text.contains("tests-2"), "{text}");
        let err = stderr(&out);
        assert!(
            !err.contains("unrelated") && !err.contains("restarting"),
            "{err}"
        );
        assert_no_trace(&p);
    }
}

#[test]
fn two_projects_of_one_manifest_run_side_by_side() {
    require(&[Need::Root]);
    let dir = TempDir::new("lc-two");
    let (a, b) = (project("lc-two-a"), project("lc-two-b"));
    dir.write(
        "rcompose.yaml",
        "pods:\n  db:\n    containers: [ { name: db, command: [ sleep, \"1000\" ], readiness: { exec: [ \"true\" ] } } ]\n  web:\n    depends_on: { db: { condition: healthy } }\n    containers: [ { name: web, command: [ sleep, \"1000\" ] } ]\n",
    );
    let _guards = (Cleanup(a.clone()), Cleanup(b.clone()));
    for p in [&a, &b] {
        assert_code(&rcompose(dir.path(), &["-p", p, "up", "-d", "--wait"]), 0);
    }
    for p in [&a, &b] {
        let out = rcompose(dir.path(), &["-p", p, "ps", "--format", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter().all(|r| r["state"] == "running"),
            "{p}: {rows:?}"
        );
    }
    // removing one leaves the other running
    assert_code(&rcompose(dir.path(), &["-p", &a, "down"]), 0);
    assert_no_trace(&a);
    let out = rcompose(dir.path(), &["-p", &b, "ps", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows.iter().all(|r| r["state"] == "running"), "{rows:?}");
    assert_code(&rcompose(dir.path(), &["-p", &b, "down"]), 0);
    assert_no_trace(&b);
}
