//! Image references (`alpine`, `user/app:1`, `127.0.0.1:5000/x@sha256:…`), normalised by
//! Docker's rules as `github.com/distribution/reference` implements them: the first path
//! component is a registry only if it contains `.` or `:`, is `localhost`, or has upper-case
//! letters; otherwise the image lives on Docker Hub, under `library/` when it has no namespace.

use crate::Error;
use kiln_oci::Digest;
use std::fmt;
use std::str::FromStr;

/// Docker Hub's name in references.
const DOCKER_HUB: &str = "docker.io";
/// The old name of Docker Hub, rewritten to [`DOCKER_HUB`].
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// Where Docker Hub's registry API is served.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The namespace of Docker Hub's official images.
const OFFICIAL_PREFIX: &str = "library/";
/// The tag a reference without tag or digest points at.
const DEFAULT_TAG: &str = "latest";
/// The longest repository name (registry included) distribution accepts.
const NAME_MAX: usize = 255;

/// A normalised image reference, by Docker's rules: `alpine` is
/// `docker.io/library/alpine:latest`, `user/app` is `docker.io/user/app:latest`,
/// `localhost:5000/x` and `127.0.0.1:5055/busybox:1.35` name their registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The registry as written in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository inside the registry (`library/alpine`).
    pub repository: String,
    /// The tag; `latest` when the reference had neither tag nor digest.
    pub tag: Option<String>,
    /// The manifest digest, when the reference pins one.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Docker's short form: `alpine:latest`, `user/app:1`, `127.0.0.1:5000/x:1`.
    pub fn familiar(&self) -> String {
        let name = match self.registry.as_str() {
            DOCKER_HUB => match self.repository.strip_prefix(OFFICIAL_PREFIX) {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            },
            registry => format!("{registry}/{}", self.repository),
        };
        name + &self.suffix()
    }

    /// The `host[:port]` that serves the registry API (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        match self.registry.as_str() {
            DOCKER_HUB => DOCKER_HUB_API,
            registry => registry,
        }
    }

    /// What the manifest endpoint is asked for: the digest if pinned, else the tag.
    pub(crate) fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.registry, self.repository, self.suffix())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| Error::InvalidReference {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(bad("the reference is empty".into()));
        }
        if input.len() == 64 && input.bytes().all(is_lower_hex) {
            return Err(bad(
                "a 64-character hexadecimal string cannot be a repository name \
                 (did you mean a digest, sha256:…?)"
                    .into(),
            ));
        }
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => {
                let digest = digest.parse::<Digest>().map_err(|_| {
                    bad(format!(
                        "invalid digest {digest:?}: expected sha256:<64 lower-case hex digits>"
                    ))
                })?;
                (name, Some(digest))
            }
            None => (input, None),
        };
        // A tag is a ':' after the last '/'; an earlier ':' belongs to the registry's port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].find(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(bad)?;
        }
        let (registry, repository) = split_registry(name);
        if repository.to_ascii_lowercase() != repository {
            return Err(bad(format!(
                "repository name {repository:?} must be lowercase"
            )));
        }
        check_registry(&registry).map_err(bad)?;
        check_repository(&repository).map_err(bad)?;
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad(format!(
                "the repository name is longer than {NAME_MAX} characters"
            )));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// Splits `name` into registry and repository the way `splitDockerDomain` does.
