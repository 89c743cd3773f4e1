//! Rolling updates: when an apply changes the plan of a pod that runs, its replicas are
//! replaced at a controlled rate instead of being stopped and started again. New replicas
//! (the pod's next revision) start beside the old ones, at most `max_surge` above the
//! replica count; an old replica is stopped only while the ready replicas stay at least the
//! count minus `max_unavailable`. A new replica joins the balancer when it is ready (as any
//! replica does); an old one leaves it before its stop signal, and its open connections
//! drain. Two revisions of replica N run side by side under one name (`web-1`): their files,
//! cgroups and namespaces are named by [`super::state::ContainerRecord::instance`].
//!
//! A new replica that exits, restarts or fails to start, or a rollout that is not complete
//! within `progress_deadline`, fails the rollout: it is rolled back at once, by a rollout to
//! the previous revision (whose replicas still running count as done), and the failure is
//! reported to the client of the apply (Kubernetes only marks such a rollout as failed).
//!
//! The state machine runs in the main loop ([`Supervisor::step_rollouts`], after every
//! event): nothing here blocks, old replicas are stopped as `Stopping` with a SIGKILL
//! deadline, and removed once every container of theirs has exited.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::state::ContainerState;
use super::{Event, Supervisor};
use crate::plan::desired::PodPlan;

/// Revisions kept per pod (as Kubernetes' `revisionHistoryLimit`).
const HISTORY: usize = 10;

/// A replica being replaced drains at least this long before its stop signal: a
/// connection accepted just before it left the endpoints may still be connecting to it.
const DRAIN_MIN: Duration = Duration::from_millis(50);

/// ... and at most this long (clients that keep connections open forever).
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// How often draining replicas are looked at.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// A rollout in progress.
pub(super) struct Rollout {
    /// The revision rolled out to.
    revision: u32,
    /// Its plan (also the desired state's).
    plan: PodPlan,
    /// What a failure rolls back to: the revision, its plan and its fingerprint. None for a
    /// rollback, which goes on until it is complete.
    back_to: Option<(u32, PodPlan, [u8; 32])>,
    /// When it fails unless complete.
    deadline: Instant,
    /// Since when each new replica (by instance) has been ready.
    ready_since: BTreeMap<String, Instant>,
    /// New replicas available at the last step (the hosts file changes with them).
    available: usize,
}

/// One revision of a pod's spec.
pub(super) struct Revision {
    number: u32,
    plan: PodPlan,
    fingerprint: [u8; 32],
    info: RevisionInfo,
}

/// A revision as `rollout history` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// Its number (1 at `up`).
    pub revision: u32,
    /// When it was made, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// What made it: `up`, `apply`, `undo to revision N`.
    pub cause: String,
    /// `progressing`, `complete`, `failed: <why>`, `rolled back`.
    pub status: String,
    /// The one running (or rolled out to).
    pub current: bool,
}

/// `rollout status`: the pod's current revision and the rollout in progress, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// The pod.
    pub pod: String,
    /// The revision it runs or rolls out to.
    pub revision: u32,
    /// A rollout is in progress.
    pub progressing: bool,
    /// Replicas wanted.
    pub replicas: u32,
    /// Replicas of `revision` that are ready (and have been for `min_ready`).
    pub updated_ready: u32,
    /// Replicas of other revisions still running.
    pub old: u32,
    /// How the last rollout ended, when it failed: why, and the revision it went back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// A replica (one instance) of a pod and where it stands.
