//! The container side: `rcompose __init CONFIG`, run by [`super::spawn`] as a fresh,
//! single-threaded process (the `runc init` pattern, so no Rust code ever runs between fork
//! and exec of the multi-threaded supervisor).
//!
//! Sequence: [create the pod's network namespace] -> wait (for the "go" byte on fd 0) until
//! the supervisor has made the container's cgroup and written the config -> join the cgroup
//! -> join the pod's network namespace -> unshare mount, pid, uts and ipc namespaces -> fork. The parent reports the child's pid on
//! the channel and exits. The child is PID 1 of the new pid namespace: it mounts the
//! overlay root, `/proc`, read-only `/sys`, a minimal `/dev`, tmpfs `/tmp` and `/run`, sets
//! the hostname, pivots into the root, forks the user's command, reports it, and replaces
//! itself with the tiny `rcompose-init` (or, without it, stays the init itself): forward
//! signals, reap zombies, exit with the command's exit code (128 + n after signal n).
//!
//! Channel protocol (fd 0, a Unix socket pair with the supervisor): the supervisor sends one
//! byte ("go"); then one line per message back: `pid N`, then `started` or `error MESSAGE`.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, chdir, execve, fork, pipe2, pivot_root, sethostname, setsid};

use super::rootfs::{OverlayMount, overlay_mounts};
use super::{ContainerConfig, security};

/// The helper's channel to the supervisor: its stdin, one end of a Unix socket pair. The
/// supervisor writes the "go" byte on it; the helper and the init write their status lines.
pub const CHANNEL_FD: i32 = 0;

/// PATH used when the container's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Signals the init forwards to the command (and the `rcompose exec` helper to its command).
pub(super) const FORWARDED: [Signal; 9] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
];

/// A failed setup step, reported on the status pipe and in the container's log.
struct Failed(String);

impl<S: AsRef<str>, E: std::fmt::Display> From<(S, E)> for Failed {
    fn from((what, e): (S, E)) -> Self {
        Failed(format!("{}: {e}", what.as_ref()))
    }
}

/// Runs the helper from its arguments, `CONFIG [--create-netns PATH] [TASKS_FILE...]` (what
/// follows `rcompose __init`, or what the fork server received).
pub fn main_with_args(args: &[std::ffi::OsString]) -> ExitCode {
    main_with_args_as(args, false)
}

/// [`main_with_args`] in a process that already is PID 1 of the container's new pid
/// namespace (cloned so by the fork server, see `super::forkserver`): it becomes the
/// container's init itself instead of forking one.
pub fn main_with_args_as(args: &[std::ffi::OsString], pid1: bool) -> ExitCode {
    let Some(config) = args.first() else {
        return ExitCode::from(2);
    };
    let mut rest = &args[1..];
    let mut create_netns = None;
    if rest.first().is_some_and(|a| a == "--create-netns") && rest.len() >= 2 {
        create_netns = Some(PathBuf::from(&rest[1]));
        rest = &rest[2..];
    }
    let join: Vec<PathBuf> = rest.iter().map(PathBuf::from).collect();
    run(Path::new(config), create_netns.as_deref(), &join, pid1)
}

/// Entry point of the hidden `__init` mode:
/// `rcompose __init CONFIG [--create-netns PATH] [TASKS_FILE...]`. For a pod's first
/// container, the helper first creates the pod's network namespace, while the supervisor
/// makes the container's cgroup and writes the config; once told to go on, it moves itself
/// into the cgroups whose v1 `tasks` files are given.
pub fn main(config: &Path, create_netns: Option<&Path>, join: &[PathBuf]) -> ExitCode {
    run(config, create_netns, join, false)
}

