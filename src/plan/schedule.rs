//! L1, pure: the scheduler. Given the nodes (capacity, labels, status), what is already
//! placed on them and a replica to place, it picks a node, or says why none fits in
//! Kubernetes' words (`0/3 nodes are available: 2 insufficient memory (requested 3Gi, free
//! 1.2Gi), 1 node(s) didn't match node_selector`). No I/O: the machine's own capacity (CPU
//! count, `MemTotal`) is read by the caller and passed in.
//!
//! Policy, in order of precedence:
//! 1. filter: the node is `Ready`, has every label of the replica's `node_selector`, and
//!    its free CPU and memory (capacity minus the requests placed on it) hold the
//!    replica's requests;
//! 2. spread (soft anti-affinity, Kubernetes' default spreading of a workload's replicas):
//!    among the nodes that fit, those with the fewest replicas of the same pod; a node
//!    that already runs one is taken when no other fits;
//! 3. best fit: the node whose free resources after the placement are smallest, as the
//!    sum of the free fractions of CPU and memory (parts per million of its capacity),
//!    which packs replicas tightly and keeps whole nodes free for large ones;
//! 4. ties: the node name, in order, so the same inputs always give the same placement.

use std::collections::BTreeMap;
use std::fmt;

use crate::plan::desired::{DesiredState, Requests};

/// The name of the one node that stands for the machine when no `nodes` are declared.
pub const MACHINE_NODE: &str = "local";

/// Whether a node takes replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeStatus {
    /// Up and taking new replicas.
    #[default]
    Ready,
    /// Down (`node down`): runs nothing, takes nothing.
    NotReady,
    /// Cordoned (`node drain`): keeps what runs, takes nothing new.
    SchedulingDisabled,
}

impl NodeStatus {
    /// As `rcompose nodes` shows it (Kubernetes' spelling).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "Ready",
            NodeStatus::NotReady => "NotReady",
            NodeStatus::SchedulingDisabled => "SchedulingDisabled",
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node name.
    pub name: String,
    /// What it offers.
    pub capacity: Requests,
    /// Labels `node_selector` matches.
    pub labels: BTreeMap<String, String>,
    /// Whether it takes replicas.
    pub status: NodeStatus,
}

/// A replica on a node (placed earlier, or by this round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node it is on.
    pub node: String,
    /// Its pod.
    pub pod: String,
    /// What it reserves there.
    pub requests: Requests,
}

/// A replica to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its pod.
    pub pod: String,
    /// What it reserves.
    pub requests: Requests,
    /// Labels its node must have.
    pub node_selector: BTreeMap<String, String>,
}

/// The machine's own capacity, as the caller measured it (CPUs it may run on, `MemTotal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// CPUs, in thousandths.
    pub cpu_millis: u64,
    /// Memory, in bytes.
    pub memory_bytes: u64,
}

/// The nodes of a desired state, all `Ready`: the declared ones, or else the machine as the
/// one node [`MACHINE_NODE`], its capacity overridden by the manifest's `capacity`.
#[must_use]
pub fn cluster(desired: &DesiredState, machine: Machine) -> Vec<Node> {
    if desired.nodes.is_empty() {
        return vec![Node {
            name: MACHINE_NODE.to_string(),
            capacity: Requests {
                cpu_millis: desired.capacity.cpu_millis.unwrap_or(machine.cpu_millis),
                memory_bytes: desired
                    .capacity
                    .memory_bytes
                    .unwrap_or(machine.memory_bytes),
            },
            labels: BTreeMap::new(),
            status: NodeStatus::Ready,
        }];
    }
    desired
        .nodes
        .values()
        .map(|n| Node {
            name: n.name.clone(),
            capacity: Requests {
                cpu_millis: n.cpu_millis,
                memory_bytes: n.memory_bytes,
            },
            labels: n.labels.clone(),
            status: NodeStatus::Ready,
        })
        .collect()
}

/// What the replicas placed on `node` reserve in all.
#[must_use]
pub fn allocated(placed: &[Placement], node: &str) -> Requests {
    placed
        .iter()
        .filter(|p| p.node == node)
        .fold(Requests::default(), |sum, p| Requests {
            cpu_millis: sum.cpu_millis.saturating_add(p.requests.cpu_millis),
            memory_bytes: sum.memory_bytes.saturating_add(p.requests.memory_bytes),
        })
}

/// What is short on a node for a replica: requested and free (the most free among the
/// nodes short of it, once summed up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Short {
    nodes: usize,
    requested: u64,
    free: u64,
}

