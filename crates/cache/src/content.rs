//! The content store: blobs named by their sha256 digest under `<root>/blobs/sha256/<hex>`.
//!
//! A blob is first written to a temp file in `<root>/ingest/` while it is hashed, fsynced, and
//! only then renamed to its final name, once its digest is known (and checked against the
//! expected one, if any). A crash therefore never leaves a partial blob under a digest name;
//! at worst it leaves a stray temp file in `ingest/` for garbage collection to remove.

use kiln_oci::{Digest, Sha256Writer};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// Why a content store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("blob {digest} is not in the content store (looked for {})", path.display())]
    NotFound { digest: Digest, path: PathBuf },
    #[error("the written content hashes to {actual}, not the expected {expected}; the blob was discarded")]
    DigestMismatch { expected: Digest, actual: Digest },
}

impl ContentError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContentError {
        let path = path.to_path_buf();
        move |source| ContentError::Io {
            action,
            path,
            source,
        }
    }
}

/// Blobs by sha256 digest, written atomically and verified.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens the store at `root`, creating its directories if needed.
    pub fn open(root: &Path) -> Result<ContentStore, ContentError> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        for dir in [&blobs, &ingest] {
            fs::create_dir_all(dir).map_err(ContentError::io("create directory", dir))?;
        }
        Ok(ContentStore {
            root: root.to_path_buf(),
            blobs,
            ingest,
        })
    }

    /// Removes the temp files of writers that never committed (a crashed process). Only safe
    /// when no other process writes to this store.
    pub fn clear_ingest(&self) -> Result<(), ContentError> {
        let entries = fs::read_dir(&self.ingest).map_err(ContentError::io("list", &self.ingest))?;
        for entry in entries {
            let path = entry
                .map_err(ContentError::io("list", &self.ingest))?
                .path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ContentError::io("remove", &path)(e)),
            }
        }
        Ok(())
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with digest `d` is (or would be) stored.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// The digests of every blob in the store (files with other names are not blobs).
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let mut digests = Vec::new();
        for entry in fs::read_dir(&self.blobs)? {
            let name = entry?.file_name();
            if let Some(digest) = name
                .to_str()
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
            {
                digests.push(digest);
            }
        }
        Ok(digests)
    }

    /// Whether the blob with digest `d` is in the store.
    pub fn contains(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// A writer for a new blob; call [`BlobWriter::commit`] to store it.
    pub fn writer(&self) -> Result<BlobWriter, ContentError> {
        let temp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.ingest)
            .map_err(ContentError::io("create a temp file in", &self.ingest))?;
        Ok(BlobWriter {
            out: Sha256Writer::new(BufWriter::with_capacity(
                1 << 16,
                Writeback {
                    temp,
                    written: 0,
                    started: 0,
                },
            )),
            blobs: self.blobs.clone(),
        })
    }

    /// Stores `data` as a blob and returns its digest and size.
    pub fn put(&self, data: &[u8]) -> Result<(Digest, u64), ContentError> {
        let mut w = self.writer()?;
        w.write_all(data)
            .map_err(ContentError::io("write", &self.ingest))?;
        w.commit(None)
    }

    /// Opens the blob with digest `d` for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File, ContentError> {
        let path = self.blob_path(d);
        File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound {
                digest: d.clone(),
                path,
            },
            _ => ContentError::Io {
                action: "open blob",
                path,
                source,
            },
        })
    }
}

/// A blob being written: a temp file in `ingest/` that hashes and counts what goes through.
pub struct BlobWriter {
    out: Sha256Writer<BufWriter<Writeback>>,
    blobs: PathBuf,
}

