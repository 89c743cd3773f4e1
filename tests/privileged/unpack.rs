//! The layer unpacker against hostile layers (../shared/layer-attacks.md section 6, rows
//! T1-T20) and on normal ones. Every layer is built here with the `tar` crate (raw headers
//! where the attack needs them) and unpacked into `sentinel/dest`, next to `sentinel/outside`:
//! each test checks the exact outcome and that nothing outside `dest` changed.
//!
//! Root: the unpacker sets owners, creates whiteout devices and `trusted.*` xattrs.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::Compression as Level;
use flate2::write::GzEncoder;
use rcompose::image::digest::{Digest, HashingReader};
use rcompose::image::unpack::{
    Compression, Limits, SetuidPolicy, UnpackError, Unpacked, detect, unpack_layer,
};
use tar::{EntryType, Header};

use crate::test::{Need, TempDir, require};

const MTIME: u64 = 1_600_000_000;

// ---------------------------------------------------------------------------------------
// Layers, built entry by entry.

/// A tar layer under construction; names and link names are written as raw bytes, so
/// hostile ones (`..`, absolute, 64 KiB) are possible.
struct Layer {
    tar: Vec<u8>,
}

impl Layer {
    fn new() -> Layer {
        Layer { tar: Vec::new() }
    }

    fn header(kind: EntryType, name: &[u8], size: u64, mode: u32) -> Header {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        let field = &mut h.as_old_mut().name;
        assert!(name.len() <= field.len(), "use long_name for long names");
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        h.set_cksum();
        h
    }

    /// Appends a header and its data (padded to 512 bytes).
    fn raw(mut self, header: &Header, data: &[u8]) -> Layer {
        self.tar.extend_from_slice(header.as_bytes());
        self.tar.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.tar.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn entry(self, kind: EntryType, name: &str, mode: u32, data: &[u8]) -> Layer {
        let h = Layer::header(kind, name.as_bytes(), data.len() as u64, mode);
        self.raw(&h, data)
    }

    fn file(self, name: &str, mode: u32, data: &[u8]) -> Layer {
        self.entry(EntryType::Regular, name, mode, data)
    }

    fn dir(self, name: &str, mode: u32) -> Layer {
        self.entry(EntryType::Directory, name, mode, b"")
    }

    fn link(self, kind: EntryType, name: &str, target: &str, mode: u32) -> Layer {
        let mut h = Layer::header(kind, name.as_bytes(), 0, mode);
        h.set_link_name_literal(target.as_bytes()).unwrap();
        h.set_cksum();
        self.raw(&h, b"")
    }

    fn symlink(self, name: &str, target: &str) -> Layer {
        self.link(EntryType::Symlink, name, target, 0o777)
    }

    fn hardlink(self, name: &str, target: &str) -> Layer {
        self.link(EntryType::Link, name, target, 0o644)
    }

    /// A PAX `x` header with `records` (for the next entry).
    fn pax(mut self, records: &[(&str, &[u8])]) -> Layer {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        // Not `into_inner`, which would add the end-of-archive blocks.
        self.tar.extend_from_slice(builder.get_ref());
        self
    }

    /// A GNU `L` long-name header (for the next entry).
    fn long_name(self, name: &[u8]) -> Layer {
        let mut data = name.to_vec();
        data.push(0);
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::GNULongName);
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        self.raw(&h, &data)
    }

    /// The tar stream with its two end-of-archive blocks.
    fn tar(mut self) -> Vec<u8> {
        self.tar.extend(std::iter::repeat_n(0u8, 1024));
        self.tar
    }

