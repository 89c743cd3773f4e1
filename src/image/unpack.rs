//! Unpacks one image layer (a tar stream, plain or gzip) into its own directory: hostile
//! input (../shared/layer-attacks.md).
//!
//! Each layer gets its own directory, later one overlayfs lower directory, so OCI whiteouts
//! become overlayfs whiteouts here: `dir/.wh.NAME` a `0:0` character device `dir/NAME`,
//! `dir/.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on `dir`.
//!
//! The rules, each against a published attack:
//! - Names are normalised (leading `/` and `./`, `.` components and repeated slashes go) and a
//!   `..` component, a NUL byte or an empty name is an error, never cleaned away (1.1). The
//!   root entry may only be a directory (umoci CVE-2021-29136).
//! - Every file system operation goes through descriptors: the destination is opened once;
//!   a parent directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` from it, so the kernel refuses any symlink on
//!   the way (an intermediate symlink is an error that names it: 1.2, RUSTSEC-2021-0080);
//!   when that fails the path is walked one `openat(O_NOFOLLOW | O_DIRECTORY)` at a time, to
//!   create missing directories and to say which component is wrong. `RESOLVE_BENEATH`
//!   rather than `RESOLVE_IN_ROOT`: names have no `..` and symlinks are refused, so both
//!   resolve the same paths, and `BENEATH` fails instead of clamping if that ever changed.
//! - The leaf is created with `O_CREAT | O_EXCL | O_NOFOLLOW` (or `mkdirat`, `symlinkat`,
//!   `linkat`, `mknodat`); whatever is in the way is removed first, a directory recursively
//!   through directory descriptors (RUSTSEC-2018-0002). Mode, owner, xattrs and times are set
//!   on the new descriptor, or with `AT_SYMLINK_NOFOLLOW` for symlinks and device nodes,
//!   never by path (containerd CVE-2021-32760, tar CVE-2026-33056).
//! - Directory modes, owners and times are applied at the end, through a fresh `openat2`
//!   from the root, so a 0555 directory still receives its files. The one cached directory
//!   descriptor is dropped whenever anything is removed or replaced (containerd
//!   CVE-2025-47290).
//! - A hard link must name a regular file already in the destination: the destination
//!   starts empty, so that is a file of this layer. Its own mode is ignored.
//! - Devices and FIFOs are refused unless `Limits::devices`; setuid and setgid files follow
//!   `Limits::setuid`; of the `SCHILY.xattr.*` records only `user.*` is kept.
//! - Headers the `tar` crate (>= 0.4.46) and GNU tar could read differently are errors:
//!   malformed or duplicate PAX records, a PAX size that disagrees with a non-zero ustar
//!   size, a PAX path that disagrees with a GNU long name, PAX sparse files, PAX global
//!   headers other than comments, and non-zero bytes after the end-of-archive marker (1.7).
//! - Limits (uncompressed bytes, compression ratio, entries, name length, header bytes) stop
//!   the unpack as soon as they are crossed (1.9).
//!
//! Speed: like `tar -xzf`, which runs gzip in a second process, a thread reads the input,
//! hashes it (the blob digest) and inflates it; it sends 256 KiB chunks over a bounded
//! channel to the calling thread, which hashes them (the diff id), parses the tar stream and
//! writes the files.
//!
//! This module uses no other rcompose module than `image::digest`.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString};
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use flate2::bufread::MultiGzDecoder;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, futimens, mkdirat, mknodat, utimensat};
use nix::sys::stat::{UtimensatFlags, makedev};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use tar::{Archive, EntryType, PaxExtension, PaxExtensions};

use crate::image::digest::{Digest, Hasher, HashingReader};

type Result<T> = std::result::Result<T, UnpackError>;

/// Size of the chunks the decompression thread hands over.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the two threads.
const CHANNEL_DEPTH: usize = 4;
/// The compression ratio is checked once this much is inflated (small layers of zeros or
/// of text legitimately inflate a lot).
pub const RATIO_FLOOR: u64 = 64 * 1024 * 1024;
/// Bytes the tar reader may read for the headers of one entry (its ustar header, GNU long
/// names, PAX records and the padding before them): the `tar` crate holds them in memory.
pub const MAX_HEADER_BYTES: u64 = 1024 * 1024;
/// Bytes of directory paths remembered until the end (to apply their modes and times): a
/// layer of many long directory names fails instead of growing memory.
pub const MAX_DIR_BYTES: usize = 64 * 1024 * 1024;
/// The opaque-directory xattr of overlayfs.
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip, one or more members (eStargz layers have many).
    Gzip,
}

/// Tells the compression of a layer from its first bytes (6 are enough).
///
/// zstd, xz and bzip2 are recognised and refused; anything else is taken for a plain tar
/// stream (which the tar parser then checks).
pub fn detect(first_bytes: &[u8]) -> Result<Compression> {
    const GZIP: &[u8] = &[0x1f, 0x8b];
    const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
    const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];
    if first_bytes.starts_with(GZIP) {
        Ok(Compression::Gzip)
    } else if first_bytes.starts_with(ZSTD) {
        Err(UnpackError::Unsupported { format: "zstd" })
    } else if first_bytes.starts_with(XZ) {
        Err(UnpackError::Unsupported { format: "xz" })
    } else if first_bytes.len() >= 4
        && first_bytes.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&first_bytes[3])
    {
        Err(UnpackError::Unsupported { format: "bzip2" })
    } else {
        Ok(Compression::None)
    }
}

/// What to do with setuid and setgid bits on files (not directories: a setgid directory
/// only passes its group on, as Debian's `/var/mail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetuidPolicy {
    /// A setuid or setgid file is an error.
    Refuse,
    /// The bits are cleared.
    Strip,
    /// The bits are kept.
    Allow,
}

/// Bounds on one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Uncompressed bytes (the tar stream, and file bytes written).
    pub max_bytes: u64,
    /// Uncompressed bytes per compressed byte, enforced once [`RATIO_FLOOR`] bytes are out.
    pub max_ratio: u64,
    /// Tar entries.
    pub max_entries: u64,
    /// Bytes in an entry name or link target.
    pub max_path_len: usize,
    /// Setuid and setgid files.
    pub setuid: SetuidPolicy,
    /// Whether character and block devices and FIFOs are created (refused when false).
    pub devices: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 32 << 30,
            max_ratio: 200,
            max_entries: 500_000,
            max_path_len: 4096,
            setuid: SetuidPolicy::Refuse,
            devices: false,
        }
    }
}

/// What an unpack read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the raw (compressed) input.
    pub blob: Digest,
    /// Bytes of raw input.
    pub blob_size: u64,
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Tar entries (extension headers not counted).
    pub entries: u64,
    /// Bytes of the uncompressed tar stream.
    pub bytes: u64,
}