/// How much of a blob is written before the kernel is asked to start writing it to disk.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A blob's temp file that starts the disk writes of what it was given every
/// [`WRITEBACK_CHUNK`] bytes (`sync_file_range`, without waiting), so that the fsync that
/// seals a large blob finds most of it on disk already instead of writing it all then.
struct Writeback {
    temp: NamedTempFile,
    written: u64,
    started: u64,
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.temp.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_CHUNK {
            start_writeback(
                self.temp.as_file(),
                self.started,
                self.written - self.started,
            );
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk. Only a hint:
/// a file system that can't is left to the fsync.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is open for the call.
    unsafe {
        nix::libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            len,
            nix::libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl BlobWriter {
    /// Stores the blob under its digest and returns the digest and size.
    ///
    /// With `expected`, a blob whose digest differs is discarded and an error returned. If the
    /// blob is already in the store the temp file is simply dropped.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), ContentError> {
        let (digest, size, buffered) = self.out.finish();
        let temp = buffered.into_inner().map(|w| w.temp).map_err(|e| {
            let (source, buffered) = e.into_parts();
            ContentError::Io {
                action: "write",
                path: buffered.get_ref().temp.path().to_path_buf(),
                source,
            }
        })?;
        if let Some(expected) = expected {
            if *expected != digest {
                // Dropping `temp` removes the file.
                return Err(ContentError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let dest = self.blobs.join(digest.hex());
        if dest.is_file() {
            return Ok((digest, size));
        }
        seal(temp.as_file()).map_err(ContentError::io("sync", temp.path()))?;
        temp.persist(&dest).map_err(|e| ContentError::Io {
            action: "move blob into place at",
            path: dest.clone(),
            source: e.error,
        })?;
        // Make the rename itself durable.
        File::open(&self.blobs)
            .and_then(|dir| dir.sync_all())
            .map_err(ContentError::io("sync directory", &self.blobs))?;
        Ok((digest, size))
    }
}

/// Makes a finished blob read-only (blobs are shared, e.g. hardlinked into exports) and durable.
fn seal(file: &File) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(0o444))?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest_is_empty(store: &ContentStore) -> bool {
        fs::read_dir(store.root().join("ingest"))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn put_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let (d, n) = store.put(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(n, 5);
        assert!(store.contains(&d));
        assert_eq!(fs::read(store.blob_path(&d)).unwrap(), b"hello");
        let mode = fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        assert!(ingest_is_empty(&store));
        assert_eq!(
            store.blob_path(&d),
            dir.path()
                .join("content/blobs/sha256")
                .join(Digest::of(b"hello").hex())
        );
    }

    #[test]
    fn writer_with_expected_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"streamed ").unwrap();
        w.write_all(b"blob").unwrap();
        let want = Digest::of(b"streamed blob");
        assert_eq!(w.commit(Some(&want)).unwrap(), (want.clone(), 13));
        assert!(store.contains(&want));
    }

    /// A blob of several writeback chunks, written in odd-sized pieces, comes back whole.
    #[test]
    fn a_large_blob_is_written_back_early_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(2 * WRITEBACK_CHUNK + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut w = store.writer().unwrap();
        for piece in data.chunks(1_000_003) {
            w.write_all(piece).unwrap();
        }
        let (digest, size) = w.commit(Some(&Digest::of(&data))).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), data);
        assert!(ingest_is_empty(&store));
    }

    #[test]
    fn wrong_expected_digest_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"actual").unwrap();
        let wrong = Digest::of(b"something else");
        let err = w.commit(Some(&wrong)).unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&wrong.to_string()), "{err}");
        assert!(!store.contains(&wrong));
        assert!(!store.contains(&Digest::of(b"actual")));
        assert!(ingest_is_empty(&store));
    }

    #[test]
    fn committing_an_existing_blob_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let (d1, _) = store.put(b"same").unwrap();
        let (d2, _) = store.put(b"same").unwrap();
        assert_eq!(d1, d2);
        assert!(ingest_is_empty(&store));
        assert_eq!(fs::read(store.blob_path(&d1)).unwrap(), b"same");
    }

    #[test]
    fn missing_blob_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"absent");
        let err = store.open_blob(&d).unwrap_err();
        assert!(matches!(err, ContentError::NotFound { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&d.to_string()) && msg.contains("not in the content store"));
    }
}
