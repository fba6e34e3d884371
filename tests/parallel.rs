//! The parallel scheduler, seen from the command line: independent stages run at the same time
//! (bounded by `--jobs`), a step shared by two stages runs once, a failure stops the build at
//! once and cleanly, every failure is reported, and the image does not depend on `--jobs`.

mod common;

use common::procs::processes_with;
use common::registry::Registry;
use common::{Run, Sandbox};
use std::time::{Duration, Instant};

/// Asserts that a build on `sb` left no mount under its root and nothing in its tmp/.
#[track_caller]
fn assert_clean(sb: &Sandbox) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = sb.root().display().to_string();
    assert!(!mounts.contains(&root), "no mount under the root is left");
    let leftovers: Vec<_> = std::fs::read_dir(sb.root().join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "tmp/ is empty: {leftovers:?}");
}

/// The manifest digest of the OCI layout `out`.
fn manifest_digest(sb: &Sandbox, out: &str) -> String {
    common::manifest_digest(&sb.path(out))
}

fn timed(f: impl FnOnce() -> Run) -> (Run, Duration) {
    let start = Instant::now();
    let run = f();
    (run, start.elapsed())
}

/// Three stages that each sleep `secs` and a final stage copying from all three.
fn three_sleepy_stages(base: &str, secs: &str) -> String {
    let mut df = String::new();
    for stage in ["a", "b", "c"] {
        df.push_str(&format!(
            "FROM {base} AS {stage}\nRUN sleep {secs} && echo {stage} > /{stage}\n"
        ));
    }
    df.push_str(&format!(
        "FROM {base}\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\n"
    ));
    df
}

#[test]
fn independent_stages_run_at_once_up_to_jobs() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    // Pull the base first so that only the RUN steps are timed.
    let warm = |sb: &Sandbox| {
        sb.dockerfile(&format!("FROM {base}\n"));
        sb.build_oci("warm", &[]).ok();
        sb.dockerfile(&three_sleepy_stages(&base, "1"));
    };

    let parallel = Sandbox::new();
    warm(&parallel);
    let (run, elapsed) = timed(|| parallel.build_oci("out", &["--jobs", "3"]));
    run.ok();
    eprintln!("--jobs 3: {elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(2600),
        "three 1 s stages with --jobs 3 took {elapsed:?}"
    );
    let rootfs = parallel.unpack("out", "latest");
    for f in ["a", "b", "c"] {
        assert!(rootfs.join(f).is_file(), "/{f} was copied");
    }

    // The default (one job per CPU) runs at least two at once.
    let default = Sandbox::new();
    warm(&default);
    let (run, elapsed) = timed(|| default.build_oci("out", &[]));
    run.ok();
    eprintln!("default --jobs: {elapsed:?}");
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        assert!(
            elapsed < Duration::from_millis(2900),
            "three 1 s stages with the default jobs took {elapsed:?}"
        );
    }

    let serial = Sandbox::new();
    warm(&serial);
    let (run, elapsed) = timed(|| serial.build_oci("out", &["--jobs", "1"]));
    run.ok();
    eprintln!("--jobs 1: {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(3000),
        "three 1 s stages with --jobs 1 took only {elapsed:?}"
    );
}

#[test]
fn a_step_shared_by_two_stages_runs_once() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    for jobs in ["1", "4"] {
        let sb = Sandbox::new();
        // The step's output ("ran-42") is not in its command text: each line of it is a run.
        let shared = "RUN echo ran-$((40+2)) && sleep 0.5 && echo shared > /shared";
        sb.dockerfile(&format!(
            "FROM {base} AS a\n{shared}\nRUN echo a > /a\n\
             FROM {base} AS b\n{shared}\nRUN echo b > /b\n\
             FROM {base}\nCOPY --from=a /a /shared /\nCOPY --from=b /b /\n"
        ));
        let run = sb.build_oci("out", &["--jobs", jobs]);
        run.ok();
        let err = run.stderr();
        let runs = err.lines().filter(|l| l.contains("ran-42")).count();
        assert_eq!(
            runs, 1,
            "--jobs {jobs}: the shared step ran {runs} times:\n{err}"
        );
        let rootfs = sb.unpack("out", "latest");
        for f in ["a", "b", "shared"] {
            assert!(rootfs.join(f).is_file(), "--jobs {jobs}: /{f} is there");
        }
    }
}

#[test]
fn a_failure_stops_a_running_stage_at_once_and_cleanly() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    for runtime in ["builtin", "runc"] {
        let sb = Sandbox::new();
        let marker = if runtime == "builtin" {
            "sleep 29"
        } else {
            "sleep 28"
        };
        sb.dockerfile(&format!(
            "FROM {base} AS slow\nRUN {marker}\n\
             FROM {base} AS broken\nRUN sleep 0.5 && exit 3\n\
             FROM {base}\nCOPY --from=slow /etc/passwd /a\nCOPY --from=broken /etc/passwd /b\n"
        ));
        let (run, elapsed) = timed(|| sb.build_oci("out", &["--jobs", "4", "--runtime", runtime]));
        eprintln!("{runtime}: {elapsed:?}\n{}", run.stderr());
        run.fails_with(&["exit code: 3", "RUN sleep 0.5 && exit 3"]);
        assert!(
            elapsed < Duration::from_secs(10),
            "{runtime}: the build failed only after {elapsed:?}"
        );
        assert!(
            processes_with(marker).is_empty(),
            "{runtime}: the sleeping step's process is gone"
        );
        assert!(
            !run.stderr().contains("exit code: 137"),
            "{runtime}: the cancelled step is not reported as a failure:\n{}",
            run.stderr()
        );
        assert_clean(&sb);

        // The root is consistent: the next build works.
        sb.dockerfile(&format!("FROM {base}\nRUN echo fine > /fine\n"));
        sb.build_oci("out", &["--runtime", runtime]).ok();
    }
}

#[test]
fn every_failed_stage_is_reported() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.file("present.txt", "here").dockerfile(&format!(
        "FROM {base} AS a\nCOPY missing-a.txt /\n\
         FROM {base} AS b\nCOPY missing-b.txt /\n\
         FROM {base}\nCOPY --from=a /etc/passwd /a\nCOPY --from=b /etc/passwd /b\n"
    ));
    let run = sb.build_oci("out", &["--jobs", "4"]);
    eprintln!("{}", run.stderr());
    run.fails_with(&[
        "missing-a.txt",
        "missing-b.txt",
        "COPY missing-a.txt /",
        "COPY missing-b.txt /",
    ]);
    assert_clean(&sb);
}

#[test]
fn the_image_does_not_depend_on_jobs() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let build = |jobs: &str| {
        let sb = Sandbox::new();
        sb.file("f.txt", "F").dockerfile(&format!(
            "FROM {base} AS a\nRUN echo a > /a && mkdir -p /d/a\nCOPY f.txt /d/a/\n\
             FROM {base} AS b\nRUN echo b > /b && rm /bin/true\n\
             FROM {base} AS c\nWORKDIR /w\nRUN echo c > c\n\
             FROM {base}\nCOPY --from=a / /\nCOPY --from=b /b /b\nCOPY --from=c /w /w\n\
             RUN cat /a /b /w/c > /all\n"
        ));
        sb.build_oci(
            "out",
            &[
                "--jobs",
                jobs,
                "--build-arg",
                "SOURCE_DATE_EPOCH=1700000000",
            ],
        )
        .ok();
        manifest_digest(&sb, "out")
    };
    assert_eq!(build("1"), build("4"));
}