fn run(config: &Path, create_netns: Option<&Path>, join: &[PathBuf], pid1: bool) -> ExitCode {
    // Descriptors the supervisor's caller left open without FD_CLOEXEC (a shell's, say) must
    // not reach the container: keep only stdin (the channel), stdout and stderr (the log).
    close_inherited_fds(3);
    // SAFETY: fd 0 is the socket `spawn` gave as stdin, and nothing else in this fresh
    // process owns it.
    let mut status = unsafe { File::from_raw_fd(CHANNEL_FD) };
    // The user's command must not inherit the channel, or the supervisor would not see EOF
    // until the command exits (it gets /dev/null as stdin instead).
    let _ = nix::fcntl::fcntl(
        &status,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // The pod's network namespace belongs to the pod, not to this container (it outlives
    // the container's restarts), so it is made before joining the container's cgroup, and
    // at the same time as the supervisor makes that cgroup.
    if let Some(ns) = create_netns
        && let Err(e) = super::netns::enter_new(ns)
    {
        let mut text = e.to_string();
        if let Some(cause) = std::error::Error::source(&e) {
            text.push_str(&format!(": {cause}"));
        }
        report_error(&mut status, &text);
        return ExitCode::from(1);
    }
    // Wait for the supervisor: it makes the container's cgroup and writes the config
    // meanwhile (see `super::spawn`).
    let mut byte = [0u8; 1];
    if !matches!(status.read(&mut byte), Ok(1)) {
        // the supervisor gave up: leave quietly, its error is reported there
        return ExitCode::SUCCESS;
    }
    // Join the container's cgroups before anything else, so that everything forked from
    // here on is accounted: `0` moves the writing thread, and this process has only one.
    for tasks in join {
        if let Err(e) = fs::write(tasks, "0") {
            report_error(
                &mut status,
                &format!("failed to join cgroup `{}`: {e}", tasks.display()),
            );
            return ExitCode::from(1);
        }
    }
    match helper(config, create_netns.is_none(), pid1, &mut status) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(msg)) => {
            report_error(&mut status, &msg);
            ExitCode::from(1)
        }
    }
}

/// Closes every file descriptor from `first` up (close_range(2), Linux 5.9; on older kernels
/// each open descriptor listed in /proc/self/fd).
pub fn close_inherited_fds(first: u32) {
    // SAFETY: close_range only closes descriptors; none at or above `first` is in use by
    // this single-threaded process at this point (callers run it before opening anything).
    let done = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) } == 0;
    if done {
        return;
    }
    let open: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open
        .into_iter()
        .filter(|&fd| fd >= i32::try_from(first).unwrap_or(i32::MAX))
    {
        let _ = nix::unistd::close(fd);
    }
}

/// Writes one status line with a single write(2): the helper and the init share the channel
/// and write concurrently, and `writeln!` on an unbuffered `File` may split a line into
/// several writes that the other process's line could land between.
fn send(status: &mut File, line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line.lines().next().unwrap_or(""));
    buf.push('\n');
    let _ = status.write_all(buf.as_bytes());
}

/// Opens the container's terminal (in its devpts, 80x24 as Docker's), makes its slave this
/// process's stdout and stderr (the command inherits them; the log pipe is closed here) and
/// sends its master to the supervisor with a `tty` line, which reads the log from it.
fn give_terminal(status: &mut File) -> Result<(), Failed> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let (master, slave) =
        super::exec::open_pty(super::exec::WindowSize { rows: 24, cols: 80 }).map_err(Failed)?;
    for fd in [1, 2] {
        // SAFETY: dup2 of a descriptor this process owns onto a standard one.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(Failed(format!(
                "failed to set up the terminal: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    drop(slave);
    let fds = [master.as_raw_fd()];
    let line = b"tty\n";
    let iov = [std::io::IoSlice::new(line)];
    sendmsg::<()>(
        status.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| ("failed to send the terminal to the supervisor", e))?;
    Ok(())
}

fn report_error(status: &mut File, msg: &str) {
    send(status, &format!("error {msg}"));
    eprintln!("rcompose: {msg}");
}

