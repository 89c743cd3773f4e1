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
        "no rcompose.yaml in `{dir}`; use `-f FILE` to name a manifest or `-p NAME` to name a project"
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
