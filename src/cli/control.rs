//! `stop`, `start`, `restart`, `scale`, `nodes` and `node`: requests to the project's running supervisor,
//! over its control socket (see [`crate::supervisor::control`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::Context;
use super::output::CliProgress;
use crate::error::Error;
use crate::supervisor::control::{self, Change, ControlError, Request};
use crate::supervisor::state::{ProjectPaths, ProjectState, is_same_process};

/// How long a client waits for the supervisor's answer: a `start` waits for `healthy`
/// dependencies, a `stop` for grace periods.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Sends `request` to the supervisor of the project and prints what it did to each pod.
pub(super) fn send(ctx: &Context, request: &Request) -> Result<ExitCode, Error> {
    let (project, response) = ask(ctx, request, ANSWER_TIMEOUT)?;
    let progress = CliProgress::new(&project);
    for (pod, change) in &response.pods {
        let line = match (change, request) {
            (Change::Unchanged, Request::Start { .. }) => "already running".to_string(),
            (Change::Scaled, Request::Scale { replicas }) => match replicas.get(pod) {
                Some(n) => format!("scaled to {n}"),
                None => "scaled".to_string(),
            },
            (Change::Unchanged, _) => continue,
            (Change::RolledOut, _) if response.error.is_some() => {
                "rollout failed (rolled back)".to_string()
            }
            (c, _) => c.as_str().to_string(),
        };
        progress.println(&format!("pod `{pod}`: {line}"));
    }
    progress.finish();
    match response.error {
        Some(e) => Err(Error::Command(e)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Sends `request` to the supervisor of the project (waiting up to `timeout` for its
/// answer): the project and the answer, whatever its `error`.
pub(super) fn ask(
    ctx: &Context,
    request: &Request,
    timeout: Duration,
) -> Result<(String, control::Response), Error> {
    let project = ctx.project()?;
    let paths = ProjectPaths::new(&Context::run_root(), &project);
    let not_up = |hint| Error::NotUp {
        project: project.clone(),
        hint,
    };
    let Some(state) = ProjectState::load(&paths.state_file())
        .ok()
        .flatten()
        .filter(|_| paths.dir.exists())
    else {
        return Err(not_up(""));
    };
    let dead = "; its supervisor is gone: `rcompose down` removes what is left";
    if !is_same_process(
        Path::new("/proc"),
        state.supervisor_pid,
        state.supervisor_start,
    ) {
        return Err(not_up(dead));
    }
    match control::send(&paths.control_socket(), &project, request, timeout) {
        Ok(r) => Ok((project, r)),
        Err(ControlError::NotListening { .. }) => Err(not_up(dead)),
        Err(e) => Err(Error::Command(crate::supervisor::chain(&e))),
    }
}

/// [`ask`], with the supervisor's `error` as an `Err`: the answer of a request that
/// succeeded.
pub(super) fn ask_ok(
    ctx: &Context,
    request: &Request,
    timeout: Duration,
) -> Result<control::Response, Error> {
    let (_, response) = ask(ctx, request, timeout)?;
    match response.error {
        Some(e) => Err(Error::Command(e)),
        None => Ok(response),
    }
}

/// Each service of the project's running supervisor: its address, ports, endpoints and
/// counters; `None` when the project is not up.
pub(super) fn fetch_services(
    project: &str,
) -> Result<Option<BTreeMap<String, control::ServiceStatus>>, Error> {
    let paths = ProjectPaths::new(&Context::run_root(), project);
    match control::send(
        &paths.control_socket(),
        project,
        &Request::Services,
        Duration::from_secs(10),
    ) {
        Ok(r) => Ok(Some(r.services)),
        Err(ControlError::NotListening { .. }) => Ok(None),
        Err(e) => Err(Error::Command(crate::supervisor::chain(&e))),
    }
}

/// `ps --services`: each service's address, ports, endpoints and counters, from the
/// running supervisor (a table, or a JSON object by service).
pub(super) fn services(ctx: &Context, json: bool) -> Result<ExitCode, Error> {
    let project = ctx.project()?;
    let Some(services) = fetch_services(&project)? else {
        return Err(Error::NotUp { project, hint: "" });
    };
    let text = if json {
        serde_json::to_string_pretty(&services).unwrap_or_else(|_| "{}".into())
    } else {
        let mut table = vec![super::output::cells(&[
            "SERVICE",
            "ADDRESS",
            "PORTS",
            "BALANCE",
            "ENDPOINTS",
            "ACTIVE",
            "TOTAL",
            "IN",
            "OUT",
            "ERRORS",
        ])];
        for (name, s) in &services {
            let endpoints: Vec<String> =
                s.stats.endpoints.iter().map(ToString::to_string).collect();
            table.push(vec![
                name.clone(),
                s.address.map_or("-".into(), |a| a.to_string()),
                if s.ports.is_empty() {
                    "-".into()
                } else {
                    s.ports.join(",")
                },
                s.balance.clone(),
                if endpoints.is_empty() {
                    "-".into()
                } else {
                    endpoints.join(",")
                },
                s.stats.active.to_string(),
                s.stats.total.to_string(),
                s.stats.bytes_in.to_string(),
                s.stats.bytes_out.to_string(),
                s.stats.errors.to_string(),
            ]);
        }
        super::output::align(&table)
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `nodes`: every node of the running project with its status, what the replicas on it
/// request of its capacity, and the replicas (a table, or a JSON array).
pub(super) fn nodes(ctx: &Context, json: bool) -> Result<ExitCode, Error> {
    let response = ask_ok(ctx, &Request::Nodes, Duration::from_secs(10))?;
    let text = if json {
        serde_json::to_string_pretty(&response.nodes).unwrap_or_else(|_| "[]".into())
    } else {
        use crate::manifest::MilliCpu;
        use crate::plan::schedule::bytes_text;
        let mut table = vec![super::output::cells(&[
            "NAME", "STATUS", "CPU", "MEMORY", "PODS", "REPLICAS",
        ])];
        for n in &response.nodes {
            table.push(vec![
                n.name.clone(),
                n.status.clone(),
                format!("{}/{}", MilliCpu(n.cpu_allocated), MilliCpu(n.cpu_capacity)),
                format!(
                    "{}/{}",
                    bytes_text(n.memory_allocated),
                    bytes_text(n.memory_capacity)
                ),
                n.pods.len().to_string(),
                if n.pods.is_empty() {
                    "-".to_string()
                } else {
                    n.pods.join(",")
                },
            ]);
        }
        super::output::align(&table)
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The grace period of `-t SECONDS`, in milliseconds.
pub(super) fn grace_ms(timeout: Option<u64>) -> Option<u64> {
    timeout.map(|t| t.saturating_mul(1000))
}

/// Parses `POD=N` arguments of `scale`.
pub(super) fn parse_scale(args: &[String]) -> Result<BTreeMap<String, u32>, Error> {
    let mut out = BTreeMap::new();
    for a in args {
        let Some((pod, n)) = a.split_once('=') else {
            return Err(Error::Usage(format!(
                "`{a}`: expected POD=REPLICAS, for example `api=3`"
            )));
        };
        let n: u32 = n.parse().map_err(|_| {
            Error::Usage(format!(
                "`{a}`: the replica count `{n}` is not a whole number from 0"
            ))
        })?;
        if pod.is_empty() {
            return Err(Error::Usage(format!("`{a}`: the pod name is missing")));
        }
        if out.insert(pod.to_string(), n).is_some() {
            return Err(Error::Usage(format!("pod `{pod}` is named twice")));
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(
            "name the pods to scale: `rcompose scale api=3`".to_string(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_arguments_parse_or_say_what_is_wrong() {
        let ok = parse_scale(&["api=3".into(), "web=0".into()]).unwrap();
        assert_eq!(ok["api"], 3);
        assert_eq!(ok["web"], 0);
        for (arg, says) in [
            ("api", "expected POD=REPLICAS"),
            ("api=x", "not a whole number"),
            ("api=-1", "not a whole number"),
            ("=2", "pod name is missing"),
        ] {
            let e = parse_scale(&[arg.to_string()]).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{arg}: {e:?}");
            assert!(e.to_string().contains(says), "{arg}: {e}");
        }
        let twice = parse_scale(&["a=1".into(), "a=2".into()]).unwrap_err();
        assert!(twice.to_string().contains("named twice"));
        assert!(parse_scale(&[]).is_err());
    }
}