    fn gzip(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Level::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn unpack(layer: &[u8], dest: &Path, limits: &Limits) -> Result<Unpacked, UnpackError> {
    let compression = detect(layer)?;
    unpack_layer(layer, compression, dest, limits)
}

/// The error message with its causes, as the CLI prints them.
fn chain(err: &UnpackError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[track_caller]
fn assert_refused(result: Result<Unpacked, UnpackError>, message: &str) -> UnpackError {
    match result {
        Ok(unpacked) => panic!("unpacked ({unpacked:?}), expected `{message}`"),
        Err(err) => {
            assert_eq!(err.to_string(), message, "{}", chain(&err));
            err
        }
    }
}

// ---------------------------------------------------------------------------------------
// The sentinel: `outside/` next to the destinations, checked byte for byte.

struct Sentinel {
    dir: TempDir,
    before: BTreeMap<String, String>,
}

impl Sentinel {
    /// `sentinel/` with `outside/file`, `outside/dir/keep` and the destinations `dests`.
    fn new(name: &str, dests: &[&str]) -> Sentinel {
        let dir = TempDir::new(&format!("unpack-{name}"));
        let root = dir.path();
        fs::create_dir(root.join("outside")).unwrap();
        fs::write(root.join("outside/file"), "outside file\n").unwrap();
        fs::create_dir(root.join("outside/dir")).unwrap();
        fs::write(root.join("outside/dir/keep"), "keep\n").unwrap();
        fs::set_permissions(root.join("outside/file"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(root.join("outside/dir"), fs::Permissions::from_mode(0o750)).unwrap();
        for dest in dests {
            fs::create_dir(root.join(dest)).unwrap();
            fs::set_permissions(root.join(dest), fs::Permissions::from_mode(0o700)).unwrap();
        }
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for path in [
            "outside/dir/keep",
            "outside/file",
            "outside/dir",
            "outside",
            "",
        ] {
            fs::File::open(root.join(path))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let before = snapshot(root);
        Sentinel { dir, before }
    }

    fn path(&self, dest: &str) -> PathBuf {
        self.dir.path().join(dest)
    }

    /// The absolute path of `outside/...`, as a symlink target.
    fn outside(&self, rel: &str) -> String {
        self.dir
            .path()
            .join("outside")
            .join(rel)
            .display()
            .to_string()
    }

    /// Nothing outside the destinations changed: contents, modes, owners, times, xattrs,
    /// and no new entry (the sentinel's own time would have moved).
    #[track_caller]
    fn assert_untouched(&self) {
        assert_eq!(
            snapshot(self.dir.path()),
            self.before,
            "something outside dest changed"
        );
    }
}

/// Every entry of `root` with its type, mode, owner, size, times, content, link target and
/// xattr names; of the destinations (`dest*`) only that they are there.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).unwrap();
        // A destination's content (and so its own mode and times) is the unpack's to change.
        if rel.parent() == Some(Path::new("")) && rel.as_os_str().as_bytes().starts_with(b"dest") {
            out.insert(rel.display().to_string(), format!("{:?}", meta.file_type()));
            continue;
        }
        let mut line = format!(
            "{:?} {:o} {}:{} {} {}.{}",
            meta.file_type(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        if meta.is_file() {
            line += &format!(" {}", Digest::of(&fs::read(&path).unwrap()));
        } else if meta.is_symlink() {
            line += &format!(" -> {}", fs::read_link(&path).unwrap().display());
        }
        line += &format!(" xattrs {:?}", xattr_names(&path));
        out.insert(rel.display().to_string(), line);
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(rel.join(entry.unwrap().file_name()));
            }
        }
    }
    out
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// The xattr names of `path` (not following a symlink).
fn xattr_names(path: &Path) -> Vec<String> {
    let c = cpath(path);
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `c` is NUL-terminated and `buf` is writable for `buf.len()` bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    let mut names: Vec<String> = buf[..n.unsigned_abs()]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    names
}

/// The value of the xattr `name` of `path`, if set.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c = cpath(path);
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: both strings are NUL-terminated and `buf` is writable for `buf.len()` bytes.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::ENODATA), "lgetxattr: {err}");
        return None;
    }
    Some(buf[..n.unsigned_abs()].to_vec())
}

/// The tree under `dest`, one line per entry: `path type mode uid:gid detail`.
fn tree(dest: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let path = dest.join(&rel);
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let detail = if ft.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(&path)
                .unwrap()
                .map(|e| rel.join(e.unwrap().file_name()))
                .collect();
            children.sort();
            stack.extend(children.into_iter().rev());
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!("-> {}", fs::read_link(&path).unwrap().display())
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() { "char" } else { "block" };
            let rdev = meta.rdev();
            format!("{kind} {}:{}", libc::major(rdev), libc::minor(rdev))
        } else if ft.is_fifo() {
            "fifo".to_owned()
        } else {
            let data = fs::read(&path).unwrap();
            if data.len() <= 32 {
                format!("{:?}", String::from_utf8_lossy(&data))
            } else {
                format!("{} bytes", data.len())
            }
        };
        let name = rel.display().to_string();
        let name = name.strip_prefix("./").unwrap_or(&name).to_owned();
        lines.push(format!(
            "{name} {:04o} {}:{} {detail}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ));
    }
    lines
}

#[track_caller]
fn assert_tree(dest: &Path, expected: &[&str]) {
    assert_eq!(tree(dest), expected, "{}", tree(dest).join("\n"));
}

// ---------------------------------------------------------------------------------------
// T1-T3: names that leave the root.

#[test]
fn t1_refuses_a_parent_component() {
    require(&[Need::Root]);
    let s = Sentinel::new("t1", &["dest"]);
    let layer = Layer::new().file("../evil", 0o644, b"evil").tar();
    assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        "entry `../evil`: a `..` component leaves the layer",
    );
    assert_tree(&s.path("dest"), &[". 0700 0:0 dir"]);
    s.assert_untouched();
}

#[test]
fn t2_stores_an_absolute_name_inside_the_root() {
    require(&[Need::Root]);
    let s = Sentinel::new("t2", &["dest"]);
    let abs = format!("{}/evil", s.outside(""));
    assert!(abs.len() < 100);
    let layer = Layer::new()
        .file("/abs/evil", 0o644, b"evil")
        .file(&abs, 0o644, b"evil")
        .tar();
    unpack(&layer, &s.path("dest"), &Limits::default()).unwrap();
    let dest = s.path("dest");
    assert_eq!(fs::read(dest.join("abs/evil")).unwrap(), b"evil");
    // The absolute path of the real `outside/` lands below dest, not in `outside/`.
    assert_eq!(
        fs::read(dest.join(abs.trim_start_matches('/'))).unwrap(),
        b"evil"
    );
    assert!(!Path::new("/abs").exists());
    s.assert_untouched();
}

#[test]
fn t3_refuses_parent_components_in_the_middle() {
    require(&[Need::Root]);
    let s = Sentinel::new("t3", &["dest"]);
    let layer = Layer::new().file("a/../../evil", 0o644, b"evil").tar();
    assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        "entry `a/../../evil`: a `..` component leaves the layer",
    );
    assert_tree(&s.path("dest"), &[". 0700 0:0 dir"]);
    s.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// T4-T6: symlinks planted first, then written through.

#[test]
fn t4_refuses_to_write_through_a_symlink() {
    require(&[Need::Root]);
    let s = Sentinel::new("t4", &["dest", "dest2"]);
    let layer = Layer::new()
        .symlink("s", &s.outside(""))
        .file("s/evil", 0o644, b"evil")
        .tar();
    assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        "entry `s/evil`: writes through the symlink `s`",
    );
    let relative = Layer::new()
        .dir("d", 0o755)
        .symlink("d/s", "../../outside")
        .file("d/s/dir/evil", 0o644, b"evil")
        .tar();
    assert_refused(
        unpack(&relative, &s.path("dest2"), &Limits::default()),
        "entry `d/s/dir/evil`: writes through the symlink `d/s`",
    );
    s.assert_untouched();
}