fn helper(config: &Path, join_netns: bool, pid1: bool, status: &mut File) -> Result<(), Failed> {
    let raw = fs::read(config).map_err(|e| ("failed to read the container config", e))?;
    let cfg: ContainerConfig =
        serde_json::from_slice(&raw).map_err(|e| ("invalid container config", e))?;
    // Leave the supervisor's session: a Ctrl-C on its terminal must not reach containers,
    // which are stopped in reverse dependency order by the supervisor instead.
    let _ = setsid();
    // The pod's network, IPC and UTS namespaces: made by the pod's first container (see
    // `main`), joined by the others and by restarts. Mount and pid namespaces are the
    // container's own.
    let mut own = CloneFlags::CLONE_NEWNS;
    if !pid1 {
        own |= CloneFlags::CLONE_NEWPID;
    }
    match &cfg.netns {
        Some(net) if join_netns => {
            for (pin, flag, kind) in super::netns::PodPins::of(net).namespaces() {
                let f = File::open(pin).map_err(|e| {
                    (
                        format!(
                            "failed to open the pod's {kind} namespace `{}`",
                            pin.display()
                        ),
                        e,
                    )
                })?;
                setns(&f, flag)
                    .map_err(|e| (format!("failed to join the pod's {kind} namespace"), e))?;
            }
        }
        Some(_) => {}
        None => own |= CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
    }
    unshare(own).map_err(|e| ("failed to create namespaces", e))?;
    // Block the forwarded signals before the fork so none is lost before the init waits.
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| ("sigprocmask", e))?;
    if pid1 {
        // already PID 1 of its own pid namespace and the supervisor's child (the fork
        // server reported the pid): become the container's init here, one fork less
        let never = container_init(&cfg, status, &set)?;
        match never {}
    }
    // SAFETY: this process is single-threaded (a fresh exec of rcompose that started no
    // thread), so the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| ("fork", e))? {
        ForkResult::Parent { child } => {
            send(status, &format!("pid {child}"));
            Ok(())
        }
        ForkResult::Child => {
            let code = match container_init(&cfg, status, &set) {
                Ok(never) => match never {},
                Err(Failed(msg)) => {
                    report_error(status, &msg);
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

enum Never {}

fn container_init(cfg: &ContainerConfig, status: &mut File, set: &SigSet) -> Result<Never, Failed> {
    // opened before pivot_root, while the host path is reachable; closed by exec
    let tiny_init = cfg.init.as_ref().and_then(|p| {
        nix::fcntl::open(
            p,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
    });
    // the writable overlay's work directory, for the volatile marker (see below)
    let work = overlay_mounts(&cfg.rootfs)
        .into_iter()
        .find(|m| !m.read_only)
        .and_then(|m| {
            nix::fcntl::open(
                &m.work,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok()
        });
    setup_root(cfg)?;
    sethostname(&cfg.hostname).map_err(|e| ("failed to set the hostname", e))?;
    write_etc(cfg);
    if cfg.read_only {
        // the root mount only: /dev, /proc, tmpfs /tmp and /run and volumes keep their flags
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| ("failed to make the root read-only", e))?;
    }
    if cfg.tty {
        give_terminal(status)?;
    }
    let env = environment(cfg);
    // built here, installed by the command's process just before it execs
    let filters = if cfg.privileged {
        Vec::new()
    } else {
        security::filters(cfg.capabilities).map_err(Failed)?
    };
    let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ("pipe", e))?;
    // SAFETY: still single-threaded (see `helper`).
    let child = match unsafe { fork() }.map_err(|e| ("fork", e))? {
        ForkResult::Child => {
            drop(r);
            let err = exec_command(cfg, &env, &filters, Launch::Container { tty: cfg.tty });
            let mut w = File::from(w);
            let _ = w.write_all(err.as_bytes());
            // SAFETY: _exit is async-signal-safe and ends this child at once.
            unsafe {
                libc::_exit(if err.contains("permission denied") {
                    126
                } else {
                    127
                })
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(w);
    let mut msg = String::new();
    let _ = File::from(r).read_to_string(&mut msg);
    if !msg.is_empty() {
        report_error(status, &msg);
        // reap the failed child and leave with its code
        let code = match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => c,
            _ => 127,
        };
        std::process::exit(code);
    }
    send(status, "started");
    // Closing the channel gives the supervisor EOF. `status` (owned by `main`, which never
    // gets control back) is not closed twice: this process execs or exits from here on.
    let _ = nix::unistd::close(status.as_raw_fd());
    // fd 0 is free: open (without O_CLOEXEC) takes it, so the init's stdin is /dev/null
    let _ = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDONLY, Mode::empty())
        .map(std::os::fd::IntoRawFd::into_raw_fd);
    // The volatile overlay's marker (`work/incompat/volatile/dirty`) only makes a mount of
    // the same directories after a machine crash fail, and rcompose never mounts them again
    // after a crash (`up` and `down` remove them). Removed now, while the command runs, its
    // two directories are not left to the teardown, where each removal waits for the disk
    // on this machine (a discard); a restart's mount removes it first anyway.
    if let Some(work) = &work {
        use nix::unistd::{UnlinkatFlags, unlinkat};
        let _ = unlinkat(
            work,
            "work/incompat/volatile/dirty",
            UnlinkatFlags::NoRemoveDir,
        );
        let _ = unlinkat(work, "work/incompat/volatile", UnlinkatFlags::RemoveDir);
        let _ = unlinkat(work, "work/incompat", UnlinkatFlags::RemoveDir);
    }
    if let Some(fd) = tiny_init {
        // Become the tiny init: same process (still PID 1, still the command's parent, the
        // blocked signal mask and pending signals are kept), a few pages instead of a whole
        // Rust process image. If exec fails, stay the init ourselves.
        let argv = [
            c"rcompose-init".to_owned(),
            CString::new(child.to_string()).unwrap_or_default(),
        ];
        let envp: [CString; 0] = [];
        let _ = nix::unistd::execveat(&fd, c"", &argv, &envp, nix::fcntl::AtFlags::AT_EMPTY_PATH);
    }
    reap_loop(child, set)
}

/// Waits for signals: forwards them to the command, reaps zombies, and exits with the
/// command's status once it is gone.
fn reap_loop(child: nix::unistd::Pid, set: &SigSet) -> ! {
    loop {
        let Ok(sig) = set.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => {
                    std::process::exit(128 + s as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Which command [`exec_command`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Launch {
    /// The container's own: stdin is /dev/null, a missing working directory is created (as
    /// Docker's `run`); with `tty`, stdout (the terminal's slave) is also stdin and the
    /// controlling terminal.
    Container {
        /// Whether stdout is the container's terminal.
        tty: bool,
    },
    /// One of `rcompose exec` (see `super::exec`): the stdio it was given, with `tty` the
    /// terminal on them as its controlling terminal; a missing working directory is an
    /// error (as Docker's `exec`).
    Exec {
        /// Whether stdin is a terminal to make the controlling one.
        tty: bool,
    },
}

/// Runs in the command's process: resets the signal mask, starts a session, enters the
/// working directory and execs. Returns the error message when exec fails.
pub(super) fn exec_command(
    cfg: &ContainerConfig,
    env: &[(String, String)],
    filters: &[seccompiler::BpfProgram],
    launch: Launch,
) -> String {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    reset_signal_dispositions();
    // the caller's umask is not the container's business: start from Docker's 022
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    let _ = setsid();
    match launch {
        // stdin is the supervisor channel until here: the command reads /dev/null
        Launch::Container { tty: false } => match fs::File::open("/dev/null") {
            Ok(null) => {
                if let Err(e) = nix::unistd::dup2_stdin(&null) {
                    return format!("failed to set up stdin: {}", errno_text(e));
                }
            }
            Err(e) => return format!("failed to open /dev/null: {e}"),
        },
        Launch::Container { tty: true } => {
            // SAFETY: fd 1 is the terminal's slave (see `container_init`), open for the life
            // of this process; dup2 onto fd 0 replaces the supervisor channel.
            if unsafe { libc::dup2(1, 0) } < 0 {
                return format!(
                    "failed to set up stdin: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: as for `exec` below: fd 0 is the slave, this process leads a session.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
                return format!(
                    "failed to make the terminal the controlling one: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        Launch::Exec { tty: true } => {
            // SAFETY: TIOCSCTTY takes an integer (0: do not steal the terminal from another
            // session); fd 0 is the terminal's slave, and this process leads a new session.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
                return format!(
                    "failed to make the terminal the controlling one: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        Launch::Exec { tty: false } => {}
    }
    if let Some(dir) = &cfg.working_dir {
        // as Docker does, a working directory the image lacks is created (in the container's
        // own upper layer: this runs after pivot_root)
        if matches!(launch, Launch::Container { .. })
            && let Err(e) = fs::create_dir_all(dir)
        {
            return format!("failed to create working directory `{dir}`: {e}");
        }
        if let Err(e) = chdir(dir.as_str()) {
            return format!(
                "failed to enter working directory `{dir}`: {}",
                errno_text(e)
            );
        }
        // A working directory reached through a leaked file descriptor (`/proc/self/fd/N`,
        // runc CVE-2024-21626) would be outside the root: getcwd says `(unreachable)`.
        match std::env::current_dir() {
            Ok(cwd) if cwd.is_absolute() => {}
            _ => return format!("working directory `{dir}` is outside the container root"),
        }
    }
    let mut env = env.to_vec();
    // while this process still has CAP_SETPCAP (see `security` for the order)
    if !cfg.privileged
        && let Err(e) = security::limit_bounding_set(cfg.capabilities)
    {
        return e;
    }
    if let Some(spec) = &cfg.user {
        let user = match super::user::read_db("/etc/passwd").and_then(|passwd| {
            let group = super::user::read_db("/etc/group")?;
            super::user::resolve(spec, &passwd, &group)
        }) {
            Ok(u) => u,
            Err(e) => return format!("cannot run as user `{spec}`: {e}"),
        };
        if !cfg.env.iter().any(|(k, _)| k == "HOME")
            && let Some(home) = env.iter_mut().find(|(k, _)| k == "HOME")
        {
            home.1 = user.home.clone().unwrap_or_else(|| "/".into());
        }
        let mut groups: Vec<nix::unistd::Gid> = vec![nix::unistd::Gid::from_raw(user.gid)];
        groups.extend(user.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)));
        if let Err(e) = nix::unistd::setgroups(&groups) {
            return format!("cannot set the groups of user `{spec}`: {}", errno_text(e));
        }
        if let Err(e) = nix::unistd::setgid(nix::unistd::Gid::from_raw(user.gid)) {
            return format!("cannot switch to group {}: {}", user.gid, errno_text(e));
        }
        if let Err(e) = nix::unistd::setuid(nix::unistd::Uid::from_raw(user.uid)) {
            return format!("cannot switch to user {}: {}", user.uid, errno_text(e));
        }
    }
    let env = env.as_slice();
    let Some(program) = cfg.command.first() else {
        return "the container has no command".to_string();
    };
    if !cfg.privileged
        && let Err(e) =
            security::set_capabilities(cfg.capabilities).and_then(|()| security::apply(filters))
    {
        return e;
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let Some(resolved) = resolve(program, path) else {
        return format!("`{program}`: executable file not found in $PATH");
    };
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = cfg.command.iter().map(|a| to_c(a)).collect();
    let envp: Vec<CString> = env.iter().map(|(k, v)| to_c(&format!("{k}={v}"))).collect();
    let file = to_c(&resolved.to_string_lossy());
    match execve(&file, &argv, &envp) {
        Err(e) => format!("failed to run `{program}`: {}", errno_text(e)),
        Ok(never) => match never {},
    }
}

fn errno_text(e: Errno) -> String {
    e.desc().to_lowercase()
}

/// Sets every signal back to its default action. Ignored signals survive execve, and this
/// process inherits some (Rust's runtime ignores SIGPIPE; the fork server ignores SIGCHLD):
/// the command must start as it would from a shell, as under Docker.
fn reset_signal_dispositions() {
    /// The kernel's `struct sigaction` for rt_sigaction(2) on x86_64 and aarch64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid, fully initialized SIG_DFL action and no old
        // action to write; sigsetsize is 8, the kernel's.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &raw const default,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// Finds `program` in `path` as execvp does: names with a slash are taken as they are.
fn resolve(program: &str, path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The command's environment: defaults first, then the container's own variables.
pub(super) fn environment(cfg: &ContainerConfig) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        if let Some(e) = env.iter_mut().find(|(ek, _)| ek == k) {
            e.1 = v.to_string();
        } else {
            env.push((k.to_string(), v.to_string()));
        }
    };
    set("PATH", DEFAULT_PATH);
    set("HOSTNAME", &cfg.hostname);
    set("HOME", "/root");
    for (k, v) in &cfg.env {
        set(k, v);
    }
    env
}

/// The longest mount(2) data string: one page, with its terminating NUL.
const MAX_MOUNT_DATA: usize = 4095;

fn setup_root(cfg: &ContainerConfig) -> Result<(), Failed> {
    let err = |what: String| move |e: Errno| Failed(format!("{what}: {}", errno_text(e)));
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("failed to make mounts private".into()))?;
    for m in overlay_mounts(&cfg.rootfs) {
        mount_layers(m).map_err(Failed)?;
    }
    let root = cfg.rootfs.dir.clone();
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let fs_mount = |source: &str, target: &str, fstype: &str, flags: MsFlags, data: &str| {
        let dir = mount_point(&root, target)?;
        mount(
            Some(source),
            &dir,
            Some(fstype),
            flags,
            (!data.is_empty()).then_some(data),
        )
        .map_err(err(format!("failed to mount {fstype} at `{target}`")))
    };
    fs_mount("proc", "proc", "proc", nosuid, "")?;
    fs_mount("sysfs", "sys", "sysfs", nosuid | MsFlags::MS_RDONLY, "")?;
    fs_mount(
        "tmpfs",
        "dev",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "mode=755,size=65536k",
    )?;
    let dev = root.join("dev");
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let node = dev.join(name);
        mknod(
            &node,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(err(format!("failed to create /dev/{name}")))?;
        // mknod is subject to the umask
        let _ = fs::set_permissions(&node, fs::Permissions::from_mode(0o666));
    }
    fs_mount(
        "devpts",
        "dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    match &cfg.netns {
        // the pod's /dev/shm, shared by its containers like its IPC namespace
        Some(net) => {
            let shm = super::netns::PodPins::of(net).shm;
            let dir = mount_point(&root, "dev/shm")?;
            mount(
                Some(&shm),
                &dir,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(err(format!(
                "failed to mount the pod's /dev/shm `{}`",
                shm.display()
            )))?;
        }
        None => fs_mount("shm", "dev/shm", "tmpfs", nosuid, "mode=1777,size=65536k")?,
    }
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link)).map_err(|e| (format!("failed to create /dev/{link}"), e))?;
    }
    fs_mount(
        "tmpfs",
        "tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=1777",
    )?;
    fs_mount(
        "tmpfs",
        "run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=755",
    )?;
    for m in &cfg.mounts {
        mount_volume(&root, m)?;
    }
    // pivot_root(".", "."): the old root ends up stacked on the new one and is detached at
    // once (the runc way; no directory for the old root is needed).
    chdir(&root).map_err(err("failed to enter the root".into()))?;
    pivot_root(".", ".").map_err(err("pivot_root failed".into()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("failed to detach the old root".into()))?;
    chdir("/").map_err(err("chdir /".into()))?;
    if !cfg.privileged {
        security::mask_paths().map_err(Failed)?;
    }
    Ok(())
}

/// Mounts one overlay of a container root (see [`mount_overlay`]). mount(2) data is one
/// page: with many long layer paths, the layers are named by descriptors instead
/// (`/proc/self/fd/N`, 17 bytes each), held open for the mount only. Also used by
/// `super::oci` to mount an external runtime's bundle root on the host.
pub(super) fn mount_layers(mut m: OverlayMount) -> Result<(), String> {
    let err = |what: String| move |e: Errno| format!("{what}: {}", errno_text(e));
    let mut held = Vec::new();
    if m.data().len() + VOLATILE.len() > MAX_MOUNT_DATA {
        for lower in &mut m.lower {
            let fd = nix::fcntl::open(
                lower.as_path(),
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(err(format!("failed to open layer `{}`", lower.display())))?;
            *lower = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            held.push(fd);
        }
        if m.data().len() + VOLATILE.len() > MAX_MOUNT_DATA {
            return Err(format!(
                "{} layers are more than one overlay mount can stack",
                m.lower.len()
            ));
        }
    }
    mount_overlay(&m).map_err(err(format!(
        "failed to mount the overlay root at `{}`",
        m.target.display()
    )))
}

/// Mounts one of the container's volumes below `root` (before the pivot, so host paths
/// still resolve). The target is made (directories, or an empty file for a file source)
/// without following a symlink anywhere on the way, so an image cannot redirect a mount
/// outside its root.
fn mount_volume(root: &Path, m: &super::Mount) -> Result<(), Failed> {
    let err = |what: String| move |e: Errno| Failed(format!("{what}: {}", errno_text(e)));
    let rel = m.target.trim_start_matches('/');
    let source_is_file = m.source.as_ref().is_some_and(|s| !s.is_dir());
    let target = if source_is_file {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir = if parent.is_empty() {
            root.to_path_buf()
        } else {
            mount_point(root, parent)?
        };
        let file = dir.join(name);
        match fs::symlink_metadata(&file) {
            // the link itself goes (not what it points at): `dir` was reached without
            // following any
            Ok(meta) if meta.file_type().is_symlink() && m.replace => {
                fs::remove_file(&file)
                    .and_then(|()| File::create(&file))
                    .map_err(|e| (format!("failed to replace `{}`", m.target), e))?;
            }
            Ok(meta) if meta.file_type().is_symlink() || meta.is_dir() => {
                return Err(Failed(format!(
                    "cannot mount the file `{}` on `{}`: it is a {} in the image",
                    m.source
                        .as_ref()
                        .map_or_else(String::new, |s| s.display().to_string()),
                    m.target,
                    if meta.is_dir() {
                        "directory"
                    } else {
                        "symbolic link"
                    }
                )));
            }
            Ok(_) => {}
            Err(_) => {
                File::create(&file).map_err(|e| (format!("failed to create `{}`", m.target), e))?;
            }
        }
        file
    } else {
        mount_point(root, rel)?
    };
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let ro = if m.read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    match &m.source {
        Some(source) => {
            mount(
                Some(source),
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(err(format!(
                "failed to bind `{}` on `{}`",
                source.display(),
                m.target
            )))?;
            if m.read_only {
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro | nosuid,
                    None::<&str>,
                )
                .map_err(err(format!("failed to make `{}` read-only", m.target)))?;
            }
        }
        None => {
            let data = match m.size {
                Some(size) => format!("mode=1777,size={size}"),
                None => "mode=1777".to_owned(),
            };
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                nosuid | ro,
                Some(data.as_str()),
            )
            .map_err(err(format!("failed to mount a tmpfs on `{}`", m.target)))?;
        }
    }
    Ok(())
}

/// The option that makes a writable overlay volatile, as appended to its mount data.
const VOLATILE: &str = ",volatile";

/// Mounts one overlay of the container root. A writable one is mounted `volatile` (Linux
/// 5.10): overlayfs then never syncs its upper file system, whereas without the option the
/// last unmount, when the container's mount namespace goes away at its exit, runs
/// `sync_filesystem` on the file system holding `upper/` (the host's, under `/run/rcompose`):
/// it writes back every dirty page of that whole file system and flushes the disk, which
/// made each container exit wait for unrelated writers on the host (0.5 to 1 ms on a quiet
/// machine here, tens to hundreds of milliseconds during a build). What volatile gives up is
/// durability of the upper layer across a machine crash, which rcompose never offers: a
/// project's directories never outlive `down`, and `up` after a crash removes them first.
/// Kernels without the option (EINVAL) get a plain mount.
fn mount_overlay(m: &OverlayMount) -> Result<(), Errno> {
    let flags = if m.read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let data = m.data();
    if !m.read_only {
        // A volatile mount leaves `work/incompat/volatile/` in its work directory, and
        // overlayfs refuses to mount that work directory again until it is removed, which
        // is safe when the machine has not crashed since (Documentation/filesystems/
        // overlayfs.rst, "Volatile mount"). A restart of the container mounts the same
        // directories again, from the same supervisor: remove the marker first.
        let _ = fs::remove_dir_all(m.work.join("work/incompat"));
        let volatile = format!("{data}{VOLATILE}");
        match mount(
            Some("overlay"),
            &m.target,
            Some("overlay"),
            flags,
            Some(volatile.as_str()),
        ) {
            Err(Errno::EINVAL) => {}
            result => return result,
        }
    }
    mount(
        Some("overlay"),
        &m.target,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    )
}

/// The directory at `rel` below `root`, created if missing. A symlink there is refused, so a
/// mount never lands outside the container root.
fn mount_point(root: &Path, rel: &str) -> Result<PathBuf, Failed> {
    let mut dir = root.to_path_buf();
    for part in rel.split('/') {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Failed(format!(
                    "refusing to mount on `/{rel}`: it is a symbolic link in the image"
                )));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Failed(format!("cannot mount on `/{rel}`: not a directory"))),
            Err(_) => {
                fs::create_dir(&dir).map_err(|e| (format!("failed to create `/{rel}`"), e))?
            }
        }
    }
    Ok(dir)
}

/// Writes /etc/hostname and /etc/hosts inside the container (after pivot_root, so symlinks
/// in the image resolve inside it). Best effort: an image without /etc gets none.
fn write_etc(cfg: &ContainerConfig) {
    let etc = Path::new("/etc");
    if !fs::symlink_metadata(etc).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        cfg.hostname
    );
    for (name, content) in [
        ("hostname", format!("{}\n", cfg.hostname)),
        ("hosts", hosts),
    ] {
        // the project network's hosts file is mounted there
        if cfg
            .mounts
            .iter()
            .any(|m| m.target == format!("/etc/{name}"))
        {
            continue;
        }
        let path = etc.join(name);
        // replace rather than write through: the image's file may be a symlink
        let _ = fs::remove_file(&path);
        let _ = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .and_then(|mut f| f.write_all(content.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_searches_path_in_order() {
        assert_eq!(
            resolve("sh", "/nonexistent:/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(resolve("./x", "/bin"), Some(PathBuf::from("./x")));
        assert_eq!(resolve("no-such-program-rc", "/bin:/usr/bin"), None);
    }
}
