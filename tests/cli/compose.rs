//! Compose files through the command line: the default file search, `convert`, `config`,
//! `--profile` and `COMPOSE_PROFILES`, warnings on stderr, errors with exit code 3.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::test::{TempDir, assert_code, bin, stderr, stdout, unindent};

/// rcompose in `dir` without the variables that change how a Compose file loads.
pub(super) fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("COMPOSE_PROFILES")
        .env_remove("RCOMPOSE_FILE")
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PATH_SEPARATOR")
        .env_remove("TAG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

const COMPOSE: &str = "services:
  web:
    image: nginx:${TAG:-1.27}
    ports: [\"8080:80\"]
    depends_on:
      db: { condition: service_healthy }
  db:
    image: postgres:16
    environment: [POSTGRES_PASSWORD=secret]
    healthcheck:
      test: [CMD, pg_isready]
      interval: 2s
  debug:
    image: busybox
    profiles: [debug]
";

#[test]
fn convert_prints_the_equivalent_rcompose_yaml() {
    let dir = TempDir::new("compose-convert");
    dir.write("compose.yaml", COMPOSE);
    let out = run(dir.path(), &[], &["convert"]);
    assert_code(&out, 0);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        unindent(
            "
            images:
              db:
                ref: postgres:16
              web:
                ref: nginx:1.27
            pods:
              db:
                labels:
                  compose.service: db
                containers:
                - name: db
                  image: db
                  env:
                    POSTGRES_PASSWORD: secret
                  healthcheck:
                    test:
                    - CMD
                    - pg_isready
                    interval: 2s
              web:
                labels:
                  compose.service: web
                depends_on:
                  db:
                    condition: healthy
                containers:
                - name: web
                  image: web
            services:
              web:
                selector:
                  compose.service: web
                ports:
                - port: 80
                  publish: 8080
            "
        )
    );
    // the output is a manifest rcompose accepts
    dir.write("out/rcompose.yaml", &stdout(&out));
    let again = run(
        dir.path(),
        &[],
        &["-f", "out/rcompose.yaml", "config", "-q"],
    );
    assert_code(&again, 0);
}

#[test]
fn profiles_come_from_the_flag_and_compose_profiles() {
    let dir = TempDir::new("compose-profiles");
    dir.write("compose.yaml", COMPOSE);
    let pods = |out: &Output| {
        assert_code(out, 0);
        stdout(out).contains("  debug:\n")
    };
    assert!(!pods(&run(dir.path(), &[], &["convert"])));
    assert!(pods(&run(
        dir.path(),
        &[],
        &["--profile", "debug", "convert"]
    )));
    assert!(pods(&run(
        dir.path(),
        &[("COMPOSE_PROFILES", "x,debug")],
        &["convert"]
    )));
    // interpolation sees the process environment
    let out = run(dir.path(), &[("TAG", "1.28")], &["convert"]);
    assert!(stdout(&out).contains("ref: nginx:1.28"), "{}", stdout(&out));
}

#[test]
fn the_default_search_finds_compose_files_after_rcompose_yaml() {
    let dir = TempDir::new("compose-search");
    dir.write(
        "docker-compose.yml",
        "services: { a: { image: busybox } }\n",
    );
    let out = run(dir.path(), &[], &["config"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("compose.service: a"),
        "{}",
        stdout(&out)
    );
    // compose-go's DefaultFileNames: docker-compose.yml before docker-compose.yaml
    dir.write(
        "docker-compose.yaml",
        "services: { z: { image: busybox } }\n",
    );
    let out = run(dir.path(), &[], &["config"]);
    assert!(
        stdout(&out).contains("compose.service: a"),
        "{}",
        stdout(&out)
    );
    dir.write("compose.yaml", "services: { b: { image: busybox } }\n");
    let out = run(dir.path(), &[], &["config"]);
    assert!(
        stdout(&out).contains("compose.service: b"),
        "{}",
        stdout(&out)
    );
    dir.write(
        "rcompose.yaml",
        "pods: { c: { containers: [ { name: c, command: x } ] } }\n",
    );
    let out = run(dir.path(), &[], &["config"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("  c:\n"), "{}", stdout(&out));
    // `convert` wants a Compose file
    let out = run(dir.path(), &[], &["convert"]);
    assert_code(&out, 2);
    assert_eq!(
        stderr(&out),
        "error: `rcompose.yaml` is an rcompose.yaml, not a Compose file: `rcompose -f rcompose.yaml config` prints it normalized\n"
    );
    // -f (or RCOMPOSE_FILE) names any file; a Compose file is recognized by its content
    dir.write("stack.yml", "services: { d: { image: busybox } }\n");
    let out = run(dir.path(), &[("RCOMPOSE_FILE", "stack.yml")], &["config"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("compose.service: d"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn warnings_go_to_stderr_and_errors_fail_with_exit_code_3() {
    let dir = TempDir::new("compose-problems");
    dir.write(
        "compose.yaml",
        "version: \"3.9\"
services:
  web:
    image: busybox
    container_name: web
",
    );
    let out = run(dir.path(), &[], &["config", "-q"]);
    assert_code(&out, 0);
    assert_eq!(
        stderr(&out),
        unindent(
            "
            warning: `version` is obsolete and ignored (as by Compose)
              --> compose.yaml:1:1
               |
             1 | version: \"3.9\"
               | ^^^^^^^

            warning: `container_name` is ignored: replicas are named `<service>-<n>`
              --> compose.yaml:5:5
               |
             5 |     container_name: web
               |     ^^^^^^^^^^^^^^
            "
        )
    );
    dir.write(
        "compose.yaml",
        "services:
  web:
    build: .
    ports: [\"53:53/udp\"]
",
    );
    for command in [&["convert"][..], &["config"], &["up", "-d"]] {
        let out = run(dir.path(), &[], command);
        assert_code(&out, 3);
        assert_eq!(stdout(&out), "");
        assert_eq!(
            stderr(&out),
            unindent(
                "
                error: `build` is not supported: rcompose does not build images yet: build and push the image, then set `image:`
                  --> compose.yaml:3:5
                   |
                 3 |     build: .
                   |     ^^^^^

                error: the port `53:53/udp` is `udp`: only TCP ports are supported (the balancer is a TCP proxy)
                  --> compose.yaml:4:13
                   |
                 4 |     ports: [\"53:53/udp\"]
                   |             ^^^^^^^^^^^
                hint: fix the problems above; docs/coming-from-compose.md says how each Compose key maps and why some are not supported
                "
            ),
            "{command:?}"
        );
    }
}
