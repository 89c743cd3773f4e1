//! Network faults (issue 9): latency measured from inside a pod, a partition from the
//! manifest, loss and a bandwidth limit, each removed by `fault rm`/`clear`, and nothing
//! left at teardown.

use std::path::Path;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, rcompose, require, stderr,
    stdout,
};

/// Python run inside a pod: `n` GETs of `url`, each on a new connection, and prints the
/// milliseconds of each (`-` for a failure), one line.
const TIMED_GETS: &str = r#"
import sys, time, urllib.request as u
url, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out = []
for _ in range(n):
    t = time.monotonic()
    try:
        u.urlopen(url, timeout=timeout).read()
        out.append("%.1f" % ((time.monotonic() - t) * 1000))
    except Exception:
        out.append("-")
print(" ".join(out))
"#;

/// A pod running a web server on 8080 (the host image's python3), with `labels`.
fn web_pod(name: &str) -> String {
    format!(
        "  {name}:\n    labels: {{ app: {name} }}\n    containers:\n      - name: web\n        command: [python3, -m, http.server, \"8080\", --directory, /tmp]\n        readiness: {{ tcp: {{ port: 8080 }} }}\n"
    )
}

/// The times (ms) of `n` GETs of `url` from pod `from` (`None` for a failed one).
fn timed_gets(d: &Path, p: &str, from: &str, url: &str, n: u32, timeout: f64) -> Vec<Option<f64>> {
    let o = rcompose(
        d,
        &[
            "-p",
            p,
            "exec",
            from,
            "--",
            "python3",
            "-c",
            TIMED_GETS,
            url,
            &n.to_string(),
            &timeout.to_string(),
        ],
    );
    assert_code(&o, 0);
    stdout(&o)
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect()
}

/// A project made of `manifest` and brought up (`up -d --wait`); `down` on drop.
struct Stack {
    // dropped first: `down` before the directory goes
    _guard: Cleanup,
    p: String,
    dir: TempDir,
}

fn up(name: &str, manifest: &str) -> Stack {
    let dir = TempDir::new(name);
    let p = project(name);
    dir.write("rcompose.yaml", manifest);
    let stack = Stack {
        _guard: Cleanup(p.clone()),
        p,
        dir,
    };
    assert_code(
        &rcompose(stack.dir.path(), &["-p", &stack.p, "up", "-d", "--wait"]),
        0,
    );
    stack
}

fn median(times: &[Option<f64>]) -> f64 {
    let mut ok: Vec<f64> = times.iter().map(|t| t.expect("a request failed")).collect();
    ok.sort_by(f64::total_cmp);
    ok[ok.len() / 2]
}

