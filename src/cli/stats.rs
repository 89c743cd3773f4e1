//! `stats` and `top`: what the containers of a running project use, and their processes.
//!
//! The numbers come from `runtime::stats` (cgroup files and /proc); this file samples,
//! computes CPU % over the interval, and formats tables and JSON.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use serde::Serialize;

use super::output::{align, cells, stdout_is_tty};
use super::{Context, Format, records};
use crate::error::Error;
use crate::runtime::cgroup;
use crate::runtime::stats::{self, CgroupReader, Usage};
use crate::supervisor::control::ServiceStatus;
use crate::supervisor::state::ContainerRecord;

/// The shortest and longest sampling interval `--interval` accepts.
const INTERVAL_RANGE: (f64, f64) = (0.1, 3600.0);

/// `--interval`: seconds (a decimal number) between samples.
pub(super) fn parse_interval(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    let (lo, hi) = INTERVAL_RANGE;
    if !(lo..=hi).contains(&secs) {
        return Err(format!(
            "the interval must be between {lo} and {hi} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The cgroup reader for this host: its layout and where the controllers are mounted.
fn reader() -> CgroupReader {
    let version = cgroup::detect_version();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    CgroupReader::new(version, cgroup::mount_points(version, &mountinfo))
}

/// One reading of every container of the project, and when it was taken.
struct Sample {
    at: Instant,
    containers: Vec<ContainerRecord>,
    usage: Vec<Option<Usage>>,
}

/// Reads the project's records and the usage of its live containers; `None` when the
/// project is not up.
fn sample(project: &str, reader: &CgroupReader) -> Result<Option<Sample>, Error> {
    let Some((state, _)) = records(project)? else {
        return Ok(None);
    };
    let at = Instant::now();
    let mut usage = Vec::with_capacity(state.containers.len());
    for c in &state.containers {
        usage.push(if c.state.is_live() {
            reader.usage(&c.cgroup)?
        } else {
            None
        });
    }
    Ok(Some(Sample {
        at,
        containers: state.containers,
        usage,
    }))
}

/// One row of `stats`. The JSON field names are part of the interface (docs/cli.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct StatsRow {
    pod: String,
    replica: u32,
    container: String,
    state: &'static str,
    pid: Option<i32>,
    cpu_percent: Option<f64>,
    memory_usage_bytes: Option<u64>,
    memory_limit_bytes: Option<u64>,
    memory_percent: Option<f64>,
    pids: Option<u64>,
    pids_limit: Option<u64>,
}

/// Rounds to two decimals (JSON and tables show no more).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The rows of `after`, with CPU % over the time since `before` (the same container's
/// earlier reading, matched by pod, replica and container).
fn rows(before: &Sample, after: &Sample) -> Vec<StatsRow> {
    let wall = after.at.saturating_duration_since(before.at);
    after
        .containers
        .iter()
        .zip(&after.usage)
        .map(|(c, usage)| {
            let earlier = before
                .containers
                .iter()
                .zip(&before.usage)
                .find(|(b, _)| {
                    b.pod == c.pod && b.replica == c.replica && b.container == c.container
                })
                .and_then(|(_, u)| *u);
            row(c, *usage, earlier, wall)
        })
        .collect()
}

fn row(
    c: &ContainerRecord,
    usage: Option<Usage>,
    earlier: Option<Usage>,
    wall: Duration,
) -> StatsRow {
    let cpu = match (earlier, usage) {
        (Some(b), Some(a)) => stats::cpu_percent(b.cpu_ns, a.cpu_ns, wall).map(round2),
        _ => None,
    };
    let memory = usage.map(|u| u.memory.usage());
    let limit = usage.and_then(|u| u.memory.limit);
    #[allow(clippy::cast_precision_loss)] // bytes as f64: a percentage
    let memory_percent = match (memory, limit) {
        (Some(m), Some(l)) if l > 0 => Some(round2(m as f64 / l as f64 * 100.0)),
        _ => None,
    };
    StatsRow {
        pod: c.pod.clone(),
        replica: c.replica,
        container: c.container.clone(),
        state: c.state.as_str(),
        pid: c.pid,
        cpu_percent: cpu,
        memory_usage_bytes: memory,
        memory_limit_bytes: limit,
        memory_percent,
        pids: usage.map(|u| u.pids),
        pids_limit: usage.and_then(|u| u.pids_limit),
    }
}

/// Bytes as `docker stats` shows them: binary units, four significant digits.
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    #[allow(clippy::cast_precision_loss)] // display only
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let text = if unit == 0 {
        format!("{n}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

/// `stats` as a table.
pub(super) fn stats_table(rows: &[StatsRow]) -> String {
    let mut table = vec![cells(&[
        "POD",
        "REPLICA",
        "CONTAINER",
        "STATE",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "PIDS",
    ])];
    let dash = || "-".to_string();
    for r in rows {
        let memory = match (r.memory_usage_bytes, r.memory_limit_bytes) {
            (Some(m), Some(l)) => format!("{} / {}", human_bytes(m), human_bytes(l)),
            (Some(m), None) => format!("{} / -", human_bytes(m)),
            _ => dash(),
        };
        let pids = match (r.pids, r.pids_limit) {
            (Some(p), Some(l)) => format!("{p} / {l}"),
            (Some(p), None) => p.to_string(),
            _ => dash(),
        };
        table.push(vec![
            r.pod.clone(),
            r.replica.to_string(),
            r.container.clone(),
            r.state.to_string(),
            r.cpu_percent.map_or_else(dash, |c| format!("{c:.2}%")),
            memory,
            r.memory_percent.map_or_else(dash, |m| format!("{m:.2}%")),
            pids,
        ]);
    }
    align(&table)
}

/// `stats --format json`: one array per sample, pretty for a single sample, on one line
/// each when streaming (JSON Lines).
fn json_rows<T: Serialize>(rows: &[T], one_line: bool) -> String {
    let text = if one_line {
        serde_json::to_string(rows)
    } else {
        serde_json::to_string_pretty(rows)
    };
    text.unwrap_or_else(|_| "[]".into())
}

/// The termination signals `stats` stops on when it streams.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Blocks the stop signals in this (the only) thread and waits for them on a thread of its
/// own, as the supervisor does: the main loop sees them as a message, between samples.
fn signal_channel() -> Result<mpsc::Receiver<Signal>, Error> {
    let io_err = |what: &str| {
        let what = what.to_string();
        move |source: io::Error| Error::Io { what, source }
    };
    let set = stop_signals();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(io::Error::from)
        .map_err(io_err("block signals"))?;
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        })
        .map_err(io_err("start the signal thread"))?;
    Ok(rx)
}

/// `rcompose stats`.
pub(super) fn stats(
    ctx: &Context,
    format: Format,
    no_stream: bool,
    interval: Duration,
) -> Result<ExitCode, Error> {
    let project = ctx.project()?;
    let reader = reader();
    sample_loop(
        format,
        no_stream,
        interval,
        || sample(&project, &reader),
        |before, after, streaming| render(&rows(before, after), format, streaming),
        || render(&[], format, !no_stream),
    )
}

/// `rcompose stats --services`: the balancer's counters of each service, as rates over
/// the interval.
pub(super) fn services(
    ctx: &Context,
    format: Format,
    no_stream: bool,
    interval: Duration,
) -> Result<ExitCode, Error> {
    let project = ctx.project()?;
    let render = move |rows: &[ServiceRow], streaming: bool| match format {
        Format::Table => services_table(rows),
        Format::Json => json_rows(rows, streaming),
    };
    sample_loop(
        format,
        no_stream,
        interval,
        || {
            let at = Instant::now();
            Ok(super::control::fetch_services(&project)?.map(|s| (at, s)))
        },
        |before, after, streaming| render(&service_rows(before, after), streaming),
        || render(&[], !no_stream),
    )
}

/// Samples every `interval` and prints what `show` makes of two samples (once with
/// `no_stream`, else until a stop signal, a closed stdout or the project's removal);
/// `empty` is the output when the project is not up (an empty list, as for `ps`).
fn sample_loop<S>(
    format: Format,
    no_stream: bool,
    interval: Duration,
    mut take: impl FnMut() -> Result<Option<S>, Error>,
    show: impl Fn(&S, &S, bool) -> String,
    empty: impl Fn() -> String,
) -> Result<ExitCode, Error> {
    let tty = stdout_is_tty();
    let signals = if no_stream {
        None
    } else {
        Some(signal_channel()?)
    };
    let Some(mut before) = take()? else {
        let _ = print(&empty(), false);
        return Ok(ExitCode::SUCCESS);
    };
    let mut shown = false;
    loop {
        match &signals {
            Some(rx) => match rx.recv_timeout(interval) {
                Ok(_) | Err(RecvTimeoutError::Disconnected) => return Ok(ExitCode::SUCCESS),
                Err(RecvTimeoutError::Timeout) => {}
            },
            None => thread::sleep(interval),
        }
        // `None`: the project was removed meanwhile; its last table is empty
        let after = take()?;
        let mut text = match &after {
            Some(a) => show(&before, a, !no_stream),
            None => empty(),
        };
        if shown && !tty && format == Format::Table {
            // plain repeated tables, one blank line apart
            text.insert(0, '\n');
        }
        if print(&text, tty && !no_stream && format == Format::Table).is_err() {
            // nobody reads any more (a closed pipe): stop
            return Ok(ExitCode::SUCCESS);
        }
        shown = true;
        match after {
            Some(after) if !no_stream => before = after,
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// A sample of the services: when, and what the supervisor said.
type ServicesSample = (Instant, BTreeMap<String, ServiceStatus>);

/// One row of `stats --services`. The JSON field names are part of the interface
/// (docs/cli.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ServiceRow {
    service: String,
    endpoints: usize,
    active: u64,
    connections_per_second: f64,
    bytes_in_per_second: f64,
    bytes_out_per_second: f64,
    total: u64,
    bytes_in: u64,
    bytes_out: u64,
    errors: u64,
    retries: u64,
}

/// The rows of `after`, with rates over the time since `before` (a service new since then
/// counts from zero).
fn service_rows(before: &ServicesSample, after: &ServicesSample) -> Vec<ServiceRow> {
    let secs = after.0.saturating_duration_since(before.0).as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // counts as f64: rates
    let rate = |a: u64, b: u64| {
        if secs > 0.0 {
            round2(a.saturating_sub(b) as f64 / secs)
        } else {
            0.0
        }
    };
    after
        .1
        .iter()
        .map(|(name, s)| {
            let b = before.1.get(name).map(|b| &b.stats);
            let was = |f: fn(&crate::balancer::ServiceStats) -> u64| b.map_or(0, f);
            let st = &s.stats;
            ServiceRow {
                service: name.clone(),
                endpoints: st.endpoints.len(),
                active: st.active,
                connections_per_second: rate(st.total, was(|s| s.total)),
                bytes_in_per_second: rate(st.bytes_in, was(|s| s.bytes_in)),
                bytes_out_per_second: rate(st.bytes_out, was(|s| s.bytes_out)),
                total: st.total,
                bytes_in: st.bytes_in,
                bytes_out: st.bytes_out,
                errors: st.errors,
                retries: st.retries,
            }
        })
        .collect()
}

/// `stats --services` as a table.
pub(super) fn services_table(rows: &[ServiceRow]) -> String {
    let mut table = vec![cells(&[
        "SERVICE",
        "ENDPOINTS",
        "ACTIVE",
        "CONN/S",
        "IN/S",
        "OUT/S",
        "TOTAL",
        "ERRORS",
        "RETRIES",
    ])];
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // display only
    let per_second = |r: f64| format!("{}/s", human_bytes(r.round() as u64));
    for r in rows {
        table.push(vec![
            r.service.clone(),
            r.endpoints.to_string(),
            r.active.to_string(),
            format!("{:.1}", r.connections_per_second),
            per_second(r.bytes_in_per_second),
            per_second(r.bytes_out_per_second),
            r.total.to_string(),
            r.errors.to_string(),
            r.retries.to_string(),
        ]);
    }
    align(&table)
}

fn render(rows: &[StatsRow], format: Format, streaming: bool) -> String {
    match format {
        Format::Table => stats_table(rows),
        Format::Json => json_rows(rows, streaming),
    }
}

/// Writes `text` to stdout; `redraw` first clears the terminal and homes the cursor. An
/// error means stdout is gone (a closed pipe: `rcompose stats | head`).
fn print(text: &str, redraw: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if redraw {
        out.write_all(b"\x1b[H\x1b[2J")?;
    }
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// One process of `top`. The JSON field names are part of the interface (docs/cli.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct TopRow {
    pod: String,
    replica: u32,
    container: String,
    pid: i32,
    ppid: i32,
    uid: u32,
    user: String,
    command: Vec<String>,
}

/// `top` as a table.
pub(super) fn top_table(rows: &[TopRow]) -> String {
    let mut table = vec![cells(&[
        "POD",
        "REPLICA",
        "CONTAINER",
        "PID",
        "PPID",
        "USER",
        "COMMAND",
    ])];
    for r in rows {
        table.push(vec![
            r.pod.clone(),
            r.replica.to_string(),
            r.container.clone(),
            r.pid.to_string(),
            r.ppid.to_string(),
            r.user.clone(),
            r.command.join(" ").replace(['\n', '\r', '\t'], " "),
        ]);
    }
    align(&table)
}

/// `rcompose top`.
pub(super) fn top(ctx: &Context, format: Format) -> Result<ExitCode, Error> {
    let project = ctx.project()?;
    let reader = reader();
    let proc_root = Path::new("/proc");
    let names: BTreeMap<u32, String> = fs::read_to_string("/etc/passwd")
        .map(|p| stats::user_names(&p))
        .unwrap_or_default();
    let mut rows = Vec::new();
    // A project that is not up is an empty list, as for `ps`.
    let containers = records(&project)?
        .map(|(s, _)| s.containers)
        .unwrap_or_default();
    for c in containers.iter().filter(|c| c.state.is_live()) {
        let Some(pids) = reader.procs(&c.cgroup)? else {
            continue;
        };
        for p in pids
            .iter()
            .filter_map(|pid| stats::process(proc_root, *pid))
        {
            rows.push(TopRow {
                pod: c.pod.clone(),
                replica: c.replica,
                container: c.container.clone(),
                pid: p.pid,
                ppid: p.ppid,
                uid: p.uid,
                user: names
                    .get(&p.uid)
                    .cloned()
                    .unwrap_or_else(|| p.uid.to_string()),
                command: p.command,
            });
        }
    }
    let text = match format {
        Format::Table => top_table(&rows),
        Format::Json => serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into()),
    };
    let _ = print(&text, false);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::stats::Memory;
    use crate::supervisor::state::ContainerState;

    fn record(pod: &str, state: ContainerState) -> ContainerRecord {
        ContainerRecord {
            pod: pod.into(),
            replica: 1,
            container: "c".into(),
            state,
            pid: Some(42),
            pid_start: None,
            restarts: 0,
            exit_code: None,
            reason: None,
            cgroup: format!("rcompose/p/{pod}-1/c"),
            log: "/dev/null".into(),
            dir: "/dev/null".into(),
            init: false,
            ready: false,
            ip: None,
            revision: 1,
            node: None,
        }
    }

    fn usage(cpu_ns: u64, charged: u64) -> Usage {
        Usage {
            cpu_ns,
            memory: Memory {
                charged,
                inactive_file: 0,
                limit: Some(64 << 20),
            },
            pids: 2,
            pids_limit: None,
        }
    }

    #[test]
    fn rows_compute_cpu_over_the_interval_per_container() {
        let t0 = Instant::now();
        let before = Sample {
            at: t0,
            containers: vec![record("burn", ContainerState::Running)],
            usage: vec![Some(usage(1_000_000_000, 1 << 20))],
        };
        let after = Sample {
            at: t0 + Duration::from_secs(2),
            containers: vec![
                record("burn", ContainerState::Running),
                record("new", ContainerState::Running),
                record("gone", ContainerState::Exited),
            ],
            usage: vec![
                Some(usage(2_000_000_000, 16 << 20)),
                Some(usage(5, 5)),
                None,
            ],
        };
        let rows = rows(&before, &after);
        assert_eq!(rows[0].cpu_percent, Some(50.0));
        assert_eq!(rows[0].memory_usage_bytes, Some(16 << 20));
        assert_eq!(rows[0].memory_percent, Some(25.0));
        // no earlier reading: no CPU %, but memory
        assert_eq!(rows[1].cpu_percent, None);
        assert_eq!(rows[1].memory_usage_bytes, Some(5));
        assert_eq!(rows[2].memory_usage_bytes, None);
        let json: serde_json::Value = serde_json::from_str(&json_rows(&rows, true)).unwrap();
        assert_eq!(json[0]["cpu_percent"], 50.0);
        assert_eq!(json[0]["memory_limit_bytes"], 64 << 20);
        assert_eq!(json[0]["pids"], 2);
        assert!(json[0]["pids_limit"].is_null());
        assert!(json[2]["cpu_percent"].is_null());
        assert_eq!(
            stats_table(&rows[..1]),
            "POD   REPLICA  CONTAINER  STATE    CPU %   MEM USAGE / LIMIT  MEM %   PIDS\n\
             burn  1        c          running  50.00%  16MiB / 64MiB      25.00%  2\n"
        );
    }

    #[test]
    fn human_bytes_uses_binary_units_and_four_digits() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1KiB");
        assert_eq!(human_bytes(1_548_288), "1.477MiB");
        assert_eq!(human_bytes(64 << 20), "64MiB");
        assert_eq!(human_bytes(1000 << 20), "1000MiB");
        assert_eq!(human_bytes(u64::MAX), "16EiB");
    }

    #[test]
    fn intervals_are_checked() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("x").is_err());
        assert!(parse_interval("NaN").is_err());
        assert!(parse_interval("1e9").is_err());
    }

    #[test]
    fn top_table_joins_the_command_line() {
        let rows = vec![TopRow {
            pod: "burn".into(),
            replica: 1,
            container: "c".into(),
            pid: 4242,
            ppid: 4200,
            uid: 0,
            user: "root".into(),
            command: vec!["/bin/sh".into(), "-c".into(), "while :; do :; done".into()],
        }];
        assert_eq!(
            top_table(&rows),
            "POD   REPLICA  CONTAINER  PID   PPID  USER  COMMAND\n\
             burn  1        c          4242  4200  root  /bin/sh -c while :; do :; done\n"
        );
    }

    fn service(total: u64, bytes_in: u64, endpoints: usize) -> ServiceStatus {
        ServiceStatus {
            address: None,
            ports: vec![],
            balance: "round_robin".into(),
            stats: crate::balancer::ServiceStats {
                active: 2,
                total,
                bytes_in,
                bytes_out: bytes_in * 10,
                errors: 1,
                retries: 3,
                endpoints: (0..endpoints)
                    .map(|i| std::net::Ipv4Addr::new(10, 0, 0, u8::try_from(i).unwrap()))
                    .collect(),
            },
        }
    }

    #[test]
    fn service_rows_are_rates_over_the_interval() {
        let t0 = Instant::now();
        let before = (
            t0,
            BTreeMap::from([("web".to_string(), service(100, 1000, 3))]),
        );
        let after = (
            t0 + Duration::from_secs(2),
            BTreeMap::from([
                ("web".to_string(), service(300, 5000, 2)),
                // new since the first sample: counted from zero
                ("db".to_string(), service(10, 100, 1)),
            ]),
        );
        let rows = service_rows(&before, &after);
        assert_eq!(rows.len(), 2);
        let web = rows.iter().find(|r| r.service == "web").unwrap();
        assert_eq!(web.connections_per_second, 100.0);
        assert_eq!(web.bytes_in_per_second, 2000.0);
        assert_eq!(web.bytes_out_per_second, 20000.0);
        assert_eq!((web.endpoints, web.active, web.total), (2, 2, 300));
        assert_eq!((web.errors, web.retries), (1, 3));
        let db = rows.iter().find(|r| r.service == "db").unwrap();
        assert_eq!(db.connections_per_second, 5.0);
        let table = services_table(&rows);
        assert!(table.starts_with("SERVICE"), "{table}");
        assert!(table.contains("19.53KiB/s"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&json_rows(&rows, true)).unwrap();
        assert_eq!(json[1]["connections_per_second"], 100.0);
    }
}
