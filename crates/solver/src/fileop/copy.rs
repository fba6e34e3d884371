//! COPY and ADD: picking the source paths (wildcards, `--parents`, `.dockerignore`), preparing
//! the destination, and copying trees, as BuildKit's `docopy` and fsutil's `copy.Copy` do with
//! the options the Dockerfile frontend sets (FollowSymlinks, CopyDirContentsOnly,
//! CreateDestPath, AllowWildcard, AllowEmptyWildcard).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use kiln_patterns::{has_wildcards, path_match, PatternMatcher};
use nix::fcntl::OFlag;
use nix::sys::stat::{mknod, Mode, SFlag};

use super::archive;
use super::chown::{resolve_owner, Owner};
use super::filter::{Filters, Include, Selection};
use super::metadata::{
    copy_xattrs, mkdir_all, set_file_attrs, set_mode, set_owner, set_times, NewDirs, Times,
    MODE_BITS,
};
use super::rootpath::{clean_relative, is_missing, resolve, Escape, ResolveError};
use super::{io_error, resolve_dest, shown, FileOpError, FileOpOptions, SourceFs};
use crate::op::CopyAction;

/// Applies a COPY or ADD.
pub(super) fn copy(
    action: &CopyAction,
    dest_root: &Path,
    source: &SourceFs,
    opts: &FileOpOptions,
) -> Result<(), FileOpError> {
    let owner = action
        .owner
        .as_ref()
        .map(|c| resolve_owner(c, dest_root))
        .transpose()?;
    let exclude = if action.exclude.is_empty() {
        None
    } else {
        Some(PatternMatcher::new(&action.exclude)?)
    };
    let view = SourceView { fs: source };
    let mut picked = Vec::new();
    for src in &action.src {
        picked.extend(view.pick(src, action.parents)?);
    }
    // Only wildcards that matched nothing: BuildKit's AllowEmptyWildcard, nothing is created.
    if picked.is_empty() {
        return Ok(());
    }
    let new_dirs = NewDirs {
        mode: 0o755,
        owner,
        time: opts.timestamp,
    };
    let several = action.src.len() > 1 || picked.len() > 1;
    let dest = prepare_dest(&action.dest, dest_root, several, new_dirs)?;
    for p in &picked {
        let src_abs = source.root.join(&p.real);
        let src_meta =
            fs::symlink_metadata(&src_abs).map_err(|e| source_io("failed to read", &p.shown, e))?;
        if action.extract_archives && src_meta.is_file() && archive::is_archive(&src_abs) {
            mkdir_all(dest_root, &dest, new_dirs).map_err(|(p, e)| mkdir_error(&p, e))?;
            archive::extract(&src_abs, &p.shown, dest_root, &dest, owner)?;
            continue;
        }
        let target = target_of(p, &src_meta, dest_root, &dest, new_dirs)?;
        let filters = Filters {
            ignore: source.ignore.as_deref(),
            exclude: exclude.as_ref(),
            include: p.include.as_deref(),
        };
        let attrs = Attrs {
            owner,
            root_owned: source.root_owned,
            mode: action.mode,
            time: opts.timestamp,
        };
        let write_root = match &opts.upper {
            Some(upper) if src_meta.is_dir() => new_dir_in_upper(dest_root, upper, &target)?,
            _ => None,
        };
        let mut tree = TreeCopy::new(
            &source.root,
            write_root.unwrap_or(dest_root),
            filters,
            attrs,
        );
        // Writing in the upper directory, files of the previous result may be shared.
        tree.previous = write_root.and(opts.previous.as_deref());
        tree.copy_entry(&p.real, Path::new(""), &target, true)?;
    }
    Ok(())
}

