//! Invalid manifests and bad usage: exact messages and documented exit codes.

use std::fs;
use std::path::Path;

use crate::test::{TempDir, assert_code, rcompose, stderr, stdout, unindent};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_invalid_fixture_fails_with_its_exact_message_and_exit_code_3() {
    let dir = repo().join("tests/fixtures/manifests/invalid");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let rel = path
            .strip_prefix(repo())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let expected = fs::read_to_string(path.with_extension("stderr")).unwrap();
        for command in ["config", "up", "graph"] {
            let out = rcompose(repo(), &["-f", &rel, command]);
            assert_code(&out, 3);
            assert_eq!(stderr(&out), expected, "{rel} ({command})");
            assert_eq!(stdout(&out), "");
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} fixtures found in {}",
        dir.display()
    );
}

#[test]
fn every_valid_fixture_is_accepted() {
    let dir = repo().join("tests/fixtures/manifests/valid");
    for entry in fs::read_dir(&dir).unwrap().flatten() {
        let rel = entry
            .path()
            .strip_prefix(repo())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let out = rcompose(repo(), &["-f", &rel, "config", "-q"]);
        assert_code(&out, 0);
        assert_eq!(stdout(&out), "", "{rel}");
    }
}

#[test]
fn unknown_key_gets_a_suggestion_with_its_location() {
    let dir = TempDir::new("cli-typo");
    dir.write(
        "rcompose.yaml",
        "pods:\n  web:\n    replcas: 3\n    containers:\n      - name: app\n        command: [true]\n",
    );
    let out = rcompose(dir.path(), &["config"]);
    assert_code(&out, 3);
    assert_eq!(
        stderr(&out),
        unindent(
            "
            error: unknown field `replcas` in pod `web`; did you mean `replicas`?
              --> rcompose.yaml:3:5
               |
             3 |     replcas: 3
               |     ^^^^^^^
            hint: fix the problems above; docs/manifest.md describes every key and `rcompose schema` prints the JSON Schema
            "
        )
    );
}

#[test]
fn missing_manifest_names_the_directory() {
    let dir = TempDir::new("cli-nofile");
    let out = rcompose(dir.path(), &["up"]);
    assert_code(&out, 3);
    assert_eq!(
        stderr(&out),
        format!(
            "error: no rcompose.yaml, compose.yaml, compose.yml, docker-compose.yml or docker-compose.yaml in `{}`; use `-f FILE` to name a manifest or `-p NAME` to name a project\n",
            dir.path().display()
        )
    );
}

#[test]
fn unreadable_manifest_is_reported_with_its_cause() {
    let dir = TempDir::new("cli-missing");
    let out = rcompose(dir.path(), &["-f", "nope.yaml", "config"]);
    assert_code(&out, 3);
    assert_eq!(
        stderr(&out),
        "error: failed to read `nope.yaml`\ncaused by: No such file or directory (os error 2)\n\
         hint: check the path, or name the manifest with `-f FILE` (or RCOMPOSE_FILE)\n"
    );
}

#[test]
fn bad_usage_is_exit_code_2() {
    let dir = TempDir::new("cli-usage");
    let out = rcompose(dir.path(), &["upp"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).starts_with("error: unrecognized subcommand 'upp'"),
        "{}",
        stderr(&out)
    );
    let out = rcompose(dir.path(), &["ps", "--format", "xml"]);
    assert_code(&out, 2);
}

#[test]
fn invalid_project_name_is_refused() {
    let dir = TempDir::new("cli-pname");
    let out = rcompose(dir.path(), &["-p", "Bad Name", "ps"]);
    assert_code(&out, 2);
    assert_eq!(
        stderr(&out),
        "error: invalid project name `Bad Name`: use lowercase letters, digits, `-` and `_`, starting with a letter or digit\n"
    );
}

#[test]
fn help_and_version_succeed() {
    let dir = TempDir::new("cli-help");
    let out = rcompose(dir.path(), &["--help"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("Create and start the stack"));
    let out = rcompose(dir.path(), &["--version"]);
    assert_code(&out, 0);
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    let date = git(&["log", "-1", "--format=%cs", "HEAD"]);
    assert_eq!(
        stdout(&out),
        format!("rcompose {} ({commit} {date})\n", env!("CARGO_PKG_VERSION"))
    );
    let out = rcompose(dir.path(), &["version", "--short"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), format!("{}\n", env!("CARGO_PKG_VERSION")));
    let out = rcompose(dir.path(), &["version", "--format", "json"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["commit"], commit.as_str());
    assert_eq!(v["commit_date"], date.as_str());
    assert_eq!(v["target"], "x86_64-unknown-linux-gnu");
}

/// A git command's trimmed output in the repository (the tests run from a git checkout:
/// CI clones the repository).
fn git(args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("git must be installed: the version test compares with the checkout's commit");
    assert!(out.status.success(), "git {args:?} failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
