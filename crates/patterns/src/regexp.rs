//! A small regular-expression engine for the Go (RE2) expressions that
//! moby/patternmatcher builds from patterns.
//!
//! moby turns a pattern into a Go regular expression by escaping only
//! `.+()|{}$`, mapping `*`, `?` and `**` to `[^/]*`, `[^/]` and `(.*/)?` / `.*`,
//! and copying everything else, including `[`, `]`, `^` and `\x` escapes, into
//! the expression as it is. Whatever Go's `regexp` makes of that is what Docker
//! matches, so this module parses that expression with Go's rules: character
//! classes (with `[:alpha:]`-style and `\d`-style groups), `^`/`$`/`\A`/`\z`/
//! `\b`/`\B` assertions, `\Q...\E` quoting, octal/hex/C escapes, groups, `*`,
//! `+` and `?`. Flags, alternation-free inputs and counted repetitions never
//! come out of moby's translation; `\p{...}` Unicode classes could, and are
//! rejected as unsupported.
//!
//! Matching uses a Pike VM (a breadth-first NFA simulation): linear in the
//! length of the text times the size of the expression, never backtracking.
//! Like Go's `Regexp.MatchString`, a match may start and end anywhere unless
//! anchors say otherwise.

use std::cell::RefCell;

/// Why an expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReError {
    /// Go's `regexp.Compile` rejects it too; the text says why.
    Syntax(String),
    /// Go accepts it but this engine does not implement it.
    Unsupported(&'static str),
}

/// Groups may not nest deeper than this (moby's expressions never nest).
const MAX_NESTING: usize = 100;

/// The largest Unicode code point.
const MAX_RUNE: u32 = 0x10_FFFF;

/// A character class: sorted, non-overlapping, non-adjacent inclusive ranges
/// of code points.
type Ranges = Vec<(u32, u32)>;

/// A zero-width assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assertion {
    BeginText,
    EndText,
    WordBoundary,
    NotWordBoundary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RepeatKind {
    Star,
    Plus,
    Quest,
}

/// Parsed expression.
#[derive(Debug)]
enum Node {
    Literal(u32),
    /// Sorted, non-overlapping, non-adjacent inclusive ranges.
    Class(Vec<(u32, u32)>),
    AnyNotNewline,
    Assert(Assertion),
    Concat(Vec<Node>),
    Alternate(Vec<Node>),
    Repeat(RepeatKind, Box<Node>),
}

/// One instruction of the compiled program.
#[derive(Debug, Clone)]
enum Inst {
    Char(u32),
    Class(Box<[(u32, u32)]>),
    AnyNotNewline,
    Assert(Assertion),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

impl Inst {
    /// Whether this instruction consumes a character.
    fn consumes(&self) -> bool {
        matches!(self, Inst::Char(_) | Inst::Class(_) | Inst::AnyNotNewline)
    }

    /// Whether this consuming instruction accepts `c`.
    fn accepts(&self, c: char) -> bool {
        let c = u32::from(c);
        match self {
            Inst::Char(x) => *x == c,
            Inst::Class(ranges) => in_class(ranges, c),
            Inst::AnyNotNewline => c != u32::from('\n'),
            _ => false,
        }
    }
}

/// What follows the current position.
#[derive(Debug, Clone, Copy)]
enum Next {
    Char(char),
    End,
    /// Not known (prefix queries): any assertion about it may hold.
    Unknown,
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub(crate) struct Regex {
    prog: Vec<Inst>,
    /// Text every match must start with, at the start of the text (empty if
    /// the expression is not anchored there).
    prefix: String,
    /// Text every match must end with, at the end of the text (empty if the
    /// expression is not anchored there).
    suffix: String,
}

impl Regex {
    /// Parses and compiles a Go regular expression (with Go's default
    /// `regexp.Compile` flags: `^`/`$` match at the text's ends only, `.` does
    /// not match a newline, negated classes do).
    pub(crate) fn new(expr: &str) -> Result<Regex, ReError> {
        let node = parse(expr)?;
        let (prefix, suffix) = anchored_literals(&node);
        let mut prog = Vec::new();
        emit(&node, &mut prog);
        prog.push(Inst::Match);
        Ok(Regex {
            prog,
            prefix,
            suffix,
        })
    }

