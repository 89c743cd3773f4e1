//! Every example manifest validates (and, in `privileged::examples`, runs).

use std::fs;
use std::path::{Path, PathBuf};

use crate::test::{assert_code, rcompose, stdout};

/// Every `examples/*/rcompose.yaml`.
pub fn example_manifests() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("rcompose.yaml"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
}

#[test]
fn every_example_validates() {
    let manifests = example_manifests();
    assert!(manifests.len() >= 2, "{manifests:?}");
    for m in manifests {
        let out = rcompose(
            Path::new(env!("CARGO_MANIFEST_DIR")),
            &["-f", m.to_str().unwrap(), "config", "-q"],
        );
        assert_code(&out, 0);
        assert_eq!(stdout(&out), "");
    }
}
