//! Network faults (`faults:` and `rcompose fault add`): what they select and what they do,
//! parsed from their written form. Pure: the supervisor applies them (see
//! [`crate::plan::faults`] for who they reach and `network::fault` for how).
//!
//! A fault acts on the packets its `target`'s replicas send out of their pod (toward its
//! `peer`'s addresses only, when it has one), as netem on the target's link would:
//! `latency` (with `jitter`), `loss` and `bandwidth`; `partition` drops the packets of both
//! sides toward each other.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::quantity::parse_duration;

/// The longest latency (and jitter) a fault adds: packets wait in memory that long.
pub const MAX_LATENCY: Duration = Duration::from_secs(10);

/// A fault as written in the manifest (and as the CLI's flags give it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Whose packets it affects: `pod/NAME` (every replica of a pod), `service/NAME` (the
    /// replicas of the pods it selects) or `node/NAME` (the replicas placed on a node).
    pub target: String,
    /// Only the packets between the target and this peer (`pod/NAME`, `service/NAME` or
    /// `node/NAME`; a service also by its virtual address, a pod by the addresses of the
    /// services that select only it); default: everything the target sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Delay added to each packet the target sends: `200ms`, `1s` (at most 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Variation of the delay, uniform in ±`jitter` (at most `latency`); packets keep their
    /// order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// Share of the target's packets dropped at random: `5%`, `0.5%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
    /// Rate limit of what the target sends: `1mbit`, `512kbit`, `1gbit` (bits per second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<String>,
    /// Drop every packet between the target and the peer, both ways (without a peer:
    /// everything the target sends out of its pod).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partition: bool,
}

/// What a scope names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScopeKind {
    /// Every replica of a pod.
    Pod,
    /// The replicas of the pods a service selects (and its virtual address, as a peer).
    Service,
    /// The replicas placed on a node.
    Node,
}

impl ScopeKind {
    /// How it is written (`pod`, `service`, `node`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Pod => "pod",
            ScopeKind::Service => "service",
            ScopeKind::Node => "node",
        }
    }
}

/// A fault's target or peer: `pod/db`, `service/api`, `node/worker-1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// What it names.
    pub kind: ScopeKind,
    /// The pod, service or node.
    pub name: String,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid fault scope `{text}`: write `pod/NAME`, `service/NAME` or `node/NAME`")
        };
        let (kind, name) = text.split_once('/').ok_or_else(bad)?;
        let kind = match kind {
            "pod" | "pods" | "po" => ScopeKind::Pod,
            "service" | "services" | "svc" => ScopeKind::Service,
            "node" | "nodes" | "no" => ScopeKind::Node,
            _ => return Err(bad()),
        };
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(Scope {
            kind,
            name: name.to_string(),
        })
    }
}

/// A parsed fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FaultSpec", into = "FaultSpec")]
pub struct Fault {
    /// Whose packets it affects.
    pub target: Scope,
    /// Only toward (and, for a partition, from) these.
    pub peer: Option<Scope>,
    /// Added delay.
    pub latency: Option<Duration>,
    /// ± variation of the delay (zero without `jitter`).
    pub jitter: Duration,
    /// Dropped share, in millionths.
    pub loss_ppm: Option<u32>,
    /// Rate limit, in bits per second.
    pub bandwidth_bps: Option<u64>,
    /// Everything between target and peer dropped, both ways.
    pub partition: bool,
}

