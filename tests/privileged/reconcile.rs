//! `up` on a project that is already up: only the pods whose plan or config/secret content
//! changed are replaced (rolled out while they run); new pods start, removed ones go; the
//! others keep their processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, bin, project, ps_rows, rcompose, require,
    stderr, stdout,
};

const STACK: &str = r#"
configs:
  app: { file: ./app.conf }
secrets:
  token: { environment: TOKEN }
pods:
  api:
    containers:
      - { name: api, configs: [ { source: app, target: /etc/app.conf } ], command: [ sleep, "1000" ] }
  db:
    containers: [ { name: db, command: [ sleep, "1000" ] } ]
  web:
    depends_on: [ api ]
    containers:
      - { name: web, secrets: [ token ], command: [ sleep, "1000" ] }
"#;

/// `rcompose -p P up -d` with `TOKEN` set to `token`.
fn up(dir: &Path, p: &str, token: &str) -> Output {
    Command::new(bin())
        .args(["-p", p, "up", "-d"])
        .current_dir(dir)
        .env("TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("failed to run rcompose")
}

/// Pid of each running pod's container, by pod.
fn pids(dir: &Path, p: &str) -> BTreeMap<String, i64> {
    let rows = ps_rows(dir, p);
    rows.iter()
        .filter_map(|r| Some((r["pod"].as_str()?.to_string(), r["pid"].as_i64()?)))
        .collect()
}

fn exec(dir: &Path, p: &str, pod: &str, cmd: &[&str]) -> String {
    let mut args = vec!["-p", p, "exec", pod, "--"];
    args.extend(cmd);
    let out = rcompose(dir, &args);
    assert_code(&out, 0);
    stdout(&out)
}

#[test]
fn up_again_recreates_only_the_pods_whose_config_secret_or_plan_changed() {
    require(&[Need::Root]);
    let dir = TempDir::new("reup");
    let p = project("reup");
    dir.write("rcompose.yaml", STACK);
    dir.write("app.conf", "v1\n");
    let _guard = Cleanup(p.clone());

    assert_code(&up(dir.path(), &p, "a"), 0);
    let first = pids(dir.path(), &p);
    assert_eq!(first.len(), 3, "{first:?}");

    // nothing changed: nothing is touched
    let out = up(dir.path(), &p, "a");
    assert_code(&out, 0);
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));
    assert_eq!(pids(dir.path(), &p), first);

    // the config's file changed: only `api` (which mounts it) is recreated
    dir.write("app.conf", "v2\n");
    let out = up(dir.path(), &p, "a");
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("pod `api`: rolled out"), "{err}");
    assert!(
        !err.contains("pod `db`") && !err.contains("pod `web`"),
        "{err}"
    );
    let second = pids(dir.path(), &p);
    assert_ne!(second["api"], first["api"]);
    assert_eq!(second["db"], first["db"]);
    assert_eq!(second["web"], first["web"]);
    assert_eq!(
        exec(dir.path(), &p, "api", &["cat", "/etc/app.conf"]),
        "v2\n"
    );

    // the secret's environment variable changed: only `web`
    let out = up(dir.path(), &p, "b");
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("pod `web`: rolled out"), "{err}");
    assert!(
        !err.contains("pod `api`") && !err.contains("pod `db`"),
        "{err}"
    );
    let third = pids(dir.path(), &p);
    assert_eq!(third["api"], second["api"]);
    assert_eq!(third["db"], second["db"]);
    assert_ne!(third["web"], second["web"]);
    assert_eq!(
        exec(dir.path(), &p, "web", &["cat", "/run/secrets/token"]),
        "b"
    );

    // a config that cannot be read: an error, and the stack is left as it was
    std::fs::remove_file(dir.path().join("app.conf")).unwrap();
    dir.write(
        "rcompose.yaml",
        &STACK.replace("./app.conf", "./other.conf"),
    );
    let out = up(dir.path(), &p, "b");
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("other.conf"), "{}", stderr(&out));
    assert_eq!(pids(dir.path(), &p), third);

    // the manifest changed: `db`'s command differs, `cache` is new, `web` is gone
    dir.write("app.conf", "v2\n");
    let edited = STACK
        .replace(
            "[ { name: db, command: [ sleep, \"1000\" ] } ]",
            "[ { name: db, command: [ sleep, \"1001\" ] } ]\n  cache:\n    containers: [ { name: cache, command: [ sleep, \"1000\" ] } ]",
        )
        .replace("  web:\n    depends_on: [ api ]\n    containers:\n      - { name: web, secrets: [ token ], command: [ sleep, \"1000\" ] }\n", "");
    assert_ne!(edited, STACK);
    dir.write("rcompose.yaml", &edited);
    let out = up(dir.path(), &p, "b");
    assert_code(&out, 0);
    let err = stderr(&out);
    for line in [
        "pod `db`: rolled out",
        "pod `cache`: created",
        "pod `web`: removed",
    ] {
        assert!(err.contains(line), "{line}: {err}");
    }
    assert!(!err.contains("pod `api`"), "{err}");
    let fourth = pids(dir.path(), &p);
    assert_eq!(
        fourth.keys().map(String::as_str).collect::<Vec<_>>(),
        ["api", "cache", "db"]
    );
    assert_eq!(fourth["api"], third["api"]);
    let procs = exec(
        dir.path(),
        &p,
        "db",
        &["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
    );
    assert!(procs.contains("sleep 1001"), "{procs}");
    // what `web` had is gone with it: its cgroup, namespaces and secret copy
    let run = Path::new("/run/rcompose").join(&p);
    for gone in [
        "netns.web-1",
        "web-1.web",
        "web-1.web.log",
        "files/web-1.web.0",
    ] {
        assert!(!run.join(gone).exists(), "{gone} is left");
    }
    assert!(
        !Path::new("/sys/fs/cgroup/pids/rcompose")
            .join(&p)
            .join("web-1")
            .exists()
    );

    let out = rcompose(dir.path(), &["-p", &p, "down"]);
    assert_code(&out, 0);
    assert_no_trace(&p);
}

