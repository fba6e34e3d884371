//! Typed instructions, built from the parser's nodes (pass two). Each instruction keeps the
//! node it came from, so later errors can point at it. Arguments are split and checked here but
//! not expanded: expansion needs the ARG/ENV scope, which only conversion knows.

use crate::diagnostic::{Error, SourceFile, Span};
use crate::parser::{Flag, Heredoc, Node};
use std::sync::Arc;

/// An instruction and the node it was parsed from.
#[derive(Clone, Debug)]
pub struct Instruction {
    pub kind: Kind,
    pub node: Node,
}

/// What an instruction says, words unexpanded.
#[derive(Clone, Debug)]
pub enum Kind {
    From(From),
    Run(Run),
    Cmd(Command),
    Entrypoint(Command),
    Label(Vec<(String, String)>),
    Maintainer(String),
    Expose(Vec<String>),
    Env(Vec<(String, String)>),
    Copy(Copy),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<ArgDecl>),
    /// The trigger as written; it is only parsed when a child stage runs it.
    Onbuild(Box<Node>),
    Stopsignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Clone, Debug)]
pub struct From {
    pub image: String,
    pub platform: Option<String>,
    /// The stage name as written (case kept; compare lowercased).
    pub name: Option<String>,
}

/// A command in exec form (`["a","b"]`) or shell form (`a b`), plus heredoc files.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub args: Vec<String>,
    /// Shell form: `args` is one string to hand to the stage's SHELL.
    pub shell_form: bool,
    pub heredocs: Vec<Heredoc>,
}

/// `RUN [--mount=…] [--network=…] [--security=…] command`.
#[derive(Clone, Debug)]
pub struct Run {
    pub command: Command,
    /// `--mount` values, unexpanded, each with the flag's span.
    pub mounts: Vec<(String, Span)>,
    pub network: Option<(String, Span)>,
    pub security: Option<(String, Span)>,
}

/// `COPY`/`ADD` with their flags.
#[derive(Clone, Debug)]
pub struct Copy {
    pub add: bool,
    pub sources: Vec<String>,
    pub dest: String,
    /// Heredoc sources (`COPY <<EOF /dest`), in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    pub from: Option<(String, Span)>,
    pub chown: Option<(String, Span)>,
    pub chmod: Option<(String, Span)>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    pub checksum: Option<(String, Span)>,
    pub keep_git_dir: bool,
}

/// One `NAME[=default]` of an ARG line.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`.
#[derive(Clone, Debug, PartialEq)]
pub enum Healthcheck {
    None,
    Check {
        command: Command,
        /// Durations in nanoseconds.
        interval: i64,
        timeout: i64,
        start_period: i64,
        start_interval: i64,
        retries: i64,
    },
}

/// Builds the typed instruction of every node, stopping at the first error.
pub fn parse_all(
    file: &Arc<SourceFile>,
    escape: char,
    nodes: &[Node],
) -> Result<Vec<Instruction>, Error> {
    nodes.iter().map(|n| parse(file, escape, n)).collect()
}

/// Builds the typed instruction of one node; `escape` is the Dockerfile's escape character.
pub fn parse(file: &Arc<SourceFile>, escape: char, node: &Node) -> Result<Instruction, Error> {
    let p = NodeParser { file, node, escape };
    let kind = match node.keyword.as_str() {
        "from" => p.from()?,
        "run" => p.run()?,
        "cmd" => Kind::Cmd(p.command_only()?),
        "entrypoint" => Kind::Entrypoint(p.command_only()?),
        "label" => Kind::Label(p.name_values("LABEL")?),
        "maintainer" => Kind::Maintainer(p.one_string()?),
        "expose" => Kind::Expose(p.words_at_least_one()?),
        "env" => Kind::Env(p.name_values("ENV")?),
        "add" => p.copy(true)?,
        "copy" => p.copy(false)?,
        "volume" => Kind::Volume(p.json_or_words()?),
        "user" => Kind::User(p.one_string()?),
        "workdir" => Kind::Workdir(p.one_string()?),
        "arg" => Kind::Arg(p.args()?),
        "onbuild" => p.onbuild()?,
        "stopsignal" => Kind::Stopsignal(p.one_string()?),
        "healthcheck" => Kind::Healthcheck(p.healthcheck()?),
        "shell" => Kind::Shell(p.shell()?),
        _ => {
            let word = &file.text[node.keyword_span.start..node.keyword_span.end];
            return Err(Error::at(
                file,
                node.keyword_span,
                format!("unknown instruction: {}", word.to_uppercase()),
            )
            .with_help(did_you_mean(&node.keyword)));
        }
    };
    Ok(Instruction {
        kind,
        node: node.clone(),
    })
}

