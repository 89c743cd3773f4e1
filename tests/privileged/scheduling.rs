//! Requests and admission: a replica whose requests do not fit its node waits, `Pending`
//! with the scheduler's reason, instead of overcommitting, and starts once resources are
//! released.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, ps_rows, rcompose, require,
    stdout,
};

/// `ps --format json` rows as (`pod-N`, state, reason, node).
fn rows(dir: &Path, p: &str) -> Vec<(String, String, String, String)> {
    ps_rows(dir, p)
        .iter()
        .map(|r| {
            (
                format!("{}-{}", r["pod"].as_str().unwrap(), r["replica"]),
                r["state"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap_or("").to_string(),
                r["node"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Waits until `ok` holds for the rows, at most 10 s.
fn until(
    dir: &Path,
    p: &str,
    what: &str,
    ok: impl Fn(&[(String, String, String, String)]) -> bool,
) -> Vec<(String, String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = rows(dir, p);
        if ok(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "{what}: {r:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state<'a>(r: &'a [(String, String, String, String)], name: &str) -> (&'a str, &'a str) {
    r.iter()
        .find(|row| row.0 == name)
        .map_or(("absent", ""), |row| (row.1.as_str(), row.2.as_str()))
}

#[test]
fn a_replica_that_does_not_fit_is_pending_with_the_reason_until_another_is_removed() {
    require(&[Need::Root]);
    let dir = TempDir::new("sched-pending");
    let p = project("sched-pending");
    // the machine as a node of 1Gi: `big` (first by name) takes 768Mi (its limit is its
    // request), `small` asks for 512Mi more than is left
    dir.write(
        "rcompose.yaml",
        r#"
capacity: { memory: 1Gi }
pods:
  big:
    restart: always
    containers: [ { name: big, command: [ sleep, "1000" ], resources: { memory: 768Mi } } ]
  small:
    restart: always
    containers: [ { name: small, command: [ sleep, "1000" ], resources: { requests: { memory: 512Mi } } } ]
"#,
    );
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    assert_code(&rcompose(d, &["-p", &p, "up", "-d"]), 0);
    let r = until(d, &p, "big not running", |r| {
        state(r, "big-1").0 == "running"
    });
    assert_eq!(
        state(&r, "small-1"),
        (
            "pending",
            "insufficient memory: requested 512Mi, free 256Mi"
        ),
        "{r:#?}"
    );
    // it stays pending: nothing frees memory
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(&rows(d, &p), "small-1").0, "pending");
    let table = stdout(&rcompose(d, &["-p", &p, "ps"]));
    assert!(
        table.lines().any(|l| l.starts_with("small")
            && l.contains("pending")
            && l.contains("insufficient memory")),
        "{table}"
    );
    let events = std::fs::read_to_string(format!("/run/rcompose/{p}/events.jsonl")).unwrap();
    assert!(
        events.contains(r#""event":"pending","name":"small-1","reason":"insufficient memory: requested 512Mi, free 256Mi""#),
        "{events}"
    );
    // removing `big` releases its memory: `small` starts
    assert_code(&rcompose(d, &["-p", &p, "scale", "big=0"]), 0);
    until(d, &p, "small not started after big was removed", |r| {
        state(r, "small-1").0 == "running" && state(r, "big-1").0 == "absent"
    });
    // and now `big` does not fit
    assert_code(&rcompose(d, &["-p", &p, "scale", "big=1"]), 0);
    let r = until(d, &p, "big not pending", |r| {
        state(r, "big-1").0 == "pending"
    });
    assert_eq!(
        state(&r, "big-1").1,
        "insufficient memory: requested 768Mi, free 512Mi"
    );
    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
}
