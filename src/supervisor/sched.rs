//! Wires the scheduler ([`crate::plan::schedule`]) into the supervisor: a replica is placed on
//! a node when its start begins; one that fits no node is `Pending`, with the reason, and is
//! tried again at every turn of the loop after that (any exit, removal, scale or stop that
//! frees resources wakes the loop). A replica holds its requests on its node until every one
//! of its containers is done or it is removed.
//!
//! The machine's own capacity (the one node without `nodes:`) is read here, once: the CPUs
//! this process may run on (`sched_getaffinity`, through `available_parallelism`) and
//! `MemTotal` of `<proc>/meminfo`.

use std::fs;
use std::path::{Path, PathBuf};

use super::state::ContainerState;
use super::{Event, Supervisor};
use crate::plan::schedule::{self, Machine, Placement, Replica};

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
    /// The replicas that hold resources on a node: placed, and not every container done.
    fn placements(&self) -> Vec<Placement> {
        let mut seen: Vec<&Path> = Vec::new();
        let mut out = Vec::new();
        for s in &self.slots {
            let Some(node) = &s.node else { continue };
            if seen.contains(&s.netns.as_path()) {
                continue;
            }
            seen.push(&s.netns);
            let done = self
                .slots
                .iter()
                .filter(|o| o.netns == s.netns)
                .all(|o| o.record.state.is_final());
            if done {
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
        let replica = Replica {
            pod: pod.clone(),
            requests: plan.requests,
            node_selector: plan.node_selector.clone(),
        };
        let nodes = schedule::cluster(&self.opts.desired, self.machine);
        let declared = !self.opts.desired.nodes.is_empty();
        match schedule::place(&nodes, &self.placements(), &replica) {
            Ok(node) => {
                for i in group {
                    let s = &mut self.slots[i];
                    s.node = Some(node.clone());
                    if declared {
                        s.record.node = Some(node.clone());
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

    /// Tries the `Pending` replicas again, oldest first; those that fit now begin their
    /// start. Returns whether one did.
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
        any
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
