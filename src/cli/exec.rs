//! `rcompose exec`: the arguments, the caller's terminal, and the session with the
//! `__exec` helper (see `runtime::exec`): signals forwarded, the helper's exit status
//! returned, and with `-t` the container's pseudo-terminal relayed to the caller's.
//!
//! This process stays single-threaded: one `poll` loop over a signalfd, the helper's
//! channel and, with a terminal, the caller's stdin and the terminal's master.

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, SpecialCharacterIndices, Termios};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use super::Context;
use crate::error::Error;
use crate::runtime::exec::{self, ExecError, ExecProcess, ExecRequest, HelperStatus, WindowSize};
use crate::supervisor;

/// Run a command in a running container
#[derive(Debug, clap::Args)]
pub(super) struct ExecArgs {
    /// Pass the caller's stdin to the command (without it, the command reads /dev/null)
    #[arg(short = 'i', long)]
    pub(super) interactive: bool,
    /// Give the command a pseudo-terminal (with -i, the caller's terminal is raw meanwhile)
    #[arg(short = 't', long)]
    pub(super) tty: bool,
    /// The container; required when the pod has several
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub(super) container: Option<String>,
    /// Run as this user (`uid[:gid]` or `name[:group]`) [default: the container's]
    #[arg(short = 'u', long, value_name = "USER", value_parser = parse_user)]
    pub(super) user: Option<String>,
    /// Working directory, an absolute path [default: the container's]
    #[arg(short = 'w', long = "workdir", value_name = "DIR", value_parser = parse_workdir)]
    pub(super) workdir: Option<String>,
    /// Set an environment variable (repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub(super) env: Vec<(String, String)>,
    /// The pod (its replica 1) or one replica (`pod-N`)
    #[arg(value_name = "POD[-N]")]
    pub(super) target: String,
    /// The command and its arguments
    #[arg(
        value_name = "COMMAND",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(super) command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !s.contains('\0') => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

fn parse_workdir(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains('\0') {
        Ok(s.to_string())
    } else {
        Err(format!(
            "the working directory must be an absolute path, got `{s}`"
        ))
    }
}

fn parse_user(s: &str) -> Result<String, String> {
    if s.is_empty() || s.starts_with(':') || s.contains('\0') {
        Err(format!("expected `uid[:gid]` or `name[:group]`, got `{s}`"))
    } else {
        Ok(s.to_string())
    }
}

/// Signals this process takes through its signalfd: forwarded to the helper (which forwards
/// them to the command), SIGWINCH (the terminal's size) and SIGCHLD (the helper's exit).
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How long output is still relayed after the helper exited, while some other process of
/// the container keeps the terminal open.
const DRAIN: Duration = Duration::from_millis(250);

pub(super) fn run(ctx: &Context, args: ExecArgs) -> Result<ExitCode, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Prerequisite(
            "rcompose exec must run as root to enter a container's namespaces".into(),
        ));
    }
    let project = ctx.project()?;
    let terminal = caller_terminal();
    let request = ExecRequest {
        command: args.command,
        env: args.env,
        user: args.user,
        working_dir: args.workdir,
        tty: args
            .tty
            .then(|| terminal.and_then(window_size).unwrap_or_default()),
    };
    let spec = supervisor::exec::prepare(
        &Context::run_root(),
        Path::new("/proc"),
        &project,
        &args.target,
        args.container.as_deref(),
        request,
    )?;
    let signals = take_signals()?;
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        what: "find the rcompose binary".into(),
        source,
    })?;
    let relay_stdin = args.tty && args.interactive;
    // Docker's rule: raw only when the caller's keystrokes go to the command; with `-t`
    // alone, Ctrl-C stays a signal here, and is forwarded
    let raw = if relay_stdin && io::stdin().is_terminal() {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let helper = exec::spawn(&exe, &spec, args.interactive)?;
    let mut session = Session {
        helper,
        signals,
        status: HelperStatus::default(),
        channel_open: true,
        exited: None,
        pending: Vec::new(),
        tty: spec.tty.is_some(),
        master: None,
        master_open: false,
        stdin_open: relay_stdin,
        input: Vec::new(),
        drain_until: None,
        terminal,
    };
    let result = session.run();
    drop(raw);
    let code = result?;
    if let Some((code, message)) = session.status.error.take() {
        return Err(ExecError::Failed {
            name: spec.name,
            code,
            message,
        }
        .into());
    }
    if !session.status.started {
        return Err(ExecError::Lost { name: spec.name }.into());
    }
    Ok(ExitCode::from(code))
}

/// The caller's terminal, to read the window size from: stdin, else stdout.
fn caller_terminal() -> Option<BorrowedFd<'static>> {
    if io::stdin().is_terminal() {
        // SAFETY: fd 0 stays open for the life of the process.
        Some(unsafe { BorrowedFd::borrow_raw(0) })
    } else if io::stdout().is_terminal() {
        // SAFETY: fd 1 stays open for the life of the process.
        Some(unsafe { BorrowedFd::borrow_raw(1) })
    } else {
        None
    }
}

