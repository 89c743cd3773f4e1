//! Who the network faults reach: for each running replica, the packet rules its pod's
//! network namespace needs, from the faults and where the replicas and services are now.
//! Pure; `network::fault` renders the rules for iptables and tc, and the supervisor applies
//! them whenever replicas come, go or move.
//!
//! A fault acts on the packets its target's replicas send out of their pod (`eth0`), toward
//! the peer's addresses when it has a peer: the replicas' own, plus the virtual address of
//! a peer service, or of every service that selects only pods of a peer pod (so that
//! `peer: pod/db` covers `http://db/` through the balancer). A partition drops the packets
//! of both sides toward each other. Traffic through the balancer leaves a pod toward a
//! service's virtual address and reaches the backend from the bridge's address, so a fault
//! on a backend (no peer) delays its answers to every client.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::manifest::Fault;
use crate::manifest::fault::{Scope, ScopeKind};

/// A running replica on the project network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `api-2`.
    pub replica: String,
    /// `api`.
    pub pod: String,
    /// The node it is placed on (`None` without declared nodes).
    pub node: Option<String>,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// A service's virtual address and the pods it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddress {
    /// The service.
    pub name: String,
    /// Its virtual address.
    pub vip: Ipv4Addr,
    /// The pods it selects.
    pub pods: Vec<String>,
}

/// What a rule does to the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Drop every one.
    Drop,
    /// Drop this many millionths of them, at random.
    Loss {
        /// Millionths.
        ppm: u32,
    },
    /// Hold each one for `latency` ± `jitter` (in order) in user space, through queue
    /// `queue` of the namespace.
    Delay {
        /// The netfilter queue number (1-based, one per fault).
        queue: u16,
        /// Added delay.
        latency: Duration,
        /// ± variation.
        jitter: Duration,
    },
    /// Send them through a class limited to `bps` bits per second.
    Rate {
        /// The traffic class number (1-based, one per fault).
        class: u16,
        /// Bits per second.
        bps: u64,
    },
}

/// One packet rule of a replica's namespace: what leaves its `eth0` toward `dst`
/// (everything when `None`) gets `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The fault it comes from.
    pub fault: String,
    /// Destination addresses, sorted; `None`: any.
    pub dst: Option<Vec<Ipv4Addr>>,
    /// What happens to them.
    pub action: Action,
}

/// The replicas a scope selects.
fn members<'a>(
    scope: &Scope,
    endpoints: &'a [Endpoint],
    services: &[ServiceAddress],
) -> Vec<&'a Endpoint> {
    endpoints
        .iter()
        .filter(|e| match scope.kind {
            ScopeKind::Pod => e.pod == scope.name,
            ScopeKind::Node => e.node.as_deref() == Some(&scope.name),
            ScopeKind::Service => services
                .iter()
                .any(|s| s.name == scope.name && s.pods.contains(&e.pod)),
        })
        .collect()
}

/// The addresses packets toward a scope go to: its replicas' own, and the virtual
/// addresses that lead only to it.
fn addresses(scope: &Scope, endpoints: &[Endpoint], services: &[ServiceAddress]) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = members(scope, endpoints, services)
        .iter()
        .map(|e| e.ip)
        .collect();
    for s in services {
        let leads_only_here = match scope.kind {
            ScopeKind::Service => s.name == scope.name,
            ScopeKind::Pod => !s.pods.is_empty() && s.pods.iter().all(|p| *p == scope.name),
            ScopeKind::Node => false,
        };
        if leads_only_here {
            ips.push(s.vip);
        }
    }
    ips.sort_unstable();
    ips.dedup();
    ips
}

