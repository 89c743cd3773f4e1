//! Unpacking the layers of an image into the store, in parallel, each once.

use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::fs::File;
use std::path::Path;

use super::digest::{Digest, HashingReader};
use super::store::{BlobWriter, Ensured, LayerRecord, Store, StoreError};
use super::unpack::{self, Limits, UnpackError};
use super::{Event, ImageError, Phase, Progress};

/// Opens a layer's blob for reading, from its start.
pub type Opener = Box<dyn Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync>;

/// One layer to make present: where its blob is, and what it must hash to.
pub struct LayerSource {
    /// The diff-id the image config promises (digest of the uncompressed tar); also the
    /// layer's name in the store unless `placed` says otherwise.
    pub diff_id: Digest,
    /// For a tarball laid at a target other than `/`: the store name of the layer (derived
    /// from the blob and the target) and the target, relative (`app/web`). Its contents are
    /// unpacked below the target, and its diff-id is not checked (nothing promised one).
    pub placed: Option<(Digest, String)>,
    /// The blob digest the manifest promises; `None` when the source does not say (old
    /// `docker save` archives name layers by path, not digest).
    pub blob: Option<Digest>,
    /// The blob size in bytes.
    pub size: u64,
    /// Keep a copy of the blob in the store (`blobs/`): for downloads. An imported file is
    /// the user's own copy; the store keeps only what it unpacked from it.
    pub keep_blob: bool,
    /// The reader `open` gives checks the blob against `blob` itself and fails rather than
    /// end when it does not match (a download, verified as it streams): the unpacker then
    /// does not hash it a second time. Ignored without a `blob`.
    pub verified: bool,
    /// How to read the blob.
    pub open: Opener,
}

impl std::fmt::Debug for LayerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerSource")
            .field("diff_id", &self.diff_id)
            .field("blob", &self.blob)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// An [`Opener`] of a file, from its start.
#[must_use]
pub fn file_opener(path: &Path) -> Opener {
    let path = path.to_path_buf();
    Box::new(move || Ok(Box::new(File::open(&path)?) as Box<dyn Read + Send>))
}

/// The digest and size of a whole file (`what` names it in errors: "layer", "archive").
pub fn digest_file(path: &Path, what: &'static str) -> Result<(Digest, u64), ImageError> {
    let file = File::open(path).map_err(|e| ImageError::io(what, path, e))?;
    let mut hashing = HashingReader::new(file, u64::MAX);
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| ImageError::io(what, path, e))?;
    let size = hashing.len();
    Ok((hashing.finish().0, size))
}

/// Reads from `inner`, copying every byte into `sink` and reporting progress.
struct Tee<'a, R> {
    inner: R,
    sink: Option<&'a mut BlobWriter>,
    progress: &'a dyn Progress,
    diff_id: &'a Digest,
    done: u64,
    reported: u64,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(sink) = self.sink.as_mut() {
            sink.write_all(&buf[..n])?;
        }
        self.done += n as u64;
        if n == 0 || self.done - self.reported >= 1 << 20 {
            self.reported = self.done;
            self.progress.event(Event::Advance {
                diff_id: self.diff_id,
                bytes: self.done,
            });
        }
        Ok(n)
    }
}

