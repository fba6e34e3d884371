//! The Dockerfile parser: text → a plain tree of [`Node`]s, one per instruction, with positions.
//! It knows the syntax (directives, comments, continuations, flags, heredocs) but not what
//! instructions mean; `instructions` builds typed instructions from the nodes.

use crate::diagnostic::{Error, SourceFile, Span, Warning};
use std::sync::Arc;

/// A parsed Dockerfile.
#[derive(Debug)]
pub struct Dockerfile {
    pub file: Arc<SourceFile>,
    pub directives: Directives,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
}

/// Parser directives from the top of the file.
#[derive(Clone, Debug)]
pub struct Directives {
    /// `# syntax=` value (all of it, e.g. `docker/dockerfile:1 // opts`) and its span.
    pub syntax: Option<(String, Span)>,
    /// `# escape=` character (`\` by default, or `` ` ``).
    pub escape: char,
    /// `# check=` value and its span.
    pub check: Option<(String, Span)>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// One instruction as written.
#[derive(Clone, Debug)]
pub struct Node {
    /// Instruction name, lowercased (`from`, `run`, …), whatever it is: unknown names are kept
    /// and rejected by `instructions`, so the error can point at them.
    pub keyword: String,
    pub keyword_span: Span,
    /// `--name=value` / `--name` flags before the arguments, in order.
    pub flags: Vec<Flag>,
    /// The arguments after the flags: continuation lines joined (escape + newline removed,
    /// comment lines inside the continuation dropped), leading/trailing whitespace trimmed.
    pub rest: String,
    /// Where `rest` starts in the file (its end is the end of the instruction's last line;
    /// precisely, just after the last character of `rest`). Continuation escapes and dropped
    /// comment lines inside it are covered too.
    pub rest_span: Span,
    /// Heredoc bodies, in the order their markers appear (RUN, COPY and ADD only; for
    /// `ONBUILD RUN <<EOF` they are on `inner`).
    pub heredocs: Vec<Heredoc>,
    /// The instruction's text as written, continuations joined, as BuildKit's `Original`.
    pub original: String,
    /// The whole instruction: keyword to end of its last line (heredoc bodies included).
    pub span: Span,
    /// 1-based first and last line (heredoc bodies included).
    pub start_line: usize,
    pub end_line: usize,
    /// ONBUILD's inner instruction.
    pub inner: Option<Box<Node>>,
}

/// A `--name[=value]` flag.
#[derive(Clone, Debug, PartialEq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
    pub span: Span,
}

/// A heredoc: `<<EOF`, `<<-EOF` (leading tabs stripped), `<<"EOF"` / `<<'EOF'` (no expansion).
#[derive(Clone, Debug, PartialEq)]
pub struct Heredoc {
    pub name: String,
    /// The body, every line ending with `\n` (as BuildKit keeps it).
    pub content: String,
    /// False when the delimiter was quoted.
    pub expand: bool,
    /// True for `<<-`.
    pub chomp: bool,
    /// The marker word (`<<EOF`, `<<-"EOF"`, `2<<EOF`) in the instruction line.
    pub span: Span,
}

/// Parses a whole Dockerfile.
///
/// Mirrors BuildKit's `parser.Parse`: directives at the top, comments and empty lines skipped,
/// continuation lines joined, flags split off, heredoc bodies read after RUN/COPY/ADD lines.
/// A file without instructions gives an empty node list.
pub fn parse(file: Arc<SourceFile>) -> Result<Dockerfile, Error> {
    let text = file.text.as_str();
    let lines = split_lines(text);
    let mut directives = Directives::default();
    let mut directive_parser = DirectiveParser::default();
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();

    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let mut start = line.start;
        if i == 0 && text[start..line.end].starts_with('\u{feff}') {
            start += '\u{feff}'.len_utf8();
        }
        // BuildKit trims the leading whitespace of an instruction's first line.
        let raw = &text[start..line.end];
        let trimmed = raw.trim_start();
        let tstart = start + (raw.len() - trimmed.len());
        directive_parser.parse_line(&file, trimmed, tstart, &mut directives)?;
        i += 1;
        if is_comment(trimmed) {
            continue;
        }
        let (first, mut continues) = trim_continuation(trimmed, directives.escape);
        if !continues && first.is_empty() {
            continue;
        }

        let start_line = i;
        let mut joined = Joined::new(tstart);
        joined.push(tstart, first);
        let mut first_empty: Option<PhysLine> = None;
        while continues && i < lines.len() {
            let l = lines[i];
            i += 1;
            let content = &text[l.start..l.end];
            if is_comment(content) {
                continue;
            }
            if content.trim_start().is_empty() {
                first_empty.get_or_insert(l);
                continue;
            }
            let (part, c) = trim_continuation(content, directives.escape);
            joined.push(l.start, part);
            continues = c;
        }
        if let Some(l) = first_empty {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {}", joined.text),
                span: Span::new(l.start, l.end),
            });
        }

        let mut node = build_node(&joined, 0, joined.text.len());
        if node.keyword == "onbuild" && !node.rest.is_empty() {
            let (rs, re) = node_rest_range(&joined, 0, joined.text.len());
            let inner = build_node(&joined, rs, re);
            let trigger = inner.keyword.to_uppercase();
            match inner.keyword.as_str() {
                "onbuild" => {
                    return Err(Error::at(
                        &file,
                        inner.keyword_span,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ))
                }
                "from" | "maintainer" => {
                    return Err(Error::at(
                        &file,
                        inner.keyword_span,
                        format!("{trigger} isn't allowed as an ONBUILD trigger"),
                    ))
                }
                _ => {}
            }
            node.inner = Some(Box::new(inner));
        }

        // Heredoc bodies follow the instruction's (joined) line.
        let mut heredocs = Vec::new();
        let target = match &node.inner {
            Some(inner) => inner.as_ref(),
            None => &node,
        };
        if matches!(target.keyword.as_str(), "run" | "copy" | "add")
            && !is_json_array(&target.rest)
            && joined.text.contains("<<")
        {
            let markers = heredocs_from_line(&joined.text).map_err(|(msg, s, e)| {
                Error::at(&file, Span::new(joined.pos(s), joined.end(e)), msg)
            })?;
            for m in markers {
                let span = Span::new(joined.pos(m.start), joined.end(m.end));
                let mut content = String::new();
                let mut terminated = false;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let mut candidate = &text[l.start..l.end];
                    if m.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == m.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(&text[l.start..l.next]);
                }
                if !terminated {
                    return Err(Error::at(&file, span, "unterminated heredoc"));
                }
                if m.chomp {
                    content = chomp_heredoc_content(&content);
                }
                heredocs.push(Heredoc {
                    name: m.name,
                    content,
                    expand: m.expand,
                    chomp: m.chomp,
                    span,
                });
            }
        }

        let last = lines[i - 1];
        let end = last.end.max(node.keyword_span.start);
        node.span = Span::new(node.keyword_span.start, end);
        node.start_line = start_line;
        node.end_line = i;
        if let Some(inner) = node.inner.as_mut() {
            inner.span = Span::new(inner.keyword_span.start, end);
            inner.start_line = start_line;
            inner.end_line = i;
            inner.heredocs = heredocs;
        } else {
            node.heredocs = heredocs;
        }
        nodes.push(node);
    }

    Ok(Dockerfile {
        file,
        directives,
        nodes,
        warnings,
    })
}

