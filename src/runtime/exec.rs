//! `rcompose exec`: a command started inside a running container, with the container's
//! namespaces, cgroup, environment, user and confinement.
//!
//! The caller (the CLI) finds the container and builds an [`ExecSpec`]; then [`spawn`]
//! re-executes rcompose in the hidden `__exec` mode ([`main_with_args`]), as containers are
//! started (`__init`): `setns` into a mount namespace is refused to a process that shares its
//! file system attributes with other threads, a pid namespace entered with `setns` applies
//! to children only (so the helper must fork after it), and a multi-threaded process must
//! not run Rust between fork and exec. The helper is a fresh, single-threaded process:
//!
//! 1. it opens `/proc/<pid>` of the container's init and checks its start time against the
//!    one recorded in the state, through that directory: should the init exit and its pid be
//!    reused meanwhile, lookups in the directory fail instead of reaching the new process.
//!    From the same directory it opens the init's namespaces and root;
//! 2. it opens the container's cgroup files, enters the IPC, UTS, network, pid and mount
//!    namespaces and changes its root to the container's;
//! 3. with a terminal, it opens a pseudo-terminal from the container's own devpts (so that
//!    `tty` and `ttyname` work inside), checked to be one;
//! 4. it forks: the child, PID n of the container, writes `0` into the cgroup files (so it
//!    and what it starts are accounted to the container), takes the terminal, and runs the
//!    container's confinement and `execve` ([`super::init::exec_command`]: bounding set,
//!    user, capabilities, `no_new_privs`, seccomp);
//! 5. it reports on its channel, hands the terminal's master over, forwards signals to the
//!    command and exits with its status (128 + n after signal n).
//!
//! Channel (a Unix socket pair; the helper's end is inherited at the descriptor number its
//! argument names): the caller writes the [`ExecSpec`] as JSON and shuts its side down; the
//! helper answers with lines: `pty` (carrying the terminal's master as SCM_RIGHTS), then
//! `started`, or `error CODE MESSAGE` (CODE: 1 the container could not be entered, 126 the
//! command could not be run, 127 it was not found).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl, open, openat};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::stat::{Mode, SFlag, fstat, makedev};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, chdir, chroot, fchdir, fork, pipe2};
use serde::{Deserialize, Serialize};

use super::init::{FORWARDED, Launch, close_inherited_fds, environment, exec_command};
use super::{ContainerConfig, security};

/// The largest spec the helper reads (the environment and command are in it).
const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;

/// The size of a terminal, in characters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// What the caller of `exec` asks for, beyond the container's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// argv of the command.
    pub command: Vec<String>,
    /// Variables set over the container's environment, in order.
    pub env: Vec<(String, String)>,
    /// The user, instead of the container's.
    pub user: Option<String>,
    /// The working directory, instead of the container's.
    pub working_dir: Option<String>,
    /// A pseudo-terminal of this size for the command, or none.
    pub tty: Option<WindowSize>,
}

/// The running container an exec enters: its init, checked by start time, and its cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// `pod-N/container`, for messages.
    pub name: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// The init's start time (field 22 of `/proc/PID/stat`) as the state recorded it.
    pub pid_start: u64,
    /// The host's proc file system (`/proc`).
    pub proc_root: PathBuf,
    /// Files the command's process writes `0` into to join the container's cgroup (see
    /// [`super::cgroup::self_join_files`]).
    pub join: Vec<PathBuf>,
}

/// Everything the `__exec` helper needs, sent to it as JSON on its channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// `pod-N/container`, for messages.
    pub name: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// Its recorded start time.
    pub pid_start: u64,
    /// The host's proc file system.
    pub proc_root: PathBuf,
    /// Cgroup files to write `0` into.
    pub join: Vec<PathBuf>,
    /// The container's config (as the supervisor wrote it) with the exec's command, and its
    /// environment, user and working directory applied.
    pub config: ContainerConfig,
    /// A terminal of this size, or none.
    pub tty: Option<WindowSize>,
}

