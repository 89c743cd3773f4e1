//! Registry credentials: from the environment, then from Docker- and Podman-style
//! `config.json` / `auth.json` files (`auths.<host>`), else anonymous.
//!
//! oci-client does the HTTP side (the `WWW-Authenticate` challenge, the bearer token
//! exchange with these credentials, or plain basic auth); it reads no file, so this module
//! does. Credential helpers (`credsStore`, `credHelpers`) are not run: an entry that only
//! names a helper is reported, not used.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The environment variable with the user name (with [`ENV_PASSWORD`]).
pub const ENV_USER: &str = "RCOMPOSE_REGISTRY_USER";
/// The environment variable with the password (with [`ENV_USER`]).
pub const ENV_PASSWORD: &str = "RCOMPOSE_REGISTRY_PASSWORD";
/// The environment variable with a bearer token (sent as is).
pub const ENV_TOKEN: &str = "RCOMPOSE_REGISTRY_TOKEN";

/// The largest credentials file read.
const AUTH_FILE_MAX: u64 = 1024 * 1024;

/// What is sent to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing (an anonymous bearer token is still fetched when the registry asks for one).
    Anonymous,
    /// A user name and password: basic auth, or exchanged for a bearer token.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A bearer token, sent as is: never exchanged at the registry's token service nor
    /// renewed, so it must be an access token the registry accepts for the repository.
    Bearer(String),
}

// Never print secrets.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: \"***\" }}")
            }
            Credentials::Bearer(_) => f.write_str("Bearer(\"***\")"),
        }
    }
}

/// Where credentials came from (named in "unauthorized" errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// None were found.
    None {
        /// The auth files searched.
        searched: Vec<PathBuf>,
        /// Entries that were found but could not be used (a credential helper, an
        /// `identitytoken`), with their file.
        unusable: Vec<String>,
    },
    /// `RCOMPOSE_REGISTRY_USER` and `RCOMPOSE_REGISTRY_PASSWORD`.
    EnvBasic,
    /// `RCOMPOSE_REGISTRY_TOKEN`.
    EnvToken,
    /// An `auths` entry of a credentials file.
    File {
        /// The file.
        path: PathBuf,
        /// The key of the entry.
        key: String,
    },
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::None { searched, unusable } => {
                write!(
                    f,
                    "none (neither {ENV_USER}/{ENV_PASSWORD} nor {ENV_TOKEN} is set, and no \
                     usable entry for the registry in "
                )?;
                if searched.is_empty() {
                    f.write_str("any auth file")?;
                } else {
                    let files: Vec<String> = searched
                        .iter()
                        .map(|p| format!("`{}`", p.display()))
                        .collect();
                    f.write_str(&files.join(", "))?;
                }
                for why in unusable {
                    write!(f, "; not usable: {why}")?;
                }
                f.write_str(")")
            }
            CredentialSource::EnvBasic => write!(f, "{ENV_USER}/{ENV_PASSWORD}"),
            CredentialSource::EnvToken => write!(f, "{ENV_TOKEN}"),
            CredentialSource::File { path, key } => {
                write!(f, "`auths.\"{key}\"` of `{}`", path.display())
            }
        }
    }
}

/// Looks up the credentials for `registry` (`host[:port]`, as in a [`super::Reference`]):
/// `env` first, then the `auths` of each file of `files` in order (the first that has an
/// entry for the registry wins).
pub(crate) fn lookup(
    registry: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
    files: &[PathBuf],
) -> (Credentials, CredentialSource) {
    let var = |name: &str| {
        env(name)
            .and_then(|v| v.into_string().ok())
            .filter(|v| !v.is_empty())
    };
    if let (Some(username), Some(password)) = (var(ENV_USER), var(ENV_PASSWORD)) {
        return (
            Credentials::Basic { username, password },
            CredentialSource::EnvBasic,
        );
    }
    if let Some(token) = var(ENV_TOKEN) {
        return (Credentials::Bearer(token), CredentialSource::EnvToken);
    }
    let mut unusable = Vec::new();
    for path in files {
        let Some(text) = read_small(path) else {
            continue;
        };
        match from_config_json(&text, registry) {
            Lookup::Found(credentials, key) => {
                return (
                    credentials,
                    CredentialSource::File {
                        path: path.clone(),
                        key,
                    },
                );
            }
            Lookup::Unusable(why) => unusable.push(format!("{why} in `{}`", path.display())),
            Lookup::Missing => {}
        }
    }
    (
        Credentials::Anonymous,
        CredentialSource::None {
            searched: files.to_vec(),
            unusable,
        },
    )
}

/// The credentials files searched, in order: `explicit`, `$DOCKER_CONFIG/config.json`,
/// `$HOME/.docker/config.json`, `$XDG_RUNTIME_DIR/containers/auth.json`.
pub(crate) fn default_files(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = explicit.map(Path::to_path_buf).into_iter().collect();
    let dir = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = dir("DOCKER_CONFIG") {
        files.push(d.join("config.json"));
    }
    if let Some(home) = dir("HOME") {
        files.push(home.join(".docker/config.json"));
    }
    if let Some(run) = dir("XDG_RUNTIME_DIR") {
        files.push(run.join("containers/auth.json"));
    }
    files
}

