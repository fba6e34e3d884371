//! An overlay upperdir (a layer diff) as tar entries.
//!
//! The tree is walked depth first with each directory's names sorted by their bytes, as
//! BuildKit and containerd walk it (Go's `filepath.Walk`): a directory is followed by
//! everything under it, so `a/b` comes before `a-b`, and the order depends neither on the file
//! system's readdir order nor on inode numbers. Each path becomes one entry: a whiteout
//! `.wh.NAME` takes the place of the deleted NAME, an opaque directory's marker directly follows
//! the directory, the second path of a hardlinked inode links to the first. Only the names of
//! the directories on the current path are held; file contents are streamed.

use crate::tar_entry::{CopyFrom, TarEntry};
use crate::whiteout;
use crate::Error;
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::EntryType;

/// One path of the diff.
struct Node {
    /// Relative to the diff root, `/`-separated, no leading `./`.
    rel: Vec<u8>,
    path: PathBuf,
    meta: Metadata,
}

/// Appends every path under `diff_dir` to `tar`, mtimes clamped to `mtime_clamp` when given.
/// Returns the number of paths written (0 for an empty diff).
pub(crate) fn append_diff<W: CopyFrom>(
    tar: &mut tar::Builder<W>,
    diff_dir: &Path,
    mtime_clamp: Option<i64>,
) -> Result<u64, Error> {
    let mut writer = DiffWriter {
        tar,
        mtime_clamp,
        first_links: HashMap::new(),
        written: 0,
    };
    writer.append_children(diff_dir, b"")?;
    Ok(writer.written)
}

struct DiffWriter<'a, W: CopyFrom> {
    tar: &'a mut tar::Builder<W>,
    mtime_clamp: Option<i64>,
    /// (dev, ino) of multiply-linked files → the first path written for them.
    first_links: HashMap<(u64, u64), Vec<u8>>,
    written: u64,
}

