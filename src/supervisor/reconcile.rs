//! `up` on a project that is already up: the running supervisor takes the new desired
//! state (through its control socket, see [`super::control`]) and changes only what
//! changed. A pod is recreated when its plan differs (image layers, command, env, mounts,
//! limits, ...) or when the content of one of its configs or secrets differs (a file
//! edited, an environment variable set to another value); pods that are new are started
//! and pods no longer in the manifest are stopped and removed. A pod whose replica count
//! alone changed is scaled: replicas are added, or the highest-numbered ones removed. The
//! others keep running, untouched, as Compose's `up` and Kubernetes' `apply` do.
//!
//! Contents are compared by their SHA-256, kept in this process's memory only: never in the
//! state file, so a secret's digest is not left on disk.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::Supervisor;
use super::control::{Change, Response};
use crate::plan::desired::{DesiredState, FileContent, PodPlan};
use crate::runtime::cgroup::{self, Cgroups};
use crate::runtime::netns;

impl Supervisor {
    /// The bytes of a config or secret: a host file, an environment variable (of the last
    /// `up` that applied, else of this process), or inline text.
    pub(super) fn file_bytes(&self, content: &FileContent) -> Result<Vec<u8>, String> {
        match content {
            FileContent::Host(p) => {
                fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))
            }
            FileContent::Environment(v) => {
                let value = match &self.file_env {
                    Some(env) => env.get(v).map(|s| s.clone().into_bytes()),
                    None => std::env::var_os(v).map(std::ffi::OsString::into_encoded_bytes),
                };
                value.ok_or_else(|| format!("environment variable `{v}` is not set"))
            }
            FileContent::Inline(text) => Ok(text.clone().into_bytes()),
        }
    }

    /// The digest of everything that makes pod `pod` what it is: its plan and the content
    /// of its configs and secrets.
    pub(super) fn fingerprint(&self, pod: &PodPlan) -> Result<[u8; 32], String> {
        let mut h = Sha256::new();
        // neither the count (a pod that differs only there is scaled) nor the update
        // strategy (it says how to replace replicas, not what they run)
        let one = PodPlan {
            replicas: 0,
            update: crate::plan::desired::UpdatePlan::default(),
            ..pod.clone()
        };
        h.update(serde_json::to_vec(&one).map_err(|e| e.to_string())?);
        for c in &pod.containers {
            for f in &c.files {
                let bytes = self
                    .file_bytes(&f.content)
                    .map_err(|e| format!("{} of pod `{}`: {e}", f.what, pod.name))?;
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
        }
        Ok(h.finalize().into())
    }

    /// `up POD...` on a running project: the current desired state with the pods of
    /// `part` (those named and their dependencies) taken from it; the others stay.
    pub(super) fn merged(&self, part: DesiredState) -> DesiredState {
        let mut pods = self.opts.desired.pods.clone();
        pods.extend(part.pods);
        DesiredState {
            waves: crate::plan::graph::waves(&pods),
            pods,
            ..part
        }
    }

    /// Fingerprints of every pod of the current desired state.
    pub(super) fn fingerprints(&self) -> Result<HashMap<String, [u8; 32]>, String> {
        self.opts
            .desired
            .pods
            .values()
            .map(|p| Ok((p.name.clone(), self.fingerprint(p)?)))
            .collect()
    }

    /// Applies `desired`: stops and removes the pods that changed or went away, then makes
    /// the slots of the changed and new ones, which the main loop starts (in dependency
    /// order, init containers first). Returns what it does to each pod; on `Err` nothing
    /// was changed (a config that cannot be read, a project name that differs) or the
    /// stack is as far as it got (the message says what failed). The second field is the
    /// termination signal that arrived while containers were stopped, if one did.
    pub(super) fn apply(
        &mut self,
        desired: DesiredState,
        env: BTreeMap<String, String>,
    ) -> Result<(BTreeMap<String, Change>, Option<i32>), String> {
        if desired.project != self.opts.desired.project {
            return Err(format!(
                "this supervisor runs project `{}`, not `{}`",
                self.opts.desired.project, desired.project
            ));
        }
        if let (Some(net), Some(subnet)) = (&self.net, desired.subnet)
            && net.subnet != subnet
        {
            return Err(format!(
                "the network's subnet cannot change while the project is up (it is {}, the manifest says {subnet}); run `rcompose down` first",
                net.subnet
            ));
        }
        let old = self.fingerprints.clone();
        let previous_env = self.file_env.replace(env);
        let mut new = HashMap::new();
        for pod in desired.pods.values() {
            match self.fingerprint(pod) {
                Ok(f) => {
                    new.insert(pod.name.clone(), f);
                }
                Err(e) => {
                    self.file_env = previous_env;
                    return Err(e);
                }
            }
        }
        let mut changes = BTreeMap::new();
        for (name, f) in &new {
            // a pod that could not start is tried again, as Compose's `up` starts what is
            // not running
            let failed = self
                .slots
                .iter()
                .any(|s| s.record.pod == *name && s.record.state == super::ContainerState::Failed);
            let replicas = |d: &DesiredState| d.pods.get(name).map(|p| p.replicas);
            let change = match old.get(name) {
                None => Change::Created,
                Some(o) if o == f && !failed => {
                    if replicas(&self.opts.desired) == replicas(&desired) {
                        Change::Unchanged
                    } else {
                        Change::Scaled
                    }
                }
                Some(_) => Change::Recreated,
            };
            changes.insert(name.clone(), change);
        }
        for name in old.keys() {
            if !new.contains_key(name) {
                changes.insert(name.clone(), Change::Removed);
            }
        }
        // a changed pod that runs is rolled out (see `rollout`): its replicas are replaced
        // by the main loop as the new ones get ready, not stopped here
        let rolling: Vec<String> = changes
            .iter()
            .filter(|(n, c)| **c == Change::Recreated && self.rolls_out(n))
            .filter(|(n, _)| desired.pods.get(*n).is_some_and(|p| p.replicas > 0))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &rolling {
            changes.insert(name.clone(), Change::RolledOut);
        }
        // stop what goes, dependents first (the old waves, backwards): whole pods, and the
        // replicas a scaled pod has too many
        let going_pods: Vec<String> = changes
            .iter()
            .filter(|(_, c)| matches!(c, Change::Recreated | Change::Removed))
            .map(|(n, _)| n.clone())
            .collect();
        let keep: HashMap<String, u32> = changes
            .iter()
            .filter(|(_, c)| **c == Change::Scaled)
            .filter_map(|(n, _)| Some((n.clone(), desired.pods.get(n)?.replicas)))
            .collect();
        let goes = |r: &super::state::ContainerRecord| {
            going_pods.contains(&r.pod) || keep.get(&r.pod).is_some_and(|&n| r.replica > n)
        };
        let mut signalled = None;
        let waves: Vec<Vec<String>> = self.opts.desired.waves.iter().rev().cloned().collect();
        for wave in waves {
            let members: Vec<usize> = (0..self.slots.len())
                .filter(|&i| {
                    let r = &self.slots[i].record;
                    wave.contains(&r.pod) && goes(r) && r.state.is_live()
                })
                .collect();
            for i in 0..self.slots.len() {
                if goes(&self.slots[i].record) {
                    self.slots[i].due = None;
                }
            }
            let drained = self.drain_before_stop(&members);
            let stopped = self.stop(&members);
            if let Some(sig) = drained.or(stopped) {
                signalled.get_or_insert(sig);
            }
        }
        self.remove_where(|s| goes(&s.record));
        let old_replicas: HashMap<String, u32> = keep
            .keys()
            .filter_map(|n| Some((n.clone(), self.opts.desired.pods.get(n)?.replicas)))
            .collect();
        self.opts.desired = desired;
        self.fingerprints = new;
        // each pod's revisions: a removed pod's go, a recreated one gets a new one, a
        // rolled out one a new one in progress (its replicas come from the main loop)
        for (name, change) in &changes {
            let plan = self.opts.desired.pods.get(name).cloned();
            let fp = self.fingerprints.get(name).copied();
            match (change, plan, fp) {
                (Change::Removed, ..) => {
                    self.history.remove(name);
                }
                (Change::Recreated, Some(plan), Some(fp)) => {
                    self.record_revision(plan, fp, "apply".to_string());
                }
                (Change::RolledOut, Some(plan), Some(fp)) => {
                    self.begin_rollout(plan, fp, "apply".to_string());
                }
                _ => {}
            }
        }
        self.record_first_revisions();
        let first_new = self.slots.len();
        let first_id = self.next_id;
        // a first pod on the network makes it; services get (or lose) their addresses
        let mut made = self.ensure_network().and_then(|()| self.ensure_balancer());
        let order: Vec<String> = self.opts.desired.waves.iter().flatten().cloned().collect();
        for name in &order {
            let Some(pod) = self.opts.desired.pods.get(name).cloned() else {
                continue;
            };
            let replicas = match changes.get(name) {
                Some(Change::Created | Change::Recreated) => 1..=pod.replicas,
                Some(Change::Scaled) => old_replicas.get(name).map_or(1, |n| n + 1)..=pod.replicas,
                _ => continue,
            };
            made = made.and_then(|()| self.add_replicas(&pod, replicas));
        }
        let made = made
            .and_then(|()| self.write_hosts())
            .and_then(|()| self.check_users_from(first_new))
            .and_then(|()| self.write_files_from(first_new));
        if let Err(e) = made {
            // the new slots never ran: drop them (the pods recreated are gone)
            self.remove_where(|s| s.id >= first_id);
            let _ = self.write_hosts();
            return Err(super::chain(&e));
        }
        // keep the start order (as `ps` shows it): the new slots go where their pod's wave
        // puts them (a stable sort keeps each replica's containers in order)
        let order: Vec<&String> = self.opts.desired.waves.iter().flatten().collect();
        self.slots.sort_by_key(|s| {
            (
                order.iter().position(|p| **p == s.record.pod),
                s.record.replica,
            )
        });
        let _ = self.save();
        Ok((changes, signalled))
    }

    /// Removes the slots `going` picks (stopped; whole replicas) with everything their
    /// replicas had: cgroups, container directories, logs, config and secret copies,
    /// `empty_dir` volumes and the replicas' namespace pins.
    pub(super) fn remove_where(&mut self, going: impl Fn(&super::Slot) -> bool) {
        let (going, staying): (Vec<_>, Vec<_>) = std::mem::take(&mut self.slots)
            .into_iter()
            .partition(|s| going(s));
        self.slots = staying;
        let mut parents: Vec<PathBuf> = Vec::new();
        let mut pins: Vec<PathBuf> = Vec::new();
        for mut s in going {
            if let Some(h) = s.logger.take() {
                let _ = h.join();
            }
            // its network goes below: connections to it would hang, not close
            if let (Some(b), Some(ip)) = (&self.balancer, s.record.ip) {
                b.forget(ip);
            }
            super::remove_external(&self.opts, &s);
            if let Some(cg) = &s.cgroup {
                let _ = cg.remove();
            }
            if let Some(parent) = std::path::Path::new(&s.record.cgroup).parent() {
                parents.push(parent.to_path_buf());
            }
            let _ = fs::remove_dir_all(&s.record.dir);
            let _ = fs::remove_file(&s.record.log);
            for f in &s.files {
                let _ = fs::remove_file(f);
            }
            if !pins.contains(&s.netns) {
                pins.push(s.netns.clone());
            }
            let replica = s.record.instance();
            if let Some(pod) = self.opts.desired.pods.get(&s.record.pod) {
                for name in &pod.empty_dirs {
                    let _ = fs::remove_dir_all(self.paths.empty_dir(&replica, name));
                }
            }
        }
        parents.sort();
        parents.dedup();
        cgroup::remove_empty(&self.mounts, &parents);
        for pin in pins {
            self.faults.forget(&pin);
            let _ = netns::remove(&pin);
            self.started.retain(|p| *p != pin);
        }
    }

    /// Answers the client of the last apply, if it waits, once no pod is left to start;
    /// `error` when a pod failed to start.
    pub(super) fn answer_pending(&mut self, error: Option<String>) {
        // a rollout answers when it is over (a replica that failed to start fails it, and
        // it rolls back: the failure is told then)
        if !self.rollouts.is_empty() {
            return;
        }
        let starting = self.slots.iter().any(|s| {
            matches!(
                s.record.state,
                super::ContainerState::Waiting | super::ContainerState::Starting
            )
        });
        if starting && error.is_none() {
            return;
        }
        if let Some((reply, pods)) = self.pending.take() {
            let failures: Vec<String> = pods
                .iter()
                .filter(|(_, c)| **c == Change::RolledOut)
                .filter_map(|(p, _)| self.rollout_failures.get(p).cloned())
                .collect();
            let error = if failures.is_empty() {
                error
            } else {
                Some(failures.join("; "))
            };
            let _ = reply.send(Response {
                pods,
                error,
                ..Response::done()
            });
        }
    }
}
