//! L1, pure: desired state and dependency graph. No I/O: paths are joined lexically, never
//! looked up on disk.

pub mod desired;
pub mod faults;
pub mod graph;
pub mod schedule;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::manifest::{self, ImageBase, ValidManifest};
use crate::plan::desired::{
    CapacityPlan, Condition, ContainerPlan, Dependency, DesiredState, FileContent, FilePlan,
    LayerPlan, MountPlan, MountSource, NodePlan, PodPlan, ProbeAction, ProbePlan, PullPolicy,
    Requests, Resources, RestartPolicy, RootfsPlan, ServicePlan, ServicePort, StoredImage,
};

/// Turns a validated manifest into what should run. `project` names the project; layer and
/// rootfs paths are resolved against `base_dir` (the manifest's directory) by pure path
/// joining. Image chains become [`RootfsPlan`]s, bottom first; replicas are not expanded here
/// (`PodPlan::replicas` says how many); `waves` are the Kahn levels of `depends_on`.
pub fn desired_state(m: &ValidManifest, project: &str, base_dir: &Path) -> DesiredState {
    let pods: BTreeMap<String, PodPlan> = m
        .pods()
        .iter()
        .map(|(name, pod)| {
            let plan = PodPlan {
                name: name.clone(),
                replicas: pod.replicas,
                network: pod.network_mode == manifest::NetworkMode::Project,
                labels: pod.labels.clone(),
                depends_on: pod
                    .depends_on
                    .iter()
                    .map(|(dep, d)| Dependency {
                        pod: dep.clone(),
                        condition: match d.condition {
                            manifest::Condition::Started => Condition::Started,
                            manifest::Condition::Completed => Condition::Completed,
                            manifest::Condition::Healthy => Condition::Healthy,
                        },
                    })
                    .collect(),
                restart: match pod.restart {
                    manifest::Restart::Always => RestartPolicy::Always,
                    manifest::Restart::OnFailure => RestartPolicy::OnFailure,
                    manifest::Restart::Never => RestartPolicy::Never,
                },
                backoff: (pod.backoff.initial, pod.backoff.max),
                update: pod.update.into(),
                empty_dirs: pod.volumes.iter().cloned().collect(),
                // init containers first: the supervisor runs them, in order, before the rest
                containers: pod
                    .init_containers
                    .iter()
                    .map(|c| container_plan(m, c, base_dir, true))
                    .chain(
                        pod.containers
                            .iter()
                            .map(|c| container_plan(m, c, base_dir, false)),
                    )
                    .map(|mut c| {
                        c.runtime = pod.runtime;
                        c
                    })
                    .collect(),
                requests: {
                    let r = pod.requests();
                    Requests {
                        cpu_millis: r.cpu.map_or(0, |c| c.0),
                        memory_bytes: r.memory.map_or(0, |m| m.0),
                    }
                },
                node_selector: pod.node_selector.clone(),
            };
            (name.clone(), plan)
        })
        .collect();
    let services = m
        .services()
        .iter()
        .map(|(name, s)| {
            let selected = pods
                .values()
                .filter(|p| s.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                .map(|p| p.name.clone())
                .collect();
            let plan = ServicePlan {
                name: name.clone(),
                selector: s.selector.clone(),
                pods: selected,
                ports: s
                    .ports
                    .iter()
                    .map(|p| ServicePort {
                        port: p.port,
                        target: p.target,
                        publish: p.publish,
                        host_ip: p.host_ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST),
                    })
                    .collect(),
                balance: s.balance,
            };
            (name.clone(), plan)
        })
        .collect();
    let waves = graph::waves(&pods);
    DesiredState {
        project: project.to_string(),
        pods,
        services,
        waves,
        volumes: m.volumes().iter().cloned().collect(),
        subnet: m.subnet(),
        nodes: m
            .nodes()
            .iter()
            .map(|(name, n)| {
                let plan = NodePlan {
                    name: name.clone(),
                    cpu_millis: n.cpu.0,
                    memory_bytes: n.memory.0,
                    labels: n.labels.clone(),
                };
                (name.clone(), plan)
            })
            .collect(),
        faults: m.faults().clone(),
        capacity: CapacityPlan {
            cpu_millis: m.capacity().cpu.map(|c| c.0),
            memory_bytes: m.capacity().memory.map(|b| b.0),
        },
    }
}

