//! Path patterns as Docker matches them.
//!
//! Dockerfile builds use patterns in three places, each with Go's rules
//! rather than a shell's: `.dockerignore` files and `COPY --exclude` (moby's
//! patternmatcher: cleaned patterns, `**` across directories, `!` exceptions,
//! a path excluded when it or a parent directory matches), and `COPY` source
//! wildcards (Go's `path/filepath.Match`). This crate reproduces those rules,
//! including their corner cases, so that kiln includes and excludes exactly
//! the files Docker/BuildKit would:
//!
//! - [`read_ignore_file`] turns a `.dockerignore` into patterns;
//! - [`PatternMatcher`] compiles them once and answers "is this path
//!   excluded?" ([`PatternMatcher::matches`]) and, for context walkers, "can
//!   anything below this excluded directory come back?"
//!   ([`PatternMatcher::may_include_below`]);
//! - [`path_match`] and [`has_wildcards`] are Go's `filepath.Match` and
//!   BuildKit's test for a wildcard `COPY` source;
//! - [`clean`] is Go's `path.Clean`, which every pattern goes through.
//!
//! ```
//! use kiln_patterns::{read_ignore_file, PatternMatcher};
//!
//! let patterns = read_ignore_file("*.log\n!keep.log\nsecret/\n**/*.tmp\n");
//! let pm = PatternMatcher::new(&patterns).unwrap();
//! assert!(pm.matches("debug.log"));
//! assert!(!pm.matches("keep.log"));
//! assert!(pm.matches("secret/key.pem"));
//! assert!(pm.matches("deep/er/z.tmp"));
//! assert!(!pm.matches("src/main.rs"));
//! ```
//!
//! Nothing here panics on any input; malformed patterns are reported as
//! [`PatternError`]s when a [`PatternMatcher`] is built.

mod clean;
mod error;
mod filepath_match;
mod ignorefile;
mod matcher;
mod regexp;

pub use clean::clean;
pub use error::PatternError;
pub use filepath_match::{has_wildcards, path_match};
pub use ignorefile::read_ignore_file;
pub use matcher::{MatchInfo, PatternMatcher};
