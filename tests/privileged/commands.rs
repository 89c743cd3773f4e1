//! `stop`, `start`, `restart` and `scale` on a detached project: requests to its supervisor
//! over the control socket, carried out on the running stack.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, ls_row, project, ps_rows, rcompose,
    rcompose_stdin, require, stderr,
};

const STACK: &str = r#"
pods:
  db:
    restart: always
    containers:
      - name: db
        command: [ sh, -c, 'sleep 0.3; touch /tmp/ready; exec sleep 1000' ]
        readiness: { exec: [ test, -f, /tmp/ready ] }
  api:
    replicas: 2
    restart: always
    depends_on: { db: { condition: healthy } }
    containers: [ { name: api, command: [ sleep, "1000" ] } ]
"#;

/// `ps --format json` rows by `pod-N`: (state, pid, ready, reason).
fn rows(dir: &Path, p: &str) -> BTreeMap<String, (String, Option<i64>, bool, String)> {
    let rows = ps_rows(dir, p);
    rows.iter()
        .map(|r| {
            (
                format!("{}-{}", r["pod"].as_str().unwrap(), r["replica"]),
                (
                    r["state"].as_str().unwrap().to_string(),
                    r["pid"].as_i64(),
                    r["ready"] == true,
                    r["reason"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

/// Waits until `ok` holds for the rows, at most 10 s.
fn until(
    dir: &Path,
    p: &str,
    what: &str,
    ok: impl Fn(&BTreeMap<String, (String, Option<i64>, bool, String)>) -> bool,
) -> BTreeMap<String, (String, Option<i64>, bool, String)> {
    crate::test::poll(what, || rows(dir, p), |r| ok(r))
}

fn running(r: &(String, Option<i64>, bool, String)) -> bool {
    r.0 == "running" && r.2
}

#[test]
fn stop_start_restart_and_scale_act_on_the_running_stack() {
    require(&[Need::Root]);
    let dir = TempDir::new("cmd-ssrs");
    let p = project("cmd-ssrs");
    dir.write("rcompose.yaml", STACK);
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    assert_code(&rcompose(d, &["-p", &p, "up", "-d", "--wait"]), 0);
    let first = rows(d, &p);
    assert_eq!(first.len(), 3, "{first:#?}");
    assert!(first.values().all(running), "{first:#?}");
    // `ls` lists the project as Compose's does: its containers by state
    let me = ls_row(d, &p);
    assert_eq!(me["status"], "running(3)", "{me}");
    assert_eq!(me["up"], true);
    assert_eq!(me["containers"], 3);
    assert_eq!(me["manifest"], d.join("rcompose.yaml").to_str().unwrap());
    assert_eq!(
        me["manifest_files"],
        serde_json::json!([d.join("rcompose.yaml").to_str().unwrap()])
    );

    // stop: the pod stays stopped, whatever its restart policy; the others run on
    let out = rcompose(d, &["-p", &p, "stop", "-t", "1", "db"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("pod `db`: stopped"),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_millis(500));
    let r = rows(d, &p);
    assert_eq!(r["db-1"].0, "exited", "{r:#?}");
    assert_eq!(r["db-1"].3, "stopped", "{r:#?}");
    assert_eq!(r["api-1"].1, first["api-1"].1, "api was touched: {r:#?}");

    // start of a dependent starts the dependency it needs; the dependent keeps running
    let out = rcompose(d, &["-p", &p, "start", "api"]);
    assert_code(&out, 0);
    let text = stderr(&out);
    assert!(text.contains("pod `db`: started"), "{text}");
    assert!(text.contains("pod `api`: already running"), "{text}");
    let r = until(d, &p, "db not ready again", |r| running(&r["db-1"]));
    assert_ne!(r["db-1"].1, first["db-1"].1);
    assert_eq!(r["api-2"].1, first["api-2"].1);

    // scale up: new replicas start, the old ones keep their processes; scale down removes
    // the highest-numbered ones
    assert_code(&rcompose(d, &["-p", &p, "scale", "api=4"]), 0);
    let r = until(d, &p, "not scaled to 4", |r| {
        (1..=4).all(|n| r.get(&format!("api-{n}")).is_some_and(running))
    });
    assert_eq!(r["api-1"].1, first["api-1"].1);
    assert_eq!(r["api-2"].1, first["api-2"].1);
    let out = rcompose(d, &["-p", &p, "scale", "api=1"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("pod `api`: scaled to 1"),
        "{}",
        stderr(&out)
    );
    let r = rows(d, &p);
    assert_eq!(
        r.keys().collect::<Vec<_>>(),
        ["api-1", "db-1"],
        "after scale api=1: {r:#?}"
    );
    assert_eq!(r["api-1"].1, first["api-1"].1);

    // restart: new processes for the named pod only
    let before = rows(d, &p);
    let out = rcompose(d, &["-p", &p, "restart", "-t", "1", "api"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("pod `api`: restarted"),
        "{}",
        stderr(&out)
    );
    let r = until(d, &p, "api not running again", |r| running(&r["api-1"]));
    assert_ne!(r["api-1"].1, before["api-1"].1);
    assert_eq!(r["db-1"].1, before["db-1"].1);

    // stop and start everything: in dependency order again
    assert_code(&rcompose(d, &["-p", &p, "stop", "-t", "1"]), 0);
    let r = rows(d, &p);
    assert!(r.values().all(|c| c.0 == "exited"), "{r:#?}");
    assert_code(&rcompose(d, &["-p", &p, "start"]), 0);
    until(d, &p, "not everything started", |r| r.values().all(running));

    // bad requests: a precise error, nothing changed
    let out = rcompose(d, &["-p", &p, "stop", "nope"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("no pod named `nope`") && stderr(&out).contains("api, db"),
        "{}",
        stderr(&out)
    );
    let out = rcompose(d, &["-p", &p, "scale", "api=x"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("not a whole number"),
        "{}",
        stderr(&out)
    );
    assert!(rows(d, &p).values().all(running));

    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
    // no supervisor: said so
    let out = rcompose(d, &["-p", &p, "start"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("is not up"), "{}", stderr(&out));
}

#[test]
fn replicas_scaled_away_leave_no_cgroup_and_can_come_back() {
    require(&[Need::Root]);
    let dir = TempDir::new("cmd-scale");
    let p = project("cmd-scale");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  w:
    replicas: 3
    restart: always
    backoff: { initial: 0s }
    containers: [ { name: w, command: [ sleep, "1000" ] } ]
"#,
    );
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    assert_code(&rcompose(d, &["-p", &p, "up", "-d"]), 0);
    until(d, &p, "not up", |r| r.len() == 3 && r.values().all(running));
    // scale to 0, then back: the removed replicas' cgroups are gone meanwhile
    let before = replica_cgroups(&p);
    assert!(
        ["w-1", "w-2", "w-3"]
            .iter()
            .all(|r| before.iter().any(|b| b == r)),
        "replica cgroups not found: {before:?}"
    );
    assert_code(&rcompose(d, &["-p", &p, "scale", "w=0"]), 0);
    let r = rows(d, &p);
    assert!(r.is_empty(), "{r:#?}");
    let after = replica_cgroups(&p);
    assert!(after.is_empty(), "replica cgroups left: {after:?}");
    assert_code(&rcompose(d, &["-p", &p, "scale", "w=2"]), 0);
    until(d, &p, "not scaled back to 2", |r| {
        r.len() == 2 && r.values().all(running)
    });
    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
}

/// The replica cgroups of project `p` (`pod-N` directories) in the memory hierarchy (v1) or
/// the unified one (v2).
fn replica_cgroups(p: &str) -> Vec<String> {
    ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .map(|root| Path::new(root).join("rcompose").join(p))
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_manifest_from_standard_input_reaches_the_detached_supervisor() {
    require(&[Need::Root]);
    let dir = TempDir::new("cmd-stdin");
    let p = project("cmd-stdin");
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    // no file in the directory: the supervisor can only have the text from `up`
    let out = rcompose_stdin(d, &["-f", "-", "-p", &p, "up", "-d", "--wait"], STACK);
    assert_code(&out, 0);
    let r = rows(d, &p);
    assert_eq!(r.len(), 3, "{r:#?}");
    assert!(r.values().all(running), "{r:#?}");
    // `ls` records it as `-`
    let me = ls_row(d, &p);
    assert_eq!(me["manifest_files"], serde_json::json!(["-"]), "{me}");
    // the running supervisor answers requests as for a stack from a file
    let out = rcompose(d, &["-p", &p, "restart", "-t", "1", "api"]);
    assert_code(&out, 0);
    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
}