struct Group {
    replica: u32,
    revision: u32,
    slots: Vec<usize>,
    /// Every container of it has exited (or never ran).
    done: bool,
    /// Being stopped.
    stopping: bool,
    /// Its containers all run and are ready.
    ready: bool,
    /// Why it failed, for a replica of the revision rolled out to.
    failed: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Supervisor {
    /// The revision pod `pod` runs (or rolls out to).
    pub(super) fn revision_of(&self, pod: &str) -> u32 {
        if let Some(r) = self.rollouts.get(pod) {
            return r.revision;
        }
        self.history
            .get(pod)
            .and_then(|h| h.iter().find(|r| r.info.current))
            .map_or(1, |r| r.number)
    }

    /// Records revision 1 of every pod that has none (the plans `up` started).
    pub(super) fn record_first_revisions(&mut self) {
        let fingerprints = self.fingerprints.clone();
        for (name, pod) in &self.opts.desired.pods {
            if self.history.contains_key(name) {
                continue;
            }
            let Some(fp) = fingerprints.get(name) else {
                continue;
            };
            self.history.insert(
                name.clone(),
                vec![Revision {
                    number: 1,
                    plan: pod.clone(),
                    fingerprint: *fp,
                    info: RevisionInfo {
                        revision: 1,
                        created_ms: now_ms(),
                        cause: "up".to_string(),
                        status: "complete".to_string(),
                        current: true,
                    },
                }],
            );
        }
    }

    /// Whether an apply that changes pod `name`'s plan rolls it out (it has a replica that
    /// runs) rather than stopping and starting it.
    pub(super) fn rolls_out(&self, name: &str) -> bool {
        self.slots.iter().any(|s| {
            s.record.pod == name
                && !s.record.init
                && matches!(
                    s.record.state,
                    ContainerState::Running | ContainerState::Restarting
                )
        })
    }

    /// Records a new revision of pod `plan.name` (fingerprint `fp`, made by `cause`) as
    /// the current one, `status`; returns its number and the revision that was current.
    fn push_revision(
        &mut self,
        plan: &PodPlan,
        fp: [u8; 32],
        cause: String,
        status: &str,
    ) -> (u32, Option<(u32, PodPlan, [u8; 32])>) {
        let history = self.history.entry(plan.name.clone()).or_default();
        let before = history
            .iter()
            .find(|r| r.info.current)
            .map(|r| (r.number, r.plan.clone(), r.fingerprint));
        let number = history.iter().map(|r| r.number).max().unwrap_or(0) + 1;
        for r in history.iter_mut() {
            r.info.current = false;
        }
        history.push(Revision {
            number,
            plan: plan.clone(),
            fingerprint: fp,
            info: RevisionInfo {
                revision: number,
                created_ms: now_ms(),
                cause,
                status: status.to_string(),
                current: true,
            },
        });
        if history.len() > HISTORY {
            history.remove(0);
        }
        (number, before)
    }

    /// A pod recreated (stopped, then started with its new plan): its new revision.
    pub(super) fn record_revision(&mut self, plan: PodPlan, fp: [u8; 32], cause: String) {
        self.push_revision(&plan, fp, cause, "complete");
    }

    /// Begins rolling pod `plan.name` out to a new revision of `plan` (fingerprint `fp`),
    /// made by `cause`; the desired state already has `plan`.
    pub(super) fn begin_rollout(&mut self, plan: PodPlan, fp: [u8; 32], cause: String) {
        let name = plan.name.clone();
        let (number, back_to) = self.push_revision(&plan, fp, cause, "progressing");
        let deadline = Instant::now() + plan.update.progress_deadline;
        self.rollouts.insert(
            name.clone(),
            Rollout {
                revision: number,
                plan,
                back_to,
                deadline,
                ready_since: BTreeMap::new(),
                available: 0,
            },
        );
        self.rollout_failures.remove(&name);
        self.emit(&Event::Rollout {
            pod: name,
            revision: number,
            phase: "started",
            detail: None,
        });
    }

    /// `rollout undo POD [--to-revision N]`: rolls the pod out to the plan of revision `to`
    /// (default: the one before the current) as a new revision.
    pub(super) fn undo(&mut self, pod: &str, to: Option<u32>) -> Result<(), String> {
        if !self.opts.desired.pods.contains_key(pod) {
            return Err(format!("no pod `{pod}` in this project"));
        }
        let history = self.history.get(pod).map(Vec::as_slice).unwrap_or_default();
        let current = history.iter().find(|r| r.info.current).map(|r| r.number);
        let target = match to {
            Some(n) => history.iter().find(|r| r.number == n).ok_or_else(|| {
                let kept: Vec<String> = history.iter().map(|r| r.number.to_string()).collect();
                format!(
                    "pod `{pod}` has no revision {n} (kept: {})",
                    kept.join(", ")
                )
            })?,
            None => history
                .iter()
                .rev()
                .find(|r| Some(r.number) < current && r.info.status != "progressing")
                .ok_or_else(|| {
                    format!(
                        "pod `{pod}` has no revision before {}",
                        current.unwrap_or(1)
                    )
                })?,
        };
        if Some(target.number) == current {
            return Err(format!(
                "pod `{pod}` runs revision {} already",
                target.number
            ));
        }
        let (number, fp) = (target.number, target.fingerprint);
        let mut plan = target.plan.clone();
        // the count is the current one: an undo changes the spec, not the scale
        plan.replicas = self.opts.desired.pods[pod].replicas;
        self.opts.desired.pods.insert(pod.to_string(), plan.clone());
        self.fingerprints.insert(pod.to_string(), fp);
        if self.rolls_out(pod) {
            self.begin_rollout(plan, fp, format!("undo to revision {number}"));
        } else {
            return Err(format!(
                "pod `{pod}` has no running replica to roll back; run `rcompose up` with the spec you want"
            ));
        }
        Ok(())
    }

    /// The replicas of pod `pod`, by instance.
    fn groups(&self, pod: &str) -> BTreeMap<String, Group> {
        let mut out: BTreeMap<String, Group> = BTreeMap::new();
        for (i, s) in self.slots.iter().enumerate() {
            if s.record.pod != pod {
                continue;
            }
            let g = out.entry(s.record.instance()).or_insert(Group {
                replica: s.record.replica,
                revision: s.record.revision,
                slots: Vec::new(),
                done: true,
                stopping: false,
                ready: true,
                failed: None,
            });
            g.slots.push(i);
            let r = &s.record;
            if !r.state.is_final() {
                g.done = false;
            }
            if r.state == ContainerState::Stopping {
                g.stopping = true;
            }
            let running_ready = r.state == ContainerState::Running && r.ready;
            if !r.init && !running_ready {
                g.ready = false;
            }
            if g.failed.is_none() && r.state != ContainerState::Stopping {
                let name = r.replica_name();
                g.failed = match r.state {
                    ContainerState::Failed => Some(format!(
                        "`{name}` failed to start{}",
                        r.reason
                            .as_deref()
                            .map(|w| format!(": {w}"))
                            .unwrap_or_default()
                    )),
                    ContainerState::Exited if !r.init || r.exit_code != Some(0) => Some(format!(
                        "`{name}` exited with code {}",
                        r.exit_code.map_or("none".to_string(), |c| c.to_string())
                    )),
                    _ if r.restarts > 0 => Some(format!(
                        "`{name}` exited with code {} and was restarted",
                        r.exit_code.map_or("none".to_string(), |c| c.to_string())
                    )),
                    _ => None,
                };
            }
        }
        out
    }

    /// Takes every rollout one step on (see the module doc); called after every event.
    pub(super) fn step_rollouts(&mut self) {
        self.signal_drained();
        let pods: Vec<String> = self.rollouts.keys().cloned().collect();
        for pod in pods {
            self.step_rollout(&pod);
        }
    }

    fn step_rollout(&mut self, pod: &str) {
        let now = Instant::now();
        let Some(r) = self.rollouts.get(pod) else {
            return;
        };
        let (target, n, min_ready) = (r.revision, r.plan.replicas, r.plan.update.min_ready);
        let (surge, unavailable) = r.plan.update.counts(n);
        let mut changed = false;
        // replicas of other revisions, and those this rollout (or an earlier) replaced,
        // go once they have exited, with everything they had
        let gone: BTreeSet<String> = self
            .groups(pod)
            .into_iter()
            .filter(|(k, g)| g.done && (g.revision != target || self.replaced.contains(k)))
            .map(|(k, _)| k)
            .collect();
        if !gone.is_empty() {
            self.remove_where(|s| s.record.pod == pod && gone.contains(&s.record.instance()));
            self.replaced.retain(|k| !gone.contains(k));
            changed = true;
        }
        let groups = self.groups(pod);
        let Some(r) = self.rollouts.get_mut(pod) else {
            return;
        };
        // readiness of the new replicas, held `min_ready`
        r.ready_since
            .retain(|k, _| groups.get(k).is_some_and(|g| g.ready && !g.stopping));
        for (k, _) in groups
            .iter()
            .filter(|(_, g)| g.revision == target && g.ready && !g.stopping)
        {
            r.ready_since.entry(k.clone()).or_insert(now);
        }
        let available: BTreeSet<String> = r
            .ready_since
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= min_ready)
            .map(|(k, _)| k.clone())
            .collect();
        let new: Vec<(&String, &Group)> = groups
            .iter()
            .filter(|(_, g)| g.revision == target && !g.stopping && !g.done)
            .collect();
        let new_available = new
            .iter()
            .filter(|(k, g)| g.replica <= n && available.contains(*k))
            .count();
        let old: Vec<(&String, &Group)> = groups
            .iter()
            .filter(|(_, g)| g.revision != target && !g.stopping && !g.done)
            .collect();
        let draining = groups.values().filter(|g| g.stopping && !g.done).count();
        if new_available != r.available {
            r.available = new_available;
            changed = true;
        }
        // a failed new replica, or the deadline: back to the previous revision
        if let Some((back, back_plan, back_fp)) = r.back_to.clone() {
            let failed = groups
                .values()
                .filter(|g| g.revision == target && !g.stopping)
                .find_map(|g| g.failed.clone());
            let late = (now >= r.deadline).then(|| {
                format!(
                    "{new_available} of {n} new replicas ready after {} s (`progress_deadline`)",
                    r.plan.update.progress_deadline.as_secs_f64()
                )
            });
            if let Some(why) = failed.or(late) {
                self.roll_back(pod, target, why, back, back_plan, back_fp);
                return;
            }
        }
        // complete: every replica of the revision available, the old ones gone
        if new_available >= n as usize && old.is_empty() && draining == 0 {
            self.finish_rollout(pod, target);
            return;
        }
        let plan = r.plan.clone();
        // start new replicas while the total stays within the surge (replicas still
        // stopping count: they hold their memory and CPU until they have exited)
        let mut total = old.len() + new.len() + draining;
        let have: BTreeSet<u32> = new.iter().map(|(_, g)| g.replica).collect();
        let mut added = Vec::new();
        for k in 1..=n {
            if total >= (n + surge) as usize {
                break;
            }
            let key = super::state::instance_name(pod, k, target);
            if have.contains(&k) || groups.contains_key(&key) {
                continue;
            }
            added.push(k);
            total += 1;
        }
        // stop old replicas while the available ones stay at the count minus
        // `unavailable`: unready ones first, then those beyond the count, then those
        // whose new replica is available, highest first
        let replaced = |replica: u32| {
            new.iter()
                .any(|(k, g)| g.replica == replica && available.contains(*k))
        };
        let mut order: Vec<&(&String, &Group)> = old.iter().collect();
        order.sort_by_key(|(_, g)| {
            (
                g.ready,
                g.replica <= n,
                !replaced(g.replica),
                std::cmp::Reverse(g.replica),
            )
        });
        let mut avail = new_available + old.iter().filter(|(_, g)| g.ready).count();
        let floor = n.saturating_sub(unavailable) as usize;
        let mut stop: Vec<(String, Vec<u64>)> = Vec::new();
        for (k, g) in order {
            if g.ready {
                if avail <= floor {
                    continue;
                }
                avail -= 1;
            }
            stop.push((
                (*k).clone(),
                g.slots.iter().map(|&i| self.slots[i].id).collect(),
            ));
        }
        for k in added {
            let first = self.slots.len();
            let made = self
                .add_replicas_at(&plan, k..=k, target)
                .and_then(|()| self.check_users_from(first))
                .and_then(|()| self.write_files_from(first));
            if let Err(e) = made {
                // the new slots never ran
                let first_id = self.slots.get(first).map_or(u64::MAX, |s| s.id);
                self.remove_where(|s| s.id >= first_id);
                let why = super::chain(&e);
                if let Some((back, back_plan, back_fp)) =
                    self.rollouts.get(pod).and_then(|r| r.back_to.clone())
                {
                    self.roll_back(pod, target, why, back, back_plan, back_fp);
                    return;
                }
                self.emit(&Event::Warning { message: why });
                break;
            }
            self.sort_slots();
            changed = true;
        }
        if !stop.is_empty() {
            let ids: Vec<u64> = stop
                .iter()
                .flat_map(|(_, ids)| ids.iter().copied())
                .collect();
            self.replaced.extend(stop.into_iter().map(|(k, _)| k));
            self.stop_without_waiting(&ids);
            changed = true;
        }
        if changed {
            let _ = self.write_hosts();
            let _ = self.save();
        }
    }

