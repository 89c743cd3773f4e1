use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container as K8sContainer, PodSpec, Volume};

use super::*;

/// A manifest that uses every part the export maps (or warns about).
const FULL: &str = r#"
name: shop
network: { subnet: 10.99.0.0/24 }
images:
  base: { ref: docker.io/library/python:3.13, pull: always }
  api: { from: base, layers: [ ./api ] }
  tools: { archive: ./tools.tar }
  rootfs: { rootfs: ./root }
  pinned: { from: base }
configs:
  app.conf: { content: "greeting=hi\n" }
  blob: { file: ./blob.bin }
secrets:
  DB_Password: { content: s3cret }
volumes:
  data: {}
pods:
  migrate:
    restart: never
    containers:
      - { name: run, image: tools, command: [migrate, up] }
  api:
    replicas: 3
    labels: { app: api, tier: backend }
    restart: always
    depends_on:
      migrate: { condition: completed }
    backoff: { initial: 1s, max: 30s }
    update: { max_surge: 1, max_unavailable: 0, min_ready: 1500ms, progress_deadline: 90s }
    volumes: { work: { empty_dir: {} } }
    init_containers:
      - name: fetch
        command: [sh, -c, "cp /conf/* /work/"]
        volumes: [ "./conf:/conf:ro", "work:/work" ]
        readiness: { tcp: { port: 1 } }
    containers:
      - name: server
        image: api
        command: [/app/server, --port, "8080"]
        env: { DB_ADDR: "db:5432", ENABLED: "yes", TIME: "1:30" }
        working_dir: /app
        user: "1000:2000"
        read_only: true
        cap_add: [NET_ADMIN]
        cap_drop: [MKNOD]
        stop_signal: SIGINT
        stop_grace_period: 20s
        resources: { cpu: 500m, memory: 128Mi, pids: 64 }
        readiness: { http: { port: 8080, path: /healthz }, period: 500ms, timeout: 2s }
        liveness: { tcp: { port: 8080 }, failure_threshold: 5, initial_delay: 3s }
        startup: { exec: [test, -f, /tmp/ready], period: 1s, failure_threshold: 60 }
        volumes:
          - work:/work
          - data:/var/lib/api
          - { type: tmpfs, target: /cache, tmpfs: { size: 64Mi } }
        configs:
          - app.conf
          - { source: blob, target: /etc/blob, mode: 0640 }
        secrets:
          - { source: DB_Password, uid: 1000 }
      - name: sidecar
        image: pinned
        command: [sleep, infinity]
        user: postgres
        tty: true
        stop_grace_period: 5s
        volumes: [ "data:/data:ro" ]
  debug:
    restart: on-failure
    network_mode: none
    runtime: crun
    containers:
      - { name: shell, image: rootfs, entrypoint: [/bin/sh, -c], command: ["sleep 1"], privileged: true }
      - { name: tools, image: tools, entrypoint: [/bin/tool] }
services:
  api:
    selector: { app: api }
    ports: [ { port: 80, target: 8080, publish: 8080 }, { port: 9090, publish: 30090 } ]
    balance: least_conn
  "9lives":
    selector: { tier: backend }
watch:
  - { paths: [api], action: redeploy, pods: [api] }
"#;

fn full(options: &Options) -> Export {
    let m = crate::manifest::load(FULL, Path::new("/srv/shop/rcompose.yaml")).unwrap();
    let configs = BTreeMap::from([
        ("app.conf".to_string(), b"greeting=hi\n".to_vec()),
        ("blob".to_string(), vec![0xff, 0x00, 0x01]),
    ]);
    let secrets = BTreeMap::from([("DB_Password".to_string(), b"s3cret".to_vec())]);
    let input = Input {
        manifest: &m,
        project: "shop",
        base_dir: Path::new("/srv/shop"),
        configs: &configs,
        secrets: &secrets,
    };
    export(&input, options).unwrap()
}

fn find<'a>(e: &'a Export, kind: &str, name: &str) -> &'a Object {
    e.objects
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", names(e)))
}

fn names(e: &Export) -> Vec<String> {
    e.objects
        .iter()
        .map(|o| format!("{}/{}", o.kind(), o.name()))
        .collect()
}

fn deployment<'a>(e: &'a Export, name: &str) -> &'a Deployment {
    match find(e, "Deployment", name) {
        Object::Deployment(d) => d,
        _ => unreachable!(),
    }
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.template.spec.as_ref().unwrap()
}

