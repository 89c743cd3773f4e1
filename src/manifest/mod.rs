//! L0, pure: the manifest model, parsing and validation. No I/O: no file system,
//! processes, network, clock or `nix`; callers pass the text and the path it came from.
//!
//! Flow: [`parse`] turns YAML into a [`Manifest`] (the serde model, which mirrors the file
//! with its short forms), reporting every syntax and shape problem with a location; [`load`]
//! also validates it into a [`ValidManifest`] (short forms expanded, defaults filled, every
//! reference checked), reporting all problems of the file in one [`ManifestError`].

pub mod caps;
pub mod compose;
mod convert;
mod error;
pub mod fault;
mod node;
pub mod quantity;
mod shell;
pub mod subnet;
mod valid;
mod validate;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

pub use self::error::{ManifestError, Problem, SourceLocation, render_warnings};
pub use self::fault::{Fault, FaultSpec};
pub use self::quantity::{Bytes, MilliCpu};
pub use self::valid::{
    Amount, Backoff, Capacity, Container, Dependency, FileSource, FileUse, Image, ImageBase, Layer,
    Mount, MountKind, Node, Pod, Port, Probe, ProbeAction, Requests, Resources, Security, Service,
    Update, ValidManifest, WatchEffect, WatchRule,
};

/// The name of the builtin image: the host's root filesystem, read-only.
pub const HOST_IMAGE: &str = "host";

/// An `rcompose.yaml` manifest as written (short forms kept). Get one with [`parse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "rcompose manifest",
    description = "rcompose.yaml, version 1. Top-level keys starting with `x-` are ignored (a place for YAML anchors).",
    extend("patternProperties" = { "^x-": {} })
)]
pub struct Manifest {
    /// Project name, `[a-z0-9][a-z0-9_-]*`; default: the manifest's directory name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Images by name. `host` (the host's root filesystem) is builtin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageSpec>,
    /// Pods by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pods: BTreeMap<String, PodSpec>,
    /// Services by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceSpec>,
    /// Named volumes (`data:` or `data: {}`): directories under the data dir that outlive
    /// `down` (removed by `down -v`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Option<VolumeSpec>>,
    /// Configuration files mounted into containers that list them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, FileSourceSpec>,
    /// Secrets: like configs, mounted on a tmpfs (never on disk), mode 0400 by default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, FileSourceSpec>,
    /// The project network: a bridge, and an address per pod replica from its subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    /// File watch rules, for `up --watch` and `rcompose watch`: what a change under their
    /// paths does to which pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<WatchSpec>,
    /// Simulated worker nodes by name (DNS labels): each has a capacity its pods' requests
    /// are scheduled into, and labels that pods' `node_selector` matches. Without `nodes`,
    /// the machine is one node (`capacity` can shrink it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeSpec>,
    /// Without `nodes`: the capacity of the one implicit node (the machine), instead of its
    /// CPU count and memory; either key alone replaces only its own resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacitySpec>,
    /// Network faults by name, applied while the project runs (and changed at run time by
    /// `rcompose fault`): latency, loss, a bandwidth limit or a partition on what a pod,
    /// service or node sends.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub faults: BTreeMap<String, FaultSpec>,
}

/// A simulated worker node: a capacity (enforced by its cgroup) and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// CPUs the node offers: `2`, `1.5`, `500m`.
    pub cpu: Quantity,
    /// Memory the node offers: `4Gi`, `512Mi`.
    pub memory: Quantity,
    /// Labels that pods' `node_selector` matches (`zone: a`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The capacity of the implicit single node (the machine), overriding what it has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacitySpec {
    /// CPUs: default the CPUs this process may run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory: default the machine's `MemTotal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl Manifest {
    /// The manifest as YAML, as written (short forms kept; what `rcompose convert` prints).
    #[must_use]
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self)
            .expect("invariant: plain structs, maps, strings and integers always serialize")
    }
}