impl ExecSpec {
    /// The spec for running `request` in the container `container` (its config) at `target`:
    /// the container's environment with the request's variables over it, its user and
    /// working directory unless the request names others.
    #[must_use]
    pub fn new(container: ContainerConfig, target: ExecTarget, request: ExecRequest) -> Self {
        let mut config = container;
        config.command = request.command;
        // later entries win (see `init::environment`); an explicit HOME stays explicit
        config.env.extend(request.env);
        if request.user.is_some() {
            config.user = request.user;
        }
        if request.working_dir.is_some() {
            config.working_dir = request.working_dir;
        }
        ExecSpec {
            name: target.name,
            pid: target.pid,
            pid_start: target.pid_start,
            proc_root: target.proc_root,
            join: target.join,
            config,
            tty: request.tty,
        }
    }

    /// The command's environment: the container's defaults (PATH, HOSTNAME, HOME), its
    /// variables, then the request's.
    #[must_use]
    pub fn environment(&self) -> Vec<(String, String)> {
        environment(&self.config)
    }
}

/// Errors of running a command in a container.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The helper could not be started.
    #[error("failed to start the exec helper `{exe}`")]
    Spawn {
        /// The rcompose binary.
        exe: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The channel to the helper failed.
    #[error("failed to talk to the exec helper")]
    Channel(#[source] io::Error),
    /// The container could not be entered or the command could not be started.
    #[error("cannot exec in container `{name}`: {message}")]
    Failed {
        /// `pod-N/container`.
        name: String,
        /// 1 (entering the container failed), 126 (the command could not be run) or 127
        /// (it was not found).
        code: u8,
        /// What went wrong, as the helper reported it.
        message: String,
    },
    /// The helper ended without a report.
    #[error("the exec helper for container `{name}` ended before starting the command")]
    Lost {
        /// `pod-N/container`.
        name: String,
    },
}

/// A started `__exec` helper: its pid (the caller reaps it) and its channel.
#[derive(Debug)]
pub struct ExecProcess {
    /// The helper's pid.
    pub pid: Pid,
    channel: UnixStream,
}

/// Starts the helper for `spec`: `exe __exec FD`, in a process group of its own (so a
/// Ctrl-C on the caller's terminal reaches the caller only, which forwards it once). Its
/// stdin is the caller's when `stdin_from_caller`, else /dev/null; its stdout and stderr
/// are the caller's, except with a terminal (all three /dev/null: the command gets the
/// terminal). The caller must be single-threaded: the helper's end of the channel is
/// inherited through a descriptor without FD_CLOEXEC, which another thread's spawn would
/// inherit too.
pub fn spawn(
    exe: &Path,
    spec: &ExecSpec,
    stdin_from_caller: bool,
) -> Result<ExecProcess, ExecError> {
    let (ours, theirs) = UnixStream::pair().map_err(ExecError::Channel)?;
    fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| ExecError::Channel(e.into()))?;
    let (stdin, out, err) = if spec.tty.is_some() {
        (Stdio::null(), Stdio::null(), Stdio::null())
    } else if stdin_from_caller {
        (Stdio::inherit(), Stdio::inherit(), Stdio::inherit())
    } else {
        (Stdio::null(), Stdio::inherit(), Stdio::inherit())
    };
    let mut cmd = Command::new(exe);
    cmd.arg("__exec")
        .arg(theirs.as_raw_fd().to_string())
        .stdin(stdin)
        .stdout(out)
        .stderr(err);
    start_helper(cmd, exe, spec, ours, Some(theirs))
}