fn container<'a>(spec: &'a PodSpec, name: &str) -> &'a K8sContainer {
    spec.containers.iter().find(|c| c.name == name).unwrap()
}

fn volume<'a>(spec: &'a PodSpec, name: &str) -> &'a Volume {
    let vols = spec.volumes.as_ref().unwrap();
    vols.iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name} in {vols:?}"))
}

fn warned(e: &Export, path: &str, needle: &str) -> bool {
    e.warnings
        .iter()
        .any(|w| w.path == path && w.message.contains(needle))
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn every_object_of_the_manifest_is_exported_in_kind_order() {
    let e = full(&Options::default());
    assert_eq!(
        names(&e),
        [
            "ConfigMap/app.conf",
            "ConfigMap/blob",
            "Secret/db-password",
            "PersistentVolumeClaim/data",
            "Deployment/api",
            "Deployment/debug",
            "Job/migrate",
            "Service/svc-9lives",
            "Service/api",
            "Service/api-published",
        ]
    );
}

#[test]
fn a_pod_becomes_a_deployment_with_replicas_labels_selector_and_rolling_update() {
    let e = full(&Options::default());
    let d = deployment(&e, "api");
    assert_eq!(d.metadata.name.as_deref(), Some("api"));
    let labels = d.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[PART_OF], "shop");
    assert_eq!(labels[NAME], "api");
    assert_eq!(labels[MANAGED_BY], "rcompose");
    assert_eq!(d.spec.replicas, Some(3));
    let selector = d.spec.selector.match_labels.as_ref().unwrap();
    assert_eq!(
        *selector,
        BTreeMap::from([(s(NAME), s("api")), (s(PART_OF), s("shop"))])
    );
    // the template carries the selector's labels and the pod's own
    let template_labels = d
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(&template_labels[k], v);
    }
    assert_eq!(template_labels["app"], "api");
    assert_eq!(template_labels["tier"], "backend");
    let strategy = d.spec.strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let ru = strategy.rolling_update.as_ref().unwrap();
    assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
    // 1500ms rounds up to 2 s, with a warning
    assert_eq!(d.spec.min_ready_seconds, Some(2));
    assert!(warned(&e, "pods.api.update.min_ready", "1500ms becomes 2s"));
    assert_eq!(d.spec.progress_deadline_seconds, Some(90));
    let spec = pod_spec(d);
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    // the longest grace period of the pod's containers
    assert_eq!(spec.termination_grace_period_seconds, Some(20));
    assert!(warned(&e, "pods.api.containers", "20s, the longest"));
}

#[test]
fn percentages_stay_percentages() {
    let e = full(&Options::default());
    let d = deployment(&e, "debug");
    let ru = d
        .spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(ru.max_surge, Some(IntOrString::String(s("25%"))));
    assert_eq!(ru.max_unavailable, Some(IntOrString::String(s("25%"))));
    assert_eq!(d.spec.progress_deadline_seconds, Some(60));
}

#[test]
fn containers_keep_image_command_env_resources_and_security() {
    let e = full(&Options::default());
    let spec = pod_spec(deployment(&e, "api"));
    let c = container(spec, "server");
    // `api` is a registry image with a layer over it: a placeholder to build and push
    assert_eq!(c.image.as_deref(), Some("shop-api:latest"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert!(warned(
        &e,
        "images.api",
        "FROM docker.io/library/python:3.13, then the layers"
    ));
    // an image with a config: `command` replaces its Cmd (args), its Entrypoint stays
    assert_eq!(c.command, None);
    assert_eq!(c.args, Some(vec![s("/app/server"), s("--port"), s("8080")]));
    let env: Vec<(String, String)> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| (v.name.clone(), v.value.clone().unwrap()))
        .collect();
    assert_eq!(
        env,
        [
            (s("DB_ADDR"), s("db:5432")),
            (s("ENABLED"), s("yes")),
            (s("TIME"), s("1:30"))
        ]
    );
    assert_eq!(c.working_dir.as_deref(), Some("/app"));
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["cpu"], Quantity(s("500m")));
    assert_eq!(limits["memory"], Quantity(s("128Mi")));
    assert!(!limits.contains_key("pids"));
    assert!(warned(
        &e,
        "pods.api.containers.server.resources.pids",
        "64 not exported"
    ));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(1000));
    assert_eq!(sc.run_as_group, Some(2000));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add, Some(vec![s("NET_ADMIN")]));
    assert_eq!(caps.drop, Some(vec![s("MKNOD")]));
    assert!(warned(
        &e,
        "pods.api.containers.server.stop_signal",
        "`SIGINT` not exported"
    ));
    // a user name has no Kubernetes form; tty needs stdin
    let side = container(spec, "sidecar");
    assert_eq!(side.security_context.as_ref().unwrap().run_as_user, None);
    assert!(warned(
        &e,
        "pods.api.containers.sidecar.user",
        "`postgres` not exported"
    ));
    assert_eq!((side.tty, side.stdin), (Some(true), Some(true)));
    // a registry image without layers is pulled as it is, with the pull policy
    assert_eq!(side.image.as_deref(), Some("docker.io/library/python:3.13"));
    assert_eq!(side.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(side.args, Some(vec![s("sleep"), s("infinity")]));
}

