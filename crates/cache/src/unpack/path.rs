//! Layer entry names, cleaned lexically into components below the layer's root.
//!
//! Cleaning never consults the file system: a `..` pops the previous component, and one that
//! would climb above the root makes the whole name invalid ("path escapes from parent" in
//! BuildKit and containerd). Symlinks are never resolved, so lexical cleaning is exact.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// The components of `name` below the root, or `None` if a `..` climbs above it. Leading `/`s
/// (absolute names), empty components and `.` are dropped; an empty result names the root.
pub(crate) fn clean(name: &[u8]) -> Option<Vec<OsString>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    Some(
        parts
            .into_iter()
            .map(|p| OsStr::from_bytes(p).to_os_string())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(name: &str) -> Option<String> {
        clean(name.as_bytes()).map(|parts| {
            parts
                .iter()
                .map(|p| p.to_str().unwrap())
                .collect::<Vec<_>>()
                .join("/")
        })
    }

    #[test]
    fn plain_names_are_kept() {
        assert_eq!(cleaned("usr/bin/sh").as_deref(), Some("usr/bin/sh"));
        assert_eq!(cleaned("usr/bin/").as_deref(), Some("usr/bin"));
    }

    #[test]
    fn absolute_and_dotted_names_become_relative() {
        assert_eq!(cleaned("/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(cleaned("./etc//./passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(cleaned("///").as_deref(), Some(""));
        assert_eq!(cleaned("./").as_deref(), Some(""));
    }

    #[test]
    fn dotdot_inside_the_root_is_resolved() {
        assert_eq!(cleaned("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(cleaned("a/..").as_deref(), Some(""));
    }

    #[test]
    fn dotdot_above_the_root_is_rejected() {
        assert_eq!(cleaned(".."), None);
        assert_eq!(cleaned("../x"), None);
        assert_eq!(cleaned("a/../../x"), None);
        assert_eq!(cleaned("/../etc/passwd"), None);
        assert_eq!(cleaned("./a/./../.."), None);
    }

    #[test]
    fn dots_inside_names_are_not_special() {
        assert_eq!(cleaned("a/..b/.c/...").as_deref(), Some("a/..b/.c/..."));
    }
}
