//! Turning a desired state's stored images into plain layer directories before anything
//! starts: imports archives, pulls registry images, unpacks tarball layers, and resolves each
//! container's process from its image config (Docker's rules, see [`config::process`]).
//!
//! Runs in the `up` process, so a bad archive or a failed pull is reported before any
//! container, cgroup or namespace exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::archive::{self, ImportOptions};
use super::config::{self, Overrides};
use super::digest::Digest;
use super::layers::{LayerSource, digest_file, file_opener, unpack_all};
use super::store::{ImageRecord, Store};
use super::unpack::{Limits, SetuidPolicy};
use super::{ImageError, Progress};
use crate::plan::desired::{DesiredState, LayerPlan, PullPolicy, StoredImage};

/// How to prepare.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Unpacking limits and policies.
    pub limits: Limits,
    /// Layers unpacked at once.
    pub jobs: usize,
    /// Never contact a registry (the detached supervisor: `up -d` already pulled).
    pub offline: bool,
    /// Registries reached over plain HTTP besides localhost (see
    /// [`super::pull::registry_options`]).
    pub insecure: Vec<String>,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            limits: Limits::default(),
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            offline: false,
            insecure: Vec::new(),
        }
    }
}

/// Resolves every stored image and tarball layer of `desired` in place: afterwards its
/// containers' layers are only `Host` and `Dir`s, and their `command` is the final argv.
pub fn prepare(
    desired: &mut DesiredState,
    store_root: &Path,
    options: &PrepareOptions,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let needs_store = desired.pods.values().flat_map(|p| &p.containers).any(|c| {
        c.rootfs.layers.iter().any(|l| match l {
            LayerPlan::Stored(_) => true,
            LayerPlan::Dir { path, .. } => path.is_file(),
            LayerPlan::Host => false,
        })
    });
    if !needs_store {
        // Host images and directories only: the store is not even created.
        return Ok(());
    }
    let store = &Store::open(store_root)?;
    let mut images: BTreeMap<String, ImageRecord> = BTreeMap::new();
    let mut tars: BTreeMap<(PathBuf, String), PathBuf> = BTreeMap::new();
    for pod in desired.pods.values_mut() {
        for c in &mut pod.containers {
            let mut layers = Vec::new();
            let mut image_config = None;
            for layer in std::mem::take(&mut c.rootfs.layers) {
                match layer {
                    LayerPlan::Stored(source) => {
                        let key = format!("{source:?}");
                        let record = match images.get(&key) {
                            Some(r) => r.clone(),
                            None => {
                                let r = resolve(store, &source, options, progress)?;
                                images.insert(key, r.clone());
                                r
                            }
                        };
                        for l in &record.layers {
                            layers.push(LayerPlan::Dir {
                                path: store.layer_path(&l.diff_id),
                                target: "/".into(),
                            });
                        }
                        image_config = Some(record.config.clone());
                    }
                    LayerPlan::Dir { path, target } if path.is_file() => {
                        let key = (path.clone(), target.clone());
                        let dir = match tars.get(&key) {
                            Some(d) => d.clone(),
                            None => {
                                let d = tar_layer(store, &path, &target, options, progress)?;
                                tars.insert(key, d.clone());
                                d
                            }
                        };
                        layers.push(LayerPlan::Dir {
                            path: dir,
                            target: "/".into(),
                        });
                    }
                    other => layers.push(other),
                }
            }
            c.rootfs.layers = layers;
            if let Some(image) = image_config {
                let over = Overrides {
                    entrypoint: c.entrypoint.as_deref(),
                    command: c.command.as_deref(),
                    env: Some(&c.env),
                    working_dir: c.working_dir.as_deref(),
                    user: c.user.as_deref(),
                };
                let Some(process) = config::process(&image, &over) else {
                    return Err(ImageError::NoCommand {
                        pod: pod.name.clone(),
                        container: c.name.clone(),
                        image: c.image.clone(),
                    });
                };
                c.entrypoint = None;
                c.command = Some(process.argv);
                c.env = process.env;
                c.working_dir = process.working_dir;
                c.user = process.user;
            }
        }
    }
    Ok(())
}

fn resolve(
    store: &Store,
    source: &StoredImage,
    options: &PrepareOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImageError> {
    match source {
        StoredImage::Archive { path, allow_setuid } => {
            let mut import = ImportOptions {
                name: None,
                limits: options.limits.clone(),
                jobs: options.jobs,
            };
            if *allow_setuid {
                import.limits.setuid = SetuidPolicy::Allow;
            }
            let mut records = archive::import(store, path, &import, progress)?;
            match records.len() {
                1 => Ok(records.remove(0)),
                n => Err(ImageError::Format {
                    path: path.clone(),
                    message: format!(
                        "holds {n} images ({}); an `archive:` image needs exactly one",
                        records
                            .iter()
                            .map(|r| r.names.first().map_or(r.id.to_string(), Clone::clone))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            }
        }
        StoredImage::Registry {
            reference,
            pull,
            allow_setuid,
        } => {
            let policy = if options.offline {
                PullPolicy::Never
            } else {
                *pull
            };
            let mut options = options.clone();
            if *allow_setuid {
                options.limits.setuid = SetuidPolicy::Allow;
            }
            super::pull::ensure(store, reference, policy, &options, progress)
        }
    }
}

/// A tarball laid over an image at `target`: unpacked (safely) into the store once per
/// content and target; returns the layer directory.
fn tar_layer(
    store: &Store,
    path: &Path,
    target: &str,
    options: &PrepareOptions,
    progress: &dyn Progress,
) -> Result<PathBuf, ImageError> {
    let (blob, size) = digest_file(path, "cannot read layer")?;
    let rel = target.trim_start_matches('/').to_string();
    // A tar laid over `/` is an ordinary layer: its diff-id is the digest of the
    // uncompressed tar, known here only for an uncompressed one; so every tarball layer is
    // named by its blob and target instead.
    let name = Digest::of(format!("rcompose tar layer\0{blob}\0{target}").as_bytes());
    let layer = LayerSource {
        diff_id: name.clone(),
        placed: Some((name.clone(), rel)),
        keep_blob: false,
        verified: false,
        blob: Some(blob),
        size,
        open: file_opener(path),
    };
    unpack_all(
        store,
        std::slice::from_ref(&layer),
        &options.limits,
        1,
        progress,
    )?;
    Ok(store.layer_path(&name))
}
