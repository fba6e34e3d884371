//! Why a registry operation failed, in sentences that name the image and say what to check.

use kiln_oci::{Digest, Platform};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Why a registry operation failed. Each message names the image reference it was about
/// (in its familiar form, as the user wrote it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not an image reference.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },

    /// The registry has no such repository, tag, manifest or blob.
    #[error("{reference}: not found in the registry ({detail})")]
    NotFound { reference: String, detail: String },

    /// The registry refused our credentials, or wants some and we have none.
    #[error("{reference}: unauthorized: {hint}")]
    Unauthorized { reference: String, hint: String },

    /// The credentials were accepted but do not grant access to the repository.
    #[error("{reference}: access denied by the registry ({detail}); check that the account for {registry} may pull it")]
    Denied {
        reference: String,
        registry: String,
        detail: String,
    },

    /// The registry accepted the connection but sent nothing back in time.
    #[error("{reference}: registry did not answer within {}", Seconds(*timeout))]
    Timeout {
        reference: String,
        timeout: Duration,
    },

    /// No connection could be made (refused, unknown host, TLS failure).
    #[error("{reference}: could not connect to {host}: {reason}")]
    Connect {
        reference: String,
        host: String,
        reason: String,
    },

    /// An established connection broke before the registry answered (e.g. mid-upload).
    #[error("{reference}: the connection to {host} broke: {reason}")]
    ConnectionLost {
        reference: String,
        host: String,
        reason: String,
    },

    /// Content did not hash to the digest it was asked for by.
    #[error("{reference}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },

    /// A blob was longer or shorter than its descriptor says.
    #[error("{reference}: blob {digest} should be {expected} bytes, the registry sent {actual}")]
    SizeMismatch {
        reference: String,
        digest: Digest,
        expected: u64,
        actual: String,
    },

    /// The index has no manifest for the wanted platform.
    #[error("{reference}: no image for {wanted} in the index (available: {available})")]
    NoMatchingPlatform {
        reference: String,
        wanted: Platform,
        available: String,
    },

    /// The manifest is of a kind kiln cannot use (e.g. Docker schema 1).
    #[error("{reference}: unsupported manifest type {media_type:?}{hint}")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
        hint: &'static str,
    },

    /// The registry sent something that is not what the distribution spec describes.
    #[error("{reference}: the registry sent an invalid {what}: {reason}")]
    InvalidResponse {
        reference: String,
        what: &'static str,
        reason: String,
    },

    /// The registry answered with an error status kiln has no better words for.
    #[error("{reference}: registry {host} answered HTTP {status}: {detail}")]
    Status {
        reference: String,
        host: String,
        status: u16,
        detail: String,
    },

    /// The content store could not take the blob.
    #[error("{reference}: {source}")]
    Content {
        reference: String,
        source: kiln_cache::ContentError,
    },

    /// The registry refused part of a push: a blob, a manifest, or access to the repository.
    #[error(
        "{reference}: registry {registry} rejected {what} for repository {repository}: {detail}"
    )]
    PushRejected {
        reference: String,
        registry: String,
        repository: String,
        what: String,
        detail: String,
    },

    /// A push kept failing with errors that usually pass (dropped connections, timeouts, 5xx,
    /// 429) until kiln stopped trying.
    #[error("{reference}: pushing {what} to {registry} failed {attempts} times, the last time with: {last}; what was pushed stays in the registry, so running the push again continues from there")]
    PushGaveUp {
        reference: String,
        registry: String,
        what: String,
        attempts: u32,
        last: String,
    },

    /// What was to be pushed is not in the content store as its descriptor says.
    #[error("{reference}: cannot push {what}: {reason}")]
    LocalContent {
        reference: String,
        what: String,
        reason: String,
    },

    /// The Docker config file exists but cannot be used.
    #[error("could not read the Docker config {}: {reason}", path.display())]
    DockerConfig { path: PathBuf, reason: String },
}

/// A duration as people write timeouts: `30s`, `1.5s`, `250ms`.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_secs() == 0 {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}s", d.as_secs_f64())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_naturally() {
        let e = |t| {
            Error::Timeout {
                reference: "127.0.0.1:5055/x:1".into(),
                timeout: t,
            }
            .to_string()
        };
        assert_eq!(
            e(Duration::from_secs(30)),
            "127.0.0.1:5055/x:1: registry did not answer within 30s"
        );
        assert!(e(Duration::from_millis(250)).ends_with("within 250ms"));
        assert!(e(Duration::from_millis(1500)).ends_with("within 1.5s"));
    }
}