    /// The failed rollout of `pod` to `failed_revision` goes back to `back` (its plan and
    /// fingerprint): a rollout that cannot fail.
    fn roll_back(
        &mut self,
        pod: &str,
        failed_revision: u32,
        why: String,
        back: u32,
        mut plan: PodPlan,
        fp: [u8; 32],
    ) {
        // the spec goes back, the count stays (a `scale` since that revision holds)
        if let Some(now) = self.opts.desired.pods.get(pod) {
            plan.replicas = now.replicas;
        }
        let message = format!(
            "the rollout of pod `{pod}` to revision {failed_revision} failed: {why}; rolled back to revision {back}"
        );
        if let Some(h) = self.history.get_mut(pod) {
            for r in h.iter_mut() {
                r.info.current = r.number == back;
                if r.number == failed_revision {
                    r.info.status = format!("failed: {why}");
                }
            }
        }
        self.emit(&Event::Rollout {
            pod: pod.to_string(),
            revision: failed_revision,
            phase: "failed",
            detail: Some(format!("{why}; rolling back to revision {back}")),
        });
        self.rollout_failures.insert(pod.to_string(), message);
        self.opts.desired.pods.insert(pod.to_string(), plan.clone());
        self.fingerprints.insert(pod.to_string(), fp);
        // nothing of the failed revision restarts from here on
        for s in self
            .slots
            .iter_mut()
            .filter(|s| s.record.pod == pod && s.record.revision == failed_revision)
        {
            s.due = None;
        }
        let deadline = Instant::now() + Duration::from_secs(3600 * 24 * 365);
        self.rollouts.insert(
            pod.to_string(),
            Rollout {
                revision: back,
                plan,
                back_to: None,
                deadline,
                ready_since: BTreeMap::new(),
                available: 0,
            },
        );
        self.step_rollout(pod);
    }

