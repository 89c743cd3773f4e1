//! L3: the supervisor. It turns a [`DesiredState`] into running containers and keeps them:
//! start waves by dependency, multiplexed logs, restarts with backoff, and a teardown in
//! reverse dependency order that removes everything it made.
//!
//! Uses `plan` and `runtime`; never `cli`, clap or indicatif (progress goes through the
//! [`Progress`] trait).
//!
//! Threads: the caller's thread runs the loop; one thread waits for signals (SIGCHLD, SIGINT,
//! SIGTERM, SIGHUP, blocked everywhere else) and reaps children; one small thread per running
//! container copies its output to its log file and the [`LogSink`]. Containers are started
//! by re-executing rcompose (see [`crate::runtime::spawn`]), never by forking this process.

mod commands;
pub mod control;
pub mod events;
pub mod exec;
mod faults;
mod memory;
pub mod net;
pub mod probe;
mod reconcile;
pub mod restart;
pub mod rollout;
mod sched;
pub mod state;
pub mod teardown;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use self::state::{ContainerRecord, ContainerState, ProjectPaths, ProjectState};
use crate::manifest::RuntimeKind;
use crate::plan::desired::{Condition, ContainerPlan, DesiredState, MountSource, PodPlan};
use crate::runtime::cgroup::{self, CgroupError, Cgroups, KernelCgroup};
use crate::runtime::netns::{self, NetnsError};
use crate::runtime::rootfs::{LayerError, RootfsSpec, dirs_to_create, stage_layers};
use crate::runtime::{self, ContainerConfig, SpawnError};

/// Longest log line kept as one line; longer output is split.
const MAX_LOG_LINE: u64 = 16 * 1024;

/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Errors of the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A file or directory operation failed.
    #[error("failed to access `{path}`")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another supervisor holds the project.
    #[error("project `{project}` is already up; run `rcompose -p {project} down` first")]
    Busy {
        /// The project.
        project: String,
    },
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup {
        /// The cause.
        #[from]
        source: CgroupError,
    },
    /// A network namespace operation failed.
    #[error(transparent)]
    Netns {
        /// The cause.
        #[from]
        source: NetnsError,
    },
    /// A layer could not be prepared.
    #[error("failed to prepare image `{image}` of pod `{pod}`")]
    Layer {
        /// The pod.
        pod: String,
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: LayerError,
    },
    /// Writing state failed.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// A container's user is not in its image.
    #[error("container `{container}` cannot run as `{user}`: {reason}")]
    User {
        /// The container (`pod-N/container`).
        container: String,
        /// The user as the manifest or image says it.
        user: String,
        /// Why.
        reason: String,
    },
    /// A config or secret could not be written for a container.
    #[error("cannot provide {what} to container `{container}`: {reason}")]
    File {
        /// `config `name`` or `secret `name``.
        what: String,
        /// The container (`pod-N/container`).
        container: String,
        /// Why.
        reason: String,
    },
    /// The project network could not be made or changed.
    #[error(transparent)]
    Network {
        /// The cause.
        source: crate::network::NetworkError,
    },
    /// The balancer could not serve a service.
    #[error(transparent)]
    Balancer {
        /// The cause.
        source: crate::balancer::BalancerError,
    },
    /// The desired state cannot be applied as it is.
    #[error("{0}")]
    Config(String),
    /// Setting up the process (signals, subreaper) failed.
    #[error("failed to set up the supervisor: {what}")]
    Setup {
        /// What failed.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What happened, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A pod waits for a dependency.
    Waiting {
        /// `pod`.
        pod: String,
        /// The dependency.
        on: String,
        /// Its condition.
        condition: &'static str,
    },
    /// A container's command runs.
    Started {
        /// `pod-N/container` (or `pod-N` for one-container pods).
        name: String,
        /// Host pid of its init.
        pid: i32,
    },
    /// A container could not start.
    Failed {
        /// Its name.
        name: String,
        /// Why.
        message: String,
    },
    /// A container exited.
    Exited {
        /// Its name.
        name: String,
        /// Exit code (128 + n for signal n).
        code: i32,
        /// `OOMKilled` and the like.
        reason: Option<String>,
    },
    /// The kernel's OOM killer killed a process of a container at its memory limit (its
    /// `Exited` follows, with reason `OOMKilled`).
    OomKilled {
        /// Its name.
        name: String,
    },
    /// A container is restarted after `delay`.
    Restarting {
        /// Its name.
        name: String,
        /// The backoff.
        delay: Duration,
    },
    /// Every pod is running (or completed).
    Ready,
    /// A container became ready or not ready (its readiness probe, or its startup probe
    /// when it has no readiness probe).
    Readiness {
        /// Its name.
        name: String,
        /// Ready now.
        ready: bool,
        /// The probe's failure, when it became not ready.
        detail: Option<String>,
    },
    /// A liveness or startup probe failed too often: the container is stopped and handled
    /// by its restart policy.
    Unhealthy {
        /// Its name.
        name: String,
        /// `liveness` or `startup`.
        probe: &'static str,
        /// What failed.
        message: String,
    },
    /// Something works less than asked, and the stack goes on.
    Warning {
        /// What.
        message: String,
    },
    /// Teardown begins.
    Stopping {
        /// Why.
        reason: String,
    },
    /// Everything was removed.
    Removed,
    /// A replica fits no node: it waits, `Pending`, until resources are released.
    Pending {
        /// The replica (`pod-N`).
        name: String,
        /// Why, in the scheduler's words.
        reason: String,
    },
    /// `node down|drain|up`: a node was failed, drained or brought back.
    Node {
        /// The node.
        node: String,
        /// `down`, `drain` or `up`.
        action: &'static str,
    },
    /// `fault add|rm|clear`: a network fault began or ended.
    Fault {
        /// The fault's name.
        name: String,
        /// `added` or `removed`.
        phase: &'static str,
        /// What it does (`added`): its effects, target and peer.
        detail: Option<String>,
    },
    /// A rollout of a pod's new revision began, completed, failed or was rolled back.
    Rollout {
        /// The pod.
        pod: String,
        /// The revision rolled out to.
        revision: u32,
        /// `started`, `complete`, `failed`, `rolled back`.
        phase: &'static str,
        /// Why it failed, and what it goes back to.
        detail: Option<String>,
    },
}

/// Receives [`Event`]s (the CLI draws them).
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: &Event);
}

/// Receives container output lines (the CLI prints them with a prefix).
pub trait LogSink: Send + Sync {
    /// One line (without its newline) of container `name`; `index` is a stable small number
    /// per container, for colours.
    fn line(&self, name: &str, index: usize, line: &str);
}

/// How `up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// What to run.
    pub desired: DesiredState,
    /// The manifest's files it came from, the main one first (recorded in the state).
    pub manifests: Vec<PathBuf>,
    /// State root (`/run/rcompose`).
    pub run_root: PathBuf,
    /// procfs (`/proc`).
    pub proc_root: PathBuf,
    /// The rcompose binary to re-execute for containers.
    pub exe: PathBuf,
    /// Time between SIGTERM and SIGKILL at teardown.
    pub grace: Duration,
    /// Keep running after every container has exited (detached supervisor, until `down`).
    pub stay: bool,
    /// `up --wait`: ready means every pod ready (probes) or completed with 0, not only
    /// started; a pod that fails first, or `wait_timeout`, fails the start.
    pub wait: bool,
    /// With `wait`: the longest wait.
    pub wait_timeout: Option<Duration>,
    /// `--abort-on-exit`: the first container (not an init container) that exits for good
    /// stops everything.
    pub abort_on_exit: bool,
    /// `--exit-code-from POD` (with `abort_on_exit`) and `run POD` (without): `up` returns
    /// this pod's exit code; without `abort_on_exit`, only this pod's exit stops the stack.
    pub exit_code_from: Option<String>,
    /// Forks container init helpers without exec, if started (see
    /// [`runtime::forkserver`]); `None` re-executes rcompose for each.
    pub forkserver: Option<Arc<runtime::forkserver::ForkServer>>,
}

/// How a supervisor run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every container exited on its own (and was not restarted).
    AllExited,
    /// A signal asked for teardown.
    Signalled(i32),
    /// A pod could not start.
    StartFailed(String),
    /// `--abort-on-exit` / `--exit-code-from`: a container exited (for good), and this is
    /// the exit code `up` returns (the named pod's, with `--exit-code-from`).
    Aborted {
        /// The container that exited (`pod-N/container`).
        name: String,
        /// The code to return.
        code: i32,
    },
}

/// What a control request did per pod, and a termination signal that came meanwhile.
type CommandResult = Result<(BTreeMap<String, control::Change>, Option<i32>), String>;

enum Msg {
    Exit(i32, WaitStatus),
    Signal(Signal),
    /// A request on the control socket, and where its answer goes.
    Control(control::Request, Sender<control::Response>),
    /// A network probe's result.
    Probe(probe::Outcome),
}

