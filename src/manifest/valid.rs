//! The validated, normalized manifest: short forms expanded, defaults filled, every reference
//! checked. Only [`crate::manifest::load`] / [`crate::manifest::validate`] build one.
//! Serializes back to a manifest that [`crate::manifest::load`] accepts unchanged.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Serialize, Serializer};

use crate::manifest::{Bytes, Condition, MilliCpu, PullPolicy, Restart};

/// A manifest that passed validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidManifest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    pub(crate) images: BTreeMap<String, Image>,
    pub(crate) pods: BTreeMap<String, Pod>,
    pub(crate) services: BTreeMap<String, Service>,
    /// Named volumes.
    #[serde(
        skip_serializing_if = "BTreeSet::is_empty",
        serialize_with = "empty_maps"
    )]
    pub(crate) volumes: BTreeSet<String>,
    /// Configs by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) configs: BTreeMap<String, FileSource>,
    /// Secrets by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) secrets: BTreeMap<String, FileSource>,
    /// The project network's subnet, when the manifest names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subnet: Option<crate::manifest::subnet::Subnet>,
    /// Watch rules, in the manifest's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) watch: Vec<WatchRule>,
    /// Declared nodes by name; empty: the machine is the one node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) nodes: BTreeMap<String, Node>,
    /// The implicit node's capacity override (only without `nodes`).
    #[serde(skip_serializing_if = "Capacity::is_empty")]
    pub(crate) capacity: Capacity,
    /// Network faults by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) faults: BTreeMap<String, crate::manifest::Fault>,
}

/// A declared node: its capacity and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// CPUs it offers.
    #[serde(serialize_with = "display_one")]
    pub cpu: MilliCpu,
    /// Memory it offers.
    #[serde(serialize_with = "display_one")]
    pub memory: Bytes,
    /// Labels `node_selector` matches.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The implicit node's capacity, where the manifest overrides the machine's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// CPUs, instead of the machine's count.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
    pub cpu: Option<MilliCpu>,
    /// Memory, instead of the machine's total.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
    pub memory: Option<Bytes>,
}

impl Capacity {
    /// Neither resource is overridden.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

fn display_one<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A validated watch rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRule {
    /// Watched files or directories as written (relative to the manifest's directory, or
    /// absolute).
    pub paths: Vec<String>,
    /// The rule's own ignore patterns (.gitignore syntax).
    pub ignore: Vec<String>,
    /// The pods it applies to (each a pod of the manifest).
    pub pods: Vec<String>,
    /// `sync`: the containers that get the files (each in every pod); empty: all of them.
    pub containers: Vec<String>,
    /// What it does.
    pub effect: WatchEffect,
}

/// What a watch rule does, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEffect {
    /// Copy changed files into the containers; each watched path maps to `target`.
    Sync {
        /// Absolute path in the containers.
        target: String,
    },
    /// Restart the pods, and the pods that depend on them when `cascade`.
    Restart {
        /// Dependents too.
        cascade: bool,
    },
    /// Rebuild the watched layers and re-apply the manifest.
    Redeploy,
}

impl Serialize for WatchRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("paths", &self.paths)?;
        let action = match &self.effect {
            WatchEffect::Sync { .. } => "sync",
            WatchEffect::Restart { .. } => "restart",
            WatchEffect::Redeploy => "redeploy",
        };
        map.serialize_entry("action", action)?;
        map.serialize_entry("pods", &self.pods)?;
        if !self.containers.is_empty() {
            map.serialize_entry("containers", &self.containers)?;
        }
        if !self.ignore.is_empty() {
            map.serialize_entry("ignore", &self.ignore)?;
        }
        match &self.effect {
            WatchEffect::Sync { target } => map.serialize_entry("target", target)?,
            WatchEffect::Restart { cascade } => map.serialize_entry("cascade", cascade)?,
            WatchEffect::Redeploy => {}
        }
        map.end()
    }
}