impl Short {
    fn add(slot: &mut Option<Short>, requested: u64, free: u64) {
        let s = slot.get_or_insert(Short {
            nodes: 0,
            requested,
            free,
        });
        s.nodes += 1;
        s.free = s.free.max(free);
    }
}

/// Why a replica fits no node, node by node, summed up as Kubernetes' scheduler does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    nodes: usize,
    cpu: Option<Short>,
    memory: Option<Short>,
    selector: usize,
    cordoned: usize,
    not_ready: usize,
}

impl fmt::Display for Unschedulable {
    /// One node short of resources (the machine, without `nodes`):
    /// `insufficient memory: requested 3Gi, free 1.2Gi`. Otherwise Kubernetes' summary:
    /// `0/3 nodes are available: 2 insufficient memory (requested 3Gi, free 1.2Gi), 1
    /// node(s) didn't match node_selector`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = self
            .cpu
            .map(|s| (s, cpu_text(s.requested), cpu_text(s.free)));
        let memory = self
            .memory
            .map(|s| (s, bytes_text(s.requested), bytes_text(s.free)));
        let only_short = self.selector == 0 && self.cordoned == 0 && self.not_ready == 0;
        if self.nodes == 1 && only_short {
            let parts: Vec<String> = [("cpu", cpu), ("memory", memory)]
                .into_iter()
                .filter_map(|(what, s)| {
                    s.map(|(_, req, free)| {
                        format!("insufficient {what}: requested {req}, free {free}")
                    })
                })
                .collect();
            return f.write_str(&parts.join("; "));
        }
        if self.nodes == 0 {
            return f.write_str("0/0 nodes are available: no nodes");
        }
        let mut parts = Vec::new();
        for (what, s) in [("cpu", cpu), ("memory", memory)] {
            if let Some((s, req, free)) = s {
                parts.push(format!(
                    "{} insufficient {what} (requested {req}, free {free})",
                    s.nodes
                ));
            }
        }
        for (n, why) in [
            (self.selector, "didn't match node_selector"),
            (self.cordoned, "were unschedulable"),
            (self.not_ready, "were not ready"),
        ] {
            if n > 0 {
                parts.push(format!("{n} node(s) {why}"));
            }
        }
        write!(
            f,
            "0/{} nodes are available: {}",
            self.nodes,
            parts.join(", ")
        )
    }
}

/// Picks the node for `replica`, given what `placed` already holds (see the module's
/// policy).
///
/// # Errors
///
/// Why no node fits, as Kubernetes would say it.
pub fn place(
    nodes: &[Node],
    placed: &[Placement],
    replica: &Replica,
) -> Result<String, Unschedulable> {
    let mut why = Unschedulable {
        nodes: nodes.len(),
        cpu: None,
        memory: None,
        selector: 0,
        cordoned: 0,
        not_ready: 0,
    };
    // (same-pod replicas on the node, leftover score, name)
    let mut best: Option<(usize, u128, &str)> = None;
    for node in nodes {
        match node.status {
            NodeStatus::NotReady => {
                why.not_ready += 1;
                continue;
            }
            NodeStatus::SchedulingDisabled => {
                why.cordoned += 1;
                continue;
            }
            NodeStatus::Ready => {}
        }
        if !replica
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
        {
            why.selector += 1;
            continue;
        }
        let used = allocated(placed, &node.name);
        let free_cpu = node.capacity.cpu_millis.saturating_sub(used.cpu_millis);
        let free_memory = node.capacity.memory_bytes.saturating_sub(used.memory_bytes);
        let mut fits = true;
        if replica.requests.cpu_millis > free_cpu {
            Short::add(&mut why.cpu, replica.requests.cpu_millis, free_cpu);
            fits = false;
        }
        if replica.requests.memory_bytes > free_memory {
            Short::add(&mut why.memory, replica.requests.memory_bytes, free_memory);
            fits = false;
        }
        if !fits {
            continue;
        }
        let siblings = placed
            .iter()
            .filter(|p| p.node == node.name && p.pod == replica.pod)
            .count();
        let score = leftover(
            free_cpu - replica.requests.cpu_millis,
            node.capacity.cpu_millis,
        ) + leftover(
            free_memory - replica.requests.memory_bytes,
            node.capacity.memory_bytes,
        );
        let candidate = (siblings, score, node.name.as_str());
        if best.is_none_or(|b| candidate < b) {
            best = Some(candidate);
        }
    }
    best.map(|(_, _, name)| name.to_string()).ok_or(why)
}

