//! The running supervisor's control socket: `up` on a project that is already up sends the
//! new desired state there instead of starting a second supervisor (which the project lock
//! would refuse), and the supervisor reconciles (see `super::reconcile`).
//!
//! One request per connection: a JSON line from the client, a JSON line back once the
//! supervisor is done. The socket is in the project directory (root only, mode 0600) and
//! goes with it at teardown.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::desired::DesiredState;

/// Longest request accepted (a desired state of a few thousand pods).
const MAX_REQUEST: u64 = 64 << 20;

/// What a client asks of the running supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Make the project look like `desired`: pods whose plan (or config and secret
    /// content) changed are recreated, new ones started, removed ones stopped; the others
    /// are left alone.
    Apply {
        /// The new desired state (images already prepared by the client; boxed: it is the
        /// largest request).
        desired: Box<DesiredState>,
        /// Values of the environment variables that configs and secrets of `desired` come
        /// from, as the client's environment has them (absent: unset).
        env: BTreeMap<String, String>,
        /// `up POD...`: `desired` holds only those pods and their dependencies; the others
        /// are left as they are (not removed).
        #[serde(default)]
        partial: bool,
    },
    /// Stop and remove everything (`down`): containers get their stop signal, then SIGKILL
    /// after their grace period, or after `grace_ms` when set (`down -t`, which overrides
    /// their own, as Compose's).
    Down {
        /// The grace period, in milliseconds.
        grace_ms: Option<u64>,
    },
    /// `stop [POD...]`: stop the containers of `pods` (every pod when empty), dependents
    /// first, and keep them, stopped, until `start`: no restart policy brings them back.
    Stop {
        /// The pods.
        pods: Vec<String>,
        /// The grace period, in milliseconds, instead of each container's own.
        grace_ms: Option<u64>,
    },
    /// `start [POD...]`: start again the stopped or exited replicas of `pods` (every pod
    /// when empty) and of the dependencies they need that do not run, in dependency order.
    Start {
        /// The pods.
        pods: Vec<String>,
    },
    /// `restart [POD...]`: stop the containers of `pods` (every pod when empty), then start
    /// them again, in dependency order.
    Restart {
        /// The pods.
        pods: Vec<String>,
        /// The grace period, in milliseconds, instead of each container's own.
        grace_ms: Option<u64>,
    },
    /// `ps --services`: each service's address, ports and balancer counters.
    Services,
    /// `scale POD=N...`: run that many replicas of each pod; replicas are added or the
    /// highest-numbered ones removed, the others keep running.
    Scale {
        /// Replicas per pod.
        replicas: BTreeMap<String, u32>,
    },
    /// `rollout status POD`: the revision it runs and the rollout in progress.
    RolloutStatus {
        /// The pod.
        pod: String,
    },
    /// `rollout history POD`: its revisions.
    RolloutHistory {
        /// The pod.
        pod: String,
    },
    /// `nodes`: each node, its status and what is placed on it.
    Nodes,
    /// `fault ls`: the active network faults.
    Faults,
    /// `fault add [NAME]`: adds a network fault (replacing one of that name); without a
    /// name it gets `fault-N`.
    FaultAdd {
        /// Its name.
        name: Option<String>,
        /// The fault (boxed: it is the largest request).
        fault: Box<crate::manifest::Fault>,
    },
    /// `fault rm NAME...`, and `fault clear` (no names): removes faults.
    FaultRemove {
        /// The faults; empty: all.
        names: Vec<String>,
    },
    /// `node down|up|drain NAME`.
    Node {
        /// The node.
        name: String,
        /// What happens to it.
        action: NodeAction,
    },
    /// `rollout undo POD [--to-revision N]`: roll the pod out to an earlier revision's
    /// spec (default: the one before the current).
    RolloutUndo {
        /// The pod.
        pod: String,
        /// The revision.
        to: Option<u32>,
    },
}

