//! Behaviour of `load`, `parse` and the rendered errors.

use std::path::Path;

use crate::manifest::{Condition, ImageBase, Restart, ValidManifest, load, parse, schema_json};

const ORIGIN: &str = "rcompose.yaml";

fn ok(yaml: &str) -> ValidManifest {
    match load(yaml, Path::new(ORIGIN)) {
        Ok(m) => m,
        Err(e) => panic!("expected a valid manifest, got:\n{}", e.render()),
    }
}

#[track_caller]
fn err(yaml: &str) -> String {
    match load(yaml, Path::new(ORIGIN)) {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => e.render(),
    }
}

#[test]
fn scratch() {
    println!(
        "{}",
        err(
            "pods:\n  web:\n    replcas: 3\n    depends_on: [dbb]\n    containers:\n      - name: app\n        image: nope\n        command: echo\n"
        )
    );
}
