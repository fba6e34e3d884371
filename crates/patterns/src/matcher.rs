//! `.dockerignore` / `COPY --exclude` matching with moby/patternmatcher
//! semantics (v0.6, as used by BuildKit).
//!
//! Each pattern is trimmed, cleaned like `filepath.Clean`, split from a
//! leading `!` (an exception that re-includes what earlier patterns
//! excluded), checked with Go's `filepath.Match` rules, and compiled the way
//! moby compiles it:
//!
//! - no wildcard at all: compared with the path for equality;
//! - a literal followed by a trailing `**` (`dir/**`): a prefix test;
//! - `**` first, then only literal text (`**/foo`, `**foo`): a suffix test
//!   (`**/foo` also matches `foo`);
//! - anything else: moby's Go regular expression, in which `*` is `[^/]*`,
//!   `?` is `[^/]`, `**` is `(.*/)?` (or `.*` at the end), `.+()|{}$` are
//!   literal and everything else (`[...]`, `^`, `\x`) is regular-expression
//!   syntax. See [`crate::regexp`] for what that means in corner cases.

use crate::clean::{clean, dir};
use crate::filepath_match::validate;
use crate::regexp::{ReError, Regex};
use crate::PatternError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A compiled list of `.dockerignore`-style patterns.
///
/// Later patterns override earlier ones; a pattern starting with `!` is an
/// exception that re-includes paths an earlier pattern excluded. A path is
/// excluded when the last pattern that matches it, or matches one of its parent
/// directories, is not an exception.
///
/// ```
/// use kiln_patterns::PatternMatcher;
/// let pm = PatternMatcher::new(["*.log", "!keep.log", "secret/", "**/*.tmp"]).unwrap();
/// assert!(pm.matches("a.log"));
/// assert!(!pm.matches("keep.log"));
/// assert!(!pm.matches("sub/a.log"));
/// assert!(pm.matches("secret"));
/// assert!(pm.matches("secret/deep/file"));
/// assert!(pm.matches("deep/er/z.tmp"));
/// ```
#[derive(Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
    /// [`excludes`](Self::excludes)' per-pattern results of the directories asked about.
    dirs: Mutex<HashMap<String, Arc<MatchInfo>>>,
}

impl std::fmt::Debug for PatternMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternMatcher")
            .field("patterns", &self.patterns)
            .field("exclusions", &self.exclusions)
            .finish_non_exhaustive()
    }
}

impl Clone for PatternMatcher {
    fn clone(&self) -> Self {
        PatternMatcher {
            patterns: self.patterns.clone(),
            exclusions: self.exclusions,
            dirs: Mutex::default(),
        }
    }
}

/// Per-pattern results for a directory, for
/// [`PatternMatcher::matches_using_parent_results`].
///
/// The default value means "no information about the parent".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern without its `!`.
    cleaned: String,
    /// Whether the pattern started with `!`.
    exclusion: bool,
    kind: Kind,
}

/// How a pattern is matched (moby's `matchType`).
#[derive(Debug, Clone)]
enum Kind {
    /// The path must equal the pattern.
    Exact,
    /// The path must start with the pattern minus its trailing `**`.
    Prefix,
    /// The path must end with the pattern minus its leading `**`.
    Suffix,
    /// moby's regular expression.
    Regexp(Regex),
}

/// moby's match type, as its tests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchType {
    Exact,
    Prefix,
    Suffix,
    Regexp,
}

/// Translates a cleaned pattern (without `!`) to moby's match type and
/// regular expression, character for character like moby's `compile`.
fn translate(pattern: &str) -> (MatchType, String) {
    let mut reg = String::from("^");
    let mut match_type = MatchType::Exact;
    // Go's text/scanner skips a byte order mark at the very start.
    let pattern = pattern.strip_prefix('\u{FEFF}').unwrap_or(pattern);
    let mut chars = pattern.chars().peekable();
    let mut i = 0;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                // Some flavour of "**".
                chars.next();
                // Treat "**/" as "**": eat the "/".
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    // "**" at the end matches everything below.
                    if match_type == MatchType::Exact {
                        match_type = MatchType::Prefix;
                    } else {
                        reg.push_str(".*");
                        match_type = MatchType::Regexp;
                    }
                } else {
                    // Any number of directories, including none.
                    reg.push_str("(.*/)?");
                    match_type = MatchType::Regexp;
                }
                if i == 0 {
                    match_type = MatchType::Suffix;
                }
            }
            '*' => {
                reg.push_str("[^/]*");
                match_type = MatchType::Regexp;
            }
            '?' => {
                reg.push_str("[^/]");
                match_type = MatchType::Regexp;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                reg.push('\\');
                reg.push(ch);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    reg.push('\\');
                    reg.push(next);
                    match_type = MatchType::Regexp;
                }
                None => reg.push('\\'),
            },
            '[' | ']' => {
                reg.push(ch);
                match_type = MatchType::Regexp;
            }
            _ => reg.push(ch),
        }
        i += 1;
    }
    if match_type == MatchType::Regexp {
        reg.push('$');
    }
    (match_type, reg)
}

