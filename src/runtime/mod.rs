//! L2: one container on Linux: namespaces, an overlayfs root, cgroup limits and a small init.
//!
//! Uses `plan` types only; never `supervisor` or `cli`. Every host path comes in through
//! [`ContainerConfig`], so nothing here hard-codes where state lives.
//!
//! A container is started by re-executing the rcompose binary in the hidden `__init` mode
//! ([`spawn`] -> [`init::main`]): the supervisor is multi-threaded, and only a fresh
//! single-threaded process may fork and set up namespaces (the `runc init` pattern).
//! `rcompose exec` enters a running container the same way, through a re-executed `__exec`
//! helper ([`exec`]).

pub mod cgroup;
pub mod exec;
pub mod forkserver;
pub mod init;
pub mod netns;
pub mod oci;
pub mod rootfs;
pub mod security;
pub mod stats;
pub mod user;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
use nix::sys::time::TimeVal;
use serde::{Deserialize, Serialize};

use self::rootfs::RootfsSpec;

/// Everything the init helper needs to build and start one container. Written as JSON into
/// the container's directory before [`spawn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// A display name (`pod-N/container`), used in messages.
    pub name: String,
    /// The container's hostname (`<pod>-<replica>`).
    pub hostname: String,
    /// The root file system.
    pub rootfs: RootfsSpec,
    /// The pod's network namespace (a bind-mounted nsfs file), if any.
    pub netns: Option<PathBuf>,
    /// argv of the command.
    pub command: Vec<String>,
    /// Environment, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Working directory inside the container.
    pub working_dir: Option<String>,
    /// User to run the command as (`uid[:gid]` or names from the image's /etc/passwd and
    /// /etc/group); root when `None`.
    #[serde(default)]
    pub user: Option<String>,
    /// The tiny `rcompose-init` the init replaces itself with once the command runs (see
    /// `src/bin/rcompose-init.rs`); without it, the Rust init stays PID 1.
    pub init: Option<PathBuf>,
    /// No confinement: every capability, no seccomp filter, no masked /proc paths.
    #[serde(default)]
    pub privileged: bool,
    /// The command's capability set (bounding, permitted and effective for root; bounding
    /// only for other users), bit n for capability number n.
    pub capabilities: u64,
    /// Mounts over the root, in order, after /proc, /sys, /dev, /tmp and /run.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Remount the root read-only once /etc/hostname and /etc/hosts are written.
    #[serde(default)]
    pub read_only: bool,
    /// Give the command a pseudo-terminal (of the container's devpts) as stdin, stdout and
    /// stderr and controlling terminal; its master comes back from [`spawn`] in
    /// [`Started::tty`], for the log.
    #[serde(default)]
    pub tty: bool,
}

/// The file in a container's directory that holds its [`ContainerConfig`] (JSON); not
/// `config.json`, which is an external runtime's bundle config there.
pub const CONFIG_FILE: &str = "container.json";

/// A bind mount of a host path, or a fresh tmpfs, in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The host file or directory; `None` for a tmpfs.
    pub source: Option<PathBuf>,
    /// Absolute path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// tmpfs size limit in bytes.
    pub size: Option<u64>,
    /// A file the image may have as a symbolic link (`/etc/hosts`, `/etc/resolv.conf`): the
    /// link is replaced by a file to mount on (in the container's upper layer) instead of
    /// refusing the mount.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

/// The `rcompose-init` binary installed next to `exe`, if there is one.
#[must_use]
pub fn tiny_init_next_to(exe: &Path) -> Option<PathBuf> {
    let candidate = exe.parent()?.join("rcompose-init");
    candidate.is_file().then_some(candidate)
}