/// One problem of a fault: the key it is about and what is wrong.
pub type FaultProblem = (&'static str, String);

impl Fault {
    /// Parses a written fault, reporting every problem (with the key each is about).
    ///
    /// # Errors
    ///
    /// Every problem of `spec`: a scope, duration, share or rate that does not parse or is
    /// out of range, a fault that does nothing, or effects that contradict each other.
    pub fn parse(spec: &FaultSpec) -> Result<Fault, Vec<FaultProblem>> {
        let mut problems = Vec::new();
        let target = spec
            .target
            .parse::<Scope>()
            .map_err(|e| problems.push(("target", e)))
            .ok();
        let peer = match &spec.peer {
            None => None,
            Some(p) => p
                .parse::<Scope>()
                .map_err(|e| problems.push(("peer", e)))
                .ok(),
        };
        if let (Some(t), Some(p)) = (&target, &peer)
            && t == p
        {
            problems.push((
                "peer",
                format!("the peer `{p}` is the target itself: name another pod, service or node, or leave `peer` out"),
            ));
        }
        let delay = |key: &'static str, text: &Option<String>, problems: &mut Vec<FaultProblem>| {
            let text = text.as_deref()?;
            match parse_duration(text) {
                Ok(d) if d > MAX_LATENCY => {
                    problems.push((key, format!("`{key}` of `{text}` is too long: at most 10s")));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    problems.push((key, e));
                    None
                }
            }
        };
        let latency = delay("latency", &spec.latency, &mut problems);
        let jitter = delay("jitter", &spec.jitter, &mut problems);
        match (spec.latency.is_some(), latency, jitter) {
            (false, _, Some(_)) => problems.push((
                "jitter",
                "`jitter` varies the `latency`, which is missing: add `latency`".to_string(),
            )),
            (_, Some(l), Some(j)) if j > l => problems.push((
                "jitter",
                format!(
                    "`jitter` ({}) is larger than `latency` ({}): at most the latency",
                    show_duration(j),
                    show_duration(l)
                ),
            )),
            _ => {}
        }
        if latency == Some(Duration::ZERO) {
            problems.push((
                "latency",
                "`latency` of 0 does nothing: give a delay like `200ms`, or leave it out".into(),
            ));
        }
        let loss_ppm = match &spec.loss {
            None => None,
            Some(text) => parse_share(text)
                .map_err(|e| problems.push(("loss", e)))
                .ok(),
        };
        let bandwidth_bps = match &spec.bandwidth {
            None => None,
            Some(text) => parse_rate(text)
                .map_err(|e| problems.push(("bandwidth", e)))
                .ok(),
        };
        let effects = [
            ("latency", spec.latency.is_some()),
            ("loss", spec.loss.is_some()),
            ("bandwidth", spec.bandwidth.is_some()),
        ];
        if spec.partition {
            for (key, set) in effects {
                if set {
                    problems.push((
                        key,
                        format!("a partition drops every packet, so `{key}` would never apply: remove `{key}` or `partition`"),
                    ));
                }
            }
        } else if effects.iter().all(|(_, set)| !set) {
            problems.push((
                "target",
                "the fault does nothing: give `latency`, `loss`, `bandwidth` or `partition: true`"
                    .into(),
            ));
        }
        match target {
            Some(target) if problems.is_empty() => Ok(Fault {
                target,
                peer,
                latency,
                jitter: jitter.unwrap_or_default(),
                loss_ppm,
                bandwidth_bps,
                partition: spec.partition,
            }),
            _ => Err(problems),
        }
    }

    /// The scopes it names (target, then the peer).
    pub fn scopes(&self) -> impl Iterator<Item = &Scope> {
        std::iter::once(&self.target).chain(self.peer.as_ref())
    }

    /// What it does, in a few words: `latency 200ms ±20ms, loss 5%`.
    #[must_use]
    pub fn effects(&self) -> String {
        let spec = FaultSpec::from(self.clone());
        let mut parts = Vec::new();
        if spec.partition {
            parts.push("partition".to_string());
        }
        if let Some(l) = spec.latency {
            parts.push(match spec.jitter {
                Some(j) => format!("latency {l} ±{j}"),
                None => format!("latency {l}"),
            });
        }
        if let Some(l) = spec.loss {
            parts.push(format!("loss {l}"));
        }
        if let Some(b) = spec.bandwidth {
            parts.push(format!("bandwidth {b}"));
        }
        parts.join(", ")
    }

    /// What it does and where: `latency 150ms on pod/server toward service/db`.
    #[must_use]
    pub fn summary(&self) -> String {
        match &self.peer {
            Some(p) => format!("{} on {} toward {p}", self.effects(), self.target),
            None => format!("{} on {}", self.effects(), self.target),
        }
    }
}

impl TryFrom<FaultSpec> for Fault {
    type Error = String;