impl<W: CopyFrom> DiffWriter<'_, W> {
    /// Appends what is in `dir` (whose path in the layer is `rel`), names in byte order, each
    /// directory followed by its contents. Sockets are left out: a tar cannot hold them, and
    /// Docker and BuildKit skip them too.
    fn append_children(&mut self, dir: &Path, rel: &[u8]) -> Result<(), Error> {
        let mut names: Vec<OsString> = fs::read_dir(dir)
            .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(Error::io("read directory", dir))?;
        // On Unix an `OsString` orders by its bytes.
        names.sort_unstable();
        for name in names {
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
            if meta.file_type().is_socket() {
                continue;
            }
            let rel = if rel.is_empty() {
                name.as_bytes().to_vec()
            } else {
                [rel, b"/", name.as_bytes()].concat()
            };
            let node = Node { rel, path, meta };
            self.append(&node).map_err(|source| Error::Archive {
                path: node.path.clone(),
                source,
            })?;
            self.written += 1;
            if node.meta.is_dir() {
                self.append_children(&node.path, &node.rel)?;
            }
        }
        Ok(())
    }

    fn append(&mut self, node: &Node) -> io::Result<()> {
        let ft = node.meta.file_type();
        if whiteout::is_whiteout(&node.meta) {
            return self.append_whiteout(node);
        }
        if !ft.is_dir() && node.meta.nlink() > 1 {
            let key = (node.meta.dev(), node.meta.ino());
            if let Some(first) = self.first_links.get(&key) {
                let entry = self.with_attrs(TarEntry::new(EntryType::Link, &node.rel), &node.meta);
                return entry.link(first).write(self.tar, io::empty());
            }
            self.first_links.insert(key, node.rel.clone());
        }
        if ft.is_dir() {
            self.append_dir(node)
        } else if ft.is_file() {
            let file = File::open(&node.path)?;
            if node.meta.len() >= 1 << 20 {
                // Larger read-ahead for a file read once from start to end; only a hint.
                let _ = posix_fadvise(
                    file.as_raw_fd(),
                    0,
                    0,
                    PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
                );
            }
            let entry = self
                .entry(EntryType::Regular, &node.rel, node)?
                .size(node.meta.len());
            entry.write(self.tar, file)
        } else if ft.is_symlink() {
            let target = fs::read_link(&node.path)?;
            let entry = self.entry(EntryType::Symlink, &node.rel, node)?;
            entry
                .link(target.as_os_str().as_bytes())
                .write(self.tar, io::empty())
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let rdev = node.meta.rdev();
            let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
            let entry = self
                .entry(kind, &node.rel, node)?
                .device(major as u32, minor as u32)?;
            entry.write(self.tar, io::empty())
        } else if ft.is_fifo() {
            self.entry(EntryType::Fifo, &node.rel, node)?
                .write(self.tar, io::empty())
        } else {
            unreachable!("append_children leaves out sockets")
        }
    }

    /// The directory entry (name ending in `/`), then its opaque marker if it has one.
    fn append_dir(&mut self, node: &Node) -> io::Result<()> {
        let name = [&node.rel[..], b"/"].concat();
        let entry = self.entry(EntryType::Directory, &name, node)?;
        entry.write(self.tar, io::empty())?;
        if whiteout::is_opaque(&node.path)? {
            // Owner, mtime and permission bits of the directory, as Docker writes the marker.
            let marker = whiteout::opaque_marker_name(&node.rel);
            let meta = &node.meta;
            let entry = TarEntry::new(EntryType::Regular, &marker).attrs(
                meta.mode() & 0o777,
                u64::from(meta.uid()),
                u64::from(meta.gid()),
                self.mtime(meta),
            );
            entry.write(self.tar, io::empty())?;
        }
        Ok(())
    }

    fn append_whiteout(&mut self, node: &Node) -> io::Result<()> {
        let name = whiteout::whiteout_name(&node.rel);
        let entry =
            TarEntry::new(EntryType::Regular, &name).attrs(0o600, 0, 0, self.mtime(&node.meta));
        entry.write(self.tar, io::empty())
    }

    /// An entry named `name` with the attributes and xattrs of `node`.
    fn entry(&self, kind: EntryType, name: &[u8], node: &Node) -> io::Result<TarEntry> {
        let mut entry = self.with_attrs(TarEntry::new(kind, name), &node.meta);
        for (name, value) in xattrs(&node.path)? {
            entry.xattr(&name, value);
        }
        Ok(entry)
    }

    fn with_attrs(&self, entry: TarEntry, meta: &Metadata) -> TarEntry {
        entry.attrs(
            meta.mode(),
            u64::from(meta.uid()),
            u64::from(meta.gid()),
            self.mtime(meta),
        )
    }

    fn mtime(&self, meta: &Metadata) -> i64 {
        match self.mtime_clamp {
            Some(max) => meta.mtime().min(max),
            None => meta.mtime(),
        }
    }
}

/// xattrs that describe the host rather than the file: the SELinux label is set by the policy
/// of the machine that wrote the file, so it would make the layer differ from one host to the
/// next (BuildKit leaves it out too). `security.capability` and `user.*` are the file's own.
const HOST_XATTRS: &[&[u8]] = &[b"security.selinux"];

/// The xattrs of `path` (not following symlinks) that belong in a layer, sorted by name.
fn xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Err(e) if whiteout::xattrs_unsupported(&e) => return Ok(out),
        names => names?,
    };
    for name in names {
        if whiteout::is_overlay_xattr(name.as_bytes()) || HOST_XATTRS.contains(&name.as_bytes()) {
            continue;
        }
        let Some(value) = xattr::get(path, &name)? else {
            continue;
        };
        let name = name.into_string().map_err(|name| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the xattr name {name:?} is not UTF-8 and cannot be stored in a PAX header"
                ),
            )
        })?;
        out.push((name, value));
    }
    out.sort();
    Ok(out)
}