impl Pattern {
    fn compile(cleaned: String, exclusion: bool) -> Result<Pattern, PatternError> {
        validate(&cleaned)?;
        let (match_type, expr) = translate(&cleaned);
        let kind = match match_type {
            MatchType::Exact => Kind::Exact,
            MatchType::Prefix => Kind::Prefix,
            MatchType::Suffix => Kind::Suffix,
            MatchType::Regexp => match Regex::new(&expr) {
                Ok(re) => Kind::Regexp(re),
                Err(ReError::Syntax(reason)) => {
                    return Err(PatternError::Unusable {
                        pattern: cleaned,
                        reason,
                    })
                }
                Err(ReError::Unsupported(feature)) => {
                    return Err(PatternError::Unsupported {
                        pattern: cleaned,
                        feature,
                    })
                }
            },
        };
        Ok(Pattern {
            cleaned,
            exclusion,
            kind,
        })
    }

    /// The pattern minus its trailing `**` (prefix patterns).
    fn prefix_bytes(&self) -> &[u8] {
        let b = self.cleaned.as_bytes();
        &b[..b.len().saturating_sub(2)]
    }

    /// The pattern minus its leading `**` (suffix patterns). Byte-based like
    /// Go, which matters only for a pattern starting with a byte order mark.
    fn suffix_bytes(&self) -> &[u8] {
        self.cleaned.as_bytes().get(2..).unwrap_or_default()
    }

    /// moby's `Pattern.match`: does this pattern match `path` itself?
    fn matches(&self, path: &str) -> bool {
        let p = path.as_bytes();
        match &self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix => p.starts_with(self.prefix_bytes()),
            Kind::Suffix => {
                let suffix = self.suffix_bytes();
                // "**/foo" also matches "foo".
                p.ends_with(suffix) || (suffix.first() == Some(&b'/') && p == &suffix[1..])
            }
            Kind::Regexp(re) => re.is_match(path),
        }
    }

    /// Does this pattern match `path` or one of its parent directories
    /// (the inner loop of moby's `MatchesOrParentMatches`)?
    fn matches_or_parent_matches(&self, path: &str, parent: &str) -> bool {
        if self.matches(path) {
            return true;
        }
        if parent == "." {
            return false;
        }
        // Every prefix of the parent ending before a '/', then the parent.
        parent
            .match_indices('/')
            .map(|(i, _)| &parent[..i])
            .chain(std::iter::once(parent))
            .any(|prefix| self.matches(prefix))
    }

    /// Could this pattern match some path that starts with `prefix`?
    /// Conservative: may say yes when no such path exists.
    fn may_match_with_prefix(&self, prefix: &str) -> bool {
        match &self.kind {
            Kind::Exact => self.cleaned.starts_with(prefix),
            Kind::Prefix => {
                let lit = self.prefix_bytes();
                lit.starts_with(prefix.as_bytes()) || prefix.as_bytes().starts_with(lit)
            }
            // prefix + suffix always ends with the suffix.
            Kind::Suffix => true,
            Kind::Regexp(re) => re.may_match_with_prefix(prefix),
        }
    }
}

