//! External runtimes (`runtime::oci`): real containers of the `host` image started by crun
//! and by runc from the `ContainerConfig` the built-in runtime gets, with the same
//! confinement. Each test runs twice (modules `crun` and `runc`), each run in a process of
//! its own that is a child subreaper, as the supervisor is (see [`in_own_process`]).

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rcompose::plan::desired::Resources;
use rcompose::runtime::cgroup::{self, CgroupVersion};
use rcompose::runtime::oci::{self, ExternalRuntime, Kind};
use rcompose::runtime::rootfs::RootfsSpec;
use rcompose::runtime::{ContainerConfig, Mount, Started, become_subreaper, netns};

use crate::test::{Need, assert_no_trace, project, require};

/// Docker's default capability set (the manifest's default).
const DEFAULT_CAPS: u64 = 0xa804_25fb;

/// Runs `body` in a process of its own: this test binary again, filtered to the test
/// `name` (its path below this module), which becomes a child subreaper like the supervisor.
/// Making the whole test binary a subreaper would leave other tests' orphans as its zombies.
fn in_own_process(name: &str, body: impl FnOnce()) {
    const VAR: &str = "RCOMPOSE_OCI_TEST";
    if std::env::var(VAR).as_deref() == Ok(name) {
        become_subreaper().unwrap();
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .arg(format!("privileged::oci::{name}"))
        .args(["--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "`{name}` failed in its own process\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One test's containers, all in pod `pod-1` of a project of its own, removed on drop with
/// everything the project's teardown would remove.
struct Fixture {
    rt: ExternalRuntime,
    project: String,
    /// `/run/rcompose/<project>`, where `assert_no_trace` looks.
    base: PathBuf,
    /// The runtime's state (`--root`).
    state: PathBuf,
    /// Started containers: id and bundle directory.
    containers: Vec<(String, PathBuf)>,
}

impl Fixture {
    fn new(kind: Kind, test: &str) -> Self {
        require(&[Need::Root, Need::Tool(kind.name())]);
        let rt = ExternalRuntime::find(kind).unwrap();
        let project = project(&format!("oci-{kind}-{test}"));
        let base = PathBuf::from(format!("/run/rcompose/{project}"));
        fs::create_dir_all(&base).unwrap();
        Self {
            rt,
            state: base.join("oci"),
            project,
            base,
            containers: Vec::new(),
        }
    }

    /// The pod's network namespace pin.
    fn netns(&self) -> PathBuf {
        self.base.join("netns.pod-1")
    }

    fn cgroup(&self, container: &str) -> String {
        format!("rcompose/{}/pod-1/{container}", self.project)
    }

    fn id(&self, container: &str) -> String {
        format!("{}-pod-1-{container}", self.project)
    }

    /// A container of the `host` image in the pod, with Docker's default confinement.
    fn config(&self, container: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            name: format!("pod-1/{container}"),
            hostname: "pod-1".into(),
            rootfs: RootfsSpec {
                host: true,
                lowers: Vec::new(),
                dir: self.base.join("c/pod-1").join(container),
            },
            netns: Some(self.netns()),
            command: command.iter().map(|s| (*s).to_string()).collect(),
            env: vec![("FOO".into(), "bar".into())],
            working_dir: None,
            user: None,
            init: None,
            privileged: false,
            capabilities: DEFAULT_CAPS,
            mounts: Vec::new(),
            read_only: false,
            tty: false,
        }
    }

    fn log_path(&self, container: &str) -> PathBuf {
        self.base.join(format!("{container}.log"))
    }

    /// Starts `config` (the pod's first container makes the pod's namespaces).
    fn start(&mut self, container: &str, config: &ContainerConfig, limits: &Resources) -> Started {
        let log: OwnedFd = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(container))
            .unwrap()
            .into();
        let create = (!self.netns().exists()).then(|| self.netns());
        let id = self.id(container);
        self.containers
            .push((id.clone(), config.rootfs.dir.clone()));
        oci::spawn(
            &self.rt,
            &self.state,
            &id,
            config,
            limits,
            log,
            &self.cgroup(container),
            create.as_deref(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{} failed to start `{container}`: {}\n--- log\n{}",
                self.rt.kind(),
                chain(&e),
                self.log(container)
            )
        })
    }

    fn log(&self, container: &str) -> String {
        fs::read_to_string(self.log_path(container)).unwrap_or_default()
    }

    /// Runs `config` to its end: its exit status (seen by this subreaper) and its output.
    fn run(&mut self, container: &str, config: &ContainerConfig) -> (WaitStatus, String) {
        let started = self.start(container, config, &Resources::default());
        let status = reap(started.pid, Duration::from_secs(30));
        (status, self.log(container))
    }

    /// Runs a command in a default container and returns its output, asserting it exited 0.
    fn output(&mut self, container: &str, config: &ContainerConfig) -> String {
        let (status, out) = self.run(container, config);
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "unexpected {status:?}\n--- log\n{out}"
        );
        out
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for (id, dir) in &self.containers {
            let _ = oci::remove(&self.rt, &self.state, id, dir);
        }
        // reap whatever of ours is left (killed containers)
        while let Ok(s) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            if s == WaitStatus::StillAlive {
                break;
            }
        }
        let _ = netns::remove(&self.netns());
        let all = oci::hierarchies(&fs::read_to_string("/proc/self/mountinfo").unwrap());
        let subtree = format!("rcompose/{}", self.project);
        let _ = cgroup::destroy_subtree(&all, &subtree);
        cgroup::remove_empty_parents(&all, Path::new(&subtree));
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// Waits (as the subreaper) for the container's first process to end.
fn reap(pid: i32, timeout: Duration) -> WaitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => {
                assert!(Instant::now() < deadline, "container {pid} did not exit");
                std::thread::sleep(Duration::from_millis(10));
            }
            status => return status,
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The value of `field` in /proc/<pid>/status-like text.
fn field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no `{field}` in\n{status}"))
        .trim()
}

