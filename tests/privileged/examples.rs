//! Every example runs: its pods start, and teardown leaves nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::examples::example_manifests;
use crate::test::{Cleanup, Need, assert_code, assert_no_trace, project, rcompose, require};

#[test]
fn every_example_starts_and_is_removed() {
    require(&[Need::Root, Need::Busybox]);
    for m in example_manifests() {
        let name = m
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let p = project(&format!("ex-{name}"));
        let _guard = Cleanup(p.clone());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = rcompose(dir, &["-f", m.to_str().unwrap(), "-p", &p, "up", "-d"]);
        assert_code(&out, 0);
        // every container is running or has exited 0
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ps = rcompose(dir, &["-p", &p, "ps", "--format", "json"]);
            let rows: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
            let rows = rows.as_array().unwrap();
            let bad: Vec<&serde_json::Value> = rows
                .iter()
                .filter(|r| {
                    !(r["state"] == "running" || (r["state"] == "exited" && r["exit_code"] == 0))
                })
                .collect();
            if bad.is_empty() && !rows.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "example {name}: {bad:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_code(&rcompose(dir, &["-p", &p, "down"]), 0);
        assert_no_trace(&p);
    }
}
