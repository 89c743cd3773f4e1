//! A fork server: a single-threaded copy of rcompose, forked before the supervisor starts
//! any thread, that forks container init helpers on request.
//!
//! A helper started this way needs no `execve`: forking a single-threaded process and
//! running Rust in the child is safe (the rule is never to do so in a multi-threaded
//! process), and it saves the dynamic loader and libc start-up of a fresh `rcompose
//! __init`, about a millisecond per container here. The helper then runs exactly the code
//! of [`super::init::main`].
//!
//! The helper is cloned straight into a new pid namespace (`CLONE_NEWPID`) as a child of the
//! supervisor (`CLONE_PARENT`), so it is the container's PID 1 from the start and becomes
//! its init itself: no second fork, and nothing to re-parent (a helper started by
//! `rcompose __init` still unshares the pid namespace and forks the init).
//!
//! Protocol over a Unix stream socket: the supervisor sends the helper's arguments (NUL
//! separated) with two descriptors (SCM_RIGHTS): the channel (stdin) and the log (stdout,
//! stderr). The server does not answer on its socket: it writes `helper PID` and `pid PID`
//! (one write) on the channel once it cloned the helper, or `error ...` when it could not,
//! so the supervisor makes the container's cgroup meanwhile instead of waiting for a reply
//! first. The server exits when the socket closes.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::unistd::{ForkResult, Pid, fork, setsid};

/// Largest request accepted (the helper's arguments).
const MAX_REQUEST: usize = 64 * 1024;

/// The supervisor's handle on its fork server.
#[derive(Debug)]
pub struct ForkServer {
    sock: Mutex<UnixStream>,
    pid: Pid,
}

