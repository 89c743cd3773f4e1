//! Requests and admission: a replica whose requests do not fit its node waits, `Pending`
//! with the scheduler's reason, instead of overcommitting, and starts once resources are
//! released.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, placements, project, ps_rows, rcompose,
    require, stdout,
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
    crate::test::poll(what, || rows(dir, p), |r| ok(r))
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

/// Four replicas of an HTTP server spread over three nodes, behind a published port.
fn spread_stack(publish: u16) -> String {
    let server = "mkdir -p /tmp/h && echo ok > /tmp/h/index.html && cd /tmp/h && exec python3 -m http.server 8000";
    format!(
        r#"
nodes:
  w1: {{ cpu: 2, memory: 1Gi, labels: {{ zone: a }} }}
  w2: {{ cpu: 2, memory: 1Gi, labels: {{ zone: b }} }}
  w3: {{ cpu: 2, memory: 1Gi, labels: {{ zone: b }} }}
pods:
  web:
    replicas: 4
    restart: always
    labels: {{ app: web }}
    containers:
      - name: web
        command: [ sh, -c, '{server}' ]
        resources: {{ requests: {{ cpu: 100m, memory: 64Mi }} }}
        readiness: {{ tcp: {{ port: 8000 }}, period: 1s }}
  pinned:
    node_selector: {{ zone: b }}
    containers: [ {{ name: p, command: [ sleep, "1000" ] }} ]
services:
  web: {{ selector: {{ app: web }}, ports: [ {{ port: 80, target: 8000, publish: {publish} }} ] }}
"#
    )
}

/// Whether every replica's address is in its node's block of the project's /24: one
/// service at the top, so the pods' addresses .2 to .253 in three blocks of 84.
fn addresses_follow_nodes(dir: &Path, p: &str) -> Result<(), String> {
    for r in ps_rows(dir, p) {
        let node = r["node"].as_str().unwrap_or("");
        let ip: std::net::Ipv4Addr = r["ip"].as_str().unwrap_or("0.0.0.0").parse().unwrap();
        let host = ip.octets()[3];
        let (lo, hi) = match node {
            "w1" => (2, 85),
            "w2" => (86, 169),
            "w3" => (170, 253),
            _ => return Err(format!("no node: {r}")),
        };
        if !(lo..=hi).contains(&host) {
            return Err(format!("{ip} is not in the block of {node}: {r}"));
        }
    }
    Ok(())
}

