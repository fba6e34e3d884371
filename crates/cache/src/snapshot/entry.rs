//! One file-system entry, always reached as a single name relative to its parent directory's
//! descriptor, so no symlink (of a layer, or one a build step created) is ever followed: its
//! metadata, and the primitives that recreate it elsewhere.

use rustix::fs::{
    chmodat, chownat, fchmod, fchown, flistxattr, fremovexattr, fsetxattr, futimens, ioctl_ficlone,
    lgetxattr, linkat, llistxattr, lsetxattr, makedev, mkdirat, mknodat, openat, readlinkat, statx,
    symlinkat, unlinkat, utimensat, AtFlags, Dir, FileType, Gid, Mode, OFlags, StatxFlags,
    Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// The xattr that marks a directory as replacing (not merging with) the one below it.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// overlayfs' own bookkeeping, never copied as data (see `unpack::metadata`).
fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// An entry's type and metadata, as `lstat` (statx without following) and its xattrs say.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) kind: FileType,
    /// Permission bits, incl. setuid/setgid/sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) rdev: (u32, u32),
    pub(crate) nlink: u32,
    /// Device and inode: which entries are hard links of each other.
    pub(crate) inode: (u64, u64),
    /// Birth time where the file system records one; with the inode it tells a directory
    /// that was removed and recreated from one kept in place.
    pub(crate) btime: Option<Timespec>,
    pub(crate) atime: Timespec,
    pub(crate) mtime: Timespec,
    pub(crate) ctime: Timespec,
    /// Sorted, without overlayfs' own.
    pub(crate) xattrs: Xattrs,
    pub(crate) opaque: bool,
}

impl Entry {
    /// `dir/name` without following it; `None` if absent.
    pub(crate) fn read(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Entry>> {
        let st = match statx(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        ) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let ts = |t: rustix::fs::StatxTimestamp| Timespec {
            tv_sec: t.tv_sec,
            tv_nsec: t.tv_nsec as _,
        };
        let path = proc_path(dir, name);
        let (xattrs, opaque) = read_xattrs(&path)?;
        let kind = FileType::from_raw_mode(st.stx_mode.into());
        Ok(Some(Entry {
            kind,
            mode: u32::from(st.stx_mode) & 0o7777,
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: st.stx_size,
            rdev: (st.stx_rdev_major, st.stx_rdev_minor),
            nlink: st.stx_nlink,
            inode: (
                u64::from(st.stx_dev_major) << 32 | u64::from(st.stx_dev_minor),
                st.stx_ino,
            ),
            btime: (st.stx_mask & StatxFlags::BTIME.bits() != 0).then(|| ts(st.stx_btime)),
            atime: ts(st.stx_atime),
            mtime: ts(st.stx_mtime),
            ctime: ts(st.stx_ctime),
            xattrs,
            opaque: opaque && kind == FileType::Directory,
        }))
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }

    /// A deletion in upperdir form: a character device 0:0.
    pub(crate) fn is_whiteout(&self) -> bool {
        self.kind == FileType::CharacterDevice && self.rdev == (0, 0)
    }

    /// Whether `other` says the same about the entry (type, mode, owner, size, device
    /// numbers, mtime, xattrs); contents and symlink targets are compared elsewhere.
    pub(crate) fn same_metadata(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && (self.is_dir() || self.size == other.size)
            && self.rdev == other.rdev
            && self.mtime == other.mtime
            && self.xattrs == other.xattrs
    }

    fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
    }

    fn timestamps(&self) -> Timestamps {
        Timestamps {
            last_access: self.atime,
            last_modification: self.mtime,
        }
    }

    /// Gives the open directory or regular file `fd` this entry's owner, mode and xattrs
    /// (replacing any it had). chown clears setuid bits and capabilities, so it goes first.
    pub(crate) fn apply_to_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let (uid, gid) = self.owner();
        fchown(fd, uid, gid)?;
        fchmod(fd, Mode::from_raw_mode(self.mode))?;
        for name in list_xattrs(|buf| flistxattr(fd, buf))? {
            if !is_overlay_xattr(name.as_bytes()) && !self.xattrs.iter().any(|(n, _)| *n == name) {
                ignore_unsupported(fremovexattr(fd, name.as_os_str()))?;
            }
        }
        for (name, value) in &self.xattrs {
            ignore_unsupported(fsetxattr(fd, name.as_os_str(), value, XattrFlags::empty()))?;
        }
        Ok(())
    }

    /// Sets the times of the open directory or regular file `fd`.
    pub(crate) fn set_times_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(futimens(fd, &self.timestamps())?)
    }

    /// Gives the new non-directory, non-regular `dir/name` this entry's metadata and times.
    fn apply_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let (uid, gid) = self.owner();
        chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
        if self.kind != FileType::Symlink {
            // `name` was just created as this non-symlink, so chmodat (which follows)
            // changes exactly it.
            chmodat(dir, name, Mode::from_raw_mode(self.mode), AtFlags::empty())?;
        }
        let path = proc_path(dir, name);
        for (xname, value) in &self.xattrs {
            ignore_unsupported(lsetxattr(
                &path,
                xname.as_os_str(),
                value,
                XattrFlags::empty(),
            ))?;
        }
        Ok(utimensat(
            dir,
            name,
            &self.timestamps(),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }
}

/// `/proc/self/fd/N/name`: reaches `dir` itself through the magic link, and an `l*xattr` call
/// on it does not follow `name` (there is no `*xattrat` before Linux 6.13).
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(name);
    path
}

/// An entry's xattrs (name → value).
pub(crate) type Xattrs = Vec<(OsString, Vec<u8>)>;

