//! Copies files into a running container's file system, from the host, without ever
//! leaving the container's root.
//!
//! A container's root is reachable from the host as `/proc/<pid>/root`, but following a
//! path below it with ordinary calls is unsafe: an absolute symlink in the container (say
//! `/srv/site -> /etc`) is resolved against the *host's* root. So the root is opened once
//! (an `O_PATH` descriptor), and every lookup below it goes through `openat2(2)` with
//! `RESOLVE_IN_ROOT` (absolute symlinks and `..` stay inside, as a `chroot` would resolve
//! them) and `RESOLVE_NO_MAGICLINKS` (no `/proc/<pid>/fd/N` jumps). The final component is
//! then only touched through its parent's descriptor with calls that never follow it
//! (`O_NOFOLLOW | O_EXCL` creation, `renameat`, `unlinkat`), so a symlink where a file is
//! expected is replaced, never written through.
//!
//! Each file is written to a temporary name in its target directory and renamed over the
//! target: a process in the container sees the old or the new content, never a mix. A file
//! whose content and mode are already the target's is not written again (a target that is a
//! bind mount of the watched directory would otherwise echo its own writes for ever).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, symlinkat, unlinkat};

use super::WatchError;

/// One change to carry into a container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SyncOp {
    /// Make `target` (an absolute path in the container) what `source` (a host path) is: a
    /// file, a symlink, or a directory (its whole tree).
    Write {
        /// The host file.
        source: PathBuf,
        /// The path in the container.
        target: String,
    },
    /// Remove `target` (recursively for a directory); nothing to do if it is not there.
    Remove {
        /// The path in the container.
        target: String,
    },
}

/// A container's root directory, opened from the host.
#[derive(Debug)]
pub struct ContainerRoot {
    fd: OwnedFd,
}

/// Temporary names are unique per process and call.
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn sync_err<'a>(target: &'a str, what: &'static str) -> impl FnOnce(Errno) -> WatchError + 'a {
    move |e| WatchError::Sync {
        target: target.to_string(),
        what,
        source: io::Error::from(e),
    }
}

/// `path` (absolute in the container) as a path relative to the root, `.` for the root.
fn relative(path: &str) -> &str {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() { "." } else { rel }
}

/// Splits an absolute container path into its parent and its last component.
fn split(target: &str) -> Option<(&str, &str)> {
    let trimmed = target.trim_end_matches('/');
    let at = trimmed.rfind('/')?;
    let name = &trimmed[at + 1..];
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some((if at == 0 { "/" } else { &trimmed[..at] }, name))
}

