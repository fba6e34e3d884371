//! Applying upperdir-form layers onto a plain directory, bottom layer first, the way overlayfs
//! would show them: a whiteout deletes the path below it, an opaque directory hides what the
//! directory held below, anything else replaces what was there (a directory over a directory
//! merges with it and takes its metadata).

use super::entry::{copy_node, empty_dir, hard_link, kind_at, make_dir, open_below, open_dir};
use super::entry::{names, open_root, remove_all, Entry};
use rustix::fs::{renameat, FileType};
use rustix::io::Errno;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Copies entries into the tree at `dst_root`, keeping hard links of one source together.
pub(crate) struct Copier<'a> {
    dst_root: BorrowedFd<'a>,
    /// Source inode → the first path (below `dst_root`) it was copied to.
    links: HashMap<(u64, u64), PathBuf>,
    /// Which layer each regular file and symlink of the result came from, when asked for.
    sources: Option<&'a mut HashMap<PathBuf, usize>>,
    layer: usize,
    /// Where a non-directory that replaces one is made before it is renamed over it, so that
    /// the old one is there until the new one is whole; `None`: remove, then make in place.
    staging: Option<OwnedFd>,
}

impl<'a> Copier<'a> {
    pub(crate) fn new(
        dst_root: BorrowedFd<'a>,
        sources: Option<&'a mut HashMap<PathBuf, usize>>,
    ) -> Copier<'a> {
        Copier {
            dst_root,
            links: HashMap::new(),
            sources,
            layer: 0,
            staging: None,
        }
    }

    /// Applies the entries of the directory `src` to `dst` (both at `rel` below their roots).
    fn apply_dir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &Path,
    ) -> io::Result<()> {
        for name in names(src)? {
            if let Some(entry) = Entry::read(src, &name)? {
                self.apply_entry(src, dst, &name, &entry, &rel.join(&name))?;
            }
        }
        Ok(())
    }

    /// Applies `src/name` (described by `entry`, at `rel` below the roots) to `dst/name`.
    pub(crate) fn apply_entry(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        entry: &Entry,
        rel: &Path,
    ) -> io::Result<()> {
        let existing = kind_at(dst, name)?;
        if entry.is_whiteout() {
            return remove_all(dst, name);
        }
        if entry.is_dir() {
            let sub = match existing {
                Some(FileType::Directory) => {
                    let sub = open_dir(dst, name)?;
                    if entry.opaque {
                        empty_dir(sub.as_fd())?;
                    }
                    entry.apply_to_fd(sub.as_fd())?;
                    sub
                }
                other => {
                    if other.is_some() {
                        remove_all(dst, name)?;
                    }
                    make_dir(dst, name, entry)?
                }
            };
            self.apply_dir(open_dir(src, name)?.as_fd(), sub.as_fd(), rel)?;
            return entry.set_times_fd(sub.as_fd());
        }
        let staging = match (&self.staging, existing) {
            (Some(staging), Some(kind)) if kind != FileType::Directory => {
                Some(staging.try_clone()?)
            }
            _ => None,
        };
        match staging {
            Some(staging) => {
                self.place(src, staging.as_fd(), name, entry, rel)?;
                match renameat(staging.as_fd(), name, dst, name) {
                    Ok(()) => {}
                    // Another file system mounted inside the destination.
                    Err(Errno::XDEV) => {
                        remove_all(staging.as_fd(), name)?;
                        remove_all(dst, name)?;
                        self.place(src, dst, name, entry, rel)?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                if existing.is_some() {
                    remove_all(dst, name)?;
                }
                self.place(src, dst, name, entry, rel)?;
            }
        }
        if let Some(sources) = self.sources.as_deref_mut() {
            sources.insert(rel.to_path_buf(), self.layer);
        }
        Ok(())
    }

    /// Makes the non-directory `dir/name` like `src/name`: a hard link to where its inode was
    /// copied first (the result's path `rel`), or a copy.
    fn place(
        &mut self,
        src: BorrowedFd<'_>,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        entry: &Entry,
        rel: &Path,
    ) -> io::Result<()> {
        let linked = entry.kind == FileType::RegularFile && entry.nlink > 1;
        match self.links.get(&entry.inode) {
            Some(first) if linked => {
                let first_dir = open_below(self.dst_root, first.parent().unwrap_or(first))?;
                let first_name = first.file_name().unwrap_or_default();
                hard_link(first_dir.as_fd(), first_name, dir, name)
            }
            _ => {
                copy_node(src, dir, name, entry)?;
                if linked {
                    self.links.insert(entry.inode, rel.to_path_buf());
                }
                Ok(())
            }
        }
    }
}

/// Copies the tree `src` into the existing directory `target` as BuildKit's local exporter
/// writes into its destination: each entry of `src` replaces what `target` has at its path (a
/// directory merges with a directory and takes its metadata), a file that replaces another
/// is made beside it and renamed over it, and nothing else in `target` changes — neither its
/// other entries nor its own metadata.
pub(crate) fn copy_into(src: &Path, target: &Path) -> io::Result<()> {
    let staging = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempdir_in(target)?;
    let dst = open_root(target)?;
    let mut copier = Copier::new(dst.as_fd(), None);
    copier.staging = Some(open_root(staging.path())?);
    let src = open_root(src)?;
    copier.apply_dir(src.as_fd(), dst.as_fd(), Path::new(""))
}

/// Materialises `layers` (bottom first) into the directory `target`. With `sources`, records
/// for each non-directory of the result the index of the layer it was copied from.
pub(crate) fn materialise(
    layers: &[PathBuf],
    target: &Path,
    sources: Option<&mut HashMap<PathBuf, usize>>,
) -> io::Result<()> {
    let dst = open_root(target)?;
    let mut copier = Copier::new(dst.as_fd(), sources);
    for (i, layer) in layers.iter().enumerate() {
        let src = open_root(layer)?;
        // Hard links only ever join entries of one layer.
        copier.links.clear();
        copier.layer = i;
        // The root takes the metadata of the topmost layer's root, as in overlayfs.
        let root = Entry::read(src.as_fd(), OsStr::new("."))?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if root.opaque {
            empty_dir(dst.as_fd())?;
        }
        root.apply_to_fd(dst.as_fd())?;
        copier.apply_dir(src.as_fd(), dst.as_fd(), Path::new(""))?;
        root.set_times_fd(dst.as_fd())?;
    }
    Ok(())
}