/// `free` as parts per million of `capacity`.
fn leftover(free: u64, capacity: u64) -> u128 {
    u128::from(free) * 1_000_000 / u128::from(capacity.max(1))
}

/// Places `replicas` one after the other (each placement counts for the next), on top of
/// `placed`; returns each one's node or the reason it stays pending, in order. The
/// placements made are appended to `placed`.
pub fn schedule(
    nodes: &[Node],
    placed: &mut Vec<Placement>,
    replicas: &[Replica],
) -> Vec<Result<String, Unschedulable>> {
    replicas
        .iter()
        .map(|r| {
            let result = place(nodes, placed, r);
            if let Ok(node) = &result {
                placed.push(Placement {
                    node: node.clone(),
                    pod: r.pod.clone(),
                    requests: r.requests,
                });
            }
            result
        })
        .collect()
}

/// CPU in the manifest's spelling: `2`, `500m`.
fn cpu_text(millis: u64) -> String {
    crate::manifest::MilliCpu(millis).to_string()
}

/// Memory the way people read it: exact binary units when whole (`3Gi`), else one decimal
/// rounded down (`1.2Gi`: never more than is free), bytes below 1Ki.
#[must_use]
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, unit) in UNITS {
        if bytes >= unit {
            let whole = bytes / unit;
            let tenths = (bytes % unit) * 10 / unit;
            return if bytes.is_multiple_of(unit) {
                format!("{whole}{suffix}")
            } else {
                format!("{whole}.{tenths}{suffix}")
            };
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::plan::desired::Requests;
    use crate::plan::schedule::{
        Node, NodeStatus, Placement, Replica, allocated, bytes_text, place, schedule,
    };

    const GI: u64 = 1 << 30;

    fn node(name: &str, cpu: u64, memory_gi: u64, labels: &[(&str, &str)]) -> Node {
        Node {
            name: name.into(),
            capacity: Requests {
                cpu_millis: cpu * 1000,
                memory_bytes: memory_gi * GI,
            },
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            status: NodeStatus::Ready,
        }
    }

    fn replica(pod: &str, cpu_millis: u64, memory_bytes: u64) -> Replica {
        Replica {
            pod: pod.into(),
            requests: Requests {
                cpu_millis,
                memory_bytes,
            },
            node_selector: BTreeMap::new(),
        }
    }

    fn on(node: &str, pod: &str, cpu_millis: u64, memory_bytes: u64) -> Placement {
        Placement {
            node: node.into(),
            pod: pod.into(),
            requests: Requests {
                cpu_millis,
                memory_bytes,
            },
        }
    }

    #[test]
    fn best_fit_picks_the_node_left_fullest() {
        let nodes = [node("big", 8, 16, &[]), node("small", 2, 4, &[])];
        assert_eq!(
            place(&nodes, &[], &replica("api", 1000, GI)).unwrap(),
            "small"
        );
        // a replica only the big node holds goes there
        assert_eq!(place(&nodes, &[], &replica("db", 4000, GI)).unwrap(), "big");
    }

    #[test]
    fn replicas_of_one_pod_spread_before_they_pack() {
        let nodes = [
            node("a", 4, 8, &[]),
            node("b", 4, 8, &[]),
            node("c", 4, 8, &[]),
        ];
        let mut placed = Vec::new();
        let got = schedule(&nodes, &mut placed, &vec![replica("api", 500, GI); 4]);
        let got: Vec<String> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, ["a", "b", "c", "a"]);
        // another pod packs onto the fullest node
        assert_eq!(
            place(&nodes, &placed, &replica("web", 500, GI)).unwrap(),
            "a"
        );
    }

    #[test]
    fn spreading_is_soft_a_node_with_a_sibling_is_taken_when_no_other_fits() {
        let nodes = [node("a", 4, 8, &[]), node("b", 1, 1, &[])];
        let placed = [on("a", "api", 500, GI)];
        assert_eq!(
            place(&nodes, &placed, &replica("api", 2000, GI)).unwrap(),
            "a"
        );
    }

    #[test]
    fn ties_go_to_the_first_node_by_name() {
        let nodes = [node("w2", 2, 4, &[]), node("w1", 2, 4, &[])];
        assert_eq!(place(&nodes, &[], &replica("api", 100, GI)).unwrap(), "w1");
    }

    #[test]
    fn node_selector_filters_nodes() {
        let nodes = [
            node("a", 8, 16, &[("zone", "a")]),
            node("b", 2, 4, &[("zone", "b")]),
        ];
        let mut r = replica("api", 100, GI);
        r.node_selector.insert("zone".into(), "a".into());
        assert_eq!(place(&nodes, &[], &r).unwrap(), "a");
    }

    #[test]
    fn down_and_cordoned_nodes_take_nothing() {
        let mut nodes = [
            node("a", 2, 4, &[]),
            node("b", 2, 4, &[]),
            node("c", 2, 4, &[]),
        ];
        nodes[0].status = NodeStatus::NotReady;
        nodes[1].status = NodeStatus::SchedulingDisabled;
        assert_eq!(place(&nodes, &[], &replica("api", 100, GI)).unwrap(), "c");
        nodes[2].status = NodeStatus::NotReady;
        assert_eq!(
            place(&nodes, &[], &replica("api", 100, GI))
                .unwrap_err()
                .to_string(),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) were not ready"
        );
    }

    #[test]
    fn the_reason_sums_up_every_node_in_kubernetes_words() {
        let nodes = [
            node("a", 4, 4, &[("zone", "a")]),
            node("b", 4, 4, &[("zone", "a")]),
            node("c", 4, 8, &[("zone", "b")]),
        ];
        let placed = [on("a", "db", 0, 3 * GI), on("b", "db", 0, GI * 28 / 10)];
        let mut r = replica("api", 1000, 3 * GI);
        r.node_selector.insert("zone".into(), "a".into());
        assert_eq!(
            place(&nodes, &placed, &r).unwrap_err().to_string(),
            "0/3 nodes are available: 2 insufficient memory (requested 3Gi, free 1.2Gi), 1 node(s) didn't match node_selector"
        );
        let r = replica("api", 5000, 9 * GI);
        assert_eq!(
            place(&nodes, &placed, &r).unwrap_err().to_string(),
            "0/3 nodes are available: 3 insufficient cpu (requested 5, free 4), 3 insufficient memory (requested 9Gi, free 8Gi)"
        );
    }

    #[test]
    fn one_node_short_says_what_is_short() {
        let nodes = [node("local", 2, 4, &[])];
        let placed = [on("local", "db", 1500, GI * 28 / 10)];
        assert_eq!(
            place(&nodes, &placed, &replica("api", 100, 3 * GI))
                .unwrap_err()
                .to_string(),
            "insufficient memory: requested 3Gi, free 1.2Gi"
        );
        assert_eq!(
            place(&nodes, &placed, &replica("api", 1000, 3 * GI))
                .unwrap_err()
                .to_string(),
            "insufficient cpu: requested 1, free 500m; insufficient memory: requested 3Gi, free 1.2Gi"
        );
    }

    #[test]
    fn replicas_without_requests_fit_anywhere_and_spread() {
        let nodes = [node("a", 1, 1, &[]), node("b", 1, 1, &[])];
        let placed = [on("a", "hog", 1000, GI), on("b", "hog", 1000, GI)];
        let mut all = placed.to_vec();
        let got = schedule(&nodes, &mut all, &vec![replica("api", 0, 0); 2]);
        let got: Vec<String> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, ["a", "b"]);
    }

    #[test]
    fn a_pending_replica_fits_once_another_is_removed() {
        let nodes = [node("local", 2, 4, &[])];
        let mut placed = vec![on("local", "big", 0, 3 * GI)];
        let r = replica("api", 0, 2 * GI);
        assert!(place(&nodes, &placed, &r).is_err());
        placed.clear();
        assert_eq!(place(&nodes, &placed, &r).unwrap(), "local");
    }

    #[test]
    fn schedule_counts_its_own_placements() {
        let nodes = [node("a", 1, 4, &[])];
        let mut placed = Vec::new();
        let got = schedule(&nodes, &mut placed, &vec![replica("api", 400, GI); 3]);
        assert!(got[0].is_ok() && got[1].is_ok());
        assert_eq!(
            got[2].as_ref().unwrap_err().to_string(),
            "insufficient cpu: requested 400m, free 200m"
        );
        assert_eq!(
            allocated(&placed, "a"),
            Requests {
                cpu_millis: 800,
                memory_bytes: 2 * GI
            }
        );
    }

    #[test]
    fn memory_reads_like_kubernetes_quantities() {
        assert_eq!(bytes_text(3 * GI), "3Gi");
        assert_eq!(bytes_text(GI * 12 / 10), "1.1Gi"); // 1.19999.. rounds down
        assert_eq!(bytes_text(GI + GI / 2), "1.5Gi");
        assert_eq!(bytes_text(128 << 20), "128Mi");
        assert_eq!(bytes_text(1000), "1000");
    }
}
