//! cgroup limits for one container, on cgroup v1 (and hybrid) and v2 hosts.
//!
//! Creation and limits go through cgroups-rs, kept behind the small [`Cgroups`] trait so a
//! cgroupfs backend of our own could replace it (DESIGN.md section 11). Removal of a whole
//! project (`down` after the supervisor died) works on plain directories, so it needs nothing
//! but the mount points.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use cgroups_rs::fs::MaxValue;
use cgroups_rs::fs::cgroup::Cgroup;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Controller, Hierarchy};

use crate::plan::desired::Resources;

/// The CFS period rcompose uses for CPU quotas, in microseconds (the kernel default).
const CPU_PERIOD_US: u64 = 100_000;

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Creating the cgroup failed.
    #[error("failed to create cgroup `{path}`")]
    Create {
        /// The cgroup path below the hierarchy root.
        path: String,
        /// The cause.
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    /// Writing a limit failed.
    #[error("failed to set {what} of cgroup `{path}`")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// The cgroup path below the hierarchy root.
        path: String,
        /// The cause.
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("failed to remove cgroup `{path}`")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// v1 controllers (also the hybrid layout, whose cgroup2 mount holds no controllers).
    V1,
    /// The unified hierarchy at the cgroup root.
    V2,
}

/// Detects the layout from the cgroup root: cgroup2 mounted there means v2.
#[must_use]
pub fn detect_version() -> CgroupVersion {
    if hierarchies::is_cgroup2_unified_mode() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// cgroups-rs's view of the host's hierarchies for `version`. On v1 it is the parsed mount
/// table, read once per process: `hierarchies::auto` reads and parses /proc/self/mountinfo
/// for every handle, on the path of each container start. The supervisor keeps its cgroup
/// mount points for its lifetime as well (`teardown::cgroup_mounts`).
fn hierarchy(version: CgroupVersion) -> Box<dyn Hierarchy> {
    static V1: std::sync::OnceLock<hierarchies::V1> = std::sync::OnceLock::new();
    match version {
        CgroupVersion::V1 => Box::new(V1.get_or_init(hierarchies::V1::new).clone()),
        CgroupVersion::V2 => Box::new(hierarchies::V2::new()),
    }
}

/// The controllers rcompose uses, by layout.
fn controllers(version: CgroupVersion) -> Vec<String> {
    let names: &[&str] = match version {
        CgroupVersion::V1 => &["memory", "cpu", "cpuacct", "pids"],
        CgroupVersion::V2 => &["memory", "cpu", "pids"],
    };
    names.iter().map(|s| (*s).to_string()).collect()
}

/// Where each controller rcompose uses is mounted: `(controller, mount point)`. On v2 there is
/// one entry, the unified root.
#[must_use]
pub fn mount_points(version: CgroupVersion, mountinfo: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // mountinfo: id parent maj:min root mount-point opts ... - fstype source super-opts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(mount_point), Some(fstype), Some(super_opts)) =
            (left.get(4), right.first(), right.get(2))
        else {
            continue;
        };
        match (version, *fstype) {
            (CgroupVersion::V2, "cgroup2") if *mount_point == "/sys/fs/cgroup" => {
                out.push(("unified".to_string(), PathBuf::from(mount_point)));
            }
            (CgroupVersion::V1, "cgroup") => {
                for opt in super_opts.split(',') {
                    if controllers(version).iter().any(|c| c == opt) {
                        out.push((opt.to_string(), PathBuf::from(mount_point)));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// How a container's first process (the init helper, single-threaded) enters its cgroup,
/// once the cgroup is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Join {
    /// Files the helper writes `0` into itself: v1 `tasks` files. Writing `0` moves the
    /// writing thread only, which for a single-threaded process is the whole process, and
    /// it does not take the global `cgroup_threadgroup_rwsem` that a `cgroup.procs` write
    /// takes, whose RCU grace period costs 7-15 ms here.
    pub by_itself: Vec<PathBuf>,
    /// `cgroup.procs` files the supervisor writes the helper's pid into (v2, which has no
    /// per-thread move outside threaded cgroups).
    pub by_pid: Vec<PathBuf>,
}

/// The files a process writes `0` into to move itself into the cgroup `relative` (below each
/// hierarchy root) of every hierarchy in `mounts` (see [`mount_points`]), one per hierarchy:
/// v1 `tasks`, which moves the writing thread only (the whole process when it has one
/// thread) without the global lock a `cgroup.procs` write takes (see [`Join::by_itself`]);
/// v2 `cgroup.procs`, where `0` also means the writer. `rcompose exec` joins a running
/// container's cgroup this way.
#[must_use]
pub fn self_join_files(
    version: CgroupVersion,
    mounts: &[(String, PathBuf)],
    relative: &str,
) -> Vec<PathBuf> {
    let file = match version {
        CgroupVersion::V1 => "tasks",
        CgroupVersion::V2 => "cgroup.procs",
    };
    let mut files: Vec<PathBuf> = mounts
        .iter()
        .map(|(_, m)| m.join(relative).join(file))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// One container's cgroup, as the supervisor and the init helper need it.
pub trait Cgroups: std::fmt::Debug + Send {
    /// How the container's first process joins.
    fn join(&self) -> Join;
    /// Whether the kernel OOM-killed a process of this cgroup.
    fn oom_killed(&self) -> bool;
    /// Removes the cgroup (it must be empty); its parents are `remove_empty_parents`' job.
    fn remove(&self) -> Result<()>;
}

/// A container cgroup made with cgroups-rs.
#[derive(Debug)]
pub struct KernelCgroup {
    cgroup: Cgroup,
    version: CgroupVersion,
    path: String,
}

impl KernelCgroup {
    /// The cgroup `path` (relative to each hierarchy root, e.g. `rcompose/shop/api-1/server`):
    /// a handle, nothing is made yet (see [`KernelCgroup::create`]).
    #[must_use]
    pub fn new(path: &str) -> Self {
        let version = detect_version();
        Self {
            cgroup: Cgroup::load_with_specified_controllers(
                hierarchy(version),
                path,
                controllers(version),
            ),
            version,
            path: path.to_string(),
        }
    }

    /// Creates the cgroup (it may exist) and applies `limits`; on failure, removes it again.
    pub fn create(&self, limits: &Resources) -> Result<()> {
        // Another project's teardown removes the shared `rcompose` parent when it is empty
        // (`remove_empty_parents`): when that rmdir lands between this mkdir of the parent
        // and the mkdir of the child, the child's fails with ENOENT. Making the path again
        // wins the race; a failure for another reason fails the same way three times.
        let mut attempt = 0;
        loop {
            match self.cgroup.create() {
                Ok(()) => break,
                Err(_) if attempt < 2 => attempt += 1,
                Err(source) => {
                    return Err(CgroupError::Create {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        if let Err(e) = self.apply(limits) {
            let _ = self.remove();
            return Err(e);
        }
        Ok(())
    }

    fn apply(&self, limits: &Resources) -> Result<()> {
        let err = |what: &'static str| {
            let path = self.path.clone();
            move |source| CgroupError::Limit { what, path, source }
        };
        if let Some(bytes) = limits.memory_bytes {
            let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
            if let Some(mem) = self.cgroup.controller_of::<MemController>() {
                mem.set_limit(bytes).map_err(err("the memory limit"))?;
                // memory+swap, so that the limit is not escaped through swap; absent when the
                // kernel has no swap accounting, which is fine.
                let _ = mem.set_memswap_limit(bytes);
            }
        }
        if let Some(millis) = limits.cpu_millis
            && let Some(cpu) = self.cgroup.controller_of::<CpuController>()
        {
            let quota = i64::try_from(millis.saturating_mul(CPU_PERIOD_US) / 1000)
                .unwrap_or(i64::MAX)
                .max(1000);
            cpu.set_cfs_quota_and_period(Some(quota), Some(CPU_PERIOD_US))
                .map_err(err("the cpu quota"))?;
        }
        if let Some(max) = limits.pids
            && let Some(pids) = self.cgroup.controller_of::<PidController>()
        {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            pids.set_pid_max(MaxValue::Value(max))
                .map_err(err("the pids limit"))?;
        }
        Ok(())
    }
}

impl Cgroups for KernelCgroup {
    fn join(&self) -> Join {
        let file = match self.version {
            CgroupVersion::V1 => "tasks",
            CgroupVersion::V2 => "cgroup.procs",
        };
        let mut files: Vec<PathBuf> = self
            .cgroup
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().join(file))
            .collect();
        files.sort();
        files.dedup();
        match self.version {
            CgroupVersion::V1 => Join {
                by_itself: files,
                by_pid: Vec::new(),
            },
            CgroupVersion::V2 => Join {
                by_itself: Vec::new(),
                by_pid: files,
            },
        }
    }

    fn oom_killed(&self) -> bool {
        let Some(mem) = self.cgroup.controller_of::<MemController>() else {
            return false;
        };
        // one file, not cgroups-rs' whole `memory_stat` (this runs on every container exit)
        let file = match self.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        fs::read_to_string(mem.path().join(file)).is_ok_and(|s| oom_kill_count(&s) > 0)
    }

    fn remove(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = self
            .cgroup
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_owned())
            .collect();
        for dir in dirs {
            remove_dir_retrying(&dir)?;
        }
        Ok(())
    }
}

/// The `oom_kill` count of a v1 `memory.oom_control` or v2 `memory.events` file.
fn oom_kill_count(events: &str) -> u64 {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// rmdir that waits briefly for the kernel to release a cgroup whose last task just exited.
fn remove_dir_retrying(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Kills every process below `subtree` (relative to each hierarchy root) and removes the
/// cgroups bottom-up. Used by `down` when the supervisor is gone. Returns the number of
/// processes signalled.
pub fn destroy_subtree(mounts: &[(String, PathBuf)], subtree: &str) -> Result<usize> {
    let mut killed = 0;
    let mut roots: Vec<PathBuf> = mounts.iter().map(|(_, m)| m.join(subtree)).collect();
    roots.sort();
    roots.dedup();
    // a supervisor's own teardown removed them already (the usual case)
    roots.retain(|r| r.exists());
    for root in &roots {
        for dir in dirs_bottom_up(root) {
            killed += kill_procs(&dir);
        }
    }
    for root in &roots {
        for dir in dirs_bottom_up(root) {
            // wait for the killed processes to leave the cgroup before rmdir
            let deadline = Instant::now() + Duration::from_secs(5);
            while has_procs(&dir) && Instant::now() < deadline {
                kill_procs(&dir);
                thread::sleep(Duration::from_millis(10));
            }
            remove_dir_retrying(&dir)?;
        }
    }
    Ok(killed)
}

/// Removes the cgroups `relative` (paths below each hierarchy root, children before their
/// parents) in every hierarchy, where they are empty (best effort: one rmdir each).
pub fn remove_empty(mounts: &[(String, PathBuf)], relative: &[PathBuf]) {
    let mut roots: Vec<&PathBuf> = mounts.iter().map(|(_, m)| m).collect();
    roots.sort();
    roots.dedup();
    for root in roots {
        for r in relative {
            let _ = fs::remove_dir(root.join(r));
        }
    }
}

/// Removes `rcompose/<project>` and `rcompose` if they are empty (best effort).
pub fn remove_empty_parents(mounts: &[(String, PathBuf)], relative: &Path) {
    for (_, mount) in mounts {
        let mut p = relative.to_path_buf();
        while p.pop() && !p.as_os_str().is_empty() {
            if fs::remove_dir(mount.join(&p)).is_err() {
                break;
            }
        }
    }
}

fn dirs_bottom_up(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
        out.push(dir);
    }
    // parents were pushed before their children: reverse gives children first
    out.reverse();
    out
}

fn has_procs(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|s| !s.trim().is_empty())
}

fn kill_procs(dir: &Path) -> usize {
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return 0;
    };
    let mut n = 0;
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
            .is_ok()
        {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
36 25 0:31 / /sys/fs/cgroup/cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpuacct
38 25 0:33 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
41 25 0:36 / /sys/fs/cgroup/blkio rw,relatime shared:15 - cgroup cgroup rw,blkio
42 25 0:37 / /sys/fs/cgroup/pids rw,relatime shared:16 - cgroup cgroup rw,pids
44 25 0:39 / /sys/fs/cgroup/unified rw,relatime shared:18 - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_mount_points_list_only_our_controllers() {
        let got = mount_points(CgroupVersion::V1, HYBRID);
        let names: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory", "pids"]);
        assert_eq!(got[2].1, PathBuf::from("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn v2_mount_point_is_the_unified_root_only() {
        let info = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n\
                    31 1 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_points(CgroupVersion::V2, info),
            vec![("unified".to_string(), PathBuf::from("/sys/fs/cgroup"))]
        );
        assert!(mount_points(CgroupVersion::V2, HYBRID).is_empty());
    }

    #[test]
    fn v1_combined_hierarchy_counts_each_controller() {
        let info = "29 26 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let got = mount_points(CgroupVersion::V1, info);
        assert_eq!(got.len(), 2);
        assert!(
            got.iter()
                .all(|(_, p)| p == Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
    }

    #[test]
    fn self_join_files_name_each_hierarchy_once() {
        let combined = "29 26 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                        38 25 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let v1 = mount_points(CgroupVersion::V1, combined);
        assert_eq!(
            self_join_files(CgroupVersion::V1, &v1, "rcompose/p/web-1/app"),
            [
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/rcompose/p/web-1/app/tasks"),
                PathBuf::from("/sys/fs/cgroup/memory/rcompose/p/web-1/app/tasks"),
            ]
        );
        let v2 = mount_points(
            CgroupVersion::V2,
            "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            self_join_files(CgroupVersion::V2, &v2, "rcompose/p/web-1/app"),
            [PathBuf::from(
                "/sys/fs/cgroup/rcompose/p/web-1/app/cgroup.procs"
            )]
        );
    }

    #[test]
    fn reads_oom_kill_from_v1_oom_control_and_v2_events() {
        assert_eq!(
            oom_kill_count("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n"),
            2
        );
        assert_eq!(oom_kill_count("low 0\n"), 0);
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        assert_eq!(oom_kill_count(v1), 1);
    }

    #[test]
    fn remove_empty_removes_the_given_dirs_in_every_hierarchy_but_no_busy_one() {
        let tmp = std::env::temp_dir().join(format!("rcompose-cg-empty-{}", std::process::id()));
        let mounts = vec![
            ("cpu".to_string(), tmp.join("cpu")),
            ("cpuacct".to_string(), tmp.join("cpuacct")),
            ("memory".to_string(), tmp.join("memory")),
        ];
        for (_, m) in &mounts {
            fs::create_dir_all(m.join("rcompose/p/web-1")).unwrap();
        }
        // still in use in one hierarchy (here: a leftover child)
        fs::create_dir_all(tmp.join("memory/rcompose/p/db-1")).unwrap();
        remove_empty(
            &mounts,
            &[
                PathBuf::from("rcompose/p/web-1"),
                PathBuf::from("rcompose/p"),
            ],
        );
        assert!(!tmp.join("cpu/rcompose/p").exists());
        assert!(!tmp.join("cpuacct/rcompose/p").exists());
        assert!(!tmp.join("memory/rcompose/p/web-1").exists());
        assert!(tmp.join("memory/rcompose/p/db-1").exists());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn destroy_subtree_removes_nested_dirs_of_a_fake_tree() {
        let tmp = std::env::temp_dir().join(format!("rcompose-cg-{}", std::process::id()));
        let mounts = vec![("memory".to_string(), tmp.join("memory"))];
        fs::create_dir_all(tmp.join("memory/rcompose/p/web-1/app")).unwrap();
        fs::create_dir_all(tmp.join("memory/rcompose/p/db-1/db")).unwrap();
        let killed = destroy_subtree(&mounts, "rcompose/p").unwrap();
        assert_eq!(killed, 0);
        assert!(!tmp.join("memory/rcompose/p").exists());
        remove_empty_parents(&mounts, Path::new("rcompose/p"));
        assert!(!tmp.join("memory/rcompose").exists());
        fs::remove_dir_all(&tmp).unwrap();
    }
}