    /// Whether the expression matches anywhere in `text` (Go's
    /// `Regexp.MatchString`).
    pub(crate) fn is_match(&self, text: &str) -> bool {
        text.starts_with(&self.prefix) && text.ends_with(&self.suffix) && self.run(text, false)
    }

    /// Whether some text that starts with `prefix` could match. May answer
    /// true when no such text exists (it does not check that the rest of the
    /// expression can be satisfied), never false when one does.
    pub(crate) fn may_match_with_prefix(&self, prefix: &str) -> bool {
        (prefix.starts_with(&self.prefix) || self.prefix.starts_with(prefix))
            && self.run(prefix, true)
    }

    fn run(&self, text: &str, open_end: bool) -> bool {
        thread_local! {
            static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
        }
        // Reuse this thread's buffers; fall back to fresh ones if they are in
        // use or already gone (thread exit).
        SCRATCH
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => self.run_with(&mut scratch, text, open_end),
                Err(_) => self.run_with(&mut Scratch::default(), text, open_end),
            })
            .unwrap_or_else(|_| self.run_with(&mut Scratch::default(), text, open_end))
    }

    fn run_with(&self, scratch: &mut Scratch, text: &str, open_end: bool) -> bool {
        let lookahead = |c: Option<char>| match c {
            Some(c) => Next::Char(c),
            None if open_end => Next::Unknown,
            None => Next::End,
        };
        // Expressions from moby always start with '^': once no thread is
        // alive past the start, nothing can match any more.
        let anchored = matches!(self.prog.first(), Some(Inst::Assert(Assertion::BeginText)));
        scratch.reset(self.prog.len());
        let Scratch {
            clist,
            nlist,
            stack,
        } = scratch;
        let mut chars = text.chars();
        let mut prev = None;
        let mut cur = chars.next();
        loop {
            // A match may start at every position (only at the first one for
            // an anchored expression).
            if (!anchored || prev.is_none()) && self.add(clist, stack, 0, prev, lookahead(cur)) {
                return true;
            }
            let Some(c) = cur else {
                return open_end
                    && clist
                        .dense
                        .iter()
                        .any(|&pc| self.prog.get(pc).is_some_and(Inst::consumes));
            };
            let after = chars.next();
            nlist.clear();
            for &pc in &clist.dense {
                let accepts = self.prog.get(pc).is_some_and(|inst| inst.accepts(c));
                if accepts && self.add(nlist, stack, pc + 1, Some(c), lookahead(after)) {
                    return true;
                }
            }
            std::mem::swap(clist, nlist);
            if anchored && clist.dense.is_empty() {
                return false;
            }
            prev = Some(c);
            cur = after;
        }
    }

    /// Adds `pc` and everything reachable from it without consuming input to
    /// `set`. Returns true if that reaches `Match`.
    fn add(
        &self,
        set: &mut ThreadSet,
        stack: &mut Vec<usize>,
        pc: usize,
        prev: Option<char>,
        next: Next,
    ) -> bool {
        stack.clear();
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if !set.insert(pc) {
                continue;
            }
            match self.prog.get(pc) {
                Some(Inst::Match) => return true,
                Some(Inst::Jmp(x)) => stack.push(*x),
                Some(Inst::Split(a, b)) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Some(Inst::Assert(a)) if assertion_holds(*a, prev, next) => stack.push(pc + 1),
                _ => {}
            }
        }
        false
    }
}

/// A set of program counters with insertion order, cleared in O(size).
#[derive(Debug, Default)]
struct ThreadSet {
    member: Vec<bool>,
    dense: Vec<usize>,
}

impl ThreadSet {
    fn insert(&mut self, pc: usize) -> bool {
        match self.member.get_mut(pc) {
            Some(m) if !*m => {
                *m = true;
                self.dense.push(pc);
                true
            }
            _ => false,
        }
    }

    fn clear(&mut self) {
        for &pc in &self.dense {
            if let Some(m) = self.member.get_mut(pc) {
                *m = false;
            }
        }
        self.dense.clear();
    }

    /// Empties the set and makes room for program counters below `n`.
    fn reset(&mut self, n: usize) {
        self.clear();
        if self.member.len() < n {
            self.member.resize(n, false);
        }
    }
}

/// The buffers of one simulation, kept per thread between matches.
#[derive(Debug, Default)]
struct Scratch {
    clist: ThreadSet,
    nlist: ThreadSet,
    stack: Vec<usize>,
}

