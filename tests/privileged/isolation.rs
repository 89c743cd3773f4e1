//! A container is isolated: its own hostname, pid namespace with our init as PID 1, its
//! own root whose writes reach neither the image nor the host, and enforced cgroup limits.

use std::fs;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, busybox_rootfs, project, rcompose,
    require, stderr, stdout,
};

/// Runs a one-container stack in the foreground and returns its output lines without the
/// `name | ` prefix.
fn run_one(dir: &TempDir, project: &str, manifest: &str) -> (Vec<String>, String) {
    dir.write("rcompose.yaml", manifest);
    let _guard = Cleanup(project.to_string());
    let out = rcompose(dir.path(), &["-p", project, "up"]);
    assert_code(&out, 0);
    let lines = stdout(&out)
        .lines()
        .map(|l| l.split_once(" | ").map_or(l, |(_, rest)| rest).to_string())
        .collect();
    (lines, stderr(&out))
}

#[test]
fn container_gets_its_hostname_pid_namespace_and_init() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-ns");
    let p = project("iso-ns");
    let (lines, _) = run_one(
        &dir,
        &p,
        r#"
pods:
  web:
    replicas: 2
    containers:
      - name: app
        # PID 1 becomes rcompose-init right after the command starts (it execs once the
        # command runs): wait for that, up to 2 s, then report
        command: [/bin/sh, -c, 'i=0; init() { tr "\0" " " < /proc/1/cmdline | cut -d" " -f1; }; while [ "$(init)" != rcompose-init ] && [ $i -lt 200 ]; do i=$((i+1)); sleep 0.01; done; echo host=$(hostname) pid=$$ init=$(init) procs=$(ls /proc | grep -c "^[0-9]")']
"#,
    );
    let mut lines = lines;
    lines.sort();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[0], format!("host=web-{}", i + 1));
        if crate::test::external_runtime().is_some() {
            // crun and runc run the command as PID 1
            assert_eq!(fields[1], "pid=1", "{line}");
            assert_eq!(fields[2], "init=/bin/sh", "{line}");
        } else {
            assert_eq!(fields[1], "pid=2", "the command is PID 2, under our init");
            assert_eq!(
                fields[2], "init=rcompose-init",
                "PID 1 is the tiny rcompose init"
            );
        }
        let procs: usize = fields[3].trim_start_matches("procs=").parse().unwrap();
        assert!(procs <= 6, "host processes must be invisible, saw {procs}");
    }
    assert_no_trace(&p);
}

#[test]
fn writes_reach_neither_the_host_nor_the_image() {
    require(&[Need::Root, Need::Busybox]);
    let dir = TempDir::new("iso-writes");
    busybox_rootfs(&dir.path().join("rootfs"));
    let marker = format!("rcompose-test-marker-{}", std::process::id());
    let p = project("iso-writes");
    let manifest = format!(
        r#"
images:
  bb: {{ rootfs: ./rootfs }}
pods:
  onhost:
    containers:
      - name: c
        command: [/bin/sh, -c, "echo x > /etc/{marker} && cat /etc/{marker} && rm -f /bin/true.host-test-{marker}"]
  onbb:
    containers:
      - name: c
        image: bb
        command: [/bin/sh, -c, "echo y > /{marker} && rm /bin/echo && cat /{marker}"]
"#
    );
    let (mut lines, _) = run_one(&dir, &p, &manifest);
    lines.sort();
    assert_eq!(lines, ["x", "y"]);
    assert!(
        !std::path::Path::new(&format!("/etc/{marker}")).exists(),
        "a write reached the host"
    );
    assert!(
        !dir.path().join("rootfs").join(&marker).exists(),
        "a write reached the image"
    );
    assert!(
        fs::symlink_metadata(dir.path().join("rootfs/bin/echo")).is_ok(),
        "a delete reached the image"
    );
    assert_no_trace(&p);
}

#[test]
fn memory_limit_oom_kills_and_is_reported() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-oom");
    let p = project("iso-oom");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  hog:
    containers:
      - name: c
        command: [tail, /dev/zero]
        resources: { memory: 32Mi }
