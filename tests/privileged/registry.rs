//! The registry client against a real registry: Debian's `docker-registry` (distribution
//! 2.8) on 127.0.0.1 with its storage in a temporary directory, and images built here as
//! OCI layouts (busybox in a tar layer, config, manifest, index; digests with sha2) and
//! pushed with skopeo. Nothing leaves the loopback interface. The one thing distribution
//! will not serve, a manifest above 4 MiB, comes from a small fake server.
//!
//! Token auth (a token server, the bearer exchange) is in `registry_token.rs`, which uses
//! [`Server::start_with`] and the image helpers of this file.
//!
//! Basic auth uses distribution's htpasswd backend with a fixed bcrypt entry (see
//! [`HTPASSWD`]), so no tool is needed to make one.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use rcompose::image::registry::{
    Descriptor, Reference, Registry, RegistryError, RegistryOptions, Resolved,
};
use sha2::{Digest as _, Sha256};

use crate::test::{Need, TempDir, assert_code, rcompose, require, run_ok, stderr};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub(crate) const USER: &str = "alice";
pub(crate) const PASSWORD: &str = "s3cret-rcompose";
/// `alice` with a bcrypt hash of [`PASSWORD`] at cost 4 (the minimum: the registry checks it
/// on every request), made once with
/// `python3 -c "import crypt; print(crypt.crypt('s3cret-rcompose', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))"`
/// (`htpasswd -nbB -C 4 alice s3cret-rcompose` from apache2-utils makes an equivalent one).
const HTPASSWD: &str = "alice:$2b$04$dKQwT3U0QlitLcB.USUIi.E3uE7hqi2gGLbpFc.XzrXYCjuehvIBe\n";

/// Fails loudly when a tool the tests need is missing.
pub(crate) fn require_tools() {
    require(&[Need::Busybox]);
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["docker-registry", "skopeo"] {
        assert!(
            std::env::split_paths(&path).any(|d| d.join(tool).is_file()),
            "this test needs `{tool}` (apt-get install docker-registry skopeo, as .ci/run does)"
        );
    }
}

