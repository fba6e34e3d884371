//! File actions (COPY, ADD, WORKDIR's mkdir, heredoc files) applied to a writable root, with
//! the semantics of BuildKit's file op and the fsutil copier it uses.
//!
//! Every path is resolved inside a root, never on the host: a source inside its source root,
//! a destination inside the destination root. `..` stops at the root and symlinks are followed
//! as if the root were `/`, so `COPY ../../etc/passwd` looks for `etc/passwd` in the context
//! and a destination symlink to `/etc` lands in the image's `/etc`. A source directory has its
//! contents copied; a source file goes into the destination when that is (or must be) a
//! directory and is renamed to it otherwise. Ownership is the `--chown` owner, else root for
//! a local context (as BuildKit's context transfer delivers it) and the source's owner for a
//! stage. Modes, times, xattrs, symlinks, hardlinks and device nodes are kept.

mod archive;
mod chown;
pub(crate) mod copy;
pub(crate) mod filter;
mod metadata;
mod rootpath;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{fchown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use kiln_patterns::{PatternError, PatternMatcher};
use nix::fcntl::OFlag;

use crate::op::{Chown, FileAction, OpId};
use chown::{resolve_owner, Owner};
use metadata::{mkdir_all, set_mode, set_owner, set_times, NewDirs, Times, MODE_BITS};
use rootpath::{resolve, Escape, ResolveError};

/// A filesystem copy sources are read from.
#[derive(Clone, Debug)]
pub struct SourceFs {
    /// The directory that is `/` of this filesystem.
    pub root: PathBuf,
    /// `.dockerignore`-style patterns (relative to `root`) of paths that must be treated as
    /// absent.
    pub ignore: Option<Arc<PatternMatcher>>,
    /// Whether copied files become owned by root (0:0) when no `--chown` is given, as files of a
    /// local context do in BuildKit; otherwise they keep their owner (stages, images).
    pub root_owned: bool,
    /// How error messages name this filesystem: `the build context`, `stage builder`.
    pub name: String,
}

impl SourceFs {
    /// A local directory handed to the build (the context or a named context).
    pub fn local(
        root: impl Into<PathBuf>,
        name: impl Into<String>,
        ignore: Option<Arc<PatternMatcher>>,
    ) -> Self {
        SourceFs {
            root: root.into(),
            ignore,
            root_owned: true,
            name: name.into(),
        }
    }

    /// The output of another op (a stage, an image): files keep their owners.
    pub fn snapshot(root: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        SourceFs {
            root: root.into(),
            ignore: None,
            root_owned: false,
            name: name.into(),
        }
    }
}

/// Settings that apply to every action of a file op.
#[derive(Clone, Debug, Default)]
pub struct FileOpOptions {
    /// When set, everything an action writes gets this access and modification time instead
    /// of the source's (BuildKit's file action timestamp). Directories an action creates get
    /// the current time otherwise.
    pub timestamp: Option<SystemTime>,
    /// The upper directory of the overlay mount that `dest_root` is, when the op has this one
    /// action: a directory a copy creates where the mount has nothing is then written there
    /// directly, on the plain file system, rather than file by file through overlayfs.
    pub upper: Option<PathBuf>,
    /// With `upper`: the diff directory of this op's previous result (an immutable, committed
    /// snapshot made by the same action from other sources). A file a copy writes into the
    /// upper directory that is there already, the same in content, mode, owner, mtime and
    /// xattrs, is hard-linked from it instead of copied: no new inode, no data written.
    pub previous: Option<PathBuf>,
}

/// Why a file action failed. Paths are shown as the user wrote them or as the image sees them,
/// never as host paths.
#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    #[error("\"{path}\": not found in {source_name}")]
    SourceNotFound { path: String, source_name: String },
    #[error("\"{path}\": not found in {source_name}: it is excluded by .dockerignore")]
    SourceIgnored { path: String, source_name: String },
    #[error("\"{path}\": too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser { name: String },
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup { name: String },
    /// What is at the destination cannot be replaced by what is copied.
    #[error("\"{path}\": {reason}")]
    Conflict { path: String, reason: &'static str },
    #[error("\"{archive}\": archive entry \"{entry}\" points outside the destination directory")]
    ArchiveEntryOutside { archive: String, entry: String },
    #[error("\"{archive}\": cannot extract archive: {reason}")]
    Archive { archive: String, reason: String },
    #[error("{action} \"{path}\": {error}")]
    Io {
        action: &'static str,
        path: String,
        error: io::Error,
    },
}

/// Applies one file action to the filesystem at `dest_root` (a writable root such as an
/// overlay mount of the stage), reading copy sources from `sources(op_id)`. Plain blocking
/// code: call it on a blocking thread.
pub fn apply(
    action: &FileAction,
    dest_root: &Path,
    sources: &dyn Fn(OpId) -> SourceFs,
    opts: &FileOpOptions,
) -> Result<(), FileOpError> {
    match action {
        FileAction::Copy(copy) => copy::copy(copy, dest_root, &sources(copy.source), opts),
        FileAction::Mkdir {
            path,
            mode,
            make_parents,
            owner,
        } => mkdir(dest_root, path, *mode, *make_parents, owner.as_ref(), opts),
        FileAction::Mkfile {
            path,
            mode,
            data,
            owner,
        } => mkfile(dest_root, path, *mode, data, owner.as_ref(), opts),
    }
}

/// WORKDIR's directory: with `make_parents`, missing parents get the same mode and owner
/// (fsutil's `MkdirAll`); without, an existing path is left as it is.
fn mkdir(
    dest_root: &Path,
    path: &str,
    mode: u32,
    make_parents: bool,
    owner: Option<&Chown>,
    opts: &FileOpOptions,
) -> Result<(), FileOpError> {
    let owner = owner.map(|c| resolve_owner(c, dest_root)).transpose()?;
    let rel = resolve_dest(dest_root, Path::new(path), path)?;
    if make_parents {
        let new = NewDirs {
            mode: mode & MODE_BITS,
            owner,
            time: opts.timestamp,
        };
        return mkdir_all(dest_root, &rel, new)
            .map_err(|(p, e)| io_error("failed to create directory", &p, e));
    }
    let abs = dest_root.join(&rel);
    let io = |e| io_error("failed to create directory", &rel, e);
    match fs::create_dir(&abs) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        other => other.map_err(io)?,
    }
    set_mode(&abs, mode).map_err(io)?;
    if let Some(owner) = owner {
        set_owner(&abs, owner).map_err(io)?;
    }
    if let Some(t) = opts.timestamp {
        set_times(&abs, Times::at(t)).map_err(io)?;
    }
    Ok(())
}

