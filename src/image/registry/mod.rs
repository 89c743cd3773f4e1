//! The OCI registry client: resolves a reference to one image manifest for a platform and
//! streams blobs into writers the caller provides, verifying sizes and digests on the way
//! (DESIGN.md section 7, layer-attacks.md sections 2 and 5).
//!
//! A synchronous facade over oci-client: a [`Registry`] owns a two-worker tokio runtime, and
//! its callers are plain threads. oci-client does the authentication (the `WWW-Authenticate`
//! challenge, the bearer token exchange and its cache, or basic auth) and the blob requests.
//! Manifests are requested here with reqwest (the HTTP client under oci-client, with the
//! same TLS set-up) because oci-client reads a manifest response whole, without a size cap.
//!
//! Plain HTTP is used for `localhost`, `127.0.0.1` and `[::1]` (any port) and for the
//! registries of [`RegistryOptions::insecure`]; everything else is HTTPS, verified against
//! the system's root certificates (rustls with the ring provider, rustls-platform-verifier).
//!
//! Nothing here touches the store: blobs go to the caller's writers, which decide where the
//! bytes land and publish them only once this module says they are verified.

mod auth;
mod document;
mod reference;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_spec::image::{ImageManifest, MediaType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

pub use self::auth::{CredentialSource, Credentials, ENV_PASSWORD, ENV_TOKEN, ENV_USER};
pub use self::reference::{DEFAULT_TAG, DOCKER_HUB, Reference, ReferenceError};
pub use oci_spec::image::Descriptor;

use self::document::Document;
use crate::image::digest::{Digest, Hasher};

/// The largest manifest, index or image config accepted (containerd's manifest limit).
pub const METADATA_MAX: u64 = 4 * 1024 * 1024;

/// The largest blob a descriptor may announce: anything larger is taken for a lie.
pub const BLOB_MAX: u64 = 64 * 1024 * 1024 * 1024;

/// Why a bearer token given by the user can be refused (appended to
/// [`RegistryError::Unauthorized`]): oci-client sends it as is and never asks a token service
/// for another one, so it must already be the access token the registry wants.
const BEARER_HINT: &str = "; a bearer token is sent as is, never exchanged or renewed, so it \
     must be an unexpired access token of the registry's token service for this repository (a \
     password or personal access token needs a user name: RCOMPOSE_REGISTRY_USER and \
     RCOMPOSE_REGISTRY_PASSWORD, or `auth` in the auth file)";

/// Hosts reached over plain HTTP without being listed in [`RegistryOptions::insecure`].
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait for the next bytes of a response.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("rcompose/", env!("CARGO_PKG_VERSION"));

/// How the [`Registry`] reaches registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Registries (`host:port`, or `host` for every port) reached over plain HTTP, besides
    /// `localhost`, `127.0.0.1` and `[::1]`.
    pub insecure: Vec<String>,
    /// The platform picked from an index: `(os, architecture)`, like `("linux", "amd64")`.
    pub platform: (String, String),
    /// Blobs downloaded at once by [`Registry::fetch_blobs`] (at least 1).
    pub max_concurrent: usize,
    /// A credentials file searched before the default ones (see [`Registry::credentials_for`]).
    pub auth_file: Option<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            insecure: Vec::new(),
            platform: ("linux".into(), "amd64".into()),
            max_concurrent: 3,
            auth_file: None,
        }
    }
}

/// A reference resolved to one image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The reference asked for.
    pub reference: Reference,
    /// The image manifest's digest: pin this (`repo@digest`) to pull the same image again.
    pub digest: Digest,
    /// The digest of the index or manifest list the manifest was picked from, if any.
    pub index_digest: Option<Digest>,
    /// The manifest's media type as served (OCI or Docker v2 schema 2).
    pub media_type: &'static str,
    /// The manifest exactly as fetched: these bytes hash to `digest`.
    pub manifest_bytes: Vec<u8>,
    /// The manifest parsed from `manifest_bytes`, with Docker media types mapped to OCI ones.
    pub manifest: ImageManifest,
    /// The image config, verified against the manifest's config descriptor.
    pub config: Vec<u8>,
}