fn read_small(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(AUTH_FILE_MAX).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The result of looking a registry up in one credentials file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// An entry with a user and password or a registry token, and its key.
    Found(Credentials, String),
    /// An entry (or a helper) that cannot be used, and why.
    Unusable(String),
    /// Nothing for this registry (or the file is not JSON).
    Missing,
}

/// Finds `registry` in the `auths` of a Docker `config.json` or containers `auth.json`.
///
/// Keys match when, without an `http://` or `https://` scheme and a path after a scheme
/// (`https://index.docker.io/v1/`), they equal the registry; Docker Hub is also found under
/// `index.docker.io` and `registry-1.docker.io`. Keys with a repository path but no scheme
/// (containers-auth.json's per-repository entries) are not used. An entry gives
/// credentials through `auth` (base64 `user:password`), `username` + `password`, or
/// `registrytoken` (a bearer token). An `identitytoken` is an OAuth2 refresh token that
/// oci-client cannot exchange: reported as unusable.
pub(crate) fn from_config_json(text: &str, registry: &str) -> Lookup {
    let Ok(config) = serde_json::from_str::<serde_json::Value>(text) else {
        return Lookup::Missing;
    };
    let hub = registry == super::reference::DOCKER_HUB;
    let matches = |key: &str| {
        let host = match key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
        {
            Some(rest) => rest.split('/').next().unwrap_or(rest),
            None => key.strip_suffix('/').unwrap_or(key),
        };
        host == registry || (hub && matches!(host, "index.docker.io" | "registry-1.docker.io"))
    };
    let mut unusable = None;
    if let Some(auths) = config.get("auths").and_then(|a| a.as_object()) {
        // Exact keys first, so `reg:5000` wins over `https://reg:5000/v1/`.
        let mut keys: Vec<&String> = auths.keys().filter(|k| matches(k)).collect();
        keys.sort_by_key(|k| (k.as_str() != registry, k.as_str()));
        for key in keys {
            let entry = &auths[key.as_str()];
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(|v| v.as_str())
                    .filter(|v| !v.is_empty())
            };
            if let Some(encoded) = field("auth") {
                match decode_auth(encoded) {
                    Some((username, password)) => {
                        return Lookup::Found(
                            Credentials::Basic { username, password },
                            key.clone(),
                        );
                    }
                    None => {
                        unusable = Some(format!(
                            "`auths.\"{key}\".auth` is not base64 of `user:password`"
                        ));
                        continue;
                    }
                }
            }
            if let (Some(username), Some(password)) = (field("username"), field("password")) {
                return Lookup::Found(
                    Credentials::Basic {
                        username: username.to_owned(),
                        password: password.to_owned(),
                    },
                    key.clone(),
                );
            }
            if let Some(token) = field("registrytoken") {
                return Lookup::Found(Credentials::Bearer(token.to_owned()), key.clone());
            }
            if field("identitytoken").is_some() {
                unusable = Some(format!(
                    "`auths.\"{key}\".identitytoken` (an OAuth2 refresh token)"
                ));
            }
        }
    }
    if unusable.is_none() {
        let helper = config
            .get("credHelpers")
            .and_then(|h| h.as_object())
            .and_then(|h| h.iter().find(|(k, _)| matches(k)))
            .and_then(|(_, v)| v.as_str())
            .or_else(|| config.get("credsStore").and_then(|v| v.as_str()));
        if let Some(helper) = helper {
            unusable = Some(format!(
                "credential helper `docker-credential-{helper}` (helpers are not run)"
            ));
        }
    }
    unusable.map_or(Lookup::Missing, Lookup::Unusable)
}

