//! Word expansion with Docker's rules: a port of BuildKit's shell-word lexer (`shell.Lex`).
//!
//! A Dockerfile word is read once, left to right. `$NAME`, `${NAME}` and the `${NAME<op>word}`
//! forms are replaced by values from an environment callback; single quotes keep their text
//! literal, double quotes keep whitespace but still expand `$`, and the Dockerfile's escape
//! character (`\`, or `` ` `` under `# escape=`) makes the next character literal. The word inside
//! a modifier is expanded by the same reader, recursively. The pattern operators (`#`, `##`, `%`,
//! `%%`, `/`, `//`) match shell-style globs (`*`, `?`, escaped literals, no bracket expressions)
//! with exactly the leftmost-first semantics of BuildKit's glob-to-regexp conversion; a small
//! dynamic-programming matcher stands in for Go's regexp engine, linear in pattern × value.
//!
//! Where kiln deliberately differs from BuildKit is listed on [`Lexer`].

use std::collections::BTreeSet;

/// How many `${…}` may nest inside one another before expansion gives up (Go grows its stack;
/// we would overflow ours).
const MAX_NESTING: usize = 128;

/// Longest excerpt of the word quoted in an error message.
const MAX_REFERENCE_CHARS: usize = 80;

/// Docker's shell-word lexer (BuildKit's shell.Lex), for the escape character of the Dockerfile.
///
/// It mirrors BuildKit's `frontend/dockerfile/shell/lex.go`, quirks included (down to Go's
/// `text/scanner` dropping a leading U+FEFF of the word or of a pattern), except:
/// - in `#`/`%`/`/` patterns the escape character is the lexer's own: BuildKit always uses `\`
///   there, so under `` # escape=` `` a Windows path such as `${P#C:\Users\}` is an invalid
///   pattern and `` `* `` does not make `*` literal;
/// - `${NAME` cut off right after the name reports a missing `}` (BuildKit: an unsupported
///   modifier `\u{FFFD}`), and `${NAME:x` with an unknown `x` fails at once rather than after
///   reading the word;
/// - `${…}` nested deeper than 128 levels is an error;
/// - non-ASCII letters and digits in names follow Rust's Unicode `Alphabetic`/`Numeric`
///   properties, which differ from Go's `unicode.IsLetter`/`IsDigit` for a few rare characters;
/// - error messages are kiln's own, except `${A?msg}`'s, which are BuildKit's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

/// Why a word could not be expanded; message only, the caller attaches the Dockerfile span.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A `'` or `"` was opened and never closed.
    #[error("unterminated {} string: missing closing {quote}", quote_kind(.quote))]
    UnterminatedQuote { quote: char },
    /// The word ended inside `${…}`.
    #[error("unterminated variable reference: missing '}}' in {reference}")]
    MissingBrace { reference: String },
    /// The word ended inside the pattern of `${NAME/pattern/replacement}`.
    #[error("unterminated substitution: missing '/' after the pattern in {reference} (expected ${{NAME/pattern/replacement}})")]
    MissingSlash { reference: String },
    /// `${` not followed by a variable name: `${}`, `${:…}`, `${{…}`.
    #[error("bad substitution: missing variable name in {reference}")]
    BadSubstitution { reference: String },
    /// `${NAME` followed by something other than `}` or a supported modifier.
    #[error("bad substitution: unsupported modifier '{modifier}' in {reference}")]
    UnsupportedModifier { modifier: String, reference: String },
    /// `${NAME?message}` with NAME unset, or `${NAME:?message}` with NAME unset or empty.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    /// A `#`, `%` or `/` pattern with an escape that is not `*`, `?` or the escape character.
    #[error("invalid pattern '{pattern}' in substitution: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    /// `${…}` nested too deeply.
    #[error("variable references nested too deeply (more than {MAX_NESTING} levels of ${{…}})")]
    TooDeep,
}

fn quote_kind(quote: &char) -> &'static str {
    if *quote == '\'' {
        "single-quoted"
    } else {
        "double-quoted"
    }
}

/// The result of one pass over a word.
struct Expansion {
    result: String,
    words: Vec<String>,
    referenced: BTreeSet<String>,
}

impl Lexer {
    /// A lexer with BuildKit's defaults: quotes and escapes are removed, unset variables are empty.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The escape character this lexer was made for.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keeps quote characters in the output (BuildKit's `RawQuotes`).
    pub fn with_raw_quotes(mut self, on: bool) -> Lexer {
        self.raw_quotes = on;
        self
    }

    /// Keeps escape characters in the output (BuildKit's `RawEscapes`).
    pub fn with_raw_escapes(mut self, on: bool) -> Lexer {
        self.raw_escapes = on;
        self
    }

    /// Treats quotes as ordinary characters, as BuildKit does for heredoc bodies (`SkipProcessQuotes`).
    pub fn with_skip_process_quotes(mut self, on: bool) -> Lexer {
        self.skip_process_quotes = on;
        self
    }

    /// Leaves references to unset variables as written instead of expanding them (`SkipUnsetEnv`).
    pub fn with_skip_unset_env(mut self, on: bool) -> Lexer {
        self.skip_unset_env = on;
        self
    }

    /// ProcessWord: expands variables, removes quotes and escapes, returns one string (whitespace kept).
    pub fn process_word(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, ExpandError> {
        Ok(self.expand(word, env)?.result)
    }

    /// Like process_word, also returns the names of the variables that were referenced (ProcessWordWithMatches) — found or not.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(String, BTreeSet<String>), ExpandError> {
        let expansion = self.expand(word, env)?;
        Ok((expansion.result, expansion.referenced))
    }

    /// ProcessWords: expands and splits into words on unquoted whitespace (used by EXPOSE etc.).
    ///
    /// Whitespace that comes from quotes or escapes does not split; whitespace in a variable's
    /// value does. As in BuildKit, empty words are dropped, so `""` alone yields no word.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, ExpandError> {
        Ok(self.expand(word, env)?.words)
    }

    fn expand(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Expansion, ExpandError> {
        let mut reader = Reader {
            lexer: self,
            // Go's text/scanner, which BuildKit reads words with, skips a leading BOM.
            src: word
                .strip_prefix('\u{feff}')
                .unwrap_or(word)
                .chars()
                .collect(),
            pos: 0,
            env,
            referenced: BTreeSet::new(),
            depth: 0,
        };
        let (result, words) = reader.until(None, self.raw_escapes)?;
        Ok(Expansion {
            result,
            words: words.finish(),
            referenced: reader.referenced,
        })
    }
}

/// The words of ProcessWords, built alongside the single-string result.
#[derive(Default)]
struct Words {
    current: String,
    done: Vec<String>,
}

