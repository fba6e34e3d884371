//! The image's root filesystem seen from outside it: every path is resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so `..` and absolute symlinks in the image stay in the image, as
//! they would for the process, and never reach the host. Also the mount stubs: paths kiln must
//! create to mount something on, removed again afterwards when still empty.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmodat, fstat, fstatat, futimens, mkdirat, FchmodatFlags, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, unlinkat, Gid, Uid, UnlinkatFlags};

/// A root directory that paths are resolved in.
pub(crate) struct RootDir {
    fd: OwnedFd,
}

impl RootDir {
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = File::open(path)?;
        Ok(RootDir { fd: fd.into() })
    }

    /// Opens `path` (absolute or not, relative to the root either way).
    pub fn open_at(&self, path: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
        let rel = clean(path);
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT);
        let fd = openat2(self.fd.as_raw_fd(), &rel, how)?;
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// A handle on `path` that mount(2) can use as `/proc/self/fd/N`.
    pub fn open_path(&self, path: &str) -> Result<OwnedFd, Errno> {
        self.open_at(path, OFlag::O_PATH, Mode::empty())
    }

    /// The file's contents, or `None` when it does not exist.
    pub fn read_to_string(&self, path: &str) -> io::Result<Option<String>> {
        match self.open_at(path, OFlag::O_RDONLY, Mode::empty()) {
            Ok(fd) => {
                let mut text = String::new();
                File::from(fd).read_to_string(&mut text)?;
                Ok(Some(text))
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates `path` and its missing parents with `mode`, owned by `uid:gid`, like
    /// `MkdirAllAndChown`. Existing directories are left as they are.
    pub fn mkdir_all(&self, path: &str, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        let mut done = PathBuf::from("/");
        let mut dir = self.open_path("/")?;
        for name in clean(path).iter() {
            done.push(name);
            let current = done.to_string_lossy().into_owned();
            match self.open_at(&current, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()) {
                Ok(fd) => dir = fd,
                Err(Errno::ENOENT) => {
                    let raw = Some(dir.as_raw_fd());
                    match mkdirat(raw, name, Mode::from_bits_truncate(mode)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    fchownat(
                        raw,
                        name,
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    )?;
                    fchmodat(
                        raw,
                        name,
                        Mode::from_bits_truncate(mode),
                        FchmodatFlags::FollowSymlink,
                    )?;
                    dir =
                        self.open_at(&current, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates an empty file at `path` (and its parent directories) unless something is there.
    pub fn ensure_file(&self, path: &str) -> io::Result<()> {
        if let Some(parent) = Path::new(path).parent() {
            self.mkdir_all(&parent.to_string_lossy(), 0o755, 0, 0)?;
        }
        let flags = OFlag::O_CREAT | OFlag::O_WRONLY;
        self.open_at(path, flags, Mode::from_bits_truncate(0o644))?;
        Ok(())
    }

    fn exists_no_follow(&self, path: &str) -> io::Result<bool> {
        let (parent, name) = split(path);
        let dir = match self.open_path(&parent) {
            Ok(dir) => dir,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        match fstatat(
            Some(dir.as_raw_fd()),
            name.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn is_executable(&self, path: &str) -> bool {
        let Ok(fd) = self.open_path(path) else {
            return false;
        };
        fstat(fd.as_raw_fd()).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
                && st.st_mode & 0o111 != 0
        })
    }

    /// Finds `program` as Go's `exec.LookPath` does for runc: a name with a slash is taken as a
    /// path (relative to `cwd`), any other is searched in `path`. Returns the path to exec.
    pub fn find_program(&self, program: &str, path: &str, cwd: &str) -> Option<String> {
        let in_cwd = |p: &str| {
            if p.starts_with('/') {
                p.to_string()
            } else {
                format!("{}/{p}", cwd.trim_end_matches('/'))
            }
        };
        if program.contains('/') {
            return self
                .is_executable(&in_cwd(program))
                .then(|| program.to_string());
        }
        path.split(':')
            .map(|dir| if dir.is_empty() { "." } else { dir })
            .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
            .find(|candidate| self.is_executable(&in_cwd(candidate)))
    }
}

/// Whether a mount point is a directory or a file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StubKind {
    Dir,
    File,
}

/// Mount points that did not exist before the run, created by kiln and removed again after it
/// when still empty, deepest first (BuildKit's `MountStubsCleaner`). Creating them changes the
/// times of their parent directories; those are put back when the process left them alone.
pub(crate) struct MountStubs {
    created: Vec<String>,
    parents: Vec<ParentTimes>,
}

struct ParentTimes {
    path: String,
    before: Times,
    after: Times,
}

type Times = (TimeSpec, TimeSpec);

impl MountStubs {
    /// Creates whichever of `targets` (and their parents) are missing.
    pub fn create(root: &RootDir, targets: &[(&str, StubKind)]) -> io::Result<Self> {
        let mut created = Vec::new();
        for (target, _) in targets {
            let mut current = clean(target);
            while !current.as_os_str().is_empty() {
                let text = format!("/{}", current.to_string_lossy());
                if root.exists_no_follow(&text)? {
                    break;
                }
                if !created.contains(&text) {
                    created.push(text);
                }
                current.pop();
            }
        }
        let mut parents: Vec<ParentTimes> = Vec::new();
        for path in &created {
            let (parent, _) = split(path);
            if created.contains(&parent) || parents.iter().any(|p| p.path == parent) {
                continue;
            }
            let before = times(root, &parent)?;
            parents.push(ParentTimes {
                path: parent,
                before,
                after: before,
            });
        }
        for (target, kind) in targets {
            match kind {
                StubKind::Dir => root.mkdir_all(target, 0o755, 0, 0)?,
                StubKind::File => root.ensure_file(target)?,
            }
        }
        for parent in &mut parents {
            parent.after = times(root, &parent.path)?;
        }
        Ok(MountStubs { created, parents })
    }

    /// Removes the stubs that are still empty files or empty directories.
    pub fn clean(&self, root: &RootDir) {
        let now: Vec<Option<Times>> = self
            .parents
            .iter()
            .map(|p| times(root, &p.path).ok())
            .collect();
        for path in &self.created {
            let _ = remove_stub(root, path);
        }
        for (parent, now) in self.parents.iter().zip(now) {
            let Some(now) = now else { continue };
            let untouched = now.1 == parent.after.1;
            let _ = set_times(
                root,
                &parent.path,
                if untouched { parent.before } else { now },
            );
        }
    }
}

fn times(root: &RootDir, path: &str) -> io::Result<Times> {
    let dir = root.open_at(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
    let st = fstat(dir.as_raw_fd())?;
    Ok((
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    ))
}

fn set_times(root: &RootDir, path: &str, (atime, mtime): Times) -> io::Result<()> {
    let dir = root.open_at(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
    futimens(dir.as_raw_fd(), &atime, &mtime)?;
    Ok(())
}

fn remove_stub(root: &RootDir, path: &str) -> io::Result<()> {
    let (parent, name) = split(path);
    let dir = root.open_at(&parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
    let raw = Some(dir.as_raw_fd());
    let st = fstatat(raw, name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    if is_dir {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let mut entries = Dir::openat(raw, name.as_str(), flags, Mode::empty())?;
        let has_entries = entries.iter().filter_map(Result::ok).any(|e| {
            let n = e.file_name().to_bytes();
            n != b"." && n != b".."
        });
        if has_entries {
            return Ok(());
        }
    } else if st.st_size != 0 {
        return Ok(());
    }
    let flag = if is_dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    unlinkat(raw, name.as_str(), flag)?;
    Ok(())
}

/// `path` made relative to the root, with `.` and `..` resolved lexically (`..` stops at the root).
fn clean(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The parent (absolute) and last name of a cleaned path.
fn split(path: &str) -> (String, String) {
    let rel = clean(path);
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    let parent = rel
        .parent()
        .map_or_else(String::new, |p| p.to_string_lossy().into_owned());
    (format!("/{parent}"), name)
}
