//! The shop example (examples/shop): a database, an API with three replicas, a frontend and
//! a worker on three simulated nodes. A node that dies takes its replicas with it; they start
//! again on the other nodes while the published frontend keeps answering every request.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, free_port, placements, poll, project,
    rcompose, require, stdout,
};

/// The example's published port, which the test's copy replaces with a free one (tests run
/// in parallel, and `privileged::examples` runs the example itself on 8080).
const PUBLISHED: &str = "publish: 8080";

/// A copy of examples/shop in `dir`, its frontend published on `port`.
fn copy_example(dir: &TempDir, port: u16) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop");
    copy_tree(&src, dir.path());
    let manifest = fs::read_to_string(src.join("rcompose.yaml")).unwrap();
    assert_eq!(
        manifest.matches(PUBLISHED).count(),
        1,
        "examples/shop/rcompose.yaml should publish the frontend with `{PUBLISHED}`"
    );
    dir.write(
        "rcompose.yaml",
        &manifest.replace(PUBLISHED, &format!("publish: {port}")),
    );
}

/// Copies the files and directories below `src` into `dst`.
fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// GET `path` (HTTP/1.0) on 127.0.0.1:`port`, 15 s at most: the JSON body of a 200, or why not.
fn get_json(port: u16, path: &str) -> Result<serde_json::Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let Some((head, body)) = out.split_once("\r\n\r\n") else {
        return Err(format!("no HTTP answer: {out:?}"));
    };
    if !head.starts_with("HTTP/1.0 200") {
        return Err(format!("answer {out:?}"));
    }
    serde_json::from_str(body).map_err(|e| format!("{e}: {out:?}"))
}

/// A client looping `GET /api/orders` on the published port until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Result<serde_json::Value, String>>>>,
    thread: JoinHandle<()>,
}

impl Load {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, results) = (Arc::clone(&stop), Arc::clone(&results));
            std::thread::spawn(move || {
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let t = t0.elapsed();
                    let r = get_json(port, "/api/orders")
                        .map_err(|e| format!("{e} (sent at {t:?}, failed at {:?})", t0.elapsed()));
                    results.lock().unwrap().push(r);
                }
            })
        };
        Load {
            stop,
            results,
            thread,
        }
    }

    /// Stops the client: its answers and its errors.
    fn finish(self) -> (Vec<serde_json::Value>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let mut answers = Vec::new();
        let mut errors = Vec::new();
        for r in self.results.lock().unwrap().drain(..) {
            match r {
                Ok(a) => answers.push(a),
                Err(e) => errors.push(e),
            }
        }
        (answers, errors)
    }
}

/// `pod-N` -> (node, running and ready) of every replica.
fn placed(dir: &Path, p: &str) -> BTreeMap<String, (String, bool)> {
    placements(dir, p)
        .into_iter()
        .map(|(replica, node, ready)| (replica, (node, ready)))
        .collect()
}

const REPLICAS: [&str; 7] = [
    "api-1",
    "api-2",
    "api-3",
    "db-1",
    "frontend-1",
    "frontend-2",
    "worker-1",
];