    fn try_from(spec: FaultSpec) -> Result<Self, String> {
        Fault::parse(&spec).map_err(|problems| {
            problems
                .into_iter()
                .map(|(_, why)| why)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

impl From<Fault> for FaultSpec {
    fn from(f: Fault) -> Self {
        FaultSpec {
            target: f.target.to_string(),
            peer: f.peer.map(|p| p.to_string()),
            latency: f.latency.map(show_duration),
            jitter: (!f.jitter.is_zero()).then(|| show_duration(f.jitter)),
            loss: f.loss_ppm.map(show_share),
            bandwidth: f.bandwidth_bps.map(show_rate),
            partition: f.partition,
        }
    }
}

/// Whether the pod, service or node `scope` names exists; else what is wrong, with the
/// closest name.
///
/// # Errors
///
/// It names none of those given.
pub fn check_scope<'a>(
    scope: &Scope,
    pods: impl Iterator<Item = &'a String>,
    services: impl Iterator<Item = &'a String>,
    nodes: impl Iterator<Item = &'a String>,
) -> Result<(), String> {
    let names: Vec<&String> = match scope.kind {
        ScopeKind::Pod => pods.collect(),
        ScopeKind::Service => services.collect(),
        ScopeKind::Node => nodes.collect(),
    };
    if names.iter().any(|n| **n == scope.name) {
        return Ok(());
    }
    let kind = scope.kind.as_str();
    if names.is_empty() {
        let what = match scope.kind {
            ScopeKind::Pod => "pods",
            ScopeKind::Service => "services",
            ScopeKind::Node => "nodes (the machine is the one node; declare `nodes:` to name them)",
        };
        return Err(format!(
            "`{scope}` names an unknown {kind}: there are no {what}"
        ));
    }
    Err(format!(
        "`{scope}` names an unknown {kind}{}",
        super::validate::did_you_mean(&scope.name, names.into_iter())
    ))
}

/// Whether `name` can name a fault (a DNS label, as pods and nodes).
///
/// # Errors
///
/// It cannot: why.
pub fn check_name(name: &str) -> Result<(), String> {
    super::validate::dns_label(name, super::validate::MAX_NAME)
        .map_err(|why| format!("invalid fault name `{name}`: {why}"))
}

/// `5%`, `0.5%`, `100%` -> millionths (0 excluded: a loss of nothing is a mistake).
///
/// # Errors
///
/// Not a percentage, or outside (0, 100].
pub fn parse_share(text: &str) -> Result<u32, String> {
    let bad = || format!("invalid loss `{text}`: write a percentage like `5%` or `0.5%`");
    let number = text.trim().strip_suffix('%').ok_or_else(bad)?;
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value <= 0.0 || value > 100.0 {
        return Err(format!(
            "invalid loss `{text}`: the share must be above 0% and at most 100%"
        ));
    }
    // at most 1e8, so the cast is exact enough and in range
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ppm = (value * 10_000.0).round() as u32;
    Ok(ppm.max(1))
}

/// `1mbit`, `512kbit`, `2.5gbit`, `800bit` -> bits per second (SI prefixes, as `tc`).
///
/// # Errors
///
/// Not a rate with one of those units, or outside 8 bit/s to 100 gbit/s.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid bandwidth `{text}`: write a rate in bits per second like `1mbit`, `512kbit` or `1gbit`"
        )
    };
    let t = text.trim().to_ascii_lowercase();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(bad)?;
    let (number, unit) = t.split_at(digits);
    let value: f64 = number.parse().map_err(|_| bad())?;
    // `mbps` is not taken: `tc` reads it as megabytes per second
    let scale = match unit.trim_end_matches("/s") {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(bad()),
    };
    let bits = value * scale;
    if !bits.is_finite() || !(8.0..=100e9).contains(&bits) {
        return Err(format!(
            "invalid bandwidth `{text}`: at least 8bit and at most 100gbit"
        ));
    }
    // checked range above
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bits.round() as u64)
}

/// `200ms`, `1s`, `1500us`: the shortest exact form.
#[must_use]
pub fn show_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// Millionths as a percentage: `5%`, `0.25%`.
#[must_use]
pub fn show_share(ppm: u32) -> String {
    let whole = ppm / 10_000;
    let frac = ppm % 10_000;
    if frac == 0 {
        format!("{whole}%")
    } else {
        let frac = format!("{frac:04}");
        format!("{whole}.{}%", frac.trim_end_matches('0'))
    }
}

