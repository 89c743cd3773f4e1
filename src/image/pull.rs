//! Registry images in the store: found by name, or pulled (OCI distribution API, see
//! [`super::registry`]) and unpacked.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use super::config;
use super::digest::Digest;
use super::layers::{LayerSource, file_opener, unpack_all};
use super::prepare::PrepareOptions;
use super::registry::{Descriptor, Reference, Registry, RegistryOptions};
use super::store::{ImageRecord, Store};
use super::{Event, ImageError, Progress};
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
/// lacks (several at once, each verified while it streams), unpacks the layers in parallel,
/// and records the image under the reference's canonical name.
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
    // Blobs to download: layers not unpacked yet whose blob the store lacks.
    let mut wanted: Vec<Descriptor> = Vec::new();
    let mut blob_of: Vec<Digest> = Vec::new();
    let mut names: BTreeMap<String, Digest> = BTreeMap::new();
    for (desc, diff_id) in layers.iter().zip(&diff_ids) {
        let blob: Digest = desc
            .digest()
            .to_string()
            .parse()
            .map_err(|e: super::digest::DigestError| fail(e.to_string()))?;
        names.insert(blob.to_string(), diff_id.clone());
        if !store.has_layer(diff_id) && !store.has_blob(&blob) && !blob_of.contains(&blob) {
            wanted.push(desc.clone());
        }
        blob_of.push(blob);
    }
    download(store, registry, reference, &wanted, &names, progress)?;
    let sources: Vec<LayerSource> = layers
        .iter()
        .zip(&diff_ids)
        .zip(&blob_of)
        .map(|((desc, diff_id), blob)| LayerSource {
            diff_id: diff_id.clone(),
            placed: None,
            blob: Some(blob.clone()),
            size: desc.size(),
            keep_blob: false,
            open: file_opener(&store.blob_path(blob)),
        })
        .collect();
    let layer_records = unpack_all(store, &sources, &options.limits, options.jobs, progress)?;
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

/// Downloads `descs` into `blobs/` through temp files: the registry client verifies size
/// and digest while streaming; only then are the files renamed into place.
fn download(
    store: &Store,
    registry: &Registry,
    reference: &Reference,
    descs: &[Descriptor],
    names: &BTreeMap<String, Digest>,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    if descs.is_empty() {
        return Ok(());
    }
    let temps: Mutex<Vec<(Digest, PathBuf)>> = Mutex::new(Vec::new());
    let label = |desc: &Descriptor| -> Digest {
        names
            .get(&desc.digest().to_string())
            .cloned()
            .unwrap_or_else(|| Digest::of(desc.digest().to_string().as_bytes()))
    };
    let result = registry.fetch_blobs(
        reference,
        descs,
        |desc| {
            let blob: Digest = desc
                .digest()
                .to_string()
                .parse()
                .map_err(|e: super::digest::DigestError| io::Error::other(e.to_string()))?;
            let path = store.temp_path();
            let file = File::create(&path)?;
            if let Ok(mut t) = temps.lock() {
                t.push((blob, path));
            }
            progress.event(Event::Start {
                diff_id: &label(desc),
                size: desc.size(),
            });
            Ok(Box::new(io::BufWriter::with_capacity(256 * 1024, file)) as Box<dyn Write + Send>)
        },
        |desc, bytes| {
            progress.event(Event::Advance {
                diff_id: &label(desc),
                bytes,
            });
        },
    );
    let temps = temps.into_inner().unwrap_or_default();
    if let Err(e) = result {
        for (_, path) in &temps {
            let _ = fs::remove_file(path);
        }
        return Err(pull_err(reference)(error_chain(&e)));
    }
    for (blob, path) in temps {
        let dest = store.blob_path(&blob);
        fs::rename(&path, &dest).map_err(|e| ImageError::io("cannot rename into", &dest, e))?;
    }
    Ok(())
}
