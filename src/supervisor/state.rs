//! The project's state directory (`<run root>/<project>/`) and `state.json`.
//!
//! The supervisor writes `state.json` atomically (temp file + rename) *before* it changes
//! the machine, so that `ps` and `down` work from another process, and `down` can remove
//! everything even when the supervisor was killed.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use serde::{Deserialize, Serialize};

/// Where a project's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectPaths {
    /// `<run root>/<project>`.
    pub dir: PathBuf,
    /// The project name.
    pub project: String,
}

impl ProjectPaths {
    /// Paths of `project` below `run_root` (`/run/rcompose` by default).
    #[must_use]
    pub fn new(run_root: &Path, project: &str) -> Self {
        Self {
            dir: run_root.join(project),
            project: project.to_string(),
        }
    }
    /// `state.json`.
    #[must_use]
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The event log (see `super::events`).
    #[must_use]
    pub fn events_file(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }
    /// The running supervisor's control socket (see `super::control`).
    #[must_use]
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    /// The lock the running supervisor holds.
    #[must_use]
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lock")
    }
    /// The log of container `container` of replica `replica` (`web-1`): `web-1.app.log`.
    #[must_use]
    pub fn log_file(&self, replica: &str, container: &str) -> PathBuf {
        self.dir.join(format!("{replica}.{container}.log"))
    }
    /// The file pinning the network namespace of replica `replica` (`web-1`): `netns.web-1`,
    /// in the project directory itself (no directory of its own to remove at `down`).
    #[must_use]
    pub fn netns_pin(&self, replica: &str) -> PathBuf {
        self.dir.join(format!("{NETNS_PREFIX}{replica}"))
    }
    /// Every network namespace pin in the project directory (whatever `state.json` says);
    /// not the pins next to them (`netns.web-1.ipc`, `.uts`, `.shm`: replica names have no
    /// dot), which go with their network namespace's.
    #[must_use]
    pub fn netns_pins(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_prefix(NETNS_PREFIX)
                            .is_some_and(|replica| !replica.contains('.'))
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The directory of container `container` of replica `replica` (`web-1`): `web-1.app/`
    /// (upper, work, container.json; the root is mounted on it). One level in the project
    /// directory itself, like the logs and the network namespace pins: where /run is on a
    /// disk, every directory is one more removal at `down`, and on this machine each waits
    /// for a discard. Pod and container names are DNS labels (no dots) and replica names end
    /// in a number, so `<pod>-<n>.<container>`, `<pod>-<n>.<container>.log` and
    /// `netns.<pod>-<n>` never collide with each other or with the project's own files.
    #[must_use]
    pub fn container_dir(&self, replica: &str, container: &str) -> PathBuf {
        self.dir.join(format!("{replica}.{container}"))
    }
    /// The tmpfs holding the containers' configs and secrets.
    #[must_use]
    pub fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }
    /// The copy of config or secret number `i` of container `container` of `replica`.
    #[must_use]
    pub fn file_copy(&self, replica: &str, container: &str, i: usize) -> PathBuf {
        self.files_dir().join(format!("{replica}.{container}.{i}"))
    }
    /// The `empty_dir` volume `name` of replica `replica`: `emptydir.web-1.cache`.
    #[must_use]
    pub fn empty_dir(&self, replica: &str, name: &str) -> PathBuf {
        self.dir.join(format!("emptydir.{replica}.{name}"))
    }
    /// Staged layers.
    #[must_use]
    pub fn layers(&self) -> PathBuf {
        self.dir.join("layers")
    }
    /// The cgroup subtree of the project, relative to each hierarchy root.
    #[must_use]
    pub fn cgroup_subtree(&self) -> String {
        format!("rcompose/{}", self.project)
    }
}

/// See [`ContainerRecord::instance`].
#[must_use]
pub fn instance_name(pod: &str, replica: u32, revision: u32) -> String {
    if revision <= 1 {
        format!("{pod}-{replica}")
    } else {
        format!("{pod}-{replica}_r{revision}")
    }
}

/// The name prefix of network namespace pins in the project directory.
const NETNS_PREFIX: &str = "netns.";

/// How a container's output is labelled (log prefixes, events): `pod-N`, or
/// `pod-N/container` in a pod with several containers.
#[must_use]
pub fn display_name(pod: &str, replica: u32, container: &str, single: bool) -> String {
    if single {
        format!("{pod}-{replica}")
    } else {
        format!("{pod}-{replica}/{container}")
    }
}

