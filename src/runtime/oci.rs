//! An external OCI runtime (crun or runc) in place of the built-in init: `runtime: crun`.
//!
//! The container is the one the built-in runtime makes from the same [`ContainerConfig`]:
//! [`spec`] turns it into an OCI runtime spec (`config.json`, with oci-spec's `runtime`
//! types) with the same namespaces (the pod's network, IPC and UTS pins joined by path; own
//! mount and pid namespaces), mounts, user, capabilities, `no_new_privs`, masked and
//! read-only /proc paths, seccomp profile and cgroup limits. [`spawn`] prepares the bundle
//! on the host (the overlay root at `<dir>/rootfs`, /etc/hostname and /etc/hosts, the user
//! resolved against the image's account files) and runs `<runtime> run --detach`; [`remove`]
//! deletes the container and unmounts its root.
//!
//! The runtime manages the container's cgroup itself (`linux.cgroupsPath`, the path the
//! built-in runtime uses), in every hierarchy it knows: a project's teardown must therefore
//! look at every hierarchy ([`hierarchies`]), not only rcompose's four controllers.
//!
//! crun refuses a hybrid cgroup host whose cgroup2 mount holds a controller ("cgroups in
//! hybrid mode not supported, drop all controllers from cgroupv2"; Debian 12 leaves
//! `hugetlb` there), whatever its `--cgroup-manager` (the check comes before the manager is
//! chosen, also for `disabled`). rcompose runs crun in a private mount namespace without
//! `/sys/fs/cgroup/unified`: crun then sees a plain v1 host, as the built-in runtime does,
//! and no global change to the host is needed (docs/architecture.md).
//!
//! Uses `plan` types and the runtime's own helpers only; never `supervisor` or `cli`.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::mount::{MntFlags, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::{Pid, UnlinkatFlags, unlinkat};
use oci_spec::OciSpecError;
#[cfg(target_arch = "x86_64")]
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::netns::{self, NetnsError, PodPins};
use super::rootfs::{OverlayMount, RootfsSpec, dirs_to_create, overlay_mounts};
use super::user::{self, User};
use super::{ContainerConfig, START_TIMEOUT, Started, init, security};
use crate::plan::desired::Resources;

/// The CFS period of CPU quotas, in microseconds (as `cgroup::KernelCgroup`).
const CPU_PERIOD_US: u64 = 100_000;

/// Errors of the external runtime.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A runtime name other than `crun` or `runc`.
    #[error("unknown runtime `{0}` (expected `crun` or `runc`)")]
    UnknownKind(String),
    /// The runtime's binary is not in `PATH`.
    #[error("runtime `{kind}` is not installed (not found in PATH)")]
    NotInstalled {
        /// Which runtime.
        kind: Kind,
    },
    /// A directory of the bundle could not be made.
    #[error("failed to create `{path}`")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The pod's namespaces could not be made.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The overlay root could not be mounted (the message names the mount and the cause).
    #[error("{0}")]
    Rootfs(String),
    /// The command is not in the image (told as the built-in runtime tells it).
    #[error("`{0}`: executable file not found in $PATH")]
    NotFound(String),
    /// `user:` could not be resolved in the image.
    #[error("cannot run as user `{user}`: {message}")]
    User {
        /// The `user:` value.
        user: String,
        /// Why.
        message: String,
    },
    /// The container has no command.
    #[error("the container has no command")]
    NoCommand,
    /// There is no seccomp profile for this architecture.
    #[error("the default seccomp filter exists for x86_64 only; use `privileged: true`")]
    NoSeccompProfile,
    /// A system call of the profile has no name in the table of this module (a bug).
    #[error("system call {0} has no name for the seccomp profile")]
    UnnamedSyscall(i64),
    /// oci-spec refused a value.
    #[error("failed to build the OCI runtime spec")]
    Spec(#[source] OciSpecError),
    /// A file of the bundle could not be written.
    #[error("failed to write `{path}`")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The runtime's binary could not be started.
    #[error("failed to start `{binary}`")]
    Exec {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Waiting for the runtime failed.
    #[error("failed to wait for `{kind} {action}`")]
    Wait {
        /// Which runtime.
        kind: Kind,
        /// Its subcommand.
        action: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The runtime did not finish in time (it was killed).
    #[error("`{kind} {action}` did not finish within {seconds} s")]
    Timeout {
        /// Which runtime.
        kind: Kind,
        /// Its subcommand.
        action: &'static str,
        /// The limit.
        seconds: u64,
    },
    /// The runtime failed; `message` is its own error (from its log).
    #[error("`{kind} {action}` failed: {message}")]
    Runtime {
        /// Which runtime.
        kind: Kind,
        /// Its subcommand.
        action: &'static str,
        /// What it said.
        message: String,
    },
    /// The container's root could not be unmounted.
    #[error("failed to unmount `{path}`")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, OciError>;

/// Which external runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// crun (C, the default of Podman).
    Crun,
    /// runc (Go, the reference runtime, Docker's).
    Runc,
}

impl Kind {
    /// The runtime's name, which is also its binary's.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Kind::Crun => "crun",
            Kind::Runc => "runc",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "crun" => Ok(Kind::Crun),
            "runc" => Ok(Kind::Runc),
            other => Err(OciError::UnknownKind(other.to_string())),
        }
    }
}

/// An installed external runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRuntime {
    kind: Kind,
    binary: PathBuf,
}

impl ExternalRuntime {
    /// Finds the runtime's binary in `PATH` (or, when `PATH` is unset, in the containers'
    /// default PATH, which has the `sbin` directories where runc lives on Debian).
    pub fn find(kind: Kind) -> Result<Self> {
        let path = std::env::var_os("PATH").unwrap_or_else(|| init::DEFAULT_PATH.into());
        Self::find_in(kind, &path)
    }