/// Why a layer could not be unpacked. Entry names are shown lossily, cut after 100
/// characters.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The destination could not be opened as a directory (it must not be a symlink).
    #[error("failed to open the unpack destination `{}`", path.display())]
    OpenDest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The destination already holds something.
    #[error("the unpack destination `{}` is not empty", path.display())]
    DestNotEmpty { path: PathBuf },
    /// The decompression thread could not start.
    #[error("failed to start the decompression thread")]
    Thread {
        #[source]
        source: io::Error,
    },
    /// A compression this unpacker does not read.
    #[error("layers compressed with {format} are not supported")]
    Unsupported { format: &'static str },
    /// Reading the input failed (for example more bytes than its descriptor says).
    #[error("failed to read the layer")]
    Read {
        #[source]
        source: io::Error,
    },
    /// The input is not valid gzip.
    #[error("the layer is not valid gzip")]
    Decompress {
        #[source]
        source: io::Error,
    },
    /// More than `Limits::max_bytes` uncompressed.
    #[error("the layer is larger than {limit} bytes uncompressed")]
    TooLarge { limit: u64 },
    /// The input inflates more than `Limits::max_ratio` times.
    #[error("the layer inflates more than {limit} times (a compression bomb)")]
    RatioExceeded { limit: u64 },
    /// More directory paths than [`MAX_DIR_BYTES`].
    #[error("the layer's directory names add up to more than {limit} bytes")]
    TooManyDirectories { limit: usize },
    /// More than `Limits::max_entries` entries.
    #[error("the layer has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    /// The headers of one entry (long names, PAX records) are larger than [`MAX_HEADER_BYTES`].
    #[error("the headers of entry number {index} are larger than {limit} bytes")]
    HeadersTooLarge { index: u64, limit: u64 },
    /// The tar reader failed (a bad checksum, a truncated header, ...).
    #[error("invalid tar data at entry number {index}")]
    Tar {
        index: u64,
        #[source]
        source: io::Error,
    },
    /// Non-zero bytes after the end-of-archive marker.
    #[error("non-zero data after the end of the archive, at byte {offset} of the tar stream")]
    TrailingData { offset: u64 },
    /// A name longer than `Limits::max_path_len`.
    #[error("entry `{entry}`: the name is {len} bytes long, more than the limit of {limit}")]
    PathTooLong {
        entry: String,
        len: usize,
        limit: usize,
    },
    /// A link target longer than `Limits::max_path_len`.
    #[error("entry `{entry}`: the link target is {len} bytes long, more than the limit of {limit}")]
    LinkTooLong {
        entry: String,
        len: usize,
        limit: usize,
    },
    /// A `..` component.
    #[error("entry `{entry}`: a `..` component leaves the layer")]
    ParentComponent { entry: String },
    /// An empty name or one with a NUL byte.
    #[error("entry `{entry}`: {reason}")]
    InvalidName { entry: String, reason: &'static str },
    /// The root entry is not a directory (umoci CVE-2021-29136).
    #[error("entry `{entry}`: the layer root may only be a directory, not a {kind}")]
    RootNotDirectory { entry: String, kind: &'static str },
    /// A path component is a symlink.
    #[error("entry `{entry}`: writes through the symlink `{symlink}`")]
    ThroughSymlink { entry: String, symlink: String },
    /// A path component is neither a directory nor a symlink.
    #[error("entry `{entry}`: `{component}` is not a directory")]
    NotADirectory { entry: String, component: String },
    /// A hard link whose target is not a regular file of this layer.
    #[error("entry `{entry}`: the hard link target `{target}` {reason}")]
    HardLink {
        entry: String,
        target: String,
        reason: String,
    },
    /// A malformed whiteout.
    #[error("entry `{entry}`: invalid whiteout: {reason}")]
    Whiteout { entry: String, reason: &'static str },
    /// A device or FIFO while `Limits::devices` is false.
    #[error("entry `{entry}`: {kind} entries are refused (devices are not allowed)")]
    DeviceRefused { entry: String, kind: &'static str },
    /// A setuid or setgid file under `SetuidPolicy::Refuse`.
    #[error(
        "entry `{entry}`: mode {mode:04o} has the setuid or setgid bit, refused by the setuid policy"
    )]
    SetuidRefused { entry: String, mode: u32 },
    /// A tar entry type this unpacker does not create.
    #[error("entry `{entry}`: unsupported entry type `{kind}`")]
    UnsupportedType { entry: String, kind: String },
    /// Headers that tar readers could interpret differently.
    #[error("entry `{entry}`: inconsistent headers: {reason}")]
    InconsistentHeader { entry: String, reason: String },
    /// The data of an entry ends early.
    #[error("entry `{entry}`: the data ends after {actual} of {expected} bytes")]
    Truncated {
        entry: String,
        expected: u64,
        actual: u64,
    },
    /// A file system operation failed.
    #[error("entry `{entry}`: failed to {op}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Unpacks the layer `src` into `dest`, an existing empty directory, and returns its
/// digests and sizes. The whole input is read (to compute the digests); on error the
/// unpack stops at once and `dest` holds a partial tree for the caller to remove. Nothing
/// outside `dest` is ever created, changed or removed.
pub fn unpack_layer(
    src: impl Read + Send,
    compression: Compression,
    dest: &Path,
    limits: &Limits,
) -> Result<Unpacked> {
    unpack_source(src, compression, dest, limits, None)
}

/// [`unpack_layer`] of a source that verifies the blob itself: `src` must fail rather than
/// end (return 0) unless everything it gave hashes to `blob`, as a download checked by the
/// registry client does. The raw input is not hashed again here (on the inflating thread,
/// the busiest one); [`Unpacked::blob`] is `blob`, and the size is still counted.
pub fn unpack_verified_layer(
    src: impl Read + Send,
    blob: &Digest,
    compression: Compression,
    dest: &Path,
    limits: &Limits,
) -> Result<Unpacked> {
    unpack_source(src, compression, dest, limits, Some(blob))
}

fn unpack_source(
    src: impl Read + Send,
    compression: Compression,
    dest: &Path,
    limits: &Limits,
    verified: Option<&Digest>,
) -> Result<Unpacked> {
    let root = open_dest(dest)?;
    let (chunks_tx, chunks_rx) = mpsc::sync_channel::<Chunk>(CHANNEL_DEPTH);
    let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_DEPTH + 2);
    thread::scope(|scope| {
        let producer = thread::Builder::new()
            .name("rcompose-inflate".to_owned())
            .spawn_scoped(scope, move || {
                produce(src, compression, limits, verified, &chunks_tx, &free_rx)
            })
            .map_err(|source| UnpackError::Thread { source })?;
        // `consume` owns (and drops) the receiving end, which stops the producer early on error.
        let consumed = consume(chunks_rx, free_tx, root, limits);
        let produced = match producer.join() {
            Ok(produced) => produced,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (consumed, produced) {
            (Ok(c), Ok(p)) => Ok(Unpacked {
                blob: p.blob,
                blob_size: p.blob_size,
                diff_id: c.diff_id,
                entries: c.entries,
                bytes: c.bytes,
            }),
            // The stream ended early because the producer failed: its error is the cause.
            (Err(c), Err(Stop::Failed(p))) if c.saw_end => Err(p),
            (Err(c), _) => Err(c.error),
            (Ok(_), Err(Stop::Failed(p))) => Err(p),
            (Ok(_), Err(Stop::ConsumerGone)) => Err(UnpackError::Read {
                source: io::Error::other("the unpacker stopped reading before the end"),
            }),
        }
    })
}

fn open_dest(dest: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let open_err = |source: io::Error| UnpackError::OpenDest {
        path: dest.to_owned(),
        source,
    };
    let root = nix::fcntl::open(dest, flags, Mode::empty()).map_err(|e| open_err(e.into()))?;
    if !list_dir(root.as_fd()).map_err(open_err)?.is_empty() {
        return Err(UnpackError::DestNotEmpty {
            path: dest.to_owned(),
        });
    }
    Ok(root)
}

// ---------------------------------------------------------------------------------------
// The producer thread: read, hash, inflate, check the size limits, hand over chunks.

/// A chunk and how many of its bytes are data (buffers keep their full length).
type Chunk = (Vec<u8>, usize);

struct Produced {
    blob: Digest,
    blob_size: u64,
}

enum Stop {
    Failed(UnpackError),
    ConsumerGone,
}

/// The raw input, hashed (unless its reader verifies it), remembering whether it failed (a
/// read error, not a gzip error).
struct Source<R> {
    inner: Raw<R>,
    failed: bool,
}

/// The raw input: hashed here, or verified by the reader itself and only counted.
enum Raw<R> {
    Hashed(HashingReader<R>),
    Verified { inner: R, len: u64, blob: Digest },
}

impl<R: Read> Raw<R> {
    fn len(&self) -> u64 {
        match self {
            Raw::Hashed(reader) => reader.len(),
            Raw::Verified { len, .. } => *len,
        }
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = match &mut self.inner {
            Raw::Hashed(reader) => reader.read(buf),
            Raw::Verified { inner, len, .. } => inner.read(buf).inspect(|&n| *len += n as u64),
        };
        if let Err(e) = &result
            && e.kind() != io::ErrorKind::Interrupted
        {
            self.failed = true;
        }
        result
    }
}

// One value per unpack, on the producer's stack: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Decode<R> {
    Plain(Source<R>),
    Gzip(MultiGzDecoder<BufReader<Source<R>>>),
}

impl<R: Read> Decode<R> {
    fn source(&self) -> &Source<R> {
        match self {
            Decode::Plain(source) => source,
            Decode::Gzip(decoder) => decoder.get_ref().get_ref(),
        }
    }

    fn into_source(self) -> Source<R> {
        match self {
            Decode::Plain(source) => source,
            Decode::Gzip(decoder) => decoder.into_inner().into_inner(),
        }
    }
}

impl<R: Read> Read for Decode<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decode::Plain(source) => source.read(buf),
            Decode::Gzip(decoder) => decoder.read(buf),
        }
    }
}

