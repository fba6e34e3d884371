//! Content digests of what a COPY or ADD reads from its source, as BuildKit's
//! `cache/contenthash` computes them for a copy's cache key: exactly the entries
//! [`fileop::apply`](crate::fileop::apply) would copy, picked by the same code (wildcards,
//! symlinked sources followed inside the root, `.dockerignore`, `--exclude`, `--parents`), each
//! with its path, type, permission bits, owner (for sources that keep owners), symlink target,
//! device number, xattrs and content hash. Never mtimes, inode numbers, the listing order or
//! where the source lives on the host: a fresh clone elsewhere gives the same digest.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_cache::statcache::{read_hash, StatCache};
use kiln_patterns::PatternMatcher;

use crate::cachekey::{read_dir_with_meta, CacheKey, KeyBuilder};
use crate::fileop::copy::{source_io, SourceView};
use crate::fileop::filter::{Filters, Selection};
use crate::fileop::{FileOpError, SourceFs};
use crate::op::CopyAction;

/// Permission bits a copy keeps (fileop's `MODE_BITS`).
const MODE_BITS: u32 = 0o7777;

/// What one copy action selects from its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySelection {
    /// The digest of the whole selection (what a copy's cache key needs).
    pub key: CacheKey,
    /// Each selected entry, in copy order, for explaining cache misses.
    pub entries: Vec<SelectedEntry>,
    /// Bytes of the selected regular files.
    pub bytes: u64,
}

/// One entry a copy reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedEntry {
    /// The path relative to the source root, symlinks of the source path followed.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// The digest of everything about the entry that the copy keeps (its path excluded).
    pub digest: [u8; 32],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
}

impl EntryKind {
    fn tag(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Fifo => "fifo",
            EntryKind::CharDevice => "char",
            EntryKind::BlockDevice => "block",
        }
    }
}

/// The digest of what `action` reads from `src`; see [`copy_selection`].
pub fn copy_selection_digest(
    action: &CopyAction,
    src: &SourceFs,
    cache: Option<&StatCache>,
) -> Result<CacheKey, FileOpError> {
    copy_selection(action, src, cache).map(|s| s.key)
}

/// What `action` reads from `src`, and its digest. Fails as the copy itself would when a
/// (non-wildcard) source is missing or ignored. `cache`, the stat cache of `src.root`, saves
/// reading files whose stat fields have not changed; the result is the same without it.
pub fn copy_selection(
    action: &CopyAction,
    src: &SourceFs,
    cache: Option<&StatCache>,
) -> Result<CopySelection, FileOpError> {
    let exclude = if action.exclude.is_empty() {
        None
    } else {
        Some(PatternMatcher::new(&action.exclude)?)
    };
    let keep_owner = !src.root_owned;
    let mut b = KeyBuilder::new("copy-selection");
    b.str(if keep_owner {
        "keep-owner"
    } else {
        "root-owned"
    });
    let mut walker = Walker {
        root: &src.root,
        cache,
        keep_owner,
        pending: Vec::new(),
        hardlinks: HashMap::new(),
        b,
        entries: Vec::new(),
        bytes: 0,
    };
    let view = SourceView { fs: src };
    for s in &action.src {
        let picked = view.pick(s, action.parents)?;
        walker.b.str("src").str(s);
        walker.b.bytes(&(picked.len() as u64).to_le_bytes());
        for p in picked {
            // The name as picked decides the file name at the destination; what is below it
            // is keyed relative to it.
            walker.b.str("pick").bytes(p.name.as_os_str().as_bytes());
            let filters = Filters {
                ignore: src.ignore.as_deref(),
                exclude: exclude.as_ref(),
                include: p.include.as_deref(),
            };
            walker.hardlinks.clear();
            walker.entry(&filters, &p.real, Path::new(""), true, None)?;
        }
    }
    Ok(CopySelection {
        key: walker.b.finish(),
        entries: walker.entries,
        bytes: walker.bytes,
    })
}

/// A directory a filter dropped but whose descendants may be selected: recorded on first need,
/// as the copy creates it.
struct Pending {
    within: PathBuf,
    entry: SelectedEntry,
    emitted: bool,
}

/// Mirrors fileop's `TreeCopy::copy_entry`, recording instead of copying.
struct Walker<'a> {
    root: &'a Path,
    cache: Option<&'a StatCache>,
    keep_owner: bool,
    pending: Vec<Pending>,
    /// First path (within the picked source) of each multiply-linked inode: the copy links
    /// later ones to it.
    hardlinks: HashMap<(u64, u64), PathBuf>,
    b: KeyBuilder,
    entries: Vec<SelectedEntry>,
    bytes: u64,
}

