//! ADD's archive extraction, as BuildKit's file op does it (`unpack.go`, `unpack_root.go`): a
//! local file is unpacked when its content, not its name, is a tar archive, plain or compressed
//! with gzip, bzip2, xz or zstd, whose first header reads cleanly. Everything else is copied as
//! it is. Entries stay inside the extraction directory: a name that climbs out with `..` is an
//! error, a leading `/` is dropped, and paths are resolved through the links already extracted
//! with absolute targets starting again at the extraction directory. Whiteout files (`.wh.*`)
//! are ordinary files here, as they are in BuildKit.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{fchown, symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use super::chown::Owner;
use super::metadata::{mkdir_all, set_mode, set_owner, set_times, NewDirs, Times, MODE_BITS};
use super::rootpath::{clean_relative, is_missing, resolve, Escape, ResolveError};
use super::FileOpError;

/// How an archive's bytes are compressed, told by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    fn detect(head: &[u8]) -> Self {
        const ZSTD_SKIPPABLE: [u8; 3] = [0x2A, 0x4D, 0x18];
        if head.starts_with(&[0x1F, 0x8B, 0x08]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD])
            || (head.len() >= 4 && head[0] & 0xF0 == 0x50 && head[1..4] == ZSTD_SKIPPABLE)
        {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Opens `path` and undoes its compression, if any.
fn open_decompressed(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 6];
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..])? {
            0 => break,
            n => len += n,
        }
    }
    file.seek(SeekFrom::Start(0))?;
    let file = BufReader::with_capacity(64 * 1024, file);
    Ok(match Compression::detect(&head[..len]) {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(file)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    })
}

/// A numeric header field; one left empty (all NULs or spaces) reads as 0, as in Go's
/// `archive/tar`.
fn numeric(value: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match value {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        other => other,
    }
}

