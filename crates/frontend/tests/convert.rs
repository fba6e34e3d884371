//! Pass three, table-driven: Dockerfile → build graph + image config, checked against
//! BuildKit's `frontend/dockerfile/dockerfile2llb/convert.go`. Where kiln differs from BuildKit
//! the test is `#[ignore]`d and its reason says how.

use kiln_frontend::convert::{self, BuildOptions, BuildPlan, ImageResolver, ResolvedImage};
use kiln_frontend::diagnostic::{Error, SourceFile};
use kiln_frontend::parser;
use kiln_oci::{HistoryEntry, ImageConfig, Platform, RunConfig};
use kiln_solver::{Chown, CopyAction, ExecOp, FileAction, MountKind, Op, OpId, Source, UserRef};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------------------------
// A fake image resolver
// ---------------------------------------------------------------------------------------------

/// Resolves the images of [`images`]; anything else is an error. Records every call as
/// `reference@platform`.
struct Fake {
    images: BTreeMap<String, ImageConfig>,
    calls: RefCell<Vec<String>>,
}

fn image(env: &[&str], f: impl FnOnce(&mut RunConfig)) -> ImageConfig {
    let mut c = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    c.config.env = Some(env.iter().map(|s| s.to_string()).collect());
    f(&mut c.config);
    c
}

fn images() -> BTreeMap<String, ImageConfig> {
    let mut m = BTreeMap::new();
    let mut base = image(&["PATH=/usr/bin:/bin", "FOO=img"], |c| {
        c.cmd = Some(vec!["base-cmd".into()]);
        c.labels = Some(BTreeMap::from([("from".to_string(), "base".to_string())]));
    });
    base.history.push(HistoryEntry {
        created_by: Some("base layer".into()),
        ..Default::default()
    });
    m.insert("base".into(), base);
    m.insert(
        "withuser".into(),
        image(&["PATH=/bin"], |c| {
            c.user = Some("nobody".into());
            c.working_dir = Some("/home/nobody".into());
        }),
    );
    m.insert(
        "onbuild".into(),
        image(&["PATH=/bin"], |c| {
            c.on_build = Some(vec![
                "ENV TRIGGERED=yes".into(),
                "RUN echo triggered".into(),
                "LABEL trig=$TRIGGERED".into(),
            ]);
        }),
    );
    m.insert("nopath".into(), image(&["FOO=bar"], |_| {}));
    m.insert(
        "base-arm64".into(),
        image(&["PATH=/bin", "ARCH=arm64"], |_| {}),
    );
    m.insert(
        "base-amd64".into(),
        image(&["PATH=/bin", "ARCH=amd64"], |_| {}),
    );
    m
}

impl Fake {
    fn new() -> Fake {
        Fake {
            images: images(),
            calls: RefCell::new(Vec::new()),
        }
    }
}

impl ImageResolver for Fake {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        self.calls
            .borrow_mut()
            .push(format!("{reference}@{platform}"));
        match self.images.get(reference) {
            Some(c) => Ok(ResolvedImage {
                reference: format!("docker.io/library/{reference}:latest"),
                digest: None,
                config: c.clone(),
                layout: None,
            }),
            None => Err(format!("pull access denied for {reference}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn opts() -> BuildOptions {
    BuildOptions {
        platform: Some(amd64()),
        ..Default::default()
    }
}

fn with_args(args: &[(&str, &str)]) -> BuildOptions {
    BuildOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..opts()
    }
}

fn try_plan_with(text: &str, opts: &BuildOptions, fake: &Fake) -> Result<BuildPlan, Error> {
    let df = parser::parse(SourceFile::new("Dockerfile", text))?;
    convert::plan(&df, opts, fake)
}

fn try_plan(text: &str, opts: &BuildOptions) -> Result<BuildPlan, Error> {
    try_plan_with(text, opts, &Fake::new())
}

fn plan(text: &str) -> BuildPlan {
    try_plan(text, &opts()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn position(e: &Error) -> String {
    match e.position() {
        Some((_, line, col)) => format!("{line}:{col}"),
        None => "-".to_string(),
    }
}

fn config_json(p: &BuildPlan) -> Value {
    serde_json::to_value(&p.image).unwrap()
}

/// The value at `pointer` in the config JSON, `null` when absent.
fn at(p: &BuildPlan, pointer: &str) -> Value {
    config_json(p)
        .pointer(pointer)
        .cloned()
        .unwrap_or(Value::Null)
}

fn env(p: &BuildPlan) -> Vec<String> {
    p.image.config.env.clone().unwrap_or_default()
}

fn env_value(p: &BuildPlan, key: &str) -> Option<String> {
    env(p).iter().rev().find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    })
}

fn history(p: &BuildPlan) -> Vec<(String, bool)> {
    p.image
        .history
        .iter()
        .map(|h| (h.created_by.clone().unwrap_or_default(), h.empty_layer))
        .collect()
}

fn execs(p: &BuildPlan) -> Vec<(OpId, &ExecOp)> {
    p.graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            Op::Exec(e) => Some((i, e)),
            _ => None,
        })
        .collect()
}

fn last_exec(p: &BuildPlan) -> &ExecOp {
    execs(p).last().map(|(_, e)| *e).expect("an exec op")
}

fn file_actions(p: &BuildPlan) -> Vec<(OpId, &FileAction)> {
    let mut v = Vec::new();
    for (i, n) in p.graph.nodes.iter().enumerate() {
        if let Op::File(f) = &n.op {
            for a in &f.actions {
                v.push((i, a));
            }
        }
    }
    v
}