/// Errors of starting a container.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The init helper could not be started.
    #[error("failed to start the init helper `{exe}`")]
    Exec {
        /// The rcompose binary.
        exe: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the status pipe failed.
    #[error("failed to create a pipe")]
    Pipe(#[source] io::Error),
    /// The container could not be set up or its command could not be run.
    #[error("{message}")]
    Failed {
        /// The container's init pid, when it got that far.
        pid: Option<i32>,
        /// What went wrong, as the init reported it.
        message: String,
    },
}

/// How long a container may take from spawn to its command running.
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A running container: the host pid of its init (PID 1 inside).
#[derive(Debug)]
pub struct Started {
    /// Host pid of the container's init.
    pub pid: i32,
    /// With `tty`, the master of the command's terminal: its output (the log) is read
    /// there, not from the log pipe.
    pub tty: Option<OwnedFd>,
}

/// Starts the container described by the JSON file `config` by re-executing `exe` in init
/// mode, with `log` as its stdout and stderr. Returns once the command has been exec'd (or
/// failed to be). The caller must be a child subreaper (see [`become_subreaper`]): the
/// helper exits at once and the container's init is re-parented to the caller, which reaps
/// it.
///
/// Meanwhile `prepare` runs: it makes the container's cgroup and writes `config`. With
/// `create_netns`, the helper creates the pod's network namespace and pins it there (the
/// pod's first container) at the same time. The helper goes on only once `prepare`
/// succeeded (one "go" byte on its stdin, a socket pair); otherwise it exits without doing
/// anything and the error is returned. Then it enters its cgroup as `join` says: by itself
/// (v1, before the "go" byte it is told its `tasks` files), or moved by this function
/// before the "go" byte (v2, where a move waits for an RCU grace period).
pub fn spawn(
    exe: &Path,
    config: &Path,
    log: OwnedFd,
    join: &cgroup::Join,
    create_netns: Option<&Path>,
    server: Option<&forkserver::ForkServer>,
    prepare: impl FnOnce() -> Result<(), String>,
) -> Result<Started, SpawnError> {
    // One socket pair carries both directions (the "go" byte, the status lines). Given to the
    // helper as its stdin, it needs no fd juggling before exec, so std can start the helper
    // with posix_spawn (vfork) instead of a fork of this multi-threaded process.
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SpawnError::Pipe(e.into()))?;
    let mut args: Vec<std::ffi::OsString> = vec![config.as_os_str().to_owned()];
    if let Some(ns) = create_netns {
        args.push("--create-netns".into());
        args.push(ns.as_os_str().to_owned());
    }
    args.extend(join.by_itself.iter().map(|p| p.as_os_str().to_owned()));
    // the helper's pid: known at once when spawned here; from the fork server, the first
    // line on the channel, read only if needed (joining v2 cgroups by pid), so the cgroup is
    // made while the server forks
    let pid = match server {
        // forked by the fork server: no exec, no dynamic loading
        Some(server) => {
            server
                .spawn(&args, &theirs, &log)
                .map_err(|source| SpawnError::Exec {
                    exe: exe.to_owned(),
                    source,
                })?;
            drop(theirs);
            drop(log);
            None
        }
        None => {
            let log2 = log.try_clone().map_err(SpawnError::Pipe)?;
            let mut cmd = Command::new(exe);
            cmd.arg("__init")
                .args(&args)
                .env_clear()
                .stdin(Stdio::from(theirs))
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log2));
            let spawned = cmd.spawn();
            drop(cmd);
            let child = spawned.map_err(|source| SpawnError::Exec {
                exe: exe.to_owned(),
                source,
            })?;
            let pid = child.id().to_string();
            // the helper is reaped by the caller's reaper, never through `child`
            drop(child);
            Some(pid)
        }
    };
    let mut channel = File::from(ours);
    // A container whose setup hangs (a mount that never returns, say) must not hang the
    // supervisor: give up after START_TIMEOUT and kill what was started.
    let _ = setsockopt(
        &channel,
        sockopt::ReceiveTimeout,
        &TimeVal::new(START_TIMEOUT.as_secs().cast_signed(), 0),
    );
    let mut text = String::new();
    let mut fds = Vec::new();
    let prepared = prepare().and_then(|()| {
        if join.by_pid.is_empty() {
            return Ok(());
        }
        let pid = match pid {
            Some(pid) => pid,
            None => helper_pid(&channel, &mut text, &mut fds)?,
        };
        for procs in &join.by_pid {
            std::fs::write(procs, &pid)
                .map_err(|e| format!("failed to join cgroup `{}`: {e}", procs.display()))?;
        }
        Ok(())
    });
    if prepared.is_ok() {
        let _ = channel.write_all(b"g");
    } else {
        // EOF without a byte tells the helper to give up
        let _ = nix::sys::socket::shutdown(channel.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    }
    if let Err(e) = read_status(&channel, &mut text, &mut fds)
        && matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    {
        let pid = parse_status(&text).err().and_then(|e| match e {
            SpawnError::Failed { pid, .. } => pid,
            _ => None,
        });
        return Err(SpawnError::Failed {
            pid,
            message: format!(
                "the container did not start within {} s",
                START_TIMEOUT.as_secs()
            ),
        });
    }
    if let Err(message) = prepared {
        return Err(SpawnError::Failed { pid: None, message });
    }
    let mut started = parse_status(&text)?;
    // the terminal's master, sent with the `tty` line (see `init::send_terminal`)
    if text.lines().any(|l| l == "tty") {
        started.tty = fds.pop();
        if started.tty.is_none() {
            return Err(SpawnError::Failed {
                pid: Some(started.pid),
                message: "the container's terminal did not arrive".to_string(),
            });
        }
    }
    Ok(started)
}