#[test]
fn entrypoints_and_images_without_a_config_follow_docker_rules() {
    let e = full(&Options::default());
    let spec = pod_spec(deployment(&e, "debug"));
    let shell = container(spec, "shell");
    assert_eq!(shell.command, Some(vec![s("/bin/sh"), s("-c")]));
    assert_eq!(shell.args, Some(vec![s("sleep 1")]));
    assert_eq!(shell.image.as_deref(), Some("shop-rootfs:latest"));
    assert!(warned(&e, "images.rootfs", "the root filesystem `./root`"));
    let sc = shell.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, None);
    let tools = container(spec, "tools");
    assert_eq!(tools.command, Some(vec![s("/bin/tool")]));
    assert_eq!(tools.args, None);
    assert!(warned(&e, "images.tools", "the archive `./tools.tar`"));
    // the host image has no config: `command` is the whole argv
    let api = pod_spec(deployment(&e, "api"));
    let fetch = &api.init_containers.as_ref().unwrap()[0];
    assert_eq!(fetch.image.as_deref(), Some("shop-host:latest"));
    assert_eq!(
        fetch.command,
        Some(vec![s("sh"), s("-c"), s("cp /conf/* /work/")])
    );
    assert_eq!(fetch.args, None);
    assert!(warned(&e, "images.host", "this machine's root filesystem"));
}

#[test]
fn probes_map_with_whole_seconds() {
    let e = full(&Options::default());
    let c = container(pod_spec(deployment(&e, "api")), "server").clone();
    let r = c.readiness_probe.unwrap();
    let http = r.http_get.unwrap();
    assert_eq!(http.port, IntOrString::Int(8080));
    assert_eq!(http.path.as_deref(), Some("/healthz"));
    assert_eq!(r.period_seconds, Some(1));
    assert!(warned(
        &e,
        "pods.api.containers.server.readiness.period",
        "500ms becomes 1s"
    ));
    assert_eq!(r.timeout_seconds, Some(2));
    assert_eq!(r.failure_threshold, Some(3));
    assert_eq!(r.success_threshold, Some(1));
    let l = c.liveness_probe.unwrap();
    assert_eq!(l.tcp_socket.unwrap().port, IntOrString::Int(8080));
    assert_eq!(l.failure_threshold, Some(5));
    assert_eq!(l.initial_delay_seconds, Some(3));
    assert_eq!(l.period_seconds, Some(10));
    let s_ = c.startup_probe.unwrap();
    assert_eq!(
        s_.exec.unwrap().command,
        Some(vec![s("test"), s("-f"), s("/tmp/ready")])
    );
    assert_eq!(s_.failure_threshold, Some(60));
    // init containers get none
    let api = pod_spec(deployment(&e, "api"));
    assert_eq!(
        api.init_containers.as_ref().unwrap()[0].readiness_probe,
        None
    );
    assert!(warned(
        &e,
        "pods.api.init_containers.fetch.readiness",
        "no probes on init containers"
    ));
}

