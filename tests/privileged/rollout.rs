//! Rolling updates: a changed pod that runs is replaced replica by replica as the new ones
//! get ready, with no failed request through the balancer; a new revision that crashes or
//! never gets ready is rolled back by itself; `rollout status|history|undo`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, free_port, http_get, project, ps_rows,
    rcompose, require, stderr, stdout,
};

/// Three replicas of an HTTP server that answers with `version`, behind `publish`;
/// `command` replaces the server (a broken version). The update adds one replica at a time
/// and never goes below three ready ones.
fn stack(publish: u16, version: &str, command: Option<&str>, deadline: &str) -> String {
    let server = "mkdir -p /tmp/h && echo $V > /tmp/h/index.html && cd /tmp/h && exec python3 -m http.server 8000";
    format!(
        r#"
pods:
  web:
    replicas: 3
    restart: always
    backoff: {{ initial: 0s }}
    labels: {{ app: web }}
    update: {{ max_surge: 1, max_unavailable: 0, progress_deadline: {deadline} }}
    containers:
      - name: web
        env: {{ V: "{version}" }}
        command: [ sh, -c, '{}' ]
        readiness: {{ tcp: {{ port: 8000 }}, period: 1s }}
services:
  web: {{ selector: {{ app: web }}, ports: [ {{ port: 80, target: 8000, publish: {publish} }} ] }}
"#,
        command.unwrap_or(server)
    )
}

/// Clients looping GET on the published port until stopped: every answer or error.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Result<String, String>>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub(super) fn start(port: u16, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, results) = (Arc::clone(&stop), Arc::clone(&results));
                std::thread::spawn(move || {
                    let t0 = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let t = t0.elapsed();
                        let r = http_get(port).map_err(|e| format!("{e} (sent at {t:?})"));
                        results.lock().unwrap().push(r);
                    }
                })
            })
            .collect();
        Load {
            stop,
            results,
            threads,
        }
    }

    /// Stops the clients: the answers, by body, and the errors.
    pub(super) fn finish(self) -> (std::collections::BTreeMap<String, usize>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let mut bodies = std::collections::BTreeMap::new();
        let mut errors = Vec::new();
        for r in self.results.lock().unwrap().drain(..) {
            match r {
                Ok(b) => *bodies.entry(b).or_insert(0) += 1,
                Err(e) => errors.push(e),
            }
        }
        (bodies, errors)
    }
}

/// `(revision, ready)` of each replica, by replica number.
fn revisions(dir: &Path, p: &str) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = ps_rows(dir, p)
        .iter()
        .map(|r| {
            (
                r["replica"].as_u64().unwrap(),
                r["revision"].as_u64().unwrap(),
                r["ready"] == true,
            )
        })
        .collect();
    out.sort_unstable();
    out
}

