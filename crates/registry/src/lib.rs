//! kiln's OCI distribution client: it parses and normalises image references the way Docker
//! does, finds credentials in Docker's `config.json`, answers registries' Basic and Bearer
//! challenges, resolves a tag or digest to one platform's manifest and config, and streams
//! blobs into the content store, verifying every byte against its digest. Loopback registries
//! (and ones the user marks insecure) are spoken to over plain HTTP, the rest over HTTPS.
//!
//! It knows the distribution API and the OCI image model, nothing more: no Dockerfiles, no
//! builds, no snapshots, no output formats. The API is blocking; async callers use
//! `spawn_blocking`. Pushing (`Client::push_image`: blobs skipped when present, mounted across
//! repositories when their source is known, uploaded with retries otherwise, manifests last)
//! sits next to the pull side and shares its auth handshake.

mod auth;
mod client;
mod error;
mod platform;
mod push;
mod reference;
mod retry;
mod upload;

pub use auth::{Credentials, DockerConfig};
pub use client::{Client, ClientOptions, Resolved};
pub use error::Error;
pub use push::{PushEvent, PushOptions};
pub use reference::Reference;
