//! The container `rcompose exec` enters: found by pod, replica and container name in the
//! project's `state.json`, checked to be running (its init's pid against the recorded start
//! time), with the config the supervisor wrote for it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::state::{
    ContainerRecord, ContainerState, ProjectPaths, ProjectState, StateError, display_name,
    is_same_process,
};
use crate::runtime::ContainerConfig;
use crate::runtime::cgroup;
use crate::runtime::exec::{ExecRequest, ExecSpec, ExecTarget};

/// Why no container could be entered.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The project has no state.
    #[error("project `{project}` is not up")]
    NotUp {
        /// The project.
        project: String,
    },
    /// No pod of that name (nor `pod-N` replica).
    #[error("project `{project}` has no pod `{pod}` (its pods: {pods})")]
    UnknownPod {
        /// The project.
        project: String,
        /// The name asked for.
        pod: String,
        /// The project's pods, listed.
        pods: String,
    },
    /// The pod has no such replica.
    #[error("pod `{pod}` has no replica {replica} (its replicas: {replicas})")]
    UnknownReplica {
        /// The pod.
        pod: String,
        /// The replica number asked for.
        replica: u32,
        /// The pod's replicas, listed.
        replicas: String,
    },
    /// The pod has several containers and none was named.
    #[error("pod `{pod}` has several containers; name one with `-c`: {containers}")]
    ContainerRequired {
        /// The pod.
        pod: String,
        /// Its containers, listed.
        containers: String,
    },
    /// The pod has no container of that name.
    #[error("pod `{pod}` has no container `{container}` (its containers: {containers})")]
    UnknownContainer {
        /// The pod.
        pod: String,
        /// The name asked for.
        container: String,
        /// Its containers, listed.
        containers: String,
    },
    /// The container is not in the running state.
    #[error("container `{name}` is not running (state: {state})")]
    NotRunning {
        /// `pod-N/container`.
        name: String,
        /// Its state, as `ps` shows it.
        state: &'static str,
    },
    /// The container's init is gone (or its pid now names another process).
    #[error("container `{name}` is not running: its init has exited")]
    Gone {
        /// `pod-N/container`.
        name: String,
    },
    /// The container's config could not be read.
    #[error("failed to read the config of container `{name}` (`{path}`)")]
    ReadConfig {
        /// `pod-N/container`.
        name: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The container's config is not valid.
    #[error("the config of container `{name}` (`{path}`) is not valid")]
    ParseConfig {
        /// `pod-N/container`.
        name: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
}

/// `a`, `b`, `c` in backticks.
fn list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the container `target` (`pod`, meaning replica 1, or `pod-N`) and `container`
/// (required when the pod has several) name in `state`. A pod whose own name looks like a
/// replica (`web-2`) is found by that name first.
pub fn find<'a>(
    state: &'a ProjectState,
    target: &str,
    container: Option<&str>,
) -> Result<&'a ContainerRecord, TargetError> {
    let mut pods: Vec<&str> = Vec::new();
    for c in &state.containers {
        if !pods.contains(&c.pod.as_str()) {
            pods.push(&c.pod);
        }
    }
    let replica_form = target
        .rsplit_once('-')
        .and_then(|(pod, n)| Some((pod, n.parse::<u32>().ok()?)))
        .filter(|(pod, _)| pods.contains(pod));
    let (pod, replica) = if pods.contains(&target) {
        (target, 1)
    } else if let Some(found) = replica_form {
        found
    } else {
        pods.sort_unstable();
        return Err(TargetError::UnknownPod {
            project: state.project.clone(),
            pod: target.to_string(),
            pods: list(pods),
        });
    };
    let mut replicas: Vec<u32> = state
        .containers
        .iter()
        .filter(|c| c.pod == pod)
        .map(|c| c.replica)
        .collect();
    replicas.sort_unstable();
    replicas.dedup();
    if !replicas.contains(&replica) {
        let names: Vec<String> = replicas.iter().map(|r| format!("{pod}-{r}")).collect();
        return Err(TargetError::UnknownReplica {
            pod: pod.to_string(),
            replica,
            replicas: list(names.iter().map(String::as_str)),
        });
    }
    let members: Vec<&ContainerRecord> = state
        .containers
        .iter()
        .filter(|c| c.pod == pod && c.replica == replica)
        .collect();
    let names = || list(members.iter().map(|c| c.container.as_str()));
    // without `-c`, the pod's only container; its init containers do not count (they have
    // exited by the time the others run)
    let main: Vec<&ContainerRecord> = members.iter().copied().filter(|c| !c.init).collect();
    match (container, main.as_slice()) {
        (None, [only]) => Ok(only),
        (None, _) => Err(TargetError::ContainerRequired {
            pod: pod.to_string(),
            containers: names(),
        }),
        (Some(name), _) => members
            .iter()
            .find(|c| c.container == name)
            .copied()
            .ok_or_else(|| TargetError::UnknownContainer {
                pod: pod.to_string(),
                container: name.to_string(),
                containers: names(),
            }),
    }
}

