//! Content-addressed cache keys, end to end: a COPY's key covers the files it selects, never
//! mtimes or the checkout path.

mod common;

use common::registry::Registry;
use common::Sandbox;
use std::fs;

/// The `#N` numbers of the steps the log shows as cached / run, by a fragment of their name.
fn cached(log: &str, fragment: &str) -> bool {
    let Some(n) = log
        .lines()
        .find(|l| l.starts_with('#') && l.contains(fragment))
        .and_then(|l| l.split_whitespace().next())
    else {
        panic!("no step {fragment:?} in\n{log}");
    };
    log.lines().any(|l| l == format!("{n} CACHED"))
}

#[test]
fn copy_keys_follow_the_selected_files_only() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.file("a/one.txt", "1")
        .file("b/two.txt", "2")
        .file("notes.md", "n");
    let dockerfile = |extra: &str| {
        format!("FROM {base}\nCOPY a/ /a/\nRUN cat /a/one.txt > /seen-a\nCOPY b/ /b/\nRUN cat /b/two.txt > /seen-b\n{extra}")
    };
    sb.dockerfile(&dockerfile(""));
    sb.build_oci("o1", &[]).ok();

    // Editing the Dockerfile after the COPYs, and a file no COPY reads: everything before the
    // edit stays cached.
    sb.dockerfile(&dockerfile("LABEL x=y\n"));
    sb.file("notes.md", "changed");
    let log = sb.build_oci("o2", &[]).ok().stderr();
    for step in [
        "COPY a/ /a/",
        "RUN cat /a/one.txt",
        "COPY b/ /b/",
        "RUN cat /b/two.txt",
    ] {
        assert!(cached(&log, step), "{step} should be cached:\n{log}");
    }

    // A touched but unchanged file keeps every step cached.
    let f = sb.ctx().join("a/one.txt");
    let later = fs::metadata(&f).unwrap().modified().unwrap() + std::time::Duration::from_secs(100);
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let log = sb.build_oci("o3", &[]).ok().stderr();
    assert!(
        cached(&log, "COPY a/ /a/") && cached(&log, "RUN cat /a/one.txt"),
        "{log}"
    );

    // A changed file re-runs exactly the steps from its COPY on.
    sb.file("b/two.txt", "22");
    let log = sb.build_oci("o4", &[]).ok().stderr();
    assert!(
        cached(&log, "COPY a/ /a/") && cached(&log, "RUN cat /a/one.txt"),
        "{log}"
    );
    assert!(
        !cached(&log, "COPY b/ /b/") && !cached(&log, "RUN cat /b/two.txt"),
        "{log}"
    );

    // A copy of the context elsewhere, with fresh mtimes, hits the cache fully.
    let elsewhere = sb.path("clone");
    let out = std::process::Command::new("cp")
        .arg("-r")
        .arg(sb.ctx())
        .arg(&elsewhere)
        .status()
        .unwrap();
    assert!(out.success());
    let spec = format!("type=oci,dest={},tar=false", sb.path("o5").display());
    let run = sb.kiln(&[
        "build",
        "--progress",
        "plain",
        "--output",
        &spec,
        elsewhere.to_str().unwrap(),
    ]);
    let log = run.ok().stderr();
    for step in [
        "COPY a/ /a/",
        "RUN cat /a/one.txt",
        "COPY b/ /b/",
        "RUN cat /b/two.txt",
    ] {
        assert!(
            cached(&log, step),
            "{step} should be cached in the copy:\n{log}"
        );
    }
}
