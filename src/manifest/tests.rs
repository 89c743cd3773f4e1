//! Behaviour of `load`, `parse` and the rendered errors.

use std::path::Path;
use std::time::Duration;

use crate::manifest::{
    Bytes, CommandSpec, Condition, DependsOnSpec, ImageBase, Layer, Manifest, MountKind,
    ProbeAction, Restart, ValidManifest, load, parse, schema_json,
};

const ORIGIN: &str = "rcompose.yaml";

#[track_caller]
fn ok(yaml: &str) -> ValidManifest {
    match load(yaml, Path::new(ORIGIN)) {
        Ok(m) => m,
        Err(e) => panic!("expected a valid manifest, got:\n{}", e.render()),
    }
}

#[track_caller]
fn err(yaml: &str) -> String {
    match load(yaml, Path::new(ORIGIN)) {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => e.render(),
    }
}

/// Asserts the rendered error of `yaml` (`expected` is unindented by its first line's indent).
#[track_caller]
fn assert_error(yaml: &str, expected: &str) {
    assert_eq!(err(yaml), expected, "\n--- got:\n{}\n", err(yaml));
}

#[test]
fn rejects_unknown_key_with_suggestion() {
    assert_error(
        "pods:\n  web:\n    replcas: 3\n    containers: [ { name: app, command: x } ]\n",
        "error: unknown field `replcas` in pod `web`; did you mean `replicas`?
  --> rcompose.yaml:3:5
   |
 3 |     replcas: 3
   |     ^^^^^^^",
    );
}

#[test]
fn unknown_key_without_close_match_lists_expected_keys() {
    assert_error(
        "plugins: {}\npods: {}\n",
        "error: unknown field `plugins` at the top level; expected one of `name`, `images`, `pods`, `services`, `volumes`, `configs`, `secrets`, `network`, `watch`, `nodes`, `capacity`, `faults`
  --> rcompose.yaml:1:1
   |
 1 | plugins: {}
   | ^^^^^^^",
    );
}

#[test]
fn compose_names_suggest_ours() {
    let text = err(
        "pods:\n  a:\n    containers:\n      - name: x\n        command: y\n        environment: { A: 1 }\n",
    );
    assert!(
        text.starts_with(
            "error: unknown field `environment` in container `a.x`; did you mean `env`?"
        ),
        "{text}"
    );
}

#[test]
fn cycle_error_lists_full_path() {
    assert_error(
        "pods:
  web: { depends_on: [api], containers: [ { name: x, command: y } ] }
  api: { depends_on: [db], containers: [ { name: x, command: y } ] }
  db: { depends_on: { web: { condition: started } }, containers: [ { name: x, command: y } ] }
",
        "error: dependency cycle between pods: `api -> db -> web -> api`
  --> rcompose.yaml:3:23
   |
 3 |   api: { depends_on: [db], containers: [ { name: x, command: y } ] }
   |                       ^^",
    );
}

#[test]
fn self_dependency_is_a_cycle() {
    assert_error(
        "pods:\n  a:\n    depends_on: [a]\n    containers: [ { name: x, command: y } ]\n",
        "error: pod `a` depends on itself: `a -> a`
  --> rcompose.yaml:3:18
   |
 3 |     depends_on: [a]
   |                  ^",
    );
}

#[test]
fn rejects_unknown_dependency_naming_both_ends() {
    assert_error(
        "pods:
  db: { containers: [ { name: x, command: y } ] }
  web:
    depends_on:
      dbb: { condition: started }
    containers: [ { name: x, command: y } ]
",
        "error: pod `web` depends on `dbb`, which is not a pod; did you mean `db`?
  --> rcompose.yaml:5:7
   |
 5 |       dbb: { condition: started }
   |       ^^^",
    );
}

#[test]
fn rejects_unknown_image_naming_container() {
    assert_error(
        "images:\n  api: { layers: [./api] }\npods:\n  web:\n    containers:\n      - name: app\n        image: nope\n        command: x\n",
        "error: container `web.app` uses image `nope`, which is not declared in `images`
  --> rcompose.yaml:7:16
   |
 7 |         image: nope
   |                ^^^^",
    );
}

#[test]
fn image_from_cycle_is_reported_once_with_full_path() {
    assert_error(
        "images:\n  a: { from: b }\n  b: { from: c }\n  c: { from: a }\n",
        "error: image `a` is built from itself: `a -> b -> c -> a`
  --> rcompose.yaml:2:14
   |
 2 |   a: { from: b }
   |              ^",
    );
}

#[test]
fn rejects_unknown_base_image() {
    let text = err("images:\n  api: { from: bsae }\n  base: { from: host }\n");
    assert!(
        text.starts_with("error: image `api` is built from `bsae`, which is not declared in `images`; did you mean `base`?"),
        "{text}"
    );
}

