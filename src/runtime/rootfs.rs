//! The container root filesystem: which overlay mounts make it (pure), staging of layers
//! that go to a target other than `/`, and the mount sequence run by the init helper.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::desired::LayerPlan;

/// The layers of one container as the init helper mounts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsSpec {
    /// Whether the bottom layer is the host root (`/`).
    pub host: bool,
    /// Directory layers, bottom first (not including the host root).
    pub lowers: Vec<PathBuf>,
    /// The container's own directory: `upper/` and `work/` (and `base*` when the host root
    /// is stacked under other layers) live there, and the root is mounted on it (in the
    /// container's mount namespace only).
    pub dir: PathBuf,
}

/// One overlay mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// Where it is mounted.
    pub target: PathBuf,
    /// `lowerdir`, top layer first (overlayfs order).
    pub lower: Vec<PathBuf>,
    /// `upperdir` and `workdir`.
    pub upper: PathBuf,
    /// `workdir`.
    pub work: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl OverlayMount {
    /// The mount(2) data string, with `:` and `,` in paths escaped as overlayfs expects.
    #[must_use]
    pub fn data(&self) -> String {
        let lower: Vec<String> = self.lower.iter().map(|p| escape(p)).collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            escape(&self.upper),
            escape(&self.work)
        )
    }
}

fn escape(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The directories of a container below `spec.dir` that must exist before mounting.
#[must_use]
pub fn dirs_to_create(spec: &RootfsSpec) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for m in overlay_mounts(spec) {
        dirs.push(m.target);
        dirs.push(m.upper);
        dirs.push(m.work);
    }
    dirs
}

/// The overlay mounts that build the root at `<dir>` itself, in mount order. Mounted over
/// the directory holding its own `upper/` and `work/` (overlayfs resolves them first), the
/// root needs no directory of its own: one directory less to remove at `down`, where on this
/// machine's /run each removal waits for a discard.
///
/// overlayfs refuses lower layers that are ancestors of one another (`ELOOP`, "overlapping
/// lowerdir path"), and `/` is an ancestor of every directory on the root file system. So when
/// the host root is stacked under other layers, it is first mounted read-only as its own
/// overlay (`base`, a different super block), which then serves as the bottom lower layer.
#[must_use]
pub fn overlay_mounts(spec: &RootfsSpec) -> Vec<OverlayMount> {
    let d = &spec.dir;
    let mut top: Vec<PathBuf> = spec.lowers.iter().rev().cloned().collect();
    let mut mounts = Vec::new();
    if spec.host {
        if top.is_empty() {
            top.push(PathBuf::from("/"));
        } else {
            mounts.push(OverlayMount {
                target: d.join("base"),
                lower: vec![PathBuf::from("/")],
                upper: d.join("base-upper"),
                work: d.join("base-work"),
                read_only: true,
            });
            top.push(d.join("base"));
        }
    }
    mounts.push(OverlayMount {
        target: d.clone(),
        lower: top,
        upper: d.join("upper"),
        work: d.join("work"),
        read_only: false,
    });
    mounts
}

