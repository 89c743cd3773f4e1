//! L2, I/O (file system events): watching the project's files for `up --watch` and
//! `rcompose watch`.
//!
//! - [`Watcher`]: inotify through the `notify` crate, changed paths collected by a
//!   [`debounce::Debouncer`] into batches after a short quiet period;
//! - [`ignore::IgnoreRules`]: which changes a rule ignores (.gitignore rules, editor
//!   temporary files, rcompose's own directories);
//! - [`sync`]: copying files into a running container's root without leaving it;
//! - [`snapshot`]: content-addressed copies of `layers:` directories for `redeploy`.
//!
//! It must not depend on `supervisor` or `cli` (it does not know about pods or control
//! requests: the CLI glue in `cli/watch.rs` maps rules to actions); it takes every path it
//! works on (`/proc`, the store) as a parameter.

pub mod debounce;
pub mod ignore;
pub mod snapshot;
pub mod sync;

use std::collections::BTreeSet;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use notify::event::{EventKind, Flag};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use self::debounce::Debouncer;

/// What went wrong while watching or acting on a change.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A pattern of the ignore rules is not a valid glob.
    #[error("invalid ignore pattern `{pattern}` in {origin}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Where it comes from (`.gitignore`, a rule's `ignore`).
        origin: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A path could not be watched.
    #[error("failed to watch `{path}`")]
    Watch {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: notify::Error,
    },
    /// A container's root could not be opened.
    #[error("failed to open the root of the container process {pid}")]
    OpenRoot {
        /// The container's init.
        pid: i32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A host file to sync could not be read.
    #[error("failed to read `{path}`")]
    Source {
        /// The host file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A step of a sync failed in the container.
    #[error("failed to {what} `{target}` in the container")]
    Sync {
        /// The path in the container.
        target: String,
        /// The step.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A layer snapshot could not be made.
    #[error("failed to snapshot layer directory `{path}`")]
    Snapshot {
        /// The layer directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// File system events of some paths, debounced into batches of changed paths.
#[derive(Debug)]
pub struct Watcher {
    _inner: RecommendedWatcher,
    rx: Receiver<notify::Result<notify::Event>>,
    debouncer: Debouncer,
    /// Everything watched, reported as changed when events were lost.
    roots: Vec<PathBuf>,
}

impl Watcher {
    /// Watches `recursive` (directories, with everything below them) and `flat` (a
    /// directory's direct entries, or a single file); a batch comes after `quiet` without a
    /// change.
    ///
    /// # Errors
    /// [`WatchError::Watch`] when a path cannot be watched (it does not exist, or the
    /// inotify limits are reached).
    pub fn new(
        recursive: &[PathBuf],
        flat: &[PathBuf],
        quiet: Duration,
    ) -> Result<Self, WatchError> {
        let (tx, rx) = channel();
        let mut inner = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(|source| WatchError::Watch {
            path: PathBuf::new(),
            source,
        })?;
        let modes = recursive
            .iter()
            .map(|p| (p, RecursiveMode::Recursive))
            .chain(flat.iter().map(|p| (p, RecursiveMode::NonRecursive)));
        for (path, mode) in modes {
            inner
                .watch(path, mode)
                .map_err(|source| WatchError::Watch {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(Watcher {
            _inner: inner,
            rx,
            debouncer: Debouncer::new(quiet),
            roots: recursive.iter().chain(flat).cloned().collect(),
        })
    }

    /// Waits at most `tick` for a batch of changed paths; `None` when none was due by then
    /// (so that the caller can look at other things, like a stop signal).
    pub fn next(&mut self, tick: Duration) -> Option<BTreeSet<PathBuf>> {
        let until = Instant::now() + tick;
        loop {
            let now = Instant::now();
            if let Some(batch) = self.debouncer.take(now) {
                return Some(batch);
            }
            // a pending batch is waited for (at most the debouncer's longest wait)
            let wake = match self.debouncer.deadline() {
                Some(d) => d,
                None if now >= until => return None,
                None => until,
            };
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Ok(event)) => self.record(event),
                // an error of the inotify backend: treat everything as changed
                Ok(Err(_)) => self.everything(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn everything(&mut self) {
        let now = Instant::now();
        for root in self.roots.clone() {
            self.debouncer.push(root, now);
        }
    }

    fn record(&mut self, event: notify::Event) {
        if event.flag() == Some(Flag::Rescan) {
            // the kernel's queue overflowed: events were lost
            self.everything();
            return;
        }
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let now = Instant::now();
        for path in event.paths {
            self.debouncer.push(path, now);
        }
    }
}

/// The path in the container that host path `changed` maps to, when `changed` is `root`
/// (watched, mapped to `target`) or below it; `None` otherwise, or when a component is not
/// UTF-8.
#[must_use]
pub fn target_of(root: &Path, target: &str, changed: &Path) -> Option<String> {
    let rel = changed.strip_prefix(root).ok()?;
    let mut out = target.trim_end_matches('/').to_string();
    for c in rel.components() {
        match c {
            Component::Normal(name) => {
                out.push('/');
                out.push_str(name.to_str()?);
            }
            _ => return None,
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_paths_map_below_the_target() {
        let root = Path::new("/p/site");
        assert_eq!(
            target_of(root, "/srv/www", Path::new("/p/site/css/a.css")).as_deref(),
            Some("/srv/www/css/a.css")
        );
        assert_eq!(
            target_of(root, "/srv/www/", Path::new("/p/site")).as_deref(),
            Some("/srv/www")
        );
        assert_eq!(
            target_of(root, "/", Path::new("/p/site/a")).as_deref(),
            Some("/a")
        );
        assert_eq!(target_of(root, "/srv", Path::new("/p/other/a")), None);
        assert_eq!(target_of(root, "/srv", Path::new("/p/sitemap")), None);
    }
}
