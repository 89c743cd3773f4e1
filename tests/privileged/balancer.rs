//! The built-in balancer: a service's virtual address and published port spread connections
//! over the ready replicas; replicas that go away cost no failed request.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, free_port, http_get as get, project,
    ps_rows, rcompose, require, stderr, stdout,
};

/// Three replicas of an HTTP server that answers with its hostname, behind `publish`. A
/// replica whose server is killed stays up (and, for a minute, ready: its probe runs every
/// 60 s once it passed), so the balancer keeps sending it connects, which are refused.
fn stack(publish: u16) -> String {
    format!(
        r#"
pods:
  web:
    replicas: 3
    restart: always
    backoff: {{ initial: 0s }}
    labels: {{ app: web }}
    containers:
      - name: web
        command: [ sh, -c, 'mkdir -p /tmp/h && hostname > /tmp/h/index.html && cd /tmp/h && python3 -m http.server 8000; exec sleep 1000' ]
        readiness: {{ tcp: {{ port: 8000 }}, period: 60s }}
  client:
    containers: [ {{ name: c, command: [ sleep, "1000" ] }} ]
services:
  web: {{ selector: {{ app: web }}, ports: [ {{ port: 80, target: 8000, publish: {publish} }} ] }}
"#
    )
}

fn services(dir: &Path, p: &str) -> serde_json::Value {
    let out = rcompose(dir, &["-p", p, "ps", "--services", "--format", "json"]);
    assert_code(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_published_port_spreads_over_the_replicas_and_losing_one_fails_no_request() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("lb-spread");
    let p = project("lb-spread");
    let port = free_port();
    dir.write("rcompose.yaml", &stack(port));
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    assert_code(&rcompose(d, &["-p", &p, "up", "-d", "--wait"]), 0);

    // 30 requests reach all three, round robin
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..30 {
        *seen.entry(get(port).unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            ("web-1".to_string(), 10),
            ("web-2".to_string(), 10),
            ("web-3".to_string(), 10)
        ]
    );
    // from a pod, by the service's name (its virtual address)
    let out = rcompose(
        d,
        &[
            "-p",
            &p,
            "exec",
            "client",
            "--",
            "python3",
            "-c",
            "import urllib.request\nprint(sorted({urllib.request.urlopen('http://web/', timeout=5).read().decode().strip() for _ in range(6)}))",
        ],
    );
    assert_code(&out, 0);
    assert_eq!(stdout(&out).trim(), "['web-1', 'web-2', 'web-3']");
    let s = services(d, &p);
    assert_eq!(s["web"]["endpoints"].as_array().unwrap().len(), 3, "{s}");
    assert_eq!(s["web"]["total"], 36, "{s}");
    assert_eq!(s["web"]["errors"], 0, "{s}");
    // the same counters in `stats --services`, with rates over its interval
    let out = rcompose(
        d,
        &[
            "-p",
            &p,
            "stats",
            "--services",
            "--no-stream",
            "--interval",
            "0.2",
            "--format",
            "json",
        ],
    );
    assert_code(&out, 0);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["service"], "web", "{rows}");
    assert_eq!(rows[0]["endpoints"], 3, "{rows}");
    assert_eq!(rows[0]["total"], 36, "{rows}");
    assert_eq!(rows[0]["connections_per_second"], 0.0, "{rows}");

    // a client loops on the published port while web-1's server is killed (its replica
    // stays up and, its probe being a minute away, ready: connects to it are refused and
    // retried) and web-3's container is killed (it restarts: out of the endpoints and
    // back). Requests in flight on a killed server are replayed on another replica: not
    // one fails.
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (stop, results) = (Arc::clone(&stop), Arc::clone(&results));
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t = t0.elapsed();
                let r = get(port)
                    .map_err(|e| format!("{e} (sent at {t:?}, failed at {:?})", t0.elapsed()));
                results.lock().unwrap().push(r);
            }
        })
    };
    let t0 = Instant::now();
    let mut steps = Vec::new();
    steps.push(("load", t0.elapsed()));
    std::thread::sleep(Duration::from_millis(300));
    steps.push(("kill web-1 python", t0.elapsed()));
    kill9(find(d, &p, 1, |argv| argv.starts_with(b"python3\0")));
    std::thread::sleep(Duration::from_millis(300));
    steps.push(("kill web-3 sh", t0.elapsed()));
    kill9(find(d, &p, 3, |argv| argv.starts_with(b"sh\0")));
    // until web-3 is ready (after `restarts` restarts)
    let web3_ready = |restarts: u32| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = ps_rows(d, &p);
            if rows.iter().any(|r| {
                r["pod"] == "web"
                    && r["replica"] == 3
                    && r["restarts"] == restarts
                    && r["ready"] == true
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "web-3 did not come back: {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    web3_ready(1);
    // web-3 scaled away and back (with its address, and its MAC) while the client loops
    std::thread::sleep(Duration::from_millis(300));
    steps.push(("scale web=2", t0.elapsed()));
    assert_code(&rcompose(d, &["-p", &p, "scale", "web=2"]), 0);
    std::thread::sleep(Duration::from_millis(300));
    steps.push(("scale web=3", t0.elapsed()));
    assert_code(&rcompose(d, &["-p", &p, "scale", "web=3"]), 0);
    web3_ready(0);
    steps.push(("web-3 ready", t0.elapsed()));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let results = results.lock().unwrap();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(results.len() > 50, "only {} requests", results.len());
    let events =
        std::fs::read_to_string(format!("/run/rcompose/{p}/events.jsonl")).unwrap_or_default();
    let ss = std::process::Command::new("ss")
        .args(["-tnai"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ss: String = ss
        .lines()
        .filter(|l| l.contains("10.90."))
        .map(|l| format!("{l}\n"))
        .collect();
    let rows = stdout(&rcompose(d, &["-p", &p, "ps", "--format", "json"]));
    let events = format!("{events}\nss:\n{ss}\nps: {rows}");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}; steps {steps:?}; events:\n{events}",
        failed.len(),
        results.len()
    );
    let s = services(d, &p);
    assert_eq!(s["web"]["errors"], 0, "{s}");
    assert!(s["web"]["retries"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["web"]["endpoints"].as_array().unwrap().len(), 3, "{s}");
    // web-3 scaled away: only web-2 answers (web-1 refuses, and is retried)
    assert_code(&rcompose(d, &["-p", &p, "scale", "web=2"]), 0);
    let s = services(d, &p);
    assert_eq!(s["web"]["endpoints"].as_array().unwrap().len(), 2, "{s}");
    for _ in 0..10 {
        assert_eq!(get(port).unwrap(), "web-2");
    }
    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
    assert!(get(port).is_err(), "the published port is still open");
}

#[test]
fn two_projects_share_service_names_but_not_a_published_port() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("lb-two");
    let (a, b) = (project("lb-two-a"), project("lb-two-b"));
    let port = free_port();
    dir.write("rcompose.yaml", &stack(port));
    dir.write("other.yaml", &stack(free_port()));
    let _guards = (Cleanup(a.clone()), Cleanup(b.clone()));
    let d = dir.path();
    assert_code(&rcompose(d, &["-p", &a, "up", "-d", "--wait"]), 0);
    // the same published port: refused, and nothing of the second project is left
    let out = rcompose(d, &["-p", &b, "up", "-d"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains(&format!("service `web` cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&b);
    // another port: both run, each pod reaching its own project's `web`
    assert_code(
        &rcompose(d, &["-f", "other.yaml", "-p", &b, "up", "-d", "--wait"]),
        0,
    );
    for p in [&a, &b] {
        let out = rcompose(
            d,
            &[
                "-p",
                p,
                "exec",
                "client",
                "--",
                "python3",
                "-c",
                "import urllib.request, socket\nprint(socket.gethostbyname('web'), urllib.request.urlopen('http://web/', timeout=5).read().decode().strip())",
            ],
        );
        assert_code(&out, 0);
        assert!(stdout(&out).contains("web-"), "{}", stdout(&out));
    }
    for p in [&a, &b] {
        assert_code(&rcompose(d, &["-p", p, "down", "-t", "1"]), 0);
        assert_no_trace(p);
    }
}

/// Every descendant of `pid`, from /proc.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// The process of web replica `replica` whose argv (NUL-separated) `pick` accepts.
fn find(dir: &Path, p: &str, replica: u32, pick: impl Fn(&[u8]) -> bool) -> i32 {
    let rows = ps_rows(dir, p);
    let init = rows
        .iter()
        .find(|r| r["pod"] == "web" && r["replica"] == replica)
        .and_then(|r| r["pid"].as_i64())
        .unwrap();
    // the container's init and what runs under it (with crun the command is the init)
    let init = i32::try_from(init).unwrap();
    std::iter::once(init)
        .chain(descendants(init))
        .find(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| pick(&c)))
        .unwrap_or_else(|| panic!("no such process under web-{replica}"))
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}
