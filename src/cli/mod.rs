//! L4: the command line: clap arguments turned into options, dispatch, output (tables,
//! JSON, progress) and error rendering. The only home of clap and indicatif.

mod control;
mod exec;
mod export;
mod fault;
mod image;
mod info;
mod output;
mod rollout;
mod stats;
mod up;
mod watch;

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{Error, ExitStatus};
use crate::manifest::{self, ValidManifest};
use crate::plan::{self, desired::DesiredState};
use crate::supervisor::control::Request;
use crate::supervisor::state::{
    ContainerRecord, ProjectPaths, ProjectState, display_name, is_same_process,
};
use crate::supervisor::{self, teardown};

/// Where state lives unless `RCOMPOSE_RUN_DIR` says otherwise.
pub const DEFAULT_RUN_ROOT: &str = "/run/rcompose";

/// rcompose: run a stack of pods from one manifest, with namespaces and cgroups.
#[derive(Debug, Parser)]
#[command(name = "rcompose", version = info::LONG_VERSION, about, max_term_width = 100)]
struct Cli {
    /// The manifest: an rcompose.yaml or a Compose file; repeated, Compose files merged in
    /// order (also `RCOMPOSE_FILE`, else `COMPOSE_FILE`: paths separated by `:`) [default: the
    /// first of rcompose.yaml, compose.yaml, compose.yml, docker-compose.yml,
    /// docker-compose.yaml in the project directory, with a Compose file's
    /// compose.override.yml (or .yaml, docker-compose.override.yml, .yaml) merged over it];
    /// `-` reads one from standard input (relative paths start at the current directory)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Vec<PathBuf>,
    /// Enable the Compose services of this profile (repeatable; also `COMPOSE_PROFILES`, comma
    /// separated; `*` enables all)
    #[arg(long = "profile", value_name = "PROFILE")]
    profiles: Vec<String>,
    /// Project name [default: the manifest's `name`, else the project directory's name]
    #[arg(
        short = 'p',
        long = "project-name",
        value_name = "NAME",
        env = "RCOMPOSE_PROJECT_NAME"
    )]
    project: Option<String>,
    /// The directory relative paths of the manifest start from, where the manifest is
    /// looked for without -f, and whose name names the project [default: the manifest's
    /// directory]
    #[arg(long = "project-directory", value_name = "DIR")]
    project_directory: Option<PathBuf>,
    /// The image store
    #[arg(
        long = "store",
        value_name = "DIR",
        env = "RCOMPOSE_STORE",
        default_value = crate::image::store::DEFAULT_ROOT
    )]
    store: PathBuf,
    /// Run every pod with this runtime: `builtin`, or an installed `crun` or `runc` [default:
    /// each pod's `runtime`, else builtin]
    #[arg(long = "runtime", value_name = "RUNTIME", env = "RCOMPOSE_RUNTIME", value_parser = parse_runtime)]
    runtime: Option<crate::manifest::RuntimeKind>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and start the stack; stays in the foreground unless -d
    Up {
        /// Start in the background and return once every pod is running
        #[arg(short = 'd', long)]
        detach: bool,
        /// With -d (implied): return once every pod is ready (readiness probes pass) or has
        /// completed with exit code 0; a pod that fails first fails `up` and the stack is
        /// removed
        #[arg(long)]
        wait: bool,
        /// With --wait: give up (and remove the stack) after this many seconds
        #[arg(long, value_name = "SECONDS", requires = "wait")]
        wait_timeout: Option<u64>,
        /// Stop everything when a container exits (for good) and return its exit code
        #[arg(long, alias = "abort-on-container-exit", conflicts_with_all = ["detach", "wait"])]
        abort_on_exit: bool,
        /// Stop everything when a container exits and return this pod's exit code
        #[arg(long, value_name = "POD", conflicts_with_all = ["detach", "wait"])]
        exit_code_from: Option<String>,
        /// Seconds containers get between SIGTERM and SIGKILL at teardown
        #[arg(
            short = 't',
            long = "timeout",
            value_name = "SECONDS",
            default_value_t = 10
        )]
        timeout: u64,
        /// Watch the files of the manifest's `watch:` rules (and the manifest) once the
        /// stack is up, and sync, restart or redeploy on changes, until Ctrl-C (with -d: the
        /// stack stays up, this command watches in the foreground)
        #[arg(long, conflicts_with_all = ["abort_on_exit", "exit_code_from"])]
        watch: bool,
        /// With --watch: the quiet time after a change before acting (`100ms`, `0.5s`)
        #[arg(long, value_name = "DURATION", requires = "watch", value_parser = watch::parse_debounce)]
        debounce: Option<Duration>,
        /// Only these pods and what they depend on [default: every pod]
        #[arg(value_name = "POD")]
        pods: Vec<String>,
    },
    /// Watch the files of the manifest's `watch:` rules and the manifest itself, and apply
    /// the rules (sync, restart, redeploy) to the running project, until Ctrl-C
    Watch {
        /// The quiet time after a change before acting (`100ms`, `0.5s`)
        #[arg(long, value_name = "DURATION", value_parser = watch::parse_debounce)]
        debounce: Option<Duration>,
    },
    /// Stream the project's events (started, ready, unready, exited, restarting, ...) with
    /// their times, from its start, until the project is removed
    Events {
        /// Output format: a line of text, or a JSON object, per event
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run one pod (and what it depends on) in the foreground, return its exit code, and
    /// remove everything
    Run {
        /// Remove everything afterwards (always done: accepted for Compose's `run --rm`)
        #[arg(long)]
        rm: bool,
        /// Seconds containers get between SIGTERM and SIGKILL at teardown
        #[arg(
            short = 't',
            long = "timeout",
            value_name = "SECONDS",
            default_value_t = 10
        )]
        timeout: u64,
        /// The pod
        #[arg(value_name = "POD")]
        pod: String,
        /// Its command instead of the manifest's
        #[arg(
            value_name = "COMMAND",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<String>,
    },
    /// Stop and remove everything of the project
    Down {
        /// Seconds every container gets between its stop signal and SIGKILL [default: each
        /// container's `stop_grace_period`, else `up -t`, else 10]
        #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Also remove the project's named volumes
        #[arg(short = 'v', long = "volumes")]
        volumes: bool,
    },
    /// Stop the containers of running pods (dependents first) and keep them stopped until
    /// `start`
    Stop {
        /// Seconds each container gets between its stop signal and SIGKILL [default: its
        /// `stop_grace_period`, else 10]
        #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Only these pods [default: every pod]
        pods: Vec<String>,
    },
    /// Start stopped or exited pods again, with the dependencies they need, in dependency
    /// order
    Start {
        /// Only these pods [default: every pod]
        pods: Vec<String>,
    },
    /// Stop the containers of pods and start them again
    Restart {
        /// Seconds each container gets between its stop signal and SIGKILL [default: its
        /// `stop_grace_period`, else 10]
        #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Only these pods [default: every pod]
        pods: Vec<String>,
    },
    /// A pod's rolling updates: how the one in progress stands, the revisions, and back to
    /// an earlier one
    Rollout {
        /// What to do
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// List the nodes: status, CPU and memory requested of their capacity, replicas
    Nodes {
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Take a node down (as if the machine died), bring it back up, or drain it
    Node {
        /// What to do
        #[command(subcommand)]
        action: NodeCommand,
    },
    /// Inject network faults into the running project: latency, loss, a bandwidth limit or
    /// a partition on what a pod, service or node sends
    Fault {
        /// What to do
        #[command(subcommand)]
        action: FaultCommand,
    },
    /// Set the number of replicas of running pods: `scale api=3 worker=0`
    Scale {
        /// POD=REPLICAS
        #[arg(value_name = "POD=REPLICAS", required = true)]
        replicas: Vec<String>,
    },
    /// List the project's containers
    Ps {
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// List the services instead: address, ports, endpoints and the balancer's counters
        #[arg(long)]
        services: bool,
    },
    /// Show what each container uses: CPU %, memory, pids
    Stats {
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Print one sample and exit, instead of refreshing until Ctrl-C
        #[arg(long)]
        no_stream: bool,
        /// Seconds between samples (CPU % is measured over this interval)
        #[arg(
            long,
            value_name = "SECONDS",
            default_value = "1",
            value_parser = stats::parse_interval
        )]
        interval: Duration,
        /// Show the services instead: the balancer's connections and bytes per second,
        /// open connections, errors and retries
        #[arg(long)]
        services: bool,
    },
    /// List the processes of each container
    Top {
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show container output
    Logs {
        /// Keep printing new output until the project is removed
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only these pods (or `pod-N` replicas)
        pods: Vec<String>,
    },
    /// Run a command in a running container
    Exec(exec::ExecArgs),
    /// Print the validated, normalized manifest
    Config {
        /// Output format
        #[arg(long, value_enum, default_value_t = ConfigFormat::Yaml)]
        format: ConfigFormat,
        /// Only validate; print nothing
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print the rcompose.yaml equivalent to a Compose file (or to several, merged)
    Convert {
        /// The Compose files, merged in order [default: `-f`, else the file found in the
        /// current directory and its override]
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Write the manifest as another tool's manifests
    Export {
        /// The target
        #[command(subcommand)]
        target: ExportTarget,
    },
    /// Print the start order, or the dependency graph
    Graph {
        /// Output format
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Print the manifest's JSON Schema
    Schema,
    /// List the projects on this machine with the state of their containers
    Ls {
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print the version, the commit it was built from and the target
    Version {
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only the version number
        #[arg(long)]
        short: bool,
    },
    /// Print a shell completion script: `source <(rcompose completion bash)`
    Completion {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page rcompose(1) in roff (`rcompose man | man -l -`), or write the pages
    /// of every command to a directory
    Man {
        /// Write rcompose.1, rcompose-up.1, ... here instead
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Pull images from registries: the given references, else the manifest's `ref:` images
    Pull {
        /// References (`busybox:1.36`, `localhost:5000/app@sha256:...`)
        images: Vec<String>,
        /// Also reach this registry (`host[:port]`) over plain HTTP (localhost always is)
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure: Vec<String>,
        /// Layers unpacked at once [default: the number of CPUs]
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
        /// Keep setuid/setgid bits of files in the layers (refused by default)
        #[arg(long)]
        allow_setuid: bool,
    },
    /// List the images in the store
    Images {
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Manage the image store
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// The detached supervisor (started by `up -d`)
    #[command(name = "__supervise", hide = true)]
    Supervise {
        #[arg(long)]
        timeout: u64,
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        wait_timeout: Option<u64>,
        pods: Vec<String>,
    },
}

/// `export` targets.
#[derive(Debug, Subcommand)]
enum ExportTarget {
    /// Kubernetes objects: a Deployment (or a Job) per pod, Services, ConfigMaps, Secrets
    /// and PersistentVolumeClaims; what does not map is printed as warnings (docs/kubernetes.md)
    #[command(visible_alias = "k8s")]
    Kubernetes(export::KubernetesArgs),
}

/// `rollout` subcommands.
#[derive(Debug, Subcommand)]
enum RolloutAction {
    /// Wait for the pod's rollout in progress to end, showing its progress; exit code 1
    /// when the last rollout failed (and was rolled back)
    Status {
        /// The pod
        pod: String,
        /// Show how it stands now, do not wait
        #[arg(long)]
        no_wait: bool,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List the pod's revisions (the last 10)
    History {
        /// The pod
        pod: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Roll the pod out to the spec of the revision before the current one (or of
    /// --to-revision), and wait until it is done
    Undo {
        /// The pod
        pod: String,
        /// The revision to go back to
        #[arg(long, value_name = "N")]
        to_revision: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Kill every replica on the node at once (SIGKILL) and start them on the other nodes;
    /// the node takes nothing until `node up`
    Down {
        /// The node
        name: String,
    },
    /// Let the node take replicas again (none move back)
    Up {
        /// The node
        name: String,
    },
    /// Cordon the node and move its replicas to the other nodes gracefully (drained from
    /// their services, stop signal, grace period)
    Drain {
        /// The node
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum FaultCommand {
    /// Add a fault (or replace the one of that name): `fault add slow-db --target pod/db
    /// --latency 200ms`
    Add {
        /// Its name (default: `fault-N`)
        name: Option<String>,
        /// Whose packets: `pod/NAME`, `service/NAME` or `node/NAME`
        #[arg(long, value_name = "SCOPE")]
        target: String,
        /// Only the packets between the target and this `pod/`, `service/` or `node/`
        #[arg(long, value_name = "SCOPE")]
        peer: Option<String>,
        /// Delay added to each packet the target sends: `200ms`
        #[arg(long, value_name = "DURATION")]
        latency: Option<String>,
        /// Uniform ± variation of the latency: `20ms`
        #[arg(long, value_name = "DURATION")]
        jitter: Option<String>,
        /// Share of the target's packets dropped at random: `5%`
        #[arg(long, value_name = "PERCENT")]
        loss: Option<String>,
        /// Rate limit of what the target sends: `1mbit`
        #[arg(long, value_name = "RATE")]
        bandwidth: Option<String>,
        /// Drop every packet between target and peer, both ways
        #[arg(long)]
        partition: bool,
    },
    /// List the active faults and the replicas they reach
    #[command(alias = "list")]
    Ls {
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove faults by name
    Rm {
        /// The faults
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every fault (the manifest's come back at the next `up`)
    Clear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConfigFormat {
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The container init runs before anything else: no clap, no threads.
    if args.get(1).is_some_and(|a| a == "__init") {
        return crate::runtime::init::main_with_args(&args[2..]);
    }
    // So does the `exec` helper: it enters a container's namespaces, which only a
    // single-threaded process may do.
    if args.get(1).is_some_and(|a| a == "__exec") {
        return crate::runtime::exec::main_with_args(&args[2..]);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Ok.into()
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::render_error(&e);
            e.exit_status().into()
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    let ctx = Context {
        files: if cli.file.is_empty() {
            files_from_env(&|name| std::env::var_os(name))
        } else {
            cli.file
        },
        project: cli.project,
        project_dir: cli.project_directory,
        store: cli.store,
        runtime: cli.runtime,
        profiles: cli.profiles,
        stdin: std::sync::Arc::default(),
    };
    match cli.command {
        Command::Up {
            detach: false,
            wait: false,
            timeout,
            pods,
            abort_on_exit,
            exit_code_from,
            watch: watching,
            debounce,
            ..
        } => {
            if watching {
                ctx.refuse_stdin("`up --watch`")?;
            }
            up::foreground(
                &ctx,
                Duration::from_secs(timeout),
                &pods,
                up::Abort {
                    // as Compose: `--exit-code-from` implies `--abort-on-container-exit`
                    on_exit: abort_on_exit || exit_code_from.is_some(),
                    code_from: exit_code_from,
                },
                watching.then(|| debounce.unwrap_or(watch::DEFAULT_DEBOUNCE)),
            )
        }
        Command::Up {
            timeout,
            wait,
            wait_timeout,
            pods,
            watch: watching,
            debounce,
            ..
        } => {
            if watching {
                ctx.refuse_stdin("`up --watch`")?;
            }
            let code = up::detached(&ctx, timeout, up::Wait::of(wait, wait_timeout), &pods)?;
            if watching {
                watch::attach(&ctx, debounce.unwrap_or(watch::DEFAULT_DEBOUNCE), &pods)
            } else {
                Ok(code)
            }
        }
        Command::Watch { debounce } => {
            ctx.refuse_stdin("`watch`")?;
            watch::attach(&ctx, debounce.unwrap_or(watch::DEFAULT_DEBOUNCE), &[])
        }
        Command::Events { format } => events(&ctx, format),
        Command::Run {
            timeout,
            pod,
            command,
            rm: _,
        } => up::run(&ctx, Duration::from_secs(timeout), &pod, &command),
        Command::Supervise {
            timeout,
            wait,
            wait_timeout,
            pods,
        } => up::supervise(
            &ctx,
            Duration::from_secs(timeout),
            up::Wait::of(wait, wait_timeout),
            &pods,
        ),
        Command::Down { timeout, volumes } => down(&ctx, timeout.map(Duration::from_secs), volumes),
        Command::Stop { timeout, pods } => control::send(
            &ctx,
            &Request::Stop {
                pods,
                grace_ms: control::grace_ms(timeout),
            },
        ),
        Command::Start { pods } => control::send(&ctx, &Request::Start { pods }),
        Command::Restart { timeout, pods } => control::send(
            &ctx,
            &Request::Restart {
                pods,
                grace_ms: control::grace_ms(timeout),
            },
        ),
        Command::Rollout {
            action:
                RolloutAction::Status {
                    pod,
                    no_wait,
                    format,
                },
        } => rollout::status(&ctx, &pod, no_wait, format),
        Command::Rollout {
            action: RolloutAction::History { pod, format },
        } => rollout::history(&ctx, &pod, format),
        Command::Rollout {
            action: RolloutAction::Undo { pod, to_revision },
        } => control::send(
            &ctx,
            &Request::RolloutUndo {
                pod,
                to: to_revision,
            },
        ),
        Command::Nodes { format } => control::nodes(&ctx, format == Format::Json),
        Command::Node { action } => {
            use crate::supervisor::control::NodeAction;
            let (name, action) = match action {
                NodeCommand::Down { name } => (name, NodeAction::Down),
                NodeCommand::Up { name } => (name, NodeAction::Up),
                NodeCommand::Drain { name } => (name, NodeAction::Drain),
            };
            control::send(&ctx, &Request::Node { name, action })
        }
        Command::Fault { action } => match action {
            FaultCommand::Add {
                name,
                target,
                peer,
                latency,
                jitter,
                loss,
                bandwidth,
                partition,
            } => fault::add(
                &ctx,
                name,
                crate::manifest::FaultSpec {
                    target,
                    peer,
                    latency,
                    jitter,
                    loss,
                    bandwidth,
                    partition,
                },
            ),
            FaultCommand::Ls { format } => fault::list(&ctx, format == Format::Json),
            FaultCommand::Rm { names } => fault::remove(&ctx, names),
            FaultCommand::Clear => fault::remove(&ctx, Vec::new()),
        },
        Command::Scale { replicas } => control::send(
            &ctx,
            &Request::Scale {
                replicas: control::parse_scale(&replicas)?,
            },
        ),
        Command::Ps {
            format,
            services: false,
        } => ps(&ctx, format),
        Command::Ps {
            format,
            services: true,
        } => control::services(&ctx, format == Format::Json),
        Command::Stats {
            format,
            no_stream,
            interval,
            services: false,
        } => stats::stats(&ctx, format, no_stream, interval),
        Command::Stats {
            format,
            no_stream,
            interval,
            services: true,
        } => stats::services(&ctx, format, no_stream, interval),
        Command::Top { format } => stats::top(&ctx, format),
        Command::Logs { follow, pods } => logs(&ctx, follow, &pods),
        Command::Exec(args) => exec::run(&ctx, args),
        Command::Config { format, quiet } => {
            let (m, _) = ctx.manifest()?;
            if !quiet {
                let text = match format {
                    ConfigFormat::Yaml => m.to_yaml(),
                    ConfigFormat::Json => m.to_json(),
                };
                print_str(&text);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert { files } => {
            let ctx = Context {
                files: if files.is_empty() {
                    ctx.files.clone()
                } else {
                    files
                },
                ..ctx.clone()
            };
            let text = ctx.convert()?;
            print_str(&text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            target: ExportTarget::Kubernetes(args),
        } => export::kubernetes(&ctx, &args),
        Command::Graph { format } => {
            let desired = ctx.desired()?;
            let text = match format {
                GraphFormat::Text => plan::graph::render_order(&desired),
                GraphFormat::Json => info::graph_json(&desired),
                GraphFormat::Dot => plan::graph::render_dot(&desired),
                GraphFormat::Mermaid => plan::graph::render_mermaid(&desired),
            };
            print_str(&text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print_str(&manifest::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { format } => info::ls(format),
        Command::Version { format, short } => info::version(format, short),
        Command::Completion { shell } => info::completion(shell),
        Command::Man { dir } => info::man(dir.as_deref()),
        Command::Images { format } => image::list(&ctx, format),
        Command::Pull {
            images,
            insecure,
            jobs,
            allow_setuid,
        } => image::pull(&ctx, &images, insecure, jobs, allow_setuid),
        Command::Image { command } => image::run(&ctx, command),
    }
}

fn print_str(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
}

/// The global options, resolved lazily.
#[derive(Debug, Clone)]
struct Context {
    /// `-f` (or the variables): empty for the default search.
    files: Vec<PathBuf>,
    project: Option<String>,
    /// `--project-directory`.
    project_dir: Option<PathBuf>,
    store: PathBuf,
    runtime: Option<crate::manifest::RuntimeKind>,
    profiles: Vec<String>,
    /// `-f -`: the manifest read from standard input, once (clones share it).
    stdin: std::sync::Arc<std::sync::OnceLock<String>>,
}

/// `-f -`: the manifest comes from standard input.
const STDIN_ARG: &str = "-";
/// The name a manifest read from standard input goes by (in errors, as `<stdin>:3:5`);
/// relative paths in it start at the current directory (or `--project-directory`).
const STDIN_NAME: &str = "<stdin>";

/// The file names `rcompose` looks for when no `-f` is given, in order.
const MANIFEST_NAMES: [&str; 5] = [
    "rcompose.yaml",
    "compose.yaml",
    "compose.yml",
    // Compose's order (compose-go's DefaultFileNames): .yml before .yaml for docker-compose
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// The override files merged over a Compose file found without `-f`: the first that exists,
/// whichever of the Compose names was found (compose-go's `DefaultOverrideFileNames`).
const OVERRIDE_NAMES: [&str; 4] = [
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// The files `RCOMPOSE_FILE`, else `COMPOSE_FILE`, names: paths separated by
/// `COMPOSE_PATH_SEPARATOR` (default `:`), as Compose reads `COMPOSE_FILE`; empty parts are
/// skipped. `var` reads the environment.
fn files_from_env(var: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Vec<PathBuf> {
    let Some(value) = var("RCOMPOSE_FILE").or_else(|| var("COMPOSE_FILE")) else {
        return Vec::new();
    };
    let separator = var("COMPOSE_PATH_SEPARATOR")
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| ":".to_string());
    value
        .to_string_lossy()
        .split(separator.as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// What the Compose loader reads: files relative to the project directory, the process
/// environment.
struct ComposeHost {
    dir: PathBuf,
}

impl manifest::compose::Host for ComposeHost {
    fn read_file(&self, path: &Path) -> Result<String, String> {
        fs::read_to_string(self.dir.join(path)).map_err(|e| {
            let text = e.to_string();
            // "No such file or directory (os error 2)" -> "no such file or directory"
            let text = text.split(" (os error").next().unwrap_or(&text);
            let mut chars = text.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_lowercase().collect::<String>() + chars.as_str()
            })
        })
    }
    fn file_exists(&self, path: &Path) -> bool {
        self.dir.join(path).is_file()
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

fn parse_runtime(s: &str) -> Result<crate::manifest::RuntimeKind, String> {
    crate::manifest::RuntimeKind::parse(s)
        .ok_or_else(|| format!("unknown runtime `{s}`: expected `builtin`, `crun` or `runc`"))
}

impl Context {
    fn run_root() -> PathBuf {
        std::env::var_os("RCOMPOSE_RUN_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_RUN_ROOT), PathBuf::from)
    }

    /// The manifest's files (never empty): `-f` (or the variables), else the first of
    /// [`MANIFEST_NAMES`] in the project directory (the current one without
    /// `--project-directory`), and, when that is a Compose file, the first of
    /// [`OVERRIDE_NAMES`] beside it, as Compose does.
    fn manifest_paths(&self) -> Result<Vec<PathBuf>, Error> {
        if !self.files.is_empty() {
            if self
                .files
                .iter()
                .filter(|f| f.as_os_str() == STDIN_ARG)
                .count()
                > 1
            {
                return Err(Error::Usage(
                    "`-f -` (the manifest from standard input) can be given only once".into(),
                ));
            }
            return Ok(self.files.clone());
        }
        let dir = match &self.project_dir {
            Some(d) => d.clone(),
            None => std::env::current_dir().map_err(|source| Error::Io {
                what: "read the current directory".into(),
                source,
            })?,
        };
        let named = |name: &str| match &self.project_dir {
            Some(_) => dir.join(name),
            None => PathBuf::from(name),
        };
        let Some(name) = MANIFEST_NAMES.iter().find(|name| dir.join(name).is_file()) else {
            return Err(Error::NoManifest { dir });
        };
        let mut paths = vec![named(name)];
        if *name != "rcompose.yaml"
            && let Some(over) = OVERRIDE_NAMES.iter().find(|n| dir.join(n).is_file())
        {
            paths.push(named(over));
        }
        Ok(paths)
    }

    /// Reads the manifest's files: their paths and texts (`-f -`: [`STDIN_NAME`] and what
    /// standard input holds).
    fn read_manifests(&self) -> Result<Vec<(PathBuf, String)>, Error> {
        self.manifest_paths()?
            .into_iter()
            .map(|path| {
                let read = if path.as_os_str() == STDIN_ARG {
                    self.stdin_text()
                        .map(|text| (PathBuf::from(STDIN_NAME), text))
                } else {
                    fs::read_to_string(&path).map(|text| (path.clone(), text))
                };
                read.map_err(|source| Error::ReadManifest { path, source })
            })
            .collect()
    }

    /// Standard input, read to its end the first time (`-f -`).
    fn stdin_text(&self) -> io::Result<String> {
        if let Some(text) = self.stdin.get() {
            return Ok(text.clone());
        }
        let mut text = String::new();
        io::stdin().read_to_string(&mut text)?;
        Ok(self.stdin.get_or_init(|| text).clone())
    }

    /// `-f -` was given.
    fn reads_stdin(&self) -> bool {
        self.files.iter().any(|f| f.as_os_str() == STDIN_ARG)
    }

    /// Whether `path`, one of the manifest's files as [`Self::load`] gives them, is the one
    /// read from standard input.
    fn is_stdin(&self, path: &Path) -> bool {
        self.reads_stdin() && path.file_name().is_some_and(|n| n == STDIN_NAME)
    }

    /// The manifest's files as the project's state records them and as the detached
    /// supervisor is given them: the one from standard input as `-`.
    fn recorded(&self, files: &[PathBuf]) -> Vec<PathBuf> {
        files
            .iter()
            .map(|f| {
                if self.is_stdin(f) {
                    PathBuf::from(STDIN_ARG)
                } else {
                    f.clone()
                }
            })
            .collect()
    }

    /// `what` watches the manifest's files: one read from standard input cannot be.
    fn refuse_stdin(&self, what: &str) -> Result<(), Error> {
        if self.reads_stdin() {
            return Err(Error::Usage(format!(
                "{what} watches the manifest's files, and `-f -` reads it from standard input: write it to a file and name that with -f"
            )));
        }
        Ok(())
    }

    /// Where the manifest's relative paths start and whose name names the project:
    /// `--project-directory`, else the manifest's directory (absolute).
    fn base(&self, manifest: &Path) -> PathBuf {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        match &self.project_dir {
            Some(d) => abs(d),
            None => abs(manifest)
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        }
    }

    /// [`Self::base`], which must be a directory.
    fn base_dir(&self, manifest: &Path) -> Result<PathBuf, Error> {
        let dir = self.base(manifest);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(Error::Usage(format!(
                "the project directory `{}` is not a directory; name an existing one with --project-directory",
                dir.display()
            )))
        }
    }

    /// The rcompose.yaml equivalent to the Compose files (`convert`): the project is loaded
    /// and validated, without asking whether the files it names exist.
    fn convert(&self) -> Result<String, Error> {
        let files = self.read_manifests()?;
        if let [(path, source)] = files.as_slice()
            && !manifest::compose::is_compose(path, source)
            && source.lines().any(|l| l.starts_with("pods:"))
        {
            return Err(Error::Usage(format!(
                "`{}` is an rcompose.yaml, not a Compose file: `rcompose -f {} config` prints it normalized",
                path.display(),
                path.display()
            )));
        }
        let facts = manifest::Facts {
            path_exists: &|_| true,
            env_set: &|_| true,
            subnet_conflict: &|_, _| None,
        };
        let loaded = self.load_compose(&files, &facts)?;
        Ok(loaded.manifest.to_yaml())
    }

    /// Loads a Compose project from its files (merged in order), printing its warnings to
    /// stderr. Refuses an rcompose.yaml among several files.
    fn load_compose(
        &self,
        files: &[(PathBuf, String)],
        facts: &manifest::Facts<'_>,
    ) -> Result<manifest::compose::Loaded, Error> {
        let Some((path, _)) = files.first() else {
            return Err(Error::Usage("no manifest file given".into()));
        };
        if files.len() > 1 {
            refuse_native(files)?;
        }
        // relative paths (env files, includes, extends) start at the project directory, in
        // every file (as in Compose)
        let host = ComposeHost {
            dir: self.base_dir(path)?,
        };
        let options = manifest::compose::Options {
            profiles: self.profiles.clone(),
        };
        let sources: Vec<manifest::compose::Source<'_>> = files
            .iter()
            .map(|(path, text)| manifest::compose::Source { path, text })
            .collect();
        let outcome = manifest::compose::load_files(&sources, &host, &options, facts);
        if !outcome.warnings.is_empty() {
            eprintln!("{}", manifest::render_warnings(path, &outcome.warnings));
        }
        Ok(outcome.result?)
    }

    /// The validated manifest and its files (the first names the project directory).
    fn manifest(&self) -> Result<(ValidManifest, Vec<PathBuf>), Error> {
        let files = self.read_manifests()?;
        let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
        let Some((path, source)) = files.first() else {
            return Err(Error::Usage("no manifest file given".into()));
        };
        // bind mount sources are relative to the project directory
        let base = self.base_dir(path)?;
        let exists = |source: &str| {
            let p = Path::new(source);
            if p.is_absolute() {
                p.exists()
            } else {
                base.join(p).exists()
            }
        };
        // a subnet the manifest names must be free on the host (the project's own bridge
        // excepted, on a re-`up`)
        let routes = crate::network::host_routes(Path::new("/proc")).unwrap_or_default();
        let cli_project = self.project.clone();
        let dir_project = project_from_dir(&base).ok();
        let subnet_conflict = |subnet, name: Option<&str>| {
            let project = cli_project
                .as_deref()
                .or(name)
                .or(dir_project.as_deref())
                .unwrap_or_default();
            crate::network::conflict(subnet, &routes, &crate::network::bridge_name(project))
        };
        let facts = manifest::Facts {
            path_exists: &exists,
            env_set: &|name| std::env::var_os(name).is_some(),
            subnet_conflict: &subnet_conflict,
        };
        if manifest::compose::is_compose(path, source) {
            let loaded = self.load_compose(&files, &facts)?;
            return Ok((loaded.valid, paths));
        }
        if files.len() > 1 {
            refuse_native(&files)?;
        }
        Ok((manifest::load_checked(source, path, &facts)?, paths))
    }

    fn desired(&self) -> Result<DesiredState, Error> {
        Ok(self.load()?.1)
    }

    /// The validated manifest, the desired state made from it, and the manifest's files as
    /// absolute paths (never empty: the first is the main one, the others were merged over
    /// it).
    fn load(&self) -> Result<(ValidManifest, DesiredState, Vec<PathBuf>), Error> {
        let (m, paths) = self.manifest()?;
        let files = paths
            .iter()
            .map(|p| absolute(p))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(path) = paths.first() else {
            return Err(Error::Usage("no manifest file given".into()));
        };
        let base = self.base_dir(path)?;
        let project = match &self.project {
            Some(p) => checked_project(p)?,
            None => match m.name() {
                Some(n) => n.to_string(),
                None => project_from_dir(&base)?,
            },
        };
        let mut desired = plan::desired_state(&m, &project, &base);
        if let Some(runtime) = self.runtime {
            for c in desired.pods.values_mut().flat_map(|p| &mut p.containers) {
                c.runtime = runtime;
            }
        }
        Ok((m, desired, files))
    }

    /// The project name without needing a manifest when `-p` is given.
    fn project(&self) -> Result<String, Error> {
        match &self.project {
            Some(p) => checked_project(p),
            None => Ok(self.desired()?.project),
        }
    }
}

/// Several files are merged only when all are Compose files: an rcompose.yaml among them is
/// refused, saying what to do.
fn refuse_native(files: &[(PathBuf, String)]) -> Result<(), Error> {
    let Some(((first, first_text), rest)) = files.split_first() else {
        return Ok(());
    };
    let count = files.len();
    if !manifest::compose::is_compose(first, first_text) {
        return Err(Error::Usage(format!(
            "`{}` is an rcompose.yaml: only Compose files are merged ({count} files are named); name it alone (`-f {}`) and write what the other files add into it",
            first.display(),
            first.display()
        )));
    }
    for (path, text) in rest {
        if manifest::compose::is_rcompose(path, text) {
            return Err(Error::Usage(format!(
                "`{}` is an rcompose.yaml: it cannot be merged over the Compose file `{}`; name an rcompose.yaml alone with `-f`, or merge Compose files only",
                path.display(),
                first.display()
            )));
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(|source| Error::Io {
        what: format!("resolve `{}`", path.display()),
        source,
    })
}

fn checked_project(name: &str) -> Result<String, Error> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(name.to_string())
    } else {
        Err(Error::ProjectName {
            name: name.to_string(),
        })
    }
}

/// The directory name made into a project name, as Compose does: lowercase, other
/// characters dropped.
fn project_from_dir(dir: &Path) -> Result<String, Error> {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    manifest::normalize_project_name(&raw)
        .ok_or(Error::ProjectName { name: raw })
        .and_then(|n| checked_project(&n))
}

fn down(ctx: &Context, grace: Option<Duration>, volumes: bool) -> Result<ExitCode, Error> {
    let project = ctx.project()?;
    let report = teardown::down(&Context::run_root(), Path::new("/proc"), &project, grace)?;
    if report.found {
        eprintln!("removed project {project}");
    } else {
        eprintln!("project {project}: nothing to remove");
    }
    if volumes {
        // every named volume of the project, declared in this manifest or not (`-p` alone
        // has none to read)
        let dir = up::volumes_dir(ctx, &project);
        match fs::remove_dir_all(&dir) {
            Ok(()) => eprintln!("removed the volumes of project {project}"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    what: format!(
                        "remove the volumes of project {project} (`{}`)",
                        dir.display()
                    ),
                    source,
                });
            }
        }
        // the parent goes when it was the last project with volumes
        let _ = fs::remove_dir(ctx.store.join("volumes"));
    }
    Ok(ExitCode::SUCCESS)
}

/// The records of a project, with states corrected when the supervisor is gone.
fn records(project: &str) -> Result<Option<(ProjectState, bool)>, Error> {
    let paths = ProjectPaths::new(&Context::run_root(), project);
    let Some(mut state) =
        ProjectState::load(&paths.state_file()).map_err(supervisor::SupervisorError::from)?
    else {
        return Ok(None);
    };
    let proc_root = Path::new("/proc");
    let alive = is_same_process(proc_root, state.supervisor_pid, state.supervisor_start);
    if !alive {
        for c in &mut state.containers {
            if c.state.is_live()
                && !c
                    .pid
                    .is_some_and(|p| is_same_process(proc_root, p, c.pid_start))
            {
                c.state = crate::supervisor::state::ContainerState::Exited;
                c.reason
                    .get_or_insert_with(|| "lost: the supervisor is gone".into());
            }
        }
    }
    Ok(Some((state, alive)))
}

fn ps(ctx: &Context, format: Format) -> Result<ExitCode, Error> {
    let project = ctx.project()?;
    let rows: Vec<ContainerRecord> = records(&project)?
        .map(|(s, _)| s.containers)
        .unwrap_or_default();
    match format {
        Format::Json => print_str(&output::ps_json(&rows)),
        Format::Table => print_str(&output::ps_table(&rows)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `events`: the project's `events.jsonl`, from its start, followed until the project is
/// removed (the supervisor appends whole lines).
fn events(ctx: &Context, format: Format) -> Result<ExitCode, Error> {
    use crate::supervisor::events::EventRecord;
    let project = ctx.project()?;
    let paths = ProjectPaths::new(&Context::run_root(), &project);
    let Ok(mut file) = fs::File::open(paths.events_file()) else {
        eprintln!("project {project} is not up");
        return Ok(ExitCode::from(ExitStatus::Failure as u8));
    };
    let mut partial = Vec::new();
    let mut out = std::io::stdout();
    loop {
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        partial.extend_from_slice(&buf);
        while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..pos]).into_owned();
            let shown = match format {
                Format::Json => text,
                Format::Table => match serde_json::from_str::<EventRecord>(&text) {
                    Ok(r) => r.text(),
                    Err(_) => continue,
                },
            };
            if writeln!(out, "{shown}").and_then(|()| out.flush()).is_err() {
                // the reader went away (`| head`)
                return Ok(ExitCode::SUCCESS);
            }
        }
        if !paths.state_file().exists() {
            return Ok(ExitCode::SUCCESS);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn logs(ctx: &Context, follow: bool, pods: &[String]) -> Result<ExitCode, Error> {
    let project = ctx.project()?;
    let Some((state, _)) = records(&project)? else {
        eprintln!("project {project} is not up");
        return Ok(ExitCode::from(ExitStatus::Failure as u8));
    };
    let wanted = |c: &ContainerRecord| {
        pods.is_empty() || pods.iter().any(|p| *p == c.pod || *p == c.replica_name())
    };
    let mut seen = std::collections::HashSet::new();
    let selected: Vec<&ContainerRecord> = state
        .containers
        .iter()
        .filter(|c| wanted(c) && seen.insert(c.log.clone()))
        .collect();
    let single = |c: &ContainerRecord| {
        state
            .containers
            .iter()
            .filter(|o| o.pod == c.pod && o.replica == c.replica)
            .count()
            == 1
    };
    let names: Vec<String> = selected
        .iter()
        .map(|c| display_name(&c.pod, c.replica, &c.container, single(c)))
        .collect();
    let printer = output::LinePrinter::new(&names, output::stdout_colour());
    let mut offsets = vec![0u64; selected.len()];
    let mut partial = vec![Vec::new(); selected.len()];
    loop {
        for (i, c) in selected.iter().enumerate() {
            let Ok(mut f) = fs::File::open(&c.log) else {
                continue;
            };
            if f.seek(SeekFrom::Start(offsets[i])).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            offsets[i] += buf.len() as u64;
            partial[i].extend_from_slice(&buf);
            while let Some(pos) = partial[i].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial[i].drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line);
                printer.print(&names[i], i, text.trim_end_matches(['\n', '\r']));
            }
        }
        if !follow {
            break;
        }
        if !ProjectPaths::new(&Context::run_root(), &project)
            .state_file()
            .exists()
        {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    for (i, rest) in partial.iter().enumerate() {
        if !rest.is_empty() {
            printer.print(&names[i], i, &String::from_utf8_lossy(rest));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_from_directories_follow_compose() {
        assert_eq!(
            project_from_dir(Path::new("/src/My App_1")).unwrap(),
            "myapp_1"
        );
        assert_eq!(project_from_dir(Path::new("/src/-x")).unwrap(), "x");
        assert!(project_from_dir(Path::new("/")).is_err());
    }

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn project_names_are_checked() {
        assert!(checked_project("shop-2").is_ok());
        assert!(checked_project("Shop").is_err());
        assert!(checked_project("-x").is_err());
        assert!(checked_project("").is_err());
    }
}