/// Spawns the helper `cmd` (its channel's other end already arranged; `theirs`, if this
/// process holds it, is closed once the helper has it, so that a helper that dies makes the
/// write fail instead of block), in a process group of its own with an empty environment,
/// and sends it `spec` on `channel`.
fn start_helper(
    mut cmd: Command,
    exe: &Path,
    spec: &ExecSpec,
    mut channel: UnixStream,
    theirs: Option<UnixStream>,
) -> Result<ExecProcess, ExecError> {
    cmd.env_clear().process_group(0);
    let spawned = cmd.spawn();
    drop(cmd);
    drop(theirs);
    let child = spawned.map_err(|source| ExecError::Spawn {
        exe: exe.to_owned(),
        source,
    })?;
    // reaped by the caller with waitpid, never through `child`
    let pid = Pid::from_raw(child.id().cast_signed());
    drop(child);
    let json = serde_json::to_vec(spec).map_err(|e| ExecError::Channel(e.into()))?;
    let sent = channel
        .write_all(&json)
        .and_then(|()| channel.shutdown(std::net::Shutdown::Write));
    // the helper died before reading its spec: the status tells the rest
    if let Err(e) = sent
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(ExecError::Channel(e));
    }
    Ok(ExecProcess { pid, channel })
}

/// Starts the helper for `spec` from a multi-threaded process (the supervisor's exec
/// probes): the channel goes in as stdin (`__exec 0`), the command reads /dev/null, and its
/// stdout and stderr go to /dev/null. The helper's exit code is the command's (or 126/127
/// when it could not run); the caller reaps it. The returned channel must stay open until
/// then (closing it early makes the helper's status writes fail, which it ignores).
pub fn spawn_probe(exe: &Path, spec: &ExecSpec) -> Result<ExecProcess, ExecError> {
    let (ours, theirs) = UnixStream::pair().map_err(ExecError::Channel)?;
    let mut cmd = Command::new(exe);
    cmd.arg("__exec")
        .arg("0")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    start_helper(cmd, exe, spec, ours, None)
}

impl ExecProcess {
    /// The helper's pid and the channel.
    #[must_use]
    pub fn into_parts(self) -> (Pid, UnixStream) {
        (self.pid, self.channel)
    }

    /// The channel, to poll.
    #[must_use]
    pub fn channel(&self) -> std::os::fd::BorrowedFd<'_> {
        self.channel.as_fd()
    }

    /// Reads what the helper sent into `status` (lines, and the terminal's master).
    /// Returns `false` at end of file (the helper has exited, or is about to).
    pub fn receive(&mut self, status: &mut HelperStatus) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                self.channel.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EINTR | Errno::EAGAIN) => return Ok(true),
                Err(e) => return Err(e.into()),
            };
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(list) = cmsg {
                    fds.extend(list);
                }
            }
            (msg.bytes, fds)
        };
        for fd in fds {
            // SAFETY: the kernel just installed this descriptor for us (SCM_RIGHTS); nothing
            // else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if status.master.is_none() {
                status.master = Some(fd);
            }
        }
        status.feed(&buf[..n]);
        Ok(n > 0)
    }
}

/// What the helper reported so far.
#[derive(Debug, Default)]
pub struct HelperStatus {
    partial: Vec<u8>,
    /// The command runs.
    pub started: bool,
    /// Why it does not: the exit code and the message.
    pub error: Option<(u8, String)>,
    /// The terminal's master, when one was asked for.
    pub master: Option<OwnedFd>,
}

impl HelperStatus {
    /// Takes bytes of the channel; complete lines are interpreted.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if line == "started" {
                self.started = true;
            } else if let Some(rest) = line.strip_prefix("error ") {
                let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
                self.error
                    .get_or_insert((code.parse().unwrap_or(1), message.to_string()));
            }
            // `pty` only announces the descriptor, taken in `receive`
        }
    }
}

