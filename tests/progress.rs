//! `--progress`: what a user (or a tool) sees on stderr and stdout for each format, on builds
//! FROM scratch so no registry is needed.

mod common;

use common::{Run, Sandbox};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const DOCKERFILE: &str = "FROM scratch\nCOPY a.txt /a.txt\nCOPY dir /dir/\n";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.file("a.txt", "A\n")
        .file("dir/b.txt", "B\n")
        .dockerfile(DOCKERFILE);
    sb
}

/// `kiln build --progress MODE -o type=oci,dest=OUT,tar=false CTX`.
fn build(sb: &Sandbox, mode: &str, out: &str) -> Run {
    let spec = format!("type=oci,dest={},tar=false", sb.path(out).display());
    let ctx = sb.ctx().display().to_string();
    sb.kiln(&["build", "--progress", mode, "--output", &spec, &ctx])
}

/// The manifest digest and the image ID (config digest) of an OCI layout.
fn digests(sb: &Sandbox, layout: &str) -> (String, String) {
    let dir = sb.path(layout);
    let config = common::manifest(&dir)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    (common::manifest_digest(&dir), config)
}

/// The step number of the header line `#N <name>`.
fn step_number(log: &str, name: &str) -> String {
    log.lines()
        .find_map(|l| {
            let (n, rest) = l.split_once(' ')?;
            (n.starts_with('#') && rest == name).then(|| n.to_string())
        })
        .unwrap_or_else(|| panic!("no step {name:?} in:\n{log}"))
}

#[test]
fn plain_prints_buildkit_blocks() {
    let sb = sandbox();
    let first = build(&sb, "plain", "one");
    first.ok();
    let log = first.stderr();
    let copy_a = step_number(&log, "[stage-0 2/3] COPY a.txt /a.txt");
    let copy_dir = step_number(&log, "[stage-0 3/3] COPY dir /dir/");
    for n in [&copy_a, &copy_dir] {
        assert!(
            log.lines().any(|l| l
                .strip_prefix(&format!("{n} DONE "))
                .is_some_and(|t| t.ends_with('s') && t[..t.len() - 1].parse::<f64>().is_ok())),
            "{n} DONE <secs>s:\n{log}"
        );
    }
    assert!(!log.contains("CACHED"), "{log}");

    // Steps are numbered from 1 in order of first appearance; blocks are separated by a blank
    // line; output lines carry the seconds since their step started (`#1 0.001 context: …`).
    let mut seen = Vec::new();
    let lines: Vec<&str> = log.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(n) = l
            .strip_prefix('#')
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if !seen.contains(&n) {
            assert_eq!(n, seen.len() + 1, "numbered in order:\n{log}");
            seen.push(n);
            assert!(i == 0 || lines[i - 1].is_empty(), "blank line before {l:?}");
        }
    }
    assert!(seen.len() >= 4, "context, two COPYs, export:\n{log}");
    let context = log
        .lines()
        .find(|l| l.contains("context: "))
        .expect("the context step logs its size");
    let stamp = context.split(' ').nth(1).unwrap();
    assert!(
        stamp.len() == 5 && stamp.as_bytes()[1] == b'.' && stamp.parse::<f64>().is_ok(),
        "a BuildKit time stamp (0.000) in {context:?}"
    );
    let (digest, _) = digests(&sb, "one");
    assert!(
        log.lines()
            .any(|l| l.starts_with(&format!("built {digest} (2 steps run, 0 cached"))),
        "the summary names the image:\n{log}"
    );

    let second = build(&sb, "plain", "two");
    second.ok();
    let log = second.stderr();
    for name in [
        "[stage-0 2/3] COPY a.txt /a.txt",
        "[stage-0 3/3] COPY dir /dir/",
    ] {
        let n = step_number(&log, name);
        assert!(
            log.lines().any(|l| l == format!("{n} CACHED")),
            "{name} is cached:\n{log}"
        );
    }
}

