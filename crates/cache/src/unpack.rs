//! Unpacking image layers into the snapshot store.
//!
//! A layer blob (tar, tar+gzip or tar+zstd) is decompressed and hashed as it streams (the
//! sha256 of the uncompressed tar is the layer's diff_id) and its entries are written into a
//! snapshot's diff directory in overlayfs upperdir form: `dir/.wh.NAME` becomes a character
//! device 0:0 at `dir/NAME`, and `dir/.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on
//! `dir`.
//!
//! Layers are hostile input. Names are cleaned lexically and may not climb above the root;
//! entries are created relative to their parent's descriptor, reached by `openat` walks that
//! never follow a symlink (see [`root`]); hardlinks may only point at files this layer created;
//! data can't fake overlay bookkeeping (overlay xattrs are dropped, a character device 0:0 is
//! rejected). Within one layer a later entry replaces an earlier one of the same name, as tar
//! does, except that a directory over a directory merges.

mod metadata;
mod path;
mod root;

use crate::content::{ContentError, ContentStore};
use crate::snapshot::{SnapshotError, SnapshotId, SnapshotStore};
use kiln_oci::{Descriptor, Digest, Sha256Writer};
use metadata::Metadata;
use root::{file_type_at, remove_all, LayerRoot, WalkError};
use rustix::fs::{makedev, mknodat, openat, symlinkat, AtFlags, FileType, Mode, OFlags, Timespec};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the layer blob is corrupt or truncated: {0}")]
    Corrupt(#[source] io::Error),
    #[error("the layer's tar stream ends without an end-of-archive marker: the blob is truncated")]
    Truncated,
    #[error("layer entry {name:?} has {written} bytes of data, but its header says {size}: the blob is truncated")]
    ShortEntry {
        name: String,
        written: u64,
        size: u64,
    },
    #[error("layer entry {name:?} {reason}")]
    BadHeader { name: String, reason: String },
    #[error("layer entry {name:?} escapes from the layer's root (path escapes from parent); the layer is rejected")]
    EscapesRoot { name: String },
    #[error("layer entry {name:?} would be written through the symlink {}, which this layer created; the layer is rejected", symlink.display())]
    ThroughSymlink { name: String, symlink: PathBuf },
    #[error("layer entry {name:?} needs {} to be a directory, but the layer made it something else", parent.display())]
    NotADirectory { name: String, parent: PathBuf },
    #[error("layer entry {name:?} replaces the layer's root directory with something else")]
    ReplacesRoot { name: String },
    #[error("hardlink {name:?} points at {target:?}, which {reason}; the layer is rejected")]
    BadHardlink {
        name: String,
        target: String,
        reason: &'static str,
    },
    #[error("whiteout {name:?} names no file that could be deleted")]
    BadWhiteout { name: String },
    #[error("layer entry {name:?} is a character device 0:0, which overlayfs would take for a deletion; layers mark deletions with .wh. entries")]
    FakeWhiteout { name: String },
    #[error("layer entry {name:?} has tar type {kind:?}, which kiln can't unpack")]
    Unsupported { name: String, kind: char },
    #[error("could not {action} {name:?} while unpacking a layer: {source}")]
    Io {
        action: &'static str,
        name: String,
        source: io::Error,
    },
    #[error("could not unpack into {}: {reason}", dir.display())]
    Target { dir: PathBuf, reason: String },
    #[error("layer {layer} unpacks to diff_id {actual}, but the image config expects {expected}: the blob is corrupt or belongs to another image")]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// What unpacking a layer produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// The sha256 of the uncompressed tar stream, to check against the image config's
    /// `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// How many tar entries the layer had (whiteouts included).
    pub entries: u64,
}

