//! `export kubernetes`: every example (and, through [`export_and_validate`], any manifest)
//! exports to files that `kubernetes-validate` accepts against the Kubernetes version the
//! exporter writes for.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::examples::example_manifests;
use crate::test::{TempDir, assert_code, rcompose, stderr, stdout, unindent};

/// The Kubernetes version the files are validated against: the exporter's (k8s-openapi's
/// `v1_37`), the newest `kubernetes-validate` 1.37.0 knows.
const KUBERNETES_VERSION: &str = "1.37.0";

/// The `kubernetes-validate` program (PyPI `kubernetes-validate`): `$KUBERNETES_VALIDATE`,
/// else the one in `PATH`, else the venv .ci/run makes (`/opt/kubernetes-validate`).
/// Panics saying how to install it: the test never skips.
fn kubernetes_validate() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if crate::test::in_path("kubernetes-validate") {
        return PathBuf::from("kubernetes-validate");
    }
    let venv = Path::new("/opt/kubernetes-validate/bin/kubernetes-validate");
    assert!(
        venv.exists(),
        "this test needs `kubernetes-validate` (PyPI): `python3 -m venv /opt/kubernetes-validate && \
         /opt/kubernetes-validate/bin/pip install kubernetes-validate==1.37.0` (what .ci/run does), \
         or `pip install kubernetes-validate`, or set KUBERNETES_VALIDATE to the program"
    );
    venv.to_path_buf()
}

/// What [`export_and_validate`] made.
#[derive(Debug)]
pub struct Exported {
    /// The output directory (removed on drop).
    pub dir: TempDir,
    /// The files written, sorted.
    pub files: Vec<PathBuf>,
    /// `export`'s stderr: the warnings and the summary.
    pub stderr: String,
}

/// Runs `rcompose -f MANIFEST export kubernetes -o TMPDIR`, which must succeed and write at
/// least one file, then `kubernetes-validate --strict` on every file written, which must
/// pass for every object. For any manifest that loads: the examples, Compose files.
#[track_caller]
pub fn export_and_validate(manifest: &Path) -> Exported {
    export_and_validate_with(manifest, &[])
}

/// [`export_and_validate`] with more `export kubernetes` arguments.
#[track_caller]
pub fn export_and_validate_with(manifest: &Path, extra: &[&str]) -> Exported {
    export_validated(manifest, extra, false)
}

/// [`export_and_validate`] with `export` run in an empty environment but `HOME` (the
/// Compose corpus: interpolation must not depend on who runs the test).
#[track_caller]
fn export_and_validate_clean_env(manifest: &Path) -> Exported {
    export_validated(manifest, &[], true)
}

#[track_caller]
fn export_validated(manifest: &Path, extra: &[&str], clean_env: bool) -> Exported {
    let dir = TempDir::new("k8s-export");
    let out_dir = dir.path().join("k8s");
    let mut args = vec![
        "-f",
        manifest.to_str().unwrap(),
        "export",
        "kubernetes",
        "-o",
        out_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = if clean_env {
        Command::new(crate::test::bin())
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("HOME", "/home/user")
            .output()
            .unwrap()
    } else {
        rcompose(Path::new(env!("CARGO_MANIFEST_DIR")), &args)
    };
    assert_code(&out, 0);
    let mut files: Vec<PathBuf> = fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{}: nothing exported",
        manifest.display()
    );
    for f in &files {
        assert_eq!(
            f.extension().and_then(|e| e.to_str()),
            Some("yaml"),
            "{}",
            f.display()
        );
    }
    let check = Command::new(kubernetes_validate())
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("failed to run kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success(),
        "{}: kubernetes-validate rejected the export:\n{report}",
        manifest.display()
    );
    // one `passed` line per file (each file holds one object), and nothing else
    for f in &files {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(&format!("INFO {} passed", f.display()))),
            "{} not validated:\n{report}",
            f.display()
        );
    }
    assert!(
        !report.contains("ERROR") && !report.contains("WARN"),
        "{report}"
    );
    Exported {
        dir,
        files,
        stderr: stderr(&out),
    }
}

