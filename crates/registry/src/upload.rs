//! One push's conversation with a repository, and one blob's way into it, as the distribution
//! spec describes: `HEAD` to learn whether the registry has the blob, a cross-repository
//! mount when another repository of the registry has it, else an upload session (`POST`) and
//! one `PUT` streaming the blob from the content store with its length known.
//!
//! Every step answers with a [`Failure`] that says whether trying again can help; the caller
//! retries the whole blob, since a broken upload session cannot be trusted.

use crate::client::{read_errors, reason, url_host, CallError};
use crate::retry::{self, Failure};
use crate::{Client, Error, PushEvent, Reference};
use kiln_cache::{ContentError, ContentStore};
use kiln_oci::{Descriptor, Digest};
use std::fs::File;
use std::io::{self, Read};
use ureq::http::{Method, Request, Response, StatusCode};
use ureq::{Body, SendBody};

/// Progress is reported each time this many more bytes are sent.
const PROGRESS_STEP: u64 = 1 << 20;

/// How a blob came to be in the repository.
pub(crate) enum Outcome {
    /// The registry had it already.
    Exists,
    /// The registry linked it from another repository.
    Mounted,
    /// kiln sent it.
    Uploaded,
}

/// Requests to one repository for one push, all under the same token scopes.
pub(crate) struct Session<'a> {
    client: &'a Client,
    target: &'a Reference,
    /// `repository:<target>:pull,push`, and `repository:<source>:pull` per mount source.
    scopes: Vec<String>,
    /// `http[s]://host/v2/<repository>`.
    base: String,
}

