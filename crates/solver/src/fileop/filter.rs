//! Which paths below a copied source are copied. Three filters can drop a path: the source's
//! `.dockerignore` (paths relative to the source root), `COPY --exclude` (relative to the
//! copied source, as fsutil matches them) and the include pattern of `COPY --parents`
//! (relative to the copied source too). A directory a filter drops may still hold paths it
//! keeps, through an exception (`!keep`) or a deeper include pattern: it is then walked, and
//! created only if something below it is copied.

use std::path::Path;

use kiln_patterns::{path_match, PatternError, PatternMatcher};

/// What happens to one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Selection {
    Copy,
    /// Only what lies below is considered (directories only).
    Below,
    Skip,
}

impl Selection {
    /// A path dropped by `matcher`, with dockerignore semantics (a path is dropped when it or a
    /// parent matches, unless an exception re-includes it), decided as BuildKit's walkers do.
    pub fn excluded_by(matcher: &PatternMatcher, rel: &str, is_dir: bool) -> Selection {
        if !matcher.excludes(rel, is_dir) {
            Selection::Copy
        } else if is_dir && matcher.may_include_below(rel) {
            Selection::Below
        } else {
            Selection::Skip
        }
    }
}

/// The filters of one copied source.
#[derive(Clone, Copy, Default)]
pub(crate) struct Filters<'a> {
    pub ignore: Option<&'a PatternMatcher>,
    pub exclude: Option<&'a PatternMatcher>,
    pub include: Option<&'a Include>,
}

impl Filters<'_> {
    /// The selection of the path `root_rel` (relative to the source root), which is `within`
    /// relative to the copied source.
    pub fn select(&self, root_rel: &Path, within: &Path, is_dir: bool) -> Selection {
        let within = within.to_string_lossy();
        let mut selection = Selection::Copy;
        if let Some(ignore) = self.ignore {
            let rel = root_rel.to_string_lossy();
            selection = selection.max(Selection::excluded_by(ignore, &rel, is_dir));
        }
        if let Some(exclude) = self.exclude {
            selection = selection.max(Selection::excluded_by(exclude, &within, is_dir));
        }
        if let Some(include) = self.include {
            selection = selection.max(include.select(&within, is_dir));
        }
        selection
    }
}

/// `COPY --parents`' pattern: what is copied from below the pivot directory.
pub(crate) struct Include {
    pattern: String,
    matcher: PatternMatcher,
}

impl Include {
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        Ok(Include {
            pattern: pattern.to_string(),
            matcher: PatternMatcher::new(&[pattern.to_string()])?,
        })
    }

    fn select(&self, rel: &str, is_dir: bool) -> Selection {
        if self.matcher.matches(rel) {
            Selection::Copy
        } else if is_dir && self.may_match_below(rel) {
            Selection::Below
        } else {
            Selection::Skip
        }
    }

    /// Whether a path below the directory `dir` can match: every component of `dir` must match
    /// the pattern's component at the same depth. `**` and character classes (which can match
    /// `/`) defeat the test.
    fn may_match_below(&self, dir: &str) -> bool {
        if self.pattern.contains("**") || self.pattern.contains('[') {
            return true;
        }
        let pattern: Vec<&str> = self.pattern.split('/').collect();
        let dir: Vec<&str> = dir.split('/').collect();
        dir.len() < pattern.len()
            && dir
                .iter()
                .zip(&pattern)
                .all(|(d, p)| path_match(p, d).unwrap_or(true))
    }
}