/// The first status line of a helper forked by the fork server: `helper PID`.
pub(crate) const HELPER_LINE: &str = "helper";

/// Reads status lines until the first one is complete and returns the helper's pid from it
/// (`helper PID`); what was read stays in `text` for [`read_status`].
fn helper_pid(channel: &File, text: &mut String, fds: &mut Vec<OwnedFd>) -> Result<String, String> {
    while !text.contains('\n') {
        match read_some(channel, text, fds) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let first = text.lines().next().unwrap_or_default();
    if let Some(message) = first.strip_prefix("error ") {
        return Err(message.to_string());
    }
    first
        .strip_prefix(HELPER_LINE)
        .map(|p| p.trim().to_string())
        .filter(|p| p.parse::<i32>().is_ok())
        .ok_or_else(|| "the container's helper did not start".to_string())
}

/// Reads the helper's status lines until EOF, and the descriptors sent with them.
fn read_status(channel: &File, text: &mut String, fds: &mut Vec<OwnedFd>) -> io::Result<()> {
    while read_some(channel, text, fds)? > 0 {}
    Ok(())
}

/// One read of status text (and descriptors) from the channel; 0 at EOF.
fn read_some(channel: &File, text: &mut String, fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 1024];
    loop {
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let n = msg.bytes;
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: SCM_RIGHTS installed these descriptors in this process for us.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        return Ok(n);
    }
}

/// Interprets the init helper's status lines.
fn parse_status(text: &str) -> Result<Started, SpawnError> {
    let mut pid = None;
    let mut started = false;
    let mut error = None;
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("pid ") {
            pid = p.trim().parse().ok();
        } else if line == "started" {
            started = true;
        } else if let Some(e) = line.strip_prefix("error ") {
            error.get_or_insert_with(|| e.to_string());
        }
    }
    match (pid, started, error) {
        (Some(pid), true, None) => Ok(Started { pid, tty: None }),
        (pid, _, Some(message)) => Err(SpawnError::Failed { pid, message }),
        (pid, _, None) => Err(SpawnError::Failed {
            pid,
            message: "the container's init exited before starting the command".to_string(),
        }),
    }
}

