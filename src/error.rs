//! The top-level error and the documented exit codes (docs/cli.md).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::image::ImageError;
use crate::manifest::ManifestError;
use crate::runtime::exec::ExecError;
use crate::supervisor::SupervisorError;
use crate::supervisor::exec::TargetError;

/// Documented exit codes of the `rcompose` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Success.
    Ok = 0,
    /// A runtime failure: a pod failed to start, a command failed.
    Failure = 1,
    /// Wrong command-line usage (clap's own code).
    Usage = 2,
    /// The manifest is invalid.
    InvalidManifest = 3,
    /// Not root, or the kernel lacks a feature rcompose needs.
    MissingPrerequisite = 4,
    /// `exec`: the command could not be run (as Docker and shells).
    CannotRun = 126,
    /// `exec`: the command was not found (as Docker and shells).
    NotFound = 127,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        ExitCode::from(s as u8)
    }
}

/// Everything that can make a command fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest could not be read.
    #[error("failed to read `{path}`")]
    ReadManifest {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No manifest was found.
    #[error(
        "no rcompose.yaml, compose.yaml, compose.yml, docker-compose.yml or docker-compose.yaml in `{dir}`; use `-f FILE` to name a manifest or `-p NAME` to name a project"
    )]
    NoManifest {
        /// The directory searched.
        dir: PathBuf,
    },
    /// The manifest is invalid (rendered with its locations).
    #[error("{}", .0.render())]
    Manifest(#[from] ManifestError),
    /// A prerequisite is missing.
    #[error("{0}")]
    Prerequisite(String),
    /// The project name is not usable.
    #[error(
        "invalid project name `{name}`: use lowercase letters, digits, `-` and `_`, starting with a letter or digit"
    )]
    ProjectName {
        /// The name.
        name: String,
    },
    /// The supervisor failed.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The image store, an import or a pull failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Reading a container's cgroup for `stats` or `top` failed.
    #[error(transparent)]
    Stats(#[from] crate::runtime::stats::StatsError),
    /// `exec` found no running container to enter.
    #[error(transparent)]
    ExecTarget(#[from] TargetError),
    /// `exec` could not run its command in the container.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A pod failed to start, or the detached supervisor failed.
    #[error("{0}")]
    Up(String),
    /// `stop`, `start`, `restart` or `scale` on a project whose supervisor does not run.
    #[error("project `{project}` is not up (no supervisor runs it){hint}")]
    NotUp {
        /// The project.
        project: String,
        /// What to do about what it left, if anything.
        hint: &'static str,
    },
    /// Wrong usage that clap cannot see (a malformed `scale` argument).
    #[error("{0}")]
    Usage(String),
    /// The supervisor refused a request or failed to carry it out.
    #[error("{0}")]
    Command(String),
    /// `up --watch` / `watch` failed to watch or to act on a change.
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    /// `export kubernetes` could not map the manifest.
    #[error(transparent)]
    Export(#[from] crate::export::kubernetes::ExportError),
    /// Another I/O failure.
    #[error("failed to {what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::image::store::StoreError> for Error {
    fn from(e: crate::image::store::StoreError) -> Error {
        Error::Image(e.into())
    }
}

impl Error {
    /// What to do about the error, printed after it (and its causes) as `hint: ...`, so
    /// that every message starts with what went wrong and ends with what to do. `None`
    /// where the message already says it (`NoManifest`, `ProjectName`, a busy project, a
    /// pod with several containers) or where the failure is the user's command's own
    /// (`exec`'s exit code).
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        use crate::image::store::StoreError;
        let text = match self {
            Self::ReadManifest { .. } => {
                "check the path, or name the manifest with `-f FILE` (or RCOMPOSE_FILE)"
            }
            Self::Manifest(e) if e.is_compose() => {
                "fix the problems above; docs/coming-from-compose.md says how each Compose key maps and why some are not supported"
            }
            Self::Manifest(_) => {
                "fix the problems above; docs/manifest.md describes every key and `rcompose schema` prints the JSON Schema"
            }
            Self::Prerequisite(_) => {
                "run rcompose as root on a Linux machine with cgroups, overlayfs and network namespaces (README: \"What runs where\")"
            }
            Self::NotUp { project, hint: "" } => {
                return Some(format!(
                    "start it with `rcompose -p {project} up -d` (or from its directory); `rcompose ls` lists the projects on this machine"
                ));
            }
            Self::Supervisor(SupervisorError::Busy { .. })
            | Self::NoManifest { .. }
            | Self::ProjectName { .. }
            | Self::NotUp { .. }
            | Self::Usage(_)
            | Self::ExecTarget(TargetError::ContainerRequired { .. })
            | Self::Exec(ExecError::Failed { .. }) => return None,
            Self::Supervisor(SupervisorError::Config(_) | SupervisorError::User { .. }) => {
                "fix the manifest and run `rcompose up` again"
            }
            Self::Supervisor(SupervisorError::Layer { .. }) => {
                "check the image's `layers`, `archive` or `ref` in the manifest and run `rcompose up` again"
            }
            Self::Supervisor(_) => {
                "`rcompose down` removes whatever the failure left; then run `rcompose up` again"
            }
            Self::Image(ImageError::Store(StoreError::NoImage(_))) => {
                "`rcompose images` lists the store; `rcompose pull REFERENCE` or `rcompose image import FILE` adds an image"
            }
            Self::Image(ImageError::Store(StoreError::InUse { .. })) => {
                "run `rcompose down` in the projects that use it first"
            }
            Self::Image(ImageError::Pull { .. }) => {
                "check the reference and that the registry answers; plain HTTP beyond localhost needs `--insecure-registry HOST`, and credentials come from RCOMPOSE_REGISTRY_USER/_PASSWORD/_TOKEN or ~/.docker/config.json"
            }
            Self::Image(ImageError::NoCommand { .. }) => {
                "give the container a `command:` in the manifest"
            }
            Self::Image(_) => {
                "the image or archive was refused or could not be stored: check its source, and the store's space (`--store`, RCOMPOSE_STORE)"
            }
            Self::Stats(_) => "`rcompose ps` shows which containers of the project run",
            Self::ExecTarget(TargetError::NotUp { project }) => {
                return Some(format!("start it with `rcompose -p {project} up -d`"));
            }
            Self::ExecTarget(_) => "`rcompose ps` lists the containers and their states",
            Self::Exec(_) => "check the command and that the container still runs (`rcompose ps`)",
            Self::Up(_) => "fix what the message names and run `rcompose up` again",
            Self::Command(message) => return command_hint(message).map(str::to_string),
            Self::Watch(_) => "fix the watch rule or the path, and start watching again",
            Self::Export(crate::export::kubernetes::ExportError::NameClash { .. }) => {
                return None;
            }
            Self::Export(crate::export::kubernetes::ExportError::BadName { .. }) => {
                "rename it in the manifest (Kubernetes names are lowercase letters, digits and `-`) and export again"
            }
            Self::Export(_) => {
                "check the config's or secret's `file`, `environment` or `content` in the manifest"
            }
            Self::Io { .. } => {
                "check that the path exists and that rcompose may use it (permissions, free space)"
            }
        };
        Some(text.to_string())
    }

    /// The exit status this error ends the process with.
    #[must_use]
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Manifest(_) | Self::NoManifest { .. } | Self::ReadManifest { .. } => {
                ExitStatus::InvalidManifest
            }
            Self::Export(
                crate::export::kubernetes::ExportError::NameClash { .. }
                | crate::export::kubernetes::ExportError::BadName { .. },
            ) => ExitStatus::InvalidManifest,
            Self::Prerequisite(_) => ExitStatus::MissingPrerequisite,
            Self::ProjectName { .. } | Self::Usage(_) => ExitStatus::Usage,
            Self::Exec(ExecError::Failed { code: 126, .. }) => ExitStatus::CannotRun,
            Self::Exec(ExecError::Failed { code: 127, .. }) => ExitStatus::NotFound,
            _ => ExitStatus::Failure,
        }
    }
}