/// What the supervisor knows of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Pod name.
    pub pod: String,
    /// Replica number, from 1.
    pub replica: u32,
    /// Container name.
    pub container: String,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Host pid of the container's init while it runs.
    pub pid: Option<i32>,
    /// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), to tell a
    /// recycled pid from ours.
    pub pid_start: Option<u64>,
    /// How many times the container was restarted.
    pub restarts: u32,
    /// Exit code of the last run (128 + n when killed by signal n).
    pub exit_code: Option<i32>,
    /// Why the last run ended or failed (`OOMKilled`, `Error: ...`).
    pub reason: Option<String>,
    /// The cgroup path relative to each hierarchy root.
    pub cgroup: String,
    /// The container's log file.
    pub log: PathBuf,
    /// The container's directory.
    pub dir: PathBuf,
    /// One of the pod's init containers (run to completion before the others).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Running and ready: its readiness probe passes (or it has none and its startup probe,
    /// if any, passed).
    #[serde(default)]
    pub ready: bool,
    /// Its replica's address on the project network, if the pod is on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// The revision of its pod's spec it runs (1 at `up`; each rollout adds one).
    #[serde(default = "first_revision")]
    pub revision: u32,
    /// The node its replica is placed on, when the manifest declares `nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn first_revision() -> u32 {
    1
}

impl ContainerRecord {
    /// `pod-N`.
    #[must_use]
    pub fn replica_name(&self) -> String {
        format!("{}-{}", self.pod, self.replica)
    }

    /// What names its replica's files, cgroups and namespaces: [`Self::replica_name`] for
    /// revision 1, `pod-N_rR` for revision R after it (during a rollout two revisions of
    /// replica N run side by side). `_` is not in DNS labels, so no replica name has it.
    #[must_use]
    pub fn instance(&self) -> String {
        instance_name(&self.pod, self.replica, self.revision)
    }
}

/// A container's lifecycle. Transitions are checked with the predicates, not by comparing
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Waiting for its pod's dependencies.
    Waiting,
    /// Its replica fits no node yet (the reason says why); placed once resources free up.
    Pending,
    /// Being set up.
    Starting,
    /// The command runs.
    Running,
    /// Waiting for a restart after an exit.
    Restarting,
    /// Being stopped.
    Stopping,
    /// Exited and will not be restarted.
    Exited,
    /// Could not be started.
    Failed,
}

impl ContainerState {
    /// Whether a process may be alive.
    #[must_use]
    pub fn is_live(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Stopping)
    }
    /// Whether the container is done (will not run again on its own).
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, Self::Exited | Self::Failed)
    }
    /// The name shown by `ps`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Failed => "failed",
        }
    }
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectState {
    /// The project name.
    pub project: String,
    /// The manifest the stack came from (its main file).
    pub manifest: PathBuf,
    /// Every file of the manifest in merge order, the main one first (Compose overrides
    /// after it); empty in a state written before rcompose recorded them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_files: Vec<PathBuf>,
    /// pid of the supervisor process.
    pub supervisor_pid: i32,
    /// Start time of the supervisor (see [`ContainerRecord::pid_start`]).
    pub supervisor_start: Option<u64>,
    /// pid and start time of the supervisor's fork server, if it has one.
    #[serde(default)]
    pub forkserver: Option<(i32, Option<u64>)>,
    /// The project's cgroup subtree, relative to each hierarchy root.
    pub cgroup_subtree: String,
    /// Pod network namespaces (bind mounts) that exist or may exist.
    pub netns: Vec<PathBuf>,
    /// Containers in start order.
    pub containers: Vec<ContainerRecord>,
    /// The project network, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<super::net::ProjectNet>,
}

/// Errors of state handling.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("failed to access `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not valid state.
    #[error("`{path}` is not a valid rcompose state file")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl ProjectState {
    /// Writes `path` atomically: a temp file in the same directory, swapped with the old one
    /// (`RENAME_EXCHANGE`), so readers see the old or the new state, never a part, and a
    /// crash of this process leaves one of them. There is no fsync, because the state lives
    /// under /run, which does not survive a reboot anyway, and `up` writes it on every change.
    ///
    /// The swap, rather than a rename over the old file, keeps the temp file (with the
    /// previous state, overwritten by the next save; it goes with the project directory).
    /// A rename over a file makes ext4 (`auto_da_alloc`) write the new file out at once and
    /// frees the old file's blocks, which on a file system mounted with `discard` waits for
    /// a synchronous discard, as the removal of the written file does at `down`: 0.1-0.2 ms
    /// per save on this machine's /run. Swapped, the files stay in the page cache. The first
    /// save, with no file to swap with, and file systems without the swap are a plain rename.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io_err = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|source| StateError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let tmp = temp_path(path);
        // Overwrite, then cut to length: truncating a file to zero (O_TRUNC) would make
        // ext4 write it out at close (`auto_da_alloc` again).
        let mut f = fs::File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&tmp)
            .map_err(io_err)?;
        f.write_all(&json).map_err(io_err)?;
        f.set_len(json.len() as u64).map_err(io_err)?;
        drop(f);
        match renameat2(AT_FDCWD, &tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => Ok(()),
            Err(Errno::ENOENT | Errno::EINVAL) => fs::rename(&tmp, path).map_err(io_err),
            Err(e) => Err(io_err(e.into())),
        }
    }

    /// Reads a state file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StateError::Parse {
                        path: path.to_owned(),
                        source,
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

