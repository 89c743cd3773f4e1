//! `rcompose exec`: a command run in a running container sees what the container's own
//! command sees (hostname, pid, mount, network, IPC and UTS namespaces, environment, working
//! directory, user, capabilities, seccomp, cgroup), returns its exit code, gets stdin with
//! `-i`, a terminal with `-t`, and the signals sent to `rcompose exec`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, bin, project, rcompose, require, stderr,
    stdout,
};

/// `web` has three containers: `app` (root, with env and a working directory; its command
/// records its namespaces, confinement and cgroups in its /tmp), `side` (user 1000) and
/// `priv` (privileged).
const STACK: &str = r#"
pods:
  web:
    containers:
      - name: app
        command: [/bin/sh, -c, 'echo from-app > /tmp/mark; for ns in ipc mnt net pid uts; do readlink /proc/self/ns/$ns; done > /tmp/ns; grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status > /tmp/status; cat /proc/self/cgroup > /tmp/cgroup; touch /tmp/ready; exec sleep 1000']
        env: { GREETING: hello }
        working_dir: /var/rcompose-exec-wd
      - name: side
        user: "1000:1000"
        command: [/bin/sh, -c, 'grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status > /tmp/status; touch /tmp/ready; exec sleep 1000']
      - name: priv
        privileged: true
        command: [sleep, '1000']
"#;

/// A detached project of [`STACK`], taken down by [`Stack::down`] (or by its guard when a
/// test fails).
struct Stack {
    dir: TempDir,
    p: String,
    _guard: Cleanup,
}

impl Stack {
    fn up(name: &str) -> Stack {
        Stack::up_with(name, STACK, &["app", "side"])
    }