    fn finish_rollout(&mut self, pod: &str, revision: u32) {
        let Some(r) = self.rollouts.remove(pod) else {
            return;
        };
        let rolled_back = r.back_to.is_none();
        if let Some(h) = self.history.get_mut(pod) {
            for rev in h.iter_mut().filter(|rev| rev.number == revision) {
                if !rolled_back {
                    rev.info.status = "complete".to_string();
                }
            }
        }
        self.emit(&Event::Rollout {
            pod: pod.to_string(),
            revision,
            phase: if rolled_back {
                "rolled back"
            } else {
                "complete"
            },
            detail: None,
        });
        let _ = self.write_hosts();
        let _ = self.save();
    }

    /// Stops the slots with ids `ids` without waiting: out of the endpoints first; once the
    /// connections the balancer relays to them have ended (see [`Supervisor::signal_drained`]),
    /// their stop signal, SIGKILL after their grace period (see `run_due_probes`); their
    /// exits are collected by the main loop. Slots that do not run are done at once.
    fn stop_without_waiting(&mut self, ids: &[u64]) {
        let now = Instant::now();
        for s in self.slots.iter_mut().filter(|s| ids.contains(&s.id)) {
            s.due = None;
            match s.record.pid {
                Some(_) if s.record.state.is_live() => {
                    s.record.state = ContainerState::Stopping;
                    self.draining.push((s.id, now));
                }
                _ => {
                    if !s.record.state.is_final() {
                        s.record.state = ContainerState::Exited;
                        s.record.reason = Some("replaced".to_string());
                    }
                }
            }
        }
        // no new connection reaches them from here on
        self.update_endpoints();
        self.signal_drained();
    }