#[test]
fn up_again_with_a_pod_that_fails_to_start_keeps_the_rest_running() {
    require(&[Need::Root]);
    let dir = TempDir::new("reup-fail");
    let p = project("reup-fail");
    let stack = "pods:\n  a:\n    containers: [ { name: a, command: [ sleep, \"1000\" ] } ]\n";
    dir.write("rcompose.yaml", stack);
    let _guard = Cleanup(p.clone());
    assert_code(&up(dir.path(), &p, "x"), 0);
    let first = pids(dir.path(), &p);

    dir.write(
        "rcompose.yaml",
        &format!("{stack}  b:\n    containers: [ {{ name: b, command: [ /no/such/program ] }} ]\n"),
    );
    let out = up(dir.path(), &p, "x");
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("pod `b` failed to start"), "{err}");
    assert!(err.contains("/no/such/program"), "{err}");
    // `a` runs on, untouched
    assert_eq!(pids(dir.path(), &p), first);
    // the same manifest again: `b`, which failed, is tried again (and fails again)
    let out = up(dir.path(), &p, "x");
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("pod `b`: recreated"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pids(dir.path(), &p), first);
    let out = rcompose(dir.path(), &["-p", &p, "down"]);
    assert_code(&out, 0);
    assert_no_trace(&p);
}

#[test]
fn up_with_pod_names_starts_those_and_their_dependencies_only() {
    require(&[Need::Root]);
    let dir = TempDir::new("reup-select");
    let p = project("reup-select");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  db:
    containers: [ { name: db, command: [ sleep, "1000" ] } ]
  api:
    depends_on: [ db ]
    containers: [ { name: api, command: [ sleep, "1000" ] } ]
  worker:
    containers: [ { name: worker, command: [ sleep, "1000" ] } ]
"#,
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up", "-d", "api"]);
    assert_code(&out, 0);
    let first = pids(dir.path(), &p);
    assert_eq!(
        first.keys().map(String::as_str).collect::<Vec<_>>(),
        ["api", "db"]
    );
    // on the running project: `worker` is added, the others are left alone (not removed)
    let out = rcompose(dir.path(), &["-p", &p, "up", "-d", "worker"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("pod `worker`: created"),
        "{}",
        stderr(&out)
    );
    let second = pids(dir.path(), &p);
    assert_eq!(second.len(), 3, "{second:?}");
    assert_eq!(second["api"], first["api"]);
    assert_eq!(second["db"], first["db"]);
    // a pod that does not exist
    let out = rcompose(dir.path(), &["-p", &p, "up", "-d", "wokrer"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("has no pod `wokrer` (its pods: `api`, `db`, `worker`)"),
        "{}",
        stderr(&out)
    );
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn up_again_with_another_replica_count_scales_and_keeps_the_running_replicas() {
    require(&[Need::Root]);
    let dir = TempDir::new("reup-scale");
    let p = project("reup-scale");
    let stack = |n: u32| {
        format!(
            "pods:\n  a:\n    replicas: {n}\n    containers: [ {{ name: a, command: [ sleep, \"1000\" ] }} ]\n  b:\n    containers: [ {{ name: b, command: [ sleep, \"1000\" ] }} ]\n"
        )
    };
    dir.write("rcompose.yaml", &stack(2));
    let _guard = Cleanup(p.clone());
    assert_code(&up(dir.path(), &p, "x"), 0);
    let replicas = |dir: &Path| -> BTreeMap<String, i64> {
        let out = rcompose(dir, &["-p", &p, "ps", "--format", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        rows.iter()
            .filter_map(|r| {
                Some((
                    format!("{}-{}", r["pod"].as_str()?, r["replica"]),
                    r["pid"].as_i64()?,
                ))
            })
            .collect()
    };
    let first = replicas(dir.path());
    assert_eq!(first.len(), 3, "{first:?}");

    dir.write("rcompose.yaml", &stack(3));
    let out = up(dir.path(), &p, "x");
    assert_code(&out, 0);
    assert!(stderr(&out).contains("pod `a`: scaled"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("pod `b`"), "{}", stderr(&out));
    let second = replicas(dir.path());
    assert_eq!(second.len(), 4, "{second:?}");
    for kept in ["a-1", "a-2", "b-1"] {
        assert_eq!(second[kept], first[kept], "{kept} was recreated");
    }

    dir.write("rcompose.yaml", &stack(1));
    assert_code(&up(dir.path(), &p, "x"), 0);
    let third = replicas(dir.path());
    assert_eq!(third.keys().collect::<Vec<_>>(), ["a-1", "b-1"]);
    assert_eq!(third["a-1"], first["a-1"]);
    let run = Path::new("/run/rcompose").join(&p);
    for gone in ["netns.a-2", "netns.a-3", "a-2.a", "a-3.a.log"] {
        assert!(!run.join(gone).exists(), "{gone} is left");
    }
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}
