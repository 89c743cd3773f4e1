//! Importing images from files: a `docker save` archive, an OCI image layout (a directory
//! or a tar), or a plain root filesystem tar (optionally gzip-compressed). The format is
//! detected from the content, never from the file name.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use super::config::{self, MAX_METADATA};
use super::digest::Digest;
use super::layers::{LayerSource, Opener, digest_file, file_opener, unpack_all};
use super::store::{ImageRecord, SourceStamp, Store};
use super::unpack::Limits;
use super::{ImageError, Progress};

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// A name to give the imported image (besides the names the archive carries).
    pub name: Option<String>,
    /// Unpacking limits and policies.
    pub limits: Limits,
    /// Layers unpacked at once.
    pub jobs: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            name: None,
            limits: Limits::default(),
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// What kind of archive a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout (`oci-layout`, `index.json`, `blobs/`).
    OciLayout,
    /// A `docker save` archive (`manifest.json`).
    DockerArchive,
    /// A root filesystem tar.
    Rootfs,
}

/// Imports every image an archive holds; returns their records. An archive imported
/// before and unchanged since (same size, mtime and inode) is not read again.
pub fn import(
    store: &Store,
    path: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>, ImageError> {
    let path = std::path::absolute(path).map_err(|e| ImageError::io("cannot resolve", path, e))?;
    let meta = fs::metadata(&path).map_err(|e| ImageError::io("cannot read", &path, e))?;
    let stamp = SourceStamp::of(&meta);
    let key = format!("archive {}", path.display());
    if let Some(records) = store.cached_source(&key, &stamp)? {
        let mut out = Vec::new();
        for mut record in records {
            if let Some(name) = &options.name
                && !record.names.contains(name)
            {
                record.names.push(name.clone());
                record = store.save_image(record)?;
            }
            out.push(record);
        }
        return Ok(out);
    }
    let mut records = if meta.is_dir() {
        let source: Arc<dyn Members> = Arc::new(DirMembers { root: path.clone() });
        if source.exists("oci-layout") {
            import_oci(store, &source, &key, options, progress)?
        } else if source.exists("manifest.json") {
            import_docker(store, &source, &key, options, progress)?
        } else {
            return Err(ImageError::Format {
                path,
                message: "a directory without `oci-layout` or `manifest.json` is not an image \
                          archive (a root filesystem directory is `rootfs:` in the manifest)"
                    .into(),
            });
        }
    } else {
        import_file(store, &path, &key, options, progress)?
    };
    if let Some(name) = &options.name {
        for record in &mut records {
            if !record.names.contains(name) {
                record.names.push(name.clone());
            }
        }
    }
    let mut saved = Vec::new();
    let ids: Vec<Digest> = records.iter().map(|r| r.id.clone()).collect();
    for record in records {
        saved.push(store.save_image(record)?);
    }
    store.save_source(&key, stamp, ids)?;
    Ok(saved)
}

fn import_file(
    store: &Store,
    path: &Path,
    key: &str,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>, ImageError> {
    let mut file = File::open(path).map_err(|e| ImageError::io("cannot open", path, e))?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(|e| ImageError::io("cannot read", path, e))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        // A compressed tar cannot be indexed for random access: decompress it into the
        // store's temp area first (bounded by the unpack limit), then read that.
        let tmp = TempFile(store.temp_path());
        let mut out =
            File::create(&tmp.0).map_err(|e| ImageError::io("cannot create", &tmp.0, e))?;
        let file = File::open(path).map_err(|e| ImageError::io("cannot open", path, e))?;
        let mut gz = flate2::read::MultiGzDecoder::new(file).take(options.limits.max_bytes + 1);
        let copied = io::copy(&mut gz, &mut out)
            .map_err(|e| ImageError::io("cannot decompress", path, e))?;
        if copied > options.limits.max_bytes {
            return Err(ImageError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "decompresses to more than {} bytes (the unpack limit)",
                    options.limits.max_bytes
                ),
            });
        }
        drop(out);
        return import_tar(store, &tmp.0, path, key, options, progress);
    }
    import_tar(store, path, path, key, options, progress)
}

/// A file in the store's temp area, removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn import_tar(
    store: &Store,
    tar_path: &Path,
    shown: &Path,
    key: &str,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>, ImageError> {
    let members = TarMembers::index(tar_path, shown)?;
    let source: Arc<dyn Members> = Arc::new(members);
    match detect(&*source) {
        Format::OciLayout => import_oci(store, &source, key, options, progress),
        Format::DockerArchive => import_docker(store, &source, key, options, progress),
        Format::Rootfs => import_rootfs(store, tar_path, shown, key, options, progress),
    }
}

