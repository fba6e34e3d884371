//! Overlay upperdir conventions and their OCI layer equivalents.
//!
//! In an overlayfs upperdir a deleted path is a character device 0:0 and a directory that hides
//! everything below it carries the xattr `trusted.overlay.opaque=y`. In a layer tar the first
//! becomes an empty file `.wh.NAME` beside it, the second an empty file `.wh..wh..opq` inside it.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The prefix of a whiteout entry's file name.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name of the entry that marks its directory opaque.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// Whether `meta` is an overlay whiteout (a character device 0:0).
pub(crate) fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether the directory at `path` is marked opaque.
pub(crate) fn is_opaque(path: &Path) -> io::Result<bool> {
    match xattr::get(path, OPAQUE_XATTR) {
        Ok(value) => Ok(value.as_deref() == Some(b"y")),
        Err(e) if xattrs_unsupported(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `e` says the file system has no xattrs at all (so there are none to read).
pub(crate) fn xattrs_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::ENOTSUP as i32)
}

/// Whether an xattr is overlayfs bookkeeping, which never goes into a layer.
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(OVERLAY_XATTR_PREFIX)
}

/// The tar name of the whiteout for the relative path `rel` (`a/b` → `a/.wh.b`).
pub(crate) fn whiteout_name(rel: &[u8]) -> Vec<u8> {
    let split = rel.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    [&rel[..split], WHITEOUT_PREFIX, &rel[split..]].concat()
}

/// The tar name of the opaque marker inside the directory `rel` (`a` → `a/.wh..wh..opq`).
pub(crate) fn opaque_marker_name(rel: &[u8]) -> Vec<u8> {
    [rel, b"/", OPAQUE_MARKER].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(whiteout_name(b"gone"), b".wh.gone");
        assert_eq!(whiteout_name(b"etc/apt/gone"), b"etc/apt/.wh.gone");
        assert_eq!(opaque_marker_name(b"var/lib"), b"var/lib/.wh..wh..opq");
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(!is_overlay_xattr(b"security.capability"));
    }
}
