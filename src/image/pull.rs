//! Registry images in the store: found by name, or pulled (OCI distribution API, see
//! [`super::registry`]) and unpacked.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use super::config;
use super::digest::Digest;
use super::layers::{LayerSource, Opener, file_opener, unpack_all};
use super::prepare::PrepareOptions;
use super::registry::{Descriptor, Reference, Registry, RegistryOptions};
use super::store::{ImageRecord, Store};
use super::{Event, ImageError, Phase, Progress};
use crate::plan::desired::PullPolicy;

/// Registries reached over plain HTTP besides localhost (comma-separated `host[:port]`).
pub const ENV_INSECURE: &str = "RCOMPOSE_INSECURE_REGISTRIES";

/// The registry options of this process: plain HTTP for the registries in
/// [`ENV_INSECURE`] and `extra`.
#[must_use]
pub fn registry_options(extra: &[String]) -> RegistryOptions {
    let mut insecure: Vec<String> = std::env::var(ENV_INSECURE)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    insecure.extend(extra.iter().cloned());
    RegistryOptions {
        insecure,
        ..RegistryOptions::default()
    }
}

fn parse(reference: &str) -> Result<Reference, ImageError> {
    reference
        .parse::<Reference>()
        .map_err(|e| ImageError::Pull {
            reference: reference.to_string(),
            message: e.reason,
        })
}

fn pull_err(reference: &Reference) -> impl Fn(String) -> ImageError + '_ {
    move |message| ImageError::Pull {
        reference: reference.to_string(),
        message,
    }
}

/// The stored image a reference names: by its canonical name, or by manifest digest when
/// it is pinned.
pub fn find(store: &Store, reference: &Reference) -> Result<Option<ImageRecord>, ImageError> {
    if let Some(digest) = reference.digest() {
        return Ok(store
            .images()?
            .into_iter()
            .find(|r| r.manifest.as_ref() == Some(digest)));
    }
    Ok(store.find(&reference.to_string())?)
}

/// The image `reference` from the store, pulled first when `policy` says so.
pub fn ensure(
    store: &Store,
    reference: &str,
    policy: PullPolicy,
    options: &PrepareOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImageError> {
    let parsed = parse(reference)?;
    if policy != PullPolicy::Always
        && let Some(record) = find(store, &parsed)?
    {
        return Ok(record);
    }
    if policy == PullPolicy::Never {
        return Err(ImageError::Pull {
            reference: parsed.to_string(),
            message: "not in the store, and the pull policy is `never` (run `rcompose pull`)"
                .into(),
        });
    }
    let registry = Registry::new(registry_options(&options.insecure))
        .map_err(|e| pull_err(&parsed)(error_chain(&e)))?;
    pull(store, &registry, &parsed, options, progress)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cur = c.source();
    }
    text
}