",
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("hog-1: killed by the OOM killer (memory limit)\n")
            && stderr(&out).contains("hog-1: exited with code 137 (OOMKilled)"),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);
}

#[test]
fn oom_kill_shows_in_ps_of_a_detached_stack() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-oom-ps");
    let p = project("iso-oom-ps");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  hog:
    containers:
      - name: c
        command: [/bin/sh, -c, 'sleep 0.2; tail /dev/zero']
        resources: { memory: 32Mi }
  idle:
    containers:
      - name: c
        command: [sleep, '60']
",
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let follower = std::process::Command::new(crate::test::bin())
        .args(["-p", &p, "events", "--format", "json"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut rows = serde_json::Value::Null;
    for _ in 0..100 {
        let out = rcompose(dir.path(), &["-p", &p, "ps", "--format", "json"]);
        rows = serde_json::from_slice(&out.stdout).unwrap();
        if rows
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "exited")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let hog = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pod"] == "hog")
        .unwrap()
        .clone();
    assert_eq!(hog["state"], "exited");
    assert_eq!(hog["exit_code"], 137);
    assert_eq!(hog["reason"], "OOMKilled");
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    // `events` had it as an event of its own, before the exit
    let out = follower.wait_with_output().unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["name"] == "hog-1")
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let oom = kinds.iter().position(|k| *k == "oom_killed");
    assert!(
        oom.is_some_and(|i| kinds.get(i + 1) == Some(&"exited")),
        "{events:?}"
    );
    assert_no_trace(&p);
}

#[test]
fn pids_limit_holds() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-pids");
    let p = project("iso-pids");
    // the same fork loop under a tight limit and, as a control, under a loose one
    let (mut lines, err) = run_one(
        &dir,
        &p,
        r"
pods:
  tight:
    containers:
      - name: c
        command: [/bin/sh, -c, 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done; echo tight-all-started']
        resources: { pids: 8 }
  loose:
    containers:
      - name: c
        command: [/bin/sh, -c, 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done; echo loose-all-started']
        resources: { pids: 64 }
",
    );
    lines.sort();
    assert!(
        lines.contains(&"loose-all-started".to_string()),
        "{lines:?}"
    );
    assert!(
        !lines.contains(&"tight-all-started".to_string()),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("Cannot fork")), "{lines:?}");
    assert!(err.contains("tight-1: exited with code 2"), "{err}");
    assert_no_trace(&p);
}

