//! Go's `path.Clean` and `path.Dir` for '/'-separated paths.

use std::borrow::Cow;

/// Returns the shortest path equivalent to `path` by purely lexical
/// processing, exactly like Go's `path.Clean` (and `path/filepath.Clean` on
/// Unix):
///
/// 1. runs of slashes become one slash,
/// 2. `.` elements are removed,
/// 3. an inner `..` removes the element before it,
/// 4. `..` elements at the start of a rooted path are removed (`/..` is `/`).
///
/// The result ends in a slash only if it is the root `/`. An empty result is
/// returned as `"."`.
///
/// ```
/// assert_eq!(kiln_patterns::clean("./foo//bar/../baz/"), "foo/baz");
/// assert_eq!(kiln_patterns::clean("/../a"), "/a");
/// assert_eq!(kiln_patterns::clean("a/../.."), "..");
/// assert_eq!(kiln_patterns::clean(""), ".");
/// ```
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    // Number of leading ".." elements in `out`, which a later ".." must not
    // remove (only possible for paths that are not rooted).
    let mut dotdot = 0;
    for elem in path.split('/') {
        match elem {
            "" | "." => {}
            ".." => {
                if out.len() > dotdot {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                    dotdot += 1;
                }
            }
            _ => out.push(elem),
        }
    }
    let joined = out.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

/// Go's `path.Dir` (and `path/filepath.Dir` on Unix): everything before the
/// last `/`, cleaned. `"a"` and `""` give `"."`, `"/a"` gives `"/"`.
pub(crate) fn dir(path: &str) -> Cow<'_, str> {
    match path.rfind('/') {
        // The common case, a clean relative path: nothing to clean.
        Some(i) if is_clean_relative(&path[..i]) => Cow::Borrowed(&path[..i]),
        Some(i) => Cow::Owned(clean(&path[..=i])),
        None => Cow::Borrowed("."),
    }
}

/// Whether `path` is non-empty, relative, and unchanged by [`clean`].
fn is_clean_relative(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|elem| !matches!(elem, "" | "." | ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go's path.Clean test table (src/path/path_test.go), plus a few more.
    const CLEAN_TESTS: &[(&str, &str)] = &[
        // Already clean
        ("", "."),
        ("abc", "abc"),
        ("abc/def", "abc/def"),
        ("a/b/c", "a/b/c"),
        (".", "."),
        ("..", ".."),
        ("../..", "../.."),
        ("../../abc", "../../abc"),
        ("/abc", "/abc"),
        ("/", "/"),
        // Remove trailing slash
        ("abc/", "abc"),
        ("abc/def/", "abc/def"),
        ("a/b/c/", "a/b/c"),
        ("./", "."),
        ("../", ".."),
        ("../../", "../.."),
        ("/abc/", "/abc"),
        // Remove doubled slash
        ("abc//def//ghi", "abc/def/ghi"),
        ("//abc", "/abc"),
        ("///abc", "/abc"),
        ("//abc//", "/abc"),
        ("abc//", "abc"),
        // Remove . elements
        ("abc/./def", "abc/def"),
        ("/./abc/def", "/abc/def"),
        ("abc/.", "abc"),
        // Remove .. elements
        ("abc/def/ghi/../jkl", "abc/def/jkl"),
        ("abc/def/../ghi/../jkl", "abc/jkl"),
        ("abc/def/..", "abc"),
        ("abc/def/../..", "."),
        ("/abc/def/../..", "/"),
        ("abc/def/../../..", ".."),
        ("/abc/def/../../..", "/"),
        ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
        // Combinations
        ("abc/./../def", "def"),
        ("abc//./../def", "def"),
        ("abc/../../././../def", "../../def"),
        // Dockerignore-style inputs
        ("./foo", "foo"),
        ("/foo", "/foo"),
        ("foo/../bar", "bar"),
        ("secret/", "secret"),
        ("!foo/../bar", "bar"),
        ("**/", "**"),
        ("dir/**/", "dir/**"),
        ("a/.../b", "a/.../b"),
        ("..a/b", "..a/b"),
        ("a/..b", "a/..b"),
        ("/..", "/"),
        ("/../..", "/"),
        ("é/./ü/", "é/ü"),
    ];

    #[test]
    fn clean_table() {
        for (input, want) in CLEAN_TESTS {
            assert_eq!(clean(input), *want, "clean({input:?})");
            // Cleaning is idempotent.
            assert_eq!(clean(want), *want, "clean({want:?})");
        }
    }

    /// Go's definition, without the fast path.
    fn clean_dir_reference(path: &str) -> String {
        match path.rfind('/') {
            Some(i) => clean(&path[..=i]),
            None => ".".to_string(),
        }
    }

    #[test]
    fn dir_table() {
        let tests: &[(&str, &str)] = &[
            ("", "."),
            (".", "."),
            ("/.", "/"),
            ("/", "/"),
            ("////", "/"),
            ("/foo", "/"),
            ("x/", "x"),
            ("abc", "."),
            ("abc/def", "abc"),
            ("a/b/.x", "a/b"),
            ("a/b/c.", "a/b"),
            ("a/b/c.x", "a/b"),
            ("a//b", "a"),
            ("a/../b", "."),
            ("a/b/c", "a/b"),
            ("a/./c", "a"),
            ("./a/b", "a"),
            ("../a/b", "../a"),
            ("a/../b/c", "b"),
            ("..a/b", "..a"),
            ("a/b/", "a/b"),
        ];
        for (input, want) in tests {
            assert_eq!(dir(input), *want, "dir({input:?})");
            assert_eq!(
                dir(input),
                clean(&clean_dir_reference(input)),
                "dir({input:?})"
            );
        }
    }
}
