//! Manifests and indexes as they come from a registry: hostile JSON (layer-attacks.md
//! section 2). Pure: bytes in, typed documents or a reason out.
//!
//! - The bytes parsed are the bytes hashed (the caller hashes them; 2.2).
//! - The media type is required, from the document, else from the descriptor that pointed
//!   to it, else from the response's `Content-Type`, and the document must not carry the
//!   fields of the other kind (a manifest with `manifests`, an index with `layers`: 2.3).
//!   A document whose `mediaType` differs from its descriptor's is refused.
//! - Duplicate keys among the fields read are refused (serde's derive does that).
//! - Docker's v2 schema 2 types are mapped to the OCI ones, so the caller sees one format
//!   (other layer types, zstd say, pass through for the store to accept or refuse).

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign (non-distributable) gzip layer.
const DOCKER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The `Accept` header of manifest requests: the four types above.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// A parsed manifest or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// An image manifest (media types mapped to OCI), and its original media type.
    Manifest(Box<ImageManifest>, &'static str),
    /// An index or manifest list, and its original media type.
    Index(Box<ImageIndex>, &'static str),
}

/// The fields checked before the full parse.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
    manifests: Option<IgnoredAny>,
}

fn known(media_type: &str) -> Option<&'static str> {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]
        .into_iter()
        .find(|&m| m == media_type)
}

/// Parses `bytes`, fetched for a descriptor of type `expected` (an index entry) or by tag
/// (`None`), served with `content_type`.
pub fn parse(
    bytes: &[u8],
    expected: Option<&str>,
    content_type: Option<&str>,
) -> Result<Document, String> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| format!("not a manifest or index: {e}"))?;
    match probe.schema_version {
        Some(2) => {}
        Some(1) => return Err("Docker image manifests of schema 1 are not supported".into()),
        Some(v) => return Err(format!("unsupported schemaVersion {v}")),
        None => return Err("it has no schemaVersion".into()),
    }
    // `Content-Type` may carry parameters (`; charset=utf-8`).
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .and_then(known);
    let media_type = match (&probe.media_type, expected) {
        (Some(own), Some(expected)) if own != expected => {
            return Err(format!(
                "its mediaType `{own}` is not the `{expected}` of the descriptor that points to it"
            ));
        }
        (Some(own), _) => own.as_str(),
        (None, Some(expected)) => expected,
        (None, None) => content_type
            .ok_or("it has no mediaType, and the registry sent no manifest Content-Type either")?,
    };
    let Some(media_type) = known(media_type) else {
        return Err(format!("unsupported media type `{media_type}`"));
    };
    if matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST) {
        if probe.manifests.is_some() {
            return Err(format!(
                "a `{media_type}` with `manifests` (the field of an index) is ambiguous"
            ));
        }
        if probe.config.is_none() || probe.layers.is_none() {
            return Err("an image manifest needs `config` and `layers`".into());
        }
        let mut manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid image manifest: {e}"))?;
        to_oci(&mut manifest);
        Ok(Document::Manifest(Box::new(manifest), media_type))
    } else {
        if probe.layers.is_some() || probe.config.is_some() {
            return Err(format!(
                "a `{media_type}` with `layers` or `config` (the fields of a manifest) is ambiguous"
            ));
        }
        if probe.manifests.is_none() {
            return Err("an index needs `manifests`".into());
        }
        let index: ImageIndex =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid image index: {e}"))?;
        Ok(Document::Index(Box::new(index), media_type))
    }
}

/// Docker v2 schema 2 media types to their OCI equivalents (same JSON shapes), in Docker
/// manifests and in OCI manifests that borrowed them.
fn to_oci(manifest: &mut ImageManifest) {
    manifest.set_media_type(Some(MediaType::ImageManifest));
    let mut config = manifest.config().clone();
    if config.media_type().to_string() == DOCKER_CONFIG {
        config.set_media_type(MediaType::ImageConfig);
    }
    manifest.set_config(config);
    for layer in manifest.layers_mut() {
        let mapped = match layer.media_type().to_string().as_str() {
            DOCKER_LAYER_GZIP => Some(MediaType::ImageLayerGzip),
            DOCKER_FOREIGN_GZIP => Some(MediaType::ImageLayerNonDistributableGzip),
            _ => None,
        };
        if let Some(mapped) = mapped {
            layer.set_media_type(mapped);
        }
    }
}

/// `os/arch[/variant]` of an index entry (`unknown` for missing parts).
pub fn platform_name(entry: &Descriptor) -> String {
    match entry.platform() {
        Some(p) => {
            let mut name = format!("{}/{}", p.os(), p.architecture());
            if let Some(variant) = p.variant() {
                name.push('/');
                name.push_str(variant);
            }
            name
        }
        None => "unknown".into(),
    }
}