/// Errors of layer staging.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A layer directory is missing or not a directory.
    #[error("layer directory `{path}` does not exist or is not a directory")]
    Missing {
        /// The layer path.
        path: PathBuf,
    },
    /// A stored image was not resolved into its layers before the container started (a bug:
    /// `image::prepare` runs before the supervisor).
    #[error("image layers of `{0}` were not prepared")]
    Unprepared(String),
    /// Copying a layer failed.
    #[error("failed to stage layer `{path}` at `{target}`")]
    Copy {
        /// The layer path.
        path: PathBuf,
        /// Its target in the container.
        target: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Turns plan layers into a [`RootfsSpec`]'s `host` and `lowers`. A directory with target `/`
/// is used in place, read-only; one with another target is copied once into
/// `<staging>/<hash>/<target>` so that overlayfs sees its contents at the target.
pub fn stage_layers(
    layers: &[LayerPlan],
    staging: &Path,
) -> Result<(bool, Vec<PathBuf>), LayerError> {
    let mut host = false;
    let mut lowers = Vec::new();
    for layer in layers {
        match layer {
            LayerPlan::Host => host = true,
            LayerPlan::Stored(image) => {
                return Err(LayerError::Unprepared(format!("{image:?}")));
            }
            LayerPlan::Dir { path, target } => {
                if !path.is_dir() {
                    return Err(LayerError::Missing { path: path.clone() });
                }
                let rel = target.trim_start_matches('/');
                if rel.is_empty() {
                    lowers.push(path.clone());
                    continue;
                }
                let key = format!("{:016x}", fnv1a(format!("{}\0{target}", path.display())));
                let root = staging.join(key);
                let dest = root.join(rel);
                if !dest.exists() {
                    let err = |source| LayerError::Copy {
                        path: path.clone(),
                        target: target.clone(),
                        source,
                    };
                    let tmp = staging.join(format!(".tmp-{}", std::process::id()));
                    let _ = fs::remove_dir_all(&tmp);
                    copy_tree(path, &tmp.join(rel)).map_err(err)?;
                    fs::rename(&tmp, &root).map_err(err)?;
                }
                lowers.push(root);
            }
        }
    }
    Ok((host, lowers))
}

fn fnv1a(s: String) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Copies a directory tree: directories, regular files and symlinks (as links, never
/// followed), keeping permission bits.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            symlink(fs::read_link(&src)?, &dst)?;
        } else if ft.is_file() {
            fs::copy(&src, &dst)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.permissions().mode()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: bool, lowers: &[&str]) -> RootfsSpec {
        RootfsSpec {
            host,
            lowers: lowers.iter().map(PathBuf::from).collect(),
            dir: PathBuf::from("/run/rcompose/p/c/web-1/app"),
        }
    }

    #[test]
    fn host_alone_is_one_overlay_over_the_root() {
        let m = overlay_mounts(&spec(true, &[]));
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].data(),
            "lowerdir=/,upperdir=/run/rcompose/p/c/web-1/app/upper,\
             workdir=/run/rcompose/p/c/web-1/app/work"
        );
    }

    #[test]
    fn host_under_layers_is_mounted_first_as_its_own_read_only_base() {
        let m = overlay_mounts(&spec(true, &["/src/a", "/src/b"]));
        assert_eq!(m.len(), 2);
        assert!(m[0].read_only);
        assert_eq!(
            m[0].target,
            PathBuf::from("/run/rcompose/p/c/web-1/app/base")
        );
        assert_eq!(
            m[1].lower,
            ["/src/b", "/src/a", "/run/rcompose/p/c/web-1/app/base"].map(PathBuf::from)
        );
    }

    #[test]
    fn rootfs_layers_stack_top_first() {
        let m = overlay_mounts(&spec(false, &["/img/os", "/img/app"]));
        assert_eq!(m.len(), 1);
        assert!(m[0].data().starts_with("lowerdir=/img/app:/img/os,"));
    }

    #[test]
    fn separators_in_paths_are_escaped() {
        let m = overlay_mounts(&spec(false, &["/a:b,c"]));
        assert!(m[0].data().starts_with("lowerdir=/a\\:b\\,c,"));
    }

    #[test]
    fn targeted_layer_is_staged_under_its_target() {
        let tmp = std::env::temp_dir().join(format!("rcompose-stage-{}", std::process::id()));
        let src = tmp.join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), "x").unwrap();
        symlink("/etc/passwd", src.join("link")).unwrap();
        let layers = vec![
            LayerPlan::Host,
            LayerPlan::Dir {
                path: src.clone(),
                target: "/".into(),
            },
            LayerPlan::Dir {
                path: src.clone(),
                target: "/app".into(),
            },
        ];
        let (host, lowers) = stage_layers(&layers, &tmp.join("staging")).unwrap();
        assert!(host);
        assert_eq!(lowers[0], src);
        assert_eq!(
            fs::read_to_string(lowers[1].join("app/sub/f")).unwrap(),
            "x"
        );
        assert_eq!(
            fs::read_link(lowers[1].join("app/link")).unwrap(),
            Path::new("/etc/passwd")
        );
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn missing_layer_directory_is_an_error() {
        let layers = vec![LayerPlan::Dir {
            path: "/nonexistent/rc".into(),
            target: "/".into(),
        }];
        let err = stage_layers(&layers, Path::new("/tmp")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "layer directory `/nonexistent/rc` does not exist or is not a directory"
        );
    }
}