impl PatternMatcher {
    /// Compiles `patterns` like moby's `patternmatcher.New`.
    ///
    /// Each pattern is trimmed of surrounding whitespace (empty ones are
    /// skipped), cleaned with [`clean`](crate::clean) (`./foo` is `foo`,
    /// `secret/` is `secret`, `foo/../bar` is `bar`), and split from a leading
    /// `!`. A leading `/` is *not* removed here (`/foo` then never matches a
    /// relative path); [`read_ignore_file`](crate::read_ignore_file) removes
    /// it for `.dockerignore` lines. Note that cleaning happens before the `!`
    /// is looked at, as in moby: `!foo/../bar` becomes the plain pattern `bar`.
    ///
    /// Errors: a lone `!`; a pattern Go's `filepath.Match` finds malformed
    /// (`[` unterminated, `[]a]`, `[a-]`, trailing `\`); a pattern Docker would
    /// fail on when matching (`[z-a]`, `\q`); a `\p{..}` Unicode class.
    pub fn new<I, S>(patterns: I) -> Result<PatternMatcher, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut pm = PatternMatcher::default();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut cleaned = clean(p);
            let exclusion = cleaned.starts_with('!');
            if exclusion {
                if cleaned.len() == 1 {
                    return Err(PatternError::IllegalExclusion);
                }
                cleaned.remove(0);
                pm.exclusions = true;
            }
            pm.patterns.push(Pattern::compile(cleaned, exclusion)?);
        }
        Ok(pm)
    }

    /// moby's `MatchesOrParentMatches`: is `path` excluded, either directly or
    /// because one of its parent directories is?
    ///
    /// `path` is relative to the context root, `/`-separated, without a
    /// leading `/`, and already clean (it is not cleaned here). Each pattern
    /// is tried against `path` and then against each of its parent
    /// directories (`a`, `a/b` for `a/b/c`); the last pattern that matches
    /// decides, so `!` exceptions re-include what earlier patterns excluded
    /// (and `dir` followed by `!dir/keep` keeps `dir/keep`).
    pub fn matches(&self, path: &str) -> bool {
        let parent = dir(path);
        let parent = parent.as_ref();
        let mut matched = false;
        for pattern in &self.patterns {
            // Skip patterns that cannot change the result: an inclusion when
            // already excluded, an exception when not excluded.
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches_or_parent_matches(path, parent) {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// moby's `MatchesUsingParentResults`, the variant BuildKit's context
    /// walker (fsutil) uses: like [`matches`](Self::matches), but instead of
    /// re-checking every parent directory it reuses the per-pattern results of
    /// the parent directory, which the caller passes in (`MatchInfo::default()`
    /// for entries of the root, or when unknown). Returns whether `path` is
    /// excluded, and the results to pass in for `path`'s own children.
    ///
    /// The answers can differ from [`matches`](Self::matches) in one corner:
    /// an exception that moby skipped while evaluating the parent (because the
    /// parent was not excluded at that point) is later tried against the child
    /// only. With `d/f` then `!d`, `matches("d/f")` is false but this returns
    /// true when walking `d` then `d/f`, as BuildKit does.
    ///
    /// A `parent` whose length does not fit this matcher (from another
    /// matcher) is treated as no information.
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> (bool, MatchInfo) {
        let parent_matched: &[bool] = if parent.parent_matched.len() == self.patterns.len() {
            &parent.parent_matched
        } else {
            &[]
        };
        // Without parent results, parents are checked like `matches` does.
        let parent_dir = if parent_matched.is_empty() {
            Some(dir(path))
        } else {
            None
        };
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut m = parent_matched.get(i).copied().unwrap_or(false);
            if !m {
                if pattern.exclusion != matched {
                    continue;
                }
                m = match &parent_dir {
                    Some(parent_dir) => pattern.matches_or_parent_matches(path, parent_dir),
                    None => pattern.matches(path),
                };
            }
            info.parent_matched[i] = m;
            if m {
                matched = !pattern.exclusion;
            }
        }
        (matched, info)
    }

    /// Whether `path` is excluded, decided as BuildKit's walkers (fsutil's, for the build
    /// context, `COPY --exclude` and `--parents`) decide it:
    /// [`matches_using_parent_results`](Self::matches_using_parent_results) given the results of
    /// `path`'s parent directory, which were given those of its own parent, and so on from the
    /// root down. The answer depends on `path` alone, so callers may ask in any order: the
    /// results of each directory are computed once and kept (`is_dir` says whether `path` is
    /// one, to keep its results for its children).
    ///
    /// `path` is relative to the root, `/`-separated, without a leading `/`, and clean.
    pub fn excludes(&self, path: &str, is_dir: bool) -> bool {
        let parent = path.rfind('/').map(|i| self.dir_results(&path[..i]));
        let (excluded, info) = self
            .matches_using_parent_results(path, parent.as_deref().unwrap_or(&MatchInfo::default()));
        if is_dir {
            self.dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_string(), Arc::new(info));
        }
        excluded
    }

    /// The per-pattern results of the directory `dir`, computed (with its parents') if needed.
    fn dir_results(&self, dir: &str) -> Arc<MatchInfo> {
        let known = self
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(dir)
            .cloned();
        if let Some(info) = known {
            return info;
        }
        self.excludes(dir, true);
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(dir)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether any pattern is an exception (starts with `!`).
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// For walkers: when the directory `dir` is excluded, may something below
    /// it still be re-included by an exception, so that the walker has to
    /// descend into it?
    ///
    /// False when there are no exceptions. Otherwise true when some exception
    /// could match a path that starts with `dir/`: an exception whose literal
    /// text starts with `dir/` (`!dir/keep`), one starting with `**`, or a
    /// wildcard one whose expression can still match after reading `dir/`. The
    /// answer is conservative: it may be true when nothing below is
    /// re-included, but is never false when something is (for both
    /// [`matches`](Self::matches) and
    /// [`matches_using_parent_results`](Self::matches_using_parent_results)).
    /// This is at least as precise as BuildKit's fsutil, which descends into
    /// every excluded directory as soon as one exception has a wildcard.
    ///
    /// `dir` is relative to the context root like the paths given to
    /// [`matches`](Self::matches); a trailing `/` is ignored, and `""` or `"."`
    /// mean the root.
    pub fn may_include_below(&self, dir: &str) -> bool {
        if !self.exclusions {
            return false;
        }
        let dir = dir.trim_end_matches('/');
        if dir.is_empty() || dir == "." {
            return true;
        }
        let prefix = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| p.may_match_with_prefix(&prefix))
    }

    /// Whether there are no patterns at all (every input was blank).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm<const N: usize>(patterns: [&str; N]) -> PatternMatcher {
        match PatternMatcher::new(patterns) {
            Ok(pm) => pm,
            Err(e) => panic!("{patterns:?} should compile: {e}"),
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Want {
        /// The pattern matches the path itself.
        Exact,
        /// The pattern matches only a parent directory of the path.
        Inexact,
        /// Neither.
        Fail,
    }
    use Want::{Exact, Fail, Inexact};

    // moby/patternmatcher's TestMatches table (Unix entries included), then
    // more cases for the rules kiln relies on.
    const MATCH_TESTS: &[(&str, &str, Want)] = &[
        ("**", "file", Exact),
        ("**", "file/", Exact),
        ("**/", "file", Exact), // weird one
        ("**/", "file/", Exact),
        ("**", "/", Exact),
        ("**/", "/", Exact),
        ("**", "dir/file", Exact),
        ("**/", "dir/file", Exact),
        ("**", "dir/file/", Exact),
        ("**/", "dir/file/", Exact),
        ("**/**", "dir/file", Exact),
        ("**/**", "dir/file/", Exact),
        ("dir/**", "dir/file", Exact),
        ("dir/**", "dir/file/", Exact),
        ("dir/**", "dir/dir2/file", Exact),
        ("dir/**", "dir/dir2/file/", Exact),
        ("**/dir", "dir", Exact),
        ("**/dir", "dir/file", Inexact),
        ("**/dir2/*", "dir/dir2/file", Exact),
        ("**/dir2/*", "dir/dir2/file/", Inexact),
        ("**/dir2/**", "dir/dir2/dir3/file", Exact),
        ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
        ("**file", "file", Exact),
        ("**file", "dir/file", Exact),
        ("**/file", "dir/file", Exact),
        ("**file", "dir/dir/file", Exact),
        ("**/file", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file.txt", Exact),
        ("**/file*txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt*", "dir/dir/file.txt", Exact),
        ("**/**/*.txt", "dir/dir/file.txt", Exact),
        ("**/**/*.txt2", "dir/dir/file.txt", Fail),
        ("**/*.txt", "file.txt", Exact),
        ("**/**/*.txt", "file.txt", Exact),
        ("a**/*.txt", "a/file.txt", Exact),
        ("a**/*.txt", "a/dir/file.txt", Exact),
        ("a**/*.txt", "a/dir/dir/file.txt", Exact),
        ("a/*.txt", "a/dir/file.txt", Fail),
        ("a/*.txt", "a/file.txt", Exact),
        ("a/*.txt**", "a/file.txt", Exact),
        ("a[b-d]e", "ae", Fail),
        ("a[b-d]e", "ace", Exact),
        ("a[b-d]e", "aae", Fail),
        ("a[^b-d]e", "aze", Exact),
        (".*", ".foo", Exact),
        (".*", "foo", Fail),
        ("abc.def", "abcdef", Fail),
        ("abc.def", "abc.def", Exact),
        ("abc.def", "abcZdef", Fail),
        ("abc?def", "abcZdef", Exact),
        ("abc?def", "abcdef", Fail),
        ("**/foo/bar", "foo/bar", Exact),
        ("**/foo/bar", "dir/foo/bar", Exact),
        ("**/foo/bar", "dir/dir2/foo/bar", Exact),
        ("abc/**", "abc", Fail),
        ("abc/**", "abc/def", Exact),
        ("abc/**", "abc/def/ghi", Exact),
        ("**/.foo", ".foo", Exact),
        ("**/.foo", "bar.foo", Fail),
        ("a(b)c/def", "a(b)c/def", Exact),
        ("a(b)c/def", "a(b)c/xyz", Fail),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        ("a\\\\", "a\\", Exact),
        ("a\\*b", "a*b", Exact),
        // The brief's rules.
        ("*.log", "a.log", Exact),
        ("*.log", "sub/a.log", Fail),
        ("*.log", "a.log/inner", Inexact),
        ("**/*.tmp", "x.tmp", Exact),
        ("**/*.tmp", "sub/x.tmp", Exact),
        ("**/*.tmp", "deep/er/z.tmp", Exact),
        ("**/*.tmp", "x.tmpl", Fail),
        ("secret/", "secret", Exact),
        ("secret/", "secret/key", Inexact),
        ("secret/", "secret/a/b/c", Inexact),
        ("secret/", "secrets", Fail),
        ("secret/", "other/secret", Fail),
        ("secret", "secret/key", Inexact),
        ("**", "anything/at/all", Exact),
        ("**", "x", Exact),
        ("dir/**", "dir", Fail),
        ("dir/**", "dir/x", Exact),
        ("dir/**", "dirx/y", Fail),
        ("a/**/b", "a/b", Exact),
        ("a/**/b", "a/x/b", Exact),
        ("a/**/b", "a/x/y/b", Exact),
        ("a/**/b", "a/x/y/b/c", Inexact),
        ("a/**/b", "a/xb", Fail),
        ("a/**/b", "b", Fail),
        ("./foo", "foo", Exact),
        ("/foo", "foo", Fail),
        ("foo/../bar", "bar", Exact),
        ("foo/../bar", "foo", Fail),
        ("foo//bar/", "foo/bar", Exact),
        ("foo/./bar", "foo/bar/x", Inexact),
        // Go's filepath.Match rules inside a path.
        ("*", "a", Exact),
        ("*", "a/b", Inexact),
        ("*/b", "a/b", Exact),
        ("*/b", "a/c", Fail),
        ("?", "a", Exact),
        ("?", "ab", Fail),
        ("a?c", "a/c", Fail),
        ("[!a]", "!", Exact),
        ("[^a]", "b", Exact),
        ("[^a]", "a", Fail),
        ("a[/]b", "a/b", Exact),
        ("\\*", "*", Exact),
        ("\\*", "x", Fail),
        ("\\[a]", "[a]", Exact),
        // moby's quirks, kept: a suffix pattern is a plain string suffix...
        ("**foo", "barfoo", Exact),
        ("**foo", "bar/xfoo", Exact),
        ("**.txt", "a/b.txt", Exact),
        // ...while "**" inside a regexp is "(.*/)?", even without a '/'.
        ("a**b", "ab", Exact),
        ("a**b", "a/x/b", Exact),
        ("a**b", "axb", Fail),
        ("***", "a/b", Exact),
        ("**/**/**", "a", Exact),
        ("dir/**/**", "dir/x", Exact),
        // Trailing "**" after a wildcard is ".*".
        ("d*/**", "dx/y/z", Exact),
        ("d*/**", "dx", Fail),
        // A literal prefix with "**" is a plain string prefix.
        ("dir**", "dir", Exact),
        ("dir**", "directory/x", Exact),
        // Regexp semantics leak through: '.' in "(.*/)?" and ".*" does not
        // match a newline, '[^/]' does.
        ("**/x/*", "a\nb/x/y", Fail),
        ("**/x/*", "x/a\nb", Exact),
        ("d*/**", "dx/a\nb", Fail),
        ("dir/**", "dir/a\nb", Exact),
        // ...and '^' is an anchor in regexp patterns but literal otherwise.
        ("a^b", "a^b", Exact),
        ("a^b*", "a^bc", Fail),
        // ...and so are \d-style escapes.
        ("file\\d", "file7", Exact),
        ("file\\d", "filed", Fail),
        ("a\\tb", "a\tb", Exact),
        // ...and classes with '*' or '?' in them close early.
        ("[*]", "*", Fail),
        ("[*]", "]", Exact),
        ("[*]", "[/]", Exact),
        ("[?]", "[]", Exact),
        // POSIX classes are regexp classes.
        ("[[:digit:]]x", "5x", Exact),
        ("[[:digit:]]x", "dx", Fail),
        // A byte order mark at the start of a pattern is skipped by the
        // regexp translation but not by exact comparison.
        ("\u{FEFF}a*", "abc", Exact),
        ("\u{FEFF}abc", "abc", Fail),
        ("\u{FEFF}abc", "\u{FEFF}abc", Exact),
        // Multi-byte characters.
        ("é*", "été", Exact),
        ("?", "é", Exact),
        ("**/ü", "a/ü", Exact),
    ];

    #[test]
    fn single_pattern_table() {
        for &(pattern, path, want) in MATCH_TESTS {
            let m = pm([pattern]);
            // MatchesOrParentMatches.
            assert_eq!(
                m.matches(path),
                want != Fail,
                "matches: pattern {pattern:?}, path {path:?}"
            );
            // MatchesExact (no parent matching).
            assert_eq!(
                m.patterns[0].matches(path),
                want == Exact,
                "exact: pattern {pattern:?}, path {path:?}"
            );
            // MatchesUsingParentResults, walking down from the root, and
            // without context.
            assert_eq!(
                walk(&m, path),
                want != Fail,
                "walk: pattern {pattern:?}, path {path:?}"
            );
            assert_eq!(
                m.matches_using_parent_results(path, &MatchInfo::default())
                    .0,
                want != Fail,
                "no context: pattern {pattern:?}, path {path:?}"
            );
        }
    }

    /// Walks from the root down to `path` with
    /// `matches_using_parent_results`, like moby's test does.
    fn walk(m: &PatternMatcher, path: &str) -> bool {
        let parent = dir(path);
        let mut info = MatchInfo::default();
        if parent != "." {
            let parts: Vec<&str> = parent.split('/').collect();
            for i in 0..parts.len() {
                info = m
                    .matches_using_parent_results(&parts[..=i].join("/"), &info)
                    .1;
            }
        }
        m.matches_using_parent_results(path, &info).0
    }

    // (patterns, path, excluded by `matches`, excluded when walking down with
    // `matches_using_parent_results` as BuildKit does)
    const MULTI_TESTS: &[(&[&str], &str, bool, bool)] = &[
        // moby's multiPatternTests.
        (
            &["**", "!util/docker/web"],
            "util/docker/web/foo",
            false,
            false,
        ),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
            true,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
            false,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
            false,
        ),
        // moby's single tests with exceptions.
        (&["!fileutils.go", "*.go"], "fileutils.go", true, true),
        (&["*.go", "!fileutils.go"], "fileutils.go", false, false),
        (&["docs", "!docs/README.md"], "docs/README.md", false, false),
        (
            &["docs/", "!docs/README.md"],
            "docs/README.md",
            false,
            false,
        ),
        (
            &["docs/*", "!docs/README.md"],
            "docs/README.md",
            false,
            false,
        ),
        (&["docs", "!docs/README.md"], "docs/other.md", true, true),
        (&["docs", "!docs/README.md"], "docs", true, true),
        // The brief's rules.
        (&["*.log", "!keep.log"], "keep.log", false, false),
        (&["*.log", "!keep.log"], "drop.log", true, true),
        (&["!keep.log", "*.log"], "keep.log", true, true),
        (&["dir", "!dir/keep"], "dir/keep", false, false),
        (&["dir", "!dir/keep"], "dir/keep/inner", false, false),
        (&["dir", "!dir/keep"], "dir/other", true, true),
        (&["dir", "!dir/keep"], "dir", true, true),
        (&["dir/**", "!dir/keep"], "dir/keep", false, false),
        (&["**", "!**/*.go", "vendor"], "src/x.go", false, false),
        (&["**", "!**/*.go", "vendor"], "src/x.rs", true, true),
        (&["*", "!a/b"], "a/b/c", false, false),
        (&["*", "!a/b"], "a/c", true, true),
        // Later patterns win, in both directions.
        (&["a", "!a", "a"], "a/x", true, true),
        (&["a", "!a"], "a/x", false, false),
        (&["!a", "a/x"], "a/x", true, true),
        // Where moby's two functions disagree: a pattern skipped at the
        // parent (it could not change the parent's result) is later tried
        // against the child alone, without its parents.
        (&["a/x", "!a"], "a/x", false, true),
        (&["**", "!**/*.go", "vendor"], "vendor/x.go", true, false),
        // Blank patterns are ignored.
        (&["", "  ", "x"], "x", true, true),
        (&["  x  "], "x", true, true),
        (&["  !x  ", "y"], "x", false, false),
        (&[], "anything", false, false),
    ];

    #[test]
    fn multi_pattern_table() {
        for (patterns, path, want, want_walk) in MULTI_TESTS {
            let m = match PatternMatcher::new(patterns.iter()) {
                Ok(m) => m,
                Err(e) => panic!("{patterns:?}: {e}"),
            };
            assert_eq!(
                m.matches(path),
                *want,
                "patterns {patterns:?}, path {path:?}"
            );
            assert_eq!(
                walk(&m, path),
                *want_walk,
                "walk: patterns {patterns:?}, path {path:?}"
            );
            // Without parent information it is `matches`.
            assert_eq!(
                m.matches_using_parent_results(path, &MatchInfo::default())
                    .0,
                *want,
                "no context: patterns {patterns:?}, path {path:?}"
            );
            // `excludes` walks down as BuildKit does, asked for the path first or after its
            // parents.
            assert_eq!(
                m.excludes(path, false),
                *want_walk,
                "excludes: patterns {patterns:?}, path {path:?}"
            );
            let fresh = m.clone();
            let parts: Vec<&str> = path.split('/').collect();
            for i in 1..parts.len() {
                fresh.excludes(&parts[..i].join("/"), true);
            }
            assert_eq!(
                fresh.excludes(path, false),
                *want_walk,
                "excludes after the parents: patterns {patterns:?}, path {path:?}"
            );
        }
    }

    #[test]
    fn shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PatternMatcher>();
        assert_send_sync::<MatchInfo>();
        assert_send_sync::<PatternError>();
        let m = pm(["**/*.tmp", "!keep.tmp"]);
        std::thread::scope(|s| {
            let a = s.spawn(|| m.matches("x/y.tmp"));
            let b = s.spawn(|| m.matches("keep.tmp"));
            assert!(a.join().unwrap_or(false));
            assert!(!b.join().unwrap_or(true));
        });
    }

    #[test]
    fn walking_differs_from_matches_like_moby() {
        // An exception skipped at the parent is tried on the child only.
        let m = pm(["d/f", "!d"]);
        assert!(!m.matches("d/f"));
        assert!(walk(&m, "d/f"));
    }

    #[test]
    fn mismatched_match_info_is_ignored() {
        let m = pm(["a", "b"]);
        let other = pm(["x"]);
        let (_, info) = other.matches_using_parent_results("x", &MatchInfo::default());
        assert!(m.matches_using_parent_results("a/y", &info).0);
    }

    // moby's compileTests: the match type and, for regexps, the expression.
    const COMPILE_TESTS: &[(&str, MatchType, &str)] = &[
        ("*", MatchType::Regexp, "^[^/]*$"),
        ("file*", MatchType::Regexp, "^file[^/]*$"),
        ("*file", MatchType::Regexp, "^[^/]*file$"),
        ("a*/b", MatchType::Regexp, "^a[^/]*/b$"),
        ("**", MatchType::Suffix, ""),
        ("**/**", MatchType::Regexp, "^(.*/)?.*$"),
        ("dir/**", MatchType::Prefix, ""),
        ("**/dir", MatchType::Suffix, ""),
        ("**/dir2/*", MatchType::Regexp, "^(.*/)?dir2/[^/]*$"),
        ("**/dir2/**", MatchType::Regexp, "^(.*/)?dir2/.*$"),
        ("**file", MatchType::Suffix, ""),
        ("**/file*txt", MatchType::Regexp, "^(.*/)?file[^/]*txt$"),
        (
            "**/**/*.txt",
            MatchType::Regexp,
            "^(.*/)?(.*/)?[^/]*\\.txt$",
        ),
        ("a[b-d]e", MatchType::Regexp, "^a[b-d]e$"),
        (".*", MatchType::Regexp, "^\\.[^/]*$"),
        ("abc.def", MatchType::Exact, ""),
        ("abc?def", MatchType::Regexp, "^abc[^/]def$"),
        ("**/foo/bar", MatchType::Suffix, ""),
        ("a(b)c/def", MatchType::Exact, ""),
        ("a.|)$(}+{bc", MatchType::Exact, ""),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            MatchType::Exact,
            "",
        ),
        // More.
        ("a\\", MatchType::Exact, ""),
        ("a\\*", MatchType::Regexp, "^a\\*$"),
        ("a]", MatchType::Regexp, "^a]$"),
        ("a^b", MatchType::Exact, ""),
        ("***", MatchType::Regexp, "^(.*/)?[^/]*$"),
        ("a**b", MatchType::Regexp, "^a(.*/)?b$"),
        ("[*]", MatchType::Regexp, "^[[^/]*]$"),
        ("\u{FEFF}**/x", MatchType::Suffix, ""),
    ];

    #[test]
    fn compile_table() {
        for &(pattern, want_type, want_expr) in COMPILE_TESTS {
            let cleaned = clean(pattern);
            let (t, expr) = translate(&cleaned);
            assert_eq!(t, want_type, "type of {pattern:?}");
            if want_type == MatchType::Regexp {
                assert_eq!(expr, want_expr, "regexp of {pattern:?}");
            }
        }
    }

    #[test]
    fn errors() {
        let bad_pattern = |p: &str| PatternError::BadPattern {
            pattern: p.to_string(),
        };
        let cases: &[(&[&str], PatternError)] = &[
            (&["!"], PatternError::IllegalExclusion),
            (&["  !  "], PatternError::IllegalExclusion),
            (&["ok", "!"], PatternError::IllegalExclusion),
            (&["["], bad_pattern("[")),
            (&["[a-"], bad_pattern("[a-")),
            (&["a/b["], bad_pattern("a/b[")),
            (&["[]a]"], bad_pattern("[]a]")),
            (&["[-]"], bad_pattern("[-]")),
            (&["[x-]"], bad_pattern("[x-]")),
            (&["[a-b-c]"], bad_pattern("[a-b-c]")),
            (&["\\"], bad_pattern("\\")),
            (&["!["], bad_pattern("[")),
            (&["ok", "*.[ch"], bad_pattern("*.[ch")),
            (&["**/["], bad_pattern("**/[")),
            (
                &["[z-a]"],
                PatternError::Unusable {
                    pattern: "[z-a]".to_string(),
                    reason: "invalid character class range: `z-a`".to_string(),
                },
            ),
            (
                // moby/moby#52203: valid for filepath.Match, not for regexp.
                &["[Local-Only]/"],
                PatternError::Unusable {
                    pattern: "[Local-Only]".to_string(),
                    reason: "invalid character class range: `l-O`".to_string(),
                },
            ),
            (
                &["a\\qb"],
                PatternError::Unusable {
                    pattern: "a\\qb".to_string(),
                    reason: "invalid escape sequence: `\\q`".to_string(),
                },
            ),
            (
                &["[?[]"],
                PatternError::Unusable {
                    pattern: "[?[]".to_string(),
                    reason: "missing closing ]".to_string(),
                },
            ),
            (
                &["\\pL*"],
                PatternError::Unsupported {
                    pattern: "\\pL*".to_string(),
                    feature: "Unicode class escapes such as \\p{Greek}",
                },
            ),
        ];
        for (patterns, want) in cases {
            match PatternMatcher::new(patterns.iter()) {
                Ok(_) => panic!("{patterns:?} should be rejected"),
                Err(e) => assert_eq!(&e, want, "{patterns:?}"),
            }
        }
    }

    #[test]
    fn error_messages() {
        let msg = |p: &str| match PatternMatcher::new([p]) {
            Ok(_) => panic!("{p:?} should be rejected"),
            Err(e) => e.to_string(),
        };
        assert!(msg("[a-").starts_with("invalid pattern \"[a-\": syntax error in pattern"));
        assert_eq!(
            msg("[z-a]"),
            "invalid pattern \"[z-a]\": syntax error in pattern: invalid character class range: `z-a`"
        );
        assert!(msg("!").starts_with("illegal exclusion pattern: \"!\""));
    }

    #[test]
    fn accepted_oddities() {
        // Valid for both filepath.Match and Go's regexp.
        for p in [
            "]",
            "a]",
            "[\\]]",
            "[!a]",
            "\\a",
            "[[:alpha:]]",
            "\\Qa*",
            "a\\b",
            "!/abs",
        ] {
            assert!(PatternMatcher::new([p]).is_ok(), "{p:?}");
        }
    }

    #[test]
    fn exclusions_and_emptiness() {
        assert!(PatternMatcher::new(Vec::<String>::new()).is_ok_and(|m| m.is_empty()));
        assert!(PatternMatcher::new(["", "   "]).is_ok_and(|m| m.is_empty()));
        let m = pm(["docs", "config"]);
        assert!(!m.is_empty());
        assert!(!m.has_exclusions());
        assert!(pm(["docs", "!docs/README.md"]).has_exclusions());
        assert!(pm(["docs", "  !docs/README.md"]).has_exclusions());
        assert!(pm(["docs", "!docs/README.md  "]).has_exclusions());
        // Cleaning happens before the '!' is looked at (as in moby).
        assert!(!pm(["!foo/../bar"]).has_exclusions());
        assert!(pm(["!foo/../bar"]).matches("bar"));
    }

    // (patterns, dir, may include below)
    const BELOW_TESTS: &[(&[&str], &str, bool)] = &[
        (&["dir"], "dir", false),
        (&["**"], "dir", false),
        (&["dir", "!dir/keep"], "dir", true),
        (&["dir", "!dir/keep"], "dir/", true),
        (&["dir", "!dir/keep"], "dir/keep", false),
        (&["dir", "!dir/keep"], "other", false),
        (&["dir", "!dir/keep"], "di", false),
        (&["**", "!dir/keep"], "dir", true),
        (&["**", "!dir/keep/**"], "dir", true),
        (&["**", "!dir/keep/**"], "dir/keep", true),
        (&["**", "!dir/keep/**"], "dir/other", false),
        (&["**", "!dir**"], "directory", true),
        (&["**", "!dir**"], "other", false),
        (&["**", "!**/*.go"], "any/where", true),
        (&["**", "!**.go"], "any/where", true),
        (&["**", "!*.go"], "dir", false),
        (&["**", "!*/*.go"], "dir", true),
        (&["**", "!*/*.go"], "dir/sub", false),
        (&["**", "!d?r/x"], "dir", true),
        (&["**", "!d?r/x"], "door", false),
        (&["**", "![a-c]/x"], "b", true),
        (&["**", "![a-c]/x"], "d", false),
        (&["**", "!a/**/b"], "a/x/y", true),
        (&["**", "!a/**/b"], "c", false),
        (&["**", "!keep"], "", true),
        (&["**", "!keep"], ".", true),
        (&["**", "!keep"], "dir", false),
    ];

    #[test]
    fn may_include_below_table() {
        for (patterns, d, want) in BELOW_TESTS {
            let m = match PatternMatcher::new(patterns.iter()) {
                Ok(m) => m,
                Err(e) => panic!("{patterns:?}: {e}"),
            };
            assert_eq!(
                m.may_include_below(d),
                *want,
                "patterns {patterns:?}, dir {d:?}"
            );
        }
    }

    /// If `dir` is excluded and `may_include_below(dir)` is false, nothing
    /// below `dir` may be included.
    #[test]
    fn may_include_below_is_conservative() {
        let pattern_sets: &[&[&str]] = &[
            &["**", "!a/b"],
            &["a", "!a/b/c"],
            &["*", "!*/x"],
            &["**", "!**/*.go", "vendor"],
            &["**", "!a*/b"],
            &["a", "!**b"],
            &["a", "!a/**"],
            &["a/**", "!a/b**"],
            &["**", "![ab]/c"],
            &["**", "!a/[^x]"],
            &["*", "!a", "a/b", "!a/b/c"],
        ];
        let paths = [
            "a", "a/b", "a/b/c", "a/b/c/d", "a/x", "ab", "ab/b", "b/c", "x/a/b",
        ];
        for patterns in pattern_sets {
            let m = match PatternMatcher::new(patterns.iter()) {
                Ok(m) => m,
                Err(e) => panic!("{patterns:?}: {e}"),
            };
            for path in paths {
                let parent = dir(path);
                if parent == "." {
                    continue;
                }
                for (i, _) in path.match_indices('/') {
                    let d = &path[..i];
                    if m.matches(d) && !m.may_include_below(d) {
                        assert!(
                            m.matches(path),
                            "{patterns:?}: {d:?} pruned but {path:?} included"
                        );
                    }
                }
            }
        }
    }
}