/// `upper` when the directory `target` (relative to the overlay mount `dest_root`) is new or
/// empty, so that a copy may create everything in it in the upper directory directly: no layer
/// has anything the copy could merge with or replace, and overlayfs has looked none of the
/// names up. The directory that will hold the copy's entries (`target`'s parent when `target`
/// isn't there, else `target`) is first copied up, by making and removing a file of a name no
/// layer has (which leaves no whiteout), so it is in `upper` with the lower layers' metadata,
/// as overlayfs would have made it for the copy's first file. `None`: copy through the mount.
fn new_dir_in_upper<'u>(
    dest_root: &Path,
    upper: &'u Path,
    target: &Path,
) -> Result<Option<&'u Path>, FileOpError> {
    let io = |e| io_error("failed to copy to", target, e);
    let merged = dest_root.join(target);
    let holder = match fs::symlink_metadata(&merged) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(&merged).map_err(io)?;
            if entries.next().is_some() {
                return Ok(None);
            }
            target
        }
        Ok(_) => return Ok(None),
        Err(e) if is_missing(&e) => match target.parent() {
            Some(parent) => parent,
            None => return Ok(None),
        },
        Err(e) => return Err(io(e)),
    };
    let probe = dest_root
        .join(holder)
        .join(format!(".kiln-copy-up-{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => fs::remove_file(&probe).map_err(io)?,
        // A layer has that name after all: copy through the mount.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    let holder_ok = fs::symlink_metadata(upper.join(holder)).is_ok_and(|m| m.is_dir());
    // A missing target may still be a whiteout in `upper` (a path this op deleted).
    let target_ok = holder == target
        || matches!(fs::symlink_metadata(upper.join(target)), Err(e) if is_missing(&e));
    Ok((holder_ok && target_ok).then_some(upper))
}

/// One source path to copy.
pub(crate) struct Picked {
    /// The path for messages: as the user wrote it, or the wildcard match.
    pub(crate) shown: String,
    /// The path as named, relative to the source root; its last component names a copied file.
    pub(crate) name: PathBuf,
    /// The same path with every symlink followed.
    pub(crate) real: PathBuf,
    /// `--parents`: what is copied from below `real`.
    pub(crate) include: Option<Rc<Include>>,
}

/// A source filesystem as COPY sees it: ignored paths are absent.
pub(crate) struct SourceView<'a> {
    pub(crate) fs: &'a SourceFs,
}

