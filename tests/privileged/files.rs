//! Configs and secrets in real containers: from a file, an environment variable and inline
//! content; mounted read-only where the pod asks, with their owner and mode; secrets live on
//! a tmpfs and never reach the disk in the state directory.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, project, rcompose, require, stderr,
    stdout,
};

const SECRET: &str = "s3cret-value-rcompose-test";

/// `rcompose` with `RCOMPOSE_TEST_SECRET` set, as a user's shell would have it.
fn rcompose_with_secret(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::test::bin())
        .args(args)
        .current_dir(dir)
        .env("RCOMPOSE_TEST_SECRET", SECRET)
        .output()
        .unwrap()
}

const STACK: &str = r#"
configs:
  app: { file: ./app.conf }
  greeting: { content: "hello from a config" }
secrets:
  db: { environment: RCOMPOSE_TEST_SECRET }
  token: { content: "t0ken" }
pods:
  c:
    containers:
      - name: c
        configs:
          - { source: app, target: /etc/app.conf }
          - greeting
        secrets:
          - db
          - { source: token, target: api-token, uid: 1000, gid: 1000, mode: 0440 }
        command:
          - /bin/sh
          - -c
          - |
            echo "app=$(cat /etc/app.conf) $(stat -c '%a %u' /etc/app.conf)"
            echo "greeting=$(cat /greeting) $(stat -c '%a' /greeting)"
            echo "db=$(sha256sum < /run/secrets/db | cut -c1-16) $(stat -c '%a %u %g' /run/secrets/db)"
            echo "token=$(stat -c '%a %u %g' /run/secrets/api-token)"
            echo x > /etc/app.conf 2>/dev/null && echo app=writable || echo app=read-only
            echo done
            sleep 1000
"#;

#[test]
fn configs_and_secrets_are_mounted_and_secrets_stay_off_the_disk() {
    require(&[Need::Root]);
    let dir = TempDir::new("files");
    let p = project("files");
    dir.write("app.conf", "port=80");
    dir.write("rcompose.yaml", STACK);
    let _guard = Cleanup(p.clone());
    let out = rcompose_with_secret(dir.path(), &["-p", &p, "up", "-d"]);
    assert_code(&out, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let text = stdout(&rcompose(dir.path(), &["-p", &p, "logs"]));
        if text.contains("c-1 | done") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let digest = {
        use sha2::Digest as _;
        let sum = sha2::Sha256::digest(SECRET.as_bytes());
        sum.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    for line in [
        "c-1 | app=port=80 444 0".to_owned(),
        "c-1 | greeting=hello from a config 444".to_owned(),
        format!("c-1 | db={} 400 0 0", &digest[..16]),
        "c-1 | token=440 1000 1000".to_owned(),
        "c-1 | app=read-only".to_owned(),
    ] {
        assert!(logs.lines().any(|l| l == line), "no `{line}` in:\n{logs}");
    }
    // the secret is nowhere on disk in the project's directory (its tmpfs aside)
    let project_dir = Path::new("/run/rcompose").join(&p);
    let files = project_dir.join("files");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mountinfo
            .lines()
            .any(|l| l.contains(&format!(" {} ", files.display())) && l.contains(" - tmpfs ")),
        "{mountinfo}"
    );
    let mut stack = vec![project_dir.clone()];
    let mut scanned = 0;
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            // an external runtime's bundle has the container's root mounted at `rootfs/`
            if path == files
                || meta.file_type().is_symlink()
                || (path.file_name() == Some("rootfs".as_ref())
                    && path.parent() != Some(&project_dir))
            {
                continue;
            }
            if meta.is_dir() {
                // the containers' own roots are mounted over their directories only in their
                // mount namespaces; here they hold config.json, upper/ and work/
                stack.push(path);
            } else if meta.is_file() {
                scanned += 1;
                let bytes = fs::read(&path).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(SECRET),
                    "the secret is in `{}`",
                    path.display()
                );
            }
        }
    }
    assert!(scanned >= 3, "scanned only {scanned} files");
    assert_code(&rcompose(dir.path(), &["-p", &p, "down", "-t", "1"]), 0);
    assert_no_trace(&p);
}

#[test]
fn a_missing_variable_or_file_is_an_error_before_anything_starts() {
    require(&[Need::Root]);
    let dir = TempDir::new("files-bad");
    let p = project("files-bad");
    dir.write(
        "rcompose.yaml",
        "secrets:\n  db: { environment: RCOMPOSE_TEST_UNSET_VARIABLE }\nconfigs:\n  app: { file: ./missing.conf }\n  both: { file: ./x, content: y }\npods:\n  c:\n    containers:\n      - name: c\n        command: [true]\n        secrets: [ db, dbb ]\n        configs: [ app ]\n",
    );
    let out = rcompose(dir.path(), &["-p", &p, "up"]);
    assert_code(&out, 3);
    let err = stderr(&out);
    for expected in [
        "secret `db` comes from environment variable `RCOMPOSE_TEST_UNSET_VARIABLE`, which is not set\n  --> rcompose.yaml:2:22",
        "file `./missing.conf` of config `app` does not exist",
        "config `both` needs exactly one of `file`, `environment` and `content`",
        "container `c.c` uses secret `dbb`, which is not declared in `secrets`; did you mean `db`?",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert_no_trace(&p);
}