/// What `node` does to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeAction {
    /// As if the machine died: every replica on it is killed at once (SIGKILL) and started
    /// again on the other nodes; it takes nothing until `up`.
    Down,
    /// Ready again: it takes new replicas (those that moved away stay where they are).
    Up,
    /// Cordoned (it takes nothing new), and its replicas stopped gracefully (drained from
    /// their services first) and started again on the other nodes.
    Drain,
}

/// A node as `rcompose nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node name.
    pub name: String,
    /// `Ready`, `NotReady` or `SchedulingDisabled`.
    pub status: String,
    /// CPU requested by the replicas on it, in thousandths.
    pub cpu_allocated: u64,
    /// CPU it offers, in thousandths.
    pub cpu_capacity: u64,
    /// Memory requested by the replicas on it, in bytes.
    pub memory_allocated: u64,
    /// Memory it offers, in bytes.
    pub memory_capacity: u64,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The replicas on it (`api-1`), in order.
    pub pods: Vec<String>,
}

/// What happened to a pod in an [`Request::Apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Left alone: nothing it uses changed.
    Unchanged,
    /// New: created and started.
    Created,
    /// Stopped and started again with its new plan or content.
    Recreated,
    /// No longer in the manifest: stopped and removed.
    Removed,
    /// Replicas added or removed; the others left alone.
    Scaled,
    /// Stopped (`stop`).
    Stopped,
    /// Started again (`start`).
    Started,
    /// Stopped and started again (`restart`).
    Restarted,
    /// Its new spec rolled out: new replicas replaced the old ones as they became ready.
    RolledOut,
    /// Replicas moved to other nodes (`node down`, `node drain`).
    Rescheduled,
}

impl Change {
    /// How `up` shows it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Unchanged => "unchanged",
            Change::Created => "created",
            Change::Recreated => "recreated",
            Change::Removed => "removed",
            Change::Scaled => "scaled",
            Change::Stopped => "stopped",
            Change::Started => "started",
            Change::Restarted => "restarted",
            Change::RolledOut => "rolled out",
            Change::Rescheduled => "rescheduled",
        }
    }
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Every pod of the old and new states, by name, with what was done to it.
    pub pods: BTreeMap<String, Change>,
    /// Why the apply failed or a changed pod did not start, if so.
    pub error: Option<String>,
    /// `Services`: each service, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceStatus>,
    /// `RolloutStatus`: the pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::RolloutStatus>,
    /// `RolloutHistory`: the pod's revisions, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<super::rollout::RevisionInfo>,
    /// `Nodes`: every node, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeInfo>,
    /// `Faults`: every active fault, in name order (`FaultAdd`: the one added).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultInfo>,
    /// `FaultRemove`: the faults removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// A network fault as `rcompose fault ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultInfo {
    /// Its name.
    pub name: String,
    /// What it selects and does.
    #[serde(flatten)]
    pub fault: crate::manifest::Fault,
    /// `manifest` or `command` (`fault add`).
    pub source: String,
    /// The replicas whose rules it is in now (`api-1`).
    pub replicas: Vec<String>,
}

/// A service as `ps --services` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its virtual address on the project network.
    pub address: Option<std::net::Ipv4Addr>,
    /// `80->8000` (port -> target), `127.0.0.1:8080->80->8000` when published.
    pub ports: Vec<String>,
    /// `round_robin` or `least_conn`.
    pub balance: String,
    /// The balancer's counters and the endpoints.
    #[serde(flatten)]
    pub stats: crate::balancer::ServiceStats,
}