/// A watch rule: changes of files under `paths` (not ignored) trigger `action` on `pods`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchSpec {
    /// Files or directories to watch, relative to the manifest's directory (or absolute);
    /// directories are watched recursively.
    pub paths: Vec<String>,
    /// What a change does: `sync` (copy the changed files into the running containers),
    /// `restart` (restart the pods) or `redeploy` (rebuild the image layers it watches and
    /// replace the pods).
    pub action: WatchAction,
    /// The pods the action applies to.
    pub pods: Vec<String>,
    /// .gitignore-style patterns of files whose changes are ignored (on top of the
    /// project's `.gitignore`, editor temporary files and rcompose's own directories).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// `sync` only (required): the absolute path in the containers that each watched path
    /// maps to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `restart` only: restart the pods that depend on `pods` too (transitively); default
    /// `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<bool>,
    /// `sync` only: the containers (by name) that get the files; default: every container
    /// of the pods (init containers excepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

/// What a watch rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WatchAction {
    /// Copy changed files (and deletions) into every running replica, without a restart.
    Sync,
    /// Restart the pods' containers.
    Restart,
    /// Rebuild the watched image layers and re-apply the manifest (changed pods are
    /// replaced).
    Redeploy,
}

impl WatchAction {
    /// From its spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sync" => Some(WatchAction::Sync),
            "restart" => Some(WatchAction::Restart),
            "redeploy" => Some(WatchAction::Redeploy),
            _ => None,
        }
    }
}

/// The project network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The IPv4 subnet (`10.90.0.0/24`); default: a free /24 of 10.90.0.0/16 that overlaps
    /// no host route and no other project's network. The gateway (the bridge) is its first
    /// address, services get addresses from its top, pods from its bottom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// Whether a pod is on the project network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// On the project network: an address, the bridge as gateway, services by name.
    #[default]
    Project,
    /// Only a loopback interface.
    None,
}

impl NetworkMode {
    /// From its spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "project" => Some(NetworkMode::Project),
            "none" => Some(NetworkMode::None),
            _ => None,
        }
    }
}

/// An image: a base (another image, or a rootfs directory) plus layers laid over it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Image to stack on: `host` or another declared image. Default `host` unless `rootfs`
    /// is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A root filesystem directory (relative to the manifest's directory) used as the bottom
    /// layer instead of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// An image archive (relative to the manifest's directory): a `docker save` tar, an OCI
    /// layout (directory or tar), or a root filesystem tar (optionally gzip-compressed),
    /// imported into the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// An image in an OCI registry (`docker.io/library/busybox:1.36`,
    /// `localhost:5000/app@sha256:...`), pulled into the store.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// When to pull `ref`: `missing` (default), `always` or `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullPolicy>,
    /// Keep the setuid/setgid bits of files in an `archive` or `ref` image's layers
    /// (refused by default: layers are untrusted input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_setuid: Option<bool>,
    /// Directories laid over the image root, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSpec>,
}

/// When an image from a registry is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Only when the store does not have it.
    Missing,
    /// At every `up` (layers already present are not downloaded again).
    Always,
    /// Never: the image must be in the store.
    Never,
}

/// A layer: a directory laid over `/`, or over `target` in the long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LayerSpec {
    /// A directory laid over `/`.
    Path(String),
    /// A directory laid over `target`.
    Mount(LayerMount),
}