    /// Finds the runtime's binary in the directories of `path` (a `PATH` value).
    pub fn find_in(kind: Kind, path: &OsStr) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        std::env::split_paths(path)
            .filter(|d| d.is_absolute())
            .map(|d| d.join(kind.name()))
            .find(|p| {
                fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .map(|binary| Self { kind, binary })
            .ok_or(OciError::NotInstalled { kind })
    }

    /// A runtime at a known path (nothing is checked).
    #[must_use]
    pub fn at(kind: Kind, binary: PathBuf) -> Self {
        Self { kind, binary }
    }

    /// Which runtime.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its binary.
    #[must_use]
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

/// The facts of the host a spec depends on (kernel paths are read by [`HostFacts::probe`]
/// only, so [`spec`] is a pure function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// The capabilities this process may pass on (its bounding set, `CapBnd` in
    /// /proc/self/status): a runtime asked for more fails (a VM may withhold one, as
    /// CAP_SYS_RESOURCE on this project's machine), so the spec asks for no more.
    pub bounding: u64,
    /// Whether memory+swap can be limited (v1 `memory.memsw.*`, or v2): the limit then
    /// covers swap too, as `cgroup::KernelCgroup` sets it.
    pub swap_limit: bool,
}

impl HostFacts {
    /// Reads the facts from /proc/self/status and /sys/fs/cgroup.
    #[must_use]
    pub fn probe() -> Self {
        let bounding = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX);
        let swap_limit = Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        Self {
            bounding,
            swap_limit,
        }
    }
}

/// Builds the OCI runtime spec (`config.json`) of the container `config`, with the same
/// confinement as the built-in runtime: `user` is `config.user` resolved in the image (root
/// when there is none), `rootfs` the root's path (relative to the bundle, or absolute),
/// `cgroups_path` the container's cgroup below every hierarchy root (a leading `/` is added:
/// runtimes take a relative path as relative to their own cgroup).
pub fn spec(
    config: &ContainerConfig,
    resources: &Resources,
    user: &User,
    rootfs: &Path,
    cgroups_path: &str,
    host: &HostFacts,
) -> Result<Spec> {
    let bad = OciError::Spec;
    if config.command.is_empty() {
        return Err(OciError::NoCommand);
    }
    let root = user.uid == 0;
    // as the built-in init: the bounding set always; permitted and effective for root only
    // (a user switch clears them); inheritable and ambient empty
    let caps_bits = if config.privileged {
        u64::MAX
    } else {
        config.capabilities
    };
    let set = capability_set(caps_bits & host.bounding);
    let own = if root {
        set.clone()
    } else {
        Capabilities::new()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(set)
        .effective(own.clone())
        .permitted(own)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(bad)?;
    let mut user_builder = UserBuilder::default()
        .uid(user.uid)
        .gid(user.gid)
        .umask(0o022u32);
    if config.user.is_some() {
        // the built-in init calls setgroups([gid] + groups)
        let mut gids = vec![user.gid];
        gids.extend(user.groups.iter().copied().filter(|g| *g != user.gid));
        user_builder = user_builder.additional_gids(gids);
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user_builder.build().map_err(bad)?)
        .args(config.command.clone())
        .env(environment(config, user))
        .cwd(config.working_dir.as_deref().unwrap_or("/"))
        .capabilities(capabilities)
        .rlimits(Vec::new())
        .no_new_privileges(!config.privileged)
        .build()
        .map_err(bad)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(config.netns.as_deref())?)
        .cgroups_path(format!("/{}", cgroups_path.trim_start_matches('/')))
        .resources(linux_resources(resources, config.privileged, host)?)
        .rootfs_propagation("rprivate")
        .devices(Vec::new())
        .uid_mappings(Vec::new())
        .gid_mappings(Vec::new());
    if config.privileged {
        linux = linux.masked_paths(Vec::new()).readonly_paths(Vec::new());
    } else {
        linux = linux
            .masked_paths(security::MASKED.map(String::from).to_vec())
            .readonly_paths(security::READ_ONLY.map(String::from).to_vec())
            .seccomp(seccomp(config.capabilities)?);
    }
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(config.read_only)
                .build()
                .map_err(bad)?,
        )
        .hostname(config.hostname.clone())
        .mounts(mounts(config)?)
        .process(process)
        .linux(linux.build().map_err(bad)?)
        .build()
        .map_err(bad)
}

/// The command's environment, as the built-in init makes it: `PATH` (the default when
/// missing), `HOSTNAME`, `HOME` (the user's home with `user:`), then the container's own.
fn environment(config: &ContainerConfig, user: &User) -> Vec<String> {
    let mut env = init::environment(config);
    if config.user.is_some()
        && !config.env.iter().any(|(k, _)| k == "HOME")
        && let Some(home) = env.iter_mut().find(|(k, _)| k == "HOME")
    {
        home.1 = user.home.clone().unwrap_or_else(|| "/".into());
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The OCI capabilities of bit set `bits`.
fn capability_set(bits: u64) -> Capabilities {
    caps::all()
        .into_iter()
        .filter(|c| bits & (1 << c.index()) != 0)
        .filter_map(oci_capability)
        .collect()
}

/// `CAP_SYS_ADMIN` and the like in oci-spec's type (which reads the kernel's names).
fn oci_capability(c: caps::Capability) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(c.to_string())).ok()
}

/// Own mount and pid namespaces; the pod's network, IPC and UTS namespaces joined at their
/// pins, or (no pod) own UTS and IPC namespaces and the host's network, as the built-in
/// helper does.
fn namespaces(netns: Option<&Path>) -> Result<Vec<oci_spec::runtime::LinuxNamespace>> {
    let ns = |typ: LinuxNamespaceType, path: Option<&Path>| {
        let b = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(p) => b.path(p),
            None => b,
        }
        .build()
        .map_err(OciError::Spec)
    };
    let mut out = vec![
        ns(LinuxNamespaceType::Mount, None)?,
        ns(LinuxNamespaceType::Pid, None)?,
    ];
    match netns {
        Some(net) => {
            let pins = PodPins::of(net);
            out.push(ns(LinuxNamespaceType::Network, Some(&pins.net))?);
            out.push(ns(LinuxNamespaceType::Ipc, Some(&pins.ipc))?);
            out.push(ns(LinuxNamespaceType::Uts, Some(&pins.uts))?);
        }
        None => {
            out.push(ns(LinuxNamespaceType::Ipc, None)?);
            out.push(ns(LinuxNamespaceType::Uts, None)?);
        }
    }
    Ok(out)
}

