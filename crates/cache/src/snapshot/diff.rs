//! The copy snapshotter's writable layer: the lower view is materialised as a plain tree and
//! recorded (every entry's metadata, inode and ctime), and at commit the tree as the build step
//! left it is compared with that record to write the change in upperdir form, as overlayfs'
//! copy-up would have: new and changed entries with their parent directories, deletions as
//! whiteouts, directories removed and made again as opaque directories.
//!
//! An entry whose inode and ctime are both unchanged was not touched (the kernel sets ctime on
//! every change and nothing can set it back, and [`LowerView::materialise`] waits until the
//! clock has moved past every recorded ctime). Otherwise its metadata is compared, and for a
//! regular file whose metadata is unchanged, its bytes are compared with the layer it came from.

use super::entry::{
    link_target, make_dir, make_whiteout, names, open_below, open_dir, open_root, same_content,
    set_opaque_fd, Entry,
};
use super::merge::{materialise, Copier};
use rustix::fs::{FileType, Mode, Timespec};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the materialised lower view of a writable layer held.
pub(crate) struct LowerView {
    layers: Vec<PathBuf>,
    root: Entry,
    /// Directory path → its entries.
    dirs: HashMap<PathBuf, BTreeMap<OsString, Entry>>,
    /// Non-directory path → index of the layer it was copied from.
    sources: HashMap<PathBuf, usize>,
    symlinks: HashMap<PathBuf, Vec<u8>>,
}

impl fmt::Debug for LowerView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LowerView")
            .field("layers", &self.layers)
            .field("dirs", &self.dirs.len())
            .finish_non_exhaustive()
    }
}

impl LowerView {
    /// Materialises `layers` (bottom first) into the empty directory `target` and records it.
    pub(crate) fn materialise(layers: &[PathBuf], target: &Path) -> io::Result<LowerView> {
        let mut sources = HashMap::new();
        materialise(layers, target, Some(&mut sources))?;
        let root_fd = open_root(target)?;
        let root = read_root(root_fd.as_fd())?;
        let mut view = LowerView {
            layers: layers.to_vec(),
            root,
            dirs: HashMap::new(),
            sources,
            symlinks: HashMap::new(),
        };
        let mut latest = view.root.ctime;
        view.record(root_fd.as_fd(), PathBuf::new(), &mut latest)?;
        wait_past(root_fd.as_fd(), &view.root, latest)?;
        Ok(view)
    }

    fn record(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: PathBuf,
        latest: &mut Timespec,
    ) -> io::Result<()> {
        let mut children = BTreeMap::new();
        for name in names(dir)? {
            let Some(entry) = Entry::read(dir, &name)? else {
                continue;
            };
            let child = rel.join(&name);
            *latest = (*latest).max(entry.ctime);
            match entry.kind {
                FileType::Directory => self.record(open_dir(dir, &name)?.as_fd(), child, latest)?,
                FileType::Symlink => {
                    self.symlinks.insert(child, link_target(dir, &name)?);
                }
                _ => {}
            }
            children.insert(name, entry);
        }
        self.dirs.insert(rel, children);
        Ok(())
    }
}