/// The long form of a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerMount {
    /// Directory on the host, relative to the manifest's directory.
    pub source: String,
    /// Absolute path in the image where the directory's contents appear; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A pod: containers sharing one network namespace, replicated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// Number of replicas; default 1, 0 allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Labels that service selectors match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Pods to wait for: a list (condition `started`) or a map with conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<DependsOnSpec>,
    /// Restart policy; default `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// Delays between restarts: `{ initial: 100ms, max: 10s }` (the defaults); each restart
    /// doubles the delay up to `max`; `initial: 0s` restarts at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    /// The container runtime: `builtin` (default), or an external OCI runtime, `crun` or
    /// `runc`, given a bundle with the same settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeKind>,
    /// Volumes of the pod, mounted by name into its containers: `{ shared: { empty_dir: {} } }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, PodVolumeSpec>,
    /// Containers run to completion, one after the other, before `containers` start (as
    /// Kubernetes' initContainers); each must exit 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<ContainerSpec>,
    /// The containers, at least one.
    pub containers: Vec<ContainerSpec>,
    /// `project` (default): an address on the project network; `none`: loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// How running replicas are replaced when the pod's spec changes: a rolling update
    /// (`{ max_surge: 25%, max_unavailable: 25%, min_ready: 0s, progress_deadline: 60s }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateSpec>,
    /// Node labels a node must all have for the pod's replicas to be placed on it
    /// (Kubernetes' `nodeSelector`); must match at least one node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

/// A pod's rolling update: new replicas start and become ready before old ones stop, at
/// most `max_surge` above and `max_unavailable` below the replica count at any time; one
/// that does not get ready within `progress_deadline` (or crashes) rolls the pod back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpec {
    /// Replicas started above the count during the update: a number, or a percentage of
    /// the count rounded up (`25%`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<CountOrPercent>,
    /// Ready replicas the update may take below the count: a number, or a percentage
    /// rounded down (`25%`, the default). Not 0 together with `max_surge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<CountOrPercent>,
    /// How long a new replica must have been ready to count as available (default `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready: Option<String>,
    /// How long the update may take before it is rolled back (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
}

/// A number of replicas, or a percentage of the replica count (`25%`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CountOrPercent {
    /// A number of replicas.
    Count(u32),
    /// `N%` of the replica count.
    Percent(String),
}

/// Where a config's or secret's content comes from: exactly one of the three.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceSpec {
    /// A host file, relative to the manifest's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// An environment variable of the `rcompose up` process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The content itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// A config or secret a container mounts: its name, or the long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FileUseSpec {
    /// The name: configs at `/<name>`, secrets at `/run/secrets/<name>`.
    Short(String),
    /// `{ source, target, uid, gid, mode }`.
    Long(LongFileUseSpec),
}

/// The long form of a config or secret in a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LongFileUseSpec {
    /// The config's or secret's name.
    pub source: String,
    /// Where: absolute, or (secrets) relative to /run/secrets; default as the short form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Owner uid; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner gid; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Permission bits (`0440` in YAML is octal): default 0444 for configs, 0400 for secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// A named volume; it takes no options yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {}

/// A pod volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PodVolumeSpec {
    /// An empty directory made when a replica starts, shared by the replica's containers
    /// that mount it, removed with the replica (Kubernetes' `emptyDir`).
    pub empty_dir: EmptyDirSpec,
}

/// `empty_dir` options: none yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyDirSpec {}

/// A container mount: `SOURCE:TARGET[:ro|:rw]` (a source starting with `.`, `/` or `~` is a
/// host path, else a pod volume or a named volume), or the long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MountSpec {
    /// `./src:/app`, `data:/var/lib/db`, `./conf:/etc/app:ro`.
    Short(String),
    /// `{ type, source, target, read_only, tmpfs }`.
    Long(LongMountSpec),
}

/// The long form of a mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LongMountSpec {
    /// What is mounted.
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Host path (`bind`, relative to the manifest), volume name (`volume`, `empty_dir`);
    /// none for `tmpfs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Absolute path in the container.
    pub target: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// `tmpfs` options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsSpec>,
}

/// Mount types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MountType {
    /// A host file or directory.
    Bind,
    /// A named volume (top-level `volumes`).
    Volume,
    /// A fresh tmpfs, private to the container.
    Tmpfs,
    /// A pod volume (`pods.<name>.volumes`).
    EmptyDir,
}

/// `tmpfs` options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TmpfsSpec {
    /// Size limit: `64Mi`, `1G` or bytes; default half of the RAM (the kernel's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
}

