//! Network faults while the project runs: the manifest's `faults:` and those `rcompose
//! fault add` adds. Whenever replicas start, stop or move, each running replica's
//! namespace is given the rules [`crate::plan::faults::rules`] computes for it (only
//! changes are applied), with a delay thread ([`network::nfqueue::Delayer`]) where a fault
//! adds latency. The rules live in the replicas' namespaces and go with them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::{ContainerState, Event, Supervisor, control};
use crate::manifest::Fault;
use crate::network::fault::{self as netfault, Applied};
use crate::network::nfqueue::Delayer;
use crate::plan::faults::{Endpoint, ServiceAddress};

/// What one replica's namespace has applied.
#[derive(Debug, Default)]
pub(super) struct FaultLink {
    /// The rules and shaping in the namespace.
    applied: Applied,
    /// Its delay line, while a fault delays its packets.
    delayer: Option<Delayer>,
    /// The last failure told, so that it is told once, and what was being applied then
    /// (not tried again at every turn of the loop, only when the rules change).
    failed: Option<(String, Applied)>,
    /// The faults reaching it, by name.
    faults: Vec<String>,
}

/// The faults of a supervisor.
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// Active faults by name.
    active: BTreeMap<String, Fault>,
    /// Those `fault add` added (an apply of a new manifest keeps them).
    added: std::collections::BTreeSet<String>,
    /// Each replica namespace's applied rules, by pin.
    links: HashMap<PathBuf, FaultLink>,
    /// The (client, backend) pairs the balancer was told partitions cut.
    pub(super) cut: std::collections::BTreeSet<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
}

impl Faults {
    /// The manifest's faults.
    pub(super) fn new(manifest: &BTreeMap<String, Fault>) -> Self {
        Faults {
            active: manifest.clone(),
            ..Faults::default()
        }
    }

    /// A new manifest's faults replace the old manifest's; added ones stay.
    pub(super) fn reset(&mut self, manifest: &BTreeMap<String, Fault>) {
        self.active.retain(|name, _| self.added.contains(name));
        for (name, fault) in manifest {
            self.active
                .entry(name.clone())
                .or_insert_with(|| fault.clone());
        }
    }

    /// Forgets the namespace pinned at `pin` (its replica stopped or moved): its delay line
    /// ends, which must happen before the namespace is removed (its socket pins it).
    pub(super) fn forget(&mut self, pin: &std::path::Path) {
        self.links.remove(pin);
    }

    /// Forgets every namespace (teardown).
    pub(super) fn forget_all(&mut self) {
        self.links.clear();
    }
}