/// Whether process `pid` has exited: gone from `proc_root`, or a zombie waiting to be reaped.
#[must_use]
pub fn has_exited(proc_root: &Path, pid: i32) -> bool {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
        .map(|s| {
            s.rfind(')')
                .is_none_or(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Makes the calling process a child subreaper, so that container inits (whose helper
/// exits) are re-parented to it.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// What is missing on this machine for running containers, if anything: root, overlayfs,
/// cgroups and namespaces. Paths are parameters so tests can point them elsewhere.
#[must_use]
pub fn missing_prerequisite(proc_root: &Path) -> Option<String> {
    missing_prerequisite_of(
        nix::unistd::geteuid().is_root(),
        proc_root,
        cgroup::detect_version(),
    )
}

/// [`missing_prerequisite`] with the facts that are not paths given explicitly (for tests).
fn missing_prerequisite_of(
    root: bool,
    proc_root: &Path,
    version: cgroup::CgroupVersion,
) -> Option<String> {
    if !root {
        return Some("rcompose must run as root to create namespaces, mounts and cgroups".into());
    }
    let filesystems = std::fs::read_to_string(proc_root.join("filesystems")).unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Some(
            "the kernel has no overlayfs (no `overlay` in /proc/filesystems; try `modprobe overlay`)"
                .into(),
        );
    }
    for ns in ["mnt", "pid", "uts", "ipc", "net"] {
        if !proc_root.join("self/ns").join(ns).exists() {
            return Some(format!(
                "the kernel has no {ns} namespaces (/proc/self/ns/{ns} is missing)"
            ));
        }
    }
    let mountinfo = std::fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    let mounts = cgroup::mount_points(version, &mountinfo);
    let wanted: &[&str] = match version {
        cgroup::CgroupVersion::V1 => &["memory", "cpu", "pids"],
        cgroup::CgroupVersion::V2 => &["unified"],
    };
    for w in wanted {
        if !mounts.iter().any(|(c, _)| c == w) {
            return Some(format!(
                "the cgroup controller `{w}` is not mounted (see /proc/self/mountinfo)"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_with_pid_and_started_is_a_start() {
        assert_eq!(parse_status("pid 42\nstarted\n").unwrap().pid, 42);
        assert_eq!(parse_status("started\npid 42\n").unwrap().pid, 42);
    }

    #[test]
    fn status_error_keeps_the_first_message_and_the_pid() {
        match parse_status("pid 7\nerror `x`: executable file not found in $PATH\n") {
            Err(SpawnError::Failed { pid, message }) => {
                assert_eq!(pid, Some(7));
                assert_eq!(message, "`x`: executable file not found in $PATH");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A fake /proc with the given filesystems, namespaces and mountinfo.
    fn fake_proc(name: &str, filesystems: &str, namespaces: &[&str], mountinfo: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rcompose-proc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("self/ns")).unwrap();
        std::fs::write(dir.join("filesystems"), filesystems).unwrap();
        for ns in namespaces {
            std::fs::write(dir.join("self/ns").join(ns), "").unwrap();
        }
        std::fs::write(dir.join("self/mountinfo"), mountinfo).unwrap();
        dir
    }

    const ALL_NS: [&str; 5] = ["mnt", "pid", "uts", "ipc", "net"];
    const V1_MOUNTS: &str = "\
35 25 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
38 25 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
42 25 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";

    #[test]
    fn each_missing_prerequisite_is_named_in_one_sentence() {
        use cgroup::CgroupVersion::{V1, V2};
        let ok = fake_proc("ok", "nodev\ttmpfs\nnodev\toverlay\n", &ALL_NS, V1_MOUNTS);
        assert_eq!(missing_prerequisite_of(true, &ok, V1), None);
        assert_eq!(
            missing_prerequisite_of(false, &ok, V1).unwrap(),
            "rcompose must run as root to create namespaces, mounts and cgroups"
        );
        assert_eq!(
            missing_prerequisite_of(true, &ok, V2).unwrap(),
            "the cgroup controller `unified` is not mounted (see /proc/self/mountinfo)"
        );
        let no_overlay = fake_proc("noovl", "nodev\ttmpfs\n", &ALL_NS, V1_MOUNTS);
        assert_eq!(
            missing_prerequisite_of(true, &no_overlay, V1).unwrap(),
            "the kernel has no overlayfs (no `overlay` in /proc/filesystems; try `modprobe overlay`)"
        );
        let no_pidns = fake_proc(
            "nopid",
            "nodev\toverlay\n",
            &["mnt", "uts", "ipc", "net"],
            V1_MOUNTS,
        );
        assert_eq!(
            missing_prerequisite_of(true, &no_pidns, V1).unwrap(),
            "the kernel has no pid namespaces (/proc/self/ns/pid is missing)"
        );
        let no_pids = fake_proc(
            "nopids",
            "nodev\toverlay\n",
            &ALL_NS,
            &V1_MOUNTS.replace("rw,pids", "rw,blkio"),
        );
        assert_eq!(
            missing_prerequisite_of(true, &no_pids, V1).unwrap(),
            "the cgroup controller `pids` is not mounted (see /proc/self/mountinfo)"
        );
        for d in [ok, no_overlay, no_pidns, no_pids] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn silent_death_is_reported() {
        let err = parse_status("pid 9\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the container's init exited before starting the command"
        );
    }
}