fn produce<R: Read>(
    src: R,
    compression: Compression,
    limits: &Limits,
    verified: Option<&Digest>,
    chunks: &SyncSender<Chunk>,
    free: &Receiver<Vec<u8>>,
) -> std::result::Result<Produced, Stop> {
    let source = Source {
        inner: match verified {
            Some(blob) => Raw::Verified {
                inner: src,
                len: 0,
                blob: blob.clone(),
            },
            None => Raw::Hashed(HashingReader::new(src, u64::MAX)),
        },
        failed: false,
    };
    let mut input = match compression {
        Compression::None => Decode::Plain(source),
        Compression::Gzip => Decode::Gzip(MultiGzDecoder::new(BufReader::with_capacity(
            64 * 1024,
            source,
        ))),
    };
    let mut total: u64 = 0;
    loop {
        let mut buf = free.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
        let mut filled = 0;
        let mut eof = false;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Stop::Failed(if input.source().failed {
                        UnpackError::Read { source }
                    } else {
                        UnpackError::Decompress { source }
                    }));
                }
            }
        }
        total += filled as u64;
        if total > limits.max_bytes {
            return Err(Stop::Failed(UnpackError::TooLarge {
                limit: limits.max_bytes,
            }));
        }
        let compressed = input.source().inner.len();
        if total > RATIO_FLOOR && total > limits.max_ratio.saturating_mul(compressed) {
            return Err(Stop::Failed(UnpackError::RatioExceeded {
                limit: limits.max_ratio,
            }));
        }
        if filled > 0 && chunks.send((buf, filled)).is_err() {
            return Err(Stop::ConsumerGone);
        }
        if eof {
            break;
        }
    }
    let source = input.into_source();
    let blob_size = source.inner.len();
    let blob = match source.inner {
        Raw::Hashed(reader) => reader.finish().0,
        Raw::Verified { blob, .. } => blob,
    };
    Ok(Produced { blob, blob_size })
}

// ---------------------------------------------------------------------------------------
// The consumer: the tar stream, read from the chunks.

/// Caps what the tar reader may read while it looks for the next entry.
#[derive(Debug, Default)]
struct HeaderBudget {
    remaining: Cell<Option<u64>>,
    exceeded: Cell<bool>,
}

struct ChunkReader {
    chunks: Receiver<Chunk>,
    free: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    len: usize,
    pos: usize,
    /// Stream offset of `current[0]`.
    offset: u64,
    hasher: Hasher,
    ended: bool,
    budget: Rc<HeaderBudget>,
}

impl ChunkReader {
    /// Moves to the next non-empty chunk; false at the end of the stream.
    fn next_chunk(&mut self) -> bool {
        loop {
            match self.chunks.recv() {
                Ok((buf, len)) => {
                    self.offset += self.len as u64;
                    let old = std::mem::replace(&mut self.current, buf);
                    if !old.is_empty() {
                        // A full return channel only means the producer has buffers enough.
                        let _ = self.free.try_send(old);
                    }
                    self.len = len;
                    self.pos = 0;
                    self.hasher.update(&self.current[..len]);
                    if len > 0 {
                        return true;
                    }
                }
                Err(_) => {
                    self.ended = true;
                    return false;
                }
            }
        }
    }

