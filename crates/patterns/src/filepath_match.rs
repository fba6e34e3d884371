//! Go's `path/filepath.Match` (Unix flavour: `/` separator, `\` escapes), and
//! the wildcard test BuildKit applies to `COPY` sources.
//!
//! The matcher is a line-by-line port of the Go implementation (Go 1.16 and
//! later), working on bytes where Go works on bytes and on runes where Go
//! decodes runes, so that every quirk carries over: a pattern is reported as
//! malformed even when the match fails before reaching the malformed part, and
//! a `*` may resume matching in the middle of a multi-byte character.

use crate::PatternError;

/// The Unicode replacement character, which Go's UTF-8 decoder returns for an
/// invalid byte.
const RUNE_ERROR: u32 = 0xFFFD;

/// Reports whether `name` matches the shell pattern `pattern`, exactly like
/// Go's `path/filepath.Match` on Unix.
///
/// Pattern syntax:
///
/// - `*` matches any sequence of characters other than `/` (including none);
/// - `?` matches any single character other than `/`;
/// - `[...]` is a non-empty character class: single characters and ranges
///   `lo-hi`, negated by a leading `^` (a leading `!` is *not* a negation in
///   Go, it is just the character `!`). Classes may match `/`. Inside a class,
///   `\` escapes the next character, and an unescaped `-` or `]` cannot start a
///   range item (`[]a]`, `[-]`, `[x-]` are malformed);
/// - `\c` matches the character `c`;
/// - any other character matches itself.
///
/// The whole of `name` must match. The only error is
/// [`PatternError::BadPattern`], for a malformed pattern; as in Go, the whole
/// pattern is checked even when the match has already failed.
///
/// ```
/// use kiln_patterns::path_match;
/// assert!(path_match("*.log", "a.log").unwrap());
/// assert!(!path_match("*.log", "sub/a.log").unwrap());
/// assert!(path_match("[^a]b", "xb").unwrap());
/// assert!(path_match("a\\*b", "a*b").unwrap());
/// assert!(path_match("[a-", "x").is_err());
/// ```
pub fn path_match(pattern: &str, name: &str) -> Result<bool, PatternError> {
    go_match(pattern.as_bytes(), name.as_bytes()).map_err(|BadPattern| PatternError::BadPattern {
        pattern: pattern.to_string(),
    })
}

/// Reports whether a `COPY`/`ADD` source is a wildcard, the way BuildKit
/// decides it (`containsWildcards` in BuildKit's file op): the source contains
/// `*`, `?` or `[` that is not escaped by a preceding `\`.
///
/// A `\` is the escape character, not itself a wildcard: `foo\*` and
/// `a\b` are not wildcards (BuildKit then copies that literal path). Go's
/// `filepath` `hasMeta` (which also counts `\`) is stricter than what BuildKit
/// uses for this decision.
///
/// ```
/// use kiln_patterns::has_wildcards;
/// assert!(has_wildcards("src/*.rs"));
/// assert!(has_wildcards("file?.txt"));
/// assert!(has_wildcards("[ab].txt"));
/// assert!(!has_wildcards("plain/path.txt"));
/// assert!(!has_wildcards("literal\\*star"));
/// ```
pub fn has_wildcards(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Go's `filepath.ErrBadPattern`, internally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadPattern;

/// Checks `pattern` the way moby/patternmatcher does before accepting it:
/// `filepath.Match(pattern, ".")` must not report an error.
pub(crate) fn validate(pattern: &str) -> Result<(), PatternError> {
    path_match(pattern, ".").map(|_| ())
}

/// Go's `utf8.DecodeRune`: the rune at the start of `b` and its length;
/// `(RUNE_ERROR, 1)` for an invalid or truncated sequence, `(RUNE_ERROR, 0)`
/// for empty input.
pub(crate) fn decode_rune(b: &[u8]) -> (u32, usize) {
    let Some(&first) = b.first() else {
        return (RUNE_ERROR, 0);
    };
    let len = match first {
        0x00..=0x7F => return (u32::from(first), 1),
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return (RUNE_ERROR, 1),
    };
    match b.get(..len).map(std::str::from_utf8) {
        Some(Ok(s)) => match s.chars().next() {
            Some(c) => (u32::from(c), len),
            None => (RUNE_ERROR, 1),
        },
        _ => (RUNE_ERROR, 1),
    }
}

/// `filepath.Match` on bytes.
fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, BadPattern> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // Trailing * matches rest of string unless it has a /.
            return Ok(!name.contains(&b'/'));
        }
        // Look for match at current position.
        let (t, ok, err) = match_chunk(chunk, name);
        // If we're the last chunk, make sure we've exhausted the name,
        // otherwise we'd give a false result even if we could still match
        // using the star.
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if let Some(err) = err {
            return Err(err);
        }
        if star {
            // Look for match skipping i+1 bytes. Cannot skip /.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (t, ok, err) = match_chunk(chunk, &name[i + 1..]);
                if ok {
                    // If we're the last chunk, make sure we exhausted the name.
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                if let Some(err) = err {
                    return Err(err);
                }
                i += 1;
            }
        }
        // Before returning false with no error, check that the remainder of
        // the pattern is syntactically valid.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            if let (_, _, Some(err)) = match_chunk(chunk, b"") {
                return Err(err);
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Gets the next segment of `pattern`: a non-star string possibly preceded by
/// stars. Returns (star, chunk, rest).
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let Some((b'*', rest)) = pattern.split_first() {
        pattern = rest;
        star = true;
    }
    let mut inrange = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // Skip the escaped byte; a trailing '\\' is reported by
            // match_chunk as a bad pattern.
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => inrange = true,
            b']' => inrange = false,
            b'*' if !inrange => return (star, &pattern[..i], &pattern[i..]),
            _ => {}
        }
        i += 1;
    }
    (star, pattern, &[])
}

