//! Readiness, liveness and startup probes of running containers (Kubernetes' model).
//!
//! The main loop owns every probe's schedule. A due probe runs off the loop: `exec` as an
//! `__exec` helper in the container (its exit, reaped like any child, is the result; a
//! probe past its timeout is killed), `http` and `tcp` on a short-lived thread that enters
//! the pod's network namespace (`setns` moves that thread only) and connects to 127.0.0.1.
//! Results come back as messages and are matched to the container's current run, so a
//! result of an earlier run is dropped.
//!
//! Readiness is probed every 100 ms (or `period`, if shorter) until the container was first
//! ready, so a dependency that becomes ready releases its dependents at once, then every
//! `period`. Startup and liveness run every `period`: their failures restart the container.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::{ContainerState, Event, Msg, Supervisor};
use crate::plan::desired::{ProbeAction, ProbePlan};
use crate::runtime::exec::{ExecRequest, spawn_probe};

/// Readiness probing before the container was first ready.
pub const FAST_PERIOD: Duration = Duration::from_millis(100);

/// Longest HTTP response head read.
const MAX_HEAD: u64 = 8 * 1024;

/// The three probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `readiness`.
    Readiness = 0,
    /// `liveness`.
    Liveness = 1,
    /// `startup`.
    Startup = 2,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Readiness, Kind::Liveness, Kind::Startup];

    fn name(self) -> &'static str {
        match self {
            Kind::Readiness => "readiness",
            Kind::Liveness => "liveness",
            Kind::Startup => "startup",
        }
    }
}

/// One probe's schedule and counts.
#[derive(Debug, Default, Clone)]
struct Track {
    due: Option<Instant>,
    in_flight: bool,
    successes: u32,
    failures: u32,
}

/// The probe state of one container run.
#[derive(Debug, Default, Clone)]
pub(super) struct Probing {
    /// The startup probe passed (or there is none).
    started: bool,
    /// The container was ready at least once in this run.
    ever_ready: bool,
    tracks: [Track; 3],
}

/// A probe's result, for the main loop.
#[derive(Debug)]
pub(super) struct Outcome {
    /// The slot's id and run.
    pub slot: u64,
    pub run: u64,
    pub kind: Kind,
    /// Why it failed, or `None` for a success.
    pub failure: Option<String>,
}

/// An `exec` probe whose helper runs.
pub(super) struct ExecInFlight {
    slot: u64,
    run: u64,
    kind: Kind,
    deadline: Instant,
    timed_out: bool,
    /// Kept open until the helper exits.
    _channel: UnixStream,
}

impl Supervisor {
    fn plan_of(&self, i: usize, kind: Kind) -> Option<&ProbePlan> {
        let plan = &self.slots[i].plan;
        match kind {
            Kind::Readiness => plan.readiness.as_ref(),
            Kind::Liveness => plan.liveness.as_ref(),
            Kind::Startup => plan.startup.as_ref(),
        }
    }

    /// Resets the probes of slot `i`, whose container just started.
    pub(super) fn start_probes(&mut self, i: usize) {
        let now = Instant::now();
        let mut probing = Probing {
            started: self.slots[i].plan.startup.is_none(),
            ..Probing::default()
        };
        for kind in Kind::ALL {
            let Some(plan) = self.plan_of(i, kind) else {
                continue;
            };
            // readiness and liveness wait for the startup probe
            if kind == Kind::Startup || probing.started {
                probing.tracks[kind as usize].due = Some(now + plan.initial_delay);
            }
        }
        let s = &mut self.slots[i];
        // without a readiness probe a container is ready once started
        s.record.ready = probing.started && s.plan.readiness.is_none();
        s.probing = probing;
    }

    /// The next time a probe is due or an exec probe times out.
    pub(super) fn next_probe(&self) -> Option<Instant> {
        let due = self
            .slots
            .iter()
            .filter(|s| s.record.state == ContainerState::Running)
            .flat_map(|s| s.probing.tracks.iter())
            .filter(|t| !t.in_flight)
            .filter_map(|t| t.due);
        let deadlines = self.exec_probes.values().map(|e| e.deadline);
        due.chain(deadlines)
            .chain(self.slots.iter().filter_map(|s| s.kill_at))
            .min()
    }

