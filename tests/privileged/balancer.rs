//! The built-in balancer: a service's virtual address and published port spread connections
//! over the ready replicas; replicas that go away cost no failed request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, rcompose, require, stderr,
    stdout,
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

/// A free port on 127.0.0.1 (for a moment).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / through `port`: the body, or the error.
fn get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .ok_or_else(|| format!("no HTTP answer: {out:?}"))?;
    if out.starts_with("HTTP/1.0 200") {
        Ok(body)
    } else {
        Err(format!("answer {out:?}"))
    }
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

    // web-1's server dies; its replica still counts as ready (its probe is a minute away),
    // so connects to it are refused: each is retried on another replica, no request fails
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&rcompose(d, &["-p", &p, "ps", "--format", "json"]).stdout).unwrap();
    let init = rows
        .iter()
        .find(|r| r["pod"] == "web" && r["replica"] == 1)
        .and_then(|r| r["pid"].as_i64())
        .unwrap();
    let server = descendants(i32::try_from(init).unwrap())
        .into_iter()
        // python itself, not the shell whose command line names it
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"python3\0") && c.windows(11).any(|w| w == b"http.server"))
        })
        .expect("no http.server under web-1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(get(port).unwrap());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["web-2".to_string(), "web-3".to_string()]
    );
    let s = services(d, &p);
    assert_eq!(s["web"]["errors"], 0, "{s}");
    assert!(s["web"]["retries"].as_u64().unwrap() >= 10, "{s}");
    // a replica scaled away is an endpoint no more: only web-2 answers (web-1 refuses)
    assert_code(&rcompose(d, &["-p", &p, "scale", "web=2"]), 0);
    for _ in 0..10 {
        assert_eq!(get(port).unwrap(), "web-2");
    }
    let s = services(d, &p);
    assert_eq!(s["web"]["endpoints"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["web"]["errors"], 0, "{s}");
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
