//! Removing a project: through its running supervisor when there is one, else from the
//! state files alone (the supervisor was killed, crashed, or the machine rebooted).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::SupervisorError;
use super::state::{ProjectPaths, ProjectState, is_same_process};
use crate::runtime::{self, cgroup, netns};

/// What `down` found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DownReport {
    /// Whether anything of the project existed.
    pub found: bool,
}

/// The lock a running supervisor holds on its project.
#[derive(Debug)]
pub struct ProjectLock {
    _lock: Flock<File>,
}

/// Tries to take the project lock; `Ok(None)` when another process holds it. Makes the
/// project directory first: where the run root is not a tmpfs (/run on a disk), a tmpfs is
/// mounted on it (see [`make_project_dir`]).
pub fn try_lock(paths: &ProjectPaths) -> Result<Option<ProjectLock>, SupervisorError> {
    let file = paths.lock_file();
    let io_err = |source| SupervisorError::Io {
        path: file.clone(),
        source,
    };
    make_project_dir(&paths.dir).map_err(io_err)?;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&file)
        .map_err(io_err)?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(ProjectLock { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(io_err(e.into())),
    }
}

/// Makes the project directory `dir` and, unless the run root (its parent) is a tmpfs
/// already, mounts a tmpfs on it, so that everything of the project lives in memory as it
/// does where /run is a tmpfs (the usual setup). Where /run is on a disk, every directory
/// removed there frees a block, and with `discard` (this machine) each removal waits for a
/// synchronous discard: 70-250 us on a quiet disk and milliseconds while other processes
/// write; a container alone made and removed eight directories. The tmpfs stays mounted
/// when the supervisor dies, so `down` still finds `state.json`; [`cleanup`] unmounts it
/// with the mounts below it and removes the (empty) directory. Done under the run root's
/// lock, so that two processes never both mount one, nor one remove what another just made.
fn make_project_dir(dir: &Path) -> io::Result<()> {
    let run_root = dir.parent().unwrap_or(Path::new("/"));
    let _root = lock_run_root(run_root)?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if needs_tmpfs(run_root, dir)? {
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("mode=0755"),
        )?;
    }
    Ok(())
}

/// Whether `dir` (in `run_root`) should get a tmpfs of its own: the run root is not a tmpfs
/// and nothing is mounted on `dir` yet (a crashed run's tmpfs is used again).
fn needs_tmpfs(run_root: &Path, dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let root = nix::sys::statfs::statfs(run_root)?;
    if root.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
        return Ok(false);
    }
    Ok(fs::metadata(dir)?.dev() == fs::metadata(run_root)?.dev())
}

/// Whether something is mounted on the project directory `dir` itself: the tmpfs of
/// [`make_project_dir`].
fn is_own_mount(run_root: &Path, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(dir), fs::metadata(run_root)) {
        (Ok(d), Ok(r)) => d.dev() != r.dev(),
        _ => false,
    }
}

/// The run root's lock (a `flock` on the directory itself, held for a moment): taken to make
/// or remove a project directory.
fn lock_run_root(run_root: &Path) -> io::Result<Flock<File>> {
    fs::create_dir_all(run_root)?;
    let f = File::open(run_root)?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e.into())
}

