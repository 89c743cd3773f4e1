//! L2 image: the content-addressed image store (DESIGN.md section 7).
//!
//! Blobs live under `blobs/sha256/<hex>`, verified while they stream in; each layer is
//! unpacked once under `layers/sha256/<diff-id>/` and shared by every image and container
//! that stacks it. Unpacking is hostile-input code (`unpack`). This module imports only
//! `manifest` and `plan`; the runtime gets plain directory paths from it.

pub mod archive;
pub mod config;
pub mod digest;
pub mod layers;
pub mod prepare;
pub mod pull;
pub mod registry;
pub mod store;
pub mod unpack;

use std::io;
use std::path::{Path, PathBuf};

use self::digest::Digest;
use self::store::StoreError;

/// Errors of the image layer.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read.
    #[error("{what} `{path}`")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A container has no command: neither the manifest nor its image config gives one.
    #[error(
        "container `{pod}.{container}` has no command: image `{image}` has no Entrypoint or Cmd, \
         and the manifest sets no `command`"
    )]
    NoCommand {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
        /// Its image.
        image: String,
    },
    /// Pulling from a registry failed.
    #[error("cannot pull `{reference}`: {message}")]
    Pull {
        /// The reference.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// An archive is malformed or holds something rcompose refuses.
    #[error("`{path}`: {message}")]
    Format {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl ImageError {
    pub(crate) fn io(what: &'static str, path: &Path, source: io::Error) -> ImageError {
        ImageError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Progress of layer work, for progress bars or log lines.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A layer starts downloading or unpacking; `size` is its blob size.
    Start {
        /// The layer.
        diff_id: &'a Digest,
        /// Blob size in bytes.
        size: u64,
        /// What starts.
        phase: Phase,
    },
    /// Bytes of the blob read so far.
    Advance {
        /// The layer.
        diff_id: &'a Digest,
        /// Bytes so far.
        bytes: u64,
    },
    /// The layer is unpacked.
    Done {
        /// The layer.
        diff_id: &'a Digest,
    },
    /// The layer was already in the store.
    Present {
        /// The layer.
        diff_id: &'a Digest,
    },
}

/// What an [`Event::Start`] starts. A pulled layer downloads and unpacks at once: its
/// progress is the download's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Fetching the blob from a registry.
    Download,
    /// Unpacking a blob that is already here.
    Unpack,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Download => "pulling",
            Phase::Unpack => "unpacking",
        })
    }
}

/// Receives [`Event`]s, from several threads.
pub trait Progress: Sync {
    /// One event.
    fn event(&self, event: Event<'_>);
}

/// Discards events.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn event(&self, _: Event<'_>) {}
}
