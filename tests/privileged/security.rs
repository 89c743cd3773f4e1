//! Secure defaults, each seen from inside a real container (the `host` image, whose python3
//! makes the raw system calls): Docker's capability set, `no_new_privs`, the seccomp filter,
//! masked and read-only /proc paths; `cap_add`, `cap_drop`, `user` and `privileged`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, rcompose, require, stderr,
    stdout,
};

/// Prints `key=value` lines: capability sets, `NoNewPrivs` and `Seccomp` from
/// /proc/self/status, errno of system calls the filter refuses (0: it worked), and what
/// masking leaves of /proc/timer_list and /sys/firmware.
const PROBE: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def call(n, *args):
    # every integer as a long: syscall() is variadic, an int would leave the upper half of
    # its register undefined
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(n), *args)
    return 0 if r >= 0 else ctypes.get_errno()
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
        print(f"{key}={value.strip()}")
# x86_64 numbers: add_key 248, unshare 272, clone3 435, mount 165
os.makedirs("/tmp/m", exist_ok=True)
print("mount=%d" % call(165, b"none", b"/tmp/m", b"tmpfs", 0, None))
print("add_key=%d" % call(248, b"user", b"rcompose-test", b"v", 1, -2))
print("clone3=%d" % call(435, None, 0))
# last: where it works, this process is in a new user namespace from here on
print("unshare_user=%d" % call(272, 0x10000000))
print("timer_list=%d" % len(open("/proc/timer_list", "rb").read()))
print("sys_firmware=%d" % len(os.listdir("/sys/firmware")))
# /proc/sys is read-only as a whole (domainname is the container's own: UTS namespace)
for path in ("/proc/sys/kernel/domainname",):
    try:
        with open(path, "w") as f:
            f.write("rcompose-test")
        print(f"write {path}=ok")
    except OSError as e:
        print(f"write {path}={e.errno}")
"#;

const EPERM: &str = "1";
const EROFS: &str = "30";
const ENOSYS: &str = "38";

/// Runs [`PROBE`] in one container with `extra` keys, returns its `key=value` lines.
fn probe(name: &str, extra: &str) -> BTreeMap<String, String> {
    require(&[Need::Root, Need::Tool("python3")]);
    assert!(
        std::path::Path::new("/usr/bin/python3").is_file(),
        "this test needs /usr/bin/python3 in the host image (apt-get install python3)"
    );
    let dir = TempDir::new(name);
    let p = project(name);
    dir.write("probe.py", PROBE);
    // the probe reaches the container through a layer with a target
    let manifest = format!(
        "images:\n  probe:\n    from: host\n    layers: [{{ source: ./, target: /probe }}]\npods:\n  c:\n    containers:\n      - name: c\n        image: probe\n        command: [/usr/bin/python3, /probe/probe.py]\n{extra}"
    );
    dir.write("rcompose.yaml", &manifest);
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let values: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once(" | ").map(|(_, rest)| rest))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(
        values.contains_key("sys_firmware"),
        "the probe did not finish:\n{text}\n{}",
        stderr(&out)
    );
    assert_no_trace(&p);
    values
}

#[track_caller]
fn expect(values: &BTreeMap<String, String>, pairs: &[(&str, &str)]) {
    for (key, want) in pairs {
        assert_eq!(
            values.get(*key).map(String::as_str),
            Some(*want),
            "{key} in {values:#?}"
        );
    }
}

#[test]
fn the_default_confinement_is_dockers() {
    let v = probe("sec-default", "");
    expect(
        &v,
        &[
            ("CapEff", "00000000a80425fb"),
            ("CapPrm", "00000000a80425fb"),
            ("CapBnd", "00000000a80425fb"),
            ("CapInh", "0000000000000000"),
            ("CapAmb", "0000000000000000"),
            ("NoNewPrivs", "1"),
            ("Seccomp", "2"),
            // refused by the filter although no capability is needed for them
            ("add_key", EPERM),
            ("unshare_user", EPERM),
            ("clone3", ENOSYS),
            ("mount", EPERM),
            // masked, read-only
            ("timer_list", "0"),
            ("sys_firmware", "0"),
            ("write /proc/sys/kernel/domainname", EROFS),
        ],
    );
}

#[test]
fn cap_add_and_cap_drop_change_the_set_and_the_filter() {
    // SYS_ADMIN (bit 21) lets mount and unshare through the filter too, as in Docker;
    // CHOWN (bit 0) goes
    let v = probe(
        "sec-caps",
        "        cap_add: [SYS_ADMIN]\n        cap_drop: [cap_chown]\n",
    );
    expect(
        &v,
        &[
            ("CapEff", "00000000a82425fa"),
            ("CapBnd", "00000000a82425fa"),
            ("NoNewPrivs", "1"),
            ("Seccomp", "2"),
            ("mount", "0"),
            ("add_key", EPERM),
        ],
    );
    assert_ne!(v["unshare_user"], EPERM, "{v:#?}");
    assert_ne!(v["clone3"], ENOSYS, "{v:#?}");
}