impl SourceView<'_> {
    /// The paths one `src` names.
    pub(crate) fn pick(&self, src: &str, parents: bool) -> Result<Vec<Picked>, FileOpError> {
        if !parents {
            return self.expand(src, src);
        }
        // `--parents`: what follows a `/./` pivot (or the whole path) is kept under the
        // destination, and selected by an include pattern from the pivot directory.
        let (base, pattern) = src.split_once("/./").unwrap_or(("/", src));
        let pattern = clean_relative(Path::new(pattern), Escape::Clamp)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bases = self.expand(src, base)?;
        if !has_wildcards(base) && !has_wildcards(&pattern) {
            self.existing(src, &Path::new(base).join(&pattern))?;
        }
        let include = if pattern.is_empty() {
            None
        } else {
            Some(Rc::new(Include::new(&pattern)?))
        };
        Ok(bases
            .into_iter()
            .map(|p| Picked {
                include: include.clone(),
                ..p
            })
            .collect())
    }

    /// `src` itself, or what its wildcards match (sorted, possibly nothing), as
    /// fsutil's `ResolveWildcards` does: the part before the first wildcard component is
    /// resolved, the rest is matched against the paths below it.
    fn expand(&self, shown_src: &str, src: &str) -> Result<Vec<Picked>, FileOpError> {
        let clean = clean_relative(Path::new(src), Escape::Clamp).unwrap_or_default();
        let components: Vec<OsString> = clean.iter().map(|c| c.to_os_string()).collect();
        let Some(first) = components
            .iter()
            .position(|c| has_wildcards(&c.to_string_lossy()))
        else {
            let real = self.existing(shown_src, &clean)?;
            return Ok(vec![Picked {
                shown: shown_src.to_string(),
                name: clean,
                real,
                include: None,
            }]);
        };
        let base: PathBuf = components[..first].iter().collect();
        let pattern = components[first..]
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let base = self.existing(shown_src, &base)?;
        let mut matches = Vec::new();
        if fs::symlink_metadata(self.fs.root.join(&base)).is_ok_and(|m| m.is_dir()) {
            let max_depth = 1 + pattern.matches(['/', '[']).count();
            self.walk(&base, Path::new(""), &pattern, max_depth, &mut matches)?;
        }
        matches
            .into_iter()
            .map(|m| {
                let shown = m.to_string_lossy().into_owned();
                let real = self.existing(&shown, &m)?;
                Ok(Picked {
                    shown,
                    name: m,
                    real,
                    include: None,
                })
            })
            .collect()
    }

    /// Collects the paths below `dir` (relative to the root) whose path relative to the
    /// wildcard base matches `pattern`. A matching directory is not entered; a directory
    /// deeper than any match can be is not entered either.
    fn walk(
        &self,
        dir: &Path,
        below_base: &Path,
        pattern: &str,
        max_depth: usize,
        out: &mut Vec<PathBuf>,
    ) -> Result<(), FileOpError> {
        for name in read_dir_sorted(&self.fs.root.join(dir))
            .map_err(|e| source_io("failed to read", &dir.to_string_lossy(), e))?
        {
            let path = dir.join(&name);
            let rel = below_base.join(&name);
            let Ok(meta) = fs::symlink_metadata(self.fs.root.join(&path)) else {
                continue;
            };
            if self.selection(&path, meta.is_dir()) == Selection::Skip {
                continue;
            }
            if path_match(pattern, &rel.to_string_lossy())? {
                out.push(path);
            } else if meta.is_dir() && rel.iter().count() < max_depth {
                self.walk(&path, &rel, pattern, max_depth, out)?;
            }
        }
        Ok(())
    }

    /// Resolves `path` (symlinks followed inside the root) and checks that it exists.
    fn existing(&self, shown_src: &str, path: &Path) -> Result<PathBuf, FileOpError> {
        let root = &self.fs.root;
        let real = resolve(root, path, true, Escape::Clamp, &|p| self.absent(p))
            .map_err(|e| self.resolve_error(shown_src, e))?;
        match fs::symlink_metadata(root.join(&real)) {
            Ok(_) if !self.absent(&real) => Ok(real),
            Err(e) if !is_missing(&e) => Err(source_io("failed to read", shown_src, e)),
            _ => Err(self.not_found(shown_src, path)),
        }
    }

    /// The error for a source that is not there: was it hidden by `.dockerignore`?
    fn not_found(&self, shown_src: &str, path: &Path) -> FileOpError {
        let root = &self.fs.root;
        let on_disk = resolve(root, path, true, Escape::Clamp, &|_| false)
            .is_ok_and(|real| fs::symlink_metadata(root.join(real)).is_ok());
        let (path, source_name) = (shown_src.to_string(), self.fs.name.clone());
        if on_disk && self.fs.ignore.is_some() {
            FileOpError::SourceIgnored { path, source_name }
        } else {
            FileOpError::SourceNotFound { path, source_name }
        }
    }

    fn resolve_error(&self, shown_src: &str, e: ResolveError) -> FileOpError {
        match e {
            ResolveError::Io(e) => source_io("failed to read", shown_src, e),
            ResolveError::Escapes | ResolveError::TooManyLinks => FileOpError::SymlinkLoop {
                path: shown_src.to_string(),
            },
        }
    }

    /// How `.dockerignore` treats `rel` (relative to the root).
    fn selection(&self, rel: &Path, is_dir: bool) -> Selection {
        match &self.fs.ignore {
            Some(ignore) => Selection::excluded_by(ignore, &rel.to_string_lossy(), is_dir),
            None => Selection::Copy,
        }
    }

    /// Whether `rel` is hidden: ignored, and not a directory an exception reaches into.
    fn absent(&self, rel: &Path) -> bool {
        if self.fs.ignore.is_none() || rel.as_os_str().is_empty() {
            return false;
        }
        let is_dir = fs::symlink_metadata(self.fs.root.join(rel)).is_ok_and(|m| m.is_dir());
        self.selection(rel, is_dir) == Selection::Skip
    }
}

/// Creates what must exist of the destination and resolves it (fsutil's `Copy`): a
/// destination that is a directory (trailing `/`, or several sources) is created, otherwise its
/// parent is. Returns the destination relative to `dest_root`, symlinks followed.
fn prepare_dest(
    dest: &str,
    dest_root: &Path,
    several: bool,
    new_dirs: NewDirs,
) -> Result<PathBuf, FileOpError> {
    let is_dir = several || dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
    let clean = clean_relative(Path::new(dest), Escape::Clamp).unwrap_or_default();
    let ensure = if is_dir {
        clean.as_path()
    } else {
        clean.parent().unwrap_or(Path::new(""))
    };
    let ensure = resolve_dest(dest_root, ensure, dest)?;
    mkdir_all(dest_root, &ensure, new_dirs).map_err(|(p, e)| mkdir_error(&p, e))?;
    resolve_dest(dest_root, &clean, dest)
}