/// The rules of every replica some fault reaches, by replica name; each replica's rules in
/// the faults' name order: drops first, then the losses, the delays and the rate limits
/// (a packet goes through the first delay that matches it).
#[must_use]
pub fn rules(
    faults: &BTreeMap<String, Fault>,
    endpoints: &[Endpoint],
    services: &[ServiceAddress],
) -> BTreeMap<String, Vec<Rule>> {
    let mut out: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for (index, (name, fault)) in faults.iter().enumerate() {
        // at most u16::MAX faults get a queue and a class of their own; more is absurd
        let number = u16::try_from(index + 1).unwrap_or(u16::MAX);
        let dst = fault
            .peer
            .as_ref()
            .map(|p| addresses(p, endpoints, services));
        let mut actions = Vec::new();
        if fault.partition {
            actions.push(Action::Drop);
        }
        if let Some(ppm) = fault.loss_ppm {
            actions.push(if ppm >= 1_000_000 {
                Action::Drop
            } else {
                Action::Loss { ppm }
            });
        }
        if let Some(latency) = fault.latency {
            actions.push(Action::Delay {
                queue: number,
                latency,
                jitter: fault.jitter,
            });
        }
        if let Some(bps) = fault.bandwidth_bps {
            actions.push(Action::Rate { class: number, bps });
        }
        let mut add = |replica: &str, dst: Option<Vec<Ipv4Addr>>, action: Action| {
            if dst.as_ref().is_some_and(Vec::is_empty) {
                return; // a peer with no replica running yet: nothing to match
            }
            out.entry(replica.to_string()).or_default().push(Rule {
                fault: name.clone(),
                dst,
                action,
            });
        };
        for e in members(&fault.target, endpoints, services) {
            for &action in &actions {
                add(&e.replica, dst.clone(), action);
            }
        }
        if let (true, Some(peer)) = (fault.partition, &fault.peer) {
            let back = addresses(&fault.target, endpoints, services);
            for e in members(peer, endpoints, services) {
                add(&e.replica, Some(back.clone()), Action::Drop);
            }
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|r| match r.action {
            Action::Drop => 0,
            Action::Loss { .. } => 1,
            Action::Delay { .. } => 2,
            Action::Rate { .. } => 3,
        });
    }
    out
}