/// A failure of the helper: the exit code and the message for the caller.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Entering the container failed.
    fn setup(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// The exit code for a message of [`exec_command`]: 127 when the program does not exist,
/// 126 for anything else that kept it from running (as Docker and shells).
fn exit_code_of(message: &str) -> u8 {
    let not_found = message.ends_with("executable file not found in $PATH")
        || (message.starts_with("failed to run ")
            && message.ends_with("no such file or directory"));
    if not_found { 127 } else { 126 }
}

/// Entry point of the hidden `__exec FD` mode (see the module documentation).
pub fn main_with_args(args: &[OsString]) -> ExitCode {
    let Some(fd) = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|s| s.parse::<RawFd>().ok())
        .filter(|&fd| fd > 2 || fd == 0)
    else {
        eprintln!("rcompose __exec: expected the channel's descriptor number");
        return ExitCode::from(2);
    };
    // `0`: the channel came as stdin (the supervisor's probes, see [`spawn_probe`]); the
    // command reads /dev/null
    let from_stdin = fd == 0;
    // The channel goes to fd 3 and every other inherited descriptor is closed: nothing of
    // the caller's reaches the container but stdin, stdout and stderr.
    if fd != 3 {
        // SAFETY: dup2 on plain descriptor numbers; 3 is not in use by this fresh process
        // other than as something inherited, which is to be closed anyway.
        if unsafe { libc::dup2(fd, 3) } != 3 {
            return ExitCode::from(1);
        }
    }
    if from_stdin {
        let null = nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        match null {
            // SAFETY: dup2 of a descriptor this process owns onto stdin
            Ok(null) if unsafe { libc::dup2(null.as_raw_fd(), 0) } == 0 => {}
            _ => return ExitCode::from(1),
        }
    }
    close_inherited_fds(4);
    // SAFETY: fd 3 is the socket `spawn` left open (moved there above); nothing else in this
    // process owns it.
    let mut channel = unsafe { UnixStream::from_raw_fd(3) };
    let _ = fcntl(&channel, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    match helper(&mut channel) {
        Ok(code) => ExitCode::from(code),
        Err(Failure { code, message }) => {
            send(&channel, &format!("error {code} {message}"));
            ExitCode::from(code)
        }
    }
}

/// Writes one status line with a single write(2).
fn send(mut channel: &UnixStream, line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line.lines().next().unwrap_or(""));
    buf.push('\n');
    let _ = channel.write_all(buf.as_bytes());
}