fn decode_auth(encoded: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_owned(), password.trim_end_matches('\n').to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn reads_docker_and_containers_auth_files() {
        // "alice:s3cret:with:colons" in base64
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        let text = format!(
            r#"{{
              "auths": {{
                "127.0.0.1:5000": {{ "auth": "{auth}" }},
                "https://index.docker.io/v1/": {{ "auth": "{auth}" }},
                "reg.example": {{ "username": "bob", "password": "pw" }},
                "http://plain.example:8080/": {{ "auth": "{auth}" }},
                "tok.example": {{ "registrytoken": "abc" }},
                "id.example": {{ "identitytoken": "refresh" }},
                "bad.example": {{ "auth": "not base64!" }},
                "quay.io/team/app": {{ "auth": "{auth}" }}
              }},
              "credHelpers": {{ "helped.example": "pass" }}
            }}"#
        );
        let alice = basic("alice", "s3cret:with:colons");
        for (registry, expected) in [
            (
                "127.0.0.1:5000",
                Lookup::Found(alice.clone(), "127.0.0.1:5000".into()),
            ),
            (
                "docker.io",
                Lookup::Found(alice.clone(), "https://index.docker.io/v1/".into()),
            ),
            (
                "reg.example",
                Lookup::Found(basic("bob", "pw"), "reg.example".into()),
            ),
            (
                "plain.example:8080",
                Lookup::Found(alice.clone(), "http://plain.example:8080/".into()),
            ),
            (
                "tok.example",
                Lookup::Found(Credentials::Bearer("abc".into()), "tok.example".into()),
            ),
            (
                "id.example",
                Lookup::Unusable(
                    "`auths.\"id.example\".identitytoken` (an OAuth2 refresh token)".into(),
                ),
            ),
            (
                "bad.example",
                Lookup::Unusable(
                    "`auths.\"bad.example\".auth` is not base64 of `user:password`".into(),
                ),
            ),
            (
                "helped.example",
                Lookup::Unusable(
                    "credential helper `docker-credential-pass` (helpers are not run)".into(),
                ),
            ),
            ("quay.io", Lookup::Missing),
            ("127.0.0.1:5001", Lookup::Missing),
            ("127.0.0.1", Lookup::Missing),
        ] {
            assert_eq!(from_config_json(&text, registry), expected, "{registry}");
        }
        assert_eq!(from_config_json("not json", "x"), Lookup::Missing);
        assert_eq!(from_config_json("{}", "x"), Lookup::Missing);
        assert_eq!(
            from_config_json(r#"{"credsStore": "desktop"}"#, "x"),
            Lookup::Unusable(
                "credential helper `docker-credential-desktop` (helpers are not run)".into()
            )
        );
    }

    #[test]
    fn env_first_then_files_in_order() {
        let dir = std::env::temp_dir().join(format!("rcompose-auth-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = dir.join("first.json");
        let second = dir.join("second.json");
        std::fs::write(
            &first,
            r#"{"auths":{"other:1":{"username":"x","password":"y"}}}"#,
        )
        .unwrap();
        std::fs::write(
            &second,
            r#"{"auths":{"reg:1":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let files = vec![dir.join("missing.json"), first.clone(), second.clone()];

        let no_env = |_: &str| None;
        assert_eq!(
            lookup("reg:1", &no_env, &files),
            (
                basic("u", "p"),
                CredentialSource::File {
                    path: second.clone(),
                    key: "reg:1".into()
                }
            )
        );
        let env = |name: &str| match name {
            ENV_USER => Some("envuser".into()),
            ENV_PASSWORD => Some("envpw".into()),
            _ => None,
        };
        assert_eq!(
            lookup("reg:1", &env, &files),
            (basic("envuser", "envpw"), CredentialSource::EnvBasic)
        );
        let token = |name: &str| (name == ENV_TOKEN).then(|| "t0k".into());
        assert_eq!(
            lookup("reg:1", &token, &files),
            (
                Credentials::Bearer("t0k".into()),
                CredentialSource::EnvToken
            )
        );
        let (credentials, source) = lookup("nowhere:1", &no_env, &files);
        assert_eq!(credentials, Credentials::Anonymous);
        assert_eq!(
            source.to_string(),
            format!(
                "none (neither RCOMPOSE_REGISTRY_USER/RCOMPOSE_REGISTRY_PASSWORD nor \
                 RCOMPOSE_REGISTRY_TOKEN is set, and no usable entry for the registry in `{}`, \
                 `{}`, `{}`)",
                files[0].display(),
                first.display(),
                second.display()
            )
        );
        std::fs::write(&first, r#"{"auths":{"nowhere:1":{"identitytoken":"r"}}}"#).unwrap();
        let (_, source) = lookup("nowhere:1", &no_env, &files[1..2]);
        assert_eq!(
            source.to_string(),
            format!(
                "none (neither RCOMPOSE_REGISTRY_USER/RCOMPOSE_REGISTRY_PASSWORD nor \
                 RCOMPOSE_REGISTRY_TOKEN is set, and no usable entry for the registry in `{0}`; \
                 not usable: `auths.\"nowhere:1\".identitytoken` (an OAuth2 refresh token) in \
                 `{0}`)",
                first.display()
            )
        );
        assert_eq!(
            CredentialSource::File {
                path: first.clone(),
                key: "k".into()
            }
            .to_string(),
            format!("`auths.\"k\"` of `{}`", first.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let env = |name: &str| match name {
            "DOCKER_CONFIG" => Some("/d".into()),
            "HOME" => Some("/root".into()),
            "XDG_RUNTIME_DIR" => Some("/run/user/0".into()),
            _ => None,
        };
        assert_eq!(
            default_files(Some(Path::new("/x.json")), &env),
            [
                "/x.json",
                "/d/config.json",
                "/root/.docker/config.json",
                "/run/user/0/containers/auth.json"
            ]
            .map(PathBuf::from)
        );
        assert!(default_files(None, &|_: &str| None).is_empty());
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!(
            "{:?} {:?}",
            basic("u", "hunter2"),
            Credentials::Bearer("tok".into())
        );
        assert!(
            !text.contains("hunter2") && !text.contains("tok\""),
            "{text}"
        );
    }
}
