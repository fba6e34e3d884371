//! Filesystem outputs: the build result's root filesystem as a directory (`type=local`) or
//! as one tar (`type=tar`). A tar and a new directory appear whole (see [`crate::dest`]); a
//! directory that exists is written into, entry by entry, as BuildKit writes it.

use crate::{dest, diff_tar, Error};
use std::path::Path;

/// Copies the root filesystem `rootfs` (a merged, read-only view) to the directory `dest`,
/// keeping ownership, modes, xattrs, times, symlinks and hard links. A new `dest` appears
/// whole (made beside it and renamed); into an existing one the files are written as
/// BuildKit's local exporter writes them: the image's paths replace what is there, nothing
/// else in `dest` is touched (`-o .` must never cost a user their files).
pub fn write_rootfs_dir(rootfs: &Path, dest: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => kiln_cache::copy_tree_into(rootfs, dest)
            .map_err(Error::io("copy the root filesystem into", dest)),
        Ok(_) => Err(Error::NotADirectory {
            path: dest.to_path_buf(),
        }),
        Err(_) => dest::write_dir_with(dest, |temp| {
            kiln_cache::materialise_layers(&[rootfs.to_path_buf()], temp)
                .map_err(Error::io("copy the root filesystem to", dest))
        }),
    }
}

/// Writes the root filesystem `rootfs` as one tar at `dest` (`-` for stdout), entries sorted,
/// mtimes clamped to `mtime_clamp` when given.
pub fn write_rootfs_tar(rootfs: &Path, dest: &Path, mtime_clamp: Option<i64>) -> Result<(), Error> {
    dest::write_file_with(dest, |out| {
        let mut tar = tar::Builder::new(out);
        diff_tar::append_diff(&mut tar, rootfs, mtime_clamp)?;
        let failed = |source| Error::Write {
            what: "the root filesystem tar",
            source,
        };
        tar.into_inner().map_err(failed)?.flush().map_err(failed)
    })
}