/// `depends_on`: a list of pod names, or a map of pod names to conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DependsOnSpec {
    /// Pod names; each waits for condition `started`.
    List(Vec<String>),
    /// Pod names with conditions.
    Map(BTreeMap<String, DependencySpec>),
}

/// One dependency in the map form of `depends_on`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DependencySpec {
    /// When the dependency counts as met; default `started`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// When a dependency counts as met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every replica's containers are running.
    Started,
    /// Every replica's containers exited with code 0.
    Completed,
    /// Every replica's containers are ready (their readiness probes pass).
    Healthy,
}

/// Restart delays of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    /// The first delay (default `100ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    /// The longest delay (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

/// The runtime that runs a pod's containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// rcompose's own: a re-executed helper and a 2 KiB init as PID 1.
    #[default]
    Builtin,
    /// crun, with an OCI bundle.
    Crun,
    /// runc, with an OCI bundle.
    Runc,
}

impl RuntimeKind {
    /// The spelling in the manifest and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Builtin => "builtin",
            RuntimeKind::Crun => "crun",
            RuntimeKind::Runc => "runc",
        }
    }

    /// From its spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "builtin" => Some(RuntimeKind::Builtin),
            "crun" => Some(RuntimeKind::Crun),
            "runc" => Some(RuntimeKind::Runc),
            _ => None,
        }
    }
}

/// What happens when a container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Restart whatever the exit code.
    Always,
    /// Restart after a non-zero exit or a kill.
    OnFailure,
    /// Never restart (Compose's `no`).
    Never,
}

/// A container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Name, unique in the pod.
    pub name: String,
    /// Image name; default `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replaces the image's Entrypoint (and drops its Cmd), as in Compose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<CommandSpec>,
    /// argv as a list, or a string split into shell words (quotes respected, no expansion).
    /// Replaces the image's Cmd; required when the image has no Entrypoint or Cmd (`host`,
    /// a rootfs directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
    /// Environment: a map, or a list of `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvSpec>,
    /// Absolute working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User to run as: `uid`, `uid:gid`, `name` or `name:group` (names from the image's
    /// /etc/passwd and /etc/group); default the image's `User`, else root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// cgroup limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// Every capability, no seccomp filter, no masked /proc paths, as Docker's
    /// `--privileged` (devices stay the minimal set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Mount the root file system read-only (tmpfs /tmp, /run and volumes stay writable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Give the command a pseudo-terminal as stdin, stdout and stderr (Compose's `tty`);
    /// its output goes to the log as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// The signal that asks the command to stop: `SIGINT`, `INT` or a number; default
    /// `SIGTERM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// How long the command gets after the stop signal before SIGKILL: `10s`, `1m30s`,
    /// `500ms`; default `up -t` (10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
    /// Capabilities added to Docker's default set (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_add: Option<Vec<String>>,
    /// Capabilities removed from Docker's default set (`ALL` removes every one; `cap_add`
    /// then adds back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_drop: Option<Vec<String>>,
    /// Mounts: host paths, named volumes, pod volumes, tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<MountSpec>>,
    /// Configs to mount (names or long forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<Vec<FileUseSpec>>,
    /// Secrets to mount (names or long forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<FileUseSpec>>,
    /// When the container is ready for traffic and dependents (`depends_on: healthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeSpec>,
    /// When the container is alive; after `failure_threshold` failures it is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<ProbeSpec>,
    /// Until it succeeds once, readiness and liveness wait; after `failure_threshold`
    /// failures the container is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<ProbeSpec>,
    /// Compose's health check: taken as a readiness and a liveness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthcheckSpec>,
}