const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

fn did_you_mean(keyword: &str) -> String {
    let upper = keyword.to_uppercase();
    let best = INSTRUCTIONS
        .iter()
        .map(|i| (edit_distance(i, &upper), *i))
        .min()
        .filter(|(d, _)| *d <= (upper.len() / 3).max(1));
    match best {
        Some((_, i)) => format!("did you mean {i}?"),
        None => format!("instructions are {}", INSTRUCTIONS.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

struct NodeParser<'a> {
    file: &'a Arc<SourceFile>,
    node: &'a Node,
    escape: char,
}

/// The kinds of flag an instruction accepts.
enum FlagKind {
    Bool,
    String,
    /// May be given several times.
    List,
}

/// Flags after checking: each known flag's values.
struct Flags<'a> {
    given: Vec<&'a Flag>,
}

impl<'a> Flags<'a> {
    fn string(&self, name: &str) -> Option<(String, Span)> {
        self.given
            .iter()
            .rev()
            .find(|f| f.name == name)
            .map(|f| (f.value.clone().unwrap_or_default(), f.span))
    }

    fn list(&self, name: &str) -> Vec<(String, Span)> {
        self.given
            .iter()
            .filter(|f| f.name == name)
            .map(|f| (f.value.clone().unwrap_or_default(), f.span))
            .collect()
    }

    fn bool(&self, name: &str) -> bool {
        self.given
            .iter()
            .rev()
            .find(|f| f.name == name)
            .map(|f| {
                f.value
                    .as_deref()
                    .is_none_or(|v| !v.eq_ignore_ascii_case("false"))
            })
            .unwrap_or(false)
    }
}

impl<'a> NodeParser<'a> {
    fn name(&self) -> String {
        self.node.keyword.to_uppercase()
    }

    fn err(&self, span: Span, msg: impl Into<String>) -> Error {
        Error::at(self.file, span, msg)
    }

    fn rest_span(&self) -> Span {
        let end = self.node.span.end.max(self.node.rest_span.start);
        Span::new(self.node.rest_span.start, end)
    }

    /// Checks the given flags against what the instruction accepts.
    fn flags(&self, allowed: &[(&str, FlagKind)]) -> Result<Flags<'a>, Error> {
        let mut seen: Vec<&str> = Vec::new();
        for flag in &self.node.flags {
            let Some((_, kind)) = allowed.iter().find(|(n, _)| *n == flag.name) else {
                return Err(self.err(flag.span, format!("unknown flag: --{}", flag.name)));
            };
            match kind {
                FlagKind::Bool if flag.value.as_deref() == Some("") => {
                    return Err(self.err(
                        flag.span,
                        format!("missing a value on flag: --{}", flag.name),
                    ));
                }
                FlagKind::Bool => {
                    if let Some(v) = &flag.value {
                        if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                            return Err(self.err(
                                flag.span,
                                format!(
                                    "expecting boolean value for flag --{}, not: {v}",
                                    flag.name
                                ),
                            ));
                        }
                    }
                }
                FlagKind::String | FlagKind::List => {
                    if flag.value.is_none() {
                        return Err(self.err(
                            flag.span,
                            format!("missing a value on flag: --{}", flag.name),
                        ));
                    }
                }
            }
            if !matches!(kind, FlagKind::List) {
                if seen.contains(&flag.name.as_str()) {
                    return Err(self.err(
                        flag.span,
                        format!("duplicate flag specified: --{}", flag.name),
                    ));
                }
                seen.push(&flag.name);
            }
        }
        Ok(Flags {
            given: self.node.flags.iter().collect(),
        })
    }

    /// Exec form of `text`, `None` for shell form.
    fn json(&self, text: &str) -> Result<Option<Vec<String>>, Error> {
        parse_json_array(text).map_err(|e| self.err(self.rest_span(), e))
    }

    fn no_flags(&self) -> Result<(), Error> {
        self.flags(&[]).map(|_| ())
    }

    fn no_heredocs(&self) -> Result<(), Error> {
        match self.node.heredocs.first() {
            Some(h) => Err(self.err(h.span, format!("{} does not accept heredocs", self.name()))),
            None => Ok(()),
        }
    }

    fn require_args(&self) -> Result<(), Error> {
        if self.node.rest.trim().is_empty() {
            return Err(self.err(
                self.node.keyword_span,
                format!("{} requires at least one argument", self.name()),
            ));
        }
        Ok(())
    }

    fn from(&self) -> Result<Kind, Error> {
        let flags = self.flags(&[("platform", FlagKind::String)])?;
        self.no_heredocs()?;
        let words = split_whitespace(&self.node.rest);
        let (image, name) = match words.as_slice() {
            [image] => (image.clone(), None),
            [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                (image.clone(), Some(name.clone()))
            }
            [] => {
                return Err(self.err(
                    self.node.keyword_span,
                    "FROM requires either one or three arguments",
                ))
            }
            _ => {
                return Err(self.err(
                    self.rest_span(),
                    "FROM requires either one or three arguments: FROM <image> [AS <name>]",
                ))
            }
        };
        Ok(Kind::From(From {
            image,
            platform: flags.string("platform").map(|(v, _)| v),
            name,
        }))
    }

    /// RUN, CMD and ENTRYPOINT arguments: exec form when the text is a JSON array of strings,
    /// shell form otherwise.
    fn command(&self) -> Result<Command, Error> {
        self.require_args()?;
        let rest = self.node.rest.as_str();
        let heredocs = self.node.heredocs.clone();
        Ok(match self.json(rest)? {
            Some(args) => Command {
                args,
                shell_form: false,
                heredocs,
            },
            None => Command {
                args: vec![rest.to_string()],
                shell_form: true,
                heredocs,
            },
        })
    }

    fn command_only(&self) -> Result<Command, Error> {
        self.no_flags()?;
        self.no_heredocs()?;
        self.command()
    }

    fn run(&self) -> Result<Kind, Error> {
        let flags = self.flags(&[
            ("mount", FlagKind::List),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
        ])?;
        let network = flags.string("network");
        if let Some((n, span)) = &network {
            if !matches!(n.as_str(), "default" | "none" | "host") {
                return Err(self.err(
                    *span,
                    format!("invalid network mode {n:?}: use default, none or host"),
                ));
            }
        }
        let security = flags.string("security");
        if let Some((s, span)) = &security {
            if !matches!(s.as_str(), "sandbox" | "insecure") {
                return Err(self.err(
                    *span,
                    format!("security {s:?} is not valid: use sandbox or insecure"),
                ));
            }
        }
        Ok(Kind::Run(Run {
            command: self.command()?,
            mounts: flags.list("mount"),
            network,
            security,
        }))
    }

    fn one_string(&self) -> Result<String, Error> {
        self.no_flags()?;
        self.no_heredocs()?;
        if self.node.rest.trim().is_empty() {
            return Err(self.err(
                self.node.keyword_span,
                format!("{} requires exactly one argument", self.name()),
            ));
        }
        Ok(self.node.rest.trim().to_string())
    }

    fn words_at_least_one(&self) -> Result<Vec<String>, Error> {
        self.no_flags()?;
        self.no_heredocs()?;
        self.require_args()?;
        Ok(split_whitespace(&self.node.rest))
    }

    /// VOLUME: a JSON array or whitespace-separated words.
    fn json_or_words(&self) -> Result<Vec<String>, Error> {
        self.no_flags()?;
        self.no_heredocs()?;
        self.require_args()?;
        let words = self
            .json(&self.node.rest)?
            .unwrap_or_else(|| split_whitespace(&self.node.rest));
        if words.iter().any(|w| w.trim().is_empty()) {
            return Err(self.err(
                self.rest_span(),
                format!("{} specified can not be an empty string", self.name()),
            ));
        }
        Ok(words)
    }

    /// ENV and LABEL: `k=v k2="v 2"` pairs, or the old `k v w` form (one pair, the rest is the value).
    fn name_values(&self, what: &str) -> Result<Vec<(String, String)>, Error> {
        self.no_flags()?;
        self.no_heredocs()?;
        let rest = self.node.rest.trim();
        let words = split_shell_words(rest, self.escape);
        if words.is_empty() {
            return Err(self.err(
                self.node.keyword_span,
                format!("{what} requires at least one argument"),
            ));
        }
        if !words[0].contains('=') {
            let mut parts = rest.splitn(2, char::is_whitespace);
            let key = parts.next().unwrap_or_default().to_string();
            let value = parts.next().unwrap_or_default().trim_start().to_string();
            if value.is_empty() {
                return Err(self.err(self.rest_span(), format!("{what} must have two arguments")));
            }
            return Ok(vec![(key, value)]);
        }
        let mut pairs = Vec::new();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(self.err(
                    self.rest_span(),
                    format!(
                        "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
                    ),
                ));
            };
            if k.is_empty() {
                return Err(self.err(self.rest_span(), format!("{what} names can not be blank")));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(pairs)
    }

    fn args(&self) -> Result<Vec<ArgDecl>, Error> {
        self.no_flags()?;
        self.no_heredocs()?;
        let words = split_shell_words(self.node.rest.trim(), self.escape);
        if words.is_empty() {
            return Err(self.err(self.node.keyword_span, "ARG requires at least one argument"));
        }
        let mut decls = Vec::new();
        for w in words {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w.clone(), None),
            };
            if name.is_empty() {
                return Err(self.err(self.rest_span(), "ARG names can not be blank"));
            }
            decls.push(ArgDecl { name, default });
        }
        Ok(decls)
    }

    fn copy(&self, add: bool) -> Result<Kind, Error> {
        let mut allowed = vec![
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::List),
        ];
        if add {
            allowed.push(("checksum", FlagKind::String));
            allowed.push(("keep-git-dir", FlagKind::Bool));
        } else {
            allowed.push(("from", FlagKind::String));
            allowed.push(("parents", FlagKind::Bool));
        }
        let flags = self.flags(&allowed)?;
        let words = self
            .json(&self.node.rest)?
            .unwrap_or_else(|| split_whitespace(&self.node.rest));
        let heredoc_names: Vec<&str> = self.node.heredocs.iter().map(|h| h.name.as_str()).collect();
        let mut sources = Vec::new();
        let mut dest = None;
        for (i, w) in words.iter().enumerate() {
            if i + 1 == words.len() {
                dest = Some(w.clone());
            } else if heredoc_marker(w).is_some_and(|n| heredoc_names.contains(&n)) {
                // Heredoc sources are in `heredocs`.
            } else {
                sources.push(w.clone());
            }
        }
        let name = self.name();
        let dest = match dest {
            Some(d) if words.len() >= 2 => d,
            _ => {
                return Err(self.err(
                    self.rest_span(),
                    format!("{name} requires at least two arguments, but only one was provided. Destination could not be determined"),
                ))
            }
        };
        if Some(dest.as_str())
            .and_then(heredoc_marker)
            .is_some_and(|n| heredoc_names.contains(&n))
        {
            return Err(self.err(
                self.rest_span(),
                format!("{name} cannot accept a heredoc as a destination"),
            ));
        }
        let chmod = flags.string("chmod");
        if let Some((m, span)) = &chmod {
            if u32::from_str_radix(m, 8).is_err() && !m.contains('$') {
                return Err(self.err(
                    *span,
                    format!("invalid --chmod={m}: expected an octal mode such as 0644"),
                ));
            }
        }
        let checksum = flags.string("checksum");
        if let Some((_, span)) = &checksum {
            if !sources.iter().all(|s| is_url(s)) {
                return Err(self.err(*span, "checksum can't be specified for non-HTTP(S) sources"));
            }
        }
        Ok(Kind::Copy(Copy {
            add,
            sources,
            dest,
            heredocs: self.node.heredocs.clone(),
            from: flags.string("from"),
            chown: flags.string("chown"),
            chmod,
            link: flags.bool("link"),
            parents: flags.bool("parents"),
            excludes: flags.list("exclude").into_iter().map(|(v, _)| v).collect(),
            checksum,
            keep_git_dir: flags.bool("keep-git-dir"),
        }))
    }

    fn onbuild(&self) -> Result<Kind, Error> {
        self.no_flags()?;
        let inner = self.node.inner.as_deref().ok_or_else(|| {
            self.err(
                self.node.keyword_span,
                "ONBUILD requires at least one argument",
            )
        })?;
        match inner.keyword.as_str() {
            "onbuild" => Err(self.err(
                inner.keyword_span,
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            )),
            "from" | "maintainer" => Err(self.err(
                inner.keyword_span,
                format!(
                    "{} isn't allowed as an ONBUILD trigger",
                    inner.keyword.to_uppercase()
                ),
            )),
            _ => Ok(Kind::Onbuild(Box::new(inner.clone()))),
        }
    }

    fn healthcheck(&self) -> Result<Healthcheck, Error> {
        let flags = self.flags(&[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ])?;
        self.no_heredocs()?;
        self.require_args()?;
        let rest = self.node.rest.trim();
        let (word, tail) = match rest.split_once(char::is_whitespace) {
            Some((w, t)) => (w, t.trim_start()),
            None => (rest, ""),
        };
        if word.eq_ignore_ascii_case("none") {
            if !tail.is_empty() || !self.node.flags.is_empty() {
                return Err(self.err(self.rest_span(), "HEALTHCHECK NONE takes no arguments"));
            }
            return Ok(Healthcheck::None);
        }
        if !word.eq_ignore_ascii_case("cmd") {
            return Err(self.err(
                self.rest_span(),
                format!(
                    "Unknown type {:?} in HEALTHCHECK (try CMD)",
                    word.to_uppercase()
                ),
            ));
        }
        if tail.is_empty() {
            return Err(self.err(self.rest_span(), "Missing command after HEALTHCHECK CMD"));
        }
        let command = match self.json(tail)? {
            Some(args) => Command {
                args,
                shell_form: false,
                heredocs: vec![],
            },
            None => Command {
                args: vec![tail.to_string()],
                shell_form: true,
                heredocs: vec![],
            },
        };
        let duration = |name: &str| -> Result<i64, Error> {
            match flags.string(name) {
                None => Ok(0),
                Some((v, span)) => {
                    let d = parse_go_duration(&v).ok_or_else(|| {
                        self.err(span, format!("invalid duration for --{name}: {v:?}"))
                    })?;
                    if d != 0 && d < 1_000_000 {
                        return Err(
                            self.err(span, format!("Interval {name:?} cannot be less than 1ms"))
                        );
                    }
                    Ok(d)
                }
            }
        };
        let retries = match flags.string("retries") {
            None => 0,
            Some((v, span)) => {
                let n: i32 = v.parse().map_err(|_| {
                    self.err(
                        span,
                        format!("invalid --retries={v}: expected a number (32 bits)"),
                    )
                })?;
                if n < 0 {
                    return Err(self.err(span, format!("--retries cannot be negative ({n})")));
                }
                i64::from(n)
            }
        };
        Ok(Healthcheck::Check {
            command,
            interval: duration("interval")?,
            timeout: duration("timeout")?,
            start_period: duration("start-period")?,
            start_interval: duration("start-interval")?,
            retries,
        })
    }

    fn shell(&self) -> Result<Vec<String>, Error> {
        self.no_flags()?;
        self.no_heredocs()?;
        self.require_args()?;
        match self.json(&self.node.rest)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(self.err(
                self.rest_span(),
                "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]",
            )),
        }
    }
}