fn sha256(bytes: &[u8]) -> String {
    let sum = Sha256::digest(bytes);
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn free_port() -> u16 {
    free_port_on(Ipv4Addr::LOCALHOST)
}

fn free_port_on(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry` process on a loopback address, killed and reaped on drop.
pub(crate) struct Server {
    child: Child,
    ip: Ipv4Addr,
    port: u16,
    storage: PathBuf,
}

impl Server {
    /// Starts a registry keeping its files in `dir`; with `auth`, behind htpasswd basic auth.
    pub(crate) fn start(dir: &TempDir, auth: bool) -> Server {
        Server::start_on(dir, auth, Ipv4Addr::LOCALHOST)
    }

    /// Starts a registry listening on `ip` (a loopback address).
    fn start_on(dir: &TempDir, auth: bool, ip: Ipv4Addr) -> Server {
        let auth = auth.then(|| {
            let htpasswd = dir.write("htpasswd", HTPASSWD);
            format!(
                "  htpasswd:\n    realm: rcompose-test\n    path: {}\n",
                htpasswd.display()
            )
        });
        Server::start_with(dir, auth.as_deref(), ip)
    }

    /// Starts a registry listening on `ip` with `auth` (the lines under `auth:` in its
    /// configuration, indented by two spaces), or without authentication.
    pub(crate) fn start_with(dir: &TempDir, auth: Option<&str>, ip: Ipv4Addr) -> Server {
        let storage = dir.path().join("storage");
        let log = dir.path().join("registry.log");
        let mut config = String::new();
        // A free port can be taken between the probe and the registry's bind: retry.
        for _ in 0..5 {
            let port = free_port_on(ip);
            config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {ip}:{port}\n",
                storage.display()
            );
            if let Some(auth) = auth {
                config.push_str("auth:\n");
                config.push_str(auth);
            }
            let config_path = dir.write("registry.yml", &config);
            let log_file = fs::File::create(&log).unwrap();
            let child = Command::new("docker-registry")
                .env("GOMAXPROCS", "1") // gentle with the tests running beside it
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("failed to start docker-registry");
            let mut server = Server {
                child,
                ip,
                port,
                storage: storage.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if server.child.try_wait().unwrap().is_some() {
                    break; // could not bind: try another port
                }
                if answers_v2(ip, port) {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(server);
        }
        panic!(
            "docker-registry did not come up with\n{config}\nlog:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub(crate) fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub(crate) fn reference(&self, name: &str) -> Reference {
        format!("{}/{name}", self.host()).parse().unwrap()
    }

    /// The file in which the registry keeps the blob (or manifest) `digest`.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when `GET /v2/` answers 200 or 401.
fn answers_v2(ip: Ipv4Addr, port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && (head.ends_with(b" 200") || head.ends_with(b" 401"))
}

/// Content written into a layout, with its digest.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub(crate) digest: String,
    pub(crate) bytes: Vec<u8>,
}

impl Blob {
    fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// An image written into a layout.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) manifest: Blob,
    pub(crate) config: Blob,
    pub(crate) layers: Vec<Blob>,
}

/// An OCI image layout directory under construction.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: PathBuf) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir }
    }

    fn blob(&self, bytes: Vec<u8>) -> Blob {
        let digest = sha256(&bytes);
        let path = self
            .dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap());
        fs::write(path, &bytes).unwrap();
        Blob { digest, bytes }
    }

    /// An image for linux/`arch` with the given uncompressed tar layers (gzipped here).
    fn image(&self, arch: &str, tars: &[Vec<u8>], level: Compression) -> Image {
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let layers: Vec<Blob> = tars.iter().map(|t| self.blob(gzip(t, level))).collect();
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": { "Cmd": ["/bin/sh"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = self.blob(serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size() },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": OCI_LAYER_GZIP, "digest": l.digest, "size": l.size(),
            })).collect::<Vec<_>>(),
        });
        let manifest = self.blob(serde_json::to_vec(&manifest).unwrap());
        Image {
            manifest,
            config,
            layers,
        }
    }

    /// An index blob listing `images` with their platforms (`arch`, `variant`).
    fn index(&self, images: &[(&Image, &str, Option<&str>)]) -> Blob {
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .map(|(image, arch, variant)| {
                let mut platform = serde_json::json!({ "os": "linux", "architecture": arch });
                if let Some(v) = variant {
                    platform["variant"] = (*v).into();
                }
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": image.manifest.digest,
                    "size": image.manifest.size(),
                    "platform": platform,
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
        });
        self.blob(serde_json::to_vec(&index).unwrap())
    }

    /// Writes `index.json` naming `target` (of `media_type`) as `tag`.
    fn tag(&self, tag: &str, media_type: &str, target: &Blob) {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type,
                "digest": target.digest,
                "size": target.size(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// Pushes `tag` of this layout to `dest` (`host/repo:tag`) with skopeo.
    fn push(&self, tag: &str, dest: &str, extra: &[&str]) {
        let out = Command::new("skopeo")
            .env("GOMAXPROCS", "1")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .args(extra)
            .arg(format!("oci:{}:{tag}", self.dir.display()))
            .arg(format!("docker://{dest}"))
            .stdin(Stdio::null())
            .output()
            .expect("failed to run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy to {dest} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn gzip(bytes: &[u8], level: Compression) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), level);
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A tar of `files` (path, content) under their directories.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, content) in files {
        for dir in Path::new(path).ancestors().skip(1) {
            if !dir.as_os_str().is_empty() && dirs.insert(dir.to_path_buf()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                header.set_mtime(0);
                header.set_uid(0);
                header.set_gid(0);
                tar.append_data(&mut header, dir, io::empty()).unwrap();
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(content.len() as u64);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        tar.append_data(&mut header, path, *content).unwrap();
    }
    tar.into_inner().unwrap()
}

/// busybox and a marker file.
fn busybox_layer(marker: &str) -> Vec<u8> {
    let busybox = fs::read(crate::test::busybox().unwrap()).unwrap();
    tar_of(&[("bin/busybox", &busybox), ("etc/marker", marker.as_bytes())])
}

/// `len` pseudo-random (incompressible) bytes from `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Fetches `resolved`'s layers into files under `dir`; returns them by digest.
pub(crate) fn fetch_into(
    registry: &Registry,
    resolved: &Resolved,
    dir: &Path,
) -> Result<HashMap<String, Vec<u8>>, RegistryError> {
    fs::create_dir_all(dir).unwrap();
    let layers = resolved.manifest.layers().clone();
    registry.fetch_blobs(
        &resolved.reference,
        &layers,
        |d: &Descriptor| {
            let file = fs::File::create(dir.join(d.digest().digest()))?;
            Ok(Box::new(file) as Box<dyn Write + Send>)
        },
        |_: &Descriptor, _| {},
    )?;
    Ok(layers
        .iter()
        .map(|d| {
            let digest = d.digest().to_string();
            (digest, fs::read(dir.join(d.digest().digest())).unwrap())
        })
        .collect())
}

pub(crate) fn registry() -> Registry {
    Registry::new(RegistryOptions::default()).unwrap()
}

/// A layout with one busybox image tagged `t`, pushed as `repo:t`.
pub(crate) fn push_busybox(dir: &TempDir, server: &Server, repo: &str, extra: &[&str]) -> Image {
    let layout = Layout::new(
        dir.path()
            .join(format!("layout-{}", repo.replace('/', "-"))),
    );
    let image = layout.image("amd64", &[busybox_layer(repo)], Compression::none());
    layout.tag("t", OCI_MANIFEST, &image.manifest);
    layout.push("t", &format!("{}/{repo}:t", server.host()), extra);
    image
}

#[test]
fn pulls_an_image_by_tag_and_by_pinned_digest() {
    require_tools();
    let dir = TempDir::new("reg-pull");
    let server = Server::start(&dir, false);
    let image = push_busybox(&dir, &server, "test/busybox", &["--preserve-digests"]);
    let registry = registry();

    let resolved = registry
        .resolve(&server.reference("test/busybox:t"))
        .unwrap();
    assert_eq!(resolved.digest.to_string(), image.manifest.digest);
    assert_eq!(resolved.manifest_bytes, image.manifest.bytes);
    assert_eq!(resolved.media_type, OCI_MANIFEST);
    assert_eq!(resolved.index_digest, None);
    assert_eq!(resolved.config, image.config.bytes);
    assert_eq!(resolved.manifest.layers().len(), 1);
    let blobs = fetch_into(&registry, &resolved, &dir.path().join("out")).unwrap();
    assert_eq!(blobs[&image.layers[0].digest], image.layers[0].bytes);

    for pinned in [
        format!("test/busybox@{}", image.manifest.digest),
        format!("test/busybox:t@{}", image.manifest.digest),
    ] {
        let again = registry.resolve(&server.reference(&pinned)).unwrap();
        assert_eq!(again.digest, resolved.digest, "{pinned}");
        assert_eq!(again.manifest_bytes, image.manifest.bytes, "{pinned}");
        assert_eq!(again.config, image.config.bytes, "{pinned}");
    }

    // A digest the registry does not have: not found, naming the digest.
    let other = sha256(b"not this manifest");
    let err = registry
        .resolve(&server.reference(&format!("test/busybox@{other}")))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`{}/test/busybox@{other}` not found: the registry has no manifest `{other}` \
             (MANIFEST_UNKNOWN: manifest unknown)",
            server.host()
        )
    );
}