/// One physical line: `start..end` is its text without the line ending (BuildKit's
/// `trimNewline` strips every trailing `\r`/`\n`), `next` the start of the following line.
#[derive(Clone, Copy, Debug)]
struct PhysLine {
    start: usize,
    end: usize,
    next: usize,
}

/// Splits like BuildKit's `scanLines`: on `\n`, no empty line after a final `\n`.
fn split_lines(text: &str) -> Vec<PhysLine> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let next = text[start..]
            .find('\n')
            .map(|i| start + i + 1)
            .unwrap_or(text.len());
        let end = start + text[start..next].trim_end_matches(['\r', '\n']).len();
        lines.push(PhysLine { start, end, next });
        start = next;
    }
    lines
}

/// BuildKit's `isComment`: `#` is the first non-whitespace character.
fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// BuildKit's line-continuation regex, `([^E])E[ \t]*$|^E[ \t]*$` for escape `E`, replaced by
/// `$1`: the escape as the last character before trailing blanks and tabs continues the line,
/// unless it is itself escaped. Returns the line without the escape and whether it continues.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let Some(before) = t.strip_suffix(escape) else {
        return (line, false);
    };
    match before.chars().next_back() {
        None => ("", true),
        Some(c) if c == escape => (line, false),
        Some(_) => (before, true),
    }
}

/// Go regexp's `\s` (RE2): `[\t\n\f\r ]`.
fn is_re2_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// BuildKit's `DirectiveParser`: directives are only looked for until the first line that is
/// not one (an instruction, an empty line, a plain comment or an unknown directive).
#[derive(Default)]
struct DirectiveParser {
    done: bool,
    seen_syntax: bool,
    seen_escape: bool,
    seen_check: bool,
}

impl DirectiveParser {
    /// `line` has its leading whitespace and line ending removed and starts at `offset`.
    fn parse_line(
        &mut self,
        file: &Arc<SourceFile>,
        line: &str,
        offset: usize,
        directives: &mut Directives,
    ) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        let Some((name, vs, ve)) = match_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = name.to_ascii_lowercase();
        let seen = match key.as_str() {
            "syntax" => &mut self.seen_syntax,
            "escape" => &mut self.seen_escape,
            "check" => &mut self.seen_check,
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        let line_span = Span::new(offset, offset + line.len());
        if std::mem::replace(seen, true) {
            return Err(Error::at(
                file,
                line_span,
                format!("only one {key} parser directive can be used"),
            ));
        }
        let value = &line[vs..ve];
        let span = Span::new(offset + vs, offset + ve);
        match key.as_str() {
            "syntax" => directives.syntax = Some((value.to_string(), span)),
            "check" => directives.check = Some((value.to_string(), span)),
            _ => {
                directives.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(Error::at(
                            file,
                            span,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

/// Matches BuildKit's `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`; returns the name and the
/// value's byte range in `line`.
fn match_directive(line: &str) -> Option<(&str, usize, usize)> {
    let b = line.as_bytes();
    if b.first() != Some(&b'#') {
        return None;
    }
    let skip_space = |mut i: usize| {
        while i < b.len() && is_re2_space(b[i] as char) {
            i += 1;
        }
        i
    };
    let ns = skip_space(1);
    if ns >= b.len() || !b[ns].is_ascii_alphabetic() {
        return None;
    }
    let mut i = ns;
    while i < b.len() && b[i].is_ascii_alphanumeric() {
        i += 1;
    }
    let name = &line[ns..i];
    let i = skip_space(i);
    if i >= b.len() || b[i] != b'=' {
        return None;
    }
    let vstart = i + 1;
    let r = &line[vstart..];
    let t = r.trim_end_matches(is_re2_space);
    if t.is_empty() {
        // Only blanks after `=`: the lazy `.+?` still takes one character, the last one.
        return (!r.is_empty()).then(|| (name, line.len() - 1, line.len()));
    }
    let lead = t.len() - t.trim_start_matches(is_re2_space).len();
    Some((name, vstart + lead, vstart + t.len()))
}

/// An instruction's text with its continuation lines joined, and where each byte came from.
struct Joined {
    text: String,
    /// (start in `text`, start in the file, length) of each non-empty piece.
    segs: Vec<(usize, usize, usize)>,
    /// File offset used when nothing was joined (a lone escape line).
    fallback: usize,
}

impl Joined {
    fn new(fallback: usize) -> Joined {
        Joined {
            text: String::new(),
            segs: Vec::new(),
            fallback,
        }
    }

    fn push(&mut self, file_start: usize, s: &str) {
        if !s.is_empty() {
            self.segs.push((self.text.len(), file_start, s.len()));
            self.text.push_str(s);
        }
    }

    /// File offset of byte `j` of `text` (`text.len()` maps to the end of the last piece).
    fn pos(&self, j: usize) -> usize {
        match self.segs.partition_point(|s| s.0 <= j) {
            0 => self.fallback,
            k => {
                let (js, fs, len) = self.segs[k - 1];
                fs + (j - js).min(len)
            }
        }
    }

    /// File offset just after byte `j - 1` of `text`: for the exclusive end of a range.
    fn end(&self, j: usize) -> usize {
        if j == 0 {
            self.pos(0)
        } else {
            self.pos(j - 1) + 1
        }
    }
}

/// Go's `reWhitespace`/`tokenWhitespace`: `[\t\v\f\r ]`.
fn is_token_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// The keyword range of `joined.text[from..to]` (BuildKit's `splitCommand`): trimmed, cut at
/// the first run of `[\t\v\f\r ]`. Returns (keyword start, keyword end, args start or None).
fn split_command(joined: &Joined, from: usize, to: usize) -> (usize, usize, Option<usize>) {
    let s = &joined.text[from..to];
    let t = s.trim();
    let ts = from + (s.len() - s.trim_start().len());
    let te = ts + t.len();
    match t.find(is_token_space) {
        None => (ts, te, None),
        Some(k) => {
            let after = &t[k..];
            let args = ts + k + (after.len() - after.trim_start_matches(is_token_space).len());
            (ts, ts + k, Some(args))
        }
    }
}

/// The range of the arguments after the flags of `joined.text[from..to]`, trimmed.
fn node_rest_range(joined: &Joined, from: usize, to: usize) -> (usize, usize) {
    let (_, ke, args) = split_command(joined, from, to);
    let te = from + joined.text[from..to].trim_end().len();
    match args {
        None => (ke.max(te), ke.max(te)),
        Some(a) => {
            let (rel, _) = extract_builder_flags(&joined.text[a..te]);
            let r = &joined.text[a + rel..te];
            let rs = a + rel + (r.len() - r.trim_start().len());
            (rs, te)
        }
    }
}

/// Builds the node for `joined.text[from..to]`; span, lines, heredocs and inner are filled in
/// by the caller.
fn build_node(joined: &Joined, from: usize, to: usize) -> Node {
    let (ks, ke, args) = split_command(joined, from, to);
    let mut flags = Vec::new();
    if let Some(a) = args {
        let te = from + joined.text[from..to].trim_end().len();
        let (_, words) = extract_builder_flags(&joined.text[a..te]);
        for (word, ws, we) in words {
            let body = word.strip_prefix("--").unwrap_or(&word);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            flags.push(Flag {
                name,
                value,
                span: Span::new(joined.pos(a + ws), joined.end(a + we)),
            });
        }
    }
    let (rs, re) = node_rest_range(joined, from, to);
    let rest = joined.text[rs..re].to_string();
    let rest_span = if rest.is_empty() {
        let p = joined.end(re);
        Span::new(p, p)
    } else {
        Span::new(joined.pos(rs), joined.end(re))
    };
    let keyword_span = if ks == ke {
        let p = joined.pos(ks);
        Span::new(p, p)
    } else {
        Span::new(joined.pos(ks), joined.end(ke))
    };
    Node {
        keyword: joined.text[ks..ke].to_lowercase(),
        keyword_span,
        flags,
        rest,
        rest_span,
        heredocs: Vec::new(),
        original: joined.text[from..to].to_string(),
        span: keyword_span,
        start_line: 0,
        end_line: 0,
        inner: None,
    }
}

/// BuildKit's `extractBuilderFlags`: the leading words that start with `--` (quotes and `\`
/// escapes processed inside them), up to the first other word or a lone `--`. Returns where
/// the rest starts in `line` and each flag word with its byte range.
fn extract_builder_flags(line: &str) -> (usize, Vec<(String, usize, usize)>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut p = 0;
    loop {
        let at_end = p == chars.len();
        let (pos, mut ch) = if at_end { (line.len(), '\0') } else { chars[p] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                p += 1;
                continue;
            }
            if ch != '-' || p + 1 == chars.len() || chars[p + 1].1 != '-' {
                return (pos, words);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push((word, word_start, line.len()));
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (pos, words);
                }
                if blank_ok || !word.is_empty() {
                    words.push((std::mem::take(&mut word), word_start, pos));
                }
                word.clear();
                blank_ok = false;
                p += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                p += 1;
                continue;
            }
            if ch == '\\' {
                if p + 1 == chars.len() {
                    p += 1;
                    continue;
                }
                p += 1;
                ch = chars[p].1;
            }
            word.push(ch);
            p += 1;
            continue;
        }
        // In a quote.
        if ch == quote {
            phase = Phase::Word;
            p += 1;
            continue;
        }
        if ch == '\\' {
            if p + 1 == chars.len() {
                phase = Phase::Word;
                p += 1;
                continue;
            }
            p += 1;
            ch = chars[p].1;
        }
        word.push(ch);
        p += 1;
    }
    (line.len(), words)
}

/// BuildKit's `parseJSON` test for the exec form: after leading whitespace a `[`, and the
/// first JSON value is an array (what follows it is not looked at, as with Go's decoder).
fn is_json_array(rest: &str) -> bool {
    let rest = rest.trim_start();
    rest.starts_with('[')
        && matches!(
            serde_json::Deserializer::from_str(rest)
                .into_iter::<serde_json::Value>()
                .next(),
            Some(Ok(serde_json::Value::Array(_)))
        )
}

/// BuildKit's `ChompHeredocContent`: leading tabs removed from every line.
fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// A heredoc marker found in an instruction line.
struct Marker {
    name: String,
    expand: bool,
    chomp: bool,
    /// Byte range of the marker word in the joined line.
    start: usize,
    end: usize,
}

/// BuildKit's `heredocsFromLine`: the line is split into words by the shell lexer (escape `\`,
/// quotes and escapes kept raw, unset variables kept as written); a lexing error means no
/// heredocs. Each word matching `^(\d*)<<(-?)([^<]*)$` is a marker.
fn heredocs_from_line(line: &str) -> Result<Vec<Marker>, (String, usize, usize)> {
    let words = ShellLex::words(line, true, true).unwrap_or_default();
    let mut markers = Vec::new();
    for w in words {
        match parse_heredoc(&w.text) {
            Ok(Some((name, expand, chomp))) => markers.push(Marker {
                name,
                expand,
                chomp,
                start: w.start,
                end: w.end,
            }),
            Ok(None) => {}
            Err(msg) => return Err((msg, w.start, w.end)),
        }
    }
    Ok(markers)
}

/// BuildKit's `ParseHeredoc`: (name, expand, chomp) when `word` is a heredoc marker.
fn parse_heredoc(word: &str) -> Result<Option<(String, bool, bool)>, String> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(r) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match r.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, r),
    };
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let words = ShellLex::words(rest, false, false)?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = ShellLex::words(rest, true, false)?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = quotes(&words[0].text) == quotes(&raw[0].text);
    Ok(Some((words[0].text.clone(), expand, chomp)))
}

/// A word from [`ShellLex`] with its byte range in the lexed text.
#[derive(Debug)]
struct Word {
    text: String,
    start: usize,
    end: usize,
}

/// Words being collected by one `process_stop_on` call.
#[derive(Default)]
struct WordsAcc {
    words: Vec<Word>,
    in_word: bool,
}

/// The word splitting of BuildKit's shell lexer (`shell.Lex.ProcessWords`) with escape `\`, an
/// empty environment and `SkipUnsetEnv`, so every `$var`/`${...}` stays as written. Only used
/// to find heredoc markers; `expand` does the real expansion.
struct ShellLex<'a> {
    src: &'a str,
    pos: usize,
    raw_quotes: bool,
    raw_escapes: bool,
    /// The current word, shared by nested `process_stop_on` calls as in BuildKit.
    buf: String,
    buf_start: usize,
    depth: usize,
}

