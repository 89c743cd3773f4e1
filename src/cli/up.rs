//! `up` in the foreground, `up -d`, and the detached supervisor it starts.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Context;
use super::image::LayerProgress;
use super::output::{self, CliProgress, LinePrinter};
use crate::error::Error;
use crate::image::prepare::{PrepareOptions, prepare};
use crate::plan::desired::{DesiredState, MountSource};
use crate::runtime;
use crate::runtime::forkserver::ForkServer;
use crate::supervisor::state::display_name;
use crate::supervisor::{Event, LogSink, Outcome, Progress, Supervisor, UpOptions};

/// The fd on which the detached supervisor reports to `up -d`.
const NOTIFY_FD: i32 = 3;

fn prerequisites() -> Result<(), Error> {
    match runtime::missing_prerequisite(Path::new("/proc")) {
        Some(msg) => Err(Error::Prerequisite(msg)),
        None => Ok(()),
    }
}

fn current_exe() -> Result<PathBuf, Error> {
    std::env::current_exe().map_err(|source| Error::Io {
        what: "find the rcompose binary".into(),
        source,
    })
}

/// `up --wait [--wait-timeout SECONDS]`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Wait {
    /// Report ready only once every pod is ready or completed.
    wait: bool,
    /// Seconds to wait at most.
    timeout: Option<u64>,
}

impl Wait {
    pub(super) fn of(wait: bool, timeout: Option<u64>) -> Self {
        Wait { wait, timeout }
    }

    /// The arguments that pass it on to `__supervise`.
    fn args(self) -> Vec<String> {
        let mut out = Vec::new();
        if self.wait {
            out.push("--wait".to_string());
        }
        if let Some(t) = self.timeout {
            out.push("--wait-timeout".to_string());
            out.push(t.to_string());
        }
        out
    }
}

fn options(
    desired: DesiredState,
    manifests: Vec<PathBuf>,
    grace: Duration,
    stay: bool,
    forkserver: Option<Arc<ForkServer>>,
) -> Result<UpOptions, Error> {
    Ok(UpOptions {
        wait: false,
        wait_timeout: None,
        abort_on_exit: false,
        exit_code_from: None,
        desired,
        manifests,
        run_root: Context::run_root(),
        proc_root: PathBuf::from("/proc"),
        exe: current_exe()?,
        grace,
        stay,
        forkserver,
    })
}

/// Display names of every container, for aligning log prefixes.
fn display_names(desired: &DesiredState) -> Vec<String> {
    let mut names = Vec::new();
    for pod in desired.pods.values() {
        let single = pod.containers.len() == 1;
        for r in 1..=pod.replicas {
            for c in &pod.containers {
                names.push(display_name(&pod.name, r, &c.name, single));
            }
        }
    }
    names
}

struct StdoutSink(LinePrinter, Arc<CliProgress>);

impl LogSink for StdoutSink {
    fn line(&self, name: &str, index: usize, line: &str) {
        self.1.suspend(|| self.0.print(name, index, line));
    }
}

/// Starts the fork server for container helpers; without one, helpers are re-executed.
/// Must run while this process is single-threaded.
fn start_forkserver() -> Option<Arc<ForkServer>> {
    if std::env::var_os("RCOMPOSE_NO_FORKSERVER").is_some() {
        return None;
    }
    // SAFETY: both callers run before this process starts any thread.
    unsafe { ForkServer::start() }.ok().map(Arc::new)
}

/// Resolves stored images and tarball layers into layer directories (see
/// [`crate::image::prepare`]); `offline` never contacts a registry.
///
/// Layer directories within `watched` (those redeploy watch rules watch) are replaced by
/// their snapshots in the store (see [`crate::watch::snapshot`]).
pub(super) fn prepare_images(
    ctx: &Context,
    desired: &mut DesiredState,
    offline: bool,
    watched: &[PathBuf],
) -> Result<(), Error> {
    prepare_volumes(ctx, desired)?;
    let options = PrepareOptions {
        offline,
        ..PrepareOptions::default()
    };
    if offline {
        prepare(desired, &ctx.store, &options, &crate::image::Quiet)?;
    } else {
        let progress = LayerProgress::new();
        let result = prepare(desired, &ctx.store, &options, &progress);
        progress.finish();
        result?;
    }
    super::watch::snapshot_layers(&ctx.store, desired, watched)
}

/// The directory of a project's named volumes: `<data dir>/volumes/<project>` (the data dir
/// is the store's root); each volume is a directory in it.
pub(super) fn volumes_dir(ctx: &Context, project: &str) -> PathBuf {
    ctx.store.join("volumes").join(project)
}

