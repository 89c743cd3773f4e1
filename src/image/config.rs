//! Image configs: reading the parts of an OCI/Docker config rcompose honours, writing the
//! config of an image made from a plain rootfs tar, and combining an image's process
//! settings with a container's as Docker does.

use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;

use super::digest::Digest;
use super::store::ImageConfig;

/// Largest manifest, index or config accepted (layer-attacks.md 1.9: never read a
/// metadata document whole without a bound).
pub const MAX_METADATA: u64 = 4 * 1024 * 1024;

/// A config that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image config: {0}")]
pub struct ConfigError(pub String);

/// Reads an image config: what rcompose honours, and the layers' diff-ids, bottom first.
pub fn parse(bytes: &[u8]) -> Result<(ImageConfig, Vec<Digest>), ConfigError> {
    let config: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| ConfigError(e.to_string()))?;
    if config.rootfs().typ() != "layers" {
        return Err(ConfigError(format!(
            "rootfs type `{}` (expected `layers`)",
            config.rootfs().typ()
        )));
    }
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse::<Digest>().map_err(|e| ConfigError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = ImageConfig {
        platform: Some(format!("{}/{}", config.os(), config.architecture())),
        created: config.created().clone(),
        ..ImageConfig::default()
    };
    if let Some(c) = config.config() {
        out.entrypoint = c.entrypoint().clone().unwrap_or_default();
        out.cmd = c.cmd().clone().unwrap_or_default();
        out.env = c.env().clone().unwrap_or_default();
        out.working_dir = c.working_dir().clone().filter(|w| !w.is_empty());
        out.user = c.user().clone().filter(|u| !u.is_empty());
        let mut ports = c.exposed_ports().clone().unwrap_or_default();
        ports.sort();
        out.exposed_ports = ports;
    }
    if let Some(dir) = &out.working_dir
        && !dir.starts_with('/')
    {
        return Err(ConfigError(format!(
            "WorkingDir `{dir}` is not an absolute path"
        )));
    }
    Ok((out, diff_ids))
}

/// The config of an image made of one plain rootfs tar (no Cmd: the manifest names one).
#[must_use]
pub fn for_rootfs(diff_id: &Digest) -> Vec<u8> {
    let json = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
    });
    json.to_string().into_bytes()
}

/// A container's process settings from the manifest; `None` means "not set".
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides<'a> {
    /// `entrypoint`.
    pub entrypoint: Option<&'a [String]>,
    /// `command`.
    pub command: Option<&'a [String]>,
    /// `env`.
    pub env: Option<&'a BTreeMap<String, String>>,
    /// `working_dir`.
    pub working_dir: Option<&'a str>,
    /// `user`.
    pub user: Option<&'a str>,
}

/// The process a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// argv; never empty.
    pub argv: Vec<String>,
    /// Environment, image first, then the manifest's.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User to run as, as written (resolved inside the container).
    pub user: Option<String>,
}

