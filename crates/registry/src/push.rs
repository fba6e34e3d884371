//! Pushing an image (a manifest, or an index of them) from the content store to a registry.
//!
//! The push walks the image from its root descriptor, then makes sure the repository has
//! every blob (configs and layers, several at a time), and only when each is confirmed puts
//! the manifests: an index's children by digest first, the root last, under its tag. Blobs
//! the registry has are skipped, which is also what lets an interrupted push be run again.
//! Each blob and manifest is retried on its own when the failure is passing (see `retry.rs`).

use crate::client::{manifest_kind, ManifestKind, MANIFEST_LIMIT};
use crate::retry::{retrying, Failure};
use crate::upload::{Outcome, Session};
use crate::{Client, Error, Reference};
use kiln_cache::{ContentError, ContentStore};
use kiln_oci::{Descriptor, Digest, Index, Manifest};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How [`Client::push_image`] pushes.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Where blobs came from, by digest: typically a base image's repository for its layers.
    /// A blob whose source is another repository of the same registry is mounted from there
    /// rather than uploaded, when the registry allows it.
    pub mount_from: HashMap<Digest, Reference>,
    /// How many blobs are pushed at the same time.
    pub jobs: usize,
    /// How many times a blob or manifest is tried before the push fails.
    pub attempts: u32,
    /// The wait after the first failed attempt, doubled after each further one (at most
    /// 16 s), unless the registry sends `Retry-After`.
    pub backoff: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            mount_from: HashMap::new(),
            jobs: 3,
            attempts: 5,
            backoff: Duration::from_millis(500),
        }
    }
}

/// What a push is doing, for progress displays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushEvent {
    /// The registry has the blob already; it is not sent.
    BlobExists { digest: Digest, size: u64 },
    /// The registry linked the blob from another of its repositories.
    BlobMounted {
        digest: Digest,
        size: u64,
        /// The repository it was mounted from.
        from: String,
    },
    /// An upload of the blob starts (again, after a retry).
    BlobUploading { digest: Digest, size: u64 },
    /// `sent` bytes of the blob are on their way (reported every MiB and at the end).
    BlobProgress {
        digest: Digest,
        sent: u64,
        size: u64,
    },
    /// The registry confirmed the blob.
    BlobUploaded { digest: Digest, size: u64 },
    /// An attempt at a blob or manifest failed transiently; the next starts after `delay`.
    Retrying {
        digest: Digest,
        /// Failed attempts so far.
        attempt: u32,
        delay: Duration,
        /// The failure, in words.
        reason: String,
    },
    /// A manifest or index is in the registry under `tag_or_digest`.
    ManifestPushed {
        digest: Digest,
        media_type: String,
        tag_or_digest: String,
    },
}

impl Client {
    /// Pushes the image (manifest or index) `root` from `store` to `reference`'s repository:
    /// every blob, then the manifests, the root last under `reference`'s tag (or its digest,
    /// which must be `root`'s). Returns the digest the registry stored the root under.
    pub fn push_image(
        &self,
        store: &ContentStore,
        reference: &Reference,
        root: &Descriptor,
        opts: &PushOptions,
        progress: &(dyn Fn(PushEvent) + Sync),
    ) -> Result<Digest, Error> {
        if let Some(pinned) = reference.digest.as_ref().filter(|d| **d != root.digest) {
            return Err(Error::InvalidReference {
                input: reference.familiar(),
                reason: format!("it pins {pinned}, but the image to push is {}", root.digest),
            });
        }
        let plan = Plan::of(store, reference, root)?;
        let sources: HashMap<&Digest, &str> = opts
            .mount_from
            .iter()
            .filter(|(_, from)| {
                from.registry == reference.registry && from.repository != reference.repository
            })
            .map(|(digest, from)| (digest, from.repository.as_str()))
            .collect();
        let session = Session::new(self, reference, sources.values().copied());
        let pusher = Pusher {
            session: &session,
            store,
            reference,
            opts,
            progress,
        };
        pusher.push_blobs(&plan.blobs, &sources)?;
        for (desc, bytes) in &plan.manifests {
            let selector = match desc.digest == root.digest {
                true => reference.manifest_selector(),
                false => desc.digest.to_string(),
            };
            pusher.push_manifest(desc, bytes, &selector)?;
        }
        Ok(root.digest.clone())
    }
}

/// What one image consists of: its blobs, and its manifests with the root last.
struct Plan {
    blobs: Vec<Descriptor>,
    /// Manifests and indexes with their bytes, children before their index.
    manifests: Vec<(Descriptor, Vec<u8>)>,
    seen: HashSet<Digest>,
}

impl Plan {
    fn of(store: &ContentStore, r: &Reference, root: &Descriptor) -> Result<Plan, Error> {
        let mut plan = Plan {
            blobs: Vec::new(),
            manifests: Vec::new(),
            seen: HashSet::new(),
        };
        plan.visit(store, r, root)?;
        Ok(plan)
    }