#[test]
fn cpu_limit_is_written_to_the_cgroup() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-cpu");
    let p = project("iso-cpu");
    dir.write(
        "rcompose.yaml",
        r"
pods:
  busy:
    containers:
      - name: c
        command: [sleep, '30']
        resources: { cpu: 250m, memory: 64Mi, pids: 16 }
",
    );
    let _guard = Cleanup(p.clone());
    assert_code(&rcompose(dir.path(), &["-p", &p, "up", "-d"]), 0);
    let v1 = std::path::Path::new("/sys/fs/cgroup/cpu/rcompose")
        .join(&p)
        .join("busy-1/c");
    if v1.exists() {
        assert_eq!(
            fs::read_to_string(v1.join("cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "25000"
        );
        assert_eq!(
            fs::read_to_string(v1.join("cpu.cfs_period_us"))
                .unwrap()
                .trim(),
            "100000"
        );
        let mem = std::path::Path::new("/sys/fs/cgroup/memory/rcompose")
            .join(&p)
            .join("busy-1/c");
        assert_eq!(
            fs::read_to_string(mem.join("memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            "67108864"
        );
    } else {
        let v2 = std::path::Path::new("/sys/fs/cgroup/rcompose")
            .join(&p)
            .join("busy-1/c");
        assert_eq!(
            fs::read_to_string(v2.join("cpu.max")).unwrap().trim(),
            "25000 100000"
        );
        assert_eq!(
            fs::read_to_string(v2.join("memory.max")).unwrap().trim(),
            "67108864"
        );
    }
    assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
    assert_no_trace(&p);
}

#[test]
fn stacked_layers_appear_in_order_and_at_their_target() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-layers");
    dir.write("app/greeting", "from app\n");
    dir.write("app/shared", "app\n");
    dir.write("over/shared", "over\n");
    dir.write("conf/settings.ini", "answer=42\n");
    let p = project("iso-layers");
    let (lines, _) = run_one(
        &dir,
        &p,
        r"
images:
  base: { from: host }
  app:
    from: base
    layers: [ ./app ]
  top:
    from: app
    layers:
      - ./over
      - { source: ./conf, target: /etc/myapp }
pods:
  t:
    containers:
      - name: c
        image: top
        command: [/bin/sh, -c, 'cat /greeting /shared /etc/myapp/settings.ini; test -x /bin/sh && echo host-visible']
",
    );
    assert_eq!(lines, ["from app", "over", "answer=42", "host-visible"]);
    assert_no_trace(&p);
}

#[test]
fn environment_and_working_dir_are_applied() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-env");
    let p = project("iso-env");
    let (lines, _) = run_one(
        &dir,
        &p,
        r#"
pods:
  e:
    containers:
      - name: c
        command: [/bin/sh, -c, 'echo "$GREETING $HOSTNAME $(pwd) $(umask)"']
        env: { GREETING: hello }
        working_dir: /tmp
"#,
    );
    assert_eq!(lines, ["hello e-1 /tmp 0022"]);
    assert_no_trace(&p);
}

#[test]
fn init_reaps_orphans_so_no_zombie_is_left() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-zombie");
    let p = project("iso-zombie");
    let (lines, _) = run_one(
        &dir,
        &p,
        r#"
pods:
  z:
    containers:
      - name: c
        command: [/bin/sh, -c, '(sleep 0.1 &); (true &); sleep 0.6; echo "orphans reparented to $(grep -l "^PPid:.1$" /proc/[0-9]*/status | wc -l) zombies $(grep -l "^State:.Z" /proc/[0-9]*/status | wc -l)"']
"#,
    );
    // only the sh itself has PPid 1 (grep reads its own status too, with another parent)
    assert_eq!(lines, ["orphans reparented to 1 zombies 0"]);
    assert_no_trace(&p);
}

#[test]
fn init_forwards_sigterm_to_the_command() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-signal");
    let p = project("iso-signal");
    dir.write(
        "rcompose.yaml",
        r#"
pods:
  s:
    containers:
      - name: c
        command: [/bin/sh, -c, 'trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.05; done']
"#,
    );
    let _guard = Cleanup(p.clone());
    let child = std::process::Command::new(crate::test::bin())
        .args(["-p", &p, "up"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id().cast_signed());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fs::read_to_string(format!("/run/rcompose/{p}/s-1.c.log"))
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert_eq!(stdout(&out), "s-1 | ready\ns-1 | got TERM\n");
    assert!(
        stderr(&out).contains("s-1: exited with code 0"),
        "{}",
        stderr(&out)
    );
    assert_no_trace(&p);
}

#[test]
fn descriptors_of_the_caller_do_not_reach_containers() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-fds");
    let p = project("iso-fds");
    dir.write(
        "rcompose.yaml",
        "pods:\n  f:\n    containers:\n      - name: c\n        command: [ls, /proc/self/fd]\n",
    );
    // a descriptor the caller leaves open across exec, as shells do
    let leaked = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let _guard = Cleanup(p.clone());
    for args in [vec!["-p", &p, "up"], vec!["-p", &p, "up", "-d"]] {
        let out = rcompose(dir.path(), &args);
        assert_code(&out, 0);
        if args.len() == 4 {
            // detached: read the log before `down` removes it
            std::thread::sleep(std::time::Duration::from_millis(200));
            let logs = rcompose(dir.path(), &["-p", &p, "logs"]);
            assert_eq!(stdout(&logs), "f-1 | 0\nf-1 | 1\nf-1 | 2\nf-1 | 3\n");
            assert_code(&rcompose(dir.path(), &["-p", &p, "down"]), 0);
        } else {
            // ls sees stdin, stdout, stderr and the directory it reads: nothing else
            assert_eq!(stdout(&out), "f-1 | 0\nf-1 | 1\nf-1 | 2\nf-1 | 3\n");
        }
        assert_no_trace(&p);
    }
    drop(leaked);
}