/// Nesting of `${...}` beyond which the lexer gives up (an error, so no heredocs).
const MAX_SUBSTITUTION_DEPTH: usize = 64;

impl<'a> ShellLex<'a> {
    fn words(src: &'a str, raw_quotes: bool, raw_escapes: bool) -> Result<Vec<Word>, String> {
        let mut lex = ShellLex {
            src,
            pos: 0,
            raw_quotes,
            raw_escapes,
            buf: String::new(),
            buf_start: 0,
            depth: 0,
        };
        lex.process_stop_on(None, raw_escapes)
            .map(|(_, words)| words)
            .map_err(|e| format!("failed to process {src:?}: {e}"))
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn add_char(&mut self, w: &mut WordsAcc, ch: char, at: usize) {
        if ch.is_whitespace() {
            if w.in_word && !self.buf.is_empty() {
                w.words.push(Word {
                    text: std::mem::take(&mut self.buf),
                    start: self.buf_start,
                    end: at,
                });
                w.in_word = false;
            }
        } else {
            self.add_raw_char(w, ch, at);
        }
    }

    fn add_raw_char(&mut self, w: &mut WordsAcc, ch: char, at: usize) {
        if self.buf.is_empty() {
            self.buf_start = at;
        }
        self.buf.push(ch);
        w.in_word = true;
    }

    fn add_string(&mut self, w: &mut WordsAcc, s: &str, at: usize) {
        for ch in s.chars() {
            self.add_char(w, ch, at);
        }
    }

    fn add_raw_string(&mut self, w: &mut WordsAcc, s: &str, at: usize) {
        if self.buf.is_empty() {
            self.buf_start = at;
        }
        self.buf.push_str(s);
        w.in_word = true;
    }

    fn get_words(&mut self, mut w: WordsAcc, at: usize) -> Vec<Word> {
        if !self.buf.is_empty() {
            w.words.push(Word {
                text: std::mem::take(&mut self.buf),
                start: self.buf_start,
                end: at,
            });
        }
        w.words
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<Word>), String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<Word>), String> {
        let mut result = String::new();
        self.buf.clear();
        let mut words = WordsAcc::default();
        while let Some(ch) = self.peek() {
            let at = self.pos;
            if stop == Some(ch) {
                self.next();
                return Ok((result, self.get_words(words, at)));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    self.add_string(&mut words, &tmp, at);
                }
                '\'' => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    self.add_raw_string(&mut words, &tmp, at);
                }
                '"' => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    self.add_raw_string(&mut words, &tmp, at);
                }
                _ => {
                    self.next();
                    let mut ch = ch;
                    if ch == '\\' {
                        if self.raw_escapes {
                            self.add_raw_char(&mut words, ch, at);
                            result.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => ch = c,
                        }
                        self.add_raw_char(&mut words, ch, at);
                    } else {
                        self.add_char(&mut words, ch, at);
                    }
                    result.push(ch);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        let end = self.src.len();
        Ok((result, self.get_words(words, end)))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == '\\' {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some('"' | '$' | '\\') => ch = self.next().unwrap_or_default(),
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.depth += 1;
        let r = if self.depth > MAX_SUBSTITUTION_DEPTH {
            Err("too deeply nested substitution".to_string())
        } else {
            self.process_dollar_inner()
        };
        self.depth -= 1;
        r
    }

    fn process_dollar_inner(&mut self) -> Result<String, String> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            return Ok(format!("${name}"));
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => return Ok(format!("${{{name}}}")),
            ':' => {
                null_is_unset = true;
                let Some(c) = self.next() else {
                    return Err("syntax error: missing '}'".into());
                };
                ch = c;
                chs.push(c);
            }
            '+' | '-' | '?' | '#' | '%' => {}
            '/' => {
                if self.peek() == Some('/') {
                    self.next();
                }
                let (pattern, _) = self.process_stop_on(Some('/'), true).map_err(|e| {
                    if self.peek().is_none() {
                        "syntax error: missing '/' in ${}".to_string()
                    } else {
                        e
                    }
                })?;
                let (replacement, _) = self.stop_on_brace(true)?;
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            _ => return Err(format!("unsupported modifier ({chs}) in substitution")),
        }
        let raw = ch == '#' || ch == '%';
        if null_is_unset && raw {
            return Err(format!("unsupported modifier ({chs}) in substitution"));
        }
        let (word, _) = self.stop_on_brace(raw)?;
        Ok(format!("${{{name}{chs}{word}}}"))
    }