/// `pull name` into `store` fails because the registry serves `served` for `layer`, naming
/// both digests, and leaves no layer, temp file, blob of that layer or image behind.
fn pull_is_refused_and_leaves_nothing(
    dir: &Path,
    store: &Path,
    name: &str,
    layer: &Blob,
    served: &[u8],
) {
    let store_arg = store.to_str().unwrap();
    let out = rcompose(dir, &["--store", store_arg, "pull", name]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "blob of `{name}` has digest `{}`, expected `{}`",
            sha256(served),
            layer.digest
        )),
        "{err}"
    );
    assert_eq!(entries(&store.join("layers/sha256")), Vec::<String>::new());
    assert_eq!(entries(&store.join("tmp")), Vec::<String>::new());
    let layer_hex = layer.digest.strip_prefix("sha256:").unwrap();
    assert!(
        !entries(&store.join("blobs/sha256"))
            .iter()
            .any(|e| e == layer_hex)
    );
    let listed = rcompose(dir, &["--store", store_arg, "images", "--format", "json"]);
    assert_code(&listed, 0);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
}

/// The names in a store directory (`layers/sha256`, `tmp`, ...), empty when it is absent.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `rcompose pull` unpacks each layer while it downloads. A layer whose bytes do not match
/// its digest fails the pull with the download's error (the unpacker, which read the same
/// bytes, does not get to explain it), and leaves no layer, blob, image or temp file; the
/// same pull succeeds once the registry is fixed.
#[test]
fn a_pull_that_streams_a_corrupt_layer_leaves_nothing() {
    require_tools();
    let dir = TempDir::new("reg-stream");
    let server = Server::start(&dir, false);
    let image = push_busybox(&dir, &server, "test/stream", &["--preserve-digests"]);
    let host = server.host();
    let name = format!("{host}/test/stream:t");
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let layer = &image.layers[0];
    let stored = server.blob_data(&layer.digest);
    let mut flipped = layer.bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    fs::write(&stored, &flipped).unwrap();

    pull_is_refused_and_leaves_nothing(dir.path(), &store, &name, layer, &flipped);
    let layer_hex = layer.digest.strip_prefix("sha256:").unwrap().to_owned();

    fs::write(&stored, &layer.bytes).unwrap();
    let out = rcompose(dir.path(), &["--store", store_arg, "pull", &name]);
    assert_code(&out, 0);
    assert_eq!(
        entries(&store.join("layers/sha256")).len(),
        1,
        "{}",
        stderr(&out)
    );
    assert_eq!(entries(&store.join("tmp")), Vec::<String>::new());
    assert!(entries(&store.join("blobs/sha256")).contains(&layer_hex));
}

/// A blob that unpacks perfectly (same tar, same diff-id, same size) but is not the blob
/// the manifest names: only its gzip header's MTIME differs. The unpacker streaming it does
/// not hash it itself; it must still publish nothing, as the download's digest check fails.
#[test]
fn a_pull_of_a_layer_that_unpacks_but_does_not_match_its_digest_leaves_nothing() {
    require_tools();
    let dir = TempDir::new("reg-mtime");
    let server = Server::start(&dir, false);
    let image = push_busybox(&dir, &server, "test/mtime", &["--preserve-digests"]);
    let name = format!("{}/test/mtime:t", server.host());
    let store = dir.path().join("store");
    let layer = &image.layers[0];
    assert_eq!(&layer.bytes[..3], &[0x1f, 0x8b, 8], "a gzip layer");
    let stored = server.blob_data(&layer.digest);
    let mut other = layer.bytes.clone();
    other[4] ^= 0x01; // MTIME: not checked by any gzip decoder
    fs::write(&stored, &other).unwrap();

    pull_is_refused_and_leaves_nothing(dir.path(), &store, &name, layer, &other);
}