/// Pulls `reference`: resolves it to a linux/amd64 manifest, downloads the blobs the store
/// lacks (several at once, each verified while it streams) and unpacks each layer while it
/// downloads, then records the image under the reference's canonical name.
pub fn pull(
    store: &Store,
    registry: &Registry,
    reference: &Reference,
    options: &PrepareOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, ImageError> {
    let fail = pull_err(reference);
    let resolved = registry
        .resolve(reference)
        .map_err(|e| fail(error_chain(&e)))?;
    let config_desc = resolved.manifest.config();
    let config_digest: Digest = config_desc
        .digest()
        .to_string()
        .parse()
        .map_err(|e: super::digest::DigestError| fail(e.to_string()))?;
    let (image_config, diff_ids) =
        config::parse(&resolved.config).map_err(|e| fail(e.to_string()))?;
    let layers = resolved.manifest.layers();
    if layers.len() != diff_ids.len() {
        return Err(fail(format!(
            "the manifest has {} layers but the config lists {} diff-ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    // Blobs to download: layers not unpacked yet whose blob the store lacks. Each one
    // downloads into a temp file that its unpacker reads as it grows.
    let mut wanted: Vec<Descriptor> = Vec::new();
    let mut streams: BTreeMap<Digest, Arc<Growing>> = BTreeMap::new();
    let mut sources: Vec<LayerSource> = Vec::with_capacity(layers.len());
    let mut streamed: Vec<Digest> = Vec::new();
    let guard = TempFiles(Mutex::new(Vec::new()));
    for (desc, diff_id) in layers.iter().zip(&diff_ids) {
        let blob: Digest = desc
            .digest()
            .to_string()
            .parse()
            .map_err(|e: super::digest::DigestError| fail(e.to_string()))?;
        let open = if let Some(stream) = streams.get(&blob) {
            stream.opener()
        } else if !store.has_layer(diff_id) && !store.has_blob(&blob) {
            let path = store.temp_path();
            let file =
                File::create(&path).map_err(|e| ImageError::io("cannot create", &path, e))?;
            guard.push(path.clone());
            let stream = Arc::new(Growing::new(path, file, desc.size(), diff_id.clone()));
            wanted.push(desc.clone());
            streamed.push(diff_id.clone());
            let open = stream.opener();
            streams.insert(blob.clone(), stream);
            open
        } else {
            file_opener(&store.blob_path(&blob))
        };
        let verified = streams.contains_key(&blob);
        sources.push(LayerSource {
            diff_id: diff_id.clone(),
            placed: None,
            blob: Some(blob),
            size: desc.size(),
            keep_blob: false,
            // A download is verified by the registry client as it streams, and its reader
            // ends only once it was (see `Growing`); a stored blob is hashed again.
            verified,
            open,
        });
    }
    let unpack_progress = Streamed {
        inner: progress,
        streamed: &streamed,
    };
    let (downloaded, unpacked) = std::thread::scope(|scope| {
        let downloader = scope.spawn(|| {
            // However the download ends (even in a panic), no unpacker waits any longer.
            let _end = EndAll(&streams);
            download(registry, reference, &wanted, &streams, progress)
        });
        let unpacked = unpack_all(
            store,
            &sources,
            &options.limits,
            options.jobs,
            &unpack_progress,
        );
        let downloaded = downloader
            .join()
            .unwrap_or_else(|_| Err(fail("the download thread panicked".into())));
        (downloaded, unpacked)
    });
    // A failed unpack lets the downloads finish: a blob that does not match its digest, or
    // that ended short, explains a failed unpack better than the unpacker can.
    downloaded?;
    let layer_records = unpacked?;
    // Every blob downloaded completely and verified: keep it.
    for (blob, stream) in &streams {
        let dest = store.blob_path(blob);
        fs::rename(&stream.path, &dest)
            .map_err(|e| ImageError::io("cannot rename into", &dest, e))?;
    }
    store.put_blob(
        &mut &resolved.config[..],
        Some((&config_digest, resolved.config.len() as u64)),
    )?;
    store.put_blob(
        &mut &resolved.manifest_bytes[..],
        Some((&resolved.digest, resolved.manifest_bytes.len() as u64)),
    )?;
    let mut record_names = Vec::new();
    if reference.digest().is_none() {
        record_names.push(reference.to_string());
    }
    let record = ImageRecord {
        id: config_digest,
        names: record_names,
        manifest: Some(resolved.digest.clone()),
        layers: layer_records,
        config: image_config,
        source: format!("registry {reference}"),
    };
    Ok(store.save_image(record)?)
}

/// Temp files of a pull, removed when it ends unless renamed into place before.
struct TempFiles(Mutex<Vec<PathBuf>>);

impl TempFiles {
    fn push(&self, path: PathBuf) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(path);
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        for path in self.0.get_mut().unwrap_or_else(|p| p.into_inner()).iter() {
            // Gone already when it was renamed into blobs/.
            let _ = fs::remove_file(path);
        }
    }
}

/// Ends every stream when dropped.
struct EndAll<'a>(&'a BTreeMap<Digest, Arc<Growing>>);

impl Drop for EndAll<'_> {
    fn drop(&mut self) {
        for stream in self.0.values() {
            stream.end();
        }
    }
}

/// Passes the unpackers' events on, but for layers that stream from a download: their
/// progress is the download's (one bar per layer), their end is the unpacker's.
struct Streamed<'a> {
    inner: &'a dyn Progress,
    streamed: &'a [Digest],
}

impl Progress for Streamed<'_> {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Start { diff_id, .. } | Event::Advance { diff_id, .. }
                if self.streamed.contains(diff_id) => {}
            _ => self.inner.event(event),
        }
    }
}