#[test]
fn every_example_exports_to_valid_kubernetes_objects() {
    let manifests = example_manifests();
    assert!(manifests.len() >= 3, "{manifests:?}");
    for m in manifests {
        let e = export_and_validate(&m);
        assert!(e.stderr.contains("Kubernetes object(s) to"), "{}", e.stderr);
    }
}

/// Every part of the manifest the export maps, in one project.
const FULL: &str = r#"
name: full_demo
images:
  py: { ref: docker.io/library/python:3.13, pull: always }
  app: { from: py, layers: [ ./app ] }
configs:
  app.conf: { file: ./app.conf }
  blob: { file: ./blob.bin }
  inline: { content: "a: 1\n" }
secrets:
  DB_Password: { content: "s3cret" }
volumes:
  data: {}
pods:
  migrate:
    containers:
      - { name: run, image: py, command: [python3, -c, "print(1)"] }
  api:
    replicas: 3
    labels: { app: api }
    restart: always
    depends_on: { migrate: { condition: completed } }
    update: { max_surge: 1, max_unavailable: 0, min_ready: 2s, progress_deadline: 90s }
    volumes: { work: { empty_dir: {} } }
    init_containers:
      - { name: fetch, command: [sh, -c, "cp /conf/* /work/"], volumes: [ "./conf:/conf:ro", "work:/work" ] }
    containers:
      - name: server
        image: app
        entrypoint: [python3]
        command: [-m, http.server, "8080"]
        env: { A: "yes", B: "1:30", C: "0o17", D: "~", E: "" }
        working_dir: /srv
        user: "1000:1000"
        read_only: true
        cap_add: [NET_ADMIN, SYS_ADMIN]
        cap_drop: [ALL]
        stop_grace_period: 1500ms
        resources: { cpu: "1.5", memory: 1G, pids: 64 }
        readiness: { http: { port: 8080, path: /healthz }, period: 500ms }
        liveness: { tcp: { port: 8080 }, failure_threshold: 5 }
        startup: { exec: [test, -f, /tmp/ready], failure_threshold: 60 }
        volumes:
          - work:/work
          - data:/var/lib/api
          - { type: tmpfs, target: /cache, tmpfs: { size: 64Mi } }
        configs: [ app.conf, { source: blob, target: /etc/blob, mode: 0640 }, inline ]
        secrets: [ { source: DB_Password, uid: 1000 } ]
      - { name: shell, command: [sleep, infinity], tty: true, privileged: true, user: nobody }
  worker:
    restart: on-failure
    network_mode: none
    containers:
      - { name: w, image: py, command: [python3, -c, "import time; time.sleep(1e9)"] }
services:
  api:
    selector: { app: api }
    ports: [ { port: 80, target: 8080, publish: 8080 }, { port: 9090, publish: 30090 } ]
    balance: least_conn
  names:
    selector: { app: api }
faults:
  slow-api: { target: pod/api, latency: 100ms }
"#;

fn full_project() -> TempDir {
    let dir = TempDir::new("k8s-full");
    dir.write("rcompose.yaml", FULL);
    dir.write("app/main.py", "print('hi')\n");
    dir.write("app.conf", "greeting=hi\n");
    dir.write("conf/x.conf", "x=1\n");
    fs::write(dir.path().join("blob.bin"), [0xffu8, 0, 1, 2]).unwrap();
    dir
}

#[test]
fn a_manifest_with_every_feature_exports_to_valid_kubernetes_objects() {
    let project = full_project();
    let manifest = project.path().join("rcompose.yaml");
    for publish in ["loadbalancer", "nodeport"] {
        let e = export_and_validate_with(
            &manifest,
            &["--publish-as", publish, "--volume-size", "5Gi"],
        );
        let names: Vec<String> = e
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "configmap-app.conf.yaml",
                "configmap-blob.yaml",
                "configmap-inline.yaml",
                "deployment-api.yaml",
                "deployment-worker.yaml",
                "job-migrate.yaml",
                "persistentvolumeclaim-data.yaml",
                "secret-db-password.yaml",
                "service-api-published.yaml",
                "service-api.yaml",
                "service-names.yaml",
            ]
        );
        assert!(
            e.stderr.contains("warning: faults: 1 network fault(s) not exported: they simulate a network on this machine"),
            "{}",
            e.stderr
        );
        let public =
            fs::read_to_string(e.dir.path().join("k8s/service-api-published.yaml")).unwrap();
        let expected_type = if publish == "nodeport" {
            "NodePort"
        } else {
            "LoadBalancer"
        };
        assert!(
            public.contains(&format!("type: {expected_type}")),
            "{public}"
        );
    }
}