    fn stop_on_brace(&mut self, raw_escapes: bool) -> Result<(String, Vec<Word>), String> {
        self.process_stop_on(Some('}'), raw_escapes).map_err(|e| {
            if self.peek().is_none() {
                "syntax error: missing '}'".to_string()
            } else {
                e
            }
        })
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && go_is_digit(ch) {
                while let Some(c) = self.peek().filter(|&c| go_is_digit(c)) {
                    self.next();
                    name.push(c);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !go_is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

/// Approximates Go's `unicode.IsDigit` (category Nd).
fn go_is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Dockerfile {
        match parse(SourceFile::new("Dockerfile", text)) {
            Ok(df) => df,
            Err(e) => panic!("parse failed for {text:?}: {e}"),
        }
    }

    fn parse_err(text: &str) -> Error {
        match parse(SourceFile::new("Dockerfile", text)) {
            Ok(df) => panic!("expected an error for {text:?}, got {:?}", df.nodes),
            Err(e) => e,
        }
    }

    /// The file text under `span`.
    fn at(df: &Dockerfile, span: Span) -> &str {
        &df.file.text[span.start..span.end]
    }

    fn err_text(e: &Error) -> &str {
        let (f, s) = e.location.as_ref().expect("error has a location");
        &f.text[s.start..s.end]
    }

    /// (keyword, rest) of every node.
    fn summary(df: &Dockerfile) -> Vec<(String, String)> {
        df.nodes
            .iter()
            .map(|n| (n.keyword.clone(), n.rest.clone()))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn directives() {
        struct Case {
            text: &'static str,
            syntax: Option<&'static str>,
            escape: char,
            check: Option<&'static str>,
        }
        let cases = [
            Case {
                text: "# syntax=docker/dockerfile:1\nFROM a\n",
                syntax: Some("docker/dockerfile:1"),
                escape: '\\',
                check: None,
            },
            Case {
                text: "# escape=`\nFROM a\n",
                syntax: None,
                escape: '`',
                check: None,
            },
            Case {
                text: "# check=skip=JSONArgsRecommended;error=true\nFROM a\n",
                syntax: None,
                escape: '\\',
                check: Some("skip=JSONArgsRecommended;error=true"),
            },
            // All three, any case, any spacing, leading whitespace (BuildKit trims it).
            Case {
                text: "#SYNTAX = x/y // opts  \n  #  EScape = `\t\n#check=skip=all\nFROM a\n",
                syntax: Some("x/y // opts"),
                escape: '`',
                check: Some("skip=all"),
            },
            Case {
                text: "#escape=\\\nFROM a\n",
                syntax: None,
                escape: '\\',
                check: None,
            },
            // A plain comment ends the directives (testfiles/escape-after-comment).
            Case {
                text: "# Comment here.\n# escape = `\n\nFROM image\nENV GOPATH \\\n\\go",
                syntax: None,
                escape: '\\',
                check: None,
            },
            // So does an empty line.
            Case {
                text: "# syntax=a\n\n# escape=`\nFROM a\n",
                syntax: Some("a"),
                escape: '\\',
                check: None,
            },
            // An unknown directive is a plain comment and ends them too.
            Case {
                text: "# key = FOO bar\n# escape=`\nFROM a\n",
                syntax: None,
                escape: '\\',
                check: None,
            },
            Case {
                text: "# escape=`\n# key=value\n# syntax=x\nFROM a\n",
                syntax: None,
                escape: '`',
                check: None,
            },
            // Nothing after `=`: not a directive.
            Case {
                text: "# escape=\n# syntax=x\nFROM a\n",
                syntax: None,
                escape: '\\',
                check: None,
            },
            // After an instruction: a comment.
            Case {
                text: "FROM a\n# escape=`\n",
                syntax: None,
                escape: '\\',
                check: None,
            },
            // A BOM before the directives.
            Case {
                text: "\u{feff}# escape=`\nFROM a\n",
                syntax: None,
                escape: '`',
                check: None,
            },
        ];
        for c in cases {
            let df = parse_str(c.text);
            let d = &df.directives;
            assert_eq!(
                d.syntax.as_ref().map(|s| s.0.as_str()),
                c.syntax,
                "{:?}",
                c.text
            );
            assert_eq!(d.escape, c.escape, "{:?}", c.text);
            assert_eq!(
                d.check.as_ref().map(|s| s.0.as_str()),
                c.check,
                "{:?}",
                c.text
            );
            if let Some((v, span)) = &d.syntax {
                assert_eq!(at(&df, *span), v);
            }
            if let Some((v, span)) = &d.check {
                assert_eq!(at(&df, *span), v);
            }
        }
    }

    #[test]
    fn directive_errors() {
        let cases = [
            (
                "# escape=`\n# escape=\\\nFROM a",
                "only one escape parser directive can be used",
                "# escape=\\",
            ),
            (
                "# syntax=a\n# SYNTAX=b\nFROM a",
                "only one syntax parser directive can be used",
                "# SYNTAX=b",
            ),
            (
                "# check=a\n#check=b\nFROM a",
                "only one check parser directive can be used",
                "#check=b",
            ),
            (
                "# escape=x\nFROM a",
                "invalid escape token 'x' does not match ` or \\",
                "x",
            ),
            (
                "# escape = \\\\  \nFROM a",
                "invalid escape token '\\\\' does not match ` or \\",
                "\\\\",
            ),
            // Only blanks after `=`: Go's `(.+?)\s*$` takes the last one as the value.
            (
                "# escape=   \nFROM a",
                "invalid escape token ' ' does not match ` or \\",
                " ",
            ),
        ];
        for (text, msg, spanned) in cases {
            let e = parse_err(text);
            assert_eq!(e.message, msg, "{text:?}");
            assert_eq!(err_text(&e), spanned, "{text:?}");
        }
    }

    #[test]
    fn backtick_escape() {
        let df = parse_str(
            "# escape=`\nFROM mcr.microsoft.com/windows\nCOPY a\\b c:\\dest\\\nRUN dir `\n  c:\\ `\n  && echo \\\nWORKDIR c:\\\n",
        );
        assert_eq!(
            summary(&df),
            pairs(&[
                ("from", "mcr.microsoft.com/windows"),
                ("copy", "a\\b c:\\dest\\"),
                ("run", "dir   c:\\   && echo \\"),
                ("workdir", "c:\\"),
            ])
        );
        // testfiles/escape: the backslash starts no continuation.
        let df = parse_str("#escape = `\n\nFROM image\nMAINTAINER foo@bar.com\nENV GOPATH `\n\\go");
        assert_eq!(
            summary(&df),
            pairs(&[
                ("from", "image"),
                ("maintainer", "foo@bar.com"),
                ("env", "GOPATH \\go"),
            ])
        );
        // testfiles/escape-after-comment: the default escape continues the line.
        let df = parse_str("# Comment\n# escape = `\n\nFROM image\nENV GOPATH \\\n\\go");
        assert_eq!(
            summary(&df),
            pairs(&[("from", "image"), ("env", "GOPATH \\go")])
        );
    }

    #[test]
    fn continuations() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            // BuildKit testfiles/continueIndent.
            (
                "FROM ubuntu:14.04\n\nRUN echo hello\\\n  world\\\n  goodnight  \\\n  moon\\\n  light\\\nning\nRUN echo hello  \\\n  world\nRUN echo hello  \\\nworld\nRUN echo hello \\\ngoodbye\\\nfrog\nRUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\nRUN echo goodbye\\\nfrog\nRUN echo good\\\nbye\\\nfrog\n",
                &[
                    ("from", "ubuntu:14.04"),
                    ("run", "echo hello  world  goodnight    moon  lightning"),
                    ("run", "echo hello    world"),
                    ("run", "echo hello  world"),
                    ("run", "echo hello goodbyefrog"),
                    ("run", "echo hi   world  goodnight"),
                    ("run", "echo goodbyefrog"),
                    ("run", "echo goodbyefrog"),
                ],
            ),
            // Comment lines inside a continuation are dropped; the continuation goes on.
            (
                "RUN a \\\n# comment\n  # indented comment \\\n  b\nRUN c",
                &[("run", "a   b"), ("run", "c")],
            ),
            (
                "RUN echo hello \\\n# a comment\nRUN echo more",
                &[("run", "echo hello RUN echo more")],
            ),
            // Blanks and tabs after the escape.
            ("RUN a \\  \t\n b", &[("run", "a  b")]),
            // An escaped escape at the end is no continuation.
            ("RUN echo \\\\\nFROM x", &[("run", "echo \\\\"), ("from", "x")]),
            ("RUN echo \\\\ \nFROM x", &[("run", "echo \\\\"), ("from", "x")]),
            // A lone escape line, and a continuation at the end of the file.
            ("\\\nRUN x", &[("run", "x")]),
            ("RUN a \\", &[("run", "a")]),
            ("RUN a \\\n", &[("run", "a")]),
            ("RUN a \\\n# only a comment\n", &[("run", "a")]),
            // The keyword itself may be split.
            ("RU\\\nN x", &[("run", "x")]),
            // testfiles/docker: tabs as separators and in continuations.
            (
                "FROM\tubuntu:14.04\nLABEL\tmaintainer\tTianon Gravi <a@b.c> (@tianon)\nRUN\tapt-get install -yq \\\n\tapt-utils \\\n\taufs-tools \\\n\t--no-install-recommends\nENV\tDOCKER_CROSSPLATFORMS\t\\\n\tlinux/386 linux/arm \\\n\tdarwin/amd64\nENTRYPOINT\t[\"hack/dind\"]\nCOPY\t.\t/go/src\n",
                &[
                    ("from", "ubuntu:14.04"),
                    ("label", "maintainer\tTianon Gravi <a@b.c> (@tianon)"),
                    (
                        "run",
                        "apt-get install -yq \tapt-utils \taufs-tools \t--no-install-recommends",
                    ),
                    ("env", "DOCKER_CROSSPLATFORMS\t\tlinux/386 linux/arm \tdarwin/amd64"),
                    ("entrypoint", "[\"hack/dind\"]"),
                    ("copy", ".\t/go/src"),
                ],
            ),
        ];
        for (text, want) in cases {
            let df = parse_str(text);
            assert_eq!(summary(&df), pairs(want), "{text:?}");
            assert!(df.warnings.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn empty_continuation_lines_warn() {
        // BuildKit's TestParseWarnsOnEmptyContinutationLine.
        let text = "\nFROM alpine:3.6\n\nRUN something \\\n\n    following \\\n\n    more\n\nRUN another \\\n\n    thing\nRUN non-indented \\\n# this is a comment\n   after-comment\n\nRUN indented \\\n    # this is an indented comment\n    comment\n\t";
        let df = parse_str(text);
        assert_eq!(df.warnings.len(), 2);
        assert_eq!(
            df.warnings[0].message,
            "Empty continuation line found in: RUN something     following     more"
        );
        assert_eq!(
            df.warnings[1].message,
            "Empty continuation line found in: RUN another     thing"
        );
        // The warning points at the first empty line.
        let (line, _) = df.file.line_col(df.warnings[0].span.start);
        assert_eq!(line, 5);
        assert_eq!(
            summary(&df)[1..],
            pairs(&[
                ("run", "something     following     more"),
                ("run", "another     thing"),
                ("run", "non-indented    after-comment"),
                ("run", "indented     comment"),
            ])[..]
        );
        // An empty line does not end the continuation (testfiles/empty-line-after-escape).
        let df = parse_str("FROM busybox\nRUN foo \\\n\nbar\n");
        assert_eq!(
            summary(&df),
            pairs(&[("from", "busybox"), ("run", "foo bar")])
        );
        assert_eq!(df.warnings.len(), 1);
        assert_eq!(df.nodes[1].end_line, 4);
    }

    #[test]
    fn flags() {
        struct Case {
            text: &'static str,
            flags: &'static [(&'static str, Option<&'static str>, &'static str)],
            rest: &'static str,
        }
        let cases = [
            Case {
                text: "COPY --from=build --chown=\"a b\" --link src dst",
                flags: &[
                    ("from", Some("build"), "--from=build"),
                    ("chown", Some("a b"), "--chown=\"a b\""),
                    ("link", None, "--link"),
                ],
                rest: "src dst",
            },
            Case {
                text: "RUN --mount=type=cache,target=/root/.cache,id=a=b \\\n    --network=none make",
                flags: &[
                    (
                        "mount",
                        Some("type=cache,target=/root/.cache,id=a=b"),
                        "--mount=type=cache,target=/root/.cache,id=a=b",
                    ),
                    ("network", Some("none"), "--network=none"),
                ],
                rest: "make",
            },
            Case {
                text: "COPY --chown='a b' --chmod=a\\ b x y",
                flags: &[
                    ("chown", Some("a b"), "--chown='a b'"),
                    ("chmod", Some("a b"), "--chmod=a\\ b"),
                ],
                rest: "x y",
            },
            Case {
                text: "COPY --x=\"\" --y= --\"quoted=v\" a",
                flags: &[
                    ("x", Some(""), "--x=\"\""),
                    ("y", Some(""), "--y="),
                    ("quoted", Some("v"), "--\"quoted=v\""),
                ],
                rest: "a",
            },
            // `--` ends the flags.
            Case {
                text: "RUN --a -- --b c",
                flags: &[("a", None, "--a")],
                rest: "--b c",
            },
            Case {
                text: "RUN --a --",
                flags: &[("a", None, "--a")],
                rest: "",
            },
            // Flags only before the arguments; `-x` is no flag.
            Case {
                text: "RUN echo --foo",
                flags: &[],
                rest: "echo --foo",
            },
            Case {
                text: "RUN -x --foo",
                flags: &[],
                rest: "-x --foo",
            },
            Case {
                text: "RUN --foo",
                flags: &[("foo", None, "--foo")],
                rest: "",
            },
            Case {
                text: "HEALTHCHECK --interval=5s --timeout=3s --retries=3 \\\n  CMD /app/check.sh --quiet",
                flags: &[
                    ("interval", Some("5s"), "--interval=5s"),
                    ("timeout", Some("3s"), "--timeout=3s"),
                    ("retries", Some("3"), "--retries=3"),
                ],
                rest: "CMD /app/check.sh --quiet",
            },
            // Unterminated quote: the word runs to the end.
            Case {
                text: "RUN --a=\"b c",
                flags: &[("a", Some("b c"), "--a=\"b c")],
                rest: "",
            },
        ];
        for c in cases {
            let df = parse_str(c.text);
            let n = &df.nodes[0];
            let got: Vec<_> = n
                .flags
                .iter()
                .map(|f| (f.name.as_str(), f.value.as_deref(), at(&df, f.span)))
                .collect();
            assert_eq!(got, c.flags, "{:?}", c.text);
            assert_eq!(n.rest, c.rest, "{:?}", c.text);
        }
    }

    #[test]
    fn heredocs_buildkit_cases() {
        // BuildKit's TestParseExtractsHeredoc, with `<<-` bodies chomped here.
        let text = "\nFROM alpine:3.6\n\nENV NAME=me\n\nRUN ls\n\nUSER <<INVALID\nINVALID\n\nRUN <<EMPTY\nEMPTY\n\nRUN 3<<EMPTY2\nEMPTY2\n\nRUN \"<<NOHEREDOC\"\n\nRUN <<INDENT\n\tfoo\n\tbar\nINDENT\n\nRUN <<-UNINDENT\n\tbaz\n\tquux\nUNINDENT\n\nRUN <<-UNINDENT2\n\tbaz\n\tquux\n\tUNINDENT2\n\nRUN <<-EXPAND\n\texpand $NAME\nEXPAND\n\nRUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND\n\nRUN <<COPY\necho hello world\necho foo bar\nCOPY\n\nRUN <<COMMENT\n# internal comment\necho hello world\necho foo bar # trailing comment\nCOMMENT\n\nRUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n\nCOPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2\n\nCOPY <<X <<Y /dest\nY\nX\nX\nY\n\t";
        type Want = &'static [(&'static str, &'static str, bool, bool)];
        let want: &[Want] = &[
            &[],                            // ENV
            &[],                            // RUN ls
            &[],                            // USER <<INVALID
            &[],                            // INVALID
            &[("EMPTY", "", true, false)],  // RUN <<EMPTY
            &[("EMPTY2", "", true, false)], // RUN 3<<EMPTY2
            &[],                            // RUN "<<NOHEREDOC"
            &[("INDENT", "\tfoo\n\tbar\n", true, false)],
            &[("UNINDENT", "baz\nquux\n", true, true)],
            &[("UNINDENT2", "baz\nquux\n", true, true)],
            &[("EXPAND", "expand $NAME\n", true, true)],
            &[("NOEXPAND", "don't expand $NAME\n", false, true)],
            &[("COPY", "echo hello world\necho foo bar\n", true, false)],
            &[(
                "COMMENT",
                "# internal comment\necho hello world\necho foo bar # trailing comment\n",
                true,
                false,
            )],
            &[("MOUNT", "echo hello\n", true, false)],
            &[
                ("FILE1", "content 1\n", true, false),
                ("FILE2", "content 2\n", true, false),
            ],
            &[("X", "Y\n", true, false), ("Y", "X\n", true, false)],
        ];
        let df = parse_str(text);
        assert_eq!(df.nodes.len(), want.len() + 1);
        for (node, want) in df.nodes[1..].iter().zip(want) {
            let got: Vec<_> = node
                .heredocs
                .iter()
                .map(|h| (h.name.as_str(), h.content.as_str(), h.expand, h.chomp))
                .collect();
            assert_eq!(&got, want, "{}", node.original);
        }
        let mount = &df.nodes[15];
        assert_eq!(mount.flags[0].name, "mount");
        assert_eq!(mount.rest, "<<MOUNT");
        assert_eq!(at(&df, mount.heredocs[0].span), "<<MOUNT");
        let copy = &df.nodes[16];
        assert_eq!(copy.rest, "<<FILE1 <<FILE2 /dest");
        assert_eq!(at(&df, copy.heredocs[1].span), "<<FILE2");
        assert_eq!(
            at(&df, copy.span),
            "COPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2"
        );
        assert_eq!((copy.start_line, copy.end_line), (57, 61));

        // BuildKit's TestParseJSONHeredoc: no heredocs in the exec form.
        let df = parse_str(
            "FROM alpine:3.6\nRUN [\"whoami\"]\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"] trailing\n",
        );
        assert_eq!(df.nodes.len(), 4);
        assert!(df.nodes.iter().all(|n| n.heredocs.is_empty()));
    }

    #[test]
    fn heredoc_markers() {
        // BuildKit's TestParseHeredocHelpers.
        for src in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
        ] {
            let (name, _, _) = parse_heredoc(src).unwrap().unwrap();
            assert_eq!(name, "EOF", "{src}");
        }
        for src in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc(src).is_err(), "{src}");
        }
        for src in [
            "", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "a<<EOF", "<<EOF<<X", "<<a b",
        ] {
            assert_eq!(parse_heredoc(src).unwrap(), None, "{src}");
        }
        assert_eq!(
            parse_heredoc("<<E\"O\"F").unwrap(),
            Some(("EOF".into(), false, false))
        );
        assert_eq!(
            parse_heredoc("12<<--X").unwrap(),
            Some(("-X".into(), true, true))
        );
        // BuildKit's TestHeredocsFromLine.
        let cases: &[(&str, &[&str])] = &[
            ("RUN <<EOF", &["EOF"]),
            ("RUN <<-EOF", &["EOF"]),
            ("RUN <<'EOF'", &["EOF"]),
            ("RUN 4<<EOF", &["EOF"]),
            ("RUN <<EOF <<EOF2", &["EOF", "EOF2"]),
            ("RUN '<<EOF'", &[]),
            ("RUN \"<<EOF\"", &[]),
            ("RUN a<<EOF", &[]),
            ("RUN \\<<EOF", &[]),
            ("RUN cat <<EOF>file", &["EOF>file"]),
            ("RUN x=$FOO <<\"$A\" ${B:-c}", &["$A"]),
            // A lexing error anywhere in the line: no heredocs at all.
            ("RUN <<EOF echo 'unterminated", &[]),
            ("RUN <<EOF echo ${}", &[]),
        ];
        for (line, names) in cases {
            let got: Vec<_> = heredocs_from_line(line)
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .collect();
            assert_eq!(got, *names, "{line}");
        }
    }

    #[test]
    fn heredocs_more() {
        // Followed by more instructions; only RUN, COPY and ADD read bodies.
        let df = parse_str(
            "FROM a\nRUN <<EOF\necho hi\nEOF\nADD <<-\"A\" /a\n\t\tx\n\tA\nLABEL x=<<EOF\nCMD [\"x\"]\n",
        );
        assert_eq!(
            summary(&df),
            pairs(&[
                ("from", "a"),
                ("run", "<<EOF"),
                ("add", "<<-\"A\" /a"),
                ("label", "x=<<EOF"),
                ("cmd", "[\"x\"]"),
            ])
        );
        assert_eq!(df.nodes[1].heredocs[0].content, "echo hi\n");
        assert_eq!((df.nodes[1].start_line, df.nodes[1].end_line), (2, 4));
        assert_eq!(at(&df, df.nodes[1].span), "RUN <<EOF\necho hi\nEOF");
        let add = &df.nodes[2].heredocs[0];
        assert_eq!((add.name.as_str(), add.content.as_str()), ("A", "x\n"));
        assert!(!add.expand && add.chomp);
        assert_eq!(at(&df, add.span), "<<-\"A\"");
        assert_eq!(df.nodes[4].start_line, 9);

        // A marker on a continuation line; the body follows the last one.
        let df = parse_str("RUN python3 \\\n  <<EOF \\\n  --verbose\nprint(1)\nEOF\nFROM b");
        assert_eq!(df.nodes[0].rest, "python3   <<EOF   --verbose");
        assert_eq!(df.nodes[0].heredocs[0].content, "print(1)\n");
        assert_eq!(at(&df, df.nodes[0].heredocs[0].span), "<<EOF");
        assert_eq!(df.nodes[0].end_line, 5);
        assert_eq!(df.nodes[1].keyword, "from");

        // Bodies are raw: no comments, continuations or escapes processed; the terminator
        // must match exactly (no trailing blanks).
        let df = parse_str("COPY <<EOF /x\n# not a comment \\\n\\\n EOF\nEOF \nEOF\n");
        assert_eq!(
            df.nodes[0].heredocs[0].content,
            "# not a comment \\\n\\\n EOF\nEOF \n"
        );
        // The terminator may be the last line without a newline; `<<-` strips its tabs.
        let df = parse_str("RUN <<-EOF\n\techo\n\t\tEOF");
        assert_eq!(df.nodes[0].heredocs[0].content, "echo\n");
        // CRLF: the terminator is found; the body keeps its line endings as BuildKit does.
        let df = parse_str("RUN <<EOF\r\necho hi\r\nEOF\r\nFROM x\r\n");
        assert_eq!(df.nodes[0].heredocs[0].content, "echo hi\r\n");
        assert_eq!(df.nodes[1].rest, "x");
        // With the backtick escape the heredoc lexer still uses `\`.
        let df = parse_str("# escape=`\nRUN cat \\<<EOF <<X\nX\n");
        assert_eq!(df.nodes[0].heredocs.len(), 1);
        assert_eq!(df.nodes[0].heredocs[0].name, "X");
    }

    #[test]
    fn heredoc_errors() {
        let e = parse_err("FROM a\nRUN <<EOF\necho hi\n");
        assert_eq!(e.message, "unterminated heredoc");
        assert_eq!(err_text(&e), "<<EOF");
        assert_eq!(e.position().map(|p| (p.1, p.2)), Some((2, 5)));
        // The second of two is unterminated.
        let e = parse_err("COPY <<A <<B /\nA\nB-not\n");
        assert_eq!(err_text(&e), "<<B");
        // `<<-` does not strip blanks, and the terminator of `<<` keeps its tabs.
        let e = parse_err("RUN <<EOF\n\tEOF\n");
        assert_eq!(e.message, "unterminated heredoc");
        let e = parse_err("RUN <<-EOF\n  EOF\n");
        assert_eq!(e.message, "unterminated heredoc");
        // BuildKit's lexer shares one word buffer with nested `${...}` lexing, so the text of
        // a word before such a substitution is lost: `<<${A:-x y}` is no marker.
        let df = parse_str("RUN <<${A:-x y}\nFROM a\n");
        assert!(df.nodes[0].heredocs.is_empty());
        assert_eq!(df.nodes.len(), 2);
    }

    #[test]
    fn onbuild() {
        let df = parse_str("FROM a\nONBUILD RUN --mount=type=cache,target=/x \\\n  echo hi\nonbuild copy . /app\nONBUILD\n");
        let ob = &df.nodes[1];
        assert_eq!(ob.keyword, "onbuild");
        assert_eq!(ob.rest, "RUN --mount=type=cache,target=/x   echo hi");
        let inner = ob.inner.as_ref().unwrap();
        assert_eq!(inner.keyword, "run");
        assert_eq!(at(&df, inner.keyword_span), "RUN");
        assert_eq!(
            inner.flags[0].value.as_deref(),
            Some("type=cache,target=/x")
        );
        assert_eq!(at(&df, inner.flags[0].span), "--mount=type=cache,target=/x");
        assert_eq!(inner.rest, "echo hi");
        assert_eq!(at(&df, inner.rest_span), "echo hi");
        assert_eq!(inner.original, "RUN --mount=type=cache,target=/x   echo hi");
        assert_eq!((inner.start_line, inner.end_line), (2, 3));
        assert_eq!(
            at(&df, inner.span),
            "RUN --mount=type=cache,target=/x \\\n  echo hi"
        );
        assert_eq!(df.nodes[2].inner.as_ref().unwrap().keyword, "copy");
        assert!(df.nodes[3].inner.is_none());

        // Heredocs of the trigger go to the inner node.
        let df = parse_str("ONBUILD RUN <<EOF\nhi\nEOF\nONBUILD RUN [\"<<EOF\"]\n");
        assert!(df.nodes[0].heredocs.is_empty());
        assert_eq!(
            df.nodes[0].inner.as_ref().unwrap().heredocs[0].content,
            "hi\n"
        );
        assert_eq!(df.nodes[0].end_line, 3);
        assert_eq!(df.nodes.len(), 2);

        let cases = [
            (
                "ONBUILD ONBUILD RUN x",
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                "ONBUILD",
            ),
            (
                "ONBUILD from x",
                "FROM isn't allowed as an ONBUILD trigger",
                "from",
            ),
            (
                "FROM a\nONBUILD   Maintainer me",
                "MAINTAINER isn't allowed as an ONBUILD trigger",
                "Maintainer",
            ),
        ];
        for (text, msg, spanned) in cases {
            let e = parse_err(text);
            assert_eq!(e.message, msg);
            assert_eq!(err_text(&e), spanned);
        }
    }

    #[test]
    fn spans_lines_and_original() {
        let text = "\u{feff}# syntax=x\n\n  FrOm\talpine AS base \r\n# c\nRUN --network=none \\\r\n  # inner\r\n    echo a \\\r\n    b  \r\n\nfoo bar\n";
        let df = parse_str(text);
        assert_eq!(
            summary(&df),
            pairs(&[
                ("from", "alpine AS base"),
                ("run", "echo a     b"),
                ("foo", "bar"),
            ])
        );
        let from = &df.nodes[0];
        assert_eq!(at(&df, from.keyword_span), "FrOm");
        assert_eq!(at(&df, from.rest_span), "alpine AS base");
        assert_eq!(at(&df, from.span), "FrOm\talpine AS base ");
        assert_eq!(from.original, "FrOm\talpine AS base ");
        assert_eq!((from.start_line, from.end_line), (3, 3));
        let run = &df.nodes[1];
        assert_eq!(at(&df, run.keyword_span), "RUN");
        assert_eq!(at(&df, run.flags[0].span), "--network=none");
        assert_eq!(at(&df, run.rest_span), "echo a \\\r\n    b");
        assert_eq!(
            at(&df, run.span),
            "RUN --network=none \\\r\n  # inner\r\n    echo a \\\r\n    b  "
        );
        assert_eq!(run.original, "RUN --network=none     echo a     b  ");
        assert_eq!((run.start_line, run.end_line), (5, 8));
        let foo = &df.nodes[2];
        assert_eq!((foo.start_line, foo.end_line), (10, 10));
        assert_eq!(df.file.line_col(foo.keyword_span.start), (10, 1));
        // Keyword only: an empty rest right after it.
        let df = parse_str("RUN\nEXPOSE   \n");
        assert_eq!(df.nodes[0].rest, "");
        assert_eq!(df.nodes[0].rest_span, Span::new(3, 3));
        assert_eq!(df.nodes[1].rest_span, Span::new(10, 10));
        assert!(df.nodes[0].flags.is_empty());
        // Multi-byte text keeps its spans on character boundaries.
        let df = parse_str("LABEL é=\"ü\" \\\n  ö=1\n");
        assert_eq!(at(&df, df.nodes[0].rest_span), "é=\"ü\" \\\n  ö=1");
        assert_eq!(df.nodes[0].rest, "é=\"ü\"   ö=1");
    }

    #[test]
    fn no_instructions() {
        for text in [
            "",
            "\n\n",
            "# syntax=a\n# just a comment\n   \n",
            "\u{feff}",
            "\r\n",
        ] {
            let df = parse_str(text);
            assert!(df.nodes.is_empty(), "{text:?}");
        }
        // A lone escape line with nothing after it: a node without keyword, as in BuildKit
        // (instructions reports it as an unknown instruction).
        let df = parse_str("\\\n");
        assert_eq!(df.nodes.len(), 1);
        assert_eq!(df.nodes[0].keyword, "");
    }

    #[test]
    fn fuzz_regressions() {
        // A lone escape line, then continuations that leave only blanks (crashed the
        // keyword split: trimmed bounds crossed).
        for text in ["\\\n\x0c\\\n\x0c", "\\\n \\\n", "\\\n\t\\"] {
            let df = parse_str(text);
            assert_eq!(df.nodes.len(), 1, "{text:?}");
            let n = &df.nodes[0];
            assert_eq!((n.keyword.as_str(), n.rest.as_str()), ("", ""), "{text:?}");
            check_invariants(&df);
        }
    }

    #[test]
    fn buildkit_health_testfile() {
        let df = parse_str("FROM debian\nADD check.sh main.sh /app/\nCMD /app/main.sh\nHEALTHCHECK\nHEALTHCHECK --interval=5s --timeout=3s --retries=3 \\\n  CMD /app/check.sh --quiet\nHEALTHCHECK CMD\nHEALTHCHECK   CMD   a b\nHEALTHCHECK --timeout=3s CMD [\"foo\"]\nHEALTHCHECK CONNECT TCP 7000\nHEALTHCHECK --start-period=0s --interval=5s --timeout=0s --retries=0 CMD [\"foo\"]\n");
        let got: Vec<_> = df
            .nodes
            .iter()
            .map(|n| {
                let flags: Vec<_> = n.flags.iter().map(|f| f.name.as_str()).collect();
                (n.keyword.as_str(), flags, n.rest.as_str())
            })
            .collect();
        let want: Vec<(&str, Vec<&str>, &str)> = vec![
            ("from", vec![], "debian"),
            ("add", vec![], "check.sh main.sh /app/"),
            ("cmd", vec![], "/app/main.sh"),
            ("healthcheck", vec![], ""),
            (
                "healthcheck",
                vec!["interval", "timeout", "retries"],
                "CMD /app/check.sh --quiet",
            ),
            ("healthcheck", vec![], "CMD"),
            ("healthcheck", vec![], "CMD   a b"),
            ("healthcheck", vec!["timeout"], "CMD [\"foo\"]"),
            ("healthcheck", vec![], "CONNECT TCP 7000"),
            (
                "healthcheck",
                vec!["start-period", "interval", "timeout", "retries"],
                "CMD [\"foo\"]",
            ),
        ];
        assert_eq!(got, want);
    }

    /// Checks the invariants every parse result must hold.
    fn check_invariants(df: &Dockerfile) {
        let text = &df.file.text;
        let ok = |s: Span| {
            s.start <= s.end
                && s.end <= text.len()
                && text.is_char_boundary(s.start)
                && text.is_char_boundary(s.end)
        };
        let mut prev_end = 0;
        for n in &df.nodes {
            for node in std::iter::once(n).chain(n.inner.as_deref()) {
                assert!(
                    ok(node.span) && ok(node.keyword_span) && ok(node.rest_span),
                    "{node:?}"
                );
                assert!(node.flags.iter().all(|f| ok(f.span)));
                assert!(node.heredocs.iter().all(|h| ok(h.span)));
                assert!(node
                    .heredocs
                    .iter()
                    .all(|h| h.content.is_empty() || h.content.ends_with('\n')));
                assert!(node.start_line >= 1 && node.start_line <= node.end_line);
            }
            assert!(n.start_line > prev_end, "{n:?}");
            prev_end = n.end_line;
        }
        for w in &df.warnings {
            assert!(ok(w.span));
        }
    }

    #[test]
    fn random_inputs_do_not_panic() {
        const FRAGMENTS: &[&str] = &[
            "FROM",
            "RUN",
            "COPY",
            "ADD",
            "ONBUILD",
            "onbuild",
            "ENV",
            "LABEL",
            "HEALTHCHECK",
            " ",
            " ",
            " ",
            "\t",
            "\x0b",
            "\x0c",
            "\\\n\x0c",
            "\n",
            "\n",
            "\r\n",
            "\r",
            "\\",
            "\\\n",
            "`",
            "`\n",
            "#",
            "# ",
            "# escape=`\n",
            "# syntax=x\n",
            "# check=a\n",
            "#escape=\\\n",
            "=",
            "--",
            "--from=",
            "--mount=type=cache",
            "-",
            "\"",
            "'",
            "<<",
            "<<EOF",
            "<<-EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "2<<EOF",
            "EOF",
            "\tEOF",
            "EOF\n",
            "$",
            "${",
            "}",
            "${A:-",
            "${A/",
            ":",
            "/",
            "[",
            "]",
            "[\"a\"]",
            "{",
            "a",
            "b c",
            "é",
            "\u{feff}",
            "\u{a0}",
            "\u{2028}",
            "\0",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize]);
            }
            let file = SourceFile::new("Dockerfile", s.clone());
            match std::panic::catch_unwind(|| parse(file)) {
                Ok(Ok(df)) => check_invariants(&df),
                Ok(Err(e)) => {
                    let (f, span) = e.location.as_ref().expect("parse errors have a location");
                    assert!(span.start <= span.end && span.end <= f.text.len(), "{s:?}");
                }
                Err(_) => panic!("parser panicked on {s:?}"),
            }
        }
    }

    #[test]
    fn deep_substitution_nesting() {
        let line = format!("RUN {}<<EOF", "${A:-".repeat(10_000));
        let df = parse_str(&line);
        assert!(df.nodes[0].heredocs.is_empty());
    }
}