#[test]
fn the_shop_keeps_answering_while_a_node_dies_and_its_pods_move() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("shop");
    let p = project("shop");
    let port = free_port();
    copy_example(&dir, port);
    let _guard = Cleanup(p.clone());
    let d = dir.path();
    assert_code(&rcompose(d, &["-p", &p, "up", "-d", "--wait"]), 0);

    // every replica ready, the api spread over the three nodes
    let before = placed(d, &p);
    assert_eq!(
        before.keys().map(String::as_str).collect::<Vec<_>>(),
        REPLICAS,
        "{before:#?}"
    );
    assert!(before.values().all(|(_, ready)| *ready), "{before:#?}");
    let mut api_nodes: Vec<&str> = ["api-1", "api-2", "api-3"]
        .iter()
        .map(|r| before[*r].0.as_str())
        .collect();
    api_nodes.sort_unstable();
    assert_eq!(
        api_nodes,
        ["worker-1", "worker-2", "worker-3"],
        "{before:#?}"
    );

    // the frontend answers with an api replica's JSON: who, where, and the db's round trip
    let first = get_json(port, "/api/orders").unwrap();
    let replica = first["replica"].as_str().unwrap_or_default();
    assert!(replica.starts_with("api-"), "{first}");
    assert_eq!(
        first["node"].as_str(),
        Some(before[replica].0.as_str()),
        "{first}"
    );
    assert!(
        first["frontend"]
            .as_str()
            .unwrap_or_default()
            .starts_with("frontend-"),
        "{first}"
    );
    assert!(first["db_ms"].as_f64().is_some(), "{first}");
    assert!(first["orders"].as_u64().is_some(), "{first}");

    // the worker places orders
    poll(
        "the worker placed no order",
        || {
            get_json(port, "/api/orders").unwrap()["orders"]
                .as_u64()
                .unwrap_or(0)
        },
        |n| *n >= 2,
    );

    // the node of the database goes down: it has an api replica and more (the scheduler
    // packs the db, the worker and a frontend with it), so every kind of pod moves
    let victim = before["db-1"].0.clone();
    let moving: Vec<&str> = before
        .iter()
        .filter(|(_, (node, _))| *node == victim)
        .map(|(r, _)| r.as_str())
        .collect();
    assert!(moving.iter().any(|r| r.starts_with("api-")), "{before:#?}");

    let load = Load::start(port);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    assert_code(&rcompose(d, &["-p", &p, "node", "down", &victim]), 0);
    // every replica ready again, none on the dead node, within 5 s
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let rows = placed(d, &p);
        if rows.len() == REPLICAS.len()
            && rows
                .values()
                .all(|(node, ready)| *ready && !node.is_empty() && *node != victim)
        {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{moving:?} not ready on other nodes 5 s after `node down {victim}`: {rows:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let ready_in = t0.elapsed();
    for (r, (node, _)) in &before {
        if *node != victim {
            assert_eq!(after[r].0, *node, "{r} moved, but its node did not go down");
        }
    }
    // the moved api replicas answer from their new nodes
    let moved_api: BTreeMap<String, String> = moving
        .iter()
        .filter(|r| r.starts_with("api-"))
        .map(|r| ((*r).to_string(), after[*r].0.clone()))
        .collect();
    poll(
        "the moved api replicas do not answer from their new nodes",
        || {
            let mut seen = BTreeMap::new();
            for _ in 0..6 {
                let a = get_json(port, "/api/orders").unwrap();
                let replica = a["replica"].as_str().unwrap().to_string();
                if moved_api.contains_key(&replica) {
                    seen.insert(replica, a["node"].as_str().unwrap_or("").to_string());
                }
            }
            seen
        },
        |seen| *seen == moved_api,
    );
    std::thread::sleep(Duration::from_millis(500));
    let (answers, errors) = load.finish();
    eprintln!(
        "node down {victim} ({moving:?}): every replica ready elsewhere in {ready_in:?}; {} answers, {} errors",
        answers.len(),
        errors.len()
    );
    assert!(
        answers.len() > 20,
        "too few answers: {answers:?} {errors:#?}"
    );
    assert!(
        errors.is_empty(),
        "requests failed while `{victim}` went down: {errors:#?}"
    );
    assert!(
        answers
            .iter()
            .all(|a| a["replica"].as_str().is_some() && a["db_ms"].as_f64().is_some()),
        "{answers:#?}"
    );

    let nodes: serde_json::Value = serde_json::from_str(&stdout(&rcompose(
        d,
        &["-p", &p, "nodes", "--format", "json"],
    )))
    .unwrap();
    let row = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == victim.as_str())
        .unwrap();
    assert_eq!(row["status"], "NotReady", "{nodes}");
    assert_eq!(row["pods"], serde_json::json!([]), "{nodes}");
    // back up: Ready, and nothing moves back
    assert_code(&rcompose(d, &["-p", &p, "node", "up", &victim]), 0);
    assert_eq!(placed(d, &p), after);

    assert_code(&rcompose(d, &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
}