#[test]
fn latency_is_measurable_from_inside_a_pod_and_goes_with_fault_rm() {
    require(&[
        Need::Root,
        Need::Tool("python3"),
        Need::Tool("iptables-restore"),
    ]);
    let stack = up(
        "fault-latency",
        &format!(
            "pods:\n{}{}services:\n  server: {{ selector: {{ app: server }}, ports: [ {{ port: 80, target: 8080 }} ] }}\n",
            web_pod("client"),
            web_pod("server")
        ),
    );
    let (d, p) = (stack.dir.path(), stack.p.clone());
    let direct = "http://server-1:8080/";
    let service = "http://server/";
    let before = median(&timed_gets(d, &p, "client", direct, 5, 5.0));
    assert!(before < 100.0, "without a fault a GET took {before} ms");

    let o = rcompose(
        d,
        &[
            "-p",
            &p,
            "fault",
            "add",
            "slow",
            "--target",
            "pod/server",
            "--latency",
            "150ms",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o).trim(),
        "fault `slow` added: latency 150ms on pod/server (reaches server-1)"
    );
    // a GET on a new connection waits for the SYN-ACK and the answer: twice the latency
    for url in [direct, service] {
        let times = timed_gets(d, &p, "client", url, 5, 5.0);
        for t in &times {
            let t = t.expect("a request failed");
            assert!((295.0..2000.0).contains(&t), "{url}: {times:?}");
        }
    }
    // the client's own packets are not delayed: the server reaches it at once
    let back = median(&timed_gets(
        d,
        &p,
        "server",
        "http://client-1:8080/",
        3,
        5.0,
    ));
    assert!(back < 400.0, "server -> client took {back} ms");
    let ls = rcompose(d, &["-p", &p, "fault", "ls", "--format", "json"]);
    assert_code(&ls, 0);
    let list: serde_json::Value = serde_json::from_str(&stdout(&ls)).unwrap();
    assert_eq!(list[0]["name"], "slow");
    assert_eq!(list[0]["latency"], "150ms");
    assert_eq!(list[0]["source"], "command");
    assert_eq!(list[0]["replicas"], serde_json::json!(["server-1"]));

    assert_code(&rcompose(d, &["-p", &p, "fault", "rm", "slow"]), 0);
    // both are in the project's events
    let events = std::fs::read_to_string(format!("/run/rcompose/{p}/events.jsonl")).unwrap();
    assert!(
        events.contains(
            r#""event":"fault","name":"slow","reason":"added: latency 150ms on pod/server""#
        ) && events.contains(r#""event":"fault","name":"slow","reason":"removed""#),
        "{events}"
    );
    let after = median(&timed_gets(d, &p, "client", direct, 5, 5.0));
    assert!(after < 100.0, "after `fault rm` a GET took {after} ms");

    // what it names must exist; a fault must do something
    let o = rcompose(
        d,
        &[
            "-p",
            &p,
            "fault",
            "add",
            "--target",
            "pod/sever",
            "--latency",
            "1ms",
        ],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("`pod/sever` names an unknown pod; did you mean `server`?"),
        "{}",
        stderr(&o)
    );
    let o = rcompose(d, &["-p", &p, "fault", "add", "--target", "pod/server"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("--target: the fault does nothing"),
        "{}",
        stderr(&o)
    );

    assert_code(&rcompose(d, &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn a_manifest_partition_cuts_two_pods_apart_until_fault_clear() {
    require(&[
        Need::Root,
        Need::Tool("python3"),
        Need::Tool("iptables-restore"),
    ]);
    let stack = up(
        "fault-partition",
        &format!(
            "pods:\n{}{}{}faults:\n  split: {{ target: pod/a, peer: pod/b, partition: true }}\n",
            web_pod("a"),
            web_pod("b"),
            web_pod("c")
        ),
    );
    let (d, p) = (stack.dir.path(), stack.p.clone());
    let ok = |t: &[Option<f64>]| t.iter().all(Option::is_some);
    let failed = |t: &[Option<f64>]| t.iter().all(Option::is_none);
    let a_to_b = timed_gets(d, &p, "a", "http://b-1:8080/", 2, 1.0);
    assert!(failed(&a_to_b), "a reached b: {a_to_b:?}");
    let b_to_a = timed_gets(d, &p, "b", "http://a-1:8080/", 2, 1.0);
    assert!(failed(&b_to_a), "b reached a: {b_to_a:?}");
    let a_to_c = timed_gets(d, &p, "a", "http://c-1:8080/", 2, 5.0);
    assert!(ok(&a_to_c), "a did not reach c: {a_to_c:?}");
    let ls = stdout(&rcompose(d, &["-p", &p, "fault", "ls"]));
    assert!(
        ls.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "split",
                    "pod/a",
                    "pod/b",
                    "partition",
                    "manifest",
                    "a-1,b-1"
                ]),
        "{ls}"
    );

    let o = rcompose(d, &["-p", &p, "fault", "clear"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "fault `split` removed");
    let healed = timed_gets(d, &p, "a", "http://b-1:8080/", 2, 5.0);
    assert!(ok(&healed), "a still cannot reach b: {healed:?}");

    assert_code(&rcompose(d, &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn loss_drops_a_share_of_packets_and_bandwidth_caps_the_rate() {
    require(&[
        Need::Root,
        Need::Tool("python3"),
        Need::Tool("iptables-restore"),
        Need::Tool("tc"),
    ]);
    // `sink` counts the UDP datagrams it gets into /tmp/n
    let sink = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 9999))\nn = 0\nwhile True:\n    s.recv(64)\n    n += 1\n    open('/tmp/n', 'w').write(str(n))\n";
    // (a YAML double-quoted scalar takes Rust's escapes of this ASCII text)
    let stack = up(
        "fault-loss",
        &format!(
            "pods:\n{}  sink:\n    containers:\n      - name: sink\n        command: [python3, -c, {sink:?}]\n",
            web_pod("web"),
        ),
    );
    let (d, p) = (stack.dir.path(), stack.p.clone());
    let add = |args: &[&str]| {
        let mut all = vec!["-p", p.as_str(), "fault", "add"];
        all.extend_from_slice(args);
        assert_code(&rcompose(d, &all), 0);
    };
    add(&[
        "half", "--target", "pod/web", "--peer", "pod/sink", "--loss", "50%",
    ]);
    let send = "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(1000):\n    s.sendto(b'x', ('sink-1', 9999))\n    time.sleep(0.0005)\ntime.sleep(0.5)\n";
    assert_code(
        &rcompose(d, &["-p", &p, "exec", "web", "--", "python3", "-c", send]),
        0,
    );
    let got = stdout(&rcompose(
        d,
        &["-p", &p, "exec", "sink", "--", "cat", "/tmp/n"],
    ));
    let got: u32 = got.trim().parse().unwrap_or(0);
    // 1000 tries at 50%: outside 380..620 happens with a chance below 1e-13
    assert!(
        (380..=620).contains(&got),
        "{got} of 1000 datagrams arrived"
    );
    assert_code(&rcompose(d, &["-p", &p, "fault", "rm", "half"]), 0);

    // 400 KB at 2 mbit/s take about 1.6 s; without the limit, a few milliseconds
    assert_code(
        &rcompose(
            d,
            &[
                "-p",
                &p,
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "head -c 400000 /dev/zero > /tmp/big",
            ],
        ),
        0,
    );
    add(&["slow-link", "--target", "pod/web", "--bandwidth", "2mbit"]);
    let rate = "import time, urllib.request as u\nt = time.monotonic()\nn = len(u.urlopen('http://web-1:8080/big', timeout=30).read())\nprint(n * 8 / (time.monotonic() - t) / 1e6)\n";
    let mbit = |d: &Path| -> f64 {
        let o = rcompose(d, &["-p", &p, "exec", "sink", "--", "python3", "-c", rate]);
        assert_code(&o, 0);
        stdout(&o).trim().parse().unwrap()
    };
    let limited = mbit(d);
    assert!(
        (1.0..=2.4).contains(&limited),
        "{limited} mbit/s under a 2mbit limit"
    );
    assert_code(&rcompose(d, &["-p", &p, "fault", "rm", "slow-link"]), 0);
    let free = mbit(d);
    assert!(free > 20.0, "{free} mbit/s without a limit");

    assert_code(&rcompose(d, &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn a_fault_a_replica_cannot_take_is_refused_and_not_added() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("fault-refused");
    let p = project("fault-refused");
    dir.write("rcompose.yaml", &format!("pods:\n{}", web_pod("web")));
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    // the supervisor inherits this PATH: no /usr/sbin, so no iptables-restore
    let up = std::process::Command::new(crate::test::bin())
        .args(["-p", &p, "up", "-d", "--wait"])
        .current_dir(d)
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_code(&up, 0);
    let o = rcompose(
        d,
        &[
            "-p",
            &p,
            "fault",
            "add",
            "slow",
            "--target",
            "pod/web",
            "--latency",
            "10ms",
        ],
    );
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains(
            "fault `slow` could not be applied, so it was not added: web-1: failed to run `iptables-restore -w`"
        ),
        "{}",
        stderr(&o)
    );
    let ls = rcompose(d, &["-p", &p, "fault", "ls", "--format", "json"]);
    assert_eq!(stdout(&ls).trim(), "[]");
    assert_code(&rcompose(d, &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn a_node_partition_cuts_traffic_through_a_service_too() {
    require(&[
        Need::Root,
        Need::Tool("python3"),
        Need::Tool("iptables-restore"),
    ]);
    let pod = |name: &str, zone: &str| {
        web_pod(name).replacen(
            "    containers:",
            &format!("    node_selector: {{ zone: {zone} }}\n    containers:"),
            1,
        )
    };
    let stack = up(
        "fault-nodes",
        &format!(
            "nodes:\n  n1: {{ cpu: 1, memory: 1Gi, labels: {{ zone: a }} }}\n  n2: {{ cpu: 1, memory: 1Gi, labels: {{ zone: b }} }}\npods:\n{}{}{}services:\n  server: {{ selector: {{ app: server }}, ports: [ {{ port: 80, target: 8080 }} ] }}\n",
            pod("client", "a"),
            pod("server", "b"),
            pod("near", "b"),
        ),
    );
    let (d, p) = (stack.dir.path(), stack.p.clone());
    let before = timed_gets(d, &p, "client", "http://server/", 2, 5.0);
    assert!(before.iter().all(Option::is_some), "{before:?}");
    assert_code(
        &rcompose(
            d,
            &[
                "-p",
                &p,
                "fault",
                "add",
                "split",
                "--target",
                "node/n1",
                "--peer",
                "node/n2",
                "--partition",
            ],
        ),
        0,
    );
    // through the service's address too (the balancer on the host relays it), not only
    // to the replica's own address; a pod on the same side still gets through
    for url in ["http://server/", "http://server-1:8080/"] {
        let cut = timed_gets(d, &p, "client", url, 1, 8.0);
        assert!(cut.iter().all(Option::is_none), "{url}: {cut:?}");
    }
    let same_side = timed_gets(d, &p, "near", "http://server/", 2, 5.0);
    assert!(same_side.iter().all(Option::is_some), "{same_side:?}");
    assert_code(&rcompose(d, &["-p", &p, "fault", "rm", "split"]), 0);
    let healed = timed_gets(d, &p, "client", "http://server/", 2, 5.0);
    assert!(healed.iter().all(Option::is_some), "{healed:?}");
    assert_code(&rcompose(d, &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}