#[test]
fn t5_creates_no_directory_through_a_parent_symlink() {
    require(&[Need::Root]);
    let s = Sentinel::new("t5", &["dest"]);
    let layer = Layer::new()
        .symlink("s", "..")
        .file("s/x/y/z", 0o644, b"z")
        .tar();
    assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        "entry `s/x/y/z`: writes through the symlink `s`",
    );
    assert!(!s.path("x").exists());
    assert_tree(&s.path("dest"), &[". 0700 0:0 dir", "s 0777 0:0 -> .."]);
    s.assert_untouched();
}

#[test]
fn t6_replaces_a_symlink_by_a_file_of_the_same_name() {
    require(&[Need::Root]);
    let s = Sentinel::new("t6", &["dest"]);
    let layer = Layer::new()
        .symlink("f", &s.outside("file"))
        .file("f", 0o644, b"inside")
        .tar();
    unpack(&layer, &s.path("dest"), &Limits::default()).unwrap();
    assert_tree(
        &s.path("dest"),
        &[". 0700 0:0 dir", "f 0644 0:0 \"inside\""],
    );
    s.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// T7-T9: hard links and metadata calls that could follow links.

#[test]
fn t7_refuses_hard_links_out_of_the_layer() {
    require(&[Need::Root]);
    let s = Sentinel::new("t7", &["dest", "dest2"]);
    let layer = Layer::new().hardlink("h", "../../outside/file").tar();
    assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        "entry `h`: the hard link target `../../outside/file` has a `..` component that leaves the layer",
    );
    let absolute = s.outside("file");
    let layer = Layer::new().hardlink("h", &absolute).tar();
    assert_refused(
        unpack(&layer, &s.path("dest2"), &Limits::default()),
        &format!("entry `h`: the hard link target `{absolute}` is not a file of this layer"),
    );
    s.assert_untouched();
}

#[test]
fn t8_refuses_a_hard_link_to_a_symlink_and_ignores_its_mode() {
    require(&[Need::Root]);
    let s = Sentinel::new("t8", &["dest", "dest2"]);
    let layer = Layer::new()
        .symlink("s", &s.outside("file"))
        .link(EntryType::Link, "h", "s", 0o4777)
        .tar();
    assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        "entry `h`: the hard link target `s` is a symlink, not a regular file",
    );
    // A hard link to a file of the layer: the link's own mode (04777) is ignored.
    let layer = Layer::new()
        .file("f", 0o640, b"f")
        .link(EntryType::Link, "h", "f", 0o4777)
        .tar();
    unpack(&layer, &s.path("dest2"), &Limits::default()).unwrap();
    assert_tree(
        &s.path("dest2"),
        &[". 0700 0:0 dir", "f 0640 0:0 \"f\"", "h 0640 0:0 \"f\""],
    );
    s.assert_untouched();
}

#[test]
fn t9_a_directory_replacing_a_symlink_does_not_chmod_its_target() {
    require(&[Need::Root]);
    let s = Sentinel::new("t9", &["dest"]);
    let layer = Layer::new()
        .symlink("d", &s.outside("dir"))
        .dir("d", 0o777)
        .dir("d/.", 0o777)
        .tar();
    unpack(&layer, &s.path("dest"), &Limits::default()).unwrap();
    assert_tree(&s.path("dest"), &[". 0700 0:0 dir", "d 0777 0:0 dir"]);
    s.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// T10-T13: the root, whiteouts and a replaced directory.

#[test]
fn t10_the_root_may_only_be_a_directory() {
    require(&[Need::Root]);
    let s = Sentinel::new("t10", &["dest", "dest2", "dest3", "dest4"]);
    let layer = Layer::new().symlink("./", &s.outside("")).tar();
    assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        "entry `./`: the layer root may only be a directory, not a symlink",
    );
    let layer = Layer::new().file("/", 0o644, b"x").tar();
    assert_refused(
        unpack(&layer, &s.path("dest2"), &Limits::default()),
        "entry `/`: the layer root may only be a directory, not a regular file",
    );
    // The next layer goes to its own directory, unaffected.
    let layer = Layer::new().file("x", 0o644, b"x").tar();
    unpack(&layer, &s.path("dest3"), &Limits::default()).unwrap();
    assert_tree(&s.path("dest3"), &[". 0700 0:0 dir", "x 0644 0:0 \"x\""]);
    // A root directory entry sets the root's mode.
    let layer = Layer::new().dir(".", 0o755).file("y", 0o600, b"y").tar();
    unpack(&layer, &s.path("dest4"), &Limits::default()).unwrap();
    assert_tree(&s.path("dest4"), &[". 0755 0:0 dir", "y 0600 0:0 \"y\""]);
    s.assert_untouched();
}

#[test]
fn t11_whiteouts_stay_in_their_layer_directory() {
    require(&[Need::Root]);
    let s = Sentinel::new("t11", &["dest1", "dest2", "dest3", "dest4"]);
    let l1 = Layer::new()
        .dir("etc", 0o755)
        .file("etc/victim", 0o644, b"v")
        .tar();
    let l2 = Layer::new().symlink("etc", &s.outside("dir")).tar();
    let l3 = Layer::new().file("etc/.wh.keep", 0o644, b"").tar();
    unpack(&l1, &s.path("dest1"), &Limits::default()).unwrap();
    unpack(&l2, &s.path("dest2"), &Limits::default()).unwrap();
    unpack(&l3, &s.path("dest3"), &Limits::default()).unwrap();
    assert_tree(
        &s.path("dest3"),
        &[
            ". 0700 0:0 dir",
            "etc 0755 0:0 dir",
            "etc/keep 0000 0:0 char 0:0",
        ],
    );
    // In one layer, a whiteout below a symlink of that layer is refused.
    let layer = Layer::new()
        .symlink("etc", &s.outside("dir"))
        .file("etc/.wh.keep", 0o644, b"")
        .tar();
    assert_refused(
        unpack(&layer, &s.path("dest4"), &Limits::default()),
        "entry `etc/.wh.keep`: writes through the symlink `etc`",
    );
    s.assert_untouched();
}

