//! The pod dependency graph: start waves and text, DOT and Mermaid renderings.
//!
//! Validation already rejected cycles and unknown pods, so every function here may assume a
//! DAG over known pods; they still terminate if handed a cycle (the pods on it are left out of
//! the waves).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::plan::desired::{Condition, DesiredState, PodPlan};

/// Kahn levels: wave 0 holds pods with no dependencies, wave n pods whose dependencies are all
/// in earlier waves. Names are sorted within a wave.
pub fn waves(pods: &BTreeMap<String, PodPlan>) -> Vec<Vec<String>> {
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut waves = Vec::new();
    loop {
        let wave: Vec<String> = pods
            .values()
            .filter(|p| !placed.contains(p.name.as_str()))
            .filter(|p| {
                p.depends_on
                    .iter()
                    .all(|d| placed.contains(d.pod.as_str()) || !pods.contains_key(&d.pod))
            })
            .map(|p| p.name.clone())
            .collect();
        if wave.is_empty() {
            break;
        }
        for name in &wave {
            if let Some((key, _)) = pods.get_key_value(name) {
                placed.insert(key.as_str());
            }
        }
        waves.push(wave);
    }
    waves
}

/// The start order as numbered waves: `"1. db\n2. api, worker\n3. web\n"`.
pub fn render_order(state: &DesiredState) -> String {
    let mut out = String::new();
    for (i, wave) in state.waves.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, wave.join(", "));
    }
    out
}

fn edges(state: &DesiredState) -> impl Iterator<Item = (&str, &str, Condition)> {
    state.pods.values().flat_map(|p| {
        p.depends_on
            .iter()
            .map(move |d| (p.name.as_str(), d.pod.as_str(), d.condition))
    })
}

/// Graphviz DOT: an edge `a -> b` means `a` depends on `b`; `completed` edges are labelled
/// and dashed.
pub fn render_dot(state: &DesiredState) -> String {
    let mut out = String::from("digraph rcompose {\n  rankdir=BT;\n  node [shape=box];\n");
    for pod in state.pods.values() {
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{} x{}\"];",
            pod.name, pod.name, pod.replicas
        );
    }
    for (from, to, condition) in edges(state) {
        match condition {
            Condition::Started => {
                let _ = writeln!(out, "  \"{from}\" -> \"{to}\";");
            }
            Condition::Completed => {
                let _ = writeln!(
                    out,
                    "  \"{from}\" -> \"{to}\" [label=\"completed\", style=dashed];"
                );
            }
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart: an edge `a --> b` means `a` depends on `b`.
pub fn render_mermaid(state: &DesiredState) -> String {
    let mut out = String::from("flowchart BT\n");
    for pod in state.pods.values() {
        let _ = writeln!(out, "  {}[\"{} x{}\"]", pod.name, pod.name, pod.replicas);
    }
    for (from, to, condition) in edges(state) {
        match condition {
            Condition::Started => {
                let _ = writeln!(out, "  {from} --> {to}");
            }
            Condition::Completed => {
                let _ = writeln!(out, "  {from} -.->|completed| {to}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::manifest::load;
    use crate::plan::desired_state;
    use crate::plan::graph::{render_dot, render_mermaid, render_order};

    const YAML: &str = "
pods:
  web: { depends_on: [api, worker], containers: [ { name: w, command: x } ] }
  api: { replicas: 2, depends_on: { db: { condition: completed } }, containers: [ { name: a, command: x } ] }
  worker: { depends_on: [db], containers: [ { name: w, command: x } ] }
  db: { restart: on-failure, containers: [ { name: d, command: x } ] }
";

    fn state() -> crate::plan::desired::DesiredState {
        let m = load(YAML, Path::new("rcompose.yaml")).unwrap();
        desired_state(&m, "p", Path::new("/p"))
    }

    #[test]
    fn start_order_is_numbered_waves_sorted_by_name() {
        assert_eq!(render_order(&state()), "1. db\n2. api, worker\n3. web\n");
    }

    #[test]
    fn dot_lists_pods_and_dependency_edges() {
        assert_eq!(
            render_dot(&state()),
            r#"digraph rcompose {
  rankdir=BT;
  node [shape=box];
  "api" [label="api x2"];
  "db" [label="db x1"];
  "web" [label="web x1"];
  "worker" [label="worker x1"];
  "api" -> "db" [label="completed", style=dashed];
  "web" -> "api";
  "web" -> "worker";
  "worker" -> "db";
}
"#
        );
    }

    #[test]
    fn mermaid_lists_pods_and_dependency_edges() {
        assert_eq!(
            render_mermaid(&state()),
            "flowchart BT
  api[\"api x2\"]
  db[\"db x1\"]
  web[\"web x1\"]
  worker[\"worker x1\"]
  api -.->|completed| db
  web --> api
  web --> worker
  worker --> db
"
        );
    }
}