fn copies(p: &BuildPlan) -> Vec<&CopyAction> {
    file_actions(p)
        .into_iter()
        .filter_map(|(_, a)| match a {
            FileAction::Copy(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// What kind of op `id` is, for messages: `scratch`, `context`, `image REF`, `exec ARGS`, `file`.
fn op_kind(p: &BuildPlan, id: OpId) -> String {
    match &p.graph.nodes[id].op {
        Op::Source(Source::Scratch) => "scratch".into(),
        Op::Source(Source::Local { name, .. }) => format!("local {name}"),
        Op::Source(Source::Image { reference, .. }) => format!("image {reference}"),
        Op::Source(Source::Http { url, .. }) => format!("http {url}"),
        Op::Source(Source::OciLayout { path, .. }) => format!("oci-layout {path}"),
        Op::Exec(e) => format!("exec {:?}", e.args),
        Op::File(_) => "file".into(),
        Op::Merge(inputs) => format!("merge {inputs:?}"),
    }
}

fn describe_copy(p: &BuildPlan, c: &CopyAction) -> String {
    format!(
        "from={} src={:?} dest={} owner={:?} mode={:?} extract={} exclude={:?} parents={}",
        op_kind(p, c.source),
        c.src,
        c.dest,
        c.owner,
        c.mode.map(|m| format!("{m:o}")),
        c.extract_archives,
        c.exclude,
        c.parents
    )
}

/// Collects failures of a table so that every row is reported at once.
struct Failures(Vec<String>);

impl Failures {
    fn new() -> Failures {
        Failures(Vec::new())
    }
    fn push(&mut self, s: String) {
        self.0.push(s);
    }
    fn check(self) {
        assert!(self.0.is_empty(), "\n{}\n", self.0.join("\n"));
    }
}

/// Rows of `(dockerfile, JSON pointer into the image config, expected JSON)`.
fn check_config(table: &[(&str, &str, Value)]) {
    let mut f = Failures::new();
    for (i, (text, pointer, want)) in table.iter().enumerate() {
        match try_plan(text, &opts()) {
            Ok(p) => {
                let got = at(&p, pointer);
                if got != *want {
                    f.push(format!(
                        "row {i}: {text:?} {pointer}\n   want: {want}\n    got: {got}"
                    ));
                }
            }
            Err(e) => f.push(format!("row {i}: {text:?}: error {e}")),
        }
    }
    f.check();
}

/// Rows of `(dockerfile, expected history entries after the base's)`.
fn check_history(table: &[(&str, &[(&str, bool)])]) {
    let mut f = Failures::new();
    for (i, (text, want)) in table.iter().enumerate() {
        match try_plan(text, &opts()) {
            Ok(p) => {
                let got = history(&p);
                let want: Vec<(String, bool)> =
                    want.iter().map(|(s, b)| (s.to_string(), *b)).collect();
                if got != want {
                    f.push(format!(
                        "row {i}: {text:?}\n   want: {want:?}\n    got: {got:?}"
                    ));
                }
            }
            Err(e) => f.push(format!("row {i}: {text:?}: error {e}")),
        }
    }
    f.check();
}

/// Rows of `(dockerfile, build args, expected value of OUT in the config Env)` (`None`: unset).
/// `(dockerfile, build args, expected OUT)`.
type OutRow<'a> = (&'a str, BuildArgs<'a>, Option<&'a str>);
/// `--build-arg` pairs.
type BuildArgs<'a> = &'a [(&'a str, &'a str)];

fn check_out(table: &[OutRow]) {
    let mut f = Failures::new();
    for (i, (text, args, want)) in table.iter().enumerate() {
        match try_plan(text, &with_args(args)) {
            Ok(p) => {
                let got = env_value(&p, "OUT");
                if got.as_deref() != *want {
                    f.push(format!(
                        "row {i}: {text:?} {args:?}\n   want OUT={want:?}\n    got OUT={got:?}"
                    ));
                }
            }
            Err(e) => f.push(format!("row {i}: {text:?}: error {e}")),
        }
    }
    f.check();
}

/// Rows of `(dockerfile, options, "line:col", substrings of the message)`.
fn check_errors(table: &[(&str, BuildOptions, &str, &[&str])]) {
    let mut f = Failures::new();
    for (i, (text, opts, pos, msgs)) in table.iter().enumerate() {
        match try_plan(text, opts) {
            Ok(_) => f.push(format!("row {i}: {text:?}: want an error at {pos}, got Ok")),
            Err(e) => {
                let got_pos = position(&e);
                let missing: Vec<&&str> =
                    msgs.iter().filter(|m| !e.message.contains(**m)).collect();
                if got_pos != *pos || !missing.is_empty() {
                    f.push(format!(
                        "row {i}: {text:?}\n   want error at {pos} containing {msgs:?}\n    got error at {got_pos}: {:?}",
                        e.message
                    ));
                }
            }
        }
    }
    f.check();
}

// ---------------------------------------------------------------------------------------------
// Image config evolution
// ---------------------------------------------------------------------------------------------

#[test]
fn config_evolution() {
    check_config(&[
        // ENV: set, replace in place, values from before the line.
        ("FROM scratch\nENV A=1\nENV B=2\nENV A=3", "/config/Env", json!([DEFAULT_PATH, "A=3", "B=2"])),
        ("FROM scratch\nENV A=0\nENV A=1 B=$A", "/config/Env", json!([DEFAULT_PATH, "A=1", "B=0"])),
        ("FROM scratch\nENV A=1 B=$A C=${A}x", "/config/Env", json!([DEFAULT_PATH, "A=1", "B=", "C=x"])),
        ("FROM scratch\nENV X hello  big world", "/config/Env", json!([DEFAULT_PATH, "X=hello  big world"])),
        (
            "FROM scratch\nENV A=1\nENV Q=\"a b\" R='$A' S=a\\ b T=\\$A U=\"$A\"",
            "/config/Env",
            json!([DEFAULT_PATH, "A=1", "Q=a b", "R=$A", "S=a b", "T=$A", "U=1"]),
        ),
        ("FROM base\nENV PATH=/opt/bin:$PATH", "/config/Env", json!(["PATH=/opt/bin:/usr/bin:/bin", "FOO=img"])),
        ("FROM base", "/config/Env", json!(["PATH=/usr/bin:/bin", "FOO=img"])),
        // ARGs never land in the config.
        ("FROM scratch\nARG A=1\nENV B=$A", "/config/Env", json!([DEFAULT_PATH, "B=1"])),
        // LABEL.
        (
            "FROM scratch\nLABEL a=1 \"b c\"=\"d e\"\nLABEL a=2",
            "/config/Labels",
            json!({"a": "2", "b c": "d e"}),
        ),
        ("FROM scratch\nLABEL k v  w", "/config/Labels", json!({"k": "v  w"})),
        ("FROM base\nLABEL own=1", "/config/Labels", json!({"from": "base", "own": "1"})),
        // EXPOSE: default tcp, ranges expanded, protocols kept.
        (
            "FROM scratch\nEXPOSE 80 53/udp 8000-8002/tcp\nEXPOSE 80/tcp",
            "/config/ExposedPorts",
            json!({"53/udp": {}, "80/tcp": {}, "8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}}),
        ),
        (
            "FROM scratch\nENV P=\"8080 9090/udp\"\nEXPOSE $P",
            "/config/ExposedPorts",
            json!({"8080/tcp": {}, "9090/udp": {}}),
        ),
        // VOLUME.
        (
            "FROM scratch\nVOLUME [\"/a\", \"/b c\"]\nVOLUME /d /e",
            "/config/Volumes",
            json!({"/a": {}, "/b c": {}, "/d": {}, "/e": {}}),
        ),
        // USER.
        ("FROM scratch\nENV U=app\nUSER $U:grp", "/config/User", json!("app:grp")),
        ("FROM withuser", "/config/User", json!("nobody")),
        // WORKDIR: relative paths join the previous one, cleaned.
        ("FROM scratch\nWORKDIR /a\nWORKDIR b\nWORKDIR ../c", "/config/WorkingDir", json!("/a/c")),
        ("FROM scratch\nENV D=/base\nWORKDIR $D/x/", "/config/WorkingDir", json!("/base/x")),
        ("FROM scratch\nWORKDIR rel", "/config/WorkingDir", json!("/rel")),
        ("FROM scratch\nWORKDIR /a/./b//c/..", "/config/WorkingDir", json!("/a/b")),
        ("FROM withuser\nWORKDIR sub", "/config/WorkingDir", json!("/home/nobody/sub")),
        // STOPSIGNAL.
        ("FROM scratch\nSTOPSIGNAL SIGKILL", "/config/StopSignal", json!("SIGKILL")),
        ("FROM scratch\nARG S=9\nSTOPSIGNAL $S", "/config/StopSignal", json!("9")),
        // HEALTHCHECK: durations in nanoseconds; the command is not expanded.
        (
            "FROM scratch\nHEALTHCHECK --interval=30s --timeout=5s --start-period=1m --start-interval=2s --retries=3 CMD curl -f http://x/",
            "/config/Healthcheck",
            json!({"Test": ["CMD-SHELL", "curl -f http://x/"], "Interval": 30_000_000_000i64, "Timeout": 5_000_000_000i64, "StartPeriod": 60_000_000_000i64, "StartInterval": 2_000_000_000i64, "Retries": 3}),
        ),
        ("FROM scratch\nHEALTHCHECK NONE", "/config/Healthcheck", json!({"Test": ["NONE"]})),
        (
            "FROM scratch\nHEALTHCHECK CMD [\"/bin/check\", \"-v\"]",
            "/config/Healthcheck",
            json!({"Test": ["CMD", "/bin/check", "-v"]}),
        ),
        (
            "FROM scratch\nENV U=x\nHEALTHCHECK CMD curl $U",
            "/config/Healthcheck",
            json!({"Test": ["CMD-SHELL", "curl $U"]}),
        ),
        // SHELL, then shell-form CMD/ENTRYPOINT wrapped in it.
        (
            "FROM scratch\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\nCMD echo $HOME",
            "/config/Cmd",
            json!(["/bin/bash", "-eo", "pipefail", "-c", "echo $HOME"]),
        ),
        (
            "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]",
            "/config/Shell",
            json!(["/bin/bash", "-c"]),
        ),
        (
            "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT run it",
            "/config/Entrypoint",
            json!(["/bin/bash", "-c", "run it"]),
        ),
        ("FROM scratch\nCMD [\"a\", \"b\"]", "/config/Cmd", json!(["a", "b"])),
        ("FROM scratch\nENTRYPOINT exec app", "/config/Entrypoint", json!(["/bin/sh", "-c", "exec app"])),
        // CMD / ENTRYPOINT reset rules.
        ("FROM base", "/config/Cmd", json!(["base-cmd"])),
        ("FROM base\nENTRYPOINT [\"e\"]", "/config/Cmd", Value::Null),
        ("FROM base\nCMD [\"c\"]\nENTRYPOINT [\"e\"]", "/config/Cmd", json!(["c"])),
        ("FROM base\nENTRYPOINT [\"e\"]\nCMD [\"c\"]", "/config/Cmd", json!(["c"])),
        ("FROM scratch AS p\nCMD [\"c\"]\nFROM p\nENTRYPOINT [\"e\"]", "/config/Cmd", Value::Null),
        ("FROM scratch AS p\nCMD [\"c\"]\nFROM p\nENV X=1", "/config/Cmd", json!(["c"])),
        ("FROM scratch AS p\nCMD [\"c\"]\nFROM p\nENTRYPOINT [\"e\"]", "/config/Entrypoint", json!(["e"])),
        // ONBUILD is recorded as written, unexpanded.
        (
            "FROM scratch\nONBUILD RUN echo hi\nONBUILD ENV X=$Y",
            "/config/OnBuild",
            json!(["RUN echo hi", "ENV X=$Y"]),
        ),
        // MAINTAINER sets the author.
        ("FROM scratch\nMAINTAINER Jane <j@x>", "/author", json!("Jane <j@x>")),
        // FROM scratch: BuildKit's emptyImage (image.go) has the default PATH and WorkingDir "/".
        ("FROM scratch", "/config/Env", json!([DEFAULT_PATH])),
        ("FROM scratch", "/config/WorkingDir", json!("/")),
        // Platform of the image.
        ("FROM scratch", "/architecture", json!("amd64")),
        ("FROM scratch", "/os", json!("linux")),
    ]);
}

/// convert.go dispatchCmd: `d.image.Config.ArgsEscaped = true`.
#[test]
fn cmd_sets_args_escaped() {
    check_config(&[
        (
            "FROM scratch\nCMD [\"a\"]",
            "/config/ArgsEscaped",
            json!(true),
        ),
        ("FROM scratch\nCMD a", "/config/ArgsEscaped", json!(true)),
    ]);
}

/// convert.go toDispatchState: "make sure that PATH is always set" — a base image without PATH
/// gets `PATH=` + the default appended.
#[test]
fn base_image_without_path_gets_default_path() {
    check_config(&[(
        "FROM nopath",
        "/config/Env",
        json!(["FOO=bar", DEFAULT_PATH]),
    )]);
}

/// parseOnBuild (parse.go) appends the heredocs to the trigger: `original += "\n" +
/// heredoc.Content + heredoc.Name`.
#[test]
fn onbuild_heredoc_is_recorded_with_its_body() {
    check_config(&[(
        "FROM scratch\nONBUILD RUN <<EOF\necho hi\nEOF\n",
        "/config/OnBuild",
        json!(["RUN <<EOF\necho hi\nEOF"]),
    )]);
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

/// `created_by` and `empty_layer` of each instruction, as convert.go's commitToHistory writes
/// them (`" # buildkit"` only when a state is passed: RUN, COPY, ADD).
#[test]
fn history_entries() {
    check_history(&[
        (
            "FROM scratch\nENV A=1 B=\"x y\"",
            &[("ENV A=1 B=x y", true)],
        ),
        (
            "FROM scratch\nLABEL a=b \"c d\"=e",
            &[("LABEL a=b c d=e", true)],
        ),
        ("FROM scratch\nMAINTAINER me", &[("MAINTAINER me", true)]),
        ("FROM scratch\nVOLUME /a /b", &[("VOLUME [/a /b]", true)]),
        ("FROM scratch\nUSER app", &[("USER app", true)]),
        ("FROM scratch\nWORKDIR /", &[("WORKDIR /", true)]),
        // WORKDIR makes a layer but commits with a nil state: no " # buildkit".
        ("FROM scratch\nWORKDIR /app", &[("WORKDIR /app", false)]),
        // EXPOSE: `%v` of the nat.PortSet map; HEALTHCHECK: `%q` of the struct pointer.
        (
            "FROM scratch\nEXPOSE 80 53/udp",
            &[("EXPOSE map[53/udp:{} 80/tcp:{}]", true)],
        ),
        (
            "FROM scratch\nHEALTHCHECK NONE",
            &[(
                r#"HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" '\x00'}"#,
                true,
            )],
        ),
        (
            "FROM scratch\nHEALTHCHECK --interval=30s --retries=3 CMD x",
            &[(
                r#"HEALTHCHECK &{["CMD-SHELL" "x"] "30s" "0s" "0s" "0s" '\x03'}"#,
                true,
            )],
        ),
        // dispatchOnbuild commits no history.
        ("FROM scratch\nONBUILD RUN x", &[]),
        ("FROM scratch\nARG A B=2", &[("ARG A B=2", true)]),
        ("ARG G=g\nFROM scratch\nARG G", &[("ARG G=g", true)]),
        ("FROM scratch\nARG B=2", &[("ARG B=2", true)]),
        (
            "FROM scratch\nSTOPSIGNAL SIGTERM",
            &[("STOPSIGNAL SIGTERM", true)],
        ),
        (
            "FROM scratch\nCMD [\"a\", \"b c\"]",
            &[(r#"CMD ["a" "b c"]"#, true)],
        ),
        (
            "FROM scratch\nCMD echo hi",
            &[(r#"CMD ["/bin/sh" "-c" "echo hi"]"#, true)],
        ),
        (
            "FROM scratch\nENTRYPOINT [\"x\"]",
            &[(r#"ENTRYPOINT ["x"]"#, true)],
        ),
        (
            "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]",
            &[("SHELL [/bin/bash -c]", true)],
        ),
        (
            "FROM scratch\nRUN echo hi",
            &[("RUN /bin/sh -c echo hi # buildkit", false)],
        ),
        (
            "FROM scratch\nRUN [\"a\", \"b\"]",
            &[("RUN a b # buildkit", false)],
        ),
        (
            "FROM scratch\nCOPY a /b",
            &[("COPY a /b # buildkit", false)],
        ),
        (
            "FROM scratch\nADD a b /d/",
            &[("ADD a b /d/ # buildkit", false)],
        ),
        (
            "FROM scratch\nCOPY <<EOF /f\nx\nEOF\n",
            &[("COPY <<EOF /f # buildkit", false)],
        ),
        (
            "FROM scratch\nENV D=/dst\nCOPY a $D",
            &[("ENV D=/dst", true), ("COPY a /dst # buildkit", false)],
        ),
        (
            "FROM scratch\nARG A=1\nENV A=env\nARG C=3\nRUN echo",
            &[
                ("ARG A=1", true),
                ("ENV A=env", true),
                ("ARG C=3", true),
                ("RUN |2 A=env C=3 /bin/sh -c echo # buildkit", false),
            ],
        ),
        // runCommandString lists every ARG in scope, `K=` when unset; a re-declared ARG keeps
        // its first place with its last value (see also moby/buildkit#915).
        (
            "FROM scratch\nARG A\nRUN echo",
            &[
                ("ARG A", true),
                ("RUN |1 A= /bin/sh -c echo # buildkit", false),
            ],
        ),
        (
            "FROM scratch\nARG A=1\nARG B=2\nARG A=3\nRUN x",
            &[
                ("ARG A=1", true),
                ("ARG B=2", true),
                ("ARG A=3", true),
                ("RUN |2 A=3 B=2 /bin/sh -c x # buildkit", false),
            ],
        ),
        (
            "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nRUN echo $X",
            &[
                ("SHELL [/bin/bash -c]", true),
                ("RUN /bin/bash -c echo $X # buildkit", false),
            ],
        ),
    ]);
    // The base image's history comes first.
    let p = plan("FROM base\nENV A=1");
    assert_eq!(
        history(&p),
        vec![
            ("base layer".to_string(), false),
            ("ENV A=1".to_string(), true)
        ]
    );
    // Every entry says who made it.
    assert!(p.image.history[1..]
        .iter()
        .all(|h| h.comment.as_deref() == Some("buildkit.dockerfile.v0")));
    // A build arg shows in the ARG entry.
    let p = try_plan("FROM scratch\nARG B=2", &with_args(&[("B", "cli")])).unwrap();
    assert_eq!(history(&p), vec![("ARG B=cli".to_string(), true)]);
}

#[test]
fn history_copy_lists_flags() {
    check_history(&[
        (
            "FROM scratch\nCOPY --chown=1:2 --chmod=644 a /b",
            &[("COPY --chown=1:2 --chmod=644 a /b # buildkit", false)],
        ),
        (
            "FROM scratch\nCOPY --parents a /b/",
            &[("COPY --parents a /b/ # buildkit", false)],
        ),
        (
            "FROM scratch\nARG U=app\nADD --chown=$U a /b",
            &[
                ("ARG U=app", true),
                ("ADD --chown=app a /b # buildkit", false),
            ],
        ),
    ]);
}

// ---------------------------------------------------------------------------------------------
// ARG scoping
// ---------------------------------------------------------------------------------------------

#[test]
fn arg_scoping() {
    check_out(&[
        // A global ARG is only for FROM…
        ("ARG G=g\nFROM scratch\nENV OUT=[$G]", &[], Some("[]")),
        // …unless re-declared, which takes the global value.
        (
            "ARG G=g\nFROM scratch\nARG G\nENV OUT=[$G]",
            &[],
            Some("[g]"),
        ),
        (
            "ARG G=g\nFROM scratch\nARG G=local\nENV OUT=[$G]",
            &[],
            Some("[local]"),
        ),
        // --build-arg overrides globals and stage defaults.
        (
            "ARG G=g\nFROM scratch\nARG G\nENV OUT=[$G]",
            &[("G", "cli")],
            Some("[cli]"),
        ),
        (
            "FROM scratch\nARG S=d\nENV OUT=[$S]",
            &[("S", "cli")],
            Some("[cli]"),
        ),
        (
            "ARG G=g\nFROM scratch\nARG G=local\nENV OUT=[$G]",
            &[("G", "cli")],
            Some("[cli]"),
        ),
        // ARG defaults are expanded with earlier ARGs and ENV.
        (
            "FROM scratch\nARG A=x\nARG B=${A}y\nENV OUT=$B",
            &[],
            Some("xy"),
        ),
        (
            "FROM scratch\nENV E=e\nARG B=$E-b\nENV OUT=$B",
            &[],
            Some("e-b"),
        ),
        (
            "ARG A=1\nARG B=$A-2\nFROM scratch\nARG B\nENV OUT=$B",
            &[],
            Some("1-2"),
        ),
        (
            "ARG A=1\nARG B=$A-2\nFROM scratch\nARG B\nENV OUT=$B",
            &[("A", "9")],
            Some("9-2"),
        ),
        // ENV after an ARG of the same name wins.
        (
            "FROM scratch\nARG V=arg\nENV V=env\nENV OUT=$V",
            &[],
            Some("env"),
        ),
        (
            "FROM scratch\nARG V\nENV V=env\nENV OUT=$V",
            &[("V", "cli")],
            Some("env"),
        ),
        (
            "FROM scratch\nARG V=arg\nENV V=${V}-env\nENV OUT=$V",
            &[],
            Some("arg-env"),
        ),
        // A build arg without an ARG is invisible.
        ("FROM scratch\nENV OUT=[$U]", &[("U", "x")], Some("[]")),
        // ARG without value and without global is unset.
        (
            "FROM scratch\nARG N\nENV OUT=[${N-unset}]",
            &[],
            Some("[unset]"),
        ),
        (
            "FROM scratch\nARG N=\nENV OUT=[${N-unset}]",
            &[],
            Some("[]"),
        ),
        // Re-declaring in one stage does not leak into the next.
        (
            "ARG G=g\nFROM scratch AS a\nARG G\nFROM scratch\nENV OUT=[$G]",
            &[],
            Some("[]"),
        ),
        // An ARG is scoped to its stage, even for a child stage's expansion of ARG defaults.
        (
            "FROM scratch\nARG L=1\nFROM scratch\nARG M=${L}2\nENV OUT=$M",
            &[],
            Some("2"),
        ),
    ]);
}

/// Every stage FROM one reference sees one image: the resolver is asked once per reference
/// and platform in a build (as BuildKit's frontend caches its resolutions).
#[test]
fn a_base_image_is_resolved_once_per_reference_and_platform() {
    let fake = Fake::new();
    let text = "FROM base AS a\nRUN a\nFROM base AS b\nRUN b\nFROM --platform=linux/arm64 base AS c\nRUN c\nFROM base\nCOPY --from=a /a /\nCOPY --from=b /b /\nCOPY --from=c /c /";
    try_plan_with(text, &opts(), &fake).unwrap();
    assert_eq!(
        *fake.calls.borrow(),
        vec!["base@linux/amd64", "base@linux/arm64"]
    );
}

/// The predefined platform ARGs: usable in FROM, and in a stage after `ARG NAME`.
#[test]
fn predefined_platform_args() {
    let host = Platform::host().to_string();
    let fake = Fake::new();
    let opts = BuildOptions {
        platform: Some("linux/arm64".parse().unwrap()),
        ..Default::default()
    };
    let text = "FROM --platform=$BUILDPLATFORM base-$TARGETARCH AS b\nENV BEFORE=[$TARGETARCH]\nARG TARGETARCH\nARG TARGETOS TARGETPLATFORM BUILDPLATFORM TARGETVARIANT\nENV OUT=$TARGETOS/$TARGETARCH\nRUN echo";
    let p = try_plan_with(text, &opts, &fake).unwrap();
    assert_eq!(*fake.calls.borrow(), vec![format!("base-arm64@{host}")]);
    assert_eq!(env_value(&p, "BEFORE").as_deref(), Some("[]"));
    assert_eq!(env_value(&p, "OUT").as_deref(), Some("linux/arm64"));
    let run_env = &last_exec(&p).env;
    for want in [
        "TARGETARCH=arm64".to_string(),
        "TARGETOS=linux".to_string(),
        "TARGETPLATFORM=linux/arm64".to_string(),
        format!("BUILDPLATFORM={host}"),
        "TARGETVARIANT=".to_string(),
    ] {
        assert!(run_env.contains(&want), "{want} not in {run_env:?}");
    }
    // No ARG in the config.
    assert!(
        !env(&p).iter().any(|e| e.starts_with("TARGET")),
        "{:?}",
        env(&p)
    );

    // A variant.
    let opts = BuildOptions {
        platform: Some("linux/arm/v7".parse().unwrap()),
        ..Default::default()
    };
    let p = try_plan(
        "FROM scratch\nARG TARGETVARIANT TARGETPLATFORM\nENV OUT=$TARGETVARIANT,$TARGETPLATFORM",
        &opts,
    )
    .unwrap();
    assert_eq!(env_value(&p, "OUT").as_deref(), Some("v7,linux/arm/v7"));
    assert_eq!(p.image.architecture, "arm");
    assert_eq!(p.image.variant.as_deref(), Some("v7"));
}

/// buildMetaArgs (convert.go) only replaces a global when the ARG has a value (`if kp.Value !=
/// nil { args = args.AddOrReplace(...) }`), so `ARG TARGETARCH` before FROM keeps the
/// predefined value.
#[test]
fn global_arg_without_value_keeps_predefined_value() {
    let fake = Fake::new();
    let opts = BuildOptions {
        platform: Some("linux/arm64".parse().unwrap()),
        ..Default::default()
    };
    let p = try_plan_with(
        "ARG TARGETARCH\nFROM base-$TARGETARCH\nARG TARGETARCH\nENV OUT=$TARGETARCH",
        &opts,
        &fake,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fake.calls.borrow()[0], "base-arm64@linux/arm64");
    assert_eq!(env_value(&p, "OUT").as_deref(), Some("arm64"));
}

/// convert.go dispatchArg: `d.state = d.state.AddEnv(arg.Key, *arg.Value)`, which replaces an
/// ENV of the same name in the state env that expansion and RUN use; so an ARG declared *after*
/// an ENV (or after an inherited ENV) wins. kaniko matched this in
/// osscontainertools/kaniko#624 ("This diverges from BuildKit, which uses the build-arg value").
#[test]
fn arg_after_env_wins_in_buildkit() {
    check_out(&[
        (
            "FROM scratch\nENV V=env\nARG V=arg\nENV OUT=$V",
            &[],
            Some("arg"),
        ),
        (
            "FROM base\nARG FOO\nENV OUT=$FOO",
            &[("FOO", "cli")],
            Some("cli"),
        ),
    ]);
    let p = try_plan("FROM base\nARG FOO=arg\nRUN echo", &opts()).unwrap();
    assert!(
        last_exec(&p).env.contains(&"FOO=arg".to_string()),
        "{:?}",
        last_exec(&p).env
    );
    assert_eq!(
        history(&p).last().unwrap().0,
        "RUN |1 FOO=arg /bin/sh -c echo # buildkit"
    );
}

/// dispatchState.init (convert.go): `ds.buildArgs = append(ds.buildArgs, ds.base.buildArgs...)`
/// and the child starts from the parent's state (whose env holds the parent's ARGs).
#[test]
fn child_stage_inherits_parent_args() {
    let p = plan("FROM scratch AS parent\nARG V=1\nFROM parent\nENV OUT=$V\nRUN echo");
    assert_eq!(env_value(&p, "OUT").as_deref(), Some("1"));
    assert_eq!(
        history(&p).last().unwrap().0,
        "RUN |1 V=1 /bin/sh -c echo # buildkit"
    );
}

#[test]
fn unused_build_arg_warning() {
    let p = try_plan(
        "ARG GLOBAL\nFROM scratch\nARG USED\nRUN x",
        &with_args(&[
            ("USED", "1"),
            ("UNUSED", "2"),
            ("GLOBAL", "3"),
            ("HTTP_PROXY", "p"),
        ]),
    )
    .unwrap();
    let msgs: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
    let unused: Vec<&&str> = msgs.iter().filter(|m| m.contains("not consumed")).collect();
    assert_eq!(unused.len(), 1, "{msgs:?}");
    assert!(unused[0].contains("UNUSED"), "{msgs:?}");
    assert!(
        !unused[0].contains("USED ") && !unused[0].contains("[USED"),
        "{msgs:?}"
    );
    assert!(!unused[0].contains("GLOBAL"), "{msgs:?}");
    assert!(!unused[0].contains("HTTP_PROXY"), "{msgs:?}");
    // All consumed: no warning.
    let p = try_plan("FROM scratch\nARG A\nRUN x", &with_args(&[("A", "1")])).unwrap();
    assert!(
        !p.warnings
            .iter()
            .any(|w| w.message.contains("not consumed")),
        "{:?}",
        p.warnings
    );
}

// ---------------------------------------------------------------------------------------------
// Word expansion: where BuildKit expands, and where it does not
// ---------------------------------------------------------------------------------------------

type Probe = fn(&BuildPlan) -> String;

fn probe_labels(p: &BuildPlan) -> String {
    at(p, "/config/Labels").to_string()
}
fn probe_ports(p: &BuildPlan) -> String {
    at(p, "/config/ExposedPorts").to_string()
}
fn probe_user(p: &BuildPlan) -> String {
    at(p, "/config/User").to_string()
}
fn probe_workdir(p: &BuildPlan) -> String {
    at(p, "/config/WorkingDir").to_string()
}
fn probe_volumes(p: &BuildPlan) -> String {
    at(p, "/config/Volumes").to_string()
}
fn probe_stopsignal(p: &BuildPlan) -> String {
    at(p, "/config/StopSignal").to_string()
}
fn probe_cmd(p: &BuildPlan) -> String {
    at(p, "/config/Cmd").to_string()
}
fn probe_entrypoint(p: &BuildPlan) -> String {
    at(p, "/config/Entrypoint").to_string()
}
fn probe_out(p: &BuildPlan) -> String {
    env_value(p, "OUT").unwrap_or_else(|| "<unset>".into())
}
fn probe_exec_args(p: &BuildPlan) -> String {
    format!("{:?}", last_exec(p).args)
}
fn probe_last_copy(p: &BuildPlan) -> String {
    copies(p)
        .last()
        .map(|c| describe_copy(p, c))
        .unwrap_or_else(|| "<no copy>".into())
}

#[test]
fn word_expansion() {
    let table: &[(&str, Probe, &str)] = &[
        ("FROM scratch\nARG V=x\nENV OUT=$V", probe_out, "x"),
        ("FROM scratch\nARG V=1.0\nLABEL \"ver$V\"=v$V", probe_labels, r#"{"ver1.0":"v1.0"}"#),
        ("FROM scratch\nARG P=80\nEXPOSE $P/udp ${P}1", probe_ports, r#"{"80/udp":{},"801/tcp":{}}"#),
        ("FROM scratch\nARG U=1000\nUSER ${U}:${U}", probe_user, r#""1000:1000""#),
        ("FROM scratch\nARG W=/srv\nWORKDIR $W/app", probe_workdir, r#""/srv/app""#),
        ("FROM scratch\nARG V=/data\nVOLUME [\"$V\", \"/logs\"]", probe_volumes, r#"{"/data":{},"/logs":{}}"#),
        ("FROM scratch\nARG V=/data\nVOLUME $V ${V}2", probe_volumes, r#"{"/data":{},"/data2":{}}"#),
        ("FROM scratch\nARG S=SIGQUIT\nSTOPSIGNAL $S", probe_stopsignal, r#""SIGQUIT""#),
        (
            "FROM scratch\nARG S=app.py D=/opt/\nCOPY $S ${D}bin/",
            probe_last_copy,
            r#"from=local context src=["app.py"] dest=/opt/bin/ owner=None mode=None extract=false exclude=[] parents=false"#,
        ),
        (
            "FROM scratch\nARG U=app G=42\nCOPY --chown=$U:$G a /a",
            probe_last_copy,
            r#"from=local context src=["a"] dest=/a owner=Some(Chown { user: Name("app"), group: Some(Id(42)) }) mode=None extract=false exclude=[] parents=false"#,
        ),
        (
            "FROM scratch\nARG M=0640\nCOPY --chmod=$M a /a",
            probe_last_copy,
            r#"from=local context src=["a"] dest=/a owner=None mode=Some("640") extract=false exclude=[] parents=false"#,
        ),
        (
            "FROM scratch AS builder\nRUN make\nFROM scratch\nCOPY --from=builder --exclude=*.md /out /out",
            probe_last_copy,
            r#"from=exec ["/bin/sh", "-c", "make"] src=["/out"] dest=/out owner=None mode=None extract=false exclude=["*.md"] parents=false"#,
        ),
        (
            "FROM scratch\nCOPY --from=base /etc/passwd /p",
            probe_last_copy,
            r#"from=image docker.io/library/base:latest src=["/etc/passwd"] dest=/p owner=None mode=None extract=false exclude=[] parents=false"#,
        ),
        // Not expanded: RUN, CMD and ENTRYPOINT text, in either form.
        ("FROM scratch\nENV V=x\nRUN echo $V ${V:-d} \"$V\"", probe_exec_args, r#"["/bin/sh", "-c", "echo $V ${V:-d} \"$V\""]"#),
        ("FROM scratch\nENV V=x\nRUN [\"echo\", \"$V\"]", probe_exec_args, r#"["echo", "$V"]"#),
        ("FROM scratch\nARG V=x\nCMD echo $V", probe_cmd, r#"["/bin/sh","-c","echo $V"]"#),
        ("FROM scratch\nARG V=x\nENTRYPOINT [\"run\", \"$V\"]", probe_entrypoint, r#"["run","$V"]"#),
    ];
    let mut f = Failures::new();
    for (i, (text, probe, want)) in table.iter().enumerate() {
        match try_plan(text, &opts()) {
            Ok(p) => {
                let got = probe(&p);
                if got != *want {
                    f.push(format!(
                        "row {i}: {text:?}\n   want: {want}\n    got: {got}"
                    ));
                }
            }
            Err(e) => f.push(format!("row {i}: {text:?}: error {e}")),
        }
    }
    f.check();
}

/// BuildKit does not expand `COPY --from` (moby/buildkit#2374: "Args in `--from` are
/// currently limited to only args in global scope"; since moby/buildkit#6153 toCommand errors
/// `variable expansion is not supported for --from, define a new stage with FROM using ARG from
/// global scope as a workaround`), nor `--exclude` (CopyCommand.Expand expands only --chown,
/// --chmod and the sources/destination; open issue moby/buildkit#6072).
#[test]
fn copy_from_and_exclude_are_not_expanded() {
    let e = try_plan(
        "FROM scratch AS builder\nRUN make\nFROM scratch\nARG SRC=builder\nCOPY --from=$SRC /out /out",
        &opts(),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(
        e.message
            .contains("variable expansion is not supported for --from"),
        "{e}"
    );
    let p = plan("FROM scratch\nARG E=*.md\nCOPY --exclude=$E . /app/");
    assert_eq!(copies(&p)[0].exclude, vec!["$E".to_string()]);
}

/// FROM's image and --platform are expanded with the global ARGs (and build args) only.
#[test]
fn from_expansion() {
    let host = Platform::host().to_string();
    let table: &[(&str, BuildArgs, Option<&str>, Vec<String>)] = &[
        (
            "ARG IMG=base\nFROM $IMG",
            &[],
            None,
            vec!["base@linux/amd64".into()],
        ),
        (
            "ARG IMG=base\nFROM $IMG",
            &[("IMG", "base-arm64")],
            None,
            vec!["base-arm64@linux/amd64".into()],
        ),
        (
            "ARG V=amd64\nFROM base-${V}",
            &[],
            None,
            vec!["base-amd64@linux/amd64".into()],
        ),
        (
            "ARG P=linux/arm64\nFROM --platform=$P base",
            &[],
            None,
            vec!["base@linux/arm64".into()],
        ),
        (
            "FROM --platform=$TARGETPLATFORM base",
            &[],
            Some("linux/arm64"),
            vec!["base@linux/arm64".into()],
        ),
        (
            "FROM --platform=$BUILDPLATFORM base",
            &[],
            Some("linux/arm64"),
            vec![format!("base@{host}")],
        ),
        (
            "FROM base-$TARGETARCH",
            &[],
            Some("linux/arm64"),
            vec!["base-arm64@linux/arm64".into()],
        ),
        // A stage's own ARG does not reach a later FROM.
        (
            "FROM scratch\nARG IMG=base\nFROM ${IMG:-scratch}",
            &[],
            None,
            vec![],
        ),
        // `scratch` and stage names are not resolved…
        ("FROM scratch AS s\nFROM s", &[], None, vec![]),
        // …but a name only refers to a stage defined earlier (dispatchStates.addState looks the
        // base up among the states added so far): a later stage's name is an image.
        (
            "FROM base AS b1\nFROM scratch AS base\nCOPY --from=b1 / /",
            &[],
            None,
            vec!["base@linux/amd64".into()],
        ),
    ];
    let mut f = Failures::new();
    for (i, (text, args, platform, want)) in table.iter().enumerate() {
        let fake = Fake::new();
        let mut o = with_args(args);
        if let Some(pl) = platform {
            o.platform = Some(pl.parse().unwrap());
        }
        match try_plan_with(text, &o, &fake) {
            Ok(_) => {
                let got = fake.calls.borrow().clone();
                if got != *want {
                    f.push(format!(
                        "row {i}: {text:?}\n   want: {want:?}\n    got: {got:?}"
                    ));
                }
            }
            Err(e) => f.push(format!("row {i}: {text:?}: error {e}")),
        }
    }
    f.check();
}

// ---------------------------------------------------------------------------------------------
// RUN: environment, user, directory, network, mounts
// ---------------------------------------------------------------------------------------------

#[test]
fn run_environment() {
    let table: &[(&str, BuildArgs, &[&str])] = &[
        // ENV and ARGs; ENV wins over an ARG declared before it.
        (
            "FROM scratch\nARG A=1\nARG B=2\nENV B=env\nRUN x",
            &[],
            &["A=1", "B=env", DEFAULT_PATH],
        ),
        (
            "FROM base\nARG X=1\nRUN x",
            &[],
            &["FOO=img", "PATH=/usr/bin:/bin", "X=1"],
        ),
        (
            "FROM scratch\nARG A=1\nRUN x",
            &[("A", "cli")],
            &["A=cli", DEFAULT_PATH],
        ),
        // A value-less ARG adds nothing to the environment.
        ("FROM scratch\nARG N\nRUN x", &[], &[DEFAULT_PATH]),
        // Global ARGs need re-declaring.
        ("ARG G=1\nFROM scratch\nRUN x", &[], &[DEFAULT_PATH]),
        (
            "ARG G=1\nFROM scratch\nARG G\nRUN x",
            &[],
            &["G=1", DEFAULT_PATH],
        ),
        // Proxy build args need no ARG and reach RUN in both cases (BuildKit's proxyEnvList).
        (
            "FROM scratch\nRUN x",
            &[("http_proxy", "http://p:3128")],
            &[
                DEFAULT_PATH,
                "HTTP_PROXY=http://p:3128",
                "http_proxy=http://p:3128",
            ],
        ),
    ];
    let mut f = Failures::new();
    for (i, (text, args, want)) in table.iter().enumerate() {
        match try_plan(text, &with_args(args)) {
            Ok(p) => {
                let mut got = last_exec(&p).env.clone();
                got.sort();
                let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
                want.sort();
                if got != want {
                    f.push(format!(
                        "row {i}: {text:?}\n   want: {want:?}\n    got: {got:?}"
                    ));
                }
            }
            Err(e) => f.push(format!("row {i}: {text:?}: error {e}")),
        }
    }
    f.check();
}

/// BuildKit's RUN env is the llb state's env list, in insertion order: the image's ENV, then
/// each ARG/ENV as dispatched (AddEnv appends a new key, replaces an existing one in place).
#[test]
fn run_environment_order() {
    let p = plan("FROM scratch\nARG A=1\nENV E=2\nRUN x");
    assert_eq!(
        last_exec(&p).env,
        vec![DEFAULT_PATH.to_string(), "A=1".into(), "E=2".into()]
    );
}

#[test]
fn run_user_cwd_network_mounts() {
    let p = plan("FROM scratch\nUSER app\nWORKDIR /w\nRUN --network=none --mount=type=cache,target=/cache --mount=type=bind,source=src,target=rel x");
    let e = last_exec(&p);
    assert_eq!(e.user, "app");
    assert_eq!(e.cwd, "/w");
    assert_eq!(e.network, kiln_solver::NetworkMode::None);
    assert_eq!(e.mounts.len(), 2, "{:?}", e.mounts);
    assert_eq!(e.mounts[0].target, "/cache");
    assert!(matches!(&e.mounts[0].kind, MountKind::Cache { id, .. } if id == "/cache"));
    // A relative mount target is under the working directory; a bind mount reads the context.
    assert_eq!(e.mounts[1].target, "/w/rel");
    match &e.mounts[1].kind {
        MountKind::Bind {
            from,
            source,
            readwrite,
        } => {
            assert_eq!(op_kind(&p, *from), "local context");
            assert_eq!(source, "src");
            assert!(!readwrite);
        }
        k => panic!("want a bind mount, got {k:?}"),
    }
    // The base image's user and working directory apply to RUN.
    let p = plan("FROM withuser\nRUN id");
    assert_eq!(
        (last_exec(&p).user.as_str(), last_exec(&p).cwd.as_str()),
        ("nobody", "/home/nobody")
    );
    // Default network and root.
    let p = plan("FROM scratch\nRUN x");
    let e = last_exec(&p);
    assert_eq!((e.user.as_str(), e.cwd.as_str()), ("", "/"));
    assert_eq!(e.network, kiln_solver::NetworkMode::Host);
}

// ---------------------------------------------------------------------------------------------
// Stages
// ---------------------------------------------------------------------------------------------

#[test]
fn stages_by_name_and_index() {
    // Names are case-insensitive.
    let p = plan("FROM scratch AS Build\nENV S=1\nFROM BUILD\nENV T=2");
    assert_eq!(env(&p), vec![DEFAULT_PATH, "S=1", "T=2"]);

    // --from=0 copies from the first stage.
    let p = plan("FROM scratch\nRUN touch /x\nFROM scratch\nCOPY --from=0 /x /x");
    let c = copies(&p);
    assert_eq!(c.len(), 1);
    assert_eq!(
        op_kind(&p, c[0].source),
        r#"exec ["/bin/sh", "-c", "touch /x"]"#
    );

    // --from=<name> in any case.
    let p = plan("FROM scratch AS Src\nRUN make\nFROM scratch\nCOPY --from=SRC /out /out");
    assert_eq!(
        op_kind(&p, copies(&p)[0].source),
        r#"exec ["/bin/sh", "-c", "make"]"#
    );

    // FROM an earlier stage inherits its config and filesystem.
    let p = plan("FROM base AS b\nENV A=1\nWORKDIR /w\nUSER u\nFROM B\nRUN pwd");
    assert_eq!(env(&p), vec!["PATH=/usr/bin:/bin", "FOO=img", "A=1"]);
    assert_eq!(p.image.config.working_dir.as_deref(), Some("/w"));
    assert_eq!(p.image.config.user.as_deref(), Some("u"));
    let (_, e) = execs(&p)[0];
    assert_eq!((e.cwd.as_str(), e.user.as_str()), ("/w", "u"));
    match &p.graph.nodes[e.rootfs].op {
        Op::File(f) => assert!(
            matches!(&f.actions[0], FileAction::Mkdir { path, .. } if path == "/w"),
            "{:?}",
            f.actions
        ),
        o => panic!("the RUN should run on the parent's WORKDIR op, got {o:?}"),
    }
    // The parent's history comes along.
    assert_eq!(history(&p).len(), 1 + 3 + 1, "{:?}", history(&p));
}

#[test]
fn targets() {
    let text =
        "FROM scratch AS build\nENV B=1\nFROM scratch AS Test\nENV T=1\nFROM scratch\nENV F=1";
    let table: &[(Option<&str>, &str, &str)] = &[
        (None, "stage-2", "F=1"),
        (Some("build"), "build", "B=1"),
        (Some("BUILD"), "build", "B=1"),
        (Some("test"), "test", "T=1"),
    ];
    for (i, (target, name, var)) in table.iter().enumerate() {
        let o = BuildOptions {
            target: target.map(str::to_string),
            ..opts()
        };
        let p = try_plan(text, &o).unwrap_or_else(|e| panic!("row {i}: {e}"));
        assert_eq!(p.target_name, *name, "row {i}");
        assert_eq!(env(&p), vec![DEFAULT_PATH, var], "row {i}");
    }
    let o = BuildOptions {
        target: Some("nope".into()),
        ..opts()
    };
    let e = try_plan(text, &o).unwrap_err();
    assert!(
        e.message
            .contains(r#"target stage "nope" could not be found"#),
        "{e}"
    );
}

#[test]
fn pruning_unneeded_stages() {
    let fake = Fake::new();
    let text = "FROM broken-image AS unused\nRUN never\nFROM scratch AS other\nCOPY --from=nonexistent-image /a /a\nFROM scratch AS final\nRUN echo ok";
    let o = BuildOptions {
        target: Some("final".into()),
        ..opts()
    };
    let p = try_plan_with(text, &o, &fake).unwrap_or_else(|e| panic!("{e}"));
    assert!(fake.calls.borrow().is_empty(), "{:?}", fake.calls.borrow());
    let kinds: Vec<String> = (0..p.graph.nodes.len()).map(|i| op_kind(&p, i)).collect();
    assert_eq!(
        kinds,
        vec!["scratch", r#"exec ["/bin/sh", "-c", "echo ok"]"#],
        "{kinds:?}"
    );
    // The default target (the last stage) is the same here.
    let fake = Fake::new();
    let p = try_plan_with(text, &opts(), &fake).unwrap();
    assert_eq!(p.graph.nodes.len(), 2);
    // Building the broken stage does fail, at its FROM.
    let o = BuildOptions {
        target: Some("other".into()),
        ..opts()
    };
    let e = try_plan(text, &o).unwrap_err();
    assert_eq!(position(&e), "4:6", "{e}");
    assert!(e.message.contains("nonexistent-image"), "{e}");
    let o = BuildOptions {
        target: Some("unused".into()),
        ..opts()
    };
    let e = try_plan(text, &o).unwrap_err();
    assert_eq!(position(&e), "1:6", "{e}");
    assert!(e.message.contains("broken-image"), "{e}");
}

#[test]
fn stage_errors() {
    check_errors(&[
        // Cycles through COPY --from: a stage may only copy from earlier stages (BuildKit's
        // dispatch), which rules cycles out; copying from itself is a cycle of one.
        (
            "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y",
            opts(),
            "2:6",
            &[r#"cannot copy from stage "b", it needs to be defined before current stage "a""#],
        ),
        (
            "FROM scratch AS a\nCOPY --from=a /x /y",
            opts(),
            "1:1",
            &["circular dependency"],
        ),
        // Names.
        (
            "FROM scratch AS 1abc",
            opts(),
            "1:6",
            &[
                r#"invalid name for build stage: "1abc", name can't start with a number or contain symbols"#,
            ],
        ),
        (
            "FROM scratch AS a$b",
            opts(),
            "1:6",
            &["invalid name for build stage"],
        ),
        // Instructions before the first FROM.
        ("RUN x\nFROM scratch", opts(), "1:1", &[]),
        ("ARG A=1\nENV B=2\nFROM scratch", opts(), "2:1", &[]),
        // No stage at all.
        ("", opts(), "1:1", &[]),
        ("# just a comment\n", opts(), "1:1", &[]),
        ("ARG A=1\n", opts(), "1:1", &[]),
        // A stage index that does not exist.
        ("FROM scratch\nCOPY --from=5 /a /b", opts(), "2:6", &["5"]),
        // An image that can't be resolved.
        ("FROM missing-image", opts(), "1:6", &["missing-image"]),
        // FROM that expands to nothing.
        (
            "ARG IMG\nFROM $IMG",
            opts(),
            "2:6",
            &["base name ($IMG) should not be blank"],
        ),
        // An unknown --platform.
        ("FROM --platform=nope scratch", opts(), "1:6", &["nope"]),
    ]);
    // Valid names.
    plan("FROM scratch AS a_b.c-d9\nFROM a_b.c-d9");
}

/// BuildKit only lints duplicate stage names (validateStageNames → RuleDuplicateStageName);
/// the later stage wins the name (dispatchStates.addState overwrites statesByName).
#[test]
fn duplicate_stage_name_is_a_lint_warning_in_buildkit() {
    let p = plan("FROM scratch AS a\nENV X=1\nFROM scratch AS A\nENV X=2\nFROM a");
    assert_eq!(env_value(&p, "X").as_deref(), Some("2"));
}

/// convert.go dispatch of COPY: `if !src.dispatched { return errors.Errorf("cannot copy from
/// stage %q, it needs to be defined before current stage %q", c.From, d.stageName) }` — stages
/// are dispatched in file order, so `--from` a later stage is an error.
#[test]
fn copy_from_a_later_stage_is_an_error() {
    let o = BuildOptions {
        target: Some("a".into()),
        ..opts()
    };
    let e = try_plan(
        "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nRUN x",
        &o,
    )
    .map(|_| ())
    .unwrap_err();
    assert!(
        e.message.contains(
            r#"cannot copy from stage "b", it needs to be defined before current stage "a""#
        ),
        "{e}"
    );
}

/// BuildKit's wording for a command before FROM is `no build stage in current context`
/// (instructions.CurrentStage) and an empty file is `the Dockerfile cannot be empty` /
/// `file with no instructions` / `dockerfile contains no stages to build`.
#[test]
fn stage_error_wording() {
    check_errors(&[
        (
            "RUN x\nFROM scratch",
            opts(),
            "1:1",
            &["no build stage in current context"],
        ),
        (
            "ARG A=1\n",
            opts(),
            "1:1",
            &["dockerfile contains no stages to build"],
        ),
    ]);
}

// ---------------------------------------------------------------------------------------------
// ONBUILD
// ---------------------------------------------------------------------------------------------

#[test]
fn onbuild_triggers_of_a_parent_stage() {
    let text =
        "FROM scratch AS parent\nONBUILD ENV X=1\nONBUILD RUN echo trig\nFROM parent\nENV Y=2";
    let p = plan(text);
    assert_eq!(env(&p), vec![DEFAULT_PATH, "X=1", "Y=2"]);
    assert_eq!(p.image.config.on_build, None);
    let args: Vec<Vec<String>> = execs(&p).iter().map(|(_, e)| e.args.clone()).collect();
    assert_eq!(args, vec![vec!["/bin/sh", "-c", "echo trig"]]);
    // The parent itself does not run its triggers.
    let o = BuildOptions {
        target: Some("parent".into()),
        ..opts()
    };
    let p = try_plan(text, &o).unwrap();
    assert_eq!(env(&p), vec![DEFAULT_PATH]);
    assert_eq!(
        p.image.config.on_build,
        Some(vec!["ENV X=1".to_string(), "RUN echo trig".to_string()])
    );
    assert!(execs(&p).is_empty());
}

#[test]
fn onbuild_triggers_of_an_image() {
    let p = plan("FROM onbuild\nENV Z=3");
    assert_eq!(env(&p), vec!["PATH=/bin", "TRIGGERED=yes", "Z=3"]);
    assert_eq!(at(&p, "/config/Labels"), json!({"trig": "yes"}));
    assert_eq!(p.image.config.on_build, None);
    let args: Vec<Vec<String>> = execs(&p).iter().map(|(_, e)| e.args.clone()).collect();
    assert_eq!(args, vec![vec!["/bin/sh", "-c", "echo triggered"]]);
}

// ---------------------------------------------------------------------------------------------
// Heredocs
// ---------------------------------------------------------------------------------------------

/// The inline files COPY makes from heredocs: (path, data, mode).
fn mkfiles(p: &BuildPlan) -> Vec<(String, String, u32)> {
    file_actions(p)
        .into_iter()
        .filter_map(|(_, a)| match a {
            FileAction::Mkfile {
                path, data, mode, ..
            } => Some((
                path.clone(),
                String::from_utf8_lossy(data).into_owned(),
                *mode,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn copy_heredocs() {
    let table: &[(&str, &[(&str, &str)])] = &[
        (
            "FROM scratch\nARG NAME=world\nCOPY <<EOF /greet\nhello $NAME\nEOF\n",
            &[("/EOF", "hello world\n")],
        ),
        (
            "FROM scratch\nARG NAME=world\nCOPY <<\"EOF\" /greet\nhello $NAME\nEOF\n",
            &[("/EOF", "hello $NAME\n")],
        ),
        (
            "FROM scratch\nARG NAME=world\nCOPY <<'EOF' /greet\nhello ${NAME}\nEOF\n",
            &[("/EOF", "hello ${NAME}\n")],
        ),
        (
            "FROM scratch\nCOPY <<-EOF /f\n\t\tindented\n\tEOF\n",
            &[("/EOF", "indented\n")],
        ),
        (
            "FROM scratch\nARG NAME=world\nCOPY <<EOF /f\nsay \"hi\" 'there' $NAME\nEOF\n",
            &[("/EOF", "say \"hi\" 'there' world\n")],
        ),
        (
            "FROM scratch\nCOPY <<A <<B /dir/\na\nA\nb\nB\n",
            &[("/A", "a\n"), ("/B", "b\n")],
        ),
    ];
    let mut f = Failures::new();
    for (i, (text, want)) in table.iter().enumerate() {
        match try_plan(text, &opts()) {
            Ok(p) => {
                let got: Vec<(String, String)> =
                    mkfiles(&p).into_iter().map(|(p, d, _)| (p, d)).collect();
                let want: Vec<(String, String)> = want
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect();
                if got != want {
                    f.push(format!(
                        "row {i}: {text:?}\n   want: {want:?}\n    got: {got:?}"
                    ));
                }
            }
            Err(e) => f.push(format!("row {i}: {text:?}: error {e}")),
        }
    }
    f.check();
    // The heredoc file is copied to the destination.
    let p = plan("FROM scratch\nWORKDIR /app\nCOPY <<EOF conf\nx\nEOF\n");
    let c = copies(&p);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].src.clone(), c[0].dest.as_str()),
        (vec!["EOF".to_string()], "/app/conf")
    );
}

#[test]
fn run_heredocs() {
    let table: &[(&str, &[&str])] = &[
        (
            "FROM scratch\nRUN <<EOF\necho a\necho b\nEOF\n",
            &["/bin/sh", "-c", "echo a\necho b\n"],
        ),
        (
            "FROM scratch\nRUN <<-EOF\n\techo a\n\tEOF\n",
            &["/bin/sh", "-c", "echo a\n"],
        ),
        (
            "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nRUN <<EOF\necho $X\nEOF\n",
            &["/bin/bash", "-c", "echo $X\n"],
        ),
        (
            "FROM scratch\nRUN python3 <<EOF\nprint(1)\nEOF\n",
            &["/bin/sh", "-c", "python3 <<EOF\nprint(1)\nEOF"],
        ),
        (
            "FROM scratch\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n",
            &["/dev/pipes/EOF"],
        ),
    ];
    let mut f = Failures::new();
    for (i, (text, want)) in table.iter().enumerate() {
        match try_plan(text, &opts()) {
            Ok(p) => {
                let got = last_exec(&p).args.clone();
                if got != *want {
                    f.push(format!(
                        "row {i}: {text:?}\n   want: {want:?}\n    got: {got:?}"
                    ));
                }
            }
            Err(e) => f.push(format!("row {i}: {text:?}: error {e}")),
        }
    }
    f.check();
    // The shebang script is mounted at /dev/pipes/ from an inline file.
    let p = plan("FROM scratch\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\n");
    let m = &last_exec(&p).mounts;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].target, "/dev/pipes/");
    assert_eq!(
        mkfiles(&p),
        vec![(
            "/EOF".to_string(),
            "#!/bin/sh\necho hi\n".to_string(),
            0o755
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// Graph shape
// ---------------------------------------------------------------------------------------------

#[test]
fn workdir_makes_a_directory() {
    let table: &[(&str, &[&str])] = &[
        ("FROM scratch\nWORKDIR /app", &["/app"]),
        ("FROM scratch\nWORKDIR /", &[]),
        ("FROM scratch\nWORKDIR /app\nWORKDIR /", &["/app"]),
        ("FROM scratch\nWORKDIR /a\nWORKDIR b", &["/a", "/a/b"]),
    ];
    for (i, (text, want)) in table.iter().enumerate() {
        let p = plan(text);
        let got: Vec<String> = file_actions(&p)
            .into_iter()
            .filter_map(|(_, a)| match a {
                FileAction::Mkdir {
                    path,
                    mode,
                    make_parents,
                    ..
                } => {
                    assert_eq!((*mode, *make_parents), (0o755, true), "row {i}");
                    Some(path.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(got, *want, "row {i}: {text:?}");
    }
    // The directory belongs to the USER.
    let p = plan("FROM scratch\nUSER app:grp\nWORKDIR /home/app");
    match file_actions(&p)[0].1 {
        FileAction::Mkdir { owner, .. } => assert_eq!(
            owner,
            &Some(Chown {
                user: UserRef::Name("app".into()),
                group: Some(UserRef::Name("grp".into()))
            })
        ),
        a => panic!("{a:?}"),
    }
    // The target is the last op.
    let p = plan("FROM scratch\nWORKDIR /app");
    assert_eq!(p.target, p.graph.nodes.len() - 1);
}

#[test]
fn copy_from_context_shares_one_local_source() {
    let o = BuildOptions {
        dockerignore: vec!["*.log".into(), "!keep.log".into()],
        ..opts()
    };
    let p = try_plan(
        "FROM scratch\nCOPY a /a\nCOPY b c /d/\nADD e.tar /e/\nRUN --mount=type=bind,target=/src x",
        &o,
    )
    .unwrap();
    let locals: Vec<(OpId, &str, &Vec<String>, &Vec<String>)> = p
        .graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            Op::Source(Source::Local {
                name,
                include,
                exclude,
            }) => Some((i, name.as_str(), include, exclude)),
            _ => None,
        })
        .collect();
    assert_eq!(locals.len(), 1, "{locals:?}");
    let (ctx, name, include, exclude) = locals[0];
    assert_eq!(name, "context");
    assert!(include.is_empty());
    assert_eq!(exclude, &vec!["*.log".to_string(), "!keep.log".to_string()]);
    let c = copies(&p);
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|c| c.source == ctx));
    assert_eq!(
        c.iter()
            .map(|c| (c.src.clone(), c.dest.clone(), c.extract_archives))
            .collect::<Vec<_>>(),
        vec![
            (vec!["a".to_string()], "/a".to_string(), false),
            (
                vec!["b".to_string(), "c".to_string()],
                "/d/".to_string(),
                false
            ),
            (vec!["e.tar".to_string()], "/e/".to_string(), true),
        ]
    );
    match &last_exec(&p).mounts[0].kind {
        MountKind::Bind { from, .. } => assert_eq!(*from, ctx),
        k => panic!("{k:?}"),
    }
}

#[test]
fn copy_destinations() {
    let table: &[(&str, &str)] = &[
        ("FROM scratch\nCOPY a /abs", "/abs"),
        ("FROM scratch\nCOPY a rel", "/rel"),
        ("FROM scratch\nWORKDIR /app\nCOPY a .", "/app/"),
        ("FROM scratch\nWORKDIR /app\nCOPY a sub/", "/app/sub/"),
        ("FROM scratch\nWORKDIR /app\nCOPY a ../up", "/up"),
        ("FROM scratch\nCOPY a b /d/", "/d/"),
    ];
    for (i, (text, want)) in table.iter().enumerate() {
        let p = plan(text);
        assert_eq!(copies(&p)[0].dest, *want, "row {i}: {text:?}");
    }
}

// BuildKit's dispatchCopy accepts `COPY a b /dest` (the later source overwrites the earlier);
// kiln keeps the Dockerfile reference's rule that several sources need a destination ending
// in `/` (see copy_two_sources_without_trailing_slash_kiln_rule).

/// kiln's current rule, documented: it rejects the form (see the ignored test above).
#[test]
fn copy_two_sources_without_trailing_slash_kiln_rule() {
    let e = try_plan("FROM scratch\nCOPY a b /dest", &opts())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(position(&e), "2:6");
    assert!(
        e.message
            .contains("When using COPY with more than one source file, the destination must be a directory and end with a /"),
        "{e}"
    );
}

#[test]
fn expansion_errors_point_at_the_instruction() {
    check_errors(&[
        (
            "FROM scratch\nENV A=\"${A:?must be set}\"",
            opts(),
            "2:5",
            &["A: must be set"],
        ),
        // Words are split before expansion, as BuildKit's parseWords does: a space in the
        // message splits the pair.
        (
            "FROM scratch\nENV A=${A:?must be set}",
            opts(),
            "2:5",
            &[r#"Syntax error - can't find = in "be""#],
        ),
        (
            "FROM scratch\nCOPY ${SRC:?need_SRC} /d",
            opts(),
            "2:6",
            &["SRC: need_SRC"],
        ),
        (
            "FROM scratch\nWORKDIR ${W:?no dir}",
            opts(),
            "2:9",
            &["W: no dir"],
        ),
        ("FROM scratch\n\nLABEL a=${L?}", opts(), "3:7", &["L"]),
        (
            "ARG IMG\nFROM ${IMG:?no_image}",
            opts(),
            "2:6",
            &["IMG: no_image"],
        ),
        (
            "ARG A=${B:?b_needed}\nFROM scratch",
            opts(),
            "1:5",
            &["B: b_needed"],
        ),
        (
            "FROM scratch\nARG X=${Y:?y_needed}",
            opts(),
            "2:5",
            &["Y: y_needed"],
        ),
        ("FROM scratch\nENV A=\"unterminated", opts(), "2:5", &[]),
    ]);
    // A build arg satisfies the requirement.
    let p = try_plan(
        "ARG IMG\nFROM ${IMG:?no_image}",
        &with_args(&[("IMG", "base")]),
    )
    .unwrap();
    assert_eq!(env_value(&p, "FOO").as_deref(), Some("img"));
}

#[test]
fn convert_errors() {
    check_errors(&[
        ("FROM scratch\nSTOPSIGNAL NOPE!", opts(), "2:12", &["NOPE!"]),
        ("FROM scratch\nEXPOSE 80/xyz", opts(), "2:8", &["xyz"]),
        ("FROM scratch\nEXPOSE abc", opts(), "2:8", &["abc"]),
        (
            "FROM scratch\nARG M=9\nCOPY --chmod=$M a /b",
            opts(),
            "3:6",
            &["chmod"],
        ),
        ("FROM scratch\nCOPY http://x/y /d", opts(), "2:6", &["URL"]),
        (
            "FROM scratch\nRUN --mount=type=nope,target=/x y",
            opts(),
            "2:5",
            &["nope"],
        ),
        (
            "FROM scratch\nRUN --mount=type=cache x",
            opts(),
            "2:5",
            &["target"],
        ),
    ]);
}

/// moby/sys/signal ParseSignal (called by convert.go dispatchStopSignal): a number is any
/// non-zero integer; a name is looked up upper-cased, without `SIG`, in the signal map (so
/// `sigkill` is valid and `NOPE` is not); the value is stored as written.
#[test]
fn stopsignal_like_moby_signal_parse() {
    check_config(&[
        (
            "FROM scratch\nSTOPSIGNAL sigkill",
            "/config/StopSignal",
            json!("sigkill"),
        ),
        (
            "FROM scratch\nSTOPSIGNAL 99",
            "/config/StopSignal",
            json!("99"),
        ),
    ]);
    check_errors(&[("FROM scratch\nSTOPSIGNAL NOPE", opts(), "2:12", &["NOPE"])]);
}

/// Go's `%q` of an int is a quoted character literal (strconv.QuoteRune): 3 is `'\x03'`, 300 is
/// `'Ĭ'`; kiln clamps the retries to 255.
#[test]
fn history_healthcheck_retries_over_255() {
    check_history(&[(
        "FROM scratch\nHEALTHCHECK --retries=300 CMD x",
        &[(
            r#"HEALTHCHECK &{["CMD-SHELL" "x"] "0s" "0s" "0s" "0s" 'Ĭ'}"#,
            true,
        )],
    )]);
}

/// convert.go: `--from=` (empty) is the same as no `--from` (`if c.From != ""`), and a number
/// is a stage index even when negative (`strconv.Atoi`, then findStateByIndex: `invalid stage
/// index %d`).
#[test]
fn copy_from_edge_cases() {
    let p = plan("FROM scratch\nCOPY --from= a /b");
    assert_eq!(op_kind(&p, copies(&p)[0].source), "local context");
    let e = try_plan("FROM scratch\nCOPY --from=-1 a /b", &opts())
        .map(|_| ())
        .unwrap_err();
    assert!(e.message.contains("invalid stage index -1"), "{e}");
}

/// parse.go parseOnBuild only checks the trigger's keyword (ONBUILD, FROM, MAINTAINER); the
/// trigger is parsed as an instruction when a child runs it (convert.go initOnBuildTriggers).
#[test]
fn onbuild_trigger_is_checked_when_it_runs() {
    let text = "FROM scratch AS parent\nONBUILD COPY --bad=1 a b\nFROM parent";
    let o = BuildOptions {
        target: Some("parent".into()),
        ..opts()
    };
    let p = try_plan(text, &o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.image.config.on_build,
        Some(vec!["COPY --bad=1 a b".to_string()])
    );
    let e = try_plan(text, &opts()).map(|_| ()).unwrap_err();
    assert!(e.message.contains("unknown flag"), "{e}");
}

/// `COPY --link`: the copy is a file op on scratch, merged onto the stage (BuildKit's MergeOp),
/// so its layer does not depend on the stage before it.
#[test]
fn copy_link_is_a_copy_on_scratch_merged_onto_the_stage() {
    let p = plan("FROM scratch\nWORKDIR /w\nCOPY --link a b/\n");
    let Op::Merge(inputs) = &p.graph.nodes[p.target].op else {
        panic!("the target is a merge: {}", op_kind(&p, p.target));
    };
    assert_eq!(inputs.len(), 2);
    assert_eq!(
        op_kind(&p, inputs[0]),
        "file",
        "the stage so far (WORKDIR's mkdir)"
    );
    let Op::File(linked) = &p.graph.nodes[inputs[1]].op else {
        panic!("the linked copy is a file op");
    };
    assert_eq!(op_kind(&p, linked.base), "scratch");
    let copy = &copies(&p)[0];
    assert_eq!(copy.dest, "/w/b/");
}
