//! Presentation: errors, tables, JSON, log prefixes and progress.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::Error;
use crate::supervisor::Event;
use crate::supervisor::state::ContainerRecord;

/// Whether stdout is a terminal (colours and alignment for people, plain for pipes).
pub(super) fn stdout_is_tty() -> bool {
    io::stdout().is_terminal()
}

/// Whether to colour stdout: a terminal, and no `NO_COLOR` (<https://no-color.org>: set
/// and not empty) in the environment.
pub(super) fn stdout_colour() -> bool {
    stdout_is_tty() && !no_color(std::env::var_os("NO_COLOR").as_deref())
}

fn no_color(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// An error and its causes as one text: `message` then `caused by:` lines.
pub(super) fn error_text(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(e);
    // manifest errors are complete as rendered
    if matches!(e, Error::Manifest(_)) {
        return text;
    }
    while let Some(c) = cur {
        text.push_str(&format!("\ncaused by: {c}"));
        cur = c.source();
    }
    text
}

/// Prints a fatal error on stderr.
pub(super) fn render_error(e: &Error) {
    let text = error_text(e);
    let mut err = io::stderr().lock();
    if matches!(e, Error::Manifest(_)) {
        let _ = writeln!(err, "{}", text.trim_end());
    } else {
        let _ = writeln!(err, "error: {text}");
    }
    if let Some(hint) = e.hint() {
        let _ = writeln!(err, "hint: {hint}");
    }
}

#[derive(Serialize)]
struct PsRow<'a> {
    pod: &'a str,
    replica: u32,
    container: &'a str,
    state: &'a str,
    /// Running and ready (readiness probe passing, or none).
    ready: bool,
    pid: Option<i32>,
    restarts: u32,
    exit_code: Option<i32>,
    reason: Option<&'a str>,
    /// The replica's address on the project network.
    ip: Option<std::net::Ipv4Addr>,
    /// The revision of its pod's spec it runs (two run side by side during a rollout).
    revision: u32,
    /// The node its replica is placed on (when the manifest declares `nodes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
}

fn rows(records: &[ContainerRecord]) -> Vec<PsRow<'_>> {
    records
        .iter()
        .map(|c| PsRow {
            pod: &c.pod,
            replica: c.replica,
            container: &c.container,
            state: c.state.as_str(),
            ready: c.ready && c.state == crate::supervisor::state::ContainerState::Running,
            pid: c.pid,
            restarts: c.restarts,
            exit_code: c.exit_code,
            reason: c.reason.as_deref(),
            ip: c.ip,
            revision: c.revision,
            node: c.node.as_deref(),
        })
        .collect()
}

/// `ps --format json`: an array of objects.
pub(super) fn ps_json(records: &[ContainerRecord]) -> String {
    serde_json::to_string_pretty(&rows(records)).unwrap_or_else(|_| "[]".into())
}

/// `ps`: an aligned table.
pub(super) fn ps_table(records: &[ContainerRecord]) -> String {
    let header = [
        "POD",
        "REPLICA",
        "CONTAINER",
        "STATE",
        "READY",
        "PID",
        "REVISION",
        "RESTARTS",
        "EXIT",
        "REASON",
    ];
    // a NODE column when the replicas are placed on declared nodes
    let nodes = records.iter().any(|r| r.node.is_some());
    let mut head = cells(&header);
    if nodes {
        head.insert(3, "NODE".to_string());
    }
    let mut table: Vec<Vec<String>> = vec![head];
    for r in rows(records) {
        let node = r.node.unwrap_or("-").to_string();
        table.push(vec![
            r.pod.to_string(),
            r.replica.to_string(),
            r.container.to_string(),
            r.state.to_string(),
            if r.state == "running" {
                if r.ready { "yes" } else { "no" }.to_string()
            } else {
                "-".to_string()
            },
            r.pid.map_or("-".into(), |p| p.to_string()),
            r.revision.to_string(),
            r.restarts.to_string(),
            r.exit_code.map_or("-".into(), |c| c.to_string()),
            r.reason.unwrap_or("").to_string(),
        ]);
        if nodes && let Some(row) = table.last_mut() {
            row.insert(3, node);
        }
    }
    align(&table)
}

/// Rows of cells as columns two spaces apart, each as wide as its widest cell (in
/// characters), without trailing blanks.
/// A table row of fixed texts (a header).
pub(super) fn cells(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|s| (*s).to_string()).collect()
}