/// The xattrs at `path`, and whether it is marked opaque.
fn read_xattrs(path: &Path) -> io::Result<(Xattrs, bool)> {
    let mut xattrs = Vec::new();
    let mut opaque = false;
    for name in list_xattrs(|buf| llistxattr(path, buf))? {
        let value = match xattr_value(path, &name)? {
            Some(v) => v,
            None => continue,
        };
        if name.as_bytes() == OPAQUE_XATTR.as_bytes() {
            opaque = value == b"y";
        } else if !is_overlay_xattr(name.as_bytes()) {
            xattrs.push((name, value));
        }
    }
    xattrs.sort();
    Ok((xattrs, opaque))
}

fn list_xattrs(list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<OsString>> {
    let mut buf = vec![0u8; 256];
    let len = loop {
        match list(&mut buf) {
            Ok(len) => break len,
            Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    Ok(buf[..len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsString::from_vec(n.to_vec()))
        .collect())
}

fn xattr_value(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match lgetxattr(path, name, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(Some(buf));
            }
            Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Marks the open directory opaque.
pub(crate) fn set_opaque_fd(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(fsetxattr(fd, OPAQUE_XATTR, b"y", XattrFlags::empty())?)
}

/// A file system without xattr support can't hold them; like containerd, carry on without.
fn ignore_unsupported(result: rustix::io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) | Err(Errno::NOTSUP) | Err(Errno::NODATA) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `path`, which is trusted (the store's own paths).
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        dir_flags() & !OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// Opens the directory `dir/name`; a symlink there is an error (ELOOP), never followed.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(dir, name, dir_flags(), Mode::empty())?)
}

/// Opens the directory at `rel` below `root`, one component at a time.
pub(crate) fn open_below(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let mut cur = root.try_clone_to_owned()?;
    for c in rel.components() {
        if let Component::Normal(name) = c {
            cur = open_dir(cur.as_fd(), name)?;
        }
    }
    Ok(cur)
}

/// The names in an open directory, sorted (so copies and diffs are deterministic).
pub(crate) fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Makes the directory `dir/name` with `entry`'s owner, mode and xattrs (its times wait for
/// its contents) and opens it.
pub(crate) fn make_dir(dir: BorrowedFd<'_>, name: &OsStr, entry: &Entry) -> io::Result<OwnedFd> {
    mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
    let fd = open_dir(dir, name)?;
    entry.apply_to_fd(fd.as_fd())?;
    Ok(fd)
}

/// Recreates the non-directory `src_dir/name` (described by `entry`) as `dst_dir/name`, which
/// must not exist: content by reflink where the file system can, else copied.
pub(crate) fn copy_node(
    src_dir: BorrowedFd<'_>,
    dst_dir: BorrowedFd<'_>,
    name: &OsStr,
    entry: &Entry,
) -> io::Result<()> {
    match entry.kind {
        FileType::RegularFile => copy_file(src_dir, dst_dir, name, entry),
        FileType::Symlink => {
            let target = readlinkat(src_dir, name, Vec::new())?;
            symlinkat(target.as_c_str(), dst_dir, name)?;
            entry.apply_at(dst_dir, name)
        }
        FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket => {
            let dev = makedev(entry.rdev.0, entry.rdev.1);
            mknodat(dst_dir, name, entry.kind, Mode::from_raw_mode(0o600), dev)?;
            entry.apply_at(dst_dir, name)
        }
        FileType::Directory | FileType::Unknown => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a file that can be copied",
                name.to_string_lossy()
            ),
        )),
    }
}

fn copy_file(
    src_dir: BorrowedFd<'_>,
    dst_dir: BorrowedFd<'_>,
    name: &OsStr,
    entry: &Entry,
) -> io::Result<()> {
    let src = openat(
        src_dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let dst = openat(
        dst_dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    if ioctl_ficlone(&dst, &src).is_err() {
        // io::copy uses copy_file_range (in-kernel, and server-side on NFS) for two files.
        io::copy(&mut File::from(src), &mut File::from(dst.try_clone()?))?;
    }
    entry.apply_to_fd(dst.as_fd())?;
    entry.set_times_fd(dst.as_fd())
}

/// Makes `dir/name` a hard link of `target_dir/target_name` (neither followed).
pub(crate) fn hard_link(
    target_dir: BorrowedFd<'_>,
    target_name: &OsStr,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    Ok(linkat(
        target_dir,
        target_name,
        dir,
        name,
        AtFlags::empty(),
    )?)
}

/// Makes `dir/name` a whiteout (character device 0:0, owned by root, mode 0).
pub(crate) fn make_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(mknodat(
        dir,
        name,
        FileType::CharacterDevice,
        Mode::empty(),
        makedev(0, 0),
    )?)
}

/// `rm -rf dir/name` that never follows a symlink.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = open_dir(dir, name)?;
    empty_dir(sub.as_fd())?;
    unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Removes everything in the open directory.
pub(crate) fn empty_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for name in names(dir)? {
        remove_all(dir, &name)?;
    }
    Ok(())
}

/// Whether the regular files `a_dir/name` and `b_dir/name` have the same bytes.
pub(crate) fn same_content(
    a_dir: BorrowedFd<'_>,
    b_dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<bool> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut a = File::from(openat(a_dir, name, flags, Mode::empty())?);
    let mut b = File::from(openat(b_dir, name, flags, Mode::empty())?);
    let mut buf_a = vec![0u8; 64 * 1024];
    let mut buf_b = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        let m = read_full(&mut b, &mut buf_b)?;
        if buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The target of the symlink `dir/name`.
pub(crate) fn link_target(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    Ok(readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// The type of `dir/name` without following it (no xattrs read); `None` if absent.
pub(crate) fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
