//! kiln's local state: the content store (blobs by sha256, verified and written atomically), the
//! snapshot store (unpacked layers, stacked with overlayfs, or
//! copied where overlayfs can't mount), the cache index (cache key →
//! result), the local image store, and pruning all but the local images. It knows nothing of
//! Dockerfiles or of how results are computed.

pub mod content;
pub mod images;
pub mod prune;
pub mod records;
pub mod snapshot;
pub mod statcache;
pub mod unpack;

pub use content::{BlobWriter, ContentError, ContentStore};
pub use images::{ImageStore, ImageStoreError, StoredImage};
pub use prune::{file_bytes, prune_build_cache, PruneError, Pruned};
pub use records::RecordStore;
pub use snapshot::{
    copy_tree_into, materialise_layers, Mounted, Prepared, SnapshotError, SnapshotId,
    SnapshotStore, SnapshotterMode,
};
pub use statcache::{StatCache, StatCacheStats, StatFields};
pub use unpack::{unpack_layer, unpack_to_snapshot, UnpackError, Unpacked};
