//! Pruning the build cache of a state directory, as `docker builder prune -a` does for
//! BuildKit: every step result (snapshot), the step records and stat caches go, and so do the
//! blobs and unpacked layers that no image of the local image store needs. The local images
//! stay whole: their blobs, and their layers unpacked (as Docker's image store keeps its
//! images' layers extracted), so a build FROM one of them starts without unpacking anything.
//!
//! The caller holds the state directory's exclusive lock: nothing else reads or writes the
//! stores meanwhile. A prune killed half way leaves a consistent store: a snapshot is first
//! renamed into the temporary area (cleared by the next build) and only then deleted, so no
//! snapshot is ever half there under its name; a blob goes with one unlink.

use crate::content::ContentStore;
use crate::images::{ImageStore, ImageStoreError};
use crate::snapshot::{SnapshotError, SnapshotStore};
use kiln_oci::{media_types, Descriptor, Digest, ImageConfig, Index, Manifest};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why the build cache could not be pruned.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Images(#[from] ImageStoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PruneError {
    let path = path.to_path_buf();
    move |source| PruneError::Io {
        action,
        path,
        source,
    }
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Snapshots: results of build steps, and unpacked layers no local image has.
    pub snapshots: usize,
    /// Blobs of the content store that no local image needs.
    pub blobs: usize,
    /// Bytes of the files removed (records and stat caches included).
    pub bytes: u64,
}

/// What the local images need: their blobs, and the diff_ids of their layers.
#[derive(Debug, Default)]
struct Needed {
    blobs: HashSet<Digest>,
    diff_ids: HashSet<Digest>,
}

impl Needed {
    /// Follows `descriptor` (an index, a manifest) to the blobs under it. Blobs that are
    /// missing or unreadable are kept if present and not followed: pruning never deletes more
    /// because an image is damaged.
    fn add(&mut self, content: &ContentStore, descriptor: &Descriptor) {
        if !self.blobs.insert(descriptor.digest.clone()) {
            return;
        }
        let Ok(bytes) = fs::read(content.blob_path(&descriptor.digest)) else {
            return;
        };
        match descriptor.media_type.as_str() {
            media_types::OCI_INDEX | media_types::DOCKER_MANIFEST_LIST => {
                if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
                    for child in &index.manifests {
                        self.add(content, child);
                    }
                }
            }
            _ => {
                let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
                    return;
                };
                self.blobs.insert(manifest.config.digest.clone());
                self.blobs
                    .extend(manifest.layers.iter().map(|l| l.digest.clone()));
                if let Some(config) = fs::read(content.blob_path(&manifest.config.digest))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ImageConfig>(&b).ok())
                {
                    self.diff_ids.extend(config.rootfs.diff_ids);
                }
            }
        }
    }
}

/// Removes the build cache under the state root `root`, keeping the images of the local image
/// store (see the module docs). The caller holds the state directory's exclusive lock.
pub fn prune_build_cache(
    root: &Path,
    content: &ContentStore,
    snapshots: &SnapshotStore,
) -> Result<Pruned, PruneError> {
    let mut needed = Needed::default();
    for image in ImageStore::open(content)?.list()? {
        needed.add(content, &image.descriptor);
    }
    let mut pruned = Pruned::default();
    for id in snapshots.list()? {
        let keep = id
            .layer_diff_id()
            .is_some_and(|diff_id| needed.diff_ids.contains(&diff_id));
        if !keep {
            pruned.bytes += snapshots.remove(&id)?;
            pruned.snapshots += 1;
        }
    }
    for digest in content.list().map_err(io_err("list", content.root()))? {
        if !needed.blobs.contains(&digest) {
            let path = content.blob_path(&digest);
            pruned.bytes += file_bytes(&path).map_err(io_err("measure", &path))?;
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("remove", &path)(e))
                }
                _ => pruned.blobs += 1,
            }
        }
    }
    // Records and stat caches are hints: each file is whole or absent, any can go.
    for dir in [crate::records::DIR, crate::statcache::DIR] {
        let dir = root.join(dir);
        pruned.bytes += file_bytes(&dir).map_err(io_err("measure", &dir))?;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &dir)(e)),
            _ => {}
        }
    }
    Ok(pruned)
}

/// The bytes of the regular files at or under `path`, 0 if it doesn't exist (symlinks not
/// followed; a file with several names counts for each).
pub fn file_bytes(path: &Path) -> io::Result<u64> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(if meta.is_file() { meta.size() } else { 0 });
    }
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        total += file_bytes(&entry?.path())?;
    }
    Ok(total)
}