/// The first image-manifest entry of `index` for `os`/`arch`, else the platforms offered.
pub fn select<'a>(
    index: &'a ImageIndex,
    (os, arch): (&str, &str),
) -> Result<&'a Descriptor, Vec<String>> {
    let is_manifest = |d: &Descriptor| {
        matches!(
            d.media_type().to_string().as_str(),
            OCI_MANIFEST | DOCKER_MANIFEST
        )
    };
    index
        .manifests()
        .iter()
        .filter(|d| is_manifest(d))
        .find(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| p.os().to_string() == os && p.architecture().to_string() == arch)
        })
        .ok_or_else(|| {
            index
                .manifests()
                .iter()
                .filter(|d| is_manifest(d))
                .map(platform_name)
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn docker_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"{DOCKER_CONFIG}","size":10,"digest":"{D1}"}},
               "layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","size":20,"digest":"{D2}"}}]}}"#
        )
    }

    #[test]
    fn maps_docker_schema2_to_oci() {
        let Document::Manifest(m, original) =
            parse(docker_manifest().as_bytes(), None, None).unwrap()
        else {
            panic!("not a manifest")
        };
        assert_eq!(original, DOCKER_MANIFEST);
        assert_eq!(m.media_type(), &Some(MediaType::ImageManifest));
        assert_eq!(m.config().media_type(), &MediaType::ImageConfig);
        assert_eq!(m.layers()[0].media_type(), &MediaType::ImageLayerGzip);
        assert_eq!(m.layers()[0].size(), 20);
    }

    #[test]
    fn media_type_from_descriptor_or_content_type() {
        let bare = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","size":2,"digest":"{D1}"}},"layers":[]}}"#
        );
        assert!(matches!(
            parse(bare.as_bytes(), Some(OCI_MANIFEST), None),
            Ok(Document::Manifest(_, OCI_MANIFEST))
        ));
        assert!(matches!(
            parse(
                bare.as_bytes(),
                None,
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
            ),
            Ok(Document::Manifest(_, OCI_MANIFEST))
        ));
        assert_eq!(
            parse(bare.as_bytes(), None, Some("application/json")).unwrap_err(),
            "it has no mediaType, and the registry sent no manifest Content-Type either"
        );
    }

    #[test]
    fn refuses_ambiguous_and_unsupported_documents() {
        for (json, expected, reason) in [
            ("[]".to_owned(), None, "not a JSON object"),
            (
                r#"{"schemaVersion":"2"}"#.to_owned(),
                None,
                "not a manifest or index: invalid type: string \"2\", expected u32 at line 1 column 20",
            ),
            (
                r#"{"schemaVersion":1}"#.to_owned(),
                None,
                "Docker image manifests of schema 1 are not supported",
            ),
            (
                r#"{"mediaType":"x"}"#.to_owned(),
                None,
                "it has no schemaVersion",
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/x"}"#.to_owned(),
                None,
                "unsupported media type `application/x`",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{}},"layers":[],"manifests":[]}}"#
                ),
                None,
                "a `application/vnd.oci.image.manifest.v1+json` with `manifests` (the field of an index) is ambiguous",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","layers":[],"manifests":[]}}"#
                ),
                None,
                "a `application/vnd.oci.image.index.v1+json` with `layers` or `config` (the fields of a manifest) is ambiguous",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#),
                Some(OCI_MANIFEST),
                "its mediaType `application/vnd.oci.image.index.v1+json` is not the `application/vnd.oci.image.manifest.v1+json` of the descriptor that points to it",
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","mediaType":"{OCI_MANIFEST}","manifests":[]}}"#
                ),
                None,
                "not a manifest or index: duplicate field `mediaType` at line 1 column 84",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
                None,
                "an image manifest needs `config` and `layers`",
            ),
        ] {
            assert_eq!(
                parse(json.as_bytes(), expected, None).unwrap_err(),
                reason,
                "{json}"
            );
        }
    }

    #[test]
    fn selects_the_platform_or_lists_the_offered_ones() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
              {{"mediaType":"{DOCKER_MANIFEST}","size":1,"digest":"{D1}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","size":1,"digest":"{D2}","platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let Ok(Document::Index(index, DOCKER_LIST)) = parse(index.as_bytes(), None, None) else {
            panic!("not an index")
        };
        assert_eq!(
            select(&index, ("linux", "amd64"))
                .unwrap()
                .digest()
                .to_string(),
            D2
        );
        assert_eq!(
            select(&index, ("linux", "riscv64")).unwrap_err(),
            ["linux/arm64/v8", "linux/amd64"]
        );
    }
}