fn helper(channel: &mut UnixStream) -> Result<u8, Failure> {
    // Blocked from the start: signals for the command wait until it runs, then are
    // forwarded; the child unblocks them before exec (`exec_command`).
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| Failure::setup(format!("failed to block signals: {}", e.desc())))?;
    // If the caller dies, the command gets SIGHUP, as after a terminal hangup.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGHUP);
    // Not dumpable: while the child of the fork still runs this binary inside the
    // container's pid namespace, processes of the container must not open its
    // /proc/PID/exe (the host's rcompose; runc CVE-2019-5736) or ptrace it.
    let _ = nix::sys::prctl::set_dumpable(false);
    let mut json = Vec::new();
    (&*channel)
        .take(MAX_SPEC_BYTES)
        .read_to_end(&mut json)
        .map_err(|e| Failure::setup(format!("failed to read the exec spec: {e}")))?;
    let spec: ExecSpec = serde_json::from_slice(&json)
        .map_err(|e| Failure::setup(format!("invalid exec spec: {e}")))?;
    let target = Target::open(&spec)?;
    let mut join = Vec::new();
    for path in &spec.join {
        let f = File::options().write(true).open(path).map_err(|e| {
            Failure::setup(format!(
                "failed to open the container's cgroup `{}`: {e}",
                path.display()
            ))
        })?;
        join.push((path.clone(), f));
    }
    let filters = if spec.config.privileged {
        Vec::new()
    } else {
        security::filters(spec.config.capabilities).map_err(Failure::setup)?
    };
    let env = spec.environment();
    target.enter()?;
    let pty = spec.tty.map(open_pty).transpose().map_err(Failure::setup)?;
    let (r, w) = pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Failure::setup(format!("failed to create a pipe: {}", e.desc())))?;
    // SAFETY: this process is single-threaded (a fresh exec of rcompose that started no
    // thread), so the child may run arbitrary code after fork.
    let child = match unsafe { fork() } {
        Err(Errno::ENOMEM) => {
            // fork into a pid namespace whose init has exited
            return Err(Failure::setup("the container is stopping"));
        }
        Err(e) => return Err(Failure::setup(format!("fork failed: {}", e.desc()))),
        Ok(ForkResult::Child) => {
            drop(r);
            let slave = pty.map(|(_, slave)| slave);
            let (message, code) = command_process(&spec, &env, &filters, &join, slave);
            let _ = File::from(w).write_all(message.as_bytes());
            // SAFETY: _exit is async-signal-safe and ends this child at once.
            unsafe { libc::_exit(i32::from(code)) }
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(w);
    drop(join);
    let master = pty.map(|(master, _slave)| master);
    let mut message = String::new();
    let _ = File::from(r).read_to_string(&mut message);
    if !message.is_empty() {
        let code = match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => u8::try_from(c).unwrap_or(126),
            _ => 126,
        };
        return Err(Failure { code, message });
    }
    if let Some(master) = master {
        let fds = [master.as_raw_fd()];
        let sent = sendmsg::<()>(
            channel.as_raw_fd(),
            &[IoSlice::new(b"pty\n")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        );
        if let Err(e) = sent {
            // nobody to relay the terminal: the command must not run on unattended
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(Failure::setup(format!(
                "failed to hand the terminal over: {}",
                e.desc()
            )));
        }
    }
    send(channel, "started");
    Ok(wait_forwarding(child, &set))
}

/// In the command's process, inside the container: joins the cgroup, takes the terminal,
/// confines and execs. Returns the message and exit code when that fails.
fn command_process(
    spec: &ExecSpec,
    env: &[(String, String)],
    filters: &[seccompiler::BpfProgram],
    join: &[(PathBuf, File)],
    slave: Option<OwnedFd>,
) -> (String, u8) {
    for (path, file) in join {
        let mut file: &File = file;
        if let Err(e) = file.write_all(b"0") {
            return (
                format!(
                    "failed to join the container's cgroup `{}`: {e}",
                    path.display()
                ),
                1,
            );
        }
    }
    let tty = slave.is_some();
    if let Some(slave) = slave {
        // The terminal belongs to the command's user, as under runc: programs reopen it by
        // its path. (An unknown user is reported by `exec_command` below.)
        if let Some(spec_user) = &spec.config.user
            && let Ok(user) = super::user::read_db("/etc/passwd").and_then(|passwd| {
                let group = super::user::read_db("/etc/group")?;
                super::user::resolve(spec_user, &passwd, &group)
            })
        {
            let owner = (
                Some(nix::unistd::Uid::from_raw(user.uid)),
                Some(nix::unistd::Gid::from_raw(user.gid)),
            );
            if let Err(e) = nix::unistd::fchown(&slave, owner.0, owner.1) {
                return (
                    format!(
                        "failed to give the terminal to user `{spec_user}`: {}",
                        e.desc()
                    ),
                    126,
                );
            }
        }
        let dup = nix::unistd::dup2_stdin(&slave)
            .and_then(|()| nix::unistd::dup2_stdout(&slave))
            .and_then(|()| nix::unistd::dup2_stderr(&slave));
        if let Err(e) = dup {
            return (format!("failed to set up the terminal: {}", e.desc()), 126);
        }
    }
    let message = exec_command(&spec.config, env, filters, Launch::Exec { tty });
    let code = exit_code_of(&message);
    (message, code)
}

/// Forwards signals to the command until it exits; returns its exit code (128 + n after
/// signal n).
fn wait_forwarding(child: Pid, set: &SigSet) -> u8 {
    loop {
        let Ok(sig) = set.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return u8::try_from(code & 0xff).unwrap_or(1),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return 128u8.saturating_add(u8::try_from(sig as i32).unwrap_or(0));
            }
            Ok(_) => {}
            Err(_) => return 1,
        }
    }
}