/// The spec for running `request` in container `target`/`container` of `project`: the
/// container is found in the state below `run_root`, must be running (its init alive in
/// `proc_root`, with the recorded start time), and its config is the one the supervisor
/// wrote into its directory.
pub fn prepare(
    run_root: &Path,
    proc_root: &Path,
    project: &str,
    target: &str,
    container: Option<&str>,
    request: ExecRequest,
) -> Result<ExecSpec, TargetError> {
    let paths = ProjectPaths::new(run_root, project);
    let state = ProjectState::load(&paths.state_file())?.ok_or_else(|| TargetError::NotUp {
        project: project.to_string(),
    })?;
    let record = find(&state, target, container)?;
    let single = state
        .containers
        .iter()
        .filter(|c| c.pod == record.pod && c.replica == record.replica)
        .count()
        == 1;
    let name = display_name(&record.pod, record.replica, &record.container, single);
    spec_for(record, name, proc_root, request)
}

/// The spec for running `request` in the container of `record` (shown as `name`), which
/// must be running; its config is the one the supervisor wrote into its directory.
pub fn spec_for(
    record: &ContainerRecord,
    name: String,
    proc_root: &Path,
    request: ExecRequest,
) -> Result<ExecSpec, TargetError> {
    if record.state != ContainerState::Running {
        return Err(TargetError::NotRunning {
            name,
            state: record.state.as_str(),
        });
    }
    let (pid, pid_start) = match (record.pid, record.pid_start) {
        (Some(pid), Some(start)) if is_same_process(proc_root, pid, Some(start)) => (pid, start),
        _ => return Err(TargetError::Gone { name }),
    };
    // written by the supervisor's `launch` for every start of the container
    let path = record.dir.join(crate::runtime::CONFIG_FILE);
    let raw = fs::read(&path).map_err(|source| TargetError::ReadConfig {
        name: name.clone(),
        path: path.clone(),
        source,
    })?;
    let config: ContainerConfig =
        serde_json::from_slice(&raw).map_err(|source| TargetError::ParseConfig {
            name: name.clone(),
            path: path.clone(),
            source,
        })?;
    // the hierarchies the container's cgroup is in: rcompose's controllers, or every one
    // for an external runtime's container
    let info = fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    let mounts: Vec<(String, std::path::PathBuf)> = crate::runtime::oci::hierarchies(&info)
        .into_iter()
        .filter(|(_, m)| m.join(&record.cgroup).is_dir())
        .collect();
    let join = cgroup::self_join_files(cgroup::detect_version(), &mounts, &record.cgroup);
    let target = ExecTarget {
        name,
        pid,
        pid_start,
        proc_root: proc_root.to_owned(),
        join,
    };
    Ok(ExecSpec::new(config, target, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pod: &str, replica: u32, container: &str) -> ContainerRecord {
        ContainerRecord {
            pod: pod.into(),
            replica,
            container: container.into(),
            state: ContainerState::Running,
            pid: Some(10),
            pid_start: Some(99),
            restarts: 0,
            exit_code: None,
            reason: None,
            cgroup: format!("rcompose/p/{pod}-{replica}/{container}"),
            log: format!("/run/rcompose/p/{pod}-{replica}.{container}.log").into(),
            dir: format!("/run/rcompose/p/{pod}-{replica}.{container}").into(),
            init: false,
            ready: false,
            ip: None,
            revision: 1,
            node: None,
        }
    }

    /// `web` (2 replicas, one container), `db` (two containers), and a pod named `web-9`.
    fn state() -> ProjectState {
        ProjectState {
            project: "p".into(),
            manifest: "/x/rcompose.yaml".into(),
            manifest_files: Vec::new(),
            supervisor_pid: 1,
            supervisor_start: None,
            forkserver: None,
            cgroup_subtree: "rcompose/p".into(),
            netns: Vec::new(),
            containers: vec![
                record("db", 1, "server"),
                record("db", 1, "backup"),
                record("web", 1, "app"),
                record("web", 2, "app"),
                record("web-9", 1, "c"),
            ],
            network: None,
        }
    }

    fn found(target: &str, container: Option<&str>) -> (String, u32, String) {
        let s = state();
        let r = find(&s, target, container).unwrap();
        (r.pod.clone(), r.replica, r.container.clone())
    }

    fn error(target: &str, container: Option<&str>) -> String {
        find(&state(), target, container).unwrap_err().to_string()
    }

    #[test]
    fn a_pod_alone_means_its_first_replica() {
        assert_eq!(found("web", None), ("web".into(), 1, "app".into()));
        assert_eq!(found("web-2", None), ("web".into(), 2, "app".into()));
        assert_eq!(found("web-1", Some("app")), ("web".into(), 1, "app".into()));
    }

    #[test]
    fn a_pod_named_like_a_replica_is_found_by_its_name() {
        assert_eq!(found("web-9", None), ("web-9".into(), 1, "c".into()));
        assert_eq!(found("web-9-1", None), ("web-9".into(), 1, "c".into()));
    }

    #[test]
    fn init_containers_are_not_the_default() {
        let mut s = state();
        let mut init = record("api", 1, "migrate");
        init.init = true;
        init.state = ContainerState::Exited;
        s.containers = vec![init, record("api", 1, "server")];
        assert_eq!(find(&s, "api", None).unwrap().container, "server");
        assert_eq!(
            find(&s, "api", Some("migrate")).unwrap().container,
            "migrate"
        );
    }

    #[test]
    fn several_containers_need_c() {
        assert_eq!(
            error("db", None),
            "pod `db` has several containers; name one with `-c`: `server`, `backup`"
        );
        assert_eq!(
            found("db", Some("backup")),
            ("db".into(), 1, "backup".into())
        );
    }

    #[test]
    fn unknown_names_are_errors_listing_what_exists() {
        assert_eq!(
            error("cache", None),
            "project `p` has no pod `cache` (its pods: `db`, `web`, `web-9`)"
        );
        assert_eq!(
            error("web-3", None),
            "pod `web` has no replica 3 (its replicas: `web-1`, `web-2`)"
        );
        assert_eq!(
            error("web-0", None),
            "pod `web` has no replica 0 (its replicas: `web-1`, `web-2`)"
        );
        assert_eq!(
            error("db", Some("cache")),
            "pod `db` has no container `cache` (its containers: `server`, `backup`)"
        );
        assert_eq!(
            error("web", Some("db")),
            "pod `web` has no container `db` (its containers: `app`)"
        );
        assert_eq!(
            error("web-x", None),
            "project `p` has no pod `web-x` (its pods: `db`, `web`, `web-9`)"
        );
    }

    /// A run root with `state` saved for project `p`, and a fake /proc.
    fn fixture(name: &str, state: &ProjectState, proc_start: Option<u64>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rcompose-exec-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let paths = ProjectPaths::new(&dir.join("run"), "p");
        fs::create_dir_all(&paths.dir).unwrap();
        state.save(&paths.state_file()).unwrap();
        fs::create_dir_all(dir.join("proc/self")).unwrap();
        fs::write(dir.join("proc/self/mountinfo"), "").unwrap();
        if let Some(start) = proc_start {
            fs::create_dir_all(dir.join("proc/10")).unwrap();
            let fields: Vec<String> = (3..=21).map(|i| i.to_string()).collect();
            fs::write(
                dir.join("proc/10/stat"),
                format!("10 (rcompose-init) {} {start}", fields.join(" ")),
            )
            .unwrap();
        }
        dir
    }

    fn prepare_in(dir: &Path, target: &str) -> Result<ExecSpec, TargetError> {
        prepare(
            &dir.join("run"),
            &dir.join("proc"),
            "p",
            target,
            None,
            ExecRequest {
                command: vec!["true".into()],
                ..ExecRequest::default()
            },
        )
    }

    #[test]
    fn a_project_without_state_is_not_up() {
        let dir = std::env::temp_dir().join(format!("rcompose-exec-none-{}", std::process::id()));
        assert_eq!(
            prepare_in(&dir, "web").unwrap_err().to_string(),
            "project `p` is not up"
        );
    }

    #[test]
    fn only_a_running_container_with_its_own_init_is_entered() {
        let mut s = state();
        s.containers[2].state = ContainerState::Exited;
        let dir = fixture("states", &s, Some(99));
        assert_eq!(
            prepare_in(&dir, "web").unwrap_err().to_string(),
            "container `web-1` is not running (state: exited)"
        );
        // running, but the pid names a process that started at another time
        fs::remove_dir_all(&dir).unwrap();
        let dir = fixture("reused", &state(), Some(98));
        assert_eq!(
            prepare_in(&dir, "web-2").unwrap_err().to_string(),
            "container `web-2` is not running: its init has exited"
        );
        fs::remove_dir_all(&dir).unwrap();
        // the right process, but no config: the error names the file
        let dir = fixture("noconfig", &state(), Some(99));
        let err = prepare_in(&dir, "web-2").unwrap_err();
        assert!(matches!(err, TargetError::ReadConfig { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "failed to read the config of container `web-2` (`/run/rcompose/p/web-2.app/container.json`)"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
