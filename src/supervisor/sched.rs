//! Wires the scheduler ([`crate::plan::schedule`]) into the supervisor: a replica is placed on
//! a node when its start begins; one that fits no node is `Pending`, with the reason, and is
//! tried again at every turn of the loop after that (any exit, removal, scale or stop that
//! frees resources wakes the loop). A replica holds its requests on its node until every one
//! of its containers is done or it is removed.
//!
//! The machine's own capacity (the one node without `nodes:`) is read here, once, when first
//! needed (never for a manifest without requests or nodes): the CPUs this process may run on
//! (`sched_getaffinity`, through `available_parallelism`) and `MemTotal` of `<proc>/meminfo`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::control::{Change, NodeAction, NodeInfo};
use super::state::ContainerState;
use super::{CommandResult, Event, Supervisor};
use crate::plan::schedule::{self, Machine, Node, NodeStatus, Placement, Replica};

/// The machine's capacity: its usable CPUs and `MemTotal` (`u64::MAX` where unreadable, so
/// an unknown resource never holds a replica back).
pub(super) fn machine(proc_root: &Path) -> Machine {
    let cpus = std::thread::available_parallelism().map_or(u64::MAX / 1000, |n| n.get() as u64);
    Machine {
        cpu_millis: cpus.saturating_mul(1000),
        memory_bytes: mem_total(proc_root).unwrap_or(u64::MAX),
    }
}

