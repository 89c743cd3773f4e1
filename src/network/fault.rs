//! Network faults on a replica's link ([`crate::plan::faults`] says which rules a replica
//! gets): applied inside the replica's network namespace, on what leaves its `eth0`, so
//! they go away with the namespace and need no cleanup on the host.
//!
//! netem is the usual tool, but kernels without `sch_netem` are common (this project's CI
//! machine has none, nor `prio`), so each effect uses what such kernels do have:
//! - drops and partitions: `NFQUEUE` to a queue whose packets [`super::nfqueue`] drops (an
//!   iptables `DROP` on the sender's own path would fail its `send` with EPERM, which no
//!   real link does);
//! - loss: the `statistic` match in random mode, then that queue;
//! - latency with jitter: `NFQUEUE` (with `--queue-bypass`, so traffic flows if nobody
//!   listens) to [`super::nfqueue`], which holds each packet in user space and lets it go
//!   after its delay, in order;
//! - bandwidth: an HTB class per fault on `eth0` (unclassified traffic goes out unshaped),
//!   the packets put in it by `CLASSIFY` in the `mangle` table's `POSTROUTING` chain.
//!
//! The rules are written with `iptables-restore` (which replaces the tables at once) and
//! `tc`, tools of the host (packages iptables and iproute2).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use super::NetworkError;
use super::nfqueue::Delay;
use crate::plan::faults::{Action, Rule};

/// The replica's link (made by `link::attach`).
const LINK: &str = "eth0";

/// The queue every dropped packet (partition, loss) goes to: the delay line drops them, so
/// that the sender sees a silent loss, not EPERM from its own `send`. Faults' delay queues
/// are numbered from 1.
pub const DROP_QUEUE: u16 = u16::MAX;

/// Packets a rate-limited class (and the unshaped direct queue) hold before dropping.
const QUEUE_PACKETS: u32 = 1000;

/// The `-d` part of a rule: every address, as `iptables` takes a list.
fn destination(dst: Option<&Vec<Ipv4Addr>>) -> String {
    match dst {
        None => String::new(),
        Some(ips) => {
            let list: Vec<String> = ips.iter().map(|ip| format!("{ip}/32")).collect();
            format!(" -d {}", list.join(","))
        }
    }
}

/// The `iptables-restore` input for `rules` (the `filter` and `mangle` tables, complete:
/// with no rules it empties them).
#[must_use]
pub fn iptables_script(rules: &[Rule]) -> String {
    let mut filter = String::new();
    let mut mangle = String::new();
    for r in rules {
        let dst = destination(r.dst.as_ref());
        // writing to a String cannot fail
        let _ = match r.action {
            Action::Drop => writeln!(
                filter,
                "-A OUTPUT -o {LINK}{dst} -j NFQUEUE --queue-num {DROP_QUEUE} --queue-bypass"
            ),
            Action::Loss { ppm } => writeln!(
                filter,
                "-A OUTPUT -o {LINK}{dst} -m statistic --mode random --probability {:.6} -j NFQUEUE --queue-num {DROP_QUEUE} --queue-bypass",
                f64::from(ppm) / 1e6
            ),
            Action::Delay { queue, .. } => writeln!(
                filter,
                "-A OUTPUT -o {LINK}{dst} -j NFQUEUE --queue-num {queue} --queue-bypass"
            ),
            Action::Rate { class, .. } => writeln!(
                mangle,
                "-A POSTROUTING -o {LINK}{dst} -j CLASSIFY --set-class 1:{class:x}"
            ),
        };
    }
    format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{filter}COMMIT\n\
         *mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n{mangle}COMMIT\n"
    )
}

/// The `tc -batch` input that shapes `eth0` for the rate limits of `rules` (after its
/// root qdisc was removed); `None` when there are none.
#[must_use]
pub fn tc_script(rules: &[Rule]) -> Option<String> {
    let mut classes: BTreeMap<u16, u64> = BTreeMap::new();
    for r in rules {
        if let Action::Rate { class, bps } = r.action {
            classes.insert(class, bps);
        }
    }
    if classes.is_empty() {
        return None;
    }
    let mut out =
        format!("qdisc add dev {LINK} root handle 1: htb default 0 direct_qlen {QUEUE_PACKETS}\n");
    for (class, bps) in classes {
        let _ = writeln!(
            out,
            "class add dev {LINK} parent 1: classid 1:{class:x} htb rate {bps}bit ceil {bps}bit"
        );
        // leaf queue handles start at 2: (1: is the root)
        let _ = writeln!(
            out,
            "qdisc add dev {LINK} parent 1:{class:x} handle {:x}: pfifo limit {QUEUE_PACKETS}",
            u32::from(class) + 1
        );
    }
    Some(out)
}

