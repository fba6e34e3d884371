//! Pass two, table-driven: Dockerfile text → parser nodes → typed instructions, and the errors
//! (message and `line:col`) of bad instructions. Expectations follow BuildKit
//! (`frontend/dockerfile/instructions/parse.go`, `bflag.go`, `parser/`); where kiln differs, the
//! test is `#[ignore]`d with the difference in its reason.

use kiln_frontend::convert::{self, BuildOptions, ImageResolver, ResolvedImage};
use kiln_frontend::diagnostic::{Error, SourceFile};
use kiln_frontend::instructions::{self, Command, Healthcheck, Instruction, Kind};
use kiln_frontend::parser::{self, Heredoc};
use kiln_oci::Platform;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn parse(text: &str) -> Result<Vec<Instruction>, Error> {
    let df = parser::parse(SourceFile::new("Dockerfile", text))?;
    instructions::parse_all(&df.file, df.directives.escape, &df.nodes)
}

/// `line:col` of an error, or `-` when it has no location.
fn position(e: &Error) -> String {
    match e.position() {
        Some((_, line, col)) => format!("{line}:{col}"),
        None => "-".to_string(),
    }
}

fn heredoc(h: &Heredoc) -> String {
    let q = if h.expand { "" } else { "'" };
    let chomp = if h.chomp { "-" } else { "" };
    format!(" <<{chomp}{q}{}{q} {:?}", h.name, h.content)
}

fn command(c: &Command) -> String {
    let mut s = format!(
        "{} {:?}",
        if c.shell_form { "shell" } else { "exec" },
        c.args
    );
    for h in &c.heredocs {
        s.push_str(&heredoc(h));
    }
    s
}

/// A compact, canonical rendering of a typed instruction (words as the parser leaves them,
/// unexpanded).
fn describe(kind: &Kind) -> String {
    match kind {
        Kind::From(f) => {
            let mut s = "FROM ".to_string();
            if let Some(p) = &f.platform {
                s.push_str(&format!("--platform={p} "));
            }
            s.push_str(&f.image);
            if let Some(n) = &f.name {
                s.push_str(&format!(" AS {n}"));
            }
            s
        }
        Kind::Run(r) => {
            let mut s = "RUN ".to_string();
            for (m, _) in &r.mounts {
                s.push_str(&format!("--mount={m} "));
            }
            if let Some((n, _)) = &r.network {
                s.push_str(&format!("--network={n} "));
            }
            if let Some((n, _)) = &r.security {
                s.push_str(&format!("--security={n} "));
            }
            s.push_str(&command(&r.command));
            s
        }
        Kind::Cmd(c) => format!("CMD {}", command(c)),
        Kind::Entrypoint(c) => format!("ENTRYPOINT {}", command(c)),
        Kind::Label(pairs) => format!("LABEL {pairs:?}"),
        Kind::Maintainer(m) => format!("MAINTAINER {m:?}"),
        Kind::Expose(p) => format!("EXPOSE {p:?}"),
        Kind::Env(pairs) => format!("ENV {pairs:?}"),
        Kind::Copy(c) => {
            let mut s = if c.add { "ADD" } else { "COPY" }.to_string();
            if let Some((v, _)) = &c.from {
                s.push_str(&format!(" --from={v}"));
            }
            if let Some((v, _)) = &c.chown {
                s.push_str(&format!(" --chown={v}"));
            }
            if let Some((v, _)) = &c.chmod {
                s.push_str(&format!(" --chmod={v}"));
            }
            if c.link {
                s.push_str(" --link");
            }
            if c.parents {
                s.push_str(" --parents");
            }
            for e in &c.excludes {
                s.push_str(&format!(" --exclude={e}"));
            }
            if let Some((v, _)) = &c.checksum {
                s.push_str(&format!(" --checksum={v}"));
            }
            if c.keep_git_dir {
                s.push_str(" --keep-git-dir");
            }
            s.push_str(&format!(" {:?} {:?}", c.sources, c.dest));
            for h in &c.heredocs {
                s.push_str(&heredoc(h));
            }
            s
        }
        Kind::Volume(v) => format!("VOLUME {v:?}"),
        Kind::User(u) => format!("USER {u:?}"),
        Kind::Workdir(w) => format!("WORKDIR {w:?}"),
        Kind::Arg(decls) => {
            let parts: Vec<String> = decls
                .iter()
                .map(|d| match &d.default {
                    Some(v) => format!("{}={v:?}", d.name),
                    None => d.name.clone(),
                })
                .collect();
            format!("ARG {}", parts.join(" "))
        }
        // The trigger is kept as written; parse it here to describe it.
        Kind::Onbuild(inner) => {
            let file = kiln_frontend::SourceFile::new("trigger", inner.original.clone());
            let parsed = kiln_frontend::instructions::parse(&file, '\\', inner)
                .unwrap_or_else(|e| panic!("trigger {:?}: {e}", inner.original));
            format!("ONBUILD {}", describe(&parsed.kind))
        }
        Kind::Stopsignal(s) => format!("STOPSIGNAL {s:?}"),
        Kind::Healthcheck(Healthcheck::None) => "HEALTHCHECK NONE".to_string(),
        Kind::Healthcheck(Healthcheck::Check {
            command: c,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        }) => format!(
            "HEALTHCHECK interval={interval} timeout={timeout} start_period={start_period} \
             start_interval={start_interval} retries={retries} {}",
            command(c)
        ),
        Kind::Shell(s) => format!("SHELL {s:?}"),
    }
}