/// Where a config's or secret's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileSource {
    /// A host file as written (relative to the manifest's directory, or absolute).
    File(String),
    /// An environment variable of `rcompose up`.
    Environment(String),
    /// Inline content.
    Content(String),
}

/// A config or secret mounted in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUse {
    /// The config's or secret's name.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl Serialize for FileUse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("source", &self.source)?;
        map.serialize_entry("target", &self.target)?;
        map.serialize_entry("uid", &self.uid)?;
        map.serialize_entry("gid", &self.gid)?;
        map.serialize_entry("mode", &format!("0{:o}", self.mode))?;
        map.end()
    }
}

#[allow(clippy::ref_option)] // serde's signature
fn grace_text<S: Serializer>(d: &Option<std::time::Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
        None => s.serialize_none(),
    }
}

fn is_builtin(r: &crate::manifest::RuntimeKind) -> bool {
    *r == crate::manifest::RuntimeKind::Builtin
}

fn duration_text<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

/// Names as a map of empty mappings (`data: {}`).
fn empty_maps<S: Serializer>(names: &BTreeSet<String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(names.iter().map(|n| (n, BTreeMap::<String, ()>::new())))
}

/// Pod volume names as `name: { empty_dir: {} }`.
fn empty_dirs<S: Serializer>(names: &BTreeSet<String>, s: S) -> Result<S::Ok, S::Error> {
    let empty = BTreeMap::<String, ()>::new();
    s.collect_map(
        names
            .iter()
            .map(|n| (n, BTreeMap::from([("empty_dir", empty.clone())]))),
    )
}

impl ValidManifest {
    /// The project network's subnet, if the manifest names one.
    #[must_use]
    pub fn subnet(&self) -> Option<crate::manifest::subnet::Subnet> {
        self.subnet
    }

    /// The project name, if the manifest sets one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Declared images by name (`host` is builtin and not listed).
    pub fn images(&self) -> &BTreeMap<String, Image> {
        &self.images
    }

    /// Pods by name.
    pub fn pods(&self) -> &BTreeMap<String, Pod> {
        &self.pods
    }

    /// Named volumes.
    pub fn volumes(&self) -> &BTreeSet<String> {
        &self.volumes
    }

    /// Configs by name.
    pub fn configs(&self) -> &BTreeMap<String, FileSource> {
        &self.configs
    }

    /// Secrets by name.
    pub fn secrets(&self) -> &BTreeMap<String, FileSource> {
        &self.secrets
    }

    /// The watch rules, in the manifest's order.
    #[must_use]
    pub fn watch(&self) -> &[WatchRule] {
        &self.watch
    }

    /// Services by name.
    pub fn services(&self) -> &BTreeMap<String, Service> {
        &self.services
    }

    /// Declared nodes by name (empty: the machine is the one node).
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// Network faults by name.
    #[must_use]
    pub fn faults(&self) -> &BTreeMap<String, crate::manifest::Fault> {
        &self.faults
    }

    /// The implicit node's capacity override (empty when `nodes` are declared).
    #[must_use]
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// The normalized manifest as YAML (a valid manifest itself).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self)
            .expect("invariant: plain structs, maps, strings and integers always serialize")
    }

    /// The normalized manifest as pretty JSON, with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self)
            .expect("invariant: plain structs, maps with string keys and strings serialize");
        text.push('\n');
        text
    }
}

/// An image: its base and the layers over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// What the image stacks on.
    #[serde(flatten)]
    pub base: ImageBase,
    /// When to pull a `ref` image (`missing` unless set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullPolicy>,
    /// Keep setuid/setgid bits in the layers of an `archive` or `ref` image.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_setuid: bool,
    /// Directories laid over the base, bottom first.
    pub layers: Vec<Layer>,
}

/// The bottom of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageBase {
    /// Another image: `host` or a declared image (chains end at `host` or a rootfs).
    From(String),
    /// A root filesystem directory, relative to the manifest's directory (or absolute).
    Rootfs(String),
    /// An image archive, relative to the manifest's directory (or absolute).
    Archive(String),
    /// A registry reference.
    #[serde(rename = "ref")]
    Ref(String),
}

