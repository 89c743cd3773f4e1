//! `rcompose watch` and `up --watch`: the manifest's watch rules applied to a running
//! project. File events come from [`crate::watch`]; this glue maps the changed paths to the
//! rules and carries out their actions through the project's running supervisor:
//!
//! - `sync`: the changed files are copied into the root of every running container of the
//!   rule's pods (found in the project's `state.json`), see [`crate::watch::sync`];
//! - `restart`: a `Restart` control request for the pods (and their dependents with
//!   `cascade`);
//! - `redeploy`: the watched layer directories are snapshotted again and the manifest is
//!   applied (an `Apply` request, as `up` on a running project sends): the pods whose
//!   layer content changed have a new plan and are replaced, the others are left alone;
//! - the manifest itself: a valid edit is applied the same way; an invalid one is reported
//!   with its locations, and the running stack is left as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Context;
use super::output::{self, CliProgress};
use crate::error::Error;
use crate::manifest::{ValidManifest, WatchEffect, WatchRule};
use crate::plan::desired::{DesiredState, LayerPlan};
use crate::supervisor::control::{self, Change, ControlError, Request};
use crate::supervisor::state::{ProjectPaths, ProjectState, display_name, is_same_process};
use crate::watch::ignore::IgnoreRules;
use crate::watch::sync::{ContainerRoot, SyncOp};
use crate::watch::{WatchError, Watcher, snapshot, target_of};

/// The default quiet period before a batch of changes is acted on.
pub(super) const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// How often the loop looks at its stop condition when nothing changes.
const TICK: Duration = Duration::from_millis(200);

/// How long a control request may take (an apply waits for the new pods to run).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Parses `--debounce`: `150ms`, `0.2s`, `1s` or a number of milliseconds.
pub(super) fn parse_debounce(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration `{text}`: use milliseconds (`150ms`, `150`) or seconds (`0.2s`)")
    };
    let d = if let Some(ms) = text.strip_suffix("ms") {
        Duration::from_millis(ms.trim().parse().map_err(|_| bad())?)
    } else if let Some(s) = text.strip_suffix('s') {
        let secs: f64 = s.trim().parse().map_err(|_| bad())?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad());
        }
        Duration::from_secs_f64(secs)
    } else {
        Duration::from_millis(text.trim().parse().map_err(|_| bad())?)
    };
    if d > Duration::from_secs(60) {
        return Err(format!("invalid duration `{text}`: at most 60s"));
    }
    Ok(d)
}

/// The layer directories (absolute) that the redeploy rules of `m` watch, whose content is
/// snapshotted into the store (`manifest`: the manifest's path).
pub(super) fn redeploy_dirs(ctx: &Context, m: &ValidManifest, manifest: &Path) -> Vec<PathBuf> {
    let base = ctx.base(manifest);
    m.watch()
        .iter()
        .filter(|r| r.effect == WatchEffect::Redeploy)
        .flat_map(|r| r.paths.iter().map(|p| base.join(p)))
        .collect()
}

/// Replaces every layer directory of `desired` that a redeploy rule watches (`watched`,
/// the rule's paths: the layer is in one, or holds one) by its snapshot under
/// `<store>/snapshots`.
pub(super) fn snapshot_layers(
    store: &Path,
    desired: &mut DesiredState,
    watched: &[PathBuf],
) -> Result<(), Error> {
    if watched.is_empty() {
        return Ok(());
    }
    let into = store.join("snapshots");
    let mut done: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let layers = desired
        .pods
        .values_mut()
        .flat_map(|p| &mut p.containers)
        .flat_map(|c| &mut c.rootfs.layers);
    for layer in layers {
        let LayerPlan::Dir { path, .. } = layer else {
            continue;
        };
        if !watched
            .iter()
            .any(|w| path.starts_with(w) || w.starts_with(&*path))
            || !path.is_dir()
        {
            continue;
        }
        let snap = match done.get(path) {
            Some(s) => s.clone(),
            None => {
                let s = snapshot::snapshot(path, &into)?;
                done.insert(path.clone(), s.clone());
                s
            }
        };
        *path = snap;
    }
    Ok(())
}