/// Unpacks a layer blob (tar, tar+gzip or tar+zstd, chosen by `media_type`, sniffed from magic
/// bytes for Docker's and unknown types) into the empty directory `diff_dir`, converting OCI
/// whiteouts to overlay form. Returns the diff_id, computed while reading, for the caller to
/// check. On error `diff_dir` holds a partial layer; the caller throws it away.
pub fn unpack_layer(
    blob: impl Read + Send,
    media_type: &str,
    diff_dir: &Path,
) -> Result<Unpacked, UnpackError> {
    ensure_empty(diff_dir)?;
    let root = LayerRoot::open(diff_dir).map_err(|e| UnpackError::Target {
        dir: diff_dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Decompressing and hashing run on a thread of their own while this one writes the
    // entries: for a typical base layer the two take about as long as each other.
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(INFLATED_CHUNKS);
        let inflater = std::thread::Builder::new()
            .name("unpack-inflate".into())
            .spawn_scoped(scope, move || inflate(blob, media_type, tx))
            .map_err(UnpackError::Corrupt)?;
        let unpacked = unpack_entries(root, Inflated::new(rx));
        // The receiver is gone: an inflater still running stops at its next chunk.
        inflater
            .join()
            .map_err(|_| UnpackError::Corrupt(io::Error::other("the decompressor panicked")))?;
        unpacked
    })
}

/// Writes the entries of the uncompressed layer `stream` under `root`, then reads the rest of
/// the stream (what follows the end-of-archive marker, which the diff_id covers too).
fn unpack_entries(root: LayerRoot, stream: Inflated) -> Result<Unpacked, UnpackError> {
    let mut unpacker = Unpacker {
        root,
        dir_times: Vec::new(),
        entries: 0,
        buf: vec![0; 1 << 17],
    };
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(UnpackError::Corrupt)? {
        unpacker.entry(&mut entry.map_err(UnpackError::Corrupt)?)?;
    }
    unpacker.set_dir_times()?;
    let mut stream = archive.into_inner();
    if stream.hit_eof && stream.total > 0 {
        return Err(UnpackError::Truncated);
    }
    io::copy(&mut stream, &mut io::sink()).map_err(UnpackError::Corrupt)?;
    Ok(Unpacked {
        diff_id: stream.hasher.finish().0,
        entries: unpacker.entries,
    })
}

/// Unpacks the content store's blob `layer` into a new snapshot committed as `id`, unless `id`
/// exists already. The layer's diff_id must equal `expected_diff_id`. On any error the
/// prepared snapshot is discarded: there is never a partial snapshot.
pub fn unpack_to_snapshot(
    content: &ContentStore,
    snapshots: &SnapshotStore,
    layer: &Descriptor,
    expected_diff_id: &Digest,
    id: &SnapshotId,
) -> Result<(), UnpackError> {
    if snapshots.exists(id) {
        return Ok(());
    }
    let blob = content.open_blob(&layer.digest)?;
    let prepared = snapshots.prepare()?;
    let unpacked = unpack_layer(
        BufReader::with_capacity(1 << 16, blob),
        &layer.media_type,
        &prepared.diff_dir(),
    )
    .and_then(|unpacked| {
        if unpacked.diff_id == *expected_diff_id {
            Ok(unpacked)
        } else {
            Err(UnpackError::DiffIdMismatch {
                layer: layer.digest.clone(),
                expected: expected_diff_id.clone(),
                actual: unpacked.diff_id,
            })
        }
    });
    match unpacked {
        Ok(_) => Ok(snapshots.commit(prepared, id)?),
        Err(e) => {
            // The unpack error is the one worth reporting; a failed discard leaves a stray
            // directory in tmp/ for clear_tmp.
            let _ = snapshots.discard(prepared);
            Err(e)
        }
    }
}

fn ensure_empty(dir: &Path) -> Result<(), UnpackError> {
    let target = |reason: String| UnpackError::Target {
        dir: dir.to_path_buf(),
        reason,
    };
    let mut entries = std::fs::read_dir(dir).map_err(|e| target(e.to_string()))?;
    match entries.next() {
        None => Ok(()),
        Some(_) => Err(target("the directory is not empty".into())),
    }
}

