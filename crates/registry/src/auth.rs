//! Registry credentials and the challenges that ask for them.
//!
//! Credentials come from the `auths` section of Docker's `config.json` (what `docker login`
//! writes). A registry says how it wants them in `WWW-Authenticate`: `Basic` means send them
//! on every request; `Bearer realm=…,service=…,scope=…` means trade them (or nothing, for
//! anonymous pulls) at the realm for a short-lived token, as Docker's token spec describes.

use crate::Error;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Docker Hub's key in `config.json`, a leftover of the v1 API.
const DOCKER_HUB_AUTH_KEY: &str = "index.docker.io";

/// A user name and password (or personal access token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic …` header.
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", BASE64.encode(pair))
    }
}

/// The credentials found in a Docker config file, by registry host.
#[derive(Clone, Debug, Default)]
pub struct DockerConfig {
    path: PathBuf,
    auths: HashMap<String, Credentials>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl DockerConfig {
    /// Where Docker keeps its config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("config.json"),
            _ => home()
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".docker/config.json"),
        }
    }

    /// Reads the config at `path`; a missing file means no credentials, not an error.
    pub fn load(path: &Path) -> Result<DockerConfig, Error> {
        let bad = |reason: String| Error::DockerConfig {
            path: path.to_path_buf(),
            reason,
        };
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig {
                    path: path.to_path_buf(),
                    auths: HashMap::new(),
                })
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let file: ConfigFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let mut auths = HashMap::new();
        for (key, entry) in file.auths {
            let creds = entry
                .credentials()
                .map_err(|reason| bad(format!("the entry for {key:?} is unusable: {reason}")))?;
            if let Some(creds) = creds {
                auths.insert(normalise_key(&key), creds);
            }
        }
        Ok(DockerConfig {
            path: path.to_path_buf(),
            auths,
        })
    }

    /// The credentials for a registry as named in references (`docker.io`, `host:port`).
    pub fn credentials_for(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(&normalise_key(registry))
    }

    /// The file the credentials came from, `~/`-abbreviated for messages.
    pub fn display_path(&self) -> String {
        let shown = home().and_then(|h| self.path.strip_prefix(h).ok().map(Path::to_path_buf));
        match shown {
            Some(rel) => format!("~/{}", rel.display()),
            None => self.path.display().to_string(),
        }
    }
}

impl AuthEntry {
    fn credentials(self) -> Result<Option<Credentials>, String> {
        if let Some(auth) = self.auth.filter(|a| !a.is_empty()) {
            let decoded = BASE64
                .decode(auth.trim())
                .map_err(|e| format!("\"auth\" is not base64 ({e})"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| "\"auth\" is not UTF-8".to_string())?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or("\"auth\" does not decode to user:password")?;
            return Ok(Some(Credentials {
                username: username.to_string(),
                password: password.to_string(),
            }));
        }
        Ok(match (self.username, self.password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Some(Credentials { username, password })
            }
            _ => None,
        })
    }
}

/// Reduces `https://index.docker.io/v1/`, `http://host:5000`, `host:5000/` to the bare host,
/// with all of Docker Hub's names folded into one.
fn normalise_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB_AUTH_KEY.to_string()
        }
        _ => host,
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// What a registry's `WWW-Authenticate` header asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Send user and password with each request.
    Basic,
    /// Fetch a token from `realm` for `service` and `scope`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value; `None` for schemes kiln does not speak.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(params);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            }),
            _ => None,
        }
    }
}

/// `key=value, key="quoted, value"` into a map with lower-case keys.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim_start();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim();
        let after = &rest[eq + 1..];
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            unquote(quoted)
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(key.to_ascii_lowercase(), value);
        rest = tail.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    out
}

/// Reads a quoted-string body up to its closing quote; returns it and what follows.
fn unquote(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '"' => return (value, &s[i + 1..]),
            c => value.push(c),
        }
    }
    (value, "")
}