#[test]
fn plain_reports_a_failed_step() {
    let sb = sandbox();
    sb.dockerfile("FROM scratch\nCOPY missing.txt /\n");
    let run = build(&sb, "plain", "out");
    assert!(!run.0.status.success());
    let log = run.stderr();
    let n = step_number(&log, "[stage-0 2/2] COPY missing.txt /");
    assert!(
        log.lines()
            .any(|l| l.starts_with(&format!("{n} ERROR: ")) && l.contains("missing.txt")),
        "{n} ERROR: <message>:\n{log}"
    );
}

#[test]
fn rawjson_is_one_event_per_line() {
    let sb = sandbox();
    build(&sb, "rawjson", "warm").ok();
    let run = build(&sb, "rawjson", "out");
    run.ok();
    let (digest, image_id) = digests(&sb, "out");
    let mut open = BTreeMap::new();
    let mut events = BTreeSet::new();
    let mut summary = None;
    for line in run.stderr().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let time = v["time"].as_str().expect("time");
        assert!(time.ends_with('Z') && time.len() == 24, "RFC 3339: {time}");
        let event = v["event"].as_str().expect("event").to_string();
        events.insert(event.clone());
        let step = v["step"].as_u64();
        match event.as_str() {
            "started" => {
                assert!(v["name"].is_string(), "{line}");
                assert!(open.insert(step.unwrap(), line.to_string()).is_none());
            }
            "log" => {
                assert!(v["line"].is_string(), "{line}");
                assert!(open.contains_key(&step.unwrap()), "log of a running step");
            }
            "done" => {
                assert!(v["elapsed_ms"].is_u64(), "{line}");
                assert!(open.remove(&step.unwrap()).is_some(), "done once: {line}");
            }
            "cached" => {
                assert!(
                    v["name"].as_str().unwrap().starts_with("[stage-0 "),
                    "{line}"
                );
                assert!(v["op"].is_u64(), "graph ops carry their op: {line}");
            }
            "summary" => summary = Some(v.clone()),
            other => panic!("unexpected event {other}: {line}"),
        }
    }
    assert!(open.is_empty(), "every started step is done: {open:?}");
    assert!(
        ["started", "log", "done", "cached", "summary"]
            .iter()
            .all(|e| events.contains(*e)),
        "{events:?}"
    );
    let summary = summary.expect("a summary event");
    assert_eq!(summary["digest"], digest.as_str());
    assert_eq!(summary["image_id"], image_id.as_str());
    assert_eq!(summary["ran"], 0);
    assert_eq!(summary["cached"], 2);
}

#[test]
fn quiet_prints_only_the_image_id() {
    let sb = sandbox();
    let run = build(&sb, "quiet", "out");
    run.ok();
    let (_, image_id) = digests(&sb, "out");
    assert_eq!(run.stdout(), format!("{image_id}\n"));
    assert_eq!(run.stderr(), "");
}

#[test]
fn tty_needs_a_terminal_and_auto_falls_back_to_plain() {
    let sb = sandbox();
    build(&sb, "tty", "out").fails_with(&["--progress tty", "not a terminal"]);
    let auto = build(&sb, "auto", "out");
    auto.ok();
    step_number(&auto.stderr(), "[stage-0 2/3] COPY a.txt /a.txt");
}

#[test]
fn tty_shows_steps_and_the_summary_under_a_terminal() {
    let sb = sandbox();
    let spec = format!("type=oci,dest={},tar=false", sb.path("out").display());
    let command = format!(
        "{} --root {} build --progress tty --output {spec} {}",
        env!("CARGO_BIN_EXE_kiln"),
        sb.root().display(),
        sb.ctx().display()
    );
    // `script` runs the build under a pseudo-terminal and copies what it drew to stdout.
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) is installed");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    let (digest, _) = digests(&sb, "out");
    assert!(
        screen
            .lines()
            .any(|l| l.contains(&format!("✔ built {digest} (2 steps run, 0 cached"))),
        "the summary names the image:\n{screen}"
    );
    assert!(
        screen.contains("✔ [stage-0 2/3] COPY a.txt /a.txt  "),
        "finished steps collapse to one line:\n{screen}"
    );
}