/// Runs a table of `(dockerfile, expected description of its last instruction)`.
fn check_kinds(table: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (i, (input, want)) in table.iter().enumerate() {
        match parse(input) {
            Ok(instrs) => {
                let got = instrs
                    .last()
                    .map(|ins| describe(&ins.kind))
                    .unwrap_or_else(|| "<no instruction>".into());
                if got != *want {
                    failures.push(format!(
                        "row {i}: {input:?}\n   want: {want}\n    got: {got}"
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "row {i}: {input:?}\n   want: {want}\n    got error: {e}"
            )),
        }
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

/// Runs a table of `(dockerfile, "line:col", substrings the message must contain)`.
fn check_errors(table: &[(&str, &str, &[&str])]) {
    let mut failures = Vec::new();
    for (i, (input, want_pos, want_msg)) in table.iter().enumerate() {
        match parse(input) {
            Ok(instrs) => failures.push(format!(
                "row {i}: {input:?}\n   want error at {want_pos} containing {want_msg:?}\n    got Ok: {:?}",
                instrs.iter().map(|i| describe(&i.kind)).collect::<Vec<_>>()
            )),
            Err(e) => {
                let pos = position(&e);
                let missing: Vec<&&str> =
                    want_msg.iter().filter(|m| !e.message.contains(**m)).collect();
                if pos != *want_pos || !missing.is_empty() {
                    failures.push(format!(
                        "row {i}: {input:?}\n   want error at {want_pos} containing {want_msg:?}\n    got error at {pos}: {:?}",
                        e.message
                    ));
                }
                // The Display form is `file:line:col: message`.
                let shown = e.to_string();
                if !shown.starts_with(&format!("Dockerfile:{want_pos}: ")) {
                    failures.push(format!("row {i}: Display is {shown:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Typed results
// ---------------------------------------------------------------------------------------------

#[test]
fn from() {
    check_kinds(&[
        ("FROM alpine", "FROM alpine"),
        ("FROM alpine:3.19 AS build", "FROM alpine:3.19 AS build"),
        ("from scratch", "FROM scratch"),
        (
            "FROM --platform=linux/arm64 alpine as Build",
            "FROM --platform=linux/arm64 alpine AS Build",
        ),
        (
            "FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS builder",
            "FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS builder",
        ),
        (
            "FROM docker.io/library/alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "FROM docker.io/library/alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ]);
}

#[test]
fn run() {
    check_kinds(&[
        ("RUN echo hello world", r#"RUN shell ["echo hello world"]"#),
        (r#"RUN ["echo", "hello world"]"#, r#"RUN exec ["echo", "hello world"]"#),
        // Not valid JSON: shell form, text as written.
        ("RUN [echo, hi]", r#"RUN shell ["[echo, hi]"]"#),
        ("RUN echo [a]", r#"RUN shell ["echo [a]"]"#),
        // Continuation lines are joined, the escape removed, the next line kept as is.
        (
            "RUN apt-get update && \\\n    apt-get install -y x",
            r#"RUN shell ["apt-get update &&     apt-get install -y x"]"#,
        ),
        // Comment lines inside a continuation are dropped.
        (
            "RUN a \\\n# comment\n b",
            r#"RUN shell ["a  b"]"#,
        ),
        (
            "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok --network=none --security=insecure make",
            r#"RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok --network=none --security=insecure shell ["make"]"#,
        ),
        (
            r#"RUN --network=default --security=sandbox ["a", "b"]"#,
            r#"RUN --network=default --security=sandbox exec ["a", "b"]"#,
        ),
        ("RUN --network=host true", r#"RUN --network=host shell ["true"]"#),
        // Heredocs.
        (
            "RUN <<EOF\necho a\necho b\nEOF\n",
            r#"RUN shell ["<<EOF"] <<EOF "echo a\necho b\n""#,
        ),
        (
            "RUN python3 <<'PY'\nprint(1)\nPY\n",
            r#"RUN shell ["python3 <<'PY'"] <<'PY' "print(1)\n""#,
        ),
        (
            "RUN <<-EOT\n\techo a\n\tEOT\n",
            r#"RUN shell ["<<-EOT"] <<-EOT "echo a\n""#,
        ),
        (
            "RUN cat <<A <<B\na\nA\nb\nB\n",
            r#"RUN shell ["cat <<A <<B"] <<A "a\n" <<B "b\n""#,
        ),
    ]);
}

#[test]
fn cmd_and_entrypoint() {
    check_kinds(&[
        (
            r#"CMD ["nginx", "-g", "daemon off;"]"#,
            r#"CMD exec ["nginx", "-g", "daemon off;"]"#,
        ),
        (
            "CMD nginx -g 'daemon off;'",
            r#"CMD shell ["nginx -g 'daemon off;'"]"#,
        ),
        (
            r#"ENTRYPOINT ["/entry.sh"]"#,
            r#"ENTRYPOINT exec ["/entry.sh"]"#,
        ),
        (
            "ENTRYPOINT exec /entry.sh \"$@\"",
            r#"ENTRYPOINT shell ["exec /entry.sh \"$@\""]"#,
        ),
    ]);
}

#[test]
fn label_and_maintainer() {
    check_kinds(&[
        (
            r#"LABEL a=1 "b c"="d e" f='g h'"#,
            r#"LABEL [("a", "1"), ("\"b c\"", "\"d e\""), ("f", "'g h'")]"#,
        ),
        // The old form: one pair, the rest of the line is the value.
        (
            "LABEL maintainer John  Doe",
            r#"LABEL [("maintainer", "John  Doe")]"#,
        ),
        (
            "LABEL multi.line=\"a\" \\\n      other=b",
            r#"LABEL [("multi.line", "\"a\""), ("other", "b")]"#,
        ),
        ("LABEL empty=", r#"LABEL [("empty", "")]"#),
        (
            "MAINTAINER Jane Doe <jane@example.com>",
            r#"MAINTAINER "Jane Doe <jane@example.com>""#,
        ),
    ]);
}

#[test]
fn expose() {
    check_kinds(&[
        ("EXPOSE 80", r#"EXPOSE ["80"]"#),
        (
            "EXPOSE 80 443/tcp 53/udp 8000-8010 $PORT",
            r#"EXPOSE ["80", "443/tcp", "53/udp", "8000-8010", "$PORT"]"#,
        ),
    ]);
}

#[test]
fn env() {
    check_kinds(&[
        (
            r#"ENV A=1 B="two words" C=three\ words"#,
            r#"ENV [("A", "1"), ("B", "\"two words\""), ("C", "three\\ words")]"#,
        ),
        ("ENV PATH=/x:$PATH", r#"ENV [("PATH", "/x:$PATH")]"#),
        // The old form `ENV k v w`: one pair, the rest of the line is the value.
        (
            "ENV GREETING hello big world",
            r#"ENV [("GREETING", "hello big world")]"#,
        ),
        ("ENV K  \"quoted v\"", r#"ENV [("K", "\"quoted v\"")]"#),
        ("ENV A=", r#"ENV [("A", "")]"#),
        ("ENV A=1 \\\n    B=2", r#"ENV [("A", "1"), ("B", "2")]"#),
    ]);
}

#[test]
fn copy_and_add() {
    check_kinds(&[
        ("COPY a b /dst/", r#"COPY ["a", "b"] "/dst/""#),
        ("COPY . .", r#"COPY ["."] ".""#),
        (
            r#"COPY ["with space", "/dst dir/"]"#,
            r#"COPY ["with space"] "/dst dir/""#,
        ),
        (
            "COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=tmp/ ./src /app/",
            r#"COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=tmp/ ["./src"] "/app/""#,
        ),
        ("COPY --link=false a b", r#"COPY ["a"] "b""#),
        ("COPY --link=true a b", r#"COPY --link ["a"] "b""#),
        (
            "COPY --chown=$UID:$GID --chmod=$MODE --from=$STAGE $SRC $DST",
            r#"COPY --from=$STAGE --chown=$UID:$GID --chmod=$MODE ["$SRC"] "$DST""#,
        ),
        (
            r#"COPY --from=0 ["a", "b", "/d/"]"#,
            r#"COPY --from=0 ["a", "b"] "/d/""#,
        ),
        (
            "ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/a.tar.gz /x/",
            r#"ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d ["https://example.com/a.tar.gz"] "/x/""#,
        ),
        (
            "ADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.10.1 /src",
            r#"ADD --keep-git-dir ["https://github.com/moby/buildkit.git#v0.10.1"] "/src""#,
        ),
        (
            "ADD --chown=1:1 --chmod=600 --link --exclude=a --exclude=b src.tar /d/",
            r#"ADD --chown=1:1 --chmod=600 --link --exclude=a --exclude=b ["src.tar"] "/d/""#,
        ),
        // Heredoc sources.
        (
            "COPY <<EOF /etc/motd\nhello $USER\nEOF\n",
            r#"COPY [] "/etc/motd" <<EOF "hello $USER\n""#,
        ),
        (
            "COPY <<\"EOF\" /f\nraw $X\nEOF\n",
            r#"COPY [] "/f" <<'EOF' "raw $X\n""#,
        ),
        (
            "COPY <<-EOF /f\n\tindented\n\t\ttwice\n\tEOF\n",
            r#"COPY [] "/f" <<-EOF "indented\ntwice\n""#,
        ),
        (
            "COPY <<A <<B /dir/\na\nA\nb\nB\n",
            r#"COPY [] "/dir/" <<A "a\n" <<B "b\n""#,
        ),
        (
            "COPY --chmod=755 src <<EOF /dir/\n#!/bin/sh\nEOF\n",
            r##"COPY --chmod=755 ["src"] "/dir/" <<EOF "#!/bin/sh\n""##,
        ),
    ]);
}

#[test]
fn volume_user_workdir_stopsignal_shell() {
    check_kinds(&[
        (
            r#"VOLUME ["/data", "/var/log"]"#,
            r#"VOLUME ["/data", "/var/log"]"#,
        ),
        ("VOLUME /data /var/log", r#"VOLUME ["/data", "/var/log"]"#),
        ("VOLUME $DIR", r#"VOLUME ["$DIR"]"#),
        ("USER app:staff", r#"USER "app:staff""#),
        ("USER 1000", r#"USER "1000""#),
        ("WORKDIR /usr/src/app", r#"WORKDIR "/usr/src/app""#),
        ("WORKDIR rel/dir", r#"WORKDIR "rel/dir""#),
        ("WORKDIR $HOME/x", r#"WORKDIR "$HOME/x""#),
        ("STOPSIGNAL SIGKILL", r#"STOPSIGNAL "SIGKILL""#),
        ("STOPSIGNAL 9", r#"STOPSIGNAL "9""#),
        (
            r#"SHELL ["/bin/bash", "-o", "pipefail", "-c"]"#,
            r#"SHELL ["/bin/bash", "-o", "pipefail", "-c"]"#,
        ),
        (
            r#"SHELL ["powershell", "-command"]"#,
            r#"SHELL ["powershell", "-command"]"#,
        ),
    ]);
}

#[test]
fn arg() {
    check_kinds(&[
        ("ARG A", "ARG A"),
        (r#"ARG A=1 B C="x y""#, r#"ARG A="1" B C="\"x y\"""#),
        ("ARG V=${OTHER:-def}", r#"ARG V="${OTHER:-def}""#),
        ("ARG EMPTY=", r#"ARG EMPTY="""#),
        ("ARG TARGETARCH TARGETOS", "ARG TARGETARCH TARGETOS"),
    ]);
}

#[test]
fn onbuild() {
    check_kinds(&[
        ("ONBUILD RUN echo hi", r#"ONBUILD RUN shell ["echo hi"]"#),
        ("onbuild env A=1", r#"ONBUILD ENV [("A", "1")]"#),
        (
            "ONBUILD COPY --chown=1 . /app/",
            r#"ONBUILD COPY --chown=1 ["."] "/app/""#,
        ),
        (
            "ONBUILD RUN <<EOF\necho hi\nEOF\n",
            r#"ONBUILD RUN shell ["<<EOF"] <<EOF "echo hi\n""#,
        ),
    ]);
}

#[test]
fn healthcheck() {
    check_kinds(&[
        ("HEALTHCHECK NONE", "HEALTHCHECK NONE"),
        ("HEALTHCHECK none", "HEALTHCHECK NONE"),
        (
            "HEALTHCHECK --interval=30s --timeout=5s --start-period=1m30s --start-interval=500ms --retries=3 CMD curl -f http://localhost/ || exit 1",
            r#"HEALTHCHECK interval=30000000000 timeout=5000000000 start_period=90000000000 start_interval=500000000 retries=3 shell ["curl -f http://localhost/ || exit 1"]"#,
        ),
        (
            r#"HEALTHCHECK CMD ["/bin/check", "--fast"]"#,
            r#"HEALTHCHECK interval=0 timeout=0 start_period=0 start_interval=0 retries=0 exec ["/bin/check", "--fast"]"#,
        ),
        (
            "HEALTHCHECK cmd true",
            r#"HEALTHCHECK interval=0 timeout=0 start_period=0 start_interval=0 retries=0 shell ["true"]"#,
        ),
        // A zero duration is "inherit", not an error.
        (
            "HEALTHCHECK --interval=0s --retries=0 CMD true",
            r#"HEALTHCHECK interval=0 timeout=0 start_period=0 start_interval=0 retries=0 shell ["true"]"#,
        ),
        (
            "HEALTHCHECK --timeout=1ms --interval=1h CMD true",
            r#"HEALTHCHECK interval=3600000000000 timeout=1000000 start_period=0 start_interval=0 retries=0 shell ["true"]"#,
        ),
    ]);
}

/// Every instruction keeps the node it came from: keyword, lines and original text.
#[test]
fn instructions_keep_their_nodes() {
    let text = "FROM scratch\n\nRUN a \\\n  b\nCOPY <<EOF /f\nx\nEOF\nONBUILD RUN c\n";
    let instrs = parse(text).unwrap();
    let rows: Vec<(String, usize, usize, String)> = instrs
        .iter()
        .map(|i| {
            (
                i.node.keyword.clone(),
                i.node.start_line,
                i.node.end_line,
                i.node.original.clone(),
            )
        })
        .collect();
    let want = [
        ("from", 1, 1, "FROM scratch"),
        ("run", 3, 4, "RUN a   b"),
        ("copy", 5, 7, "COPY <<EOF /f"),
        ("onbuild", 8, 8, "ONBUILD RUN c"),
    ];
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (i, (got, want)) in rows.iter().zip(want.iter()).enumerate() {
        assert_eq!(
            (got.0.as_str(), got.1, got.2, got.3.as_str()),
            *want,
            "instruction {i}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Errors with kiln's positions; messages are checked for BuildKit's words where kiln says
/// them, and for the offending value otherwise (see the ignored test below for wording).
#[test]
fn errors() {
    check_errors(&[
        // Unknown instruction.
        ("FROM scratch\nCPY a b\n", "2:1", &["unknown instruction: CPY"]),
        ("FROM scratch\n  frobnicate x\n", "2:3", &["unknown instruction: FROBNICATE"]),
        // Flags.
        ("COPY --foo=bar a b", "1:6", &["unknown flag", "foo"]),
        ("RUN --mount=type=bind,target=/x --foo x", "1:33", &["unknown flag", "foo"]),
        ("FROM --plat=linux/amd64 alpine", "1:6", &["unknown flag", "plat"]),
        ("ENV --x=1 A=1", "1:5", &["unknown flag", "x"]),
        ("COPY --from a b", "1:6", &["missing a value on flag", "from"]),
        ("RUN --network true", "1:5", &["missing a value on flag", "network"]),
        ("COPY --from=a --from=b x y", "1:15", &["duplicate flag specified", "from"]),
        ("FROM --platform=a --platform=b x", "1:19", &["duplicate flag specified", "platform"]),
        ("COPY --link=yes a b", "1:6", &["expecting boolean value for flag", "link", "yes"]),
        ("ADD --keep-git-dir=1 a b", "1:5", &["expecting boolean value for flag", "keep-git-dir", "1"]),
        // Missing arguments.
        ("EXPOSE", "1:1", &["EXPOSE requires at least one argument"]),
        ("VOLUME", "1:1", &["VOLUME requires at least one argument"]),
        ("ARG", "1:1", &["ARG requires at least one argument"]),
        ("ENV", "1:1", &["ENV requires at least one argument"]),
        ("LABEL", "1:1", &["LABEL requires at least one argument"]),
        ("ONBUILD", "1:1", &["ONBUILD requires at least one argument"]),
        ("HEALTHCHECK", "1:1", &["HEALTHCHECK requires at least one argument"]),
        ("FROM scratch\nUSER", "2:1", &["USER requires"]),
        ("FROM scratch\nWORKDIR", "2:1", &["WORKDIR requires"]),
        ("FROM scratch\nSTOPSIGNAL", "2:1", &["STOPSIGNAL requires"]),
        ("FROM scratch\nMAINTAINER", "2:1", &["MAINTAINER requires"]),
        // FROM arity.
        ("FROM a b", "1:6", &["FROM requires either one or three arguments"]),
        ("FROM a AS", "1:6", &["FROM requires either one or three arguments"]),
        ("FROM a b c", "1:6", &["FROM requires either one or three arguments"]),
        ("FROM a AS b c", "1:6", &["FROM requires either one or three arguments"]),
        // SHELL must be JSON.
        ("SHELL /bin/sh -c", "1:7", &["SHELL requires the arguments to be in JSON form"]),
        ("SHELL []", "1:7", &["SHELL"]),
        // HEALTHCHECK.
        ("HEALTHCHECK FOO x", "1:13", &[r#"Unknown type "FOO" in HEALTHCHECK (try CMD)"#]),
        ("HEALTHCHECK NONE x", "1:13", &["HEALTHCHECK NONE takes no arguments"]),
        ("HEALTHCHECK --interval=abc CMD x", "1:13", &["invalid duration", "\"abc\""]),
        ("HEALTHCHECK --timeout=5 CMD x", "1:13", &["5"]),
        ("HEALTHCHECK --start-period=500us CMD x", "1:13", &[r#"Interval "start-period" cannot be less than 1ms"#]),
        ("HEALTHCHECK --retries=-1 CMD x", "1:13", &["--retries cannot be negative"]),
        ("HEALTHCHECK --retries=x CMD x", "1:13", &["x"]),
        ("HEALTHCHECK CMD", "1:13", &["HEALTHCHECK"]),
        // COPY/ADD.
        ("COPY --chmod=abc a b", "1:6", &["chmod", "abc"]),
        ("ADD --chmod=0999 a b", "1:5", &["chmod", "0999"]),
        (
            "ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d local.tar /d",
            "1:5",
            &["checksum can't be specified for non-HTTP(S) sources"],
        ),
        ("COPY --checksum=sha256:00 https://x/y /d", "1:6", &["unknown flag", "checksum"]),
        ("COPY --keep-git-dir a b", "1:6", &["unknown flag", "keep-git-dir"]),
        (
            "COPY a",
            "1:6",
            &["COPY requires at least two arguments, but only one was provided. Destination could not be determined"],
        ),
        (
            "ADD onlyone",
            "1:5",
            &["ADD requires at least two arguments, but only one was provided. Destination could not be determined"],
        ),
        // RUN --network / --security values.
        ("RUN --network=bad x", "1:5", &["network", "\"bad\""]),
        ("RUN --security=bad x", "1:5", &["security", "\"bad\""]),
        // ONBUILD triggers that are not allowed.
        ("ONBUILD ONBUILD RUN x", "1:9", &["Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"]),
        ("ONBUILD FROM x", "1:9", &["FROM isn't allowed as an ONBUILD trigger"]),
        ("ONBUILD MAINTAINER me", "1:9", &["MAINTAINER isn't allowed as an ONBUILD trigger"]),
        // ENV / LABEL pairs form without `=`.
        (
            "ENV A=1 B",
            "1:5",
            &[r#"Syntax error - can't find = in "B". Must be of the form: name=value"#],
        ),
        (
            "LABEL a=1 b",
            "1:7",
            &[r#"Syntax error - can't find = in "b". Must be of the form: name=value"#],
        ),
        ("ENV A", "1:5", &["ENV must have two arguments"]),
        ("LABEL a", "1:7", &["LABEL must have two arguments"]),
        ("ENV =1", "1:5", &["ENV names can not be blank"]),
        ("ARG =x", "1:5", &["ARG names can not be blank"]),
        // Unterminated heredoc.
        ("RUN <<EOF\necho", "1:5", &["unterminated heredoc"]),
        // A later error line: the first error wins and points at its own line.
        ("FROM scratch\nRUN ok\nEXPOSE\nBAD x\n", "3:1", &["EXPOSE requires at least one argument"]),
    ]);
}

#[test]
fn unknown_instruction_suggests_the_nearest() {
    for (input, help) in [
        ("CPY a b", "did you mean COPY?"),
        ("RUNN x", "did you mean RUN?"),
        ("ENTRYPONT x", "did you mean ENTRYPOINT?"),
        ("HELTHCHECK NONE", "did you mean HEALTHCHECK?"),
    ] {
        let e = parse(input).expect_err(input);
        assert_eq!(e.help.as_deref(), Some(help), "row {input:?}: {e}");
    }
    let e = parse("XYZZYQ a").unwrap_err();
    assert!(
        e.help
            .as_deref()
            .is_some_and(|h| h.starts_with("instructions are")),
        "no close suggestion: {:?}",
        e.help
    );
}

/// BuildKit's wording for flag errors names the flag with its dashes (`bflag.go`:
/// `errors.Errorf("unknown flag: %s", flagName)` where `flagName` is the `--name` part).
#[test]
fn flag_error_wording_matches_buildkit() {
    check_errors(&[
        ("COPY --foo=bar a b", "1:6", &["unknown flag: --foo"]),
        (
            "COPY --from a b",
            "1:6",
            &["missing a value on flag: --from"],
        ),
        (
            "COPY --link= a b",
            "1:6",
            &["missing a value on flag: --link"],
        ),
        (
            "COPY --from=a --from=b x y",
            "1:15",
            &["duplicate flag specified: --from"],
        ),
        (
            "COPY --link=yes a b",
            "1:6",
            &["expecting boolean value for flag --link, not: yes"],
        ),
    ]);
}

/// BuildKit's bool flags take `true`/`false` in any case, and `--flag=` (empty) is an error.
#[test]
fn bool_flags_like_buildkit() {
    check_kinds(&[
        ("COPY --link=TRUE a b", r#"COPY --link ["a"] "b""#),
        ("COPY --link=False a b", r#"COPY ["a"] "b""#),
    ]);
    check_errors(&[("COPY --link= a b", "1:6", &["missing a value on flag"])]);
}

/// `errExactlyOneArgument` in BuildKit's parse.go for MAINTAINER, WORKDIR, USER, STOPSIGNAL.
#[test]
fn exactly_one_argument_wording() {
    check_errors(&[
        (
            "FROM scratch\nUSER",
            "2:1",
            &["USER requires exactly one argument"],
        ),
        (
            "FROM scratch\nWORKDIR",
            "2:1",
            &["WORKDIR requires exactly one argument"],
        ),
        (
            "FROM scratch\nSTOPSIGNAL",
            "2:1",
            &["STOPSIGNAL requires exactly one argument"],
        ),
        (
            "FROM scratch\nMAINTAINER",
            "2:1",
            &["MAINTAINER requires exactly one argument"],
        ),
    ]);
}

/// BuildKit's `runNetworkPostHook`: `invalid network mode %q`; `runSecurityPostHook`:
/// `security %q is not valid`; parseHealthcheck: `Missing command after HEALTHCHECK CMD` and
/// the type uppercased in `Unknown type %#v`.
#[test]
fn run_and_healthcheck_wording() {
    check_errors(&[
        (
            "RUN --network=bad x",
            "1:5",
            &[r#"invalid network mode "bad""#],
        ),
        (
            "RUN --security=bad x",
            "1:5",
            &[r#"security "bad" is not valid"#],
        ),
        (
            "HEALTHCHECK CMD",
            "1:13",
            &["Missing command after HEALTHCHECK CMD"],
        ),
        (
            "HEALTHCHECK foo x",
            "1:13",
            &[r#"Unknown type "FOO" in HEALTHCHECK (try CMD)"#],
        ),
        (
            "HEALTHCHECK --retries=-1 CMD x",
            "1:13",
            &["--retries cannot be negative (-1)"],
        ),
    ]);
}

/// BuildKit's parseAdd declares no `--from` and no `--parents` flag (only COPY has them), so
/// `ADD --from=…` and `ADD --parents` are `unknown flag` errors.
#[test]
fn add_has_no_from_or_parents_flag() {
    check_errors(&[
        ("ADD --from=build a /d", "1:5", &["unknown flag", "from"]),
        ("ADD --parents a /d/", "1:5", &["unknown flag", "parents"]),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Parser directives, through the whole pipeline (parse → instructions → plan)
// ---------------------------------------------------------------------------------------------

struct NoImages;

impl ImageResolver for NoImages {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
        Err(format!("{reference}: no images in this test"))
    }
}

fn plan(text: &str) -> Result<(parser::Dockerfile, convert::BuildPlan), Error> {
    let df = parser::parse(SourceFile::new("Dockerfile", text))?;
    let opts = BuildOptions {
        platform: Some("linux/amd64".parse().unwrap()),
        ..Default::default()
    };
    let p = convert::plan(&df, &opts, &NoImages)?;
    Ok((df, p))
}

fn env_of(p: &convert::BuildPlan) -> Vec<String> {
    p.image.config.env.clone().unwrap_or_default()
}

#[test]
fn escape_directive_with_windows_paths() {
    let text = "# escape=`\nFROM scratch\nENV WINPATH=C:\\Windows\\System32 `\n    OTHER=x\nRUN dir C:\\ `\n  && echo done\nRUN echo C:\\\nWORKDIR C:\\app\n";
    let (df, p) = plan(text).unwrap();
    assert_eq!(df.directives.escape, '`');
    let env = env_of(&p);
    assert!(
        env.contains(&"WINPATH=C:\\Windows\\System32".to_string()),
        "{env:?}"
    );
    assert!(env.contains(&"OTHER=x".to_string()), "{env:?}");
    let instrs = instructions::parse_all(&df.file, df.directives.escape, &df.nodes).unwrap();
    let kinds: Vec<String> = instrs.iter().map(|i| describe(&i.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            "FROM scratch".to_string(),
            r#"ENV [("WINPATH", "C:\\Windows\\System32"), ("OTHER", "x")]"#.to_string(),
            r#"RUN shell ["dir C:\\   && echo done"]"#.to_string(),
            // With the backtick escape, a trailing backslash does not continue the line.
            r#"RUN shell ["echo C:\\"]"#.to_string(),
            r#"WORKDIR "C:\\app""#.to_string(),
        ]
    );
}

#[test]
fn syntax_and_check_directives() {
    let text =
        "# syntax=docker/dockerfile:1.7\n# check=skip=all;error=true\nFROM scratch\nENV A=1\n";
    let (df, p) = plan(text).unwrap();
    assert_eq!(
        df.directives.syntax.as_ref().map(|(v, _)| v.as_str()),
        Some("docker/dockerfile:1.7")
    );
    assert_eq!(
        df.directives.check.as_ref().map(|(v, _)| v.as_str()),
        Some("skip=all;error=true")
    );
    assert_eq!(df.directives.escape, '\\');
    assert!(env_of(&p).contains(&"A=1".to_string()));
}

#[test]
fn directives_table() {
    // (dockerfile, escape, syntax) for files that parse.
    let table: &[(&str, char, Option<&str>)] = &[
        ("FROM scratch", '\\', None),
        ("#escape=`\nFROM scratch", '`', None),
        ("# ESCAPE = `\nFROM scratch", '`', None),
        (
            "# syntax = docker/dockerfile:1\n# escape=`\nFROM scratch",
            '`',
            Some("docker/dockerfile:1"),
        ),
        // After an instruction, a directive is a comment.
        ("FROM scratch\n# escape=`\nRUN a \\\n b", '\\', None),
        // An empty line ends the directives.
        ("\n# escape=`\nFROM scratch", '\\', None),
        // An unknown directive ends them too.
        ("# foo=bar\n# escape=`\nFROM scratch", '\\', None),
    ];
    for (i, (text, escape, syntax)) in table.iter().enumerate() {
        let (df, _) = plan(text).unwrap_or_else(|e| panic!("row {i}: {text:?}: {e}"));
        assert_eq!(df.directives.escape, *escape, "row {i}: {text:?}");
        assert_eq!(
            df.directives.syntax.as_ref().map(|(v, _)| v.as_str()),
            *syntax,
            "row {i}: {text:?}"
        );
    }
}

#[test]
fn directive_errors() {
    let table: &[(&str, &str, &str)] = &[
        (
            "# escape=\\\n# escape=`\nFROM scratch",
            "2:1",
            "only one escape parser directive can be used",
        ),
        (
            "# syntax=a\n# syntax=b\nFROM scratch",
            "2:1",
            "only one syntax parser directive can be used",
        ),
        (
            "# check=skip=all\n# CHECK=error=true\nFROM scratch",
            "2:1",
            "only one check parser directive can be used",
        ),
        (
            "# escape=x\nFROM scratch",
            "1:10",
            "invalid escape token 'x' does not match ` or \\",
        ),
    ];
    for (i, (text, pos, msg)) in table.iter().enumerate() {
        let e = plan(text).map(|_| ()).expect_err(text);
        assert_eq!(
            (position(&e).as_str(), e.message.as_str()),
            (*pos, *msg),
            "row {i}: {text:?}"
        );
    }
}

/// Only the message matters here (BuildKit reports these errors by line only).
fn check_error_messages(table: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (i, (input, want)) in table.iter().enumerate() {
        match parse(input) {
            Ok(instrs) => failures.push(format!(
                "row {i}: {input:?}\n   want error {want:?}\n    got Ok: {:?}",
                instrs.iter().map(|i| describe(&i.kind)).collect::<Vec<_>>()
            )),
            Err(e) if !e.message.contains(want) => failures.push(format!(
                "row {i}: {input:?}\n   want error {want:?}\n    got error: {:?}",
                e.message
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

/// BuildKit's parser (parser/line_parsers.go): parseJSON decodes the *first* JSON value with
/// `json.NewDecoder(...).Decode` (what follows is not read), and an array with a non-string
/// element is `errDockerfileNotStringArray`, which parseMaybeJSON and parseMaybeJSONToList
/// return as an error instead of falling back to the shell form (parser_test.go
/// invalidJSONArraysOfStrings).
#[test]
fn json_arrays_like_buildkit() {
    let msg = "when using JSON array syntax, arrays must be comprised of strings only";
    check_error_messages(&[
        (r#"RUN ["echo", 1]"#, msg),
        (r#"CMD ["a", true]"#, msg),
        (r#"ENTRYPOINT ["a", null]"#, msg),
        (r#"VOLUME ["/a", 1]"#, msg),
        (r#"COPY ["a", 1, "/d/"]"#, msg),
        (r#"SHELL ["a", 1]"#, msg),
    ]);
    check_kinds(&[
        (r#"CMD ["a"] extra"#, r#"CMD exec ["a"]"#),
        (r#"RUN ["a", "b"] c"#, r#"RUN exec ["a", "b"]"#),
    ]);
}

/// parse.go parseSourcesAndDest: `COPY <<EOF` alone has one argument (errNoDestinationArgument)
/// and a heredoc in the destination's place is `errBadHeredoc(command, "a destination")`.
#[test]
fn heredoc_is_not_a_destination() {
    check_error_messages(&[
        (
            "COPY <<EOF\nx\nEOF\n",
            "COPY requires at least two arguments",
        ),
        (
            "COPY a <<EOF\nx\nEOF\n",
            "COPY cannot accept a heredoc as a destination",
        ),
        (
            "ADD a <<EOF\nx\nEOF\n",
            "ADD cannot accept a heredoc as a destination",
        ),
    ]);
}

/// parse.go parseHealthcheck: `strconv.ParseInt(flRetries.Value, 10, 32)`, so a count beyond
/// int32 is an error.
#[test]
fn healthcheck_retries_is_int32() {
    check_error_messages(&[("HEALTHCHECK --retries=99999999999 CMD x", "99999999999")]);
}