/// The names in project `p`'s directory that belong to replicas of `web` (container
/// directories and logs).
fn replica_files(p: &str) -> Vec<String> {
    std::fs::read_dir(format!("/run/rcompose/{p}"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("web-"))
        .collect()
}

fn history(dir: &Path, p: &str) -> serde_json::Value {
    let out = rcompose(
        dir,
        &["-p", p, "rollout", "history", "web", "--format", "json"],
    );
    assert_code(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_changed_pod_rolls_out_with_no_failed_request_and_a_broken_one_rolls_back() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("rollout");
    let p = project("rollout");
    let port = free_port();
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    dir.write("rcompose.yaml", &stack(port, "v1", None, "60s"));
    assert_code(&rcompose(d, &["-p", &p, "up", "-d", "--wait"]), 0);
    assert_eq!(http_get(port).unwrap(), "v1");
    let dirs_before = replica_files(&p);
    assert!(
        dirs_before.contains(&"web-1.web".to_string()),
        "{dirs_before:?}"
    );

    // v2 under load: every request answered, by v1 then v2; `up -d` returns once done
    let load = Load::start(port, 4);
    std::thread::sleep(Duration::from_millis(300));
    dir.write("rcompose.yaml", &stack(port, "v2", None, "60s"));
    let out = rcompose(d, &["-p", &p, "up", "-d"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("pod `web`: rolled out"),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_millis(300));
    let (bodies, errors) = load.finish();
    assert!(errors.is_empty(), "{} failed: {errors:?}", errors.len());
    assert!(bodies.get("v1").is_some_and(|n| *n > 0), "{bodies:?}");
    assert!(bodies.get("v2").is_some_and(|n| *n > 0), "{bodies:?}");
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for _ in 0..6 {
        assert_eq!(http_get(port).unwrap(), "v2");
    }
    // three replicas of revision 2, the old ones gone with their directories
    assert_eq!(revisions(d, &p), [(1, 2, true), (2, 2, true), (3, 2, true)]);
    let dirs = replica_files(&p);
    assert!(
        dirs.iter().all(|n| n.contains("_r2")),
        "left by revision 1: {dirs:?}"
    );
    let h = history(d, &p);
    assert_eq!(h[0]["revision"], 1, "{h}");
    assert_eq!(h[0]["status"], "complete", "{h}");
    assert_eq!(h[1]["revision"], 2, "{h}");
    assert_eq!(h[1]["status"], "complete", "{h}");
    assert_eq!(h[1]["current"], true, "{h}");
    let status = rcompose(d, &["-p", &p, "rollout", "status", "web"]);
    assert_code(&status, 0);
    assert!(
        stdout(&status).contains("revision 2 rolled out (3 of 3 replicas ready)"),
        "{}",
        stdout(&status)
    );
    let events = std::fs::read_to_string(format!("/run/rcompose/{p}/events.jsonl")).unwrap();
    assert!(
        events.contains(r#""reason":"revision 2 started""#),
        "{events}"
    );
    assert!(
        events.contains(r#""reason":"revision 2 complete""#),
        "{events}"
    );

    // v3 exits at once: rolled back, v2 keeps serving every request, `up -d` fails
    let load = Load::start(port, 4);
    dir.write("rcompose.yaml", &stack(port, "v3", Some("exit 3"), "60s"));
    let out = rcompose(d, &["-p", &p, "up", "-d"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out)
            .contains("the rollout of pod `web` to revision 3 failed: `web-1` exited with code 3")
            && stderr(&out).contains("rolled back to revision 2"),
        "{}",
        stderr(&out)
    );
    let (bodies, errors) = load.finish();
    assert!(errors.is_empty(), "{} failed: {errors:?}", errors.len());
    assert_eq!(bodies.keys().collect::<Vec<_>>(), ["v2"], "{bodies:?}");
    assert_eq!(revisions(d, &p), [(1, 2, true), (2, 2, true), (3, 2, true)]);
    let status = rcompose(d, &["-p", &p, "rollout", "status", "web"]);
    assert_code(&status, 1);
    assert!(
        stdout(&status).contains("rolled back to revision 2"),
        "{}",
        stdout(&status)
    );
    let h = history(d, &p);
    assert_eq!(h[2]["revision"], 3, "{h}");
    assert!(
        h[2]["status"]
            .as_str()
            .unwrap()
            .starts_with("failed: `web-1` exited with code 3"),
        "{h}"
    );
    assert_eq!(h[1]["current"], true, "{h}");

    // v4 never gets ready: rolled back at its progress deadline
    dir.write(
        "rcompose.yaml",
        &stack(port, "v4", Some("exec sleep 1000"), "2s"),
    );
    let t0 = Instant::now();
    let out = rcompose(d, &["-p", &p, "up", "-d"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("0 of 3 new replicas ready after 2 s (`progress_deadline`)"),
        "{}",
        stderr(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(http_get(port).unwrap(), "v2");
    assert_eq!(revisions(d, &p), [(1, 2, true), (2, 2, true), (3, 2, true)]);

    // undo: back to revision 1's spec, as revision 5
    let out = rcompose(
        d,
        &["-p", &p, "rollout", "undo", "web", "--to-revision", "1"],
    );
    assert_code(&out, 0);
    for _ in 0..6 {
        assert_eq!(http_get(port).unwrap(), "v1");
    }
    let h = history(d, &p);
    let last = &h.as_array().unwrap()[h.as_array().unwrap().len() - 1];
    assert_eq!(last["revision"], 5, "{h}");
    assert_eq!(last["cause"], "undo to revision 1", "{h}");
    assert_eq!(last["current"], true, "{h}");
    let out = rcompose(
        d,
        &["-p", &p, "rollout", "undo", "web", "--to-revision", "9"],
    );
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("pod `web` has no revision 9 (kept: 1, 2, 3, 4, 5)"),
        "{}",
        stderr(&out)
    );
    let out = rcompose(d, &["-p", &p, "rollout", "history", "nope"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("no pod `nope` in this project"),
        "{}",
        stderr(&out)
    );

    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
}

#[test]
fn without_surge_an_old_replica_stops_before_its_new_one_starts_and_min_ready_holds() {
    require(&[Need::Root]);
    let dir = TempDir::new("rollout-nosurge");
    let p = project("rollout-nosurge");
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    let manifest = |v: &str| {
        format!(
            r#"
pods:
  w:
    replicas: 2
    update: {{ max_surge: 0, max_unavailable: 1, min_ready: 400ms }}
    containers: [ {{ name: c, command: [ sleep, "100{v}" ] }} ]
"#
        )
    };
    dir.write("rcompose.yaml", &manifest("1"));
    assert_code(&rcompose(d, &["-p", &p, "up", "-d", "--wait"]), 0);
    dir.write("rcompose.yaml", &manifest("2"));
    assert_code(&rcompose(d, &["-p", &p, "up", "-d"]), 0);
    assert_eq!(revisions(d, &p), [(1, 2, true), (2, 2, true)]);
    // never more than two replicas ran: each new one came after an old one was gone
    let events = std::fs::read_to_string(format!("/run/rcompose/{p}/events.jsonl")).unwrap();
    let mut running: i32 = 0;
    let mut most = 0;
    for line in events.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        match e["event"].as_str().unwrap() {
            "started" => running += 1,
            "exited" => running -= 1,
            _ => {}
        }
        most = most.max(running);
    }
    assert_eq!(most, 2, "{events}");
    // the second new replica started only once the first had been ready for `min_ready`
    // (the other old one could go only then: one unavailable at most)
    let rollout_started = events
        .lines()
        .position(|l| l.contains(r#""event":"rollout""#))
        .expect("a rollout event");
    let starts: Vec<u64> = events
        .lines()
        .skip(rollout_started)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "started")
        .map(|e| e["time_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(starts.len(), 2, "{events}");
    assert!(starts[1] - starts[0] >= 400, "{events}");
    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
}