/// Makes every layer present in the store, `jobs` at a time, and returns their records in
/// the order given. A layer already unpacked is not read at all; one being unpacked by
/// another process is waited for (the store's per-layer lock).
pub fn unpack_all(
    store: &Store,
    layers: &[LayerSource],
    limits: &Limits,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<Vec<LayerRecord>, ImageError> {
    let results: Vec<Mutex<Option<Result<LayerRecord, ImageError>>>> =
        layers.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let workers = jobs.clamp(1, layers.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= layers.len() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let result = one(store, &layers[i], limits, progress);
                    if result.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    let mut out = Vec::with_capacity(layers.len());
    for slot in results {
        match slot.into_inner().ok().flatten() {
            Some(Ok(record)) => out.push(record),
            Some(Err(e)) => return Err(e),
            // Not attempted because another layer failed first: that error was returned.
            None => {}
        }
    }
    Ok(out)
}

fn one(
    store: &Store,
    layer: &LayerSource,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<LayerRecord, ImageError> {
    let diff_id = layer
        .placed
        .as_ref()
        .map_or(&layer.diff_id, |(name, _)| name);
    let record = |blob: Option<&Digest>| LayerRecord {
        diff_id: diff_id.clone(),
        blob: blob.unwrap_or(diff_id).clone(),
        size: layer.size,
    };
    if store.has_layer(diff_id) {
        progress.event(Event::Present { diff_id });
        return Ok(record(layer.blob.as_ref()));
    }
    let mut unpacked = None;
    let ensured = store.ensure_layer(diff_id, |dir| -> Result<Digest, UnpackOrStore> {
        // Under the layer's lock: this process is the one that unpacks it.
        progress.event(Event::Start {
            diff_id,
            size: layer.size,
            phase: Phase::Unpack,
        });
        let keep_blob = layer.keep_blob && !layer.blob.as_ref().is_some_and(|b| store.has_blob(b));
        let mut writer = if keep_blob {
            Some(store.blob_writer()?)
        } else {
            None
        };
        let mut reader = (layer.open)().map_err(|source| UnpackError::Read { source })?;
        let mut head = [0u8; 4];
        let mut filled = 0;
        while filled < head.len() {
            let n = reader
                .read(&mut head[filled..])
                .map_err(|source| UnpackError::Read { source })?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let compression = unpack::detect(&head[..filled])?;
        let tee = Tee {
            inner: (&head[..filled]).chain(reader),
            sink: writer.as_mut(),
            progress,
            diff_id,
            done: 0,
            reported: 0,
        };
        let dest = match &layer.placed {
            Some((_, rel)) => {
                let dest = dir.join(rel);
                std::fs::create_dir_all(&dest).map_err(|source| UnpackError::OpenDest {
                    path: dest.clone(),
                    source,
                })?;
                dest
            }
            None => dir.to_path_buf(),
        };
        let result = match layer.blob.as_ref().filter(|_| layer.verified) {
            Some(blob) => unpack::unpack_verified_layer(tee, blob, compression, &dest, limits),
            None => unpack::unpack_layer(tee, compression, &dest, limits),
        };
        let result = result.map_err(|e| {
            if matches!(e, UnpackError::SetuidRefused { .. }) {
                UnpackOrStore::Setuid(e)
            } else {
                UnpackOrStore::Unpack(e)
            }
        })?;
        if layer.placed.is_none() && result.diff_id != layer.diff_id {
            return Err(UnpackOrStore::Store(StoreError::Mismatch {
                what: "layer diff-id".into(),
                expected: layer.diff_id.to_string(),
                actual: result.diff_id.to_string(),
            }));
        }
        if let Some(want) = &layer.blob
            && want != &result.blob
        {
            return Err(UnpackOrStore::Store(StoreError::Mismatch {
                what: "layer blob digest".into(),
                expected: want.to_string(),
                actual: result.blob.to_string(),
            }));
        }
        if result.blob_size != layer.size {
            return Err(UnpackOrStore::Store(StoreError::Mismatch {
                what: format!("size of layer blob {}", result.blob),
                expected: format!("{} bytes", layer.size),
                actual: format!("{} bytes", result.blob_size),
            }));
        }
        if let Some(writer) = writer {
            writer.commit(Some((&result.blob, result.blob_size)))?;
        }
        unpacked = Some(result);
        Ok(diff_id.clone())
    })?;
    match ensured {
        Ensured::Present => {
            progress.event(Event::Present { diff_id });
            Ok(record(layer.blob.as_ref()))
        }
        Ensured::Unpacked => {
            let blob = unpacked.map(|u| u.blob);
            progress.event(Event::Done { diff_id });
            Ok(record(blob.as_ref().or(layer.blob.as_ref())))
        }
    }
}

/// The error of one unpack: the unpacker's, or the store's (blob writes, checks).
#[derive(Debug, thiserror::Error)]
enum UnpackOrStore {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(
        "{0} (layers are untrusted input; to keep setuid files, set `allow_setuid: true` on \
         the image, or pass `--allow-setuid` to `image import` / `pull`)"
    )]
    Setuid(UnpackError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