    /// Reads the rest of the stream, which may hold only zeros (end-of-archive blocks and
    /// padding).
    fn finish(&mut self) -> Result<()> {
        loop {
            let rest = &self.current[self.pos..self.len];
            if let Some(i) = rest.iter().position(|&b| b != 0) {
                return Err(UnpackError::TrailingData {
                    offset: self.offset + (self.pos + i) as u64,
                });
            }
            self.pos = self.len;
            if !self.next_chunk() {
                return Ok(());
            }
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.len && !self.next_chunk() {
            return Ok(0);
        }
        let mut n = out.len().min(self.len - self.pos);
        if let Some(remaining) = self.budget.remaining.get() {
            if remaining == 0 {
                self.budget.exceeded.set(true);
                return Err(io::Error::other("entry headers too large"));
            }
            n = n.min(usize::try_from(remaining).unwrap_or(usize::MAX));
            self.budget.remaining.set(Some(remaining - n as u64));
        }
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct Consumed {
    diff_id: Digest,
    bytes: u64,
    entries: u64,
}

struct ConsumeError {
    error: UnpackError,
    /// The stream had ended (possibly cut short by a producer error).
    saw_end: bool,
}

fn consume(
    chunks: Receiver<Chunk>,
    free: SyncSender<Vec<u8>>,
    root: OwnedFd,
    limits: &Limits,
) -> std::result::Result<Consumed, ConsumeError> {
    let budget = Rc::new(HeaderBudget::default());
    let reader = ChunkReader {
        chunks,
        free,
        current: Vec::new(),
        len: 0,
        pos: 0,
        offset: 0,
        hasher: Hasher::new(),
        ended: false,
        budget: Rc::clone(&budget),
    };
    let mut archive = Archive::new(reader);
    let mut extractor = Extractor::new(root, limits);
    let result = extractor.run(&mut archive, &budget);
    let mut reader = archive.into_inner();
    let result = result
        .and_then(|entries| reader.finish().map(|()| entries))
        .and_then(|entries| extractor.finish_dirs().map(|()| entries));
    match result {
        Ok(entries) => Ok(Consumed {
            bytes: reader.hasher.len(),
            diff_id: reader.hasher.finish(),
            entries,
        }),
        Err(error) => Err(ConsumeError {
            error,
            saw_end: reader.ended,
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Names.

/// Shows an entry name in an error: lossy UTF-8, cut after 100 characters.
fn show(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    if text.chars().count() <= 100 {
        text.into_owned()
    } else {
        let cut: String = text.chars().take(100).collect();
        format!("{cut}… ({} bytes)", name.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameProblem {
    Empty,
    Nul,
    ParentComponent,
}

/// Normalises an entry name: leading `/`, `.` components and repeated or trailing slashes
/// go; `..` and NUL are errors. The empty result is the layer root.
fn normalize(raw: &[u8]) -> std::result::Result<Vec<u8>, NameProblem> {
    if raw.is_empty() {
        return Err(NameProblem::Empty);
    }
    if raw.contains(&0) {
        return Err(NameProblem::Nul);
    }
    let mut out = Vec::with_capacity(raw.len());
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(NameProblem::ParentComponent),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(component);
            }
        }
    }
    Ok(out)
}

/// What a normalised name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'a> {
    Root,
    Node {
        parent: &'a [u8],
        leaf: &'a [u8],
    },
    /// `parent/.wh.name`
    Whiteout {
        parent: &'a [u8],
        name: &'a [u8],
    },
    /// `parent/.wh..wh..opq`
    Opaque {
        parent: &'a [u8],
    },
    /// AUFS metadata at the root (`.wh..wh.plnk/...`), ignored as moby and containerd do.
    AufsMetadata,
}

const WH: &[u8] = b".wh.";
const WH_META: &[u8] = b".wh..wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";

/// Classifies a normalised name (see [`normalize`]).
fn classify(path: &[u8]) -> std::result::Result<Target<'_>, &'static str> {
    if path.is_empty() {
        return Ok(Target::Root);
    }
    let (parent, leaf) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    };
    let first = parent.split(|&b| b == b'/').next().unwrap_or(b"");
    if !parent.is_empty() {
        if first.starts_with(WH_META) && first != WH_OPAQUE {
            return Ok(Target::AufsMetadata);
        }
        if parent.split(|&b| b == b'/').any(|c| c.starts_with(WH)) {
            return Err("a whiteout cannot contain entries");
        }
    }
    if leaf == WH_OPAQUE {
        return Ok(Target::Opaque { parent });
    }
    if leaf.starts_with(WH_META) {
        return if parent.is_empty() {
            Ok(Target::AufsMetadata)
        } else {
            Err("unknown `.wh..wh.` metadata")
        };
    }
    if let Some(name) = leaf.strip_prefix(WH) {
        return match name {
            b"" => Err("`.wh.` names no file"),
            b"." | b".." => Err("a whiteout of `.` or `..`"),
            _ => Ok(Target::Whiteout { parent, name }),
        };
    }
    Ok(Target::Node { parent, leaf })
}

// ---------------------------------------------------------------------------------------
// PAX records.

/// The PAX records of one entry, checked.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pax {
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    /// `SCHILY.xattr.NAME` records: (NAME, value).
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Checks PAX records the way the `tar` crate will use them: it skips a record it cannot
/// parse (a binary value with a newline, say) and then ignores the `size` after it, so such
/// a record is an error here, as are duplicate keys, numbers that are not plain decimals
/// (the crate would ignore them) and GNU sparse records (it does not implement them).
fn parse_pax<'a>(
    records: impl Iterator<Item = io::Result<PaxExtension<'a>>>,
) -> std::result::Result<Pax, String> {
    let mut pax = Pax::default();
    let mut seen = HashSet::new();
    for record in records {
        let record = record.map_err(|_| "a malformed pax record".to_owned())?;
        let key = record
            .key()
            .map_err(|_| "a pax record key that is not UTF-8".to_owned())?;
        if !seen.insert(key) {
            return Err(format!("the pax record `{key}` appears twice"));
        }
        let value = record.value_bytes();
        let number =
            || parse_decimal(value).ok_or_else(|| format!("the pax `{key}` is not a number"));
        match key {
            "size" => pax.size = Some(number()?),
            "uid" => pax.uid = Some(number()?),
            "gid" => pax.gid = Some(number()?),
            "mtime" => {
                pax.mtime = Some(parse_time(value).ok_or("the pax `mtime` is not a time")?);
            }
            "path" => pax.path = Some(value.to_vec()),
            "linkpath" => pax.linkpath = Some(value.to_vec()),
            _ if key.starts_with("GNU.sparse.") => {
                return Err("pax sparse files are not supported".to_owned());
            }
            _ => {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    pax.xattrs.push((name.as_bytes().to_vec(), value.to_vec()));
                }
            }
        }
    }
    Ok(pax)
}

/// A plain decimal number: digits only, no sign, no overflow.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A PAX time: `[-]seconds[.fraction]`, as (seconds, nanoseconds).
fn parse_time(text: &[u8]) -> Option<(i64, u32)> {
    let (negative, text) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let seconds = i64::try_from(parse_decimal(whole)?).ok()?;
    let mut nanos: u32 = 0;
    if let Some(fraction) = fraction {
        if fraction.is_empty() || !fraction.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for i in 0..9 {
            nanos = nanos * 10 + fraction.get(i).map_or(0, |&b| u32::from(b - b'0'));
        }
    }
    if negative {
        // -1.5 is 2 seconds before the epoch plus half a second.
        if nanos == 0 {
            Some((-seconds, 0))
        } else {
            Some((-seconds - 1, 1_000_000_000 - nanos))
        }
    } else {
        Some((seconds, nanos))
    }
}

// ---------------------------------------------------------------------------------------
// The extractor.

/// Mode, owner, time and xattrs of an entry.
#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    /// Kept xattrs (`user.*`).
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// A directory whose mode, owner and times are applied at the end (its xattrs are set at
/// once, so memory does not grow with them).
#[derive(Debug)]
struct DirMeta {
    meta: Meta,
    /// Set when the directory replaced a whiteout of this layer: the lower directory of the
    /// same name was deleted, so this new one must not merge with it.
    opaque: bool,
}

/// How a path walk failed.
enum WalkError {
    Symlink(Vec<u8>),
    NotDirectory(Vec<u8>),
    Missing(Vec<u8>),
    Io(&'static str, Errno),
}

/// What a leaf name holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Nothing,
    Directory,
    Whiteout,
    Other,
}

struct Extractor<'l> {
    root: Rc<OwnedFd>,
    limits: &'l Limits,
    /// The last parent directory opened, by normalised path. Dropped on any removal.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directories whose metadata is applied at the end, by normalised path (sorted, so the
    /// entries below a path are one range).
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    /// Bytes of path in `dirs` so far: bounds its memory.
    dir_bytes: usize,
    buf: Vec<u8>,
    euid: u32,
    egid: u32,
    /// The destination is setgid: new files take its group, so owners are always set.
    always_chown: bool,
    written: u64,
    /// The number of the entry being unpacked (from 1).
    index: u64,
}

impl<'l> Extractor<'l> {
    fn new(root: OwnedFd, limits: &'l Limits) -> Extractor<'l> {
        let always_chown = fstat(&root).is_ok_and(|st| st.st_mode & libc::S_ISGID != 0);
        Extractor {
            root: Rc::new(root),
            limits,
            cache: None,
            dirs: BTreeMap::new(),
            dir_bytes: 0,
            buf: vec![0; CHUNK],
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            always_chown,
            written: 0,
            index: 0,
        }
    }

    fn run(&mut self, archive: &mut Archive<ChunkReader>, budget: &HeaderBudget) -> Result<u64> {
        let mut entries = archive
            .entries()
            .map_err(|source| UnpackError::Tar { index: 1, source })?;
        let mut count: u64 = 0;
        loop {
            budget.remaining.set(Some(MAX_HEADER_BYTES));
            let next = entries.next();
            budget.remaining.set(None);
            let mut entry = match next {
                None => return Ok(count),
                Some(Ok(entry)) => entry,
                Some(Err(_)) if budget.exceeded.get() => {
                    return Err(UnpackError::HeadersTooLarge {
                        index: count + 1,
                        limit: MAX_HEADER_BYTES,
                    });
                }
                Some(Err(source)) => {
                    return Err(UnpackError::Tar {
                        index: count + 1,
                        source,
                    });
                }
            };
            count += 1;
            self.index = count;
            if count > self.limits.max_entries {
                return Err(UnpackError::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
            self.entry(&mut entry)?;
            // Whatever data the entry still has (a directory or link with a size, a
            // whiteout with content) is read past, so the next header is where tar expects.
            io::copy(&mut entry, &mut io::sink()).map_err(|source| UnpackError::Tar {
                index: count,
                source,
            })?;
        }
    }

    fn entry(&mut self, entry: &mut tar::Entry<'_, ChunkReader>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let name = show(&raw);
        if raw.len() > self.limits.max_path_len {
            return Err(UnpackError::PathTooLong {
                entry: name,
                len: raw.len(),
                limit: self.limits.max_path_len,
            });
        }
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return global_header(entry, name, self.index);
        }
        let inconsistent = |reason: String| UnpackError::InconsistentHeader {
            entry: show(&raw),
            reason,
        };
        let pax = match entry.pax_extensions() {
            Ok(Some(records)) => parse_pax(records).map_err(inconsistent)?,
            Ok(None) => Pax::default(),
            Err(source) => {
                return Err(UnpackError::Tar {
                    index: self.index,
                    source,
                });
            }
        };
        if pax.path.as_ref().is_some_and(|p| *p != raw) {
            return Err(inconsistent(
                "a GNU long name and a pax `path` disagree".to_owned(),
            ));
        }
        let link = entry.link_name_bytes().map(std::borrow::Cow::into_owned);
        if pax.linkpath.is_some() && pax.linkpath != link {
            return Err(inconsistent(
                "a GNU long link name and a pax `linkpath` disagree".to_owned(),
            ));
        }
        let header = entry.header();
        let header_err = |what: &str| inconsistent(format!("an invalid {what} field"));
        if let Some(size) = pax.size {
            let ustar = header.entry_size().map_err(|_| header_err("size"))?;
            if ustar != 0 && ustar != size {
                return Err(inconsistent(format!(
                    "the header size {ustar} and the pax size {size} disagree"
                )));
            }
        }
        let id = |value: u64, what: &str| {
            u32::try_from(value)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| inconsistent(format!("the {what} {value} is out of range")))
        };
        let (seconds, nanos) = match pax.mtime {
            Some(time) => time,
            None => {
                let seconds = header.mtime().map_err(|_| header_err("mtime"))?;
                (i64::try_from(seconds).map_err(|_| header_err("mtime"))?, 0)
            }
        };
        let mut meta = Meta {
            mode: header.mode().map_err(|_| header_err("mode"))? & 0o7777,
            uid: id(header.uid().map_err(|_| header_err("uid"))?, "uid")?,
            gid: id(header.gid().map_err(|_| header_err("gid"))?, "gid")?,
            mtime: TimeSpec::new(seconds, i64::from(nanos)),
            xattrs: Vec::new(),
        };
        for (key, value) in pax.xattrs {
            // Only `user.*`: `trusted.*` (overlayfs metadata), `security.*` (file
            // capabilities, LSM labels) and `system.*` are not the image's to set.
            if key.starts_with(b"user.") {
                let key = CString::new(key)
                    .map_err(|_| inconsistent("an xattr name with a NUL byte".to_owned()))?;
                meta.xattrs.push((key, value));
            }
        }
        let device = (header.device_major(), header.device_minor());
        // An old-style (pre-POSIX) regular file whose name ends in `/` is a directory.
        let kind = if header.as_bytes()[156] == 0 && raw.ends_with(b"/") {
            EntryType::Directory
        } else {
            kind
        };

        let path = normalize(&raw).map_err(|problem| match problem {
            NameProblem::Empty => UnpackError::InvalidName {
                entry: name.clone(),
                reason: "the name is empty",
            },
            NameProblem::Nul => UnpackError::InvalidName {
                entry: name.clone(),
                reason: "the name contains a NUL byte",
            },
            NameProblem::ParentComponent => UnpackError::ParentComponent {
                entry: name.clone(),
            },
        })?;
        let target = classify(&path).map_err(|reason| UnpackError::Whiteout {
            entry: name.clone(),
            reason,
        })?;
        match target {
            Target::AufsMetadata => Ok(()),
            Target::Whiteout { parent, name: gone } => self.whiteout(&name, parent, gone),
            Target::Opaque { parent } => self.opaque(&name, parent),
            Target::Root => {
                if kind == EntryType::Directory {
                    let root = Rc::clone(&self.root);
                    self.set_xattrs(&name, root.as_fd(), &mut meta)?;
                    self.record_dir(Vec::new(), meta, false)
                } else {
                    Err(UnpackError::RootNotDirectory {
                        entry: name,
                        kind: kind_name(kind),
                    })
                }
            }
            Target::Node { parent, leaf } => match kind {
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    let sparse = kind == EntryType::GNUSparse;
                    meta.mode = self.setuid(&name, meta.mode)?;
                    self.file(entry, &name, &path, parent, leaf, &meta, sparse)
                }
                EntryType::Directory => self.directory(&name, &path, parent, leaf, meta),
                EntryType::Symlink => {
                    let target =
                        link.ok_or_else(|| inconsistent("a symlink without a target".to_owned()))?;
                    self.symlink(&name, &path, parent, leaf, &target, &meta)
                }
                EntryType::Link => {
                    let target = link
                        .ok_or_else(|| inconsistent("a hard link without a target".to_owned()))?;
                    self.hard_link(&name, &path, parent, leaf, &target)
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => {
                    if !self.limits.devices {
                        return Err(UnpackError::DeviceRefused {
                            entry: name,
                            kind: kind_name(kind),
                        });
                    }
                    let (Ok(Some(major)), Ok(Some(minor))) = device else {
                        return Err(inconsistent("invalid device numbers".to_owned()));
                    };
                    meta.mode = self.setuid(&name, meta.mode)?;
                    let dev = makedev(u64::from(major), u64::from(minor));
                    self.node(&name, &path, parent, leaf, kind, dev, &meta)
                }
                other => Err(UnpackError::UnsupportedType {
                    entry: name,
                    kind: char::from(other.as_byte()).escape_default().to_string(),
                }),
            },
        }
    }

    /// Applies the setuid policy to the mode of a non-directory.
    fn setuid(&self, name: &str, mode: u32) -> Result<u32> {
        if mode & 0o6000 == 0 {
            return Ok(mode);
        }
        match self.limits.setuid {
            SetuidPolicy::Allow => Ok(mode),
            SetuidPolicy::Strip => Ok(mode & !0o6000),
            SetuidPolicy::Refuse => Err(UnpackError::SetuidRefused {
                entry: name.to_owned(),
                mode,
            }),
        }
    }

    // --- directories -------------------------------------------------------------------

    /// Opens the directory `path` (normalised, relative to the root), creating missing
    /// directories (0755) when `create`, never following a symlink.
    fn open_dir(
        &mut self,
        path: &[u8],
        create: bool,
    ) -> std::result::Result<Rc<OwnedFd>, WalkError> {
        if path.is_empty() {
            return Ok(Rc::clone(&self.root));
        }
        if let Some((cached, fd)) = &self.cache
            && cached == path
        {
            return Ok(Rc::clone(fd));
        }
        let fd = match openat2(self.root.as_fd(), path, beneath(dir_flags())) {
            Ok(fd) => fd,
            // A missing or wrong component: walk it one step at a time, to create or to name it.
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV | Errno::EAGAIN) => {
                self.walk(path, create)?
            }
            Err(errno) => return Err(WalkError::Io("open a directory", errno)),
        };
        let fd = Rc::new(fd);
        self.cache = Some((path.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    fn walk(&mut self, path: &[u8], create: bool) -> std::result::Result<OwnedFd, WalkError> {
        let mut current: Option<OwnedFd> = None;
        let mut end = 0;
        for component in path.split(|&b| b == b'/') {
            end += component.len();
            let prefix = &path[..end];
            end += 1;
            let dir = current.as_ref().map_or(self.root.as_fd(), AsFd::as_fd);
            let next = match openat(dir, component, dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => mkdir_implicit(dir, component, false)
                    .map_err(|e| WalkError::Io("create a directory", e))?,
                Err(Errno::ENOENT) => return Err(WalkError::Missing(prefix.to_vec())),
                Err(Errno::ELOOP | Errno::ENOTDIR) => match existing(dir, component) {
                    Ok(Existing::Whiteout) if create => {
                        // A whiteout of this layer, then content below the same name: the
                        // new directory replaces the deleted one, so it is opaque.
                        self.cache = None;
                        unlinkat(dir, component, UnlinkatFlags::NoRemoveDir)
                            .map_err(|e| WalkError::Io("remove a whiteout", e))?;
                        mkdir_implicit(dir, component, true)
                            .map_err(|e| WalkError::Io("create a directory", e))?
                    }
                    _ if is_symlink(dir, component) => {
                        return Err(WalkError::Symlink(prefix.to_vec()));
                    }
                    _ => return Err(WalkError::NotDirectory(prefix.to_vec())),
                },
                Err(errno) => return Err(WalkError::Io("open a directory", errno)),
            };
            current = Some(next);
        }
        current.ok_or(WalkError::Missing(Vec::new()))
    }

    /// Opens the parent directory of an entry, creating missing directories.
    fn parent(&mut self, name: &str, parent: &[u8]) -> Result<Rc<OwnedFd>> {
        self.open_dir(parent, true).map_err(|e| walk_error(name, e))
    }

    fn record_dir(&mut self, path: Vec<u8>, meta: Meta, opaque: bool) -> Result<()> {
        if let Some(dir) = self.dirs.get_mut(&path) {
            dir.meta = meta;
            dir.opaque |= opaque;
            return Ok(());
        }
        self.dir_bytes += path.len() + 1;
        if self.dir_bytes > MAX_DIR_BYTES {
            return Err(UnpackError::TooManyDirectories {
                limit: MAX_DIR_BYTES,
            });
        }
        self.dirs.insert(path, DirMeta { meta, opaque });
        Ok(())
    }

    /// Sets the kept xattrs on `fd` now, and takes them out of `meta`.
    fn set_xattrs(&self, name: &str, fd: BorrowedFd<'_>, meta: &mut Meta) -> Result<()> {
        for (key, value) in meta.xattrs.drain(..) {
            set_xattr(fd, &key, &value).map_err(io_err(name, "set an xattr"))?;
        }
        Ok(())
    }

    fn directory(
        &mut self,
        name: &str,
        path: &[u8],
        parent: &[u8],
        leaf: &[u8],
        mut meta: Meta,
    ) -> Result<()> {
        let dir = self.parent(name, parent)?;
        let mut opaque = false;
        match mkdirat(dir.as_fd(), leaf, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                match existing(dir.as_fd(), leaf).map_err(io_err(name, "inspect"))? {
                    Existing::Directory => {}
                    found => {
                        opaque = found == Existing::Whiteout;
                        self.remove(name, dir.as_fd(), path, leaf)?;
                        mkdirat(dir.as_fd(), leaf, Mode::from_bits_truncate(0o700))
                            .map_err(io_err(name, "create the directory"))?;
                    }
                }
            }
            Err(errno) => return Err(io_err(name, "create the directory")(errno)),
        }
        if !meta.xattrs.is_empty() {
            let fd = openat(dir.as_fd(), leaf, dir_flags(), Mode::empty())
                .map_err(io_err(name, "open the directory"))?;
            self.set_xattrs(name, fd.as_fd(), &mut meta)?;
        }
        self.record_dir(path.to_vec(), meta, opaque)
    }

    /// Applies the recorded directory metadata, deepest first, each directory reopened from
    /// the root without following symlinks.
    fn finish_dirs(&mut self) -> Result<()> {
        self.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (path, dir) in dirs.into_iter().rev() {
            let name = if path.is_empty() {
                ".".to_owned()
            } else {
                show(&path)
            };
            let fd = if path.is_empty() {
                Rc::clone(&self.root)
            } else {
                Rc::new(
                    openat2(self.root.as_fd(), path.as_slice(), beneath(dir_flags()))
                        .map_err(io_err(&name, "reopen the directory"))?,
                )
            };
            if dir.opaque {
                set_xattr(fd.as_fd(), OPAQUE_XATTR, b"y")
                    .map_err(io_err(&name, "mark the directory opaque"))?;
            }
            self.apply(&name, fd.as_fd(), &dir.meta)?;
        }
        Ok(())
    }

    /// Owner, mode and times on a descriptor (in that order: chown clears setuid).
    fn apply(&self, name: &str, fd: BorrowedFd<'_>, meta: &Meta) -> Result<()> {
        if self.always_chown || meta.uid != self.euid || meta.gid != self.egid {
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(io_err(name, "set the owner"))?;
        }
        fchmod(fd, Mode::from_bits_truncate(meta.mode)).map_err(io_err(name, "set the mode"))?;
        futimens(fd, &meta.mtime, &meta.mtime).map_err(io_err(name, "set the times"))?;
        Ok(())
    }

    // --- removal -----------------------------------------------------------------------

    /// Removes `leaf` (at normalised `path`) from `dir`, a directory recursively through
    /// directory descriptors. Forgets cached descriptors and recorded directories below it.
    fn remove(&mut self, name: &str, dir: BorrowedFd<'_>, path: &[u8], leaf: &[u8]) -> Result<()> {
        self.cache = None;
        match existing(dir, leaf).map_err(io_err(name, "inspect"))? {
            Existing::Nothing => {}
            Existing::Directory => {
                remove_tree(dir, leaf).map_err(|e| UnpackError::Io {
                    entry: name.to_owned(),
                    op: "remove the directory in the way",
                    source: e,
                })?;
                // `path` and the paths below it: `path/...` sorts between `path/` and `path0`.
                self.dirs.remove(path);
                let mut below = path.to_vec();
                below.push(b'/');
                let mut end = path.to_vec();
                end.push(b'/' + 1);
                let gone: Vec<Vec<u8>> = self
                    .dirs
                    .range(below..end)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in gone {
                    self.dirs.remove(&key);
                }
            }
            Existing::Whiteout | Existing::Other => {
                unlinkat(dir, leaf, UnlinkatFlags::NoRemoveDir)
                    .map_err(io_err(name, "remove the entry in the way"))?;
            }
        }
        Ok(())
    }

    // --- leaves --------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        entry: &mut tar::Entry<'_, ChunkReader>,
        name: &str,
        path: &[u8],
        parent: &[u8],
        leaf: &[u8],
        meta: &Meta,
        sparse: bool,
    ) -> Result<()> {
        let dir = self.parent(name, parent)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let create =
            |dir: BorrowedFd<'_>| openat(dir, leaf, flags, Mode::from_bits_truncate(0o600));
        let fd = match create(dir.as_fd()) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => {
                self.remove(name, dir.as_fd(), path, leaf)?;
                create(dir.as_fd()).map_err(io_err(name, "create the file"))?
            }
            Err(errno) => return Err(io_err(name, "create the file")(errno)),
        };
        let expected = entry.size();
        let copied = self.copy(name, entry, &fd)?;
        if !sparse && copied != expected {
            return Err(UnpackError::Truncated {
                entry: name.to_owned(),
                expected,
                actual: copied,
            });
        }
        for (key, value) in &meta.xattrs {
            set_xattr(fd.as_fd(), key, value).map_err(io_err(name, "set an xattr"))?;
        }
        self.apply(name, fd.as_fd(), meta)
    }

    /// Copies the entry's data into `fd` in large writes; counts bytes against the limit
    /// (sparse entries inflate beyond the stream).
    fn copy(
        &mut self,
        name: &str,
        entry: &mut tar::Entry<'_, ChunkReader>,
        fd: &OwnedFd,
    ) -> Result<u64> {
        let mut copied: u64 = 0;
        loop {
            let mut filled = 0;
            while filled < self.buf.len() {
                match entry.read(&mut self.buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(UnpackError::Io {
                            entry: name.to_owned(),
                            op: "read the data",
                            source,
                        });
                    }
                }
            }
            if filled == 0 {
                return Ok(copied);
            }
            copied += filled as u64;
            self.written += filled as u64;
            if self.written > self.limits.max_bytes {
                return Err(UnpackError::TooLarge {
                    limit: self.limits.max_bytes,
                });
            }
            write_all(fd.as_fd(), &self.buf[..filled]).map_err(io_err(name, "write the file"))?;
        }
    }

    fn symlink(
        &mut self,
        name: &str,
        path: &[u8],
        parent: &[u8],
        leaf: &[u8],
        target: &[u8],
        meta: &Meta,
    ) -> Result<()> {
        self.check_link(name, target)?;
        let dir = self.parent(name, parent)?;
        match symlinkat(target, dir.as_fd(), leaf) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                self.remove(name, dir.as_fd(), path, leaf)?;
                symlinkat(target, dir.as_fd(), leaf).map_err(io_err(name, "create the symlink"))?;
            }
            Err(errno) => return Err(io_err(name, "create the symlink")(errno)),
        }
        // Symlinks have no mode of their own and take no user xattrs.
        if self.always_chown || meta.uid != self.euid || meta.gid != self.egid {
            fchownat(
                dir.as_fd(),
                leaf,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io_err(name, "set the owner"))?;
        }
        utimensat(
            dir.as_fd(),
            leaf,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io_err(name, "set the times"))
    }

    fn check_link(&self, name: &str, target: &[u8]) -> Result<()> {
        if target.len() > self.limits.max_path_len {
            return Err(UnpackError::LinkTooLong {
                entry: name.to_owned(),
                len: target.len(),
                limit: self.limits.max_path_len,
            });
        }
        if target.is_empty() || target.contains(&0) {
            return Err(UnpackError::InvalidName {
                entry: name.to_owned(),
                reason: "the link target is empty or contains a NUL byte",
            });
        }
        Ok(())
    }

    fn hard_link(
        &mut self,
        name: &str,
        path: &[u8],
        parent: &[u8],
        leaf: &[u8],
        target: &[u8],
    ) -> Result<()> {
        self.check_link(name, target)?;
        let refuse = |reason: String| UnpackError::HardLink {
            entry: name.to_owned(),
            target: show(target),
            reason,
        };
        let normal = normalize(target).map_err(|problem| {
            refuse(
                match problem {
                    NameProblem::ParentComponent => "has a `..` component that leaves the layer",
                    NameProblem::Empty | NameProblem::Nul => "is not a valid name",
                }
                .to_owned(),
            )
        })?;
        if normal == path {
            return Err(refuse("is the link itself".to_owned()));
        }
        let (target_parent, target_leaf) = match normal.iter().rposition(|&b| b == b'/') {
            Some(i) => (&normal[..i], &normal[i + 1..]),
            None if normal.is_empty() => {
                return Err(refuse("is the layer root, not a regular file".to_owned()));
            }
            None => (&normal[..0], normal.as_slice()),
        };
        let target_dir = self.open_dir(target_parent, false).map_err(|e| {
            refuse(match e {
                WalkError::Symlink(s) => format!("goes through the symlink `{}`", show(&s)),
                WalkError::NotDirectory(_) | WalkError::Missing(_) => {
                    "is not a file of this layer".to_owned()
                }
                WalkError::Io(op, errno) => format!("cannot be opened ({op}: {errno})"),
            })
        })?;
        // The destination started empty: any regular file in it is one of this layer.
        match fstatat(
            target_dir.as_fd(),
            target_leaf,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {}
            Ok(st) => {
                return Err(refuse(format!(
                    "is a {}, not a regular file",
                    mode_kind(st.st_mode)
                )));
            }
            Err(Errno::ENOENT) => return Err(refuse("is not a file of this layer".to_owned())),
            Err(errno) => return Err(io_err(name, "inspect the hard link target")(errno)),
        }
        let dir = self.parent(name, parent)?;
        // flags 0: a symlink would not be followed (and is refused above).
        let link = |dir: BorrowedFd<'_>| {
            linkat(target_dir.as_fd(), target_leaf, dir, leaf, AtFlags::empty())
        };
        match link(dir.as_fd()) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => {
                self.remove(name, dir.as_fd(), path, leaf)?;
                link(dir.as_fd()).map_err(io_err(name, "create the hard link"))
            }
            Err(errno) => Err(io_err(name, "create the hard link")(errno)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        name: &str,
        path: &[u8],
        parent: &[u8],
        leaf: &[u8],
        kind: EntryType,
        dev: libc::dev_t,
        meta: &Meta,
    ) -> Result<()> {
        let dir = self.parent(name, parent)?;
        let sflag = match kind {
            EntryType::Char => SFlag::S_IFCHR,
            EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let make = |dir: BorrowedFd<'_>| mknodat(dir, leaf, sflag, Mode::empty(), dev);
        match make(dir.as_fd()) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                self.remove(name, dir.as_fd(), path, leaf)?;
                make(dir.as_fd()).map_err(io_err(name, "create the node"))?;
            }
            Err(errno) => return Err(io_err(name, "create the node")(errno)),
        }
        // A device node is never opened (opening one can act on the device): metadata is
        // set on the name, without following.
        fchownat(
            dir.as_fd(),
            leaf,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io_err(name, "set the owner"))?;
        chmod_nofollow(dir.as_fd(), leaf, meta.mode).map_err(io_err(name, "set the mode"))?;
        utimensat(
            dir.as_fd(),
            leaf,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io_err(name, "set the times"))
    }

    // --- whiteouts -----------------------------------------------------------------------

    fn whiteout(&mut self, name: &str, parent: &[u8], gone: &[u8]) -> Result<()> {
        let dir = self.parent(name, parent)?;
        let whiteout =
            |dir: BorrowedFd<'_>| mknodat(dir, gone, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0));
        match whiteout(dir.as_fd()) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => {
                match existing(dir.as_fd(), gone).map_err(io_err(name, "inspect"))? {
                    // The same whiteout twice.
                    Existing::Whiteout => Ok(()),
                    // Whiteouts only delete from lower layers (OCI image-spec, layer.md).
                    _ => Err(UnpackError::Whiteout {
                        entry: name.to_owned(),
                        reason: "it deletes a file of its own layer",
                    }),
                }
            }
            Err(errno) => Err(io_err(name, "create the whiteout")(errno)),
        }
    }

    fn opaque(&mut self, name: &str, parent: &[u8]) -> Result<()> {
        let dir = self.parent(name, parent)?;
        set_xattr(dir.as_fd(), OPAQUE_XATTR, b"y")
            .map_err(io_err(name, "mark the directory opaque"))
    }
}