#[test]
fn merge_keys_apply() {
    let m = ok("
x-defaults: &defaults
  replicas: 2
  restart: on-failure
pods:
  web:
    <<: *defaults
    replicas: 5
    containers: [ { name: app, command: serve } ]
  worker:
    <<: *defaults
    containers: [ { name: app, command: work } ]
");
    assert_eq!(
        m.pods()["web"].replicas,
        5,
        "explicit keys win over merged ones"
    );
    assert_eq!(m.pods()["web"].restart, Restart::OnFailure);
    assert_eq!(m.pods()["worker"].replicas, 2);
}

#[test]
fn unknown_key_inside_merged_anchor_is_reported() {
    let text = err(
        "x-d: &d\n  replcas: 2\npods:\n  web:\n    <<: *d\n    containers: [ { name: a, command: b } ]\n",
    );
    assert!(
        text.starts_with("error: unknown field `replcas` in pod `web`; did you mean `replicas`?"),
        "{text}"
    );
}

#[test]
fn anchors_and_aliases_apply() {
    let m = ok("
pods:
  a:
    containers:
      - &c { name: app, command: [run, --fast], env: { MODE: prod } }
  b:
    containers: [ *c ]
");
    assert_eq!(m.pods()["a"].containers, m.pods()["b"].containers);
}

#[test]
fn rejects_duplicate_keys_with_location() {
    assert_error(
        "pods:\n  web: { containers: [ { name: a, command: b } ] }\n  web: { containers: [ { name: a, command: b } ] }\n",
        "error: duplicate key `web`
  --> rcompose.yaml:3:3
   |
 3 |   web: { containers: [ { name: a, command: b } ] }
   |   ^^^",
    );
}

#[test]
fn syntax_error_has_location() {
    assert_error(
        "pods:\n  web:\n    containers: [ { name: a, command: b }\n",
        "error: unclosed bracket '['
  --> rcompose.yaml:3:17
   |
 3 |     containers: [ { name: a, command: b }
   |                 ^",
    );
}

#[test]
fn wrong_types_are_reported_with_location() {
    assert_error(
        "pods:\n  web:\n    replicas: three\n    containers: { name: a }\n",
        "error: wrong type for `replicas` of pod `web`: expected an integer (0 or more), found a string
  --> rcompose.yaml:3:15
   |
 3 |     replicas: three
   |               ^^^^^

error: wrong type for `containers` of pod `web`: expected a list, found a mapping
  --> rcompose.yaml:4:17
   |
 4 |     containers: { name: a }
   |                 ^",
    );
}

#[test]
fn reports_all_problems_at_once() {
    let yaml = "name: Shop
images:
  api: { from: nope }
pods:
  web:
    replcas: 2
    depends_on: [dbb]
    restart: sometimes
    containers:
      - name: app
        image: api
        command: serve
        resources: { cpu: lots, memory: 512m }
      - name: app
        command: [x]
services:
  web:
    selector: { app: web }
    ports: [ \"8080:80\", 99999 ]
";
    let error = load(yaml, Path::new(ORIGIN)).unwrap_err();
    let messages: Vec<(&str, u32)> = error
        .problems()
        .iter()
        .map(|p| {
            (
                p.message.as_str(),
                p.location.as_ref().map_or(0, |l| l.line),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            (
                "invalid project name `Shop`: use lower-case letters, digits, `-` and `_`, starting with a letter or digit",
                1
            ),
            (
                "image `api` is built from `nope`, which is not declared in `images`",
                3
            ),
            (
                "unknown field `replcas` in pod `web`; did you mean `replicas`?",
                6
            ),
            ("pod `web` depends on `dbb`, which is not a pod", 7),
            (
                "invalid restart policy `sometimes` in pod `web`: expected `always`, `on-failure` or `never`",
                8
            ),
            (
                "invalid cpu quantity `lots`: expected cpus like `0.5`, `2` or millicpus like `500m`",
                13
            ),
            (
                "invalid memory quantity `512m`: unknown unit `m` (use k, K, M, G, T, Ki, Mi, Gi or Ti); write `512Mi` (mebibytes) or `512M` (megabytes)",
                13
            ),
            ("duplicate container name `app` in pod `web`", 14),
            (
                "service `web` selects no pod: no pod has all of the labels `app=web`",
                18
            ),
            (
                "a port of service `web` must be a port number from 1 to 65535, found `99999`",
                19
            ),
        ]
    );
    assert_eq!(error.problems()[3].path, "pods.web.depends_on.dbb");
    assert!(error.render().matches("\n\nerror: ").count() == messages.len() - 1);
}

#[test]
fn env_values_keep_source_text() {
    let m = ok("
pods:
  a:
    containers:
      - name: x
        command: y
        env: { NO_COLOR: NO, VERSION: 1.10, HEX: 0x1F, ON: yes, EMPTY: '', QUOTED: \"007\" }
      - name: z
        command: y
        env: [ \"A=1\", B==x, C= ]
");
    let env = &m.pods()["a"].containers[0].env;
    assert_eq!(env["NO_COLOR"], "NO");
    assert_eq!(env["VERSION"], "1.10");
    assert_eq!(env["HEX"], "0x1F");
    assert_eq!(env["ON"], "yes");
    assert_eq!(env["EMPTY"], "");
    assert_eq!(env["QUOTED"], "007");
    let env = &m.pods()["a"].containers[1].env;
    assert_eq!(
        (env["A"].as_str(), env["B"].as_str(), env["C"].as_str()),
        ("1", "=x", "")
    );
}

#[test]
fn env_without_value_is_an_error() {
    let text = err("pods:\n  a:\n    containers: [ { name: x, command: y, env: [ FOO ] } ]\n");
    assert!(
        text.starts_with(
            "error: environment item `FOO` of container `a.x` has no `=`; write `FOO=value`"
        ),
        "{text}"
    );
}

#[test]
fn short_forms_expand_and_defaults_fill() {
    let m = ok("
images:
  api: { layers: [ ./api, { source: ./conf, target: /etc/api } ] }
  tools: { rootfs: ./rootfs }
pods:
  web:
    labels: { app: web }
    depends_on: [db]
    containers: [ { name: app, image: api, command: \"sh -c 'echo hi'\" } ]
  db:
    containers: [ { name: db, command: [postgres, -p, 5432] } ]
services:
  web:
    selector: { app: web }
    ports: [ 80, \"8080:81\", { port: 90 } ]
");
    let api = &m.images()["api"];
    assert_eq!(api.base, ImageBase::From("host".into()));
    assert_eq!(
        api.layers,
        [
            Layer {
                source: "./api".into(),
                target: "/".into()
            },
            Layer {
                source: "./conf".into(),
                target: "/etc/api".into()
            },
        ]
    );
    assert_eq!(
        m.images()["tools"].base,
        ImageBase::Rootfs("./rootfs".into())
    );
    let web = &m.pods()["web"];
    assert_eq!(web.replicas, 1);
    assert_eq!(web.restart, Restart::Never);
    assert_eq!(web.depends_on["db"].condition, Condition::Started);
    assert_eq!(
        web.containers[0].command.as_deref().unwrap(),
        ["sh", "-c", "echo hi"]
    );
    assert_eq!(m.pods()["db"].containers[0].image, "host");
    assert_eq!(
        m.pods()["db"].containers[0].command.as_deref().unwrap(),
        ["postgres", "-p", "5432"]
    );
    let ports: Vec<_> = m.services()["web"]
        .ports
        .iter()
        .map(|p| (p.port, p.target, p.publish))
        .collect();
    assert_eq!(
        ports,
        [(80, 80, None), (81, 81, Some(8080)), (90, 90, None)]
    );
}

#[test]
fn parse_keeps_short_forms() {
    let m: Manifest = parse(
        "pods:\n  a:\n    depends_on: [b]\n    containers: [ { name: x, command: run it } ]\n",
        Path::new(ORIGIN),
    )
    .unwrap();
    let a = &m.pods["a"];
    assert_eq!(a.depends_on, Some(DependsOnSpec::List(vec!["b".into()])));
    assert_eq!(
        a.containers[0].command,
        Some(CommandSpec::Shell("run it".into()))
    );
}

#[test]
fn normalized_yaml_round_trips() {
    let m = ok("
name: shop
images:
  api: { from: host, layers: [ ./api ] }
  tools: { rootfs: ./rootfs }
pods:
  web:
    replicas: 2
    labels: { app: web }
    depends_on: { db: { condition: completed } }
    containers:
      - name: app
        image: api
        command: serve --port 80
        env: { A: NO, B: 1.10, C: 'true', D: '' }
        working_dir: /app
        resources: { cpu: 0.5, memory: 1073741824, pids: 10 }
  db:
    restart: on-failure
    containers: [ { name: db, image: tools, command: [db] } ]
services:
  web: { selector: { app: web }, ports: [ \"8080:80\" ] }
");
    let yaml = m.to_yaml();
    let again = ok(&yaml);
    assert_eq!(again, m, "normalized YAML:\n{yaml}");
    assert!(yaml.contains("memory: 1Gi"), "{yaml}");
    assert!(yaml.contains("cpu: 500m"), "{yaml}");
    let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(json["pods"]["web"]["containers"][0]["env"]["A"], "NO");
    assert_eq!(json["images"]["tools"]["rootfs"], "./rootfs");
    assert_eq!(m.name(), Some("shop"));
    // The normalized JSON is also a manifest the serde model reads and validates unchanged.
    let model: Manifest = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(
        crate::manifest::validate(&model, Path::new(ORIGIN)).unwrap(),
        m
    );
}

#[test]
fn healthy_condition_needs_a_readiness_probe() {
    let text = err("pods:
  db: { containers: [ { name: x, command: y } ] }
  web: { depends_on: { db: { condition: healthy } }, containers: [ { name: x, command: y } ] }
");
    assert!(
        text.starts_with("error: pod `web` waits for `db` to be healthy, but no container of `db` has a `readiness` or `startup` probe or a `healthcheck`"),
        "{text}"
    );
    let m = ok("pods:
  db: { containers: [ { name: x, command: y, readiness: { tcp: { port: 5432 } } } ] }
  web: { depends_on: { db: { condition: service_healthy } }, containers: [ { name: x, command: y } ] }
");
    assert_eq!(m.pods["web"].depends_on["db"].condition, Condition::Healthy);
}

#[test]
fn probes_take_defaults_and_healthchecks_become_readiness_and_liveness() {
    let m = ok("pods:
  a:
    containers:
      - name: x
        command: y
        readiness: { http: { port: 8080 }, period: 2s }
        liveness: { exec: test -f /tmp/ok, failure_threshold: 5, initial_delay: 1s }
        startup: { tcp: { port: 8080 }, timeout: 500ms }
      - name: h
        command: y
        healthcheck: { test: [CMD-SHELL, pg_isready -U postgres], interval: 1s, retries: 4, start_period: 3s }
");
    let c = &m.pods["a"].containers[0];
    let r = c.readiness.as_ref().unwrap();
    assert_eq!(
        r.action,
        ProbeAction::Http {
            port: 8080,
            path: "/".into()
        }
    );
    assert_eq!(
        (
            r.period,
            r.timeout,
            r.failure_threshold,
            r.success_threshold
        ),
        (Duration::from_secs(2), Duration::from_secs(1), 3, 1)
    );
    let l = c.liveness.as_ref().unwrap();
    assert_eq!(
        l.action,
        ProbeAction::Exec(vec!["test".into(), "-f".into(), "/tmp/ok".into()])
    );
    assert_eq!(
        (l.failure_threshold, l.initial_delay, l.period),
        (5, Duration::from_secs(1), Duration::from_secs(10))
    );
    assert_eq!(
        c.startup.as_ref().unwrap().timeout,
        Duration::from_millis(500)
    );
    let h = &m.pods["a"].containers[1];
    let (r, l) = (h.readiness.as_ref().unwrap(), h.liveness.as_ref().unwrap());
    assert_eq!(
        r.action,
        ProbeAction::Exec(vec![
            "/bin/sh".into(),
            "-c".into(),
            "pg_isready -U postgres".into()
        ])
    );
    assert_eq!(
        (r.period, r.timeout, r.failure_threshold),
        (Duration::from_secs(1), Duration::from_secs(30), 4)
    );
    assert_eq!(
        (r.initial_delay, l.initial_delay),
        (Duration::ZERO, Duration::from_secs(3))
    );
    // `[NONE]` and `disable: true` turn it off
    for hc in ["{ test: [NONE] }", "{ test: [CMD, x], disable: true }"] {
        let m = ok(&format!(
            "pods:\n  a:\n    containers:\n      - {{ name: x, command: y, healthcheck: {hc} }}\n"
        ));
        assert!(m.pods["a"].containers[0].readiness.is_none(), "{hc}");
    }
}

#[test]
fn bad_probes_are_precise_errors() {
    for (probe, message) in [
        (
            "readiness: { period: 1s }",
            "error: the readiness probe of container `a.x` needs one of `exec`, `http` or `tcp`",
        ),
        (
            "readiness: { tcp: { port: 1 }, exec: [x] }",
            "error: the readiness probe of container `a.x` has `exec` and `tcp`; keep one",
        ),
        (
            "liveness: { tcp: { port: 0 } }",
            "error: `port` of `tcp` of `liveness` probe of container `a.x` must be 1-65535, found `0`",
        ),
        (
            "liveness: { tcp: { port: 70000 } }",
            "error: `port` of `tcp` of `liveness` probe of container `a.x` must be 1-65535, found `70000`",
        ),
        (
            "liveness: { tcp: { port: 80 }, success_threshold: 2 }",
            "error: `success_threshold` of the liveness probe of container `a.x` must be 1 (as in Kubernetes)",
        ),
        (
            "readiness: { tcp: { port: 80 }, period: 0s }",
            "error: `period` of container `a.x` must be more than 0",
        ),
        (
            "readiness: { tcp: { port: 80 }, failure_threshold: 0 }",
            "error: `failure_threshold` of container `a.x` must be 1 or more",
        ),
        (
            "readiness: { http: { port: 80, path: health } }",
            "error: invalid path `health` of the readiness probe of container `a.x`",
        ),
        (
            "readiness: { tcp: { port: 80 }, timeout: soon }",
            "error: invalid duration",
        ),
        (
            "readiness: { tcp: { prot: 80 } }",
            "error: unknown field `prot` in `tcp` of `readiness` probe of container `a.x`",
        ),
        (
            "healthcheck: { test: [RUN, x] }",
            "error: invalid `test` in the `healthcheck` of container `a.x`",
        ),
        (
            "healthcheck: { test: x }\n        readiness: { tcp: { port: 1 } }",
            "error: container `a.x` has both a `healthcheck` and `readiness`/`liveness` probes",
        ),
    ] {
        let text = err(&format!(
            "pods:\n  a:\n    containers:\n      - name: x\n        command: y\n        {probe}\n"
        ));
        assert!(text.contains(message), "{probe}:\n{text}");
    }
}

#[test]
fn completed_dependency_on_always_restarting_pod_is_rejected() {
    let text = err("pods:
  job: { restart: always, containers: [ { name: x, command: y } ] }
  web: { depends_on: { job: { condition: completed } }, containers: [ { name: x, command: y } ] }
");
    assert!(text.starts_with("error: pod `web` waits for `job` to complete, but `job` has `restart: always` and never completes"), "{text}");
}

#[test]
fn service_selector_must_match_a_pod() {
    assert_error(
        "pods:\n  a: { labels: { app: a }, containers: [ { name: x, command: y } ] }\nservices:\n  api:\n    selector: { app: api }\n",
        "error: service `api` selects no pod: no pod has all of the labels `app=api`
  --> rcompose.yaml:5:5
   |
 5 |     selector: { app: api }
   |     ^^^^^^^^",
    );
}

#[test]
fn rejects_published_port_clash() {
    let text = err("pods:
  a: { labels: { app: a }, containers: [ { name: x, command: y } ] }
services:
  one: { selector: { app: a }, ports: [ \"8080:80\" ] }
  two: { selector: { app: a }, ports: [ { port: 81, publish: 8080 } ] }
");
    assert!(
        text.starts_with(
            "error: host port 8080 is published by both service `one` and service `two`"
        ),
        "{text}"
    );
}

#[test]
fn pod_names_are_short_dns_labels() {
    let long = "a".repeat(41);
    let text = err(&format!(
        "pods:\n  {long}: {{ containers: [ {{ name: x, command: y }} ] }}\n"
    ));
    assert!(
        text.starts_with(&format!("error: invalid pod name `{long}`: it is longer than 40 characters (replica hostnames `<pod>-<n>` must stay short)")),
        "{text}"
    );
    let text = err("pods:\n  Web_1: { containers: [ { name: x, command: y } ] }\n");
    assert!(text.starts_with("error: invalid pod name `Web_1`: use lower-case letters, digits and `-`, starting and ending with a letter or digit"), "{text}");
}

#[test]
fn missing_required_fields_are_reported() {
    let text = err("pods:\n  a:\n    containers:\n      - image: host\n");
    assert_eq!(
        text,
        "error: missing field `name` in container `a[0]`
  --> rcompose.yaml:4:9
   |
 4 |       - image: host
   |         ^"
    );
    let text = err("pods:\n  a:\n    containers:\n      - name: x\n");
    assert_eq!(
        text,
        "error: missing field `command` in container `a.x` (image `host` has no default command: \
         only archive and registry images have one)
  --> rcompose.yaml:4:9
   |
 4 |       - name: x
   |         ^"
    );
}

#[test]
fn empty_manifest_is_an_error() {
    assert!(err("").starts_with("error: the manifest is empty"));
    assert!(err("# only a comment\n").starts_with("error: the manifest is empty"));
}

#[test]
fn top_level_x_keys_are_ignored() {
    let m = ok("x-note: anything\npods:\n  a: { containers: [ { name: x, command: y } ] }\n");
    assert_eq!(m.pods().len(), 1);
}

#[test]
fn zero_replicas_are_allowed() {
    let m = ok("pods:\n  a: { replicas: 0, containers: [ { name: x, command: y } ] }\n");
    assert_eq!(m.pods()["a"].replicas, 0);
}

#[test]
fn error_display_summarizes() {
    let e = load("pods: 1\n", Path::new("x.yaml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid manifest `x.yaml`: wrong type for `pods`: expected a mapping, found an integer"
    );
}

const SCHEMA_FILE: &str = include_str!("../../schemas/rcompose.schema.json");

/// The schema file is generated (`just schema`, i.e. `cargo run -- schema`); this golden test
/// keeps it in step with the Rust types.
#[test]
fn schema_file_is_up_to_date() {
    assert!(
        SCHEMA_FILE == schema_json(),
        "schema is stale: run `just schema`"
    );
}

/// Valid fixtures (also used by the CLI tests).
const VALID_FIXTURES: [(&str, &str); 4] = [
    (
        "merge-keys",
        include_str!("../../tests/fixtures/manifests/valid/merge-keys.yaml"),
    ),
    (
        "minimal",
        include_str!("../../tests/fixtures/manifests/valid/minimal.yaml"),
    ),
    (
        "shop",
        include_str!("../../tests/fixtures/manifests/valid/shop.yaml"),
    ),
    (
        "short-forms",
        include_str!("../../tests/fixtures/manifests/valid/short-forms.yaml"),
    ),
];

macro_rules! invalid_fixtures {
    ($($name:literal),* $(,)?) => {
        [$((
            concat!("tests/fixtures/manifests/invalid/", $name, ".yaml"),
            include_str!(concat!("../../tests/fixtures/manifests/invalid/", $name, ".yaml")),
            include_str!(concat!("../../tests/fixtures/manifests/invalid/", $name, ".stderr")),
        )),*]
    };
}

/// Invalid fixtures: (origin, yaml, expected stderr = `render()` plus a newline).
const INVALID_FIXTURES: [(&str, &str, &str); 11] = invalid_fixtures![
    "cycle",
    "duplicate-key",
    "faults",
    "healthy-condition",
    "many-problems",
    "quantities",
    "syntax-error",
    "unknown-dependency",
    "unknown-image",
    "unknown-keys",
    "wrong-types",
];

#[test]
fn valid_fixtures_load() {
    for (name, yaml) in VALID_FIXTURES {
        if let Err(e) = load(yaml, Path::new(name)) {
            panic!("fixture {name} should be valid:\n{}", e.render());
        }
    }
}

#[test]
fn invalid_fixtures_render_their_stderr_files() {
    let mut failures = String::new();
    for (origin, yaml, expected) in INVALID_FIXTURES {
        // the CLI ends the message with a hint of its own (crate::error::Error::hint)
        let expected = expected
            .strip_suffix(
                "hint: fix the problems above; docs/manifest.md describes every key and `rcompose schema` prints the JSON Schema\n",
            )
            .unwrap_or(expected);
        let got = match load(yaml, Path::new(origin)) {
            Ok(_) => "(valid)\n".to_string(),
            Err(e) => format!("{}\n", e.render()),
        };
        if got != expected {
            failures.push_str(&format!("=== {origin}\n{got}=== end\n"));
        }
    }
    assert!(
        failures.is_empty(),
        "fixtures differ from their .stderr files:\n{failures}"
    );
}

#[test]
fn directory_names_normalize_to_project_names() {
    use crate::manifest::normalize_project_name;
    assert_eq!(
        normalize_project_name("My Shop.v2").as_deref(),
        Some("myshopv2")
    );
    assert_eq!(
        normalize_project_name("_web-app").as_deref(),
        Some("web-app")
    );
    assert_eq!(normalize_project_name("..."), None);
}

#[test]
fn odd_inputs_give_errors_not_panics() {
    let inputs = [
        "pods: {a: {containers: [~]}}\n",
        "pods: {a: {containers: [{name: x, command: y, env: {A: [1]}}]}}\n",
        "pods: {a: {depends_on: [{b: 1}], containers: [{name: x, command: [[1]]}]}}\n",
        "? {a: 1}\n: b\n",
        "---\npods: {}\n---\npods: {}\n",
        "pods:\n\t a: 1\n",
        "pods: [\n",
        "\"unterminated\n",
        "pods: {a: {containers: [{name: ü, command: 'ü ü'}]}}\nservices: {s: {selector: {}, ports: [{}]}}\n",
        "images: {a: {layers: [{target: etc}, [x], {source: '', target: /}]}}\n",
        "pods: {a: *x}\n",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
        "pods: {a: {replicas: 99999999999999999999999, containers: [{name: x, command: y}]}}\n",
        "pods: {a: {restart: Always, containers: [{name: x, command: y}]}}\n",
    ];
    for yaml in inputs {
        let e = load(yaml, Path::new(ORIGIN)).unwrap_err();
        assert!(!e.problems().is_empty(), "{yaml}");
        assert!(e.render().starts_with("error: "), "{yaml}");
    }
}

#[test]
fn stored_images_round_trip_and_make_command_optional() {
    let m = ok("
images:
  base: { archive: ./busybox.tar }
  web: { ref: localhost:5000/shop/web:1.2, pull: always }
  app: { from: web, layers: [ ./app.tar.gz ] }
pods:
  a:
    containers:
      - { name: plain, image: base }
      - { name: ep, image: app, entrypoint: /bin/sh, command: [-c, 'echo hi'] }
");
    let yaml = m.to_yaml();
    assert_eq!(ok(&yaml), m, "normalized YAML:\n{yaml}");
    let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(json["images"]["web"]["ref"], "localhost:5000/shop/web:1.2");
    assert_eq!(json["images"]["web"]["pull"], "always");
    assert_eq!(
        json["pods"]["a"]["containers"][1]["entrypoint"][0],
        "/bin/sh"
    );
    assert!(json["pods"]["a"]["containers"][0].get("command").is_none());
    let model: Manifest = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(
        crate::manifest::validate(&model, Path::new(ORIGIN)).unwrap(),
        m
    );
}

#[test]
fn stored_image_mistakes_are_reported_where_they_are() {
    let text = err("
images:
  a: { from: host, archive: ./x.tar }
  b: { archive: ./x.tar, pull: never }
  c: { ref: 'Docker.io/Library/Busybox' }
  d: { ref: 'busybox@sha256:../../x' }
  e: { ref: busybox, pull: sometimes }
pods:
  p:
    containers: [ { name: x, image: a, command: [true] } ]
");
    for expected in [
        "image `a` sets both `from` and `archive`; choose one\n  --> rcompose.yaml:3:20",
        "`pull` of image `b` needs a `ref` to pull\n  --> rcompose.yaml:4:26",
        "invalid image reference `Docker.io/Library/Busybox` in image `c`: repository path components are lowercase",
        "invalid image reference `busybox@sha256:../../x` in image `d`: a sha256 digest has 64 lowercase hex digits",
        "unknown pull policy `sometimes` in image `e`; use `missing`, `always` or `never`\n  --> rcompose.yaml:7:28",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn volumes_expand_to_the_long_form_and_round_trip() {
    let m = ok("
volumes:
  data:
pods:
  web:
    volumes: { shared: { empty_dir: {} } }
    containers:
      - name: app
        command: x
        volumes:
          - ./src:/app
          - ./conf:/etc/app:ro
          - data:/var/lib/db
          - shared:/shared
          - { type: tmpfs, target: /cache, tmpfs: { size: 64Mi } }
          - { type: bind, source: /etc/hostname, target: /etc/h, read_only: true }
");
    let c = &m.pods()["web"].containers[0];
    let kinds: Vec<(&MountKind, &str, bool)> = c
        .mounts
        .iter()
        .map(|m| (&m.kind, m.target.as_str(), m.read_only))
        .collect();
    assert_eq!(
        kinds,
        [
            (&MountKind::Bind("./src".into()), "/app", false),
            (&MountKind::Bind("./conf".into()), "/etc/app", true),
            (&MountKind::Volume("data".into()), "/var/lib/db", false),
            (&MountKind::EmptyDir("shared".into()), "/shared", false),
            (&MountKind::Tmpfs(Some(Bytes(64 << 20))), "/cache", false),
            (&MountKind::Bind("/etc/hostname".into()), "/etc/h", true),
        ]
    );
    let yaml = m.to_yaml();
    assert_eq!(ok(&yaml), m, "normalized YAML:\n{yaml}");
    assert!(yaml.contains("type: empty_dir"), "{yaml}");
}

#[test]
fn bad_volumes_are_reported_with_their_places() {
    let missing = |s: &str| s != "./gone";
    let yaml = "
volumes:
  data: { driver: local }
pods:
  web:
    containers:
      - name: app
        command: x
        volumes:
          - ./gone:/a
          - dta:/b
          - ./x:relative
          - ./x:/c:rx
          - /just-a-path
          - { type: tmpfs, source: x, target: /d }
          - { type: bind, target: /e }
          - { type: volumee, source: data, target: /f }
          - ./x:/c
";
    let facts = crate::manifest::Facts {
        path_exists: &missing,
        env_set: &|_| true,
        subnet_conflict: &|_, _| None,
    };
    let text = match crate::manifest::load_checked(yaml, Path::new(ORIGIN), &facts) {
        Ok(m) => panic!("expected errors, got {m:?}"),
        Err(e) => e.render(),
    };
    for expected in [
        "volume `data` takes no options yet: remove `driver`\n  --> rcompose.yaml:3:11",
        "mount source `./gone` of container `web.app` does not exist\n   --> rcompose.yaml:10:13",
        "container `web.app` mounts volume `dta`, which is declared neither in `volumes` nor in the pod's `volumes`; did you mean `data`?",
        "mount target `relative` of container `web.app` must be an absolute path",
        "invalid mount mode `rx` in `./x:/c:rx` of container `web.app`: expected `ro` or `rw`",
        "invalid mount `/just-a-path` in container `web.app`: write `SOURCE:TARGET`",
        "a `tmpfs` mount of container `web.app` takes no `source`",
        "a mount of container `web.app` needs a `source` (only `tmpfs` has none)",
        "invalid mount type `volumee` in container `web.app`: expected `bind`, `volume`, `tmpfs` or `empty_dir`; did you mean `volume`?",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn stop_settings_are_checked() {
    let text = err(
        "pods:\n  a:\n    containers:\n      - name: c\n        command: x\n        stop_signal: SIGFOO\n        stop_grace_period: 10\n        read_only: maybe\n",
    );
    for expected in [
        "unknown signal `SIGFOO`: use a name like `SIGINT` or `SIGQUIT` (container `a.c`)",
        "wrong type for `read_only` of container `a.c`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let text = err(
        "pods:\n  a:\n    containers:\n      - name: c\n        command: x\n        stop_grace_period: 10\n",
    );
    assert!(
        text.contains("invalid duration `10`: write a number with a unit, like `10s`")
            && text.contains("rcompose.yaml:6:28"),
        "{text}"
    );
    let m = ok(
        "pods:\n  a:\n    containers:\n      - name: c\n        command: x\n        stop_signal: int\n        stop_grace_period: 1m30s\n        read_only: true\n",
    );
    let c = &m.pods()["a"].containers[0];
    assert_eq!(c.stop_signal, "SIGINT");
    assert_eq!(
        c.stop_grace_period,
        Some(std::time::Duration::from_secs(90))
    );
    assert!(c.read_only);
    assert_eq!(ok(&m.to_yaml()), m);
}

#[test]
fn resource_names_are_compose_names_and_never_paths() {
    ok(
        "volumes:\n  my_data.v1:\nsecrets:\n  db_password: { content: x }\npods:\n  a:\n    containers: [ { name: c, command: x, secrets: [db_password], volumes: [ \"my_data.v1:/d\" ] } ]\n",
    );
    let text = err(
        "volumes:\n  ../up: {}\n  -x: {}\nconfigs:\n  a/b: { content: x }\npods:\n  a:\n    containers: [ { name: c, command: x } ]\n",
    );
    for name in ["../up", "-x", "a/b"] {
        assert!(
            text.contains(&format!("name `{name}`: use letters, digits, `_`, `.` and `-`, starting with a letter or digit")),
            "{name}: {text}"
        );
    }
}

#[test]
fn init_containers_share_the_pod_s_container_names() {
    assert_error(
        "pods:
  web:
    init_containers: [ { name: app, command: migrate } ]
    containers: [ { name: app, command: serve } ]
",
        "error: duplicate container name `app` in pod `web`
  --> rcompose.yaml:4:27
   |
 4 |     containers: [ { name: app, command: serve } ]
   |                           ^^^",
    );
    let text = err(
        "pods:\n  web:\n    init_containers: [ { name: m } ]\n    containers: [ { name: app, command: serve } ]\n",
    );
    assert!(
        text.starts_with("error: missing field `command` in container `web.m`"),
        "{text}"
    );
}

#[test]
fn init_containers_come_first_in_the_plan() {
    let m = ok("pods:
  web:
    init_containers: [ { name: migrate, command: migrate }, { name: seed, command: seed } ]
    containers: [ { name: app, command: serve } ]
");
    let pod = &m.pods["web"];
    let names: Vec<&str> = pod
        .init_containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["migrate", "seed"]);
}

#[test]
fn runtime_names_are_checked_with_a_suggestion() {
    let text =
        err("pods:\n  a:\n    runtime: crunn\n    containers: [ { name: x, command: y } ]\n");
    assert!(
        text.starts_with("error: unknown runtime `crunn` in pod `a`: expected `builtin`, `crun` or `runc`; did you mean `crun`?"),
        "{text}"
    );
    let m = ok("pods:\n  a:\n    runtime: runc\n    containers: [ { name: x, command: y } ]\n");
    assert_eq!(m.pods["a"].runtime, crate::manifest::RuntimeKind::Runc);
    let text = err(
        "pods:\n  a:\n    runtime: crun\n    containers: [ { name: x, command: y, tty: true } ]\n",
    );
    assert!(
        text.starts_with(
            "error: container `a.x` asks for `tty`, which runtime `crun` does not support yet"
        ),
        "{text}"
    );
}

#[test]
fn backoff_defaults_and_checks() {
    let m = ok(
        "pods:\n  a:\n    containers: [ { name: x, command: y } ]\n  b:\n    backoff: { initial: 0s, max: 2s }\n    containers: [ { name: x, command: y } ]\n",
    );
    assert_eq!(m.pods["a"].backoff.initial, Duration::from_millis(100));
    assert_eq!(m.pods["a"].backoff.max, Duration::from_secs(10));
    assert_eq!(m.pods["b"].backoff.initial, Duration::ZERO);
    assert_eq!(m.pods["b"].backoff.max, Duration::from_secs(2));
    let text = err(
        "pods:\n  a:\n    backoff: { initial: 5s, max: 1s }\n    containers: [ { name: x, command: y } ]\n",
    );
    assert!(
        text.starts_with("error: `max` of the backoff of pod `a` is below its `initial`"),
        "{text}"
    );
    let text = err(
        "pods:\n  a:\n    backoff: { first: 5s }\n    containers: [ { name: x, command: y } ]\n",
    );
    assert!(
        text.starts_with("error: unknown field `first` in `backoff` of pod `a`"),
        "{text}"
    );
}

#[test]
fn update_defaults_counts_and_checks() {
    use crate::manifest::{Amount, Update};
    let m = ok(
        "pods:\n  a:\n    replicas: 4\n    containers: [ { name: x, command: y } ]\n  b:\n    update: { max_surge: 2, max_unavailable: 50%, min_ready: 1s, progress_deadline: 30s }\n    containers: [ { name: x, command: y } ]\n",
    );
    assert_eq!(m.pods["a"].update, Update::DEFAULT);
    let b = m.pods["b"].update;
    assert_eq!(b.max_surge, Amount::Count(2));
    assert_eq!(b.max_unavailable, Amount::Percent(50));
    assert_eq!(b.min_ready, Duration::from_secs(1));
    assert_eq!(b.progress_deadline, Duration::from_secs(30));
    // percentages: the surge rounded up, the unavailability down (as Kubernetes)
    assert_eq!(Update::DEFAULT.counts(4), (1, 1));
    assert_eq!(Update::DEFAULT.counts(3), (1, 0));
    assert_eq!(Update::DEFAULT.counts(10), (3, 2));
    assert_eq!(b.counts(3), (2, 1));
    // both 0 after rounding: one may be unavailable, or nothing could be replaced
    let u = Update {
        max_surge: Amount::Count(0),
        ..Update::DEFAULT
    };
    assert_eq!(u.counts(3), (0, 1));
    let text = err(
        "pods:\n  a:\n    update: { max_surge: 0, max_unavailable: 0% }\n    containers: [ { name: x, command: y } ]\n",
    );
    assert!(
        text.starts_with("error: `max_surge` and `max_unavailable` of the update of pod `a` are both 0: no replica could ever be replaced\n  --> rcompose.yaml:3:46"),
        "{text}"
    );
    let text = err(
        "pods:\n  a:\n    update: { max_surge: 150%, progress_deadline: 0s }\n    containers: [ { name: x, command: y } ]\n",
    );
    assert!(
        text.contains("error: `max_surge` of the update of pod `a` must be a number of replicas or a percentage from 0% to 100%, found `150%`\n  --> rcompose.yaml:3:26"),
        "{text}"
    );
    assert!(
        text.contains("error: `progress_deadline` of the update of pod `a` must be more than 0"),
        "{text}"
    );
    let text = err(
        "pods:\n  a:\n    update: { max_surge: -1, surge: 1 }\n    containers: [ { name: x, command: y } ]\n",
    );
    assert!(
        text.contains("unknown field `surge` in `update` of pod `a`"),
        "{text}"
    );
}

#[test]
fn network_subnet_and_network_mode_are_checked_with_locations() {
    let yaml = "\
network: { subnet: 10.90.3.7/24, mask: x }
pods:
  a:
    replicas: 2
    network_mode: nonee
    containers: [ { name: a, command: [ x ] } ]
";
    let text = load(yaml, Path::new(ORIGIN)).unwrap_err().render();
    for expected in [
        "invalid subnet: `10.90.3.7/24` has host bits set; the subnet is `10.90.3.0/24`\n  --> rcompose.yaml:1:20",
        "unknown field `mask` in `network`; expected one of `subnet`",
        "unknown network_mode `nonee` in pod `a`: expected `project` or `none`; did you mean `none`?\n  --> rcompose.yaml:5:19",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // too small for the gateway, 3 replicas and a service; and in use on the host
    let yaml = "\
network: { subnet: 10.0.0.0/30 }
pods:
  a:
    replicas: 3
    labels: { app: a }
    containers: [ { name: a, command: [ x ] } ]
  b:
    network_mode: none
    replicas: 9
    containers: [ { name: b, command: [ x ] } ]
services:
  a: { selector: { app: a } }
";
    let facts = crate::manifest::Facts {
        path_exists: &|_| true,
        env_set: &|_| true,
        subnet_conflict: &|s, name| {
            assert_eq!(name, None);
            Some(format!("the host route {s} (dev eth9)"))
        },
    };
    let text = crate::manifest::load_checked(yaml, Path::new(ORIGIN), &facts)
        .unwrap_err()
        .render();
    for expected in [
        "subnet `10.0.0.0/30` has 2 host addresses; the project needs 5 (the gateway, 3 pod replicas, 1 services)",
        "subnet `10.0.0.0/30` overlaps the host route 10.0.0.0/30 (dev eth9); choose another",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let ok = load(
        "network: { subnet: 10.91.0.0/24 }\npods:\n  a:\n    network_mode: none\n    containers: [ { name: a, command: [ x ] } ]\n",
        Path::new(ORIGIN),
    )
    .unwrap();
    assert_eq!(
        ok.subnet().map(|s| s.to_string()).as_deref(),
        Some("10.91.0.0/24")
    );
    assert_eq!(
        ok.pods()["a"].network_mode,
        crate::manifest::NetworkMode::None
    );
}

#[test]
fn service_ports_take_a_host_address_and_services_a_strategy() {
    let base = "pods:\n  a:\n    labels: { app: a }\n    containers: [ { name: a, command: [ x ] } ]\nservices:\n";
    let ok = load(
        &format!("{base}  s:\n    selector: {{ app: a }}\n    balance: least_conn\n    ports: [ \"0.0.0.0:8080:80\", {{ port: 81, publish: 9091, host_ip: 10.0.0.1 }}, 82 ]\n"),
        Path::new(ORIGIN),
    )
    .unwrap();
    let s = &ok.services()["s"];
    assert_eq!(s.balance, crate::manifest::Balance::LeastConn);
    let hosts: Vec<Option<String>> = s
        .ports
        .iter()
        .map(|p| p.host_ip.map(|h| h.to_string()))
        .collect();
    assert_eq!(
        hosts,
        [Some("0.0.0.0".into()), Some("10.0.0.1".into()), None]
    );
    let text = load(
        &format!("{base}  s:\n    selector: {{ app: a }}\n    balance: leastconn\n    ports: [ {{ port: 81, host_ip: 10.0.0.1 }}, {{ port: 82, publish: 1, host_ip: nowhere }} ]\n"),
        Path::new(ORIGIN),
    )
    .unwrap_err()
    .render();
    for expected in [
        "unknown balance `leastconn` in service `s`: expected `round_robin` or `least_conn`; did you mean `least_conn`?",
        "`host_ip` of service `s` needs `publish`",
        "invalid host_ip `nowhere` of service `s`: expected an IPv4 address",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

const WATCH_BASE: &str = "images:
  app: { layers: [src] }
pods:
  web: { containers: [ { name: app, image: app, command: x } ] }
  db: { containers: [ { name: db, command: x } ] }
";

#[test]
fn watch_rules_are_validated_into_their_effects() {
    let m = ok(&format!(
        "{WATCH_BASE}watch:
  - {{ paths: [site], action: sync, pods: [web], target: /srv/site/, ignore: ['*.css'], containers: [app] }}
  - {{ paths: [conf], action: restart, pods: [db], cascade: true }}
  - {{ paths: [src/app], action: redeploy, pods: [web] }}
"
    ));
    let rules = m.watch();
    assert_eq!(rules.len(), 3);
    assert_eq!(
        rules[0].effect,
        crate::manifest::WatchEffect::Sync {
            target: "/srv/site".into()
        }
    );
    assert_eq!(rules[0].ignore, vec!["*.css".to_string()]);
    assert_eq!(rules[0].containers, vec!["app".to_string()]);
    assert!(rules[1].containers.is_empty());
    assert_eq!(
        rules[1].effect,
        crate::manifest::WatchEffect::Restart { cascade: true }
    );
    assert_eq!(rules[2].effect, crate::manifest::WatchEffect::Redeploy);
    // and the normalized manifest loads back unchanged
    assert_eq!(ok(&m.to_yaml()), m);
}

#[test]
fn watch_rule_unknown_key_suggests_and_unknown_pod_is_named() {
    assert_error(
        &format!(
            "{WATCH_BASE}watch:\n  - {{ paths: [site], action: restart, pods: [webb], cascde: true }}\n"
        ),
        "error: watch rule 1 names pod `webb`, which is not a pod; did you mean `web`?
  --> rcompose.yaml:7:46
   |
 7 |   - { paths: [site], action: restart, pods: [webb], cascde: true }
   |                                              ^^^^

error: unknown field `cascde` in watch rule 1; did you mean `cascade`?
  --> rcompose.yaml:7:53
   |
 7 |   - { paths: [site], action: restart, pods: [webb], cascde: true }
   |                                                     ^^^^^^",
    );
}

#[test]
fn watch_rule_settings_must_fit_the_action() {
    assert_error(
        &format!(
            "{WATCH_BASE}watch:
  - {{ paths: [site], action: sync, pods: [web] }}
  - {{ paths: [site], action: sync, pods: [web], target: srv, cascade: true }}
  - {{ paths: [site], action: restrat, pods: [web] }}
  - {{ paths: [], action: restart, pods: [], target: /x }}
  - {{ paths: [docs], action: redeploy, pods: [db] }}
"
        ),
        "error: missing field `target` in watch rule 1: a `sync` rule needs the path in the containers its files go to
  --> rcompose.yaml:7:5
   |
 7 |   - { paths: [site], action: sync, pods: [web] }
   |     ^

error: invalid `target` `srv` in watch rule 2: use an absolute path without `..`
  --> rcompose.yaml:8:57
   |
 8 |   - { paths: [site], action: sync, pods: [web], target: srv, cascade: true }
   |                                                         ^^^

error: `cascade` applies to `restart` rules only; watch rule 2 is a `sync` rule
  --> rcompose.yaml:8:62
   |
 8 |   - { paths: [site], action: sync, pods: [web], target: srv, cascade: true }
   |                                                              ^^^^^^^

error: unknown action `restrat` in watch rule 3: use `sync`, `restart` or `redeploy`; did you mean `restart`?
  --> rcompose.yaml:9:30
   |
 9 |   - { paths: [site], action: restrat, pods: [web] }
   |                              ^^^^^^^

error: watch rule 4 watches no path: list at least one file or directory in `paths`
   --> rcompose.yaml:10:14
    |
 10 |   - { paths: [], action: restart, pods: [], target: /x }
    |              ^

error: watch rule 4 applies to no pod: list at least one in `pods`
   --> rcompose.yaml:10:41
    |
 10 |   - { paths: [], action: restart, pods: [], target: /x }
    |                                         ^

error: `target` applies to `sync` rules only; watch rule 4 is a `restart` rule
   --> rcompose.yaml:10:45
    |
 10 |   - { paths: [], action: restart, pods: [], target: /x }
    |                                             ^^^^^^

error: watch rule 5 redeploys pod `db`, but watches none of its images' `layers:` directories: a redeploy rebuilds the layers it watches
   --> rcompose.yaml:11:47
    |
 11 |   - { paths: [docs], action: redeploy, pods: [db] }
    |                                               ^^",
    );
}

#[test]
fn watch_sync_containers_must_be_in_every_pod() {
    assert_error(
        &format!("{WATCH_BASE}watch:\n  - {{ paths: [site], action: sync, pods: [web, db], target: /srv, containers: [ap] }}\n"),
        "error: watch rule 1 names container `ap`, which pod `web` does not have; did you mean `app`?
  --> rcompose.yaml:7:80
   |
 7 |   - { paths: [site], action: sync, pods: [web, db], target: /srv, containers: [ap] }
   |                                                                                ^^

error: watch rule 1 names container `ap`, which pod `db` does not have
  --> rcompose.yaml:7:80
   |
 7 |   - { paths: [site], action: sync, pods: [web, db], target: /srv, containers: [ap] }
   |                                                                                ^^",
    );
}

#[test]
fn requests_default_to_limits_and_may_not_exceed_them() {
    let m = ok("pods:
  api:
    init_containers: [ { name: migrate, command: x, resources: { requests: { memory: 1Gi } } } ]
    containers:
      - { name: a, command: x, resources: { cpu: 500m, memory: 256Mi } }
      - { name: b, command: x, resources: { cpu: 1, requests: { cpu: 250m, memory: 64Mi } } }
");
    let api = &m.pods()["api"];
    let a = &api.containers[0].resources;
    assert_eq!(a.requests.cpu.map(|c| c.0), Some(500));
    assert_eq!(a.requests.memory, Some(Bytes(256 << 20)));
    // a pod requests the sum of its containers, or its largest init container if more
    let r = api.requests();
    assert_eq!(r.cpu.map(|c| c.0), Some(750));
    assert_eq!(r.memory, Some(Bytes(1 << 30)));
    // a request equal to its limit is the default and is not written back
    let yaml = m.to_yaml();
    assert_eq!(yaml.matches("requests").count(), 2, "{yaml}");
    assert_eq!(load(&yaml, Path::new(ORIGIN)).unwrap(), m);
    assert_error(
        "pods:\n  api:\n    containers:\n      - { name: a, command: x, resources: { memory: 1Gi, requests: { memory: 2Gi, cpu: 1x } } }\n",
        "error: the memory request of container `api.a` (2Gi) is above its limit (1Gi): a request must not exceed the limit
  --> rcompose.yaml:4:78
   |
 4 |       - { name: a, command: x, resources: { memory: 1Gi, requests: { memory: 2Gi, cpu: 1x } } }
   |                                                                              ^^^

error: invalid cpu quantity `1x`: expected cpus like `0.5`, `2` or millicpus like `500m`
  --> rcompose.yaml:4:88
   |
 4 |       - { name: a, command: x, resources: { memory: 1Gi, requests: { memory: 2Gi, cpu: 1x } } }
   |                                                                                        ^^",
    );
    assert_error(
        "pods:\n  api:\n    containers:\n      - { name: a, command: x, resources: { requests: { mem: 1Gi } } }\n",
        "error: unknown field `mem` in `requests` of container `api.a`; did you mean `memory`?
  --> rcompose.yaml:4:57
   |
 4 |       - { name: a, command: x, resources: { requests: { mem: 1Gi } } }
   |                                                         ^^^",
    );
}

#[test]
fn nodes_need_a_capacity_and_selectors_must_match_one() {
    let m = ok("nodes:
  worker-1: { cpu: 2, memory: 4Gi, labels: { zone: a } }
  worker-2: { cpu: 2, memory: 4Gi, labels: { zone: b } }
pods:
  api: { node_selector: { zone: a }, containers: [ { name: a, command: x, resources: { memory: 1Gi } } ] }
");
    assert_eq!(m.nodes()["worker-1"].memory, Bytes(4 << 30));
    assert_eq!(m.pods()["api"].node_selector["zone"], "a");
    assert_eq!(load(&m.to_yaml(), Path::new(ORIGIN)).unwrap(), m);
    assert_error(
        "nodes:\n  w1: { cpu: 2, memroy: 4Gi }\npods:\n  api: { containers: [ { name: a, command: x } ] }\n",
        "error: missing field `memory` in node `w1` (a node's capacity is required)
  --> rcompose.yaml:2:7
   |
 2 |   w1: { cpu: 2, memroy: 4Gi }
   |       ^

error: unknown field `memroy` in node `w1`; did you mean `memory`?
  --> rcompose.yaml:2:17
   |
 2 |   w1: { cpu: 2, memroy: 4Gi }
   |                 ^^^^^^",
    );
    assert_error(
        "nodes:
  Worker_1: { cpu: 2, memory: 4Gi }
  w2: { cpu: 2, memory: 4Gi, labels: { zone: b } }
  w3: { cpu: 1, memory: 4Gi, labels: { zone: b } }
pods:
  api: { node_selector: { zone: c }, containers: [ { name: a, command: x } ] }
  db: { node_selector: { zone: b }, containers: [ { name: a, command: x, resources: { cpu: 3, memory: 8Gi } } ] }
",
        "error: invalid node name `Worker_1`: use lower-case letters, digits and `-`, starting and ending with a letter or digit
  --> rcompose.yaml:2:3
   |
 2 |   Worker_1: { cpu: 2, memory: 4Gi }
   |   ^^^^^^^^

error: the `node_selector` of pod `api` (zone=c) matches no node: the nodes are `Worker_1` (no labels), `w2` (zone=b), `w3` (zone=b)
  --> rcompose.yaml:6:10
   |
 6 |   api: { node_selector: { zone: c }, containers: [ { name: a, command: x } ] }
   |          ^^^^^^^^^^^^^

error: a replica of pod `db` requests 3 cpu, more than any node it may run on has (the most: 2 on `w2`)
  --> rcompose.yaml:7:3
   |
 7 |   db: { node_selector: { zone: b }, containers: [ { name: a, command: x, resources: { cpu: 3, memory: 8Gi } } ] }
   |   ^^

error: a replica of pod `db` requests 8Gi of memory, more than any node it may run on has (the most: 4Gi on `w2`)
  --> rcompose.yaml:7:3
   |
 7 |   db: { node_selector: { zone: b }, containers: [ { name: a, command: x, resources: { cpu: 3, memory: 8Gi } } ] }
   |   ^^",
    );
}

#[test]
fn capacity_overrides_the_machine_only_without_nodes() {
    let m = ok(
        "capacity: { memory: 2Gi }\npods:\n  api: { containers: [ { name: a, command: x } ] }\n",
    );
    assert_eq!(m.capacity().memory, Some(Bytes(2 << 30)));
    assert_eq!(m.capacity().cpu, None);
    assert_eq!(load(&m.to_yaml(), Path::new(ORIGIN)).unwrap(), m);
    assert_error(
        "capacity: { cpu: 2 }
nodes:
  w1: { cpu: 2, memory: 4Gi }
pods:
  api: { node_selector: { zone: a }, containers: [ { name: a, command: x } ] }
",
        "error: `capacity` sets the capacity of the machine as the one node, but `nodes` are declared: give each node its `cpu` and `memory` instead
  --> rcompose.yaml:1:1
   |
 1 | capacity: { cpu: 2 }
   | ^^^^^^^^

error: the `node_selector` of pod `api` (zone=a) matches no node: the nodes are `w1` (no labels)
  --> rcompose.yaml:5:10
   |
 5 |   api: { node_selector: { zone: a }, containers: [ { name: a, command: x } ] }
   |          ^^^^^^^^^^^^^",
    );
    assert_error(
        "pods:\n  api: { node_selector: { zone: a }, containers: [ { name: a, command: x } ] }\n",
        "error: pod `api` has a `node_selector`, but no `nodes` are declared: declare nodes with these labels, or remove the selector
  --> rcompose.yaml:2:10
   |
 2 |   api: { node_selector: { zone: a }, containers: [ { name: a, command: x } ] }
   |          ^^^^^^^^^^^^^",
    );
}