/// The mounts of the built-in init, in its order: /proc, read-only /sys, a small tmpfs
/// /dev (the runtime makes the same device nodes and /dev symlinks in it), /dev/pts,
/// /dev/shm (the pod's), tmpfs /tmp and /run, then the container's volumes.
fn mounts(config: &ContainerConfig) -> Result<Vec<Mount>> {
    let m = |dest: &str, typ: &str, source: &Path, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| (*o).to_string()).collect::<Vec<_>>())
            .build()
            .map_err(OciError::Spec)
    };
    let p = Path::new;
    let mut out = vec![
        m("/proc", "proc", p("proc"), &["nosuid", "noexec", "nodev"])?,
        m(
            "/sys",
            "sysfs",
            p("sysfs"),
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        m(
            "/dev",
            "tmpfs",
            p("tmpfs"),
            &["nosuid", "noexec", "mode=755", "size=65536k"],
        )?,
        m(
            "/dev/pts",
            "devpts",
            p("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
    ];
    out.push(match &config.netns {
        Some(net) => m("/dev/shm", "bind", &PodPins::of(net).shm, &["bind"])?,
        None => m(
            "/dev/shm",
            "tmpfs",
            p("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    });
    out.push(m(
        "/tmp",
        "tmpfs",
        p("tmpfs"),
        &["nosuid", "nodev", "mode=1777"],
    )?);
    out.push(m(
        "/run",
        "tmpfs",
        p("tmpfs"),
        &["nosuid", "nodev", "mode=755"],
    )?);
    for v in &config.mounts {
        let mount = match &v.source {
            Some(source) if v.read_only => m(
                &v.target,
                "bind",
                source,
                &["rbind", "ro", "nosuid", "nodev"],
            )?,
            Some(source) => m(&v.target, "bind", source, &["rbind"])?,
            None => {
                let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
                if v.read_only {
                    options.push("ro".into());
                }
                options.push("mode=1777".into());
                if let Some(size) = v.size {
                    options.push(format!("size={size}"));
                }
                MountBuilder::default()
                    .destination(&v.target)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(options)
                    .build()
                    .map_err(OciError::Spec)?
            }
        };
        out.push(mount);
    }
    Ok(out)
}

/// The cgroup limits of `cgroup::KernelCgroup::create`, and the devices cgroup every OCI
/// runtime sets up: the nodes of the minimal /dev (all devices when privileged).
fn linux_resources(r: &Resources, privileged: bool, host: &HostFacts) -> Result<LinuxResources> {
    let bad = OciError::Spec;
    let rule = |allow: bool, typ: Option<(LinuxDeviceType, i64, Option<i64>)>| {
        let b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access("rwm");
        match typ {
            Some((t, major, minor)) => {
                let b = b.typ(t).major(major);
                match minor {
                    Some(minor) => b.minor(minor),
                    None => b,
                }
            }
            None => b,
        }
        .build()
        .map_err(OciError::Spec)
    };
    let devices = if privileged {
        vec![rule(true, None)?]
    } else {
        let mut rules = vec![rule(false, None)?];
        // null, zero, full, random, urandom, tty, ptmx, and the pseudo-terminals
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
            rules.push(rule(true, Some((LinuxDeviceType::C, major, Some(minor))))?);
        }
        rules.push(rule(true, Some((LinuxDeviceType::C, 136, None)))?);
        rules
    };
    let mut b = LinuxResourcesBuilder::default().devices(devices);
    if let Some(bytes) = r.memory_bytes {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let mut mem = LinuxMemoryBuilder::default().limit(bytes);
        if host.swap_limit {
            mem = mem.swap(bytes);
        }
        b = b.memory(mem.build().map_err(bad)?);
    }
    if let Some(millis) = r.cpu_millis {
        let quota = i64::try_from(millis.saturating_mul(CPU_PERIOD_US) / 1000)
            .unwrap_or(i64::MAX)
            .max(1000);
        b = b.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(bad)?,
        );
    }
    if let Some(max) = r.pids {
        b = b.pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(max).unwrap_or(i64::MAX))
                .build()
                .map_err(bad)?,
        );
    }
    b.build().map_err(bad)
}

/// The system calls the default filter refuses (`security::refused`), by number and by the
/// name libseccomp (under crun and runc) knows them by.
#[cfg(target_arch = "x86_64")]
const SYSCALL_NAMES: [(i64, &str); 52] = [
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_uselib, "uselib"),
    (libc::SYS_ustat, "ustat"),
    (libc::SYS_sysfs, "sysfs"),
    (libc::SYS__sysctl, "_sysctl"),
    (libc::SYS_nfsservctl, "nfsservctl"),
    (libc::SYS_lookup_dcookie, "lookup_dcookie"),
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_unshare, "unshare"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_fanotify_init, "fanotify_init"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_kcmp, "kcmp"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_mbind, "mbind"),
    (libc::SYS_set_mempolicy, "set_mempolicy"),
    (libc::SYS_move_pages, "move_pages"),
    (libc::SYS_migrate_pages, "migrate_pages"),
    (libc::SYS_iopl, "iopl"),
    (libc::SYS_ioperm, "ioperm"),
    (libc::SYS_vhangup, "vhangup"),
    (libc::SYS_syslog, "syslog"),
];