#[test]
fn content_that_does_not_match_its_digest_is_refused() {
    require_tools();
    let dir = TempDir::new("reg-corrupt");
    let server = Server::start(&dir, false);
    let image = push_busybox(&dir, &server, "test/corrupt", &["--preserve-digests"]);
    let registry = registry();
    let resolved = registry
        .resolve(&server.reference("test/corrupt:t"))
        .unwrap();
    let host = server.host();

    // The registry's copy of the manifest changes (one more byte): by tag (against the
    // registry's Docker-Content-Digest) and pinned, the bytes no longer hash to the digest.
    let stored = server.blob_data(&image.manifest.digest);
    let mut changed = image.manifest.bytes.clone();
    changed.push(b' ');
    fs::write(&stored, &changed).unwrap();
    for name in [
        "test/corrupt:t".to_owned(),
        format!("test/corrupt@{}", image.manifest.digest),
    ] {
        let err = registry.resolve(&server.reference(&name)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "manifest of `{host}/{name}` has digest `{}`, expected `{}`",
                sha256(&changed),
                image.manifest.digest
            ),
            "{name}"
        );
    }

    fs::write(&stored, &image.manifest.bytes).unwrap();

    // A layer with one byte flipped: same size, wrong digest.
    let layer = &image.layers[0];
    let stored = server.blob_data(&layer.digest);
    let mut flipped = layer.bytes.clone();
    flipped[100] ^= 0xff;
    fs::write(&stored, &flipped).unwrap();
    let err = fetch_into(&registry, &resolved, &dir.path().join("out1")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "blob of `{host}/test/corrupt:t` has digest `{}`, expected `{}`",
            sha256(&flipped),
            layer.digest
        )
    );

    // A layer that grew: refused on its length, before its end is read.
    let mut longer = layer.bytes.clone();
    longer.extend_from_slice(&[0; 10]);
    fs::write(&stored, &longer).unwrap();
    let err = fetch_into(&registry, &resolved, &dir.path().join("out2")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "blob `{}` of `{host}/test/corrupt:t` has the wrong size: the descriptor says {} \
             bytes, the registry sent {}",
            layer.digest,
            layer.size(),
            layer.size() + 10
        )
    );
}

#[test]
fn picks_linux_amd64_from_an_index_or_a_manifest_list() {
    require_tools();
    let dir = TempDir::new("reg-multi");
    let server = Server::start(&dir, false);
    let layout = Layout::new(dir.path().join("layout"));
    let arm = layout.image("arm64", &[busybox_layer("arm64")], Compression::none());
    let amd = layout.image("amd64", &[busybox_layer("amd64")], Compression::none());
    let index = layout.index(&[(&arm, "arm64", Some("v8")), (&amd, "amd64", None)]);
    layout.tag("t", OCI_INDEX, &index);
    let host = server.host();
    layout.push(
        "t",
        &format!("{host}/test/multi:t"),
        &["--all", "--preserve-digests"],
    );
    let registry = registry();

    let resolved = registry.resolve(&server.reference("test/multi:t")).unwrap();
    assert_eq!(resolved.digest.to_string(), amd.manifest.digest);
    assert_eq!(
        resolved.index_digest.as_ref().map(ToString::to_string),
        Some(index.digest.clone())
    );
    assert_eq!(resolved.manifest_bytes, amd.manifest.bytes);
    assert_eq!(resolved.config, amd.config.bytes);
    let blobs = fetch_into(&registry, &resolved, &dir.path().join("out")).unwrap();
    assert_eq!(blobs[&amd.layers[0].digest], amd.layers[0].bytes);
    // Pinning the index resolves the same manifest.
    let pinned = registry
        .resolve(&server.reference(&format!("test/multi@{}", index.digest)))
        .unwrap();
    assert_eq!(pinned.digest, resolved.digest);

    // No image for the platform: the platforms offered are listed.
    let riscv = Registry::new(RegistryOptions {
        platform: ("linux".into(), "riscv64".into()),
        ..RegistryOptions::default()
    })
    .unwrap();
    let err = riscv
        .resolve(&server.reference("test/multi:t"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`{host}/test/multi:t` has no image for linux/riscv64; its index offers: \
             linux/arm64/v8, linux/amd64"
        )
    );

    // The same as a Docker manifest list of v2 schema 2 manifests: their media types come
    // back as the OCI ones; blobs are unchanged.
    layout.push(
        "t",
        &format!("{host}/test/docker:t"),
        &["--all", "--format", "v2s2"],
    );
    let docker = registry
        .resolve(&server.reference("test/docker:t"))
        .unwrap();
    assert_eq!(docker.media_type, DOCKER_MANIFEST);
    assert!(docker.index_digest.is_some());
    assert_eq!(
        docker.manifest.config().media_type().to_string(),
        OCI_CONFIG
    );
    assert_eq!(docker.manifest.layers().len(), 1);
    let layer = &docker.manifest.layers()[0];
    assert_eq!(layer.media_type().to_string(), OCI_LAYER_GZIP);
    assert_eq!(layer.digest().to_string(), amd.layers[0].digest);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&docker.manifest_bytes).unwrap()["mediaType"],
        DOCKER_MANIFEST
    );
    let blobs = fetch_into(&registry, &docker, &dir.path().join("out-docker")).unwrap();
    assert_eq!(blobs[&amd.layers[0].digest], amd.layers[0].bytes);
    let pinned = registry
        .resolve(&server.reference(&format!("test/docker@{}", docker.digest)))
        .unwrap();
    assert_eq!(pinned.manifest_bytes, docker.manifest_bytes);
}