/// The pods of `pods` and, transitively, every pod that depends on one of them.
pub(super) fn with_dependents(desired: &DesiredState, pods: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = pods.iter().cloned().collect();
    loop {
        let more: Vec<String> = desired
            .pods
            .values()
            .filter(|p| !out.contains(&p.name))
            .filter(|p| p.depends_on.iter().any(|d| out.contains(&d.pod)))
            .map(|p| p.name.clone())
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

/// A watch rule with its paths resolved and its ignore rules built.
#[derive(Debug)]
struct Compiled {
    rule: WatchRule,
    /// Watched paths, absolute.
    roots: Vec<PathBuf>,
    ignore: IgnoreRules,
}

/// What the loop runs on: the last valid manifest and what was made of it.
#[derive(Debug)]
struct Setup {
    project: String,
    /// `up --watch POD...`: only these pods (and their dependencies) are applied.
    only: Vec<String>,
    debounce: Duration,
    /// The manifest's files (absolute): a change to any is a changed manifest.
    manifests: Vec<PathBuf>,
    desired: DesiredState,
    redeploy: Vec<PathBuf>,
    rules: Vec<Compiled>,
    watcher: Watcher,
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

impl Setup {
    /// Resolves the rules of `m` and starts watching their paths and the manifest's files
    /// (`manifests`: the first is the main one).
    fn new(
        ctx: &Context,
        m: &ValidManifest,
        desired: DesiredState,
        manifests: &[PathBuf],
        debounce: Duration,
        only: &[String],
    ) -> Result<Self, Error> {
        let manifests: Vec<PathBuf> = manifests.iter().map(|p| absolute(p)).collect();
        let manifest = super::up::main_file(&manifests);
        let base = ctx.base(&manifest);
        let gitignore = std::fs::read_to_string(base.join(".gitignore")).ok();
        // what rcompose writes itself never triggers a rule
        let excluded = vec![absolute(&ctx.store), absolute(&Context::run_root())];
        let mut rules = Vec::new();
        for (i, rule) in m.watch().iter().enumerate() {
            let mut roots = Vec::new();
            for p in &rule.paths {
                let path = base.join(p);
                if !path.exists() {
                    return Err(Error::Usage(format!(
                        "watch rule {} watches `{p}`, which does not exist (in `{}`)",
                        i + 1,
                        base.display()
                    )));
                }
                roots.push(absolute(&path));
            }
            let ignore =
                IgnoreRules::new(&base, gitignore.as_deref(), &rule.ignore, excluded.clone())?;
            rules.push(Compiled {
                rule: rule.clone(),
                roots,
                ignore,
            });
        }
        let mut recursive: Vec<PathBuf> = Vec::new();
        let mut flat: Vec<PathBuf> = Vec::new();
        let mut dirs: Vec<PathBuf> = rules
            .iter()
            .flat_map(|r| &r.roots)
            .filter(|p| p.is_dir())
            .cloned()
            .collect();
        dirs.sort();
        for d in dirs {
            if !recursive.iter().any(|r| d.starts_with(r)) {
                recursive.push(d);
            }
        }
        // single files and the manifest's files: their directory's entries (editors replace a
        // file by renaming a new one over it, which a watch on the file itself would miss)
        let files = rules
            .iter()
            .flat_map(|r| &r.roots)
            .filter(|p| !p.is_dir())
            .chain(&manifests);
        for f in files {
            let Some(dir) = f.parent() else { continue };
            if !recursive.iter().any(|r| dir.starts_with(r)) && !flat.iter().any(|d| d == dir) {
                flat.push(dir.to_path_buf());
            }
        }
        let watcher = Watcher::new(&recursive, &flat, debounce)?;
        Ok(Setup {
            project: desired.project.clone(),
            only: only.to_vec(),
            debounce,
            redeploy: redeploy_dirs(ctx, m, &manifest),
            manifests,
            desired,
            rules,
            watcher,
        })
    }
}

/// Whether the project's supervisor runs.
fn is_up(project: &str) -> bool {
    super::up::is_up(&ProjectPaths::new(&Context::run_root(), project))
}

/// `rcompose watch` (and `up -d --watch [POD...]` once the stack is up; `only`: those pods):
/// runs until SIGINT, SIGTERM or SIGHUP, or until the project is down.
pub(super) fn attach(
    ctx: &Context,
    debounce: Duration,
    only: &[String],
) -> Result<ExitCode, Error> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let io_err = |what: &str, e: nix::Error| Error::Io {
        what: what.into(),
        source: e.into(),
    };
    // blocked before the watcher's thread starts, so that it inherits the mask
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| io_err("block signals", e))?;
    let signals = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| io_err("create a signalfd", e))?;
    let (m, desired, manifests) = ctx.load()?;
    if !is_up(&desired.project) {
        return Err(Error::NotUp {
            project: desired.project,
            hint: "; start it with `rcompose up -d` (or `rcompose up --watch`)",
        });
    }
    // plain lines on stderr, as `up` prints its progress without a terminal
    let project = desired.project.clone();
    let say = move |line: &str| eprintln!("[{project}] {line}");
    let stop = || matches!(signals.read_signal(), Ok(Some(_)));
    let setup = Setup::new(ctx, &m, desired, &manifests, debounce, only)?;
    run(
        ctx,
        setup,
        "Ctrl-C stops watching, the stack stays up",
        &stop,
        &say,
    )
    .map(|()| ExitCode::SUCCESS)
}