#[test]
fn another_user_keeps_only_the_bounding_set() {
    let v = probe("sec-user", "        user: \"1000:1000\"\n");
    expect(
        &v,
        &[
            ("CapEff", "0000000000000000"),
            ("CapPrm", "0000000000000000"),
            ("CapBnd", "00000000a80425fb"),
            ("NoNewPrivs", "1"),
            ("Seccomp", "2"),
        ],
    );
}

#[test]
fn privileged_containers_keep_everything() {
    let v = probe("sec-priv", "        privileged: true\n");
    // every capability this test process has (this machine withholds CAP_SYS_RESOURCE)
    let all = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_owned();
    expect(
        &v,
        &[
            ("CapEff", all.as_str()),
            ("CapBnd", all.as_str()),
            ("NoNewPrivs", "0"),
            ("Seccomp", "0"),
            ("mount", "0"),
            ("write /proc/sys/kernel/domainname", "ok"),
        ],
    );
    assert_ne!(v["timer_list"], "0", "{v:#?}");
    assert_ne!(v["sys_firmware"], "0", "{v:#?}");
    assert_ne!(v["add_key"], EPERM, "{v:#?}");
}

#[test]
fn a_misspelled_capability_is_refused_before_anything_starts() {
    require(&[Need::Root]);
    let dir = TempDir::new("sec-typo");
    let p = project("sec-typo");
    dir.write(
        "rcompose.yaml",
        "pods:\n  c:\n    containers:\n      - name: c\n        command: [true]\n        cap_add: [NET_ADMN]\n",
    );
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains(
            "unknown capability `NET_ADMN` in `cap_add` of container `c.c`; did you mean `NET_ADMIN`?"
        ),
        "{err}"
    );
    assert!(err.contains("rcompose.yaml:6:19"), "{err}");
    assert_no_trace(&p);

    dir.write(
        "rcompose.yaml",
        "pods:\n  c:\n    containers:\n      - name: c\n        command: [true]\n        privileged: yes-please\n",
    );
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains("wrong type for `privileged` of container `c.c`: expected `true` or `false`"),
        "{err}"
    );
    assert_no_trace(&p);
}

#[test]
fn a_user_the_image_lacks_fails_up_before_anything_starts() {
    require(&[Need::Root]);
    let dir = TempDir::new("sec-nouser");
    let p = project("sec-nouser");
    dir.write(
        "rcompose.yaml",
        "pods:\n  a:\n    containers:\n      - name: c\n        command: [echo, a-started]\n  b:\n    containers:\n      - name: c\n        user: rcompose-no-such-user\n        command: [echo, b-started]\n",
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(
            "container `b-1/c` cannot run as `rcompose-no-such-user`: user `rcompose-no-such-user` is not in the image's /etc/passwd"
        ),
        "{err}"
    );
    assert!(!stdout(&out).contains("started"), "{}", stdout(&out));
    assert_no_trace(&p);
}

/// The root cannot be left through `..`, `/proc/self/root`, `/proc/1/root` or a host path:
/// a busybox image sees its own tree only, never the host's (which has this marker).
#[test]
fn the_root_cannot_be_escaped_through_dotdot_or_proc_root() {
    require(&[Need::Root, Need::Busybox]);
    let dir = TempDir::new("sec-escape");
    let p = project("sec-escape");
    let marker = format!("rcompose-escape-marker-{}", std::process::id());
    fs::write(Path::new("/").join(&marker), "host").unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }
    let _marker = Remove(Path::new("/").join(&marker));
    crate::test::busybox_rootfs(&dir.path().join("rootfs"));
    dir.write(
        "rcompose.yaml",
        &format!(
            "images:\n  bb: {{ rootfs: ./rootfs }}\npods:\n  c:\n    containers:\n      - name: c\n        image: bb\n        command: [/bin/sh, -c, 'for p in /{marker} /../../{marker} /proc/self/root/{marker} /proc/1/root/{marker} /proc/self/root/../../{marker} /proc/1/cwd/../{marker}; do cat $p 2>/dev/null && echo \"escaped via $p\"; done; cd /../../..; echo \"pwd=$(pwd) root=$(readlink /proc/self/root)\"']\n"
        ),
    );
    let _guard = Cleanup(p.clone());
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(!text.contains("escaped"), "{text}");
    assert!(!text.contains("host"), "{text}");
    assert!(
        text.contains("c-1 | pwd=/ root=/"),
        "{text}\n{}",
        stderr(&out)
    );
    assert_no_trace(&p);
}