/// One container instance the supervisor owns.
struct Slot {
    /// Unique in this supervisor (indices change when an `up` applies a new state).
    id: u64,
    /// Incremented at every start: probe results of an earlier run are dropped.
    run: u64,
    probing: probe::Probing,
    /// Why a failed probe is restarting it (the exit's reason).
    killing: Option<String>,
    /// When it gets SIGKILL after a failed probe's stop signal.
    kill_at: Option<Instant>,
    record: ContainerRecord,
    plan: ContainerPlan,
    restart: crate::plan::desired::RestartPolicy,
    /// The pod's first and longest restart delay.
    backoff: (Duration, Duration),
    cgroup: Option<KernelCgroup>,
    rootfs: RootfsSpec,
    netns: PathBuf,
    /// Where its configs and secrets are written (see `write_files`), one per `plan.files`.
    files: Vec<PathBuf>,
    due: Option<Instant>,
    started_at: Option<Instant>,
    logger: Option<JoinHandle<()>>,
    /// The node its replica is placed on, once placed (see `sched`).
    node: Option<String>,
}

/// The supervisor of one project.
pub struct Supervisor {
    opts: UpOptions,
    paths: ProjectPaths,
    progress: Arc<dyn Progress>,
    sink: Option<Arc<dyn LogSink>>,
    slots: Vec<Slot>,
    /// The replicas (by network namespace pin) whose start has begun: [`Supervisor::advance`]
    /// moves them from one init container to the next, then to their containers.
    started: Vec<PathBuf>,
    /// Start times of this process and of its fork server (for the state file).
    starts: (Option<u64>, Option<u64>),
    exits: HashMap<i32, WaitStatus>,
    rx: Receiver<Msg>,
    /// Where the cgroup controllers are mounted (read once, in [`Supervisor::new`]).
    mounts: Vec<(String, PathBuf)>,
    /// Each pod's fingerprint (plan and config/secret content; see `reconcile`).
    fingerprints: HashMap<String, [u8; 32]>,
    /// The environment configs and secrets are read from, once an `up` applied one (see
    /// `reconcile`); this process's own until then.
    file_env: Option<BTreeMap<String, String>>,
    /// The client of an apply, answered once the pods it changed have started.
    pending: Option<(Sender<control::Response>, BTreeMap<String, control::Change>)>,
    /// Whether the configs and secrets tmpfs is mounted.
    files_mounted: bool,
    /// Exec probes whose helper runs, by the helper's pid.
    exec_probes: HashMap<i32, probe::ExecInFlight>,
    /// For probe threads' results.
    tx: Sender<Msg>,
    /// The next slot id.
    next_id: u64,
    /// `down -t`: the grace period every container gets at teardown.
    grace_override: Option<Duration>,
    /// `events.jsonl`: every event, for `rcompose events`.
    events: events::EventLog,
    /// The project network, once made (see `net`).
    net: Option<net::ProjectNet>,
    /// The balancer, once a service has ports.
    balancer: Option<crate::balancer::Balancer>,
    /// What it serves, by service.
    served: BTreeMap<String, net::Served>,
    /// The endpoints it was last given, by service.
    endpoints: BTreeMap<String, Vec<std::net::Ipv4Addr>>,
    /// Rollouts in progress, by pod (see `rollout`).
    rollouts: BTreeMap<String, rollout::Rollout>,
    /// Each pod's revisions, oldest first.
    history: BTreeMap<String, Vec<rollout::Revision>>,
    /// How the last rollout of a pod failed, by pod (told to the client of the apply).
    rollout_failures: BTreeMap<String, String>,
    /// Replicas (by instance) a rollout stopped: removed once they exited.
    replaced: std::collections::BTreeSet<String>,
    /// Slots (by id) stopping once their connections have drained, since when.
    draining: Vec<(u64, Instant)>,
    /// The machine's capacity (the one node without `nodes:`), read when first needed.
    machine: std::sync::OnceLock<crate::plan::schedule::Machine>,
    /// Nodes taken down or cordoned (`node down`, `node drain`); the others are `Ready`.
    node_status: BTreeMap<String, crate::plan::schedule::NodeStatus>,
    /// Nodes whose cgroup (with their capacity) is made.
    node_cgroups: Vec<String>,
    /// A pending replica's reason changed since the state was last saved for it.
    reasons_changed: bool,
    /// Replicas got new addresses (see `sched`): the hosts file is to be rewritten.
    hosts_dirty: bool,
    /// Network faults and what each replica's namespace applies of them.
    faults: faults::Faults,
    _lock: teardown::ProjectLock,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("project", &self.paths.project)
            .finish_non_exhaustive()
    }
}

/// Blocks the signals the supervisor waits for in the calling thread (threads started
/// afterwards inherit the mask). Call before starting any thread.
pub fn block_signals() -> io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&supervised_signals()), None)
        .map_err(io::Error::from)
}

fn supervised_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

impl Supervisor {
    /// Takes the project (failing when another supervisor holds it), removes what a crashed
    /// earlier run left behind, and prepares the state. Nothing runs yet.
    pub fn new(
        opts: UpOptions,
        progress: Arc<dyn Progress>,
        sink: Option<Arc<dyn LogSink>>,
    ) -> Result<Self, SupervisorError> {
        let paths = ProjectPaths::new(&opts.run_root, &opts.desired.project);
        let setup = |what| move |source| SupervisorError::Setup { what, source };
        // One malloc arena for every thread: the log, probe and control threads allocate
        // little, and each extra glibc arena costs resident memory (about 0.5 MB for a
        // 20-container stack, measured with MALLOC_ARENA_MAX=1).
        // SAFETY: mallopt only sets a parameter of this process's allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
        block_signals().map_err(setup("blocking signals"))?;
        runtime::become_subreaper().map_err(setup("becoming a child subreaper"))?;
        let lock = match teardown::try_lock(&paths)? {
            Some(lock) => lock,
            None => {
                return Err(SupervisorError::Busy {
                    project: paths.project.clone(),
                });
            }
        };
        // leftovers of a run whose supervisor died: remove them before starting afresh
        let stale = state::ProjectState::load(&paths.state_file())
            .ok()
            .flatten();
        let mounts = teardown::cgroup_mounts(&opts.proc_root);
        let lock = if stale.is_some()
            || mounts
                .iter()
                .any(|(_, m)| m.join(paths.cgroup_subtree()).exists())
        {
            teardown::cleanup(&paths, stale.as_ref(), &mounts)?;
            // cleanup removed the directory with the lock file: lock the new one
            match teardown::try_lock(&paths)? {
                Some(l) => {
                    drop(lock);
                    l
                }
                None => lock,
            }
        } else {
            lock
        };
        // From here on the project directory exists: any failure removes it again, so that
        // a failed `up` leaves no half-made stack.
        let fail = |paths: &ProjectPaths, e: SupervisorError| {
            let _ = teardown::cleanup(paths, None, &mounts);
            Err(e)
        };
        // `layers/` is made only when a layer is staged there; containers, logs and network
        // namespace pins live in the project directory itself (see `ProjectPaths`)
        let (tx, rx) = mpsc::channel();
        let control_tx = tx.clone();
        let probe_tx = tx.clone();
        if let Err(e) = spawn_signal_thread(tx) {
            return fail(&paths, setup("starting the signal thread")(e));
        }
        let mut sup = Self {
            starts: (None, None),
            slots: Vec::new(),
            started: Vec::new(),
            exits: HashMap::new(),
            rx,
            mounts: mounts.clone(),
            fingerprints: HashMap::new(),
            file_env: None,
            pending: None,
            files_mounted: false,
            exec_probes: HashMap::new(),
            tx: probe_tx,
            next_id: 0,
            grace_override: None,
            events: events::EventLog::default(),
            net: None,
            balancer: None,
            served: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            history: BTreeMap::new(),
            rollout_failures: BTreeMap::new(),
            replaced: std::collections::BTreeSet::new(),
            draining: Vec::new(),
            machine: std::sync::OnceLock::new(),
            node_status: BTreeMap::new(),
            faults: faults::Faults::new(&opts.desired.faults),
            node_cgroups: Vec::new(),
            reasons_changed: false,
            hosts_dirty: false,
            paths,
            progress,
            sink,
            opts,
            _lock: lock,
        };
        sup.events = events::EventLog::open(&sup.paths.events_file());
        let proc_root = &sup.opts.proc_root;
        sup.starts = (
            state::process_start(proc_root, std::process::id().cast_signed()),
            sup.opts
                .forkserver
                .as_ref()
                .and_then(|f| state::process_start(proc_root, f.pid())),
        );
        if let Err(e) = sup
            .ensure_network()
            .and_then(|()| sup.ensure_balancer())
            .and_then(|()| sup.build_slots())
            .and_then(|()| sup.write_hosts())
            .and_then(|()| sup.check_users_from(0))
            .and_then(|()| sup.save())
            .and_then(|()| sup.write_files_from(0))
        {
            return fail(&sup.paths, e);
        }
        // the files were just read, so this cannot fail but for a race: then no pod matches
        // and a later `up` recreates them all
        sup.fingerprints = sup.fingerprints().unwrap_or_default();
        sup.record_first_revisions();
        let socket = sup.paths.control_socket();
        if let Err(e) = control::listen(&socket, move |request, reply| {
            control_tx.send(Msg::Control(request, reply)).is_ok()
        }) {
            return fail(&sup.paths, setup("listening on the control socket")(e));
        }
        Ok(sup)
    }

