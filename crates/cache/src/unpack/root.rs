//! The directory a layer is unpacked into, walked one component at a time with `openat`.
//!
//! Every parent directory is opened with `O_NOFOLLOW | O_DIRECTORY` relative to the one before
//! it, and entries are created relative to their parent's descriptor, so a symlink the layer
//! itself created (`link -> /etc`) can never redirect a later entry (`link/passwd`) out of the
//! root: walking through it is an error, as in bsdtar.

use rustix::fs::{openat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a parent directory could not be opened.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// The component at this path is a symlink.
    Symlink(PathBuf),
    /// The component at this path exists but is not a directory.
    NotADirectory(PathBuf),
    /// The component at this path does not exist (only when not creating).
    Missing(PathBuf),
    Io(io::Error),
}

/// The root of a layer being unpacked, with the last parent directory opened kept open
/// (layer tars list siblings together, so most entries reuse it).
pub(crate) struct LayerRoot {
    fd: OwnedFd,
    last: Option<(Vec<OsString>, OwnedFd)>,
}

impl LayerRoot {
    /// Opens the directory `path`; the path itself is trusted and may contain symlinks.
    pub(crate) fn open(path: &Path) -> io::Result<LayerRoot> {
        let fd = rustix::fs::open(path, dir_flags() & !OFlags::NOFOLLOW, Mode::empty())?;
        Ok(LayerRoot { fd, last: None })
    }

    /// Opens the directory at `components` below the root without following any symlink.
    /// With `create`, missing directories are made (mode 0755 less the umask, owned by us),
    /// as tar does for entries whose parents the archive does not list.
    pub(crate) fn dir(
        &mut self,
        components: &[OsString],
        create: bool,
    ) -> Result<OwnedFd, WalkError> {
        if let Some((path, fd)) = &self.last {
            if path.as_slice() == components {
                return fd.try_clone().map_err(WalkError::Io);
            }
        }
        let mut cur = self.fd.try_clone().map_err(WalkError::Io)?;
        for (i, name) in components.iter().enumerate() {
            cur =
                open_child(cur.as_fd(), name, create).map_err(|kind| kind.at(&components[..=i]))?;
        }
        self.last = Some((components.to_vec(), cur.try_clone().map_err(WalkError::Io)?));
        Ok(cur)
    }

    /// Forgets the cached parent; called whenever a directory is removed, so a descriptor of a
    /// deleted directory is never reused.
    pub(crate) fn forget_dirs(&mut self) {
        self.last = None;
    }
}

/// What went wrong opening one component, before we know its full path.
enum ChildError {
    Symlink,
    NotADirectory,
    Missing,
    Io(io::Error),
}

impl ChildError {
    fn at(self, components: &[OsString]) -> WalkError {
        let path: PathBuf = components.iter().collect();
        match self {
            ChildError::Symlink => WalkError::Symlink(path),
            ChildError::NotADirectory => WalkError::NotADirectory(path),
            ChildError::Missing => WalkError::Missing(path),
            ChildError::Io(e) => WalkError::Io(e),
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn open_child(parent: BorrowedFd<'_>, name: &OsStr, create: bool) -> Result<OwnedFd, ChildError> {
    match openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) if create => {}
        Err(Errno::NOENT) => return Err(ChildError::Missing),
        // ELOOP for a symlink, ENOTDIR for anything else that is not a directory.
        Err(Errno::LOOP) | Err(Errno::NOTDIR) => return Err(classify(parent, name)),
        Err(e) => return Err(ChildError::Io(e.into())),
    }
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(ChildError::Io(e.into())),
    }
    openat(parent, name, dir_flags(), Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => classify(parent, name),
        e => ChildError::Io(e.into()),
    })
}

fn classify(parent: BorrowedFd<'_>, name: &OsStr) -> ChildError {
    match statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => ChildError::Symlink,
        Ok(_) => ChildError::NotADirectory,
        Err(e) => ChildError::Io(e.into()),
    }
}

/// The type of the entry `name` in `dir`, without following a symlink; `None` if absent.
pub(crate) fn file_type_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<Option<(FileType, u64)>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some((FileType::from_raw_mode(st.st_mode), st.st_rdev))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `rm -rf dir/name` that never follows a symlink.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = openat(dir, name, dir_flags(), Mode::empty())?;
    let mut children = Vec::new();
    for entry in Dir::read_from(&sub)? {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child != b"." && child != b".." {
            children.push(OsStr::from_bytes(child).to_os_string());
        }
    }
    for child in &children {
        remove_all(sub.as_fd(), child)?;
    }
    unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}