/// A writer that counts how many are open at once and is slow to start, so that
/// concurrent downloads overlap.
struct Tracked {
    file: fs::File,
    open: Arc<AtomicUsize>,
    first: bool,
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.first {
            self.first = false;
            std::thread::sleep(Duration::from_millis(50));
        }
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn fetches_many_layers_concurrently_byte_identical() {
    require_tools();
    let dir = TempDir::new("reg-layers");
    let server = Server::start(&dir, false);
    let layout = Layout::new(dir.path().join("layout"));
    let tars: Vec<Vec<u8>> = (0..6u64)
        .map(|i| {
            let data = noise(i, 300_000 + 100_000 * i as usize);
            tar_of(&[(&format!("data/{i}"), &data)])
        })
        .collect();
    let image = layout.image("amd64", &tars, Compression::none());
    layout.tag("t", OCI_MANIFEST, &image.manifest);
    layout.push(
        "t",
        &format!("{}/test/layers:t", server.host()),
        &["--preserve-digests"],
    );
    let registry = Registry::new(RegistryOptions {
        max_concurrent: 3,
        ..RegistryOptions::default()
    })
    .unwrap();
    let resolved = registry
        .resolve(&server.reference("test/layers:t"))
        .unwrap();
    let out = dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let most = AtomicUsize::new(0);
    let progress: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    registry
        .fetch_blobs(
            &resolved.reference,
            resolved.manifest.layers(),
            |d: &Descriptor| {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                Ok(Box::new(Tracked {
                    file: fs::File::create(out.join(d.digest().digest()))?,
                    open: Arc::clone(&open),
                    first: true,
                }) as Box<dyn Write + Send>)
            },
            |d: &Descriptor, n| {
                let mut seen = progress.lock().unwrap();
                let last = seen.entry(d.digest().to_string()).or_insert(0);
                assert!(n >= *last, "progress went back");
                *last = n;
            },
        )
        .unwrap();
    assert_eq!(open.load(Ordering::SeqCst), 0, "a writer was not dropped");
    let most = most.load(Ordering::SeqCst);
    assert!((2..=3).contains(&most), "{most} downloads at once");
    let progress = progress.into_inner().unwrap();
    for layer in &image.layers {
        let got = fs::read(out.join(layer.digest.strip_prefix("sha256:").unwrap())).unwrap();
        assert_eq!(sha256(&got), layer.digest);
        assert!(got == layer.bytes, "layer {} differs", layer.digest);
        assert_eq!(progress[&layer.digest], layer.size() as u64);
    }
}

/// A config.json with `entry` under `auths."<host>"`.
pub(crate) fn auth_file(dir: &TempDir, name: &str, key: &str, entry: serde_json::Value) -> PathBuf {
    let config = serde_json::json!({ "auths": { key: entry } });
    dir.write(name, &config.to_string())
}

pub(crate) fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn basic_auth_from_a_config_file() {
    require_tools();
    let dir = TempDir::new("reg-auth");
    let server = Server::start(&dir, true);
    let host = server.host();
    let image = push_busybox(
        &dir,
        &server,
        "test/private",
        &[
            "--preserve-digests",
            "--dest-creds",
            &format!("{USER}:{PASSWORD}"),
        ],
    );
    let reference = server.reference("test/private:t");

    // Anonymous: refused, saying that no credentials were found (and where they were sought).
    let missing = dir.path().join("missing.json");
    let anonymous = Registry::new(RegistryOptions {
        auth_file: Some(missing.clone()),
        ..RegistryOptions::default()
    })
    .unwrap();
    let err = anonymous.resolve(&reference).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "not authorized to pull `{host}/test/private:t`; credentials used: none (neither \
             RCOMPOSE_REGISTRY_USER/RCOMPOSE_REGISTRY_PASSWORD nor RCOMPOSE_REGISTRY_TOKEN is \
             set, and no usable entry for the registry in `{}`",
            missing.display()
        )),
        "{message}"
    );
    // Blobs too (no token or basic auth was ever given for this registry).
    let layer = Descriptor::new(
        oci_spec::image::MediaType::ImageLayerGzip,
        image.layers[0].size() as u64,
        oci_spec::image::Digest::try_from(image.layers[0].digest.as_str()).unwrap(),
    );
    let err = anonymous
        .fetch_blobs(
            &reference,
            &[layer],
            |_: &Descriptor| Ok(Box::new(io::sink()) as Box<dyn Write + Send>),
            |_: &Descriptor, _| {},
        )
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");

    // A wrong password from a file: refused, naming the entry.
    let wrong = auth_file(
        &dir,
        "wrong.json",
        &host,
        serde_json::json!({ "auth": base64(&format!("{USER}:nope")) }),
    );
    let err = Registry::new(RegistryOptions {
        auth_file: Some(wrong.clone()),
        ..RegistryOptions::default()
    })
    .unwrap()
    .resolve(&reference)
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "not authorized to pull `{host}/test/private:t`; credentials used: \
             `auths.\"{host}\"` of `{}`",
            wrong.display()
        )
    );

    // The right ones, as `auth` and as `username` + `password` under a URL key.
    for (name, key, entry) in [
        (
            "auth.json",
            host.clone(),
            serde_json::json!({ "auth": base64(&format!("{USER}:{PASSWORD}")) }),
        ),
        (
            "fields.json",
            format!("http://{host}/"),
            serde_json::json!({ "username": USER, "password": PASSWORD }),
        ),
    ] {
        let file = auth_file(&dir, name, &key, entry);
        let registry = Registry::new(RegistryOptions {
            auth_file: Some(file),
            ..RegistryOptions::default()
        })
        .unwrap();
        let resolved = registry.resolve(&reference).unwrap();
        assert_eq!(resolved.digest.to_string(), image.manifest.digest, "{name}");
        assert_eq!(resolved.config, image.config.bytes, "{name}");
        let blobs = fetch_into(
            &registry,
            &resolved,
            &dir.path().join(format!("out-{name}")),
        )
        .unwrap();
        assert_eq!(
            blobs[&image.layers[0].digest], image.layers[0].bytes,
            "{name}"
        );
    }
}