/// A PAX global header: accepted when it only holds comments (as `git archive` writes);
/// anything else would apply to later entries in GNU tar but not in the `tar` crate (nor in
/// containerd, which ignores them).
fn global_header(entry: &mut tar::Entry<'_, ChunkReader>, name: String, index: u64) -> Result<()> {
    let inconsistent = |reason: &str| UnpackError::InconsistentHeader {
        entry: name.clone(),
        reason: reason.to_owned(),
    };
    if entry.size() > MAX_HEADER_BYTES {
        return Err(inconsistent("a pax global header larger than 1 MiB"));
    }
    let mut body = Vec::new();
    entry
        .read_to_end(&mut body)
        .map_err(|source| UnpackError::Tar { index, source })?;
    for record in PaxExtensions::new(&body) {
        let record = record.map_err(|_| inconsistent("a malformed pax global record"))?;
        if record.key_bytes() != b"comment" {
            return Err(inconsistent(
                "pax global headers are only accepted with comments",
            ));
        }
    }
    // Records of a local PAX header before it would be attached to the global header.
    if let Ok(Some(mut records)) = entry.pax_extensions()
        && records.next().is_some()
    {
        return Err(inconsistent("a pax header before a pax global header"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// System call helpers.

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// `openat2` that stays below the directory fd and refuses every symlink and mount crossing.
fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    )
}

/// Creates a directory of mode 0755 (whatever the umask), returns it opened.
fn mkdir_implicit(dir: BorrowedFd<'_>, name: &[u8], opaque: bool) -> nix::Result<OwnedFd> {
    mkdirat(dir, name, Mode::from_bits_truncate(0o755))?;
    let fd = openat(dir, name, dir_flags(), Mode::empty())?;
    fchmod(&fd, Mode::from_bits_truncate(0o755))?;
    if opaque {
        set_xattr(fd.as_fd(), OPAQUE_XATTR, b"y")?;
    }
    Ok(fd)
}

fn existing(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<Existing> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Existing::Directory,
            libc::S_IFCHR if st.st_rdev == 0 => Existing::Whiteout,
            _ => Existing::Other,
        }),
        Err(Errno::ENOENT) => Ok(Existing::Nothing),
        Err(errno) => Err(errno),
    }
}