fn output_and_exit_code_reach_the_caller(kind: Kind) {
    let mut f = Fixture::new(kind, "exit");
    let mut cfg = f.config(
        "app",
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; echo \"$PATH|$HOSTNAME|$HOME|$FOO|$(pwd)|$(hostname)\"; exit 7",
        ],
    );
    cfg.working_dir = Some("/srv/rcompose-oci-workdir".into());
    let (status, out) = f.run("app", &cfg);
    assert!(
        matches!(status, WaitStatus::Exited(_, 7)),
        "{status:?}\n{out}"
    );
    assert_eq!(
        out,
        "out\nerr\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\
         |pod-1|/root|bar|/srv/rcompose-oci-workdir|pod-1\n"
    );
}

fn command_runs_as_the_configured_user(kind: Kind) {
    let mut f = Fixture::new(kind, "user");
    let mut cfg = f.config(
        "app",
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; echo $HOME; grep -E '^Cap(Eff|Bnd)' /proc/self/status",
        ],
    );
    cfg.user = Some("nobody".into());
    let out = f.output("app", &cfg);
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let nobody: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .unwrap()
        .split(':')
        .collect();
    assert_eq!(
        out,
        format!(
            "{uid}\n{gid}\n{gid}\n{home}\nCapEff:\t0000000000000000\nCapBnd:\t00000000a80425fb\n",
            uid = nobody[2],
            gid = nobody[3],
            home = nobody[5]
        )
    );
}

fn read_only_mounts_and_root_refuse_writes(kind: Kind) {
    let mut f = Fixture::new(kind, "ro");
    let data = f.base.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "volume\n").unwrap();
    let mut cfg = f.config(
        "app",
        &[
            "sh",
            "-c",
            "cat /data/f; touch /data/x 2>/dev/null || echo data-ro; \
             touch /newfile 2>/dev/null || echo root-ro; \
             touch /tmp/x && echo tmp-rw; touch /scratch/x && echo scratch-rw; \
             cat /etc/hostname",
        ],
    );
    cfg.read_only = true;
    cfg.mounts = vec![
        Mount {
            source: Some(data.clone()),
            target: "/data".into(),
            read_only: true,
            size: None,
            replace: false,
        },
        Mount {
            source: None,
            target: "/scratch".into(),
            read_only: false,
            size: Some(1 << 20),
            replace: false,
        },
    ];
    let out = f.output("app", &cfg);
    assert_eq!(out, "volume\ndata-ro\nroot-ro\ntmp-rw\nscratch-rw\npod-1\n");
    assert!(!data.join("x").exists());
}