/// Stops and removes everything of a project. `grace` is the time containers get between
/// SIGTERM and SIGKILL (`down -t`); without it, a running supervisor gives each container
/// its own (`stop_grace_period`, else `up -t`), and orphans get the default 10 s.
pub fn down(
    run_root: &Path,
    proc_root: &Path,
    project: &str,
    asked_grace: Option<Duration>,
) -> Result<DownReport, SupervisorError> {
    let grace = asked_grace.unwrap_or(super::DEFAULT_GRACE);
    let paths = ProjectPaths::new(run_root, project);
    let mut report = DownReport::default();
    let mounts = cgroup_mounts(proc_root);
    let subtree = paths.cgroup_subtree();
    let cgroups_exist = mounts.iter().any(|(_, m)| m.join(&subtree).exists());
    if !paths.dir.exists() && !cgroups_exist {
        return Ok(report);
    }
    report.found = true;
    let state = ProjectState::load(&paths.state_file()).ok().flatten();
    if paths.dir.exists() {
        let lock = match try_lock(&paths)? {
            Some(lock) => lock,
            None => {
                // a supervisor runs: ask it to stop everything, and wait until it lets go
                let pid = state
                    .as_ref()
                    .map(|s| (s.supervisor_pid, s.supervisor_start));
                let alive = pid.filter(|&(pid, start)| is_same_process(proc_root, pid, start));
                // through its control socket, with our grace period; else a SIGTERM (its
                // own grace period then)
                let request = super::control::Request::Down {
                    grace_ms: asked_grace.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
                };
                let asked = alive.is_some()
                    && super::control::send(
                        &paths.control_socket(),
                        project,
                        &request,
                        Duration::from_secs(5),
                    )
                    .is_ok();
                if let Some((pid, _)) = alive.filter(|_| !asked) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                // its teardown takes at most the grace period and a moment; a supervisor
                // that does not let go by then is stuck: kill it and remove everything here
                let lock = match wait_for_lock(&paths, grace + Duration::from_secs(5)) {
                    Ok(lock) => lock,
                    Err(SupervisorError::Busy { .. }) if alive.is_some() => {
                        if let Some((pid, _)) = alive {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                        wait_for_lock(&paths, Duration::from_secs(5))?
                    }
                    Err(e) => return Err(e),
                };
                // it lets go of the lock just before it exits: `down` returns once it is gone
                if let Some((pid, start)) = alive {
                    wait_gone(proc_root, pid, start, Duration::from_secs(5));
                }
                lock
            }
        };
        stop_orphans(proc_root, state.as_ref(), grace);
        // a fork server outlives a killed supervisor only until it reads EOF; make sure
        if let Some((pid, start)) = state.as_ref().and_then(|s| s.forkserver)
            && is_same_process(proc_root, pid, start)
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            wait_gone(proc_root, pid, start, Duration::from_secs(5));
        }
        cleanup(&paths, state.as_ref(), &mounts)?;
        drop(lock);
    } else {
        cleanup(&paths, state.as_ref(), &mounts)?;
    }
    Ok(report)
}

fn wait_for_lock(paths: &ProjectPaths, timeout: Duration) -> Result<ProjectLock, SupervisorError> {
    let file = paths.lock_file();
    let f = match File::options().write(true).open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // the supervisor already removed the project; take a fresh lock on a new file
            return try_lock(paths)?.ok_or(SupervisorError::Busy {
                project: paths.project.clone(),
            });
        }
        Err(source) => return Err(SupervisorError::Io { path: file, source }),
    };
    let deadline = Instant::now() + timeout;
    let mut f = f;
    loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(ProjectLock { _lock: lock }),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                f = back;
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => {
                return Err(SupervisorError::Busy {
                    project: paths.project.clone(),
                });
            }
        }
    }
}

/// The cgroup mount points rcompose uses on this host.
#[must_use]
pub fn cgroup_mounts(proc_root: &Path) -> Vec<(String, PathBuf)> {
    let info = fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    cgroup::mount_points(cgroup::detect_version(), &info)
}

