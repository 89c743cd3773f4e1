//! The on-disk store: blobs, unpacked layers and image records under one root
//! (`/var/lib/rcompose` by default).
//!
//! ```text
//! <root>/blobs/sha256/<hex>     verified content (manifests, configs, layer archives)
//! <root>/layers/sha256/<hex>/   one unpacked layer, named by its diff-id
//! <root>/images.json            image records (names, layers, config), rewritten atomically
//! <root>/tmp/                   work in progress: `<pid>.<n>` files and directories
//! <root>/locks/                 flock(2) files: `store` for images.json, `<hex>` per layer
//! ```
//!
//! Every write lands in `tmp/` first and is renamed into place once verified, so a crash never
//! leaves a half blob or half layer under a name that counts as complete. A layer is unpacked
//! under an exclusive lock on its diff-id: a second process that wants the same layer waits,
//! then finds it present, so two concurrent pulls of one image do one unpack. The store root
//! is private (mode 0700): nobody else can swap a directory for a symlink under an unpack.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::digest::{Digest, Hasher};

/// The default store root.
pub const DEFAULT_ROOT: &str = "/var/lib/rcompose";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{what} `{path}`")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Content did not match the digest it was announced with.
    #[error("{what}: expected {expected}, got {actual}")]
    Mismatch {
        /// What was checked ("blob digest", "layer diff-id", "blob size").
        what: String,
        /// The announced value.
        expected: String,
        /// What the content hashed or measured to.
        actual: String,
    },
    /// `images.json` is not what this version writes.
    #[error("corrupt image index `{path}`: {message}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No image has this name or id.
    #[error("no image `{0}` in the store")]
    NoImage(String),
    /// The image is used by something that must keep it.
    #[error("image `{name}` is in use by {user}")]
    InUse {
        /// The image.
        name: String,
        /// Who uses it.
        user: String,
    },
    /// Unpacking a layer failed.
    #[error("cannot unpack layer {diff_id}")]
    Unpack {
        /// The layer.
        diff_id: Digest,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// What an image is made of, as Docker's image config says (the subset rcompose uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=VALUE` in image order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `WorkingDir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `ExposedPorts` keys (`80/tcp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    /// `os/architecture` of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `created` timestamp, as written in the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// One layer of an image, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the uncompressed layer tar: the name of its unpacked directory.
    pub diff_id: Digest,
    /// Digest of the layer blob as distributed (compressed or not).
    pub blob: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: the digest of its config blob (as Docker's image id).
    pub id: Digest,
    /// Names (`docker.io/library/busybox:latest`, `rcompose/app:latest`, ...).
    #[serde(default)]
    pub names: Vec<String>,
    /// The digest of the image manifest, when it came with one (what `name@digest` pins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Digest>,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// The parts of the image config rcompose honours.
    pub config: ImageConfig,
    /// Where it came from (`archive /path`, `registry REF`).
    pub source: String,
}

/// The contents of `images.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Format version; this code writes 1.
    version: u32,
    /// Images by id.
    images: BTreeMap<Digest, ImageRecord>,
    /// Imported files (`archive /path`) and what they held, to skip re-importing them.
    #[serde(default)]
    sources: BTreeMap<String, SourceEntry>,
}

/// When a source file was imported, and what it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SourceEntry {
    stamp: SourceStamp,
    images: Vec<Digest>,
}

/// What identifies an unchanged file without reading it (as make does): size, modification
/// time and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode number.
    pub inode: u64,
}

impl SourceStamp {
    /// The stamp of a file's metadata.
    #[must_use]
    pub fn of(meta: &fs::Metadata) -> SourceStamp {
        use std::os::unix::fs::MetadataExt;
        SourceStamp {
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            inode: meta.ino(),
        }
    }
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _flock: Flock<File>,
}