/// Set in the child run of [`basic_auth_from_the_environment`]: the reference to pull, and
/// the outcome expected (`ok` or `unauthorized`).
const CHILD_REFERENCE: &str = "RCOMPOSE_TEST_REGISTRY_REFERENCE";
const CHILD_EXPECT: &str = "RCOMPOSE_TEST_REGISTRY_EXPECT";

#[test]
fn basic_auth_from_the_environment() {
    // The credentials variables are process-wide: the pull runs in a child copy of this test
    // binary (this same test, finding CHILD_REFERENCE set), so no other test sees them.
    if let Some(reference) = std::env::var_os(CHILD_REFERENCE) {
        let reference: Reference = reference.to_str().unwrap().parse().unwrap();
        let expect = std::env::var(CHILD_EXPECT).unwrap();
        let registry = registry();
        match (registry.resolve(&reference), expect.as_str()) {
            (Ok(resolved), "ok") => {
                fetch_into(
                    &registry,
                    &resolved,
                    &std::env::temp_dir().join(format!(
                        "rcompose-test-reg-env-child-{}",
                        std::process::id()
                    )),
                )
                .map(|_| ())
                .unwrap_or_else(|e| panic!("fetch failed: {e}"));
                let _ = fs::remove_dir_all(std::env::temp_dir().join(format!(
                    "rcompose-test-reg-env-child-{}",
                    std::process::id()
                )));
            }
            (Err(e), "unauthorized") => assert_eq!(
                e.to_string(),
                format!(
                    "not authorized to pull `{reference}`; credentials used: \
                     RCOMPOSE_REGISTRY_USER/RCOMPOSE_REGISTRY_PASSWORD"
                )
            ),
            (result, expect) => panic!("expected {expect}, got {result:?}"),
        }
        return;
    }
    require_tools();
    let dir = TempDir::new("reg-env");
    let server = Server::start(&dir, true);
    push_busybox(
        &dir,
        &server,
        "test/env",
        &["--dest-creds", &format!("{USER}:{PASSWORD}")],
    );
    let reference = server.reference("test/env:t").to_string();
    for (password, expect) in [(PASSWORD, "ok"), ("wrong", "unauthorized")] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "privileged::registry::basic_auth_from_the_environment",
                "--test-threads=1",
            ])
            .env(CHILD_REFERENCE, &reference)
            .env(CHILD_EXPECT, expect)
            .env("RCOMPOSE_REGISTRY_USER", USER)
            .env("RCOMPOSE_REGISTRY_PASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child ({expect}) failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_missing_manifest_or_repository_is_not_found() {
    require_tools();
    let dir = TempDir::new("reg-missing");
    let server = Server::start(&dir, false);
    push_busybox(&dir, &server, "test/there", &[]);
    let registry = registry();
    let host = server.host();
    let err = registry
        .resolve(&server.reference("test/there:nope"))
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestNotFound { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "`{host}/test/there:nope` not found: the registry has no manifest `nope` \
             (MANIFEST_UNKNOWN: manifest unknown)"
        )
    );
    let err = registry
        .resolve(&server.reference("test/elsewhere"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`{host}/test/elsewhere:latest` not found: the registry has no manifest `latest` \
             (MANIFEST_UNKNOWN: manifest unknown)"
        )
    );
}

