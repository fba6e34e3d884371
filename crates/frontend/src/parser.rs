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
    /// `# syntax=` value and its span.
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
    /// Where `rest` starts in the file (its end is the end of the instruction's last line).
    pub rest_span: Span,
    /// Heredoc bodies, in the order their markers appear (RUN, COPY and ADD only).
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
    pub span: Span,
}

/// Parses a whole Dockerfile.
pub fn parse(file: Arc<SourceFile>) -> Result<Dockerfile, Error> {
    let _ = &file;
    todo!("parser: being written")
}
