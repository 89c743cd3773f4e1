//! `stop`, `start`, `restart` and `scale` on a running project: requests on the control
//! socket (see [`super::control`]) that the supervisor carries out between two turns of its
//! loop. `stop` keeps what it stopped (no restart policy brings it back) until `start`;
//! `start` puts the replicas back to `Waiting`, and the loop starts them in dependency order
//! as at `up`; `scale` is an apply of the current desired state with other replica counts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::control::Change;
use super::{ContainerState, Supervisor};
use crate::plan::desired::Condition;

impl Supervisor {
    /// The pods a request names, every pod when it names none; `Err` names the unknown.
    fn named(&self, pods: &[String]) -> Result<Vec<String>, String> {
        if pods.is_empty() {
            return Ok(self.opts.desired.pods.keys().cloned().collect());
        }
        let unknown: Vec<&str> = pods
            .iter()
            .filter(|p| !self.opts.desired.pods.contains_key(*p))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = self.opts.desired.pods.keys().map(String::as_str).collect();
            return Err(format!(
                "no pod named {} in project `{}` (its pods: {})",
                unknown
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.opts.desired.project,
                known.join(", ")
            ));
        }
        let mut out = pods.to_vec();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `stop`: stops every container of `pods` (every pod when empty), dependents first,
    /// each with its stop signal and grace period (`grace` instead when given); they stay
    /// stopped. Returns what was done per pod and the termination signal that arrived
    /// meanwhile, if one did.
    pub(super) fn stop_pods(
        &mut self,
        pods: &[String],
        grace: Option<Duration>,
    ) -> Result<(BTreeMap<String, Change>, Option<i32>), String> {
        let pods = self.named(pods)?;
        // nothing of them starts or restarts from here on
        for s in self
            .slots
            .iter_mut()
            .filter(|s| pods.contains(&s.record.pod))
        {
            s.due = None;
            if matches!(
                s.record.state,
                ContainerState::Waiting | ContainerState::Pending | ContainerState::Restarting
            ) {
                s.record.state = ContainerState::Exited;
                s.record.reason = Some("stopped".to_string());
            }
        }
        let saved = self.grace_override;
        if grace.is_some() {
            self.grace_override = grace;
        }
        let mut signalled = None;
        let waves: Vec<Vec<String>> = self.opts.desired.waves.iter().rev().cloned().collect();
        for wave in waves {
            let members: Vec<usize> = (0..self.slots.len())
                .filter(|&i| {
                    let r = &self.slots[i].record;
                    wave.contains(&r.pod) && pods.contains(&r.pod) && r.state.is_live()
                })
                .collect();
            let drained = self.drain_before_stop(&members);
            let stopped = self.stop(&members);
            if let Some(sig) = drained.or(stopped) {
                signalled.get_or_insert(sig);
            }
        }
        self.grace_override = saved;
        for s in self
            .slots
            .iter_mut()
            .filter(|s| pods.contains(&s.record.pod))
        {
            if s.record.state == ContainerState::Exited && !s.record.init {
                s.record.reason = Some("stopped".to_string());
            }
        }
        let _ = self.save();
        Ok((
            pods.into_iter().map(|p| (p, Change::Stopped)).collect(),
            signalled,
        ))
    }

    /// `start`: puts the replicas of `pods` (every pod when empty) that do not run back to
    /// `Waiting`, with the dependencies they need that do not run either (a dependency that
    /// completed with 0 stays done). A replica with nothing running starts over, init
    /// containers first; in a replica that runs, only the containers that exited start.
    /// The main loop starts them in dependency order; what was done per pod is returned.
    pub(super) fn start_again(
        &mut self,
        pods: &[String],
        change: Change,
    ) -> Result<BTreeMap<String, Change>, String> {
        let named = self.named(pods)?;
        let mut all: BTreeSet<String> = named.iter().cloned().collect();
        let mut todo = named.clone();
        while let Some(pod) = todo.pop() {
            let Some(plan) = self.opts.desired.pods.get(&pod) else {
                continue;
            };
            for dep in &plan.depends_on {
                if !all.contains(&dep.pod) && self.needs_start(&dep.pod, dep.condition) {
                    all.insert(dep.pod.clone());
                    todo.push(dep.pod.clone());
                }
            }
        }
        let mut changes = BTreeMap::new();
        for pod in &all {
            let mut pins: Vec<_> = self
                .slots
                .iter()
                .filter(|s| s.record.pod == *pod)
                .map(|s| s.netns.clone())
                .collect();
            pins.dedup();
            let mut touched = false;
            for pin in pins {
                let group: Vec<usize> = (0..self.slots.len())
                    .filter(|&i| self.slots[i].netns == pin)
                    .collect();
                let down = group
                    .iter()
                    .all(|&i| !self.slots[i].record.state.is_live() && self.slots[i].due.is_none());
                for &i in &group {
                    let s = &mut self.slots[i];
                    let again = if down {
                        s.record.state != ContainerState::Waiting
                    } else {
                        !s.record.init && s.record.state.is_final()
                    };
                    if again {
                        s.record.state = ContainerState::Waiting;
                        s.record.exit_code = None;
                        s.record.reason = None;
                        s.record.ready = false;
                        touched = true;
                    }
                }
                if down {
                    self.started.retain(|p| *p != pin);
                }
            }
            if touched {
                changes.insert(pod.clone(), change);
            } else if named.contains(pod) {
                changes.insert(pod.clone(), Change::Unchanged);
            }
        }
        let _ = self.save();
        Ok(changes)
    }

    /// Whether dependency `pod` must be started for a dependent that needs `condition`:
    /// some container of it does not run, unless the condition is `completed` and it
    /// completed.
    fn needs_start(&self, pod: &str, condition: Condition) -> bool {
        let mut main = self
            .slots
            .iter()
            .filter(|s| s.record.pod == pod && !s.record.init);
        match condition {
            Condition::Completed => !main
                .all(|s| s.record.state == ContainerState::Exited && s.record.exit_code == Some(0)),
            Condition::Started | Condition::Healthy => main.any(|s| s.record.state.is_final()),
        }
    }

    /// `scale`: the current desired state with other replica counts, applied (replicas
    /// added, or the highest-numbered ones stopped and removed; see `apply`).
    pub(super) fn scale(
        &mut self,
        replicas: &BTreeMap<String, u32>,
    ) -> Result<(BTreeMap<String, Change>, Option<i32>), String> {
        let pods: Vec<String> = replicas.keys().cloned().collect();
        self.named(&pods)?;
        let mut desired = self.opts.desired.clone();
        for (pod, n) in replicas {
            if let Some(plan) = desired.pods.get_mut(pod) {
                plan.replicas = *n;
            }
        }
        let env = self
            .file_env
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        self.apply(desired, env)
    }
}