#[test]
fn volumes_become_empty_dirs_claims_host_paths_and_file_mounts() {
    let e = full(&Options {
        publish_as: PublishAs::LoadBalancer,
        volume_size: Bytes(5 << 30),
    });
    let spec = pod_spec(deployment(&e, "api"));
    assert!(volume(spec, "work").empty_dir.is_some());
    assert_eq!(
        volume(spec, "data")
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "data"
    );
    let tmpfs = volume(spec, "server-tmpfs").empty_dir.as_ref().unwrap();
    assert_eq!(tmpfs.medium.as_deref(), Some("Memory"));
    assert_eq!(tmpfs.size_limit, Some(Quantity(s("64Mi"))));
    // the bind mount: the path resolved against the manifest's directory, and a warning
    let host = volume(spec, "host-conf").host_path.as_ref().unwrap();
    assert_eq!(host.path, "/srv/shop/conf");
    assert!(warned(
        &e,
        "pods.api.init_containers.fetch.volumes./conf",
        "hostPath `/srv/shop/conf`"
    ));
    let config = volume(spec, "config-app-conf").config_map.as_ref().unwrap();
    assert_eq!(config.name, "app.conf");
    let item = &config.items.as_ref().unwrap()[0];
    assert_eq!(
        (item.key.as_str(), item.path.as_str()),
        ("app.conf", "app.conf")
    );
    assert_eq!(item.mode, Some(0o444));
    assert_eq!(
        volume(spec, "config-blob")
            .config_map
            .as_ref()
            .unwrap()
            .items
            .as_ref()
            .unwrap()[0]
            .mode,
        Some(0o640)
    );
    let secret = volume(spec, "secret-db-password").secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("db-password"));
    assert!(warned(
        &e,
        "pods.api.containers.server.secrets.DB_Password",
        "owner 1000:0 not exported"
    ));
    // the mounts of the server, in order: volumes, then configs, then secrets
    let mounts: Vec<(String, String, Option<String>, Option<bool>)> = container(spec, "server")
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.mount_path.clone(),
                m.sub_path.clone(),
                m.read_only,
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            (s("work"), s("/work"), None, None),
            (s("data"), s("/var/lib/api"), None, None),
            (s("server-tmpfs"), s("/cache"), None, None),
            (
                s("config-app-conf"),
                s("/app.conf"),
                Some(s("app.conf")),
                Some(true)
            ),
            (
                s("config-blob"),
                s("/etc/blob"),
                Some(s("blob")),
                Some(true)
            ),
            (
                s("secret-db-password"),
                s("/run/secrets/DB_Password"),
                Some(s("DB_Password")),
                Some(true)
            ),
        ]
    );
    // the sidecar mounts the same claim, read-only: one volume
    let side = container(spec, "sidecar").volume_mounts.as_ref().unwrap();
    assert_eq!(
        (side[0].name.as_str(), side[0].read_only),
        ("data", Some(true))
    );
    let claim = match find(&e, "PersistentVolumeClaim", "data") {
        Object::PersistentVolumeClaim(c) => c.spec.as_ref().unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(claim.access_modes, Some(vec![s("ReadWriteOnce")]));
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
        Quantity(s("5Gi"))
    );
    assert!(warned(&e, "volumes.data", "`api` (3 replica(s))"));
}

#[test]
fn configs_and_secrets_carry_their_contents() {
    let e = full(&Options::default());
    let Object::ConfigMap(text) = find(&e, "ConfigMap", "app.conf") else {
        unreachable!()
    };
    assert_eq!(text.data.as_ref().unwrap()["app.conf"], "greeting=hi\n");
    // ConfigMap names may have dots
    assert!(!e.warnings.iter().any(|w| w.path == "configs.app.conf"));
    let Object::ConfigMap(binary) = find(&e, "ConfigMap", "blob") else {
        unreachable!()
    };
    assert_eq!(binary.data, None);
    assert_eq!(
        binary.binary_data.as_ref().unwrap()["blob"],
        ByteString(vec![0xff, 0, 1])
    );
    let Object::Secret(secret) = find(&e, "Secret", "db-password") else {
        unreachable!()
    };
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret.data.as_ref().unwrap()["DB_Password"],
        ByteString(b"s3cret".to_vec())
    );
    // base64 in the YAML, never the plain text
    let yaml = find(&e, "Secret", "db-password").to_yaml();
    assert!(yaml.contains("czNjcmV0"), "{yaml}");
    assert!(!yaml.contains("s3cret"), "{yaml}");
}