fn capabilities_are_dropped_to_the_configured_set(kind: Kind) {
    let mut f = Fixture::new(kind, "caps");
    let cfg = f.config("app", &["cat", "/proc/self/status"]);
    let out = f.output("app", &cfg);
    assert_eq!(field(&out, "CapEff"), "00000000a80425fb");
    assert_eq!(field(&out, "CapPrm"), "00000000a80425fb");
    assert_eq!(field(&out, "CapBnd"), "00000000a80425fb");
    assert_eq!(field(&out, "CapInh"), "0000000000000000");
    assert_eq!(field(&out, "NoNewPrivs"), "1");
    assert_eq!(field(&out, "Seccomp"), "2");
}

fn seccomp_refuses_what_the_builtin_filter_refuses(kind: Kind) {
    let mut f = Fixture::new(kind, "seccomp");
    let cfg = f.config(
        "app",
        &[
            "python3",
            "-c",
            "import ctypes\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             def errno(nr, *args):\n\
             \x20   r = libc.syscall(nr, *args)\n\
             \x20   return ctypes.get_errno() if r < 0 else 0\n\
             print('unshare', errno(272, 0x00020000))\n\
             print('keyctl', errno(250, 0, 0))\n\
             print('clone3', errno(435, 0, 0))\n",
        ],
    );
    // CAP_SYS_ADMIN lifts the refusal of unshare (as Docker's profile), not of keyctl
    let out = f.output("app", &cfg);
    assert_eq!(out, "unshare 1\nkeyctl 1\nclone3 38\n");
    let mut admin = f.config(
        "admin",
        &cfg.command.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    admin.capabilities = DEFAULT_CAPS | 1 << 21;
    let out = f.output("admin", &admin);
    assert_eq!(out, "unshare 0\nkeyctl 1\nclone3 22\n");
}

fn proc_paths_are_masked(kind: Kind) {
    let mut f = Fixture::new(kind, "mask");
    // of the masked paths, those this kernel has
    let masked: Vec<&str> = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/acpi",
        "/sys/firmware",
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .collect();
    assert!(
        masked.contains(&"/proc/keys"),
        "no /proc/keys on this kernel"
    );
    let script = format!(
        "for p in {}; do if [ -d $p ]; then echo \"$p $(ls -A $p | wc -l)\"; \
         else echo \"$p $(stat -c '%F %t:%T' $p)\"; fi; done; \
         grep -c ' /proc/sys ro,' /proc/self/mountinfo; \
         grep -c ' /sys ro,' /proc/self/mountinfo; ls /dev",
        masked.join(" ")
    );
    let cfg = f.config("app", &["sh", "-c", &script]);
    let out = f.output("app", &cfg);
    let lines: Vec<&str> = out.lines().collect();
    for (line, path) in lines.iter().zip(&masked) {
        let expected = if Path::new(path).is_dir() {
            format!("{path} 0")
        } else {
            format!("{path} character special file 1:3")
        };
        assert_eq!(*line, expected, "{out}");
    }
    let n = masked.len();
    assert_eq!(lines[n..n + 2], ["1", "1"], "{out}");
    for node in [
        "full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero", "fd", "stdin",
        "stdout", "stderr",
    ] {
        assert!(lines[n + 2..].contains(&node), "no /dev/{node}: {out}");
    }
    let mut privileged = f.config(
        "privileged",
        &[
            "sh",
            "-c",
            "stat -c '%F' /proc/keys; grep -E '^(CapEff|Seccomp):' /proc/self/status",
        ],
    );
    privileged.privileged = true;
    let out = f.output("privileged", &privileged);
    let status = fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        out,
        format!(
            "regular empty file\nCapEff:\t{}\nSeccomp:\t0\n",
            field(&status, "CapBnd")
        )
    );
}