/// A layer's compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression an OCI media type names; `None` for Docker's types (whose `.gzip` is
    /// not always true) and unknown ones, which are sniffed.
    fn of_media_type(media_type: &str) -> Option<Compression> {
        if !media_type.starts_with("application/vnd.oci.image.layer.") {
            return None;
        }
        if media_type.ends_with("+gzip") {
            Some(Compression::Gzip)
        } else if media_type.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if media_type.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    fn sniff(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

fn decompress<'a>(mut blob: impl Read + 'a, media_type: &str) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match blob.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let compression =
        Compression::of_media_type(media_type).unwrap_or_else(|| Compression::sniff(&magic[..n]));
    let blob = io::Cursor::new(magic).take(n as u64).chain(blob);
    Ok(match compression {
        Compression::None => Box::new(blob),
        // Concatenated gzip members are one stream, as Go's reader (and so Docker) sees them.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob)?),
    })
}

/// How many inflated chunks may wait for the entry writer.
const INFLATED_CHUNKS: usize = 4;
/// The size of an inflated chunk.
const INFLATED_CHUNK: usize = 1 << 17;

/// The inflater's side: decompresses `blob` and hands the uncompressed stream over in chunks.
fn inflate(blob: impl Read, media_type: &str, tx: mpsc::SyncSender<io::Result<Vec<u8>>>) {
    let mut stream = match decompress(blob, media_type) {
        Ok(stream) => stream,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    loop {
        let mut chunk = vec![0; INFLATED_CHUNK];
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                chunk.truncate(n);
                if tx.send(Ok(chunk)).is_err() {
                    // The entry writer stopped.
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// The entry writer's side of the inflated stream. Hashes it as the tar reader consumes it (the
/// diff_id), and notes how much that was and whether the reader ran into the end (a complete
/// archive stops at its end-of-archive marker first).
struct Inflated {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    hasher: Sha256Writer<io::Sink>,
    chunk: Vec<u8>,
    pos: usize,
    total: u64,
    hit_eof: bool,
}

impl Inflated {
    fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        Inflated {
            rx,
            hasher: Sha256Writer::new(io::sink()),
            chunk: Vec::new(),
            pos: 0,
            total: 0,
            hit_eof: false,
        }
    }
}

impl Read for Inflated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk?;
                    self.pos = 0;
                }
                // The inflater is done and everything it sent was read.
                Err(mpsc::RecvError) => {
                    self.hit_eof = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.hasher.write_all(&buf[..n])?;
        self.pos += n;
        self.total += n as u64;
        Ok(n)
    }
}

/// The state of one layer's unpacking.
struct Unpacker {
    root: LayerRoot,
    /// Directory times, set once their contents are in place (adding an entry changes a
    /// directory's mtime). In entry order, so a repeated directory's last entry wins.
    dir_times: Vec<(Vec<OsString>, Timespec, Timespec)>,
    entries: u64,
    buf: Vec<u8>,
}

/// One entry being unpacked: its name as the layer gave it (for messages), and where it goes.
struct Target<'a> {
    name: &'a str,
    path: &'a [OsString],
    parent: OwnedFd,
    file_name: &'a OsStr,
}