/// The (client, backend) address pairs the partitions with a peer cut apart, both ways,
/// for the balancer: a connection through a service's virtual address leaves the client's
/// pod toward the host, so the rules in the pods never see which backend it reaches.
#[must_use]
pub fn cut_pairs(
    faults: &BTreeMap<String, Fault>,
    endpoints: &[Endpoint],
    services: &[ServiceAddress],
) -> std::collections::BTreeSet<(Ipv4Addr, Ipv4Addr)> {
    let mut out = std::collections::BTreeSet::new();
    for fault in faults.values().filter(|f| f.partition) {
        let Some(peer) = &fault.peer else { continue };
        let sides = (
            members(&fault.target, endpoints, services),
            members(peer, endpoints, services),
        );
        for a in &sides.0 {
            for b in &sides.1 {
                if a.ip != b.ip {
                    out.insert((a.ip, b.ip));
                    out.insert((b.ip, a.ip));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FaultSpec;

    fn fault(target: &str, peer: Option<&str>, f: impl FnOnce(&mut FaultSpec)) -> Fault {
        let mut spec = FaultSpec {
            target: target.into(),
            peer: peer.map(Into::into),
            ..FaultSpec::default()
        };
        f(&mut spec);
        Fault::parse(&spec).unwrap()
    }

    fn endpoint(replica: &str, node: &str, last: u8) -> Endpoint {
        Endpoint {
            replica: replica.into(),
            pod: replica.rsplit_once('-').unwrap().0.into(),
            node: Some(node.into()),
            ip: Ipv4Addr::new(10, 0, 0, last),
        }
    }

    fn world() -> (Vec<Endpoint>, Vec<ServiceAddress>) {
        let endpoints = vec![
            endpoint("api-1", "w1", 11),
            endpoint("api-2", "w2", 12),
            endpoint("db-1", "w1", 21),
            endpoint("web-1", "w2", 31),
        ];
        let services = vec![
            ServiceAddress {
                name: "db".into(),
                vip: Ipv4Addr::new(10, 0, 0, 2),
                pods: vec!["db".into()],
            },
            ServiceAddress {
                name: "backend".into(),
                vip: Ipv4Addr::new(10, 0, 0, 3),
                pods: vec!["api".into(), "db".into()],
            },
        ];
        (endpoints, services)
    }

    #[test]
    fn latency_on_a_pod_delays_all_it_sends() {
        let (e, s) = world();
        let faults = BTreeMap::from([(
            "slow-db".to_string(),
            fault("pod/db", None, |f| f.latency = Some("200ms".into())),
        )]);
        let rules = rules(&faults, &e, &s);
        assert_eq!(rules.keys().collect::<Vec<_>>(), ["db-1"]);
        assert_eq!(
            rules["db-1"],
            [Rule {
                fault: "slow-db".into(),
                dst: None,
                action: Action::Delay {
                    queue: 1,
                    latency: Duration::from_millis(200),
                    jitter: Duration::ZERO
                }
            }]
        );
    }

    #[test]
    fn a_pod_peer_covers_the_services_that_lead_only_to_it() {
        let (e, s) = world();
        let faults = BTreeMap::from([(
            "lossy".to_string(),
            fault("service/backend", Some("pod/db"), |f| {
                f.loss = Some("10%".into());
                f.bandwidth = Some("1mbit".into());
            }),
        )]);
        let rules = rules(&faults, &e, &s);
        // backend selects api and db: all three replicas, toward db-1 and the db service
        assert_eq!(rules.keys().collect::<Vec<_>>(), ["api-1", "api-2", "db-1"]);
        let to_db = Some(vec![
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 21),
        ]);
        assert_eq!(rules["api-1"][0].dst, to_db);
        assert_eq!(rules["api-1"][0].action, Action::Loss { ppm: 100_000 });
        assert_eq!(
            rules["api-1"][1].action,
            Action::Rate {
                class: 1,
                bps: 1_000_000
            }
        );
    }

    #[test]
    fn a_partition_between_nodes_drops_both_ways_and_skips_empty_peers() {
        let (e, s) = world();
        let faults = BTreeMap::from([
            (
                "a-split".to_string(),
                fault("node/w1", Some("node/w2"), |f| f.partition = true),
            ),
            (
                "b-nobody".to_string(),
                fault("pod/web", Some("node/w3"), |f| f.partition = true),
            ),
        ]);
        let rules = rules(&faults, &e, &s);
        let w1 = vec![Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 21)];
        let w2 = vec![Ipv4Addr::new(10, 0, 0, 12), Ipv4Addr::new(10, 0, 0, 31)];
        for (replica, dst) in [
            ("api-1", &w2),
            ("db-1", &w2),
            ("api-2", &w1),
            ("web-1", &w1),
        ] {
            assert_eq!(
                rules[replica],
                [Rule {
                    fault: "a-split".into(),
                    dst: Some(dst.clone()),
                    action: Action::Drop
                }],
                "{replica}"
            );
        }
    }

    #[test]
    fn partitions_with_a_peer_cut_their_pairs_in_the_balancer_both_ways() {
        let (e, s) = world();
        let faults = BTreeMap::from([
            (
                "split".to_string(),
                fault("node/w1", Some("node/w2"), |f| f.partition = true),
            ),
            (
                "slow".to_string(),
                fault("pod/db", Some("pod/web"), |f| f.latency = Some("1s".into())),
            ),
            (
                "alone".to_string(),
                fault("pod/web", None, |f| f.partition = true),
            ),
        ]);
        let pairs = cut_pairs(&faults, &e, &s);
        let ip = |last| Ipv4Addr::new(10, 0, 0, last);
        // w1 holds api-1 (11) and db-1 (21), w2 api-2 (12) and web-1 (31)
        assert_eq!(pairs.len(), 8);
        for (a, b) in [(11, 12), (11, 31), (21, 12), (21, 31)] {
            assert!(pairs.contains(&(ip(a), ip(b))) && pairs.contains(&(ip(b), ip(a))));
        }
    }

    #[test]
    fn drops_come_before_delays_and_full_loss_is_a_drop() {
        let (e, s) = world();
        let faults = BTreeMap::from([
            (
                "a".to_string(),
                fault("pod/api", None, |f| f.latency = Some("10ms".into())),
            ),
            (
                "b".to_string(),
                fault("pod/api", Some("pod/db"), |f| f.loss = Some("100%".into())),
            ),
        ]);
        let rules = rules(&faults, &e, &s);
        let actions: Vec<Action> = rules["api-2"].iter().map(|r| r.action).collect();
        assert_eq!(actions[0], Action::Drop);
        assert!(matches!(actions[1], Action::Delay { queue: 1, .. }));
    }
}