    /// Starts every probe that is due, kills exec probes past their timeout, and sends
    /// SIGKILL to containers whose grace period after a failed probe ran out.
    pub(super) fn run_due_probes(&mut self, tx: &Sender<Msg>) {
        let now = Instant::now();
        for e in self.exec_probes.iter_mut().map(|(_, e)| e) {
            if !e.timed_out && e.deadline <= now {
                e.timed_out = true;
            }
        }
        for (pid, e) in &self.exec_probes {
            if e.timed_out {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
        for i in 0..self.slots.len() {
            if self.slots[i].kill_at.is_some_and(|t| t <= now) {
                self.slots[i].kill_at = None;
                if let Some(pid) = self.slots[i].record.pid {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if self.slots[i].record.state != ContainerState::Running
                || self.slots[i].killing.is_some()
            {
                continue;
            }
            for kind in Kind::ALL {
                let t = &self.slots[i].probing.tracks[kind as usize];
                if t.in_flight || t.due.is_none_or(|d| d > now) {
                    continue;
                }
                let Some(plan) = self.plan_of(i, kind).cloned() else {
                    continue;
                };
                self.slots[i].probing.tracks[kind as usize].in_flight = true;
                if let Err(failure) = self.launch_probe(i, kind, &plan, tx) {
                    let (slot, run) = (self.slots[i].id, self.slots[i].run);
                    self.probe_result(&Outcome {
                        slot,
                        run,
                        kind,
                        failure: Some(failure),
                    });
                }
            }
        }
    }

    fn launch_probe(
        &mut self,
        i: usize,
        kind: Kind,
        plan: &ProbePlan,
        tx: &Sender<Msg>,
    ) -> Result<(), String> {
        let (slot, run) = (self.slots[i].id, self.slots[i].run);
        match &plan.action {
            ProbeAction::Exec(argv) => {
                let s = &self.slots[i];
                let request = ExecRequest {
                    command: argv.clone(),
                    ..ExecRequest::default()
                };
                let spec =
                    super::exec::spec_for(&s.record, self.name(i), &self.opts.proc_root, request)
                        .map_err(|e| super::chain(&e))?;
                let process = spawn_probe(&self.opts.exe, &spec).map_err(|e| super::chain(&e))?;
                let (pid, channel) = process.into_parts();
                self.exec_probes.insert(
                    pid.as_raw(),
                    ExecInFlight {
                        slot,
                        run,
                        kind,
                        deadline: Instant::now() + plan.timeout,
                        timed_out: false,
                        _channel: channel,
                    },
                );
                Ok(())
            }
            ProbeAction::Http { port, path } => {
                let netns = self.slots[i].netns.clone();
                let (port, path, timeout) = (*port, path.clone(), plan.timeout);
                spawn_net_probe(
                    tx.clone(),
                    slot,
                    run,
                    kind,
                    netns,
                    timeout,
                    move |addr, t| http_get(addr, &path, port, t),
                    port,
                )
            }
            ProbeAction::Tcp { port } => {
                let netns = self.slots[i].netns.clone();
                spawn_net_probe(
                    tx.clone(),
                    slot,
                    run,
                    kind,
                    netns,
                    plan.timeout,
                    |addr, t| {
                        TcpStream::connect_timeout(&addr, t)
                            .map(drop)
                            .map_err(|e| format!("connect to {addr}: {e}"))
                    },
                    *port,
                )
            }
        }
    }

    /// Takes the exits of exec probe helpers out of `exits` and applies them.
    pub(super) fn collect_probe_exits(&mut self, exits: &mut HashMap<i32, WaitStatus>) {
        let done: Vec<i32> = exits
            .keys()
            .copied()
            .filter(|pid| self.exec_probes.contains_key(pid))
            .collect();
        for pid in done {
            let (Some(status), Some(e)) = (exits.remove(&pid), self.exec_probes.remove(&pid))
            else {
                continue;
            };
            let failure = match status {
                _ if e.timed_out => Some("timed out".to_string()),
                WaitStatus::Exited(_, 0) => None,
                WaitStatus::Exited(_, code) => Some(format!("exit code {code}")),
                WaitStatus::Signaled(_, sig, _) => Some(format!("killed by {}", sig.as_str())),
                _ => Some("ended".to_string()),
            };
            self.probe_result(&Outcome {
                slot: e.slot,
                run: e.run,
                kind: e.kind,
                failure,
            });
        }
    }

    /// Applies a probe's result to its container (if it is still the same run).
    pub(super) fn probe_result(&mut self, o: &Outcome) {
        let Some(i) = self.slots.iter().position(|s| s.id == o.slot) else {
            return;
        };
        if self.slots[i].run != o.run || self.slots[i].record.state != ContainerState::Running {
            return;
        }
        let Some(plan) = self.plan_of(i, o.kind).cloned() else {
            return;
        };
        let now = Instant::now();
        let name = self.name(i);
        let s = &mut self.slots[i];
        let t = &mut s.probing.tracks[o.kind as usize];
        t.in_flight = false;
        match &o.failure {
            None => {
                t.successes += 1;
                t.failures = 0;
            }
            Some(_) => {
                t.failures += 1;
                t.successes = 0;
            }
        }
        let (successes, failures) = (t.successes, t.failures);
        let mut period = plan.period;
        let mut restart = None;
        match o.kind {
            Kind::Startup => {
                if o.failure.is_none() {
                    s.probing.started = true;
                    s.probing.tracks[Kind::Startup as usize].due = None;
                    // readiness and liveness begin now (their delays count from the start)
                    let began = s.started_at.unwrap_or(now);
                    for kind in [Kind::Readiness, Kind::Liveness] {
                        let delay = match kind {
                            Kind::Readiness => s.plan.readiness.as_ref(),
                            _ => s.plan.liveness.as_ref(),
                        }
                        .map(|p| p.initial_delay);
                        if let Some(delay) = delay {
                            s.probing.tracks[kind as usize].due = Some((began + delay).max(now));
                        }
                    }
                    if s.plan.readiness.is_none() {
                        s.record.ready = true;
                        self.emit(&Event::Readiness {
                            name,
                            ready: true,
                            detail: None,
                        });
                    }
                    return;
                }
                if failures >= plan.failure_threshold {
                    restart = Some(format!(
                        "startup probe failed {failures} times: {}",
                        o.failure.as_deref().unwrap_or_default()
                    ));
                }
            }
            Kind::Liveness => {
                if failures >= plan.failure_threshold {
                    restart = Some(format!(
                        "liveness probe failed {failures} times: {}",
                        o.failure.as_deref().unwrap_or_default()
                    ));
                }
            }
            Kind::Readiness => {
                if !s.probing.ever_ready {
                    period = period.min(FAST_PERIOD);
                }
                let was = s.record.ready;
                if o.failure.is_none() && successes >= plan.success_threshold {
                    s.record.ready = true;
                    s.probing.ever_ready = true;
                } else if o.failure.is_some() && failures >= plan.failure_threshold {
                    s.record.ready = false;
                }
                if was != s.record.ready {
                    let ready = s.record.ready;
                    self.emit(&Event::Readiness {
                        name: name.clone(),
                        ready,
                        detail: o.failure.clone(),
                    });
                    let _ = self.save();
                }
            }
        }
        if let Some(reason) = &restart {
            self.emit(&Event::Unhealthy {
                name,
                probe: o.kind.name(),
                message: reason.clone(),
            });
        }
        let s = &mut self.slots[i];
        if let Some(reason) = restart {
            s.record.ready = false;
            s.killing = Some(reason);
            if let Some(pid) = s.record.pid {
                let signal = Signal::try_from(s.plan.stop_signal).unwrap_or(Signal::SIGTERM);
                let _ = kill(Pid::from_raw(pid), signal);
                let grace = s.plan.stop_grace_period.unwrap_or(self.opts.grace);
                s.kill_at = Some(now + grace);
            }
            let _ = self.save();
            return;
        }
        s.probing.tracks[o.kind as usize].due = Some(now + period);
    }
}

/// Runs `probe` on a thread of its own inside the network namespace pinned at `netns`, and
/// sends its outcome to the main loop.
#[allow(clippy::too_many_arguments)]
fn spawn_net_probe(
    tx: Sender<Msg>,
    slot: u64,
    run: u64,
    kind: Kind,
    netns: PathBuf,
    timeout: Duration,
    probe: impl FnOnce(SocketAddr, Duration) -> Result<(), String> + Send + 'static,
    port: u16,
) -> Result<(), String> {
    thread::Builder::new()
        .name("probe".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let failure = crate::network::enter_netns(&netns)
                .map_err(|e| super::chain(&e))
                .and_then(|()| probe(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout))
                .err();
            let _ = tx.send(Msg::Probe(Outcome {
                slot,
                run,
                kind,
                failure,
            }));
        })
        .map(drop)
        .map_err(|e| format!("cannot start a probe thread: {e}"))
}

/// `GET path` on `addr`; 2xx and 3xx pass.
fn http_get(addr: SocketAddr, path: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let _ = stream.set_write_timeout(Some(left()));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: rcompose-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let _ = stream.set_read_timeout(Some(left()));
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    let mut limited = (&stream).take(MAX_HEAD);
    while !head.windows(2).any(|w| w == b"\r\n") {
        match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("GET {path}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP response"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET {path}: HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(response.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn http_statuses_2xx_and_3xx_pass() {
        for (response, ok) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            ("HTTP/1.0 302 Found\r\n\r\n", true),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
            ("hello\r\n", false),
        ] {
            let addr = serve_once(response);
            let r = http_get(addr, "/health", addr.port(), Duration::from_secs(2));
            assert_eq!(r.is_ok(), ok, "{response:?}: {r:?}");
        }
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let start = Instant::now();
        let r = http_get(addr, "/", addr.port(), Duration::from_millis(200));
        assert!(r.is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(listener);
    }
}