/// A probe: exactly one of `exec`, `http` and `tcp`, and its timing (Kubernetes' probes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// A command run in the container (its namespaces, cgroup, user and environment);
    /// exit code 0 is a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<CommandSpec>,
    /// An HTTP GET of `http://127.0.0.1:PORT/PATH` in the pod's network namespace; a 2xx or
    /// 3xx status is a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbeSpec>,
    /// A TCP connection to `127.0.0.1:PORT` in the pod's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbeSpec>,
    /// Time between probes once the container was ready (default `10s`); before that the
    /// probe runs every 100 ms (or `period`, if shorter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// How long one probe may take (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Time after the start before the first probe (default `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    /// Failures in a row that count (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Successes in a row that count (default 1; must be 1 for liveness and startup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
}

/// The HTTP GET of a probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeSpec {
    /// The port (1-65535).
    pub port: u16,
    /// The path, from `/` (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The TCP connection of a probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpProbeSpec {
    /// The port (1-65535).
    pub port: u16,
}

/// Compose's `healthcheck`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckSpec {
    /// `[CMD, prog, arg...]`, `[CMD-SHELL, "shell text"]`, a string (shell text) or `[NONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<CommandSpec>,
    /// Time between checks (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long one check may take (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Failures in a row that make the container unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Time after the start during which the liveness side does not count failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
    /// `true`: no health check (the image's or this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<bool>,
}

/// A command: argv list or a shell-words string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandSpec {
    /// argv, one word per item.
    Argv(Vec<Text>),
    /// Split into words like a shell (quotes respected, no expansion).
    Shell(String),
}

/// Environment variables: a map, or a list of `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvSpec {
    /// `KEY: value`; numbers and booleans keep their source text.
    Map(BTreeMap<String, Text>),
    /// `KEY=VALUE` items.
    List(Vec<String>),
}

/// Limits of one container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    /// CPU: `500m`, `0.5`, `1`, `2.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory: `128Mi`, `1G`, `512k`, `1Gi` or bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Maximum number of processes (pids.max), at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// What the scheduler reserves for the container on its node: `{ cpu, memory }`, each at
    /// most its limit; a resource without a request takes its limit (as in Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestsSpec>,
}

/// A container's resource requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestsSpec {
    /// CPU: `250m`, `0.5`, `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory: `64Mi`, `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// A service: a stable name over the pods its selector picks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Labels a pod must all have to be picked; must pick at least one pod.
    pub selector: BTreeMap<String, String>,
    /// Ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// How connections are spread over the ready endpoints: `round_robin` (default) or
    /// `least_conn` (the endpoint with the fewest open connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
}

/// A service's balancing strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each new connection to the next ready endpoint.
    #[default]
    RoundRobin,
    /// Each new connection to the ready endpoint with the fewest open connections.
    LeastConn,
}

impl Balance {
    /// From its spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "round_robin" => Some(Balance::RoundRobin),
            "least_conn" => Some(Balance::LeastConn),
            _ => None,
        }
    }
}

/// A service port: `80`, `"8080:80"` (publish:port, Compose's HOST:CONTAINER) or the long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PortSpec {
    /// A port number: port = target, not published.
    Number(u16),
    /// `"PORT"` or `"PUBLISH:PORT"`.
    Short(String),
    /// The long form.
    Long(PortMapping),
}

/// The long form of a service port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// The port the service listens on.
    pub port: u16,
    /// The port on the pods; default `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u16>,
    /// Host port to publish on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<u16>,
    /// The host address a published port binds; default 127.0.0.1 (`0.0.0.0`: every
    /// address, as Docker's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A scalar kept as its source text: `NO` stays `NO`, `1.10` stays `1.10`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text(pub String);

/// A quantity such as `500m`, `0.5` or `128Mi`, kept as text; parsed during validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(pub String);

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Accepts a string, number or boolean and keeps its text.
struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(Text)
    }
}
impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(Quantity)
    }
}
impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A string; numbers and booleans are kept as written.",
            "type": ["string", "number", "boolean"]
        })
    }
}
impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "cpu: `500m`, `0.5`, `1`; memory: `128Mi`, `1G`, `512k` or bytes.",
            "type": ["string", "number"]
        })
    }
}