impl Scratch {
    fn reset(&mut self, n: usize) {
        self.clist.reset(n);
        self.nlist.reset(n);
        self.stack.clear();
    }
}

fn is_word_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn assertion_holds(a: Assertion, prev: Option<char>, next: Next) -> bool {
    let next_char = match next {
        Next::Char(c) => Some(c),
        Next::End => None,
        Next::Unknown => return a != Assertion::BeginText || prev.is_none(),
    };
    match a {
        Assertion::BeginText => prev.is_none(),
        Assertion::EndText => next_char.is_none(),
        Assertion::WordBoundary => is_word_char(prev) != is_word_char(next_char),
        Assertion::NotWordBoundary => is_word_char(prev) == is_word_char(next_char),
    }
}

fn in_class(ranges: &[(u32, u32)], c: u32) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The literal text a match must start with when the expression begins with
/// `^` (or `\A`), and the text it must end with when it ends with `$` (or
/// `\z`): the runs of literal characters right after and before those
/// anchors at the top level. Used to reject most texts without running the
/// simulation.
fn anchored_literals(node: &Node) -> (String, String) {
    let Node::Concat(nodes) = node else {
        return (String::new(), String::new());
    };
    let literal = |n: &Node| match n {
        Node::Literal(c) => char::from_u32(*c),
        _ => None,
    };
    let mut prefix = String::new();
    if let Some((Node::Assert(Assertion::BeginText), rest)) = nodes.split_first() {
        prefix.extend(rest.iter().map_while(literal));
    }
    let mut suffix = String::new();
    if let Some((Node::Assert(Assertion::EndText), rest)) = nodes.split_last() {
        let mut chars: Vec<char> = rest.iter().rev().map_while(literal).collect();
        chars.reverse();
        suffix.extend(chars);
    }
    (prefix, suffix)
}

/// Compiles `node` onto the end of `prog` (Thompson construction).
fn emit(node: &Node, prog: &mut Vec<Inst>) {
    match node {
        Node::Literal(c) => prog.push(Inst::Char(*c)),
        Node::Class(ranges) => prog.push(Inst::Class(ranges.clone().into_boxed_slice())),
        Node::AnyNotNewline => prog.push(Inst::AnyNotNewline),
        Node::Assert(a) => prog.push(Inst::Assert(*a)),
        Node::Concat(nodes) => {
            for n in nodes {
                emit(n, prog);
            }
        }
        Node::Alternate(alts) => {
            let mut jumps = Vec::new();
            for (i, alt) in alts.iter().enumerate() {
                if i + 1 == alts.len() {
                    emit(alt, prog);
                } else {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, split + 1));
                    emit(alt, prog);
                    jumps.push(prog.len());
                    prog.push(Inst::Jmp(0));
                    let next = prog.len();
                    prog[split] = Inst::Split(split + 1, next);
                }
            }
            let end = prog.len();
            for j in jumps {
                prog[j] = Inst::Jmp(end);
            }
        }
        Node::Repeat(RepeatKind::Star, sub) => {
            let split = prog.len();
            prog.push(Inst::Split(split + 1, split + 1));
            emit(sub, prog);
            prog.push(Inst::Jmp(split));
            let end = prog.len();
            prog[split] = Inst::Split(split + 1, end);
        }
        Node::Repeat(RepeatKind::Plus, sub) => {
            let start = prog.len();
            emit(sub, prog);
            let split = prog.len();
            prog.push(Inst::Split(start, split + 1));
        }
        Node::Repeat(RepeatKind::Quest, sub) => {
            let split = prog.len();
            prog.push(Inst::Split(split + 1, split + 1));
            emit(sub, prog);
            let end = prog.len();
            prog[split] = Inst::Split(split + 1, end);
        }
    }
}

/// An open group while parsing.
#[derive(Debug, Default)]
struct Frame {
    alternatives: Vec<Node>,
    current: Vec<Node>,
}

impl Frame {
    fn finish(mut self) -> Node {
        let last = Node::Concat(std::mem::take(&mut self.current));
        if self.alternatives.is_empty() {
            last
        } else {
            self.alternatives.push(last);
            Node::Alternate(self.alternatives)
        }
    }
}

fn syntax(msg: impl Into<String>) -> ReError {
    ReError::Syntax(msg.into())
}