    fn build_slots(&mut self) -> Result<(), SupervisorError> {
        let desired = self.opts.desired.clone();
        for pod in desired
            .waves
            .iter()
            .flatten()
            .filter_map(|p| desired.pods.get(p))
        {
            self.add_slots(pod)?;
        }
        Ok(())
    }

    /// Appends the slots of `pod` (every replica, init containers first), `Waiting`.
    fn add_slots(&mut self, pod: &PodPlan) -> Result<(), SupervisorError> {
        self.add_replicas(pod, 1..=pod.replicas)
    }

    /// Appends the slots of replicas `replicas` of `pod`, `Waiting`, at its current
    /// revision.
    fn add_replicas(
        &mut self,
        pod: &PodPlan,
        replicas: std::ops::RangeInclusive<u32>,
    ) -> Result<(), SupervisorError> {
        let revision = self.revision_of(&pod.name);
        self.add_replicas_at(pod, replicas, revision)
    }

    /// Appends the slots of replicas `replicas` of `pod` at `revision`, `Waiting`.
    fn add_replicas_at(
        &mut self,
        pod: &PodPlan,
        replicas: std::ops::RangeInclusive<u32>,
        revision: u32,
    ) -> Result<(), SupervisorError> {
        for mut slot in self.slots_of(pod, replicas, revision)? {
            slot.id = self.next_id;
            self.next_id += 1;
            self.slots.push(slot);
        }
        Ok(())
    }

    /// The slots of replicas `replicas` of `pod`, init containers first, `Waiting`: staged
    /// layers and `empty_dir` directories are made here.
    fn slots_of(
        &self,
        pod: &PodPlan,
        replicas: std::ops::RangeInclusive<u32>,
        revision: u32,
    ) -> Result<Vec<Slot>, SupervisorError> {
        let mut out: Vec<Slot> = Vec::new();
        let mut made: Vec<std::net::Ipv4Addr> = Vec::new();
        for replica in replicas {
            // what names its files, cgroups and namespaces (`web-1`, `web-1_r2`)
            let replica_name = state::instance_name(&pod.name, replica, revision);
            let ip = if pod.network {
                let ip = self.replica_address(&replica_name, &made)?;
                made.push(ip);
                Some(ip)
            } else {
                None
            };
            for c in &pod.containers {
                let dir = self.paths.container_dir(&replica_name, &c.name);
                let (host, lowers) =
                    stage_layers(&c.rootfs.layers, &self.paths.layers()).map_err(|source| {
                        SupervisorError::Layer {
                            pod: pod.name.clone(),
                            image: c.image.clone(),
                            source,
                        }
                    })?;
                out.push(Slot {
                    id: 0,
                    run: 0,
                    probing: probe::Probing::default(),
                    killing: None,
                    kill_at: None,
                    record: ContainerRecord {
                        pod: pod.name.clone(),
                        replica,
                        container: c.name.clone(),
                        state: ContainerState::Waiting,
                        pid: None,
                        pid_start: None,
                        restarts: 0,
                        exit_code: None,
                        reason: None,
                        cgroup: format!(
                            "{}/{replica_name}/{}",
                            self.paths.cgroup_subtree(),
                            c.name
                        ),
                        log: self.paths.log_file(&replica_name, &c.name),
                        dir: dir.clone(),
                        init: c.init,
                        ready: false,
                        ip,
                        revision,
                        node: None,
                    },
                    plan: self.with_empty_dirs(c, &replica_name)?,
                    restart: pod.restart,
                    backoff: pod.backoff,
                    cgroup: None,
                    rootfs: RootfsSpec { host, lowers, dir },
                    netns: self.paths.netns_pin(&replica_name),
                    files: (0..c.files.len())
                        .map(|i| self.paths.file_copy(&replica_name, &c.name, i))
                        .collect(),
                    due: None,
                    started_at: None,
                    logger: None,
                    node: None,
                });
            }
        }
        Ok(out)
    }