/// Where one source goes (fsutil's `prepareTargetDir`): into the destination when the source
/// is a file and the destination a directory, else onto the destination. Creates the target's
/// parent (or the target, for a directory source).
fn target_of(
    p: &Picked,
    src_meta: &Metadata,
    dest_root: &Path,
    dest: &Path,
    new_dirs: NewDirs,
) -> Result<PathBuf, FileOpError> {
    let dest_meta = fs::symlink_metadata(dest_root.join(dest)).ok();
    let mut target = dest.to_path_buf();
    if !src_meta.is_dir() && dest_meta.as_ref().is_some_and(|m| m.is_dir()) {
        if let Some(name) = p.name.file_name() {
            target.push(name);
        }
    }
    let make = if src_meta.is_dir() && dest_meta.is_none() {
        Some(target.as_path())
    } else {
        target.parent()
    };
    if let Some(make) = make {
        mkdir_all(dest_root, make, new_dirs).map_err(|(p, e)| mkdir_error(&p, e))?;
    }
    Ok(target)
}

/// Metadata policy of one copy.
struct Attrs {
    /// `--chown`.
    owner: Option<Owner>,
    /// Without `--chown`: root instead of the source's owner.
    root_owned: bool,
    /// `--chmod`.
    mode: Option<u32>,
    time: Option<SystemTime>,
}

/// A directory a filter dropped but whose descendants may be copied: created on first need.
struct Pending {
    target: PathBuf,
    made: bool,
}

/// The recursive copy of one source (fsutil's `copier`). Paths are relative to their roots.
struct TreeCopy<'a> {
    src_root: &'a Path,
    dest_root: &'a Path,
    filters: Filters<'a>,
    attrs: Attrs,
    /// First copy of each multiply-linked source inode, so links stay links.
    hardlinks: HashMap<(u64, u64), PathBuf>,
    pending: Vec<Pending>,
    /// A committed diff laid out as `dest_root` (`FileOpOptions::previous`): files equal to
    /// the ones being copied are linked from there.
    previous: Option<&'a Path>,
}

impl<'a> TreeCopy<'a> {
    fn new(src_root: &'a Path, dest_root: &'a Path, filters: Filters<'a>, attrs: Attrs) -> Self {
        TreeCopy {
            src_root,
            dest_root,
            filters,
            attrs,
            hardlinks: HashMap::new(),
            pending: Vec::new(),
            previous: None,
        }
    }

    /// Copies `src` (relative to the source root; `within` relative to the copied source) to
    /// `target`. The top of a copy always exists and merges into an existing directory
    /// without changing its metadata.
    fn copy_entry(
        &mut self,
        src: &Path,
        within: &Path,
        target: &Path,
        top: bool,
    ) -> Result<(), FileOpError> {
        let src_abs = self.src_root.join(src);
        let meta = match fs::symlink_metadata(&src_abs) {
            Ok(meta) => meta,
            Err(e) if !top && is_missing(&e) => return Ok(()),
            Err(e) => return Err(source_io("failed to read", &src.to_string_lossy(), e)),
        };
        let file_type = meta.file_type();
        let selection = if top {
            Selection::Copy
        } else {
            self.filters.select(src, within, file_type.is_dir())
        };
        if file_type.is_dir() {
            return self.copy_dir(src, within, target, top, meta, selection);
        }
        // Sockets only make sense to a running process.
        if selection != Selection::Copy || file_type.is_socket() {
            return Ok(());
        }
        self.make_pending()?;
        self.clear_for_file(target)?;
        let dst_abs = self.dest_root.join(target);
        let io = |e| io_error("failed to copy to", target, e);
        if file_type.is_file() {
            if let Some((from, to)) = self.copy_file(src, target, &meta)? {
                let (owner, mode, times) = self.attrs_of(&meta);
                return set_file_attrs(&from, &to, owner, mode, times)
                    .map_err(|e| io_error("failed to set metadata of", target, e));
            }
        } else if file_type.is_symlink() {
            let link = fs::read_link(&src_abs)
                .map_err(|e| source_io("failed to read", &src.to_string_lossy(), e))?;
            symlink(link, &dst_abs).map_err(io)?;
        } else {
            let kind = if file_type.is_fifo() {
                SFlag::S_IFIFO
            } else if file_type.is_char_device() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            mknod(
                &dst_abs,
                kind,
                Mode::from_bits_truncate(meta.mode()),
                meta.rdev(),
            )
            .map_err(|e| io(io::Error::from(e)))?;
        }
        self.apply_attrs(&src_abs, target, &meta)
    }