/// Starts the watch loop on a thread (`up --watch`, once the stack is up); it ends when
/// `stop` is set or the project is down. Errors are printed.
pub(super) fn spawn(
    ctx: Context,
    debounce: Duration,
    only: Vec<String>,
    stop: Arc<AtomicBool>,
    progress: Arc<CliProgress>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let say = |line: &str| progress.println(line);
        let result = ctx
            .load()
            .and_then(|(m, desired, manifests)| {
                Setup::new(&ctx, &m, desired, &manifests, debounce, &only)
            })
            .and_then(|setup| {
                run(
                    &ctx,
                    setup,
                    "Ctrl-C stops watching and removes the stack",
                    &|| stop.load(Ordering::Relaxed),
                    &say,
                )
            });
        if let Err(e) = result {
            say(&format!("watch: error: {}", output::error_text(&e)));
        }
    })
}

/// The loop: batches of changed paths until `stop` says so or the project is down.
fn run(
    ctx: &Context,
    mut setup: Setup,
    ctrl_c: &str,
    stop: &dyn Fn() -> bool,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    say(&format!(
        "watch: {} rule{} and `{}` (debounce {} ms); {ctrl_c}",
        setup.rules.len(),
        if setup.rules.len() == 1 { "" } else { "s" },
        setup
            .manifests
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join("`, `"),
        setup.debounce.as_millis()
    ));
    loop {
        if stop() {
            return Ok(());
        }
        if !is_up(&setup.project) {
            say(&format!(
                "watch: project `{}` is no longer up; stopped watching",
                setup.project
            ));
            return Ok(());
        }
        if let Some(batch) = setup.watcher.next(TICK) {
            handle(ctx, &mut setup, &batch, say);
        }
    }
}

/// What a batch asks for.
#[derive(Debug, Default)]
struct Work {
    manifest: bool,
    /// Sync rules (by index) and their changed paths.
    sync: BTreeMap<usize, BTreeSet<PathBuf>>,
    restart: BTreeSet<String>,
    redeploy: bool,
}

fn classify(setup: &Setup, batch: &BTreeSet<PathBuf>) -> Work {
    let mut work = Work::default();
    for path in batch {
        if setup.manifests.contains(path) {
            work.manifest = true;
            continue;
        }
        let is_dir = path.is_dir();
        for (i, c) in setup.rules.iter().enumerate() {
            if !c.roots.iter().any(|r| path.starts_with(r)) || c.ignore.is_ignored(path, is_dir) {
                continue;
            }
            match &c.rule.effect {
                WatchEffect::Sync { .. } => {
                    work.sync.entry(i).or_default().insert(path.clone());
                }
                WatchEffect::Restart { cascade } => {
                    let pods = if *cascade {
                        with_dependents(&setup.desired, &c.rule.pods)
                    } else {
                        c.rule.pods.iter().cloned().collect()
                    };
                    work.restart.extend(pods);
                }
                WatchEffect::Redeploy => work.redeploy = true,
            }
        }
    }
    work
}