/// What exec form says about text that is not a JSON array of strings only.
pub const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// Exec form, as BuildKit reads it: the first JSON value of the text, when it is an array of
/// strings (text after it is ignored). Text that is not a JSON array is shell form (`None`);
/// an array with anything but strings is an error.
pub fn parse_json_array(text: &str) -> Result<Option<Vec<String>>, &'static str> {
    use serde_json::Value;
    let t = text.trim_start();
    if !t.starts_with('[') {
        return Ok(None);
    }
    match serde_json::Deserializer::from_str(t)
        .into_iter::<Value>()
        .next()
    {
        Some(Ok(Value::Array(items))) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(NOT_STRING_ARRAY),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Ok(None),
    }
}

/// Splits on whitespace.
pub fn split_whitespace(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// Splits on whitespace outside quotes, keeping quotes and escapes in the words (BuildKit's
/// `parseWords`): expansion removes them later.
pub fn split_shell_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                word.push(c);
            }
            Some(q) if c == q => {
                quote = None;
                word.push(c);
            }
            _ if c == escape && quote != Some('\'') => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The delimiter name if `word` is a heredoc marker (`<<EOF`, `<<-"EOF"`).
pub fn heredoc_marker(word: &str) -> Option<&str> {
    let w = word.strip_prefix("<<")?;
    let w = w.strip_prefix('-').unwrap_or(w);
    let w = w
        .strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .or_else(|| w.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')))
        .unwrap_or(w);
    (!w.is_empty()).then_some(w)
}

/// A source of ADD that is fetched rather than read from the context.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Go's time.ParseDuration, in nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * unit;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let n = total.round() as i64;
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array_or_shell() {
        assert_eq!(
            parse_json_array(r#"["a", "b c"]"#).unwrap(),
            Some(vec!["a".into(), "b c".into()])
        );
        assert_eq!(parse_json_array("[\"a\", 1]"), Err(NOT_STRING_ARRAY));
        assert_eq!(parse_json_array("[not json"), Ok(None));
        assert_eq!(parse_json_array("echo [a]"), Ok(None));
        assert_eq!(parse_json_array("[]"), Ok(Some(vec![])));
        assert_eq!(
            parse_json_array("[\"a\"] extra"),
            Ok(Some(vec!["a".into()]))
        );
    }

    #[test]
    fn shell_words_keep_quotes() {
        assert_eq!(
            split_shell_words(r#"A=1 B="two words" C='x y' D=a\ b"#, '\\'),
            vec!["A=1", r#"B="two words""#, "C='x y'", r"D=a\ b"]
        );
        assert_eq!(split_shell_words("  ", '\\'), Vec::<String>::new());
    }

    #[test]
    fn heredoc_markers() {
        for (w, want) in [
            ("<<EOF", Some("EOF")),
            ("<<-EOF", Some("EOF")),
            ("<<\"EOF\"", Some("EOF")),
            ("<<'E'", Some("E")),
            ("<<", None),
            ("EOF", None),
        ] {
            assert_eq!(heredoc_marker(w), want, "{w}");
        }
    }

    #[test]
    fn go_durations() {
        for (s, want) in [
            ("30s", Some(30_000_000_000)),
            ("1m30s", Some(90_000_000_000)),
            ("100ms", Some(100_000_000)),
            ("1.5h", Some(5_400_000_000_000)),
            ("0", Some(0)),
            ("5", None),
            ("", None),
            ("1x", None),
        ] {
            assert_eq!(parse_go_duration(s), want, "{s}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("cpy"), "did you mean COPY?");
        assert!(did_you_mean("foo").starts_with("instructions are"));
    }
}