/// A file with the given content (a heredoc); missing parents are created as for COPY.
fn mkfile(
    dest_root: &Path,
    path: &str,
    mode: u32,
    data: &[u8],
    owner: Option<&Chown>,
    opts: &FileOpOptions,
) -> Result<(), FileOpError> {
    let owner: Option<Owner> = owner.map(|c| resolve_owner(c, dest_root)).transpose()?;
    let rel = resolve_dest(dest_root, Path::new(path), path)?;
    if let Some(parent) = rel.parent() {
        let new = NewDirs {
            mode: 0o755,
            owner,
            time: opts.timestamp,
        };
        mkdir_all(dest_root, parent, new)
            .map_err(|(p, e)| io_error("failed to create directory", &p, e))?;
    }
    let abs = dest_root.join(&rel);
    if rel.as_os_str().is_empty() || fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) {
        return Err(FileOpError::Conflict {
            path: path.to_string(),
            reason: "cannot write a file over a directory",
        });
    }
    let io = |e| io_error("failed to write", &rel, e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&abs)
        .map_err(io)?;
    file.write_all(data).map_err(io)?;
    if let Some(owner) = owner {
        fchown(&file, Some(owner.uid), Some(owner.gid)).map_err(io)?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode & MODE_BITS))
        .map_err(io)?;
    drop(file);
    if let Some(t) = opts.timestamp {
        set_times(&abs, Times::at(t)).map_err(io)?;
    }
    Ok(())
}

/// Resolves a destination path inside `dest_root`, following every symlink; `shown_path` is
/// the path as the user wrote it.
fn resolve_dest(dest_root: &Path, path: &Path, shown_path: &str) -> Result<PathBuf, FileOpError> {
    resolve(dest_root, path, true, Escape::Clamp, &|_| false).map_err(|e| match e {
        ResolveError::Io(error) => FileOpError::Io {
            action: "failed to resolve",
            path: shown_path.to_string(),
            error,
        },
        // Clamping never escapes: only a symlink loop ends here.
        ResolveError::Escapes | ResolveError::TooManyLinks => FileOpError::SymlinkLoop {
            path: shown_path.to_string(),
        },
    })
}

/// A path relative to a root as the image sees it: `/usr/bin`.
fn shown(rel: &Path) -> String {
    format!("/{}", rel.to_string_lossy())
}

fn io_error(action: &'static str, rel: &Path, error: io::Error) -> FileOpError {
    FileOpError::Io {
        action,
        path: shown(rel),
        error,
    }
}

#[cfg(test)]
mod tests;
