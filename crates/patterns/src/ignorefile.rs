//! Reading `.dockerignore` files (moby/patternmatcher's `ignorefile.ReadAll`).

use crate::clean::clean;

/// Splits a `.dockerignore` file into patterns, like moby's
/// `ignorefile.ReadAll`:
///
/// - a UTF-8 byte order mark at the start of the file is dropped;
/// - the text is split into lines at `\n`, and a `\r` ending a line is
///   dropped;
/// - a line whose *first* character is `#` is a comment (`  # x` is not: it
///   becomes the pattern `# x`);
/// - surrounding whitespace is trimmed and blank lines are skipped;
/// - a leading `!` is kept, with whitespace after it trimmed (`! foo` is
///   `!foo`);
/// - the pattern is cleaned with [`clean`](crate::clean) and one leading `/`
///   removed, as patterns are relative to the context root (`/foo/../bar/`
///   is `bar`; `/` stays `/`).
///
/// A lone `!` is kept as `"!"` (as moby does);
/// [`PatternMatcher::new`](crate::PatternMatcher::new) then rejects it.
/// Unlike Go's line scanner, lines longer than 64 KiB are not an error.
///
/// ```
/// let text = "\u{feff}# comment\n*.log\r\n! keep.log\n/secret/\n\n  ./a//b  \n";
/// assert_eq!(
///     kiln_patterns::read_ignore_file(text),
///     ["*.log", "!keep.log", "secret", "a/b"]
/// );
/// ```
pub fn read_ignore_file(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // A final "\n" does not start another line.
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut patterns = Vec::new();
    for line in lines {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let (invert, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, pattern),
        };
        let mut pattern = pattern.to_string();
        if !pattern.is_empty() {
            pattern = clean(&pattern);
            if pattern.len() > 1 && pattern.starts_with('/') {
                pattern.remove(0);
            }
        }
        if invert {
            pattern.insert(0, '!');
        }
        patterns.push(pattern);
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moby_read_all() {
        // moby/patternmatcher's ignorefile TestReadAll.
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        assert_eq!(
            read_ignore_file(content),
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!"
            ]
        );
        assert!(read_ignore_file("").is_empty());
    }

    #[test]
    fn table() {
        let tests: &[(&str, &[&str])] = &[
            ("", &[]),
            ("\n\n\n", &[]),
            ("   \n\t\n", &[]),
            ("foo", &["foo"]),
            ("foo\n", &["foo"]),
            ("foo\r\n", &["foo"]),
            ("foo\r\nbar\r\n", &["foo", "bar"]),
            ("foo\rbar", &["foo\rbar"]),
            ("a\nb\nc", &["a", "b", "c"]),
            // Comments only at the very start of the line.
            ("# comment", &[]),
            ("#comment\nfoo", &["foo"]),
            ("  # not a comment", &["# not a comment"]),
            ("\t#x", &["#x"]),
            ("foo # bar", &["foo # bar"]),
            // A BOM only at the start of the file.
            ("\u{FEFF}foo", &["foo"]),
            ("\u{FEFF}# comment\nfoo", &["foo"]),
            ("foo\n\u{FEFF}bar", &["foo", "\u{FEFF}bar"]),
            // Whitespace, including Unicode whitespace, is trimmed.
            ("  foo  ", &["foo"]),
            ("\u{A0}foo\u{3000}", &["foo"]),
            ("fo o", &["fo o"]),
            // Cleaning and leading '/'.
            ("./foo", &["foo"]),
            ("/foo", &["foo"]),
            ("//foo", &["foo"]),
            ("/", &["/"]),
            ("/..", &["/"]),
            (".", &["."]),
            ("./", &["."]),
            ("foo/../bar", &["bar"]),
            ("foo/..", &["."]),
            ("../foo", &["../foo"]),
            ("secret/", &["secret"]),
            ("a//b/./c/", &["a/b/c"]),
            ("**/", &["**"]),
            ("dir/**/", &["dir/**"]),
            // Exceptions.
            ("!foo", &["!foo"]),
            ("! foo", &["!foo"]),
            ("!/foo/", &["!foo"]),
            ("!./foo", &["!foo"]),
            ("!foo/../bar", &["!bar"]),
            ("!", &["!"]),
            ("!  ", &["!"]),
            ("!!foo", &["!!foo"]),
            ("*.log\n!keep.log", &["*.log", "!keep.log"]),
            // Nothing else is interpreted here.
            ("[a-", &["[a-"]),
            ("a\\b", &["a\\b"]),
        ];
        for (text, want) in tests {
            assert_eq!(read_ignore_file(text), *want, "read_ignore_file({text:?})");
        }
    }
}
