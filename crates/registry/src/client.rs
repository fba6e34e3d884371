//! The registry client: the distribution API's pull endpoints (`/v2/<name>/manifests/<ref>`,
//! `/v2/<name>/blobs/<digest>`) over blocking HTTP, with the auth handshake done once per
//! repository and access (pull, or push) and remembered. The push side lives in `push.rs`
//! and `upload.rs`, on the same handshake.
//!
//! Everything that comes from the network is checked against the digest it was asked for
//! before anyone sees it: manifests and configs in memory, layers while they stream into the
//! content store, which only names a blob once its digest is right.

use crate::auth::{merge_scopes, Challenge, DockerConfig, TokenResponse};
use crate::{platform, Error, Reference};
use kiln_cache::{ContentError, ContentStore};
use kiln_oci::{media_types, Descriptor, Digest, ImageConfig, Index, Manifest, Platform};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use ureq::http::{Response, StatusCode};
use ureq::{Agent, Body};

/// Every manifest and index type kiln reads, OCI and Docker v2.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 1, which kiln does not pull.
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Manifests larger than this are refused (containerd's limit).
pub(crate) const MANIFEST_LIMIT: u64 = 4 << 20;
/// Image configs larger than this are refused; real ones are kilobytes.
const CONFIG_LIMIT: u64 = 32 << 20;
/// Error bodies and token responses are read up to this size.
const SMALL_BODY_LIMIT: u64 = 1 << 20;

/// How a [`Client`] connects and authenticates.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Registries (`host[:port]`, or a bare host for all its ports) reached over plain HTTP.
    /// Loopback registries always are.
    pub insecure_registries: Vec<String>,
    /// The Docker config with credentials; `None` means `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// How long to wait for a connection, a response, or the next bytes of a body.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            docker_config: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One platform's image as the registry holds it: manifest and config, raw and parsed.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The digest of `manifest_bytes` (of the platform's manifest, not of the index).
    pub manifest_digest: Digest,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The manifest exactly as served, for digest-preserving copies.
    pub manifest_bytes: Vec<u8>,
    /// The parsed image config.
    pub config: ImageConfig,
    /// The config blob exactly as served.
    pub config_bytes: Vec<u8>,
    /// The manifest's media type (OCI or Docker v2).
    pub media_type: String,
    /// The digest of the index the manifest was chosen from, if the reference named one.
    pub index_digest: Option<Digest>,
}

impl Resolved {
    /// Keeps the manifest and config in `store`, so that a later pull of this manifest by
    /// digest needs no request. Only a cache: a failure to keep them costs a request later.
    pub fn keep(&self, store: &ContentStore) {
        let _ = store.put(&self.manifest_bytes);
        let _ = store.put(&self.config_bytes);
    }
}

/// A blocking OCI distribution client. Cheap to share between threads (`Arc<Client>`);
/// call it from `spawn_blocking` in async code.
pub struct Client {
    /// For remote registries; honours `HTTPS_PROXY`/`NO_PROXY`.
    proxied: Agent,
    /// For loopback registries, which a proxy could not reach.
    direct: Agent,
    insecure: Vec<String>,
    docker_config: DockerConfig,
    timeout: Duration,
    /// `Authorization` values by (API host, token scopes), learned from challenges.
    authorizations: Mutex<HashMap<(String, String), String>>,
    /// Held while a challenge is answered.
    answering: Mutex<()>,
}

/// A manifest or index as fetched, already checked against its digest.
struct FetchedManifest {
    bytes: Vec<u8>,
    media_type: String,
    digest: Digest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ManifestKind {
    Index,
    Image,
}

impl Client {
    /// A client with `opts`; fails only when the Docker config exists but cannot be read.
    pub fn new(opts: ClientOptions) -> Result<Client, Error> {
        let config_path = opts
            .docker_config
            .unwrap_or_else(DockerConfig::default_path);
        let docker_config = DockerConfig::load(&config_path)?;
        let agent = |direct: bool| {
            let t = Some(opts.timeout);
            let mut config = Agent::config_builder()
                .http_status_as_error(false)
                .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
                .timeout_resolve(t)
                .timeout_connect(t)
                .timeout_send_request(t)
                .timeout_recv_response(t)
                .timeout_per_read(t)
                .timeout_per_write(t);
            if direct {
                config = config.proxy(None);
            }
            config.build().new_agent()
        };
        Ok(Client {
            proxied: agent(false),
            direct: agent(true),
            insecure: opts.insecure_registries,
            docker_config,
            timeout: opts.timeout,
            authorizations: Mutex::new(HashMap::new()),
            answering: Mutex::new(()),
        })
    }