/// The default seccomp profile for capability set `caps`, the filter of
/// `security::filters` as OCI rules: everything allowed but the refused calls (EPERM, each
/// re-allowed by its capability), `clone` with a namespace flag (EPERM) and `clone3`
/// (ENOSYS, so libc falls back to `clone`) without CAP_SYS_ADMIN.
#[cfg(target_arch = "x86_64")]
fn seccomp(caps: u64) -> Result<LinuxSeccomp> {
    let bad = OciError::Spec;
    let has = |c: u8| caps & (1 << c) != 0;
    let errno = |names: Vec<String>, errno: i32| {
        LinuxSyscallBuilder::default()
            .names(names)
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno.unsigned_abs())
    };
    let mut refused = Vec::new();
    for (nr, unless) in security::refused() {
        if unless.is_some_and(has) {
            continue;
        }
        let name = SYSCALL_NAMES
            .iter()
            .find(|(n, _)| *n == nr)
            .ok_or(OciError::UnnamedSyscall(nr))?
            .1;
        refused.push(name.to_string());
    }
    let mut syscalls: Vec<LinuxSyscall> = vec![errno(refused, libc::EPERM).build().map_err(bad)?];
    if !has(security::cap::SYS_ADMIN) {
        for flag in security::NAMESPACE_FLAGS {
            let flag = u64::from(flag.unsigned_abs());
            // x86_64: clone(flags, stack, parent_tid, child_tid, tls); flags are arg 0
            let arg = LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(flag)
                .value_two(flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
                .map_err(bad)?;
            syscalls.push(
                errno(vec!["clone".into()], libc::EPERM)
                    .args(vec![arg])
                    .build()
                    .map_err(bad)?,
            );
        }
        syscalls.push(
            errno(vec!["clone3".into()], libc::ENOSYS)
                .build()
                .map_err(bad)?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(syscalls)
        .build()
        .map_err(bad)
}

/// No default profile for this architecture yet (as `security::filters`).
#[cfg(not(target_arch = "x86_64"))]
fn seccomp(_caps: u64) -> Result<oci_spec::runtime::LinuxSeccomp> {
    Err(OciError::NoSeccompProfile)
}

/// Every cgroup hierarchy mounted on the host, from `/proc/self/mountinfo`'s text: each v1
/// hierarchy (named ones too) and cgroup2, as `(name, mount point)`. An external runtime
/// makes a container's cgroup in all of them (rcompose's own runtime uses memory, cpu,
/// cpuacct and pids only), so a project's teardown passes these to
/// `cgroup::destroy_subtree` and `cgroup::remove_empty_parents`.
#[must_use]
pub fn hierarchies(mountinfo: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(mount_point), Some(fstype)) = (left.get(4), right.first()) else {
            continue;
        };
        let name = match *fstype {
            "cgroup2" => "unified".to_string(),
            "cgroup" => right
                .get(2)
                .and_then(|opts| {
                    opts.split(',')
                        .rfind(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                })
                .unwrap_or("cgroup")
                .to_string(),
            _ => continue,
        };
        out.push((name, PathBuf::from(mount_point)));
    }
    out
}

/// Whether the host has the hybrid layout (v1 controllers, cgroup2 at
/// `/sys/fs/cgroup/unified`), which crun refuses as soon as cgroup2 holds a controller.
fn hybrid_host() -> bool {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
    let is_cgroup2 = |p: &str| statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC);
    !is_cgroup2("/sys/fs/cgroup") && is_cgroup2("/sys/fs/cgroup/unified")
}

/// The command that runs `rt` with its state in `state_root` and its own log (JSON lines)
/// in `runtime_log`. On a hybrid host, crun runs in a mount namespace of its own where
/// `/sys/fs/cgroup/unified` is not mounted: it then takes the host for a v1 one instead of
/// refusing it (see the module documentation), and makes the container's cgroups where the
/// built-in runtime does. The container's own mount namespace is made from that one.
fn runtime_command(rt: &ExternalRuntime, state_root: &Path, runtime_log: &Path) -> Command {
    let mut cmd = Command::new(&rt.binary);
    cmd.env_clear()
        .env("PATH", init::DEFAULT_PATH)
        .arg("--root")
        .arg(state_root)
        .arg("--log")
        .arg(runtime_log)
        .arg("--log-format")
        .arg("json")
        .stdin(Stdio::null());
    if rt.kind == Kind::Crun && hybrid_host() {
        // SAFETY: the closure runs in the forked child before exec and makes only raw
        // system calls (unshare, mount, umount2) with static C strings: no allocation, no
        // lock, async-signal-safe as a child of a multi-threaded process requires.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // private first, or the unmount below would propagate to the host
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

/// How a runtime process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Exited with this code.
    Code(i32),
    /// Killed by a signal.
    Signal,
    /// Reaped by someone else (the supervisor's reaper): look at its results instead.
    Unknown,
}

/// Runs `cmd` (the runtime doing `action`) to its end, at most `timeout`. The runtime is a
/// child of this process, whose reaper thread (the supervisor's `waitpid(-1)`) may reap it
/// first: so it is waited for through a pidfd, never by pid (which could be reused by then),
/// and when its status is gone, [`Ended::Unknown`] says so.
fn run_to_end(
    rt: &ExternalRuntime,
    mut cmd: Command,
    action: &'static str,
    timeout: Duration,
) -> Result<Ended> {
    let wait_err = |source: io::Error| OciError::Wait {
        kind: rt.kind,
        action,
        source,
    };
    let child = cmd.spawn().map_err(|source| OciError::Exec {
        binary: rt.binary.clone(),
        source,
    })?;
    let pid = i32::try_from(child.id()).map_err(|e| wait_err(io::Error::other(e)))?;
    // never waited through `child`: see above
    drop(child);
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        // gone already (and reaped): it took no time at all, its results tell
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(Ended::Unknown)
        } else {
            Err(wait_err(e))
        };
    }
    let raw = i32::try_from(raw).map_err(|e| wait_err(io::Error::other(e)))?;
    // SAFETY: `raw` is the new pidfd, owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED);
            return Err(OciError::Timeout {
                kind: rt.kind,
                action,
                seconds: timeout.as_secs(),
            });
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => break,
            Err(e) => return Err(wait_err(e.into())),
        }
    }
    match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED) {
        Ok(WaitStatus::Exited(_, code)) => Ok(Ended::Code(code)),
        Ok(_) => Ok(Ended::Signal),
        Err(Errno::ECHILD) => Ok(Ended::Unknown),
        Err(e) => Err(wait_err(e.into())),
    }
}

/// The last error a runtime wrote to its JSON log (`{"level":"error","msg":...}` lines, as
/// both crun and runc write them).
fn last_error(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("level").and_then(|l| l.as_str()) == Some("error"))
        .find_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
}

