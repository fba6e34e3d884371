//! Robustness of the local cache: two kiln processes building at once on one root, builds
//! killed with SIGKILL at several points (while pulling, during a RUN, while committing a
//! snapshot or exporting) followed by a rebuild that needs no manual clean-up and gives the
//! same image, and the scope of a changed build arg.

mod common;

use common::procs::{
    entries, mounts_under, processes_with, random_bytes, sigkill, spawn_kiln, unmount_under,
    wait_until,
};
use common::registry::Registry;
use common::Sandbox;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const EPOCH: &str = "SOURCE_DATE_EPOCH=1700000000";

/// The `#N` of the first step whose title contains `fragment`.
fn step_number(log: &str, fragment: &str) -> String {
    log.lines()
        .find(|l| l.starts_with('#') && l.contains(fragment))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no step {fragment:?} in\n{log}"))
        .to_string()
}

fn cached(log: &str, fragment: &str) -> bool {
    let n = step_number(log, fragment);
    log.lines().any(|l| l == format!("{n} CACHED"))
}

/// Titles of the RUN / COPY steps the log shows as not cached.
fn steps_not_cached(log: &str) -> Vec<String> {
    let mut titles: Vec<(String, String)> = Vec::new();
    for l in log.lines() {
        let Some((n, rest)) = l.split_once(' ') else {
            continue;
        };
        if n.starts_with('#')
            && rest.starts_with('[')
            && (rest.contains("] RUN ") || rest.contains("] COPY "))
            && !titles.iter().any(|(m, _)| m == n)
        {
            titles.push((n.to_string(), rest.to_string()));
        }
    }
    titles
        .into_iter()
        .filter(|(n, _)| !log.lines().any(|l| l == format!("{n} CACHED")))
        .map(|(_, t)| t)
        .collect()
}

/// `kiln build` arguments for the context `ctx` into the OCI layout `out`, reproducibly.
fn build_args(ctx: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "build",
        "-t",
        "test:latest",
        "--progress",
        "plain",
        "--build-arg",
        EPOCH,
        "--output",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("type=oci,dest={},tar=false", out.display()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(ctx.display().to_string());
    args
}

fn kiln_build(sb: &Sandbox, ctx: &Path, out: &str, extra: &[&str]) -> common::Run {
    let args = build_args(ctx, &sb.path(out), extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sb.kiln(&args)
}

/// What a crash must not leave behind once a later build on the root has finished.
#[track_caller]
fn assert_root_clean(root: &Path, what: &str) {
    let tmp = entries(&root.join("tmp"));
    assert!(tmp.is_empty(), "{what}: tmp/ holds {tmp:?}");
    let ingest = entries(&root.join("content/ingest"));
    assert!(
        ingest.is_empty(),
        "{what}: content/ingest/ holds {ingest:?}"
    );
    // Every blob holds what its name says.
    let blobs = root.join("content/blobs/sha256");
    for name in entries(&blobs) {
        let out = Command::new("sha256sum")
            .arg(blobs.join(&name))
            .output()
            .unwrap();
        let sum = String::from_utf8_lossy(&out.stdout);
        assert!(
            sum.starts_with(&name),
            "{what}: blob {name} is corrupt ({sum})"
        );
    }
    // Every snapshot is whole.
    for name in entries(&root.join("snapshots")) {
        assert!(
            root.join("snapshots").join(&name).join("diff").is_dir(),
            "{what}: snapshot {name} has no diff/"
        );
    }
}

/// Pushes `REGISTRY/big:1`: busybox plus a layer with `mib` MiB of random data.
fn push_big_base(reg: &Registry, mib: usize) -> String {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("cp")
        .arg("-a")
        .arg(common::registry::busybox_layout())
        .arg(&layout));
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:1.35", layout.display()))
        .arg(&bundle));
    fs::write(
        bundle.join("rootfs/big.bin"),
        random_bytes(mib << 20, 0x5eed),
    )
    .unwrap();
    run(Command::new("umoci")
        .arg("repack")
        .arg("--image")
        .arg(format!("{}:1.35", layout.display()))
        .arg(&bundle));
    let reference = format!("{}/big:1", reg.addr);
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1.35", layout.display()))
        .arg(format!("docker://{reference}")));
    reference
}

// ---------------------------------------------------------------------------------------------
// 1. Two processes at once on one root.