const UNICODE_CLASSES: &str = "Unicode class escapes such as \\p{Greek}";

/// Parses a Go regular expression (Perl flags, as `regexp.Compile` uses).
fn parse(expr: &str) -> Result<Node, ReError> {
    let mut stack: Vec<Frame> = vec![Frame::default()];
    let mut t = expr;
    let mut last_repeat = false;
    while let Some(c) = t.chars().next() {
        let mut repeat = false;
        let Some(frame) = stack.last_mut() else {
            return Err(syntax("internal error: no open group"));
        };
        match c {
            '(' => {
                if t[1..].starts_with('?') {
                    return Err(ReError::Unsupported(
                        "regexp flags and non-capturing groups",
                    ));
                }
                if stack.len() > MAX_NESTING {
                    return Err(syntax("expression nests too deeply"));
                }
                stack.push(Frame::default());
                t = &t[1..];
            }
            '|' => {
                let current = std::mem::take(&mut frame.current);
                frame.alternatives.push(Node::Concat(current));
                t = &t[1..];
            }
            ')' => {
                if stack.len() < 2 {
                    return Err(syntax("unexpected ): unbalanced parentheses"));
                }
                let node = match stack.pop() {
                    Some(group) => group.finish(),
                    None => return Err(syntax("internal error: no open group")),
                };
                match stack.last_mut() {
                    Some(parent) => parent.current.push(node),
                    None => return Err(syntax("internal error: no open group")),
                }
                t = &t[1..];
            }
            '^' => {
                frame.current.push(Node::Assert(Assertion::BeginText));
                t = &t[1..];
            }
            '$' => {
                frame.current.push(Node::Assert(Assertion::EndText));
                t = &t[1..];
            }
            '.' => {
                frame.current.push(Node::AnyNotNewline);
                t = &t[1..];
            }
            '[' => {
                let (ranges, rest) = parse_class(t)?;
                frame.current.push(Node::Class(ranges));
                t = rest;
            }
            '*' | '+' | '?' => {
                let kind = match c {
                    '*' => RepeatKind::Star,
                    '+' => RepeatKind::Plus,
                    _ => RepeatKind::Quest,
                };
                let mut after = &t[1..];
                // A trailing '?' makes it non-greedy, which does not change
                // whether there is a match.
                if after.starts_with('?') {
                    after = &after[1..];
                }
                let op = &t[..t.len() - after.len()];
                if last_repeat {
                    return Err(syntax(format!(
                        "invalid nested repetition operator: `{op}`"
                    )));
                }
                let Some(sub) = frame.current.pop() else {
                    return Err(syntax(format!(
                        "missing argument to repetition operator: `{op}`"
                    )));
                };
                frame.current.push(Node::Repeat(kind, Box::new(sub)));
                repeat = true;
                t = after;
            }
            '{' => return Err(ReError::Unsupported("counted repetitions")),
            '\\' => t = parse_backslash(t, &mut frame.current)?,
            _ => {
                frame.current.push(Node::Literal(u32::from(c)));
                t = &t[c.len_utf8()..];
            }
        }
        last_repeat = repeat;
    }
    if stack.len() != 1 {
        return Err(syntax("missing closing ): unbalanced parentheses"));
    }
    match stack.pop() {
        Some(frame) => Ok(frame.finish()),
        None => Err(syntax("internal error: no open group")),
    }
}

/// Parses a `\` sequence outside a class, pushing what it stands for onto
/// `out`. Returns the rest of the expression.
fn parse_backslash<'a>(t: &'a str, out: &mut Vec<Node>) -> Result<&'a str, ReError> {
    let b = t.as_bytes();
    if b.len() >= 2 {
        let assertion = match b[1] {
            b'A' => Some(Assertion::BeginText),
            b'z' => Some(Assertion::EndText),
            b'b' => Some(Assertion::WordBoundary),
            b'B' => Some(Assertion::NotWordBoundary),
            _ => None,
        };
        if let Some(a) = assertion {
            out.push(Node::Assert(a));
            return Ok(&t[2..]);
        }
        match b[1] {
            b'C' => return Err(syntax("invalid escape sequence: `\\C`")),
            b'Q' => {
                // \Q ... \E: everything in between is literal; without \E,
                // everything to the end.
                let rest = &t[2..];
                let (lit, after) = match rest.find("\\E") {
                    Some(i) => (&rest[..i], &rest[i + 2..]),
                    None => (rest, ""),
                };
                out.extend(lit.chars().map(|c| Node::Literal(u32::from(c))));
                return Ok(after);
            }
            b'p' | b'P' => return Err(ReError::Unsupported(UNICODE_CLASSES)),
            _ => {}
        }
        if let Some(ranges) = perl_class(b[1]) {
            out.push(Node::Class(ranges));
            return Ok(&t[2..]);
        }
    }
    let (r, rest) = parse_escape(t)?;
    out.push(Node::Literal(r));
    Ok(rest)
}

