//! Directories a layer doesn't need. overlayfs copies a directory up into the upper layer as soon
//! as anything below it is touched — a mount stub made and removed again (`/etc/hosts` in an
//! image without one), a file created and deleted — and keeps it there. BuildKit's differs leave
//! such a directory out of the layer: a directory whose mode, owner and xattrs are those of the
//! one below (its times don't count) is only written as the parent of a change below it. The
//! copy snapshotter's diff doesn't see a copy-up at all. So that both snapshotters give the
//! layers BuildKit gives, a committed diff loses the directories with nothing below them that
//! equal the directory they cover.

use super::entry::{open_dir, open_root, Entry};
use rustix::fs::{unlinkat, AtFlags, Dir, FileType};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Removes from the upperdir-form `diff`, made over `lower` (bottom first), every directory
/// that holds nothing (once such directories below it are gone), is not opaque, and covers a
/// directory of `lower` with the same mode, owner and xattrs.
pub(crate) fn drop_unchanged_dirs(diff: &Path, lower: &[PathBuf]) -> io::Result<()> {
    if lower.is_empty() {
        return Ok(());
    }
    let lower = Lower::open(lower)?;
    let root = open_root(diff)?;
    tidy(root.as_fd(), &mut Vec::new(), &lower)?;
    Ok(())
}

/// Tidies the diff directory `dir` (at `path` below the diff's root); returns whether it is
/// empty afterwards.
fn tidy(dir: BorrowedFd<'_>, path: &mut Vec<OsString>, lower: &Lower) -> io::Result<bool> {
    let mut left = 0usize;
    for (name, kind) in names_and_types(dir)? {
        left += 1;
        // Only directories are looked at closer (a layer's files are most of its entries).
        if kind != FileType::Directory && kind != FileType::Unknown {
            continue;
        }
        let Some(entry) = Entry::read(dir, &name)? else {
            left -= 1;
            continue;
        };
        if !entry.is_dir() || entry.opaque {
            continue;
        }
        path.push(name.clone());
        let empty = tidy(open_dir(dir, &name)?.as_fd(), path, lower)?;
        let covered = empty
            && lower
                .entry(path)?
                .is_some_and(|below| below.is_dir() && same_dir(&below, &entry));
        path.pop();
        if covered {
            unlinkat(dir, name.as_os_str(), AtFlags::REMOVEDIR)?;
            left -= 1;
        }
    }
    Ok(left == 0)
}

/// The names in an open directory with their types as the directory entry gives them
/// (`Unknown` where the file system doesn't say).
fn names_and_types(dir: BorrowedFd<'_>) -> io::Result<Vec<(OsString, FileType)>> {
    let mut out = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push((OsStr::from_bytes(name).to_os_string(), entry.file_type()));
        }
    }
    Ok(out)
}

/// BuildKit's test for a directory (continuity's `sameFile`): the same mode and owner; kiln
/// also wants the same xattrs, not only `security.capability`.
fn same_dir(a: &Entry, b: &Entry) -> bool {
    a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.xattrs == b.xattrs
}

/// The layers below a diff, top first, as overlayfs stacks them.
struct Lower {
    top_first: Vec<OwnedFd>,
}

impl Lower {
    fn open(bottom_first: &[PathBuf]) -> io::Result<Lower> {
        Ok(Lower {
            top_first: bottom_first
                .iter()
                .rev()
                .map(|p| open_root(p))
                .collect::<io::Result<_>>()?,
        })
    }

    /// What the stack shows at `path`: the entry of the topmost layer that has one, unless a
    /// whiteout, a non-directory or an opaque directory on the way hides it.
    fn entry(&self, path: &[OsString]) -> io::Result<Option<Entry>> {
        let Some((name, parents)) = path.split_last() else {
            return Ok(None);
        };
        'layers: for layer in &self.top_first {
            let mut dir = layer.try_clone()?;
            let mut opaque = false;
            for parent in parents {
                match Entry::read(dir.as_fd(), parent)? {
                    // This layer says nothing about the path: look below.
                    None => continue 'layers,
                    Some(e) if !e.is_dir() => return Ok(None),
                    Some(e) => {
                        opaque |= e.opaque;
                        dir = open_dir(dir.as_fd(), parent)?;
                    }
                }
            }
            match Entry::read(dir.as_fd(), name)? {
                Some(e) if e.is_whiteout() => return Ok(None),
                Some(e) => return Ok(Some(e)),
                None if opaque => return Ok(None),
                None => {}
            }
        }
        Ok(None)
    }
}
