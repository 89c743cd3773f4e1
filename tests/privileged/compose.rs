//! A real Compose file run by `rcompose up`: a registry image (a local docker-registry),
//! `deploy.replicas` behind one published port, `depends_on` with `service_healthy` and a
//! `healthcheck`, an `env_file`, `${VAR:-default}` and `$$` interpolation with `.env` under
//! the process environment, a named volume shared by two services, a tmpfs; found by the
//! default file search (`compose.yaml`, with `compose.override.yaml` merged over it), a
//! service of a profile enabled by `--profile`, and nothing left after `down -v`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::registry::{Server, push_busybox, require_tools};
use crate::test::{
    Cleanup, Need, TempDir, assert_code, assert_no_trace, bin, free_port, ls_row, project, require,
    stderr, stdout,
};

fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("COMPOSE_PROFILES")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The body of `GET /` on 127.0.0.1:`port` (busybox httpd answers HTTP/1.1).
fn get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
        "{out:?}"
    );
    out.split_once("\r\n\r\n").unwrap().1.trim().to_string()
}

#[test]
fn runs_a_compose_file_with_replicas_behind_a_published_port() {
    require(&[Need::Root]);
    require_tools();
    let dir = TempDir::new("compose-up");
    let server = Server::start(&dir, false);
    push_busybox(&dir, &server, "test/busybox", &[]);
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let p = project("compose");
    let _guard = Cleanup(p.clone());
    let port = free_port().to_string();
    // `.env` gives the image and a wrong port: the process environment's PORT wins
    dir.write(
        ".env",
        &format!("IMAGE={}/test/busybox:t\nPORT=1\n", server.host()),
    );
    dir.write("web.env", "GREETING=hello from the env file\n");
    dir.write(
        "compose.yaml",
        &format!(
            r#"name: {p}
x-busybox: &busybox
  image: ${{IMAGE}}
services:
  web:
    <<: *busybox
    deploy:
      replicas: 2
    ports:
      - "${{PORT}}:80"
    env_file: web.env
    command:
      - /bin/busybox
      - sh
      - -c
      - mkdir -p /www && /bin/busybox hostname > /www/index.html && echo "$$GREETING" > /www/greeting && exec /bin/busybox httpd -f -p 80 -h /www
    healthcheck:
      test: ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"]
      interval: 1s
      retries: 30
    volumes:
      - data:/data
    tmpfs: /scratch
  client:
    <<: *busybox
    depends_on:
      web:
        condition: service_healthy
    command:
      - /bin/busybox
      - sh
      - -c
      - echo "${{MESSAGE:-the default}}" > /data/msg && /bin/busybox wget -q -O - http://web/ > /data/seen && exec /bin/busybox sleep 1000
    volumes: [data:/data]
volumes:
  data:
"#
        ),
    );
    // the override file beside it is merged without -f (and handed to the detached
    // supervisor): a service, and a variable added to one of compose.yaml
    dir.write(
        "compose.override.yaml",
        r#"services:
  tools:
    image: ${IMAGE}
    profiles: [tools]
    command: [/bin/busybox, sleep, "1000"]
  client:
    environment:
      FROM_OVERRIDE: "yes"
"#,
    );
    let env = [("PORT", port.as_str())];
    // a profile enabled on the command line reaches the detached supervisor too
    let out = run(
        dir.path(),
        &env,
        &["--store", store, "--profile", "tools", "up", "-d"],
    );
    assert_code(&out, 0);

    // both replicas answer through the published port
    let port: u16 = port.parse().unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(get(port));
    }
    assert_eq!(
        seen,
        BTreeSet::from(["web-1".to_string(), "web-2".to_string()])
    );

    // the client started once web was healthy, reached it by its service name, and shares
    // the named volume with it
    let exec = |target: &str, cmd: &str| {
        let out = run(
            dir.path(),
            &env,
            &[
                "--store",
                store,
                "exec",
                target,
                "/bin/busybox",
                "sh",
                "-c",
                cmd,
            ],
        );
        assert_code(&out, 0);
        stdout(&out)
    };
    let answer = exec("client", "cat /data/seen");
    assert!(answer == "web-1\n" || answer == "web-2\n", "{answer:?}");
    assert_eq!(exec("web-2", "cat /data/msg"), "the default\n");
    assert_eq!(
        exec("web-1", "cat /www/greeting"),
        "hello from the env file\n"
    );
    assert_eq!(exec("tools", "echo up"), "up\n");
    assert_eq!(exec("client", "echo $FROM_OVERRIDE"), "yes\n");
    // `ls` names both files, in merge order, as Compose's CONFIG FILES does
    let me = ls_row(dir.path(), &p);
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    assert_eq!(me["manifest"], file("compose.yaml"), "{me}");
    assert_eq!(
        me["manifest_files"],
        serde_json::json!([file("compose.yaml"), file("compose.override.yaml")]),
        "{me}"
    );
    let table = stdout(&run(dir.path(), &env, &["ls"]));
    let row = format!("{},{}", file("compose.yaml"), file("compose.override.yaml"));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(p.as_str()) && l.ends_with(&row)),
        "{table}"
    );
    let mounts = exec("web-1", "cat /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("tmpfs /scratch tmpfs")),
        "{mounts}"
    );

    let out = run(dir.path(), &env, &["--store", store, "down", "-v"]);
    assert_code(&out, 0);
    assert_no_trace(&p);
    let volumes = dir.path().join("store/volumes").join(&p);
    assert!(!volumes.exists(), "{} is left", volumes.display());
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
}