#[test]
fn two_processes_build_at_once_on_one_root() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    let rounds = 3;
    for r in 0..rounds {
        for (who, other) in [("a", "b"), ("b", "a")] {
            sb.file(&format!("{who}/common.txt"), &format!("common-{r}\n"))
                .file(&format!("{who}/{who}.txt"), &format!("{who}-{r}\n"))
                .file(&format!("{who}/{other}.txt"), "not copied\n")
                .file(
                    &format!("{who}/Dockerfile"),
                    &format!(
                        "FROM {base}\n\
                         RUN echo shared-{r} > /shared && sleep 1\n\
                         COPY common.txt /common.txt\n\
                         RUN cat /common.txt /shared > /common-seen\n\
                         COPY {who}.txt /{who}.txt\n\
                         RUN cat /{who}.txt /shared > /{who}-seen\n"
                    ),
                );
        }
        let (ra, rb) = std::thread::scope(|s| {
            let a = s.spawn(|| kiln_build(&sb, &sb.ctx().join("a"), &format!("a{r}"), &[]));
            let b = s.spawn(|| kiln_build(&sb, &sb.ctx().join("b"), &format!("b{r}"), &[]));
            (a.join().unwrap(), b.join().unwrap())
        });
        ra.ok();
        rb.ok();
        for who in ["a", "b"] {
            let rootfs = sb.unpack(&format!("{who}{r}"), "latest");
            let read = |p: &str| {
                fs::read_to_string(rootfs.join(p))
                    .unwrap_or_else(|e| panic!("round {r}, {who}: /{p}: {e}"))
            };
            assert_eq!(read("shared"), format!("shared-{r}\n"), "round {r}, {who}");
            assert_eq!(
                read("common-seen"),
                format!("common-{r}\nshared-{r}\n"),
                "round {r}, {who}"
            );
            assert_eq!(
                read(&format!("{who}-seen")),
                format!("{who}-{r}\nshared-{r}\n"),
                "round {r}, {who}"
            );
            assert!(rootfs.join("bin/busybox").is_file(), "round {r}, {who}");
        }
        assert_root_clean(&sb.root(), &format!("after round {r}"));
    }
    assert!(mounts_under(&sb.root()).is_empty(), "no mount is left");

    // A third build of each, one after the other, is fully cached and gives the same image.
    for who in ["a", "b"] {
        let last = format!("{who}{}", rounds - 1);
        let log = kiln_build(&sb, &sb.ctx().join(who), &format!("{who}-again"), &[])
            .ok()
            .stderr();
        let missed = steps_not_cached(&log);
        assert!(missed.is_empty(), "{who}: not cached: {missed:?}\n{log}");
        assert_eq!(
            common::manifest_digest(&sb.path(&format!("{who}-again"))),
            common::manifest_digest(&sb.path(&last)),
            "{who}: the cached build gives the same image"
        );
    }
    // And both again at once: still all cached.
    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| kiln_build(&sb, &sb.ctx().join("a"), "a-third", &[]));
        let b = s.spawn(|| kiln_build(&sb, &sb.ctx().join("b"), "b-third", &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (who, run) in [("a", ra), ("b", rb)] {
        let log = run.ok().stderr();
        let missed = steps_not_cached(&log);
        assert!(missed.is_empty(), "{who}: not cached: {missed:?}\n{log}");
    }
    assert_root_clean(&sb.root(), "at the end");
}

// ---------------------------------------------------------------------------------------------
// 2. SIGKILL at several points.

/// One kill: a fresh root, the context written by `setup`, kiln started in the background and
/// SIGKILLed once `kill_when` says so (it gets the root and the log so far; returning false
/// means "not yet"). Then: nothing of the build is left running, and a rebuild on the same
/// root with no clean-up succeeds and gives `reference`. Returns whether the kill happened
/// before the build ended.
fn kill_then_rebuild(
    what: &str,
    setup: &dyn Fn(&Sandbox),
    extra: &[&str],
    marker: Option<&str>,
    reference: &str,
    mut kill_when: impl FnMut(&Path, &str) -> bool,
) -> bool {
    let sb = Sandbox::new();
    setup(&sb);
    let log_path = sb.path("killed.log");
    let args = build_args(&sb.ctx(), &sb.path("killed"), extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn_kiln(&sb.root(), &args, &log_path);
    let root = sb.root();
    let mut finished = false;
    let fired = wait_until(Duration::from_secs(60), || {
        if let Ok(Some(_)) = child.try_wait() {
            finished = true;
            return true;
        }
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        kill_when(&root, &log)
    });
    assert!(fired, "{what}: the kill point was never reached");
    sigkill(&mut child);
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    eprintln!(
        "{what}: killed {} the build ended; last log line: {:?}",
        if finished { "after" } else { "before" },
        log.lines().rev().find(|l| !l.is_empty()).unwrap_or("")
    );
    // With the builtin runtime the step's processes die with kiln. A runc container can't be
    // tied to kiln's life (runc has no parent-death option), so it lives on until the next
    // kiln on this root starts: that one kills and deletes it before building.
    let runc = extra.contains(&"runc");
    if let (Some(marker), false) = (marker, runc) {
        let gone = wait_until(Duration::from_secs(1), || processes_with(marker).is_empty());
        let left = processes_with(marker);
        assert!(
            gone,
            "{what}: the step's processes outlived kiln: {left:?}\n{log}"
        );
    }

    let rebuilt = kiln_build(&sb, &sb.ctx(), "rebuilt", extra);
    let leftover_mounts = mounts_under(&sb.root());
    unmount_under(&sb.root());
    rebuilt.ok();
    assert_eq!(
        common::manifest_digest(&sb.path("rebuilt")),
        reference,
        "{what}: the rebuild gives the uninterrupted build's image\nkilled build's log:\n{log}\nrebuild's log:\n{}",
        rebuilt.stderr()
    );
    assert_root_clean(&sb.root(), what);
    if let Some(marker) = marker {
        let left = processes_with(marker);
        let containers = runc_containers(&sb.root());
        assert!(
            left.is_empty() && containers.is_empty(),
            "{what}: after the rebuild, processes of the killed step: {left:?}; runc containers: {containers:?}"
        );
    }
    assert!(
        leftover_mounts.is_empty(),
        "{what}: mounts left under the root after the kill and a rebuild: {leftover_mounts:?}"
    );
    !finished
}

/// The image digest of an uninterrupted build on a fresh root, and how long it took.
fn reference_build(setup: &dyn Fn(&Sandbox), extra: &[&str]) -> (String, Duration) {
    let sb = Sandbox::new();
    setup(&sb);
    let start = Instant::now();
    kiln_build(&sb, &sb.ctx(), "reference", extra).ok();
    let took = start.elapsed();
    // Built twice on fresh roots, the image is the same: the comparison below means something.
    let again = Sandbox::new();
    setup(&again);
    kiln_build(&again, &again.ctx(), "reference", extra).ok();
    let digest = common::manifest_digest(&sb.path("reference"));
    assert_eq!(
        common::manifest_digest(&again.path("reference")),
        digest,
        "the build is reproducible"
    );
    (digest, took)
}

#[test]
fn sigkill_while_pulling_then_rebuild() {
    let reg = Registry::start(None);
    let big = push_big_base(&reg, 16);
    let setup = |sb: &Sandbox| {
        sb.dockerfile(&format!("FROM {big}\nRUN echo pulled > /pulled\n"));
    };
    let (reference, took) = reference_build(&setup, &[]);

    // Killed while the big blob is being downloaded (a temp file in content/ingest/ that
    // has grown past 4 MiB; the busybox layer is about 1 MiB).
    let mut during_download = 0;
    for i in 0..3 {
        let what = format!("pull, kill while downloading #{i}");
        let killed_early = kill_then_rebuild(&what, &setup, &[], None, &reference, |root, _| {
            let ingest = root.join("content/ingest");
            entries(&ingest)
                .iter()
                .any(|name| fs::metadata(ingest.join(name)).is_ok_and(|m| m.len() > 4 << 20))
        });
        if killed_early {
            during_download += 1;
        }
    }
    assert!(during_download > 0, "never caught a download in progress");
    // Killed at points spread over the pull (download, unpacking the layers).
    for k in 1..=4u32 {
        let delay = took * k / 6;
        let what = format!("pull, kill after {delay:?}");
        let start = Instant::now();
        kill_then_rebuild(&what, &setup, &[], None, &reference, |_, log| {
            start.elapsed() >= delay || log.contains("RUN echo pulled")
        });
    }
}

#[test]
fn sigkill_during_run_then_rebuild_builtin() {
    sigkill_during_run("builtin");
}

#[test]
fn sigkill_during_run_then_rebuild_runc() {
    sigkill_during_run("runc");
}

/// `runc list` of the runc state under a kiln root.
fn runc_containers(root: &Path) -> Vec<String> {
    let state = root.join("executor/runc/state");
    if !state.is_dir() {
        return Vec::new();
    }
    let out = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn sigkill_during_run(runtime: &str) {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    // A sleep distinct per runtime (the two tests run at once): the marker is on the command
    // line of both the shell and the sleep it starts.
    let sleep = if runtime == "runc" {
        "3.4343"
    } else {
        "3.4242"
    };
    let marker = format!("sleep {sleep}");
    let setup = |sb: &Sandbox| {
        sb.file("f.txt", "f\n").dockerfile(&format!(
            "FROM {base}\nCOPY f.txt /f.txt\nRUN echo started > /ran && sleep {sleep} && echo ok >> /ran\n"
        ));
    };
    let extra = ["--runtime", runtime];
    let (reference, _) = reference_build(&setup, &extra);
    for i in 0..2 {
        let what = format!("{runtime}: kill during RUN #{i}");
        let sb_marker = marker.clone();
        let killed = kill_then_rebuild(
            &what,
            &setup,
            &extra,
            Some(&marker),
            &reference,
            move |_, _| !processes_with(&sb_marker).is_empty(),
        );
        assert!(killed, "{what}: the RUN step was running when killed");
    }
}

#[test]
fn sigkill_during_run_leaves_no_per_run_state_after_rebuild() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM {base}\nRUN sleep 3.4141\n"));
    let log = sb.path("killed.log");
    let args = build_args(&sb.ctx(), &sb.path("killed"), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn_kiln(&sb.root(), &args, &log);
    assert!(
        wait_until(Duration::from_secs(30), || !processes_with("sleep 3.4141")
            .is_empty()),
        "the RUN step never started"
    );
    sigkill(&mut child);
    sb.dockerfile(&format!("FROM {base}\nRUN echo fine > /fine\n"));
    kiln_build(&sb, &sb.ctx(), "rebuilt", &[]).ok();
    let state = sb.root().join("executor/builtin");
    let left = entries(&state);
    assert!(
        left.is_empty(),
        "{} holds {left:?} after a killed build and a rebuild",
        state.display()
    );
}

#[test]
fn sigkill_while_committing_or_exporting_then_rebuild() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let data = random_bytes(8 << 20, 0xc0ffee);
    let setup = |sb: &Sandbox| {
        sb.dockerfile(&format!(
            "FROM {base}\nCOPY big.bin /big.bin\nRUN wc -c /big.bin > /size\n"
        ));
        fs::write(sb.ctx().join("big.bin"), &data).unwrap();
    };
    let (reference, took) = reference_build(&setup, &[]);
    // Delays spread over the build (after the pull, most of it is hashing the context,
    // committing the COPY's snapshot and exporting the layers), with some jitter.
    let mut jitter = random_bytes(16, Instant::now().elapsed().as_nanos() as u64 ^ 0x1234);
    jitter.truncate(6);
    for (k, j) in (1..=6u32).zip(jitter) {
        let delay = took * k / 7 + Duration::from_millis(u64::from(j) % 40);
        let what = format!("COPY/export, kill after {delay:?}");
        let start = Instant::now();
        kill_then_rebuild(&what, &setup, &[], None, &reference, |_, _| {
            start.elapsed() >= delay
        });
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Build arg scoping.

#[test]
fn changed_build_arg_reruns_only_steps_after_its_declaration() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.file("f.txt", "f\n").dockerfile(&format!(
        "FROM {base} AS other\n\
         RUN echo other > /other\n\
         COPY f.txt /other-f.txt\n\
         FROM {base} AS app\n\
         RUN echo before > /before\n\
         COPY f.txt /f.txt\n\
         ARG VERSION=0\n\
         RUN echo v=$VERSION > /version\n\
         RUN echo after > /after\n\
         COPY --from=other /other /other\n"
    ));
    let run = |version: &str, out: &str| {
        let arg = format!("VERSION={version}");
        kiln_build(&sb, &sb.ctx(), out, &["--build-arg", &arg])
            .ok()
            .stderr()
    };
    run("1", "o1");
    assert_eq!(
        fs::read_to_string(sb.unpack("o1", "latest").join("version")).unwrap(),
        "v=1\n"
    );

    let log = run("2", "o2");
    for step in [
        "RUN echo other",
        "COPY f.txt /other-f.txt",
        "RUN echo before",
        "COPY f.txt /f.txt",
    ] {
        assert!(cached(&log, step), "{step} should be cached:\n{log}");
    }
    for step in ["RUN echo v=$VERSION", "RUN echo after", "COPY --from=other"] {
        assert!(!cached(&log, step), "{step} should re-run:\n{log}");
    }
    let rootfs = sb.unpack("o2", "latest");
    assert_eq!(fs::read_to_string(rootfs.join("version")).unwrap(), "v=2\n");
    assert_eq!(fs::read_to_string(rootfs.join("other")).unwrap(), "other\n");

    // Back to the first value: everything is cached again.
    let log = run("1", "o3");
    let missed = steps_not_cached(&log);
    assert!(missed.is_empty(), "not cached: {missed:?}\n{log}");
    assert_eq!(
        common::manifest_digest(&sb.path("o3")),
        common::manifest_digest(&sb.path("o1"))
    );
}