#[test]
fn a_descriptor_with_foreign_urls_is_refused_unfetched() {
    require_tools();
    let dir = TempDir::new("reg-urls");
    let server = Server::start(&dir, false);
    let image = push_busybox(&dir, &server, "test/urls", &[]);
    // Where the descriptor points: nothing may connect here.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let url = format!("http://{}/blob", trap.local_addr().unwrap());
    let mut layer = Descriptor::new(
        oci_spec::image::MediaType::ImageLayerGzip,
        image.layers[0].size() as u64,
        oci_spec::image::Digest::try_from(image.layers[0].digest.as_str()).unwrap(),
    );
    layer.set_urls(Some(vec![url.clone()]));
    let opened = AtomicBool::new(false);
    let reference = server.reference("test/urls:t");
    let err = registry()
        .fetch_blobs(
            &reference,
            &[layer],
            |_: &Descriptor| {
                opened.store(true, Ordering::SeqCst);
                Ok(Box::new(io::sink()) as Box<dyn Write + Send>)
            },
            |_: &Descriptor, _| {},
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "refusing blob `{}` of `{reference}`: it lists foreign `urls` ({url}), which \
             rcompose does not fetch",
            image.layers[0].digest
        )
    );
    assert!(!opened.load(Ordering::SeqCst), "the sink was opened");
    assert_eq!(
        trap.accept().map(|_| ()).unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "something connected to the foreign URL"
    );
}

#[test]
fn plain_http_only_for_loopback_names_and_insecure_registries() {
    require_tools();
    // 127.0.0.2 is a loopback address, but not one of the names that get plain HTTP.
    let dir = TempDir::new("reg-insecure");
    let server = Server::start_on(&dir, false, Ipv4Addr::new(127, 0, 0, 2));
    let image = push_busybox(&dir, &server, "test/plain", &[]);
    let reference = server.reference("test/plain:t");
    let host = server.host();
    let err = registry().resolve(&reference).unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to `https://{host}/v2/` (pulling `{reference}`)")
    );
    for insecure in [host.clone(), "127.0.0.2".to_owned()] {
        let registry = Registry::new(RegistryOptions {
            insecure: vec![insecure.clone()],
            ..RegistryOptions::default()
        })
        .unwrap();
        let resolved = registry.resolve(&reference).unwrap();
        assert_eq!(
            resolved.digest.to_string(),
            image.manifest.digest,
            "{insecure}"
        );
    }
}

/// `openssl s_server` answering HTTPS on `ip:port` with a certificate of its own, killed
/// and reaped on drop.
struct TlsServer(Child);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `openssl` with the words of `command` (split at spaces), which must succeed.
fn openssl(command: &str) {
    run_ok("openssl", &command.split(' ').collect::<Vec<_>>());
}

/// HTTPS registries are checked against the system's roots, which the client loads on its
/// first handshake rather than when it is made: a certificate the system does not trust is
/// refused at the handshake, and the same one is accepted once its CA is among the roots
/// (`SSL_CERT_FILE`, read by rustls-platform-verifier, in a child `rcompose pull`). The
/// server is `openssl s_server` with a certificate for 127.0.0.2 signed by a test CA; it
/// answers every request with an HTML page, so a client past the handshake fails on the
/// manifest instead.
#[test]
fn https_registries_are_checked_against_the_system_roots() {
    require(&[Need::Root, Need::Tool("openssl")]);
    let dir = TempDir::new("reg-tls");
    let d = dir.path().to_str().unwrap();
    let (ca, key, cert) = (
        format!("{d}/ca.pem"),
        format!("{d}/key.pem"),
        format!("{d}/cert.pem"),
    );
    fs::write(
        format!("{d}/ext.cnf"),
        "subjectAltName=IP:127.0.0.2\nbasicConstraints=critical,CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&format!(
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=rcompose-test-CA \
         -keyout {d}/ca.key -out {ca}"
    ));
    openssl(&format!(
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.2 -keyout {key} -out {d}/req.csr"
    ));
    openssl(&format!(
        "x509 -req -days 1 -in {d}/req.csr -CA {ca} -CAkey {d}/ca.key -CAcreateserial \
         -extfile {d}/ext.cnf -out {cert}"
    ));
    let ip = Ipv4Addr::new(127, 0, 0, 2);
    let port = free_port_on(ip);
    let _server = TlsServer(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("{ip}:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((ip, port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let reference: Reference = format!("{ip}:{port}/test/tls:t").parse().unwrap();

    let err = registry().resolve(&reference).unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to `https://{ip}:{port}/v2/` (pulling `{reference}`)")
    );
    let mut chain = String::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&err);
    while let Some(c) = cause {
        chain.push_str(&format!("{c}; "));
        cause = c.source();
    }
    assert!(
        chain.contains("invalid peer certificate: UnknownIssuer"),
        "{chain}"
    );

    let out = Command::new(crate::test::bin())
        .arg("--store")
        .arg(dir.path().join("store"))
        .args(["pull", &reference.to_string()])
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&out, 1);
    let text = stderr(&out);
    assert!(
        text.starts_with(&format!(
            "error: cannot pull `{reference}`: invalid manifest `sha256:"
        )) && text.contains(&format!("` of `{reference}`: not a JSON object")),
        "{text}"
    );
}

