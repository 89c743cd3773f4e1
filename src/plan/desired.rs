//! The desired state: what should run once the manifest is applied, with replicas expanded.
//!
//! Pure data, built from a validated manifest by [`crate::plan::desired_state`]. The runtime
//! and supervisor consume these types; they never look at the manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything a project should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// The project name (manifest `name`, or the directory name, or `-p`).
    pub project: String,
    /// Pods by name.
    pub pods: BTreeMap<String, PodPlan>,
    /// Services by name (validated; balancing arrives later).
    pub services: BTreeMap<String, ServicePlan>,
    /// Start waves: pods in one wave depend only on pods of earlier waves; names sorted.
    pub waves: Vec<Vec<String>>,
    /// Named volumes of the project (directories under the data dir, kept across `down`).
    pub volumes: Vec<String>,
    /// The network's subnet when the manifest names one (else the supervisor picks a free
    /// one).
    #[serde(default)]
    pub subnet: Option<crate::manifest::subnet::Subnet>,
    /// Declared nodes by name; empty: the machine is the one node (see
    /// [`crate::plan::schedule::cluster`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodePlan>,
    /// Without `nodes`: what the manifest's `capacity` overrides of the machine's.
    #[serde(default, skip_serializing_if = "CapacityPlan::is_empty")]
    pub capacity: CapacityPlan,
    /// The manifest's network faults by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub faults: BTreeMap<String, crate::manifest::Fault>,
}

/// A declared node: its capacity and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// The node name.
    pub name: String,
    /// CPUs it offers, in thousandths.
    pub cpu_millis: u64,
    /// Memory it offers, in bytes.
    pub memory_bytes: u64,
    /// Labels that pods' `node_selector` matches.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The implicit node's capacity where the manifest overrides the machine's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityPlan {
    /// CPUs, in thousandths.
    pub cpu_millis: Option<u64>,
    /// Memory, in bytes.
    pub memory_bytes: Option<u64>,
}

impl CapacityPlan {
    /// Nothing overridden.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none() && self.memory_bytes.is_none()
    }
}

/// What one replica reserves on its node (0: nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    /// CPU, in thousandths.
    pub cpu_millis: u64,
    /// Memory, in bytes.
    pub memory_bytes: u64,
}

impl Requests {
    /// Nothing requested.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.cpu_millis == 0 && self.memory_bytes == 0
    }
}

/// One pod: a group of containers sharing a network namespace, replicated `replicas` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodPlan {
    /// The pod name.
    pub name: String,
    /// Number of replicas (each named `<pod>-<n>`, n from 1).
    pub replicas: u32,
    /// On the project network (an address, the bridge as gateway); else loopback only.
    #[serde(default = "yes")]
    pub network: bool,
    /// Labels that service selectors match.
    pub labels: BTreeMap<String, String>,
    /// Pods this pod waits for before it starts.
    pub depends_on: Vec<Dependency>,
    /// What to do when a container exits.
    pub restart: RestartPolicy,
    /// The first and the longest delay before a restart.
    #[serde(default = "default_backoff")]
    pub backoff: (std::time::Duration, std::time::Duration),
    /// How running replicas are replaced when the plan changes.
    #[serde(default)]
    pub update: UpdatePlan,
    /// `empty_dir` volumes, one set per replica.
    pub empty_dirs: Vec<String>,
    /// The pod's containers: its init containers (`init`) first, then the others, each in
    /// manifest order.
    pub containers: Vec<ContainerPlan>,
    /// What one replica reserves on its node (Kubernetes' effective pod request).
    #[serde(default, skip_serializing_if = "Requests::is_zero")]
    pub requests: Requests,
    /// Labels a node must have to run a replica.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// A pod's rolling update (see [`crate::manifest::Update`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePlan {
    /// Replicas started above the count.
    pub max_surge: crate::manifest::Amount,
    /// Ready replicas the update may take below the count.
    pub max_unavailable: crate::manifest::Amount,
    /// How long a new replica must have been ready to count as available.
    pub min_ready: std::time::Duration,
    /// How long the update may take before it is rolled back.
    pub progress_deadline: std::time::Duration,
}

impl Default for UpdatePlan {
    fn default() -> Self {
        Self::from(crate::manifest::Update::DEFAULT)
    }
}

