//! `rollout status|history|undo POD`: a pod's rolling updates, from the project's running
//! supervisor (see [`crate::supervisor::rollout`]).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::control::ask;
use super::output::{align, cells};
use super::{Context, Format};
use crate::error::Error;
use crate::supervisor::control::Request;
use crate::supervisor::events::utc;
use crate::supervisor::rollout::RolloutStatus;

/// How long `rollout status` waits for a rollout to end, at most.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3600);

fn status_of(ctx: &Context, pod: &str) -> Result<RolloutStatus, Error> {
    let (_, r) = ask(
        ctx,
        &Request::RolloutStatus {
            pod: pod.to_string(),
        },
        Duration::from_secs(10),
    )?;
    match (r.rollout, r.error) {
        (_, Some(e)) => Err(Error::Command(e)),
        (Some(s), None) => Ok(s),
        (None, None) => Err(Error::Command(
            "the supervisor did not say how the rollout stands".to_string(),
        )),
    }
}

fn line(s: &RolloutStatus) -> String {
    if s.progressing {
        format!(
            "pod `{}`: rolling out revision {}: {} of {} new replicas ready, {} old left",
            s.pod, s.revision, s.updated_ready, s.replicas, s.old
        )
    } else if let Some(why) = &s.failed {
        format!("pod `{}`: {why}", s.pod)
    } else {
        format!(
            "pod `{}`: revision {} rolled out ({} of {} replicas ready)",
            s.pod, s.revision, s.updated_ready, s.replicas
        )
    }
}

/// `rollout status POD`: waits until the rollout in progress is over (unless `no_wait`),
/// printing its progress; fails when the last rollout failed (and was rolled back).
pub(super) fn status(
    ctx: &Context,
    pod: &str,
    no_wait: bool,
    format: Format,
) -> Result<ExitCode, Error> {
    let until = Instant::now() + STATUS_TIMEOUT;
    let mut last = String::new();
    let s = loop {
        let s = status_of(ctx, pod)?;
        if no_wait || !s.progressing || Instant::now() >= until {
            break s;
        }
        let text = line(&s);
        if format == Format::Table && text != last {
            eprintln!("{text}");
            last = text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
    } else {
        println!("{}", line(&s));
    }
    if s.failed.is_some() && !s.progressing {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `rollout history POD`.
pub(super) fn history(ctx: &Context, pod: &str, format: Format) -> Result<ExitCode, Error> {
    let (_, r) = ask(
        ctx,
        &Request::RolloutHistory {
            pod: pod.to_string(),
        },
        Duration::from_secs(10),
    )?;
    if let Some(e) = r.error {
        return Err(Error::Command(e));
    }
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r.history).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![cells(&["REVISION", "CREATED", "CAUSE", "STATUS"])];
    for h in &r.history {
        table.push(vec![
            if h.current {
                format!("{} (current)", h.revision)
            } else {
                h.revision.to_string()
            },
            utc(h.created_ms),
            h.cause.clone(),
            h.status.clone(),
        ]);
    }
    println!("{}", align(&table));
    Ok(ExitCode::SUCCESS)
}