    /// Resolves a reference to one platform's manifest: fetches the manifest (or index /
    /// manifest list, then selects `platform`: os+architecture+variant, with arm64 variant v8
    /// ≈ none), then its config. Everything is verified against its digest.
    pub fn resolve(&self, r: &Reference, platform: &Platform) -> Result<Resolved, Error> {
        let top = self.fetch_manifest(r, &r.manifest_selector(), r.digest.as_ref())?;
        let (chosen, index_digest) = match manifest_kind(r, &top.media_type)? {
            ManifestKind::Image => (top, None),
            ManifestKind::Index => {
                let index: Index = parse_json(r, "image index", &top.bytes)?;
                let desc = platform::select(&index.manifests, platform).ok_or_else(|| {
                    Error::NoMatchingPlatform {
                        reference: r.familiar(),
                        wanted: platform.clone(),
                        available: platform::available(&index.manifests),
                    }
                })?;
                let child = self.fetch_manifest(r, &desc.digest.to_string(), Some(&desc.digest))?;
                if manifest_kind(r, &child.media_type)? != ManifestKind::Image {
                    return Err(Error::UnsupportedMediaType {
                        reference: r.familiar(),
                        media_type: child.media_type,
                        hint: " (an index inside an index)",
                    });
                }
                (child, Some(top.digest))
            }
        };
        let manifest: Manifest = parse_json(r, "image manifest", &chosen.bytes)?;
        let config_bytes = self.fetch_config(r, &manifest.config)?;
        let config: ImageConfig = parse_json(r, "image config", &config_bytes)?;
        Ok(Resolved {
            manifest_digest: chosen.digest,
            manifest,
            manifest_bytes: chosen.bytes,
            config,
            config_bytes,
            media_type: chosen.media_type,
            index_digest,
        })
    }

    /// Downloads a blob into the store, verified against its digest (skips it when already
    /// present); no partial blob ever under its final name.
    pub fn fetch_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        store: &ContentStore,
    ) -> Result<(), Error> {
        if store.contains(&desc.digest) {
            return Ok(());
        }
        let content = |source| Error::Content {
            reference: r.familiar(),
            source,
        };
        let resp = self.get(r, &format!("blobs/{}", desc.digest), None)?;
        let resp = self.expect_success(r, resp, "blob unknown to registry")?;
        let mut writer = store.writer().map_err(content)?;
        // One byte more than expected is enough to know the registry sent too much.
        let mut body = resp
            .into_body()
            .into_reader()
            .take(desc.size.saturating_add(1));
        let received = copy(&mut body, &mut writer).map_err(|e| match e {
            CopyError::Read(e) => self.transport_error(r, r.api_host(), ureq::Error::from(e)),
            CopyError::Write(source) => content(ContentError::Io {
                action: "write a blob into",
                path: store.root().join("ingest"),
                source,
            }),
        })?;
        if received != desc.size {
            // Dropping the writer discards its temp file.
            return Err(size_mismatch(r, desc, received));
        }
        writer.commit(Some(&desc.digest)).map_err(|e| match e {
            ContentError::DigestMismatch { expected, actual } => Error::DigestMismatch {
                reference: r.familiar(),
                expected,
                actual,
            },
            other => content(other),
        })?;
        Ok(())
    }