/// Parses YAML text into the manifest model, reporting every syntax and shape problem
/// (unknown keys, wrong types, missing keys, duplicate keys) with its location. `origin` is
/// only used in messages. Merge keys (`<<`), anchors and aliases are applied.
///
/// # Errors
///
/// Every syntax and shape problem of the file, in source order.
pub fn parse(source: &str, origin: &Path) -> Result<Manifest, ManifestError> {
    let mut issues = convert::Issues::default();
    let manifest = convert::convert(source, &mut issues);
    match manifest {
        Some(m) if issues.is_empty() => Ok(m),
        _ => Err(issues.into_error(source, origin)),
    }
}

/// Parses and validates a manifest, reporting all of its problems at once.
///
/// # Errors
///
/// Every syntax, shape and semantic problem of the file (unknown references, cycles, bad
/// quantities, ...), in source order, each with its line and column.
pub fn load(source: &str, origin: &Path) -> Result<ValidManifest, ManifestError> {
    load_checked(
        source,
        origin,
        &Facts {
            path_exists: &|_| true,
            env_set: &|_| true,
            subnet_conflict: &|_, _| None,
        },
    )
}

/// What [`load_checked`] asks the caller about the world: this module does no I/O.
pub struct Facts<'a> {
    /// Whether a path as written in the manifest (relative to its directory, or absolute)
    /// exists: bind mount sources, config and secret files.
    pub path_exists: &'a dyn Fn(&str) -> bool,
    /// Whether an environment variable is set (configs and secrets from `environment`).
    pub env_set: &'a dyn Fn(&str) -> bool,
    /// What on the host a network subnet overlaps (`the host route 10.0.0.0/8 (dev eth0)`),
    /// if anything; the second argument is the manifest's `name`, if it has one (the
    /// project's own network does not count).
    pub subnet_conflict: &'a dyn Fn(subnet::Subnet, Option<&str>) -> Option<String>,
}

impl std::fmt::Debug for Facts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Facts").finish_non_exhaustive()
    }
}

/// [`load`], also asking `facts` whether what the manifest points at outside itself exists
/// (bind mount sources, config and secret files and variables), so a missing one is
/// reported with its location like every other problem.
///
/// # Errors
///
/// Every problem of the file, in one [`ManifestError`].
pub fn load_checked(
    source: &str,
    origin: &Path,
    facts: &Facts<'_>,
) -> Result<ValidManifest, ManifestError> {
    let mut issues = convert::Issues::default();
    let Some(manifest) = convert::convert(source, &mut issues) else {
        return Err(issues.into_error(source, origin));
    };
    let valid = validate::validate(&manifest, &mut issues, facts);
    if issues.is_empty() {
        Ok(valid)
    } else {
        Err(issues.into_error(source, origin))
    }
}

/// Validates a manifest that did not come from YAML text (problems carry paths only).
///
/// # Errors
///
/// Every semantic problem, without source locations.
pub fn validate(manifest: &Manifest, origin: &Path) -> Result<ValidManifest, ManifestError> {
    let mut issues = convert::Issues::default();
    let facts = Facts {
        path_exists: &|_| true,
        env_set: &|_| true,
        subnet_conflict: &|_, _| None,
    };
    let valid = validate::validate(manifest, &mut issues, &facts);
    if issues.is_empty() {
        Ok(valid)
    } else {
        Err(issues.into_error("", origin))
    }
}

/// Turns a directory name into a project name the way Compose does: lower-cased, characters
/// other than `[a-z0-9_-]` dropped, leading `-`/`_` dropped. `None` if nothing is left.
pub fn normalize_project_name(dir_name: &str) -> Option<String> {
    let name: String = dir_name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_')
        .collect();
    let name = name.trim_start_matches(['-', '_']);
    (!name.is_empty()).then(|| name.to_string())
}

/// The JSON Schema of [`Manifest`], pretty-printed, with a trailing newline.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Manifest);
    let mut text = serde_json::to_string_pretty(&schema)
        .expect("invariant: a schemars schema is plain JSON and always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests;
