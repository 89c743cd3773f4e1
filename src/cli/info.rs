//! Commands about rcompose itself and the machine's projects: `version`, `completion`,
//! `man`, `ls`, and the JSON form of `graph`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use serde::Serialize;

use super::output::{align, cells};
use super::{Cli, Context, Format};
use crate::error::Error;
use crate::plan::desired::DesiredState;
use crate::supervisor::state::{ContainerState, ProjectPaths, ProjectState, is_same_process};

/// The package version.
pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from (`build.rs`; `unknown` outside a git checkout).
pub(super) const GIT_HASH: &str = env!("RCOMPOSE_GIT_HASH");
/// That commit's date (`YYYY-MM-DD`), or `unknown`.
pub(super) const GIT_DATE: &str = env!("RCOMPOSE_GIT_DATE");
/// The target triple the binary was built for.
pub(super) const TARGET: &str = env!("RCOMPOSE_TARGET");
/// `--version`'s text: `0.1.0 (3e30c03 2026-11-26)`.
pub(super) const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RCOMPOSE_GIT_HASH"),
    " ",
    env!("RCOMPOSE_GIT_DATE"),
    ")"
);

#[derive(Serialize)]
struct VersionInfo {
    version: &'static str,
    commit: &'static str,
    commit_date: &'static str,
    target: &'static str,
}

/// `rcompose version`.
pub(super) fn version(format: Format, short: bool) -> Result<ExitCode, Error> {
    let info = VersionInfo {
        version: VERSION,
        commit: GIT_HASH,
        commit_date: GIT_DATE,
        target: TARGET,
    };
    let text = match (format, short) {
        (Format::Json, _) => json(&info),
        (Format::Table, true) => format!("{VERSION}\n"),
        (Format::Table, false) => {
            format!("rcompose {VERSION}\ncommit:  {GIT_HASH} ({GIT_DATE})\ntarget:  {TARGET}\n")
        }
    };
    write_out(text.as_bytes())
}

/// `rcompose completion SHELL`: the shell's completion script on stdout.
pub(super) fn completion(shell: clap_complete::Shell) -> Result<ExitCode, Error> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut public_command(), "rcompose", &mut out);
    write_out(&out)
}

/// The command tree without its hidden subcommands (`__supervise`), which the generators
/// would otherwise offer: the same arguments, subcommands and texts.
fn public_command() -> clap::Command {
    let full = Cli::command().version(LONG_VERSION);
    let mut cmd = clap::Command::new("rcompose")
        .version(LONG_VERSION)
        .about(full.get_about().cloned().unwrap_or_default())
        .subcommand_required(true);
    cmd = cmd.args(full.get_arguments().filter(|a| !a.is_hide_set()).cloned());
    cmd.subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// `rcompose man`: rcompose(1) in roff on stdout, or with `dir` the pages of every command
/// (`rcompose.1`, `rcompose-up.1`, ...) written there.
pub(super) fn man(dir: Option<&Path>) -> Result<ExitCode, Error> {
    let cmd = public_command();
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|source| io_error("render the man page", source))?;
            write_out(&out)
        }
        Some(dir) => {
            fs::create_dir_all(dir)
                .map_err(|source| io_error(&format!("create `{}`", dir.display()), source))?;
            clap_mangen::generate_to(cmd, dir).map_err(|source| {
                io_error(
                    &format!("write the man pages to `{}`", dir.display()),
                    source,
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Serialize)]
struct ProjectRow {
    name: String,
    /// `running(3)`, `exited(1)`, ... as Compose's `ls`; `stale` when its supervisor is gone.
    status: String,
    /// Whether a supervisor runs the project.
    up: bool,
    containers: usize,
    /// The main file of its manifest.
    manifest: PathBuf,
    /// Every file of its manifest in merge order (Compose overrides after the main one).
    manifest_files: Vec<PathBuf>,
}

/// `rcompose ls`: the projects that have state under the run directory.
pub(super) fn ls(format: Format) -> Result<ExitCode, Error> {
    let root = Context::run_root();
    let rows = projects(&root)?;
    let text = match format {
        Format::Json => json(&rows),
        Format::Table => {
            let mut table = vec![cells(&["NAME", "STATUS", "MANIFEST"])];
            for r in &rows {
                table.push(vec![
                    r.name.clone(),
                    r.status.clone(),
                    // every file, comma-separated (as Compose's CONFIG FILES)
                    r.manifest_files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                ]);
            }
            align(&table)
        }
    };
    write_out(text.as_bytes())
}

fn projects(root: &Path) -> Result<Vec<ProjectRow>, Error> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io_error(&format!("list `{}`", root.display()), source)),
    };
    let mut rows = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let paths = ProjectPaths::new(root, &name);
        // a project directory without a readable state is not listed (a half-made one is
        // `up`'s to finish or `down`'s to remove)
        let Ok(Some(state)) = ProjectState::load(&paths.state_file()) else {
            continue;
        };
        let up = paths.control_socket().exists()
            && is_same_process(
                Path::new("/proc"),
                state.supervisor_pid,
                state.supervisor_start,
            );
        rows.push(ProjectRow {
            status: if up {
                status(&state)
            } else {
                "stale".to_string()
            },
            up,
            containers: state.containers.len(),
            manifest_files: if state.manifest_files.is_empty() {
                vec![state.manifest.clone()]
            } else {
                state.manifest_files.clone()
            },
            manifest: state.manifest.clone(),
            name,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// Container counts by state, as Compose's `ls` shows them: `running(2), exited(1)`.
fn status(state: &ProjectState) -> String {
    let order = [
        ContainerState::Waiting,
        ContainerState::Pending,
        ContainerState::Starting,
        ContainerState::Running,
        ContainerState::Restarting,
        ContainerState::Stopping,
        ContainerState::Exited,
        ContainerState::Failed,
    ];
    let mut parts = Vec::new();
    for s in order {
        let n = state.containers.iter().filter(|c| c.state == s).count();
        if n > 0 {
            parts.push(format!("{}({n})", s.as_str()));
        }
    }
    if parts.is_empty() {
        "empty".to_string()
    } else {
        parts.join(", ")
    }
}

#[derive(Serialize)]
struct GraphJson<'a> {
    /// Start waves: pods of one wave depend only on pods of earlier waves.
    waves: &'a [Vec<String>],
    pods: Vec<GraphPod<'a>>,
}

#[derive(Serialize)]
struct GraphPod<'a> {
    name: &'a str,
    replicas: u32,
    depends_on: Vec<GraphEdge<'a>>,
}

#[derive(Serialize)]
struct GraphEdge<'a> {
    pod: &'a str,
    condition: crate::plan::desired::Condition,
}

/// `graph --format json`.
pub(super) fn graph_json(state: &DesiredState) -> String {
    let graph = GraphJson {
        waves: &state.waves,
        pods: state
            .pods
            .values()
            .map(|p| GraphPod {
                name: &p.name,
                replicas: p.replicas,
                depends_on: p
                    .depends_on
                    .iter()
                    .map(|d| GraphEdge {
                        pod: &d.pod,
                        condition: d.condition,
                    })
                    .collect(),
            })
            .collect(),
    };
    json(&graph)
}

fn json<T: Serialize>(value: &T) -> String {
    // plain data of our own: serialization cannot fail
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

fn write_out(bytes: &[u8]) -> Result<ExitCode, Error> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `rcompose completion bash | head`: a closed pipe is the reader's choice
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(source) => Err(io_error("write to stdout", source)),
    }
}

fn io_error(what: &str, source: io::Error) -> Error {
    Error::Io {
        what: what.to_string(),
        source,
    }
}