impl<'a> Session<'a> {
    /// A session pushing to `target` that may mount blobs from `sources` (repositories of the
    /// same registry).
    pub(crate) fn new<'s>(
        client: &'a Client,
        target: &'a Reference,
        sources: impl IntoIterator<Item = &'s str>,
    ) -> Session<'a> {
        let mut sources: Vec<&str> = sources.into_iter().collect();
        sources.sort_unstable();
        sources.dedup();
        let scopes = std::iter::once(format!("repository:{}:pull,push", target.repository))
            .chain(sources.iter().map(|s| format!("repository:{s}:pull")))
            .collect();
        let host = target.api_host();
        let base = format!("{}://{host}/v2/{}", client.scheme(host), target.repository);
        Session {
            client,
            target,
            scopes,
            base,
        }
    }

    /// Puts a manifest or index under `selector` (a tag or its digest) and checks the digest
    /// the registry says it stored it as.
    pub(crate) fn put_manifest(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        selector: &str,
    ) -> Result<(), Failure> {
        let what = format!("the manifest {}", desc.digest);
        let url = format!("{}/manifests/{selector}", self.base);
        let headers = [("Content-Type", desc.media_type.as_str())];
        let resp = self.send(Method::PUT, &url, &headers, Some(bytes))?;
        if !resp.status().is_success() {
            return Err(self.refused(resp, &what));
        }
        self.check_digest(&resp, &desc.digest, &what)
    }

    /// Makes sure the repository has the blob: already there, mounted from `source`, or
    /// uploaded from the store.
    pub(crate) fn push_blob(
        &self,
        store: &ContentStore,
        desc: &Descriptor,
        source: Option<&str>,
        progress: &(dyn Fn(PushEvent) + Sync),
    ) -> Result<Outcome, Failure> {
        if self.exists(desc)? {
            return Ok(Outcome::Exists);
        }
        let session = match source {
            Some(source) => match self.mount(desc, source)? {
                None => return Ok(Outcome::Mounted),
                started => started,
            },
            None => None,
        };
        let file = self.open_blob(store, desc)?;
        let location = match session {
            Some(location) => location,
            None => self.start_upload()?,
        };
        self.upload(file, desc, &location, progress)?;
        Ok(Outcome::Uploaded)
    }

    fn exists(&self, desc: &Descriptor) -> Result<bool, Failure> {
        let url = format!("{}/blobs/{}", self.base, desc.digest);
        let resp = self.send(Method::HEAD, &url, &[], None)?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.refused(resp, &format!("the blob {}", desc.digest))),
        }
    }

    /// Asks the registry to link the blob from `source`: `None` if it did, else the upload
    /// session it opened instead (registries that do not mount, or may not read `source`).
    fn mount(&self, desc: &Descriptor, source: &str) -> Result<Option<String>, Failure> {
        let url = format!(
            "{}/blobs/uploads/?mount={}&from={source}",
            self.base, desc.digest
        );
        let resp = self.send(Method::POST, &url, &[], Some(b""))?;
        match resp.status() {
            StatusCode::CREATED => Ok(None),
            StatusCode::ACCEPTED => self.location(&resp).map(Some),
            _ => Err(self.refused(resp, &format!("the blob {}", desc.digest))),
        }
    }

    /// Opens an upload session and returns its location.
    fn start_upload(&self) -> Result<String, Failure> {
        let url = format!("{}/blobs/uploads/", self.base);
        let resp = self.send(Method::POST, &url, &[], Some(b""))?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.refused(resp, "a new upload"));
        }
        self.location(&resp)
    }

    fn open_blob(&self, store: &ContentStore, desc: &Descriptor) -> Result<File, Failure> {
        let content = |source| Error::Content {
            reference: self.target.familiar(),
            source,
        };
        let file = store.open_blob(&desc.digest).map_err(content)?;
        let len = file
            .metadata()
            .map_err(|source| {
                content(ContentError::Io {
                    action: "read the size of",
                    path: store.blob_path(&desc.digest),
                    source,
                })
            })?
            .len();
        if len != desc.size {
            return Err(self
                .local(
                    &desc.digest,
                    format!(
                        "the content store holds {len} bytes, its descriptor says {}",
                        desc.size
                    ),
                )
                .into());
        }
        Ok(file)
    }

    /// Sends the whole blob in one `PUT` that closes the session at `location`.
    fn upload(
        &self,
        file: File,
        desc: &Descriptor,
        location: &str,
        progress: &(dyn Fn(PushEvent) + Sync),
    ) -> Result<(), Failure> {
        let what = format!("the blob {}", desc.digest);
        let url = self.upload_url(location, &desc.digest);
        let host = url_host(&url).to_string();
        // Credentials go to the registry only, not to storage it may hand uploads to.
        let ours = host == self.target.api_host();
        progress(PushEvent::BlobUploading {
            digest: desc.digest.clone(),
            size: desc.size,
        });
        let mut body = Sending {
            file: file.take(desc.size),
            digest: &desc.digest,
            size: desc.size,
            sent: 0,
            reported: 0,
            progress,
            disk_error: None,
        };
        let size = desc.size.to_string();
        let result =
            self.client
                .call_authorized(self.target, &self.scopes, false, |authorization| {
                    let mut req = self
                        .client
                        .agent_for(&host)
                        .put(&url)
                        .header("Content-Type", "application/octet-stream")
                        .header("Content-Length", &size);
                    if let (true, Some(authorization)) = (ours, authorization) {
                        req = req.header("Authorization", authorization);
                    }
                    req.send(SendBody::from_reader(&mut body))
                });
        if let Some(e) = body.disk_error.take() {
            return Err(self
                .local(
                    &desc.digest,
                    format!("reading it from the content store failed: {e}"),
                )
                .into());
        }
        let resp = result.map_err(|e| self.call_failure(e, &host))?;
        match resp.status() {
            // The authorization was forgotten; the next attempt starts with a new one.
            StatusCode::UNAUTHORIZED => Err(Failure::transient(
                self.client.unauthorized_to_push(self.target),
                None,
            )),
            s if s.is_success() => self.check_digest(&resp, &desc.digest, &what),
            _ => Err(self.refused(resp, &what)),
        }
    }

    /// An upload's location (absolute, or relative to the registry, possibly with a query of
    /// its own) with the blob's digest added, which closes the session.
    fn upload_url(&self, location: &str, digest: &Digest) -> String {
        let url = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            let host = self.target.api_host();
            format!("{}://{host}{location}", self.client.scheme(host))
        } else {
            format!("{}/blobs/uploads/{location}", self.base)
        };
        let url = url.split('#').next().unwrap_or(&url);
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}digest={digest}")
    }

    fn location(&self, resp: &Response<Body>) -> Result<String, Failure> {
        resp.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Failure::from(Error::InvalidResponse {
                    reference: self.target.familiar(),
                    what: "upload session",
                    reason: "it has no Location header".into(),
                })
            })
    }

    /// Checks the registry's `Docker-Content-Digest`, when it sends one, against `expected`.
    fn check_digest(
        &self,
        resp: &Response<Body>,
        expected: &Digest,
        what: &str,
    ) -> Result<(), Failure> {
        let Some(announced) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(());
        };
        if announced == expected.to_string() {
            return Ok(());
        }
        Err(Failure::from(Error::InvalidResponse {
            reference: self.target.familiar(),
            what: "Docker-Content-Digest",
            reason: format!("kiln pushed {what}, the registry says it stored {announced}"),
        }))
    }

    /// Sends a request whose body (if any) can be sent again after an auth challenge.
    fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response<Body>, Failure> {
        let host = self.target.api_host();
        let resp = self
            .client
            .call_authorized(self.target, &self.scopes, true, |authorization| {
                let mut req = Request::builder().method(method.clone()).uri(url);
                for (name, value) in headers {
                    req = req.header(*name, *value);
                }
                if let Some(authorization) = authorization {
                    req = req.header("Authorization", authorization);
                }
                let agent = self.client.agent_for(host);
                // SendBody is invariant in its lifetime, so each arm sends its own.
                match body {
                    Some(mut bytes) => {
                        let req = req
                            .header("Content-Length", bytes.len())
                            .body(SendBody::from_reader(&mut bytes))
                            .map_err(ureq::Error::Http)?;
                        agent.run(req)
                    }
                    None => agent.run(req.body(SendBody::none()).map_err(ureq::Error::Http)?),
                }
            })
            .map_err(|e| self.call_failure(e, host))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(Failure::from(self.client.unauthorized_to_push(self.target)));
        }
        Ok(resp)
    }

    fn call_failure(&self, e: CallError, host: &str) -> Failure {
        match e {
            CallError::Auth(e) => Failure::Fatal(e),
            CallError::Transport(e) => {
                let transient = retry::transport_is_transient(&e);
                let error = self.connection_error(host, *e);
                match transient {
                    true => Failure::transient(error, None),
                    false => error.into(),
                }
            }
        }
    }

    /// A transport error in words: a connection that broke once made is not a failure to
    /// connect, as a pull would put it.
    fn connection_error(&self, host: &str, e: ureq::Error) -> Error {
        let lost = |reason: &str| Error::ConnectionLost {
            reference: self.target.familiar(),
            host: host.to_string(),
            reason: reason.to_string(),
        };
        match &e {
            ureq::Error::Io(io) => match io.kind() {
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    lost("the connection was reset")
                }
                io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
                    lost("the registry closed the connection before answering")
                }
                _ => self.client.transport_error(self.target, host, e),
            },
            ureq::Error::Protocol(p) => lost(&format!("the answer was cut or garbled ({p})")),
            _ => self.client.transport_error(self.target, host, e),
        }
    }

    /// What an error status means for the push of `what`.
    fn refused(&self, mut resp: Response<Body>, what: &str) -> Failure {
        let status = resp.status();
        let retry_after = retry::retry_after(&resp);
        let errors = read_errors(&mut resp);
        let said = errors.summary(true).unwrap_or_else(|| reason(status));
        // An expired or purged upload session is started afresh.
        if retry::status_is_transient(status) || errors.has_code("BLOB_UPLOAD_UNKNOWN") {
            let error = Error::Status {
                reference: self.target.familiar(),
                host: self.target.api_host().to_string(),
                status: status.as_u16(),
                detail: said,
            };
            return Failure::transient(error, retry_after);
        }
        let t = self.target;
        let detail = match status {
            StatusCode::UNAUTHORIZED => return Failure::from(self.client.unauthorized_to_push(t)),
            StatusCode::FORBIDDEN => format!(
                "access denied ({said}); check that the account for {} may push to {}",
                t.registry, t.repository
            ),
            _ => format!("HTTP {}: {said}", status.as_u16()),
        };
        Failure::from(Error::PushRejected {
            reference: t.familiar(),
            registry: t.registry.clone(),
            repository: t.repository.clone(),
            what: what.to_string(),
            detail,
        })
    }

    fn local(&self, digest: &Digest, reason: String) -> Error {
        Error::LocalContent {
            reference: self.target.familiar(),
            what: format!("the blob {digest}"),
            reason,
        }
    }
}

