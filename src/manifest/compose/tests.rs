//! Compose loader tests: each mapping, the problems and their places.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    Host, Loaded, Loader, Options, Outcome, Source, get, is_compose, is_rcompose, load, load_files,
    service,
};
use crate::manifest::convert::Issues;
use crate::manifest::node::{Kind, Node};
use crate::manifest::{
    CommandSpec, Condition, DependsOnSpec, EnvSpec, Facts, FileUseSpec, Manifest, MountSpec,
    MountType, NetworkMode, PortSpec, PullPolicy, Restart, Text, WatchAction,
};

/// Files and variables of a fake world.
#[derive(Default)]
struct Fake {
    files: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
}

impl Host for Fake {
    fn read_file(&self, path: &Path) -> Result<String, String> {
        self.files
            .get(path.to_str().unwrap())
            .cloned()
            .ok_or_else(|| "no such file or directory".into())
    }
    fn file_exists(&self, path: &Path) -> bool {
        self.files.contains_key(path.to_str().unwrap())
    }
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
}

fn fake(files: &[(&str, &str)], env: &[(&str, &str)]) -> Fake {
    Fake {
        files: files
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    }
}

fn run_with(source: &str, host: &Fake, profiles: &[&str]) -> Outcome {
    let facts = Facts {
        path_exists: &|_| true,
        env_set: &|_| true,
        subnet_conflict: &|_, _| None,
    };
    let options = Options {
        profiles: profiles.iter().map(|p| (*p).to_string()).collect(),
    };
    load(source, Path::new("compose.yaml"), host, &options, &facts)
}

#[track_caller]
fn ok(source: &str) -> Manifest {
    ok_with(source, &Fake::default()).manifest
}

#[track_caller]
fn ok_with(source: &str, host: &Fake) -> Loaded {
    match run_with(source, host, &[]).result {
        Ok(l) => l,
        Err(e) => panic!("expected success, got:\n{}", e.render()),
    }
}

/// The rendered errors.
#[track_caller]
fn err(source: &str) -> String {
    err_with(source, &Fake::default())
}

#[track_caller]
fn err_with(source: &str, host: &Fake) -> String {
    match run_with(source, host, &[]).result {
        Ok(l) => panic!("expected an error, got:\n{}", l.manifest.to_yaml()),
        Err(e) => e.render(),
    }
}

/// The rendered warnings.
fn warnings(source: &str, host: &Fake) -> String {
    crate::manifest::render_warnings(
        Path::new("compose.yaml"),
        &run_with(source, host, &[]).warnings,
    )
}