    /// Fetches a manifest or index by tag or digest and checks it against `expected` and the
    /// registry's `Docker-Content-Digest`, when either is known.
    fn fetch_manifest(
        &self,
        r: &Reference,
        selector: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, Error> {
        let resp = self.get(r, &format!("manifests/{selector}"), Some(MANIFEST_ACCEPT))?;
        let mut resp = self.expect_success(r, resp, "manifest unknown")?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type");
        let announced = header("docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        let bytes = self.read_body(r, &mut resp, MANIFEST_LIMIT, "manifest")?;
        let digest = Digest::of(&bytes);
        for want in [expected, announced.as_ref()].into_iter().flatten() {
            if *want != digest {
                return Err(Error::DigestMismatch {
                    reference: r.familiar(),
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        let media_type = media_type_of(content_type.as_deref(), &bytes);
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Fetches a config blob into memory, checked against its descriptor.
    fn fetch_config(&self, r: &Reference, desc: &Descriptor) -> Result<Vec<u8>, Error> {
        if desc.size > CONFIG_LIMIT {
            return Err(Error::InvalidResponse {
                reference: r.familiar(),
                what: "image config",
                reason: format!(
                    "the manifest says it is {} bytes, more than the {CONFIG_LIMIT} kiln accepts",
                    desc.size
                ),
            });
        }
        let resp = self.get(r, &format!("blobs/{}", desc.digest), None)?;
        let mut resp = self.expect_success(r, resp, "blob unknown to registry")?;
        let bytes = self.read_body(r, &mut resp, desc.size + 1, "image config")?;
        if bytes.len() as u64 != desc.size {
            return Err(size_mismatch(r, desc, bytes.len() as u64));
        }
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                reference: r.familiar(),
                expected: desc.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// GETs `path` under the repository's API URL, answering one auth challenge if the
    /// registry sends it.
    fn get(
        &self,
        r: &Reference,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response<Body>, Error> {
        let host = r.api_host();
        let url = format!("{}://{host}/v2/{}/{path}", self.scheme(host), r.repository);
        let scopes = [format!("repository:{}:pull", r.repository)];
        let resp = self
            .call_authorized(r, &scopes, true, |authorization| {
                let mut req = self.agent_for(host).get(&url);
                if let Some(accept) = accept {
                    req = req.header("Accept", accept);
                }
                if let Some(authorization) = authorization {
                    req = req.header("Authorization", authorization);
                }
                req.call()
            })
            .map_err(|e| match e {
                CallError::Transport(e) => self.transport_error(r, host, *e),
                CallError::Auth(e) => *e,
            })?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized(r));
        }
        Ok(resp)
    }

    /// Sends the request `call` builds for the `Authorization` it is given (the one remembered
    /// for the registry and `scopes`, if any). On a 401 it answers the challenge, asking a
    /// token server for `scopes`, and, if the request is `replayable`, sends it once more;
    /// a request whose body cannot be sent twice gets the 401 back, and the remembered
    /// authorization is forgotten so that the next request starts afresh. The answer may
    /// still be a 401; what that means is the caller's to say.
    pub(crate) fn call_authorized(
        &self,
        r: &Reference,
        scopes: &[String],
        replayable: bool,
        mut call: impl FnMut(Option<&str>) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>, CallError> {
        let key = (r.api_host().to_string(), scopes.join(" "));
        let known = self.authorizations.lock().unwrap().get(&key).cloned();
        let resp = call(known.as_deref()).map_err(|e| CallError::Transport(Box::new(e)))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        if !replayable {
            self.forget_authorization(&key, known.as_deref());
            return Ok(resp);
        }
        let authorization = {
            // One challenge answered at a time: threads that met the same 401 take the
            // token the first one got rather than each fetching their own.
            let _answering = self.answering.lock().unwrap();
            let now = self.authorizations.lock().unwrap().get(&key).cloned();
            match now.filter(|now| Some(now) != known.as_ref()) {
                Some(fresh) => fresh,
                None => {
                    let fresh = self
                        .authorize(r, &resp, scopes)
                        .map_err(|e| CallError::Auth(Box::new(e)))?;
                    let mut authorizations = self.authorizations.lock().unwrap();
                    authorizations.insert(key.clone(), fresh.clone());
                    fresh
                }
            }
        };
        let resp = call(Some(&authorization)).map_err(|e| CallError::Transport(Box::new(e)))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.forget_authorization(&key, Some(&authorization));
        }
        Ok(resp)
    }

    /// Forgets the authorization remembered for `key` if it is still `stale` (another thread
    /// may have replaced it with a good one meanwhile).
    fn forget_authorization(&self, key: &(String, String), stale: Option<&str>) {
        let mut authorizations = self.authorizations.lock().unwrap();
        if authorizations.get(key).map(String::as_str) == stale {
            authorizations.remove(key);
        }
    }

    /// The `Authorization` value that answers a 401's challenge; a token is asked for the
    /// challenge's scope and `scopes` together.
    fn authorize(
        &self,
        r: &Reference,
        resp: &Response<Body>,
        scopes: &[String],
    ) -> Result<String, Error> {
        let challenge = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(Challenge::parse);
        let creds = self.docker_config.credentials_for(&r.registry);
        match challenge {
            Some(Challenge::Basic) => creds
                .map(|c| c.basic_header())
                .ok_or_else(|| self.unauthorized(r)),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let challenged = scope.iter().flat_map(|s| s.split_whitespace());
                let wanted = merge_scopes(challenged.chain(scopes.iter().map(String::as_str)));
                let token = self.fetch_token(r, &realm, service.as_deref(), &wanted)?;
                Ok(format!("Bearer {token}"))
            }
            None => Err(self.unauthorized(r)),
        }
    }

    /// Trades our credentials (or none) for a token at the challenge's realm.
    fn fetch_token(
        &self,
        r: &Reference,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, Error> {
        let realm_host = url_host(realm);
        let mut req = self.agent_for(realm_host).get(realm);
        if let Some(service) = service {
            req = req.query("service", service);
        }
        for scope in scopes {
            req = req.query("scope", scope);
        }
        if let Some(creds) = self.docker_config.credentials_for(&r.registry) {
            req = req.header("Authorization", creds.basic_header());
        }
        let mut resp = req
            .call()
            .map_err(|e| self.transport_error(r, realm_host, e))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(self.unauthorized(r)),
            s => {
                return Err(Error::Status {
                    reference: r.familiar(),
                    host: realm_host.to_string(),
                    status: s.as_u16(),
                    detail: format!(
                        "the token server {realm} failed: {}",
                        error_detail(&mut resp).unwrap_or_else(|| reason(s))
                    ),
                })
            }
        }
        let body = self.read_body(r, &mut resp, SMALL_BODY_LIMIT, "token response")?;
        let invalid = |reason: String| Error::InvalidResponse {
            reference: r.familiar(),
            what: "token response",
            reason,
        };
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        token
            .into_token()
            .ok_or_else(|| invalid("it holds neither \"token\" nor \"access_token\"".into()))
    }

    /// Turns an error status into an [`Error`]; `missing` describes a 404 without details.
    fn expect_success(
        &self,
        r: &Reference,
        mut resp: Response<Body>,
        missing: &str,
    ) -> Result<Response<Body>, Error> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let detail = error_detail(&mut resp);
        Err(match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                reference: r.familiar(),
                detail: detail.unwrap_or_else(|| missing.to_string()),
            },
            StatusCode::UNAUTHORIZED => self.unauthorized(r),
            StatusCode::FORBIDDEN => Error::Denied {
                reference: r.familiar(),
                registry: r.registry.clone(),
                detail: detail.unwrap_or_else(|| reason(status)),
            },
            _ => Error::Status {
                reference: r.familiar(),
                host: r.api_host().to_string(),
                status: status.as_u16(),
                detail: detail.unwrap_or_else(|| reason(status)),
            },
        })
    }

    fn read_body(
        &self,
        r: &Reference,
        resp: &mut Response<Body>,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Error> {
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => Error::InvalidResponse {
                    reference: r.familiar(),
                    what,
                    reason: format!("it is larger than {limit} bytes"),
                },
                e => self.transport_error(r, r.api_host(), e),
            })
    }

    /// Why pushing to `r` was refused by a registry that had our credentials, or wanted some.
    pub(crate) fn unauthorized_to_push(&self, r: &Reference) -> Error {
        let registry = &r.registry;
        let path = self.docker_config.display_path();
        let hint = if self.docker_config.credentials_for(registry).is_some() {
            format!(
                "check that the credentials for {registry} in {path} may push to {}",
                r.repository
            )
        } else {
            format!("pushing needs credentials and {path} has none for {registry} (run `docker login {registry}`)")
        };
        Error::Unauthorized {
            reference: r.familiar(),
            hint,
        }
    }

    fn unauthorized(&self, r: &Reference) -> Error {
        let registry = &r.registry;
        let path = self.docker_config.display_path();
        let hint = if self.docker_config.credentials_for(registry).is_some() {
            format!("check the credentials for {registry} in {path}")
        } else {
            format!(
                "the repository may not exist, or it needs credentials and {path} has none \
                 for {registry} (run `docker login {registry}`)"
            )
        };
        Error::Unauthorized {
            reference: r.familiar(),
            hint,
        }
    }

    pub(crate) fn transport_error(&self, r: &Reference, host: &str, e: ureq::Error) -> Error {
        let connect = |reason: String| Error::Connect {
            reference: r.familiar(),
            host: host.to_string(),
            reason,
        };
        let timeout = || Error::Timeout {
            reference: r.familiar(),
            timeout: self.timeout,
        };
        match e {
            ureq::Error::Timeout(_) => timeout(),
            ureq::Error::Io(e) => match e.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timeout(),
                io::ErrorKind::ConnectionRefused => connect("connection refused".into()),
                io::ErrorKind::ConnectionReset => connect("the connection was reset".into()),
                io::ErrorKind::UnexpectedEof => {
                    connect("the registry closed the connection mid-answer".into())
                }
                _ => connect(e.to_string()),
            },
            ureq::Error::HostNotFound => {
                connect("no such host; check the registry name and DNS".into())
            }
            e @ (ureq::Error::Tls(_) | ureq::Error::Rustls(_)) => connect(format!(
                "TLS failed ({e}); if {host} serves plain HTTP, add it to the insecure registries"
            )),
            e => connect(e.to_string()),
        }
    }

    /// Plain HTTP for loopback and insecure registries, HTTPS for the rest.
    pub(crate) fn scheme(&self, host: &str) -> &'static str {
        let bare = strip_port(host);
        let insecure = self.insecure.iter().any(|h| h == host || h == bare);
        if insecure || is_loopback(host) {
            "http"
        } else {
            "https"
        }
    }