    /// Starts `manifest` and waits until the containers `ready` of pod `web` made
    /// /tmp/ready.
    fn up_with(name: &str, manifest: &str, ready: &[&str]) -> Stack {
        require(&[Need::Root]);
        let dir = TempDir::new(name);
        let p = project(name);
        dir.write("rcompose.yaml", manifest);
        let guard = Cleanup(p.clone());
        assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
        let stack = Stack {
            dir,
            p,
            _guard: guard,
        };
        for c in ready {
            let deadline = Instant::now() + Duration::from_secs(10);
            while stack
                .exec(&["-c", c, "web", "test", "-f", "/tmp/ready"])
                .status
                .code()
                != Some(0)
            {
                assert!(
                    Instant::now() < deadline,
                    "container `{c}` did not get ready"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        stack
    }

    /// `rcompose -p P exec ARGS`, stdin /dev/null.
    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["-p", self.p.as_str(), "exec"];
        full.extend_from_slice(args);
        rcompose(self.dir.path(), &full)
    }

    /// `exec` that must succeed; its stdout.
    #[track_caller]
    fn out(&self, args: &[&str]) -> String {
        let o = self.exec(args);
        assert_code(&o, 0);
        stdout(&o)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(["-p", &self.p, "exec"])
            .args(args)
            .current_dir(self.dir.path());
        cmd
    }

    /// The host pid of the init of `web-1/<container>`.
    fn init_pid(&self, container: &str) -> i64 {
        let out = rcompose(self.dir.path(), &["-p", &self.p, "ps", "--format", "json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["container"] == container)
            .and_then(|r| r["pid"].as_i64())
            .unwrap()
    }

    fn down(self) {
        assert_code(
            &rcompose(self.dir.path(), &["-p", &self.p, "down", "-t", "1"]),
            0,
        );
        assert_no_trace(&self.p);
    }
}

/// Waits for `child` at most 20 s.
fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rcompose exec did not return");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn exec_enters_the_containers_namespaces_cgroup_and_confinement() {
    let s = Stack::up("exec-ns");
    let app = ["-c", "app", "web"];
    let run = |cmd: &[&str]| s.out(&[&app[..], cmd].concat());
    // UTS: the pod's hostname
    assert_eq!(run(&["cat", "/proc/sys/kernel/hostname"]), "web-1\n");
    // every namespace is the command's own (it recorded them at its start)
    let ns = run(&[
        "sh",
        "-c",
        "for ns in ipc mnt net pid uts; do readlink /proc/self/ns/$ns; done",
    ]);
    assert_eq!(ns, run(&["cat", "/tmp/ns"]));
    assert_eq!(ns.lines().count(), 5, "{ns}");
    // and, seen from the host, the init's network namespace
    let host_net = std::fs::read_link(format!("/proc/{}/ns/net", s.init_pid("app"))).unwrap();
    assert!(
        ns.lines().any(|l| l == host_net.to_string_lossy()),
        "{ns} lacks {host_net:?}"
    );
    // pid: PID 1 is the container's init, PID 2 its command, and little else is visible
    // (with an external runtime the command is PID 1)
    let command_pid = if crate::test::external_runtime().is_some() {
        1
    } else {
        assert_eq!(run(&["cat", "/proc/1/comm"]), "rcompose-init\n");
        2
    };
    assert_eq!(
        run(&[
            "sh",
            "-c",
            &format!("tr '\\0' ' ' < /proc/{command_pid}/cmdline")
        ]),
        "sleep 1000 "
    );
    let procs: usize = run(&["sh", "-c", "ls /proc | grep -c '^[0-9]'"])
        .trim()
        .parse()
        .unwrap();
    assert!(procs <= 6, "host processes must be invisible, saw {procs}");
    // mount: the command's /tmp (a tmpfs of the container's mount namespace)
    assert_eq!(run(&["cat", "/tmp/mark"]), "from-app\n");
    // environment and working directory: the container's, or the ones given
    assert_eq!(
        run(&["sh", "-c", "echo \"$GREETING $HOSTNAME $HOME $(pwd)\""]),
        "hello web-1 /root /var/rcompose-exec-wd\n"
    );
    assert_eq!(
        s.out(&[
            "-e",
            "GREETING=bye",
            "-e",
            "EXTRA=x y",
            "-w",
            "/etc",
            "-c",
            "app",
            "web",
            "sh",
            "-c",
            "echo \"$GREETING $EXTRA $(pwd)\"",
        ]),
        "bye x y /etc\n"
    );
    // confinement: the same capability sets, no_new_privs and seccomp filter
    let status = run(&[
        "grep",
        "-E",
        "^(Cap|NoNewPrivs|Seccomp)",
        "/proc/self/status",
    ]);
    assert_eq!(
        crate::test::comparable_status(&status),
        crate::test::comparable_status(&run(&["cat", "/tmp/status"]))
    );
    assert!(status.contains("Seccomp:\t2\n"), "{status}");
    assert!(status.contains("CapEff:\t00000000a80425fb\n"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1\n"), "{status}");
    // a privileged container's exec is not confined either
    let status = s.out(&[
        "-c",
        "priv",
        "web",
        "grep",
        "-E",
        "^(NoNewPrivs|Seccomp):",
        "/proc/self/status",
    ]);
    assert_eq!(status, "NoNewPrivs:\t0\nSeccomp:\t0\n");
    // cgroup: every cgroup of rcompose's the command is in, and the container's own
    let cgroups = run(&["cat", "/proc/self/cgroup"]);
    let own = format!(":/rcompose/{}/web-1/app", s.p);
    assert!(cgroups.lines().any(|l| l.ends_with(&own)), "{cgroups}");
    for line in run(&["cat", "/tmp/cgroup"])
        .lines()
        .filter(|l| l.contains("/rcompose/"))
    {
        assert!(
            cgroups.lines().any(|l| l == line),
            "{line} not in {cgroups}"
        );
    }
    s.down();
}

#[test]
fn exec_runs_as_the_containers_user_unless_told_otherwise() {
    let s = Stack::up("exec-user");
    assert_eq!(
        s.out(&["-c", "side", "web", "sh", "-c", "id -u; id -g"]),
        "1000\n1000\n"
    );
    let status = s.out(&[
        "-c",
        "side",
        "web",
        "grep",
        "-E",
        "^(Cap|NoNewPrivs|Seccomp)",
        "/proc/self/status",
    ]);
    assert_eq!(
        crate::test::comparable_status(&status),
        crate::test::comparable_status(&s.out(&["-c", "side", "web", "cat", "/tmp/status"]))
    );
    assert!(status.contains("CapEff:\t0000000000000000\n"), "{status}");
    assert!(status.contains("Seccomp:\t2\n"), "{status}");
    assert_eq!(s.out(&["-c", "side", "-u", "0", "web", "id", "-u"]), "0\n");
    // a terminal belongs to the command's user
    assert_eq!(
        s.out(&["-t", "-c", "side", "web", "sh", "-c", "stat -c %u $(tty)"]),
        "1000\r\n"
    );
    assert_eq!(
        s.out(&[
            "-c",
            "app",
            "-u",
            "1000:1000",
            "web",
            "sh",
            "-c",
            "id -u; id -g"
        ]),
        "1000\n1000\n"
    );
    s.down();
}

#[test]
fn exec_returns_the_commands_exit_code() {
    let s = Stack::up("exec-code");
    assert_code(&s.exec(&["-c", "app", "web", "sh", "-c", "exit 7"]), 7);
    // killed by a signal: 128 + n, as Docker
    assert_code(
        &s.exec(&["-c", "app", "web", "sh", "-c", "kill -KILL $$"]),
        137,
    );
    let o = s.exec(&["-c", "app", "web", "no-such-program-rc"]);
    assert_code(&o, 127);
    assert_eq!(
        stderr(&o),
        "error: cannot exec in container `web-1/app`: `no-such-program-rc`: executable file not found in $PATH\n"
    );
    let o = s.exec(&["-c", "app", "web", "/etc"]);
    assert_code(&o, 126);
    assert_eq!(
        stderr(&o),
        "error: cannot exec in container `web-1/app`: failed to run `/etc`: permission denied\n"
    );
    let o = s.exec(&["-c", "app", "-u", "no-such-user-rc", "web", "true"]);
    assert_code(&o, 126);
    assert!(stderr(&o).contains("no-such-user-rc"), "{}", stderr(&o));
    let o = s.exec(&["-c", "app", "-w", "/no-such-dir-rc", "web", "true"]);
    assert_code(&o, 126);
    assert_eq!(
        stderr(&o),
        "error: cannot exec in container `web-1/app`: failed to enter working directory `/no-such-dir-rc`: no such file or directory\n"
    );
    s.down();
}

#[test]
fn exec_passes_stdin_only_with_i() {
    let s = Stack::up("exec-stdin");
    let feed = |args: &[&str]| {
        let mut child = s
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
        let status = wait(&mut child);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (status.code(), out)
    };
    assert_eq!(
        feed(&["-i", "-c", "app", "web", "cat"]),
        (Some(0), "hi\n".into())
    );
    // without -i the command reads /dev/null
    assert_eq!(feed(&["-c", "app", "web", "cat"]), (Some(0), String::new()));
    s.down();
}

/// Reads what `master` holds until it stays quiet for 300 ms.
fn drain(master: &std::os::fd::OwnedFd) -> String {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut out = Vec::new();
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(300u16)).unwrap() == 0 {
            break;
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).replace('\r', "")
}

/// Reads from `master` until `out` (with `\r` removed) contains `want`, at most 20 s.
fn read_until(master: &std::os::fd::OwnedFd, out: &mut String, want: &str) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.contains(want) {
        assert!(Instant::now() < deadline, "no {want:?} in {out:?}");
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).unwrap() == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        let n = nix::unistd::read(master, &mut buf).unwrap();
        out.push_str(&String::from_utf8_lossy(&buf[..n]).replace('\r', ""));
    }
}

#[test]
fn exec_with_t_gets_a_terminal_of_the_callers_size_and_restores_the_callers() {
    use nix::sys::termios::tcgetattr;
    let s = Stack::up("exec-tty");
    // the caller's terminal: a pty of this test, 33 x 77
    let mut size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let before = tcgetattr(&pty.slave).unwrap();
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    let mut child = s
        .command(&[
            "-i",
            "-t",
            "-c",
            "app",
            "web",
            "--",
            "sh",
            "-c",
            "tty; stty size; test -t 0 && test -t 1 && echo on-a-tty; read line; echo \"got $line\"; stty size; exit 3",
        ])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    let mut out = String::new();
    read_until(&pty.master, &mut out, "on-a-tty\n");
    // raw while it runs: no echo, no line editing on the caller's side
    let during = tcgetattr(&pty.slave).unwrap();
    assert!(
        !during
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ECHO)
    );
    assert!(
        !during
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ICANON)
    );
    // the caller's window grows (SIGWINCH, as a terminal sends it), then a line of input
    size.ws_row = 40;
    size.ws_col = 100;
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from a live local.
    let rc = unsafe { libc::ioctl(pty.master.as_raw_fd(), libc::TIOCSWINSZ, &raw const size) };
    assert_eq!(rc, 0);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
    nix::unistd::write(&pty.master, b"hello\n").unwrap();
    let status = wait(&mut child);
    out.push_str(&drain(&pty.master));
    assert_eq!(status.code(), Some(3), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let n = lines[0]
        .strip_prefix("/dev/pts/")
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(n.parse::<u32>().is_ok(), "{out:?}");
    // the container's terminal echoes the input line
    assert_eq!(
        lines[1..],
        ["33 77", "on-a-tty", "hello", "got hello", "40 100"],
        "{out:?}"
    );
    // restored after
    let after = tcgetattr(&pty.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);

    // -t alone, output to a pipe: a terminal all the same, nothing read from stdin
    let o = s.exec(&["-t", "-c", "app", "web", "sh", "-c", "tty"]);
    assert_code(&o, 0);
    assert!(stdout(&o).starts_with("/dev/pts/"), "{}", stdout(&o));
    // -i -t with piped input: the end of the input ends the terminal's input too
    let mut child = s
        .command(&["-i", "-t", "-c", "app", "web", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let status = wait(&mut child);
    let mut piped = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut piped)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{piped}");
    assert_eq!(piped.replace('\r', ""), "piped\npiped\n", "echo, then cat");
    s.down();
}

#[test]
fn signals_to_exec_reach_the_command() {
    let s = Stack::up("exec-signal");
    let mut child = s
        .command(&[
            "-c",
            "app",
            "web",
            "sh",
            "-c",
            "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait(&mut child);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!((status.code(), rest.as_str()), (Some(9), "got-term\n"));
    s.down();
}

#[test]
fn exec_names_what_is_missing() {
    let manifest =
        format!("{STACK}  job:\n    containers:\n      - name: c\n        command: [/bin/true]\n");
    let s = Stack::up_with("exec-errors", &manifest, &["app"]);
    let p = s.p.clone();
    let hint = "hint: `rcompose ps` lists the containers and their states\n";
    let fails = |args: &[&str], message: &str, hint: &str| {
        let o = s.exec(args);
        assert_code(&o, 1);
        assert_eq!(stderr(&o), format!("error: {message}\n{hint}"));
        assert_eq!(stdout(&o), "");
    };
    fails(
        &["nope", "true"],
        &format!("project `{p}` has no pod `nope` (its pods: `job`, `web`)"),
        hint,
    );
    fails(
        &["web", "true"],
        "pod `web` has several containers; name one with `-c`: `app`, `side`, `priv`",
        "",
    );
    fails(
        &["-c", "nope", "web", "true"],
        "pod `web` has no container `nope` (its containers: `app`, `side`, `priv`)",
        hint,
    );
    fails(
        &["-c", "app", "web-2", "true"],
        "pod `web` has no replica 2 (its replicas: `web-1`)",
        hint,
    );
    // a container that has completed
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = s.exec(&["job", "true"]);
        if o.status.code() == Some(1) {
            assert_eq!(
                stderr(&o),
                format!("error: container `job-1` is not running (state: exited)\n{hint}")
            );
            break;
        }
        assert!(Instant::now() < deadline, "job-1 did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    // usage errors are clap's
    assert_code(&s.exec(&["-e", "NOVALUE", "-c", "app", "web", "true"]), 2);
    s.down();
    // a project that is down
    let o = rcompose(
        Path::new("/"),
        &["-p", &p, "exec", "-c", "app", "web", "true"],
    );
    assert_code(&o, 1);
    assert_eq!(
        stderr(&o),
        format!("error: project `{p}` is not up\nhint: start it with `rcompose -p {p} up -d`\n")
    );
    assert_no_trace(&p);
}

#[test]
fn exec_without_root_is_one_clear_sentence_and_exit_code_4() {
    require(&[Need::Root, Need::Tool("setpriv")]);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin(),
            "-p",
            "rct-exec-noroot",
            "exec",
            "web",
            "true",
        ])
        .current_dir("/")
        .output()
        .unwrap();
    assert_code(&out, 4);
    assert_eq!(
        stderr(&out),
        "error: rcompose exec must run as root to enter a container's namespaces\n\
         hint: run rcompose as root on a Linux machine with cgroups, overlayfs and network namespaces (README: \"What runs where\")\n"
    );
}
