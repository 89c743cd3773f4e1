//! Several Compose files: `-f a -f b` merged in order, `RCOMPOSE_FILE` / `COMPOSE_FILE`,
//! the override file merged without `-f`, errors in the file they come from, a missing file,
//! an rcompose.yaml among several files, `-f -` (standard input).

use super::compose::run;
use super::compose_corpus::corpus_dir;
use crate::test::{TempDir, assert_code, rcompose_stdin, stderr, stdout, unindent};

const BASE: &str = "name: shop
services:
  web:
    image: nginx:1.27
    command: [nginx, -g, daemon off;]
    ports: [\"8080:80\"]
    environment: { MODE: dev, DEBUG: \"1\" }
    volumes: [\"./html:/usr/share/nginx/html:ro\"]
";

const PROD: &str = "services:
  web:
    image: nginx:1.28
    command: [nginx]
    ports: [\"8443:443\", \"8080:80\"]
    environment: { MODE: prod }
    volumes: [\"./prod-html:/usr/share/nginx/html:ro\"]
  cache:
    image: redis:7
";

/// `config` of BASE with PROD merged over it.
const MERGED: &str = "
    name: shop
    images:
      cache:
        ref: redis:7
        layers: []
      web:
        ref: nginx:1.28
        layers: []
    pods:
      cache:
        replicas: 1
        labels:
          compose.service: cache
        depends_on: {}
        restart: never
        containers:
        - name: cache
          image: cache
          env: {}
          resources: {}
          stop_signal: SIGTERM
      web:
        replicas: 1
        labels:
          compose.service: web
        depends_on: {}
        restart: never
        containers:
        - name: web
          image: web
          command:
          - nginx
          env:
            DEBUG: \"1\"
            MODE: prod
          resources: {}
          stop_signal: SIGTERM
          volumes:
          - type: bind
            source: ./prod-html
            target: /usr/share/nginx/html
            read_only: true
    services:
      web:
        selector:
          compose.service: web
        ports:
        - port: 80
          target: 80
          publish: 8080
        - port: 443
          target: 443
          publish: 8443
    ";

#[test]
fn files_named_by_f_are_merged_in_order() {
    let dir = TempDir::new("compose-files-f");
    dir.write("compose.yaml", BASE);
    dir.write("compose.prod.yaml", PROD);
    dir.write("html/index.html", "");
    dir.write("prod-html/index.html", "");
    let out = run(
        dir.path(),
        &[],
        &["-f", "compose.yaml", "-f", "compose.prod.yaml", "config"],
    );
    assert_code(&out, 0);
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), unindent(MERGED));
    // `convert` takes the files as arguments too
    let out = run(
        dir.path(),
        &[],
        &["convert", "compose.yaml", "compose.prod.yaml"],
    );
    assert_code(&out, 0);
    assert!(stdout(&out).contains("ref: nginx:1.28"), "{}", stdout(&out));
}

#[test]
fn the_variables_name_files_separated_by_colons() {
    let dir = TempDir::new("compose-files-env");
    dir.write("compose.yaml", BASE);
    dir.write("compose.prod.yaml", PROD);
    dir.write("other.yaml", "services:\n  other:\n    image: busybox\n");
    let names = |out: &std::process::Output| {
        assert_code(out, 0);
        let text = stdout(out);
        ["cache", "web", "other"]
            .into_iter()
            .filter(|p| text.contains(&format!("compose.service: {p}\n")))
            .collect::<Vec<_>>()
    };
    let both = "compose.yaml:compose.prod.yaml";
    let out = run(dir.path(), &[("COMPOSE_FILE", both)], &["convert"]);
    assert_eq!(names(&out), ["cache", "web"]);
    // RCOMPOSE_FILE wins over COMPOSE_FILE, -f over both
    let out = run(
        dir.path(),
        &[("COMPOSE_FILE", "other.yaml"), ("RCOMPOSE_FILE", both)],
        &["convert"],
    );
    assert_eq!(names(&out), ["cache", "web"]);
    let out = run(
        dir.path(),
        &[("COMPOSE_FILE", both)],
        &["-f", "compose.yaml", "-f", "other.yaml", "convert"],
    );
    assert_eq!(names(&out), ["web", "other"]);
    // COMPOSE_PATH_SEPARATOR changes the separator, as in Compose
    let out = run(
        dir.path(),
        &[
            ("COMPOSE_FILE", "compose.yaml;other.yaml"),
            ("COMPOSE_PATH_SEPARATOR", ";"),
        ],
        &["convert"],
    );
    assert_eq!(names(&out), ["web", "other"]);
}

#[test]
fn the_override_file_is_merged_without_f() {
    let dir = TempDir::new("compose-files-override");
    dir.write("compose.yaml", BASE);
    dir.write("compose.override.yaml", PROD);
    dir.write("html/index.html", "");
    dir.write("prod-html/index.html", "");
    let out = run(dir.path(), &[], &["config"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), unindent(MERGED));
    // with -f, only the files named
    let out = run(dir.path(), &[], &["-f", "compose.yaml", "convert"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("ref: nginx:1.27"), "{}", stdout(&out));
    // the first override name found is merged, whichever default file was found (as
    // compose-go does): compose.override.yml before docker-compose.override.yml
    let dir = TempDir::new("compose-files-override-docker");
    dir.write("docker-compose.yml", BASE);
    dir.write("docker-compose.override.yml", PROD);
    let out = run(dir.path(), &[], &["convert"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("ref: nginx:1.28"), "{}", stdout(&out));
    dir.write(
        "compose.override.yml",
        "services:\n  web:\n    image: nginx:1.29\n",
    );
    let out = run(dir.path(), &[], &["convert"]);
    assert!(stdout(&out).contains("ref: nginx:1.29"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("cache"), "{}", stdout(&out));
    // an rcompose.yaml is never merged with an override
    let dir = TempDir::new("compose-files-override-native");
    dir.write(
        "rcompose.yaml",
        "pods: { c: { containers: [ { name: c, command: x } ] } }\n",
    );
    dir.write("compose.override.yaml", PROD);
    let out = run(dir.path(), &[], &["config", "-q"]);
    assert_code(&out, 0);
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_missing_file_is_named_and_fails_with_exit_code_3() {
    let dir = TempDir::new("compose-files-missing");
    dir.write("compose.yaml", BASE);
    let out = run(
        dir.path(),
        &[],
        &["-f", "compose.yaml", "-f", "compose.prod.yaml", "config"],
    );
    assert_code(&out, 3);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "error: failed to read `compose.prod.yaml`\ncaused by: No such file or directory (os error 2)\n\
         hint: check the path, or name the manifest with `-f FILE` (or RCOMPOSE_FILE)\n"
    );
}

#[test]
fn errors_point_into_the_file_they_come_from() {
    let dir = TempDir::new("compose-files-errors");
    dir.write("compose.yaml", "services:\n  web:\n    image: nginx\n");
    dir.write(
        "prod/compose.prod.yaml",
        "services:\n  web:\n    restart: sometimes\n",
    );
    let out = run(
        dir.path(),
        &[],
        &[
            "-f",
            "compose.yaml",
            "-f",
            "prod/compose.prod.yaml",
            "config",
        ],
    );
    assert_code(&out, 3);
    assert_eq!(
        stderr(&out),
        unindent(
            "
            error: unknown restart policy `sometimes`; expected `no`, `always`, `on-failure[:N]` or `unless-stopped`
              --> prod/compose.prod.yaml:3:14
               |
             3 |     restart: sometimes
               |              ^^^^^^^^^
            hint: fix the problems above; docs/coming-from-compose.md says how each Compose key maps and why some are not supported
            "
        )
    );
}

#[test]
fn an_rcompose_yaml_is_not_merged_with_other_files() {
    let dir = TempDir::new("compose-files-native");
    dir.write(
        "rcompose.yaml",
        "pods: { c: { containers: [ { name: c, command: x } ] } }\n",
    );
    dir.write("compose.yaml", BASE);
    let out = run(
        dir.path(),
        &[],
        &["-f", "rcompose.yaml", "-f", "compose.yaml", "config"],
    );
    assert_code(&out, 2);
    assert_eq!(
        stderr(&out),
        "error: `rcompose.yaml` is an rcompose.yaml: only Compose files are merged (2 files are named); name it alone (`-f rcompose.yaml`) and write what the other files add into it\n"
    );
    let out = run(
        dir.path(),
        &[],
        &["-f", "compose.yaml", "-f", "rcompose.yaml", "config"],
    );
    assert_code(&out, 2);
    assert_eq!(
        stderr(&out),
        "error: `rcompose.yaml` is an rcompose.yaml: it cannot be merged over the Compose file `compose.yaml`; name an rcompose.yaml alone with `-f`, or merge Compose files only\n"
    );
}

#[test]
fn the_corpus_override_with_a_reset_through_anchors_loads_over_its_base() {
    // compose-go's TestNestedAliasReset: both services end with no ports
    let root = corpus_dir();
    let dir = root.join("compose-go/edge-valid");
    let out = run(
        &dir,
        &[],
        &[
            "-f",
            "reset-via-anchor.base.yaml",
            "-f",
            "reset-via-anchor.override.yaml",
            "convert",
        ],
    );
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        unindent(
            "
            name: test
            images:
              svc1:
                ref: alpine
              svc2:
                ref: nginx
            pods:
              svc1:
                labels:
                  compose.service: svc1
                containers:
                - name: svc1
                  image: svc1
              svc2:
                labels:
                  compose.service: svc2
                containers:
                - name: svc2
                  image: svc2
            "
        )
    );
}

#[test]
fn f_dash_reads_a_file_from_standard_input() {
    let dir = TempDir::new("compose-files-stdin");
    dir.write("compose.yaml", BASE);
    dir.write("html/index.html", "");
    dir.write("prod-html/index.html", "");
    // alone: the same project as the file, relative paths from the current directory
    let from_file = run(dir.path(), &[], &["-f", "compose.yaml", "config"]);
    assert_code(&from_file, 0);
    let out = rcompose_stdin(dir.path(), &["-f", "-", "config"], BASE);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), stdout(&from_file));
    // merged in its place among the files: here an override after the file
    let out = rcompose_stdin(
        dir.path(),
        &["-f", "compose.yaml", "-f", "-", "config"],
        PROD,
    );
    assert_code(&out, 0);
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), unindent(MERGED));
    // an error in it names it `<stdin>`, with its line and column
    let out = rcompose_stdin(
        dir.path(),
        &["-f", "compose.yaml", "-f", "-", "config"],
        "services:\n  web:\n    restart: sometimes\n",
    );
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("--> <stdin>:3:14\n"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn f_dash_is_refused_twice_and_where_the_manifest_is_watched() {
    let dir = TempDir::new("compose-files-stdin-bad");
    dir.write("compose.yaml", BASE);
    let out = rcompose_stdin(dir.path(), &["-f", "-", "-f", "-", "config"], BASE);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("`-f -` (the manifest from standard input) can be given only once"),
        "{}",
        stderr(&out)
    );
    // refused before anything starts
    for args in [
        &["-f", "-", "watch"][..],
        &["-f", "-", "up", "--watch"],
        &["-f", "-", "up", "-d", "--watch"],
    ] {
        let out = rcompose_stdin(dir.path(), args, BASE);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains("reads it from standard input: write it to a file"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
