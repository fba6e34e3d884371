//! Step records: for each step of a build (named by an identity that stays the same while the
//! step's cache key changes), the key it had last and the inputs behind that key, so the next
//! build can say why the step missed the cache. One JSON file per step under
//! `<root>/records/<blake3(identity)>.json`, written to a temporary file and renamed, so a
//! reader never sees half a record and concurrent builds leave one whole record (the last).
//!
//! The store doesn't know what the inputs are: a record is any serialisable value whose first
//! field is `key` (the step's cache key in hex), which [`RecordStore::key_matches`] checks
//! without parsing the rest.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The directory of the records under the state root.
pub(crate) const DIR: &str = "records";

/// Records of steps, by identity.
#[derive(Clone, Debug)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    /// The records of the state root `root` (the directory is made on first write).
    pub fn open(root: &Path) -> RecordStore {
        RecordStore {
            dir: root.join(DIR),
        }
    }

    fn path(&self, identity: &str) -> PathBuf {
        let name = blake3::hash(identity.as_bytes()).to_hex();
        self.dir.join(format!("{name}.json"))
    }

    /// The record of `identity`; `None` when there is none or it can't be read (a record is
    /// a hint: an unreadable one is as good as none).
    pub fn load<T: DeserializeOwned>(&self, identity: &str) -> Option<T> {
        let data = fs::read(self.path(identity)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Whether the record of `identity` was written for the cache key `key` (hex), reading
    /// only the start of the file. Records written by [`store`](Self::store) of a value whose
    /// first field is `key` start with `{"key":"<hex>"`.
    pub fn key_matches(&self, identity: &str, key: &str) -> bool {
        let prefix = format!("{{\"key\":\"{key}\"");
        let Ok(file) = fs::File::open(self.path(identity)) else {
            return false;
        };
        let mut head = Vec::with_capacity(prefix.len());
        if file
            .take(prefix.len() as u64)
            .read_to_end(&mut head)
            .is_err()
        {
            return false;
        }
        head == prefix.as_bytes()
    }

    /// Replaces the record of `identity` with `record`, atomically.
    pub fn store<T: Serialize>(&self, identity: &str, record: &T) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let data = serde_json::to_vec(record).map_err(io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&data)?;
        tmp.persist(self.path(identity)).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Rec {
        key: String,
        files: Vec<String>,
    }

    #[test]
    fn stores_loads_and_checks_keys() {
        let root = tempfile::tempdir().unwrap();
        let store = RecordStore::open(root.path());
        assert_eq!(store.load::<Rec>("Dockerfile:app:3"), None);
        assert!(!store.key_matches("Dockerfile:app:3", "ab"));
        let rec = Rec {
            key: "ab".into(),
            files: vec!["src/a".into()],
        };
        store.store("Dockerfile:app:3", &rec).unwrap();
        assert_eq!(store.load::<Rec>("Dockerfile:app:3"), Some(rec));
        assert!(store.key_matches("Dockerfile:app:3", "ab"));
        assert!(!store.key_matches("Dockerfile:app:3", "cd"));
        assert!(!store.key_matches("Dockerfile:app:4", "ab"));
        // Nothing is left beside the record.
        assert_eq!(
            fs::read_dir(root.path().join("records")).unwrap().count(),
            1
        );
    }
}