impl Walker<'_> {
    fn entry(
        &mut self,
        filters: &Filters<'_>,
        src: &Path,
        within: &Path,
        top: bool,
        meta: Option<Metadata>,
    ) -> Result<(), FileOpError> {
        let abs = self.root.join(src);
        let shown = || src.to_string_lossy().into_owned();
        let meta = match meta.map_or_else(|| fs::symlink_metadata(&abs), Ok) {
            Ok(meta) => meta,
            Err(e) if !top && is_missing(&e) => return Ok(()),
            Err(e) => return Err(source_io("failed to read", &shown(), e)),
        };
        let ft = meta.file_type();
        let selection = if top {
            Selection::Copy
        } else {
            filters.select(src, within, ft.is_dir())
        };
        if ft.is_dir() {
            if selection == Selection::Skip {
                return Ok(());
            }
            // Only a directory's contents are copied: the top one's own metadata never is.
            let entry = if top {
                SelectedEntry {
                    path: src.to_path_buf(),
                    kind: EntryKind::Dir,
                    digest: KeyBuilder::new("top-dir").finish().0,
                }
            } else {
                self.describe(src, &abs, &meta, EntryKind::Dir, &[])?
            };
            match selection {
                Selection::Skip => unreachable!("skipped above"),
                Selection::Copy => {
                    self.flush_pending();
                    self.emit(within, entry);
                }
                Selection::Below => self.pending.push(Pending {
                    within: within.to_path_buf(),
                    entry,
                    emitted: false,
                }),
            }
            // Each child's metadata comes from its directory entry (a stat relative to the
            // directory, not a walk of its whole path).
            let children: Vec<(std::ffi::OsString, Option<Metadata>)> =
                match self.cache.and_then(|c| c.listing(src)) {
                    Some(listing) => listing
                        .iter()
                        .map(|(name, meta)| (name.clone(), Some(meta.clone())))
                        .collect(),
                    // An entry whose stat fails (it went away meanwhile) is stat'ed again by
                    // `entry`, which skips it.
                    None => read_dir_with_meta(&abs)
                        .map_err(|e| source_io("failed to read", &shown(), e))?
                        .into_iter()
                        .map(|(name, meta)| (name, meta.ok()))
                        .collect(),
                };
            for (name, meta) in children {
                self.entry(filters, &src.join(&name), &within.join(&name), false, meta)?;
            }
            if selection == Selection::Below {
                self.pending.pop();
            }
            return Ok(());
        }
        if selection != Selection::Copy || ft.is_socket() {
            return Ok(());
        }
        let (kind, payload): (EntryKind, Vec<u8>) = if ft.is_file() {
            let first = (meta.nlink() > 1)
                .then(|| {
                    self.hardlinks
                        .entry((meta.dev(), meta.ino()))
                        .or_insert_with(|| within.to_path_buf())
                        .clone()
                })
                .filter(|first| first != within);
            match first {
                Some(first) => {
                    let mut p = b"hardlink:".to_vec();
                    p.extend_from_slice(first.as_os_str().as_bytes());
                    (EntryKind::File, p)
                }
                None => {
                    let hash = match self.cache {
                        Some(cache) => cache.hash_file(src, &abs, &meta),
                        None => read_hash(&abs).map(|(h, _)| h),
                    }
                    .map_err(|e| source_io("failed to read", &shown(), e))?;
                    self.bytes += meta.len();
                    (EntryKind::File, hash.to_vec())
                }
            }
        } else if ft.is_symlink() {
            let target =
                fs::read_link(&abs).map_err(|e| source_io("failed to read", &shown(), e))?;
            (EntryKind::Symlink, target.as_os_str().as_bytes().to_vec())
        } else {
            let kind = if ft.is_fifo() {
                EntryKind::Fifo
            } else if ft.is_char_device() {
                EntryKind::CharDevice
            } else {
                EntryKind::BlockDevice
            };
            (kind, meta.rdev().to_le_bytes().to_vec())
        };
        let entry = self.describe(src, &abs, &meta, kind, &payload)?;
        self.flush_pending();
        self.emit(within, entry);
        Ok(())
    }

    /// The entry's digest: type, permission bits (not of symlinks, whose mode a copy doesn't
    /// set), owner when kept, xattrs as BuildKit's tarsum headers select them, and `payload`
    /// (content hash, link target, device number).
    fn describe(
        &self,
        src: &Path,
        abs: &Path,
        meta: &Metadata,
        kind: EntryKind,
        payload: &[u8],
    ) -> Result<SelectedEntry, FileOpError> {
        let mut b = KeyBuilder::new("entry");
        b.str(kind.tag());
        let mode = if kind == EntryKind::Symlink {
            0
        } else {
            meta.mode() & MODE_BITS
        };
        b.bytes(&mode.to_le_bytes());
        if self.keep_owner {
            b.bytes(&meta.uid().to_le_bytes())
                .bytes(&meta.gid().to_le_bytes());
        }
        b.bytes(payload);
        let xattrs = || {
            let mut d = KeyBuilder::new("xattrs");
            for (name, value) in xattrs(abs) {
                d.bytes(&name).bytes(&value);
            }
            d.finish().0
        };
        // An unchanged file's xattrs come from the stat cache, with its content hash.
        let digest = match self.cache {
            Some(cache) if kind == EntryKind::File => cache.xattrs_digest(src, meta, xattrs),
            _ => xattrs(),
        };
        b.bytes(&digest);
        Ok(SelectedEntry {
            path: src.to_path_buf(),
            kind,
            digest: b.finish().0,
        })
    }

    fn flush_pending(&mut self) {
        for i in 0..self.pending.len() {
            if !self.pending[i].emitted {
                self.pending[i].emitted = true;
                let (within, entry) = (
                    self.pending[i].within.clone(),
                    self.pending[i].entry.clone(),
                );
                self.emit(&within, entry);
            }
        }
    }

    fn emit(&mut self, within: &Path, entry: SelectedEntry) {
        self.b
            .str("entry")
            .bytes(within.as_os_str().as_bytes())
            .bytes(&entry.digest);
        self.entries.push(entry);
    }
}

/// The xattrs that describe a file rather than the host (BuildKit's tarsum v1 selection:
/// everything but `security.*` — SELinux labels differ between hosts — except
/// `security.capability`, and but `system.*`), sorted by name.
fn xattrs(abs: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(names) = xattr::list(abs) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .filter(|n| {
            let n = n.as_bytes();
            n == b"security.capability"
                || !(n.starts_with(b"security.") || n.starts_with(b"system."))
        })
        .filter_map(|n| {
            let value = xattr::get(abs, &n).ok().flatten()?;
            Some((n.as_bytes().to_vec(), value))
        })
        .collect();
    out.sort();
    out
}

/// Whether an error means "nothing there" (fileop's `is_missing`).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}