fn window_size(fd: BorrowedFd<'_>) -> Option<WindowSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` to the pointer, a live local.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &raw mut ws) };
    (rc == 0).then_some(WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

fn set_window_size(master: BorrowedFd<'_>, size: WindowSize) {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, a live local.
    let _ = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &raw const ws) };
}

/// Blocks the signals the session handles and returns a signalfd for them. Blocked before
/// the helper starts, so none is lost; the helper starts with an empty mask (std resets it).
fn take_signals() -> Result<SignalFd, Error> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGWINCH);
    set.add(Signal::SIGCHLD);
    let io_err = |what: &str, e: Errno| Error::Io {
        what: what.into(),
        source: e.into(),
    };
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| io_err("block signals", e))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| io_err("create a signalfd", e))
}

/// The caller's terminal in raw mode; restored when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode, Error> {
        let io_err = |e: Errno| Error::Io {
            what: "put the terminal in raw mode".into(),
            source: e.into(),
        };
        let saved = termios::tcgetattr(io::stdin()).map_err(io_err)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(io::stdin(), SetArg::TCSADRAIN, &raw).map_err(io_err)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// One exec, from the helper's start to its exit.
struct Session {
    helper: ExecProcess,
    signals: SignalFd,
    status: HelperStatus,
    channel_open: bool,
    /// The helper's exit code (the command's, or the helper's failure).
    exited: Option<u8>,
    /// Signals that came before the command started, forwarded once it does.
    pending: Vec<Signal>,
    /// Whether a terminal was asked for.
    tty: bool,
    master: Option<OwnedFd>,
    master_open: bool,
    /// Whether the caller's stdin is still read (with `-i -t`).
    stdin_open: bool,
    /// Input read from stdin, not yet written to the terminal.
    input: Vec<u8>,
    /// After the helper's exit: when to stop waiting for the terminal's last output.
    drain_until: Option<Instant>,
    terminal: Option<BorrowedFd<'static>>,
}

impl Session {
    fn done(&self) -> bool {
        self.exited.is_some()
            && !self.channel_open
            && (!self.master_open || self.drain_until.is_some_and(|t| Instant::now() >= t))
    }