/// A blob downloading into a temp file while its unpacker reads the part already written.
/// The download never waits for the unpacker; the unpacker waits for bytes, and fails when
/// the download failed. The reader ends (returns 0) only once the registry client verified
/// the whole blob (it flushes the writer then, and only then): the unpacker does not hash
/// the blob again, and never publishes a layer whose blob did not match its digest.
struct Growing {
    path: PathBuf,
    size: u64,
    diff_id: Digest,
    /// The file, until the download starts and takes it.
    file: Mutex<Option<File>>,
    state: Mutex<GrowState>,
    grew: Condvar,
}

#[derive(Default)]
struct GrowState {
    /// Bytes written to the file (not buffered).
    written: u64,
    /// The registry client checked size and digest of the whole blob.
    verified: bool,
    /// The download ended (verified or not): bytes not written yet are never coming.
    ended: bool,
}

impl Growing {
    fn new(path: PathBuf, file: File, size: u64, diff_id: Digest) -> Growing {
        Growing {
            path,
            size,
            diff_id,
            file: Mutex::new(Some(file)),
            state: Mutex::new(GrowState::default()),
            grew: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GrowState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the stream: bytes not written yet are never coming, and a blob not verified
    /// by now never will be.
    fn end(&self) {
        self.lock().ended = true;
        self.grew.notify_all();
    }

    fn opener(self: &Arc<Self>) -> Opener {
        let stream = Arc::clone(self);
        Box::new(move || {
            Ok(Box::new(GrowingReader {
                file: File::open(&stream.path)?,
                stream: Arc::clone(&stream),
                pos: 0,
            }) as Box<dyn Read + Send>)
        })
    }

    fn writer(self: &Arc<Self>) -> io::Result<GrowingWriter> {
        let file = self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| io::Error::other("the blob is downloading already"))?;
        Ok(GrowingWriter {
            stream: Arc::clone(self),
            file,
        })
    }
}

struct GrowingReader {
    stream: Arc<Growing>,
    file: File,
    pos: u64,
}

impl Read for GrowingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let written = {
            let mut state = self.stream.lock();
            loop {
                if self.pos >= self.stream.size {
                    // The end: only once the download says the blob is the one asked for.
                    if state.verified {
                        return Ok(0);
                    }
                    if state.ended {
                        return Err(io::Error::other(format!(
                            "the download of layer {} was not verified",
                            self.stream.diff_id
                        )));
                    }
                } else if state.written > self.pos {
                    break state.written;
                } else if state.ended {
                    return Err(io::Error::other(format!(
                        "the download of layer {} ended after {} of {} bytes",
                        self.stream.diff_id, state.written, self.stream.size
                    )));
                }
                state = self
                    .stream
                    .grew
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        };
        let available = written.min(self.stream.size) - self.pos;
        let want = usize::try_from(available).map_or(buf.len(), |n| n.min(buf.len()));
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

struct GrowingWriter {
    stream: Arc<Growing>,
    file: File,
}

impl Write for GrowingWriter {
    /// The registry client writes through a large buffer of its own: each write is
    /// published to the unpacker at once.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.file.write_all(data)?;
        self.stream.lock().written += data.len() as u64;
        self.stream.grew.notify_all();
        Ok(data.len())
    }

    /// Called by the registry client once the whole blob was checked against its size and
    /// digest, never before ([`Registry::fetch_blobs`]): the reader may end now.
    fn flush(&mut self) -> io::Result<()> {
        let mut state = self.stream.lock();
        if state.written != self.stream.size {
            return Err(io::Error::other(format!(
                "the download of layer {} was flushed after {} of {} bytes",
                self.stream.diff_id, state.written, self.stream.size
            )));
        }
        state.verified = true;
        drop(state);
        self.stream.grew.notify_all();
        Ok(())
    }
}

impl Drop for GrowingWriter {
    fn drop(&mut self) {
        // A download that failed ends short.
        self.stream.end();
    }
}

/// Downloads `descs` into their streams' temp files: the registry client verifies size and
/// digest while streaming.
fn download(
    registry: &Registry,
    reference: &Reference,
    descs: &[Descriptor],
    streams: &BTreeMap<Digest, Arc<Growing>>,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    if descs.is_empty() {
        return Ok(());
    }
    let stream_of = |desc: &Descriptor| -> io::Result<&Arc<Growing>> {
        let blob: Digest = desc
            .digest()
            .to_string()
            .parse()
            .map_err(|e: super::digest::DigestError| io::Error::other(e.to_string()))?;
        streams
            .get(&blob)
            .ok_or_else(|| io::Error::other(format!("blob {blob} was not asked for")))
    };
    let result = registry.fetch_blobs(
        reference,
        descs,
        |desc| {
            let stream = stream_of(desc)?;
            progress.event(Event::Start {
                diff_id: &stream.diff_id,
                size: desc.size(),
                phase: Phase::Download,
            });
            Ok(Box::new(stream.writer()?) as Box<dyn Write + Send>)
        },
        |desc, bytes| {
            if let Ok(stream) = stream_of(desc) {
                progress.event(Event::Advance {
                    diff_id: &stream.diff_id,
                    bytes,
                });
            }
        },
    );
    result.map_err(|e| pull_err(reference)(error_chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream on a temp file that is removed when the test ends, failed or not.
    struct Temp(Arc<Growing>);

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0.path);
        }
    }