#[test]
fn command_runs_in_every_cgroup_of_its_container() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-cgroups");
    let p = project("iso-cgroups");
    let (lines, _) = run_one(
        &dir,
        &p,
        "pods:\n  g:\n    containers:\n      - name: c\n        command: [cat, /proc/self/cgroup]\n",
    );
    let want = format!("/rcompose/{p}/g-1/c");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let controllers: &[&str] = if v2 {
        &[""]
    } else {
        &["memory", "cpu", "cpuacct", "pids"]
    };
    for c in controllers {
        let line = lines
            .iter()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|list| list.split(',').any(|x| x == *c))
            })
            .unwrap_or_else(|| panic!("no `{c}` line in {lines:?}"));
        assert!(line.ends_with(&want), "{c}: {line} (want {want})");
    }
    assert_no_trace(&p);
}

#[test]
fn containers_of_a_pod_share_its_network_namespace_and_pods_do_not() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-netns");
    let p = project("iso-netns");
    let (lines, _) = run_one(
        &dir,
        &p,
        r"
pods:
  a:
    containers:
      - name: one
        command: [readlink, /proc/self/ns/net]
      - name: two
        command: [/bin/sh, -c, 'sleep 0.1; readlink /proc/self/ns/net; cat /sys/class/net/lo/operstate']
  b:
    containers:
      - name: one
        command: [readlink, /proc/self/ns/net]
",
    );
    let host = fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();
    let ns: Vec<&String> = lines.iter().filter(|l| l.starts_with("net:[")).collect();
    assert_eq!(ns.len(), 3, "{lines:?}");
    let mut distinct: Vec<&String> = ns.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "two pods, two namespaces: {lines:?}");
    assert!(
        !ns.contains(&&host),
        "a pod runs in the host's network namespace"
    );
    assert!(
        lines.iter().any(|l| l == "unknown" || l == "up"),
        "lo state: {lines:?}"
    );
    assert_no_trace(&p);
}

/// A pod is one logical host: its containers share the IPC namespace (SysV shared memory),
/// `/dev/shm` (POSIX shared memory) and the UTS namespace, while each keeps its own mount
/// and pid namespaces; another pod sees none of it.
#[test]
fn containers_of_a_pod_share_ipc_uts_and_shm_but_not_mounts_or_pids() {
    require(&[Need::Root, Need::Tool("python3")]);
    let dir = TempDir::new("iso-ipc");
    let p = project("iso-ipc");
    dir.write(
        "probe.py",
        r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
KEY = ctypes.c_int(0x52430001)
role = sys.argv[1]
def wait_for(path):
    for _ in range(500):
        if os.path.exists(path):
            return True
        time.sleep(0.01)
    return False
def shm(flags, size):
    r = libc.shmget(KEY, ctypes.c_size_t(size), ctypes.c_int(flags))
    return (r, 0) if r >= 0 else (r, ctypes.get_errno())
ns = " ".join(f"{k}={os.readlink('/proc/self/ns/' + k)}" for k in ("ipc", "uts", "mnt", "pid"))
print(f"{role} {ns}", flush=True)
if role == "one":
    seg, err = shm(0o1666, 4096)  # IPC_CREAT | 0666
    print(f"one created={err}", flush=True)
    open("/tmp/private", "w").write("x")
    open("/dev/shm/ready", "w").write("x")
    print(f"one done={wait_for('/dev/shm/done')}", flush=True)
    libc.shmctl(seg, 0, None)  # IPC_RMID
elif role == "two":
    print(f"two ready={wait_for('/dev/shm/ready')}", flush=True)
    print(f"two sysv={shm(0, 0)[1]} private={os.path.exists('/tmp/private')}", flush=True)
    open("/dev/shm/done", "w").write("x")
else:
    wait_for("/nonexistent")  # give pod a time to make its segment
    print(f"other sysv={shm(0, 0)[1]} shm={sorted(os.listdir('/dev/shm'))}", flush=True)
"#,
    );
    let (lines, err) = run_one(
        &dir,
        &p,
        r"
images:
  probe:
    from: host
    layers: [{ source: ./, target: /probe }]
pods:
  a:
    containers:
      - { name: one, image: probe, command: [/usr/bin/python3, /probe/probe.py, one] }
      - { name: two, image: probe, command: [/usr/bin/python3, /probe/probe.py, two] }
  b:
    containers:
      - { name: other, image: probe, command: [/usr/bin/python3, /probe/probe.py, other] }
",
    );
    let field = |role: &str, key: &str| -> String {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{role} ")))
            .flat_map(|l| l.split(' '))
            .find_map(|f| f.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} of {role} in {lines:?}\n{err}"))
            .to_owned()
    };
    assert_eq!(field("one", "created"), "0");
    assert_eq!(field("two", "ready"), "True", "/dev/shm is shared");
    assert_eq!(field("two", "sysv"), "0", "SysV IPC is shared");
    assert_eq!(
        field("two", "private"),
        "False",
        "/tmp is the container's own"
    );
    assert_eq!(field("one", "done"), "True");
    assert_eq!(field("one", "ipc"), field("two", "ipc"));
    assert_eq!(field("one", "uts"), field("two", "uts"));
    assert_ne!(field("one", "mnt"), field("two", "mnt"));
    assert_ne!(field("one", "pid"), field("two", "pid"));
    // ENOENT: the other pod has its own IPC namespace and its own, empty /dev/shm
    assert_eq!(field("other", "sysv"), "2");
    assert_eq!(field("other", "shm"), "[]");
    assert_ne!(field("other", "ipc"), field("one", "ipc"));
    assert_ne!(field("other", "uts"), field("one", "uts"));
    let host_ipc = fs::read_link("/proc/self/ns/ipc").unwrap();
    assert_ne!(field("one", "ipc"), host_ipc.display().to_string());
    assert_no_trace(&p);
}