/// Errors of registry operations; each names the reference and what failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The tokio runtime could not be started.
    #[error("failed to start the registry client's runtime")]
    Runtime(#[source] io::Error),
    /// The HTTP client could not be set up.
    #[error("failed to set up the HTTP client for `{registry}`")]
    Client {
        /// The registry.
        registry: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Nothing answered at the registry's address.
    #[error("cannot connect to `{url}` (pulling `{reference}`)")]
    Connect {
        /// The reference being pulled.
        reference: String,
        /// The URL requested.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The registry (or its token service) refused the credentials, or their absence.
    #[error(
        "not authorized to pull `{reference}`; credentials used: {credentials}{}",
        if *.bearer { BEARER_HINT } else { "" }
    )]
    Unauthorized {
        /// The reference being pulled.
        reference: String,
        /// Where the credentials came from.
        credentials: CredentialSource,
        /// They were a bearer token (`RCOMPOSE_REGISTRY_TOKEN`, `registrytoken`), sent as is.
        bearer: bool,
    },
    /// The registry has no such manifest (or no such repository).
    #[error("`{reference}` not found: the registry has no manifest `{manifest}` ({detail})")]
    ManifestNotFound {
        /// The reference being pulled.
        reference: String,
        /// The tag or digest asked for.
        manifest: String,
        /// The registry's error code and message.
        detail: String,
    },
    /// The registry has no such blob.
    #[error("blob `{digest}` of `{reference}` not found in the registry")]
    BlobNotFound {
        /// The reference being pulled.
        reference: String,
        /// The blob.
        digest: Digest,
    },
    /// The index offers no image for the platform.
    #[error("`{reference}` has no image for {wanted}; its index offers: {offered}")]
    NoPlatform {
        /// The reference being pulled.
        reference: String,
        /// `os/arch`.
        wanted: String,
        /// The platforms of the index's image entries, comma-separated.
        offered: String,
    },
    /// Content does not hash to the digest that names it.
    #[error("{what} of `{reference}` has digest `{got}`, expected `{expected}`")]
    DigestMismatch {
        /// The reference being pulled.
        reference: String,
        /// `manifest`, `index`, `config` or `blob`.
        what: &'static str,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what came.
        got: Digest,
    },
    /// A blob is not as long as its descriptor says (reading stopped past the end).
    #[error(
        "blob `{digest}` of `{reference}` has the wrong size: the descriptor says {expected} \
         bytes, the registry sent {got}"
    )]
    SizeMismatch {
        /// The reference being pulled.
        reference: String,
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        expected: u64,
        /// The bytes received (reading stops at the first byte too many).
        got: u64,
    },
    /// A manifest, index or config is larger than [`METADATA_MAX`].
    #[error("the {what} of `{reference}` is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The reference being pulled.
        reference: String,
        /// `manifest`, `index` or `config`.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// A manifest or index is malformed, ambiguous or of an unsupported type.
    #[error("invalid manifest `{digest}` of `{reference}`: {reason}")]
    InvalidManifest {
        /// The reference being pulled.
        reference: String,
        /// The digest of the bytes received.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// The manifest is not a container image's (an artifact, say).
    #[error("`{reference}` is not a container image: its config has media type `{media_type}`")]
    NotAnImage {
        /// The reference being pulled.
        reference: String,
        /// The config's media type.
        media_type: String,
    },
    /// A descriptor lists foreign URLs (layer-attacks.md 2.4, CVE-2020-15157).
    #[error(
        "refusing blob `{digest}` of `{reference}`: it lists foreign `urls` ({urls}), which \
         rcompose does not fetch"
    )]
    ForeignUrls {
        /// The reference being pulled.
        reference: String,
        /// The descriptor's digest, as written.
        digest: String,
        /// The URLs.
        urls: String,
    },
    /// A descriptor's digest is not a strict sha256, or its size is absurd.
    #[error("invalid descriptor `{digest}` in `{reference}`: {reason}")]
    InvalidDescriptor {
        /// The reference being pulled.
        reference: String,
        /// The descriptor's digest, as written (truncated).
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// The registry answered with an unexpected HTTP status.
    #[error("`{url}` answered HTTP {status} (pulling `{reference}`): {message}")]
    Status {
        /// The reference being pulled.
        reference: String,
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response's body.
        message: String,
    },
    /// A transfer failed on the way (timeout, connection reset, bad HTTP).
    #[error("failed to download the {what} of `{reference}`")]
    Transfer {
        /// The reference being pulled.
        reference: String,
        /// `manifest`, `config` or `blob sha256:...`.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The caller's writer failed.
    #[error("failed to store blob `{digest}` of `{reference}`")]
    Sink {
        /// The reference being pulled.
        reference: String,
        /// The blob.
        digest: Digest,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, RegistryError>;

/// A registry client (see the module documentation), to share between threads. Its methods
/// block: call them from plain threads, never from async code (they run their own runtime).
/// Each registry's credentials are looked up once, on first use.
pub struct Registry {
    options: RegistryOptions,
    runtime: tokio::runtime::Runtime,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// One registry: its clients, its base URL and the credentials chosen for it.
struct Endpoint {
    /// `host[:port]` as in the reference.
    registry: String,
    /// `http://127.0.0.1:5000`, `https://index.docker.io`.
    base: String,
    plain: bool,
    /// oci-client, made only when the registry challenges (`WWW-Authenticate` on `/v2/`):
    /// each one builds two reqwest clients, and each of those loads the system's root
    /// certificates (about 3 ms of CPU time each), which a registry without auth never needs.
    oci: OnceLock<oci_client::Client>,
    http: reqwest::Client,
    credentials: Credentials,
    source: CredentialSource,
    /// What the requests for a repository send, once [`Endpoint::authorize`] found out.
    authorizations: Mutex<HashMap<String, Arc<Authorization>>>,
}

/// What a manifest or blob request sends.
enum Authorization {
    None,
    /// A token the registry's token service issued (`exchanged`) or the user gave.
    Bearer {
        token: String,
        exchanged: bool,
    },
    Basic(String, String),
}

/// A descriptor that passed [`check_descriptor`].
struct Checked<'a> {
    desc: &'a Descriptor,
    digest: Digest,
    size: u64,
}

/// Installs ring as rustls' process-wide crypto provider, once (reqwest is built without one).
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another provider is installed already: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The TLS set-up of reqwest's default (rustls, TLS 1.2 and 1.3, HTTP/1.1 by ALPN, the
/// system's roots through rustls-platform-verifier), but with the roots loaded on the first
/// handshake: see [`SystemRoots`].
fn tls_config() -> std::result::Result<rustls::ClientConfig, rustls::Error> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        // Not a weaker verifier: the platform verifier reqwest would have made, made later.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SystemRoots {
            provider,
            verifier: OnceLock::new(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies server certificates against the system's roots with rustls-platform-verifier,
/// as reqwest does by default, but loads them on the first TLS handshake rather than when
/// the client is built: they are every file of /etc/ssl/certs, read and parsed (about 3 ms
/// of CPU time at the start of each pull), which a plain-HTTP registry never needs.
#[derive(Debug)]
struct SystemRoots {
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: OnceLock<std::result::Result<rustls_platform_verifier::Verifier, rustls::Error>>,
}

impl SystemRoots {
    fn verifier(&self) -> std::result::Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| rustls_platform_verifier::Verifier::new(Arc::clone(&self.provider)))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    /// What the platform verifier answers (its provider's algorithms), without loading the
    /// roots: this is asked for the first message of a handshake.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl Registry {
    /// A client with `options`; starts its runtime (no network access yet).
    pub fn new(mut options: RegistryOptions) -> Result<Registry> {
        install_crypto_provider();
        options.max_concurrent = options.max_concurrent.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rcompose-registry")
            .enable_all()
            .build()
            .map_err(RegistryError::Runtime)?;
        Ok(Registry {
            options,
            runtime,
            endpoints: Mutex::new(HashMap::new()),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// Credentials for `registry` (`host[:port]` as in a [`Reference`]), and where they came
    /// from: `RCOMPOSE_REGISTRY_USER` + `RCOMPOSE_REGISTRY_PASSWORD`, else
    /// `RCOMPOSE_REGISTRY_TOKEN` (a bearer token), else the first `auths` entry for the
    /// registry in [`RegistryOptions::auth_file`], `$DOCKER_CONFIG/config.json`,
    /// `~/.docker/config.json` or `$XDG_RUNTIME_DIR/containers/auth.json` (`auth` =
    /// base64 `user:password`, `username` + `password`, or `registrytoken`), else anonymous.
    /// Environment credentials go to every registry pulled from.
    pub fn credentials_for(&self, registry: &str) -> (Credentials, CredentialSource) {
        let env = |name: &str| -> Option<OsString> { std::env::var_os(name) };
        let files = auth::default_files(self.options.auth_file.as_deref(), &env);
        auth::lookup(registry, &env, &files)
    }

    /// Whether `registry` is reached over plain HTTP.
    pub fn plain_http(&self, registry: &str) -> bool {
        let host = reference::host_of(registry);
        LOOPBACK.contains(&host)
            || self
                .options
                .insecure
                .iter()
                .any(|r| r == registry || r == host)
    }

    /// Resolves `reference` to one image manifest for the platform of the options: follows
    /// an index or manifest list to its entry for that platform, verifies every document
    /// against the digest that names it (the reference's own digest, if pinned), and fetches
    /// the config. See [`Resolved`].
    pub fn resolve(&self, reference: &Reference) -> Result<Resolved> {
        let endpoint = self.endpoint(reference)?;
        self.runtime
            .block_on(self.resolve_async(&endpoint, reference))
    }

    /// Downloads `descs` (blobs of `reference`'s repository), at most
    /// [`RegistryOptions::max_concurrent`] at once. Each blob streams into the writer
    /// `sink(desc)` returns (called when its download starts), is never read past its
    /// descriptor's size, and is verified against size and digest as it streams;
    /// `progress(desc, bytes_so_far)` is called as bytes arrive. `Ok` means every blob was
    /// written completely and verified, and its writer flushed. A writer is flushed once,
    /// after its whole blob was verified, and never before: a sink may take the flush as the
    /// verdict (the pull's unpacker, reading a blob while it downloads, ends only then).
    ///
    /// Before anything is fetched, every descriptor is checked: foreign `urls`, a digest
    /// that is not a strict sha256, or a size above [`BLOB_MAX`] refuse the whole call. On
    /// the first failure the other downloads stop; writers may then hold partial data.
    pub fn fetch_blobs<S, P>(
        &self,
        reference: &Reference,
        descs: &[Descriptor],
        sink: S,
        progress: P,
    ) -> Result<()>
    where
        S: Fn(&Descriptor) -> io::Result<Box<dyn Write + Send>> + Sync,
        P: Fn(&Descriptor, u64) + Sync,
    {
        let checked = descs
            .iter()
            .map(|d| check_descriptor(reference, d, BLOB_MAX))
            .collect::<Result<Vec<_>>>()?;
        if checked.is_empty() {
            return Ok(());
        }
        let endpoint = self.endpoint(reference)?;
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
        let workers = self.options.max_concurrent.min(checked.len());
        // Plain threads, each driving one download at a time with `block_on`: the future
        // runs on that thread (the runtime's workers drive the sockets), so the caller's
        // blocking writers never stall the runtime.
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(blob) = checked.get(i) else {
                            break;
                        };
                        let result = self.runtime.block_on(fetch_blob(
                            &endpoint,
                            reference,
                            blob,
                            || sink(blob.desc),
                            &|n| progress(blob.desc, n),
                            &failed,
                        ));
                        if let Err(e) = result {
                            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            // Stored before the others are told to stop, so the first real
                            // error wins over their "stopped".
                            if slot.is_none() {
                                *slot = Some(e);
                            }
                            failed.store(true, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The endpoint of `reference`'s registry, made on first use.
    fn endpoint(&self, reference: &Reference) -> Result<Arc<Endpoint>> {
        let registry = reference.registry();
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(endpoint) = endpoints.get(registry) {
            return Ok(Arc::clone(endpoint));
        }
        let plain = self.plain_http(registry);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config().map_err(|e| RegistryError::Client {
                registry: registry.to_owned(),
                source: Box::new(e),
            })?)
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| RegistryError::Client {
                registry: registry.to_owned(),
                source: Box::new(e),
            })?;
        let (credentials, source) = self.credentials_for(registry);
        let oci_ref = oci_reference(reference);
        let endpoint = Arc::new(Endpoint {
            registry: registry.to_owned(),
            base: format!(
                "{}://{}",
                if plain { "http" } else { "https" },
                oci_ref.resolve_registry()
            ),
            plain,
            oci: OnceLock::new(),
            http,
            credentials,
            source,
            authorizations: Mutex::new(HashMap::new()),
        });
        endpoints.insert(registry.to_owned(), Arc::clone(&endpoint));
        Ok(endpoint)
    }

    async fn resolve_async(&self, endpoint: &Endpoint, reference: &Reference) -> Result<Resolved> {
        let authorization = endpoint.authorize(reference).await?;
        let name = reference.manifest_name();
        let first = endpoint
            .get_manifest(reference, &name, &authorization)
            .await?;
        let digest = Digest::of(&first.bytes);
        let expected = reference.digest().or(first.header_digest.as_ref());
        if let Some(expected) = expected.filter(|&e| *e != digest) {
            return Err(RegistryError::DigestMismatch {
                reference: reference.to_string(),
                what: "manifest",
                expected: expected.clone(),
                got: digest,
            });
        }
        let invalid = |digest: &Digest, reason: String| RegistryError::InvalidManifest {
            reference: reference.to_string(),
            digest: digest.clone(),
            reason,
        };
        let document = document::parse(&first.bytes, None, first.content_type.as_deref())
            .map_err(|reason| invalid(&digest, reason))?;
        let (manifest, media_type, bytes, digest, index_digest) = match document {
            Document::Manifest(manifest, media_type) => {
                (manifest, media_type, first.bytes, digest, None)
            }
            Document::Index(index, _) => {
                let (os, arch) = &self.options.platform;
                let entry = document::select(&index, (os, arch)).map_err(|offered| {
                    RegistryError::NoPlatform {
                        reference: reference.to_string(),
                        wanted: format!("{os}/{arch}"),
                        offered: if offered.is_empty() {
                            "no image manifests".into()
                        } else {
                            offered.join(", ")
                        },
                    }
                })?;
                if entry.size() > METADATA_MAX {
                    return Err(RegistryError::TooLarge {
                        reference: reference.to_string(),
                        what: "manifest",
                        limit: METADATA_MAX,
                    });
                }
                let entry = check_descriptor(reference, entry, METADATA_MAX)?;
                let bytes = endpoint
                    .get_manifest(reference, &entry.digest.to_string(), &authorization)
                    .await?
                    .bytes;
                let got = Digest::of(&bytes);
                if got != entry.digest || bytes.len() as u64 != entry.size {
                    return Err(RegistryError::DigestMismatch {
                        reference: reference.to_string(),
                        what: "manifest",
                        expected: entry.digest,
                        got,
                    });
                }
                let entry_type = entry.desc.media_type().to_string();
                match document::parse(&bytes, Some(&entry_type), None)
                    .map_err(|reason| invalid(&got, reason))?
                {
                    Document::Manifest(manifest, media_type) => {
                        (manifest, media_type, bytes, got, Some(digest))
                    }
                    Document::Index(..) => {
                        return Err(invalid(
                            &got,
                            "an index inside an index is not followed".into(),
                        ));
                    }
                }
            }
        };
        for layer in manifest.layers() {
            check_descriptor(reference, layer, BLOB_MAX)?;
        }
        if *manifest.config().media_type() != MediaType::ImageConfig {
            return Err(RegistryError::NotAnImage {
                reference: reference.to_string(),
                media_type: manifest.config().media_type().to_string(),
            });
        }
        if manifest.config().size() > METADATA_MAX {
            return Err(RegistryError::TooLarge {
                reference: reference.to_string(),
                what: "config",
                limit: METADATA_MAX,
            });
        }
        let config_desc = check_descriptor(reference, manifest.config(), METADATA_MAX)?;
        let config = fetch_blob(
            endpoint,
            reference,
            &config_desc,
            || Ok(Vec::new()),
            &|_| {},
            &AtomicBool::new(false),
        )
        .await
        .map_err(|e| match e {
            RegistryError::DigestMismatch {
                reference,
                expected,
                got,
                ..
            } => RegistryError::DigestMismatch {
                reference,
                what: "config",
                expected,
                got,
            },
            e => e,
        })?;
        Ok(Resolved {
            reference: reference.clone(),
            digest,
            index_digest,
            media_type,
            manifest_bytes: bytes,
            manifest: *manifest,
            config,
        })
    }
}

/// A manifest response.
struct Fetched {
    bytes: Vec<u8>,
    content_type: Option<String>,
    /// `Docker-Content-Digest`, when it is a sha256 digest.
    header_digest: Option<Digest>,
}

impl Endpoint {
    /// Finds out what the requests for `reference`'s repository send, and remembers it: a
    /// bearer token the user gave, as is (no probe, no exchange); else `GET /v2/`: without a
    /// challenge, the basic credentials found, if any; with one, oci-client answers it (a
    /// token exchange for a bearer challenge, basic auth for a basic one).
    async fn authorize(&self, reference: &Reference) -> Result<Arc<Authorization>> {
        let authorization = match &self.credentials {
            Credentials::Bearer(token) => Authorization::Bearer {
                token: token.clone(),
                exchanged: false,
            },
            _ if self.challenged(reference).await? => self.exchange(reference).await?,
            Credentials::Basic { username, password } => {
                Authorization::Basic(username.clone(), password.clone())
            }
            Credentials::Anonymous => Authorization::None,
        };
        let authorization = Arc::new(authorization);
        self.authorizations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                reference.repository().to_owned(),
                Arc::clone(&authorization),
            );
        Ok(authorization)
    }

    /// What [`Endpoint::authorize`] found for `reference`'s repository, or finds now.
    async fn authorization(&self, reference: &Reference) -> Result<Arc<Authorization>> {
        let known = self
            .authorizations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reference.repository())
            .cloned();
        match known {
            Some(authorization) => Ok(authorization),
            None => self.authorize(reference).await,
        }
    }

    /// Whether `GET /v2/` answers with a `WWW-Authenticate` challenge (whatever its status,
    /// as oci-client decides).
    async fn challenged(&self, reference: &Reference) -> Result<bool> {
        let url = format!("{}/v2/", self.base);
        let mut response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| self.request_error(reference, &url, "manifest", source))?;
        let challenged = response
            .headers()
            .contains_key(reqwest::header::WWW_AUTHENTICATE);
        // Read to its end, so that the connection serves the next request; its content
        // does not matter.
        let _ = read_limited(&mut response, 64 * 1024).await;
        Ok(challenged)
    }

    /// Answers the registry's challenge through oci-client: a bearer token from the realm
    /// it names (anonymous or with the credentials), or basic auth.
    async fn exchange(&self, reference: &Reference) -> Result<Authorization> {
        let token = self
            .oci()?
            .auth(
                &oci_reference(reference),
                &registry_auth(&self.credentials),
                RegistryOperation::Pull,
            )
            .await
            .map_err(|e| self.oci_error(reference, "manifest", e))?;
        Ok(match (token, &self.credentials) {
            (Some(token), _) => Authorization::Bearer {
                token,
                exchanged: true,
            },
            (None, Credentials::Basic { username, password }) => {
                Authorization::Basic(username.clone(), password.clone())
            }
            (None, _) => Authorization::None,
        })
    }

    /// The oci-client of this registry, made on first use.
    fn oci(&self) -> Result<&oci_client::Client> {
        if let Some(client) = self.oci.get() {
            return Ok(client);
        }
        let config = ClientConfig {
            protocol: if self.plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        // `Client::new` would fall back to a default configuration on error.
        let client = oci_client::Client::try_from(config).map_err(|e| RegistryError::Client {
            registry: self.registry.clone(),
            source: Box::new(e),
        })?;
        // Another thread may have made one meanwhile: either does.
        Ok(self.oci.get_or_init(|| client))
    }

    /// The error of a request for `what` of `reference` that got no answer.
    fn request_error(
        &self,
        reference: &Reference,
        url: &str,
        what: &str,
        source: reqwest::Error,
    ) -> RegistryError {
        if source.is_connect() {
            RegistryError::Connect {
                reference: reference.to_string(),
                url: url.to_owned(),
                source,
            }
        } else {
            RegistryError::Transfer {
                reference: reference.to_string(),
                what: what.to_owned(),
                source: Box::new(source),
            }
        }
    }

    /// GETs blob `digest` of `reference`'s repository: the response, once it answered with
    /// success. A token from the exchange that the registry refuses (it expired during a
    /// long pull) is renewed once.
    async fn get_blob(&self, reference: &Reference, digest: &Digest) -> Result<reqwest::Response> {
        let url = format!("{}/v2/{}/blobs/{digest}", self.base, reference.repository());
        let mut authorization = self.authorization(reference).await?;
        let mut renewed = false;
        loop {
            let mut response = authorized(self.http.get(&url), &authorization)
                .send()
                .await
                .map_err(|source| {
                    self.request_error(reference, &url, &format!("blob {digest}"), source)
                })?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == reqwest::StatusCode::UNAUTHORIZED
                && !renewed
                && matches!(
                    *authorization,
                    Authorization::Bearer {
                        exchanged: true,
                        ..
                    }
                )
            {
                renewed = true;
                authorization = self.authorize(reference).await?;
                continue;
            }
            let body = read_limited(&mut response, 64 * 1024)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            return Err(
                match self.status_error(reference, &url, status.as_u16(), &body, None) {
                    RegistryError::Status { status: 404, .. } => RegistryError::BlobNotFound {
                        reference: reference.to_string(),
                        digest: digest.clone(),
                    },
                    e => e,
                },
            );
        }
    }

    /// GETs manifest `name` (a tag or digest), at most [`METADATA_MAX`] bytes of it.
    async fn get_manifest(
        &self,
        reference: &Reference,
        name: &str,
        authorization: &Authorization,
    ) -> Result<Fetched> {
        let url = format!(
            "{}/v2/{}/manifests/{name}",
            self.base,
            reference.repository()
        );
        let request = authorized(
            self.http
                .get(&url)
                .header(reqwest::header::ACCEPT, document::ACCEPT),
            authorization,
        );
        let transfer =
            |source: reqwest::Error| self.request_error(reference, &url, "manifest", source);
        let mut response = request.send().await.map_err(transfer)?;
        let status = response.status();
        if !status.is_success() {
            let body = read_limited(&mut response, 64 * 1024)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            return Err(self.status_error(reference, &url, status.as_u16(), &body, Some(name)));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type");
        let header_digest = header("docker-content-digest").and_then(|d| d.parse().ok());
        let too_large = || RegistryError::TooLarge {
            reference: reference.to_string(),
            what: "manifest",
            limit: METADATA_MAX,
        };
        if response.content_length().is_some_and(|n| n > METADATA_MAX) {
            return Err(too_large());
        }
        let bytes = read_limited(&mut response, METADATA_MAX)
            .await
            .map_err(transfer)?
            .ok_or_else(too_large)?;
        Ok(Fetched {
            bytes,
            content_type,
            header_digest,
        })
    }

    /// The error for refused credentials.
    fn unauthorized(&self, reference: &Reference) -> RegistryError {
        RegistryError::Unauthorized {
            reference: reference.to_string(),
            credentials: self.source.clone(),
            bearer: matches!(self.credentials, Credentials::Bearer(_)),
        }
    }

    /// The error for an HTTP error status; `manifest` is the tag or digest asked for.
    fn status_error(
        &self,
        reference: &Reference,
        url: &str,
        status: u16,
        body: &[u8],
        manifest: Option<&str>,
    ) -> RegistryError {
        match (status, manifest) {
            (401 | 403, _) => self.unauthorized(reference),
            (404, Some(manifest)) => RegistryError::ManifestNotFound {
                reference: reference.to_string(),
                manifest: manifest.to_owned(),
                detail: registry_message(body).unwrap_or_else(|| "HTTP 404".into()),
            },
            _ => RegistryError::Status {
                reference: reference.to_string(),
                url: url.to_owned(),
                status,
                message: registry_message(body).unwrap_or_else(|| {
                    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
                }),
            },
        }
    }

    /// Maps an oci-client error of a request for `what` of `reference`.
    fn oci_error(
        &self,
        reference: &Reference,
        what: &str,
        e: OciDistributionError,
    ) -> RegistryError {
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => self.unauthorized(reference),
            OciDistributionError::RequestError(source) if source.is_connect() => {
                RegistryError::Connect {
                    reference: reference.to_string(),
                    url: source
                        .url()
                        .map_or_else(|| self.base.clone(), ToString::to_string),
                    source,
                }
            }
            OciDistributionError::ServerError { code, url, message } => RegistryError::Status {
                reference: reference.to_string(),
                url,
                status: code,
                message: message.chars().take(200).collect(),
            },
            OciDistributionError::RegistryError { envelope, url } => {
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let status = if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::BlobUnknown
                            | OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    404
                } else {
                    400
                };
                RegistryError::Status {
                    reference: reference.to_string(),
                    url,
                    status,
                    message,
                }
            }
            e => RegistryError::Transfer {
                reference: reference.to_string(),
                what: what.to_owned(),
                source: Box::new(e),
            },
        }
    }
}

/// Streams one checked blob into the writer `open` returns (called once the registry
/// answered), verifying size and digest; returns the writer, flushed. The writer's `flush`
/// is called only after the checks passed (see [`Registry::fetch_blobs`]). `stop` aborts the
/// transfer (another one failed).
async fn fetch_blob<W: Write>(
    endpoint: &Endpoint,
    reference: &Reference,
    blob: &Checked<'_>,
    open: impl FnOnce() -> io::Result<W>,
    progress: &dyn Fn(u64),
    stop: &AtomicBool,
) -> Result<W> {
    let transfer = |source: Box<dyn std::error::Error + Send + Sync>| RegistryError::Transfer {
        reference: reference.to_string(),
        what: format!("blob {}", blob.digest),
        source,
    };
    let mut response = endpoint.get_blob(reference, &blob.digest).await?;
    let size_mismatch = |got| RegistryError::SizeMismatch {
        reference: reference.to_string(),
        digest: blob.digest.clone(),
        expected: blob.size,
        got,
    };
    if let Some(length) = response.content_length().filter(|&n| n != blob.size) {
        return Err(size_mismatch(length));
    }
    let sink_error = |source| RegistryError::Sink {
        reference: reference.to_string(),
        digest: blob.digest.clone(),
        source,
    };
    let mut out = BufWriter::with_capacity(256 * 1024, open().map_err(sink_error)?);
    // The only hash of the blob: the requests are made here (not through oci-client, whose
    // streams hash a second time) and the store does not hash what this checked.
    let mut hasher = Hasher::new();
    progress(0);
    while let Some(chunk) = response.chunk().await.map_err(|e| transfer(Box::new(e)))? {
        let len = hasher.len() + chunk.len() as u64;
        if len > blob.size {
            return Err(size_mismatch(len));
        }
        out.write_all(&chunk).map_err(sink_error)?;
        hasher.update(&chunk);
        progress(len);
        if stop.load(Ordering::Relaxed) {
            return Err(transfer("stopped: another download failed".into()));
        }
    }
    if hasher.len() != blob.size {
        return Err(size_mismatch(hasher.len()));
    }
    let got = hasher.finish();
    if got != blob.digest {
        return Err(RegistryError::DigestMismatch {
            reference: reference.to_string(),
            what: "blob",
            expected: blob.digest.clone(),
            got,
        });
    }
    let mut inner = out.into_inner().map_err(|e| sink_error(e.into_error()))?;
    inner.flush().map_err(sink_error)?;
    Ok(inner)
}

/// Refuses foreign URLs, digests that are not strict sha256, and sizes above `max`.
fn check_descriptor<'a>(
    reference: &Reference,
    desc: &'a Descriptor,
    max: u64,
) -> Result<Checked<'a>> {
    let written = desc.digest().to_string();
    if let Some(urls) = desc.urls().as_ref().filter(|u| !u.is_empty()) {
        return Err(RegistryError::ForeignUrls {
            reference: reference.to_string(),
            digest: written.chars().take(100).collect(),
            urls: urls.join(", ").chars().take(300).collect(),
        });
    }
    let invalid = |reason: String| RegistryError::InvalidDescriptor {
        reference: reference.to_string(),
        digest: written.chars().take(100).collect(),
        reason,
    };
    let digest: Digest = written
        .parse()
        .map_err(|e: crate::image::digest::DigestError| invalid(e.reason.to_owned()))?;
    if desc.size() > max {
        return Err(invalid(format!(
            "its size {} is above the limit of {max} bytes",
            desc.size()
        )));
    }
    Ok(Checked {
        desc,
        digest,
        size: desc.size(),
    })
}

/// Reads the body, at most `limit` bytes: `None` when it is longer.
async fn read_limited(
    response: &mut reqwest::Response,
    limit: u64,
) -> std::result::Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// `CODE: message` of the first error of a registry error body.
fn registry_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = value.get("errors")?.get(0)?;
    let code = first.get("code")?.as_str()?;
    let message = first.get("message").and_then(|m| m.as_str()).unwrap_or("");
    Some(
        format!("{code}: {message}")
            .trim_end_matches([':', ' '])
            .chars()
            .take(200)
            .collect(),
    )
}

/// `request` with what `authorization` sends.
fn authorized(
    request: reqwest::RequestBuilder,
    authorization: &Authorization,
) -> reqwest::RequestBuilder {
    match authorization {
        Authorization::None => request,
        Authorization::Bearer { token, .. } => request.bearer_auth(token),
        Authorization::Basic(user, password) => request.basic_auth(user, Some(password)),
    }
}

fn registry_auth(credentials: &Credentials) -> RegistryAuth {
    match credentials {
        Credentials::Anonymous => RegistryAuth::Anonymous,
        Credentials::Basic { username, password } => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
        Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
    }
}

fn oci_reference(reference: &Reference) -> oci_client::Reference {
    let registry = reference.registry().to_owned();
    let repository = reference.repository().to_owned();
    match (reference.tag(), reference.digest()) {
        (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
            registry,
            repository,
            tag.to_owned(),
            digest.to_string(),
        ),
        (None, Some(digest)) => {
            oci_client::Reference::with_digest(registry, repository, digest.to_string())
        }
        (tag, None) => oci_client::Reference::with_tag(
            registry,
            repository,
            tag.unwrap_or(DEFAULT_TAG).to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        "127.0.0.1:5000/a:t".parse().unwrap()
    }

    #[test]
    fn registry_is_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Registry>();
        send_sync::<RegistryError>();
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        let registry = Registry::new(RegistryOptions {
            insecure: vec!["reg.lan:5000".into(), "other.lan".into()],
            ..RegistryOptions::default()
        })
        .unwrap();
        for (name, plain) in [
            ("localhost:5000", true),
            ("localhost", true),
            ("127.0.0.1:1234", true),
            ("[::1]:5000", true),
            ("reg.lan:5000", true),
            ("reg.lan:5001", false),
            ("reg.lan", false),
            ("other.lan:443", true),
            ("docker.io", false),
            ("127.0.0.2:5000", false),
            ("localhost.example.com", false),
        ] {
            assert_eq!(registry.plain_http(name), plain, "{name}");
        }
    }

    #[test]
    fn refuses_foreign_urls_bad_digests_and_absurd_sizes() {
        let hex = "a".repeat(64);
        let mut desc = Descriptor::new(
            MediaType::ImageLayerGzip,
            10,
            oci_spec::image::Digest::try_from(format!("sha256:{hex}")).unwrap(),
        );
        assert!(check_descriptor(&reference(), &desc, BLOB_MAX).is_ok());
        desc.set_urls(Some(vec!["https://evil.example/x".into()]));
        assert_eq!(
            check_descriptor(&reference(), &desc, BLOB_MAX)
                .err()
                .unwrap()
                .to_string(),
            format!(
                "refusing blob `sha256:{hex}` of `127.0.0.1:5000/a:t`: it lists foreign `urls` \
                 (https://evil.example/x), which rcompose does not fetch"
            )
        );
        desc.set_urls(None);
        desc.set_size(BLOB_MAX + 1);
        assert!(matches!(
            check_descriptor(&reference(), &desc, BLOB_MAX),
            Err(RegistryError::InvalidDescriptor { .. })
        ));
        let sha512 = format!("sha512:{}", "b".repeat(128));
        let desc = Descriptor::new(
            MediaType::ImageLayerGzip,
            10,
            oci_spec::image::Digest::try_from(sha512).unwrap(),
        );
        assert_eq!(
            check_descriptor(&reference(), &desc, BLOB_MAX)
                .err()
                .unwrap()
                .to_string(),
            format!(
                "invalid descriptor `sha512:{}` in `127.0.0.1:5000/a:t`: only sha256 digests \
                 are supported",
                "b".repeat(93)
            )
        );
    }

    #[test]
    fn converts_references_for_oci_client() {
        let r: Reference = format!("localhost:5000/a/b:t@sha256:{}", "c".repeat(64))
            .parse()
            .unwrap();
        let o = oci_reference(&r);
        assert_eq!(o.registry(), "localhost:5000");
        assert_eq!(o.repository(), "a/b");
        assert_eq!(o.tag(), Some("t"));
        assert_eq!(
            o.digest(),
            Some(format!("sha256:{}", "c".repeat(64)).as_str())
        );
        let o = oci_reference(&"busybox".parse().unwrap());
        assert_eq!(o.resolve_registry(), "index.docker.io");
        assert_eq!(o.repository(), "library/busybox");
    }

    #[test]
    fn unauthorized_explains_what_a_given_token_must_be() {
        let error = |credentials, bearer| {
            RegistryError::Unauthorized {
                reference: "127.0.0.1:5000/a:t".into(),
                credentials,
                bearer,
            }
            .to_string()
        };
        assert_eq!(
            error(CredentialSource::EnvBasic, false),
            "not authorized to pull `127.0.0.1:5000/a:t`; credentials used: \
             RCOMPOSE_REGISTRY_USER/RCOMPOSE_REGISTRY_PASSWORD"
        );
        assert_eq!(
            error(CredentialSource::EnvToken, true),
            "not authorized to pull `127.0.0.1:5000/a:t`; credentials used: \
             RCOMPOSE_REGISTRY_TOKEN; a bearer token is sent as is, never exchanged or \
             renewed, so it must be an unexpired access token of the registry's token service \
             for this repository (a password or personal access token needs a user name: \
             RCOMPOSE_REGISTRY_USER and RCOMPOSE_REGISTRY_PASSWORD, or `auth` in the auth file)"
        );
    }

    #[test]
    fn reads_registry_error_bodies() {
        assert_eq!(
            registry_message(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#),
            Some("MANIFEST_UNKNOWN: manifest unknown".into())
        );
        assert_eq!(
            registry_message(br#"{"errors":[{"code":"DENIED"}]}"#),
            Some("DENIED".into())
        );
        assert_eq!(registry_message(b"<html>"), None);
    }
}