    pub(crate) fn agent_for(&self, host: &str) -> &Agent {
        if is_loopback(host) {
            &self.direct
        } else {
            &self.proxied
        }
    }
}

/// `localhost`, `127.0.0.0/8` and `[::1]`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let bare = strip_port(host);
    let bare = bare
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .unwrap_or(bare);
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` → `host`, `[::1]:5000` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.split(':').next().unwrap_or(host)
}

/// Why an authorized call failed before any answer came.
pub(crate) enum CallError {
    /// The request could not be sent or its answer not read.
    Transport(Box<ureq::Error>),
    /// Answering the auth challenge failed.
    Auth(Box<Error>),
}

/// The `host[:port]` of an absolute URL.
pub(crate) fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

pub(crate) fn manifest_kind(r: &Reference, media_type: &str) -> Result<ManifestKind, Error> {
    match media_type {
        media_types::OCI_INDEX | media_types::DOCKER_MANIFEST_LIST => Ok(ManifestKind::Index),
        media_types::OCI_MANIFEST | media_types::DOCKER_MANIFEST => Ok(ManifestKind::Image),
        other => Err(Error::UnsupportedMediaType {
            reference: r.familiar(),
            media_type: other.to_string(),
            hint: if DOCKER_SCHEMA1.contains(&other) {
                " (Docker schema 1 is obsolete; push the image again with a current Docker or skopeo)"
            } else {
                ""
            },
        }),
    }
}

/// The manifest's media type: the `Content-Type` if it names a manifest type, else the
/// document's own `mediaType`, else a guess from its shape (OCI allows omitting it).
fn media_type_of(content_type: Option<&str>, bytes: &[u8]) -> String {
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .unwrap_or_default();
    let known = [
        media_types::OCI_INDEX,
        media_types::OCI_MANIFEST,
        media_types::DOCKER_MANIFEST_LIST,
        media_types::DOCKER_MANIFEST,
    ];
    if known.contains(&content_type.as_str()) || DOCKER_SCHEMA1.contains(&content_type.as_str()) {
        return content_type;
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Shape>(bytes) {
        Ok(Shape {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Shape {
            manifests: Some(_), ..
        }) => media_types::OCI_INDEX.to_string(),
        Ok(Shape {
            config: Some(_), ..
        }) => media_types::OCI_MANIFEST.to_string(),
        _ => content_type,
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    r: &Reference,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidResponse {
        reference: r.familiar(),
        what,
        reason: e.to_string(),
    })
}

fn size_mismatch(r: &Reference, desc: &Descriptor, received: u64) -> Error {
    Error::SizeMismatch {
        reference: r.familiar(),
        digest: desc.digest.clone(),
        expected: desc.size,
        actual: if received > desc.size {
            "more".to_string()
        } else {
            received.to_string()
        },
    }
}

/// The messages of a distribution error body (`{"errors":[{"code":…,"message":…}]}`), or its
/// text if it is short and not JSON.
fn error_detail(resp: &mut Response<Body>) -> Option<String> {
    read_errors(resp).summary(false)
}

/// What a registry said in an error body.
pub(crate) enum RegistryErrors {
    /// The distribution spec's `{"errors":[…]}`.
    Listed(Vec<ErrorEntry>),
    /// Something else: short plain text, or nothing worth showing.
    Text(Option<String>),
}

#[derive(Deserialize)]
pub(crate) struct ErrorEntry {
    #[serde(default)]
    pub(crate) code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: serde_json::Value,
}

impl RegistryErrors {
    /// Whether the registry named `code` (e.g. `BLOB_UPLOAD_UNKNOWN`) among its errors.
    pub(crate) fn has_code(&self, code: &str) -> bool {
        matches!(self, RegistryErrors::Listed(entries) if entries.iter().any(|e| e.code == code))
    }

    /// The messages joined (with each error's `detail` too, if `with_detail`), or the text.
    pub(crate) fn summary(&self, with_detail: bool) -> Option<String> {
        let entries = match self {
            RegistryErrors::Listed(entries) => entries,
            RegistryErrors::Text(text) => return text.clone(),
        };
        let messages: Vec<String> = entries
            .iter()
            .map(|e| {
                let mut m = match e.message.is_empty() {
                    true => e.code.to_ascii_lowercase().replace('_', " "),
                    false => e.message.clone(),
                };
                let detail = match &e.detail {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if with_detail && !detail.is_empty() && detail != "{}" && detail != m {
                    m = if m.is_empty() {
                        detail
                    } else {
                        format!("{m}: {detail}")
                    };
                }
                m
            })
            .filter(|m| !m.is_empty())
            .collect();
        (!messages.is_empty()).then(|| messages.join("; "))
    }
}

/// Reads an error body (up to a small limit).
pub(crate) fn read_errors(resp: &mut Response<Body>) -> RegistryErrors {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    let Ok(body) = resp
        .body_mut()
        .with_config()
        .limit(SMALL_BODY_LIMIT)
        .read_to_vec()
    else {
        return RegistryErrors::Text(None);
    };
    if let Ok(parsed) = serde_json::from_slice::<Errors>(&body) {
        return RegistryErrors::Listed(parsed.errors);
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    RegistryErrors::Text(
        (!text.is_empty() && text.len() <= 200 && !text.starts_with('<')).then(|| text.to_string()),
    )
}

pub(crate) fn reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("unexpected status")
        .to_ascii_lowercase()
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` into `to`, telling network (read) errors from disk (write) errors.
fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_use_plain_http() {
        let client = Client::new(ClientOptions {
            insecure_registries: vec!["reg.internal:5000".into(), "lab.example".into()],
            docker_config: Some(PathBuf::from("/nonexistent/config.json")),
            ..ClientOptions::default()
        })
        .unwrap();
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5055",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
            "reg.internal:5000",
            "lab.example",
            "lab.example:8080",
        ] {
            assert_eq!(client.scheme(host), "http", "{host}");
        }
        for host in [
            "registry-1.docker.io",
            "reg.internal",
            "reg.internal:5001",
            "10.0.0.1:5000",
            "[fe80::1]:5000",
            "localhost.example.com",
        ] {
            assert_eq!(client.scheme(host), "https", "{host}");
        }
    }

    #[test]
    fn client_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Client>();
    }

    #[test]
    fn accept_header_names_every_manifest_type() {
        for t in [
            media_types::OCI_INDEX,
            media_types::OCI_MANIFEST,
            media_types::DOCKER_MANIFEST_LIST,
            media_types::DOCKER_MANIFEST,
        ] {
            assert!(MANIFEST_ACCEPT.contains(t), "{t}");
        }
    }

    #[test]
    fn media_type_from_header_document_or_shape() {
        let oci = media_types::OCI_MANIFEST;
        assert_eq!(
            media_type_of(Some(&format!("{oci}; charset=utf-8")), b"{}"),
            oci
        );
        let doc = format!(r#"{{"mediaType":"{}"}}"#, media_types::DOCKER_MANIFEST);
        assert_eq!(
            media_type_of(Some("application/json"), doc.as_bytes()),
            media_types::DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(None, br#"{"schemaVersion":2,"manifests":[]}"#),
            media_types::OCI_INDEX
        );
        assert_eq!(
            media_type_of(None, br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            media_types::OCI_MANIFEST
        );
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(url_host("https://auth.docker.io/token"), "auth.docker.io");
        assert_eq!(url_host("http://127.0.0.1:5001?x=y"), "127.0.0.1:5001");
        assert_eq!(strip_port("[::1]:5000"), "[::1]");
        assert_eq!(strip_port("a.b:1"), "a.b");
    }
}