impl Response {
    /// Done, with nothing to report per pod (`Down`).
    #[must_use]
    pub fn done() -> Self {
        Response {
            pods: BTreeMap::new(),
            error: None,
            services: BTreeMap::new(),
            rollout: None,
            history: Vec::new(),
            nodes: Vec::new(),
            faults: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// Refused or failed before any pod was touched.
    #[must_use]
    pub fn refused(why: impl Into<String>) -> Self {
        Response {
            pods: BTreeMap::new(),
            error: Some(why.into()),
            services: BTreeMap::new(),
            rollout: None,
            history: Vec::new(),
            nodes: Vec::new(),
            faults: Vec::new(),
            removed: Vec::new(),
        }
    }
}

/// Errors of talking to a supervisor.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No supervisor listens (it exited, or predates the control socket).
    #[error("no supervisor listens on `{path}`")]
    NotListening {
        /// The socket.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The exchange failed.
    #[error("failed to talk to the supervisor of project `{project}`")]
    Io {
        /// The project.
        project: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Sends `request` to the supervisor listening on `socket` and waits for its answer, at
/// most `timeout` (a supervisor that hangs must not hang its client).
pub fn send(
    socket: &Path,
    project: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::NotListening {
        path: socket.display().to_string(),
        source,
    })?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let io = |source| ControlError::Io {
        project: project.to_string(),
        source,
    };
    let mut line = serde_json::to_vec(request).map_err(|e| io(io::Error::other(e)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    if answer.is_empty() {
        return Err(io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the supervisor closed the connection without an answer (it is stopping)",
        )));
    }
    serde_json::from_str(&answer).map_err(|e| io(io::Error::other(e)))
}

/// Listens on `socket` (made here, mode 0600) on a thread of its own and hands each request
/// to `deliver` with a channel for the answer, which is written back to the client.
pub fn listen(
    socket: &Path,
    deliver: impl Fn(Request, Sender<Response>) -> bool + Send + 'static,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    thread::Builder::new()
        .name("control".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if !serve(stream, &deliver) {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Serves one connection; false once the supervisor no longer takes requests.
fn serve(stream: UnixStream, deliver: &impl Fn(Request, Sender<Response>) -> bool) -> bool {
    // a client that connects and sends nothing must not block the next one for ever
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(write) = stream.try_clone() else {
        return true;
    };
    let mut line = String::new();
    if io::Read::take(BufReader::new(stream), MAX_REQUEST)
        .read_line(&mut line)
        .is_err()
    {
        return true;
    }
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (tx, rx) = mpsc::channel();
            if !deliver(request, tx) {
                return false;
            }
            // the supervisor answers once the changed pods run (or failed to)
            match rx.recv() {
                Ok(a) => a,
                Err(_) => return false,
            }
        }
        Err(e) => Response::refused(format!("invalid request: {e}")),
    };
    let mut out = write;
    if let Ok(mut text) = serde_json::to_vec(&answer) {
        text.push(b'\n');
        let _ = out.write_all(&text);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> DesiredState {
        DesiredState {
            project: "p".into(),
            pods: BTreeMap::new(),
            services: BTreeMap::new(),
            waves: Vec::new(),
            volumes: Vec::new(),
            subnet: None,
            nodes: BTreeMap::new(),
            capacity: crate::plan::desired::CapacityPlan::default(),
            faults: BTreeMap::new(),
        }
    }

    #[test]
    fn a_request_reaches_the_supervisor_and_its_answer_the_client() {
        let dir = std::env::temp_dir().join(format!("rcompose-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("control.sock");
        listen(&socket, |request, reply| {
            let Request::Apply { desired, env, .. } = request else {
                return false;
            };
            let mut pods = BTreeMap::new();
            pods.insert(desired.project, Change::Recreated);
            let error = env.get("TOKEN").cloned();
            reply
                .send(Response {
                    pods,
                    error,
                    ..Response::done()
                })
                .is_ok()
        })
        .unwrap();
        let request = Request::Apply {
            desired: Box::new(desired()),
            env: BTreeMap::from([("TOKEN".to_string(), "x".to_string())]),
            partial: false,
        };
        let answer = send(&socket, "p", &request, Duration::from_secs(10)).unwrap();
        assert_eq!(answer.pods["p"], Change::Recreated);
        assert_eq!(answer.error.as_deref(), Some("x"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&socket).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
        // nobody listens any more
        assert!(matches!(
            send(&socket, "p", &request, Duration::from_secs(10)),
            Err(ControlError::NotListening { .. })
        ));
    }
}