impl ForkServer {
    /// Forks the server.
    ///
    /// # Safety
    /// The calling process must be single-threaded: the child runs Rust code after `fork`.
    pub unsafe fn start() -> io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        // SAFETY: the caller guarantees a single-threaded process, so the child may run
        // arbitrary code.
        match unsafe { fork() }.map_err(io::Error::from)? {
            ForkResult::Parent { child } => {
                drop(theirs);
                Ok(Self {
                    sock: Mutex::new(ours),
                    pid: child,
                })
            }
            ForkResult::Child => {
                drop(ours);
                serve(theirs)
            }
        }
    }

    /// The server's pid.
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Asks for an init helper with `args` (as after `rcompose __init`), `channel` as its
    /// stdin and `log` as its stdout and stderr. Returns once the request is sent: the
    /// helper's pid comes as its first line on the channel (`helper PID`).
    pub fn spawn(&self, args: &[OsString], channel: &OwnedFd, log: &OwnedFd) -> io::Result<()> {
        let mut payload = Vec::new();
        for a in args {
            payload.extend_from_slice(a.as_bytes());
            payload.push(0);
        }
        if payload.len() > MAX_REQUEST {
            return Err(io::Error::other("fork server request too large"));
        }
        let sock = self
            .sock
            .lock()
            .map_err(|_| io::Error::other("fork server lock poisoned"))?;
        let len = u32::try_from(payload.len())
            .map_err(io::Error::other)?
            .to_le_bytes();
        let fds = [channel.as_raw_fd(), log.as_raw_fd()];
        let iov = [IoSlice::new(&len), IoSlice::new(&payload)];
        let sent = sendmsg::<()>(
            sock.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(io::Error::from)?;
        if sent != len.len() + payload.len() {
            return Err(io::Error::other("short write to the fork server"));
        }
        Ok(())
    }

    /// Closes the socket: the server exits as soon as it reads EOF, and nothing can be
    /// started through it any more.
    pub fn close(&self) {
        if let Ok(sock) = self.sock.lock() {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Closes the socket and waits until the server has exited (it is the caller's child,
    /// reaped by the caller's reaper), so that nothing of a project outlives its teardown.
    pub fn stop(&self, proc_root: &Path) {
        self.close();
        for _ in 0..10_000 {
            if super::has_exited(proc_root, self.pid.as_raw()) {
                return;
            }
            // it exits as soon as it reads EOF: poll finely (at most 0.5 s in all)
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::SIGKILL);
    }
}

/// The server loop, in the forked child. Never returns.
fn serve(sock: UnixStream) -> ! {
    // No terminal signals (a Ctrl-C is the supervisor's to handle), and nothing of the
    // caller's: stdio to /dev/null, every other descriptor closed.
    let _ = setsid();
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
    let sock_fd = sock.as_raw_fd();
    keep_only(&[0, 1, 2, sock_fd]);
    // the helpers are cloned as the supervisor's children (CLONE_PARENT), never this
    // server's; should a child of its own ever exit, the kernel reaps it (no zombies)
    // SAFETY: setting a disposition to SIG_IGN installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    let mut sock = sock;
    loop {
        let Some((args, fds)) = receive(&mut sock) else {
            std::process::exit(0);
        };
        // The raw clone (a fork, with the namespace and parent flags that glibc's fork does
        // not take): the child's stack is a copy of this one, as with fork.
        // SAFETY: this server is single-threaded, so the child may run Rust code; its
        // copy of glibc's thread descriptor keeps this process's tid, which only
        // pthread_kill-style calls read (none runs in the helper; an abort still ends it).
        let cloned = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::c_ulong::try_from(libc::CLONE_PARENT | libc::CLONE_NEWPID | libc::SIGCHLD)
                    .unwrap_or_default(),
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        let cloned = match cloned {
            0 => Ok(ForkResult::Child),
            -1 => Err(nix::errno::Errno::last()),
            pid => i32::try_from(pid)
                .map(|p| ForkResult::Parent {
                    child: Pid::from_raw(p),
                })
                .map_err(|_| nix::errno::Errno::EINVAL),
        };
        match cloned {
            Ok(ForkResult::Child) => {
                // the init the helper forks must see its children's exits again
                // SAFETY: restoring the default disposition installs no handler code.
                unsafe {
                    let _ = nix::sys::signal::signal(
                        nix::sys::signal::SIGCHLD,
                        nix::sys::signal::SigHandler::SigDfl,
                    );
                }
                drop(sock);
                let code = helper(&args, &fds);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                if let Some(channel) = fds.first() {
                    let line = format!("{} {child}\npid {child}\n", super::HELPER_LINE);
                    let _ = nix::unistd::write(channel, line.as_bytes());
                }
            }
            Err(e) => {
                if let Some(channel) = fds.first() {
                    let line = format!("error the fork server could not fork: {e}\n");
                    let _ = nix::unistd::write(channel, line.as_bytes());
                }
            }
        }
        drop(fds);
    }
}

/// Reads one request; `None` at EOF or on a malformed one.
fn receive(sock: &mut UnixStream) -> Option<(Vec<OsString>, Vec<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [IoSliceMut::new(&mut len)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    if msg.bytes == 0 {
        return None;
    }
    let mut fds = Vec::new();
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(list) = c {
            for fd in list {
                // SAFETY: the kernel just installed these descriptors for this process.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.bytes != 4 || fds.len() != 2 {
        return None;
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_REQUEST {
        return None;
    }
    let mut payload = vec![0u8; len];
    sock.read_exact(&mut payload).ok()?;
    let args = payload
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    Some((args, fds))
}

/// In the forked helper: wire stdio and run the init helper. Returns its exit code.
fn helper(args: &[OsString], fds: &[OwnedFd]) -> i32 {
    let (Some(channel), Some(log)) = (fds.first(), fds.get(1)) else {
        return 125;
    };
    // SAFETY: dup2 onto the standard descriptors of this single-threaded process; the
    // sources stay open until the end of this function.
    let ok = unsafe {
        libc::dup2(channel.as_raw_fd(), 0) >= 0
            && libc::dup2(log.as_raw_fd(), 1) >= 0
            && libc::dup2(log.as_raw_fd(), 2) >= 0
    };
    if !ok {
        return 125;
    }
    // init::main closes every descriptor above 2 (the received ones included)
    let code = super::init::main_with_args_as(args, true);
    exit_code_number(code)
}

fn exit_code_number(code: std::process::ExitCode) -> i32 {
    if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    }
}

/// Closes every descriptor not in `keep`.
fn keep_only(keep: &[RawFd]) {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open.into_iter().filter(|fd| !keep.contains(fd)) {
        let _ = nix::unistd::close(fd);
    }
}