/// The export's objects, parsed back (the marker line is a comment).
fn objects(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let text = fs::read_to_string(e.path()).unwrap();
        assert!(
            text.starts_with("# Generated by `rcompose export kubernetes` from `"),
            "{text}"
        );
        let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        out.insert(e.file_name().to_string_lossy().into_owned(), value);
    }
    out
}

#[test]
fn the_hello_example_exports_its_deployment_job_and_service() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello/rcompose.yaml");
    let e = export_and_validate(&manifest);
    let out_dir = e.dir.path().join("k8s");
    assert_eq!(
        e.stderr,
        unindent(&format!(
            "
            warning: images.host: this machine's root filesystem (`host`) cannot run on a cluster: build an image with its content, push it to a registry the cluster pulls from, and replace `hello-host:latest`
            warning: images.web: this machine's root filesystem (`host`) with 1 layer(s) over it cannot run on a cluster: build an image with its content, push it to a registry the cluster pulls from, and replace `hello-web:latest`
            warning: pods.web.depends_on.setup: waiting for `setup` (completed) has no Kubernetes equivalent: the Deployment's containers start at once, so they must retry until `setup` is there
            warning: pods.web.containers.server.resources.pids: 32 not exported: Kubernetes limits processes per pod on the node (the kubelet's podPidsLimit), not per container
            warning: pods.web.containers.probe.resources.pids: 16 not exported: Kubernetes limits processes per pod on the node (the kubelet's podPidsLimit), not per container
            wrote 3 Kubernetes object(s) to {} (5 warning(s))
            ",
            out_dir.display()
        ))
    );
    let objects = objects(&out_dir);
    let keys: Vec<&String> = objects.keys().collect();
    assert_eq!(
        keys,
        ["deployment-web.yaml", "job-setup.yaml", "service-web.yaml"]
    );
    let web = &objects["deployment-web.yaml"];
    assert_eq!(web["apiVersion"], "apps/v1");
    assert_eq!(web["kind"], "Deployment");
    assert_eq!(web["metadata"]["name"], "web");
    assert_eq!(web["spec"]["replicas"], 2);
    let selector = serde_json::json!({
        "app.kubernetes.io/name": "web",
        "app.kubernetes.io/part-of": "hello",
    });
    assert_eq!(web["spec"]["selector"]["matchLabels"], selector);
    assert_eq!(
        web["spec"]["template"]["metadata"]["labels"],
        serde_json::json!({
            "app": "web",
            "app.kubernetes.io/name": "web",
            "app.kubernetes.io/part-of": "hello",
        })
    );
    assert_eq!(
        web["spec"]["strategy"],
        serde_json::json!({
            "type": "RollingUpdate",
            "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" },
        })
    );
    let pod = &web["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    let server = &pod["containers"][0];
    assert_eq!(server["name"], "server");
    assert_eq!(server["image"], "hello-web:latest");
    assert_eq!(
        server["command"],
        serde_json::json!([
            "python3",
            "-m",
            "http.server",
            "8080",
            "--directory",
            "/srv/www"
        ])
    );
    assert_eq!(
        server["env"],
        serde_json::json!([{ "name": "PYTHONUNBUFFERED", "value": "1" }])
    );
    assert_eq!(
        server["resources"],
        serde_json::json!({ "limits": { "cpu": "250m", "memory": "64Mi" } })
    );
    assert_eq!(
        server["readinessProbe"]["httpGet"],
        serde_json::json!({ "path": "/", "port": 8080 })
    );
    assert_eq!(server["readinessProbe"]["periodSeconds"], 10);
    assert_eq!(pod["containers"][1]["name"], "probe");
    assert_eq!(pod["containers"][1]["image"], "hello-host:latest");
    // `setup` is waited for until completed: a Job that runs once
    let setup = &objects["job-setup.yaml"];
    assert_eq!(setup["kind"], "Job");
    assert_eq!(setup["spec"]["backoffLimit"], 0);
    assert_eq!(setup["spec"]["completions"], 1);
    assert_eq!(setup["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let service = &objects["service-web.yaml"];
    assert_eq!(service["kind"], "Service");
    assert_eq!(service["metadata"]["name"], "web");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(
        service["spec"]["selector"],
        serde_json::json!({ "app": "web", "app.kubernetes.io/part-of": "hello" })
    );
    assert_eq!(
        service["spec"]["ports"],
        serde_json::json!([{ "name": "tcp-80", "port": 80, "protocol": "TCP", "targetPort": 8080 }])
    );
}

#[test]
fn export_to_stdout_writes_one_multi_document_stream() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/watch/rcompose.yaml");
    let out = rcompose(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["-f", manifest.to_str().unwrap(), "export", "k8s", "-o", "-"],
    );
    assert_code(&out, 0);
    let text = stdout(&out);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let kinds: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("Deployment".into(), "app".into()),
            ("Deployment".into(), "web".into()),
            ("Service".into(), "web".into())
        ]
    );
    assert!(stderr(&out).contains("warning: watch: 2 watch rule(s) not exported"));
}