impl Target<'_> {
    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
        move |source| UnpackError::Io {
            action,
            name: self.name.to_string(),
            source,
        }
    }
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        self.entries += 1;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Archive-wide PAX defaults (e.g. a comment from `git archive`), not a file.
            return Ok(());
        }
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let path = path::clean(&raw_name)
            .ok_or_else(|| UnpackError::EscapesRoot { name: name.clone() })?;
        let Some((file_name, parent)) = path.split_last() else {
            // The root itself ("./"): like containerd and Docker, keep the snapshot's own.
            return match kind {
                tar::EntryType::Directory => Ok(()),
                _ => Err(UnpackError::ReplacesRoot { name }),
            };
        };
        if let Some(whiteout) = file_name.as_encoded_bytes().strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&name, parent, file_name, whiteout);
        }
        let metadata = Metadata::read(entry).map_err(|reason| UnpackError::BadHeader {
            name: name.clone(),
            reason,
        })?;
        let target = Target {
            name: &name,
            path: &path,
            parent: self.parent(&name, parent, true)?,
            file_name,
        };
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => self.file(&target, entry, &metadata),
            T::Directory => self.directory(&target, &metadata),
            T::Symlink => self.symlink(&target, entry, &metadata),
            T::Link => self.hardlink(&target, entry),
            T::Char | T::Block | T::Fifo => self.node(&target, entry, &metadata),
            other => Err(UnpackError::Unsupported {
                name,
                kind: other.as_byte() as char,
            }),
        }
    }

    /// Opens the directory `components` (creating missing ones with `create`), mapping walk
    /// failures to errors about entry `name`.
    fn parent(
        &mut self,
        name: &str,
        components: &[OsString],
        create: bool,
    ) -> Result<OwnedFd, UnpackError> {
        self.root
            .dir(components, create)
            .map_err(|e| walk_error(name, e))
    }

    /// Clears the way for a new entry at `target`: an earlier entry of the same name is
    /// removed (a whole tree, if a directory), except that a directory stays for a directory.
    /// Returns whether a directory was kept.
    fn make_room(&mut self, target: &Target<'_>, for_directory: bool) -> Result<bool, UnpackError> {
        let parent = target.parent.as_fd();
        match file_type_at(parent, target.file_name).map_err(target.io("inspect"))? {
            None => Ok(false),
            Some((FileType::Directory, _)) if for_directory => Ok(true),
            Some((kind, _)) => {
                remove_all(parent, target.file_name).map_err(target.io("replace"))?;
                if kind == FileType::Directory {
                    self.root.forget_dirs();
                }
                Ok(false)
            }
        }
    }

    fn file<R: Read>(
        &mut self,
        target: &Target<'_>,
        entry: &mut tar::Entry<'_, R>,
        metadata: &Metadata,
    ) -> Result<(), UnpackError> {
        self.make_room(target, false)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = openat(
            &target.parent,
            target.file_name,
            flags,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| target.io("create")(e.into()))?;
        let mut file = File::from(fd);
        let written = copy_data(entry, &mut file, &mut self.buf, target)?;
        let size = entry.size();
        if !entry.header().entry_type().is_gnu_sparse() && written != size {
            return Err(UnpackError::ShortEntry {
                name: target.name.to_string(),
                written,
                size,
            });
        }
        metadata
            .apply_to_fd(file.as_fd())
            .and_then(|()| metadata.set_times_fd(file.as_fd()))
            .map_err(target.io("set metadata of"))
    }

    fn directory(&mut self, target: &Target<'_>, metadata: &Metadata) -> Result<(), UnpackError> {
        if !self.make_room(target, true)? {
            rustix::fs::mkdirat(&target.parent, target.file_name, Mode::from_raw_mode(0o700))
                .map_err(|e| target.io("create directory")(e.into()))?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = openat(&target.parent, target.file_name, flags, Mode::empty())
            .map_err(|e| target.io("open directory")(e.into()))?;
        metadata
            .apply_to_fd(fd.as_fd())
            .map_err(target.io("set metadata of"))?;
        self.dir_times
            .push((target.path.to_vec(), metadata.atime, metadata.mtime));
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        target: &Target<'_>,
        entry: &tar::Entry<'_, R>,
        metadata: &Metadata,
    ) -> Result<(), UnpackError> {
        // The link's target is only data: it is stored as given and never resolved here.
        let link = entry.link_name_bytes().unwrap_or_default();
        self.make_room(target, false)?;
        symlinkat(os_str(&link), &target.parent, target.file_name)
            .map_err(|e| target.io("create symlink")(e.into()))?;
        metadata
            .apply_at(target.parent.as_fd(), target.file_name, true)
            .map_err(target.io("set metadata of"))
    }

    /// A hardlink to a file this layer created; its own header's metadata is ignored, as
    /// GNU tar does (the inode's is the target's).
    fn hardlink<R: Read>(
        &mut self,
        target: &Target<'_>,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let raw = entry.link_name_bytes().unwrap_or_default().into_owned();
        let bad = |reason| UnpackError::BadHardlink {
            name: target.name.to_string(),
            target: String::from_utf8_lossy(&raw).into_owned(),
            reason,
        };
        let link_path = path::clean(&raw).ok_or_else(|| bad("is outside the layer's root"))?;
        let Some((link_name, link_parent)) = link_path.split_last() else {
            return Err(bad("is the layer's root directory"));
        };
        let link_dir = match self.root.dir(link_parent, false) {
            Ok(fd) => fd,
            Err(WalkError::Io(e)) => return Err(target.io("find the target of")(e)),
            Err(WalkError::Symlink(_)) => return Err(bad("lies behind a symlink")),
            Err(_) => return Err(bad("is not in this layer")),
        };
        match file_type_at(link_dir.as_fd(), link_name).map_err(target.io("find the target of"))? {
            None => return Err(bad("is not in this layer")),
            Some((FileType::Directory, _)) => return Err(bad("is a directory")),
            Some((FileType::CharacterDevice, 0)) => return Err(bad("is a whiteout")),
            Some(_) => {}
        }
        if link_path.as_slice() == target.path {
            return Ok(());
        }
        self.make_room(target, false)?;
        // Without AT_SYMLINK_FOLLOW, a symlink target is linked itself, never followed.
        rustix::fs::linkat(
            &link_dir,
            link_name,
            &target.parent,
            target.file_name,
            AtFlags::empty(),
        )
        .map_err(|e| target.io("create hardlink")(e.into()))
    }

    fn node<R: Read>(
        &mut self,
        target: &Target<'_>,
        entry: &tar::Entry<'_, R>,
        metadata: &Metadata,
    ) -> Result<(), UnpackError> {
        let header = entry.header();
        let (major, minor) = device_numbers(header).map_err(|reason| UnpackError::BadHeader {
            name: target.name.to_string(),
            reason,
        })?;
        let kind = match header.entry_type() {
            tar::EntryType::Char if major == 0 && minor == 0 => {
                return Err(UnpackError::FakeWhiteout {
                    name: target.name.to_string(),
                })
            }
            tar::EntryType::Char => FileType::CharacterDevice,
            tar::EntryType::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        self.make_room(target, false)?;
        mknodat(
            &target.parent,
            target.file_name,
            kind,
            Mode::from_raw_mode(0o600),
            makedev(major, minor),
        )
        .map_err(|e| target.io("create device node")(e.into()))?;
        metadata
            .apply_at(target.parent.as_fd(), target.file_name, false)
            .map_err(target.io("set metadata of"))
    }

    /// `.wh..wh..opq` marks its directory opaque; `.wh.NAME` replaces NAME (and only NAME)
    /// with a whiteout; other `.wh..wh.` names are aufs bookkeeping and skipped, as
    /// containerd does.
    fn whiteout(
        &mut self,
        name: &str,
        parent: &[OsString],
        file_name: &OsStr,
        whited_out: &[u8],
    ) -> Result<(), UnpackError> {
        let dir = self.parent(name, parent, true)?;
        let io = |action| {
            move |source| UnpackError::Io {
                action,
                name: name.to_string(),
                source,
            }
        };
        if file_name.as_encoded_bytes() == OPAQUE_MARKER {
            return rustix::fs::fsetxattr(
                &dir,
                OPAQUE_XATTR,
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| io("mark opaque the directory of")(e.into()));
        }
        if whited_out.starts_with(WHITEOUT_PREFIX) {
            return Ok(());
        }
        if whited_out.is_empty() || whited_out == b"." || whited_out == b".." {
            return Err(UnpackError::BadWhiteout {
                name: name.to_string(),
            });
        }
        let mut path = parent.to_vec();
        path.push(os_str(whited_out).to_os_string());
        let target = Target {
            name,
            path: &path,
            parent: dir,
            file_name: os_str(whited_out),
        };
        self.make_room(&target, false)?;
        mknodat(
            &target.parent,
            target.file_name,
            FileType::CharacterDevice,
            Mode::empty(),
            makedev(0, 0),
        )
        .map_err(|e| io("create the whiteout for")(e.into()))
    }

    /// Sets directories' times now that their contents are in place. A directory a later
    /// entry replaced by something else is skipped.
    fn set_dir_times(&mut self) -> Result<(), UnpackError> {
        for (path, atime, mtime) in std::mem::take(&mut self.dir_times) {
            let Some((file_name, parent)) = path.split_last() else {
                continue;
            };
            let name = PathBuf::from_iter(&path).display().to_string();
            let dir = match self.root.dir(parent, false) {
                Ok(dir) => dir,
                Err(WalkError::Io(source)) => {
                    return Err(UnpackError::Io {
                        action: "set the times of",
                        name,
                        source,
                    })
                }
                Err(_) => continue,
            };
            let io = |source| UnpackError::Io {
                action: "set the times of",
                name: name.clone(),
                source,
            };
            if let Some((FileType::Directory, _)) =
                file_type_at(dir.as_fd(), file_name).map_err(io)?
            {
                metadata::set_times_at(dir.as_fd(), file_name, atime, mtime).map_err(io)?;
            }
        }
        Ok(())
    }
}

/// Copies an entry's data, telling a corrupt stream (reading) from a failing disk (writing).
fn copy_data(
    from: &mut impl Read,
    to: &mut File,
    buf: &mut [u8],
    target: &Target<'_>,
) -> Result<u64, UnpackError> {
    let mut written = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UnpackError::Corrupt(e)),
        };
        to.write_all(&buf[..n]).map_err(target.io("write"))?;
        written += n as u64;
    }
}