fn handle(ctx: &Context, setup: &mut Setup, batch: &BTreeSet<PathBuf>, say: &dyn Fn(&str)) {
    let work = classify(setup, batch);
    for (i, paths) in &work.sync {
        sync(setup, *i, paths, say);
    }
    let mut applied = false;
    if work.manifest {
        match ctx.load() {
            Err(e) => say(&format!(
                "watch: the manifest is invalid; the running stack is left as it is:\n{}",
                output::error_text(&e)
            )),
            Ok((m, desired, manifests)) => {
                if desired.project != setup.project {
                    say(&format!(
                        "watch: the manifest now names project `{}`, not `{}`; the running stack is left as it is",
                        desired.project, setup.project
                    ));
                } else {
                    let redeploy = redeploy_dirs(ctx, &m, &super::up::main_file(&manifests));
                    say("watch: the manifest changed: applying it");
                    apply(ctx, desired.clone(), &redeploy, &setup.only, say);
                    applied = true;
                    match Setup::new(ctx, &m, desired, &manifests, setup.debounce, &setup.only) {
                        Ok(new) => *setup = new,
                        Err(e) => say(&format!(
                            "watch: error: {}; the previous watch rules stay",
                            output::error_text(&e)
                        )),
                    }
                }
            }
        }
    }
    if work.redeploy && !applied {
        say("watch: layer files changed: rebuilding and applying");
        apply(
            ctx,
            setup.desired.clone(),
            &setup.redeploy,
            &setup.only,
            say,
        );
    }
    if !work.restart.is_empty() {
        let pods: Vec<String> = work.restart.into_iter().collect();
        say(&format!(
            "watch: restarting {}",
            pods.iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        request(
            &setup.project,
            &Request::Restart {
                pods,
                grace_ms: None,
            },
            say,
        );
    }
}

/// Applies `desired` to the running project (as `up` does; with `only`, as `up POD...`
/// does), printing what changed.
fn apply(
    ctx: &Context,
    desired: DesiredState,
    redeploy: &[PathBuf],
    only: &[String],
    say: &dyn Fn(&str),
) {
    let mut desired = if only.is_empty() {
        desired
    } else {
        match crate::plan::select(&desired, only) {
            Ok(d) => d,
            Err(e) => return say(&format!("watch: error: {e}")),
        }
    };
    match super::up::apply_to_running(ctx, &mut desired, !only.is_empty(), redeploy) {
        Ok(Some(_)) => {}
        Ok(None) => say("watch: the project is not up; nothing applied"),
        Err(e) => say(&format!("watch: error: {}", output::error_text(&e))),
    }
}

/// Sends `request` to the project's supervisor, printing what it did.
fn request(project: &str, request: &Request, say: &dyn Fn(&str)) {
    let paths = ProjectPaths::new(&Context::run_root(), project);
    match control::send(&paths.control_socket(), project, request, ANSWER_TIMEOUT) {
        Ok(r) => {
            for (pod, change) in &r.pods {
                if *change != Change::Unchanged {
                    say(&format!("watch: pod `{pod}`: {}", change.as_str()));
                }
            }
            if let Some(e) = r.error {
                say(&format!("watch: error: {e}"));
            }
        }
        Err(ControlError::NotListening { .. }) => {
            say(&format!("watch: project `{project}` is not up"));
        }
        Err(e) => say(&format!("watch: error: {}", crate::supervisor::chain(&e))),
    }
}

/// The operations that carry `paths` (changed under the rule's roots) to its target.
fn sync_ops(c: &Compiled, target: &str, paths: &BTreeSet<PathBuf>) -> Vec<SyncOp> {
    let mut ops = BTreeSet::new();
    for path in paths {
        for root in c.roots.iter().filter(|r| path.starts_with(r)) {
            let Some(to) = target_of(root, target, path) else {
                continue;
            };
            if std::fs::symlink_metadata(path).is_ok() {
                ops.insert(SyncOp::Write {
                    source: path.clone(),
                    target: to,
                });
            } else {
                ops.insert(SyncOp::Remove { target: to });
            }
        }
    }
    ops.into_iter().collect()
}

/// Carries the changes of sync rule `i` into every running container of its pods.
fn sync(setup: &Setup, i: usize, paths: &BTreeSet<PathBuf>, say: &dyn Fn(&str)) {
    let c = &setup.rules[i];
    let WatchEffect::Sync { target } = &c.rule.effect else {
        return;
    };
    let started = Instant::now();
    let ops = sync_ops(c, target, paths);
    if ops.is_empty() {
        return;
    }
    let run_paths = ProjectPaths::new(&Context::run_root(), &setup.project);
    let state = match ProjectState::load(&run_paths.state_file()) {
        Ok(Some(s)) => s,
        Ok(None) => return say(&format!("watch: project `{}` is not up", setup.project)),
        Err(e) => return say(&format!("watch: error: {}", crate::supervisor::chain(&e))),
    };
    let proc_root = Path::new("/proc");
    let mut reached = Vec::new();
    let mut changed = 0usize;
    for record in &state.containers {
        if record.init
            || !c.rule.pods.contains(&record.pod)
            || !(c.rule.containers.is_empty() || c.rule.containers.contains(&record.container))
            || !record.state.is_live()
        {
            continue;
        }
        let Some(pid) = record
            .pid
            .filter(|p| is_same_process(proc_root, *p, record.pid_start))
        else {
            continue;
        };
        let root = match ContainerRoot::open(proc_root, pid) {
            // the pid was checked before the open: once more, so that a pid reused meanwhile
            // by another process is not written into
            Ok(_) if !is_same_process(proc_root, pid, record.pid_start) => continue,
            Ok(r) => r,
            Err(e) => {
                say(&format!(
                    "watch: sync into {}: {}",
                    record.replica_name(),
                    chain(&e)
                ));
                continue;
            }
        };
        let mut ok = true;
        for op in &ops {
            match root.apply(op) {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) => {
                    ok = false;
                    say(&format!(
                        "watch: sync into {}: {}",
                        record.replica_name(),
                        chain(&e)
                    ));
                }
            }
        }
        if ok {
            let single = state
                .containers
                .iter()
                .filter(|r| r.pod == record.pod && r.replica == record.replica && !r.init)
                .count()
                == 1;
            reached.push(display_name(
                &record.pod,
                record.replica,
                &record.container,
                single,
            ));
        }
    }
    let n = ops.len();
    say(&format!(
        "watch: synced {n} change{} ({changed} written) into {} in {} ms",
        if n == 1 { "" } else { "s" },
        if reached.is_empty() {
            "no running container".to_string()
        } else {
            reached.join(", ")
        },
        started.elapsed().as_millis()
    ));
}

/// An error and its causes on one line.
fn chain(e: &WatchError) -> String {
    crate::supervisor::chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounce_accepts_milliseconds_and_seconds() {
        assert_eq!(parse_debounce("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_debounce("150"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_debounce("0.2s"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_debounce("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_debounce("fast"),
            Err(
                "invalid duration `fast`: use milliseconds (`150ms`, `150`) or seconds (`0.2s`)"
                    .into()
            )
        );
        assert_eq!(
            parse_debounce("-1s"),
            Err(
                "invalid duration `-1s`: use milliseconds (`150ms`, `150`) or seconds (`0.2s`)"
                    .into()
            )
        );
        assert_eq!(
            parse_debounce("2min"),
            Err(
                "invalid duration `2min`: use milliseconds (`150ms`, `150`) or seconds (`0.2s`)"
                    .into()
            )
        );
        assert_eq!(
            parse_debounce("61s"),
            Err("invalid duration `61s`: at most 60s".into())
        );
    }

    #[test]
    fn cascade_adds_every_transitive_dependent_and_nothing_else() {
        let m = crate::manifest::load(
            "pods:
  db: { containers: [ { name: db, command: x } ] }
  api: { depends_on: [db], containers: [ { name: api, command: x } ] }
  web: { depends_on: [api], containers: [ { name: web, command: x } ] }
  cache: { containers: [ { name: cache, command: x } ] }
  worker: { depends_on: [cache], containers: [ { name: worker, command: x } ] }
",
            Path::new("rcompose.yaml"),
        )
        .unwrap();
        let desired = crate::plan::desired_state(&m, "p", Path::new("/p"));
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            with_dependents(&desired, &["db".into()]),
            set(&["db", "api", "web"])
        );
        assert_eq!(with_dependents(&desired, &["web".into()]), set(&["web"]));
        assert_eq!(
            with_dependents(&desired, &["api".into(), "cache".into()]),
            set(&["api", "web", "cache", "worker"])
        );
    }
}