#[test]
fn a_pod_waited_for_until_completed_becomes_a_job() {
    let e = full(&Options::default());
    let Object::Job(job) = find(&e, "Job", "migrate") else {
        unreachable!()
    };
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.completions, Some(1));
    assert_eq!(spec.parallelism, Some(1));
    assert_eq!(spec.backoff_limit, Some(0));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert!(warned(
        &e,
        "pods.api.depends_on.migrate",
        "waiting for `migrate` (completed) has no Kubernetes equivalent"
    ));
    // the others keep running: a Deployment, with a warning for a restart policy it lacks
    assert!(warned(
        &e,
        "pods.debug.restart",
        "`on-failure` has no Deployment equivalent"
    ));
    assert!(!e.warnings.iter().any(|w| w.path == "pods.api.restart"));
}

#[test]
fn services_keep_their_ports_and_publish_through_a_second_service() {
    let e = full(&Options::default());
    let Object::Service(api) = find(&e, "Service", "api") else {
        unreachable!()
    };
    let spec = api.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        spec.selector.as_ref().unwrap(),
        &BTreeMap::from([(s("app"), s("api")), (s(PART_OF), s("shop"))])
    );
    let ports: Vec<(i32, Option<IntOrString>, Option<String>)> = spec
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.port, p.target_port.clone(), p.name.clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (80, Some(IntOrString::Int(8080)), Some(s("tcp-80"))),
            (9090, Some(IntOrString::Int(9090)), Some(s("tcp-9090")))
        ]
    );
    assert!(warned(
        &e,
        "services.api.balance",
        "`least_conn` not exported"
    ));
    let Object::Service(public) = find(&e, "Service", "api-published") else {
        unreachable!()
    };
    let spec = public.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    let ports: Vec<(i32, Option<IntOrString>, Option<i32>)> = spec
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.port, p.target_port.clone(), p.node_port))
        .collect();
    assert_eq!(
        ports,
        [
            (8080, Some(IntOrString::Int(8080)), None),
            (30090, Some(IntOrString::Int(9090)), None)
        ]
    );
    assert!(warned(
        &e,
        "services.api.ports",
        "published on 127.0.0.1 here"
    ));
    // a service without ports: a headless one; a name with a digit first gets a prefix
    let Object::Service(headless) = find(&e, "Service", "svc-9lives") else {
        unreachable!()
    };
    let spec = headless.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.ports, None);
    assert!(warned(&e, "services.9lives", "becomes `svc-9lives`"));
}

#[test]
fn node_ports_take_the_published_port_in_range() {
    let e = full(&Options {
        publish_as: PublishAs::NodePort,
        volume_size: Bytes(1 << 30),
    });
    let Object::Service(public) = find(&e, "Service", "api-published") else {
        unreachable!()
    };
    let spec = public.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let ports: Vec<(i32, Option<i32>)> = spec
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.port, p.node_port))
        .collect();
    assert_eq!(ports, [(80, None), (9090, Some(30090))]);
    assert!(warned(
        &e,
        "services.api.ports.80",
        "8080 is outside the node port range"
    ));
}

#[test]
fn pod_settings_without_an_equivalent_are_warned_about() {
    let e = full(&Options::default());
    for (path, needle) in [
        ("pods.api.backoff", "not exported"),
        ("pods.debug.runtime", "`crun` not exported"),
        (
            "pods.debug.network_mode",
            "`none` has no Kubernetes equivalent",
        ),
        ("network.subnet", "`10.99.0.0/24` is not exported"),
        ("watch", "1 watch rule(s) not exported"),
        ("secrets.DB_Password", "base64-encoded, not encrypted"),
    ] {
        assert!(
            warned(&e, path, needle),
            "no warning {path}: {needle} in {:#?}",
            e.warnings
        );
    }
}

#[test]
fn a_plain_manifest_exports_without_warnings() {
    let m = crate::manifest::load(
        "images: { web: { ref: nginx:1.27 } }\npods:\n  web:\n    restart: always\n    labels: { app: web }\n    containers: [ { name: web, image: web } ]\nservices:\n  web: { selector: { app: web }, ports: [80] }\n",
        Path::new("rcompose.yaml"),
    )
    .unwrap();
    let empty = BTreeMap::new();
    let e = export(
        &Input {
            manifest: &m,
            project: "p",
            base_dir: Path::new("/"),
            configs: &empty,
            secrets: &empty,
        },
        &Options::default(),
    )
    .unwrap();
    assert_eq!(e.warnings, []);
    assert_eq!(names(&e), ["Deployment/web", "Service/web"]);
    let c = &pod_spec(deployment(&e, "web")).containers[0];
    assert_eq!(c.image.as_deref(), Some("nginx:1.27"));
    assert_eq!((c.command.clone(), c.args.clone()), (None, None));
}