/// What each netfilter queue `rules` send packets to does with them.
#[must_use]
pub fn delays(rules: &[Rule]) -> BTreeMap<u16, Delay> {
    rules
        .iter()
        .filter_map(|r| match r.action {
            Action::Delay {
                queue,
                latency,
                jitter,
            } => Some((
                queue,
                Delay {
                    latency,
                    jitter,
                    drop: false,
                },
            )),
            Action::Drop | Action::Loss { .. } => Some((
                DROP_QUEUE,
                Delay {
                    latency: Duration::ZERO,
                    jitter: Duration::ZERO,
                    drop: true,
                },
            )),
            Action::Rate { .. } => None,
        })
        .collect()
}

/// What is applied in one namespace, to compare with what should be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The `iptables-restore` input.
    pub iptables: String,
    /// The `tc` input, if `eth0` is shaped.
    pub tc: Option<String>,
}

impl Applied {
    /// What `rules` need.
    #[must_use]
    pub fn of(rules: &[Rule]) -> Self {
        Applied {
            iptables: iptables_script(rules),
            tc: tc_script(rules),
        }
    }
}

/// Makes the namespace pinned at `pin` apply `want` instead of `had` (the packet rules,
/// and the shaping of `eth0` when it changed). The delays' queues must be listened to
/// first (see [`super::nfqueue::Delayer`]), else delayed packets pass undelayed.
///
/// # Errors
///
/// The namespace is gone, or `iptables-restore` or `tc` is missing or refused the rules.
pub fn apply(pin: &Path, had: &Applied, want: &Applied) -> Result<(), NetworkError> {
    super::in_netns(pin, || {
        if had.iptables != want.iptables {
            super::tool("iptables-restore", &["-w"], Some(&want.iptables))?;
        }
        if had.tc != want.tc {
            if had.tc.is_some() {
                super::tool("tc", &["qdisc", "del", "dev", LINK, "root"], None)?;
            } else {
                // nothing of ours, but a qdisc left by an earlier supervisor would make the
                // `add` fail: gone if there (`noqueue`, the veth's own, cannot be deleted)
                let _ = super::tool("tc", &["qdisc", "del", "dev", LINK, "root"], None);
            }
            if let Some(script) = &want.tc {
                super::tool("tc", &["-batch", "-"], Some(script))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(dst: Option<Vec<Ipv4Addr>>, action: Action) -> Rule {
        Rule {
            fault: "f".into(),
            dst,
            action,
        }
    }

    #[test]
    fn every_action_becomes_its_rule() {
        let ips = Some(vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 9)]);
        let rules = [
            rule(ips.clone(), Action::Drop),
            rule(None, Action::Loss { ppm: 50_000 }),
            rule(
                ips.clone(),
                Action::Delay {
                    queue: 3,
                    latency: Duration::from_millis(200),
                    jitter: Duration::ZERO,
                },
            ),
            rule(
                None,
                Action::Rate {
                    class: 12,
                    bps: 1_000_000,
                },
            ),
        ];
        let s = iptables_script(&rules);
        assert!(s.starts_with("*filter\n"), "{s}");
        assert!(
            s.contains("-A OUTPUT -o eth0 -d 10.0.0.2/32,10.0.0.9/32 -j NFQUEUE --queue-num 65535 --queue-bypass\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "-A OUTPUT -o eth0 -m statistic --mode random --probability 0.050000 -j NFQUEUE --queue-num 65535 --queue-bypass\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("-d 10.0.0.2/32,10.0.0.9/32 -j NFQUEUE --queue-num 3 --queue-bypass\n"),
            "{s}"
        );
        assert!(
            s.contains("*mangle\n")
                && s.contains("-A POSTROUTING -o eth0 -j CLASSIFY --set-class 1:c\nCOMMIT\n"),
            "{s}"
        );
        let tc = tc_script(&rules).unwrap();
        assert_eq!(
            tc,
            "qdisc add dev eth0 root handle 1: htb default 0 direct_qlen 1000\n\
             class add dev eth0 parent 1: classid 1:c htb rate 1000000bit ceil 1000000bit\n\
             qdisc add dev eth0 parent 1:c handle d: pfifo limit 1000\n"
        );
        assert_eq!(
            delays(&rules),
            BTreeMap::from([
                (
                    3,
                    Delay {
                        latency: Duration::from_millis(200),
                        jitter: Duration::ZERO,
                        drop: false,
                    }
                ),
                (
                    DROP_QUEUE,
                    Delay {
                        latency: Duration::ZERO,
                        jitter: Duration::ZERO,
                        drop: true,
                    }
                )
            ])
        );
    }

    #[test]
    fn no_rules_empty_the_tables_and_leave_the_link_alone() {
        let s = iptables_script(&[]);
        assert_eq!(s.matches("COMMIT").count(), 2);
        assert!(!s.contains("-A "), "{s}");
        assert_eq!(tc_script(&[]), None);
        assert_eq!(Applied::of(&[]).tc, None);
    }
}