/// SIGTERM to every container init still alive, SIGKILL after `grace`.
fn stop_orphans(proc_root: &Path, state: Option<&ProjectState>, grace: Duration) {
    let Some(state) = state else { return };
    let alive: Vec<i32> = state
        .containers
        .iter()
        .filter_map(|c| {
            c.pid
                .filter(|&p| is_same_process(proc_root, p, c.pid_start))
        })
        .collect();
    for &pid in &alive {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let still = |pid: &&i32| !runtime::has_exited(proc_root, **pid);
    while alive.iter().any(|p| still(&p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    for pid in alive.iter().filter(|p| still(p)) {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

/// Waits (at most `timeout`) until `pid`, started at `start`, has exited.
fn wait_gone(proc_root: &Path, pid: i32, start: Option<u64>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while is_same_process(proc_root, pid, start)
        && !runtime::has_exited(proc_root, pid)
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_micros(200));
    }
}

/// Removes what a project left on the machine: processes in its cgroups, the cgroups,
/// network namespaces, any mount below its directory, and the directory.
pub fn cleanup(
    paths: &ProjectPaths,
    state: Option<&ProjectState>,
    mounts: &[(String, PathBuf)],
) -> Result<(), SupervisorError> {
    let subtree = paths.cgroup_subtree();
    // the bridge goes meanwhile: its deletion waits about 50 ms in the kernel (an RCU grace
    // period), most of the teardown's time; its veths go with the namespaces below. No
    // thread when there is no bridge (a project without the network)
    let bridge = super::net::has_bridge(&paths.project).then(|| {
        std::thread::Builder::new()
            .name("bridge".into())
            .stack_size(256 * 1024)
            .spawn({
                let project = paths.project.clone();
                move || super::net::remove_bridge(&project)
            })
    });
    // the bridge thread is joined whatever happens below (an early error must not leave it
    // running while the caller goes on)
    let released = release(paths, state, mounts, &subtree);
    let bridge = match bridge {
        None => Ok(()),
        Some(Ok(handle)) => handle.join().unwrap_or(Ok(())),
        Some(Err(_)) => super::net::remove_bridge(&paths.project),
    };
    let (_root, detached) = released?;
    bridge?;
    // a replica's veth goes with its namespace, but a namespace the kernel keeps alive
    // (seen after a bandwidth fault shaped a replica's link) would keep it: the host ends
    // left are deleted, which takes their peers (best effort: the kernel may be removing
    // them itself)
    super::net::remove_veths(&paths.project);
    // the project's own tmpfs went with every mount below it; else they go one by one
    if !detached {
        for mount in mounts_below(&paths.dir) {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    // empty once its tmpfs is gone (the usual case): one rmdir, else the walk
    let removed = match fs::remove_dir(&paths.dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => fs::remove_dir_all(&paths.dir),
        other => other,
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SupervisorError::Io {
            path: paths.dir.clone(),
            source,
        }),
    }
}

/// [`cleanup`]'s middle part: the processes and cgroups, the project's own tmpfs and the
/// network namespaces. Returns the run root's lock, held until the directory is gone, and
/// whether the project's own tmpfs was unmounted (with everything mounted below it).
fn release(
    paths: &ProjectPaths,
    state: Option<&ProjectState>,
    mounts: &[(String, PathBuf)],
    subtree: &str,
) -> Result<(Flock<File>, bool), SupervisorError> {
    // an external runtime (crun, runc) made the containers' cgroups in every hierarchy
    let every;
    let mounts = if paths.dir.join("oci").exists() {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        every = crate::runtime::oci::hierarchies(&info);
        &every[..]
    } else {
        mounts
    };
    cgroup::destroy_subtree(mounts, subtree)
        .map_err(|source| SupervisorError::Cgroup { source })?;
    cgroup::remove_empty_parents(mounts, Path::new(subtree));
    let run_root = paths.dir.parent().unwrap_or(Path::new("/"));
    let root = lock_run_root(run_root).map_err(|source| SupervisorError::Io {
        path: run_root.to_path_buf(),
        source,
    })?;
    // The project's own tmpfs goes with everything mounted below it (namespace pins, the
    // pods' /dev/shm, configs, external runtimes' roots) in one lazy unmount: each unmount
    // waits for an expedited RCU grace period, 50-100 us here, and a pod has four.
    let detached = is_own_mount(run_root, &paths.dir)
        && nix::mount::umount2(&paths.dir, nix::mount::MntFlags::MNT_DETACH).is_ok();
    let mut namespaces: Vec<PathBuf> = state.map(|s| s.netns.clone()).unwrap_or_default();
    namespaces.extend(paths.netns_pins());
    // pins on the unmounted tmpfs went with it
    namespaces.retain(|ns| !(detached && ns.starts_with(&paths.dir)));
    for ns in namespaces {
        netns::remove(&ns).map_err(|source| SupervisorError::Netns { source })?;
    }
    Ok((root, detached))
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_tmpfs(p: &Path) -> bool {
        nix::sys::statfs::statfs(p)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    }

    #[test]
    fn a_project_directory_gets_a_tmpfs_only_where_the_run_root_is_not_one() {
        // /dev/shm is a tmpfs (the usual /run): the project directory is used as it is
        let shm = Path::new("/dev/shm");
        assert!(is_tmpfs(shm));
        let dir = shm.join(format!("rcompose-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert!(!needs_tmpfs(shm, &dir).unwrap());
        assert!(!is_own_mount(shm, &dir));
        fs::remove_dir(&dir).unwrap();
        // a directory on the source tree's file system, nothing mounted on it: a tmpfs
        // exactly when that file system is not one
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("src");
        assert_eq!(needs_tmpfs(root, &dir).unwrap(), !is_tmpfs(root));
        assert!(!is_own_mount(root, &dir));
    }
}