fn split_registry(name: &str) -> (String, String) {
    let (registry, rest) = match name.split_once('/') {
        Some((first, rest)) if looks_like_registry(first) => (first, rest),
        _ => (DOCKER_HUB, name),
    };
    let registry = if registry == LEGACY_DOCKER_HUB {
        DOCKER_HUB
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !rest.contains('/') {
        format!("{OFFICIAL_PREFIX}{rest}")
    } else {
        rest.to_string()
    };
    (registry.to_string(), repository)
}

fn looks_like_registry(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.bytes().any(|b| b.is_ascii_uppercase())
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// `host[:port]`, where host is DNS labels separated by dots or a bracketed IPv6 address.
fn check_registry(registry: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "invalid registry {registry:?}: expected host[:port], \
             e.g. registry.example.com or 127.0.0.1:5000"
        )
    };
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad());
        }
        match after {
            "" => ("", None),
            _ => ("", Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !registry.starts_with('[') && !host.split('.').all(label_ok) {
        return Err(bad());
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    Ok(())
}

/// Path components of lower-case letters and digits, separated by `.`, `_`, `__` or dashes.
fn check_repository(repository: &str) -> Result<(), String> {
    for component in repository.split('/') {
        if !component_ok(component) {
            return Err(format!(
                "invalid repository path component {component:?} in {repository:?}: \
                 use lower-case letters and digits, separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn component_ok(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: one '.', one or two '_', or any number of '-'.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = match tag.as_bytes() {
        [first, rest @ ..] => {
            word(*first)
                && rest.len() <= 127
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        [] => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: a tag is 1 to 128 letters, digits, '_', '.' or '-', \
             and does not start with '.' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_like_docker() {
        let d = format!("sha256:{HEX}");
        // input, full normalised form, familiar form
        let table: Vec<(String, String, String)> = [
            ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
            (
                "alpine:3.19",
                "docker.io/library/alpine:3.19",
                "alpine:3.19",
            ),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            ("user/app:v1.0", "docker.io/user/app:v1.0", "user/app:v1.0"),
            (
                "docker.io/alpine",
                "docker.io/library/alpine:latest",
                "alpine:latest",
            ),
            (
                "docker.io/library/alpine",
                "docker.io/library/alpine:latest",
                "alpine:latest",
            ),
            (
                "index.docker.io/library/alpine:1",
                "docker.io/library/alpine:1",
                "alpine:1",
            ),
            (
                "index.docker.io/user/app",
                "docker.io/user/app:latest",
                "user/app:latest",
            ),
            ("docker.io/a/b/c", "docker.io/a/b/c:latest", "a/b/c:latest"),
            (
                "library/alpine",
                "docker.io/library/alpine:latest",
                "alpine:latest",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "localhost:5000/x",
                "localhost:5000/x:latest",
                "localhost:5000/x:latest",
            ),
            (
                "127.0.0.1:5055/busybox:1.35",
                "127.0.0.1:5055/busybox:1.35",
                "127.0.0.1:5055/busybox:1.35",
            ),
            ("[::1]:5000/a/b:t", "[::1]:5000/a/b:t", "[::1]:5000/a/b:t"),
            ("[fe80::1]/a", "[fe80::1]/a:latest", "[fe80::1]/a:latest"),
            ("ghcr.io/o/r:1", "ghcr.io/o/r:1", "ghcr.io/o/r:1"),
            ("Registry/app", "Registry/app:latest", "Registry/app:latest"),
            ("foo:5000", "docker.io/library/foo:5000", "foo:5000"),
            (
                "a-b/c.d_e__f---g",
                "docker.io/a-b/c.d_e__f---g:latest",
                "a-b/c.d_e__f---g:latest",
            ),
            (
                "my-reg.example.com:443/team/app:Tag_1.x-y",
                "my-reg.example.com:443/team/app:Tag_1.x-y",
                "my-reg.example.com:443/team/app:Tag_1.x-y",
            ),
        ]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .chain([
            (
                format!("reg.io/x@{d}"),
                format!("reg.io/x@{d}"),
                format!("reg.io/x@{d}"),
            ),
            (
                format!("x:tag@{d}"),
                format!("docker.io/library/x:tag@{d}"),
                format!("x:tag@{d}"),
            ),
            (
                format!("alpine@{d}"),
                format!("docker.io/library/alpine@{d}"),
                format!("alpine@{d}"),
            ),
            (
                format!("localhost:5000/a/b:c@{d}"),
                format!("localhost:5000/a/b:c@{d}"),
                format!("localhost:5000/a/b:c@{d}"),
            ),
        ])
        .collect();
        for (input, full, familiar) in table {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
            let again: Reference = full.parse().unwrap();
            assert_eq!(
                again, r,
                "{input}: Display must parse back to the same reference"
            );
        }
    }

    #[test]
    fn fields_and_api_host() {
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.digest, None);
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_selector(), "latest");

        let r: Reference = format!("127.0.0.1:5055/busybox:1.35@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(r.registry, "127.0.0.1:5055");
        assert_eq!(r.repository, "busybox");
        assert_eq!(r.tag.as_deref(), Some("1.35"));
        assert_eq!(r.digest.as_ref().unwrap().hex(), HEX);
        assert_eq!(r.api_host(), "127.0.0.1:5055");
        assert_eq!(r.manifest_selector(), format!("sha256:{HEX}"));
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let long_tag = "t".repeat(129);
        let long_name = format!("reg.io/{}", "a".repeat(260));
        let table: Vec<(String, &str)> = [
            ("", "empty"),
            ("Alpine", "must be lowercase"),
            ("user/App", "must be lowercase"),
            ("reg.io/User/app", "must be lowercase"),
            (HEX, "64-character hexadecimal"),
            ("alpine:", "invalid tag"),
            ("alpine:-x", "invalid tag"),
            ("alpine:.x", "invalid tag"),
            ("alpine:a/b", "invalid registry"),
            ("alpine:a b", "invalid tag"),
            ("alpine@sha256:abc", "invalid digest"),
            ("alpine@md5:abc", "invalid digest"),
            ("alpine@", "invalid digest"),
            ("/alpine", "invalid repository path component"),
            ("alpine/", "invalid repository path component"),
            ("a//b", "invalid repository path component"),
            ("-a/b", "invalid repository path component"),
            ("a_/b", "invalid repository path component"),
            ("a/b..c", "invalid repository path component"),
            ("a/b___c", "invalid repository path component"),
            ("a/b.-c", "invalid repository path component"),
            ("a/b c", "invalid repository path component"),
            ("reg.io:/x", "invalid registry"),
            ("reg.io:abc/x", "invalid registry"),
            ("-reg.io/x", "invalid registry"),
            ("a.b_c/x", "invalid registry"),
            ("reg..io/x", "invalid registry"),
            ("[::1/x", "invalid registry"),
            ("[zz]:5000/x", "invalid registry"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), *b))
        .chain([
            (format!("alpine:{long_tag}"), "invalid tag"),
            (long_name, "longer than 255"),
        ])
        .collect();
        for (input, want) in table {
            match input.parse::<Reference>() {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(want), "{input:?}: {msg}");
                    assert!(
                        msg.starts_with(&format!("invalid image reference {input:?}")),
                        "{msg}"
                    );
                }
            }
        }
    }
}