/// Whether ADD unpacks the regular file at `path`: it must read as a tar archive at least up
/// to its first header (BuildKit's `isArchivePath`).
pub(crate) fn is_archive(path: &Path) -> bool {
    let Ok(reader) = open_decompressed(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(reader);
    let Ok(mut entries) = archive.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// Unpacks the archive at `archive` into `dest_root/dest` (an existing directory, already
/// resolved inside its root). `owner` replaces the owners recorded in the archive.
pub(crate) fn extract(
    archive: &Path,
    archive_shown: &str,
    dest_root: &Path,
    dest: &Path,
    owner: Option<Owner>,
) -> Result<(), FileOpError> {
    let mut x = Extraction {
        dir: dest_root.join(dest),
        dir_shown: super::shown(dest),
        archive_shown,
        owner,
        dir_times: Vec::new(),
    };
    let reader = open_decompressed(archive).map_err(|e| FileOpError::Io {
        action: "failed to read",
        path: archive_shown.to_string(),
        error: e,
    })?;
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(|e| x.corrupt(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| x.corrupt(e))?;
        x.entry(&mut entry)?;
    }
    // Directory times last, deepest first: filling a directory changes its mtime.
    for (rel, times) in x.dir_times.iter().rev() {
        set_times(&x.dir.join(rel), *times).map_err(|e| x.io(rel, e))?;
    }
    Ok(())
}

struct Extraction<'a> {
    /// Host path of the extraction directory.
    dir: PathBuf,
    /// The extraction directory as the image sees it, for messages.
    dir_shown: String,
    archive_shown: &'a str,
    owner: Option<Owner>,
    dir_times: Vec<(PathBuf, Times)>,
}

impl Extraction<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), FileOpError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            return Ok(());
        }
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let clean = clean_relative(Path::new(OsStr::from_bytes(&raw_name)), Escape::Reject)
            .map_err(|_| self.outside(&name))?;
        if clean.as_os_str().is_empty() {
            return Ok(());
        }
        let header = entry.header();
        let owner = match self.owner {
            Some(owner) => owner,
            None => Owner {
                uid: self.id(numeric(header.uid(), &header.as_old().uid), &name)?,
                gid: self.id(numeric(header.gid(), &header.as_old().gid), &name)?,
            },
        };
        let mode = numeric(header.mode().map(u64::from), &header.as_old().mode)
            .map_err(|e| self.corrupt(e))?;
        let mode = u32::try_from(mode & u64::from(MODE_BITS)).unwrap_or(0);
        // Out-of-range times become the epoch, as in BuildKit.
        let mtime = i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0);
        let times = Times {
            atime: TimeSpec::new(mtime, 0),
            mtime: TimeSpec::new(mtime, 0),
        };

        let rel = self.resolve(&clean, kind.is_dir(), &name)?;
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        if let Some(parent) = rel.parent() {
            let implied = NewDirs {
                mode: 0o755,
                owner: Some(Owner { uid: 0, gid: 0 }),
                time: None,
            };
            mkdir_all(&self.dir, parent, implied).map_err(|(p, e)| self.io(&p, e))?;
        }
        self.clear(&rel, kind.is_dir())?;
        let abs = self.dir.join(&rel);
        let io = |e| self.io(&rel, e);
        match kind {
            EntryType::Directory => {
                match fs::create_dir(&abs) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io(e)),
                    _ => {}
                }
                set_owner(&abs, owner).map_err(io)?;
                set_mode(&abs, mode).map_err(io)?;
                self.dir_times.push((rel.clone(), times));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.write_file(entry, &rel, owner, mode)?;
                set_times(&abs, times).map_err(io)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.invalid(&name, "symlink without a target"))?;
                symlink(OsStr::from_bytes(&target), &abs).map_err(io)?;
                set_owner(&abs, owner).map_err(io)?;
                set_times(&abs, times).map_err(io)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.invalid(&name, "hardlink without a target"))?;
                let target_name = String::from_utf8_lossy(&target).into_owned();
                let target = clean_relative(Path::new(OsStr::from_bytes(&target)), Escape::Reject)
                    .map_err(|_| self.outside(&target_name))?;
                if target.as_os_str().is_empty() {
                    return Err(self.outside(&target_name));
                }
                let target = self.resolve(&target, false, &target_name)?;
                if fs::symlink_metadata(self.dir.join(&target)).is_err() {
                    let reason = format!("hardlink target \"{target_name}\" is not in the archive");
                    return Err(self.invalid(&name, &reason));
                }
                fs::hard_link(self.dir.join(&target), &abs).map_err(io)?;
                set_owner(&abs, owner).map_err(io)?;
                if !fs::symlink_metadata(&abs).map_err(io)?.is_symlink() {
                    set_mode(&abs, mode).map_err(io)?;
                    set_times(&abs, times).map_err(io)?;
                }
            }
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                let (kind, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    EntryType::Char => (SFlag::S_IFCHR, self.device(header)?),
                    _ => (SFlag::S_IFBLK, self.device(header)?),
                };
                mknod(&abs, kind, Mode::from_bits_truncate(mode), dev)
                    .map_err(|e| io(io::Error::from(e)))?;
                set_owner(&abs, owner).map_err(io)?;
                set_mode(&abs, mode).map_err(io)?;
                set_times(&abs, times).map_err(io)?;
            }
            other => {
                return Err(self.invalid(&name, &format!("unsupported entry type {other:?}")));
            }
        }
        Ok(())
    }

    /// Writes a regular file's content; a short read means the archive is truncated.
    fn write_file<R: Read>(
        &self,
        entry: &mut tar::Entry<R>,
        rel: &Path,
        owner: Owner,
        mode: u32,
    ) -> Result<(), FileOpError> {
        let expected = entry.size();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(self.dir.join(rel))
            .map_err(|e| self.io(rel, e))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut copied = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(e)),
            };
            file.write_all(&buf[..n]).map_err(|e| self.io(rel, e))?;
            copied += n as u64;
        }
        if copied < expected {
            return Err(self.corrupt(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("unexpected end of data in {:?}", super::shown(rel)),
            )));
        }
        fchown(&file, Some(owner.uid), Some(owner.gid)).map_err(|e| self.io(rel, e))?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| self.io(rel, e))?;
        Ok(())
    }

    /// Resolves an entry name through what is already extracted, inside the directory.
    fn resolve(&self, clean: &Path, follow_leaf: bool, name: &str) -> Result<PathBuf, FileOpError> {
        resolve(&self.dir, clean, follow_leaf, Escape::Reject, &|_| false).map_err(|e| match e {
            ResolveError::Escapes => self.outside(name),
            ResolveError::TooManyLinks => self.invalid(name, "too many levels of symbolic links"),
            ResolveError::Io(e) => self.io(clean, e),
        })
    }

    /// Removes what stands where an entry goes, unless both are directories (they merge).
    fn clear(&self, rel: &Path, is_dir: bool) -> Result<(), FileOpError> {
        let abs = self.dir.join(rel);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(meta) => meta,
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(self.io(rel, e)),
        };
        let removed = if meta.is_dir() {
            if is_dir {
                return Ok(());
            }
            fs::remove_dir_all(&abs)
        } else {
            fs::remove_file(&abs)
        };
        removed.map_err(|e| self.io(rel, e))
    }

    fn id(&self, id: io::Result<u64>, name: &str) -> Result<u32, FileOpError> {
        let id = id.map_err(|e| self.corrupt(e))?;
        u32::try_from(id).map_err(|_| self.invalid(name, &format!("owner id {id} is out of range")))
    }

    fn device(&self, header: &tar::Header) -> Result<nix::libc::dev_t, FileOpError> {
        let major = header
            .device_major()
            .map_err(|e| self.corrupt(e))?
            .unwrap_or(0);
        let minor = header
            .device_minor()
            .map_err(|e| self.corrupt(e))?
            .unwrap_or(0);
        Ok(makedev(u64::from(major), u64::from(minor)))
    }

    fn outside(&self, entry: &str) -> FileOpError {
        FileOpError::ArchiveEntryOutside {
            archive: self.archive_shown.to_string(),
            entry: entry.to_string(),
        }
    }

    fn invalid(&self, entry: &str, reason: &str) -> FileOpError {
        FileOpError::Archive {
            archive: self.archive_shown.to_string(),
            reason: format!("entry \"{entry}\": {reason}"),
        }
    }

    fn corrupt(&self, e: io::Error) -> FileOpError {
        FileOpError::Archive {
            archive: self.archive_shown.to_string(),
            reason: format!("the archive is truncated or corrupt: {e}"),
        }
    }

    fn io(&self, rel: &Path, error: io::Error) -> FileOpError {
        let mut path = PathBuf::from(&self.dir_shown);
        path.push(rel);
        FileOpError::Io {
            action: "failed to extract",
            path: path.to_string_lossy().into_owned(),
            error,
        }
    }
}