pub(super) fn align(table: &[Vec<String>]) -> String {
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            table
                .iter()
                .filter_map(|row| row.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Prints container lines as `name | line`, names padded to one width, coloured on a TTY.
#[derive(Debug)]
pub(super) struct LinePrinter {
    width: usize,
    colour: bool,
}

const COLOURS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

impl LinePrinter {
    pub(super) fn new(names: &[String], colour: bool) -> Self {
        Self {
            width: names.iter().map(String::len).max().unwrap_or(0),
            colour,
        }
    }

    pub(super) fn print(&self, name: &str, index: usize, line: &str) {
        let w = self.width;
        let text = if self.colour {
            let c = COLOURS[index % COLOURS.len()];
            format!("\x1b[{c}m{name:<w$} |\x1b[0m {line}\n")
        } else {
            format!("{name:<w$} | {line}\n")
        };
        let _ = io::stdout().lock().write_all(text.as_bytes());
    }
}

/// One line for an event, or `None` for events not worth a line.
pub(super) fn format_event(event: &Event) -> Option<String> {
    Some(match event {
        Event::Waiting { pod, on, condition } => format!("{pod}: waiting for {on} ({condition})"),
        Event::Started { name, .. } => format!("{name}: started"),
        Event::Failed { name, message } => format!("{name}: failed to start: {message}"),
        Event::Exited { name, code, reason } => match reason {
            Some(r) => format!("{name}: exited with code {code} ({r})"),
            None => format!("{name}: exited with code {code}"),
        },
        Event::OomKilled { name } => format!("{name}: killed by the OOM killer (memory limit)"),
        Event::Restarting { name, delay } => {
            format!("{name}: restarting in {}ms", delay.as_millis())
        }
        Event::Ready => return None,
        Event::Readiness {
            name, ready: true, ..
        } => format!("{name}: ready"),
        Event::Readiness {
            name,
            ready: false,
            detail,
        } => match detail {
            Some(d) => format!("{name}: not ready ({d})"),
            None => format!("{name}: not ready"),
        },
        Event::Unhealthy { name, message, .. } => format!("{name}: {message}; stopping it"),
        Event::Warning { message } => format!("warning: {message}"),
        Event::Stopping { reason } => format!("stopping: {reason}"),
        Event::Removed => "removed".to_string(),
        Event::Pending { name, reason } => format!("{name}: pending: {reason}"),
        Event::Node { node, action } => format!("node {node}: {action}"),
        Event::Fault {
            name,
            phase,
            detail,
        } => match detail {
            Some(d) => format!("fault `{name}` {phase}: {d}"),
            None => format!("fault `{name}` {phase}"),
        },
        Event::Rollout {
            pod,
            revision,
            phase,
            detail,
        } => match detail {
            Some(d) => format!("{pod}: rollout of revision {revision} {phase}: {d}"),
            None => format!("{pod}: rollout of revision {revision} {phase}"),
        },
    })
}

/// Progress on stderr: a spinner on a terminal (indicatif), plain lines otherwise.
pub(super) struct CliProgress {
    project: String,
    bar: Option<ProgressBar>,
}

impl CliProgress {
    pub(super) fn new(project: &str) -> Self {
        let bar = io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.set_message(format!("starting {project}"));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            project: project.to_string(),
            bar,
        }
    }

    pub(super) fn println(&self, text: &str) {
        let line = format!("[{}] {text}", self.project);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub(super) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl crate::supervisor::Progress for CliProgress {
    fn event(&self, event: &Event) {
        if let Event::Ready = event {
            if let Some(bar) = &self.bar {
                bar.finish_and_clear();
            }
            return;
        }
        if let Some(text) = format_event(event) {
            self.println(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{no_color, ps_json, ps_table};
    use crate::supervisor::state::{ContainerRecord, ContainerState};
    use std::ffi::OsStr;

    fn record(replica: u32, state: ContainerState, node: Option<&str>) -> ContainerRecord {
        ContainerRecord {
            pod: "web".into(),
            replica,
            container: "web".into(),
            state,
            pid: None,
            pid_start: None,
            restarts: 0,
            exit_code: None,
            reason: (state == ContainerState::Pending)
                .then(|| "insufficient memory: requested 3Gi, free 1.2Gi".to_string()),
            cgroup: String::new(),
            log: "/dev/null".into(),
            dir: "/dev/null".into(),
            init: false,
            ready: false,
            ip: None,
            revision: 1,
            node: node.map(str::to_string),
        }
    }

    #[test]
    fn ps_shows_pending_replicas_with_the_reason_and_nodes_when_there_are() {
        let table = ps_table(&[record(1, ContainerState::Pending, None)]);
        assert_eq!(
            table,
            "POD  REPLICA  CONTAINER  STATE    READY  PID  REVISION  RESTARTS  EXIT  REASON\n\
             web  1        web        pending  -      -    1         0         -     insufficient memory: requested 3Gi, free 1.2Gi\n"
        );
        assert!(!ps_json(&[record(1, ContainerState::Pending, None)]).contains("node"));
        let records = [
            record(1, ContainerState::Exited, Some("w1")),
            record(2, ContainerState::Pending, None),
        ];
        let table = ps_table(&records);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("POD  REPLICA  CONTAINER  NODE  STATE "),
            "{table}"
        );
        assert!(
            lines[1].starts_with("web  1        web        w1    exited "),
            "{table}"
        );
        assert!(
            lines[2].starts_with("web  2        web        -     pending "),
            "{table}"
        );
        assert!(ps_json(&records).contains("\"node\": \"w1\""));
    }

    #[test]
    fn no_color_means_set_and_not_empty() {
        assert!(!no_color(None));
        assert!(!no_color(Some(OsStr::new(""))));
        assert!(no_color(Some(OsStr::new("1"))));
        assert!(no_color(Some(OsStr::new("false"))));
    }
}
