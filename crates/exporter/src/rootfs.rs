//! Filesystem outputs: the build result's root filesystem as a directory (`type=local`) or
//! as one tar (`type=tar`), both written atomically (see [`crate::dest`]).

use crate::{dest, diff_tar, Error};
use std::path::Path;

/// Copies the root filesystem `rootfs` (a merged, read-only view) to the directory `dest`,
/// keeping ownership, modes, xattrs, times, symlinks and hard links.
pub fn write_rootfs_dir(rootfs: &Path, dest: &Path) -> Result<(), Error> {
    dest::write_dir_with(dest, |temp| {
        kiln_cache::materialise_layers(&[rootfs.to_path_buf()], temp)
            .map_err(Error::io("copy the root filesystem to", dest))
    })
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