    /// Resolves every container's `user` against its image's /etc/passwd and /etc/group
    /// before anything starts, so a user the image lacks fails `up` at once instead of
    /// after other pods started. The files are looked up in the layers top-down (a whiteout
    /// or an opaque /etc hides the ones below); one that is a symlink is left to the
    /// container (it resolves inside the container's root only), which checks again.
    fn check_users_from(&self, first: usize) -> Result<(), SupervisorError> {
        for s in self.slots.iter().skip(first) {
            let Some(user) = &s.plan.user else {
                continue;
            };
            let mut dbs = Vec::new();
            for name in ["passwd", "group"] {
                match image_file(&s.rootfs, name) {
                    ImageFile::Text(text) => dbs.push(text),
                    ImageFile::Absent => dbs.push(String::new()),
                    ImageFile::Unknown => break,
                }
            }
            let [passwd, group] = dbs.as_slice() else {
                continue;
            };
            if let Err(reason) = runtime::user::resolve(user, passwd, group) {
                return Err(SupervisorError::User {
                    container: format!("{}/{}", s.record.replica_name(), s.record.container),
                    user: user.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// `c` with its `empty_dir` mounts pointing at the replica's directories, made here,
    /// once per `up` and before anything starts (they outlive restarts; they go with the
    /// project directory): writable by any user of the pod, as Kubernetes' emptyDir.
    fn with_empty_dirs(
        &self,
        c: &ContainerPlan,
        replica: &str,
    ) -> Result<ContainerPlan, SupervisorError> {
        use std::os::unix::fs::PermissionsExt;
        let mut c = c.clone();
        for m in &mut c.mounts {
            if let MountSource::EmptyDir(name) = &m.source {
                let dir = self.paths.empty_dir(replica, name);
                let io = |source| SupervisorError::Io {
                    path: dir.clone(),
                    source,
                };
                if !dir.exists() {
                    fs::create_dir_all(&dir).map_err(io)?;
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).map_err(io)?;
                }
                m.source = MountSource::Host(dir);
            }
        }
        Ok(c)
    }

    /// Writes the configs and secrets of the slots from `first` on, once per slot, into a
    /// tmpfs in the project directory (never on disk; unmounted with the rest at `down`):
    /// one file per use, owned and moded as the manifest asks, bind-mounted read-only by
    /// `launch`.
    fn write_files_from(&mut self, first: usize) -> Result<(), SupervisorError> {
        use std::os::unix::fs::PermissionsExt;
        if self
            .slots
            .iter()
            .skip(first)
            .all(|s| s.plan.files.is_empty())
        {
            return Ok(());
        }
        let dir = self.paths.files_dir();
        let io = |source| SupervisorError::Io {
            path: dir.clone(),
            source,
        };
        if !self.files_mounted {
            fs::create_dir_all(&dir).map_err(io)?;
            nix::mount::mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                Some("mode=0700,size=16m"),
            )
            .map_err(|e| io(e.into()))?;
            self.files_mounted = true;
        }
        for s in self.slots.iter().skip(first) {
            let container = format!("{}/{}", s.record.replica_name(), s.record.container);
            for (i, f) in s.plan.files.iter().enumerate() {
                let fail = |reason: String| SupervisorError::File {
                    what: f.what.clone(),
                    container: container.clone(),
                    reason,
                };
                let bytes = self.file_bytes(&f.content).map_err(fail)?;
                let Some(path) = s.files.get(i) else {
                    continue;
                };
                let write = || -> io::Result<()> {
                    fs::write(path, &bytes)?;
                    std::os::unix::fs::chown(path, Some(f.uid), Some(f.gid))?;
                    fs::set_permissions(path, fs::Permissions::from_mode(f.mode))
                };
                write().map_err(|e| fail(format!("cannot write `{}`: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    /// The state as `state.json` holds it.
    fn state(&self) -> ProjectState {
        let mut netns: Vec<PathBuf> = self.slots.iter().map(|s| s.netns.clone()).collect();
        netns.dedup();
        ProjectState {
            project: self.paths.project.clone(),
            manifest: self.opts.manifests.first().cloned().unwrap_or_default(),
            manifest_files: self.opts.manifests.clone(),
            supervisor_pid: std::process::id().cast_signed(),
            supervisor_start: self.starts.0,
            forkserver: self
                .opts
                .forkserver
                .as_ref()
                .map(|s| (s.pid(), self.starts.1)),
            cgroup_subtree: self.paths.cgroup_subtree(),
            netns,
            containers: self.slots.iter().map(|s| s.record.clone()).collect(),
            network: self.net.clone(),
        }
    }

    fn save(&self) -> Result<(), SupervisorError> {
        self.state().save(&self.paths.state_file())?;
        Ok(())
    }

    /// Starts the stack and supervises it until every container is done (unless
    /// `stay`), a start fails, or a signal asks for teardown; then removes everything.
    /// `on_ready` is called once: with `Ok` when every pod is up, or with the failure.
    pub fn run(mut self, on_ready: &mut dyn FnMut(Result<(), String>)) -> Outcome {
        let outcome = self.supervise(on_ready);
        let reason = match &outcome {
            Outcome::AllExited => "every container has exited".to_string(),
            Outcome::Signalled(s) => format!("received {}", signal_name(*s)),
            Outcome::StartFailed(m) => m.clone(),
            Outcome::Aborted { name, code } => format!("`{name}` exited with code {code}"),
        };
        self.emit(&Event::Stopping { reason });
        // nothing is started from here on: the fork server exits while the teardown runs
        if let Some(server) = &self.opts.forkserver {
            server.close();
        }
        self.teardown();
        if let Some(server) = &self.opts.forkserver {
            server.stop(&self.opts.proc_root);
        }
        // `--exit-code-from POD`: the pod's own code, also when the teardown stopped it
        let outcome = match (outcome, &self.opts.exit_code_from) {
            (Outcome::Aborted { name, code }, Some(pod)) => Outcome::Aborted {
                code: self
                    .slots
                    .iter()
                    .find(|s| s.record.pod == *pod && !s.record.init)
                    .and_then(|s| s.record.exit_code)
                    .unwrap_or(code),
                name,
            },
            (o, _) => o,
        };
        self.emit(&Event::Removed);
        outcome
    }

    fn supervise(&mut self, on_ready: &mut dyn FnMut(Result<(), String>)) -> Outcome {
        let mut ready_sent = false;
        // a supervisor that stays gives back what the start left it, at its first wait after
        // the stack is up (after the ready event and reply, which also run once)
        let mut trim_pending = false;
        let wait_until = self.opts.wait_timeout.map(|t| Instant::now() + t);
        let mut waiting_shown: Vec<(String, String)> = Vec::new();
        loop {
            // A start that fails before the stack is up ends `up`; once it is up, only an
            // apply starts pods (see `reconcile`): its client is told, the rest runs on.
            let mut failed = |sup: &mut Self, message: String| {
                if !ready_sent {
                    on_ready(Err(message.clone()));
                    return Some(Outcome::StartFailed(message));
                }
                for s in &mut sup.slots {
                    if s.record.state == ContainerState::Waiting {
                        s.record.state = ContainerState::Failed;
                        s.record.reason = Some(message.clone());
                    }
                }
                sup.answer_pending(Some(message));
                let _ = sup.save();
                None
            };
            // rollouts start new replicas and stop old ones as readiness allows
            self.step_rollouts();
            // the balancer sends new connections to the replicas that are ready now
            self.update_endpoints();
            // and the faults reach the replicas running now
            let _ = self.update_faults();
            // pending replicas that fit now begin their start (`advance` launches them)
            if self.schedule_pending() {
                let _ = self.save();
            }
            // start every waiting pod whose dependencies are met; the others say in `ps`
            // what they wait for
            let startable = self
                .startable_and_waiting(&mut waiting_shown)
                .map(|(pods, waits)| {
                    self.show_waits(&waits);
                    pods
                });
            match startable {
                Err(message) => {
                    if let Some(outcome) = failed(self, message) {
                        return outcome;
                    }
                    continue;
                }
                Ok(pods) if !pods.is_empty() => {
                    if let Err(message) = self.start_pods(&pods)
                        && let Some(outcome) = failed(self, message)
                    {
                        return outcome;
                    }
                    let _ = self.save();
                    continue;
                }
                Ok(_) => {}
            }
            // replicas whose init container finished go on to the next step
            match self.advance() {
                Err(message) => {
                    if let Some(outcome) = failed(self, message) {
                        return outcome;
                    }
                    continue;
                }
                Ok(true) => {
                    let _ = self.save();
                    continue;
                }
                Ok(false) => {}
            }
            self.answer_pending(None);
            if !ready_sent
                && self.opts.wait
                && let Err(message) = self.wait_check(wait_until)
            {
                on_ready(Err(message.clone()));
                return Outcome::StartFailed(message);
            }
            if !ready_sent
                && !self
                    .slots
                    .iter()
                    .any(|s| s.record.state == ContainerState::Waiting)
                && (!self.opts.wait || self.all_ready())
            {
                ready_sent = true;
                // A detached supervisor keeps no fork server once the stack is up: it made
                // `up` faster, and restarts and applies from here on re-execute rcompose
                // for their helpers (about 1.8 MB less resident memory for the project).
                // Before `up -d` is told, so that what it leaves running is final.
                if self.opts.stay
                    && let Some(server) = self.opts.forkserver.take()
                {
                    server.stop(&self.opts.proc_root);
                    self.starts.1 = None;
                    let _ = self.save();
                }
                trim_pending = self.opts.stay;
                self.emit(&Event::Ready);
                on_ready(Ok(()));
            }
            // restarts that are due
            let now = Instant::now();
            let due: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].due.is_some_and(|d| d <= now))
                .collect();
            for i in due {
                self.slots[i].due = None;
                if let Err(message) = self.start_slot(i) {
                    self.emit(&Event::Failed {
                        name: self.name(i),
                        message,
                    });
                }
                let _ = self.save();
            }
            if let Some(outcome) = self.aborted() {
                return outcome;
            }
            let everything_done = self.slots.iter().all(|s| s.record.state.is_final());
            if everything_done && !self.opts.stay && ready_sent {
                return Outcome::AllExited;
            }
            let tx = self.tx.clone();
            self.run_due_probes(&tx);
            let timeout = self
                .slots
                .iter()
                .filter_map(|s| s.due)
                .chain(self.next_probe())
                .chain(self.next_rollout_timer())
                .chain(wait_until.filter(|_| !ready_sent))
                .min()
                .map_or(Duration::from_secs(3600), |d| {
                    d.saturating_duration_since(Instant::now())
                });
            if trim_pending {
                trim_pending = false;
                // The start's transient allocations (netlink runtimes, launch threads) are
                // freed but kept by malloc: given back. Most of the resident memory is code
                // and read-only data the start ran once (8 of 11 MB, see `memory`): dropped
                // from the page tables, the waits ahead fault back the little they run.
                // SAFETY: malloc_trim only returns free memory of this process's heap.
                unsafe {
                    libc::malloc_trim(0);
                }
                memory::drop_clean_file_pages();
            }
            match self.rx.recv_timeout(timeout) {
                Ok(Msg::Signal(sig)) => return Outcome::Signalled(sig as i32),
                Ok(Msg::Probe(outcome)) => {
                    self.probe_result(&outcome);
                }
                Ok(Msg::Exit(pid, status)) => {
                    self.exits.insert(pid, status);
                    self.collect_exits();
                    let _ = self.save();
                }
                Ok(Msg::Control(control::Request::Down { grace_ms }, reply)) => {
                    self.grace_override = grace_ms.map(Duration::from_millis);
                    let _ = reply.send(control::Response::done());
                    return Outcome::Signalled(Signal::SIGTERM as i32);
                }
                Ok(Msg::Control(control::Request::Services, reply)) => {
                    let _ = reply.send(control::Response {
                        services: self.service_status(),
                        ..control::Response::done()
                    });
                }
                Ok(Msg::Control(control::Request::RolloutStatus { pod }, reply)) => {
                    let _ = reply.send(match self.rollout_status(&pod) {
                        Ok(status) => control::Response {
                            rollout: Some(status),
                            ..control::Response::done()
                        },
                        Err(message) => control::Response::refused(message),
                    });
                }
                Ok(Msg::Control(control::Request::Faults, reply)) => {
                    let _ = reply.send(control::Response {
                        faults: self.fault_infos(),
                        ..control::Response::done()
                    });
                }
                Ok(Msg::Control(control::Request::FaultAdd { name, fault }, reply)) => {
                    let _ = reply.send(match self.add_fault(name, *fault) {
                        Ok(name) => control::Response {
                            faults: self
                                .fault_infos()
                                .into_iter()
                                .filter(|f| f.name == name)
                                .collect(),
                            ..control::Response::done()
                        },
                        Err(message) => control::Response::refused(message),
                    });
                }
                Ok(Msg::Control(control::Request::FaultRemove { names }, reply)) => {
                    let _ = reply.send(match self.remove_faults(&names) {
                        Ok(removed) => control::Response {
                            removed,
                            ..control::Response::done()
                        },
                        Err(message) => control::Response::refused(message),
                    });
                }
                Ok(Msg::Control(control::Request::Nodes, reply)) => {
                    let _ = reply.send(control::Response {
                        nodes: self.node_infos(),
                        ..control::Response::done()
                    });
                }
                Ok(Msg::Control(control::Request::RolloutHistory { pod }, reply)) => {
                    let _ = reply.send(match self.rollout_history(&pod) {
                        Ok(history) => control::Response {
                            history,
                            ..control::Response::done()
                        },
                        Err(message) => control::Response::refused(message),
                    });
                }
                Ok(Msg::Control(request, reply)) => {
                    if let Some(pod) = self.rollouts.keys().next() {
                        let _ = reply.send(control::Response::refused(format!(
                            "pod `{pod}` is being rolled out (`rcompose rollout status {pod}`); try again once it is done"
                        )));
                        continue;
                    }
                    if !ready_sent || self.pending.is_some() {
                        let _ = reply.send(control::Response::refused(
                            "the project is still starting; try again",
                        ));
                        continue;
                    }
                    match self.command(request) {
                        Ok((pods, signal)) => {
                            self.pending = Some((reply, pods));
                            if let Some(sig) = signal {
                                return Outcome::Signalled(sig);
                            }
                        }
                        Err(message) => {
                            let _ = reply.send(control::Response::refused(message));
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Outcome::Signalled(0),
            }
        }
    }

    /// Carries out a control request other than `Down`: what it did per pod, and the
    /// termination signal that came while containers stopped, if one did; `Err` when it was
    /// refused (nothing changed) or failed.
    fn command(&mut self, request: control::Request) -> CommandResult {
        let grace = |ms: Option<u64>| ms.map(Duration::from_millis);
        match request {
            control::Request::Apply {
                desired,
                env,
                partial,
            } => {
                let desired = if partial {
                    self.merged(*desired)
                } else {
                    *desired
                };
                // an `up` applies the manifest's faults again (`scale` and the others keep
                // what `fault` commands made of them)
                self.faults.reset(&desired.faults);
                self.apply(desired, env)
            }
            control::Request::Stop { pods, grace_ms } => self.stop_pods(&pods, grace(grace_ms)),
            control::Request::Start { pods } => self
                .start_again(&pods, control::Change::Started)
                .map(|c| (c, None)),
            control::Request::Restart { pods, grace_ms } => {
                let (_, signal) = self.stop_pods(&pods, grace(grace_ms))?;
                let changes = self.start_again(&pods, control::Change::Restarted)?;
                Ok((changes, signal))
            }
            control::Request::Scale { replicas } => self.scale(&replicas),
            control::Request::Node { name, action } => self.node_command(&name, action),
            control::Request::RolloutUndo { pod, to } => {
                self.undo(&pod, to)?;
                Ok((BTreeMap::from([(pod, control::Change::RolledOut)]), None))
            }
            control::Request::Down { .. }
            | control::Request::Faults
            | control::Request::FaultAdd { .. }
            | control::Request::FaultRemove { .. }
            | control::Request::Nodes
            | control::Request::Services
            | control::Request::RolloutStatus { .. }
            | control::Request::RolloutHistory { .. } => {
                Err("not a command that changes the stack".to_string())
            }
        }
    }

    /// Records in the waiting containers of each pod of `waits` what it waits for (the
    /// reason `ps` shows), saving the state when that changed.
    fn show_waits(&mut self, waits: &[(String, String)]) {
        let mut changed = false;
        for (pod, why) in waits {
            for s in self
                .slots
                .iter_mut()
                .filter(|s| s.record.pod == *pod && s.record.state == ContainerState::Waiting)
            {
                if s.record.reason.as_deref() != Some(why.as_str()) {
                    s.record.reason = Some(why.clone());
                    changed = true;
                }
            }
        }
        if changed {
            let _ = self.save();
        }
    }

    /// `--abort-on-exit` / `--exit-code-from POD`: the outcome once a container exited for
    /// good (not an init container, not one that restarts), with that container's code; with
    /// `--exit-code-from`, the named pod's when it exited (when another pod's exit stops the
    /// stack first, `run` takes the named pod's code after the teardown stopped it).
    fn aborted(&self) -> Option<Outcome> {
        if !self.opts.abort_on_exit && self.opts.exit_code_from.is_none() {
            return None;
        }
        let exited = |s: &&Slot| !s.record.init && s.record.state == ContainerState::Exited;
        let first = match (&self.opts.exit_code_from, self.opts.abort_on_exit) {
            // `run POD`: only that pod's exit ends it (a dependency that completes does not)
            (Some(pod), false) => self
                .slots
                .iter()
                .filter(|s| s.record.pod == *pod)
                .find(exited)?,
            _ => self.slots.iter().find(exited)?,
        };
        let from = self.opts.exit_code_from.as_ref().map_or(first, |pod| {
            self.slots
                .iter()
                .filter(|s| s.record.pod == *pod)
                .find(exited)
                .unwrap_or(first)
        });
        let i = self.slots.iter().position(|s| std::ptr::eq(s, from))?;
        Some(Outcome::Aborted {
            name: self.name(i),
            code: from.record.exit_code.unwrap_or(0),
        })
    }

    /// `up --wait`: every pod's containers ready, or done with exit code 0.
    fn all_ready(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.record.init || settled(&s.record))
    }

    /// `up --wait` before it is met: a container that exited for good with another code,
    /// or the deadline passed, fails the start.
    fn wait_check(&self, until: Option<Instant>) -> Result<(), String> {
        if let Some(bad) = self.slots.iter().find(|s| {
            !s.record.init
                && (s.record.state == ContainerState::Failed
                    || (s.record.state == ContainerState::Exited && s.record.exit_code != Some(0)))
        }) {
            let i = self
                .slots
                .iter()
                .position(|s| std::ptr::eq(s, bad))
                .unwrap_or(0);
            return Err(format!(
                "`{}` {} before every pod was ready",
                self.name(i),
                bad.record.exit_code.map_or_else(
                    || "failed to start".to_string(),
                    |c| format!("exited with code {c}")
                )
            ));
        }
        if until.is_some_and(|t| Instant::now() >= t) {
            let waiting: Vec<String> = (0..self.slots.len())
                .filter(|&i| {
                    let r = &self.slots[i].record;
                    !r.init && !settled(r)
                })
                .map(|i| self.name(i))
                .collect();
            return Err(format!(
                "not ready after {} s: {}",
                self.opts.wait_timeout.unwrap_or_default().as_secs(),
                waiting.join(", ")
            ));
        }
        Ok(())
    }

    /// Shows `e` (the progress display) and appends it to the event log.
    fn emit(&self, e: &Event) {
        self.events.append(e);
        self.progress.event(e);
    }

    fn name(&self, i: usize) -> String {
        let r = &self.slots[i].record;
        let single = self
            .opts
            .desired
            .pods
            .get(&r.pod)
            .is_none_or(|p| p.containers.len() == 1);
        state::display_name(&r.pod, r.replica, &r.container, single)
    }

    /// Pods with a replica not started yet (`Waiting`) whose dependencies are met, and for each
    /// pod that waits, what it waits for (`waiting for db (healthy)`, its first unmet
    /// dependency); `Err` when a dependency can never be met.
    fn startable_and_waiting(
        &self,
        shown: &mut Vec<(String, String)>,
    ) -> Result<(Vec<String>, Waits), String> {
        let mut out = Vec::new();
        let mut waits = Vec::new();
        for pod in self.opts.desired.pods.values() {
            // a replica whose start has not begun (every replica at `up`; added or stopped
            // ones after `scale` or `start`)
            let fresh = self.slots.iter().any(|s| {
                s.record.pod == pod.name
                    && s.record.state == ContainerState::Waiting
                    && !self.started.contains(&s.netns)
            });
            if !fresh {
                continue;
            }
            let mut met = true;
            for dep in &pod.depends_on {
                let dep_slots: Vec<&Slot> = self
                    .slots
                    .iter()
                    .filter(|s| s.record.pod == dep.pod)
                    .collect();
                let ok = match dep.condition {
                    Condition::Started => dep_slots.iter().all(|s| {
                        !matches!(
                            s.record.state,
                            ContainerState::Waiting
                                | ContainerState::Pending
                                | ContainerState::Starting
                        )
                    }),
                    Condition::Completed => {
                        if let Some(bad) = dep_slots.iter().find(|s| {
                            s.record.state == ContainerState::Failed
                                || (s.record.state == ContainerState::Exited
                                    && s.record.exit_code != Some(0))
                        }) {
                            return Err(format!(
                                "pod `{}` did not complete (`{}` exited with code {}); `{}` depends on it",
                                dep.pod,
                                bad.record.replica_name(),
                                bad.record
                                    .exit_code
                                    .map_or("none".into(), |c| c.to_string()),
                                pod.name
                            ));
                        }
                        dep_slots.iter().all(|s| {
                            s.record.state == ContainerState::Exited
                                && s.record.exit_code == Some(0)
                        })
                    }
                    Condition::Healthy => {
                        let main = dep_slots.iter().filter(|s| !s.record.init);
                        if let Some(bad) = main.clone().find(|s| s.record.state.is_final()) {
                            return Err(format!(
                                "pod `{}` stopped before it was healthy (`{}` {}); `{}` depends on it",
                                dep.pod,
                                bad.record.replica_name(),
                                bad.record.exit_code.map_or_else(
                                    || "could not start".to_string(),
                                    |c| format!("exited with code {c}")
                                ),
                                pod.name
                            ));
                        }
                        main.clone().all(|s| s.record.ready)
                    }
                };
                if !ok {
                    let condition = dep.condition.as_str();
                    if met {
                        waits.push((
                            pod.name.clone(),
                            format!("waiting for {} ({condition})", dep.pod),
                        ));
                    }
                    met = false;
                    let key = (pod.name.clone(), dep.pod.clone());
                    if !shown.contains(&key) {
                        shown.push(key);
                        self.emit(&Event::Waiting {
                            pod: pod.name.clone(),
                            on: dep.pod.clone(),
                            condition,
                        });
                    }
                }
            }
            if met {
                out.push(pod.name.clone());
            }
        }
        Ok((out, waits))
    }

    /// Starts every replica of `pods`, in parallel: each with its first init container, or
    /// its containers when it has none (see [`Supervisor::advance`]).
    /// A replica that fits no node stays `Pending` (see `sched`).
    fn start_pods(&mut self, pods: &[String]) -> Result<(), String> {
        let mut fresh: Vec<PathBuf> = Vec::new();
        for s in &self.slots {
            if pods.contains(&s.record.pod)
                && !self.started.contains(&s.netns)
                && !fresh.contains(&s.netns)
            {
                fresh.push(s.netns.clone());
            }
        }
        for ns in fresh {
            if self.admit(&ns) {
                self.started.push(ns);
            }
        }
        self.flush_hosts();
        self.advance().map(|_| ())
    }

    /// What replica `group` (its slots, init containers first) runs next.
    fn next_step(&self, group: &[usize]) -> Step {
        for &i in group.iter().filter(|&&i| self.slots[i].plan.init) {
            let r = &self.slots[i].record;
            match r.state {
                ContainerState::Exited if r.exit_code == Some(0) => {}
                ContainerState::Exited | ContainerState::Failed => {
                    let why = match (r.exit_code, &r.reason) {
                        (_, Some(reason)) if r.state == ContainerState::Failed => reason.clone(),
                        (Some(code), Some(reason)) => format!("exited with code {code} ({reason})"),
                        (Some(code), None) => format!("exited with code {code}"),
                        (None, _) => "did not run".to_string(),
                    };
                    return Step::Failed(
                        i,
                        format!(
                            "init container `{}` of `{}` failed: {why}",
                            r.container,
                            r.replica_name()
                        ),
                    );
                }
                ContainerState::Waiting => return Step::Launch(vec![i]),
                // running, restarting after a failure, or being stopped
                _ => return Step::Idle,
            }
        }
        let rest: Vec<usize> = group
            .iter()
            .copied()
            .filter(|&i| {
                !self.slots[i].plan.init && self.slots[i].record.state == ContainerState::Waiting
            })
            .collect();
        if rest.is_empty() {
            Step::Idle
        } else {
            Step::Launch(rest)
        }
    }

    /// Takes every started replica one step on: launches its next init container once the
    /// one before exited 0, then its containers, replicas in parallel (containers of one
    /// replica in order). Returns whether it launched anything; `Err` when a replica's
    /// init container failed for good or a container could not start. A replica whose init
    /// container failed never starts its containers: they are marked failed with the reason.
    fn advance(&mut self) -> Result<bool, String> {
        // one group per started replica; the slots of a replica are contiguous
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut failed_init = None;
        for ns in &self.started {
            let group: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].netns == *ns)
                .collect();
            match self.next_step(&group) {
                Step::Idle => {}
                Step::Launch(slots) => groups.push(slots),
                Step::Failed(init, message) => {
                    failed_init.get_or_insert((group, init, message));
                }
            }
        }
        if let Some((group, init, message)) = failed_init {
            for i in group {
                let s = &mut self.slots[i];
                if s.record.state == ContainerState::Waiting {
                    s.record.state = ContainerState::Failed;
                    s.record.reason = Some("init container failed".to_string());
                }
            }
            // its exit was shown; the message ends `up`
            let _ = init;
            return Err(message);
        }
        if groups.is_empty() {
            return Ok(false);
        }
        for &i in groups.iter().flatten() {
            self.slots[i].record.state = ContainerState::Starting;
        }
        let _ = self.save();
        let net = self.net_files();
        let prepared: Vec<Vec<(usize, Result<Prepared, String>)>> = {
            let slots = &self.slots;
            let opts = &self.opts;
            let net = net.as_ref();
            if let [group] = groups.as_slice() {
                // one replica: on this thread, which would only wait for another one (starting
                // a thread, on the other CPU of this VM, cost 0.1-0.25 ms here)
                vec![launch_group(opts, net, slots, group)]
            } else {
                thread::scope(|scope| {
                    let handles: Vec<_> = groups
                        .iter()
                        .map(|group| scope.spawn(move || launch_group(opts, net, slots, group)))
                        .collect();
                    handles.into_iter().filter_map(|h| h.join().ok()).collect()
                })
            }
        };
        let mut failure = None;
        for (i, result) in prepared.into_iter().flatten() {
            match result {
                Ok(p) => self.adopt(i, p),
                Err(message) => {
                    let s = &mut self.slots[i];
                    s.record.state = ContainerState::Failed;
                    s.record.reason = Some(format!("Error: {message}"));
                    s.record.exit_code = Some(127);
                    let name = self.name(i);
                    self.emit(&Event::Failed {
                        name: name.clone(),
                        message: message.clone(),
                    });
                    failure.get_or_insert(format!(
                        "pod `{}` failed to start: {message}",
                        self.slots[i].record.pod
                    ));
                }
            }
        }
        // slots of a failed group that were never tried stay Starting: mark them failed too
        for s in self
            .slots
            .iter_mut()
            .filter(|s| s.record.state == ContainerState::Starting)
        {
            s.record.state = ContainerState::Failed;
        }
        self.collect_exits();
        failure.map_or(Ok(true), Err)
    }

    fn start_slot(&mut self, i: usize) -> Result<(), String> {
        self.slots[i].record.state = ContainerState::Starting;
        let net = self.net_files();
        match launch(&self.opts, net.as_ref(), &self.slots[i]) {
            Ok(p) => {
                self.adopt(i, p);
                self.collect_exits();
                Ok(())
            }
            Err(message) => {
                let s = &mut self.slots[i];
                s.record.state = ContainerState::Failed;
                s.record.reason = Some(format!("Error: {message}"));
                Err(message)
            }
        }
    }

    fn adopt(&mut self, i: usize, p: Prepared) {
        let name = self.name(i);
        let sink = self.sink.clone();
        let s = &mut self.slots[i];
        s.record.pid = Some(p.pid);
        s.record.pid_start = state::process_start(&self.opts.proc_root, p.pid);
        s.record.state = ContainerState::Running;
        s.record.exit_code = None;
        s.started_at = Some(Instant::now());
        s.run += 1;
        s.killing = None;
        s.kill_at = None;
        if s.record
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("waiting for "))
        {
            s.record.reason = None;
        }
        if let Some(old) = s.logger.take() {
            let _ = old.join();
        }
        if s.cgroup.is_none() {
            s.cgroup = Some(p.cgroup);
        }
        s.logger = spawn_logger(p.log_read, p.log_file, name.clone(), i, sink);
        self.emit(&Event::Started { name, pid: p.pid });
        self.start_probes(i);
    }

    /// Applies recorded exit statuses to the slots they belong to.
    fn collect_exits(&mut self) {
        let mut exits = std::mem::take(&mut self.exits);
        self.collect_probe_exits(&mut exits);
        self.exits = exits;
        for i in 0..self.slots.len() {
            let Some(pid) = self.slots[i].record.pid else {
                continue;
            };
            if !self.slots[i].record.state.is_live() {
                continue;
            }
            let Some(status) = self.exits.remove(&pid) else {
                continue;
            };
            let code = match status {
                WaitStatus::Exited(_, c) => c,
                WaitStatus::Signaled(_, s, _) => 128 + s as i32,
                _ => continue,
            };
            let oom = self.slots[i]
                .cgroup
                .as_ref()
                .is_some_and(Cgroups::oom_killed);
            let name = self.name(i);
            let stopping = self.slots[i].record.state == ContainerState::Stopping;
            let s = &mut self.slots[i];
            s.record.pid = None;
            s.record.pid_start = None;
            s.record.exit_code = Some(code);
            s.record.ready = false;
            s.kill_at = None;
            let killing = s.killing.take();
            s.record.reason = if oom {
                Some("OOMKilled".to_string())
            } else if let Some(why) = killing {
                Some(why)
            } else if code > 128 {
                Some(format!("killed by {}", signal_name(code - 128)))
            } else {
                None
            };
            if oom {
                self.emit(&Event::OomKilled { name: name.clone() });
            }
            let s = &mut self.slots[i];
            let exited = Event::Exited {
                name: name.clone(),
                code,
                reason: s.record.reason.clone(),
            };
            self.events.append(&exited);
            self.progress.event(&exited);
            // an init container that exited 0 is done, whatever the policy
            let again = restart::should_restart(s.restart, code) && !(s.plan.init && code == 0);
            if !stopping && again {
                if s.started_at
                    .is_some_and(|t| t.elapsed() >= restart::HEALTHY_RUN)
                {
                    s.record.restarts = 0;
                }
                let delay = restart::backoff(s.record.restarts, s.backoff.0, s.backoff.1);
                s.record.restarts += 1;
                s.record.state = ContainerState::Restarting;
                s.due = Some(Instant::now() + delay);
                self.emit(&Event::Restarting { name, delay });
            } else {
                s.record.state = ContainerState::Exited;
            }
        }
        // Exits of pids we do not know are those of init helpers (a container's init is
        // always adopted before the supervisor reads the next exit): drop them, so a recycled
        // pid can never match a stale status.
        self.exits.clear();
    }

    /// Stops the containers `members`: their stop signal, then SIGKILL after each one's
    /// grace period (a termination signal meanwhile ends the grace at once). Returns that
    /// signal, if one came.
    fn stop(&mut self, members: &[usize]) -> Option<i32> {
        if members.is_empty() {
            return None;
        }
        for &i in members {
            self.slots[i].record.state = ContainerState::Stopping;
        }
        // no new connection reaches them from here on
        self.update_endpoints();
        for &i in members {
            if let Some(pid) = self.slots[i].record.pid {
                let signal =
                    Signal::try_from(self.slots[i].plan.stop_signal).unwrap_or(Signal::SIGTERM);
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
        let _ = self.save();
        // each container's own grace period (`stop_grace_period`), else the command's
        let start = Instant::now();
        let mut deadlines: Vec<(usize, Instant)> = members
            .iter()
            .map(|&i| {
                let grace = self.grace_override.unwrap_or_else(|| {
                    self.slots[i]
                        .plan
                        .stop_grace_period
                        .unwrap_or(self.opts.grace)
                });
                (i, start + grace)
            })
            .collect();
        let mut killed: Vec<usize> = Vec::new();
        let mut signal = None;
        loop {
            let live: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| self.slots[i].record.state.is_live())
                .collect();
            if live.is_empty() {
                break;
            }
            let now = Instant::now();
            for &(i, deadline) in &deadlines {
                if now >= deadline && live.contains(&i) && !killed.contains(&i) {
                    killed.push(i);
                    if let Some(pid) = self.slots[i].record.pid {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            let all_killed = live.iter().all(|i| killed.contains(i));
            let wait = if all_killed {
                Duration::from_secs(5)
            } else {
                deadlines
                    .iter()
                    .filter(|(i, _)| live.contains(i) && !killed.contains(i))
                    .map(|(_, d)| d.saturating_duration_since(now))
                    .min()
                    .unwrap_or(Duration::ZERO)
            };
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Exit(pid, status)) => {
                    self.exits.insert(pid, status);
                    self.collect_exits();
                }
                // a second Ctrl-C: no more grace
                Ok(Msg::Signal(sig)) => {
                    signal.get_or_insert(sig as i32);
                    for (_, d) in &mut deadlines {
                        *d = Instant::now();
                    }
                }
                // probes do not matter while containers stop
                Ok(Msg::Probe(_)) => {}
                // `down` while containers stop: its grace period from now on
                Ok(Msg::Control(control::Request::Down { grace_ms }, reply)) => {
                    if let Some(grace) = grace_ms.map(Duration::from_millis) {
                        self.grace_override = Some(grace);
                        for (_, d) in &mut deadlines {
                            *d = (*d).min(Instant::now() + grace);
                        }
                    }
                    let _ = reply.send(control::Response::done());
                }
                // nothing is applied while containers stop
                Ok(Msg::Control(_, reply)) => {
                    let _ = reply.send(control::Response::refused(
                        "the project is stopping containers; try again",
                    ));
                }
                Err(RecvTimeoutError::Timeout) if all_killed => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        signal
    }

    /// Stops every container in reverse start order, wave by wave, then removes cgroups,
    /// namespaces and the state directory.
    fn teardown(&mut self) {
        // probes in flight end now (their helpers are in the containers' cgroups too)
        for pid in self.exec_probes.keys() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for s in &mut self.slots {
            s.kill_at = None;
        }
        let waves: Vec<Vec<String>> = self.opts.desired.waves.iter().rev().cloned().collect();
        for s in &mut self.slots {
            s.due = None;
            if s.record.state == ContainerState::Restarting {
                s.record.state = ContainerState::Exited;
            }
        }
        for wave in waves {
            let members: Vec<usize> = (0..self.slots.len())
                .filter(|&i| {
                    wave.contains(&self.slots[i].record.pod) && self.slots[i].record.state.is_live()
                })
                .collect();
            self.stop(&members);
        }
        for s in &mut self.slots {
            if let Some(h) = s.logger.take() {
                let _ = h.join();
            }
        }
        for s in &self.slots {
            remove_external(&self.opts, s);
            if let Some(cg) = &s.cgroup {
                let _ = cg.remove();
            }
        }
        // Then the pod and project cgroups, which this supervisor made and knows, directly:
        // the cleanup below would find them by walking the project's subtree in every
        // hierarchy, reading each directory and its `cgroup.procs`. It still runs, and
        // kills and removes whatever is left.
        let mut parents: Vec<PathBuf> = self
            .slots
            .iter()
            .filter_map(|s| Path::new(&s.record.cgroup).parent().map(Path::to_path_buf))
            .collect();
        parents.sort();
        parents.dedup();
        // the nodes' cgroups, when the manifest declares nodes (children first)
        let subtree = self.paths.cgroup_subtree();
        parents.extend(
            self.node_cgroups
                .iter()
                .map(|n| PathBuf::from(format!("{subtree}/{n}"))),
        );
        parents.push(PathBuf::from(subtree));
        cgroup::remove_empty(&self.mounts, &parents);
        // the balancer's listeners close (its virtual addresses go with the bridge); the
        // faults' delay lines let go of the namespaces
        self.balancer = None;
        self.faults.forget_all();
        let _ = teardown::cleanup(&self.paths, Some(&self.state()), &self.mounts);
    }
}

/// For `up --wait`: running and ready, or done with exit code 0.
fn settled(r: &ContainerRecord) -> bool {
    (r.state == ContainerState::Running && r.ready)
        || (r.state == ContainerState::Exited && r.exit_code == Some(0))
}

/// An `/etc` file of an image, as the stacked layers show it.
enum ImageFile {
    Text(String),
    Absent,
    /// A symlink, unreadable or too big: only the container can tell.
    Unknown,
}

/// `/etc/<name>` of the image `rootfs` stacks: the top-most layer that has it (or hides it
/// with a whiteout or an opaque /etc) wins; the host's root is the bottom layer.
fn image_file(rootfs: &RootfsSpec, name: &str) -> ImageFile {
    use std::os::unix::fs::FileTypeExt;
    let mut layers: Vec<PathBuf> = rootfs.lowers.iter().rev().cloned().collect();
    if rootfs.host {
        layers.push(PathBuf::from("/"));
    }
    for layer in layers {
        let path = layer.join("etc").join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_char_device() => return ImageFile::Absent,
            Ok(m) if m.is_file() && m.len() <= 4 << 20 => {
                return fs::read_to_string(&path).map_or(ImageFile::Unknown, ImageFile::Text);
            }
            Ok(_) => return ImageFile::Unknown,
            Err(_) => {}
        }
        // an opaque /etc hides the layers below
        if is_opaque(&layer.join("etc")) {
            return ImageFile::Absent;
        }
    }
    ImageFile::Absent
}

/// Whether `dir` carries overlayfs' opaque mark (`trusted.overlay.opaque=y`).
fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 2];
    // SAFETY: both strings are NUL-terminated and live across the call; `value` is a
    // writable buffer of the length given.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// Pods that wait, each with what it waits for (`waiting for db (healthy)`).
type Waits = Vec<(String, String)>;

/// What a started replica does next (see [`Supervisor::next_step`]).
enum Step {
    /// Nothing now: an init container runs, or everything is launched.
    Idle,
    /// Launch these slots, in order.
    Launch(Vec<usize>),
    /// An init container (this slot) failed for good: the replica's containers never start.
    Failed(usize, String),
}

/// A started container, before the supervisor adopts it.
struct Prepared {
    pid: i32,
    cgroup: KernelCgroup,
    log_read: OwnedFd,
    log_file: File,
}

/// Launches the containers `group` (of one replica) in order, up to the first failure.
fn launch_group(
    opts: &UpOptions,
    net: Option<&NetFiles>,
    slots: &[Slot],
    group: &[usize],
) -> Vec<(usize, Result<Prepared, String>)> {
    let mut out = Vec::new();
    for &i in group {
        let r = launch(opts, net, &slots[i]);
        let failed = r.is_err();
        out.push((i, r));
        if failed {
            break;
        }
    }
    out
}

/// Creates the container's directories, cgroup, config and log pipe, and starts it. Runs
/// on a worker thread (one per replica, when several start); touches nothing shared.
fn launch(opts: &UpOptions, net: Option<&NetFiles>, slot: &Slot) -> Result<Prepared, String> {
    let io = |what: &str, p: &Path, e: io::Error| format!("{what} `{}`: {e}", p.display());
    let cgroup = KernelCgroup::new(&slot.record.cgroup);
    let log_file = File::options()
        .create(true)
        .append(true)
        .open(&slot.record.log)
        .map_err(|e| io("failed to open", &slot.record.log, e))?;
    let (log_read, log_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("failed to create a pipe: {e}"))?;
    let config_path = slot.record.dir.join(runtime::CONFIG_FILE);
    // Everything else is made while the helper starts (and, for the pod's first container,
    // creates the pod's network namespace): the container's cgroup, its directories and its
    // config. The helper joins the cgroup once it is made.
    let make = || -> Result<ContainerConfig, String> {
        // a restart finds the cgroup in place; creating it again re-applies the limits
        cgroup.create(&slot.plan.resources).map_err(|e| chain(&e))?;
        for dir in dirs_to_create(&slot.rootfs) {
            fs::create_dir_all(&dir).map_err(|e| io("failed to create", &dir, e))?;
        }
        let hostname = slot.record.replica_name();
        let mut mounts = Vec::with_capacity(slot.plan.mounts.len());
        for m in &slot.plan.mounts {
            let (source, size) = match &m.source {
                MountSource::Host(path) => (Some(path.clone()), None),
                MountSource::Tmpfs(size) => (None, *size),
                // named volumes are resolved by `up`, empty dirs by `build_slots`
                MountSource::Volume(name) | MountSource::EmptyDir(name) => {
                    return Err(format!("volume `{name}` was not resolved to a directory"));
                }
            };
            mounts.push(runtime::Mount {
                source,
                target: m.target.clone(),
                read_only: m.read_only,
                size,
                replace: false,
            });
        }
        for (f, copy) in slot.plan.files.iter().zip(&slot.files) {
            mounts.push(runtime::Mount {
                source: Some(copy.clone()),
                target: f.target.clone(),
                read_only: true,
                size: None,
                replace: false,
            });
        }
        // on the project network: its names and resolver, shared by every pod
        if let (Some(net), Some(_)) = (net, slot.record.ip) {
            for (source, target) in [
                (&net.hosts, "/etc/hosts"),
                (&net.resolv, "/etc/resolv.conf"),
            ] {
                mounts.push(runtime::Mount {
                    source: Some(source.clone()),
                    target: target.to_string(),
                    read_only: true,
                    size: None,
                    replace: true,
                });
            }
        }
        let config = ContainerConfig {
            name: format!("{hostname}/{}", slot.record.container),
            hostname,
            rootfs: slot.rootfs.clone(),
            netns: Some(slot.netns.clone()),
            command: slot.plan.command.clone().unwrap_or_default(),
            user: slot.plan.user.clone(),
            env: slot
                .plan
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            working_dir: slot.plan.working_dir.clone(),
            init: runtime::tiny_init_next_to(&opts.exe),
            privileged: slot.plan.privileged,
            capabilities: slot.plan.capabilities,
            mounts,
            read_only: slot.plan.read_only,
            tty: slot.plan.tty,
        };
        let json = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
        fs::write(&config_path, json).map_err(|e| io("failed to write", &config_path, e))?;
        Ok(config)
    };
    // the pod's first container creates its network namespace (in its helper, in parallel
    // with `prepare`); the others, and restarts, join it. On the project network, the
    // namespaces are made here first and wired to the bridge, so that the command starts
    // with its address and route.
    let mut create_netns = (!slot.netns.exists()).then_some(slot.netns.as_path());
    if let (Some(pin), Some(ip), Some(net)) = (create_netns, slot.record.ip, net) {
        wire(net, pin, ip, &slot.record.replica_name())?;
        create_netns = None;
    }
    if let Some(kind) = external_runtime(slot.plan.runtime) {
        let config = make()?;
        let rt = runtime::oci::ExternalRuntime::find(kind).map_err(|e| chain(&e))?;
        let (state_root, id) = oci_names(opts, slot);
        // what an earlier run of this container left (a restart)
        runtime::oci::remove(&rt, &state_root, &id, &slot.record.dir).map_err(|e| chain(&e))?;
        return match runtime::oci::spawn(
            &rt,
            &state_root,
            &id,
            &config,
            &slot.plan.resources,
            log_write,
            &slot.record.cgroup,
            create_netns,
        ) {
            Ok(started) => Ok(Prepared {
                pid: started.pid,
                cgroup,
                log_read,
                log_file,
            }),
            Err(e) => Err(copy_log(log_read, log_file, chain(&e))),
        };
    }
    let prepare = || make().map(drop);
    match runtime::spawn(
        &opts.exe,
        &config_path,
        log_write,
        &cgroup.join(),
        create_netns,
        opts.forkserver.as_deref(),
        prepare,
    ) {
        Ok(started) => Ok(Prepared {
            pid: started.pid,
            cgroup,
            // with a terminal the command writes there; the pipe only had the helper
            log_read: started.tty.unwrap_or(log_read),
            log_file,
        }),
        Err(e) => {
            let message = match &e {
                SpawnError::Failed { message, pid } => {
                    // whatever of the container got started must not outlive the failure
                    if let Some(pid) = pid {
                        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                    }
                    message.clone()
                }
                other => chain(other),
            };
            // the init printed the reason into the log too; copy what is there
            Err(copy_log(log_read, log_file, message))
        }
    }
}

/// What a container on the project network needs of it (see `net`).
struct NetFiles {
    net: net::ProjectNet,
    project: String,
    hosts: PathBuf,
    resolv: PathBuf,
}

/// Makes the namespaces of the replica pinned at `pin` (on a thread of its own: `unshare`
/// moves the calling thread) and wires it to the bridge with address `ip`; on failure
/// removes them again (which takes a veth made with them).
fn wire(net: &NetFiles, pin: &Path, ip: std::net::Ipv4Addr, replica: &str) -> Result<(), String> {
    thread::scope(|s| s.spawn(|| netns::enter_new(pin)).join())
        .map_err(|_| "the namespace thread panicked".to_string())?
        .map_err(|e| chain(&e))?;
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let veth = crate::network::veth_name(&net.project, replica, incarnation);
    let n = &net.net;
    if let Err(e) = crate::network::link::attach(pin, &n.bridge, &veth, ip, n.subnet, n.gateway) {
        let _ = netns::remove(pin);
        return Err(chain(&e));
    }
    Ok(())
}

/// The external runtime of `kind`, if it is not the built-in one.
fn external_runtime(kind: RuntimeKind) -> Option<runtime::oci::Kind> {
    match kind {
        RuntimeKind::Builtin => None,
        RuntimeKind::Crun => Some(runtime::oci::Kind::Crun),
        RuntimeKind::Runc => Some(runtime::oci::Kind::Runc),
    }
}

/// The external runtime's state directory (in the project directory) and the container's
/// id there: `<project>.<pod>-<n>.<container>`.
fn oci_names(opts: &UpOptions, slot: &Slot) -> (PathBuf, String) {
    let project = &opts.desired.project;
    (
        opts.run_root.join(project).join("oci"),
        format!(
            "{project}.{}.{}",
            slot.record.instance(),
            slot.record.container
        ),
    )
}

/// Deletes the external runtime's container of `slot`, if it has one (after it stopped):
/// its runtime state, its cgroups in every hierarchy and the mount of its root.
fn remove_external(opts: &UpOptions, slot: &Slot) {
    if let Some(kind) = external_runtime(slot.plan.runtime)
        && let Ok(rt) = runtime::oci::ExternalRuntime::find(kind)
    {
        let (state_root, id) = oci_names(opts, slot);
        let _ = runtime::oci::remove(&rt, &state_root, &id, &slot.record.dir);
    }
}

/// Copies what a failed container printed into its log file, and returns `message` with
/// that output appended, so the user sees it even though the project is removed.
fn copy_log(read: OwnedFd, mut file: File, message: String) -> String {
    // Read only what is there: a process of the container may still hold the pipe open, and
    // waiting for its EOF could block this launch, and so the whole supervisor, forever.
    let _ = nix::fcntl::fcntl(
        &read,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut out = Vec::new();
    let _ = io::Read::read_to_end(&mut File::from(read), &mut out);
    let _ = file.write_all(&out);
    let text = String::from_utf8_lossy(&out);
    let extra: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.ends_with(message.as_str()))
        .collect();
    if extra.is_empty() {
        message
    } else {
        format!("{message}\n{}", extra.join("\n"))
    }
}

fn spawn_logger(
    read: OwnedFd,
    mut file: File,
    name: String,
    index: usize,
    sink: Option<Arc<dyn LogSink>>,
) -> Option<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("log {name}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut reader = BufReader::new(File::from(read));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                // a line is at most MAX_LOG_LINE bytes: output without newlines (a binary
                // stream, a progress bar) must not grow this buffer without bound
                match io::Read::take(&mut reader, MAX_LOG_LINE).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = file.write_all(&buf);
                        if let Some(sink) = &sink {
                            let text = String::from_utf8_lossy(&buf);
                            sink.line(&name, index, text.trim_end_matches(['\n', '\r']));
                        }
                    }
                }
            }
        })
        .ok()
}

/// The signal thread: reaps children on SIGCHLD and forwards termination signals.
fn spawn_signal_thread(tx: Sender<Msg>) -> io::Result<()> {
    thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let set = supervised_signals();
            loop {
                let Ok(sig) = set.wait() else { continue };
                if sig == Signal::SIGCHLD {
                    loop {
                        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::StillAlive) | Err(_) => break,
                            Ok(status) => {
                                if let Some(pid) = status.pid()
                                    && tx.send(Msg::Exit(pid.as_raw(), status)).is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                } else if tx.send(Msg::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// `SIGTERM` for 15.
#[must_use]
pub fn signal_name(n: i32) -> String {
    Signal::try_from(n).map_or_else(|_| format!("signal {n}"), |s| s.as_str().to_string())
}

/// An error and its sources on one line.
#[must_use]
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