/// A directory laid over the image at `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layer {
    /// Directory on the host, as written (relative to the manifest's directory, or absolute).
    pub source: String,
    /// Absolute path in the image.
    pub target: String,
}

/// A pod with defaults filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// Number of replicas.
    pub replicas: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Pods waited for, by name.
    pub depends_on: BTreeMap<String, Dependency>,
    /// Restart policy.
    pub restart: Restart,
    /// Restart delays (written back when not the defaults).
    #[serde(skip_serializing_if = "Backoff::is_default")]
    pub backoff: Backoff,
    /// The container runtime.
    #[serde(skip_serializing_if = "is_builtin")]
    pub runtime: crate::manifest::RuntimeKind,
    /// On the project network (`network_mode: project`, the default) or not (`none`).
    #[serde(skip_serializing_if = "is_project_network")]
    pub network_mode: crate::manifest::NetworkMode,
    /// The rolling update (written back when not the defaults).
    #[serde(skip_serializing_if = "Update::is_default")]
    pub update: Update,
    /// `empty_dir` volumes of each replica.
    #[serde(
        skip_serializing_if = "BTreeSet::is_empty",
        serialize_with = "empty_dirs"
    )]
    pub volumes: BTreeSet<String>,
    /// Containers run to completion, in order, before `containers` start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    /// Containers, in manifest order (at least one).
    pub containers: Vec<Container>,
    /// Labels a node must have to run the pod's replicas.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

impl Pod {
    /// What one replica requests, as Kubernetes counts a pod: the sum over its containers,
    /// or the largest init container's request if that is more (init containers run one
    /// at a time, before the others). `None`: nothing requested.
    #[must_use]
    pub fn requests(&self) -> Requests {
        fn total(pod: &Pod, f: fn(&Requests) -> Option<u64>) -> Option<u64> {
            let sum: u64 = pod
                .containers
                .iter()
                .filter_map(|c| f(&c.resources.requests))
                .fold(0, u64::saturating_add);
            let init = pod
                .init_containers
                .iter()
                .filter_map(|c| f(&c.resources.requests))
                .max()
                .unwrap_or(0);
            Some(sum.max(init)).filter(|v| *v > 0)
        }
        Requests {
            cpu: total(self, |r| r.cpu.map(|c| c.0)).map(MilliCpu),
            memory: total(self, |r| r.memory.map(|m| m.0)).map(Bytes),
        }
    }
}

/// A dependency's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dependency {
    /// When the dependency counts as met.
    pub condition: Condition,
}

/// A container with defaults filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// Name, unique in the pod.
    pub name: String,
    /// Image name (`host` or a declared image).
    pub image: String,
    /// Replaces the image's Entrypoint, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// argv (replacing the image's Cmd), when set; set whenever the image has no config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Absolute working directory, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User to run as, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Limits.
    pub resources: Resources,
    /// Root file system mounted read-only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// A pseudo-terminal for the command.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// The stop signal's name (`SIGTERM` unless set).
    pub stop_signal: String,
    /// Grace period after the stop signal, when set (else the command line's).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "grace_text")]
    pub stop_grace_period: Option<std::time::Duration>,
    /// Capabilities and confinement, written back as `privileged`, `cap_add` and `cap_drop`
    /// (the differences from Docker's default set).
    #[serde(flatten)]
    pub security: Security,
    /// Mounts, in manifest order (written back in the long form).
    #[serde(rename = "volumes", skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Configs mounted, in manifest order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileUse>,
    /// Secrets mounted, in manifest order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileUse>,
    /// Readiness probe (a `healthcheck` becomes this and `liveness`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
    /// Liveness probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
    /// Startup probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup: Option<Probe>,
}

/// Restart delays: each restart doubles the delay from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backoff {
    /// The first delay.
    #[serde(serialize_with = "duration_text")]
    pub initial: std::time::Duration,
    /// The longest delay.
    #[serde(serialize_with = "duration_text")]
    pub max: std::time::Duration,
}