    fn copy_dir(
        &mut self,
        src: &Path,
        within: &Path,
        target: &Path,
        top: bool,
        meta: Metadata,
        selection: Selection,
    ) -> Result<(), FileOpError> {
        let src_abs = self.src_root.join(src);
        let created = match selection {
            Selection::Skip => return Ok(()),
            Selection::Copy => {
                self.make_pending()?;
                self.ensure_dir(target)?
            }
            Selection::Below => {
                self.pending.push(Pending {
                    target: target.to_path_buf(),
                    made: false,
                });
                false
            }
        };
        let children = read_dir_sorted(&src_abs)
            .map_err(|e| source_io("failed to read", &src.to_string_lossy(), e))?;
        for name in children {
            self.copy_entry(
                &src.join(&name),
                &within.join(&name),
                &target.join(&name),
                false,
            )?;
        }
        // Metadata after the contents, so the directory keeps the source's mtime.
        let made = match selection {
            Selection::Below => self.pending.pop().is_some_and(|p| p.made),
            _ => created || !top,
        };
        if made {
            self.apply_attrs(&src_abs, target, &meta)?;
        }
        Ok(())
    }

    /// Creates the directories of `pending` that are not there yet.
    fn make_pending(&mut self) -> Result<(), FileOpError> {
        for i in 0..self.pending.len() {
            if !self.pending[i].made {
                let target = self.pending[i].target.clone();
                self.ensure_dir(&target)?;
                self.pending[i].made = true;
            }
        }
        Ok(())
    }

    /// Makes `target` a directory; returns whether it was created.
    fn ensure_dir(&self, target: &Path) -> Result<bool, FileOpError> {
        let abs = self.dest_root.join(target);
        match fs::symlink_metadata(&abs) {
            Ok(meta) if meta.is_dir() => Ok(false),
            Ok(_) => Err(FileOpError::Conflict {
                path: shown(target),
                reason: "cannot copy a directory over a file",
            }),
            Err(e) if is_missing(&e) => {
                fs::create_dir(&abs).map_err(|e| mkdir_error(target, e))?;
                Ok(true)
            }
            Err(e) => Err(io_error("failed to copy to", target, e)),
        }
    }

    /// Removes a non-directory where a non-directory is about to be written.
    fn clear_for_file(&self, target: &Path) -> Result<(), FileOpError> {
        let abs = self.dest_root.join(target);
        match fs::symlink_metadata(&abs) {
            Ok(meta) if meta.is_dir() => Err(FileOpError::Conflict {
                path: shown(target),
                reason: "cannot copy a file over a directory",
            }),
            Ok(_) => fs::remove_file(&abs).map_err(|e| io_error("failed to replace", target, e)),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(io_error("failed to copy to", target, e)),
        }
    }