#[test]
fn export_replaces_its_own_stale_files_and_keeps_others() {
    let project = TempDir::new("k8s-stale");
    project.write(
        "rcompose.yaml",
        "pods:\n  web: { restart: always, containers: [ { name: w, command: [sleep, '1'] } ] }\n",
    );
    let stale = project.write(
        "k8s/deployment-gone.yaml",
        "# Generated by `rcompose export kubernetes` from `rcompose.yaml`\nkind: Deployment\n",
    );
    let mine = project.write("k8s/namespace.yaml", "kind: Namespace\n");
    let out = rcompose(project.path(), &["export", "kubernetes"]);
    assert_code(&out, 0);
    assert!(!stale.exists());
    assert!(mine.exists());
    assert!(project.path().join("k8s/deployment-web.yaml").exists());
    assert!(
        stderr(&out).contains("removed k8s/deployment-gone.yaml (not in this export)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn names_that_clash_fail_the_export_as_an_invalid_manifest() {
    let project = TempDir::new("k8s-clash");
    project.write(
        "rcompose.yaml",
        "configs:\n  a_b: { content: x }\n  a-b: { content: y }\npods:\n  p: { containers: [ { name: c, command: [x] } ] }\n",
    );
    let out = rcompose(project.path(), &["export", "kubernetes", "-o", "-"]);
    assert_code(&out, 3);
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).ends_with(
            "error: `configs.a-b` and `configs.a_b` would both be the ConfigMap `a-b`: rename one\n"
        ),
        "{}",
        stderr(&out)
    );
}

/// Every Compose file of the corpus that loads (`config` accepts it, with its bind sources
/// and files present) exports to objects `kubernetes-validate` accepts.
#[test]
fn every_compose_corpus_file_that_loads_exports_to_valid_kubernetes_objects() {
    let root = crate::cli::compose_corpus::corpus_dir();
    let mut files = Vec::new();
    crate::cli::compose_corpus::compose_files(&root, &mut files);
    let mut exported = 0;
    for file in &files {
        let loads = Command::new(crate::test::bin())
            .args(["-f", file.to_str().unwrap(), "config", "-q"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("HOME", "/home/user")
            .output()
            .unwrap();
        if loads.status.success() {
            export_and_validate_clean_env(file);
            exported += 1;
        }
    }
    // docs/compose-compatibility.md: 31 files are accepted; a few of them name bind sources
    // that are not in the corpus, so `config` (which checks them) refuses those
    assert!(
        exported >= 20,
        "only {exported} corpus files load and were exported"
    );
}
