//! Source files, spans and the frontend's error type. An error about a Dockerfile names the file,
//! line and column and shows the line with a caret under the offending part, like rustc.

use miette::{Diagnostic, LabeledSpan, NamedSource};
use std::fmt;
use std::sync::Arc;

/// A Dockerfile (or `.dockerignore`) as read, with its line starts for span → line/column.
#[derive(Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<SourceFile> {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Arc::new(SourceFile {
            name: name.into(),
            text,
            line_starts,
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text[start..floor_char_boundary(&self.text, offset)]
            .chars()
            .count();
        (line + 1, col + 1)
    }

    /// The byte offset where 1-based `line` starts.
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(self.text.len())
    }

    /// The text of 1-based `line`, without its newline.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_start(line);
        let end = self.text[start..]
            .find('\n')
            .map(|i| start + i)
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches('\r')
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A byte range in a [`SourceFile`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start,
            end: end.max(start),
        }
    }
}

/// A warning about a Dockerfile that does not stop the build.
#[derive(Clone, Debug)]
pub struct Warning {
    pub message: String,
    pub span: Span,
}

/// An error in the user's input. With a file and span it renders as `file:line:col: message`
/// plus the line and a caret; without, as the bare message.
#[derive(Debug)]
pub struct Error {
    pub message: String,
    pub location: Option<(Arc<SourceFile>, Span)>,
    pub help: Option<String>,
}

impl Error {
    /// An error at `span` of `file`.
    pub fn at(file: &Arc<SourceFile>, span: Span, message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            location: Some((file.clone(), span)),
            help: None,
        }
    }

    /// An error about input that is not in a file (a flag, a build arg).
    pub fn input(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            location: None,
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Error {
        self.help = Some(help.into());
        self
    }

    /// `file`, 1-based line and column, when the error has a location.
    pub fn position(&self) -> Option<(&str, usize, usize)> {
        self.location.as_ref().map(|(f, s)| {
            let (l, c) = f.line_col(s.start);
            (f.name.as_str(), l, c)
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position() {
            Some((file, line, col)) => write!(f, "{file}:{line}:{col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl Diagnostic for Error {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (_, span) = self.location.as_ref()?;
        let len = span.end.saturating_sub(span.start).max(1);
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some("here".into()),
            span.start,
            len,
        ))))
    }
}

impl Error {
    /// The error as a miette report that names the file, for rendering by the CLI. (The source
    /// is attached here, named, rather than by `Diagnostic::source_code`, which would win.)
    pub fn into_report(self) -> miette::Report {
        let named = self
            .location
            .as_ref()
            .map(|(f, _)| NamedSource::new(f.name.clone(), f.text.clone()));
        let report = miette::Report::new(self);
        match named {
            Some(n) => report.with_source_code(n),
            None => report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let f = SourceFile::new("Dockerfile", "FROM x\nFOO bar\n");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(7), (2, 1));
        assert_eq!(f.line_col(11), (2, 5));
        assert_eq!(f.line_text(2), "FOO bar");
        let e = Error::at(&f, Span::new(7, 10), "unknown instruction: FOO");
        assert_eq!(e.to_string(), "Dockerfile:2:1: unknown instruction: FOO");
    }
}