fn is_symlink(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

fn mode_kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "regular file",
    }
}

fn kind_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => "regular file",
        EntryType::Directory => "directory",
        EntryType::Symlink => "symlink",
        EntryType::Link => "hard link",
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "fifo",
        _ => "special entry",
    }
}

/// Removes the directory `name` in `parent` and everything below it, through directory
/// descriptors opened without following symlinks (never by a path string).
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let dir = openat(parent, name, dir_flags(), Mode::empty())?;
    for (child, is_dir) in list_dir(dir.as_fd())? {
        let child = child.as_bytes();
        let is_dir = match is_dir {
            Some(is_dir) => is_dir,
            None => existing(dir.as_fd(), child)? == Existing::Directory,
        };
        if is_dir {
            remove_tree(dir.as_fd(), child)?;
        } else {
            unlinkat(dir.as_fd(), child, UnlinkatFlags::NoRemoveDir)?;
        }
    }
    drop(dir);
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)?;
    Ok(())
}

/// The names in a directory (without `.` and `..`), each with whether it is a directory
/// when the file system says so.
fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<(CString, Option<bool>)>> {
    // fdopendir takes over a duplicate; the caller keeps its descriptor.
    let dup = dir.try_clone_to_owned()?;
    // SAFETY: `dup` is an open directory descriptor we own; on success the DIR stream owns it.
    let stream = unsafe { libc::fdopendir(dup.as_raw_fd()) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    let _ = dup.into_raw_fd();
    // SAFETY: `stream` is a valid DIR stream; rewinding makes a shared offset irrelevant.
    unsafe { libc::rewinddir(stream) };
    let mut names = Vec::new();
    let result = loop {
        Errno::clear();
        // SAFETY: `stream` is valid until closedir below; readdir64 returns null at the end
        // or on error (errno tells them apart).
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            break match Errno::last_raw() {
                0 => Ok(()),
                raw => Err(io::Error::from_raw_os_error(raw)),
            };
        }
        // SAFETY: a non-null dirent64 from readdir64 stays valid until the next call on
        // `stream`; d_name is NUL-terminated. The name is copied before that call.
        let (name, d_type) = unsafe {
            (
                CStr::from_ptr((*entry).d_name.as_ptr()).to_owned(),
                (*entry).d_type,
            )
        };
        if name.as_bytes() == b"." || name.as_bytes() == b".." {
            continue;
        }
        let is_dir = match d_type {
            libc::DT_UNKNOWN => None,
            libc::DT_DIR => Some(true),
            _ => Some(false),
        };
        names.push((name, is_dir));
    };
    // SAFETY: `stream` is valid and not used after this call; this closes the duplicate.
    unsafe { libc::closedir(stream) };
    result.map(|()| names)
}