    fn visit(
        &mut self,
        store: &ContentStore,
        r: &Reference,
        desc: &Descriptor,
    ) -> Result<(), Error> {
        if !self.seen.insert(desc.digest.clone()) {
            return Ok(());
        }
        let bytes = read_manifest(store, r, desc)?;
        let invalid = |what: &str, e: serde_json::Error| Error::LocalContent {
            reference: r.familiar(),
            what: format!("the manifest {}", desc.digest),
            reason: format!("it is not a valid {what}: {e}"),
        };
        match manifest_kind(r, &desc.media_type)? {
            ManifestKind::Image => {
                let manifest: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| invalid("image manifest", e))?;
                for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                    if self.seen.insert(blob.digest.clone()) {
                        self.blobs.push(blob.clone());
                    }
                }
            }
            ManifestKind::Index => {
                let index: Index =
                    serde_json::from_slice(&bytes).map_err(|e| invalid("image index", e))?;
                for child in &index.manifests {
                    self.visit(store, r, child)?;
                }
            }
        }
        self.manifests.push((desc.clone(), bytes));
        Ok(())
    }
}

/// A manifest's bytes from the store, checked against its descriptor.
fn read_manifest(store: &ContentStore, r: &Reference, desc: &Descriptor) -> Result<Vec<u8>, Error> {
    let local = |reason: String| Error::LocalContent {
        reference: r.familiar(),
        what: format!("the manifest {}", desc.digest),
        reason,
    };
    if desc.size > MANIFEST_LIMIT {
        return Err(local(format!(
            "its descriptor says {} bytes, more than the {MANIFEST_LIMIT} registries accept",
            desc.size
        )));
    }
    let content = |source| Error::Content {
        reference: r.familiar(),
        source,
    };
    let mut bytes = Vec::new();
    store
        .open_blob(&desc.digest)
        .map_err(content)?
        .take(MANIFEST_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| {
            content(ContentError::Io {
                action: "read",
                path: store.blob_path(&desc.digest),
                source,
            })
        })?;
    if bytes.len() as u64 != desc.size || Digest::of(&bytes) != desc.digest {
        return Err(local(format!(
            "the content store's copy ({} bytes) does not match its descriptor ({} bytes)",
            bytes.len(),
            desc.size
        )));
    }
    Ok(bytes)
}

/// One push under way.
struct Pusher<'a> {
    session: &'a Session<'a>,
    store: &'a ContentStore,
    reference: &'a Reference,
    opts: &'a PushOptions,
    progress: &'a (dyn Fn(PushEvent) + Sync),
}

impl Pusher<'_> {
    /// Pushes `blobs`, `opts.jobs` at a time; stops at the first that fails for good.
    fn push_blobs(
        &self,
        blobs: &[Descriptor],
        sources: &HashMap<&Digest, &str>,
    ) -> Result<(), Error> {
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let workers = self.opts.jobs.clamp(1, blobs.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if failed.lock().unwrap().is_some() {
                        return;
                    }
                    let Some(desc) = blobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    let source = sources.get(&desc.digest).copied();
                    if let Err(e) = self.push_blob(desc, source) {
                        failed.lock().unwrap().get_or_insert(e);
                        return;
                    }
                });
            }
        });
        match failed.into_inner().unwrap() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn push_blob(&self, desc: &Descriptor, source: Option<&str>) -> Result<(), Error> {
        let outcome = self.retrying(&desc.digest, &format!("the blob {}", desc.digest), || {
            self.session
                .push_blob(self.store, desc, source, self.progress)
        })?;
        let (digest, size) = (desc.digest.clone(), desc.size);
        (self.progress)(match outcome {
            Outcome::Exists => PushEvent::BlobExists { digest, size },
            Outcome::Mounted => PushEvent::BlobMounted {
                digest,
                size,
                from: source.unwrap_or_default().to_string(),
            },
            Outcome::Uploaded => PushEvent::BlobUploaded { digest, size },
        });
        Ok(())
    }

    fn push_manifest(&self, desc: &Descriptor, bytes: &[u8], selector: &str) -> Result<(), Error> {
        self.retrying(
            &desc.digest,
            &format!("the manifest {}", desc.digest),
            || self.session.put_manifest(desc, bytes, selector),
        )?;
        (self.progress)(PushEvent::ManifestPushed {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            tag_or_digest: selector.to_string(),
        });
        Ok(())
    }

    /// Runs `attempt` with the push's retry policy, reporting each retry.
    fn retrying<T>(
        &self,
        digest: &Digest,
        what: &str,
        attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let r = self.reference;
        // Inner errors name the reference already; the outer message says it once.
        let unprefixed = |e: &Error| {
            let text = e.to_string();
            let prefix = format!("{}: ", r.familiar());
            text.strip_prefix(&prefix)
                .map_or(text.clone(), str::to_string)
        };
        let on_retry = |attempt, delay, e: &Error| {
            (self.progress)(PushEvent::Retrying {
                digest: digest.clone(),
                attempt,
                delay,
                reason: unprefixed(e),
            })
        };
        let exhausted = |last: Error, attempts| Error::PushGaveUp {
            reference: r.familiar(),
            registry: r.registry.clone(),
            what: what.to_string(),
            attempts,
            last: unprefixed(&last),
        };
        retrying(
            self.opts.attempts,
            self.opts.backoff,
            attempt,
            on_retry,
            exhausted,
        )
    }
}