    /// Sends their stop signal to the replicas being replaced whose connections through the
    /// balancer have ended (after at least [`DRAIN_MIN`], for connects already under way),
    /// or that drained for [`DRAIN_MAX`]: a request in flight is never cut by the stop (an
    /// HTTP server that dies on SIGTERM would close it half answered).
    pub(super) fn signal_drained(&mut self) {
        if self.draining.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut keep = Vec::new();
        for (id, since) in std::mem::take(&mut self.draining) {
            let Some(s) = self.slots.iter().find(|s| s.id == id) else {
                continue;
            };
            let Some(pid) = s
                .record
                .pid
                .filter(|_| s.record.state == ContainerState::Stopping)
            else {
                continue;
            };
            let open = match (&self.balancer, s.record.ip) {
                (Some(b), Some(ip)) => b.open_connections(ip),
                _ => 0,
            };
            let waited = now.saturating_duration_since(since);
            if (open > 0 || waited < DRAIN_MIN) && waited < DRAIN_MAX {
                keep.push((id, since));
                continue;
            }
            let grace = s.plan.stop_grace_period.unwrap_or(self.opts.grace);
            let sig = Signal::try_from(s.plan.stop_signal).unwrap_or(Signal::SIGTERM);
            let _ = kill(Pid::from_raw(pid), sig);
            if let Some(s) = self.slots.iter_mut().find(|s| s.id == id) {
                s.kill_at = Some(now + grace);
            }
        }
        self.draining = keep;
    }