fn set_xattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: `fd` is open for the call, `key` is NUL-terminated and `value` points to
    // `value.len()` readable bytes.
    let result = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(result).map(drop)
}

/// `fchmodat2(dir, name, mode, AT_SYMLINK_NOFOLLOW)` (Linux 6.6): never follows `name`.
fn chmod_nofollow(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> nix::Result<()> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `dir` is open for the call and `name` is NUL-terminated; fchmodat2 takes
    // (int dirfd, const char *path, mode_t mode, unsigned int flags).
    let result = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    Errno::result(result).map(drop)
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

fn io_err<'a>(name: &'a str, op: &'static str) -> impl Fn(Errno) -> UnpackError + 'a {
    move |errno| UnpackError::Io {
        entry: name.to_owned(),
        op,
        source: io::Error::from(errno),
    }
}

fn walk_error(name: &str, error: WalkError) -> UnpackError {
    match error {
        WalkError::Symlink(prefix) => UnpackError::ThroughSymlink {
            entry: name.to_owned(),
            symlink: show(&prefix),
        },
        WalkError::NotDirectory(prefix) | WalkError::Missing(prefix) => {
            UnpackError::NotADirectory {
                entry: name.to_owned(),
                component: show(&prefix),
            }
        }
        WalkError::Io(op, errno) => io_err(name, op)(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_compression_from_magic_bytes() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]).unwrap(), Compression::Gzip);
        assert_eq!(detect(b"usr/\0\0\0").unwrap(), Compression::None);
        assert_eq!(detect(b"").unwrap(), Compression::None);
        let err = detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "layers compressed with zstd are not supported"
        );
        assert!(matches!(
            detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Err(UnpackError::Unsupported { format: "xz" })
        ));
        assert!(matches!(
            detect(b"BZh91AY&SY"),
            Err(UnpackError::Unsupported { format: "bzip2" })
        ));
        // A tar whose first name starts with "BZh" is still a tar.
        assert_eq!(detect(b"BZhello").unwrap(), Compression::None);
    }

    #[test]
    fn normalizes_names_and_refuses_parent_components() {
        let ok = |raw: &[u8]| String::from_utf8(normalize(raw).unwrap()).unwrap();
        assert_eq!(ok(b"/etc/passwd"), "etc/passwd");
        assert_eq!(ok(b"./usr/bin/"), "usr/bin");
        assert_eq!(ok(b"///a//./b/."), "a/b");
        assert_eq!(ok(b"./"), "");
        assert_eq!(ok(b"/"), "");
        assert_eq!(ok(b"."), "");
        assert_eq!(ok(b"..."), "...");
        assert_eq!(ok(b"a/..b"), "a/..b");
        assert_eq!(normalize(b""), Err(NameProblem::Empty));
        assert_eq!(normalize(b"a\0b"), Err(NameProblem::Nul));
        for bad in [&b"../evil"[..], b"a/../../evil", b"a/..", b"/..", b"./../x"] {
            assert_eq!(normalize(bad), Err(NameProblem::ParentComponent), "{bad:?}");
        }
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(classify(b""), Ok(Target::Root));
        assert_eq!(
            classify(b"a/b/c"),
            Ok(Target::Node {
                parent: b"a/b",
                leaf: b"c"
            })
        );
        assert_eq!(
            classify(b"c"),
            Ok(Target::Node {
                parent: b"",
                leaf: b"c"
            })
        );
        assert_eq!(
            classify(b"a/.wh.file"),
            Ok(Target::Whiteout {
                parent: b"a",
                name: b"file"
            })
        );
        assert_eq!(
            classify(b".wh.x"),
            Ok(Target::Whiteout {
                parent: b"",
                name: b"x"
            })
        );
        assert_eq!(
            classify(b"b/.wh..wh..opq"),
            Ok(Target::Opaque { parent: b"b" })
        );
        assert_eq!(
            classify(b".wh..wh..opq"),
            Ok(Target::Opaque { parent: b"" })
        );
        assert_eq!(classify(b".wh..wh.plnk/123.456"), Ok(Target::AufsMetadata));
        assert_eq!(classify(b".wh..wh.aufs"), Ok(Target::AufsMetadata));
        assert_eq!(classify(b"a/.wh."), Err("`.wh.` names no file"));
        assert_eq!(classify(b".wh.."), Err("a whiteout of `.` or `..`"));
        assert_eq!(classify(b"a/.wh..."), Err("a whiteout of `.` or `..`"));
        assert_eq!(classify(b"a/.wh..wh.x"), Err("unknown `.wh..wh.` metadata"));
        assert_eq!(
            classify(b"a/.wh.b/c"),
            Err("a whiteout cannot contain entries")
        );
        // A name that merely contains `.wh.` is a plain file.
        assert_eq!(
            classify(b"a/x.wh.y"),
            Ok(Target::Node {
                parent: b"a",
                leaf: b"x.wh.y"
            })
        );
    }

    fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        for (key, value) in records {
            let rest = 3 + key.len() + value.len();
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        data
    }

    #[test]
    fn parses_pax_records_strictly() {
        let data = pax(&[
            ("SCHILY.xattr.user.x", b"1"),
            ("mtime", b"1700000000.25"),
            ("path", b"a/b"),
            ("size", b"42"),
            ("uid", b"1234"),
        ]);
        let parsed = parse_pax(PaxExtensions::new(&data)).unwrap();
        assert_eq!(parsed.size, Some(42));
        assert_eq!(parsed.uid, Some(1234));
        assert_eq!(parsed.mtime, Some((1_700_000_000, 250_000_000)));
        assert_eq!(parsed.path.as_deref(), Some(&b"a/b"[..]));
        assert_eq!(parsed.xattrs, vec![(b"user.x".to_vec(), b"1".to_vec())]);

        let fails = |records: &[(&str, &[u8])]| {
            let data = pax(records);
            parse_pax(PaxExtensions::new(&data)).unwrap_err()
        };
        assert_eq!(
            fails(&[("size", b"1"), ("size", b"2")]),
            "the pax record `size` appears twice"
        );
        assert_eq!(fails(&[("size", b"+5")]), "the pax `size` is not a number");
        assert_eq!(fails(&[("uid", b"")]), "the pax `uid` is not a number");
        assert_eq!(
            fails(&[("GNU.sparse.map", b"0,1")]),
            "pax sparse files are not supported"
        );
        // A binary value with a newline: the tar crate cannot parse it and would ignore the
        // `size` after it.
        assert_eq!(
            fails(&[
                ("SCHILY.xattr.security.capability", b"\x01\n\x02"),
                ("size", b"7")
            ]),
            "a malformed pax record"
        );
        let bad_len = b"99 size=1\n".to_vec();
        assert!(parse_pax(PaxExtensions::new(&bad_len)).is_err());
    }

    #[test]
    fn parses_decimals_and_times() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b" 1"), None);
        assert_eq!(parse_time(b"12"), Some((12, 0)));
        assert_eq!(parse_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_time(b"12.0000000019"), Some((12, 1)));
        assert_eq!(parse_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_time(b"1."), None);
        assert_eq!(parse_time(b"x"), None);
    }

    #[test]
    fn shows_long_names_cut() {
        assert_eq!(show(b"a/b"), "a/b");
        let long = vec![b'x'; 65536];
        let shown = show(&long);
        assert!(shown.ends_with("… (65536 bytes)"), "{shown}");
        assert_eq!(shown.chars().filter(|&c| c == 'x').count(), 100);
    }

    #[test]
    fn default_limits_are_the_documented_ones() {
        let limits = Limits::default();
        assert_eq!(limits.max_bytes, 32 << 30);
        assert_eq!(limits.max_ratio, 200);
        assert_eq!(limits.max_entries, 500_000);
        assert_eq!(limits.max_path_len, 4096);
        assert_eq!(limits.setuid, SetuidPolicy::Refuse);
        assert!(!limits.devices);
    }
}