fn read_root(fd: BorrowedFd<'_>) -> io::Result<Entry> {
    Entry::read(fd, OsStr::new("."))?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// Returns once a change made now gets a ctime later than `latest`. File systems stamp ctime
/// from a coarse clock, so without this a change in the same tick as the copy could look
/// untouched. The probe re-sets the root's own mode, which changes nothing but its ctime.
fn wait_past(root: BorrowedFd<'_>, root_entry: &Entry, latest: Timespec) -> io::Result<()> {
    for _ in 0..1000 {
        rustix::fs::fchmod(root, Mode::from_raw_mode(root_entry.mode))?;
        if read_root(root)?.ctime > latest {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(io::Error::other("the file system's ctime does not advance"))
}

/// Writes into the empty directory `diff` what changed in `current` since `lower` was recorded.
pub(crate) fn write_diff(lower: &LowerView, current: &Path, diff: &Path) -> io::Result<()> {
    let cur_root = open_root(current)?;
    let diff_root = open_root(diff)?;
    let mut differ = Differ {
        lower,
        cur_root: cur_root.as_fd(),
        diff_root: diff_root.as_fd(),
        copier: Copier::new(diff_root.as_fd(), None),
        made: Vec::new(),
        last: None,
        layer_roots: HashMap::new(),
    };
    let root = read_root(cur_root.as_fd())?;
    if !root.same_metadata(&lower.root) {
        root.apply_to_fd(diff_root.as_fd())?;
        differ.made.push((PathBuf::new(), root));
    }
    differ.diff_dir(Path::new(""), cur_root.as_fd())?;
    differ.set_dir_times()
}

struct Differ<'a> {
    lower: &'a LowerView,
    cur_root: BorrowedFd<'a>,
    diff_root: BorrowedFd<'a>,
    copier: Copier<'a>,
    /// Directories made in the diff (to copy up a change below them), whose times are set last.
    made: Vec<(PathBuf, Entry)>,
    /// The diff directory opened last (siblings usually follow each other).
    last: Option<(PathBuf, OwnedFd)>,
    layer_roots: HashMap<usize, OwnedFd>,
}

impl Differ<'_> {
    fn diff_dir(&mut self, rel: &Path, cur: BorrowedFd<'_>) -> io::Result<()> {
        let empty = BTreeMap::new();
        let lower = self.lower.dirs.get(rel).unwrap_or(&empty);
        let now = names(cur)?;
        for name in &now {
            let Some(entry) = Entry::read(cur, name)? else {
                continue;
            };
            if entry.inode.0 != self.lower.root.inode.0 {
                // Something mounted over the tree (a step's mount left behind) is no part of it.
                continue;
            }
            let child = rel.join(name);
            match lower.get(name) {
                None => self.add(cur, name, &entry, rel, false)?,
                Some(old) if old.is_dir() && entry.is_dir() => {
                    if old.inode != entry.inode || old.btime != entry.btime {
                        // Removed and made again: nothing of the old one shows through.
                        self.add(cur, name, &entry, rel, true)?;
                        continue;
                    }
                    if !old.same_metadata(&entry) {
                        self.diff_dir_at(&child)?;
                    }
                    self.diff_dir(&child, open_dir(cur, name)?.as_fd())?;
                }
                // overlayfs marks a directory made where something else was opaque.
                Some(_) if entry.is_dir() => self.add(cur, name, &entry, rel, true)?,
                Some(old) => {
                    if self.changed(old, &entry, cur, name, &child)? {
                        self.add(cur, name, &entry, rel, false)?;
                    }
                }
            }
        }
        for name in lower.keys() {
            if now.binary_search(name).is_err() {
                let dir = self.diff_dir_at(rel)?;
                make_whiteout(dir.as_fd(), name)?;
            }
        }
        Ok(())
    }

    /// Whether the non-directory (or the directory now in its place) `cur/name` differs from
    /// `old`, what was there in the lower view.
    fn changed(
        &mut self,
        old: &Entry,
        now: &Entry,
        cur: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
    ) -> io::Result<bool> {
        if !old.same_metadata(now) || old.nlink != now.nlink {
            return Ok(true);
        }
        if old.inode == now.inode && old.ctime == now.ctime {
            return Ok(false);
        }
        match now.kind {
            FileType::RegularFile => {
                let Some(&layer) = self.lower.sources.get(rel) else {
                    return Ok(true);
                };
                let layer_dir = self.layer_dir(layer, rel)?;
                Ok(!same_content(layer_dir.as_fd(), cur, name)?)
            }
            FileType::Symlink => Ok(self.lower.symlinks.get(rel) != Some(&link_target(cur, name)?)),
            _ => Ok(false),
        }
    }

    /// The directory of layer `layer` that holds `rel`.
    fn layer_dir(&mut self, layer: usize, rel: &Path) -> io::Result<OwnedFd> {
        let root = match self.layer_roots.get(&layer) {
            Some(fd) => fd,
            None => {
                let fd = open_root(&self.lower.layers[layer])?;
                self.layer_roots.entry(layer).or_insert(fd)
            }
        };
        open_below(root.as_fd(), rel.parent().unwrap_or(Path::new("")))
    }

    /// Copies `cur/name` (all of it, if a directory) into the diff at `rel/name`.
    fn add(
        &mut self,
        cur: BorrowedFd<'_>,
        name: &OsStr,
        entry: &Entry,
        rel: &Path,
        opaque: bool,
    ) -> io::Result<()> {
        let dir = self.diff_dir_at(rel)?;
        self.copier
            .apply_entry(cur, dir.as_fd(), name, entry, &rel.join(name))?;
        if opaque {
            set_opaque_fd(open_dir(dir.as_fd(), name)?.as_fd())?;
        }
        Ok(())
    }

    /// The diff's directory `rel`, made (with its parents) like the current tree's where
    /// missing, as overlayfs copies up the parents of what changes.
    fn diff_dir_at(&mut self, rel: &Path) -> io::Result<OwnedFd> {
        if let Some((path, fd)) = &self.last {
            if path == rel {
                return fd.try_clone();
            }
        }
        let mut diff = self.diff_root.try_clone_to_owned()?;
        let mut cur = self.cur_root.try_clone_to_owned()?;
        let mut sofar = PathBuf::new();
        for name in rel.iter() {
            sofar.push(name);
            let next = match open_dir(diff.as_fd(), name) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let entry = Entry::read(cur.as_fd(), name)?
                        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                    let fd = make_dir(diff.as_fd(), name, &entry)?;
                    self.made.push((sofar.clone(), entry));
                    fd
                }
                Err(e) => return Err(e),
            };
            diff = next;
            cur = open_dir(cur.as_fd(), name)?;
        }
        self.last = Some((rel.to_path_buf(), diff.try_clone()?));
        Ok(diff)
    }

    fn set_dir_times(&self) -> io::Result<()> {
        for (rel, entry) in &self.made {
            entry.set_times_fd(open_below(self.diff_root, rel)?.as_fd())?;
        }
        Ok(())
    }
}