/// Parses an escape sequence at the start of `s` (which starts with `\`) and
/// returns the character it stands for and the rest (Go's `parseEscape`).
fn parse_escape(s: &str) -> Result<(u32, &str), ReError> {
    let t = &s[1..];
    let Some(c) = t.chars().next() else {
        return Err(syntax("trailing backslash at end of expression"));
    };
    let mut t = &t[c.len_utf8()..];
    let invalid = |t: &str| {
        let seq = &s[..s.len() - t.len()];
        syntax(format!("invalid escape sequence: `{seq}`"))
    };
    let is_octal = |t: &str| matches!(t.as_bytes().first(), Some(b'0'..=b'7'));
    match c {
        // A single non-zero digit is a backreference: not supported.
        '1'..='7' if !is_octal(t) => Err(invalid(t)),
        '0'..='7' => {
            // Up to three octal digits, this one included.
            let mut r = u32::from(c) - u32::from('0');
            for _ in 1..3 {
                match t.as_bytes().first() {
                    Some(&d @ b'0'..=b'7') => {
                        r = r * 8 + u32::from(d - b'0');
                        t = &t[1..];
                    }
                    _ => break,
                }
            }
            Ok((r, t))
        }
        'x' => {
            let Some(c1) = t.chars().next() else {
                return Err(invalid(t));
            };
            t = &t[c1.len_utf8()..];
            if c1 == '{' {
                // Any number of hex digits in braces, at least one.
                let mut r: u32 = 0;
                let mut nhex = 0;
                loop {
                    let Some(d) = t.chars().next() else {
                        return Err(invalid(t));
                    };
                    t = &t[d.len_utf8()..];
                    if d == '}' {
                        break;
                    }
                    let Some(v) = d.to_digit(16) else {
                        return Err(invalid(t));
                    };
                    r = r * 16 + v;
                    if r > MAX_RUNE {
                        return Err(invalid(t));
                    }
                    nhex += 1;
                }
                if nhex == 0 {
                    return Err(invalid(t));
                }
                return Ok((r, t));
            }
            // Exactly two hex digits.
            let c2 = t.chars().next();
            if let Some(c2) = c2 {
                t = &t[c2.len_utf8()..];
            }
            match (c1.to_digit(16), c2.and_then(|c2| c2.to_digit(16))) {
                (Some(x), Some(y)) => Ok((x * 16 + y, t)),
                _ => Err(invalid(t)),
            }
        }
        'a' => Ok((0x07, t)),
        'f' => Ok((0x0C, t)),
        'n' => Ok((0x0A, t)),
        'r' => Ok((0x0D, t)),
        't' => Ok((0x09, t)),
        'v' => Ok((0x0B, t)),
        // Escaped punctuation is always itself.
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((u32::from(c), t)),
        _ => Err(invalid(t)),
    }
}

/// Parses a class character (possibly an escape) at the start of `s`.
fn parse_class_char(s: &str) -> Result<(u32, &str), ReError> {
    match s.chars().next() {
        None => Err(syntax("missing closing ]")),
        Some('\\') => parse_escape(s),
        Some(c) => Ok((u32::from(c), &s[c.len_utf8()..])),
    }
}