/// Checks whether `chunk` matches the beginning of `s`. If so, returns the
/// remainder of `s` (after the match). `chunk` is all single-character
/// operators: literals, classes and `?`. After the match fails, the rest of
/// the chunk is still parsed so that syntax errors are reported.
fn match_chunk<'s>(mut chunk: &[u8], mut s: &'s [u8]) -> (&'s [u8], bool, Option<BadPattern>) {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                // Character class.
                let mut r = 0u32;
                if !failed {
                    let (rune, n) = decode_rune(s);
                    r = rune;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                // Possibly negated.
                let mut negated = false;
                if chunk.first() == Some(&b'^') {
                    negated = true;
                    chunk = &chunk[1..];
                }
                // Parse all ranges.
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = match get_esc(chunk) {
                        Ok(v) => v,
                        Err(e) => return (&[], false, Some(e)),
                    };
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = match get_esc(&chunk[1..]) {
                            Ok(v) => v,
                            Err(e) => return (&[], false, Some(e)),
                        };
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return (&[], false, Some(BadPattern));
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        return (&[], false, None);
    }
    (s, true, None)
}

/// Gets a possibly-escaped character from `chunk`, for a character class.
/// Returns the rune and the rest of the chunk, which must not be empty.
fn get_esc(mut chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadPattern);
            }
        }
        Some(_) => {}
    }
    let (r, n) = decode_rune(chunk);
    if r == RUNE_ERROR && n == 1 {
        return Err(BadPattern);
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (pattern, name, Ok(matched) or Err for ErrBadPattern)
    type Case = (&'static str, &'static str, Result<bool, ()>);

    // Go's own table (src/path/filepath/match_test.go), in full.
    const GO_MATCH_TESTS: &[Case] = &[
        ("abc", "abc", Ok(true)),
        ("*", "abc", Ok(true)),
        ("*c", "abc", Ok(true)),
        ("a*", "a", Ok(true)),
        ("a*", "abc", Ok(true)),
        ("a*", "ab/c", Ok(false)),
        ("a*/b", "abc/b", Ok(true)),
        ("a*/b", "a/c/b", Ok(false)),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
        ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
        ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
        ("ab[c]", "abc", Ok(true)),
        ("ab[b-d]", "abc", Ok(true)),
        ("ab[e-g]", "abc", Ok(false)),
        ("ab[^c]", "abc", Ok(false)),
        ("ab[^b-d]", "abc", Ok(false)),
        ("ab[^e-g]", "abc", Ok(true)),
        ("a\\*b", "a*b", Ok(true)),
        ("a\\*b", "ab", Ok(false)),
        ("a?b", "a☺b", Ok(true)),
        ("a[^a]b", "a☺b", Ok(true)),
        ("a???b", "a☺b", Ok(false)),
        ("a[^a][^a][^a]b", "a☺b", Ok(false)),
        ("[a-ζ]*", "α", Ok(true)),
        ("*[a-ζ]", "A", Ok(false)),
        ("a?b", "a/b", Ok(false)),
        ("a*b", "a/b", Ok(false)),
        ("[\\]a]", "]", Ok(true)),
        ("[\\-]", "-", Ok(true)),
        ("[x\\-]", "x", Ok(true)),
        ("[x\\-]", "-", Ok(true)),
        ("[x\\-]", "z", Ok(false)),
        ("[\\-x]", "x", Ok(true)),
        ("[\\-x]", "-", Ok(true)),
        ("[\\-x]", "a", Ok(false)),
        ("[]a]", "]", Err(())),
        ("[-]", "-", Err(())),
        ("[x-]", "x", Err(())),
        ("[x-]", "-", Err(())),
        ("[x-]", "z", Err(())),
        ("[-x]", "x", Err(())),
        ("[-x]", "-", Err(())),
        ("[-x]", "a", Err(())),
        ("\\", "a", Err(())),
        ("[a-b-c]", "a", Err(())),
        ("[", "a", Err(())),
        ("[^", "a", Err(())),
        ("[^bc", "a", Err(())),
        ("a[", "a", Err(())),
        ("a[", "ab", Err(())),
        ("a[", "x", Err(())),
        ("a/b[", "x", Err(())),
        ("*x", "xxx", Ok(true)),
    ];

    // More cases: negation syntax, escapes, classes and '/', the "error even
    // after an early mismatch" rule, and byte-level quirks.
    const MORE_MATCH_TESTS: &[Case] = &[
        // '!' is not a negation in Go, just a character.
        ("[!a]", "!", Ok(true)),
        ("[!a]", "a", Ok(true)),
        ("[!a]", "b", Ok(false)),
        ("[^a]", "b", Ok(true)),
        ("[^a]", "a", Ok(false)),
        ("[^!]", "!", Ok(false)),
        // Classes can match '/', '?' and '*' cannot.
        ("a[/]b", "a/b", Ok(true)),
        ("a[^x]b", "a/b", Ok(true)),
        ("a?b", "a/b", Ok(false)),
        ("*", "a/b", Ok(false)),
        ("*/*", "a/b", Ok(true)),
        ("*/*", "a/b/c", Ok(false)),
        ("*", "", Ok(true)),
        ("", "", Ok(true)),
        ("", "a", Ok(false)),
        ("?", "", Ok(false)),
        ("**", "abc", Ok(true)),
        ("**", "a/b", Ok(false)),
        ("a**", "abc", Ok(true)),
        // '*' inside a class is a literal.
        ("[*]", "*", Ok(true)),
        ("[*]", "a", Ok(false)),
        ("a[*?]b", "a?b", Ok(true)),
        // Escapes.
        ("\\[", "[", Ok(true)),
        ("\\a", "a", Ok(true)),
        ("\\\\", "\\", Ok(true)),
        ("a\\\\", "a\\", Ok(true)),
        ("\\?", "?", Ok(true)),
        ("\\?", "x", Ok(false)),
        ("[\\\\]", "\\", Ok(true)),
        ("[\\^]", "^", Ok(true)),
        ("[\\", "a", Err(())),
        ("[a\\", "a", Err(())),
        ("[a-\\", "a", Err(())),
        ("a\\", "a", Err(())),
        ("a\\", "b", Err(())),
        ("*\\", "x", Err(())),
        // Reversed ranges are valid and match nothing.
        ("[z-a]", "m", Ok(false)),
        ("[z-a]", "z", Ok(false)),
        ("[^z-a]", "m", Ok(true)),
        // ']' outside a class is a literal.
        ("a]", "a]", Ok(true)),
        ("]", "]", Ok(true)),
        // A class must be non-empty.
        ("[]", "]", Err(())),
        ("[^]", "a", Err(())),
        ("[^]a]", "b", Err(())),
        // Errors are reported even when the name mismatches early...
        ("x[", "a", Err(())),
        ("ab[", "xy", Err(())),
        ("a*[", "b", Err(())),
        ("a/*/[", "b/c/d", Err(())),
        ("a*b*[", "a", Err(())),
        ("abc\\", "x", Err(())),
        ("abc[", "abd", Err(())),
        // ...and when the name is exhausted early.
        ("abc[", "a", Err(())),
        ("a?[", "a", Err(())),
        // But a trailing star ends the check: nothing remains to validate.
        ("[a]*", "b", Ok(false)),
        // Multi-byte characters.
        ("é", "é", Ok(true)),
        ("é", "è", Ok(false)),
        ("?", "é", Ok(true)),
        ("??", "é", Ok(false)),
        ("[é]", "é", Ok(true)),
        ("[à-ë]", "é", Ok(true)),
        ("[^é]", "é", Ok(false)),
        ("\\é", "é", Ok(true)),
        ("*é", "aé", Ok(true)),
        // Go's star loop skips bytes, so it can resume inside a multi-byte
        // character, where a class sees U+FFFD.
        ("*[^é]", "é", Ok(true)),
        ("*[\u{FFFD}]", "é", Ok(true)),
        ("*é*", "xéy", Ok(true)),
        // Dots are literal.
        ("*.go", "x.go", Ok(true)),
        ("*.go", "xgo", Ok(false)),
        (".*", ".hidden", Ok(true)),
        (".*", "visible", Ok(false)),
        ("*.log", "a.log", Ok(true)),
        ("*.log", "sub/a.log", Ok(false)),
        ("a/*/c", "a/b/c", Ok(true)),
        ("a/*/c", "a/b/b/c", Ok(false)),
        ("a/*", "a/", Ok(true)),
        ("a/*", "a", Ok(false)),
        ("*/", "a/", Ok(true)),
    ];

    #[test]
    fn go_match_table() {
        for (pattern, name, want) in GO_MATCH_TESTS.iter().chain(MORE_MATCH_TESTS) {
            let got = path_match(pattern, name).map_err(|_| ());
            assert_eq!(got, *want, "path_match({pattern:?}, {name:?})");
        }
    }

    #[test]
    fn bad_pattern_message() {
        let err = path_match("[a-", "x").unwrap_err();
        assert_eq!(
            err,
            PatternError::BadPattern {
                pattern: "[a-".to_string()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid pattern \"[a-\": syntax error in pattern"),
            "{msg}"
        );
    }

    #[test]
    fn validate_checks_whole_pattern() {
        for bad in [
            "[", "a[", "[]a]", "[-]", "[x-]", "\\", "foo/[", "*[", "[^", "**/[x",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} should be rejected");
        }
        for good in [
            "*", "a", "[a]", "[^a]", "[!a]", "**", "a/**/b", "\\*", "]", "[z-a]",
        ] {
            assert!(validate(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn has_wildcards_table() {
        let tests: &[(&str, bool)] = &[
            ("", false),
            ("foo", false),
            ("foo/bar.txt", false),
            ("*", true),
            ("*.txt", true),
            ("dir/*", true),
            ("file?.txt", true),
            ("[abc].txt", true),
            ("a]b", false),
            ("a^b", false),
            ("a\\*b", false),
            ("a\\?b", false),
            ("a\\[b", false),
            ("a\\b", false),
            ("a\\", false),
            ("a\\\\*", true),
            ("\\**", true),
            ("{a,b}", false),
            ("é*", true),
        ];
        for (pattern, want) in tests {
            assert_eq!(has_wildcards(pattern), *want, "has_wildcards({pattern:?})");
        }
    }

    #[test]
    fn decode_rune_cases() {
        assert_eq!(decode_rune(b""), (RUNE_ERROR, 0));
        assert_eq!(decode_rune(b"a"), (u32::from('a'), 1));
        assert_eq!(decode_rune("é".as_bytes()), (u32::from('é'), 2));
        assert_eq!(decode_rune("☺x".as_bytes()), (u32::from('☺'), 3));
        assert_eq!(decode_rune("😀".as_bytes()), (0x1F600, 4));
        assert_eq!(decode_rune(&"é".as_bytes()[1..]), (RUNE_ERROR, 1));
        assert_eq!(decode_rune(&"☺".as_bytes()[..2]), (RUNE_ERROR, 1));
        assert_eq!(decode_rune(&[0xFF]), (RUNE_ERROR, 1));
    }
}