    /// Copies a regular file; returns both files, open, unless the copy is a hard link to a
    /// file copied before.
    fn copy_file(
        &mut self,
        src: &Path,
        target: &Path,
        meta: &Metadata,
    ) -> Result<Option<(File, File)>, FileOpError> {
        let dst_abs = self.dest_root.join(target);
        let io = |e| io_error("failed to copy to", target, e);
        if meta.nlink() > 1 {
            let inode = (meta.dev(), meta.ino());
            if let Some(first) = self.hardlinks.get(&inode) {
                fs::hard_link(self.dest_root.join(first), &dst_abs).map_err(io)?;
                return Ok(None);
            }
            self.hardlinks.insert(inode, target.to_path_buf());
        }
        let mut from = File::open(self.src_root.join(src))
            .map_err(|e| source_io("failed to read", &src.to_string_lossy(), e))?;
        if let Some(previous) = self.previous {
            let earlier = previous.join(target);
            if self.same_file(&earlier, &mut from, meta)
                && fs::hard_link(&earlier, &dst_abs).is_ok()
            {
                return Ok(None);
            }
            std::io::Seek::rewind(&mut from).map_err(io)?;
        }
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&dst_abs)
            .map_err(io)?;
        io::copy(&mut from, &mut to).map_err(io)?;
        Ok(Some((from, to)))
    }

    /// Whether `earlier` (a file of an immutable snapshot) is what copying `from` (whose
    /// metadata is `meta`) would make: same size, mode bits, owner, mtime, xattrs and bytes.
    /// Any doubt (an error) is a no.
    fn same_file(&self, earlier: &Path, from: &mut File, meta: &Metadata) -> bool {
        use std::io::Read;
        use xattr::FileExt;
        let Ok(theirs) = fs::symlink_metadata(earlier) else {
            return false;
        };
        let (owner, mode, times) = self.attrs_of(meta);
        let same_meta = theirs.is_file()
            && theirs.len() == meta.len()
            && theirs.mode() & MODE_BITS == mode
            && (theirs.uid(), theirs.gid()) == (owner.uid, owner.gid)
            && (theirs.mtime(), theirs.mtime_nsec())
                == (times.mtime.tv_sec(), times.mtime.tv_nsec());
        let Some(mut other) = same_meta.then(|| File::open(earlier).ok()).flatten() else {
            return false;
        };
        let xattrs = |f: &File| -> Option<Vec<(OsString, Vec<u8>)>> {
            let mut all: Vec<_> = f
                .list_xattr()
                .ok()?
                .map(|n| {
                    let v = f.get_xattr(&n).ok().flatten().unwrap_or_default();
                    (n, v)
                })
                .collect();
            all.sort();
            Some(all)
        };
        match (xattrs(from), xattrs(&other)) {
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
        let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
        loop {
            let n = match from.read(&mut a) {
                Ok(n) => n,
                Err(_) => return false,
            };
            if n == 0 {
                return other.read(&mut b[..1]).is_ok_and(|m| m == 0);
            }
            if other.read_exact(&mut b[..n]).is_err() || a[..n] != b[..n] {
                return false;
            }
        }
    }

    /// The owner, mode bits and times a copied entry with `meta` gets.
    fn attrs_of(&self, meta: &Metadata) -> (Owner, u32, Times) {
        let owner = match (self.attrs.owner, self.attrs.root_owned) {
            (Some(owner), _) => owner,
            (None, true) => Owner { uid: 0, gid: 0 },
            (None, false) => Owner {
                uid: meta.uid(),
                gid: meta.gid(),
            },
        };
        let mode = self.attrs.mode.unwrap_or(meta.mode()) & MODE_BITS;
        let times = self.attrs.time.map_or_else(|| Times::of(meta), Times::at);
        (owner, mode, times)
    }

    /// Owner, mode, xattrs and times of a copied path, in the order that keeps them all
    /// (chown clears setuid bits and file capabilities).
    fn apply_attrs(
        &self,
        src_abs: &Path,
        target: &Path,
        meta: &Metadata,
    ) -> Result<(), FileOpError> {
        let abs = self.dest_root.join(target);
        let io = |e| io_error("failed to set metadata of", target, e);
        let (owner, mode, times) = self.attrs_of(meta);
        set_owner(&abs, owner).map_err(io)?;
        if !meta.file_type().is_symlink() {
            set_mode(&abs, mode).map_err(io)?;
        }
        copy_xattrs(src_abs, &abs);
        set_times(&abs, times).map_err(io)
    }
}

/// The names in a directory, in byte order (Go's `filepath.Walk` and fsutil read them sorted).
pub(crate) fn read_dir_sorted(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

pub(crate) fn source_io(action: &'static str, path: &str, error: io::Error) -> FileOpError {
    FileOpError::Io {
        action,
        path: path.to_string(),
        error,
    }
}

fn mkdir_error(rel: &Path, error: io::Error) -> FileOpError {
    io_error("failed to create directory", rel, error)
}