/// Bits per second as the largest exact unit: `1mbit`, `512kbit`, `1500bit`.
#[must_use]
pub fn show_rate(bps: u64) -> String {
    for (unit, scale) in [("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1000)] {
        if bps.is_multiple_of(scale) {
            return format!("{}{unit}", bps / scale);
        }
    }
    format!("{bps}bit")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: &str) -> FaultSpec {
        FaultSpec {
            target: target.into(),
            ..FaultSpec::default()
        }
    }

    #[test]
    fn parses_every_effect_and_writes_it_back_the_same() {
        let s = FaultSpec {
            peer: Some("service/api".into()),
            latency: Some("200ms".into()),
            jitter: Some("20ms".into()),
            loss: Some("0.5%".into()),
            bandwidth: Some("1.5mbit".into()),
            ..spec("pod/db")
        };
        let f = Fault::parse(&s).unwrap();
        assert_eq!(f.target.kind, ScopeKind::Pod);
        assert_eq!(f.peer.as_ref().unwrap().to_string(), "service/api");
        assert_eq!(f.latency, Some(Duration::from_millis(200)));
        assert_eq!(f.jitter, Duration::from_millis(20));
        assert_eq!(f.loss_ppm, Some(5000));
        assert_eq!(f.bandwidth_bps, Some(1_500_000));
        let back = FaultSpec::from(f.clone());
        assert_eq!(back.bandwidth.as_deref(), Some("1500kbit"));
        assert_eq!(Fault::parse(&back).unwrap(), f);
        assert_eq!(
            f.effects(),
            "latency 200ms ±20ms, loss 0.5%, bandwidth 1500kbit"
        );
        assert_eq!(
            f.summary(),
            "latency 200ms ±20ms, loss 0.5%, bandwidth 1500kbit on pod/db toward service/api"
        );
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let s = FaultSpec {
            peer: Some("db".into()),
            jitter: Some("5ms".into()),
            loss: Some("150%".into()),
            bandwidth: Some("10 furlongs".into()),
            ..spec("pods/db")
        };
        let problems = Fault::parse(&s).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            ["peer", "jitter", "loss", "bandwidth"],
            "{problems:?}"
        );
        assert!(problems[0].1.contains("`pod/NAME`"), "{problems:?}");
        assert!(problems[1].1.contains("add `latency`"), "{problems:?}");
    }

    #[test]
    fn refuses_contradictions_and_faults_that_do_nothing() {
        let nothing = Fault::parse(&spec("node/worker-1")).unwrap_err();
        assert!(nothing[0].1.contains("does nothing"), "{nothing:?}");
        let both = Fault::parse(&FaultSpec {
            partition: true,
            latency: Some("1s".into()),
            ..spec("pod/a")
        })
        .unwrap_err();
        assert_eq!(both[0].0, "latency");
        let same = Fault::parse(&FaultSpec {
            peer: Some("pod/a".into()),
            partition: true,
            ..spec("pod/a")
        })
        .unwrap_err();
        assert!(same[0].1.contains("the target itself"), "{same:?}");
        let wide = Fault::parse(&FaultSpec {
            latency: Some("10ms".into()),
            jitter: Some("11ms".into()),
            ..spec("pod/a")
        })
        .unwrap_err();
        assert!(wide[0].1.contains("larger than"), "{wide:?}");
        let long = Fault::parse(&FaultSpec {
            latency: Some("11s".into()),
            ..spec("pod/a")
        })
        .unwrap_err();
        assert!(long[0].1.contains("at most 10s"), "{long:?}");
    }

    #[test]
    fn shares_rates_and_durations_round_trip() {
        assert_eq!(parse_share("100%"), Ok(1_000_000));
        assert_eq!(parse_share("0.0001%"), Ok(1));
        assert!(parse_share("0%").is_err());
        assert!(parse_share("5").is_err());
        assert_eq!(show_share(5000), "0.5%");
        assert_eq!(show_share(250_000), "25%");
        assert_eq!(show_share(2500), "0.25%");
        assert_eq!(parse_rate("512kbit"), Ok(512_000));
        assert_eq!(parse_rate("1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("2mbit/s"), Ok(2_000_000));
        assert!(parse_rate("2mbps").is_err());
        assert!(parse_rate("1MB").is_err());
        assert!(parse_rate("4bit").is_err());
        assert_eq!(show_rate(1_000_000), "1mbit");
        assert_eq!(show_rate(1500), "1500bit");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show_duration(Duration::from_secs(2)), "2s");
        assert_eq!(show_duration(Duration::from_micros(1500)), "1500us");
    }
}
