//! Output destinations written atomically: a file is written under a temp name beside its
//! destination, synced and renamed; a new directory is assembled beside its destination and
//! renamed into place (directory outputs into a directory that exists write into it instead,
//! never removing what they don't replace). Readers never see half an output under the final
//! name, and a failed export leaves what was there before intact. `-` is stdout for files.

use crate::Error;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes the file `dest` (stdout for `-`) with `write`, atomically.
pub(crate) fn write_file_with(
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
) -> Result<(), Error> {
    if dest == Path::new("-") {
        let mut out = BufWriter::new(io::stdout().lock());
        write(&mut out)?;
        return out.flush().map_err(Error::io("write", "stdout"));
    }
    if dest.is_dir() {
        return Err(Error::IsADirectory {
            path: dest.to_path_buf(),
        });
    }
    let (parent, name) = parent_and_name(dest);
    fs::create_dir_all(&parent).map_err(Error::io("create directory", &parent))?;
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempfile_in(&parent)
        .map_err(Error::io("create a temp file in", &parent))?;
    let mut out = BufWriter::with_capacity(1 << 16, temp);
    write(&mut out)?;
    let temp = out
        .into_inner()
        .map_err(|e| Error::io("write", dest)(e.into_error()))?;
    let file = temp.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| file.sync_all())
        .map_err(Error::io("write", dest))?;
    temp.persist(dest)
        .map_err(|e| Error::io("move the output into place at", dest)(e.error))?;
    Ok(())
}

/// Fills a fresh directory beside `dest` with `fill`, then renames it to `dest`, which must not
/// exist (or be an empty directory): a directory output never removes anything that is there
/// (callers write into a directory that exists instead).
pub(crate) fn write_dir_with(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), Error>,
) -> Result<(), Error> {
    ensure_dir_or_absent(dest)?;
    let (parent, name) = parent_and_name(dest);
    fs::create_dir_all(&parent).map_err(Error::io("create directory", &parent))?;
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)
        .map_err(Error::io("create a temp directory in", &parent))?;
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755))
        .map_err(Error::io("chmod", temp.path()))?;
    fill(temp.path())?;
    ensure_dir_or_absent(dest)?;
    let path = temp.keep();
    fs::rename(&path, dest).map_err(|source| {
        let _ = fs::remove_dir_all(&path);
        Error::Io {
            action: "move the output into place at",
            path: dest.to_path_buf(),
            source,
        }
    })
}

/// Fails early if `dest` is something a directory output must not replace.
fn ensure_dir_or_absent(dest: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if !meta.is_dir() => Err(Error::NotADirectory {
            path: dest.to_path_buf(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", dest)(e)),
    }
}

/// The directory holding `path` (`.` for a bare name) and `path`'s file name, for temp names.
fn parent_and_name(path: &Path) -> (PathBuf, String) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    (parent, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.tar");
        fs::write(&dest, b"old").unwrap();
        let err = write_file_with(&dest, |w: &mut dyn Write| {
            w.write_all(b"half").unwrap();
            Err(Error::io("write", "x")(io::ErrorKind::Other.into()))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        write_file_with(&dest, |w: &mut dyn Write| {
            w.write_all(b"new").map_err(Error::io("write", "x"))
        })
        .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }

    #[test]
    fn a_new_directory_appears_whole_and_an_existing_one_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let err = write_dir_with(&dest, |d| {
            fs::write(d.join("half"), b"").unwrap();
            Err(Error::io("write", "x")(io::ErrorKind::Other.into()))
        });
        assert!(err.is_err());
        assert!(!dest.exists());
        write_dir_with(&dest, |d| {
            fs::write(d.join("new"), b"").map_err(Error::io("write", "x"))
        })
        .unwrap();
        assert!(dest.join("new").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A directory with something in it is left as it is.
        assert!(write_dir_with(&dest, |_| Ok(())).is_err());
        assert!(dest.join("new").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            write_dir_with(&file, |_| Ok(())),
            Err(Error::NotADirectory { .. })
        ));
    }
}
