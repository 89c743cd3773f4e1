//! The reference docs are checked against what they describe: every key of the manifest's
//! JSON Schema (generated from the model types) is named in docs/manifest.md, and every
//! command of `rcompose --help` in docs/cli.md.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::test::{TempDir, assert_code, rcompose, stdout};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The words inside the `code spans` of a markdown text.
fn code_words(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| {
            span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn property_names(node: &serde_json::Value, names: &mut BTreeSet<String>) {
    match node {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                names.extend(props.keys().cloned());
            }
            for v in map.values() {
                property_names(v, names);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                property_names(v, names);
            }
        }
        _ => {}
    }
}

#[test]
fn manifest_reference_names_every_key_of_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(repo().join("schemas/rcompose.schema.json")).unwrap(),
    )
    .unwrap();
    let mut keys = BTreeSet::new();
    property_names(&schema, &mut keys);
    assert!(
        keys.len() > 50,
        "only {} keys found in the schema",
        keys.len()
    );
    let documented = code_words(&fs::read_to_string(repo().join("docs/manifest.md")).unwrap());
    let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "docs/manifest.md does not name these manifest keys: {missing:?}"
    );
}

#[test]
fn cli_reference_names_every_command() {
    let dir = TempDir::new("docs-cli");
    let out = rcompose(dir.path(), &["--help"]);
    assert_code(&out, 0);
    let help = stdout(&out);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        // a command's line is indented by two spaces, its description's wrapped lines more
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() > 20, "{commands:?}");
    let doc = fs::read_to_string(repo().join("docs/cli.md")).unwrap();
    let missing: Vec<&&str> = commands
        .iter()
        .filter(|c| !doc.contains(&format!("| `{c}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/cli.md has no row for these commands: {missing:?}"
    );
}
