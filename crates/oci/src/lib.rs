//! The OCI image model that kiln's crates share: content digests, descriptors, the image
//! config (with Docker's extensions such as `Healthcheck`, `Shell` and `OnBuild`, which the OCI
//! spec lacks but BuildKit writes), manifests, indexes and platforms.
//!
//! Plain data and (de)serialisation only: this crate knows neither Dockerfiles nor how images
//! are built, stored or moved. Field order in the structs is the order of the JSON we write,
//! which makes our digests reproducible.

mod config;
mod digest;
mod manifest;
mod platform;

pub use config::{EmptyObject, Healthcheck, HistoryEntry, ImageConfig, RootFs, RunConfig};
pub use digest::{Digest, DigestError, Sha256Writer};
pub use manifest::{media_types, Descriptor, Index, Manifest};
pub use platform::{Platform, PlatformError};