impl From<crate::manifest::Update> for UpdatePlan {
    fn from(u: crate::manifest::Update) -> Self {
        UpdatePlan {
            max_surge: u.max_surge,
            max_unavailable: u.max_unavailable,
            min_ready: u.min_ready,
            progress_deadline: u.progress_deadline,
        }
    }
}

impl UpdatePlan {
    /// The surge and the unavailability for `replicas` replicas (see
    /// [`crate::manifest::Update::counts`]).
    #[must_use]
    pub fn counts(&self, replicas: u32) -> (u32, u32) {
        crate::manifest::Update {
            max_surge: self.max_surge,
            max_unavailable: self.max_unavailable,
            min_ready: self.min_ready,
            progress_deadline: self.progress_deadline,
        }
        .counts(replicas)
    }
}

fn default_backoff() -> (std::time::Duration, std::time::Duration) {
    (
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(10),
    )
}

/// A dependency edge: this pod waits until `pod` meets `condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The pod waited for.
    pub pod: String,
    /// When the dependency counts as met.
    pub condition: Condition,
}

/// When a dependency counts as met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every replica's containers are running.
    Started,
    /// Every replica's containers exited with code 0.
    Completed,
    /// Every replica's containers are ready (readiness probes pass).
    Healthy,
}

impl Condition {
    /// Its name in the manifest.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Completed => "completed",
            Condition::Healthy => "healthy",
        }
    }
}

/// What the supervisor does when a container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whatever the exit code.
    Always,
    /// Restart only after a non-zero exit or a kill.
    OnFailure,
    /// Never restart.
    Never,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerPlan {
    /// The container name, unique in its pod.
    pub name: String,
    /// The image name (a key of the manifest's `images`).
    pub image: String,
    /// The root filesystem, resolved from the image chain.
    pub rootfs: RootfsPlan,
    /// Replaces the image's Entrypoint; `None` once resolved (see `command`).
    pub entrypoint: Option<Vec<String>>,
    /// argv. For images without a config (`host`, rootfs directories) it is the final argv
    /// (entrypoint and command joined) from the start; for stored images it replaces the
    /// image's Cmd until [`crate::image::prepare`] resolves it into the final argv.
    pub command: Option<Vec<String>>,
    /// User to run as (`name`, `uid`, `uid:gid`, `name:group`), resolved inside the
    /// container; `None` runs as root.
    pub user: Option<String>,
    /// Environment variables set for the command.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container (absolute), if set.
    pub working_dir: Option<String>,
    /// cgroup limits.
    pub resources: Resources,
    /// `privileged: true`: every capability, no seccomp filter, no masked /proc paths.
    pub privileged: bool,
    /// The capability set, bit n for capability number n.
    pub capabilities: u64,
    /// Mounts over the root file system, in order.
    pub mounts: Vec<MountPlan>,
    /// Configs and secrets to mount as files, in order (configs first).
    pub files: Vec<FilePlan>,
    /// Root file system read-only.
    pub read_only: bool,
    /// A pseudo-terminal for the command (its output still goes to the log).
    #[serde(default)]
    pub tty: bool,
    /// The signal number that asks the command to stop.
    pub stop_signal: i32,
    /// Time between the stop signal and SIGKILL, when the manifest sets it.
    pub stop_grace_period: Option<std::time::Duration>,
    /// One of the pod's init containers: run to completion, in order, before the others.
    #[serde(default)]
    pub init: bool,
    /// Readiness probe.
    #[serde(default)]
    pub readiness: Option<ProbePlan>,
    /// Liveness probe.
    #[serde(default)]
    pub liveness: Option<ProbePlan>,
    /// Startup probe.
    #[serde(default)]
    pub startup: Option<ProbePlan>,
    /// The runtime that runs it (its pod's).
    #[serde(default)]
    pub runtime: crate::manifest::RuntimeKind,
}