/// What [`Store::ensure_layer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The layer was already there.
    Present,
    /// This call unpacked it.
    Unpacked,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Unpacked layers removed.
    pub layers: Vec<Digest>,
    /// Blobs removed.
    pub blobs: Vec<Digest>,
    /// Leftover temp entries of dead processes removed.
    pub temp: usize,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for sub in ["blobs/sha256", "layers/sha256", "tmp", "locks"] {
            let dir = root.join(sub);
            builder
                .create(&dir)
                .map_err(io_err("cannot create", &dir))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The store root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it is there).
    #[must_use]
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a blob is present.
    #[must_use]
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Where a layer is unpacked (whether or not it is there).
    #[must_use]
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    /// Whether a layer is unpacked.
    #[must_use]
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// A fresh name under `tmp/`, unique to this process (`<pid>.<n>`).
    #[must_use]
    pub fn temp_path(&self) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}.{n}", std::process::id()))
    }

    /// A writer for a new blob; nothing is visible until [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let path = self.temp_path();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("cannot create", &path))?;
        Ok(BlobWriter {
            blobs: self.root.join("blobs/sha256"),
            path,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            hasher: Hasher::new(),
        })
    }

    /// Streams `reader` into a blob, verifying `expected` (digest and size) when given.
    pub fn put_blob(
        &self,
        reader: &mut dyn Read,
        expected: Option<(&Digest, u64)>,
    ) -> Result<Digest, StoreError> {
        let mut writer = self.blob_writer()?;
        let limit = expected.map_or(u64::MAX, |(_, size)| size);
        let mut limited = reader.take(limit.saturating_add(1));
        let tmp = writer.path.clone();
        io::copy(&mut limited, &mut writer).map_err(io_err("cannot write blob", &tmp))?;
        writer.commit(expected)
    }

    /// Reads a whole blob of at most `cap` bytes, checking that it still hashes to `digest`.
    pub fn read_blob(&self, digest: &Digest, cap: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(io_err("cannot open blob", &path))?;
        let mut bytes = Vec::new();
        file.take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("cannot read blob", &path))?;
        if bytes.len() as u64 > cap {
            return Err(StoreError::Mismatch {
                what: format!("size of blob {digest}"),
                expected: format!("at most {cap} bytes"),
                actual: "more".into(),
            });
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(StoreError::Mismatch {
                what: "blob digest".into(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    fn lock(&self, name: &str) -> Result<Lock, StoreError> {
        let path = self.root.join("locks").join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("cannot open lock", &path))?;
        let flock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| StoreError::Io {
                what: "cannot lock",
                path: path.clone(),
                source: errno.into(),
            })?;
        Ok(Lock { _flock: flock })
    }

    /// Makes sure the layer `diff_id` is unpacked. Under an exclusive lock on the diff-id:
    /// returns at once when the layer is present; otherwise creates an empty temp directory,
    /// calls `unpack(dir)`, which returns the diff-id of what it unpacked, checks it, and
    /// renames the directory into place. On any error the temp directory is removed.
    pub fn ensure_layer<E>(
        &self,
        diff_id: &Digest,
        unpack: impl FnOnce(&Path) -> Result<Digest, E>,
    ) -> Result<Ensured, StoreError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let _lock = self.lock(diff_id.hex())?;
        let dest = self.layer_path(diff_id);
        if dest.is_dir() {
            return Ok(Ensured::Present);
        }
        let tmp = self.temp_path();
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(io_err("cannot create", &tmp))?;
        let result = match unpack(&tmp) {
            Err(e) => Err(StoreError::Unpack {
                diff_id: diff_id.clone(),
                source: Box::new(e),
            }),
            Ok(actual) if &actual != diff_id => Err(StoreError::Mismatch {
                what: "layer diff-id".into(),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            }),
            Ok(_) => fs::rename(&tmp, &dest).map_err(io_err("cannot rename into", &dest)),
        };
        if result.is_err() {
            let _ = remove_tree(&tmp);
        }
        result.map(|()| Ensured::Unpacked)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Index {
                    version: 1,
                    ..Index::default()
                });
            }
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        };
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| StoreError::Index {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if index.version != 1 {
            return Err(StoreError::Index {
                path,
                message: format!("version {} (this rcompose reads version 1)", index.version),
            });
        }
        Ok(index)
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.index_path();
        let tmp = self.temp_path();
        let mut bytes = serde_json::to_vec_pretty(index).map_err(|e| StoreError::Index {
            path: path.clone(),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        fs::write(&tmp, bytes).map_err(io_err("cannot write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("cannot rename into", &path))
    }

    /// All images, sorted by their first name (unnamed images last, by id).
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut images: Vec<ImageRecord> = self.read_index()?.images.into_values().collect();
        images.sort_by(|a, b| match (a.names.first(), b.names.first()) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.id.cmp(&b.id),
        });
        Ok(images)
    }

    /// The image called `name`, or whose id (full `sha256:...`, or a hex prefix of at least
    /// 12 digits) is `name`.
    pub fn find(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        let index = self.read_index()?;
        if let Some(found) = find_in(&index, name) {
            return Ok(Some(found.clone()));
        }
        // `busybox` finds `docker.io/library/busybox:latest`, as in Docker.
        let normalized = normalize_name(name);
        Ok(find_in(&index, &normalized).cloned())
    }

    /// Adds an image, or merges its names into the existing record with the same id. Each
    /// name moves to this image (a name names one image).
    pub fn save_image(&self, record: ImageRecord) -> Result<ImageRecord, StoreError> {
        let _lock = self.lock("store")?;
        let mut index = self.read_index()?;
        index.version = 1;
        for other in index.images.values_mut() {
            if other.id != record.id {
                other.names.retain(|n| !record.names.contains(n));
            }
        }
        let saved = match index.images.get_mut(&record.id) {
            Some(existing) => {
                for name in &record.names {
                    if !existing.names.contains(name) {
                        existing.names.push(name.clone());
                    }
                }
                if existing.manifest.is_none() {
                    existing.manifest = record.manifest.clone();
                }
                existing.clone()
            }
            None => {
                index.images.insert(record.id.clone(), record.clone());
                record
            }
        };
        self.write_index(&index)?;
        Ok(saved)
    }

    /// The images a source file held when it was imported with the same `stamp`, if they
    /// are all still in the store with their layers.
    pub fn cached_source(
        &self,
        key: &str,
        stamp: &SourceStamp,
    ) -> Result<Option<Vec<ImageRecord>>, StoreError> {
        let index = self.read_index()?;
        let Some(entry) = index.sources.get(key).filter(|e| &e.stamp == stamp) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for id in &entry.images {
            match index.images.get(id) {
                Some(r) if r.layers.iter().all(|l| self.has_layer(&l.diff_id)) => {
                    out.push(r.clone());
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Records that the source file `key` with `stamp` held the images `ids`.
    pub fn save_source(
        &self,
        key: &str,
        stamp: SourceStamp,
        ids: Vec<Digest>,
    ) -> Result<(), StoreError> {
        let _lock = self.lock("store")?;
        let mut index = self.read_index()?;
        index
            .sources
            .insert(key.to_string(), SourceEntry { stamp, images: ids });
        self.write_index(&index)
    }

    /// Removes the name `name` from its image; when `name` is an id, or the image has no
    /// other name, the image record goes. Layers stay until [`Store::prune`]. Returns the
    /// record as it was.
    pub fn remove_image(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let _lock = self.lock("store")?;
        let mut index = self.read_index()?;
        let record = find_in(&index, name)
            .cloned()
            .ok_or_else(|| StoreError::NoImage(name.to_string()))?;
        let by_name = record.names.iter().any(|n| n == name);
        let entry = index
            .images
            .get_mut(&record.id)
            .ok_or_else(|| StoreError::NoImage(name.to_string()))?;
        entry.names.retain(|n| n != name);
        if !by_name || entry.names.is_empty() {
            index.images.remove(&record.id);
        }
        self.write_index(&index)?;
        Ok(record)
    }

    /// Removes layers and blobs that no image references and that are not in `keep` (layers
    /// used by running containers), and temp entries of processes that are gone.
    pub fn prune(&self, keep: &BTreeSet<Digest>) -> Result<PruneReport, StoreError> {
        let _lock = self.lock("store")?;
        let index = self.read_index()?;
        let mut used: BTreeSet<Digest> = keep.clone();
        for image in index.images.values() {
            used.insert(image.id.clone());
            used.extend(image.manifest.iter().cloned());
            for layer in &image.layers {
                used.insert(layer.diff_id.clone());
                used.insert(layer.blob.clone());
            }
        }
        let mut report = PruneReport::default();
        for digest in self.list_dir_digests("layers/sha256")? {
            if used.contains(&digest) {
                continue;
            }
            // Hold the layer's lock so that no unpack of the same layer runs meanwhile.
            let _layer = self.lock(digest.hex())?;
            let path = self.layer_path(&digest);
            let doomed = self.temp_path();
            fs::rename(&path, &doomed).map_err(io_err("cannot move away", &path))?;
            remove_tree(&doomed).map_err(io_err("cannot remove", &doomed))?;
            let _ = fs::remove_file(self.root.join("locks").join(digest.hex()));
            report.layers.push(digest);
        }
        for digest in self.list_dir_digests("blobs/sha256")? {
            if used.contains(&digest) {
                continue;
            }
            let path = self.blob_path(&digest);
            fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
            report.blobs.push(digest);
        }
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err("cannot list", &tmp))? {
            let entry = entry.map_err(io_err("cannot list", &tmp))?;
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('.').next())
                .and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                remove_tree(&entry.path()).map_err(io_err("cannot remove", &entry.path()))?;
                report.temp += 1;
            }
        }
        Ok(report)
    }

    fn list_dir_digests(&self, sub: &str) -> Result<Vec<Digest>, StoreError> {
        let dir = self.root.join(sub);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("cannot list", &dir))? {
            let entry = entry.map_err(io_err("cannot list", &dir))?;
            if let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
            {
                out.push(digest);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A name as Docker spells it in full (`busybox` -> `docker.io/library/busybox:latest`)
/// when it parses as an image reference with a repository path; otherwise unchanged (an OCI
/// layout's bare tag such as `t1`).
#[must_use]
pub fn normalize_name(name: &str) -> String {
    if !name.contains(['/', ':']) {
        return name.to_string();
    }
    name.parse::<super::registry::Reference>()
        .map_or_else(|_| name.to_string(), |r| r.to_string())
}

fn find_in<'a>(index: &'a Index, name: &str) -> Option<&'a ImageRecord> {
    if let Some(record) = index
        .images
        .values()
        .find(|r| r.names.iter().any(|n| n == name))
    {
        return Some(record);
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() < 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut matches = index
        .images
        .values()
        .filter(|r| r.id.hex().starts_with(hex));
    let first = matches.next()?;
    matches.next().is_none().then_some(first)
}

/// Removes a tree that may hold read-only directories (a layer may have 0555 directories;
/// root passes them, but be explicit) without following symlinks.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

/// A blob being written under `tmp/`; [`BlobWriter::commit`] verifies and publishes it.
#[derive(Debug)]
pub struct BlobWriter {
    blobs: PathBuf,
    path: PathBuf,
    file: Option<io::BufWriter<File>>,
    hasher: Hasher,
}

impl BlobWriter {
    /// Verifies the content against `expected` (digest and size) when given, and renames it
    /// to `blobs/sha256/<digest>`. Returns the digest.
    pub fn commit(mut self, expected: Option<(&Digest, u64)>) -> Result<Digest, StoreError> {
        let file = self.file.take();
        let hasher = std::mem::take(&mut self.hasher);
        if let Some(file) = file {
            file.into_inner()
                .map_err(|e| e.into_error())
                .map_err(io_err("cannot write blob", &self.path))?;
        }
        let size = hasher.len();
        let digest = hasher.finish();
        if let Some((want, want_size)) = expected {
            if size != want_size {
                return Err(StoreError::Mismatch {
                    what: format!("size of blob {want}"),
                    expected: format!("{want_size} bytes"),
                    actual: format!("{size} bytes"),
                });
            }
            if &digest != want {
                return Err(StoreError::Mismatch {
                    what: "blob digest".into(),
                    expected: want.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let dest = self.blobs.join(digest.hex());
        fs::rename(&self.path, &dest).map_err(io_err("cannot rename into", &dest))?;
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Not committed (or commit failed): the temp file goes.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempRoot(PathBuf);
    impl TempRoot {
        fn new(tag: &str) -> TempRoot {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("rcompose-store-{tag}-{}-{n}", std::process::id()));
            TempRoot(dir)
        }
    }
    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(config: &[u8], names: &[&str], layers: &[&Digest]) -> ImageRecord {
        ImageRecord {
            id: Digest::of(config),
            names: names.iter().map(|s| s.to_string()).collect(),
            manifest: None,
            layers: layers
                .iter()
                .map(|d| LayerRecord {
                    diff_id: (*d).clone(),
                    blob: (*d).clone(),
                    size: 1,
                })
                .collect(),
            config: ImageConfig::default(),
            source: "test".into(),
        }
    }

    #[test]
    fn blobs_are_verified_before_they_appear() {
        let root = TempRoot::new("blob");
        let store = Store::open(&root.0).unwrap();
        let good = Digest::of(b"hello");
        assert_eq!(
            store
                .put_blob(&mut &b"hello"[..], Some((&good, 5)))
                .unwrap(),
            good
        );
        assert!(store.has_blob(&good));
        assert_eq!(store.read_blob(&good, 5).unwrap(), b"hello");
        assert!(store.read_blob(&good, 4).is_err());
        // Wrong digest, short and long content: refused, nothing published, no temp left.
        let other = Digest::of(b"hellO");
        for (content, size) in [(&b"hellO"[..], 5), (&b"hell"[..], 5), (&b"hello!"[..], 5)] {
            let err = store
                .put_blob(&mut &content[..], Some((&good, size)))
                .unwrap_err();
            assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
        }
        assert!(!store.has_blob(&other));
        assert_eq!(fs::read_dir(root.0.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_layer_is_published_only_when_its_diff_id_matches() {
        let root = TempRoot::new("layer");
        let store = Store::open(&root.0).unwrap();
        let diff = Digest::of(b"layer");
        let wrong = store.ensure_layer(&diff, |dir| {
            fs::write(dir.join("f"), b"x")?;
            Ok::<_, io::Error>(Digest::of(b"other"))
        });
        assert!(matches!(wrong, Err(StoreError::Mismatch { .. })));
        let failed = store.ensure_layer(&diff, |dir| {
            fs::write(dir.join("f"), b"x")?;
            Err(io::Error::other("boom"))
        });
        assert!(matches!(failed, Err(StoreError::Unpack { .. })));
        assert!(!store.has_layer(&diff));
        assert_eq!(fs::read_dir(root.0.join("tmp")).unwrap().count(), 0);
        let done = store.ensure_layer(&diff, |dir| {
            fs::write(dir.join("f"), b"x")?;
            Ok::<_, io::Error>(Digest::of(b"layer"))
        });
        assert_eq!(done.unwrap(), Ensured::Unpacked);
        let again = store.ensure_layer(&diff, |_| -> Result<Digest, io::Error> {
            panic!("unpacked twice")
        });
        assert_eq!(again.unwrap(), Ensured::Present);
        assert_eq!(fs::read(store.layer_path(&diff).join("f")).unwrap(), b"x");
    }

    #[test]
    fn concurrent_ensures_unpack_once() {
        let root = TempRoot::new("race");
        let store = Store::open(&root.0).unwrap();
        let diff = Digest::of(b"shared");
        let unpacks = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    store
                        .ensure_layer(&diff, |dir| {
                            unpacks.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            fs::write(dir.join("f"), b"x")?;
                            Ok::<_, io::Error>(Digest::of(b"shared"))
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(unpacks.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn names_move_between_images_and_rm_untags_first() {
        let root = TempRoot::new("names");
        let store = Store::open(&root.0).unwrap();
        let a = store
            .save_image(record(b"a", &["app:1", "app:latest"], &[]))
            .unwrap();
        let b = store
            .save_image(record(b"b", &["app:latest"], &[]))
            .unwrap();
        assert_eq!(store.find("app:latest").unwrap().unwrap().id, b.id);
        assert_eq!(store.find("app:1").unwrap().unwrap().names, ["app:1"]);
        assert_eq!(store.find(&a.id.hex()[..12]).unwrap().unwrap().id, a.id);
        assert!(store.find(&a.id.hex()[..11]).unwrap().is_none());
        // Removing by name untags; the last name removes the record.
        store.remove_image("app:1").unwrap();
        assert!(store.find(&a.id.to_string()).unwrap().is_none());
        assert!(matches!(
            store.remove_image("app:1"),
            Err(StoreError::NoImage(_))
        ));
        assert_eq!(store.images().unwrap().len(), 1);
    }

    #[test]
    fn prune_keeps_what_images_and_containers_use() {
        let root = TempRoot::new("prune");
        let store = Store::open(&root.0).unwrap();
        let mut layers = Vec::new();
        for name in ["used", "kept", "orphan"] {
            let diff = Digest::of(name.as_bytes());
            store
                .ensure_layer(&diff, |_| Ok::<_, io::Error>(Digest::of(name.as_bytes())))
                .unwrap();
            store.put_blob(&mut name.as_bytes(), None).unwrap();
            layers.push(diff);
        }
        store
            .save_image(record(b"img", &["img"], &[&layers[0]]))
            .unwrap();
        fs::write(root.0.join("tmp/999999999.1"), b"stale").unwrap();
        let keep = BTreeSet::from([layers[1].clone()]);
        let report = store.prune(&keep).unwrap();
        assert_eq!(report.layers, vec![layers[2].clone()]);
        assert_eq!(report.blobs, vec![layers[2].clone()]);
        assert_eq!(report.temp, 1);
        assert!(store.has_layer(&layers[0]) && store.has_layer(&layers[1]));
        assert!(!store.has_layer(&layers[2]));
    }
}
