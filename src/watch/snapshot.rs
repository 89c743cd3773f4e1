//! Layer snapshots for `redeploy`: a `layers:` directory that a redeploy rule watches is
//! copied into the store under the digest of its content, and the containers stack that
//! copy instead of the live directory.
//!
//! Two reasons. An overlay's lower directories must not change under a mounted overlay
//! (Documentation/filesystems/overlayfs.rst, "Changes to underlying filesystems": the
//! result is undefined), and edits would reach the running replicas half-way; with a
//! snapshot, running replicas keep the version they started with. And the snapshot's path
//! names its content, so a pod whose layer content changed has a different plan, which is
//! what makes `apply` replace it (and only it).
//!
//! The digest covers every entry's relative path, type, permission bits and content (a
//! symlink's target); the copy is made in a temporary directory beside the final one and
//! renamed into place, so a snapshot directory is always complete.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::WatchError;

/// One entry of a directory tree, by relative path.
#[derive(Debug)]
enum Entry {
    Dir { mode: u32, uid: u32, gid: u32 },
    File { mode: u32, uid: u32, gid: u32 },
    Link { target: PathBuf, uid: u32, gid: u32 },
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) -> io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let path = rel.join(entry.file_name());
        let meta = std::fs::symlink_metadata(root.join(&path))?;
        let (uid, gid) = (meta.uid(), meta.gid());
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(root.join(&path))?;
            out.insert(path, Entry::Link { target, uid, gid });
        } else if meta.is_dir() {
            out.insert(path.clone(), Entry::Dir { mode, uid, gid });
            walk(root, &path, out)?;
        } else if meta.is_file() {
            out.insert(path, Entry::File { mode, uid, gid });
        }
        // sockets, fifos and devices are not part of a layer directory's content
    }
    Ok(())
}

/// The digest of directory `dir`'s tree (hex), and its entries.
fn digest(dir: &Path) -> io::Result<(String, BTreeMap<PathBuf, Entry>)> {
    let mut entries = BTreeMap::new();
    walk(dir, Path::new(""), &mut entries)?;
    let mut h = Sha256::new();
    for (path, entry) in &entries {
        h.update(path.as_os_str().as_encoded_bytes());
        h.update([0]);
        match entry {
            Entry::Dir { mode, uid, gid } => {
                h.update(format!("d {mode:o} {uid} {gid}\0"));
            }
            Entry::Link { target, uid, gid } => {
                h.update(format!("l {uid} {gid} "));
                h.update(target.as_os_str().as_encoded_bytes());
                h.update([0]);
            }
            Entry::File { mode, uid, gid } => {
                let content = std::fs::read(dir.join(path))?;
                h.update(format!("f {mode:o} {uid} {gid} {}\0", content.len()));
                h.update(&content);
            }
        }
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, entries))
}

/// The snapshot of directory `source` under `snapshots` (`<snapshots>/<sha256 hex>`),
/// made if it is not there yet.
///
/// # Errors
/// [`WatchError::Snapshot`] when `source` cannot be read or the copy cannot be made.
pub fn snapshot(source: &Path, snapshots: &Path) -> Result<PathBuf, WatchError> {
    let err = |source_err: io::Error| WatchError::Snapshot {
        path: source.to_path_buf(),
        source: source_err,
    };
    let (hex, entries) = digest(source).map_err(err)?;
    let dest = snapshots.join(&hex);
    if dest.is_dir() {
        return Ok(dest);
    }
    std::fs::create_dir_all(snapshots).map_err(err)?;
    let tmp = snapshots.join(format!(".tmp-{hex}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let copied = (|| -> io::Result<()> {
        std::fs::create_dir(&tmp)?;
        let root_meta = std::fs::metadata(source)?;
        std::fs::set_permissions(
            &tmp,
            std::fs::Permissions::from_mode(root_meta.permissions().mode() & 0o7777),
        )?;
        for (path, entry) in &entries {
            let to = tmp.join(path);
            match entry {
                Entry::Dir { mode, uid, gid } => {
                    std::fs::create_dir(&to)?;
                    lchown(&to, Some(*uid), Some(*gid))?;
                    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(*mode))?;
                }
                Entry::File { mode, uid, gid } => {
                    std::fs::copy(source.join(path), &to)?;
                    lchown(&to, Some(*uid), Some(*gid))?;
                    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(*mode))?;
                }
                Entry::Link { target, uid, gid } => {
                    symlink(target, &to)?;
                    lchown(&to, Some(*uid), Some(*gid))?;
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(err(e));
    }
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => Ok(dest),
        // made meanwhile by another process: the same content
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dest)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("rcompose-snapshot-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_snapshot_is_named_by_content_and_copies_the_tree() {
        let s = Scratch::new("content");
        let src = s.0.join("layer");
        std::fs::create_dir_all(src.join("app/sub")).unwrap();
        std::fs::write(src.join("app/main.sh"), "echo one\n").unwrap();
        std::fs::set_permissions(
            src.join("app/main.sh"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        symlink("main.sh", src.join("app/link")).unwrap();
        let store = s.0.join("snapshots");

        let first = snapshot(&src, &store).unwrap();
        assert_eq!(first.parent(), Some(store.as_path()));
        assert_eq!(
            std::fs::read_to_string(first.join("app/main.sh")).unwrap(),
            "echo one\n"
        );
        let mode = std::fs::metadata(first.join("app/main.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
        assert_eq!(
            std::fs::read_link(first.join("app/link")).unwrap(),
            PathBuf::from("main.sh")
        );
        assert!(first.join("app/sub").is_dir());

        // unchanged content: the same snapshot
        assert_eq!(snapshot(&src, &store).unwrap(), first);

        // changed content: another one, and the first is left as it was
        std::fs::write(src.join("app/main.sh"), "echo two\n").unwrap();
        let second = snapshot(&src, &store).unwrap();
        assert_ne!(second, first);
        assert_eq!(
            std::fs::read_to_string(first.join("app/main.sh")).unwrap(),
            "echo one\n"
        );

        // a mode change alone is a change too
        std::fs::set_permissions(
            src.join("app/main.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(snapshot(&src, &store).unwrap(), second);
        // no temporary directory is left
        let leftovers: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let s = Scratch::new("missing");
        let err = snapshot(&s.0.join("nope"), &s.0.join("snapshots")).unwrap_err();
        assert!(
            matches!(&err, WatchError::Snapshot { path, .. } if path.ends_with("nope")),
            "{err:?}"
        );
    }
}