/// A probe of a container (see the manifest's `readiness`, `liveness` and `startup`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbePlan {
    /// What it checks.
    pub action: ProbeAction,
    /// Time between probes once the container was ready.
    pub period: std::time::Duration,
    /// Longest time one probe may take.
    pub timeout: std::time::Duration,
    /// Time after the start before the first probe.
    pub initial_delay: std::time::Duration,
    /// Failures in a row that count.
    pub failure_threshold: u32,
    /// Successes in a row that count.
    pub success_threshold: u32,
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeAction {
    /// Runs this argv in the container; exit 0 is a success.
    Exec(Vec<String>),
    /// GET `http://127.0.0.1:port/path` in the pod's network namespace; 2xx and 3xx pass.
    Http {
        /// Port.
        port: u16,
        /// Path, from `/`.
        path: String,
    },
    /// Connects to `127.0.0.1:port` in the pod's network namespace.
    Tcp {
        /// Port.
        port: u16,
    },
}

/// A config or secret file in a container: written once per `up` to a tmpfs, owned and
/// moded as asked, and bind-mounted read-only at `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePlan {
    /// `config` or `secret`, and its name (for messages).
    pub what: String,
    /// Where the content comes from.
    pub content: FileContent,
    /// Absolute path in the container.
    pub target: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// The content of a config or secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileContent {
    /// A host file (absolute).
    Host(PathBuf),
    /// An environment variable of the supervisor (inherited from `rcompose up`).
    Environment(String),
    /// Inline.
    Inline(String),
}

/// A mount in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// What is mounted.
    pub source: MountSource,
    /// Absolute path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// What a [`MountPlan`] mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSource {
    /// A host path (absolute): bind sources, and named volumes once resolved to their
    /// directory under the data dir.
    Host(PathBuf),
    /// A named volume, before it is resolved (the CLI knows the data dir).
    Volume(String),
    /// The replica's `empty_dir` of this name.
    EmptyDir(String),
    /// A private tmpfs with this size limit in bytes, if any.
    Tmpfs(Option<u64>),
}

/// The layers of a container's root filesystem, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsPlan {
    /// Bottom layer first; never empty.
    pub layers: Vec<LayerPlan>,
}

/// One read-only layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerPlan {
    /// The host's root filesystem (`/`), read-only.
    Host,
    /// A directory or a tarball (absolute path, resolved against the manifest's
    /// directory), laid over the layers below at `target` (`/` when the layer has no
    /// target). Tarballs are unpacked into the store by [`crate::image::prepare`].
    Dir {
        /// Absolute host path of the directory.
        path: PathBuf,
        /// Absolute path inside the container where the directory's contents appear.
        target: String,
    },
    /// An image from the store (imported or pulled): the bottom of its chain. Replaced by
    /// its unpacked layers (as `Dir`s) by [`crate::image::prepare`].
    Stored(StoredImage),
}

/// Where a stored image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredImage {
    /// An image archive.
    Archive {
        /// Absolute path.
        path: PathBuf,
        /// Keep setuid/setgid bits of its files (refused by default).
        allow_setuid: bool,
    },
    /// A registry reference, and when to pull it.
    Registry {
        /// The reference as written.
        reference: String,
        /// When to pull.
        pull: PullPolicy,
        /// Keep setuid/setgid bits of its files (refused by default).
        allow_setuid: bool,
    },
}

/// When a registry image is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Only when the store does not have it.
    Missing,
    /// Every time.
    Always,
    /// Never.
    Never,
}

/// cgroup limits of one container. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU limit in thousandths of a CPU (`500m` and `0.5` are 500).
    pub cpu_millis: Option<u64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes (pids.max).
    pub pids: Option<u64>,
}

/// A service: a stable name over the pods a label selector picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlan {
    /// The service name.
    pub name: String,
    /// Label selector; every pair must match.
    pub selector: BTreeMap<String, String>,
    /// Pods the selector picks, sorted.
    pub pods: Vec<String>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// How connections are spread over the ready endpoints.
    #[serde(default)]
    pub balance: crate::manifest::Balance,
}

/// One service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// The port the service listens on.
    pub port: u16,
    /// The port on the pods (defaults to `port`).
    pub target: u16,
    /// Host port to publish on, if any.
    pub publish: Option<u16>,
    /// The host address it binds (127.0.0.1 unless the manifest names another).
    #[serde(default = "localhost")]
    pub host_ip: std::net::Ipv4Addr,
}

fn localhost() -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::LOCALHOST
}