/// Token scopes (`repository:app:pull`) with the actions of each resource gathered into one
/// (`repository:app:pull` and `repository:app:pull,push` become `repository:app:pull,push`),
/// in the order they first appear.
pub(crate) fn merge_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut merged: Vec<(&str, Vec<&str>)> = Vec::new();
    for scope in scopes {
        // `type:name:actions`; a name may hold a colon (a registry's port), actions do not.
        let (resource, actions) = scope.rsplit_once(':').unwrap_or((scope, ""));
        let at = match merged.iter().position(|(r, _)| *r == resource) {
            Some(at) => at,
            None => {
                merged.push((resource, Vec::new()));
                merged.len() - 1
            }
        };
        for action in actions.split(',').filter(|a| !a.is_empty()) {
            if !merged[at].1.contains(&action) {
                merged[at].1.push(action);
            }
        }
    }
    merged
        .into_iter()
        .map(|(resource, actions)| format!("{resource}:{}", actions.join(",")))
        .collect()
}

/// A token server's answer; Docker's spec names the field `token`, OAuth2 `access_token`.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl TokenResponse {
    /// The token, whichever field carries it.
    pub(crate) fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token)
            .filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        // Scopes with several actions hold commas; unquoted values and odd spacing happen.
        assert_eq!(
            Challenge::parse(
                r#"bearer realm=http://127.0.0.1:1/t , scope="repository:a/b:pull,push", service="x\"y""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("x\"y".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Basic"), Some(Challenge::Basic));
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn reads_docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let b64 = |s: &str| BASE64.encode(s);
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{}"}},
                    "127.0.0.1:5056": {{"auth": "{}"}},
                    "https://ghcr.io": {{"username": "u", "password": "p"}},
                    "quay.io": {{}}
                }}, "credsStore": "desktop"}}"#,
                b64("hub:secret"),
                b64("alice:pa:ss")
            ),
        )
        .unwrap();
        let config = DockerConfig::load(&path).unwrap();
        let creds = |r| {
            config
                .credentials_for(r)
                .map(|c| (c.username.as_str(), c.password.as_str()))
        };
        assert_eq!(creds("docker.io"), Some(("hub", "secret")));
        assert_eq!(creds("127.0.0.1:5056"), Some(("alice", "pa:ss")));
        assert_eq!(creds("ghcr.io"), Some(("u", "p")));
        assert_eq!(creds("quay.io"), None);
        assert_eq!(creds("127.0.0.1:5057"), None);
        assert_eq!(
            config
                .credentials_for("127.0.0.1:5056")
                .unwrap()
                .basic_header(),
            format!("Basic {}", b64("alice:pa:ss"))
        );
    }

    #[test]
    fn missing_config_is_empty_and_broken_config_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = DockerConfig::load(&dir.path().join("absent.json")).unwrap();
        assert!(config.credentials_for("docker.io").is_none());

        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths": {"reg.io": {"auth": "!!!"}}}"#).unwrap();
        let msg = DockerConfig::load(&path).unwrap_err().to_string();
        assert!(
            msg.contains("not base64") && msg.contains("reg.io"),
            "{msg}"
        );
        std::fs::write(&path, "{").unwrap();
        let msg = DockerConfig::load(&path).unwrap_err().to_string();
        assert!(msg.starts_with("could not read the Docker config"), "{msg}");
    }

    #[test]
    fn scopes_of_one_repository_are_merged() {
        assert_eq!(
            merge_scopes([
                "repository:app:pull",
                "repository:app:pull,push",
                "repository:base:pull",
                "repository:app:delete",
            ]),
            ["repository:app:pull,push,delete", "repository:base:pull"]
        );
        assert_eq!(merge_scopes(["registry:catalog:*"]), ["registry:catalog:*"]);
    }

    #[test]
    fn token_response_fields() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("a"));
        let t: TokenResponse =
            serde_json::from_str(r#"{"token":"t","access_token":"a","expires_in":60}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("t"));
        let t: TokenResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(t.into_token(), None);
    }
}