#[test]
fn names_that_clash_after_sanitizing_are_an_error() {
    let m = crate::manifest::load(
        "configs:\n  a_b: { content: x }\n  a-b: { content: y }\npods:\n  p: { containers: [ { name: c, command: [x] } ] }\n",
        Path::new("rcompose.yaml"),
    )
    .unwrap();
    let configs = BTreeMap::from([(s("a_b"), b"x".to_vec()), (s("a-b"), b"y".to_vec())]);
    let empty = BTreeMap::new();
    let err = export(
        &Input {
            manifest: &m,
            project: "p",
            base_dir: Path::new("/"),
            configs: &configs,
            secrets: &empty,
        },
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`configs.a-b` and `configs.a_b` would both be the ConfigMap `a-b`: rename one"
    );
}

#[test]
fn missing_contents_are_an_error_not_an_empty_config() {
    let m = crate::manifest::load(
        "configs: { c: { file: ./c } }\npods:\n  p: { containers: [ { name: c, command: [x] } ] }\n",
        Path::new("rcompose.yaml"),
    )
    .unwrap();
    let empty = BTreeMap::new();
    let err = export(
        &Input {
            manifest: &m,
            project: "p",
            base_dir: Path::new("/"),
            configs: &empty,
            secrets: &empty,
        },
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ExportError::MissingContent {
            what: "config",
            name: s("c")
        }
    );
}

#[test]
fn dns_labels_are_lower_case_letters_digits_and_inner_dashes() {
    assert_eq!(dns_label("web").as_deref(), Some("web"));
    assert_eq!(dns_label("My_App.conf").as_deref(), Some("my-app-conf"));
    assert_eq!(dns_label("--a__b--").as_deref(), Some("a-b"));
    assert_eq!(dns_label(&"x".repeat(70)).map(|s| s.len()), Some(63));
    assert_eq!(
        dns_label(&format!("{}-y", "x".repeat(62))).as_deref(),
        Some(&*"x".repeat(62))
    );
    assert_eq!(dns_label("___"), None);
    assert_eq!(label_value("my_proj-"), "my_proj");
    assert_eq!(dns_subdomain("App.Conf").as_deref(), Some("app.conf"));
    assert_eq!(dns_subdomain(".a..b_c.").as_deref(), Some("a.b-c"));
    assert_eq!(dns_subdomain("._."), None);
}

#[test]
fn yaml_keeps_yaml_1_1_look_alikes_as_strings() {
    let e = full(&Options::default());
    let yaml = find(&e, "Deployment", "api").to_yaml();
    // kubectl reads YAML 1.1: unquoted, these would be a boolean and a number
    assert!(
        yaml.contains("value: 'yes'") || yaml.contains("value: \"yes\""),
        "{yaml}"
    );
    assert!(
        yaml.contains("value: '1:30'") || yaml.contains("value: \"1:30\""),
        "{yaml}"
    );
    assert!(
        yaml.starts_with("apiVersion: apps/v1\nkind: Deployment\n"),
        "{yaml}"
    );
    assert_eq!(
        find(&e, "Deployment", "api").file_name(),
        "deployment-api.yaml"
    );
}

#[test]
fn configs_over_a_mebibyte_are_warned_about() {
    let m = crate::manifest::load(
        "configs: { big: { file: ./big } }\npods:\n  p: { containers: [ { name: c, command: [x] } ] }\n",
        Path::new("rcompose.yaml"),
    )
    .unwrap();
    let empty = BTreeMap::new();
    let export_with = |len: usize| {
        let configs = BTreeMap::from([(s("big"), vec![b'x'; len])]);
        export(
            &Input {
                manifest: &m,
                project: "p",
                base_dir: Path::new("/"),
                configs: &configs,
                secrets: &empty,
            },
            &Options::default(),
        )
        .unwrap()
    };
    assert!(!warned(
        &export_with(1 << 20),
        "configs.big",
        "at most 1 MiB"
    ));
    assert!(warned(
        &export_with((1 << 20) + 1),
        "configs.big",
        "1048577 bytes: a ConfigMap holds at most 1 MiB"
    ));
}
