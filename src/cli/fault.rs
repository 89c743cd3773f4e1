//! `rcompose fault add|ls|rm|clear`: network faults in the running project (the
//! supervisor applies them; see `supervisor::faults`).

use std::process::ExitCode;
use std::time::Duration;

use super::Context;
use super::control::ask_ok;
use crate::error::Error;
use crate::manifest::{Fault, FaultSpec};
use crate::supervisor::control::{FaultInfo, Request};

/// `fault add [NAME] --target ... [effects]`: checked here first (every problem at once,
/// by its flag), then by the supervisor (what it names must exist).
pub(super) fn add(ctx: &Context, name: Option<String>, spec: FaultSpec) -> Result<ExitCode, Error> {
    if let Some(n) = &name {
        crate::manifest::fault::check_name(n).map_err(Error::Usage)?;
    }
    let fault = Fault::parse(&spec).map_err(|problems| {
        Error::Usage(
            problems
                .into_iter()
                .map(|(key, why)| {
                    let why = why.replace("`partition: true`", "`--partition`");
                    format!("--{key}: {why}")
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let response = ask_ok(
        ctx,
        &Request::FaultAdd {
            name,
            fault: Box::new(fault),
        },
        Duration::from_secs(30),
    )?;
    for f in &response.faults {
        println!(
            "fault `{}` added: {}{}",
            f.name,
            f.fault.summary(),
            reach(f)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `(reaches api-1, api-2)`, or that it reaches no running replica yet.
fn reach(f: &FaultInfo) -> String {
    if f.replicas.is_empty() {
        " (no running replica yet)".into()
    } else {
        format!(" (reaches {})", f.replicas.join(", "))
    }
}

/// `fault ls`: a table, or a JSON array.
pub(super) fn list(ctx: &Context, json: bool) -> Result<ExitCode, Error> {
    let response = ask_ok(ctx, &Request::Faults, Duration::from_secs(10))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&response.faults).unwrap_or_else(|_| "[]".into())
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![super::output::cells(&[
        "NAME", "TARGET", "PEER", "EFFECTS", "SOURCE", "REPLICAS",
    ])];
    for f in &response.faults {
        table.push(vec![
            f.name.clone(),
            f.fault.target.to_string(),
            f.fault
                .peer
                .as_ref()
                .map_or_else(|| "-".to_string(), ToString::to_string),
            f.fault.effects(),
            f.source.clone(),
            if f.replicas.is_empty() {
                "-".into()
            } else {
                f.replicas.join(",")
            },
        ]);
    }
    print!("{}", super::output::align(&table));
    Ok(ExitCode::SUCCESS)
}

/// `fault rm NAME...`, or `fault clear` (no names).
pub(super) fn remove(ctx: &Context, names: Vec<String>) -> Result<ExitCode, Error> {
    let response = ask_ok(
        ctx,
        &Request::FaultRemove { names },
        Duration::from_secs(30),
    )?;
    if response.removed.is_empty() {
        println!("no fault to remove");
    }
    for name in &response.removed {
        println!("fault `{name}` removed");
    }
    Ok(ExitCode::SUCCESS)
}