impl Words {
    /// A character that splits words if it is whitespace (text from `$` expansions, unquoted text).
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if !self.current.is_empty() {
                self.done.push(std::mem::take(&mut self.current));
            }
        } else {
            self.current.push(c);
        }
    }

    /// A character that never splits (quoted or escaped).
    fn add_raw_char(&mut self, c: char) {
        self.current.push(c);
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_str(&mut self, s: &str) {
        self.current.push_str(s);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// One pass over one word (BuildKit's shellWord).
struct Reader<'a> {
    lexer: &'a Lexer,
    src: Vec<char>,
    pos: usize,
    env: &'a dyn Fn(&str) -> Option<String>,
    referenced: BTreeSet<String>,
    depth: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<char> {
        self.src.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_eof(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// processStopOn: reads up to `stop` (consumed) or the end of the word; with a `stop`,
    /// reaching the end is an error the caller turns into the right message.
    fn until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Words), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    words.add_str(&value);
                    result.push_str(&value);
                }
                '\'' if quotes => {
                    let value = self.single_quoted()?;
                    words.add_raw_str(&value);
                    result.push_str(&value);
                }
                '"' if quotes => {
                    let value = self.double_quoted(raw_escapes)?;
                    words.add_raw_str(&value);
                    result.push_str(&value);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.lexer.escape {
                        if raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            // Placeholder: every caller replaces an error at the end of the word.
            Some(_) => Err(ExpandError::MissingBrace {
                reference: String::new(),
            }),
            None => Ok((result, words)),
        }
    }

    /// `'…'`: everything literal, no escapes.
    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        self.pos += 1;
        if self.lexer.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ExpandError::UnterminatedQuote { quote: '\'' }),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    /// `"…"`: `$` expands; the escape character escapes `"`, `$` and itself, and is kept otherwise.
    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, ExpandError> {
        let mut result = String::new();
        self.pos += 1;
        if self.lexer.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ExpandError::UnterminatedQuote { quote: '"' }),
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.lexer.escape {
                        if raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // Dropped; the missing closing quote is reported next.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lexer.escape => {
                                ch = c;
                                self.pos += 1;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// processName: a name (letters, digits, `_`), a run of digits, or one special parameter.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_name_digit(c) {
                while let Some(d) = self.peek().filter(|&d| is_name_digit(d)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(c) {
                self.pos += 1;
                return c.to_string();
            }
            if !(is_name_letter(c) || is_name_digit(c) || c == '_') {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn lookup(&mut self, name: &str) -> (String, bool) {
        let value = (self.env)(name);
        self.referenced.insert(name.to_string());
        let set = value.is_some();
        (value.unwrap_or_default(), set)
    }

    /// The reference starting at `start` (its `$`), up to its matching `}` if any, for messages.
    fn reference(&self, start: usize) -> String {
        let mut depth = 0usize;
        let mut end = self.src.len();
        for (i, &c) in self.src.iter().enumerate().skip(start + 2) {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        excerpt(&self.src[start.min(end)..end])
    }

    fn missing_brace(&self, start: usize) -> ExpandError {
        ExpandError::MissingBrace {
            reference: excerpt(&self.src[start.min(self.src.len())..]),
        }
    }

    /// Reads a modifier's word up to `stop`; an error at the end of the word becomes `at_end`.
    fn modifier_word(
        &mut self,
        stop: char,
        raw_escapes: bool,
        at_end: impl FnOnce(&Self) -> ExpandError,
    ) -> Result<String, ExpandError> {
        match self.until(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(ExpandError::TooDeep) => Err(ExpandError::TooDeep),
            Err(_) if self.at_eof() => Err(at_end(self)),
            Err(e) => Err(e),
        }
    }

    /// processDollar: `$NAME`, `${NAME}`, `${NAME<modifier>…}`; a `$` without a name stays.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        let start = self.pos;
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            let (value, set) = self.lookup(&name);
            if !set && self.lexer.skip_unset_env {
                return Ok(format!("${name}"));
            }
            return Ok(value);
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(self.missing_brace(start)),
            Some('{' | '}' | ':') => {
                return Err(ExpandError::BadSubstitution {
                    reference: self.reference(start),
                })
            }
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ExpandError::TooDeep);
        }
        self.depth += 1;
        let result = self.braced(start);
        self.depth -= 1;
        result
    }

    /// The rest of `${`, after the `${` itself.
    fn braced(&mut self, start: usize) -> Result<String, ExpandError> {
        let name = self.name();
        let Some(ch) = self.next() else {
            return Err(self.missing_brace(start));
        };
        let unsupported = |reader: &Self, modifier: String| ExpandError::UnsupportedModifier {
            modifier,
            reference: reader.reference(start),
        };
        match ch {
            '}' => {
                let (value, set) = self.lookup(&name);
                if !set && self.lexer.skip_unset_env {
                    return Ok(format!("${{{name}}}"));
                }
                Ok(value)
            }
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let (op, null_is_unset) = if ch == ':' {
                    match self.next() {
                        None => return Err(self.missing_brace(start)),
                        Some(op @ ('+' | '-' | '?' | '#' | '%')) => (op, true),
                        Some(other) => return Err(unsupported(self, format!(":{other}"))),
                    }
                } else {
                    (ch, false)
                };
                let raw_escapes = op == '#' || op == '%';
                let word = self.modifier_word('}', raw_escapes, |r| r.missing_brace(start))?;
                let (value, set) = self.lookup(&name);
                if !set && self.lexer.skip_unset_env {
                    let colon = if null_is_unset { ":" } else { "" };
                    return Ok(format!("${{{name}{colon}{op}{word}}}"));
                }
                let empty = !set || (null_is_unset && value.is_empty());
                match op {
                    '-' => Ok(if empty { word } else { value }),
                    '+' => Ok(if empty { String::new() } else { word }),
                    '?' if empty => {
                        let message = if !word.is_empty() {
                            word
                        } else if !set {
                            "is not allowed to be unset".to_string()
                        } else {
                            "is not allowed to be empty".to_string()
                        };
                        Err(ExpandError::Required { name, message })
                    }
                    '?' => Ok(value),
                    _ => {
                        // `%`/`#` remove the shortest match, `%%`/`##` the longest.
                        let (pattern, greedy) = match word.strip_prefix(op) {
                            Some(rest) => (rest, true),
                            None => (word.as_str(), false),
                        };
                        if op == '%' {
                            trim_suffix(pattern, &value, greedy, self.lexer.escape)
                        } else {
                            trim_prefix(pattern, &value, greedy, self.lexer.escape)
                        }
                    }
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = self.modifier_word('/', true, |r| ExpandError::MissingSlash {
                    reference: excerpt(&r.src[start..]),
                })?;
                let replacement = self.modifier_word('}', true, |r| r.missing_brace(start))?;
                let (value, set) = self.lookup(&name);
                if !set && self.lexer.skip_unset_env {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                replace(&value, &pattern, &replacement, all, self.lexer.escape)
            }
            other => Err(unsupported(self, other.to_string())),
        }
    }
}

fn excerpt(chars: &[char]) -> String {
    if chars.len() <= MAX_REFERENCE_CHARS {
        chars.iter().collect()
    } else {
        let mut s: String = chars[..MAX_REFERENCE_CHARS].iter().collect();
        s.push('…');
        s
    }
}

/// Go's `unicode.IsDigit`, approximately for non-ASCII characters.
fn is_name_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric() && !c.is_alphabetic())
}

/// Go's `unicode.IsLetter`, approximately for non-ASCII characters.
fn is_name_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || (!c.is_ascii() && c.is_alphabetic() && !c.is_numeric())
}

/// POSIX special parameters (`$@`, `$#`, …), which are names of one character.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// One element of a glob pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Glob {
    /// `*`: any run of characters other than newline (Go's `.` does not match `\n`).
    Star,
    /// `?`: one character other than newline.
    Any,
    /// A literal character.
    Lit(char),
}