/// Parses a `[...]` class at the start of `s` (Go's `parseClass` with Perl
/// flags). Returns the class as clean ranges, and the rest.
fn parse_class(s: &str) -> Result<(Ranges, &str), ReError> {
    let mut t = &s[1..];
    let mut negated = false;
    if t.starts_with('^') {
        negated = true;
        t = &t[1..];
    }
    let mut ranges = Vec::new();
    // ']' (and '-') are literal as the first character.
    let mut first = true;
    while t.is_empty() || !t.starts_with(']') || first {
        first = false;
        // POSIX classes like [:alnum:].
        if t.len() > 2 && t.starts_with("[:") {
            if let Some(i) = t[2..].find(":]") {
                let name = &t[..i + 4];
                let Some(group) = posix_class(name) else {
                    return Err(syntax(format!("invalid character class range: `{name}`")));
                };
                ranges.extend(group);
                t = &t[i + 4..];
                continue;
            }
        }
        if t.starts_with("\\p") || t.starts_with("\\P") {
            return Err(ReError::Unsupported(UNICODE_CLASSES));
        }
        // Perl classes like \d.
        let b = t.as_bytes();
        if b.len() >= 2 && b[0] == b'\\' {
            if let Some(group) = perl_class(b[1]) {
                ranges.extend(group);
                t = &t[2..];
                continue;
            }
        }
        // A single character or a range.
        let start = t;
        let (lo, rest) = parse_class_char(t)?;
        t = rest;
        let mut hi = lo;
        // [a-] means (a|-), so check for a final ].
        let b = t.as_bytes();
        if b.len() >= 2 && b[0] == b'-' && b[1] != b']' {
            let (h, rest) = parse_class_char(&t[1..])?;
            t = rest;
            hi = h;
            if hi < lo {
                let range = &start[..start.len() - t.len()];
                return Err(syntax(format!("invalid character class range: `{range}`")));
            }
        }
        ranges.push((lo, hi));
    }
    t = &t[1..]; // chop ]
    let ranges = clean_class(ranges);
    let ranges = if negated {
        negate_class(&ranges)
    } else {
        ranges
    };
    Ok((ranges, t))
}