#[test]
fn node_down_reschedules_its_replicas_while_the_service_keeps_serving() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("sched-node-down");
    let p = project("sched-node-down");
    let port = crate::test::free_port();
    dir.write("rcompose.yaml", &spread_stack(port));
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    assert_code(&rcompose(d, &["-p", &p, "up", "-d", "--wait"]), 0);
    // spread first, then packed: w1, w2, w3, then w1 again (the fullest of the three);
    // `pinned` selects zone b and goes to the fuller of w2 and w3
    let before = placements(d, &p);
    let on = |rows: &[(String, String, bool)], name: &str| {
        rows.iter()
            .find(|r| r.0 == name)
            .map(|r| r.1.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        ["web-1", "web-2", "web-3", "web-4", "pinned-1"].map(|n| on(&before, n)),
        ["w1", "w2", "w3", "w1", "w2"],
        "{before:#?}"
    );
    let nodes: serde_json::Value = serde_json::from_str(&stdout(&rcompose(
        d,
        &["-p", &p, "nodes", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(nodes[0]["name"], "w1");
    assert_eq!(nodes[0]["status"], "Ready");
    assert_eq!(nodes[0]["cpu_allocated"], 200);
    assert_eq!(nodes[0]["memory_allocated"], 128 << 20);
    assert_eq!(nodes[0]["pods"], serde_json::json!(["web-1", "web-4"]));
    let table = stdout(&rcompose(d, &["-p", &p, "nodes"]));
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("w1    Ready   200m/2  128Mi/1Gi  2     web-1,web-4"),
        "{table}"
    );

    addresses_follow_nodes(d, &p).unwrap();
    // each node is a cgroup with its capacity, its replicas below it
    let (memory, cpu) = node_cgroups(&p, "w1");
    assert_eq!(memory.as_deref(), Some("1073741824"), "memory limit of w1");
    assert_eq!(cpu.as_deref(), Some("200000"), "cpu quota of w1 (2 CPUs)");
    assert_eq!(replica_cgroups(&p, "w1"), ["web-1", "web-4"]);

    let load = super::rollout::Load::start(port, 2);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let out = rcompose(d, &["-p", &p, "node", "down", "w1"]);
    assert_code(&out, 0);
    let down_at = t0.elapsed();
    // every replica ready again, none on w1, within seconds
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let rows = placements(d, &p);
        if rows.len() == 5 && rows.iter().all(|r| r.2 && r.1 != "w1" && !r.1.is_empty()) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "not rescheduled in 5 s: {rows:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let ready_in = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (bodies, errors) = load.finish();
    eprintln!(
        "node down answered in {down_at:?}, every replica ready elsewhere in {ready_in:?}; {bodies:?}, {} errors",
        errors.len()
    );
    // A request in flight on the dead node may fail, as on a machine that died (the
    // balancer replays one whose answer had not begun; one cut inside its answer, seen here
    // as a 200 with an empty body about once in five runs, cannot be): at most one per
    // client. Every other request succeeds.
    let cut: usize = bodies
        .iter()
        .filter(|(b, _)| b.as_str() != "ok")
        .map(|(_, n)| n)
        .sum();
    assert!(
        bodies.get("ok").copied().unwrap_or(0) > 20,
        "{bodies:?} {errors:?}"
    );
    assert!(errors.len() + cut <= 2, "{bodies:?} {errors:#?}");
    assert_eq!(on(&after, "web-2"), "w2", "replicas elsewhere did not move");
    assert_eq!(on(&after, "web-3"), "w3");
    let nodes: serde_json::Value = serde_json::from_str(&stdout(&rcompose(
        d,
        &["-p", &p, "nodes", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(nodes[0]["status"], "NotReady");
    let events = std::fs::read_to_string(format!("/run/rcompose/{p}/events.jsonl")).unwrap();
    assert!(
        events.contains(r#""event":"node","name":"w1","reason":"down""#),
        "{events}"
    );
    assert_eq!(nodes[0]["pods"], serde_json::json!([]));
    assert_eq!(nodes[0]["cpu_allocated"], 0);
    assert!(replica_cgroups(&p, "w1").is_empty(), "cgroups left on w1");
    // the moved replicas have new addresses, from their new nodes' blocks, and the other
    // pods know them by name
    addresses_follow_nodes(d, &p).unwrap();
    let web1 = ps_rows(d, &p)
        .iter()
        .find(|r| r["pod"] == "web" && r["replica"] == 1)
        .map(|r| r["ip"].as_str().unwrap().to_string())
        .unwrap();
    let hosts = stdout(&rcompose(
        d,
        &["-p", &p, "exec", "pinned-1", "--", "cat", "/etc/hosts"],
    ));
    assert!(
        hosts.lines().any(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(web1.as_str()) && words.any(|w| w == "web-1")
        }),
        "{web1} {hosts}"
    );
    let mut moved = replica_cgroups(&p, "w2");
    moved.extend(replica_cgroups(&p, "w3"));
    moved.sort();
    assert_eq!(moved, ["pinned-1", "web-1", "web-2", "web-3", "web-4"]);

    // up: Ready again, and nothing moves back
    assert_code(&rcompose(d, &["-p", &p, "node", "up", "w1"]), 0);
    let nodes: serde_json::Value = serde_json::from_str(&stdout(&rcompose(
        d,
        &["-p", &p, "nodes", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(nodes[0]["status"], "Ready");
    assert_eq!(nodes[0]["pods"], serde_json::json!([]));
    // drain w2: its replicas move gracefully, w2 takes nothing new
    assert_code(&rcompose(d, &["-p", &p, "node", "drain", "w2"]), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = placements(d, &p);
        if rows.len() == 5 && rows.iter().all(|r| r.2 && r.1 != "w2" && !r.1.is_empty()) {
            assert_eq!(on(&rows, "pinned-1"), "w3", "{rows:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "not drained in 10 s: {rows:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = rcompose(d, &["-p", &p, "node", "down", "w9"]);
    assert_code(&out, 1);
    assert!(
        crate::test::stderr(&out).contains("no node `w9`: the nodes are `w1`, `w2`, `w3`"),
        "{}",
        crate::test::stderr(&out)
    );
    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
}

/// The memory limit and the CPU quota of node `node`'s cgroup in project `p` (cgroup v1, or
/// v2's `memory.max` and the quota of `cpu.max`).
fn node_cgroups(p: &str, node: &str) -> (Option<String>, Option<String>) {
    let read = |path: String| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        (
            read(format!(
                "/sys/fs/cgroup/memory/rcompose/{p}/{node}/memory.limit_in_bytes"
            )),
            read(format!(
                "/sys/fs/cgroup/cpu/rcompose/{p}/{node}/cpu.cfs_quota_us"
            )),
        )
    } else {
        (
            read(format!("/sys/fs/cgroup/rcompose/{p}/{node}/memory.max")),
            read(format!("/sys/fs/cgroup/rcompose/{p}/{node}/cpu.max"))
                .and_then(|s| s.split_whitespace().next().map(str::to_string)),
        )
    }
}

/// The replica cgroups below node `node`'s cgroup in project `p`, sorted.
fn replica_cgroups(p: &str, node: &str) -> Vec<String> {
    let root = if Path::new("/sys/fs/cgroup/memory").is_dir() {
        format!("/sys/fs/cgroup/memory/rcompose/{p}/{node}")
    } else {
        format!("/sys/fs/cgroup/rcompose/{p}/{node}")
    };
    let mut out: Vec<String> = std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