/// A device's major and minor numbers (blank fields read as 0; a fifo has none).
fn device_numbers(header: &tar::Header) -> Result<(u32, u32), String> {
    if header.entry_type() == tar::EntryType::Fifo {
        return Ok((0, 0));
    }
    // ustar and GNU headers keep the numbers at the same offsets.
    let raw = header.as_bytes();
    let major = metadata::numeric(
        &raw[329..337],
        device(header.device_major()),
        "device major",
    )?;
    let minor = metadata::numeric(
        &raw[337..345],
        device(header.device_minor()),
        "device minor",
    )?;
    let too_big = |_| format!("has device numbers {major}:{minor}, beyond what Linux allows");
    Ok((
        u32::try_from(major).map_err(too_big)?,
        u32::try_from(minor).map_err(too_big)?,
    ))
}

fn device(n: io::Result<Option<u32>>) -> io::Result<u64> {
    n.map(|n| u64::from(n.unwrap_or(0)))
}

fn walk_error(name: &str, e: WalkError) -> UnpackError {
    let name = name.to_string();
    match e {
        WalkError::Symlink(symlink) => UnpackError::ThroughSymlink { name, symlink },
        WalkError::NotADirectory(parent) | WalkError::Missing(parent) => {
            UnpackError::NotADirectory { name, parent }
        }
        WalkError::Io(source) => UnpackError::Io {
            action: "open the parent directory of",
            name,
            source,
        },
    }
}

fn os_str(bytes: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::media_types;

    #[test]
    fn compression_from_media_type() {
        use Compression as C;
        assert_eq!(C::of_media_type(media_types::OCI_LAYER), Some(C::None));
        assert_eq!(C::of_media_type(media_types::OCI_LAYER_GZIP), Some(C::Gzip));
        assert_eq!(C::of_media_type(media_types::OCI_LAYER_ZSTD), Some(C::Zstd));
        assert_eq!(
            C::of_media_type("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
            Some(C::Gzip)
        );
        assert_eq!(C::of_media_type(media_types::DOCKER_LAYER_GZIP), None);
        assert_eq!(C::of_media_type(media_types::DOCKER_LAYER), None);
    }

    #[test]
    fn sniffing() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }

    #[test]
    fn docker_gzip_type_holding_a_plain_tar_is_sniffed() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(2);
        h.set_mode(0o644);
        tar.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let unpacked = unpack_layer(&tar[..], media_types::DOCKER_LAYER_GZIP, dir.path()).unwrap();
        assert_eq!(unpacked.diff_id, Digest::of(&tar));
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"hi");
    }
}
