//! `rcompose watch` on a running project: `sync` rules copy changed files into every
//! replica (never through a symlink out of the container), `restart` rules restart exactly
//! their pods (and dependents with `cascade`), `redeploy` rules replace the pods whose layer
//! content changed, and the manifest itself is watched (a valid edit is applied, an invalid
//! one reported and the stack left alone).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, bin, project, ps_rows, rcompose, require,
    stderr,
};

/// A running `rcompose watch`, its output collected; stopped with SIGINT on drop.
struct Watching {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Watching {
    /// Starts `rcompose [global...] -p P watch --debounce 50ms` in `dir` and waits until it
    /// watches.
    fn start(dir: &Path, global: &[&str], p: &str) -> Self {
        let mut args = global.to_vec();
        args.extend(["-p", p, "watch", "--debounce", "50ms"]);
        Self::run(dir, &args)
    }

    /// Starts `rcompose ARGS...` in `dir` and waits until it watches.
    fn run(dir: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to run rcompose watch");
        let output = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        let w = Watching { child, output };
        w.wait_for("(debounce ");
        w
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits (10 s at most) until the output holds `needle`.
    #[track_caller]
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "`rcompose watch` did not print `{needle}` within 10 s; its output:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host pid of each running container's init, by replica name (`web-2`).
fn pids(dir: &Path, p: &str) -> BTreeMap<String, i64> {
    ps_rows(dir, p)
        .iter()
        .filter(|r| r["state"] == "running")
        .filter_map(|r| {
            Some((
                format!("{}-{}", r["pod"].as_str()?, r["replica"].as_u64()?),
                r["pid"].as_i64()?,
            ))
        })
        .collect()
}

/// A path in the root of the container whose init is `pid`, seen from the host (for reading).
fn in_container(pid: i64, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// Polls `f` for 10 s at most.
#[track_caller]
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn down(dir: &Path, global: &[&str], p: &str) {
    let mut args = global.to_vec();
    args.extend(["-p", p, "down", "-t", "1"]);
    assert_code(&rcompose(dir, &args), 0);
    assert_no_trace(p);
}

#[test]
fn sync_lands_in_every_replica_and_never_follows_a_symlink_out_of_the_container() {
    require(&[Need::Root]);
    let dir = TempDir::new("watch-sync");
    let victim = TempDir::new("watch-sync-victim");
    let p = project("watch-sync");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  web:
    replicas: 3
    containers: [ { name: web, command: [ sleep, "1000" ] } ]
  other:
    containers: [ { name: other, command: [ sleep, "1000" ] } ]
watch:
  - { paths: [site], action: sync, pods: [web], target: /srv/site, ignore: ["*.tmp"] }
"#,
    );
    dir.write("site/old.html", "old\n");
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let pids = pids(dir.path(), &p);
    let web: Vec<i64> = (1..=3).map(|r| pids[&format!("web-{r}")]).collect();
    let w = Watching::start(dir.path(), &[], &p);

    // a new file (in a new directory), then a changed one
    dir.write("site/css/a.css", "body {}\n");
    dir.write("site/old.html", "new\n");
    for pid in &web {
        eventually("the new and changed files in every replica", || {
            std::fs::read_to_string(in_container(*pid, "/srv/site/css/a.css")).ok()
                == Some("body {}\n".into())
                && std::fs::read_to_string(in_container(*pid, "/srv/site/old.html")).ok()
                    == Some("new\n".into())
        });
    }
    assert!(
        !in_container(pids["other-1"], "/srv/site").exists(),
        "a pod the rule does not name got files"
    );
    // no temporary file is left beside them
    let names: Vec<String> = std::fs::read_dir(in_container(web[0], "/srv/site"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // a deleted file is deleted in every replica; an ignored one is not synced
    std::fs::remove_file(dir.path().join("site/old.html")).unwrap();
    dir.write("site/scratch.tmp", "x");
    dir.write("site/.old.html.swp", "x");
    for pid in &web {
        eventually("the deleted file gone from every replica", || {
            !in_container(*pid, "/srv/site/old.html").exists()
        });
    }
    for pid in &web {
        assert!(!in_container(*pid, "/srv/site/scratch.tmp").exists());
        assert!(!in_container(*pid, "/srv/site/.old.html.swp").exists());
    }

    // symlinks in replica 1 that point at a host directory: the sync resolves them inside
    // the container (where that directory does not exist) and never writes on the host
    let victim_path = victim.path().to_str().unwrap().to_string();
    for (link, to) in [
        ("dir", victim_path.clone()),
        ("file", format!("{victim_path}/file")),
    ] {
        let out = rcompose(
            dir.path(),
            &[
                "-p",
                &p,
                "exec",
                "web",
                "--",
                "ln",
                "-s",
                &to,
                &format!("/srv/site/{link}"),
            ],
        );
        assert_code(&out, 0);
    }
    assert!(
        std::fs::symlink_metadata(in_container(web[0], "/srv/site/dir"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    dir.write("site/dir/x", "escaped\n");
    dir.write("site/file", "escaped\n");
    for pid in &web[1..] {
        eventually("the files in the other replicas", || {
            std::fs::read_to_string(in_container(*pid, "/srv/site/dir/x")).ok()
                == Some("escaped\n".into())
        });
    }
    let out = w.wait_for("sync into web-1");
    assert!(
        out.contains("failed to open directory `/srv/site/dir`"),
        "{out}"
    );
    // the link where a file goes is replaced by the file, not written through
    eventually("the link in replica 1 replaced by a file", || {
        std::fs::symlink_metadata(in_container(web[0], "/srv/site/file"))
            .is_ok_and(|m| m.file_type().is_file())
    });
    let on_host: Vec<_> = std::fs::read_dir(victim.path()).unwrap().collect();
    assert!(
        on_host.is_empty(),
        "the sync wrote on the host: {on_host:?}"
    );

    drop(w);
    down(dir.path(), &[], &p);
}

#[test]
fn restart_rules_restart_exactly_their_pods_and_dependents_with_cascade() {
    require(&[Need::Root]);
    let dir = TempDir::new("watch-restart");
    let p = project("watch-restart");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  db:
    containers: [ { name: db, command: [ sleep, "1000" ] } ]
  api:
    depends_on: [db]
    containers: [ { name: api, command: [ sleep, "1000" ] } ]
  web:
    containers: [ { name: web, command: [ sleep, "1000" ] } ]
  other:
    containers: [ { name: other, command: [ sleep, "1000" ] } ]
watch:
  - { paths: [conf/db.conf], action: restart, pods: [db], cascade: true }
  - { paths: [conf/web], action: restart, pods: [web] }
"#,
    );
    dir.write("conf/db.conf", "1");
    dir.write("conf/web/web.conf", "1");
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let first = pids(dir.path(), &p);
    assert_eq!(first.len(), 4, "{first:?}");
    let w = Watching::start(dir.path(), &[], &p);

    // no cascade: `web` only
    dir.write("conf/web/web.conf", "2");
    w.wait_for("pod `web`: restarted");
    let mut second = BTreeMap::new();
    eventually("`web` running again", || {
        second = pids(dir.path(), &p);
        second.len() == 4
    });
    assert_ne!(second["web-1"], first["web-1"]);
    for pod in ["db-1", "api-1", "other-1"] {
        assert_eq!(second[pod], first[pod], "{pod} was restarted");
    }

    // cascade: `db` and `api`, which depends on it
    dir.write("conf/db.conf", "2");
    w.wait_for("pod `db`: restarted");
    let mut third = BTreeMap::new();
    eventually("`db` and `api` running again", || {
        third = pids(dir.path(), &p);
        third.len() == 4 && third["api-1"] != second["api-1"]
    });
    assert_ne!(third["db-1"], second["db-1"]);
    for pod in ["web-1", "other-1"] {
        assert_eq!(third[pod], second[pod], "{pod} was restarted");
    }
    let out = w.wait_for("pod `api`: restarted");
    assert!(!out.contains("pod `other`"), "{out}");

    drop(w);
    down(dir.path(), &[], &p);
}

#[test]
fn an_invalid_manifest_edit_is_reported_and_a_valid_one_applied() {
    require(&[Need::Root]);
    let dir = TempDir::new("watch-manifest");
    let p = project("watch-manifest");
    let manifest = r#"pods:
  web:
    replicas: 1
    containers: [ { name: web, command: [ sleep, "1000" ] } ]
  db:
    containers: [ { name: db, command: [ sleep, "1000" ] } ]
"#;
    dir.write("rcompose.yaml", manifest);
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let first = pids(dir.path(), &p);
    let w = Watching::start(dir.path(), &[], &p);

    // an invalid edit: reported with its location, nothing touched
    dir.write(
        "rcompose.yaml",
        &manifest.replace("replicas: 1", "replcas: 2"),
    );
    let out = w.wait_for("did you mean `replicas`?");
    assert!(
        out.contains("the manifest is invalid; the running stack is left as it is"),
        "{out}"
    );
    assert!(out.contains("rcompose.yaml:3:5"), "{out}");
    assert_eq!(pids(dir.path(), &p), first);

    // a valid one: applied (web scaled to 2, the running replica and db left alone)
    dir.write(
        "rcompose.yaml",
        &manifest.replace("replicas: 1", "replicas: 2"),
    );
    w.wait_for("pod `web`: scaled");
    let mut now = BTreeMap::new();
    eventually("two replicas of web", || {
        now = pids(dir.path(), &p);
        now.contains_key("web-2")
    });
    assert_eq!(now["web-1"], first["web-1"]);
    assert_eq!(now["db-1"], first["db-1"]);

    drop(w);
    down(dir.path(), &[], &p);
}

#[test]
fn redeploy_replaces_only_the_pods_whose_layer_content_changed() {
    require(&[Need::Root]);
    let dir = TempDir::new("watch-redeploy");
    let p = project("watch-redeploy");
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let global = ["--store", store];
    dir.write(
        "rcompose.yaml",
        r#"
images:
  app:
    layers: [ { source: app, target: /opt/app } ]
pods:
  web:
    containers: [ { name: web, image: app, command: [ sleep, "1000" ] } ]
  other:
    containers: [ { name: other, command: [ sleep, "1000" ] } ]
watch:
  - { paths: [app], action: redeploy, pods: [web] }
"#,
    );
    dir.write("app/version", "1\n");
    let _guard = Cleanup(p.clone());
    let mut up = global.to_vec();
    up.extend(["-p", &p, "up", "-d"]);
    assert_code(&rcompose(dir.path(), &up), 0);
    let first = pids(dir.path(), &p);
    assert_eq!(
        std::fs::read_to_string(in_container(first["web-1"], "/opt/app/version")).unwrap(),
        "1\n"
    );
    let w = Watching::start(dir.path(), &global, &p);

    dir.write("app/version", "2\n");
    let out = w.wait_for("pod `web`: rolled out");
    assert!(!out.contains("pod `other`"), "{out}");
    let mut now = BTreeMap::new();
    eventually("web running again", || {
        now = pids(dir.path(), &p);
        now.contains_key("web-1") && now["web-1"] != first["web-1"]
    });
    assert_eq!(now["other-1"], first["other-1"]);
    assert_eq!(
        std::fs::read_to_string(in_container(now["web-1"], "/opt/app/version")).unwrap(),
        "2\n"
    );

    drop(w);
    down(dir.path(), &global, &p);
}

#[test]
fn a_redeploy_under_load_rolls_out_with_no_failed_request() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("watch-redeploy-load");
    let p = project("watch-redeploy-load");
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let global = ["--store", store];
    let port = crate::test::free_port();
    dir.write(
        "rcompose.yaml",
        &format!(
            r#"
images:
  site:
    layers: [ {{ source: site, target: /srv }} ]
pods:
  web:
    replicas: 3
    labels: {{ app: web }}
    update: {{ max_surge: 1, max_unavailable: 0 }}
    containers:
      - name: web
        image: site
        command: [ python3, -m, http.server, "8000", --directory, /srv ]
        readiness: {{ tcp: {{ port: 8000 }}, period: 1s }}
services:
  web: {{ selector: {{ app: web }}, ports: [ {{ port: 80, target: 8000, publish: {port} }} ] }}
watch:
  - {{ paths: [site], action: redeploy, pods: [web] }}
"#
        ),
    );
    dir.write("site/index.html", "one\n");
    let _guard = Cleanup(p.clone());
    let mut up = global.to_vec();
    up.extend(["-p", &p, "up", "-d", "--wait"]);
    assert_code(&rcompose(dir.path(), &up), 0);
    assert_eq!(crate::test::http_get(port).unwrap(), "one");
    let w = Watching::start(dir.path(), &global, &p);
    let load = super::rollout::Load::start(port, 4);
    std::thread::sleep(Duration::from_millis(300));
    dir.write("site/index.html", "two\n");
    w.wait_for("pod `web`: rolled out");
    std::thread::sleep(Duration::from_millis(300));
    let (bodies, errors) = load.finish();
    assert!(errors.is_empty(), "{} failed: {errors:?}", errors.len());
    assert!(bodies.get("one").is_some_and(|n| *n > 0), "{bodies:?}");
    assert!(bodies.get("two").is_some_and(|n| *n > 0), "{bodies:?}");
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for _ in 0..6 {
        assert_eq!(crate::test::http_get(port).unwrap(), "two");
    }
    drop(w);
    down(dir.path(), &global, &p);
}

#[test]
fn up_watch_in_the_foreground_syncs_and_ctrl_c_removes_the_stack() {
    require(&[Need::Root]);
    let dir = TempDir::new("watch-up");
    let p = project("watch-up");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  web:
    replicas: 2
    containers:
      - { name: web, command: [ sleep, "1000" ] }
      - { name: side, command: [ sleep, "1000" ] }
watch:
  - { paths: [site], action: sync, pods: [web], containers: [web], target: /srv }
"#,
    );
    dir.write("site/index.html", "v1\n");
    let _guard = Cleanup(p.clone());
    let w = Watching::run(
        dir.path(),
        &["-p", &p, "up", "--watch", "--debounce", "50ms"],
    );
    // the pids of the `web` and the `side` containers
    let rows = ps_rows(dir.path(), &p);
    let of = |name: &str| -> Vec<i64> {
        rows.iter()
            .filter(|r| r["container"] == name)
            .map(|r| r["pid"].as_i64().unwrap())
            .collect()
    };
    let (web, side) = (of("web"), of("side"));
    assert_eq!((web.len(), side.len()), (2, 2), "{rows:?}");
    dir.write("site/index.html", "v2\n");
    for pid in &web {
        eventually("the file in both replicas", || {
            std::fs::read_to_string(in_container(*pid, "/srv/index.html")).ok()
                == Some("v2\n".into())
        });
    }
    w.wait_for("into web-1/web, web-2/web in");
    // the other container of the pod is not one the rule names
    for pid in &side {
        assert!(!in_container(*pid, "/srv/index.html").exists());
    }
    // Ctrl-C ends `up` in the foreground, and with it the stack and the watcher
    drop(w);
    assert_no_trace(&p);
}

#[test]
fn watch_needs_a_running_project_and_a_valid_debounce() {
    require(&[Need::Root]);
    let dir = TempDir::new("watch-errors");
    let p = project("watch-errors");
    dir.write(
        "rcompose.yaml",
        "pods:\n  web: { containers: [ { name: web, command: [ sleep, \"1000\" ] } ] }\n",
    );
    let out = rcompose(dir.path(), &["-p", &p, "watch"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!("project `{p}` is not up")),
        "{}",
        stderr(&out)
    );
    let out = rcompose(dir.path(), &["-p", &p, "watch", "--debounce", "soon"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("invalid duration `soon`"),
        "{}",
        stderr(&out)
    );
    // a watched path that does not exist is named
    dir.write(
        "rcompose.yaml",
        "pods:\n  web: { containers: [ { name: web, command: [ sleep, \"1000\" ] } ] }\nwatch:\n  - { paths: [nope], action: restart, pods: [web] }\n",
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let out = rcompose(dir.path(), &["-p", &p, "watch"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("watch rule 1 watches `nope`, which does not exist"),
        "{}",
        stderr(&out)
    );
    down(dir.path(), &[], &p);
}