fn detect(source: &dyn Members) -> Format {
    if source.exists("oci-layout") && source.exists("index.json") {
        Format::OciLayout
    } else if source.exists("manifest.json") {
        Format::DockerArchive
    } else {
        Format::Rootfs
    }
}

/// Files of an archive by name: a directory or an indexed tar.
trait Members: Send + Sync {
    /// Whether a regular file of this name exists.
    fn exists(&self, name: &str) -> bool;
    /// Its size.
    fn size(&self, name: &str) -> Result<u64, ImageError>;
    /// A reader of its contents.
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, ImageError>;
    /// The archive, for messages.
    fn path(&self) -> &Path;

    /// The whole file, at most `cap` bytes.
    fn read_small(&self, name: &str, cap: u64) -> Result<Vec<u8>, ImageError> {
        let size = self.size(name)?;
        if size > cap {
            return Err(self.bad(format!("`{name}` is {size} bytes (at most {cap} accepted)")));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        self.open(name)?
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::io("cannot read", self.path(), e))?;
        Ok(bytes)
    }

    /// A format error about this archive.
    fn bad(&self, message: String) -> ImageError {
        ImageError::Format {
            path: self.path().to_path_buf(),
            message,
        }
    }
}

/// Checks a member name from the archive's own metadata (`manifest.json` layer paths): a
/// relative path without `..`, so that joining it to a directory stays inside.
fn safe_member_name(name: &str) -> Option<String> {
    let name = name.trim_start_matches("./");
    let path = Path::new(name);
    if name.is_empty()
        || name.contains('\0')
        || !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(name.to_string())
}

struct DirMembers {
    root: PathBuf,
}

impl DirMembers {
    fn file(&self, name: &str) -> Result<PathBuf, ImageError> {
        let safe = safe_member_name(name)
            .ok_or_else(|| self.bad(format!("member name `{name}` leaves the archive")))?;
        Ok(self.root.join(safe))
    }
}

impl Members for DirMembers {
    fn exists(&self, name: &str) -> bool {
        self.file(name)
            .ok()
            .and_then(|p| fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.is_file())
    }

    fn size(&self, name: &str) -> Result<u64, ImageError> {
        let path = self.file(name)?;
        let meta =
            fs::symlink_metadata(&path).map_err(|e| ImageError::io("cannot read", &path, e))?;
        if !meta.is_file() {
            return Err(self.bad(format!("`{name}` is not a regular file")));
        }
        Ok(meta.len())
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, ImageError> {
        let path = self.file(name)?;
        let file = File::open(&path).map_err(|e| ImageError::io("cannot open", &path, e))?;
        Ok(Box::new(file))
    }

    fn path(&self) -> &Path {
        &self.root
    }
}

/// A tar whose regular members were indexed once (headers only: data is skipped by
/// seeking), so that each member can be read directly, in parallel.
struct TarMembers {
    file: PathBuf,
    shown: PathBuf,
    members: BTreeMap<String, (u64, u64)>,
}

impl TarMembers {
    fn index(file: &Path, shown: &Path) -> Result<TarMembers, ImageError> {
        let bad = |message: String| ImageError::Format {
            path: shown.to_path_buf(),
            message,
        };
        let f = File::open(file).map_err(|e| ImageError::io("cannot open", shown, e))?;
        let mut archive = tar::Archive::new(f);
        let mut members = BTreeMap::new();
        let entries = archive
            .entries_with_seek()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?;
        let mut count = 0u64;
        for entry in entries {
            let entry = entry.map_err(|e| bad(format!("not a tar archive: {e}")))?;
            count += 1;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| bad(format!("bad member name: {e}")))?;
            let Some(name) = path.to_str().and_then(safe_member_name) else {
                continue;
            };
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        if count == 0 {
            return Err(bad("an empty tar archive".into()));
        }
        Ok(TarMembers {
            file: file.to_path_buf(),
            shown: shown.to_path_buf(),
            members,
        })
    }

