//! `config`, `graph`, `schema` and `ps` output.

use std::path::Path;

use crate::test::{TempDir, assert_code, project, rcompose, stdout, unindent};

const STACK: &str = "
name: shop
pods:
  db:
    containers:
      - name: db
        command: [sleep, '1']
  migrate:
    depends_on: { db: { condition: started } }
    containers:
      - name: m
        command: /bin/true
  api:
    replicas: 2
    depends_on:
      migrate: { condition: completed }
      db: { condition: started }
    containers:
      - name: server
        command: [sleep, '1']
        env: [ 'A=1' ]
        resources: { cpu: '0.5', memory: 1G }
  worker:
    depends_on: [db]
    containers:
      - name: w
        command: [sleep, '1']
";

#[test]
fn graph_prints_start_waves() {
    let dir = TempDir::new("cli-graph");
    dir.write("rcompose.yaml", STACK);
    let out = rcompose(dir.path(), &["graph"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "1. db\n2. migrate, worker\n3. api\n");
}

#[test]
fn graph_formats_dot_and_mermaid() {
    let dir = TempDir::new("cli-graph-fmt");
    dir.write("rcompose.yaml", STACK);
    let out = rcompose(dir.path(), &["graph", "--format", "mermaid"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        unindent(
            r#"
            flowchart BT
              api["api x2"]
              db["db x1"]
              migrate["migrate x1"]
              worker["worker x1"]
              api --> db
              api -.->|completed| migrate
              migrate --> db
              worker --> db
            "#
        )
    );
    let out = rcompose(dir.path(), &["graph", "--format", "dot"]);
    assert_code(&out, 0);
    assert!(stdout(&out).starts_with("digraph rcompose {\n"));
    assert!(stdout(&out).contains("\"api\" -> \"migrate\" [label=\"completed\", style=dashed];\n"));
}

#[test]
fn config_prints_the_normalized_manifest() {
    let dir = TempDir::new("cli-config");
    dir.write("rcompose.yaml", STACK);
    let out = rcompose(dir.path(), &["config", "--format", "json"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "shop");
    let api = &v["pods"]["api"];
    assert_eq!(api["replicas"], 2);
    assert_eq!(api["restart"], "never");
    assert_eq!(api["containers"][0]["env"]["A"], "1");
    assert_eq!(
        v["pods"]["worker"]["depends_on"]["db"]["condition"],
        "started"
    );
    let yaml = rcompose(dir.path(), &["config"]);
    assert_code(&yaml, 0);
    assert!(
        stdout(&yaml).starts_with("name: shop\n"),
        "{}",
        stdout(&yaml)
    );
}

#[test]
fn schema_command_matches_the_committed_schema() {
    let dir = TempDir::new("cli-schema");
    let out = rcompose(dir.path(), &["schema"]);
    assert_code(&out, 0);
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/rcompose.schema.json"),
    )
    .unwrap();
    assert_eq!(
        stdout(&out),
        committed,
        "schema is stale: run `just schema`"
    );
}

#[test]
fn ps_of_a_project_that_is_not_up_is_an_empty_list() {
    let dir = TempDir::new("cli-ps");
    let p = project("cli-ps");
    let out = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "[]\n");
    let out = rcompose(dir.path(), &["-p", &p, "ps"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "POD  REPLICA  CONTAINER  STATE  READY  PID  REVISION  RESTARTS  EXIT  REASON\n"
    );
}

#[test]
fn stats_and_top_of_a_project_that_is_not_up_are_empty_lists_like_ps() {
    let dir = TempDir::new("cli-stats");
    let p = project("cli-stats");
    for args in [
        vec!["-p", &p, "stats", "--no-stream", "--format", "json"],
        vec!["-p", &p, "stats", "--format", "json"],
        vec!["-p", &p, "top", "--format", "json"],
    ] {
        let out = rcompose(dir.path(), &args);
        assert_code(&out, 0);
        assert_eq!(stdout(&out), "[]\n", "{args:?}");
    }
    let out = rcompose(dir.path(), &["-p", &p, "stats", "--no-stream"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "POD  REPLICA  CONTAINER  STATE  CPU %  MEM USAGE / LIMIT  MEM %  PIDS\n"
    );
    let out = rcompose(dir.path(), &["-p", &p, "top"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "POD  REPLICA  CONTAINER  PID  PPID  USER  COMMAND\n"
    );
}

#[test]
fn stats_interval_out_of_range_is_a_usage_error() {
    let dir = TempDir::new("cli-stats-interval");
    for bad in ["0", "-1", "x", "5000"] {
        let arg = format!("--interval={bad}");
        let out = rcompose(dir.path(), &["-p", "x", "stats", &arg]);
        assert_code(&out, 2);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--interval <SECONDS>"),
            "{bad}"
        );
    }
}