fn probe_plan(p: &manifest::Probe) -> ProbePlan {
    ProbePlan {
        action: match &p.action {
            manifest::ProbeAction::Exec(argv) => ProbeAction::Exec(argv.clone()),
            manifest::ProbeAction::Http { port, path } => ProbeAction::Http {
                port: *port,
                path: path.clone(),
            },
            manifest::ProbeAction::Tcp { port } => ProbeAction::Tcp { port: *port },
        },
        period: p.period,
        timeout: p.timeout,
        initial_delay: p.initial_delay,
        failure_threshold: p.failure_threshold,
        success_threshold: p.success_threshold,
    }
}

/// The plan of container `c`; `init` for one of the pod's `init_containers`.
fn container_plan(
    m: &ValidManifest,
    c: &manifest::Container,
    base_dir: &Path,
    init: bool,
) -> ContainerPlan {
    let rootfs = rootfs(m, &c.image, base_dir);
    let stored = matches!(rootfs.layers.first(), Some(LayerPlan::Stored(_)));
    // Without an image config the argv is final now: entrypoint + command.
    let (entrypoint, command) = if stored {
        (c.entrypoint.clone(), c.command.clone())
    } else {
        let argv: Vec<String> = c
            .entrypoint
            .iter()
            .chain(c.command.iter())
            .flatten()
            .cloned()
            .collect();
        (None, Some(argv))
    };
    ContainerPlan {
        name: c.name.clone(),
        image: c.image.clone(),
        rootfs,
        entrypoint,
        command,
        user: c.user.clone(),
        env: c.env.clone(),
        working_dir: c.working_dir.clone(),
        resources: Resources {
            cpu_millis: c.resources.cpu.map(|q| q.0),
            memory_bytes: c.resources.memory.map(|q| q.0),
            pids: c.resources.pids,
        },
        privileged: c.security.privileged,
        capabilities: c.security.capabilities,
        mounts: c
            .mounts
            .iter()
            .map(|mount| MountPlan {
                source: match &mount.kind {
                    manifest::MountKind::Bind(p) => MountSource::Host(resolve(base_dir, p)),
                    manifest::MountKind::Volume(n) => MountSource::Volume(n.clone()),
                    manifest::MountKind::EmptyDir(n) => MountSource::EmptyDir(n.clone()),
                    manifest::MountKind::Tmpfs(size) => MountSource::Tmpfs(size.map(|b| b.0)),
                },
                target: mount.target.clone(),
                read_only: mount.read_only,
            })
            .collect(),
        files: files(m, c, base_dir),
        read_only: c.read_only,
        tty: c.tty,
        readiness: c.readiness.as_ref().map(probe_plan),
        liveness: c.liveness.as_ref().map(probe_plan),
        startup: c.startup.as_ref().map(probe_plan),
        runtime: manifest::RuntimeKind::Builtin,
        stop_signal: manifest::quantity::parse_signal(&c.stop_signal).map_or(15, |(_, n)| n),
        stop_grace_period: c.stop_grace_period,
        init,
    }
}

/// The configs, then the secrets, a container mounts.
fn files(m: &ValidManifest, c: &manifest::Container, base_dir: &Path) -> Vec<FilePlan> {
    let mut out = Vec::new();
    for (kind, uses, sources) in [
        ("config", &c.configs, m.configs()),
        ("secret", &c.secrets, m.secrets()),
    ] {
        for u in uses {
            // validation checked that every used name is declared
            let Some(source) = sources.get(&u.source) else {
                continue;
            };
            out.push(FilePlan {
                what: format!("{kind} `{}`", u.source),
                content: match source {
                    manifest::FileSource::File(p) => FileContent::Host(resolve(base_dir, p)),
                    manifest::FileSource::Environment(v) => FileContent::Environment(v.clone()),
                    manifest::FileSource::Content(t) => FileContent::Inline(t.clone()),
                },
                target: u.target.clone(),
                uid: u.uid,
                gid: u.gid,
                mode: u.mode,
            });
        }
    }
    out
}