#[test]
fn missing_working_dir_is_created_and_long_output_lines_are_split() {
    require(&[Need::Root]);
    let dir = TempDir::new("iso-wd");
    let p = project("iso-wd");
    let (lines, _) = run_one(
        &dir,
        &p,
        r#"
pods:
  w:
    containers:
      - name: c
        working_dir: /srv/new/app
        command: [/bin/sh, -c, 'pwd; head -c 40000 /dev/zero | tr "\0" x']
"#,
    );
    assert_eq!(lines[0], "/srv/new/app");
    let lengths: Vec<usize> = lines[1..].iter().map(String::len).collect();
    assert_eq!(lengths, [16384, 16384, 7232]);
    assert_no_trace(&p);
}

#[test]
fn command_starts_with_default_signal_dispositions_and_an_empty_mask() {
    require(&[Need::Root]);
    for fork_server in [true, false] {
        let dir = TempDir::new("iso-sigs");
        let p = project("iso-sigs");
        dir.write(
            "rcompose.yaml",
            "pods:\n  s:\n    containers:\n      - name: c\n        command: [grep, -E, '^Sig(Ign|Blk)', /proc/self/status]\n",
        );
        let _guard = Cleanup(p.clone());
        let mut cmd = std::process::Command::new(crate::test::bin());
        cmd.args(["-p", &p, "up"]).current_dir(dir.path());
        if !fork_server {
            cmd.env("RCOMPOSE_NO_FORKSERVER", "1");
        }
        let out = cmd.output().unwrap();
        assert_code(&out, 0);
        // nothing ignored (Rust ignores SIGPIPE, which execve would carry over) or blocked;
        // crun 1.8 leaves signal 32 (glibc's SIGCANCEL) ignored in its container's PID 1
        let ignored = match crate::test::external_runtime().as_deref() {
            Some("crun") => "0000000080000000",
            _ => "0000000000000000",
        };
        assert_eq!(
            stdout(&out),
            format!("s-1 | SigBlk:\t0000000000000000\ns-1 | SigIgn:\t{ignored}\n"),
            "fork server: {fork_server}"
        );
        assert_no_trace(&p);
    }
}