impl Backoff {
    /// 100 ms doubling up to 10 s.
    pub const DEFAULT: Backoff = Backoff {
        initial: std::time::Duration::from_millis(100),
        max: std::time::Duration::from_secs(10),
    };

    fn is_default(&self) -> bool {
        *self == Self::DEFAULT
    }
}

/// A pod's rolling update with defaults filled (see [`crate::manifest::UpdateSpec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Update {
    /// Replicas started above the count.
    #[serde(serialize_with = "amount_text")]
    pub max_surge: Amount,
    /// Ready replicas the update may take below the count.
    #[serde(serialize_with = "amount_text")]
    pub max_unavailable: Amount,
    /// How long a new replica must have been ready to count as available.
    #[serde(serialize_with = "duration_text")]
    pub min_ready: std::time::Duration,
    /// How long the update may take before it is rolled back.
    #[serde(serialize_with = "duration_text")]
    pub progress_deadline: std::time::Duration,
}

impl Update {
    /// Kubernetes' surge and unavailability (25 % each); ready at once; 60 s to finish
    /// (Kubernetes gives 600 s, and only flags a rollout that exceeds it).
    pub const DEFAULT: Update = Update {
        max_surge: Amount::Percent(25),
        max_unavailable: Amount::Percent(25),
        min_ready: std::time::Duration::ZERO,
        progress_deadline: std::time::Duration::from_secs(60),
    };

    fn is_default(&self) -> bool {
        *self == Self::DEFAULT
    }

    /// The surge and the unavailability for `replicas` replicas: percentages of the count,
    /// the surge rounded up and the unavailability down; both 0 (possible only by rounding)
    /// allows one unavailable, as Kubernetes does.
    #[must_use]
    pub fn counts(&self, replicas: u32) -> (u32, u32) {
        let of = |a: Amount, up: bool| match a {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let x = u64::from(p) * u64::from(replicas);
                let n = if up { x.div_ceil(100) } else { x / 100 };
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        };
        let (surge, unavailable) = (of(self.max_surge, true), of(self.max_unavailable, false));
        if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        }
    }
}

/// A number of replicas, or a percentage of the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    /// A number of replicas.
    Count(u32),
    /// A percentage (0 to 100).
    Percent(u32),
}

fn amount_text<S: Serializer>(a: &Amount, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Amount::Count(n) => s.serialize_u32(*n),
        Amount::Percent(p) => s.serialize_str(&format!("{p}%")),
    }
}

/// A probe with defaults filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// What it checks (written back as `exec`, `http` or `tcp`).
    #[serde(flatten)]
    pub action: ProbeAction,
    /// Time between probes once ready.
    #[serde(serialize_with = "duration_text")]
    pub period: std::time::Duration,
    /// Longest time one probe may take.
    #[serde(serialize_with = "duration_text")]
    pub timeout: std::time::Duration,
    /// Time after the start before the first probe.
    #[serde(serialize_with = "duration_text")]
    pub initial_delay: std::time::Duration,
    /// Failures in a row that count.
    pub failure_threshold: u32,
    /// Successes in a row that count.
    pub success_threshold: u32,
}

/// What a [`Probe`] checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeAction {
    /// A command in the container (argv).
    Exec(Vec<String>),
    /// An HTTP GET in the pod's network namespace.
    Http {
        /// Port.
        port: u16,
        /// Path, from `/`.
        path: String,
    },
    /// A TCP connection in the pod's network namespace.
    Tcp {
        /// Port.
        port: u16,
    },
}

/// A container mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted.
    pub kind: MountKind,
    /// Absolute path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// What a [`Mount`] mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A host path as written (relative to the manifest's directory, or absolute).
    Bind(String),
    /// A named volume.
    Volume(String),
    /// A pod volume.
    EmptyDir(String),
    /// A private tmpfs with a size limit in bytes, if any.
    Tmpfs(Option<Bytes>),
}