/// The layers of `image`, bottom first.
fn rootfs(m: &ValidManifest, image: &str, base_dir: &Path) -> RootfsPlan {
    // Walk the chain top-down, then reverse. Validation rejected cycles and unknown images,
    // so the walk ends at `host` or a rootfs; the bound only guards against a broken invariant.
    let mut stack = Vec::new();
    let mut current = image;
    let mut bottom = vec![LayerPlan::Host];
    for _ in 0..=m.images().len() {
        let Some(spec) = m.images().get(current) else {
            break;
        };
        stack.push(spec);
        match &spec.base {
            ImageBase::From(next) => current = next,
            ImageBase::Rootfs(dir) => {
                bottom = vec![LayerPlan::Dir {
                    path: resolve(base_dir, dir),
                    target: "/".into(),
                }];
                break;
            }
            ImageBase::Archive(file) => {
                bottom = vec![LayerPlan::Stored(StoredImage::Archive {
                    path: resolve(base_dir, file),
                    allow_setuid: spec.allow_setuid,
                })];
                break;
            }
            ImageBase::Ref(reference) => {
                bottom = vec![LayerPlan::Stored(StoredImage::Registry {
                    reference: reference.clone(),
                    pull: match spec.pull {
                        None | Some(manifest::PullPolicy::Missing) => PullPolicy::Missing,
                        Some(manifest::PullPolicy::Always) => PullPolicy::Always,
                        Some(manifest::PullPolicy::Never) => PullPolicy::Never,
                    },
                    allow_setuid: spec.allow_setuid,
                })];
                break;
            }
        }
    }
    let mut layers = bottom;
    for spec in stack.iter().rev() {
        for layer in &spec.layers {
            layers.push(LayerPlan::Dir {
                path: resolve(base_dir, &layer.source),
                target: layer.target.clone(),
            });
        }
    }
    RootfsPlan { layers }
}

/// `up POD...`: the pods named and everything they depend on (transitively), with their
/// start waves; `Err` names a pod that does not exist, with the project's pods.
pub fn select(desired: &DesiredState, names: &[String]) -> Result<DesiredState, String> {
    let mut keep: Vec<String> = Vec::new();
    let mut todo: Vec<String> = Vec::new();
    for name in names {
        if !desired.pods.contains_key(name) {
            let all: Vec<String> = desired.pods.keys().map(|p| format!("`{p}`")).collect();
            return Err(format!(
                "project `{}` has no pod `{name}` (its pods: {})",
                desired.project,
                all.join(", ")
            ));
        }
        todo.push(name.clone());
    }
    while let Some(name) = todo.pop() {
        if keep.contains(&name) {
            continue;
        }
        if let Some(pod) = desired.pods.get(&name) {
            todo.extend(pod.depends_on.iter().map(|d| d.pod.clone()));
        }
        keep.push(name);
    }
    let pods: BTreeMap<String, PodPlan> = desired
        .pods
        .iter()
        .filter(|(n, _)| keep.contains(n))
        .map(|(n, p)| (n.clone(), p.clone()))
        .collect();
    Ok(DesiredState {
        project: desired.project.clone(),
        waves: graph::waves(&pods),
        pods,
        services: desired.services.clone(),
        volumes: desired.volumes.clone(),
        subnet: desired.subnet,
        nodes: desired.nodes.clone(),
        capacity: desired.capacity,
        faults: desired.faults.clone(),
    })
}