    fn member(&self, name: &str) -> Result<(u64, u64), ImageError> {
        let name = name.trim_start_matches("./");
        self.members
            .get(name)
            .copied()
            .ok_or_else(|| self.bad(format!("no member `{name}`")))
    }
}

impl Members for TarMembers {
    fn exists(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    fn size(&self, name: &str) -> Result<u64, ImageError> {
        Ok(self.member(name)?.1)
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, ImageError> {
        let (offset, size) = self.member(name)?;
        let mut file =
            File::open(&self.file).map_err(|e| ImageError::io("cannot open", &self.shown, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| ImageError::io("cannot read", &self.shown, e))?;
        Ok(Box::new(file.take(size)))
    }

    fn path(&self) -> &Path {
        &self.shown
    }
}

fn opener(source: &Arc<dyn Members>, name: String) -> Opener {
    let source = Arc::clone(source);
    Box::new(move || {
        source
            .open(&name)
            .map_err(|e| io::Error::other(e.to_string()))
    })
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn descriptor_digest(source: &dyn Members, desc: &Descriptor) -> Result<Digest, ImageError> {
    desc.digest()
        .to_string()
        .parse()
        .map_err(|e: super::digest::DigestError| source.bad(e.to_string()))
}

/// Reads a blob named by a descriptor: size-capped, and checked against its digest.
fn read_verified(source: &dyn Members, digest: &Digest, size: u64) -> Result<Vec<u8>, ImageError> {
    let bytes = source.read_small(&blob_name(digest), MAX_METADATA.min(size))?;
    let actual = Digest::of(&bytes);
    if &actual != digest || bytes.len() as u64 != size {
        return Err(source.bad(format!(
            "blob {digest} ({size} bytes) holds {actual} ({} bytes)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn import_oci(
    store: &Store,
    source: &Arc<dyn Members>,
    key: &str,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>, ImageError> {
    let index_bytes = source.read_small("index.json", MAX_METADATA)?;
    let index: ImageIndex =
        serde_json::from_slice(&index_bytes).map_err(|e| source.bad(format!("index.json: {e}")))?;
    let mut manifests = Vec::new();
    for desc in index.manifests() {
        let names: Vec<String> = desc
            .annotations()
            .iter()
            .flat_map(|a| [a.get(CONTAINERD_NAME), a.get(REF_NAME)])
            .flatten()
            .take(1)
            .map(|n| super::store::normalize_name(n))
            .collect();
        collect_manifests(&**source, desc, &names, 0, &mut manifests)?;
    }
    if manifests.is_empty() {
        return Err(source.bad("no linux/amd64 image manifest in index.json".into()));
    }
    let mut records = Vec::new();
    for (desc, names) in manifests {
        let digest = descriptor_digest(&**source, &desc)?;
        let bytes = read_verified(&**source, &digest, desc.size())?;
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| source.bad(format!("manifest {digest}: {e}")))?;
        let config_digest = descriptor_digest(&**source, manifest.config())?;
        let config_bytes = read_verified(&**source, &config_digest, manifest.config().size())?;
        let (image_config, diff_ids) = config::parse(&config_bytes)
            .map_err(|e| source.bad(format!("config {config_digest}: {e}")))?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(source.bad(format!(
                "manifest {digest} has {} layers but its config lists {} diff-ids",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers().iter().zip(&diff_ids) {
            check_layer_type(&**source, desc)?;
            let blob = descriptor_digest(&**source, desc)?;
            layers.push(LayerSource {
                diff_id: diff_id.clone(),
                placed: None,
                keep_blob: false,
                verified: false,
                blob: Some(blob.clone()),
                size: desc.size(),
                open: opener(source, blob_name(&blob)),
            });
        }
        let layer_records = unpack_all(store, &layers, &options.limits, options.jobs, progress)?;
        store.put_blob(
            &mut &config_bytes[..],
            Some((&config_digest, config_bytes.len() as u64)),
        )?;
        store.put_blob(&mut &bytes[..], Some((&digest, bytes.len() as u64)))?;
        records.push(ImageRecord {
            id: config_digest,
            names,
            manifest: Some(digest),
            layers: layer_records,
            config: image_config,
            source: key.to_string(),
        });
    }
    Ok(records)
}

/// Follows an index entry to image manifests for linux/amd64 (nested indexes, as written by
/// `skopeo copy --all`, are followed up to a small depth).
fn collect_manifests(
    source: &dyn Members,
    desc: &Descriptor,
    names: &[String],
    depth: usize,
    out: &mut Vec<(Descriptor, Vec<String>)>,
) -> Result<(), ImageError> {
    if let Some(platform) = desc.platform()
        && (platform.os().to_string() != "linux" || platform.architecture().to_string() != "amd64")
    {
        return Ok(());
    }
    match desc.media_type() {
        MediaType::ImageManifest => out.push((desc.clone(), names.to_vec())),
        MediaType::Other(t) if t == "application/vnd.docker.distribution.manifest.v2+json" => {
            out.push((desc.clone(), names.to_vec()));
        }
        MediaType::ImageIndex => {
            if depth >= 4 {
                return Err(source.bad("image indexes nested more than 4 deep".into()));
            }
            let digest = descriptor_digest(source, desc)?;
            let bytes = read_verified(source, &digest, desc.size())?;
            let index: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| source.bad(format!("index {digest}: {e}")))?;
            for inner in index.manifests() {
                collect_manifests(source, inner, names, depth + 1, out)?;
            }
        }
        MediaType::Other(t) if t == "application/vnd.docker.distribution.manifest.list.v2+json" => {
            let mut plain = desc.clone();
            plain.set_media_type(MediaType::ImageIndex);
            collect_manifests(source, &plain, names, depth, out)?;
        }
        other => {
            return Err(source.bad(format!("unsupported manifest media type `{other}`")));
        }
    }
    Ok(())
}

fn check_layer_type(source: &dyn Members, desc: &Descriptor) -> Result<(), ImageError> {
    if desc.urls().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(source.bad(format!(
            "layer {} is a foreign layer with URLs; rcompose does not fetch those",
            desc.digest()
        )));
    }
    match desc.media_type() {
        MediaType::ImageLayer | MediaType::ImageLayerGzip => Ok(()),
        MediaType::ImageLayerZstd => Err(source.bad(format!(
            "layer {} is zstd-compressed, which rcompose does not read yet",
            desc.digest()
        ))),
        MediaType::Other(t)
            if t == "application/vnd.docker.image.rootfs.diff.tar.gzip"
                || t == "application/vnd.docker.image.rootfs.diff.tar" =>
        {
            Ok(())
        }
        other => Err(source.bad(format!(
            "layer {} has media type `{other}`, not a layer",
            desc.digest()
        ))),
    }
}

/// One image of `manifest.json` in a `docker save` archive.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker(
    store: &Store,
    source: &Arc<dyn Members>,
    key: &str,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>, ImageError> {
    let bytes = source.read_small("manifest.json", MAX_METADATA)?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&bytes).map_err(|e| source.bad(format!("manifest.json: {e}")))?;
    if entries.is_empty() {
        return Err(source.bad("manifest.json lists no image".into()));
    }
    let mut records = Vec::new();
    for entry in entries {
        let config_bytes = source.read_small(&entry.config, MAX_METADATA)?;
        let config_digest = Digest::of(&config_bytes);
        let (image_config, diff_ids) = config::parse(&config_bytes)
            .map_err(|e| source.bad(format!("config `{}`: {e}", entry.config)))?;
        if diff_ids.len() != entry.layers.len() {
            return Err(source.bad(format!(
                "manifest.json lists {} layers for `{}` but its config has {} diff-ids",
                entry.layers.len(),
                entry.config,
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in entry.layers.iter().zip(&diff_ids) {
            let safe = safe_member_name(name)
                .ok_or_else(|| source.bad(format!("layer path `{name}` leaves the archive")))?;
            // Newer archives name layers `blobs/sha256/<digest>`: that digest is promised.
            let blob = safe
                .strip_prefix("blobs/sha256/")
                .and_then(|hex| format!("sha256:{hex}").parse().ok());
            layers.push(LayerSource {
                diff_id: diff_id.clone(),
                placed: None,
                keep_blob: false,
                verified: false,
                blob,
                size: source.size(&safe)?,
                open: opener(source, safe),
            });
        }
        let layer_records = unpack_all(store, &layers, &options.limits, options.jobs, progress)?;
        store.put_blob(
            &mut &config_bytes[..],
            Some((&config_digest, config_bytes.len() as u64)),
        )?;
        records.push(ImageRecord {
            id: config_digest,
            names: entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|n| super::store::normalize_name(n))
                .collect(),
            manifest: None,
            layers: layer_records,
            config: image_config,
            source: key.to_string(),
        });
    }
    Ok(records)
}

fn import_rootfs(
    store: &Store,
    tar_path: &Path,
    shown: &Path,
    key: &str,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>, ImageError> {
    // The diff-id of a plain tar is its own digest: hash it first so that the layer lock
    // is taken on a known name (a concurrent import of the same tar waits, then reuses).
    let (diff_id, size) = digest_file(tar_path, "cannot read archive")?;
    let layers = [LayerSource {
        diff_id: diff_id.clone(),
        placed: None,
        keep_blob: false,
        verified: false,
        blob: Some(diff_id.clone()),
        size,
        open: file_opener(tar_path),
    }];
    let layer_records = unpack_all(store, &layers, &options.limits, options.jobs, progress)?;
    let config_bytes = config::for_rootfs(&diff_id);
    let config_digest = store.put_blob(&mut &config_bytes[..], None)?;
    let (image_config, _) = config::parse(&config_bytes).map_err(|e| ImageError::Format {
        path: shown.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(vec![ImageRecord {
        id: config_digest,
        names: Vec::new(),
        manifest: None,
        layers: layer_records,
        config: image_config,
        source: key.to_string(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_from_metadata_stay_inside() {
        assert_eq!(
            safe_member_name("./abc/layer.tar").as_deref(),
            Some("abc/layer.tar")
        );
        assert_eq!(
            safe_member_name("blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        for bad in ["../x", "/etc/passwd", "a/../../x", "", "a\0b"] {
            assert!(safe_member_name(bad).is_none(), "{bad}");
        }
    }
}
