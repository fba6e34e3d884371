//! kiln's exporter: turns layer diffs (overlay upperdirs produced by the snapshotters) into
//! layer blobs — sorted tars with whiteouts and clamped mtimes, gzip/zstd compressed — writes
//! the image config and manifest that tie them together, and hands the result to an
//! [`Exporter`] for one output type: an OCI layout, a docker-archive, the root filesystem as
//! a directory or a tar (registry push is `kiln-registry`'s). Everything is written through the content store, so each blob is hashed once and
//! stored atomically.
//!
//! It never decides what gets built and knows nothing of Dockerfiles: it is given diff
//! directories, an image config with its history, and where to write.

mod compression;
mod dest;
mod diff_tar;
mod error;
mod exporter;
mod fill_buffer;
mod image;
mod layer;
mod oci_layout;
mod parallel_gzip;
mod rootfs;
mod tar_entry;
mod timestamp;
mod whiteout;
mod writer_thread;

pub use compression::Compression;
pub use error::Error;
pub use exporter::{
    DockerExporter, ExportInput, ExportResult, Exporter, InputKind, OciDest, OciExporter,
    RootfsExporter,
};
pub use image::{write_image, Image, ImageOptions};
pub use layer::{write_layer, write_layer_memo, write_layer_threads, Layer, LayerOptions};
pub use oci_layout::{
    write_docker_archive, write_docker_archive_to, write_oci_layout, write_oci_layout_to,
};
pub use rootfs::{write_rootfs_dir, write_rootfs_tar};
pub use timestamp::rfc3339_utc;
pub use whiteout::{OPAQUE_MARKER, WHITEOUT_PREFIX};
