//! Ownership, permissions, times and extended attributes of what a file action writes, and the
//! `mkdir -p` that creates missing parent directories (fsutil's `MkdirAll`).

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::chown::Owner;
use super::rootpath::is_missing;

/// Permission and special bits (setuid, setgid, sticky) of a mode.
pub(crate) const MODE_BITS: u32 = 0o7777;

/// Access and modification times to set on a path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Times {
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

impl Times {
    /// Both times set to `t`.
    pub fn at(t: SystemTime) -> Self {
        let ts = timespec(t);
        Times {
            atime: ts,
            mtime: ts,
        }
    }

    /// The times of an existing file.
    pub fn of(meta: &fs::Metadata) -> Self {
        Times {
            atime: TimeSpec::new(meta.atime(), meta.atime_nsec()),
            mtime: TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        }
    }
}

fn timespec(t: SystemTime) -> TimeSpec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => TimeSpec::new(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            i64::from(d.subsec_nanos()),
        ),
        Err(before) => {
            let d = before.duration();
            TimeSpec::new(-i64::try_from(d.as_secs()).unwrap_or(i64::MAX), 0)
        }
    }
}

/// Sets the owner of `path` without following a symlink.
pub(crate) fn set_owner(path: &Path, owner: Owner) -> io::Result<()> {
    lchown(path, Some(owner.uid), Some(owner.gid))
}

/// Sets the mode bits of `path`, which must not be a symlink.
pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode & MODE_BITS))
}

/// Sets the times of `path` without following a symlink.
pub(crate) fn set_times(path: &Path, times: Times) -> io::Result<()> {
    utimensat(
        None,
        path,
        &times.atime,
        &times.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Copies the extended attributes of `src` to `dst` (file capabilities, ACLs). Like BuildKit,
/// an attribute that cannot be read or set is skipped: the file system may not support it.
pub(crate) fn copy_xattrs(src: &Path, dst: &Path) {
    let Ok(names) = xattr::list(src) else {
        return;
    };
    for name in names {
        if let Ok(Some(value)) = xattr::get(src, &name) {
            let _ = xattr::set(dst, &name, &value);
        }
    }
}

/// [`set_owner`], [`set_mode`], [`copy_xattrs`] and [`set_times`] on open files, in that order
/// (chown clears setuid bits and file capabilities): no path is looked up again.
pub(crate) fn set_file_attrs(
    src: &fs::File,
    dst: &fs::File,
    owner: Owner,
    mode: u32,
    times: Times,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use xattr::FileExt;
    nix::unistd::fchown(
        dst.as_raw_fd(),
        Some(owner.uid.into()),
        Some(owner.gid.into()),
    )?;
    dst.set_permissions(fs::Permissions::from_mode(mode & MODE_BITS))?;
    if let Ok(names) = src.list_xattr() {
        for name in names {
            if let Ok(Some(value)) = src.get_xattr(&name) {
                let _ = dst.set_xattr(&name, &value);
            }
        }
    }
    nix::sys::stat::futimens(dst.as_raw_fd(), &times.atime, &times.mtime)?;
    Ok(())
}

/// What `mkdir_all` gives the directories it creates.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewDirs {
    pub mode: u32,
    pub owner: Option<Owner>,
    pub time: Option<SystemTime>,
}

/// Creates `rel` (relative to `root`, already resolved: no symlinks) and its missing parents.
/// Existing directories are left alone. On failure, returns the path that could not be made.
pub(crate) fn mkdir_all(root: &Path, rel: &Path, new: NewDirs) -> Result<(), (PathBuf, io::Error)> {
    let mut current = PathBuf::new();
    for name in rel.iter() {
        current.push(name);
        let abs = root.join(&current);
        match fs::symlink_metadata(&abs) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err((
                    current,
                    io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                ))
            }
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err((current, e)),
        }
        create_dir(&abs, new).map_err(|e| (current.clone(), e))?;
    }
    Ok(())
}

fn create_dir(abs: &Path, new: NewDirs) -> io::Result<()> {
    fs::create_dir(abs)?;
    // The process umask must not decide the mode.
    set_mode(abs, new.mode)?;
    if let Some(owner) = new.owner {
        set_owner(abs, owner)?;
    }
    if let Some(t) = new.time {
        set_times(abs, Times::at(t))?;
    }
    Ok(())
}