/// The container's init, pinned by its `/proc` directory, with its namespaces and root.
struct Target {
    namespaces: Vec<(OwnedFd, CloneFlags, &'static str)>,
    root: OwnedFd,
}

/// The namespaces an exec enters, in order: the mount namespace last, as it changes what
/// paths mean.
const NAMESPACES: [(&str, CloneFlags); 5] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

impl Target {
    fn open(spec: &ExecSpec) -> Result<Target, Failure> {
        let pid = spec.pid;
        let gone = || {
            Failure::setup(format!(
                "the container is not running: its init (pid {pid}) has exited"
            ))
        };
        let dir = open(
            &spec.proc_root.join(pid.to_string()),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| gone())?;
        let at =
            |name: &str, flags: OFlag| openat(&dir, name, flags | OFlag::O_CLOEXEC, Mode::empty());
        let mut stat = String::new();
        at("stat", OFlag::O_RDONLY)
            .map(File::from)
            .and_then(|mut f| f.read_to_string(&mut stat).map_err(|_| Errno::ESRCH))
            .map_err(|_| gone())?;
        if start_time(&stat) != Some(spec.pid_start) {
            return Err(Failure::setup(format!(
                "the container is not running: pid {pid} is no longer its init"
            )));
        }
        // Lookups through `dir` fail once the process is gone, even if its pid is reused:
        // everything opened below belongs to the init checked above.
        let mut namespaces = Vec::new();
        for (name, flag) in NAMESPACES {
            let fd = at(&format!("ns/{name}"), OFlag::O_RDONLY).map_err(|e| {
                Failure::setup(format!(
                    "failed to open the container's {name} namespace: {}",
                    e.desc()
                ))
            })?;
            namespaces.push((fd, flag, name));
        }
        let root = at("root", OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(|e| {
            Failure::setup(format!("failed to open the container's root: {}", e.desc()))
        })?;
        Ok(Target { namespaces, root })
    }

    /// Enters the namespaces and the root (as `nsenter --all --root --wd` would).
    fn enter(self) -> Result<(), Failure> {
        for (fd, flag, name) in &self.namespaces {
            setns(fd, *flag).map_err(|e| {
                Failure::setup(format!(
                    "failed to enter the container's {name} namespace: {}",
                    e.desc()
                ))
            })?;
        }
        fchdir(&self.root)
            .and_then(|()| chroot("."))
            .and_then(|()| chdir("/"))
            .map_err(|e| {
                Failure::setup(format!(
                    "failed to enter the container's root: {}",
                    e.desc()
                ))
            })
    }
}

/// Start time of a process (clock ticks since boot) from the text of its `/proc/PID/stat`.
fn start_time(stat: &str) -> Option<u64> {
    // the command name may contain spaces and parentheses: split after the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    // fields after the name start at field 3; starttime is field 22
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Opens a pseudo-terminal in the container's devpts (after entering its root): the master
/// for the caller, the slave for the command. The container's root may have replaced
/// `/dev/pts/ptmx`: it must be a devpts `ptmx` device, opened without following a link;
/// the slave is opened from the master (TIOCGPTPEER), not by a path in the container.
/// Both are close-on-exec. Also used for containers with `tty: true` (see `super::init`).
pub(super) fn open_pty(size: WindowSize) -> Result<(OwnedFd, OwnedFd), String> {
    let fail = |what: &str, e: Errno| format!("{what}: {}", e.desc());
    let master = open(
        "/dev/pts/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| fail("failed to open the container's /dev/pts/ptmx", e))?;
    let is_devpts = nix::sys::statfs::fstatfs(&master)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::DEVPTS_SUPER_MAGIC);
    let is_ptmx = fstat(&master).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
            && st.st_rdev == makedev(5, 2)
    });
    if !is_devpts || !is_ptmx {
        return Err("the container's /dev/pts/ptmx is not a devpts terminal multiplexer".into());
    }
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which points to a live local.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &raw const unlock) } != 0 {
        return Err(fail("failed to unlock the terminal", Errno::last()));
    }
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `struct winsize` from the pointer, a live local.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &raw const ws) } != 0 {
        return Err(fail("failed to set the terminal size", Errno::last()));
    }
    // SAFETY: TIOCGPTPEER takes open flags as an integer and returns a new descriptor.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(fail("failed to open the terminal", Errno::last()));
    }
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::rootfs::RootfsSpec;

    fn config() -> ContainerConfig {
        ContainerConfig {
            name: "web-1/app".into(),
            hostname: "web-1".into(),
            rootfs: RootfsSpec {
                host: true,
                lowers: Vec::new(),
                dir: "/run/rcompose/p/web-1.app".into(),
            },
            netns: Some("/run/rcompose/p/netns.web-1".into()),
            command: vec!["sleep".into(), "1000".into()],
            env: vec![
                ("GREETING".into(), "hello".into()),
                ("HOME".into(), "/srv".into()),
            ],
            working_dir: Some("/srv".into()),
            user: Some("1000".into()),
            init: None,
            privileged: false,
            capabilities: 0xa804_25fb,
            mounts: Vec::new(),
            read_only: false,
            tty: false,
        }
    }

    fn target() -> ExecTarget {
        ExecTarget {
            name: "web-1/app".into(),
            pid: 42,
            pid_start: 7,
            proc_root: "/proc".into(),
            join: vec!["/sys/fs/cgroup/memory/rcompose/p/web-1/app/tasks".into()],
        }
    }

    #[test]
    fn the_container_settings_apply_unless_the_request_overrides_them() {
        let request = ExecRequest {
            command: vec!["sh".into()],
            ..ExecRequest::default()
        };
        let spec = ExecSpec::new(config(), target(), request);
        assert_eq!(spec.config.command, ["sh"]);
        assert_eq!(spec.config.user.as_deref(), Some("1000"));
        assert_eq!(spec.config.working_dir.as_deref(), Some("/srv"));
        assert_eq!(spec.config.capabilities, 0xa804_25fb);
        assert_eq!((spec.pid, spec.pid_start, spec.tty), (42, 7, None));
        let env = spec.environment();
        assert!(env.contains(&("GREETING".into(), "hello".into())));
        assert!(env.contains(&("HOSTNAME".into(), "web-1".into())));

        let request = ExecRequest {
            command: vec!["id".into()],
            env: vec![
                ("GREETING".into(), "bye".into()),
                ("NEW".into(), "1".into()),
            ],
            user: Some("0".into()),
            working_dir: Some("/etc".into()),
            tty: Some(WindowSize { rows: 24, cols: 80 }),
        };
        let spec = ExecSpec::new(config(), target(), request);
        assert_eq!(spec.config.user.as_deref(), Some("0"));
        assert_eq!(spec.config.working_dir.as_deref(), Some("/etc"));
        assert_eq!(spec.tty, Some(WindowSize { rows: 24, cols: 80 }));
        let env = spec.environment();
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str());
        assert_eq!(get("GREETING"), Some("bye"));
        assert_eq!(get("NEW"), Some("1"));
        assert_eq!(get("HOME"), Some("/srv"));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "GREETING").count(),
            1,
            "a variable set again is replaced, not repeated"
        );
    }

    #[test]
    fn the_spec_round_trips_as_json() {
        let spec = ExecSpec::new(config(), target(), ExecRequest::default());
        let json = serde_json::to_vec(&spec).unwrap();
        assert_eq!(serde_json::from_slice::<ExecSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn status_lines_are_read_across_reads() {
        let mut s = HelperStatus::default();
        s.feed(b"pty\nsta");
        assert!(!s.started);
        s.feed(b"rted\n");
        assert!(s.started && s.error.is_none());
        let mut s = HelperStatus::default();
        s.feed(b"error 127 `nope`: executable file not found in $PATH\nerror 1 later\n");
        assert_eq!(
            s.error,
            Some((127, "`nope`: executable file not found in $PATH".into()))
        );
    }

    #[test]
    fn exit_codes_follow_docker_for_commands_that_cannot_run() {
        assert_eq!(exit_code_of("`x`: executable file not found in $PATH"), 127);
        assert_eq!(
            exit_code_of("failed to run `/nope`: no such file or directory"),
            127
        );
        assert_eq!(exit_code_of("failed to run `/etc`: permission denied"), 126);
        assert_eq!(
            exit_code_of(
                "cannot run as user `nobody2`: user `nobody2` is not in the image's /etc/passwd"
            ),
            126
        );
    }

    #[test]
    fn start_time_is_field_22() {
        let fields: Vec<String> = (3..=22).map(|i| i.to_string()).collect();
        assert_eq!(
            start_time(&format!("7 (a) b) {}", fields.join(" "))),
            Some(22)
        );
        assert_eq!(start_time("7 (a"), None);
    }
}