/// What to do after a supervisor refused a request (`Error::Command`): the listing that
/// shows the names when a name was unknown, nothing when the message already says what to
/// do, else where the project's state is seen.
fn command_hint(message: &str) -> Option<&'static str> {
    if message.starts_with("no pod") {
        Some("`rcompose ps` lists the project's pods")
    } else if message.starts_with("no node") {
        Some("`rcompose nodes` lists the project's nodes")
    } else if message.starts_with("no fault") {
        Some("`rcompose fault ls` lists the project's faults")
    } else if message.contains("; run `") || message.contains("rename ") {
        None
    } else {
        Some(
            "`rcompose ps` and `rcompose events` show the project's state; try again once it has settled",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_request_is_told_what_to_do_by_its_kind() {
        let hint = |m: &str| Error::Command(m.to_string()).hint();
        assert_eq!(
            hint("no node `w9`: the nodes are `w1`, `w2`").as_deref(),
            Some("`rcompose nodes` lists the project's nodes")
        );
        assert_eq!(
            hint("no pod `wbe` in this project").as_deref(),
            Some("`rcompose ps` lists the project's pods")
        );
        assert_eq!(
            hint("no fault `x`: there are none").as_deref(),
            Some("`rcompose fault ls` lists the project's faults")
        );
        assert_eq!(
            hint(
                "the network's subnet cannot change while the project is up; run `rcompose down` first"
            ),
            None
        );
        assert!(
            hint("pod `web` runs revision 2 already")
                .is_some_and(|h| h.contains("rcompose events"))
        );
    }
}