/// convertShellPatternToRegex: `*`, `?`, and escapes of `*`, `?` and the escape character; an
/// escape before `}` or `/` is dropped; everything else (`[`, `.`, …) is literal.
fn compile_glob(pattern: &[char], escape: char) -> Result<Vec<Glob>, String> {
    let mut out = Vec::with_capacity(pattern.len());
    // Read with Go's text/scanner too, which skips a leading BOM.
    let mut i = usize::from(pattern.first() == Some(&'\u{feff}'));
    while i < pattern.len() {
        let c = pattern[i];
        i += 1;
        match c {
            '*' => out.push(Glob::Star),
            '?' => out.push(Glob::Any),
            _ if c == escape => match pattern.get(i) {
                Some('}' | '/') => {}
                Some(&next) if next == '*' || next == '?' || next == escape => {
                    out.push(Glob::Lit(next));
                    i += 1;
                }
                Some(&next) => {
                    return Err(format!(
                        "invalid escape '{escape}{next}' (only {escape}*, {escape}? and {escape}{escape} can be escaped)"
                    ))
                }
                None => return Err(format!("trailing escape character '{escape}'")),
            },
            _ => out.push(Glob::Lit(c)),
        }
    }
    Ok(out)
}

/// For each start position in `text`, where the leftmost-first match of `glob` starting there
/// ends (with `*` greedy or lazy), as Go's backtracking-equivalent regexp semantics define it.
///
/// Dynamic programming over (pattern element, position), one row per element, so it is
/// O(pattern × text) time and O(text) memory, with no recursion.
fn match_ends(glob: &[Glob], text: &[char], greedy: bool) -> Vec<Option<usize>> {
    let n = text.len();
    // Past the last element, a match ends where it stands.
    let mut after: Vec<Option<usize>> = (0..=n).map(Some).collect();
    let mut row: Vec<Option<usize>> = vec![None; n + 1];
    for element in glob.iter().rev() {
        for i in (0..=n).rev() {
            let c = text.get(i).copied();
            row[i] = match *element {
                Glob::Lit(l) if c == Some(l) => after[i + 1],
                Glob::Lit(_) => None,
                Glob::Any if c.is_some_and(|c| c != '\n') => after[i + 1],
                Glob::Any => None,
                Glob::Star => {
                    let more = if c.is_some_and(|c| c != '\n') {
                        row[i + 1]
                    } else {
                        None
                    };
                    if greedy {
                        more.or(after[i])
                    } else {
                        after[i].or(more)
                    }
                }
            };
        }
        std::mem::swap(&mut row, &mut after);
    }
    after
}

fn invalid_pattern(pattern: &str) -> impl FnOnce(String) -> ExpandError + '_ {
    move |reason| ExpandError::InvalidPattern {
        pattern: pattern.to_string(),
        reason,
    }
}