/// `MemTotal` of `<proc>/meminfo`, in bytes.
fn mem_total(proc_root: &Path) -> Option<u64> {
    let text = fs::read_to_string(proc_root.join("meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

impl Supervisor {
    /// The nodes, with their status (`node down`, `node drain`).
    fn cluster(&self) -> Vec<Node> {
        let machine = *self.machine.get_or_init(|| machine(&self.opts.proc_root));
        let mut nodes = schedule::cluster(&self.opts.desired, machine);
        for n in &mut nodes {
            n.status = self.node_status.get(&n.name).copied().unwrap_or_default();
        }
        nodes
    }

    /// `rcompose nodes`: every node, its status, allocation and replicas.
    pub(super) fn node_infos(&self) -> Vec<NodeInfo> {
        let placed = self.placements();
        self.cluster()
            .into_iter()
            .map(|n| {
                let used = schedule::allocated(&placed, &n.name);
                let mut pods: Vec<String> = Vec::new();
                for s in &self.slots {
                    let name = s.record.instance();
                    if s.node.as_deref() == Some(n.name.as_str())
                        && !s.record.state.is_final()
                        && !pods.contains(&name)
                    {
                        pods.push(name);
                    }
                }
                NodeInfo {
                    status: n.status.as_str().to_string(),
                    cpu_allocated: used.cpu_millis,
                    cpu_capacity: n.capacity.cpu_millis,
                    memory_allocated: used.memory_bytes,
                    memory_capacity: n.capacity.memory_bytes,
                    labels: n.labels,
                    pods,
                    name: n.name,
                }
            })
            .collect()
    }

    /// `node down|up|drain NAME`. Down: every container on the node is killed at once
    /// (SIGKILL, no stop signal, no draining: the machine died) and its replicas start
    /// again on the other nodes through the normal start (the balancer follows their
    /// readiness). Drain: the node is cordoned, its replicas leave their services'
    /// endpoints, are stopped gracefully and start again elsewhere. Up: the node takes
    /// replicas again; none move back.
    pub(super) fn node_command(&mut self, name: &str, action: NodeAction) -> CommandResult {
        let nodes = self.cluster();
        if !nodes.iter().any(|n| n.name == name) {
            let names: Vec<String> = nodes.iter().map(|n| format!("`{}`", n.name)).collect();
            return Err(format!(
                "no node `{name}`: the nodes are {}",
                names.join(", ")
            ));
        }
        self.emit(&Event::Node {
            node: name.to_string(),
            action: match action {
                NodeAction::Up => "up",
                NodeAction::Down => "down",
                NodeAction::Drain => "drain",
            },
        });
        match action {
            NodeAction::Up => {
                self.node_status.remove(name);
                return Ok((BTreeMap::new(), None));
            }
            NodeAction::Down => {
                self.node_status
                    .insert(name.to_string(), NodeStatus::NotReady);
            }
            NodeAction::Drain => {
                self.node_status
                    .insert(name.to_string(), NodeStatus::SchedulingDisabled);
            }
        }
        let members: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.slots[i].node.as_deref() == Some(name) && self.slots[i].record.state.is_live()
            })
            .collect();
        let signal = if action == NodeAction::Down {
            for &i in &members {
                if let Some(pid) = self.slots[i].record.pid {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            // reaps them (already dead: no grace to wait out)
            let saved = self.grace_override.replace(Duration::ZERO);
            let signal = self.stop(&members);
            self.grace_override = saved;
            signal
        } else {
            let drained = self.drain_before_stop(&members);
            let stopped = self.stop(&members);
            drained.or(stopped)
        };
        // the node's replicas begin a new start (init containers again), placed anew;
        // those that were done are only let go
        let mut changes = BTreeMap::new();
        let mut groups: Vec<PathBuf> = Vec::new();
        for s in &self.slots {
            if s.node.as_deref() == Some(name) && !groups.contains(&s.netns) {
                groups.push(s.netns.clone());
            }
        }
        for ns in groups {
            let group: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].netns == ns)
                .collect();
            let done = group.iter().all(|&i| {
                let r = &self.slots[i].record;
                r.state.is_final() && !members.contains(&i)
            });
            let mut old_parents = Vec::new();
            for &i in &group {
                let s = &mut self.slots[i];
                s.node = None;
                s.record.node = None;
                // its cgroup was on the node: the next start makes one where it lands
                if let Some(cg) = s.cgroup.take() {
                    use crate::runtime::cgroup::Cgroups;
                    let _ = cg.remove();
                }
                if let Some(parent) = Path::new(&s.record.cgroup).parent() {
                    old_parents.push(parent.to_path_buf());
                }
                if done {
                    continue;
                }
                s.due = None;
                s.record.state = ContainerState::Waiting;
                s.record.exit_code = None;
                s.record.reason = None;
                s.record.ready = false;
                changes.insert(s.record.pod.clone(), Change::Rescheduled);
            }
            old_parents.dedup();
            crate::runtime::cgroup::remove_empty(&self.mounts, &old_parents);
            // its network namespace and address were on the node too: the next start makes
            // new ones in the block of the node it lands on (`readdress`)
            if self.net.is_some() {
                let old_ip = group.first().and_then(|&i| self.slots[i].record.ip);
                if let (Some(b), Some(ip)) = (&self.balancer, old_ip) {
                    b.forget(ip);
                }
                self.faults.forget(&ns);
                let _ = crate::runtime::netns::remove(&ns);
            }
            if !done {
                self.started.retain(|p| *p != ns);
            }
        }
        let _ = self.save();
        Ok((changes, signal))
    }

    /// The replicas that hold resources on a node: placed, and not every container done.
    fn placements(&self) -> Vec<Placement> {
        // per replica (its slots share the network namespace pin): whether one of its
        // containers is not done
        let mut live: HashMap<&Path, bool> = HashMap::new();
        for s in &self.slots {
            *live.entry(s.netns.as_path()).or_default() |= !s.record.state.is_final();
        }
        let mut out = Vec::new();
        for s in &self.slots {
            let Some(node) = &s.node else { continue };
            // once per replica, if it holds its requests
            if live.insert(s.netns.as_path(), false) != Some(true) {
                continue;
            }
            let requests = self
                .opts
                .desired
                .pods
                .get(&s.record.pod)
                .map(|p| p.requests)
                .unwrap_or_default();
            out.push(Placement {
                node: node.clone(),
                pod: s.record.pod.clone(),
                requests,
            });
        }
        out
    }

    /// Places the replica whose slots share `netns`: `true` when it got a node (its slots
    /// record it), `false` when it is `Pending` (the reason in its records; the event once,
    /// when it becomes pending).
    pub(super) fn admit(&mut self, netns: &Path) -> bool {
        let group: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].netns == netns)
            .collect();
        let Some(&first) = group.first() else {
            return true;
        };
        // a replica whose start begins again (`start` after `stop`) is placed afresh
        for &i in &group {
            self.slots[i].node = None;
        }
        let pod = self.slots[first].record.pod.clone();
        let Some(plan) = self.opts.desired.pods.get(&pod) else {
            return true;
        };
        let plan_network = plan.network;
        let replica = Replica {
            pod: pod.clone(),
            requests: plan.requests,
            node_selector: plan.node_selector.clone(),
        };
        let declared = !self.opts.desired.nodes.is_empty();
        // the common case, a manifest without requests or nodes: the machine takes it, as
        // before scheduling existed, without looking at what else runs (nor at its capacity)
        let common = !declared && replica.requests.is_zero() && self.node_status.is_empty();
        let nodes = if common { Vec::new() } else { self.cluster() };
        let placement = if common {
            Ok(schedule::MACHINE_NODE.to_string())
        } else {
            schedule::place(&nodes, &self.placements(), &replica)
        };
        match placement {
            Ok(node) => {
                let capacity = nodes
                    .iter()
                    .find(|n| n.name == node)
                    .map(|n| n.capacity)
                    .unwrap_or_default();
                if declared {
                    self.ensure_node_cgroup(&node, capacity);
                }
                let subtree = self.paths.cgroup_subtree();
                if declared && plan_network {
                    self.readdress(&group, &node, &nodes);
                }
                for i in group {
                    let s = &mut self.slots[i];
                    s.node = Some(node.clone());
                    if declared {
                        s.record.node = Some(node.clone());
                        // under its node's cgroup, which enforces the node's capacity
                        s.record.cgroup = format!(
                            "{subtree}/{node}/{}/{}",
                            s.record.instance(),
                            s.record.container
                        );
                        // cgroup v1 refuses a CPU quota above the parent's
                        s.plan.resources.cpu_millis = s
                            .plan
                            .resources
                            .cpu_millis
                            .map(|c| c.min(capacity.cpu_millis));
                    }
                    if s.record.state == ContainerState::Pending {
                        s.record.state = ContainerState::Waiting;
                        s.record.reason = None;
                    }
                }
                true
            }
            Err(why) => {
                let reason = why.to_string();
                let was = group
                    .iter()
                    .any(|&i| self.slots[i].record.state == ContainerState::Pending);
                self.reasons_changed |= group
                    .iter()
                    .any(|&i| self.slots[i].record.reason.as_deref() != Some(reason.as_str()));
                for &i in &group {
                    let r = &mut self.slots[i].record;
                    if matches!(r.state, ContainerState::Waiting | ContainerState::Pending) {
                        r.state = ContainerState::Pending;
                        r.reason = Some(reason.clone());
                    }
                }
                if !was {
                    let name = self.slots[first].record.instance();
                    self.emit(&Event::Pending { name, reason });
                }
                false
            }
        }
    }

    /// Gives the replica of `group`, placed on `node`, an address from the node's block of
    /// the project subnet (see [`crate::network::node_block`]) when its network namespace
    /// is not made yet (a new replica, or one that `node down` or `drain` moved: its
    /// namespace went with its old node); the hosts file follows.
    fn readdress(&mut self, group: &[usize], node: &str, nodes: &[Node]) {
        let Some(net) = &self.net else { return };
        let Some(&first) = group.first() else { return };
        if self.slots[first].netns.exists() {
            return;
        }
        let index = nodes.iter().position(|n| n.name == node).unwrap_or(0);
        let block = crate::network::node_block(
            net.subnet,
            u32::try_from(net.services.len()).unwrap_or(u32::MAX),
            u32::try_from(index).unwrap_or(0),
            u32::try_from(nodes.len()).unwrap_or(1),
        );
        let own = self.slots[first].record.ip;
        let taken: Vec<std::net::Ipv4Addr> = self
            .taken_addresses(net)
            .into_iter()
            .filter(|ip| Some(*ip) != own)
            .collect();
        let what = format!("replica `{}`", self.slots[first].record.instance());
        match crate::network::free_node_address(net.subnet, block, &taken, &what) {
            Ok(ip) => {
                for &i in group {
                    self.slots[i].record.ip = Some(ip);
                }
                self.hosts_dirty = true;
            }
            Err(e) => self.emit(&Event::Warning {
                message: format!("{what} on node `{node}`: {}", super::chain(&e)),
            }),
        }
    }

    /// Makes the cgroup of node `node` (`rcompose/<project>/<node>`) with its capacity as
    /// its CPU quota and memory limit, once: the replicas placed on it live below it, so
    /// together they never get more than the node has. A failure is a warning (the
    /// replicas then run without the node's limits).
    fn ensure_node_cgroup(&mut self, node: &str, capacity: crate::plan::desired::Requests) {
        if self.node_cgroups.iter().any(|n| n == node) {
            return;
        }
        let path = format!("{}/{node}", self.paths.cgroup_subtree());
        let limits = crate::plan::desired::Resources {
            cpu_millis: Some(capacity.cpu_millis),
            memory_bytes: Some(capacity.memory_bytes),
            pids: None,
        };
        match crate::runtime::cgroup::KernelCgroup::new(&path).create(&limits) {
            Ok(()) => self.node_cgroups.push(node.to_string()),
            Err(e) => self.emit(&Event::Warning {
                message: format!(
                    "node `{node}`: its capacity is not enforced: {}",
                    super::chain(&e)
                ),
            }),
        }
    }

    /// Tries the `Pending` replicas again, oldest first; those that fit now begin their
    /// start. Returns whether one did, or a pending reason changed (the state is to be
    /// saved).
    pub(super) fn schedule_pending(&mut self) -> bool {
        let mut pending: Vec<PathBuf> = Vec::new();
        for s in &self.slots {
            if s.record.state == ContainerState::Pending && !pending.contains(&s.netns) {
                pending.push(s.netns.clone());
            }
        }
        let mut any = false;
        for ns in pending {
            if self.admit(&ns) && !self.started.contains(&ns) {
                self.started.push(ns);
                any = true;
            }
        }
        self.flush_hosts();
        // a reason that changed (more or less is free now) is saved for `ps` too
        any | std::mem::take(&mut self.reasons_changed)
    }

    /// Rewrites the hosts file when replicas got new addresses.
    pub(super) fn flush_hosts(&mut self) {
        if std::mem::take(&mut self.hosts_dirty) {
            let _ = self.write_hosts();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::mem_total;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let dir = std::env::temp_dir().join(format!("rcompose-meminfo-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("meminfo"),
            "MemTotal:       24683656 kB\nMemFree:         1000 kB\n",
        )
        .unwrap();
        assert_eq!(mem_total(&dir), Some(24_683_656 * 1024));
        fs::write(dir.join("meminfo"), "nothing\n").unwrap();
        assert_eq!(mem_total(&dir), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
