//! Path resolution confined to a root directory, as BuildKit's `fs.RootPath` (containerd's
//! continuity) does it: `..` stops at the root, an absolute symlink target starts again at the
//! root, a relative one is followed from the link's directory. Whatever the file system holds,
//! the result names a path inside the root.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before giving up (continuity's limit).
const MAX_SYMLINKS: usize = 255;

/// What a `..` that would climb above the root means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Escape {
    /// It stays at the root (COPY sources and destinations).
    Clamp,
    /// It is an error (archive entries, which must stay inside their extraction directory).
    Reject,
}

/// Why a path could not be resolved.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// The path climbs above the root and the mode is [`Escape::Reject`].
    Escapes,
    /// More than [`MAX_SYMLINKS`] symlinks, most likely a loop.
    TooManyLinks,
    Io(io::Error),
}

/// `path` cleaned lexically into components below the root: no root, no `.`, no `..`.
pub(crate) fn clean_relative(path: &Path, escape: Escape) -> Result<PathBuf, ResolveError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && escape == Escape::Reject {
                    return Err(ResolveError::Escapes);
                }
            }
            Component::Normal(name) => out.push(name),
        }
    }
    Ok(out)
}

/// Resolves `path` inside `root` and returns it relative to `root`, with every symlink followed
/// (the last component only when `follow_last`). Components that do not exist are kept as they
/// are written, so the result can name something about to be created. `absent` hides paths
/// (relative to the root) that must be treated as missing even though they are on disk.
pub(crate) fn resolve(
    root: &Path,
    path: &Path,
    follow_last: bool,
    escape: Escape,
    absent: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf, ResolveError> {
    let mut remaining = clean_relative(path, escape)?;
    let mut links = 0;
    'restart: loop {
        let components: Vec<OsString> = remaining.iter().map(|c| c.to_os_string()).collect();
        let mut resolved = PathBuf::new();
        for (i, name) in components.iter().enumerate() {
            let candidate = resolved.join(name);
            let rest = &components[i + 1..];
            if rest.is_empty() && !follow_last {
                return Ok(candidate);
            }
            if absent(&candidate) {
                return Ok(joined(candidate, rest));
            }
            let meta = match fs::symlink_metadata(root.join(&candidate)) {
                Ok(meta) => meta,
                Err(e) if is_missing(&e) => return Ok(joined(candidate, rest)),
                Err(e) => return Err(ResolveError::Io(e)),
            };
            if !meta.file_type().is_symlink() {
                resolved = candidate;
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(ResolveError::TooManyLinks);
            }
            let target = fs::read_link(root.join(&candidate)).map_err(ResolveError::Io)?;
            // An absolute target replaces everything before it: it starts again at the root.
            let next = joined(resolved.join(target), rest);
            remaining = clean_relative(&next, escape)?;
            continue 'restart;
        }
        return Ok(resolved);
    }
}

fn joined(mut base: PathBuf, rest: &[OsString]) -> PathBuf {
    for name in rest {
        base.push(name);
    }
    base
}

/// Whether an error means "nothing there" (including a file where a directory was expected).
pub(crate) fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn none(_: &Path) -> bool {
        false
    }

    fn resolve_clamped(root: &Path, p: &str) -> PathBuf {
        resolve(root, Path::new(p), true, Escape::Clamp, &none).unwrap()
    }

    #[test]
    fn dotdot_clamps_at_root() {
        let dir = tempfile::tempdir().unwrap();
        for (input, want) in [
            ("../../../../etc/passwd", "etc/passwd"),
            ("/a/../../b", "b"),
            ("./x/./y/", "x/y"),
            ("/", ""),
            ("", ""),
        ] {
            assert_eq!(
                resolve_clamped(dir.path(), input),
                Path::new(want),
                "{input}"
            );
        }
    }

    #[test]
    fn symlinks_stay_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("real/sub", root.join("rel")).unwrap();
        symlink("../../../../etc", root.join("real/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_clamped(root, "abs/sub/f"), Path::new("real/sub/f"));
        assert_eq!(resolve_clamped(root, "rel/f"), Path::new("real/sub/f"));
        assert_eq!(
            resolve_clamped(root, "real/up/passwd"),
            Path::new("etc/passwd")
        );
        assert!(matches!(
            resolve(root, Path::new("loop"), true, Escape::Clamp, &none),
            Err(ResolveError::TooManyLinks)
        ));
        assert_eq!(
            resolve(root, Path::new("abs"), false, Escape::Clamp, &none).unwrap(),
            Path::new("abs")
        );
        assert!(matches!(
            resolve(root, Path::new("real/up/x"), true, Escape::Reject, &none),
            Err(ResolveError::Escapes)
        ));
    }
}
