//! The pod dependency graph: start waves and text, DOT and Mermaid renderings.
//!
//! Validation already rejected cycles and unknown pods, so every function here may assume a
//! DAG over known pods; they still terminate if handed a cycle (the pods on it are left out of
//! the waves).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use petgraph::Direction;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graphmap::DiGraphMap;

use crate::plan::desired::{Condition, DesiredState, PodPlan};

/// Start waves: wave 0 holds pods with no dependencies, wave n pods whose deepest dependency
/// is in wave n-1 (the longest path from a root, over a topological order from petgraph).
/// Names are sorted within a wave. Pods on a cycle, and pods that depend on them, are left
/// out (validation rejects cycles before this is called).
pub fn waves(pods: &BTreeMap<String, PodPlan>) -> Vec<Vec<String>> {
    // edge dependency -> dependent; only edges between known pods
    let mut g: DiGraphMap<&str, ()> = DiGraphMap::new();
    for p in pods.values() {
        g.add_node(p.name.as_str());
        for d in p.depends_on.iter().filter(|d| pods.contains_key(&d.pod)) {
            g.add_edge(d.pod.as_str(), p.name.as_str(), ());
        }
    }
    let cyclic: BTreeSet<&str> = tarjan_scc(&g)
        .into_iter()
        .filter(|scc| scc.len() > 1 || g.contains_edge(scc[0], scc[0]))
        .flatten()
        .collect();
    for node in &cyclic {
        g.remove_node(node);
    }
    let Ok(order) = toposort(&g, None) else {
        return Vec::new();
    };
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    for node in order {
        let l = g
            .neighbors_directed(node, Direction::Incoming)
            .map(|dep| level.get(dep).map_or(0, |l| l + 1))
            .max()
            .unwrap_or(0);
        level.insert(node, l);
    }
    // a dependent of a cyclic pod would start before its dependency: leave it out too
    let blocked = |p: &PodPlan| p.depends_on.iter().any(|d| cyclic.contains(d.pod.as_str()));
    let mut waves: Vec<Vec<String>> = Vec::new();
    for (name, l) in level {
        if pods.get(name).is_some_and(blocked) {
            continue;
        }
        if waves.len() <= l {
            waves.resize(l + 1, Vec::new());
        }
        waves[l].push(name.to_string());
    }
    waves.retain(|w| !w.is_empty());
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
            Condition::Healthy => {
                let _ = writeln!(out, "  \"{from}\" -> \"{to}\" [label=\"healthy\"];");
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
            Condition::Healthy => {
                let _ = writeln!(out, "  {from} -->|healthy| {to}");
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
    fn a_pod_starts_after_its_deepest_dependency() {
        // web depends on db directly and through api: it must wait for api's wave
        let m = load(
            "pods:\n  db: { containers: [ { name: d, command: x } ] }\n  api: { depends_on: [db], containers: [ { name: a, command: x } ] }\n  web: { depends_on: [db, api], containers: [ { name: w, command: x } ] }\n",
            Path::new("rcompose.yaml"),
        )
        .unwrap();
        let s = desired_state(&m, "p", Path::new("/p"));
        assert_eq!(s.waves, vec![vec!["db"], vec!["api"], vec!["web"]]);
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
