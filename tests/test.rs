//! The test harness: a temporary project directory, the built binary, exact assertions, and
//! checks that a project left nothing behind.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The rcompose binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rcompose")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique, valid project name for one test.
pub fn project(test: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("rct-{}-{}-{n}", test.replace('_', "-"), std::process::id())
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("rcompose-test-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs rcompose with `args` in `dir` (without the variables that name the manifest's files).
pub fn rcompose(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("RCOMPOSE_FILE")
        .env_remove("COMPOSE_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("failed to run rcompose")
}

/// Runs rcompose with `args` in `dir`, `input` on its standard input (`-f -`), without the
/// variables that name the manifest's files or Compose profiles.
pub fn rcompose_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("RCOMPOSE_FILE")
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROFILES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run rcompose");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // rcompose may refuse before it reads: a broken pipe here is its answer, not a failure
    let _ = pipe.write_all(input.as_bytes());
    drop(pipe);
    child
        .wait_with_output()
        .expect("failed to wait for rcompose")
}

/// Project `p`'s row of `ls --format json` (which must succeed and list it).
pub fn ls_row(dir: &Path, p: &str) -> serde_json::Value {
    let out = rcompose(dir, &["ls", "--format", "json"]);
    assert_code(&out, 0);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ls --format json is not JSON ({e}): {}", stdout(&out)));
    listed
        .into_iter()
        .find(|r| r["name"] == p)
        .unwrap_or_else(|| panic!("{p} is not listed by ls: {}", stdout(&out)))
}

/// Runs `tool` with `args` (stdin /dev/null), which must succeed; its stderr otherwise.
pub fn run_ok(tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rows of `ps --format json` of project `p` (which must succeed), as JSON values.
pub fn ps_rows(dir: &Path, p: &str) -> Vec<serde_json::Value> {
    let out = rcompose(dir, &["-p", p, "ps", "--format", "json"]);
    assert_code(&out, 0);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ps --format json is not JSON ({e}): {}", stdout(&out)))
}

/// (`pod-N`, node, running and ready) of each replica, from `ps --format json`.
pub fn placements(dir: &Path, p: &str) -> Vec<(String, String, bool)> {
    ps_rows(dir, p)
        .iter()
        .map(|r| {
            (
                format!("{}-{}", r["pod"].as_str().unwrap(), r["replica"]),
                r["node"].as_str().unwrap_or("").to_string(),
                r["state"] == "running" && r["ready"] == true,
            )
        })
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and prints both streams when it differs.
#[track_caller]
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "unexpected exit status\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Removes leading indentation common to every non-empty line (for exact expected output).
pub fn unindent(s: &str) -> String {
    let lines: Vec<&str> = s.lines().skip_while(|l| l.trim().is_empty()).collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = lines
        .iter()
        .map(|l| if l.len() >= indent { &l[indent..] } else { "" })
        .collect::<Vec<_>>()
        .join("\n");
    out = out.trim_end().to_string();
    out.push('\n');
    out
}

/// Prerequisites of privileged tests.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    Root,
    Busybox,
    /// A program from apt (podman, skopeo, openssl, ...), found in `PATH`.
    Tool(&'static str),
}

/// The external runtime (`crun`, `runc`) `RCOMPOSE_RUNTIME` makes every `up` of the tests
/// use (CI runs the privileged tests a second time with `crun`), or `None` for the built-in
/// one. With an external runtime the command is the container's PID 1 (no rcompose-init),
/// so a command that does not handle SIGTERM is killed after the grace period, and a few
/// tests expect that.
pub fn external_runtime() -> Option<String> {
    std::env::var("RCOMPOSE_RUNTIME")
        .ok()
        .filter(|r| !r.is_empty() && r != "builtin")
}

/// The exit code of a `sleep` that the teardown stopped: 143 (SIGTERM, forwarded by
/// rcompose-init), or 137 with an external runtime, where `sleep` is PID 1 and ignores
/// SIGTERM, so SIGKILL comes after the grace period.
pub fn stopped_sleep_code() -> i32 {
    if external_runtime().is_some() {
        137
    } else {
        143
    }
}

/// `/proc/PID/status` lines without `Seccomp_filters:` when an external runtime runs the
/// containers: it installs its seccomp profile as one filter, rcompose as two (the same
/// refusals: privileged/oci.rs); everything else must be equal.
pub fn comparable_status(text: &str) -> String {
    text.lines()
        .filter(|l| external_runtime().is_none() || !l.starts_with("Seccomp_filters:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Panics naming what is missing: privileged tests never skip silently.
#[track_caller]
pub fn require(needs: &[Need]) {
    for need in needs {
        match need {
            Need::Root => assert!(
                nix::unistd::geteuid().is_root(),
                "this test needs root (namespaces, mounts, cgroups): run `cargo test` as root, as CI does"
            ),
            Need::Busybox => assert!(
                busybox().is_some(),
                "this test needs a static busybox (apt-get install busybox-static)"
            ),
            Need::Tool(name) => assert!(
                in_path(name),
                "this test needs `{name}` (apt-get install {name}; .ci/run installs it)"
            ),
        }
    }
}

/// Whether `name` is an executable file in a directory of `PATH` (not every tool has a
/// `--version`: `openssl version` is a command of its own).
pub fn in_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// A static busybox binary, if installed.
pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Builds a minimal busybox root file system in `dir`.
pub fn busybox_rootfs(dir: &Path) {
    let bb = busybox().expect("busybox");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy(&bb, dir.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "cat", "ls", "hostname", "sleep", "true", "id", "touch", "grep", "wc", "ps",
        "dd", "test",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

/// A project's host footprint: state dir, mounts, cgroups, processes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub state_dir: bool,
    pub mounts: Vec<String>,
    pub cgroups: Vec<String>,
    pub processes: Vec<String>,
    /// The project's bridge and its replicas' host-side veths.
    pub links: Vec<String>,
}

/// What of `project` is on the machine right now.
pub fn footprint(project: &str) -> Footprint {
    let dir = format!("/run/rcompose/{project}");
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_string)
        .collect();
    let mut cgroups = Vec::new();
    for entry in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = entry.path().join("rcompose").join(project);
        if p.exists() {
            cgroups.push(p.display().to_string());
        }
    }
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let p = Path::new("/sys/fs/cgroup/rcompose").join(project);
        if p.exists() {
            cgroups.push(p.display().to_string());
        }
    }
    let mut processes = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cgroup = fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let in_cgroup = cgroup.contains(&format!("rcompose/{project}/"));
        if in_cgroup || cmd.contains(&dir) || (cmd.contains("__supervise") && cmd.contains(project))
        {
            processes.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
        }
    }
    let bridge = rcompose::network::bridge_name(project);
    let veths = rcompose::network::veth_prefix(project);
    let links = fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| *n == bridge || n.starts_with(&veths))
        .collect();
    Footprint {
        state_dir: Path::new(&dir).exists(),
        mounts,
        cgroups,
        processes,
        links,
    }
}

/// Asserts that nothing of `project` is left.
#[track_caller]
pub fn assert_no_trace(project: &str) {
    // the kernel removes a veth whose namespace is gone a moment later (100-300 ms here)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut left = footprint(project);
    while !left.links.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        left = footprint(project);
    }
    assert_eq!(
        left,
        Footprint::default(),
        "project `{project}` left something behind"
    );
}

/// Removes a project whatever happened (used by guards).
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(bin())
            .args(["-p", &self.0, "down", "-t", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A free port on 127.0.0.1 (for a moment).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / (HTTP/1.0) on 127.0.0.1:`port`, 15 s at most: the body of a 200, or the error.
pub fn http_get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .ok_or_else(|| format!("no HTTP answer: {out:?}"))?;
    if out.starts_with("HTTP/1.0 200") {
        Ok(body)
    } else {
        Err(format!("answer {out:?}"))
    }
}

/// Calls `get` every 50 ms until `ok` holds of what it returns, which is returned; fails
/// naming `what` and the last value after 10 s.
#[track_caller]
pub fn poll<T: std::fmt::Debug>(
    what: &str,
    mut get: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = get();
        if ok(&value) {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {value:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