#[test]
fn t12_refuses_whiteouts_of_dot_names_and_below_symlinks() {
    require(&[Need::Root]);
    let s = Sentinel::new("t12", &["dest1", "dest2", "dest3", "dest4"]);
    let cases = [
        (
            "dest1",
            Layer::new().file(".wh..", 0o644, b""),
            "entry `.wh..`: invalid whiteout: a whiteout of `.` or `..`",
        ),
        (
            "dest2",
            Layer::new().file("a/.wh.", 0o644, b""),
            "entry `a/.wh.`: invalid whiteout: `.wh.` names no file",
        ),
        (
            "dest3",
            Layer::new().file("a/.wh...", 0o644, b""),
            "entry `a/.wh...`: invalid whiteout: a whiteout of `.` or `..`",
        ),
        (
            "dest4",
            Layer::new()
                .symlink("a", &s.outside("dir"))
                .file("a/.wh..wh..opq", 0o644, b""),
            "entry `a/.wh..wh..opq`: writes through the symlink `a`",
        ),
    ];
    for (dest, layer, message) in cases {
        assert_refused(
            unpack(&layer.tar(), &s.path(dest), &Limits::default()),
            message,
        );
    }
    assert_eq!(
        xattr(&s.path("outside/dir"), "trusted.overlay.opaque"),
        None
    );
    s.assert_untouched();
}

#[test]
fn t13_a_directory_replaced_by_a_symlink_is_not_written_through() {
    require(&[Need::Root]);
    let s = Sentinel::new("t13", &["dest"]);
    // `d/a` leaves `d` as the cached parent; the symlink replacing `d` must drop it.
    let layer = Layer::new()
        .dir("d", 0o755)
        .file("d/a", 0o644, b"a")
        .symlink("d", &s.outside("dir"))
        .file("d/x", 0o644, b"x")
        .tar();
    assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        "entry `d/x`: writes through the symlink `d`",
    );
    assert_tree(
        &s.path("dest"),
        &[
            ". 0700 0:0 dir",
            &format!("d 0777 0:0 -> {}", s.outside("dir")),
        ],
    );
    s.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// T14-T16: header desynchronisation (file smuggling).

/// A 1024-byte body that is a valid tar header for `smuggled` plus its data: what a parser
/// that misreads the size would extract.
fn smuggled_body() -> Vec<u8> {
    let mut body = Layer::new().file("smuggled", 0o644, b"payload").tar;
    body.truncate(1024);
    body
}

#[test]
fn t14_honours_the_pax_size_over_a_zero_ustar_size() {
    require(&[Need::Root]);
    let s = Sentinel::new("t14", &["dest"]);
    let body = smuggled_body();
    let layer = Layer::new()
        .pax(&[("size", b"1024")])
        .raw(&Layer::header(EntryType::Regular, b"f", 0, 0o644), &body)
        .file("after", 0o644, b"after")
        .tar();
    unpack(&layer, &s.path("dest"), &Limits::default()).unwrap();
    // What GNU tar extracts too: `f` holds the fake header, there is no `smuggled`.
    assert_tree(
        &s.path("dest"),
        &[
            ". 0700 0:0 dir",
            "after 0644 0:0 \"after\"",
            "f 0644 0:0 1024 bytes",
        ],
    );
    assert_eq!(fs::read(s.path("dest/f")).unwrap(), body);
    s.assert_untouched();
}

#[test]
fn t15_refuses_a_pax_size_that_disagrees_with_the_ustar_size() {
    require(&[Need::Root]);
    let s = Sentinel::new("t15", &["dest"]);
    let layer = Layer::new()
        .pax(&[("size", b"1024")])
        .raw(
            &Layer::header(EntryType::Regular, b"f", 5, 0o644),
            &smuggled_body(),
        )
        .tar();
    assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        "entry `f`: inconsistent headers: the header size 5 and the pax size 1024 disagree",
    );
    s.assert_untouched();
}