/// Makes the project's named volumes (kept across `down`, removed by `down -v`) and points
/// the mounts that use them at their directories.
fn prepare_volumes(ctx: &Context, desired: &mut DesiredState) -> Result<(), Error> {
    for name in &desired.volumes {
        let dir = volumes_dir(ctx, &desired.project).join(name);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: format!("create volume `{name}` at `{}`", dir.display()),
            source,
        })?;
    }
    let project = desired.project.clone();
    for pod in desired.pods.values_mut() {
        for c in &mut pod.containers {
            for m in &mut c.mounts {
                if let MountSource::Volume(name) = &m.source {
                    m.source = MountSource::Host(volumes_dir(ctx, &project).join(name));
                }
            }
        }
    }
    Ok(())
}

/// Stops the fork server on a path where no supervisor took charge of it (the supervisor
/// stops it at its teardown), so that a failed `up` leaves no process behind.
fn stop_unused(server: Option<&Arc<ForkServer>>) {
    if let Some(server) = server {
        server.stop(Path::new("/proc"));
    }
}

/// Whether the project's supervisor runs (its control socket is there and its recorded
/// process is alive).
pub(super) fn is_up(paths: &crate::supervisor::state::ProjectPaths) -> bool {
    use crate::supervisor::state::{ProjectState, is_same_process};
    paths.control_socket().exists()
        && ProjectState::load(&paths.state_file())
            .ok()
            .flatten()
            .is_some_and(|s| {
                is_same_process(Path::new("/proc"), s.supervisor_pid, s.supervisor_start)
            })
}

/// `up` on a project whose supervisor runs: sends it the new desired state (see
/// [`crate::supervisor::control`]), which recreates only the pods that changed, and reports
/// what it did. `None` when no supervisor of the project runs (a new one is started then).
pub(super) fn apply_to_running(
    ctx: &Context,
    desired: &mut DesiredState,
    partial: bool,
    watched: &[PathBuf],
) -> Result<Option<ExitCode>, Error> {
    use crate::supervisor::control::{self, Change, ControlError, Request};
    use crate::supervisor::state::ProjectPaths;
    let paths = ProjectPaths::new(&Context::run_root(), &desired.project);
    let socket = paths.control_socket();
    if !is_up(&paths) {
        return Ok(None);
    }
    prepare_images(ctx, desired, false, watched)?;
    // configs and secrets from environment variables take this process's values
    let mut env = std::collections::BTreeMap::new();
    for pod in desired.pods.values() {
        for f in pod.containers.iter().flat_map(|c| &c.files) {
            if let crate::plan::desired::FileContent::Environment(v) = &f.content
                && let Ok(value) = std::env::var(v)
            {
                env.insert(v.clone(), value);
            }
        }
    }
    let request = Request::Apply {
        desired: Box::new(desired.clone()),
        env,
        partial,
    };
    // the answer comes once the changed pods run (a `healthy` dependency may take a while)
    let timeout = Duration::from_secs(600);
    let response = match control::send(&socket, &desired.project, &request, timeout) {
        Ok(r) => r,
        // it exited meanwhile: start afresh
        Err(ControlError::NotListening { .. }) => return Ok(None),
        Err(e) => return Err(Error::Up(crate::supervisor::chain(&e))),
    };
    let progress = CliProgress::new(&desired.project);
    for (pod, change) in &response.pods {
        if *change == Change::RolledOut && response.error.is_some() {
            progress.println(&format!("pod `{pod}`: rollout failed (rolled back)"));
        } else if *change != Change::Unchanged {
            progress.println(&format!("pod `{pod}`: {}", change.as_str()));
        }
    }
    if response.pods.values().all(|c| *c == Change::Unchanged) && response.error.is_none() {
        progress.println("up to date");
    }
    progress.finish();
    match response.error {
        Some(e) => Err(Error::Up(e)),
        None => Ok(Some(ExitCode::SUCCESS)),
    }
}