/// Joins `path` onto `base` and removes `.` and `..` lexically (no file system access).
pub fn resolve(base: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::manifest::load;
    use crate::plan::desired::{Condition, LayerPlan, RestartPolicy};
    use crate::plan::{desired_state, resolve};

    const SHOP: &str = r"
name: shop
images:
  base: { from: host }
  tools: { rootfs: ./rootfs }
  api:
    from: base
    layers:
      - ./api
      - { source: ./conf, target: /etc/api }
  cli:
    from: tools
    layers: [ ../shared/bin ]
pods:
  db:
    containers: [ { name: db, command: sleep infinity, resources: { cpu: 0.5, memory: 128Mi, pids: 64 } } ]
  migrate:
    restart: on-failure
    depends_on: [db]
    containers: [ { name: m, image: cli, command: [migrate, up] } ]
  api:
    replicas: 3
    labels: { app: api }
    depends_on: { db: { condition: started }, migrate: { condition: completed } }
    restart: always
    containers:
      - name: server
        image: api
        command: [/bin/sh, -c, 'echo hi']
        env: [A=1, B=x=y]
  worker:
    depends_on: [db]
    containers: [ { name: w, command: work } ]
  web:
    depends_on: [api, worker]
    containers: [ { name: w, command: serve } ]
services:
  api:
    selector: { app: api }
    ports: [ 80, '8080:81', { port: 90, target: 9090, publish: 9000 } ]
";

    #[test]
    fn select_keeps_the_named_pods_and_their_dependencies() {
        let m = load(SHOP, Path::new("x/rcompose.yaml")).unwrap();
        let d = desired_state(&m, "shop", Path::new("/srv/shop"));
        let api = crate::plan::select(&d, &["api".to_string()]).unwrap();
        assert_eq!(
            api.waves,
            vec![
                vec!["db".to_string()],
                vec!["migrate".to_string()],
                vec!["api".to_string()]
            ]
        );
        assert_eq!(api.pods.len(), 3);
        let err = crate::plan::select(&d, &["apj".to_string()]).unwrap_err();
        assert_eq!(
            err,
            "project `shop` has no pod `apj` (its pods: `api`, `db`, `migrate`, `web`, `worker`)"
        );
    }

    #[test]
    fn init_containers_come_first_marked_init() {
        let m = load(
            "pods:
  web:
    init_containers: [ { name: migrate, command: migrate }, { name: seed, command: seed } ]
    containers: [ { name: app, command: serve } ]
",
            Path::new("x/rcompose.yaml"),
        )
        .unwrap();
        let d = desired_state(&m, "p", Path::new("/x"));
        let plan: Vec<(&str, bool)> = d.pods["web"]
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.init))
            .collect();
        assert_eq!(plan, [("migrate", true), ("seed", true), ("app", false)]);
    }

    #[test]
    fn desired_state_resolves_image_chains_bottom_first() {
        let m = load(SHOP, Path::new("x/rcompose.yaml")).unwrap();
        let d = desired_state(&m, "shop", Path::new("/srv/shop"));
        let api = &d.pods["api"].containers[0];
        assert_eq!(
            api.rootfs.layers,
            vec![
                LayerPlan::Host,
                LayerPlan::Dir {
                    path: "/srv/shop/api".into(),
                    target: "/".into()
                },
                LayerPlan::Dir {
                    path: "/srv/shop/conf".into(),
                    target: "/etc/api".into()
                },
            ]
        );
        let cli = &d.pods["migrate"].containers[0];
        assert_eq!(
            cli.rootfs.layers,
            vec![
                LayerPlan::Dir {
                    path: "/srv/shop/rootfs".into(),
                    target: "/".into()
                },
                LayerPlan::Dir {
                    path: "/srv/shared/bin".into(),
                    target: "/".into()
                },
            ]
        );
        assert_eq!(
            d.pods["db"].containers[0].rootfs.layers,
            vec![LayerPlan::Host]
        );
    }

    #[test]
    fn desired_state_fills_pods_and_services() {
        let m = load(SHOP, Path::new("x/rcompose.yaml")).unwrap();
        let d = desired_state(&m, "shop", Path::new("/srv/shop"));
        assert_eq!(d.project, "shop");
        let api = &d.pods["api"];
        assert_eq!(api.replicas, 3);
        assert_eq!(api.restart, RestartPolicy::Always);
        assert_eq!(api.depends_on[1].pod, "migrate");
        assert_eq!(api.depends_on[1].condition, Condition::Completed);
        let server = &api.containers[0];
        assert_eq!(
            server.command.as_deref().unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(server.env["B"], "x=y");
        let db = &d.pods["db"].containers[0];
        assert_eq!(db.command.as_deref().unwrap(), ["sleep", "infinity"]);
        assert_eq!(db.resources.cpu_millis, Some(500));
        assert_eq!(db.resources.memory_bytes, Some(128 << 20));
        assert_eq!(db.resources.pids, Some(64));
        let svc = &d.services["api"];
        assert_eq!(svc.pods, ["api"]);
        let ports: Vec<_> = svc
            .ports
            .iter()
            .map(|p| (p.port, p.target, p.publish))
            .collect();
        assert_eq!(
            ports,
            [(80, 80, None), (81, 81, Some(8080)), (90, 9090, Some(9000))]
        );
    }

    #[test]
    fn start_waves_group_independent_pods() {
        let m = load(SHOP, Path::new("x/rcompose.yaml")).unwrap();
        let d = desired_state(&m, "shop", Path::new("/srv/shop"));
        assert_eq!(
            d.waves,
            vec![
                vec!["db"],
                vec!["migrate", "worker"],
                vec!["api"],
                vec!["web"]
            ]
        );
    }

    #[test]
    fn resolve_joins_lexically() {
        assert_eq!(
            resolve(Path::new("/a/b"), "./c/../d"),
            PathBuf::from("/a/b/d")
        );
        assert_eq!(
            resolve(Path::new("/a/b"), "/abs/x"),
            PathBuf::from("/abs/x")
        );
        assert_eq!(resolve(Path::new("rel"), "../../x"), PathBuf::from("../x"));
    }
}
