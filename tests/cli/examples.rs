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

#[test]
fn every_example_and_valid_fixture_validates_against_the_json_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(root.join("schemas/rcompose.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema itself is valid");
    // the schema does reject things: an unknown key and a wrong type
    let bad = serde_json::json!({"pods": {"a": {"replcas": 1, "containers": "x"}}});
    assert!(validator.iter_errors(&bad).count() >= 2);
    let mut files = example_manifests();
    for e in fs::read_dir(root.join("tests/fixtures/manifests/valid"))
        .unwrap()
        .flatten()
    {
        files.push(e.path());
    }
    for f in files {
        let doc: serde_json::Value =
            serde_saphyr::from_str(&fs::read_to_string(&f).unwrap()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{} does not match the schema: {errors:#?}",
            f.display()
        );
    }
}