fn cgroup_limits_apply_to_the_container(kind: Kind) {
    let mut f = Fixture::new(kind, "limits");
    let cfg = f.config("app", &["sleep", "60"]);
    let limits = Resources {
        cpu_millis: Some(500),
        memory_bytes: Some(64 << 20),
        pids: Some(50),
    };
    let started = f.start("app", &cfg, &limits);
    let path = f.cgroup("app");
    let own = fs::read_to_string(format!("/proc/{}/cgroup", started.pid)).unwrap();
    let read = |file: &str| fs::read_to_string(file).unwrap().trim().to_string();
    match cgroup::detect_version() {
        CgroupVersion::V1 => {
            for controller in ["memory", "pids", "cpu"] {
                assert!(
                    own.lines().any(|l| l.ends_with(&format!(":/{path}"))
                        && l.split(':')
                            .nth(1)
                            .unwrap()
                            .split(',')
                            .any(|c| c == controller)),
                    "not in the {controller} cgroup `{path}`: {own}"
                );
            }
            let m = format!("/sys/fs/cgroup/memory/{path}");
            assert_eq!(read(&format!("{m}/memory.limit_in_bytes")), "67108864");
            assert_eq!(read(&format!("/sys/fs/cgroup/pids/{path}/pids.max")), "50");
            assert_eq!(
                read(&format!("/sys/fs/cgroup/cpu/{path}/cpu.cfs_quota_us")),
                "50000"
            );
        }
        CgroupVersion::V2 => {
            assert!(own.contains(&format!("0::/{path}\n")), "{own}");
            let d = format!("/sys/fs/cgroup/{path}");
            assert_eq!(read(&format!("{d}/memory.max")), "67108864");
            assert_eq!(read(&format!("{d}/pids.max")), "50");
            assert_eq!(read(&format!("{d}/cpu.max")), "50000 100000");
        }
    }
}

fn containers_of_a_pod_share_its_namespaces(kind: Kind) {
    let mut f = Fixture::new(kind, "pod");
    let first = f.config(
        "first",
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts; hostname; \
             echo shared > /dev/shm/mark; echo ready; sleep 60",
        ],
    );
    f.start("first", &first, &Resources::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f.log("first").contains("ready") {
        assert!(
            Instant::now() < deadline,
            "first never got ready: {}",
            f.log("first")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = f.config(
        "second",
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/net /proc/self/ns/ipc /proc/self/ns/uts; hostname; \
             cat /dev/shm/mark; readlink /proc/self/ns/pid /proc/self/ns/mnt",
        ],
    );
    let out = f.output("second", &second);
    let first_out = f.log("first");
    let pins = netns::PodPins::of(&f.netns());
    let inode = |p: &Path| fs::metadata(p).unwrap().ino();
    let expected = format!(
        "net:[{}]\nipc:[{}]\nuts:[{}]\npod-1\n",
        inode(&pins.net),
        inode(&pins.ipc),
        inode(&pins.uts)
    );
    assert!(out.starts_with(&format!("{expected}shared\n")), "{out}");
    assert_eq!(first_out, format!("{expected}ready\n"));
    // but each container has its own pid and mount namespaces
    let own = |ns: &str| fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
    assert!(!out.contains(&own("pid").display().to_string()), "{out}");
    assert!(!out.contains(&own("mnt").display().to_string()), "{out}");
}

fn remove_leaves_no_trace(kind: Kind) {
    let mut f = Fixture::new(kind, "remove");
    let cfg = f.config("app", &["sleep", "60"]);
    let started = f.start(
        "app",
        &cfg,
        &Resources {
            memory_bytes: Some(64 << 20),
            ..Resources::default()
        },
    );
    let id = f.id("app");
    let dir = cfg.rootfs.dir.clone();
    assert!(f.state.join(&id).exists());
    oci::remove(&f.rt, &f.state, &id, &dir).unwrap();
    assert_eq!(
        reap(started.pid, Duration::from_secs(10)),
        WaitStatus::Signaled(Pid::from_raw(started.pid), Signal::SIGKILL, false)
    );
    // idempotent
    oci::remove(&f.rt, &f.state, &id, &dir).unwrap();
    assert!(!f.state.join(&id).exists(), "runtime state left");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&dir.display().to_string()),
        "mounts left: {mountinfo}"
    );
    for (_, h) in oci::hierarchies(&mountinfo) {
        assert!(
            !h.join(f.cgroup("app")).exists(),
            "cgroup left in {}",
            h.display()
        );
    }
    let project = f.project.clone();
    drop(f);
    assert_no_trace(&project);
}