#[test]
fn t16_a_pax_header_applies_to_the_file_not_to_a_gnu_long_name() {
    require(&[Need::Root]);
    let s = Sentinel::new("t16", &["dest", "dest2"]);
    let long = format!("dir/{}", "n".repeat(150));
    let body = smuggled_body();
    let layer = Layer::new()
        .pax(&[("size", b"1024")])
        .long_name(long.as_bytes())
        .raw(
            &Layer::header(EntryType::Regular, b"short", 1024, 0o644),
            &body,
        )
        .tar();
    unpack(&layer, &s.path("dest"), &Limits::default()).unwrap();
    assert_eq!(fs::read(s.path("dest").join(&long)).unwrap(), body);
    assert_tree(
        &s.path("dest"),
        &[
            ". 0700 0:0 dir",
            "dir 0755 0:0 dir",
            &format!("{long} 0644 0:0 1024 bytes"),
        ],
    );
    // A PAX path and a GNU long name that disagree: tar readers pick different ones.
    let layer = Layer::new()
        .pax(&[("path", b"one")])
        .long_name(b"two")
        .file("short", 0o644, b"x")
        .tar();
    assert_refused(
        unpack(&layer, &s.path("dest2"), &Limits::default()),
        "entry `two`: inconsistent headers: a GNU long name and a pax `path` disagree",
    );
    s.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// T17-T18: devices, setuid, xattrs.

#[test]
fn t17_refuses_devices_and_fifos_unless_allowed() {
    require(&[Need::Root]);
    let s = Sentinel::new("t17", &["dest1", "dest2", "dest3", "dest4"]);
    let device = |kind, name: &str, major, minor| {
        let mut h = Layer::header(kind, name.as_bytes(), 0, 0o660);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        h
    };
    let cases = [
        (
            "dest1",
            device(EntryType::Char, "dev/sda", 8, 0),
            "entry `dev/sda`: character device entries are refused (devices are not allowed)",
        ),
        (
            "dest2",
            device(EntryType::Block, "dev/vda", 254, 0),
            "entry `dev/vda`: block device entries are refused (devices are not allowed)",
        ),
        (
            "dest3",
            device(EntryType::Fifo, "run/fifo", 0, 0),
            "entry `run/fifo`: fifo entries are refused (devices are not allowed)",
        ),
    ];
    for (dest, header, message) in &cases {
        let layer = Layer::new().raw(header, b"").tar();
        assert_refused(unpack(&layer, &s.path(dest), &Limits::default()), message);
    }
    let mut layer = Layer::new();
    for (_, header, _) in &cases {
        layer = layer.raw(header, b"");
    }
    let allowed = Limits {
        devices: true,
        ..Limits::default()
    };
    unpack(&layer.tar(), &s.path("dest4"), &allowed).unwrap();
    assert_tree(
        &s.path("dest4"),
        &[
            ". 0700 0:0 dir",
            "dev 0755 0:0 dir",
            "dev/sda 0660 0:0 char 8:0",
            "dev/vda 0660 0:0 block 254:0",
            "run 0755 0:0 dir",
            "run/fifo 0660 0:0 fifo",
        ],
    );
    s.assert_untouched();
}

#[test]
fn t18_setuid_follows_the_policy_and_only_user_xattrs_are_kept() {
    require(&[Need::Root]);
    let s = Sentinel::new("t18", &["dest1", "dest2", "dest3"]);
    let layer = || {
        Layer::new()
            .pax(&[
                (
                    "SCHILY.xattr.security.capability",
                    &[1, 0, 0, 2, 0, 32, 0, 0][..],
                ),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ("SCHILY.xattr.user.x", b"kept"),
            ])
            .file("bin/ping", 0o4755, b"elf")
            .tar()
    };
    assert_refused(
        unpack(&layer(), &s.path("dest1"), &Limits::default()),
        "entry `bin/ping`: mode 4755 has the setuid or setgid bit, refused by the setuid policy",
    );
    let policy = |setuid| Limits {
        setuid,
        ..Limits::default()
    };
    unpack(&layer(), &s.path("dest2"), &policy(SetuidPolicy::Strip)).unwrap();
    unpack(&layer(), &s.path("dest3"), &policy(SetuidPolicy::Allow)).unwrap();
    for (dest, mode) in [("dest2", "0755"), ("dest3", "4755")] {
        let ping = s.path(dest).join("bin/ping");
        assert_eq!(
            tree(&s.path(dest)),
            [
                ". 0700 0:0 dir",
                "bin 0755 0:0 dir",
                &format!("bin/ping {mode} 0:0 \"elf\""),
            ]
        );
        assert_eq!(xattr_names(&ping), ["user.x"]);
        assert_eq!(xattr(&ping, "user.x").unwrap(), b"kept");
    }
    s.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// T19-T20: resource exhaustion.

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A tar stream of one `name` file of `size` zero bytes, generated as it is read.
fn zeros_tar(name: &str, size: u64) -> impl Read + Send {
    let header = Layer::header(EntryType::Regular, name.as_bytes(), size, 0o644);
    io::Cursor::new(header.as_bytes().to_vec()).chain(io::repeat(0).take(size + 1024))
}

#[test]
fn t19_a_gzip_bomb_fails_fast() {
    require(&[Need::Root]);
    let s = Sentinel::new("t19-bomb", &["dest"]);
    // 2 GiB of zeros, compressed while the unpacker reads it (about 2 MiB of gzip in all).
    let plain = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let compressed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bomb = Counting {
        inner: flate2::read::GzEncoder::new(
            Counting {
                inner: zeros_tar("zeros", 2 << 30),
                count: plain.clone(),
            },
            Level::default(),
        ),
        count: compressed.clone(),
    };
    let err = unpack_layer(bomb, Compression::Gzip, &s.path("dest"), &Limits::default());
    assert_refused(
        err,
        "the layer inflates more than 200 times (a compression bomb)",
    );
    let plain = plain.load(std::sync::atomic::Ordering::Relaxed);
    // It stopped just after 64 MiB, far from the 2 GiB: the work is bounded by the ratio,
    // which is what "fails fast" means (no wall-clock bound: the machine is shared).
    assert!(plain < 80 << 20, "read {plain} bytes of the bomb");
    s.assert_untouched();
}

#[test]
fn t19_the_uncompressed_size_is_bounded() {
    require(&[Need::Root]);
    let s = Sentinel::new("t19-size", &["dest"]);
    let limits = Limits {
        max_bytes: 16 << 20,
        ..Limits::default()
    };
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let src = Counting {
        inner: zeros_tar("big", 1 << 30),
        count: count.clone(),
    };
    assert_refused(
        unpack_layer(src, Compression::None, &s.path("dest"), &limits),
        "the layer is larger than 16777216 bytes uncompressed",
    );
    let read = count.load(std::sync::atomic::Ordering::Relaxed);
    assert!(read < 20 << 20, "read {read} bytes");
    s.assert_untouched();
}

#[test]
fn t19_a_blob_longer_than_its_descriptor_is_refused() {
    require(&[Need::Root]);
    let s = Sentinel::new("t19-long", &["dest1", "dest2"]);
    let layer = Layer::new().file("f", 0o644, b"f").gzip();
    // The caller's pattern: the descriptor's size bounds the reader.
    let descriptor_size = layer.len() as u64;
    let mut longer = layer.clone();
    longer.extend_from_slice(&gzip(b"more"));
    let err = assert_refused(
        unpack_layer(
            HashingReader::new(&longer[..], descriptor_size),
            Compression::Gzip,
            &s.path("dest1"),
            &Limits::default(),
        ),
        "failed to read the layer",
    );
    assert_eq!(
        chain(&err),
        format!("failed to read the layer: more than the expected {descriptor_size} bytes")
    );
    let mut reader = HashingReader::new(&layer[..], descriptor_size);
    let unpacked = unpack_layer(
        &mut reader,
        Compression::Gzip,
        &s.path("dest2"),
        &Limits::default(),
    )
    .unwrap();
    let (digest, _) = reader.finish();
    assert_eq!(unpacked.blob, digest);
    assert_eq!(unpacked.blob_size, descriptor_size);
    // A descriptor of size -1 never gets this far: it does not parse.
    let descriptor = r#"{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "size": -1}"#;
    assert!(serde_json::from_str::<oci_spec::image::Descriptor>(descriptor).is_err());
    s.assert_untouched();
}

#[test]
fn t20_a_64_kib_name_and_too_many_entries_are_refused() {
    require(&[Need::Root]);
    let s = Sentinel::new("t20", &["dest1", "dest2"]);
    let long = (0..256)
        .map(|_| "x".repeat(255))
        .collect::<Vec<_>>()
        .join("/")
        + "y";
    assert_eq!(long.len(), 64 << 10);
    let layer = Layer::new()
        .long_name(long.as_bytes())
        .file("short", 0o644, b"x")
        .tar();
    let err = unpack(&layer, &s.path("dest1"), &Limits::default()).unwrap_err();
    assert!(matches!(
        err,
        UnpackError::PathTooLong {
            len: 65_536,
            limit: 4096,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "entry `{}… (65536 bytes)`: the name is 65536 bytes long, more than the limit of 4096",
            &long[..100]
        )
    );
    let mut layer = Layer::new();
    for i in 0..1500 {
        layer = layer.file(&format!("f{i}"), 0o644, b"");
    }
    let limits = Limits {
        max_entries: 1000,
        ..Limits::default()
    };
    assert_refused(
        unpack(&layer.tar(), &s.path("dest2"), &limits),
        "the layer has more than 1000 entries",
    );
    assert_eq!(fs::read_dir(s.path("dest2")).unwrap().count(), 1000);
    // The default stops a layer of 10^6 entries.
    assert!(Limits::default().max_entries < 1_000_000);
    s.assert_untouched();
}

#[test]
fn headers_are_not_read_into_memory_beyond_a_bound() {
    require(&[Need::Root]);
    let s = Sentinel::new("headers", &["dest1", "dest2"]);
    // A 4 MiB GNU long name, then a 4 MiB PAX record: the tar crate would hold either in
    // memory; both stop at 1 MiB, whatever the name length limit.
    let limits = Limits {
        max_path_len: 8 << 20,
        ..Limits::default()
    };
    let huge = vec![b'n'; 4 << 20];
    let layer = Layer::new().long_name(&huge).file("f", 0o644, b"").tar();
    assert_refused(
        unpack(&layer, &s.path("dest1"), &limits),
        "the headers of entry number 1 are larger than 1048576 bytes",
    );
    let layer = Layer::new()
        .file("first", 0o644, b"")
        .pax(&[("SCHILY.xattr.user.big", &huge[..])])
        .file("f", 0o644, b"")
        .tar();
    assert_refused(
        unpack(&layer, &s.path("dest2"), &limits),
        "the headers of entry number 2 are larger than 1048576 bytes",
    );
    s.assert_untouched();
}

// ---------------------------------------------------------------------------------------
// Normal layers.

#[test]
fn unpacks_a_normal_layer_with_its_metadata() {
    require(&[Need::Root]);
    let s = Sentinel::new("normal", &["dest"]);
    let owned = |kind, name: &str, mode, data: &[u8]| {
        let mut h = Layer::header(kind, name.as_bytes(), data.len() as u64, mode);
        h.set_uid(1234);
        h.set_gid(1234);
        h.set_mtime(MTIME + 7);
        h.set_cksum();
        (h, data.to_vec())
    };
    let (home, _) = owned(EntryType::Directory, "home/app/", 0o750, b"");
    let (app, data) = owned(EntryType::Regular, "home/app/data", 0o600, b"secret");
    let tar = Layer::new()
        .dir("./", 0o755)
        .pax(&[("SCHILY.xattr.user.dir", b"d")])
        .dir("etc/", 0o755)
        .file("etc/hostname", 0o644, b"box\n")
        .dir("usr/bin/", 0o755)
        .file("usr/bin/tool", 0o755, b"#!/bin/sh\n")
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .symlink("usr/bin/sh", "/bin/busybox")
        .symlink("lib", "usr/lib")
        .raw(&home, b"")
        .raw(&app, &data)
        .dir("ro/", 0o555)
        .file("ro/inside", 0o444, b"ro")
        .pax(&[
            (
                "SCHILY.xattr.security.capability",
                &[1, 0, 0, 2, 0, 32, 0, 0][..],
            ),
            ("SCHILY.xattr.user.x", b"y"),
            ("mtime", b"1600000000.5"),
        ])
        .file("usr/bin/ping", 0o755, b"ping")
        .tar();
    let gz = gzip(&tar);
    let dest = s.path("dest");
    let unpacked = unpack(&gz, &dest, &Limits::default()).unwrap();
    assert_eq!(
        unpacked,
        Unpacked {
            blob: Digest::of(&gz),
            blob_size: gz.len() as u64,
            diff_id: Digest::of(&tar),
            entries: 13,
            bytes: tar.len() as u64,
        }
    );
    assert_tree(
        &dest,
        &[
            ". 0755 0:0 dir",
            "etc 0755 0:0 dir",
            "etc/hostname 0644 0:0 \"box\\n\"",
            "home 0755 0:0 dir",
            "home/app 0750 1234:1234 dir",
            "home/app/data 0600 1234:1234 \"secret\"",
            "lib 0777 0:0 -> usr/lib",
            "ro 0555 0:0 dir",
            "ro/inside 0444 0:0 \"ro\"",
            "usr 0755 0:0 dir",
            "usr/bin 0755 0:0 dir",
            "usr/bin/ping 0755 0:0 \"ping\"",
            "usr/bin/sh 0777 0:0 -> /bin/busybox",
            "usr/bin/tool 0755 0:0 \"#!/bin/sh\\n\"",
            "usr/bin/tool2 0755 0:0 \"#!/bin/sh\\n\"",
        ],
    );
    let meta = |rel: &str| fs::symlink_metadata(dest.join(rel)).unwrap();
    assert_eq!(meta("usr/bin/tool").ino(), meta("usr/bin/tool2").ino());
    for rel in [
        ".",
        "etc",
        "etc/hostname",
        "ro",
        "usr/bin",
        "usr/bin/sh",
        "lib",
    ] {
        assert_eq!(meta(rel).mtime(), MTIME as i64, "{rel}");
    }
    assert_eq!(meta("home/app").mtime(), MTIME as i64 + 7);
    assert_eq!(meta("home/app/data").mtime(), MTIME as i64 + 7);
    assert_eq!(
        (
            meta("usr/bin/ping").mtime(),
            meta("usr/bin/ping").mtime_nsec()
        ),
        (MTIME as i64, 500_000_000)
    );
    assert_eq!(xattr_names(&dest.join("usr/bin/ping")), ["user.x"]);
    assert_eq!(xattr(&dest.join("etc"), "user.dir").unwrap(), b"d");
    s.assert_untouched();
}

#[test]
fn converts_whiteouts_and_opaque_markers_to_overlayfs_form() {
    require(&[Need::Root]);
    let s = Sentinel::new("whiteouts", &["dest", "dest2", "dest3"]);
    let layer = Layer::new()
        .file("a/.wh.file", 0o644, b"")
        .dir("b", 0o755)
        .file("b/.wh..wh..opq", 0o644, b"")
        .file("b/y", 0o644, b"y")
        .file(".wh.gone", 0o644, b"")
        .file(".wh..wh.plnk/123", 0o644, b"aufs metadata is skipped")
        .tar();
    let dest = s.path("dest");
    unpack(&layer, &dest, &Limits::default()).unwrap();
    assert_tree(
        &dest,
        &[
            ". 0700 0:0 dir",
            "a 0755 0:0 dir",
            "a/file 0000 0:0 char 0:0",
            "b 0755 0:0 dir",
            "b/y 0644 0:0 \"y\"",
            "gone 0000 0:0 char 0:0",
        ],
    );
    assert_eq!(
        xattr(&dest.join("b"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(xattr(&dest.join("a"), "trusted.overlay.opaque"), None);

    // A whiteout of a file of the same layer is malformed.
    let layer = Layer::new()
        .file("a/file", 0o644, b"x")
        .file("a/.wh.file", 0o644, b"")
        .tar();
    assert_refused(
        unpack(&layer, &s.path("dest2"), &Limits::default()),
        "entry `a/.wh.file`: invalid whiteout: it deletes a file of its own layer",
    );

    // A whiteout, then a directory of that name: the new directory hides the lower one.
    let layer = Layer::new()
        .file(".wh.d", 0o644, b"")
        .dir("d", 0o711)
        .file(".wh.e", 0o644, b"")
        .file("e/f", 0o644, b"f")
        .tar();
    let dest3 = s.path("dest3");
    unpack(&layer, &dest3, &Limits::default()).unwrap();
    assert_tree(
        &dest3,
        &[
            ". 0700 0:0 dir",
            "d 0711 0:0 dir",
            "e 0755 0:0 dir",
            "e/f 0644 0:0 \"f\"",
        ],
    );
    for dir in ["d", "e"] {
        assert_eq!(
            xattr(&dest3.join(dir), "trusted.overlay.opaque").unwrap(),
            b"y"
        );
    }
    s.assert_untouched();
}

/// Unmounts on drop, even when the test fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn unpacked_layers_stack_as_overlayfs_lower_directories() {
    require(&[Need::Root]);
    let s = Sentinel::new("overlay", &["dest-lower", "dest-upper", "dest-mnt"]);
    let lower = Layer::new()
        .file("a/file", 0o644, b"lower")
        .file("a/other", 0o644, b"other")
        .file("b/x", 0o644, b"x")
        .gzip();
    let upper = Layer::new()
        .file("a/.wh.file", 0o644, b"")
        .file("b/.wh..wh..opq", 0o644, b"")
        .file("b/y", 0o644, b"y")
        .gzip();
    unpack(&lower, &s.path("dest-lower"), &Limits::default()).unwrap();
    unpack(&upper, &s.path("dest-upper"), &Limits::default()).unwrap();
    let target = s.path("dest-mnt");
    let options = format!(
        "lowerdir={}:{}",
        s.path("dest-upper").display(),
        s.path("dest-lower").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .unwrap();
    let guard = Mount(target.clone());
    assert_tree(
        &target,
        &[
            ". 0700 0:0 dir",
            "a 0755 0:0 dir",
            "a/other 0644 0:0 \"other\"",
            "b 0755 0:0 dir",
            "b/y 0644 0:0 \"y\"",
        ],
    );
    drop(guard);
    s.assert_untouched();
}

#[test]
fn replaces_a_directory_by_a_file_and_reads_multi_member_gzip() {
    require(&[Need::Root]);
    let s = Sentinel::new("replace", &["dest"]);
    let first = Layer::new()
        .dir("d-x", 0o701)
        .dir("d", 0o700)
        .dir("d0", 0o711)
        .dir("d/sub", 0o555)
        .file("d/sub/f", 0o444, b"f")
        .symlink("d/sub/l", &s.outside("file"))
        .tar;
    let second = Layer::new().file("d", 0o600, b"now a file").tar();
    // Two gzip members, as eStargz layers have.
    let mut gz = gzip(&first);
    gz.extend_from_slice(&gzip(&second));
    let unpacked = unpack(&gz, &s.path("dest"), &Limits::default()).unwrap();
    assert_eq!(unpacked.diff_id, Digest::of(&[first, second].concat()));
    // The directories beside `d` keep their modes; those below it are gone.
    assert_tree(
        &s.path("dest"),
        &[
            ". 0700 0:0 dir",
            "d 0600 0:0 \"now a file\"",
            "d-x 0701 0:0 dir",
            "d0 0711 0:0 dir",
        ],
    );
    s.assert_untouched();
}

#[test]
fn checks_the_archive_end_truncation_and_header_checksums() {
    require(&[Need::Root]);
    let s = Sentinel::new("trailing", &["dest1", "dest2", "dest3", "dest4"]);
    let mut padded = Layer::new().file("f", 0o644, b"f").tar();
    padded.extend(std::iter::repeat_n(0u8, 10 * 512 + 7));
    unpack(&padded, &s.path("dest1"), &Limits::default()).unwrap();
    let mut smuggled = Layer::new().file("f", 0o644, b"f").tar();
    smuggled.extend_from_slice(&Layer::new().file("hidden", 0o644, b"h").tar());
    assert_refused(
        unpack(&smuggled, &s.path("dest2"), &Limits::default()),
        "non-zero data after the end of the archive, at byte 2048 of the tar stream",
    );
    let mut truncated = Layer::new().file("f", 0o644, &[7; 1000]).tar;
    truncated.truncate(512 + 600);
    assert_refused(
        unpack(&truncated, &s.path("dest3"), &Limits::default()),
        "entry `f`: the data ends after 600 of 1000 bytes",
    );
    let mut corrupt = Layer::new()
        .file("f", 0o644, b"f")
        .file("g", 0o644, b"g")
        .tar();
    corrupt[1024 + 100] ^= 1; // the mode field of `g`
    let err = assert_refused(
        unpack(&corrupt, &s.path("dest4"), &Limits::default()),
        "invalid tar data at entry number 2",
    );
    assert_eq!(
        chain(&err),
        "invalid tar data at entry number 2: archive header checksum mismatch"
    );
    s.assert_untouched();
}

#[test]
fn refuses_a_destination_that_is_not_an_empty_directory() {
    require(&[Need::Root]);
    let s = Sentinel::new("dest", &["dest"]);
    let layer = Layer::new().file("f", 0o644, b"f").tar();
    fs::write(s.path("dest/x"), "x").unwrap();
    let err = assert_refused(
        unpack(&layer, &s.path("dest"), &Limits::default()),
        &format!(
            "the unpack destination `{}` is not empty",
            s.path("dest").display()
        ),
    );
    assert!(matches!(err, UnpackError::DestNotEmpty { .. }));
    fs::remove_file(s.path("dest/x")).unwrap();
    let elsewhere = TempDir::new("unpack-dest-link");
    let link = elsewhere.path().join("link");
    std::os::unix::fs::symlink(s.path("dest"), &link).unwrap();
    let err = unpack(&layer, &link, &Limits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::OpenDest { .. }), "{err}");
    assert_tree(&s.path("dest"), &[". 0700 0:0 dir"]);
    s.assert_untouched();
}

#[test]
fn refuses_zstd_layers_by_their_magic() {
    let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x00];
    let err = detect(&zstd).unwrap_err();
    assert!(matches!(err, UnpackError::Unsupported { format: "zstd" }));
    assert_eq!(detect(&Layer::new().gzip()).unwrap(), Compression::Gzip);
}

#[test]
fn unpacks_gnu_sparse_files() {
    require(&[Need::Root]);
    let s = Sentinel::new("sparse", &["dest"]);
    let scratch = TempDir::new("unpack-sparse-src");
    let src = scratch.path().join("holes");
    let file = fs::File::create(&src).unwrap();
    file.set_len(4 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"data in the middle", 2 << 20).unwrap();
    drop(file);
    let mut builder = tar::Builder::new(Vec::new());
    builder.sparse(true);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_path_with_name(&src, "holes").unwrap();
    let layer = builder.into_inner().unwrap();
    assert_eq!(
        layer[156], b'S',
        "the builder did not write a GNU sparse entry"
    );
    unpack(&layer, &s.path("dest"), &Limits::default()).unwrap();
    assert_eq!(
        fs::read(s.path("dest/holes")).unwrap(),
        fs::read(&src).unwrap()
    );
    s.assert_untouched();
}