/// Every external runtime the stack uses must be installed, and gives no terminal yet:
/// checked before anything starts.
fn check_runtimes(desired: &DesiredState) -> Result<(), Error> {
    use crate::manifest::RuntimeKind;
    use crate::runtime::oci::{ExternalRuntime, Kind};
    for pod in desired.pods.values() {
        for c in &pod.containers {
            let kind = match c.runtime {
                RuntimeKind::Builtin => continue,
                RuntimeKind::Crun => Kind::Crun,
                RuntimeKind::Runc => Kind::Runc,
            };
            ExternalRuntime::find(kind)
                .map_err(|e| Error::Prerequisite(crate::supervisor::chain(&e)))?;
            if c.tty {
                return Err(Error::Up(format!(
                    "container `{}.{}` asks for `tty`, which runtime `{kind}` does not support yet; use the builtin runtime",
                    pod.name, c.name
                )));
            }
        }
    }
    Ok(())
}

/// The desired state and its manifest's files (absolute; the first is the main one),
/// restricted to `pods` and their dependencies when some are named, and the layer
/// directories that redeploy watch rules watch.
fn selected(
    ctx: &Context,
    pods: &[String],
) -> Result<(DesiredState, Vec<PathBuf>, Vec<PathBuf>), Error> {
    let (m, desired, files) = ctx.load()?;
    let watched = super::watch::redeploy_dirs(ctx, &m, &main_file(&files));
    if pods.is_empty() {
        return Ok((desired, files, watched));
    }
    let desired = crate::plan::select(&desired, pods).map_err(Error::Up)?;
    Ok((desired, files, watched))
}

/// The main file of a manifest's files (the first: it names the project directory).
pub(super) fn main_file(files: &[PathBuf]) -> PathBuf {
    files.first().cloned().unwrap_or_default()
}

/// `up --abort-on-exit` / `--exit-code-from POD`.
#[derive(Debug, Clone, Default)]
pub(super) struct Abort {
    /// Stop everything when a container exits.
    pub(super) on_exit: bool,
    /// And return this pod's exit code.
    pub(super) code_from: Option<String>,
}

/// `up` in the foreground; with `watch` (`--watch`, its debounce), the watch rules are
/// applied from the moment the stack is up until it stops.
pub(super) fn foreground(
    ctx: &Context,
    grace: Duration,
    pods: &[String],
    abort: Abort,
    watch: Option<Duration>,
) -> Result<ExitCode, Error> {
    let (mut desired, files, watched) = selected(ctx, pods)?;
    if let Some(pod) = &abort.code_from {
        crate::plan::select(&desired, std::slice::from_ref(pod))
            .map_err(|e| Error::Up(format!("--exit-code-from: {e}")))?;
    }
    prerequisites()?;
    check_runtimes(&desired)?;
    if let Some(code) = apply_to_running(ctx, &mut desired, !pods.is_empty(), &watched)? {
        // already up: watch it from here
        return match watch {
            Some(debounce) => super::watch::attach(ctx, debounce, pods),
            None => Ok(code),
        };
    }
    let watch = watch.map(|d| (d, pods.to_vec()));
    supervise_here(ctx, desired, files, grace, abort, &watched, watch)
}

/// `run [--rm] POD [COMMAND...]`: the pod's dependencies, then one replica of the pod (its
/// command replaced by COMMAND, if given, and never restarted), in the foreground; when its
/// container exits, everything is stopped and removed, and its exit code is returned. The
/// project must not be up (a one-shot environment of its own; `-p` gives it another name).
pub(super) fn run(
    ctx: &Context,
    grace: Duration,
    pod: &str,
    command: &[String],
) -> Result<ExitCode, Error> {
    let (desired, files, watched) = selected(ctx, &[pod.to_string()])?;
    let mut desired = desired;
    if let Some(p) = desired.pods.get_mut(pod) {
        p.replicas = 1;
        p.restart = crate::plan::desired::RestartPolicy::Never;
        let main = p.containers.iter_mut().find(|c| !c.init);
        if let (Some(c), false) = (main, command.is_empty()) {
            c.command = Some(command.to_vec());
        }
    }
    prerequisites()?;
    check_runtimes(&desired)?;
    let paths = crate::supervisor::state::ProjectPaths::new(&Context::run_root(), &desired.project);
    if is_up(&paths) {
        return Err(Error::Up(format!(
            "project `{0}` is up: `run` makes a one-shot environment of its own; give it another name (`-p {0}-run`) or `down` first",
            desired.project
        )));
    }
    let abort = Abort {
        on_exit: false,
        code_from: Some(pod.to_string()),
    };
    supervise_here(ctx, desired, files, grace, abort, &watched, None)
}