/// Sorts and merges overlapping or adjacent ranges.
fn clean_class(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The complement of clean `ranges` within `0..=MAX_RUNE`.
fn negate_class(ranges: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    let mut next_lo = 0u32;
    for &(lo, hi) in ranges {
        if lo > next_lo {
            out.push((next_lo, lo - 1));
        }
        next_lo = hi.saturating_add(1);
    }
    if next_lo <= MAX_RUNE {
        out.push((next_lo, MAX_RUNE));
    }
    out
}

/// `\d`, `\s`, `\w` and their negations (ASCII-only, as in Go).
fn perl_class(c: u8) -> Option<Vec<(u32, u32)>> {
    let (ranges, negated): (&[(u8, u8)], bool) = match c {
        b'd' => (&[(b'0', b'9')], false),
        b'D' => (&[(b'0', b'9')], true),
        b's' => (&[(b'\t', b'\n'), (0x0C, b'\r'), (b' ', b' ')], false),
        b'S' => (&[(b'\t', b'\n'), (0x0C, b'\r'), (b' ', b' ')], true),
        b'w' => (
            &[(b'0', b'9'), (b'A', b'Z'), (b'_', b'_'), (b'a', b'z')],
            false,
        ),
        b'W' => (
            &[(b'0', b'9'), (b'A', b'Z'), (b'_', b'_'), (b'a', b'z')],
            true,
        ),
        _ => return None,
    };
    Some(group(ranges, negated))
}

/// `[:alpha:]`-style classes, also negated as `[:^alpha:]` (ASCII-only).
fn posix_class(name: &str) -> Option<Vec<(u32, u32)>> {
    let inner = name.strip_prefix("[:")?.strip_suffix(":]")?;
    let (inner, negated) = match inner.strip_prefix('^') {
        Some(rest) => (rest, true),
        None => (inner, false),
    };
    let ranges: &[(u8, u8)] = match inner {
        "alnum" => &[(b'0', b'9'), (b'A', b'Z'), (b'a', b'z')],
        "alpha" => &[(b'A', b'Z'), (b'a', b'z')],
        "ascii" => &[(0x00, 0x7F)],
        "blank" => &[(b'\t', b'\t'), (b' ', b' ')],
        "cntrl" => &[(0x00, 0x1F), (0x7F, 0x7F)],
        "digit" => &[(b'0', b'9')],
        "graph" => &[(b'!', b'~')],
        "lower" => &[(b'a', b'z')],
        "print" => &[(b' ', b'~')],
        "punct" => &[(b'!', b'/'), (b':', b'@'), (b'[', b'`'), (b'{', b'~')],
        "space" => &[(b'\t', b'\r'), (b' ', b' ')],
        "upper" => &[(b'A', b'Z')],
        "word" => &[(b'0', b'9'), (b'A', b'Z'), (b'a', b'z'), (b'_', b'_')],
        "xdigit" => &[(b'0', b'9'), (b'A', b'F'), (b'a', b'f')],
        _ => return None,
    };
    Some(group(ranges, negated))
}

fn group(ranges: &[(u8, u8)], negated: bool) -> Vec<(u32, u32)> {
    let ranges = clean_class(
        ranges
            .iter()
            .map(|&(lo, hi)| (u32::from(lo), u32::from(hi)))
            .collect(),
    );
    if negated {
        negate_class(&ranges)
    } else {
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(expr: &str) -> Regex {
        match Regex::new(expr) {
            Ok(r) => r,
            Err(e) => panic!("{expr:?} should compile: {e:?}"),
        }
    }

    // (expression, text, matches)
    const MATCH_TESTS: &[(&str, &str, bool)] = &[
        ("^abc$", "abc", true),
        ("^abc$", "abcd", false),
        ("abc", "xabcx", true),
        ("^abc", "xabc", false),
        ("abc$", "abcx", false),
        ("^$", "", true),
        ("^$", "a", false),
        ("", "anything", true),
        ("^[^/]*$", "abc", true),
        ("^[^/]*$", "a/c", false),
        ("^[^/]*$", "", true),
        ("^[^/]$", "é", true),
        ("^[^/]$", "/", false),
        ("^(.*/)?foo$", "foo", true),
        ("^(.*/)?foo$", "a/foo", true),
        ("^(.*/)?foo$", "a/b/foo", true),
        ("^(.*/)?foo$", "afoo", false),
        ("^(.*/)?foo$", "a\n/foo", false),
        ("^dir/.*$", "dir/x/y", true),
        ("^dir/.*$", "dir", false),
        ("^a.*$", "a\nb", false),
        ("^[^a]$", "\n", true),
        ("^\\.[^/]*$", ".foo", true),
        ("^\\.[^/]*$", "xfoo", false),
        ("^a[b-d]e$", "ace", true),
        ("^a[b-d]e$", "aae", false),
        ("^a[^b-d]e$", "aze", true),
        ("^[]a]$", "]", true),
        ("^[]a]$", "a", true),
        ("^[a-]$", "-", true),
        ("^[-a]$", "-", true),
        ("^[a\\]]$", "]", true),
        ("^[[:alpha:]]+$", "abcXYZ", true),
        ("^[[:alpha:]]+$", "abc1", false),
        ("^[[:^digit:]]$", "x", true),
        ("^[[:^digit:]]$", "5", false),
        ("^[[:digit:][:upper:]]*$", "A1B2", true),
        ("^[[a]$", "[", true),
        ("^[[a]$", "a", true),
        ("^[\\d]$", "7", true),
        ("^\\d\\D\\s\\S\\w\\W$", "1x\tx_-", true),
        ("^\\w$", "é", false),
        ("^\\x41\\x{42}\\103$", "ABC", true),
        ("^\\0$", "\0", true),
        ("^\\a\\f\\t\\n\\r\\v$", "\x07\x0c\t\n\r\x0b", true),
        ("^a\\bb$", "ab", false),
        ("^a\\b-$", "a-", true),
        ("^a\\Bb$", "ab", true),
        ("\\Aab\\z", "ab", true),
        ("\\Aab\\z", "abc", false),
        ("^\\Qa.*\\E$", "a.*", true),
        ("^\\Qa.*\\E$", "abc", false),
        ("^\\Qa.*$", "a.*$", true),
        ("^\\Qa.*$", "a.*$xyz", true),
        ("^\\Qa.*$", "a.*", false),
        ("^a*?b$", "aab", true),
        ("^a+$", "aaa", true),
        ("^a+$", "", false),
        ("^a?b$", "b", true),
        ("^a|b$", "xb", true),
        ("^(a|bc)$", "bc", true),
        ("^(a|bc)$", "b", false),
        ("^(.*/)?(.*/)?[^/]*\\.txt$", "dir/dir/file.txt", true),
        ("^(.*/)?(.*/)?[^/]*\\.txt$", "file.txt", true),
        ("^(.*/)?(.*/)?[^/]*\\.txt2$", "dir/dir/file.txt", false),
        // moby's translation of "[*]" and "[?]": the class closes early.
        ("^[[^/]*]$", "]", true),
        ("^[[^/]*]$", "[^/]", true),
        ("^[[^/]*]$", "*", false),
        ("^[[^/]]$", "[]", true),
        ("^[[^/]]$", "?", false),
        // Empty-width loops terminate.
        ("^(\\b)*a$", "a", true),
        ("^(a*)*b$", "aaab", true),
        ("^(a*)*b$", "aaa", false),
        ("^^*a$", "a", true),
    ];

    #[test]
    fn match_table() {
        for (expr, text, want) in MATCH_TESTS {
            assert_eq!(re(expr).is_match(text), *want, "{expr:?} on {text:?}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        let bad = [
            "[z-a]",
            "[Local-Only]",
            "\\q",
            "\\8",
            "\\1",
            "\\é",
            "\\",
            "a\\",
            "[",
            "[a",
            "[]",
            "[^]",
            "[a\\",
            "\\xZZ",
            "\\x",
            "\\x{}",
            "\\x{110000}",
            "\\x{41",
            "[[:foo:]]",
            "[\\q]",
            "[\\b]",
            "\\C",
            "*",
            "a**",
            "a*??",
            "(*)",
            "(",
            ")",
            "(a",
            "a)",
        ];
        for expr in bad {
            assert!(
                matches!(Regex::new(expr), Err(ReError::Syntax(_))),
                "{expr:?} should be a syntax error, got {:?}",
                Regex::new(expr).map(|_| ())
            );
        }
    }

    #[test]
    fn unsupported() {
        for expr in ["\\pL", "\\p{Greek}", "\\PL", "[\\pL]", "(?i)a", "a{2}"] {
            assert!(
                matches!(Regex::new(expr), Err(ReError::Unsupported(_))),
                "{expr:?}"
            );
        }
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            Regex::new("^[z-a]$").unwrap_err(),
            ReError::Syntax("invalid character class range: `z-a`".to_string())
        );
        assert_eq!(
            Regex::new("^a\\q$").unwrap_err(),
            ReError::Syntax("invalid escape sequence: `\\q`".to_string())
        );
        assert_eq!(
            Regex::new("^[a").unwrap_err(),
            ReError::Syntax("missing closing ]".to_string())
        );
    }

    #[test]
    fn prefix_queries() {
        let r = re("^(.*/)?keep$");
        assert!(r.may_match_with_prefix("dir/"));
        assert!(r.may_match_with_prefix(""));
        let r = re("^dir/keep$");
        assert!(r.may_match_with_prefix("dir/"));
        assert!(!r.may_match_with_prefix("other/"));
        assert!(!r.may_match_with_prefix("dir/keepx"));
        assert!(r.may_match_with_prefix("dir/keep"));
        let r = re("^[^/]*\\.go$");
        assert!(!r.may_match_with_prefix("dir/"));
        assert!(r.may_match_with_prefix("dir"));
        let r = re("^a\\b");
        assert!(r.may_match_with_prefix("a"));
        assert!(!r.may_match_with_prefix("ab"));
    }

    #[test]
    fn anchored_literal_prefix_and_suffix() {
        let cases = [
            ("^[^/]*\\.log$", "", ".log"),
            ("^docs/(.*/)?[^/]*\\.md$", "docs/", ".md"),
            ("^abc$", "abc", "abc"),
            ("abc", "", ""),
            ("^a\\bb$", "a", "b"),
            ("^\\Qa.*$", "a.*$", ""),
            ("^(a)b$", "", "b"),
            ("^a*$", "", ""),
        ];
        for (expr, prefix, suffix) in cases {
            let r = re(expr);
            assert_eq!(
                (r.prefix.as_str(), r.suffix.as_str()),
                (prefix, suffix),
                "{expr:?}"
            );
        }
    }

    #[test]
    fn classes() {
        assert_eq!(
            clean_class(vec![(5, 7), (1, 2), (3, 4), (10, 12)]),
            vec![(1, 7), (10, 12)]
        );
        assert_eq!(negate_class(&[(0, 9), (20, MAX_RUNE)]), vec![(10, 19)]);
        assert_eq!(negate_class(&[]), vec![(0, MAX_RUNE)]);
        assert!(in_class(&[(1, 3), (7, 9)], 8));
        assert!(!in_class(&[(1, 3), (7, 9)], 5));
    }
}