impl ContainerRoot {
    /// Opens the root of the process `pid` (the container's init) through `proc_root`
    /// (normally `/proc`).
    ///
    /// # Errors
    /// [`WatchError::OpenRoot`] when the process is gone or the root cannot be opened.
    pub fn open(proc_root: &Path, pid: i32) -> Result<Self, WatchError> {
        let path = proc_root.join(pid.to_string()).join("root");
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| WatchError::OpenRoot {
            pid,
            source: io::Error::from(e),
        })?;
        Ok(ContainerRoot { fd })
    }

    /// Opens directory `dir` as the root (a container's root is [`ContainerRoot::open`]).
    ///
    /// # Errors
    /// [`WatchError::Sync`] when it cannot be opened.
    pub fn at(dir: &Path) -> Result<Self, WatchError> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| WatchError::Sync {
            target: dir.display().to_string(),
            what: "open",
            source: io::Error::from(e),
        })?;
        Ok(ContainerRoot { fd })
    }

    /// Opens `path` (absolute in the container), resolved inside the root.
    fn resolve(&self, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        loop {
            match openat2(self.fd.as_fd(), relative(path), how) {
                // openat2 asks to retry when a rename raced with the lookup
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                other => return other,
            }
        }
    }

    /// Opens directory `path`, making it and its missing parents (mode 0755).
    fn dir_all(&self, path: &str) -> Result<OwnedFd, WatchError> {
        let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY;
        match self.resolve(path, flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(sync_err(path, "open directory")(e)),
        }
        let Some((parent, name)) = split(path) else {
            return Err(sync_err(path, "open directory")(Errno::ENOENT));
        };
        let parent_fd = self.dir_all(parent)?;
        match mkdirat(parent_fd.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(sync_err(path, "make directory")(e)),
        }
        self.resolve(path, flags)
            .map_err(sync_err(path, "open directory"))
    }

    /// Applies `op`; `Ok(false)` when there was nothing to change.
    ///
    /// # Errors
    /// [`WatchError::Sync`] for a failed step in the container, [`WatchError::Source`] when
    /// the host file cannot be read.
    pub fn apply(&self, op: &SyncOp) -> Result<bool, WatchError> {
        match op {
            SyncOp::Write { source, target } => self.write(source, target),
            SyncOp::Remove { target } => self.remove(target),
        }
    }

    fn write(&self, source: &Path, target: &str) -> Result<bool, WatchError> {
        let src_err = |source_err: io::Error| WatchError::Source {
            path: source.to_path_buf(),
            source: source_err,
        };
        let meta = std::fs::symlink_metadata(source).map_err(src_err)?;
        if meta.is_dir() {
            let created = self
                .resolve(target, OFlag::O_DIRECTORY | OFlag::O_RDONLY)
                .is_err();
            self.dir_all(target)?;
            let mut changed = created;
            let mut entries: Vec<_> = std::fs::read_dir(source)
                .map_err(src_err)?
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect();
            entries.sort();
            for name in entries {
                let Some(name) = name.to_str() else { continue };
                let child = format!("{}/{name}", target.trim_end_matches('/'));
                changed |= self.write(&source.join(name), &child)?;
            }
            return Ok(changed);
        }
        let Some((parent, name)) = split(target) else {
            return Err(sync_err(target, "write")(Errno::EISDIR));
        };
        let dir = self.dir_all(parent)?;
        let existing = fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
        let tmp = format!(
            ".{name}.rcompose-sync-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(source).map_err(src_err)?;
            if existing.is_some_and(|s| kind(&s) == SFlag::S_IFLNK)
                && readlinkat(dir.as_fd(), name).is_ok_and(|l| Path::new(&l) == link)
            {
                return Ok(false);
            }
            symlinkat(&link, dir.as_fd(), tmp.as_str()).map_err(sync_err(target, "make link"))?;
        } else {
            let content = std::fs::read(source).map_err(src_err)?;
            let mode = meta.permissions().mode() & 0o777;
            if let Some(s) = existing
                && kind(&s) == SFlag::S_IFREG
                && s.st_mode & 0o7777 == mode
                && same_content(&dir, name, &content)
            {
                return Ok(false);
            }
            let (uid, gid) = match existing {
                Some(s) => (s.st_uid, s.st_gid),
                None => {
                    let s = fstat(dir.as_fd()).map_err(sync_err(target, "stat directory"))?;
                    (s.st_uid, s.st_gid)
                }
            };
            let fd = openat(
                dir.as_fd(),
                tmp.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(sync_err(target, "create"))?;
            let written = (|| {
                let mut file = File::from(fd);
                file.write_all(&content)
                    .map_err(|source| WatchError::Sync {
                        target: target.to_string(),
                        what: "write",
                        source,
                    })?;
                fchown(
                    file.as_fd(),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                )
                .map_err(sync_err(target, "set the owner of"))?;
                fchmod(file.as_fd(), Mode::from_bits_truncate(mode))
                    .map_err(sync_err(target, "set the mode of"))
            })();
            if let Err(e) = written {
                let _ = unlinkat(dir.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
                return Err(e);
            }
        }
        if let Err(e) = renameat(dir.as_fd(), tmp.as_str(), dir.as_fd(), name) {
            let _ = unlinkat(dir.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(sync_err(target, "rename into place")(e));
        }
        if meta.file_type().is_symlink()
            && let Some(s) = existing
        {
            // a link keeps the owner of what it replaced
            let _ = fchownat(
                dir.as_fd(),
                name,
                Some(Uid::from_raw(s.st_uid)),
                Some(Gid::from_raw(s.st_gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
        Ok(true)
    }

    fn remove(&self, target: &str) -> Result<bool, WatchError> {
        let Some((parent, name)) = split(target) else {
            return Ok(false);
        };
        let dir = match self.resolve(parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(false),
            Err(e) => return Err(sync_err(target, "open directory")(e)),
        };
        remove_at(&dir, name).map_err(sync_err(target, "remove"))
    }
}

fn kind(s: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(s.st_mode & SFlag::S_IFMT.bits())
}

/// Whether regular file `name` in `dir` holds exactly `content` (not following a link).
fn same_content(dir: &OwnedFd, name: &str, content: &[u8]) -> bool {
    let Ok(fd) = openat(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let mut file = File::from(fd);
    if file.metadata().map(|m| m.size()).ok() != Some(content.len() as u64) {
        return false;
    }
    let mut current = Vec::with_capacity(content.len());
    file.read_to_end(&mut current).is_ok() && current == content
}

/// Removes `name` in `dir`, a directory recursively; `Ok(false)` when it is not there.
fn remove_at(dir: &OwnedFd, name: &str) -> nix::Result<bool> {
    match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(true),
        Err(Errno::ENOENT) => return Ok(false),
        Err(Errno::EISDIR | Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    let sub = openat(
        dir.as_fd(),
        name,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // the names only: listed through this process's descriptor of the directory
    let listing = Path::new("/proc/self/fd").join(sub.as_raw_fd().to_string());
    let names: Vec<String> = std::fs::read_dir(&listing)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for child in names {
        remove_at(&sub, &child)?;
    }
    unlinkat(dir.as_fd(), name, UnlinkatFlags::RemoveDir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("rcompose-sync-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("root")).unwrap();
            std::fs::create_dir_all(dir.join("host")).unwrap();
            std::fs::create_dir_all(dir.join("outside")).unwrap();
            Scratch(dir)
        }
        fn host(&self, rel: &str, content: &str) -> PathBuf {
            let p = self.0.join("host").join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
            p
        }
        fn root(&self) -> ContainerRoot {
            ContainerRoot::at(&self.0.join("root")).unwrap()
        }
        fn read(&self, path: &str) -> Option<String> {
            std::fs::read_to_string(self.0.join("root").join(path.trim_start_matches('/'))).ok()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(source: PathBuf, target: &str) -> SyncOp {
        SyncOp::Write {
            source,
            target: target.to_string(),
        }
    }

    #[test]
    fn a_file_is_written_with_its_parents_and_not_rewritten_when_unchanged() {
        let s = Scratch::new("write");
        let root = s.root();
        let src = s.host("a.txt", "one\n");
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            root.apply(&write(src.clone(), "/srv/site/css/a.txt"))
                .unwrap()
        );
        assert_eq!(s.read("/srv/site/css/a.txt").as_deref(), Some("one\n"));
        let mode = std::fs::metadata(s.0.join("root/srv/site/css/a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);
        // the same content and mode: nothing to do
        assert!(
            !root
                .apply(&write(src.clone(), "/srv/site/css/a.txt"))
                .unwrap()
        );
        std::fs::write(&src, "two\n").unwrap();
        assert!(root.apply(&write(src, "/srv/site/css/a.txt")).unwrap());
        assert_eq!(s.read("/srv/site/css/a.txt").as_deref(), Some("two\n"));
        // no temporary file is left
        let names: Vec<_> = std::fs::read_dir(s.0.join("root/srv/site/css"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.txt")]);
    }

    #[test]
    fn a_directory_is_copied_whole_and_removed_whole() {
        let s = Scratch::new("dir");
        let root = s.root();
        s.host("d/x", "x");
        s.host("d/sub/y", "y");
        symlink("x", s.0.join("host/d/link")).unwrap();
        assert!(root.apply(&write(s.0.join("host/d"), "/app/d")).unwrap());
        assert_eq!(s.read("/app/d/sub/y").as_deref(), Some("y"));
        assert_eq!(
            std::fs::read_link(s.0.join("root/app/d/link")).unwrap(),
            PathBuf::from("x")
        );
        let remove = SyncOp::Remove {
            target: "/app/d".into(),
        };
        assert!(root.apply(&remove).unwrap());
        assert!(!s.0.join("root/app/d").exists());
        // gone already: nothing to do
        assert!(!root.apply(&remove).unwrap());
    }

    #[test]
    fn symlinks_and_dot_dots_in_the_root_never_lead_out_of_it() {
        let s = Scratch::new("escape");
        let root = s.root();
        let outside = s.0.join("outside");
        // absolute links to a directory outside: resolved inside the root, where the
        // directory does not exist
        symlink(&outside, s.0.join("root/dir")).unwrap();
        let err = root
            .apply(&write(s.host("x", "escaped"), "/dir/x"))
            .unwrap_err();
        assert!(matches!(err, WatchError::Sync { .. }), "{err:?}");
        // a relative link climbing out stops at the root: `../../outside` is `/outside`
        symlink("../../outside", s.0.join("root/up")).unwrap();
        assert!(root.apply(&write(s.host("y", "y"), "/up/y")).is_err());
        // a link where the file goes is replaced, not written through
        symlink(outside.join("victim"), s.0.join("root/file")).unwrap();
        assert!(root.apply(&write(s.host("f", "mine"), "/file")).unwrap());
        assert!(
            std::fs::symlink_metadata(s.0.join("root/file"))
                .unwrap()
                .file_type()
                .is_file()
        );
        // and a removal through a link removes nothing outside
        std::fs::write(outside.join("keep"), "keep").unwrap();
        assert!(
            !root
                .apply(&SyncOp::Remove {
                    target: "/dir/keep".into()
                })
                .unwrap()
        );
        let left: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("keep")]);
    }

    #[test]
    fn container_paths_split_into_parent_and_name() {
        assert_eq!(split("/srv/site/a.html"), Some(("/srv/site", "a.html")));
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/srv/dir/"), Some(("/srv", "dir")));
        assert_eq!(split("/"), None);
        assert_eq!(split("/srv/.."), None);
        assert_eq!(relative("/"), ".");
        assert_eq!(relative("/srv/site"), "srv/site");
    }
}