/// Runs the supervisor of `desired` in this process (`up` in the foreground, `run`); with
/// `watch` (a debounce, and the pods `up` names), a watcher thread applies the watch rules
/// once the stack is up.
fn supervise_here(
    ctx: &Context,
    mut desired: DesiredState,
    manifests: Vec<PathBuf>,
    grace: Duration,
    abort: Abort,
    watched: &[PathBuf],
    watch: Option<(Duration, Vec<String>)>,
) -> Result<ExitCode, Error> {
    // first, while this process has a single thread (the progress bar starts one)
    let server = start_forkserver();
    if let Err(e) = prepare_images(ctx, &mut desired, false, watched) {
        stop_unused(server.as_ref());
        return Err(e);
    }
    // before the progress bar's ticker thread starts: a thread that does not block them
    // would take SIGCHLD (lost: no exit seen), SIGINT and SIGTERM (killed without teardown)
    if let Err(e) = crate::supervisor::block_signals() {
        stop_unused(server.as_ref());
        return Err(Error::Io {
            what: "block signals".into(),
            source: e,
        });
    }
    let names = display_names(&desired);
    let progress = Arc::new(CliProgress::new(&desired.project));
    let sink = Arc::new(StdoutSink(
        LinePrinter::new(&names, output::stdout_colour()),
        progress.clone(),
    ));
    let opts = match options(
        desired,
        ctx.recorded(&manifests),
        grace,
        false,
        server.clone(),
    ) {
        Ok(mut o) => {
            o.abort_on_exit = abort.on_exit;
            o.exit_code_from = abort.code_from;
            o
        }
        Err(e) => {
            stop_unused(server.as_ref());
            return Err(e);
        }
    };
    let sup = match Supervisor::new(opts, progress.clone(), Some(sink)) {
        Ok(s) => s,
        Err(e) => {
            progress.finish();
            stop_unused(server.as_ref());
            return Err(e.into());
        }
    };
    drop(server);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut watcher = None;
    let outcome = sup.run(&mut |r| {
        if let (Ok(()), Some((debounce, only))) = (r, &watch)
            && watcher.is_none()
        {
            watcher = Some(super::watch::spawn(
                ctx.clone(),
                *debounce,
                only.clone(),
                stop.clone(),
                progress.clone(),
            ));
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    progress.finish();
    match outcome {
        Outcome::AllExited => Ok(ExitCode::SUCCESS),
        Outcome::Signalled(n) => Ok(ExitCode::from(u8::try_from(128 + n).unwrap_or(1))),
        Outcome::StartFailed(m) => Err(Error::Up(m)),
        Outcome::Aborted { code, .. } => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
    }
}

/// `up -d`: starts `rcompose __supervise` in its own session and waits for its report.
pub(super) fn detached(
    ctx: &Context,
    timeout: u64,
    wait: Wait,
    pods: &[String],
) -> Result<ExitCode, Error> {
    let (mut desired, files, watched) = selected(ctx, pods)?;
    prerequisites()?;
    check_runtimes(&desired)?;
    if let Some(code) = apply_to_running(ctx, &mut desired, !pods.is_empty(), &watched)? {
        return Ok(code);
    }
    // imports and pulls happen here, with progress on this terminal; the supervisor finds
    // everything in the store
    prepare_images(ctx, &mut desired, false, &watched)?;
    let io_err = |what: &str| {
        let what = what.to_string();
        move |source| Error::Io { what, source }
    };
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Io {
            what: "create a pipe".into(),
            source: e.into(),
        })?;
    let wfd = write.as_raw_fd();
    let mut cmd = Command::new(current_exe()?);
    // every file of the manifest (an override found without `-f` too): the supervisor loads
    // the same merged project; one read from standard input is handed on through its own
    let stdin_text = files
        .iter()
        .any(|f| ctx.is_stdin(f))
        .then(|| ctx.stdin_text())
        .transpose()
        .map_err(io_err("read the manifest from standard input"))?;
    for file in ctx.recorded(&files) {
        cmd.arg("-f").arg(file);
    }
    cmd.arg("-p")
        .arg(&desired.project)
        .arg("--store")
        .arg(&ctx.store);
    if let Some(runtime) = ctx.runtime {
        cmd.arg("--runtime").arg(runtime.as_str());
    }
    if let Some(dir) = &ctx.project_dir {
        cmd.arg("--project-directory").arg(super::absolute(dir)?);
    }
    // the supervisor loads the manifest again: with the same Compose profiles
    for profile in &ctx.profiles {
        cmd.arg("--profile").arg(profile);
    }
    cmd.arg("__supervise")
        .arg("--timeout")
        .arg(timeout.to_string())
        .args(wait.args())
        .arg("--")
        .args(pods)
        .stdin(if stdin_text.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid, dup2 and fcntl are async-signal-safe; the fds are valid in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let ok = if wfd == NOTIFY_FD {
                libc::fcntl(wfd, libc::F_SETFD, 0)
            } else {
                libc::dup2(wfd, NOTIFY_FD)
            };
            if ok < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io_err("start the supervisor"))?;
    drop(write);
    if let (Some(text), Some(mut pipe)) = (stdin_text, child.stdin.take()) {
        // A supervisor that fails before it read it all reports that on the notify pipe
        // (below), which says more than the broken pipe here would.
        let _ = pipe.write_all(text.as_bytes());
    }
    drop(cmd);
    let progress = CliProgress::new(&desired.project);
    let mut result = Err(Error::Up(
        "the supervisor exited before the stack was up".into(),
    ));
    for line in BufReader::new(File::from(read)).lines() {
        let Ok(line) = line else { break };
        if let Some(text) = line.strip_prefix("event ") {
            progress.println(text);
        } else if line == "ready" {
            result = Ok(ExitCode::SUCCESS);
            break;
        } else if let Some(msg) = line.strip_prefix("failed ") {
            result = Err(Error::Up(msg.to_string()));
        }
    }
    progress.finish();
    if result.is_err() {
        // the supervisor has removed everything and is exiting: wait, so that nothing of the
        // project is left when `up -d` returns
        let mut child = child;
        let _ = child.wait();
    }
    // on success the supervisor lives on in its own session; it is not ours to wait for
    result
}

/// Forwards events to `up -d` over the notify pipe until the stack is up.
struct PipeProgress(Mutex<Option<File>>);

impl PipeProgress {
    fn send(&self, line: &str) {
        if let Ok(mut guard) = self.0.lock()
            && let Some(f) = guard.as_mut()
        {
            let one_line = line.replace('\n', " ");
            if writeln!(f, "{one_line}").is_err() {
                *guard = None;
            }
        }
    }
    fn close(&self) {
        if let Ok(mut guard) = self.0.lock() {
            *guard = None;
        }
    }
}

impl Progress for PipeProgress {
    fn event(&self, event: &Event) {
        if let Some(text) = output::format_event(event) {
            self.send(&format!("event {text}"));
        }
    }
}

/// The detached supervisor (`__supervise`): runs until `down` (SIGTERM).
pub(super) fn supervise(
    ctx: &Context,
    grace: Duration,
    wait: Wait,
    pods: &[String],
) -> Result<ExitCode, Error> {
    // Keep nothing the caller of `up -d` left open (its pipes would stay open as long as
    // this supervisor runs): only stdio and the notify pipe at fd 3.
    runtime::init::close_inherited_fds(4);
    // SAFETY: `up -d` put the notify pipe at fd 3 and nothing else in this process owns it.
    let notify = unsafe { File::from_raw_fd(NOTIFY_FD) };
    let _ = nix::fcntl::fcntl(
        &notify,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let progress = Arc::new(PipeProgress(Mutex::new(Some(notify))));
    let fail = |e: Error| {
        let text = output::error_text(&e).replace("\ncaused by: ", ": ");
        progress.send(&format!("failed {text}"));
        Ok(ExitCode::from(e.exit_status() as u8))
    };
    let (mut desired, files, watched) = match selected(ctx, pods) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    // this process has no thread yet
    let server = start_forkserver();
    if let Err(e) = prepare_images(ctx, &mut desired, true, &watched) {
        stop_unused(server.as_ref());
        return fail(e);
    }
    let opts = match options(desired, ctx.recorded(&files), grace, true, server.clone()) {
        Ok(mut o) => {
            o.wait = wait.wait;
            o.wait_timeout = wait.timeout.map(Duration::from_secs);
            o
        }
        Err(e) => {
            stop_unused(server.as_ref());
            return fail(e);
        }
    };
    let sup = match Supervisor::new(opts, progress.clone(), None) {
        Ok(s) => s,
        Err(e) => {
            stop_unused(server.as_ref());
            return fail(e.into());
        }
    };
    drop(server);
    let mut failure = None;
    let outcome = sup.run(&mut |r| match r {
        Ok(()) => {
            progress.send("ready");
            progress.close();
        }
        Err(m) => failure = Some(m),
    });
    if let Some(m) = failure {
        // reported after teardown, so `up -d` returns only once nothing is left
        progress.send(&format!("failed {m}"));
    }
    Ok(match outcome {
        Outcome::StartFailed(_) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}