    /// Before a blocking stop of `members` (`scale` down, `stop`, `restart`, a pod
    /// recreated or removed by an apply; not teardown): takes them out of the endpoints and
    /// waits, as a rollout does, until the balancer relays no connection to them (between
    /// [`DRAIN_MIN`] and [`DRAIN_MAX`]), so that their stop signal cuts no request. Exits are
    /// collected meanwhile; a termination signal or `down` ends the wait (the signal is
    /// returned, for the caller's stop to act on).
    pub(super) fn drain_before_stop(&mut self, members: &[usize]) -> Option<i32> {
        let ips: Vec<std::net::Ipv4Addr> = members
            .iter()
            .filter(|&&i| self.slots[i].record.state.is_live())
            .filter_map(|&i| self.slots[i].record.ip)
            .collect();
        if self.balancer.is_none()
            || ips.is_empty()
            || !ips
                .iter()
                .any(|ip| self.endpoints.values().any(|e| e.contains(ip)))
        {
            return None;
        }
        for &i in members {
            if self.slots[i].record.state.is_live() {
                self.slots[i].record.state = ContainerState::Stopping;
            }
        }
        self.update_endpoints();
        let start = Instant::now();
        loop {
            let open: usize = match &self.balancer {
                Some(b) => ips.iter().map(|ip| b.open_connections(*ip)).sum(),
                None => 0,
            };
            let waited = start.elapsed();
            if (open == 0 && waited >= DRAIN_MIN) || waited >= DRAIN_MAX {
                return None;
            }
            match self.rx.recv_timeout(DRAIN_POLL) {
                Ok(super::Msg::Exit(pid, status)) => {
                    self.exits.insert(pid, status);
                    self.collect_exits();
                }
                Ok(super::Msg::Signal(sig)) => return Some(sig as i32),
                Ok(super::Msg::Probe(_)) => {}
                Ok(super::Msg::Control(super::control::Request::Down { grace_ms }, reply)) => {
                    if let Some(grace) = grace_ms.map(Duration::from_millis) {
                        self.grace_override = Some(grace);
                    }
                    let _ = reply.send(super::control::Response::done());
                    return None;
                }
                Ok(super::Msg::Control(_, reply)) => {
                    let _ = reply.send(super::control::Response::refused(
                        "the project is stopping containers; try again",
                    ));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Keeps the start order (as `ps` shows it): by wave, replica and revision.
    pub(super) fn sort_slots(&mut self) {
        let order: Vec<&String> = self.opts.desired.waves.iter().flatten().collect();
        self.slots.sort_by_key(|s| {
            (
                order.iter().position(|p| **p == s.record.pod),
                s.record.replica,
                s.record.revision,
            )
        });
    }

    /// The next time a rollout must look again without an event: a new replica's
    /// `min_ready`, or the deadline.
    pub(super) fn next_rollout_timer(&self) -> Option<Instant> {
        let drain = (!self.draining.is_empty()).then(|| Instant::now() + DRAIN_POLL);
        self.rollouts
            .values()
            .flat_map(|r| {
                let min_ready = r.plan.update.min_ready;
                r.ready_since
                    .values()
                    .map(move |t| *t + min_ready)
                    .chain(r.back_to.as_ref().map(|_| r.deadline))
            })
            .filter(|t| *t > Instant::now())
            .chain(drain)
            .min()
    }

    /// `rollout status POD`.
    pub(super) fn rollout_status(&self, pod: &str) -> Result<RolloutStatus, String> {
        let Some(plan) = self.opts.desired.pods.get(pod) else {
            return Err(format!("no pod `{pod}` in this project"));
        };
        let revision = self.revision_of(pod);
        let groups = self.groups(pod);
        let updated_ready = groups
            .values()
            .filter(|g| g.revision == revision && g.ready && !g.stopping)
            .count() as u32;
        let old = groups
            .values()
            .filter(|g| g.revision != revision && !g.done)
            .count() as u32;
        Ok(RolloutStatus {
            pod: pod.to_string(),
            revision,
            progressing: self.rollouts.contains_key(pod),
            replicas: plan.replicas,
            updated_ready,
            old,
            failed: self.rollout_failures.get(pod).cloned(),
        })
    }

    /// `rollout history POD`.
    pub(super) fn rollout_history(&self, pod: &str) -> Result<Vec<RevisionInfo>, String> {
        if !self.opts.desired.pods.contains_key(pod) {
            return Err(format!("no pod `{pod}` in this project"));
        }
        Ok(self
            .history
            .get(pod)
            .map(|h| h.iter().map(|r| r.info.clone()).collect())
            .unwrap_or_default())
    }
}
