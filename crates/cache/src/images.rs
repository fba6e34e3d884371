//! The local image store: images built with `-t` and no output, by name, as podman and buildah
//! keep local images.
//!
//! The store is the content store's own directory made an OCI image layout: next to its
//! `blobs/sha256/` it has an `oci-layout` file and an `index.json` whose manifests carry their
//! full image name (`docker.io/library/app:1`) in `org.opencontainers.image.ref.name`, so a
//! blob is never stored twice and any OCI tool (`skopeo`, `umoci`) can read the store as
//! `oci:ROOT/content:NAME`. The index is replaced atomically (temp file, fsync, rename) under a
//! lock, so concurrent builds that tag images never lose one another's names.

use crate::content::ContentStore;
use kiln_oci::{media_types, Descriptor, Index};
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";
const LOCK_FILE: &str = "index.lock";
/// containerd's (and BuildKit's) annotation for the full image name.
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the local image index {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageStoreError {
    let path = path.to_path_buf();
    move |source| ImageStoreError::Io {
        action,
        path,
        source,
    }
}

/// A named image of the store.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredImage {
    /// The full name, e.g. `docker.io/library/app:1`.
    pub name: String,
    /// The image's manifest (or index), without the store's name annotations.
    pub descriptor: Descriptor,
}

/// Local images by name; see the module docs.
#[derive(Clone, Debug)]
pub struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    /// Opens the image store of `content`, making its directory an OCI layout if it isn't yet.
    pub fn open(content: &ContentStore) -> Result<ImageStore, ImageStoreError> {
        let dir = content.root().to_path_buf();
        let layout = dir.join(LAYOUT_FILE);
        if !layout.is_file() {
            write_atomic(&layout, LAYOUT_JSON)?;
        }
        Ok(ImageStore { dir })
    }

    /// The OCI layout directory the store is.
    pub fn layout_dir(&self) -> &Path {
        &self.dir
    }

    /// Every named image, sorted by name.
    pub fn list(&self) -> Result<Vec<StoredImage>, ImageStoreError> {
        let index = self.read_index()?;
        let mut images: Vec<StoredImage> = index
            .manifests
            .into_iter()
            .filter_map(|mut d| {
                let name = d
                    .annotations
                    .as_ref()?
                    .get(media_types::ANNOTATION_REF_NAME)?
                    .clone();
                d.annotations = None;
                Some(StoredImage {
                    name,
                    descriptor: d,
                })
            })
            .collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// The image named `name`, if the store has it.
    pub fn get(&self, name: &str) -> Result<Option<Descriptor>, ImageStoreError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|i| i.name == name)
            .map(|i| i.descriptor))
    }

    /// Names `descriptor` `name`, replacing what had that name (returned).
    pub fn tag(
        &self,
        name: &str,
        descriptor: &Descriptor,
    ) -> Result<Option<Descriptor>, ImageStoreError> {
        self.update(|images| {
            let old = images.remove(name);
            images.insert(name.to_string(), descriptor.clone());
            old
        })
    }

    /// Removes the name `name`; returns what it named, `None` if it named nothing. The blobs
    /// stay in the content store.
    pub fn remove(&self, name: &str) -> Result<Option<Descriptor>, ImageStoreError> {
        self.update(|images| images.remove(name))
    }

    /// Applies `change` to the names under the store's lock and writes the new index.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Descriptor>) -> T,
    ) -> Result<T, ImageStoreError> {
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        let _lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("lock", &lock_path)(e.into()))?;
        let mut images: BTreeMap<String, Descriptor> = self
            .list()?
            .into_iter()
            .map(|i| (i.name, i.descriptor))
            .collect();
        let result = change(&mut images);
        let manifests = images
            .into_iter()
            .map(|(name, mut d)| {
                d.annotations = Some(BTreeMap::from([
                    (ANNOTATION_IMAGE_NAME.to_string(), name.clone()),
                    (media_types::ANNOTATION_REF_NAME.to_string(), name),
                ]));
                d
            })
            .collect();
        let index = Index {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.into()),
            manifests,
            annotations: None,
        };
        write_atomic(&self.dir.join(INDEX_FILE), &index.to_json())?;
        Ok(result)
    }

    fn read_index(&self) -> Result<Index, ImageStoreError> {
        let path = self.dir.join(INDEX_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageStoreError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index {
                schema_version: 2,
                media_type: Some(media_types::OCI_INDEX.into()),
                manifests: Vec::new(),
                annotations: None,
            }),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }
}

/// Writes `data` to `path` through a synced temp file and a rename.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageStoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(io_err("create a temp file in", dir))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err("write", path))?;
    tmp.persist(path)
        .map_err(|e| io_err("replace", path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::Digest;

    fn manifest(n: u8) -> Descriptor {
        Descriptor::new(media_types::OCI_MANIFEST, Digest::of(&[n]), 100 + n as u64)
    }

    #[test]
    fn names_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentStore::open(dir.path()).unwrap();
        let store = ImageStore::open(&content).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert_eq!(
            store.tag("docker.io/library/b:1", &manifest(1)).unwrap(),
            None
        );
        assert_eq!(
            store.tag("docker.io/library/a:1", &manifest(2)).unwrap(),
            None
        );
        assert_eq!(
            store.tag("docker.io/library/b:1", &manifest(3)).unwrap(),
            Some(manifest(1))
        );
        let names: Vec<_> = store.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["docker.io/library/a:1", "docker.io/library/b:1"]);
        assert_eq!(
            store.get("docker.io/library/b:1").unwrap(),
            Some(manifest(3))
        );
        assert_eq!(
            store.remove("docker.io/library/a:1").unwrap(),
            Some(manifest(2))
        );
        assert_eq!(store.remove("docker.io/library/a:1").unwrap(), None);
        assert_eq!(store.get("docker.io/library/a:1").unwrap(), None);
        // The store is an OCI layout: the name is the ref.name of its manifest.
        let index: Index =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let ann = index.manifests[0].annotations.as_ref().unwrap();
        assert_eq!(
            ann[media_types::ANNOTATION_REF_NAME],
            "docker.io/library/b:1"
        );
        assert!(dir.path().join("oci-layout").is_file());
    }

    #[test]
    fn concurrent_tags_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentStore::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let store = ImageStore::open(&content).unwrap();
                std::thread::spawn(move || {
                    for j in 0..10u8 {
                        store
                            .tag(&format!("app-{i}:{j}"), &manifest(i * 10 + j))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let store = ImageStore::open(&content).unwrap();
        assert_eq!(store.list().unwrap().len(), 80);
    }

    #[test]
    fn a_corrupt_index_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentStore::open(dir.path()).unwrap();
        let store = ImageStore::open(&content).unwrap();
        fs::write(dir.path().join("index.json"), b"{").unwrap();
        let err = store.list().unwrap_err().to_string();
        assert!(err.contains("index.json is corrupt"), "{err}");
    }
}