    /// Runs until the helper exited and everything was relayed; returns its exit code.
    fn run(&mut self) -> Result<u8, Error> {
        let io_err = |what: &str, source: io::Error| Error::Io {
            what: what.into(),
            source,
        };
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        while !self.done() {
            let master = self.master.as_ref().filter(|_| self.master_open);
            let want_stdin = self.stdin_open && master.is_some() && self.input.is_empty();
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let channel_at = self.channel_open.then(|| {
                fds.push(PollFd::new(self.helper.channel(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let master_at = master.map(|m| {
                let mut events = PollFlags::POLLIN;
                if !self.input.is_empty() {
                    events |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(m.as_fd(), events));
                fds.len() - 1
            });
            let stdin_at = want_stdin.then(|| {
                fds.push(PollFd::new(stdin, PollFlags::POLLIN));
                fds.len() - 1
            });
            let timeout = match self.drain_until {
                Some(t) if self.master_open => {
                    let left = t.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis().min(1000) as u64 + 1)
                        .unwrap_or(PollTimeout::MAX)
                }
                _ => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(io_err("wait for the exec helper", e.into())),
            }
            let ready = |i: Option<usize>| {
                i.and_then(|i| fds[i].revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let (sig_ready, chan_ready, master_ready, stdin_ready) = (
                ready(Some(0)),
                ready(channel_at),
                ready(master_at),
                ready(stdin_at),
            );
            drop(fds);
            if sig_ready {
                self.signals()?;
            }
            if chan_ready {
                self.channel()?;
            }
            if master_ready {
                self.master_io()?;
            }
            if stdin_ready {
                self.read_stdin();
            }
        }
        Ok(self.exited.unwrap_or(1))
    }

    fn signals(&mut self) -> Result<(), Error> {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo.cast_signed()) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => self.reap(),
                Signal::SIGWINCH => {
                    if let (Some(m), Some(t)) = (&self.master, self.terminal)
                        && let Some(size) = window_size(t)
                    {
                        set_window_size(m.as_fd(), size);
                    }
                }
                sig if self.status.started => {
                    let _ = kill(self.helper.pid, sig);
                }
                sig => self.pending.push(sig),
            }
        }
        Ok(())
    }

    fn reap(&mut self) {
        if self.exited.is_some() {
            return;
        }
        match waitpid(self.helper.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                self.exited = Some(u8::try_from(code & 0xff).unwrap_or(1));
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                self.exited = Some(128u8.saturating_add(u8::try_from(sig as i32).unwrap_or(0)));
            }
            Ok(_) => return,
            Err(_) => self.exited = Some(1),
        }
        if self.master_open {
            self.drain_until = Some(Instant::now() + DRAIN);
        }
    }

    fn channel(&mut self) -> Result<(), Error> {
        let open = self
            .helper
            .receive(&mut self.status)
            .map_err(ExecError::Channel)?;
        self.channel_open = open;
        if self.tty
            && self.master.is_none()
            && let Some(master) = self.status.master.take()
        {
            // nonblocking (the helper closed its copy): a full terminal never stalls the loop
            let flags = fcntl(&master, FcntlArg::F_GETFL).unwrap_or(0);
            let _ = fcntl(
                &master,
                FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
            );
            self.master = Some(master);
            self.master_open = true;
        }
        if self.status.started {
            for sig in self.pending.drain(..) {
                let _ = kill(self.helper.pid, sig);
            }
        }
        // EOF comes with the helper's exit: reap it now if SIGCHLD has not been read yet
        if !open {
            self.reap();
        }
        Ok(())
    }

    /// Copies the terminal's output to stdout and pending input to the terminal.
    fn master_io(&mut self) -> Result<(), Error> {
        let Some(master) = &self.master else {
            return Ok(());
        };
        let mut buf = [0u8; 16384];
        loop {
            match nix::unistd::read(master, &mut buf) {
                Ok(0) | Err(Errno::EIO) => {
                    self.master_open = false;
                    return Ok(());
                }
                Ok(n) => write_all_stdout(&buf[..n]).map_err(|source| Error::Io {
                    what: "write the command's output".into(),
                    source,
                })?,
                Err(Errno::EAGAIN | Errno::EINTR) => break,
                Err(e) => {
                    return Err(Error::Io {
                        what: "read the command's terminal".into(),
                        source: e.into(),
                    });
                }
            }
        }
        while !self.input.is_empty() {
            match nix::unistd::write(master, &self.input) {
                Ok(n) => {
                    self.input.drain(..n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => break,
                Err(_) => {
                    // the terminal is gone; the rest of the input has no reader
                    self.input.clear();
                    self.stdin_open = false;
                }
            }
        }
        Ok(())
    }

    fn read_stdin(&mut self) {
        let mut buf = [0u8; 4096];
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        match nix::unistd::read(stdin, &mut buf) {
            Ok(0) => {
                self.stdin_open = false;
                // end of piped input: the terminal's end-of-file character, so that a
                // command reading lines (`cat`) sees the end too
                if !io::stdin().is_terminal()
                    && let Some(master) = &self.master
                {
                    let eof = termios::tcgetattr(master)
                        .map(|t| t.control_chars[SpecialCharacterIndices::VEOF as usize])
                        .unwrap_or(4);
                    self.input.push(eof);
                }
            }
            Ok(n) => self.input.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.stdin_open = false,
        }
    }
}

/// Writes to fd 1, waiting while it is full (it may be nonblocking).
fn write_all_stdout(mut data: &[u8]) -> io::Result<()> {
    // SAFETY: fd 1 stays open for the life of the process.
    let stdout = unsafe { BorrowedFd::borrow_raw(1) };
    while !data.is_empty() {
        match nix::unistd::write(stdout, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(stdout, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::ExecArgs;

    fn parse(args: &[&str]) -> Result<ExecArgs, clap::Error> {
        let mut full = vec!["rcompose", "-p", "p", "exec"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full)?.command {
            Command::Exec(args) => Ok(args),
            other => panic!("not exec: {other:?}"),
        }
    }

    #[test]
    fn every_option_is_parsed() {
        let a = parse(&[
            "-it",
            "-c",
            "app",
            "-u",
            "1000:1000",
            "-w",
            "/srv",
            "-e",
            "A=1",
            "-e",
            "B=x=y",
            "-e",
            "C=",
            "web-2",
            "--",
            "sh",
            "-c",
            "echo $A",
        ])
        .unwrap();
        assert!(a.interactive && a.tty);
        assert_eq!(a.container.as_deref(), Some("app"));
        assert_eq!(a.user.as_deref(), Some("1000:1000"));
        assert_eq!(a.workdir.as_deref(), Some("/srv"));
        assert_eq!(
            a.env,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string()),
                ("C".to_string(), String::new()),
            ]
        );
        assert_eq!(a.target, "web-2");
        assert_eq!(a.command, ["sh", "-c", "echo $A"]);
    }

    #[test]
    fn the_command_may_follow_without_double_dash_and_keeps_its_options() {
        let a = parse(&["web", "ls", "-l", "-c", "x"]).unwrap();
        assert!(!a.interactive && !a.tty && a.container.is_none());
        assert_eq!(a.target, "web");
        assert_eq!(a.command, ["ls", "-l", "-c", "x"]);
        // options between the pod and the command are rcompose's
        let a = parse(&["web", "-c", "app", "ls"]).unwrap();
        assert_eq!(a.container.as_deref(), Some("app"));
        assert_eq!(a.command, ["ls"]);
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for args in [
            &["web"][..],
            &["web", "--"],
            &["-e", "NOVALUE", "web", "true"],
            &["-e", "=x", "web", "true"],
            &["-w", "relative", "web", "true"],
            &["-u", "", "web", "true"],
            &["-u", ":1", "web", "true"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        let err = parse(&["-e", "NOVALUE", "web", "true"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected KEY=VALUE, got `NOVALUE`"),
            "{err}"
        );
    }
}
