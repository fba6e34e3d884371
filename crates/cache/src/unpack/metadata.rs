//! What a tar header (and its PAX records) says about an entry besides its name and type:
//! numeric owner, mode, times and xattrs, and how to apply them without following symlinks.

use rustix::fs::{
    chmodat, chownat, fchmod, fchown, fsetxattr, futimens, lsetxattr, utimensat, AtFlags, Gid,
    Mode, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;

const PAX_XATTR: &str = "SCHILY.xattr.";

/// xattrs overlayfs reads as its own bookkeeping (`trusted.overlay.*`, or `user.overlay.*` on a
/// `userxattr` mount). They are dropped from layer data: only `.wh.` entries may make
/// whiteouts or opaque directories, and naive exporters that tar an upperdir copy these
/// alongside a `.wh..wh..opq` marker, so dropping them loses nothing.
fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// An entry's metadata.
pub(crate) struct Metadata {
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: Timespec,
    pub(crate) mtime: Timespec,
    pub(crate) xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Metadata {
    /// Reads the header and PAX records of `entry` (the tar crate has already applied PAX
    /// `uid`, `gid` and `size`). The error is a sentence about the bad field.
    pub(crate) fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Metadata, String> {
        let header = entry.header();
        let old = header.as_old();
        let mode = numeric(&old.mode, header.mode().map(u64::from), "mode")? as u32 & 0o7777;
        let uid = numeric(&old.uid, header.uid(), "uid")?;
        let gid = numeric(&old.gid, header.gid(), "gid")?;
        let secs = numeric(&old.mtime, header.mtime(), "mtime")?;
        // chown reads 2^32-1 as "leave unchanged", so it is no owner either.
        let uid = u32::try_from(uid)
            .ok()
            .filter(|&id| id != u32::MAX)
            .ok_or_else(|| format!("has uid {uid}, which is not a valid user id"))?;
        let gid = u32::try_from(gid)
            .ok()
            .filter(|&id| id != u32::MAX)
            .ok_or_else(|| format!("has gid {gid}, which is not a valid group id"))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(records) = entry
            .pax_extensions()
            .map_err(|e| format!("has unreadable PAX records: {e}"))?
        {
            for record in records {
                let record = record.map_err(|e| format!("has a bad PAX record: {e}"))?;
                let Ok(key) = record.key() else { continue };
                match key {
                    "mtime" => mtime = pax_time(record.value_bytes()).unwrap_or(mtime),
                    "atime" => atime = pax_time(record.value_bytes()),
                    _ => {
                        if let Some(name) = key.strip_prefix(PAX_XATTR) {
                            if !is_overlay_xattr(name.as_bytes()) {
                                xattrs.push((name.into(), record.value_bytes().to_vec()));
                            }
                        }
                    }
                }
            }
        }
        Ok(Metadata {
            mode,
            uid,
            gid,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }

    fn timestamps(&self) -> Timestamps {
        Timestamps {
            last_access: self.atime,
            last_modification: self.mtime,
        }
    }

    fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
    }

    /// Applies owner, mode and xattrs to an open regular file or directory. chown clears
    /// setuid/setgid bits and file capabilities, so it goes first.
    pub(crate) fn apply_to_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let (uid, gid) = self.owner();
        fchown(fd, uid, gid)?;
        fchmod(fd, Mode::from_raw_mode(self.mode))?;
        for (name, value) in &self.xattrs {
            ignore_unsupported(fsetxattr(fd, name.as_os_str(), value, XattrFlags::empty()))?;
        }
        Ok(())
    }

    /// Applies owner, mode (unless a symlink, which has none), xattrs and times to
    /// `dir/name`, which must not be a directory (whose times wait for its contents).
    pub(crate) fn apply_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        symlink: bool,
    ) -> io::Result<()> {
        let (uid, gid) = self.owner();
        chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
        if !symlink {
            // `name` is a single component we have just created as a non-symlink, so
            // fchmodat (which always follows) changes exactly it.
            chmodat(dir, name, Mode::from_raw_mode(self.mode), AtFlags::empty())?;
        }
        if !self.xattrs.is_empty() {
            // There is no lsetxattrat: the /proc magic link reaches `dir` itself, and
            // lsetxattr does not follow `name`.
            let path = proc_path(dir, name);
            for (xname, value) in &self.xattrs {
                ignore_unsupported(lsetxattr(
                    &path,
                    xname.as_os_str(),
                    value,
                    XattrFlags::empty(),
                ))?;
            }
        }
        self.set_times_at(dir, name)
    }

    /// Sets the times of an open regular file.
    pub(crate) fn set_times_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(futimens(fd, &self.timestamps())?)
    }

    /// Sets the times of `dir/name` without following it.
    pub(crate) fn set_times_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        set_times_at(dir, name, self.atime, self.mtime)
    }
}

/// Sets the times of `dir/name` without following it.
pub(crate) fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    atime: Timespec,
    mtime: Timespec,
) -> io::Result<()> {
    let times = Timestamps {
        last_access: atime,
        last_modification: mtime,
    };
    Ok(utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?)
}

fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(name);
    path
}

/// A file system without xattr support can't hold them; like containerd, carry on without.
fn ignore_unsupported(result: rustix::io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) | Err(Errno::NOTSUP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A numeric header field; a blank one (all NULs or spaces) reads as 0, as Go's archive/tar
/// (and so Docker and containerd) reads it.
pub(crate) fn numeric(raw: &[u8], parsed: io::Result<u64>, field: &str) -> Result<u64, String> {
    match parsed {
        Ok(n) => Ok(n),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(format!("has a bad {field}: {e}")),
    }
}

/// A PAX time: decimal seconds since the epoch with an optional fraction, possibly negative.
fn pax_time(value: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let negative = int.starts_with('-');
    let mut secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut nanos: i64 = digits.parse().ok()?;
    if negative && nanos > 0 {
        secs -= 1;
        nanos = 1_000_000_000 - nanos;
    }
    Some(Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Option<(i64, i64)> {
        pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec))
    }

    #[test]
    fn pax_times() {
        assert_eq!(t("1700000000"), Some((1700000000, 0)));
        assert_eq!(t("1700000000.5"), Some((1700000000, 500_000_000)));
        assert_eq!(t("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-0.25"), Some((-1, 750_000_000)));
        assert_eq!(t("x"), None);
        assert_eq!(t("1.x"), None);
    }

    #[test]
    fn overlay_xattrs_are_recognised() {
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.whiteout"));
        assert!(!is_overlay_xattr(b"trusted.other"));
        assert!(!is_overlay_xattr(b"security.capability"));
    }
}
