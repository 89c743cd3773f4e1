//! Image references (`busybox`, `localhost:5000/x/y:1`, `reg.example/a:t@sha256:...`), parsed
//! with Docker's normalisation and the grammar of distribution/reference, strictly: the
//! parts end up in URLs, so nothing outside the grammar gets through.

use std::fmt;
use std::str::FromStr;

use crate::image::digest::Digest;

/// The registry of references without one (`busybox`, `user/app`).
pub const DOCKER_HUB: &str = "docker.io";

/// The tag of references without a tag or digest.
pub const DEFAULT_TAG: &str = "latest";

/// The longest repository name (registry included) distribution accepts.
const NAME_MAX: usize = 255;

/// The longest tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
const TAG_MAX: usize = 128;

/// A validated, normalised image reference: `registry/repository[:tag][@digest]`.
///
/// A reference has a tag, a digest, or both (then the digest decides what is pulled and the
/// tag is only a name). `Display` prints the canonical form, which parses back to the same
/// value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference `{input}`: {reason}")]
pub struct ReferenceError {
    /// The rejected text (truncated to 300 characters).
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Reference {
    /// The registry as written (`docker.io`, `localhost:5000`, `[::1]:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when neither a tag nor a digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What the registry is asked for: the digest when pinned, else the tag.
    pub fn manifest_name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            // Invariant of the parser: a reference has a tag or a digest.
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The same repository, pinned to `digest` (the tag is dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// The host part of the registry, without port or brackets (`localhost`, `::1`).
    pub fn host(&self) -> &str {
        host_of(&self.registry)
    }
}

/// The host of `registry` (`host`, `host:port`, `[v6]`, `[v6]:port`), without port and brackets.
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Reference, ReferenceError> {
        let fail = |reason: String| ReferenceError {
            input: input.chars().take(300).collect(),
            reason,
        };
        if input.is_empty() {
            return Err(fail("it is empty".into()));
        }
        if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail(format!("it contains {c:?}")));
        }
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => {
                let digest: Digest =
                    digest
                        .parse()
                        .map_err(|e: crate::image::digest::DigestError| {
                            fail(format!("bad digest: {}", e.reason))
                        })?;
                (name, Some(digest))
            }
            None => (input, None),
        };
        // The tag separator is a `:` after the last `/` (a `:` before it is a port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name[last_slash + i + 1..];
                check_tag(tag).map_err(fail)?;
                (&name[..last_slash + i], Some(tag.to_owned()))
            }
            None => (name, None),
        };
        if name.is_empty() {
            return Err(fail("the repository name is empty".into()));
        }
        let (registry, repository) = split_registry(name);
        check_registry(registry).map_err(fail)?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        check_repository(&repository).map_err(fail)?;
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(fail(format!(
                "the name is longer than {NAME_MAX} characters"
            )));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag,
        };
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }
}

/// Docker's rule: the first component is a registry when it has a `.` or a `:`, is
/// `localhost`, or has an uppercase letter (a repository never does); otherwise the
/// reference is on Docker Hub. `index.docker.io` is Docker Hub's old name.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':', '['])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            let registry = if first == "index.docker.io" {
                DOCKER_HUB
            } else {
                first
            };
            (registry, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

/// `host[:port]` with a DNS name, an IPv4 address or a bracketed IPv6 address.
fn check_registry(registry: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid registry `{registry}`: {why}"));
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad("unclosed `[`");
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("not an IPv6 address between `[` and `]`");
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad("expected `:port` after `]`"),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return bad("the host is empty");
        }
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return bad("host names are letters, digits and `-`, in labels separated by `.`");
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return bad("the port must be a number");
        }
        match port.parse::<u32>() {
            Ok(1..=65535) => {}
            _ => return bad("the port must be between 1 and 65535"),
        }
    }
    Ok(())
}

