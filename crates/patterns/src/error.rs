//! The one error type of this crate.

/// Why a pattern was rejected.
///
/// Every message names the offending pattern and says what is wrong with it, so
/// it can be shown to the user as is (for example as the cause of a failed
/// `.dockerignore` or `COPY --exclude`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is malformed by Go's `path/filepath.Match` rules
    /// (`ErrBadPattern`): an unterminated or empty `[...]` class, a range
    /// with a missing end (`[a-]`), a trailing `\`, and so on.
    #[error("invalid pattern {pattern:?}: syntax error in pattern (check for an unclosed '[', a range like \"[a-]\" or a trailing '\\')")]
    BadPattern {
        /// The pattern as it was checked (cleaned, without a leading `!`).
        pattern: String,
    },

    /// The pattern passes Go's `filepath.Match` check, but Docker's matcher
    /// (moby/patternmatcher, which turns patterns into Go regular expressions)
    /// cannot use it: Docker fails the build with "syntax error in pattern" as
    /// soon as it tries to match it. Typical causes are a reversed range such
    /// as `[z-a]` and an escape such as `\q`.
    #[error("invalid pattern {pattern:?}: syntax error in pattern: {reason}")]
    Unusable {
        /// The pattern as it was checked (cleaned, without a leading `!`).
        pattern: String,
        /// What is wrong, e.g. "invalid character class range \"z-a\"".
        reason: String,
    },

    /// The pattern uses a construct that Docker accepts but kiln does not
    /// implement (Unicode class escapes such as `\p{Greek}`).
    #[error("invalid pattern {pattern:?}: {feature} is not supported; write the characters out explicitly instead")]
    Unsupported {
        /// The pattern as it was checked (cleaned, without a leading `!`).
        pattern: String,
        /// The construct that is not supported.
        feature: &'static str,
    },

    /// A pattern consisting of a lone `!` (an exception with nothing to
    /// re-include).
    #[error(
        "illegal exclusion pattern: \"!\" (a '!' must be followed by the pattern to re-include)"
    )]
    IllegalExclusion,
}