    fn stream(name: &str, size: u64) -> Temp {
        let path =
            std::env::temp_dir().join(format!("rcompose-grow-{name}-{}", std::process::id()));
        let file = File::create(&path).unwrap();
        Temp(Arc::new(Growing::new(
            path,
            file,
            size,
            Digest::of(name.as_bytes()),
        )))
    }
    #[test]
    fn the_reader_waits_for_bytes_and_ends_once_verified() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let temp = stream("whole", data.len() as u64);
        let s = &temp.0;
        let mut reader = (s.opener())().unwrap();
        let mut writer = s.writer().unwrap();
        assert!(s.writer().is_err(), "a second download of the same blob");
        let read = std::thread::scope(|scope| {
            let r = scope.spawn(move || {
                let mut got = Vec::new();
                reader.read_to_end(&mut got).unwrap();
                got
            });
            for chunk in data.chunks(70_000) {
                std::thread::sleep(std::time::Duration::from_millis(5));
                writer.write_all(chunk).unwrap();
            }
            // all bytes are there, but the reader ends only once the blob was verified
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(!r.is_finished(), "the reader ended before the verdict");
            writer.flush().unwrap();
            r.join().unwrap()
        });
        drop(writer);
        assert!(
            read == data,
            "read {} bytes, not the {} written",
            read.len(),
            data.len()
        );
    }

    #[test]
    fn bytes_past_the_size_are_never_read() {
        let temp = stream("past", 100);
        let s = &temp.0;
        let mut writer = s.writer().unwrap();
        writer.write_all(&[1; 105]).unwrap();
        assert!(writer.flush().is_err(), "flushed with 105 of 100 bytes");
        drop(writer);
        let mut got = Vec::new();
        let err = (s.opener())().unwrap().read_to_end(&mut got).unwrap_err();
        assert_eq!(got, vec![1; 100]);
        assert!(err.to_string().ends_with("was not verified"), "{err}");
    }

    #[test]
    fn a_download_that_ends_short_fails_the_reader() {
        let temp = stream("short", 1000);
        let s = &temp.0;
        let mut reader = (s.opener())().unwrap();
        let mut writer = s.writer().unwrap();
        writer.write_all(&[7; 400]).unwrap();
        drop(writer);
        let mut got = Vec::new();
        let err = reader.read_to_end(&mut got).unwrap_err();
        assert_eq!(got, vec![7; 400]);
        assert!(
            err.to_string().ends_with("ended after 400 of 1000 bytes"),
            "{err}"
        );
    }

    /// A blob of the right size that did not match its digest: the registry client never
    /// flushes its writer, and the unpacker reading it gets an error instead of its end.
    #[test]
    fn a_whole_download_that_was_not_verified_fails_the_reader() {
        let temp = stream("unverified", 1000);
        let s = &temp.0;
        let mut reader = (s.opener())().unwrap();
        let mut writer = s.writer().unwrap();
        writer.write_all(&[9; 1000]).unwrap();
        drop(writer);
        let mut got = Vec::new();
        let err = reader.read_to_end(&mut got).unwrap_err();
        assert_eq!(got, vec![9; 1000]);
        assert!(err.to_string().ends_with("was not verified"), "{err}");
    }
}