/// `${v#p}` / `${v##p}`: removes the shortest (longest) prefix matching `pattern`.
fn trim_prefix(
    pattern: &str,
    value: &str,
    greedy: bool,
    escape: char,
) -> Result<String, ExpandError> {
    let chars: Vec<char> = pattern.chars().collect();
    let glob = compile_glob(&chars, escape).map_err(invalid_pattern(pattern))?;
    let text: Vec<char> = value.chars().collect();
    Ok(match match_ends(&glob, &text, greedy)[0] {
        Some(end) => text[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// `${v%p}` / `${v%%p}`: like BuildKit, reverses pattern (keeping escape pairs) and value and
/// removes a prefix.
fn trim_suffix(
    pattern: &str,
    value: &str,
    greedy: bool,
    escape: char,
) -> Result<String, ExpandError> {
    let chars: Vec<char> = pattern.chars().collect();
    let reversed = reverse_pattern(&chars, escape);
    let glob = compile_glob(&reversed, escape).map_err(invalid_pattern(pattern))?;
    let text: Vec<char> = value.chars().rev().collect();
    Ok(match match_ends(&glob, &text, greedy)[0] {
        Some(end) => text[end..].iter().rev().collect(),
        None => value.to_string(),
    })
}

/// reversePattern: reverses a pattern but keeps each escape before the character it escapes.
fn reverse_pattern(pattern: &[char], escape: char) -> Vec<char> {
    let mut units: Vec<&[char]> = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        let width = if pattern[i] == escape && i + 1 < pattern.len() {
            2
        } else {
            1
        };
        units.push(&pattern[i..i + width]);
        i += width;
    }
    units.into_iter().rev().flatten().copied().collect()
}

/// `${v/p/r}` / `${v//p/r}`: replaces the first (every) leftmost-longest match of `pattern`.
///
/// Replace-all follows Go's `Regexp.ReplaceAllString`, including its handling of empty matches
/// and its `$` template syntax in the replacement (`$0` is the match, `$$` a dollar sign).
fn replace(
    value: &str,
    pattern: &str,
    replacement: &str,
    all: bool,
    escape: char,
) -> Result<String, ExpandError> {
    let chars: Vec<char> = pattern.chars().collect();
    let glob = compile_glob(&chars, escape).map_err(invalid_pattern(pattern))?;
    let text: Vec<char> = value.chars().collect();
    let ends = match_ends(&glob, &text, true);
    let find = |from: usize| (from..=text.len()).find_map(|s| ends[s].map(|e| (s, e)));
    let slice = |a: usize, b: usize| text[a..b].iter().collect::<String>();

    if !all {
        return Ok(match find(0) {
            Some((s, e)) => format!("{}{replacement}{}", slice(0, s), slice(e, text.len())),
            None => value.to_string(),
        });
    }

    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((s, e)) = find(search) else { break };
        out.push_str(&slice(last_end, s));
        // No replacement for an empty match right after the previous match.
        if e > last_end || s == 0 {
            expand_template(&mut out, replacement, &slice(s, e));
        }
        last_end = e;
        let width = usize::from(search < text.len());
        search = if search + width > e {
            search + width
        } else if search + 1 > e {
            search + 1
        } else {
            e
        };
    }
    out.push_str(&slice(last_end, text.len()));
    Ok(out)
}

/// Go's `Regexp.Expand` for a pattern without groups: `$0`/`${0}` is the match, `$$` is `$`,
/// other names and numbers are empty, a malformed `$` is literal.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (body, brace) = match rest.strip_prefix('{') {
            Some(body) => (body, true),
            None => (rest, false),
        };
        let len = body
            .char_indices()
            .find(|&(_, c)| !(is_name_letter(c) || is_name_digit(c) || c == '_'))
            .map_or(body.len(), |(i, _)| i);
        let after = &body[len..];
        let after = match (len, brace) {
            (0, _) => None,
            (_, true) => after.strip_prefix('}'),
            (_, false) => Some(after),
        };
        match after {
            Some(after) => {
                if &body[..len] == "0" {
                    out.push_str(matched);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    fn word(lexer: &Lexer, input: &str, pairs: &[(&str, &str)]) -> Result<String, ExpandError> {
        lexer.process_word(input, &env_of(pairs))
    }

    fn bs() -> Lexer {
        Lexer::new('\\')
    }

    fn bt() -> Lexer {
        Lexer::new('`')
    }

    /// BuildKit's frontend/dockerfile/shell/envVarTest (Unix rows), in its own format:
    /// `platform|input|expected`, `error` meaning any error; both sides are trimmed.
    const ENV_VAR_TEST: &str = r###"
A|hello                    |     hello
A|he'll'o                  |     hello
A|he'llo                   |     error
A|he\'llo                  |     he'llo
A|he\\'llo                 |     error
A|abc\tdef                 |     abctdef
A|"abc\tdef"               |     abc\tdef
A|"abc\\tdef"              |     abc\tdef
A|'abc\tdef'               |     abc\tdef
A|hello\                   |     hello
A|hello\\                  |     hello\
A|"hello                   |     error
A|"hello\"                 |     error
A|"hel'lo"                 |     hel'lo
A|'hello                   |     error
A|'hello\'                 |     hello\
A|'hello\there'            |     hello\there
A|'hello\\there'           |     hello\\there
A|"''"                     |     ''
A|$.                       |     $.
A|he$1x                    |     hex
A|he$.x                    |     he$.x
# Next one is different on Windows as $pwd==$PWD
U|he$pwd.                  |     he.
W|he$pwd.                  |     he/home.
A|he$PWD                   |     he/home
A|he\$PWD                  |     he$PWD
A|he\\$PWD                 |     he\/home
A|"he\$PWD"                |     he$PWD
A|"he\\$PWD"               |     he\/home
A|\${}                     |     ${}
A|\${}aaa                  |     ${}aaa
A|he\${}                   |     he${}
A|he\${}xx                 |     he${}xx
A|${}                      |     error
A|${}aaa                   |     error
A|he${}                    |     error
A|he${}xx                  |     error
A|he${hi}                  |     he
A|he${hi}xx                |     hexx
A|he${PWD}                 |     he/home
A|he${.}                   |     error
A|he${XXX:-000}xx          |     he000xx
A|he${PWD:-000}xx          |     he/homexx
A|he${XXX:-$PWD}xx         |     he/homexx
A|he${XXX:-${PWD:-yyy}}xx  |     he/homexx
A|he${XXX:-${YYY:-yyy}}xx  |     heyyyxx
A|he${XXX:YYY}             |     error
A|he${XXX?}                |     error
A|he${XXX:?}               |     error
A|he${PWD?}                |     he/home
A|he${PWD:?}               |     he/home
A|he${NULL?}               |     he
A|he${NULL:?}              |     error
A|he${XXX:+${PWD}}xx       |     hexx
A|he${PWD:+${XXX}}xx       |     hexx
A|he${PWD:+${SHELL}}xx     |     hebashxx
A|he${XXX:+000}xx          |     hexx
A|he${PWD:+000}xx          |     he000xx
A|'he${XX}'                |     he${XX}
A|"he${PWD}"               |     he/home
A|"he'$PWD'"               |     he'/home'
A|"$PWD"                   |     /home
A|'$PWD'                   |     $PWD
A|'\$PWD'                  |     \$PWD
A|'"hello"'                |     "hello"
A|he\$PWD                  |     he$PWD
A|"he\$PWD"                |     he$PWD
A|'he\$PWD'                |     he\$PWD
A|he${PWD                  |     error
A|he${PWD:=000}xx          |     error
A|he${PWD:+${PWD}:}xx      |     he/home:xx
A|he${XXX:-\$PWD:}xx       |     he$PWD:xx
A|he${XXX:-\${PWD}z}xx     |     he${PWDz}xx
A|안녕하세요                 |     안녕하세요
A|안'녕'하세요               |     안녕하세요
A|안'녕하세요                |     error
A|안녕\'하세요               |     안녕'하세요
A|안\\'녕하세요              |     error
A|안녕\t하세요               |     안녕t하세요
A|"안녕\t하세요"             |     안녕\t하세요
A|'안녕\t하세요              |     error
A|안녕하세요\                |     안녕하세요
A|안녕하세요\\               |     안녕하세요\
A|"안녕하세요                |     error
A|"안녕하세요\"              |     error
A|"안녕'하세요"              |     안녕'하세요
A|'안녕하세요                |     error
A|'안녕하세요\'              |     안녕하세요\
A|안녕$1x                    |     안녕x
A|안녕$.x                    |     안녕$.x
# Next one is different on Windows as $pwd==$PWD
U|안녕$pwd.                  |     안녕.
W|안녕$pwd.                  |     안녕/home.
A|안녕$PWD                   |     안녕/home
A|안녕\$PWD                  |     안녕$PWD
A|안녕\\$PWD                 |     안녕\/home
A|안녕\${}                   |     안녕${}
A|안녕\${}xx                 |     안녕${}xx
A|안녕${}                    |     error
A|안녕${}xx                  |     error
A|안녕${hi}                  |     안녕
A|안녕${hi}xx                |     안녕xx
A|안녕${PWD}                 |     안녕/home
A|안녕${.}                   |     error
A|안녕${XXX:-000}xx          |     안녕000xx
A|안녕${PWD:-000}xx          |     안녕/homexx
A|안녕${XXX:-$PWD}xx         |     안녕/homexx
A|안녕${XXX:-${PWD:-yyy}}xx  |     안녕/homexx
A|안녕${XXX:-${YYY:-yyy}}xx  |     안녕yyyxx
A|안녕${XXX:YYY}             |     error
A|안녕${XXX:+${PWD}}xx       |     안녕xx
A|안녕${PWD:+${XXX}}xx       |     안녕xx
A|안녕${PWD:+${SHELL}}xx     |     안녕bashxx
A|안녕${XXX:+000}xx          |     안녕xx
A|안녕${PWD:+000}xx          |     안녕000xx
A|'안녕${XX}'                |     안녕${XX}
A|"안녕${PWD}"               |     안녕/home
A|"안녕'$PWD'"               |     안녕'/home'
A|'"안녕"'                   |     "안녕"
A|안녕\$PWD                  |     안녕$PWD
A|"안녕\$PWD"                |     안녕$PWD
A|'안녕\$PWD'                |     안녕\$PWD
A|안녕${PWD                  |     error
A|안녕${PWD:=000}xx          |     error
A|안녕${PWD:+${PWD}:}xx      |     안녕/home:xx
A|안녕${XXX:-\$PWD:}xx       |     안녕$PWD:xx
A|안녕${XXX:-\${PWD}z}xx     |     안녕${PWDz}xx
A|$KOREAN                    |     한국어
A|안녕$KOREAN                |     안녕한국어
A|${{aaa}                   |     error
A|${aaa}}                   |     }
A|${aaa                     |     error
A|${{aaa:-bbb}              |     error
A|${aaa:-bbb}}              |     bbb}
A|${aaa:-bbb                |     error
A|${aaa:-bbb}               |     bbb
A|${aaa:-${bbb:-ccc}}       |     ccc
A|${aaa:-bbb ${foo}         |     error
A|${aaa:-bbb {foo}          |     bbb {foo
A|${:}                      |     error
A|${:-bbb}                  |     error
A|${:+bbb}                  |     error

# Positional parameters won't be set:
A|$1                        |
A|${1}                      |
A|${1}a                     |     a
A|${99}                     |
A|${99}a                    |     a

# Special parameters won't be set in the Dockerfile:
A|$@                        |
A|${@}                      |
A|${@}a                     |     a
A|$*                        |
A|${*}                      |
A|${*}a                     |     a
A|$#                        |
A|${#}                      |
A|${#}a                     |     a
A|$?                        |
A|${?}                      |
A|${?}a                     |     a
A|$-                        |
A|${-}                      |
A|${-}a                     |     a
A|$$                        |
A|${$}                      |
A|${$}a                     |     a
A|$!                        |
A|${!}                      |
A|${!}a                     |     a
A|$0                        |
A|${0}                      |
A|${0}a                     |     a
"###;

    #[test]
    fn buildkit_env_var_table() {
        let lexer = bs();
        let env = env_of(&[
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ]);
        let mut checked = 0;
        for (n, line) in ENV_VAR_TEST.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.trim().split('|').collect();
            assert_eq!(fields.len(), 3, "line {n}: {line:?}");
            let (platform, input, expected) = (fields[0], fields[1].trim(), fields[2].trim());
            if platform == "W" {
                continue;
            }
            let got = lexer.process_word(input, &env);
            if expected == "error" {
                assert!(got.is_err(), "line {n}: {input:?} gave {got:?}");
            } else {
                assert_eq!(got.as_deref(), Ok(expected), "line {n}: {input:?}");
            }
            checked += 1;
        }
        assert!(checked > 150);
    }

    /// One step of BuildKit's wordsTest: set a variable, or split a word.
    enum WordsStep {
        Env(&'static str, &'static str),
        Case(&'static str, &'static [&'static str]),
    }

    /// BuildKit's frontend/dockerfile/shell/wordsTest (`error` meaning any error).
    const WORDS_TEST: &[WordsStep] = {
        use WordsStep::{Case, Env};
        &[
            Case("hello", &["hello"]),
            Case("hello${hi}bye", &["hellobye"]),
            Env("hi", "hi"),
            Case("hello${hi}bye", &["hellohibye"]),
            Env("space", "abc  def"),
            Case("hello${space}bye", &["helloabc", "defbye"]),
            Case("hello\"${space}\"bye", &["helloabc  defbye"]),
            Case("hello \"${space}\"bye", &["hello", "abc  defbye"]),
            Env("leading", "  ab c"),
            Case("hello${leading}def", &["hello", "ab", "cdef"]),
            Case("hello\"${leading}\" def", &["hello  ab c", "def"]),
            Case("hello\"${leading}\"", &["hello  ab c"]),
            Case("hello${leading}", &["hello", "ab", "c"]),
            Env("trailing", "ab c   "),
            Case("hello${trailing}", &["helloab", "c"]),
            Case("hello${trailing}d", &["helloab", "c", "d"]),
            Case("hello\"${trailing}\"d", &["helloab c   d"]),
            Case("hel\"lo${trailing}\"", &["helloab c   "]),
            Case("hello\" there  \"", &["hello there  "]),
            Case("hello there     ", &["hello", "there"]),
            Case("hello\\ there", &["hello there"]),
            Case("hello\" there", &["error"]),
            Case("hello\\\" there", &["hello\"", "there"]),
            Case("hello\"\\\\there\"", &["hello\\there"]),
            Case("hello\"\\there\"", &["hello\\there"]),
            Case("hello'\\\\there'", &["hello\\\\there"]),
            Case("hello'\\there'", &["hello\\there"]),
            Case("hello'$there'", &["hello$there"]),
        ]
    };

    #[test]
    fn buildkit_words_table() {
        let lexer = bs();
        let mut vars: Vec<(&str, &str)> = Vec::new();
        for step in WORDS_TEST {
            match *step {
                WordsStep::Env(k, v) => vars.push((k, v)),
                WordsStep::Case(input, expected) => {
                    let got = lexer
                        .process_words(input, &env_of(&vars))
                        .unwrap_or_else(|_| vec!["error".to_string()]);
                    assert_eq!(got, expected, "{input:?}");
                }
            }
        }
    }

    #[test]
    fn process_words_edges() {
        let lexer = bs();
        let env = env_of(&[("A", "x y"), ("E", ""), ("S", " ")]);
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            // BuildKit drops empty words, quoted or not.
            ("\"\"", &[]),
            ("''", &[]),
            ("a \"\" b", &["a", "b"]),
            ("a\"\"b", &["ab"]),
            ("\" \"", &[" "]),
            ("\\ ", &[" "]),
            ("$A", &["x", "y"]),
            ("\"$A\"", &["x y"]),
            ("'$A'", &["$A"]),
            ("${E}", &[]),
            ("a${S}b", &["a", "b"]),
            ("${X:-p q}", &["p", "q"]),
            ("\"${X:-p q}\"", &["p q"]),
            ("${X:-\"p q\"}", &["p", "q"]),
            ("80/tcp 443", &["80/tcp", "443"]),
            ("a\tb\nc", &["a", "b", "c"]),
            ("a\u{a0}b", &["a", "b"]),
        ];
        for (input, expected) in cases {
            let got = lexer.process_words(input, &env).unwrap();
            assert_eq!(got, *expected, "{input:?}");
        }
        assert!(lexer.process_words("'a", &env).is_err());
    }

    /// (input, env, expected or None for an error, matched names, unmatched names)
    type MatchCase = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Option<&'static str>,
        &'static [&'static str],
        &'static [&'static str],
    );

    /// BuildKit's TestProcessWithMatches.
    const WITH_MATCHES: &[MatchCase] = &[
        ("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
        (
            "x ${UNUSED}",
            &[("DUMMY", "dummy")],
            Some("x "),
            &[],
            &["UNUSED"],
        ),
        ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
        (
            "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("xxx  ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("xxx bbb ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:-}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("xxx"),
            &["FOO"],
            &[],
        ),
        ("${FOO:-}", &[], Some(""), &[], &["FOO"]),
        (
            "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("aaa bbb "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("aaa  "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO?aaa}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("xxx"),
            &["FOO"],
            &[],
        ),
        (
            "${BAR?bbb}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some(""),
            &["BAR"],
            &[],
        ),
        ("${BAZ?ccc}", &[("FOO", "xxx"), ("BAR", "")], None, &[], &[]),
        (
            "${FOO:?aaa}",
            &[("FOO", "xxx"), ("BAR", "")],
            Some("xxx"),
            &["FOO"],
            &[],
        ),
        (
            "${BAR:?bbb}",
            &[("FOO", "xxx"), ("BAR", "")],
            None,
            &[],
            &[],
        ),
        (
            "${BAZ:?ccc}",
            &[("FOO", "xxx"), ("BAR", "")],
            None,
            &[],
            &[],
        ),
        ("${BAZ:?}", &[("FOO", "xxx"), ("BAR", "")], None, &[], &[]),
        ("${FOO=aaa}", &[("FOO", "xxx"), ("BAR", "")], None, &[], &[]),
        (
            "${FOO=:aaa}",
            &[("FOO", "xxx"), ("BAR", "")],
            None,
            &[],
            &[],
        ),
        ("${FOO=}", &[], None, &[], &[]),
        (
            "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
            &[("FOO", "()[]{}^$.*?|\\x")],
            Some("x"),
            &["FOO"],
            &[],
        ),
        (
            "${FOO%%\\**}",
            &[("FOO", "xx**")],
            Some("xx"),
            &["FOO"],
            &[],
        ),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
        ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "x")],
            Some("xyy"),
            &["FOO", "BAR"],
            &[],
        ),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
        ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
        (
            "${ABC:-.}${FOO%x}${ABC:-.}",
            &[("FOO", "xxyy")],
            Some(".xxyy."),
            &["FOO"],
            &["ABC"],
        ),
        (
            "${FOO%%\\**\\*}",
            &[("FOO", "a***yy*")],
            Some("a"),
            &["FOO"],
            &[],
        ),
        ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO%%$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
            Some("/foo.*/*.txt - /foo..*.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            Some("/tmp/bar.txt - /bar.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "/a/foo/b/c.txt"),
                ("NEEDLE", "/?/"),
                ("REPLACEMENT", "/"),
            ],
            Some("/foo/b/c.txt - /foo/c.txt"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "http://google.de"),
                ("NEEDLE", "http://"),
                ("REPLACEMENT", "https://"),
            ],
            Some("https://google.de"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            "${FOO//\\//\\/}",
            &[("FOO", "/tmp/foo.txt")],
            Some("\\/tmp\\/foo.txt"),
            &["FOO"],
            &[],
        ),
        (
            "${FOO/$BAR/ww}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("wwxxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO///}", &[], Some(""), &[], &["FOO"]),
    ];

    #[test]
    fn buildkit_process_with_matches() {
        let lexer = bs();
        for &(input, vars, expected, matched, unmatched) in WITH_MATCHES {
            let env = env_of(vars);
            let got = lexer.process_word_with_matches(input, &env);
            let Some(expected) = expected else {
                assert!(got.is_err(), "{input:?} gave {got:?}");
                continue;
            };
            let (result, referenced) = got.unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(result, expected, "{input:?}");
            let want: BTreeSet<String> = matched
                .iter()
                .chain(unmatched)
                .map(|s| s.to_string())
                .collect();
            assert_eq!(referenced, want, "{input:?}");
            for name in matched {
                assert!(env(name).is_some(), "{input:?}: {name}");
            }
            for name in unmatched {
                assert!(env(name).is_none(), "{input:?}: {name}");
            }
        }
    }

    #[test]
    fn buildkit_mandatory_env_vars() {
        let lexer = bs();
        let set = [("VAR", "plain"), ("ARG", "x")];
        let empty = [("VAR", ""), ("ARG", "x")];
        let unset = [("ARG", "x")];
        let no_empty = "${VAR:?message here$ARG}";
        let no_unset = "${VAR?message here$ARG}";
        let required = Err(ExpandError::Required {
            name: "VAR".into(),
            message: "message herex".into(),
        });

        assert_eq!(word(&lexer, no_empty, &set).as_deref(), Ok("plain"));
        assert_eq!(word(&lexer, no_empty, &empty), required);
        assert_eq!(word(&lexer, no_empty, &unset), required);
        assert_eq!(word(&lexer, no_unset, &set).as_deref(), Ok("plain"));
        assert_eq!(word(&lexer, no_unset, &empty).as_deref(), Ok(""));
        assert_eq!(word(&lexer, no_unset, &unset), required);

        let msg =
            |input: &str, vars: &[(&str, &str)]| word(&lexer, input, vars).unwrap_err().to_string();
        assert_eq!(msg("${A?}", &[]), "A: is not allowed to be unset");
        assert_eq!(msg("${A:?}", &[]), "A: is not allowed to be unset");
        assert_eq!(msg("${A:?}", &[("A", "")]), "A: is not allowed to be empty");
        assert_eq!(msg("${A:?set A first}", &[("A", "")]), "A: set A first");
        assert_eq!(msg("${A?'needs  A'}", &[]), "A: needs  A");
    }

    #[test]
    fn buildkit_platform_example() {
        let lexer = bs();
        let release = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
        let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let vars: Vec<_> = base.iter().chain(extra).copied().collect();
            word(&lexer, release, &vars).unwrap()
        };
        assert_eq!(
            with(&[("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]),
            "something-v1.2.3.linux-arm-v7.tar.gz"
        );
        assert_eq!(
            with(&[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]),
            "something-v1.2.3.linux-arm64.tar.gz"
        );
        assert_eq!(
            with(&[("TARGETARCH", "arm64")]),
            "something-v1.2.3.linux-arm64.tar.gz"
        );
    }

    #[test]
    fn forms_and_modifiers() {
        let lexer = bs();
        let vars = [
            ("V", "value"),
            ("E", ""),
            ("P", "/usr/local/lib/libfoo.so.1.2"),
            ("W", "a b"),
            ("_x1", "under"),
            ("é", "accent"),
        ];
        let cases: &[(&str, &str)] = &[
            ("$V", "value"),
            ("${V}", "value"),
            ("$V.x", "value.x"),
            ("${V}x", "valuex"),
            ("$Vx", ""),
            ("$_x1", "under"),
            ("${_x1}", "under"),
            ("$é", "accent"),
            ("$", "$"),
            ("a$", "a$"),
            ("$ a", "$ a"),
            ("$/", "$/"),
            ("$\"V\"", "$V"),
            ("$'V'", "$V"),
            ("$12x", "x"),
            ("${12}x", "x"),
            ("${V:-d}", "value"),
            ("${E:-d}", "d"),
            ("${U:-d}", "d"),
            ("${V-d}", "value"),
            ("${E-d}", ""),
            ("${U-d}", "d"),
            ("${V:+alt}", "alt"),
            ("${E:+alt}", ""),
            ("${U:+alt}", ""),
            ("${V+alt}", "alt"),
            ("${E+alt}", "alt"),
            ("${U+alt}", ""),
            ("${V?}", "value"),
            ("${E?}", ""),
            ("${V:?}", "value"),
            ("${U:-$V}", "value"),
            ("${U:-${E:-${V}}}", "value"),
            ("${U:-\"q}\"}", "q}"),
            ("${U:-'}'}", "}"),
            ("${U:-\\}}", "}"),
            ("${U:-a b}", "a b"),
            ("${U:-$W}", "a b"),
            ("${P#*/}", "usr/local/lib/libfoo.so.1.2"),
            ("${P##*/}", "libfoo.so.1.2"),
            ("${P%/*}", "/usr/local/lib"),
            ("${P%%/*}", ""),
            ("${P%.*}", "/usr/local/lib/libfoo.so.1"),
            ("${P%%.*}", "/usr/local/lib/libfoo"),
            ("${P#/usr}", "/local/lib/libfoo.so.1.2"),
            ("${P#nomatch}", "/usr/local/lib/libfoo.so.1.2"),
            ("${P:#/usr}", "/local/lib/libfoo.so.1.2"),
            ("${P:%.2}", "/usr/local/lib/libfoo.so.1"),
            ("${U#x}", ""),
            ("${V#?}", "alue"),
            ("${V##?}", "alue"),
            ("${V%??}", "val"),
            ("${V#\"v\"}", "alue"),
            ("${V##'*'}", ""),
            ("${V#\"#\"}", "value"),
            ("${V/a/A}", "vAlue"),
            ("${V//[a-z]/X}", "value"),
            ("${V/l*/L}", "vaL"),
            ("${V/?/X}", "Xalue"),
            ("${V//?/X}", "XXXXX"),
            ("${V/#v/X}", "value"),
            ("${V/%e/X}", "value"),
            ("${V/e/}", "valu"),
            ("${U/a/b}", ""),
            ("${P//\\//:}", ":usr:local:lib:libfoo.so.1.2"),
            ("${P/\\/usr/$V}", "value/local/lib/libfoo.so.1.2"),
            ("${W/ /_}", "a_b"),
            ("\"${V}\"", "value"),
            ("\"${U:-\"x y\"}\"", "x y"),
            ("\"a${V/v/\"b\"}c\"", "abaluec"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                word(&lexer, input, &vars).as_deref(),
                Ok(*expected),
                "{input:?}"
            );
        }
    }

    #[test]
    fn glob_semantics() {
        let lexer = bs();
        let run = |input: &str, v: &str| word(&lexer, input, &[("V", v)]);
        let cases: &[(&str, &str, &str)] = &[
            // shortest vs longest, prefix and suffix
            ("${V#a*b}", "aXbYb", "Yb"),
            ("${V##a*b}", "aXbYb", ""),
            ("${V%a*b}", "aXbYab", "aXbY"),
            ("${V%%a*b}", "aXbYab", ""),
            ("${V#*}", "abc", "abc"),
            ("${V##*}", "abc", ""),
            ("${V%*}", "abc", "abc"),
            ("${V%%*}", "abc", ""),
            // literal metacharacters: no bracket expressions, no regex syntax
            ("${V#[ab]}", "[ab]c", "c"),
            ("${V#[ab]}", "ac", "ac"),
            ("${V#a.c}", "abcd", "abcd"),
            ("${V#a.c}", "a.cd", "d"),
            ("${V#(x|y)+}", "(x|y)+z", "z"),
            ("${V#^$}", "^$z", "z"),
            // escaped wildcards
            ("${V#\\*}", "*a", "a"),
            ("${V#\\?}", "?a", "a"),
            ("${V#\\\\}", "\\a", "a"),
            ("${V%\\}}", "a}", "a"),
            // Go's `.` does not match a newline
            ("${V#*x}", "a\nx", "a\nx"),
            ("${V#?}", "\nx", "\nx"),
            ("${V#\n}", "\nx", "x"),
            // non-ASCII
            ("${V#?}", "안녕", "녕"),
            ("${V%?}", "안녕", "안"),
            ("${V//녕/x}", "안녕녕", "안xx"),
            // replace: leftmost, then greedy
            ("${V/b*/X}", "abcb", "aX"),
            ("${V//b?/X}", "abcbdb", "aXXb"),
            // replace all with patterns that match empty (Go's ReplaceAllString)
            ("${V//*/X}", "abc", "X"),
            ("${V//*/X}", "", "X"),
            ("${V//$E/X}", "ab", "XaXbX"),
            ("${V/$E/X}", "ab", "Xab"),
            ("${V//*/X}", "a\nb", "X\nX"),
            // Go's replacement template: $0 is the match, $$ a dollar, other names are empty
            ("${V//o/'$0$0'}", "foo", "foooo"),
            ("${V//o/'${0}'}", "foo", "foo"),
            ("${V//o/'$$'}", "foo", "f$$"),
            ("${V//o/'$1x'}", "foo", "f"),
            ("${V//o/'$x.'}", "foo", "f.."),
            ("${V//o/'$.'}", "foo", "f$.$."),
            ("${V//o/'${x'}", "foo", "f${x${x"),
            ("${V//o/'$'}", "foo", "f$$"),
            ("${V/o/'$0'}", "foo", "f$0o"),
        ];
        for (input, value, expected) in cases {
            assert_eq!(
                run(input, value).as_deref(),
                Ok(*expected),
                "{input:?} with V={value:?}"
            );
        }
    }

    #[test]
    fn glob_compile_and_reverse() {
        let compile = |p: &str| compile_glob(&p.chars().collect::<Vec<_>>(), '\\');
        assert_eq!(compile("*"), Ok(vec![Glob::Star]));
        assert_eq!(compile("?"), Ok(vec![Glob::Any]));
        assert_eq!(compile("\\*"), Ok(vec![Glob::Lit('*')]));
        assert_eq!(
            compile("(()[]{\\}^$.\\*\\?|\\\\"),
            Ok("(()[]{}^$.*?|\\".chars().map(Glob::Lit).collect())
        );
        assert_eq!(compile("\\/"), Ok(vec![Glob::Lit('/')]));
        for invalid in ["\\", "\\x", "\\\\\\"] {
            assert!(compile(invalid).is_err(), "{invalid:?}");
        }
        let reverse = |p: &str, e: char| {
            reverse_pattern(&p.chars().collect::<Vec<_>>(), e)
                .into_iter()
                .collect::<String>()
        };
        assert_eq!(reverse("a\\*c", '\\'), "c\\*a");
        assert_eq!(reverse("\\\\\\ab", '\\'), "b\\a\\\\");
        assert_eq!(reverse("ab\\", '\\'), "\\ba");
        assert_eq!(reverse("👽\\🚀🖖", '\\'), "🖖\\🚀👽");
        assert_eq!(reverse("\\\\b", '\\'), "b\\\\");
        assert_eq!(reverse("a`*c", '`'), "c`*a");
        assert_eq!(reverse("", '\\'), "");
    }

    #[test]
    fn backtick_escape() {
        let lexer = bt();
        let vars = [("P", "C:\\Users\\me\\app.exe"), ("V", "value")];
        let cases: &[(&str, &str)] = &[
            ("C:\\Users\\me", "C:\\Users\\me"),
            ("\"C:\\Users\\me\"", "C:\\Users\\me"),
            ("'C:\\Users'", "C:\\Users"),
            ("a`$V", "a$V"),
            ("a`\"b", "a\"b"),
            ("a`'b", "a'b"),
            ("``", "`"),
            ("a`", "a"),
            ("a` b", "a b"),
            ("\"a`\"b\"", "a\"b"),
            ("\"a`$V\"", "a$V"),
            ("\"a``b\"", "a`b"),
            ("\"a`xb\"", "a`xb"),
            ("\"a\\$V\"", "a\\value"),
            ("\\$V", "\\value"),
            ("${P##*\\}", "app.exe"),
            ("${P%\\*}", "C:\\Users\\me"),
            ("${P%`*}", "C:\\Users\\me\\app.exe"),
            ("${P//\\//}", "C:/Users/me/app.exe"),
            ("${P/C:\\/D:\\}", "D:\\Users\\me\\app.exe"),
            ("${U:-`}}", "}"),
            ("${V#`?}", "value"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                word(&lexer, input, &vars).as_deref(),
                Ok(*expected),
                "{input:?}"
            );
        }
        assert_eq!(
            lexer
                .process_words("a` b \"c d\" C:\\x", &env_of(&[]))
                .unwrap(),
            ["a b", "c d", "C:\\x"]
        );
        assert!(word(&lexer, "${V#`x}", &vars).is_err());
        assert_eq!(lexer.escape(), '`');
    }

    #[test]
    fn error_messages() {
        let lexer = bs();
        let vars = [("V", "value")];
        let msg = |input: &str| word(&lexer, input, &vars).unwrap_err().to_string();
        assert_eq!(
            msg("'abc"),
            "unterminated single-quoted string: missing closing '"
        );
        assert_eq!(
            msg("a\"bc"),
            "unterminated double-quoted string: missing closing \""
        );
        assert_eq!(
            msg("x${V"),
            "unterminated variable reference: missing '}' in ${V"
        );
        assert_eq!(
            msg("x${V:-abc"),
            "unterminated variable reference: missing '}' in ${V:-abc"
        );
        assert_eq!(
            msg("${"),
            "unterminated variable reference: missing '}' in ${"
        );
        assert_eq!(
            msg("${V:-'abc"),
            "unterminated variable reference: missing '}' in ${V:-'abc"
        );
        assert_eq!(
            msg("${V//ww}"),
            "unterminated substitution: missing '/' after the pattern in ${V//ww} (expected ${NAME/pattern/replacement})"
        );
        assert_eq!(
            msg("a${}b"),
            "bad substitution: missing variable name in ${}"
        );
        assert_eq!(
            msg("${:-x}"),
            "bad substitution: missing variable name in ${:-x}"
        );
        assert_eq!(
            msg("${v^}"),
            "bad substitution: unsupported modifier '^' in ${v^}"
        );
        assert_eq!(
            msg("${v,,}x"),
            "bad substitution: unsupported modifier ',' in ${v,,}"
        );
        assert_eq!(
            msg("${v:=x}"),
            "bad substitution: unsupported modifier ':=' in ${v:=x}"
        );
        assert_eq!(
            msg("${v:0:2}"),
            "bad substitution: unsupported modifier ':0' in ${v:0:2}"
        );
        assert_eq!(
            msg("${v:}"),
            "bad substitution: unsupported modifier ':}' in ${v:}"
        );
        assert_eq!(
            msg("${#v}"),
            "bad substitution: unsupported modifier 'v' in ${#v}"
        );
        assert_eq!(
            msg("${v:-${x^}}"),
            "bad substitution: unsupported modifier '^' in ${x^}"
        );
        assert_eq!(
            msg("${V#\\x}"),
            "invalid pattern '\\x' in substitution: invalid escape '\\x' (only \\*, \\? and \\\\ can be escaped)"
        );
        assert_eq!(
            msg("${V%'\\'}"),
            "invalid pattern '\\' in substitution: trailing escape character '\\'"
        );
        assert_eq!(
            word(&bt(), "${V#`x}", &vars).unwrap_err().to_string(),
            "invalid pattern '`x' in substitution: invalid escape '`x' (only `*, `? and `` can be escaped)"
        );
        let long = format!("${{v^{}}}", "x".repeat(200));
        assert!(msg(&long).ends_with("xxx…"));
        // an error inside a modifier's word wins when the reference is otherwise complete
        assert_eq!(
            word(&lexer, "${U:-${A?need A}}", &[]),
            Err(ExpandError::Required {
                name: "A".into(),
                message: "need A".into()
            })
        );
        // modifier words are expanded even when not used, as in BuildKit
        assert!(word(&lexer, "${V:-${A?}}", &vars).is_err());
        // unlike bash, BuildKit needs both slashes
        assert!(word(&lexer, "${V/e}", &vars).is_err());
        assert!(word(&lexer, "${V//}", &vars).is_err());
    }

    #[test]
    fn leading_bom_is_dropped_like_go_scanner() {
        let lexer = bs();
        let vars = [("V", "value")];
        assert_eq!(word(&lexer, "\u{feff}a$V", &vars).as_deref(), Ok("avalue"));
        assert_eq!(word(&lexer, "a\u{feff}", &vars).as_deref(), Ok("a\u{feff}"));
        assert_eq!(word(&lexer, "${V#\u{feff}v}", &vars).as_deref(), Ok("alue"));
    }

    #[test]
    fn referenced_names() {
        let lexer = bs();
        let env = env_of(&[("A", "1"), ("B", "")]);
        let refs = |input: &str| {
            lexer
                .process_word_with_matches(input, &env)
                .unwrap()
                .1
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(refs("$A ${B} $C"), ["A", "B", "C"]);
        assert_eq!(refs("${A:-$D} ${C:+${E}}"), ["A", "C", "D", "E"]);
        assert_eq!(refs("'$X' \\$Y \"$Z\""), ["Z"]);
        assert_eq!(refs("$1 $@ ${#}"), ["#", "1", "@"]);
        assert_eq!(refs("${A/$F/$G}"), ["A", "F", "G"]);
        assert_eq!(refs("plain $ text"), Vec::<String>::new());
    }

    #[test]
    fn options() {
        let env = env_of(&[("V", "value")]);
        let raw_quotes = bs().with_raw_quotes(true);
        assert_eq!(
            raw_quotes.process_word("a'b'\"c$V\"", &env).unwrap(),
            "a'b'\"cvalue\""
        );
        let raw_escapes = bs().with_raw_escapes(true);
        assert_eq!(
            raw_escapes
                .process_word("a\\ b\\$V \"\\$V\\x\"", &env)
                .unwrap(),
            "a\\ b\\$V \\$V\\\\x"
        );
        // like BuildKit, a modifier's word is read without raw escapes
        assert_eq!(raw_escapes.process_word("${U:-\\$}", &env).unwrap(), "$");
        let heredoc = bs().with_skip_process_quotes(true);
        assert_eq!(
            heredoc
                .process_word("echo 'it''s' \"$V\" \\$V", &env)
                .unwrap(),
            "echo 'it''s' \"value\" $V"
        );
        assert_eq!(
            heredoc.process_word("'unterminated", &env).unwrap(),
            "'unterminated"
        );
        let skip = bs().with_skip_unset_env(true);
        let cases: &[(&str, &str)] = &[
            ("$V $U", "value $U"),
            ("${U}", "${U}"),
            ("${U:-x}", "${U:-x}"),
            ("${U-$V}", "${U-value}"),
            ("${U?msg}", "${U?msg}"),
            ("${U#\\*}", "${U#\\*}"),
            ("${U//a/b}", "${U/a/b}"),
            ("${V:-x}", "value"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                skip.process_word(input, &env).as_deref(),
                Ok(*expected),
                "{input:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let lexer = bs();
        let env = env_of(&[]);
        let deep = format!("{}x{}", "${A:-".repeat(10_000), "}".repeat(10_000));
        assert_eq!(lexer.process_word(&deep, &env), Err(ExpandError::TooDeep));
        let ok = format!("{}x{}", "${A:-".repeat(100), "}".repeat(100));
        assert_eq!(lexer.process_word(&ok, &env).as_deref(), Ok("x"));
        let quoted = format!("{}x", "\"${A:-".repeat(10_000));
        assert!(lexer.process_word(&quoted, &env).is_err());
    }

    #[test]
    fn large_values_are_linear() {
        let lexer = bs();
        let big = "ab".repeat(50_000);
        let env = env_of(&[("V", &big)]);
        let out = lexer.process_word("${V//a*b?/x}", &env).unwrap();
        assert_eq!(out, "xb");
        let out = lexer.process_word("${V//b/}", &env).unwrap();
        assert_eq!(out.len(), 50_000);
        let out = lexer.process_word("${V%%*a*b}", &env).unwrap();
        assert_eq!(out, "");
    }

    #[test]
    fn never_panics_on_random_input() {
        const ALPHABET: &[u8] = b"${}:-+?#%/\\`'\" \t\n*[]aAb_1.!@^=\xc3\xa9";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let env = |name: &str| match name {
            "a" => Some("a b*c".to_string()),
            "A" => Some(String::new()),
            "b" => Some("\\".to_string()),
            "_1" => Some("$0$$".to_string()),
            _ => None,
        };
        let lexers = [
            bs(),
            bt(),
            bs().with_raw_quotes(true).with_raw_escapes(true),
            bs().with_skip_process_quotes(true)
                .with_skip_unset_env(true),
        ];
        for i in 0..20_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 8 == 0 {
                        (r >> 8) as u8
                    } else {
                        ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                    }
                })
                .collect();
            let input = String::from_utf8_lossy(&bytes);
            let lexer = &lexers[i % lexers.len()];
            let single = lexer.process_word(&input, &env);
            let with = lexer.process_word_with_matches(&input, &env);
            let words = lexer.process_words(&input, &env);
            assert_eq!(single, with.map(|(s, _)| s), "{input:?}");
            assert_eq!(single.is_ok(), words.is_ok(), "{input:?}");
        }
    }
}