/// The temp file [`ProjectState::save`] writes before swapping it in (it then holds the
/// previous state).
fn temp_path(path: &Path) -> PathBuf {
    path.with_extension(format!("tmp.{}", std::process::id()))
}

/// Start time of a process (clock ticks since boot), from `<proc>/<pid>/stat`.
#[must_use]
pub fn process_start(proc_root: &Path, pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // the command name may contain spaces and parentheses: split after the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    // fields after the name start at field 3; starttime is field 22
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start`.
#[must_use]
pub fn is_same_process(proc_root: &Path, pid: i32, start: Option<u64>) -> bool {
    match (process_start(proc_root, pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ContainerRecord {
        ContainerRecord {
            pod: "web".into(),
            replica: 2,
            container: "app".into(),
            state: ContainerState::Running,
            pid: Some(10),
            pid_start: Some(99),
            restarts: 1,
            exit_code: None,
            reason: None,
            cgroup: "rcompose/p/web-2/app".into(),
            log: "/run/rcompose/p/web-2.app.log".into(),
            dir: "/run/rcompose/p/web-2.app".into(),
            init: false,
            ready: false,
            ip: None,
            revision: 1,
            node: None,
        }
    }

    #[test]
    fn state_round_trips_through_an_atomic_write() {
        let dir = std::env::temp_dir().join(format!("rcompose-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let state = ProjectState {
            project: "p".into(),
            manifest: "/x/rcompose.yaml".into(),
            manifest_files: vec!["/x/rcompose.yaml".into()],
            supervisor_pid: 1,
            supervisor_start: Some(5),
            forkserver: Some((2, Some(6))),
            cgroup_subtree: "rcompose/p".into(),
            netns: vec!["/run/rcompose/p/netns.web-2".into()],
            containers: vec![record()],
            network: None,
        };
        let file = dir.join("state.json");
        state.save(&file).unwrap();
        assert_eq!(ProjectState::load(&file).unwrap(), Some(state.clone()));
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "the first save leaves no temp file"
        );
        // later saves swap the new state in; the temp file keeps the previous one
        let mut next = state.clone();
        next.containers[0].restarts = 2;
        next.save(&file).unwrap();
        assert_eq!(ProjectState::load(&file).unwrap(), Some(next.clone()));
        assert_eq!(ProjectState::load(&temp_path(&file)).unwrap(), Some(state));
        next.containers[0].restarts = 3;
        next.save(&file).unwrap();
        assert_eq!(ProjectState::load(&file).unwrap(), Some(next));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn project_files_do_not_collide_and_pins_are_found_by_name() {
        let dir = std::env::temp_dir().join(format!("rcompose-pins-{}", std::process::id()));
        let paths = ProjectPaths::new(&dir, "p");
        fs::create_dir_all(paths.container_dir("netns-1", "netns")).unwrap();
        for f in [
            paths.netns_pin("netns-1"),
            paths.netns_pin("web-2"),
            paths.dir.join("netns.web-2.ipc"),
            paths.dir.join("netns.web-2.uts"),
            paths.log_file("netns-1", "netns"),
            paths.state_file(),
            paths.lock_file(),
        ] {
            fs::write(f, "").unwrap();
        }
        let mut pins = paths.netns_pins();
        pins.sort();
        assert_eq!(pins, [paths.netns_pin("netns-1"), paths.netns_pin("web-2")]);
        assert_eq!(fs::read_dir(&paths.dir).unwrap().count(), 8);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_state_is_none() {
        assert_eq!(
            ProjectState::load(Path::new("/nonexistent/rc/state.json")).unwrap(),
            None
        );
    }

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_the_name() {
        let dir = std::env::temp_dir().join(format!("rcompose-proc-{}", std::process::id()));
        fs::create_dir_all(dir.join("42")).unwrap();
        let fields: Vec<String> = (3..=22).map(|i| i.to_string()).collect();
        fs::write(
            dir.join("42/stat"),
            format!("42 (a) b) {}", fields.join(" ")),
        )
        .unwrap();
        assert_eq!(process_start(&dir, 42), Some(22));
        assert!(is_same_process(&dir, 42, Some(22)));
        assert!(!is_same_process(&dir, 42, Some(21)));
        assert!(!is_same_process(&dir, 43, Some(22)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn live_and_final_states() {
        assert!(ContainerState::Running.is_live());
        assert!(!ContainerState::Exited.is_live());
        assert!(ContainerState::Failed.is_final());
        assert!(!ContainerState::Restarting.is_final());
    }
}