#[test]
fn a_service_becomes_a_pod_of_one_container_with_its_image() {
    let m = ok("services:
  web:
    image: busybox:1.36
    pull_policy: always
    command: httpd -f -p 80
    entrypoint: [/bin/sh, -c]
    working_dir: /srv
    user: \"1000\"
");
    let pod = &m.pods["web"];
    assert_eq!(pod.labels["compose.service"], "web");
    let c = &pod.containers[0];
    assert_eq!(c.name, "web");
    assert_eq!(c.image.as_deref(), Some("web"));
    assert_eq!(c.command, Some(CommandSpec::Shell("httpd -f -p 80".into())));
    assert_eq!(
        c.entrypoint,
        Some(CommandSpec::Argv(vec![
            Text("/bin/sh".into()),
            Text("-c".into())
        ]))
    );
    assert_eq!(c.working_dir.as_deref(), Some("/srv"));
    assert_eq!(c.user.as_deref(), Some("1000"));
    assert_eq!(m.images["web"].reference.as_deref(), Some("busybox:1.36"));
    assert_eq!(m.images["web"].pull, Some(PullPolicy::Always));
    assert!(m.services.is_empty(), "no ports: no service");
}

#[test]
fn ports_make_a_service_of_the_same_name_through_the_balancer() {
    let m = ok("services:
  web:
    image: nginx
    deploy: { replicas: 2 }
    ports: [\"8080:80\", \"127.0.0.1:8443:443/tcp\", { target: 9000, published: \"9001\", host_ip: 0.0.0.0 }]
    expose: [\"3000\", 80]
");
    assert_eq!(m.pods["web"].replicas, Some(2));
    let svc = &m.services["web"];
    assert_eq!(svc.selector["compose.service"], "web");
    let ports: Vec<(u16, Option<u16>, Option<&str>)> = svc
        .ports
        .iter()
        .map(|p| match p {
            PortSpec::Long(l) => (l.port, l.publish, l.host_ip.as_deref()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            (80, Some(8080), None),
            (443, Some(8443), Some("127.0.0.1")),
            (9000, Some(9001), Some("0.0.0.0")),
            (3000, None, None),
        ]
    );
}

#[test]
fn a_container_port_published_twice_gets_two_service_ports() {
    let m = ok("services: { a: { image: x, ports: [\"8080:80\", \"8081:80\"] } }");
    let ports: Vec<(u16, Option<u16>, Option<u16>)> = m.services["a"]
        .ports
        .iter()
        .map(|p| match p {
            PortSpec::Long(l) => (l.port, l.target, l.publish),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ports,
        vec![(80, None, Some(8080)), (8081, Some(80), Some(8081))]
    );
}

#[test]
fn port_ranges_expand_and_udp_is_refused_at_its_line() {
    let m = ok("services:
  a: { image: x, ports: [\"8000-8001:9000-9001\"] }
");
    assert_eq!(m.services["a"].ports.len(), 2);
    assert_eq!(
        err("services:
  a:
    image: x
    ports: [\"53:53/udp\"]
"),
        "error: the port `53:53/udp` is `udp`: only TCP ports are supported (the balancer is a TCP proxy)
  --> compose.yaml:4:13
   |
 4 |     ports: [\"53:53/udp\"]
   |             ^^^^^^^^^^^"
    );
}

#[test]
fn environment_lists_maps_env_files_and_host_values_merge() {
    let host = fake(
        &[("web.env", "A=from-file\nB=from-file\n# c\n")],
        &[("FROM_HOST", "h")],
    );
    let l = ok_with(
        "services:
  web:
    image: x
    env_file: web.env
    environment:
      B: over
      N: 1.10
      FROM_HOST:
      MISSING:
",
        &host,
    );
    let Some(EnvSpec::Map(env)) = &l.manifest.pods["web"].containers[0].env else {
        panic!()
    };
    let got: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.0.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("A", "from-file"),
            ("B", "over"),
            ("FROM_HOST", "h"),
            ("N", "1.10")
        ]
    );
    let l = ok_with(
        "services: { web: { image: x, environment: [X=1, FROM_HOST, NOPE] } }",
        &host,
    );
    let Some(EnvSpec::Map(env)) = &l.manifest.pods["web"].containers[0].env else {
        panic!()
    };
    assert_eq!(env.len(), 2);
    assert_eq!(env["FROM_HOST"].0, "h");
}

#[test]
fn a_missing_env_file_is_an_error_unless_optional() {
    assert_eq!(
        err("services:
  web:
    image: x
    env_file: [nope.env]
"),
        "error: cannot read the env file `nope.env`: no such file or directory
  --> compose.yaml:4:16
   |
 4 |     env_file: [nope.env]
   |                ^^^^^^^^"
    );
    ok("services:
  web: { image: x, env_file: [{ path: nope.env, required: false }] }
");
}

#[test]
fn variables_come_from_the_environment_over_dot_env() {
    let host = fake(&[(".env", "TAG=1.36\nPORT=9000\n")], &[("PORT", "8080")]);
    let l = ok_with(
        "services:
  web:
    image: busybox:${TAG}
    ports: [\"${PORT}:80\"]
    command: echo $$HOME ${GREETING:-hello}
",
        &host,
    );
    assert_eq!(
        l.manifest.images["web"].reference.as_deref(),
        Some("busybox:1.36")
    );
    let PortSpec::Long(p) = &l.manifest.services["web"].ports[0] else {
        panic!()
    };
    assert_eq!(p.publish, Some(8080));
    assert_eq!(
        l.manifest.pods["web"].containers[0].command,
        Some(CommandSpec::Shell("echo $HOME hello".into()))
    );
}

#[test]
fn unset_variables_warn_once_and_required_ones_fail_at_their_place() {
    let host = Fake::default();
    let source = "services:
  web:
    image: busybox:${TAG}
    command: echo ${TAG}
";
    assert_eq!(
        warnings(source, &host),
        "warning: the variable `TAG` is not set: using an empty string
  --> compose.yaml:3:12
   |
 3 |     image: busybox:${TAG}
   |            ^^^^^^^^^^^^^^"
    );
    assert_eq!(
        err("services:
  web:
    image: ${IMAGE:?set IMAGE to the image to run}
"),
        "error: required variable `IMAGE` is missing a value: set IMAGE to the image to run
  --> compose.yaml:3:12
   |
 3 |     image: ${IMAGE:?set IMAGE to the image to run}
   |            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^"
    );
}

#[test]
fn depends_on_conditions_map_to_pod_conditions() {
    let m = ok("services:
  db:
    image: postgres
    healthcheck: { test: [CMD, pg_isready], interval: 1s, retries: 5 }
  init: { image: x, restart: \"no\" }
  web:
    image: x
    depends_on:
      db: { condition: service_healthy }
      init: { condition: service_completed_successfully }
  worker: { image: x, depends_on: [db] }
");
    let Some(DependsOnSpec::Map(deps)) = &m.pods["web"].depends_on else {
        panic!()
    };
    assert_eq!(deps["db"].condition, Some(Condition::Healthy));
    assert_eq!(deps["init"].condition, Some(Condition::Completed));
    let Some(DependsOnSpec::Map(deps)) = &m.pods["worker"].depends_on else {
        panic!()
    };
    assert_eq!(deps["db"].condition, Some(Condition::Started));
    let h = m.pods["db"].containers[0].healthcheck.as_ref().unwrap();
    assert_eq!(h.interval.as_deref(), Some("1s"));
    assert_eq!(h.retries, Some(5));
}

#[test]
fn an_undefined_dependency_is_an_error_unless_not_required() {
    assert_eq!(
        err("services:
  web:
    image: x
    depends_on: [nope]
"),
        "error: the service `web` depends on the undefined service `nope`
  --> compose.yaml:4:18
   |
 4 |     depends_on: [nope]
   |                  ^^^^"
    );
    let m = ok("services:
  web:
    image: x
    depends_on: { nope: { condition: service_started, required: false } }
");
    assert_eq!(m.pods["web"].depends_on, None);
}

#[test]
fn profiles_disable_services_unless_enabled() {
    let source = "services:
  web: { image: x }
  debug: { image: x, profiles: [debug] }
";
    let host = Fake::default();
    let off = run_with(source, &host, &[]).result.unwrap();
    assert!(!off.manifest.pods.contains_key("debug"));
    let on = run_with(source, &host, &["debug"]).result.unwrap();
    assert!(on.manifest.pods.contains_key("debug"));
    let env = fake(&[], &[("COMPOSE_PROFILES", "other,debug")]);
    assert!(
        run_with(source, &env, &[])
            .result
            .unwrap()
            .manifest
            .pods
            .contains_key("debug")
    );
    let dotenv = fake(&[(".env", "COMPOSE_PROFILES=debug\n")], &[]);
    assert!(
        run_with(source, &dotenv, &[])
            .result
            .unwrap()
            .manifest
            .pods
            .contains_key("debug")
    );
    let all = run_with(source, &host, &["*"]).result.unwrap();
    assert!(all.manifest.pods.contains_key("debug"));
    let e = run_with(
        "services:
  web: { image: x, depends_on: [debug] }
  debug: { image: x, profiles: [debug] }
",
        &host,
        &[],
    )
    .result
    .unwrap_err()
    .render();
    assert!(
        e.starts_with("error: the service `web` depends on `debug`, which is disabled: enable one of its profiles (`debug`) with `--profile`"),
        "{e}"
    );
}

#[test]
fn restart_policies_map() {
    for (text, want) in [
        ("\"no\"", Restart::Never),
        ("always", Restart::Always),
        ("unless-stopped", Restart::Always),
        ("on-failure", Restart::OnFailure),
        ("on-failure:3", Restart::OnFailure),
    ] {
        let m = ok(&format!(
            "services: {{ a: {{ image: x, restart: {text} }} }}"
        ));
        assert_eq!(m.pods["a"].restart, Some(want), "{text}");
    }
    let m = ok(
        "services: { a: { image: x, deploy: { restart_policy: { condition: on-failure, delay: 2s } } } }",
    );
    assert_eq!(m.pods["a"].restart, Some(Restart::OnFailure));
    assert_eq!(
        m.pods["a"].backoff.as_ref().unwrap().initial.as_deref(),
        Some("2s")
    );
}

#[test]
fn resources_take_docker_units() {
    let m = ok("services:
  a:
    image: x
    deploy: { resources: { limits: { cpus: \"0.5\", memory: 512m, pids: 64 } } }
  b: { image: x, mem_limit: 1g, cpus: 1.5, pids_limit: 100 }
  c: { image: x, mem_limit: 1000000 }
");
    let r = |p: &str| m.pods[p].containers[0].resources.clone().unwrap();
    assert_eq!(r("a").cpu.unwrap().0, "0.5");
    assert_eq!(r("a").memory.unwrap().0, "512Mi");
    assert_eq!(r("a").pids, Some(64));
    assert_eq!(r("b").memory.unwrap().0, "1Gi");
    assert_eq!(r("b").cpu.unwrap().0, "1.5");
    assert_eq!(r("b").pids, Some(100));
    assert_eq!(r("c").memory.unwrap().0, "1000000");
}

/// Compose reserves what `reservations` say, and a limit alone nothing (rcompose's own
/// manifests request their limits, as Kubernetes): a Compose file whose limits add up to more
/// than the machine still starts, as under Docker.
#[test]
fn reservations_are_requests_and_limits_alone_request_nothing() {
    let m = ok("services:
  a:
    image: x
    deploy: { resources: { limits: { cpus: \"1\", memory: 512m }, reservations: { cpus: \"0.25\", memory: 128m } } }
  b: { image: x, mem_limit: 1g, cpus: 1.5 }
  c: { image: x, mem_limit: 1g, mem_reservation: 256m }
  d: { image: x }
");
    let req = |p: &str| {
        let r = m.pods[p].containers[0]
            .resources
            .clone()
            .unwrap()
            .requests
            .unwrap();
        (r.cpu.map(|q| q.0), r.memory.map(|q| q.0))
    };
    assert_eq!(req("a"), (Some("0.25".into()), Some("128Mi".into())));
    assert_eq!(req("b"), (Some("0".into()), Some("0".into())));
    assert_eq!(req("c"), (None, Some("256Mi".into())));
    assert_eq!(m.pods["d"].containers[0].resources, None);
    let e = err("services:
  a:
    image: x
    deploy: { resources: { reservations: { devices: [ { capabilities: [gpu] } ] } } }
");
    assert!(
        e.contains("`devices` reservations are not supported"),
        "{e}"
    );
    assert!(e.contains(":4:"), "{e}");
}

#[test]
fn volumes_bind_named_and_tmpfs() {
    let m = ok("services:
  a:
    image: x
    volumes:
      - ./site:/srv:ro
      - data:/var/lib/data
      - { type: tmpfs, target: /cache, tmpfs: { size: 64m } }
    tmpfs: /run/x
volumes:
  data:
");
    let v = m.pods["a"].containers[0].volumes.clone().unwrap();
    assert_eq!(v[0], MountSpec::Short("./site:/srv:ro".into()));
    assert_eq!(v[1], MountSpec::Short("data:/var/lib/data".into()));
    let MountSpec::Long(t) = &v[2] else { panic!() };
    assert_eq!(t.kind, MountType::Tmpfs);
    assert_eq!(t.tmpfs.as_ref().unwrap().size.as_ref().unwrap().0, "64Mi");
    let MountSpec::Long(t) = &v[3] else { panic!() };
    assert_eq!(t.target, "/run/x");
    assert!(m.volumes.contains_key("data"));
}

#[test]
fn an_undeclared_named_volume_is_reported_at_its_line() {
    let e = err("services:
  a:
    image: x
    volumes: [\"myVolume:/data\"]
");
    assert!(e.contains("--> compose.yaml:4:15"), "{e}");
    assert!(e.contains("`myVolume`"), "{e}");
}

#[test]
fn secrets_and_configs_keep_their_sources_and_modes() {
    let m = ok("services:
  a:
    image: x
    secrets: [token]
    configs: [{ source: conf, target: /etc/a.conf, uid: \"103\", mode: 0440 }]
secrets:
  token: { environment: TOKEN }
configs:
  conf: { content: hello }
");
    assert_eq!(m.secrets["token"].environment.as_deref(), Some("TOKEN"));
    assert_eq!(m.configs["conf"].content.as_deref(), Some("hello"));
    let c = &m.pods["a"].containers[0];
    assert_eq!(c.secrets, Some(vec![FileUseSpec::Short("token".into())]));
    let Some(FileUseSpec::Long(l)) = c.configs.as_ref().and_then(|v| v.first()) else {
        panic!()
    };
    assert_eq!((l.uid, l.mode), (Some(103), Some(0o440)));
}

#[test]
fn develop_watch_becomes_watch_rules() {
    let m = ok("services:
  a:
    image: x
    develop:
      watch:
        - { action: sync, path: ./src, target: /app/src, ignore: [\"*.tmp\", ./gen, lib/x/] }
        - { action: restart, path: ./conf }
");
    assert_eq!(m.watch.len(), 2);
    assert_eq!(m.watch[0].action, WatchAction::Sync);
    assert_eq!(m.watch[0].target.as_deref(), Some("/app/src"));
    assert_eq!(m.watch[0].pods, vec!["a".to_string()]);
    // Compose's patterns are relative to the watched path, rcompose's to the project
    assert_eq!(m.watch[0].ignore, vec!["*.tmp", "/src/gen", "/src/lib/x/"]);
    assert_eq!(m.watch[1].action, WatchAction::Restart);
    let e = err("services:
  a:
    image: x
    develop: { watch: [{ action: rebuild, path: . }] }
");
    assert!(
        e.starts_with("error: the watch action `rebuild` is not supported"),
        "{e}"
    );
}

#[test]
fn extends_merges_over_the_base_in_the_same_and_another_file() {
    let host = fake(
        &[(
            "common/base.yaml",
            "services:
  base:
    image: busybox
    environment: { A: \"1\", B: \"1\" }
    volumes: [./data:/data]
    ports: [\"8080:80\"]
",
        )],
        &[],
    );
    let l = ok_with(
        "services:
  web:
    extends: { file: common/base.yaml, service: base }
    environment: [B=2]
    ports: [\"8443:443\"]
  tool: { image: alpine, environment: { T: \"1\" } }
  worker:
    extends: tool
    command: work
",
        &host,
    );
    let m = &l.manifest;
    let c = &m.pods["web"].containers[0];
    let Some(EnvSpec::Map(env)) = &c.env else {
        panic!()
    };
    assert_eq!((env["A"].0.as_str(), env["B"].0.as_str()), ("1", "2"));
    // a bind source of the extended file is relative to that file
    assert_eq!(
        c.volumes,
        Some(vec![MountSpec::Short("./common/data:/data".into())])
    );
    assert_eq!(m.services["web"].ports.len(), 2);
    assert_eq!(m.images["worker"].reference.as_deref(), Some("alpine"));
    assert_eq!(
        m.pods["worker"].containers[0].command,
        Some(CommandSpec::Shell("work".into()))
    );
}

#[test]
fn an_extends_cycle_is_reported() {
    let e = err("services:
  a: { image: x, extends: b }
  b: { image: x, extends: a }
");
    assert!(e.contains("`extends` cycle: `a` -> `b` -> `a`"), "{e}");
}

#[test]
fn include_brings_services_and_names_their_file_in_problems() {
    let host = fake(
        &[(
            "db/compose.yaml",
            "services:
  db:
    image: postgres
    buid: .
",
        )],
        &[],
    );
    let e = err_with(
        "include: [db/compose.yaml]
services:
  web: { image: x, depends_on: [db] }
",
        &host,
    );
    assert_eq!(
        e,
        "error: unknown key `buid` in the service `db`; did you mean `build`?
  --> db/compose.yaml:4:5
   |
 4 |     buid: .
   |     ^^^^"
    );
    let host = fake(
        &[("db/compose.yaml", "services: { db: { image: postgres } }")],
        &[],
    );
    let l = ok_with(
        "include: [{ path: db/compose.yaml }]
services:
  web: { image: x, depends_on: [db] }
",
        &host,
    );
    assert!(l.manifest.pods.contains_key("db"));
}

#[test]
fn unknown_top_level_keys_of_included_files_are_reported_in_their_file() {
    let host = fake(&[("db.yaml", "servces: {}\n")], &[]);
    let e = err_with(
        "include: [db.yaml]\nservices: { web: { image: x } }\n",
        &host,
    );
    assert!(e.starts_with("error: unknown key `servces` at the top level of a Compose file; did you mean `services`?\n  --> db.yaml:1:1"), "{e}");
}

#[test]
fn include_cycles_and_conflicts_are_errors() {
    let host = fake(
        &[(
            "a.yaml",
            "include: [compose.yaml]\nservices: { web: { image: y } }",
        )],
        &[],
    );
    let e = err_with(
        "include: [a.yaml]\nservices: { web: { image: x } }\n",
        &host,
    );
    assert!(
        e.contains("include cycle: `compose.yaml` -> `a.yaml` -> `compose.yaml`"),
        "{e}"
    );
    assert!(e.contains("is already defined"), "{e}");
}

#[test]
fn unsupported_keys_are_errors_and_harmless_ones_warnings() {
    let source = "version: \"3.8\"
services:
  web:
    image: x
    build: .
    container_name: my-web
    networks: [front]
networks:
  front:
";
    assert_eq!(
        err(source),
        "error: `build` is not supported: rcompose does not build images yet: build and push the image, then set `image:`
  --> compose.yaml:5:5
   |
 5 |     build: .
   |     ^^^^^"
    );
    let w = warnings(source, &Fake::default());
    assert!(
        w.contains("warning: `version` is obsolete and ignored"),
        "{w}"
    );
    assert!(w.contains("warning: `container_name` is ignored"), "{w}");
    assert!(w.contains("warning: `networks` is ignored"), "{w}");
    assert!(w.contains("warning: the network `front` is ignored"), "{w}");
}

#[test]
fn every_problem_of_a_file_is_reported_at_once_with_suggestions() {
    let e = err("services:
  web:
    imgae: x
    ports: [\"a:b\"]
  db:
    image: x
    restart: sometimes
");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors,
        vec![
            "error: the service `web` has neither an `image` nor a `build`",
            "error: unknown key `imgae` in the service `web`; did you mean `image`?",
            "error: invalid port `a:b`: expected `[HOST_IP:][HOST_PORT:]CONTAINER_PORT` with ports 1-65535 (or ranges)",
            "error: unknown restart policy `sometimes`; expected `no`, `always`, `on-failure[:N]` or `unless-stopped`",
        ]
    );
}

#[test]
fn anchors_merge_keys_and_extensions_work() {
    let m = ok("x-common: &common
  image: busybox
  restart: always
services:
  a:
    <<: *common
    x-note: ignored
  b:
    <<: *common
    restart: \"no\"
");
    assert_eq!(m.pods["a"].restart, Some(Restart::Always));
    assert_eq!(m.pods["b"].restart, Some(Restart::Never));
    assert_eq!(m.images["b"].reference.as_deref(), Some("busybox"));
}

#[test]
fn reset_and_override_tags_apply_to_extends() {
    let m = ok("services:
  base:
    image: x
    command: sleep 1
    ports: [\"8080:80\"]
    environment: { A: \"1\", B: \"1\" }
  web:
    extends: base
    command: !reset null
    ports: !reset []
    environment: !override { C: \"1\" }
");
    let c = &m.pods["web"].containers[0];
    assert_eq!(c.command, None);
    assert!(!m.services.contains_key("web"));
    let Some(EnvSpec::Map(env)) = &c.env else {
        panic!()
    };
    assert_eq!(env.keys().collect::<Vec<_>>(), vec!["C"]);
    // a tag in an anchor a service merges applies there
    let m = ok("x-a: &a
  ports: !reset []
services:
  base:
    image: y
    ports: [\"80:80\"]
  other:
    extends: base
    <<: *a
");
    assert!(m.services.contains_key("base"));
    assert!(!m.services.contains_key("other"));
    // a tag outside a service, or not on a mapping value, is an error
    let e = err("volumes: !reset {}\nservices: { a: { image: x } }\n");
    assert!(
        e.starts_with("error: the YAML tag `!reset` is only supported on the keys of a service"),
        "{e}"
    );
    let e = err("services:\n  a:\n    image: x\n    ports:\n      - !reset \"80:80\"\n");
    assert!(
        e.starts_with(
            "error: the YAML tag `!reset` is only supported on the value of a mapping key"
        ),
        "{e}"
    );
}

#[test]
fn non_string_keys_are_refused() {
    let e = err("services:\n  123:\n    image: x\n");
    assert!(
        e.starts_with("error: non-string key `123` in `services`"),
        "{e}"
    );
    ok("services:\n  \"a1\":\n    image: x\n    environment: { \"1\": x }\n");
}

#[test]
fn service_names_that_are_no_dns_labels_are_refused() {
    let e = err("services:\n  my_db:\n    image: x\n");
    assert!(
        e.starts_with("error: the service name `my_db` cannot be used"),
        "{e}"
    );
}

#[test]
fn network_mode_none_and_host() {
    let m = ok("services: { a: { image: x, network_mode: none } }");
    assert_eq!(m.pods["a"].network_mode, Some(NetworkMode::None));
    let e = err("services: { a: { image: x, network_mode: host } }");
    assert!(
        e.starts_with("error: `network_mode: host` is not supported"),
        "{e}"
    );
}

#[test]
fn validation_problems_point_at_the_compose_source() {
    // a healthy dependency on a service without a health check is an rcompose validation
    // problem; it is reported at the Compose file's line
    let e = err("services:
  db: { image: x }
  web:
    image: x
    depends_on:
      db: { condition: service_healthy }
");
    assert!(e.contains("--> compose.yaml:6:"), "{e}");
}

#[test]
fn files_are_detected_by_name_or_content() {
    assert!(is_compose(Path::new("compose.yaml"), ""));
    assert!(is_compose(Path::new("x/docker-compose.yml"), ""));
    assert!(!is_compose(Path::new("rcompose.yaml"), "services:\n"));
    assert!(is_compose(Path::new("app.yaml"), "services:\n  a: {}\n"));
    assert!(!is_compose(
        Path::new("app.yaml"),
        "pods:\n  a: {}\nservices:\n  a: {}\n"
    ));
}

#[test]
fn the_converted_manifest_loads_as_an_rcompose_yaml() {
    let m = ok("name: shop
services:
  web:
    image: nginx
    ports: [\"8080:80\"]
    depends_on: [db]
  db:
    image: postgres
    volumes: [data:/var/lib/postgresql/data]
volumes: { data: {} }
");
    let yaml = m.to_yaml();
    let again = crate::manifest::parse(&yaml, Path::new("rcompose.yaml")).unwrap();
    assert_eq!(again, m);
    crate::manifest::load(&yaml, Path::new("rcompose.yaml")).unwrap();
}

// ---- several files (`-f a -f b`) ----

/// Loads files named `compose.yaml`, `compose.override.yaml`, ... merged in order.
fn run_files(files: &[(&str, &str)], host: &Fake) -> Outcome {
    let facts = Facts {
        path_exists: &|_| true,
        env_set: &|_| true,
        subnet_conflict: &|_, _| None,
    };
    let sources: Vec<Source<'_>> = files
        .iter()
        .map(|(path, text)| Source {
            path: Path::new(path),
            text,
        })
        .collect();
    load_files(&sources, host, &Options::default(), &facts)
}

#[track_caller]
fn ok_files(files: &[(&str, &str)]) -> Manifest {
    match run_files(files, &Fake::default()).result {
        Ok(l) => l.manifest,
        Err(e) => panic!("expected success, got:\n{}", e.render()),
    }
}

#[track_caller]
fn err_files(files: &[(&str, &str)]) -> String {
    match run_files(files, &Fake::default()).result {
        Ok(l) => panic!("expected an error, got:\n{}", l.manifest.to_yaml()),
        Err(e) => e.render(),
    }
}

/// A node tree in flow style, keys in order, for comparing merge results.
fn show(node: &Node) -> String {
    match &node.kind {
        Kind::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", k.name, show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::Seq(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        Kind::Scalar(s) => s.text.clone(),
        Kind::Null => "null".into(),
    }
}

/// The service `web` of each document merged over the one before by Compose's merge rules,
/// with the `!reset` keys dropped at the end (as the loader does).
fn merged_web(docs: &[&str]) -> String {
    let host = Fake::default();
    let mut ld = Loader {
        cx: Issues::default(),
        warnings: Vec::new(),
        host: &host,
        dotenv: BTreeMap::new(),
        warned: std::collections::BTreeSet::new(),
        files: BTreeMap::new(),
        origin_dir: PathBuf::new(),
        tagged: BTreeMap::new(),
    };
    let mut out: Option<Node> = None;
    for (i, doc) in docs.iter().enumerate() {
        let number = u32::try_from(i).unwrap();
        let file = ld.parse(doc, number, Path::new("f.yaml"), None).unwrap();
        let web = get(get(&file.tree, "services").unwrap(), "web")
            .unwrap()
            .clone();
        out = Some(match out {
            None => web,
            Some(base) => service::merge(&ld, &base, &web),
        });
    }
    assert!(ld.cx.is_empty(), "problems while parsing");
    show(&service::strip_resets(&ld, &out.unwrap()))
}

#[test]
fn merging_files_merges_mappings_and_replaces_scalars() {
    assert_eq!(
        merged_web(&[
            "services: { web: { image: a, user: \"1\", deploy: { replicas: 2, resources: { limits: { cpus: \"1\" } } } } }",
            "services: { web: { image: b, deploy: { resources: { limits: { memory: 1g } } } } }",
        ]),
        "{image: b, user: 1, deploy: {replicas: 2, resources: {limits: {cpus: 1, memory: 1g}}}}"
    );
    // a null value leaves the base as it is
    assert_eq!(
        merged_web(&[
            "services: { web: { image: a, environment: { A: x } } }",
            "services: { web: { environment: } }",
        ]),
        "{image: a, environment: {A: x}}"
    );
}

#[test]
fn merging_files_appends_sequences_without_repeating_items() {
    assert_eq!(
        merged_web(&[
            "services: { web: { dns: [1.1.1.1], dns_search: [a], expose: [\"80\"], tmpfs: [/tmp], external_links: [x], profiles: [p] } }",
            "services: { web: { dns: [8.8.8.8, 1.1.1.1], dns_search: [b], expose: [\"80\", \"81\"], tmpfs: [/run], external_links: [y], profiles: [q] } }",
        ]),
        "{dns: [1.1.1.1, 8.8.8.8], dns_search: [a, b], expose: [80, 81], tmpfs: [/tmp, /run], external_links: [x, y], profiles: [p, q]}"
    );
}

#[test]
fn merging_files_replaces_commands_entrypoints_and_health_tests() {
    assert_eq!(
        merged_web(&[
            "services: { web: { command: [a, b], entrypoint: [sh, -c], healthcheck: { test: [CMD, a], interval: 1s } } }",
            "services: { web: { command: [c], entrypoint: sh, healthcheck: { test: [CMD, b] } } }",
        ]),
        "{command: [c], entrypoint: sh, healthcheck: {test: [CMD, b], interval: 1s}}"
    );
}

#[test]
fn merging_files_merges_ports_volumes_secrets_and_configs_by_their_unique_key() {
    assert_eq!(
        merged_web(&[
            "services: { web: { ports: [\"8080:80\", \"9090:90\"], volumes: [\"a:/data\", \"./x:/x\"], secrets: [s, { source: t, target: /t }], configs: [c] } }",
            "services: { web: { ports: [{ published: \"8080\", target: \"80\" }, \"127.0.0.1:9090:90\"], volumes: [\"b:/data\"], secrets: [{ source: u, target: /run/secrets/s }, { source: t, target: /t2 }], configs: [{ source: c, mode: \"0400\" }] } }",
        ]),
        "{ports: [{published: 8080, target: 80}, 9090:90, 127.0.0.1:9090:90], volumes: [b:/data, ./x:/x], secrets: [{source: u, target: /run/secrets/s}, {source: t, target: /t}, {source: t, target: /t2}], configs: [{source: c, mode: 0400}]}"
    );
}

#[test]
fn merging_files_merges_environment_labels_and_depends_on_by_key() {
    assert_eq!(
        merged_web(&[
            "services: { web: { environment: [A=1, B=2], labels: { x: \"1\" }, depends_on: [db] } }",
            "services: { web: { environment: { B: \"3\", C: \"4\" }, labels: [y=2], depends_on: { cache: { condition: service_started } } } }",
        ]),
        "{environment: {A: 1, B: 3, C: 4}, labels: {x: 1, y: 2}, depends_on: {db: null, cache: {condition: service_started}}}"
    );
}

#[test]
fn reset_and_override_tags_apply_when_files_merge() {
    assert_eq!(
        merged_web(&[
            "services: { web: { image: a, ports: [\"80:80\"], environment: { A: \"1\", B: \"2\" }, command: x } }",
            "services:\n  web:\n    ports: !reset []\n    environment:\n      A: !reset null\n    command: !override [y]\n",
        ]),
        "{image: a, environment: {B: 2}, command: [y]}"
    );
    assert_eq!(
        merged_web(&[
            "services: { web: { ports: [\"80:80\"] } }",
            "services:\n  web:\n    ports: !override [\"81:81\"]\n",
        ]),
        "{ports: [81:81]}"
    );
}

#[test]
fn later_files_merge_over_earlier_ones_into_one_project() {
    let m = ok_files(&[
        (
            "compose.yaml",
            "name: dev
services:
  web:
    image: nginx:1
    ports: [\"8080:80\"]
    environment: { MODE: dev, DEBUG: \"1\" }
  db:
    image: postgres:16
volumes:
  data: {}
",
        ),
        (
            "compose.prod.yaml",
            "name: prod
services:
  web:
    image: nginx:2
    ports: [\"443:443\"]
    environment: { MODE: prod }
  cache:
    image: redis
",
        ),
    ]);
    assert_eq!(m.name.as_deref(), Some("prod"));
    assert_eq!(m.images["web"].reference.as_deref(), Some("nginx:2"));
    assert_eq!(
        m.pods.keys().collect::<Vec<_>>(),
        vec!["cache", "db", "web"]
    );
    let Some(EnvSpec::Map(env)) = &m.pods["web"].containers[0].env else {
        panic!()
    };
    assert_eq!(env["MODE"].0, "prod");
    assert_eq!(env["DEBUG"].0, "1");
    assert_eq!(m.services["web"].ports.len(), 2, "{}", m.to_yaml());
    assert!(m.volumes.contains_key("data"));
}

#[test]
fn relative_paths_of_every_file_start_at_the_project_directory() {
    // the override is in another directory: its `./conf` is still the project's
    let m = ok_files(&[
        (
            "compose.yaml",
            "services:\n  web:\n    image: x\n    volumes: [\"./data:/data\"]\n",
        ),
        (
            "env/prod.yaml",
            "services:\n  web:\n    volumes: [\"./conf:/etc/conf:ro\"]\nsecrets:\n  key: { file: ./key.txt }\n",
        ),
    ]);
    let yaml = m.to_yaml();
    assert!(yaml.contains("./data:/data"), "{yaml}");
    assert!(yaml.contains("./conf:/etc/conf:ro"), "{yaml}");
    assert!(yaml.contains("file: ./key.txt"), "{yaml}");
}

#[test]
fn a_later_file_overrides_a_service_of_an_included_file() {
    let host = fake(
        &[("inc/db.yaml", "services:\n  db:\n    image: postgres:15\n")],
        &[],
    );
    let outcome = run_files(
        &[
            (
                "compose.yaml",
                "include: [inc/db.yaml]\nservices:\n  web: { image: x }\n",
            ),
            ("over.yaml", "services:\n  db:\n    image: postgres:16\n"),
        ],
        &host,
    );
    let m = outcome.result.unwrap().manifest;
    assert_eq!(m.images["db"].reference.as_deref(), Some("postgres:16"));
}

#[test]
fn a_reset_tag_in_an_anchor_of_an_override_file_applies() {
    // compose-go's TestNestedAliasReset, as the corpus has it
    let m = ok_files(&[
        (
            "base.yaml",
            "name: test
services:
  svc1:
    image: alpine
    ports:
      - \"8080:80\"
  svc2:
    image: nginx
    ports:
      - \"9090:90\"
",
        ),
        (
            "override.yaml",
            "x-inner: &inner
  ports: !reset []

x-outer: &outer
  <<: *inner

services:
  svc1:
    <<: *outer
  svc2:
    <<: *inner
",
        ),
    ]);
    assert_eq!(m.pods.len(), 2);
    assert!(m.services.is_empty(), "{}", m.to_yaml());
}

#[test]
fn problems_of_a_later_file_point_into_it() {
    let e = err_files(&[
        ("compose.yaml", "services:\n  web:\n    image: x\n"),
        (
            "compose.override.yaml",
            "services:\n  web:\n    restart: sometimes\n    imgae: y\n",
        ),
    ]);
    assert_eq!(
        e,
        "error: unknown restart policy `sometimes`; expected `no`, `always`, `on-failure[:N]` or `unless-stopped`
  --> compose.override.yaml:3:14
   |
 3 |     restart: sometimes
   |              ^^^^^^^^^

error: unknown key `imgae` in the service `web`; did you mean `image`?
  --> compose.override.yaml:4:5
   |
 4 |     imgae: y
   |     ^^^^^"
    );
    // problems are grouped by file, the first file's first
    let e = err_files(&[
        (
            "compose.yaml",
            "services:\n  web:\n    image: x\n    restart: never\n",
        ),
        (
            "b.yaml",
            "services:\n  db: { image: y, restart: sometimes }\n",
        ),
    ]);
    let places: Vec<&str> = e.lines().filter(|l| l.contains("-->")).collect();
    assert_eq!(
        places,
        vec!["  --> compose.yaml:4:14", "  --> b.yaml:2:28"],
        "{e}"
    );
    // a syntax error too
    let e = err_files(&[
        ("compose.yaml", "services:\n  web:\n    image: x\n"),
        ("b.yaml", "services:\n  web: [\n"),
    ]);
    assert!(e.contains("--> b.yaml:"), "{e}");
}

#[test]
fn an_empty_override_file_adds_nothing_and_a_bad_top_level_is_an_error() {
    let m = ok_files(&[
        ("compose.yaml", "services:\n  web:\n    image: x\n"),
        ("empty.yaml", "# nothing yet\n"),
    ]);
    assert!(m.pods.contains_key("web"));
    let e = err_files(&[
        ("compose.yaml", "services:\n  web:\n    image: x\n"),
        ("list.yaml", "- a\n"),
    ]);
    assert!(
        e.starts_with(
            "error: the top level of a Compose file must be a mapping, found a list\n  --> list.yaml:1:1"
        ),
        "{e}"
    );
}

#[test]
fn no_file_is_an_error_not_a_panic() {
    let outcome = load_files(
        &[],
        &Fake::default(),
        &Options::default(),
        &Facts {
            path_exists: &|_| true,
            env_set: &|_| true,
            subnet_conflict: &|_, _| None,
        },
    );
    assert!(outcome.result.is_err());
}

#[test]
fn rcompose_yaml_files_are_told_apart_from_override_files() {
    assert!(is_rcompose(Path::new("rcompose.yaml"), ""));
    assert!(is_rcompose(Path::new("x.yaml"), "pods:\n  a: {}\n"));
    // an override file may hold only some top-level keys
    assert!(!is_rcompose(
        Path::new("prod.yaml"),
        "volumes:\n  data: {}\n"
    ));
    assert!(!is_rcompose(Path::new("prod.yaml"), ""));
}