/// Simulates the fresh Debian 12 host (cgroup2 holding `hugetlb`, which crun refuses) in a
/// mount namespace of this test's thread only, and starts a container there; a plain
/// `crun run` of the same bundle fails there as crun does on such a host.
fn crun_starts_where_cgroup2_holds_controllers() {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    let mut f = Fixture::new(Kind::Crun, "hybrid");
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if hybrid {
        // this thread only (and what it starts); the whole process would need one thread
        unshare(CloneFlags::CLONE_NEWNS).unwrap();
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        let fake = f.base.join("controllers");
        fs::write(&fake, "hugetlb\n").unwrap();
        mount(
            Some(&fake),
            "/sys/fs/cgroup/unified/cgroup.controllers",
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
    } else {
        eprintln!("not a hybrid cgroup host: crun runs as it is, without the simulation");
    }
    let cfg = f.config("app", &["echo", "started"]);
    let (status, out) = f.run("app", &cfg);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {out}"
    );
    assert_eq!(out, "started\n");
    if hybrid {
        let plain = Command::new(f.rt.binary())
            .arg("--root")
            .arg(f.base.join("plain"))
            .args(["run", "--bundle"])
            .arg(&cfg.rootfs.dir)
            .arg(format!("{}-plain", f.id("app")))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!plain.status.success());
        assert!(
            String::from_utf8_lossy(&plain.stderr).contains("cgroups in hybrid mode not supported"),
            "{}",
            String::from_utf8_lossy(&plain.stderr)
        );
    }
}

/// The tests, once per runtime, each in a process of its own.
macro_rules! for_each_runtime {
    ($($test:ident),* $(,)?) => {
        mod crun {
            $(
                #[test]
                fn $test() {
                    super::in_own_process(concat!("crun::", stringify!($test)), || {
                        super::$test(rcompose::runtime::oci::Kind::Crun);
                    });
                }
            )*

            #[test]
            fn starts_where_cgroup2_holds_controllers() {
                super::in_own_process("crun::starts_where_cgroup2_holds_controllers", || {
                    super::crun_starts_where_cgroup2_holds_controllers();
                });
            }
        }
        mod runc {
            $(
                #[test]
                fn $test() {
                    super::in_own_process(concat!("runc::", stringify!($test)), || {
                        super::$test(rcompose::runtime::oci::Kind::Runc);
                    });
                }
            )*
        }
    };
}

for_each_runtime!(
    output_and_exit_code_reach_the_caller,
    command_runs_as_the_configured_user,
    read_only_mounts_and_root_refuse_writes,
    capabilities_are_dropped_to_the_configured_set,
    seccomp_refuses_what_the_builtin_filter_refuses,
    proc_paths_are_masked,
    cgroup_limits_apply_to_the_container,
    containers_of_a_pod_share_its_namespaces,
    remove_leaves_no_trace,
);

#[test]
fn a_missing_runtime_is_named() {
    let err =
        ExternalRuntime::find_in(Kind::Crun, std::ffi::OsStr::new("/nonexistent-rc")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "runtime `crun` is not installed (not found in PATH)"
    );
}