impl Supervisor {
    /// Brings every running replica's namespace to the rules the active faults give it.
    /// Failures are told once per namespace as warnings (the stack keeps running) and
    /// returned, all of this pass: the replica, the faults its rules were to hold, why.
    pub(super) fn update_faults(&mut self) -> Vec<(String, Vec<String>, String)> {
        if self.faults.active.is_empty()
            && self.faults.links.is_empty()
            && self.faults.cut.is_empty()
        {
            return Vec::new();
        }
        let Some(net) = &self.net else {
            return Vec::new();
        };
        let mut endpoints = Vec::new();
        let mut pins: BTreeMap<String, PathBuf> = BTreeMap::new();
        for s in &self.slots {
            let r = &s.record;
            if r.init || r.state != ContainerState::Running {
                continue;
            }
            let Some(ip) = r.ip else { continue };
            let replica = r.instance();
            if pins.insert(replica.clone(), s.netns.clone()).is_none() {
                endpoints.push(Endpoint {
                    replica,
                    pod: r.pod.clone(),
                    node: s.node.clone(),
                    ip,
                });
            }
        }
        let services: Vec<ServiceAddress> = net
            .services
            .iter()
            .filter_map(|(name, &vip)| {
                let plan = self.opts.desired.services.get(name)?;
                Some(ServiceAddress {
                    name: name.clone(),
                    vip,
                    pods: plan.pods.clone(),
                })
            })
            .collect();
        let rules = crate::plan::faults::rules(&self.faults.active, &endpoints, &services);
        let cut = crate::plan::faults::cut_pairs(&self.faults.active, &endpoints, &services);
        if cut != self.faults.cut {
            if let Some(b) = &self.balancer {
                b.set_cut(cut.iter().copied());
            }
            self.faults.cut = cut;
        }
        // replicas gone lose their delay line (their rules go with their namespace); one
        // that restarts keeps its namespace, rules and all (`forget` drops a link before
        // its namespace is removed)
        let slots: Vec<&PathBuf> = self.slots.iter().map(|s| &s.netns).collect();
        self.faults.links.retain(|pin, _| slots.contains(&pin));
        let mut warnings = Vec::new();
        let mut failures = Vec::new();
        for (replica, pin) in &pins {
            let want_rules = rules.get(replica).map_or(&[][..], Vec::as_slice);
            if want_rules.is_empty() && !self.faults.links.contains_key(pin) {
                continue;
            }
            let link = self.faults.links.entry(pin.clone()).or_default();
            let want = Applied::of(want_rules);
            if link
                .failed
                .as_ref()
                .is_some_and(|(_, tried)| *tried == want)
            {
                continue;
            }
            let delays = netfault::delays(want_rules);
            let result = (|| {
                // the delay line listens before packets are sent to it, and lets its packets
                // go before the rules that sent them change (with `--queue-bypass`, packets
                // pass while nobody listens): here, packets let go after the rules changed
                // kept the namespace alive after `down` (its veth stayed, every time)
                match (&link.delayer, delays.is_empty()) {
                    (None, false) => link.delayer = Some(Delayer::start(pin, delays.clone())?),
                    (Some(d), false) => d.set(delays.clone())?,
                    (_, true) => link.delayer = None,
                }
                if link.applied != want {
                    netfault::apply(pin, &link.applied, &want)?;
                    link.applied = want.clone();
                }
                Ok::<(), crate::network::NetworkError>(())
            })();
            let names: Vec<String> = want_rules
                .iter()
                .map(|r| r.fault.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            match result {
                Ok(()) => {
                    link.failed = None;
                    link.faults = names;
                }
                Err(e) => {
                    let message = super::chain(&e);
                    failures.push((replica.clone(), names, message.clone()));
                    if link.failed.as_ref().map(|(m, _)| m) != Some(&message) {
                        warnings.push(format!("fault rules for {replica}: {message}"));
                    }
                    link.failed = Some((message, want));
                }
            }
        }
        for message in warnings {
            self.emit(&Event::Warning { message });
        }
        failures
    }

    /// `fault ls`: every active fault, with the replicas it reaches now.
    pub(super) fn fault_infos(&self) -> Vec<control::FaultInfo> {
        let mut reached: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for s in &self.slots {
            if s.record.init {
                continue;
            }
            if let Some(link) = self.faults.links.get(&s.netns) {
                for name in &link.faults {
                    let list = reached.entry(name.as_str()).or_default();
                    let replica = s.record.instance();
                    if !list.contains(&replica) {
                        list.push(replica);
                    }
                }
            }
        }
        self.faults
            .active
            .iter()
            .map(|(name, f)| control::FaultInfo {
                name: name.clone(),
                fault: f.clone(),
                source: if self.faults.added.contains(name) {
                    "command".into()
                } else {
                    "manifest".into()
                },
                replicas: reached.get(name.as_str()).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// `fault add`: adds (or replaces) a fault, after checking what it names exists.
    pub(super) fn add_fault(
        &mut self,
        name: Option<String>,
        fault: Fault,
    ) -> Result<String, String> {
        let desired = &self.opts.desired;
        let nodes: Vec<String> = if desired.nodes.is_empty() {
            Vec::new()
        } else {
            desired.nodes.keys().cloned().collect()
        };
        for scope in fault.scopes() {
            crate::manifest::fault::check_scope(
                scope,
                desired.pods.keys(),
                desired.services.keys(),
                nodes.iter(),
            )?;
        }
        let name = match name {
            Some(n) => {
                crate::manifest::fault::check_name(&n)?;
                n
            }
            None => (1..)
                .map(|i| format!("fault-{i}"))
                .find(|n| !self.faults.active.contains_key(n))
                .unwrap_or_default(),
        };
        let before = self.faults.active.insert(name.clone(), fault);
        let was_added = !self.faults.added.insert(name.clone());
        let failures: Vec<String> = self
            .update_faults()
            .into_iter()
            .filter(|(_, faults, _)| faults.contains(&name))
            .map(|(replica, _, why)| format!("{replica}: {why}"))
            .collect();
        if failures.is_empty() {
            let detail = self.faults.active.get(&name).map(Fault::summary);
            self.emit(&Event::Fault {
                name: name.clone(),
                phase: "added",
                detail,
            });
            return Ok(name);
        }
        // not applied everywhere: the fault is taken back (the one it replaced restored)
        match before {
            Some(old) => {
                self.faults.active.insert(name.clone(), old);
                if !was_added {
                    self.faults.added.remove(&name);
                }
            }
            None => {
                self.faults.active.remove(&name);
                self.faults.added.remove(&name);
            }
        }
        let _ = self.update_faults();
        Err(format!(
            "fault `{name}` could not be applied, so it was not added: {}",
            failures.join("; ")
        ))
    }

    /// `fault rm NAME...` (every fault when `names` is empty: `fault clear`): the names
    /// removed.
    pub(super) fn remove_faults(&mut self, names: &[String]) -> Result<Vec<String>, String> {
        if let Some(unknown) = names.iter().find(|n| !self.faults.active.contains_key(*n)) {
            let known: Vec<&String> = self.faults.active.keys().collect();
            return Err(if known.is_empty() {
                format!("no fault `{unknown}`: there are none")
            } else {
                format!(
                    "no fault `{unknown}`: the faults are {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        let removed: Vec<String> = if names.is_empty() {
            self.faults.active.keys().cloned().collect()
        } else {
            names.to_vec()
        };
        for n in &removed {
            self.faults.active.remove(n);
            self.faults.added.remove(n);
            self.emit(&Event::Fault {
                name: n.clone(),
                phase: "removed",
                detail: None,
            });
        }
        let failures: Vec<String> = self
            .update_faults()
            .into_iter()
            .map(|(replica, _, why)| format!("{replica}: {why}"))
            .collect();
        if !failures.is_empty() {
            return Err(format!(
                "removed {}, but the rules of some replicas could not be changed: {}",
                removed.join(", "),
                failures.join("; ")
            ));
        }
        Ok(removed)
    }
}