/// A fake registry on 127.0.0.1 for what distribution will not serve: `/v2/` answers 200,
/// anything else gets `body` (5 MiB of manifest-like JSON), with a `Content-Length` or
/// delimited by the end of the connection. Serves `connections` connections, then stops.
fn fake_registry(connections: usize, with_length: bool) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
        body.resize(5 << 20, b'x');
        body.extend_from_slice(br#""}}"#);
        // Never waits for a client past 20 s, so a test that fails early cannot hang here.
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..connections {
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return,
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).is_ok() {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head);
            // The client hangs up once it has had enough: write errors are expected.
            if head.starts_with("GET /v2/ ") {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            } else {
                let length = if with_length {
                    format!("Content-Length: {}\r\n", body.len())
                } else {
                    String::new()
                };
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\n{length}\
                         Connection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
                let _ = stream.write_all(&body);
            }
        }
    });
    (port, server)
}

#[test]
fn a_manifest_above_the_cap_is_not_read_to_its_end() {
    require_tools();
    // distribution itself refuses to serve manifests above 4 MiB: a fake registry sends one,
    // announced by its Content-Length (refused before reading) or not (cut off at the cap).
    for with_length in [true, false] {
        let (port, server) = fake_registry(2, with_length);
        let reference: Reference = format!("127.0.0.1:{port}/test/huge:t").parse().unwrap();
        let err = registry().resolve(&reference).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the manifest of `{reference}` is larger than the limit of 4194304 bytes"),
            "with_length: {with_length}"
        );
        server.join().unwrap();
    }
}

#[test]
fn a_registry_that_is_not_there_names_the_url() {
    require_tools();
    let port = free_port();
    let reference: Reference = format!("127.0.0.1:{port}/test/none:t").parse().unwrap();
    let err = registry().resolve(&reference).unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to `http://127.0.0.1:{port}/v2/` (pulling `{reference}`)")
    );
}

/// Not a test: pull time of rcompose against skopeo on the same local registry.
/// `cargo test --release -- --ignored --nocapture measure_pull_against_skopeo`
#[test]
#[ignore = "a measurement: run by hand, in release mode"]
fn measure_pull_against_skopeo() {
    require_tools();
    let dir = TempDir::new("reg-measure");
    let server = Server::start(&dir, false);
    let layout = Layout::new(dir.path().join("layout"));
    let big = layout.image(
        "amd64",
        &[tar_of(&[("data/big", &noise(1, 100 << 20))])],
        Compression::none(),
    );
    layout.tag("big", OCI_MANIFEST, &big.manifest);
    layout.push(
        "big",
        &format!("{}/m/big:t", server.host()),
        &["--preserve-digests"],
    );
    let four: Vec<Vec<u8>> = (0..4u64)
        .map(|i| tar_of(&[(&format!("data/{i}"), &noise(10 + i, 25 << 20))]))
        .collect();
    let four = layout.image("amd64", &four, Compression::none());
    layout.tag("four", OCI_MANIFEST, &four.manifest);
    layout.push(
        "four",
        &format!("{}/m/four:t", server.host()),
        &["--preserve-digests"],
    );

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (name, image) in [("m/big:t", &big), ("m/four:t", &four)] {
        let size: usize = image.layers.iter().map(Blob::size).sum();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 0..6 {
            let out = dir.path().join(format!("ours-{run}"));
            let start = Instant::now();
            let registry = registry();
            let resolved = registry.resolve(&server.reference(name)).unwrap();
            let blobs = fetch_into(&registry, &resolved, &out).unwrap();
            let t = start.elapsed().as_secs_f64();
            assert_eq!(blobs.len(), image.layers.len());
            fs::remove_dir_all(&out).unwrap();

            let out = dir.path().join(format!("skopeo-{run}"));
            let start = Instant::now();
            let status = Command::new("skopeo")
                .args([
                    "--insecure-policy",
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                ])
                .arg(format!("docker://{}/{name}", server.host()))
                .arg(format!("oci:{}:t", out.display()))
                .status()
                .unwrap();
            let s = start.elapsed().as_secs_f64();
            assert!(status.success());
            fs::remove_dir_all(&out).unwrap();
            if run > 0 {
                // run 0 warms the registry's files and the page cache
                ours.push(t);
                theirs.push(s);
            }
        }
        println!(
            "{name}: {} MB in {} layer(s): rcompose {:.3} s, skopeo {:.3} s (medians of 5; \
             runs: {ours:.3?} / {theirs:.3?})",
            size >> 20,
            image.layers.len(),
            median(ours.clone()),
            median(theirs.clone()),
        );
    }
}