/// A blob streaming from the store into a request, reporting progress; a read error is
/// kept aside so that a failing disk is not mistaken for a failing network.
struct Sending<'p> {
    file: io::Take<File>,
    digest: &'p Digest,
    size: u64,
    sent: u64,
    reported: u64,
    progress: &'p (dyn Fn(PushEvent) + Sync),
    disk_error: Option<io::Error>,
}

impl Read for Sending<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.file.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let kind = e.kind();
                self.disk_error = Some(e);
                return Err(io::Error::new(kind, "reading the blob failed"));
            }
        };
        self.sent += n as u64;
        if self.sent - self.reported >= PROGRESS_STEP || (n > 0 && self.sent == self.size) {
            self.reported = self.sent;
            (self.progress)(PushEvent::BlobProgress {
                digest: self.digest.clone(),
                sent: self.sent,
                size: self.size,
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientOptions;

    #[test]
    fn upload_locations_relative_absolute_and_with_a_query() {
        let client = Client::new(ClientOptions {
            docker_config: Some("/nonexistent/config.json".into()),
            ..ClientOptions::default()
        })
        .unwrap();
        let target: Reference = "127.0.0.1:5000/team/app:1".parse().unwrap();
        let session = Session::new(&client, &target, ["team/base", "team/base", "other"]);
        assert_eq!(
            session.scopes,
            [
                "repository:team/app:pull,push",
                "repository:other:pull",
                "repository:team/base:pull"
            ]
        );
        let d = Digest::of(b"x");
        assert_eq!(
            session.upload_url("/v2/team/app/blobs/uploads/u1?_state=abc", &d),
            format!("http://127.0.0.1:5000/v2/team/app/blobs/uploads/u1?_state=abc&digest={d}")
        );
        assert_eq!(
            session.upload_url("https://storage.example/up/u2", &d),
            format!("https://storage.example/up/u2?digest={d}")
        );
        assert_eq!(
            session.upload_url("u3", &d),
            format!("http://127.0.0.1:5000/v2/team/app/blobs/uploads/u3?digest={d}")
        );
    }
}