/// The error of a runtime run that did not succeed.
fn failure(
    rt: &ExternalRuntime,
    action: &'static str,
    runtime_log: &Path,
    ended: Ended,
) -> OciError {
    let said = fs::read_to_string(runtime_log)
        .ok()
        .and_then(|text| last_error(&text));
    let message = said.unwrap_or_else(|| match ended {
        Ended::Code(code) => format!("it exited with status {code}"),
        Ended::Signal => "it was killed by a signal".into(),
        Ended::Unknown => "it exited without saying why".into(),
    });
    OciError::Runtime {
        kind: rt.kind,
        action,
        message,
    }
}

/// The overlay mounts of the container root, with the root itself at `root` (the bundle's
/// `rootfs/`) instead of over the container's directory as the built-in init mounts it in
/// the container's mount namespace: here it is mounted on the host, for the runtime.
fn bundle_mounts(rootfs: &RootfsSpec, root: &Path) -> Vec<OverlayMount> {
    let mut mounts = overlay_mounts(rootfs);
    if let Some(top) = mounts.last_mut() {
        top.target = root.to_path_buf();
    }
    mounts
}

/// Unmounts what [`spawn`] mounted below the bundle `dir` (the root, then the host-root base
/// layer). Missing mounts are fine.
fn unmount_bundle(dir: &Path) -> Result<()> {
    for target in [dir.join("rootfs"), dir.join("base")] {
        // a mount may be stacked more than once after a crash between spawns
        for _ in 0..16 {
            match umount2(&target, MntFlags::MNT_DETACH) {
                Ok(()) => {}
                Err(Errno::EINVAL | Errno::ENOENT) => break,
                Err(e) => {
                    return Err(OciError::Unmount {
                        path: target,
                        source: e.into(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Opens `rel` inside the container root `root_fd` (symlinks resolve inside the root, as
/// they would after pivot_root; openat2(2) `RESOLVE_IN_ROOT`, Linux 5.6).
fn open_in_root(root_fd: &OwnedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    openat2(
        root_fd,
        rel,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
}

/// A command without a `/` must be an executable file in one of the container's `PATH`
/// directories (the image's, symlinks resolved inside the root): checked before the runtime
/// starts, so a missing program fails as with the built-in runtime, naming it.
fn check_command(root: &Path, config: &ContainerConfig) -> Result<()> {
    let Some(program) = config.command.first() else {
        return Err(OciError::Rootfs("the container has no command".into()));
    };
    if program.contains('/') || program.is_empty() {
        return Ok(());
    }
    let Ok(root_fd) = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        // the runtime will say what is wrong with the root
        return Ok(());
    };
    let path = config
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(init::DEFAULT_PATH, |(_, v)| v.as_str());
    let found = path.split(':').filter(|d| !d.is_empty()).any(|dir| {
        let rel = format!("{}/{program}", dir.trim_start_matches('/'));
        open_in_root(&root_fd, &rel, OFlag::O_PATH)
            .ok()
            .and_then(|fd| nix::sys::stat::fstat(&fd).ok())
            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0)
    });
    if found {
        Ok(())
    } else {
        Err(OciError::NotFound(program.clone()))
    }
}

/// Resolves `spec` (`user:`) against the image's /etc/passwd and /etc/group in the mounted
/// root `root` (bounded reads of regular files, as the built-in init does after its pivot).
fn resolve_user(root: &Path, spec: &str) -> Result<User> {
    let fail = |message: String| OciError::User {
        user: spec.to_string(),
        message,
    };
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("cannot open the container root: {}", e.desc())))?;
    let read = |rel: &str| -> std::result::Result<String, String> {
        let shown = format!("/{rel}");
        match open_in_root(&root_fd, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
            Ok(fd) => user::read_opened(File::from(fd), &shown),
            Err(Errno::ENOENT) => Ok(String::new()),
            Err(e) => Err(format!("cannot open `{shown}`: {}", e.desc())),
        }
    };
    let passwd = read("etc/passwd").map_err(fail)?;
    let group = read("etc/group").map_err(fail)?;
    user::resolve(spec, &passwd, &group).map_err(fail)
}

/// Writes the image's /etc/hostname and /etc/hosts, as the built-in init does (best effort:
/// an image without /etc gets none), replacing rather than writing through a symlink.
fn write_etc(root: &Path, hostname: &str) {
    let Ok(root_fd) = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let Ok(etc) = open_in_root(&root_fd, "etc", OFlag::O_PATH | OFlag::O_DIRECTORY) else {
        return;
    };
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    for (name, content) in [("hostname", format!("{hostname}\n")), ("hosts", hosts)] {
        let _ = unlinkat(&etc, name, UnlinkatFlags::NoRemoveDir);
        if let Ok(fd) = openat(
            &etc,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        ) {
            let _ = File::from(fd).write_all(content.as_bytes());
        }
    }
}

/// Replaces `target` (absolute, in the container) by an empty file when the image has it
/// as a symbolic link (the link itself goes, in the container's upper layer), as the
/// built-in init does for a [`super::Mount::replace`] mount. Best effort: a missing
/// directory on the way is left to the mount's own checks.
fn replace_link(root: &Path, target: &str) {
    let rel = target.trim_start_matches('/');
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let Ok(root_fd) = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let dir = if parent.is_empty() {
        Ok(root_fd)
    } else {
        open_in_root(&root_fd, parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
    };
    let Ok(dir) = dir else { return };
    let is_link = nix::sys::stat::fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
    if is_link && unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir).is_ok() {
        let _ = openat(
            &dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        );
    }
}

/// The first component of `target` (absolute, in the container) that is a symbolic link
/// below `root`, as a path relative to the root.
fn symlink_on_the_way(root: &Path, target: &str) -> Option<String> {
    let mut rel = PathBuf::new();
    for part in target.split('/').filter(|p| !p.is_empty()) {
        rel.push(part);
        match fs::symlink_metadata(root.join(&rel)) {
            Ok(m) if m.file_type().is_symlink() => return Some(rel.display().to_string()),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Creates the directories of the bundle that must exist before mounting.
fn create_dirs(rootfs: &RootfsSpec, root: &Path) -> Result<()> {
    for dir in dirs_to_create(rootfs)
        .into_iter()
        .chain([root.to_path_buf()])
    {
        fs::create_dir_all(&dir).map_err(|source| OciError::CreateDir { path: dir, source })?;
    }
    Ok(())
}

/// Starts the container `config` with the external runtime `rt` and returns the host pid of
/// its first process (the command: the runtime has no init of its own in the container).
///
/// The bundle is `config.rootfs.dir`, the container's directory: its overlay root is mounted
/// at `<dir>/rootfs` on the host (volatile, as the built-in runtime's), `config.json` (from
/// [`spec`]), `pid` and the runtime's own log `runtime.log` are written next to it. With
/// `create_netns`, the pod's namespaces and /dev/shm are made first and pinned there (the
/// pod's first container; see `netns::enter_new`, run on a thread of its own). The runtime
/// keeps its state in `state_root`, puts the container in cgroup `cgroup` (below every
/// hierarchy root, e.g. `rcompose/<project>/<pod-N>/<container>`) with `resources` as its
/// limits, and gets `log` as the container's stdout and stderr (stdin is /dev/null).
///
/// The caller must be a child subreaper (`super::become_subreaper`): `run --detach` leaves
/// the container's process to it, which reaps it. On failure nothing of the container is
/// left but the pod's namespaces.
#[allow(clippy::too_many_arguments)] // each is one fact of this start; a struct would only rename them
pub fn spawn(
    rt: &ExternalRuntime,
    state_root: &Path,
    id: &str,
    config: &ContainerConfig,
    resources: &Resources,
    log: OwnedFd,
    cgroup: &str,
    create_netns: Option<&Path>,
) -> Result<Started> {
    let dir = config.rootfs.dir.clone();
    let root = dir.join("rootfs");
    create_dirs(&config.rootfs, &root)?;
    fs::create_dir_all(state_root).map_err(|source| OciError::CreateDir {
        path: state_root.to_owned(),
        source,
    })?;
    if let Some(ns) = create_netns {
        // `enter_new` moves the calling thread into the new namespaces: a thread of its own
        std::thread::scope(|s| s.spawn(|| netns::enter_new(ns)).join()).map_err(|_| {
            NetnsError::Create {
                path: ns.to_owned(),
                source: io::Error::other("the namespace thread panicked"),
            }
        })??;
    }
    // a root left mounted by an earlier start that was never removed would stay under
    // this one
    unmount_bundle(&dir)?;
    for m in bundle_mounts(&config.rootfs, &root) {
        if let Err(message) = init::mount_layers(m) {
            let _ = unmount_bundle(&dir);
            return Err(OciError::Rootfs(message));
        }
    }
    let started = start(
        rt, state_root, id, config, resources, log, cgroup, &dir, &root,
    );
    if started.is_err() {
        let _ = remove(rt, state_root, id, &dir);
    }
    started
}

/// [`spawn`] once the root is mounted.
#[allow(clippy::too_many_arguments)]
fn start(
    rt: &ExternalRuntime,
    state_root: &Path,
    id: &str,
    config: &ContainerConfig,
    resources: &Resources,
    log: OwnedFd,
    cgroup: &str,
    dir: &Path,
    root: &Path,
) -> Result<Started> {
    let user = match &config.user {
        Some(spec) => resolve_user(root, spec)?,
        None => User {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: None,
        },
    };
    // files the image may have as links (`/etc/hosts`): a file to mount on instead
    for m in config.mounts.iter().filter(|m| m.replace) {
        replace_link(root, &m.target);
    }
    // as the built-in runtime: a mount target through a symlink of the image is refused
    // (crun and runc would resolve it inside the root; refusing keeps both runtimes alike)
    for m in &config.mounts {
        if let Some(rel) = symlink_on_the_way(root, &m.target) {
            return Err(OciError::Rootfs(format!(
                "refusing to mount on `{}`: `/{rel}` is a symbolic link in the image",
                m.target
            )));
        }
    }
    check_command(root, config)?;
    write_etc(root, &config.hostname);
    let spec = spec(
        config,
        resources,
        &user,
        Path::new("rootfs"),
        cgroup,
        &HostFacts::probe(),
    )?;
    let write = |path: PathBuf, bytes: &[u8]| {
        fs::write(&path, bytes).map_err(|source| OciError::Write { path, source })
    };
    write(dir.join("config.json"), &config_json(&spec)?)?;
    let pid_file = dir.join("pid");
    let runtime_log = dir.join("runtime.log");
    let _ = fs::remove_file(&pid_file);
    write(runtime_log.clone(), b"")?;
    let log2 = log.try_clone().map_err(|source| OciError::Write {
        path: dir.join("log"),
        source,
    })?;
    let mut cmd = runtime_command(rt, state_root, &runtime_log);
    cmd.arg("run")
        .arg("--detach")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--bundle")
        .arg(dir)
        .arg(id)
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    let ended = run_to_end(rt, cmd, "run", START_TIMEOUT)?;
    let pid = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    match (ended, pid) {
        (Ended::Code(0) | Ended::Unknown, Some(pid)) => {
            wait_adopted(pid, Duration::from_secs(2));
            Ok(Started { pid, tty: None })
        }
        (ended, _) => Err(failure(rt, "run", &runtime_log, ended)),
    }
}

/// `config.json`'s text, with the capability sets (hash sets in oci-spec) sorted, so the
/// same container always gets the same file.
fn config_json(spec: &Spec) -> Result<Vec<u8>> {
    let bad = |e: serde_json::Error| OciError::Spec(e.into());
    let mut value = serde_json::to_value(spec).map_err(bad)?;
    if let Some(sets) = value
        .pointer_mut("/process/capabilities")
        .and_then(serde_json::Value::as_object_mut)
    {
        for set in sets.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    serde_json::to_vec_pretty(&value).map_err(bad)
}

/// Waits until the container's process `pid` is this process's child: crun's process that
/// forked it may outlive `crun run` by a moment, and until it exits, the container is not
/// re-parented to the caller (the subreaper), which could not wait for it yet. Gives up
/// after `timeout` (the re-parenting still comes when that process exits), or when `pid`
/// is gone (exited and reaped already).
fn wait_adopted(pid: i32, timeout: Duration) {
    let me = std::process::id();
    let stat = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let Ok(text) = fs::read_to_string(&stat) else {
            return;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses
        let parent = text
            .rfind(')')
            .and_then(|i| text[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(me) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Deletes the container `id` (`<rt> --root state_root delete --force id`, which kills it
/// and removes its cgroups and its state) and unmounts the root of its bundle `dir`.
/// Idempotent: a container already gone, or never started, is fine.
pub fn remove(rt: &ExternalRuntime, state_root: &Path, id: &str, dir: &Path) -> Result<()> {
    // both runtimes keep a container's state in `<root>/<id>/`
    let state = state_root.join(id);
    if state.exists() {
        // the runtime cannot start without its log file: a bundle already removed gets none
        let runtime_log = if dir.is_dir() {
            dir.join("runtime.log")
        } else {
            PathBuf::from("/dev/null")
        };
        let mut cmd = runtime_command(rt, state_root, &runtime_log);
        cmd.args(["delete", "--force"])
            .arg(id)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let ended = run_to_end(rt, cmd, "delete", START_TIMEOUT)?;
        if state.exists() {
            return Err(failure(rt, "delete", &runtime_log, ended));
        }
    }
    unmount_bundle(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Mount as Volume;

    const DEFAULT: u64 = 0xa804_25fb;

    fn config() -> ContainerConfig {
        ContainerConfig {
            name: "web-1/app".into(),
            hostname: "web-1".into(),
            rootfs: RootfsSpec {
                host: true,
                lowers: Vec::new(),
                dir: PathBuf::from("/run/rcompose/p/c/web-1/app"),
            },
            netns: Some(PathBuf::from("/run/rcompose/p/netns.web-1")),
            command: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec![("PATH".into(), "/bin".into()), ("A".into(), "1".into())],
            working_dir: Some("/srv".into()),
            user: None,
            init: None,
            privileged: false,
            capabilities: DEFAULT,
            mounts: vec![
                Volume {
                    source: Some(PathBuf::from("/data")),
                    target: "/data".into(),
                    read_only: true,
                    size: None,
                    replace: false,
                },
                Volume {
                    source: None,
                    target: "/cache".into(),
                    read_only: false,
                    size: Some(1024),
                    replace: false,
                },
            ],
            read_only: true,
            tty: false,
        }
    }

    const HOST: HostFacts = HostFacts {
        bounding: (1 << 41) - 1,
        swap_limit: true,
    };

    fn root() -> User {
        User {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: None,
        }
    }

    fn json(cfg: &ContainerConfig, user: &User, limits: &Resources) -> serde_json::Value {
        let spec = spec(
            cfg,
            limits,
            user,
            Path::new("rootfs"),
            "rcompose/p/web-1/app",
            &HOST,
        )
        .unwrap();
        serde_json::to_value(&spec).unwrap()
    }

    fn strings(v: &serde_json::Value) -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn kinds_parse_and_print_their_names() {
        assert_eq!("crun".parse::<Kind>().unwrap(), Kind::Crun);
        assert_eq!("runc".parse::<Kind>().unwrap().to_string(), "runc");
        assert_eq!(
            "youki".parse::<Kind>().unwrap_err().to_string(),
            "unknown runtime `youki` (expected `crun` or `runc`)"
        );
    }

    #[test]
    fn a_runtime_missing_from_path_is_named() {
        let err =
            ExternalRuntime::find_in(Kind::Runc, OsStr::new("/nonexistent:relative")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "runtime `runc` is not installed (not found in PATH)"
        );
    }

    #[test]
    fn spec_joins_the_pods_namespaces_and_owns_mount_and_pid() {
        let v = json(&config(), &root(), &Resources::default());
        assert_eq!(
            v["linux"]["namespaces"],
            serde_json::json!([
                {"type": "mount"},
                {"type": "pid"},
                {"type": "network", "path": "/run/rcompose/p/netns.web-1"},
                {"type": "ipc", "path": "/run/rcompose/p/netns.web-1.ipc"},
                {"type": "uts", "path": "/run/rcompose/p/netns.web-1.uts"},
            ])
        );
        assert_eq!(v["linux"]["cgroupsPath"], "/rcompose/p/web-1/app");
        assert_eq!(v["hostname"], "web-1");
        assert_eq!(
            v["root"],
            serde_json::json!({"path": "rootfs", "readonly": true})
        );
        let mut alone = config();
        alone.netns = None;
        let v = json(&alone, &root(), &Resources::default());
        assert_eq!(
            v["linux"]["namespaces"],
            serde_json::json!([{"type": "mount"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}])
        );
    }

    #[test]
    fn spec_mounts_follow_the_builtin_order_then_the_volumes() {
        let v = json(&config(), &root(), &Resources::default());
        let mounts = v["mounts"].as_array().unwrap();
        let dest: Vec<&str> = mounts
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dest,
            [
                "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/tmp", "/run", "/data", "/cache"
            ]
        );
        assert_eq!(mounts[4]["source"], "/run/rcompose/p/netns.web-1.shm");
        assert_eq!(
            mounts[7]["options"],
            serde_json::json!(["rbind", "ro", "nosuid", "nodev"])
        );
        assert_eq!(
            mounts[8]["options"],
            serde_json::json!(["nosuid", "nodev", "mode=1777", "size=1024"])
        );
    }

    #[test]
    fn spec_process_has_the_builtin_environment_and_no_rlimits() {
        let v = json(&config(), &root(), &Resources::default());
        let p = &v["process"];
        assert_eq!(p["args"], serde_json::json!(["sh", "-c", "true"]));
        assert_eq!(
            p["env"],
            serde_json::json!(["PATH=/bin", "HOSTNAME=web-1", "HOME=/root", "A=1"])
        );
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(
            p["user"],
            serde_json::json!({"uid": 0, "gid": 0, "umask": 18})
        );
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["rlimits"], serde_json::json!([]));
        assert_eq!(p["terminal"], false);
    }

    #[test]
    fn a_user_gets_its_groups_and_home_but_no_capabilities_beyond_the_bounding_set() {
        let mut cfg = config();
        cfg.user = Some("app".into());
        let user = User {
            uid: 1000,
            gid: 1000,
            groups: vec![4, 50],
            home: Some("/home/app".into()),
        };
        let v = json(&cfg, &user, &Resources::default());
        let p = &v["process"];
        assert_eq!(
            p["user"],
            serde_json::json!({"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [1000, 4, 50]})
        );
        assert!(strings(&p["env"]).contains(&"HOME=/home/app".to_string()));
        let caps = &p["capabilities"];
        assert_eq!(strings(&caps["bounding"]).len(), 14);
        for set in ["effective", "permitted", "inheritable", "ambient"] {
            assert_eq!(caps[set], serde_json::json!([]), "{set}");
        }
    }

    #[test]
    fn root_keeps_the_configured_capabilities_limited_by_the_hosts() {
        let v = json(&config(), &root(), &Resources::default());
        let caps = &v["process"]["capabilities"];
        let default = strings(&caps["bounding"]);
        assert_eq!(default.len(), 14);
        assert!(default.contains(&"CAP_NET_BIND_SERVICE".to_string()));
        assert!(!default.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(strings(&caps["effective"]), default);
        assert_eq!(strings(&caps["permitted"]), default);
        let mut cfg = config();
        cfg.privileged = true;
        let host = HostFacts {
            bounding: ((1 << 41) - 1) & !(1 << 24),
            swap_limit: true,
        };
        let spec = spec(
            &cfg,
            &Resources::default(),
            &root(),
            Path::new("rootfs"),
            "x",
            &host,
        )
        .unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        let all = strings(&v["process"]["capabilities"]["effective"]);
        assert_eq!(all.len(), 40);
        assert!(!all.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert_eq!(v["process"]["noNewPrivileges"], false);
        assert!(v["linux"]["seccomp"].is_null());
        assert_eq!(v["linux"]["maskedPaths"], serde_json::json!([]));
    }

    #[test]
    fn every_capability_has_an_oci_name() {
        for c in caps::all() {
            assert!(oci_capability(c).is_some(), "{c}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn seccomp_profile_is_the_builtin_filter() {
        let v = json(&config(), &root(), &Resources::default());
        let s = &v["linux"]["seccomp"];
        assert_eq!(s["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = s["syscalls"].as_array().unwrap();
        assert_eq!(rules[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(rules[0]["errnoRet"], 1);
        assert_eq!(
            rules[0]["names"].as_array().unwrap().len(),
            security::refused().len()
        );
        // one rule per namespace flag of clone, then clone3
        assert_eq!(rules.len(), 1 + security::NAMESPACE_FLAGS.len() + 1);
        assert_eq!(
            rules[1]["args"],
            serde_json::json!([{"index": 0, "value": 0x20000, "valueTwo": 0x20000, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        assert_eq!(
            rules.last().unwrap()["names"],
            serde_json::json!(["clone3"])
        );
        assert_eq!(rules.last().unwrap()["errnoRet"], 38);
        // CAP_SYS_ADMIN lifts mount and friends, and the clone rules
        let mut admin = config();
        admin.capabilities |= 1 << 21;
        let v = json(&admin, &root(), &Resources::default());
        let rules = v["linux"]["seccomp"]["syscalls"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert!(!strings(&rules[0]["names"]).contains(&"mount".to_string()));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_refused_syscall_has_a_name() {
        for (nr, _) in security::refused() {
            assert!(SYSCALL_NAMES.iter().any(|(n, _)| *n == nr), "{nr}");
        }
    }

    #[test]
    fn resources_are_the_builtin_limits() {
        let limits = Resources {
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            pids: Some(50),
        };
        let v = json(&config(), &root(), &limits);
        let r = &v["linux"]["resources"];
        assert_eq!(
            r["cpu"],
            serde_json::json!({"quota": 50000, "period": 100_000})
        );
        assert_eq!(
            r["memory"],
            serde_json::json!({"limit": 67_108_864, "swap": 67_108_864})
        );
        assert_eq!(r["pids"], serde_json::json!({"limit": 50}));
        assert_eq!(
            r["devices"][0],
            serde_json::json!({"allow": false, "access": "rwm"})
        );
        let none = json(&config(), &root(), &Resources::default());
        assert!(none["linux"]["resources"]["memory"].is_null());
    }

    #[test]
    fn a_container_without_command_is_refused() {
        let mut cfg = config();
        cfg.command.clear();
        let err = spec(
            &cfg,
            &Resources::default(),
            &root(),
            Path::new("rootfs"),
            "x",
            &HOST,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "the container has no command");
    }

    #[test]
    fn the_bundle_root_is_mounted_at_rootfs() {
        let cfg = config();
        let root = cfg.rootfs.dir.join("rootfs");
        let m = bundle_mounts(&cfg.rootfs, &root);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].target, root);
        assert_eq!(m[0].upper, cfg.rootfs.dir.join("upper"));
    }

    #[test]
    fn the_last_error_of_a_runtime_log_is_its_message() {
        let log = "{\"level\":\"warning\",\"msg\":\"w\"}\n\
                   {\"level\":\"error\",\"msg\":\"first\"}\n\
                   not json\n\
                   {\"msg\":\"exec: \\\"x\\\": not found\",\"level\":\"error\"}\n";
        assert_eq!(last_error(log).unwrap(), "exec: \"x\": not found");
        assert_eq!(last_error(""), None);
    }

    #[test]
    fn hierarchies_lists_every_cgroup_mount() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            hierarchies(mountinfo),
            [
                ("cpu", "/sys/fs/cgroup/cpu"),
                ("devices", "/sys/fs/cgroup/devices"),
                ("name=systemd", "/sys/fs/cgroup/systemd"),
                ("unified", "/sys/fs/cgroup/unified"),
            ]
            .map(|(n, p)| (n.to_string(), PathBuf::from(p)))
        );
    }
}