/// Combines the image config and the manifest as Docker does: an `entrypoint` replaces the
/// image's Entrypoint and drops its Cmd; a `command` replaces Cmd; the argv is Entrypoint
/// followed by Cmd. Image Env comes first and the manifest's env overrides it; the
/// manifest's working_dir and user win over WorkingDir and User. `None` when the result has
/// no argv.
#[must_use]
pub fn process(image: &ImageConfig, over: &Overrides<'_>) -> Option<Process> {
    let entrypoint = over.entrypoint.map_or(image.entrypoint.as_slice(), |e| e);
    let cmd: &[String] = match (over.command, over.entrypoint) {
        (Some(c), _) => c,
        (None, Some(_)) => &[],
        (None, None) => &image.cmd,
    };
    let argv: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if argv.is_empty() {
        return None;
    }
    let mut env = BTreeMap::new();
    for pair in &image.env {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !k.is_empty() {
            env.insert(k.to_string(), v.to_string());
        }
    }
    if let Some(extra) = over.env {
        env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Some(Process {
        argv,
        env,
        working_dir: over
            .working_dir
            .map(str::to_string)
            .or_else(|| image.working_dir.clone()),
        user: over.user.map(str::to_string).or_else(|| image.user.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    const DOCKER_CONFIG: &str = r#"{
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "docker_version": "24.0", "container_config": {"Hostname": "x"},
        "config": {
            "Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"],
            "Env": ["PATH=/usr/bin:/bin", "NGINX_VERSION=1.25", "EMPTY="],
            "WorkingDir": "/srv", "User": "101:101",
            "ExposedPorts": {"80/tcp": {}, "443/tcp": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": [
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}
    }"#;

    #[test]
    fn reads_a_docker_config() {
        let (config, diff_ids) = parse(DOCKER_CONFIG.as_bytes()).unwrap();
        assert_eq!(config.entrypoint, v(&["/docker-entrypoint.sh"]));
        assert_eq!(config.cmd, v(&["nginx", "-g", "daemon off;"]));
        assert_eq!(config.working_dir.as_deref(), Some("/srv"));
        assert_eq!(config.user.as_deref(), Some("101:101"));
        assert_eq!(config.exposed_ports, v(&["443/tcp", "80/tcp"]));
        assert_eq!(config.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(diff_ids, vec![Digest::of(b"")]);
    }

    #[test]
    fn refuses_hostile_digests_and_relative_working_dirs() {
        let bad_digest = DOCKER_CONFIG.replace(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../x",
        );
        assert!(
            parse(bad_digest.as_bytes())
                .unwrap_err()
                .0
                .contains("../../x")
        );
        let relative = DOCKER_CONFIG.replace("\"/srv\"", "\"srv\"");
        assert!(
            parse(relative.as_bytes())
                .unwrap_err()
                .0
                .contains("WorkingDir")
        );
        assert!(parse(b"{").is_err());
    }

    #[test]
    fn a_rootfs_config_reads_back() {
        let d = Digest::of(b"x");
        let (config, diff_ids) = parse(&for_rootfs(&d)).unwrap();
        assert_eq!(diff_ids, vec![d]);
        assert!(config.cmd.is_empty() && config.entrypoint.is_empty());
    }

    #[test]
    fn process_follows_dockers_rules() {
        let (image, _) = parse(DOCKER_CONFIG.as_bytes()).unwrap();
        let none = process(&image, &Overrides::default()).unwrap();
        assert_eq!(
            none.argv,
            v(&["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"])
        );
        assert_eq!(none.env["NGINX_VERSION"], "1.25");
        assert_eq!(none.env["EMPTY"], "");
        let cmd = v(&["nginx", "-t"]);
        let with_cmd = process(
            &image,
            &Overrides {
                command: Some(&cmd),
                ..Overrides::default()
            },
        );
        assert_eq!(
            with_cmd.unwrap().argv,
            v(&["/docker-entrypoint.sh", "nginx", "-t"])
        );
        let ep = v(&["/bin/sh"]);
        let with_ep = process(
            &image,
            &Overrides {
                entrypoint: Some(&ep),
                ..Overrides::default()
            },
        );
        assert_eq!(with_ep.unwrap().argv, v(&["/bin/sh"]));
        let env = BTreeMap::from([("NGINX_VERSION".to_string(), "2".to_string())]);
        let over = Overrides {
            env: Some(&env),
            working_dir: Some("/app"),
            user: Some("0"),
            ..Overrides::default()
        };
        let p = process(&image, &over).unwrap();
        assert_eq!(p.env["NGINX_VERSION"], "2");
        assert_eq!(p.env["PATH"], "/usr/bin:/bin");
        assert_eq!(p.working_dir.as_deref(), Some("/app"));
        assert_eq!(p.user.as_deref(), Some("0"));
        let empty = v(&[]);
        let cleared = Overrides {
            entrypoint: Some(&empty),
            ..Overrides::default()
        };
        assert!(process(&image, &cleared).is_none());
    }
}