impl Serialize for Mount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        let (kind, source) = match &self.kind {
            MountKind::Bind(p) => ("bind", Some(p)),
            MountKind::Volume(n) => ("volume", Some(n)),
            MountKind::EmptyDir(n) => ("empty_dir", Some(n)),
            MountKind::Tmpfs(_) => ("tmpfs", None),
        };
        map.serialize_entry("type", kind)?;
        if let Some(source) = source {
            map.serialize_entry("source", source)?;
        }
        map.serialize_entry("target", &self.target)?;
        if self.read_only {
            map.serialize_entry("read_only", &true)?;
        }
        if let MountKind::Tmpfs(Some(size)) = &self.kind {
            map.serialize_entry("tmpfs", &BTreeMap::from([("size", size.to_string())]))?;
        }
        map.end()
    }
}

/// What a container may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Security {
    /// `privileged: true`: every capability, no seccomp filter, no masked /proc paths.
    pub privileged: bool,
    /// The capability set, bit n for capability number n (see [`super::caps`]).
    pub capabilities: u64,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            privileged: false,
            capabilities: super::caps::DEFAULT,
        }
    }
}

impl Serialize for Security {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use super::caps::{DEFAULT, names};
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if self.privileged {
            map.serialize_entry("privileged", &true)?;
        } else {
            let added = names(self.capabilities & !DEFAULT);
            let dropped = names(DEFAULT & !self.capabilities);
            if !added.is_empty() {
                map.serialize_entry("cap_add", &added)?;
            }
            if !dropped.is_empty() {
                map.serialize_entry("cap_drop", &dropped)?;
            }
        }
        map.end()
    }
}

/// Parsed limits (`None` means unlimited) and requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU limit.
    pub cpu: Option<MilliCpu>,
    /// Memory limit.
    pub memory: Option<Bytes>,
    /// pids.max.
    pub pids: Option<u64>,
    /// What the scheduler reserves, with Kubernetes' defaults applied: a resource without a
    /// request takes its limit; `None` reserves nothing.
    pub requests: Requests,
}

/// A container's effective requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// CPU reserved.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
    pub cpu: Option<MilliCpu>,
    /// Memory reserved.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display")]
    pub memory: Option<Bytes>,
}

/// Written as the manifest's `resources`: a request equal to its limit is the default and
/// left out, so the normalized manifest stays what was written.
impl Serialize for Resources {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let requests = Requests {
            cpu: self.requests.cpu.filter(|r| Some(*r) != self.cpu),
            memory: self.requests.memory.filter(|r| Some(*r) != self.memory),
        };
        let mut map = s.serialize_map(None)?;
        if let Some(cpu) = self.cpu {
            map.serialize_entry("cpu", &cpu.to_string())?;
        }
        if let Some(memory) = self.memory {
            map.serialize_entry("memory", &memory.to_string())?;
        }
        if let Some(pids) = self.pids {
            map.serialize_entry("pids", &pids)?;
        }
        if requests != Requests::default() {
            map.serialize_entry("requests", &requests)?;
        }
        map.end()
    }
}

#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<T>`
fn display<T: std::fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// A service with its ports expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Label selector.
    pub selector: BTreeMap<String, String>,
    /// Ports.
    pub ports: Vec<Port>,
    /// How connections are spread.
    #[serde(skip_serializing_if = "is_round_robin")]
    pub balance: crate::manifest::Balance,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_round_robin(b: &crate::manifest::Balance) -> bool {
    *b == crate::manifest::Balance::RoundRobin
}

/// A service port in long form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Port {
    /// Port the service listens on.
    pub port: u16,
    /// Port on the pods.
    pub target: u16,
    /// Host port, if published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<u16>,
    /// The host address it binds (default 127.0.0.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<std::net::Ipv4Addr>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_project_network(m: &crate::manifest::NetworkMode) -> bool {
    *m == crate::manifest::NetworkMode::Project
}