/// Path components of `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`, separated by `/`.
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository name `{repository}` must be lowercase"));
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err(format!(
                "repository name `{repository}` has an empty path component"
            ));
        }
        if !valid_component(component) {
            return Err(format!(
                "repository path component `{component}` must be lowercase letters and digits, \
                 separated by `.`, `_`, `__` or `-`"
            ));
        }
    }
    Ok(())
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(|&b| alnum(b)) || !bytes.last().is_some_and(|&b| alnum(b)) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or one or more `-`.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !tag.is_empty()
        && tag.len() <= TAG_MAX
        && tag.as_bytes().first().is_some_and(|&b| word(b))
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag `{}`: a tag is up to {TAG_MAX} letters, digits, `_`, `.` and `-`, \
             not starting with `.` or `-`",
            tag.chars().take(200).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_and_round_trips() {
        let d = format!("sha256:{HEX}");
        for (input, canonical, registry, repository, tag, digest) in [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "docker.io",
                "library/busybox",
                Some("latest"),
                false,
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
                false,
            ),
            (
                "user/app",
                "docker.io/user/app:latest",
                "docker.io",
                "user/app",
                Some("latest"),
                false,
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "docker.io",
                "library/busybox",
                Some("latest"),
                false,
            ),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
                "docker.io",
                "library/busybox",
                Some("1"),
                false,
            ),
            (
                "localhost/x",
                "localhost/x:latest",
                "localhost",
                "x",
                Some("latest"),
                false,
            ),
            (
                "localhost:5000/x/y:1",
                "localhost:5000/x/y:1",
                "localhost:5000",
                "x/y",
                Some("1"),
                false,
            ),
            (
                "127.0.0.1:5000/a@sha256:HEX",
                "127.0.0.1:5000/a@sha256:HEX",
                "127.0.0.1:5000",
                "a",
                None,
                true,
            ),
            (
                "reg.example/a:t@sha256:HEX",
                "reg.example/a:t@sha256:HEX",
                "reg.example",
                "a",
                Some("t"),
                true,
            ),
            (
                "[::1]:5000/a/b-c__d.e:v1.0_rc-2",
                "[::1]:5000/a/b-c__d.e:v1.0_rc-2",
                "[::1]:5000",
                "a/b-c__d.e",
                Some("v1.0_rc-2"),
                false,
            ),
            (
                "Registry/x",
                "Registry/x:latest",
                "Registry",
                "x",
                Some("latest"),
                false,
            ),
            (
                "a--b/c",
                "docker.io/a--b/c:latest",
                "docker.io",
                "a--b/c",
                Some("latest"),
                false,
            ),
            (
                "busybox@sha256:HEX",
                "docker.io/library/busybox@sha256:HEX",
                "docker.io",
                "library/busybox",
                None,
                true,
            ),
        ] {
            let input = input.replace("HEX", HEX);
            let canonical = canonical.replace("HEX", HEX);
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), canonical, "{input}");
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repository, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(
                r.digest().map(ToString::to_string),
                digest.then(|| d.clone()),
                "{input}"
            );
            assert_eq!(
                canonical.parse::<Reference>().unwrap(),
                r,
                "{input} round trip"
            );
        }
    }

    #[test]
    fn rejects_what_the_grammar_does_not_allow() {
        for (input, reason) in [
            ("", "it is empty"),
            ("busy box", "it contains ' '"),
            (
                "Busybox",
                "repository name `library/Busybox` must be lowercase",
            ),
            (
                "localhost:5000/Test/x",
                "repository name `Test/x` must be lowercase",
            ),
            (
                "busybox:",
                "invalid tag ``: a tag is up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
            ),
            (
                "busybox:-x",
                "invalid tag `-x`: a tag is up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
            ),
            (
                "busybox:a/b",
                "invalid registry `busybox:a`: the port must be a number",
            ),
            (
                "busybox@sha256:../../x",
                "bad digest: a sha256 digest has exactly 64 hex digits",
            ),
            (
                "busybox@sha512:abc",
                "bad digest: only sha256 digests are supported",
            ),
            ("busybox@", "bad digest: expected `sha256:<64 hex digits>`"),
            (":tag", "the repository name is empty"),
            ("@sha256:HEX", "the repository name is empty"),
            ("a//b", "repository name `a//b` has an empty path component"),
            (
                "localhost:5000/",
                "repository name `` has an empty path component",
            ),
            (
                "x/../y",
                "repository path component `..` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`",
            ),
            (
                "a_-b",
                "repository path component `a_-b` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`",
            ),
            (
                "a___b",
                "repository path component `a___b` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`",
            ),
            (
                "-a",
                "repository path component `-a` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`",
            ),
            (
                "reg.example:0/a",
                "invalid registry `reg.example:0`: the port must be between 1 and 65535",
            ),
            (
                "reg.example:http/a",
                "invalid registry `reg.example:http`: the port must be a number",
            ),
            (
                "reg_x.example/a",
                "invalid registry `reg_x.example`: host names are letters, digits and `-`, in labels separated by `.`",
            ),
            (
                "-reg.example/a",
                "invalid registry `-reg.example`: host names are letters, digits and `-`, in labels separated by `.`",
            ),
            ("[::1/a", "invalid registry `[::1`: unclosed `[`"),
            (
                "[zz]:5000/a",
                "invalid registry `[zz]:5000`: not an IPv6 address between `[` and `]`",
            ),
        ] {
            let input = input.replace("HEX", HEX);
            let err = input.parse::<Reference>().unwrap_err();
            assert_eq!(err.reason, reason, "{input}");
            assert_eq!(
                err.to_string(),
                format!("invalid image reference `{input}`: {reason}")
            );
        }
        let long = format!("reg.example/{}", "a".repeat(300));
        assert_eq!(
            long.parse::<Reference>().unwrap_err().reason,
            "the name is longer than 255 characters"
        );
        let long_tag = format!("busybox:{}", "t".repeat(129));
        assert!(
            long_tag
                .parse::<Reference>()
                .unwrap_err()
                .reason
                .starts_with("invalid tag")
        );
    }

    #[test]
    fn hosts_and_manifest_names() {
        let r: Reference = "[::1]:5000/a:t".parse().unwrap();
        assert_eq!(r.host(), "::1");
        assert_eq!(r.manifest_name(), "t");
        let r: Reference = format!("localhost:5000/a:t@sha256:{HEX}").parse().unwrap();
        assert_eq!(r.host(), "localhost");
        assert_eq!(r.manifest_name(), format!("sha256:{HEX}"));
        let pinned = r.with_digest(Digest::of(b"x"));
        assert_eq!(pinned.tag(), None);
        assert_eq!(
            pinned.to_string(),
            format!("localhost:5000/a@{}", Digest::of(b"x"))
        );
    }
}
