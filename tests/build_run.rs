//! End-to-end RUN: every test runs once per runtime (the builtin namespace executor, runc, and
//! crun when it works on this host) against a busybox base from a real loopback registry. The
//! semantics checked are BuildKit's (see the conformance cases).

mod common;

use common::registry::Registry;
use common::{blob, Run, Sandbox};
use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The runtimes to test: builtin and runc always; crun unless it cannot run containers on this
/// host (e.g. "cgroups in hybrid mode not supported"), which is probed once per test process.
fn runtimes(base: &str) -> Vec<&'static str> {
    static CRUN: OnceLock<Result<(), String>> = OnceLock::new();
    let crun = CRUN.get_or_init(|| {
        let sb = Sandbox::new();
        sb.dockerfile(&format!("FROM {base}\nRUN true\n"));
        let run = sb.build_oci("out", &["--runtime", "crun"]);
        if run.0.status.success() {
            return Ok(());
        }
        let err = run.stderr();
        match err
            .lines()
            .find(|l| l.contains("cgroups in hybrid mode not supported"))
        {
            Some(line) => Err(line
                .trim_start_matches(|c: char| c == '#' || c.is_ascii_digit() || c == ' ')
                .to_string()),
            // Any other failure is kiln's: keep crun so the tests show it.
            None => Ok(()),
        }
    });
    match crun {
        Ok(()) => vec!["builtin", "runc", "crun"],
        Err(reason) => {
            eprintln!("skipping crun: it cannot run containers on this host: {reason}");
            vec!["builtin", "runc"]
        }
    }
}

/// A registry with the busybox base pushed, and the runtimes to cover.
fn setup() -> (Registry, String, Vec<&'static str>) {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let rts = runtimes(&base);
    (reg, base, rts)
}

/// `kiln build --runtime RT EXTRA…` into the OCI layout `out`.
fn build(sb: &Sandbox, rt: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--runtime", rt];
    args.extend_from_slice(extra);
    sb.build_oci("out", &args)
}

fn read(rootfs: &Path, rel: &str) -> String {
    fs::read_to_string(rootfs.join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .trim_end()
        .to_string()
}

/// The manifest digest of the single image of an OCI layout.
fn image_digest(sb: &Sandbox, layout: &str) -> String {
    common::manifest_digest(&sb.path(layout))
}

/// The paths in the layer tars of an OCI layout, one list per layer.
fn layer_entries(sb: &Sandbox, layout: &str) -> Vec<Vec<String>> {
    let dir = sb.path(layout);
    let manifest = common::manifest(&dir);
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let out = std::process::Command::new("tar")
                .arg("-tf")
                .arg(blob(&dir, l["digest"].as_str().unwrap()))
                .output()
                .unwrap();
            assert!(out.status.success(), "tar -tf a layer");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|s| s.trim_start_matches("./").to_string())
                .collect()
        })
        .collect()
}

#[test]
fn shell_and_exec_forms() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            r#"FROM {base}
ENV FOO=bar
RUN echo hello > /hello.txt
RUN ["/bin/sh", "-c", "echo exec > /exec.txt"]
RUN echo "a  b" | wc -w > /words.txt
RUN ["/bin/sh", "-c", "echo \"$1\" > /literal.txt", "sh", "$FOO"]
RUN ["/bin/sh", "-c", "echo $FOO > /env.txt"]
RUN echo $0 > /argv0.txt
"#
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        assert_eq!(read(&r, "hello.txt"), "hello", "{rt}");
        assert_eq!(read(&r, "exec.txt"), "exec", "{rt}");
        assert_eq!(read(&r, "words.txt"), "2", "{rt}: the shell splits words");
        assert_eq!(
            read(&r, "literal.txt"),
            "$FOO",
            "{rt}: the exec form is not expanded by the frontend"
        );
        assert_eq!(read(&r, "env.txt"), "bar", "{rt}: ENV reaches the process");
        assert_eq!(
            read(&r, "argv0.txt"),
            "/bin/sh",
            "{rt}: shell form is /bin/sh -c"
        );
    }
}

#[test]
fn heredocs() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            "# syntax=docker/dockerfile:1
FROM {base}
ENV WHO=world
RUN <<EOF
echo line1 > /h1
echo \"hello $WHO\" >> /h1
EOF
RUN <<A cat > /two && <<B cat > /three
first
A
second
B
"
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        assert_eq!(read(&r, "h1"), "line1\nhello world", "{rt}");
        assert_eq!(read(&r, "two"), "first", "{rt}: first of two heredocs");
        assert_eq!(read(&r, "three"), "second", "{rt}: second of two heredocs");
    }
}

#[test]
fn heredoc_with_shebang_runs_as_a_script() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            "# syntax=docker/dockerfile:1
FROM {base}
RUN <<EOF
#!/bin/sh
echo \"shebang $0\" > /shebang.txt
EOF
"
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        let shebang = read(&r, "shebang.txt");
        assert!(
            shebang.starts_with("shebang /"),
            "{rt}: a heredoc with a shebang runs as a script file: {shebang:?}"
        );
    }
}

/// Whether any layer of the OCI layout `out` has `path` or something below it.
fn in_some_layer(sb: &Sandbox, path: &str) -> bool {
    layer_entries(sb, "out").iter().flatten().any(|e| {
        let e = e.trim_end_matches('/');
        e == path || e.starts_with(&format!("{path}/"))
    })
}

#[test]
fn run_mount_bind_of_a_stage_readonly_and_readwrite() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            "FROM {base} AS stage
RUN mkdir /out && echo from-stage > /out/f
FROM {base}
RUN --mount=type=bind,from=stage,source=/out,target=/in cat /in/f > /copied && \\
    if touch /in/new 2>/dev/null; then echo writable > /ro-check; fi
RUN --mount=type=bind,from=stage,source=/out,target=/rw,rw \\
    echo changed > /rw/f && echo new > /rw/g && cat /rw/f > /rw-seen
RUN --mount=type=bind,from=stage,source=out/f,target=/etc/one-file \\
    cat /rw-seen /etc/one-file > /after-rw
RUN --mount=type=bind,from=stage,source=/out,target=/again ls /again > /again-list
"
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        assert_eq!(read(&r, "copied"), "from-stage", "{rt}");
        assert!(in_some_layer(&sb, "copied"), "{rt}: layers are listed");
        assert!(!r.join("ro-check").exists(), "{rt}: a bind is read-only");
        assert_eq!(
            read(&r, "rw-seen"),
            "changed",
            "{rt}: rw binds are writable"
        );
        assert_eq!(
            read(&r, "after-rw"),
            "changed\nfrom-stage",
            "{rt}: writes to an rw bind are discarded; a single file can be bound"
        );
        assert_eq!(
            read(&r, "again-list"),
            "f",
            "{rt}: writes to an rw bind never reach the stage"
        );
        for gone in ["in", "rw", "again", "etc/one-file"] {
            assert!(!r.join(gone).exists(), "{rt}: /{gone} stayed in the image");
            assert!(!in_some_layer(&sb, gone), "{rt}: /{gone} is in a layer");
        }
    }
}

#[test]
fn run_mount_bind_of_the_context() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.file("data.txt", "ctx data\n")
            .file("sub/x", "x\n")
            .file("ignored.txt", "hidden\n")
            .file(".dockerignore", "ignored.txt\n");
        sb.dockerfile(&format!(
            "FROM {base}
RUN --mount=type=bind,target=/ctx cat /ctx/data.txt > /ctx-data && ls /ctx > /ctx-list
RUN --mount=type=bind,source=sub,target=/sub,rw touch /sub/new && ls /sub > /sub-list
"
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        assert_eq!(read(&r, "ctx-data"), "ctx data", "{rt}");
        assert_eq!(
            read(&r, "ctx-list"),
            "Dockerfile\ndata.txt\nsub",
            "{rt}: the context as .dockerignore filters it"
        );
        assert_eq!(read(&r, "sub-list"), "new\nx", "{rt}");
        assert!(
            !sb.ctx().join("sub/new").exists(),
            "{rt}: an rw bind of the context writes to a copy"
        );
        for gone in ["ctx", "sub"] {
            assert!(!r.join(gone).exists(), "{rt}: /{gone} stayed in the image");
            assert!(!in_some_layer(&sb, gone), "{rt}: /{gone} is in a layer");
        }
    }
}

#[test]
fn run_mount_tmpfs_leaves_nothing() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            "FROM {base}
RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/f && ls /scratch > /scratch-list && \\
    grep ' /scratch ' /proc/mounts | cut -d' ' -f3 > /scratch-fs
"
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        assert_eq!(read(&r, "scratch-list"), "f", "{rt}");
        assert_eq!(read(&r, "scratch-fs"), "tmpfs", "{rt}");
        assert!(!r.join("scratch").exists(), "{rt}: /scratch stayed");
        assert!(
            !in_some_layer(&sb, "scratch"),
            "{rt}: /scratch is in a layer"
        );
    }
}

#[test]
fn env_and_arg_visible_to_run_but_args_not_in_config() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            "ARG GLOBAL=g
FROM {base}
ARG A=adef
ARG B
ARG C=cdef
ENV E=e1 A2=${{A}}x
RUN echo \"A=$A B=$B C=$C E=$E A2=$A2 GLOBAL=[$GLOBAL]\" > /vars.txt
ARG GLOBAL
RUN echo \"GLOBAL=$GLOBAL\" > /global.txt
"
        ));
        build(&sb, rt, &["--build-arg", "B=bval", "--build-arg", "C=cval"]).ok();
        let r = sb.unpack("out", "latest");
        assert_eq!(
            read(&r, "vars.txt"),
            "A=adef B=bval C=cval E=e1 A2=adefx GLOBAL=[]",
            "{rt}: ARGs and ENV reach RUN; a global ARG only once re-declared"
        );
        assert_eq!(read(&r, "global.txt"), "GLOBAL=g", "{rt}");
        let config = sb.config("out");
        let env: Vec<String> = config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert!(env.contains(&"E=e1".to_string()), "{rt}: {env:?}");
        assert!(env.contains(&"A2=adefx".to_string()), "{rt}: {env:?}");
        for arg in ["A=", "B=", "C=", "GLOBAL="] {
            assert!(
                !env.iter().any(|e| e.starts_with(arg)),
                "{rt}: ARG {arg} leaked into the config: {env:?}"
            );
        }
    }
}

#[test]
fn user_by_name_and_uid_gid_with_supplementary_groups() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            "FROM {base}
RUN echo 'extra:x:2000:app' >> /etc/group && mkdir /out && chmod 777 /out
RUN id -u > /out/root && id -g >> /out/root && id -G >> /out/root
USER app
RUN id -u > /out/app && id -g >> /out/app && id -G >> /out/app && echo \"$HOME\" >> /out/app
USER 1000:2000
RUN id -u > /out/num && id -g >> /out/num && id -G >> /out/num
USER 1000
RUN id -u > /out/uidonly && id -g >> /out/uidonly && id -G >> /out/uidonly
USER app:extra
RUN id -u > /out/named && id -g >> /out/named
USER root
RUN touch /by-root
"
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        assert_eq!(read(&r, "out/root"), "0\n0\n0", "{rt}: root");
        assert_eq!(
            read(&r, "out/app"),
            "1000\n1000\n1000 2000\n/home/app",
            "{rt}: USER app takes uid, gid, supplementary groups from /etc/passwd and /etc/group"
        );
        assert_eq!(
            read(&r, "out/num"),
            "1000\n2000\n2000",
            "{rt}: USER uid:gid has no supplementary groups"
        );
        assert_eq!(
            read(&r, "out/uidonly"),
            "1000\n1000\n1000 2000",
            "{rt}: USER uid alone takes gid and groups from the passwd entry of that uid"
        );
        assert_eq!(read(&r, "out/named"), "1000\n2000", "{rt}: USER name:group");
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(r.join("out/app")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{rt}: files made as app");
        assert_eq!(sb.config("out")["config"]["User"], "root", "{rt}");
    }
}

#[test]
fn workdir_is_created_and_used_as_cwd() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            "FROM {base}
WORKDIR /a/b/c
RUN pwd > /pwd1.txt && touch here
WORKDIR d
RUN pwd > /pwd2.txt
USER app
WORKDIR /home/app/w
RUN pwd > /home/app/w/pwd3.txt
"
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        assert_eq!(read(&r, "pwd1.txt"), "/a/b/c", "{rt}");
        assert!(
            r.join("a/b/c/here").is_file(),
            "{rt}: relative paths use the workdir"
        );
        assert_eq!(read(&r, "pwd2.txt"), "/a/b/c/d", "{rt}: relative WORKDIR");
        assert_eq!(read(&r, "home/app/w/pwd3.txt"), "/home/app/w", "{rt}");
        assert!(
            r.join("a/b/c/d").is_dir(),
            "{rt}: WORKDIR dirs are in the image"
        );
        assert_eq!(
            sb.config("out")["config"]["WorkingDir"],
            "/home/app/w",
            "{rt}"
        );
    }
}

/// The interface names in a /proc/net/dev text.
fn interfaces(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v
}

#[test]
fn network_none_has_only_lo_and_default_is_host() {
    let (_reg, base, rts) = setup();
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            "FROM {base}
RUN --network=none cat /proc/net/dev > /none.txt
RUN cat /proc/net/dev > /default.txt
RUN --network=host cat /proc/net/dev > /host.txt
"
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        assert_eq!(
            interfaces(&read(&r, "none.txt")),
            vec!["lo".to_string()],
            "{rt}: --network=none"
        );
        assert_eq!(
            interfaces(&read(&r, "default.txt")),
            host,
            "{rt}: the default is the host's network"
        );
        assert_eq!(
            interfaces(&read(&r, "host.txt")),
            host,
            "{rt}: --network=host"
        );
    }
}

#[test]
fn deletions_become_whiteouts() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        sb.dockerfile(&format!(
            "FROM {base}
RUN mkdir -p /d/sub && echo x > /d/sub/f && echo y > /gone && echo keep > /d/keep && echo k > /kept
RUN rm /gone
RUN rm -rf /d && mkdir /d && echo new > /d/n
RUN rm /bin/vi
"
        ));
        build(&sb, rt, &[]).ok();
        let r = sb.unpack("out", "latest");
        assert!(!r.join("gone").exists(), "{rt}: a deleted file is absent");
        assert!(
            !r.join("d/sub").exists(),
            "{rt}: the old dir's content is gone"
        );
        assert!(!r.join("d/keep").exists(), "{rt}");
        assert_eq!(read(&r, "d/n"), "new", "{rt}: the re-created dir");
        assert_eq!(read(&r, "kept"), "k", "{rt}");
        assert!(
            fs::symlink_metadata(r.join("bin/vi")).is_err(),
            "{rt}: a base image file deleted"
        );
        assert!(r.join("bin/sh").exists(), "{rt}");
        let layers = layer_entries(&sb, "out");
        assert_eq!(
            layers.len(),
            5,
            "{rt}: base + one layer per RUN: {layers:?}"
        );
        assert!(
            layers[2].iter().any(|e| e == ".wh.gone"),
            "{rt}: rm makes a whiteout: {:?}",
            layers[2]
        );
        assert!(
            layers[3].iter().any(|e| e == "d/.wh..wh..opq")
                || (layers[3].iter().any(|e| e == "d/.wh.sub")
                    && layers[3].iter().any(|e| e == "d/.wh.keep")),
            "{rt}: a re-created dir hides the old content: {:?}",
            layers[3]
        );
        assert!(
            layers[4].iter().any(|e| e == "bin/.wh.vi"),
            "{rt}: {:?}",
            layers[4]
        );
    }
}

/// Whether a step printed the line `text` (as `#N 0.512 text` in plain progress).
fn printed(out: &str, text: &str) -> bool {
    out.lines().any(|l| {
        l.split_once(' ')
            .filter(|(n, _)| n.starts_with('#'))
            .and_then(|(_, rest)| rest.split_once(' '))
            .is_some_and(|(stamp, rest)| stamp.parse::<f64>().is_ok() && rest == text)
    })
}

/// The processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

/// The state root holds no temp files, no mounts and no processes once kiln has exited.
fn assert_clean(sb: &Sandbox, rt: &str, marker: &str) {
    let root = sb.root();
    let tmp = root.join("tmp");
    if tmp.exists() {
        let left: Vec<_> = fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            left.is_empty(),
            "{rt}: the state's tmp/ is not empty: {left:?}"
        );
    }
    let root_s = root.display().to_string();
    let mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root_s))
        .map(str::to_string)
        .collect();
    assert!(
        mounts.is_empty(),
        "{rt}: mounts left under the root: {mounts:?}"
    );
    // The processes a RUN leaves behind die with its container; allow the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut left = processes_with(marker);
        left.extend(processes_with(&root_s));
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{rt}: processes left: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failing_run_reports_exit_code_line_and_output_and_cleans_up() {
    let (_reg, base, rts) = setup();
    for (i, rt) in rts.into_iter().enumerate() {
        let sb = Sandbox::new();
        // A sleeper the failed RUN leaves in the background, recognizable by its argument.
        let secs = 900_000 + std::process::id() % 10_000 * 10 + i as u32;
        sb.dockerfile(&format!(
            "FROM {base}
RUN echo fine > /fine
RUN echo before-the-failure; sleep {secs} >/dev/null 2>&1 & echo boom >&2; exit 7
RUN echo never > /never
"
        ));
        let run = build(&sb, rt, &[]);
        run.fails_with(&[
            "exit code: 7",
            "Dockerfile:3",
            "echo before-the-failure; sleep",
            "exit 7",
        ]);
        let all = format!("{}{}", run.stdout(), run.stderr());
        assert!(
            printed(&all, "before-the-failure"),
            "{rt}: stdout shown:\n{all}"
        );
        assert!(printed(&all, "boom"), "{rt}: stderr shown:\n{all}");
        assert!(
            !all.lines()
                .any(|l| l.starts_with('#') && l.contains("RUN echo never")),
            "{rt}: no later step started:\n{all}"
        );
        assert!(
            !sb.path("out").join("index.json").exists(),
            "{rt}: no image"
        );
        assert_clean(&sb, rt, &format!("sleep {secs}"));

        // A failing exec-form RUN and a missing command fail the same way.
        sb.dockerfile(&format!(
            "FROM {base}\nRUN [\"/bin/sh\", \"-c\", \"exit 3\"]\n"
        ));
        build(&sb, rt, &[]).fails_with(&["exit code: 3", "Dockerfile:2"]);
        assert_clean(&sb, rt, &format!("sleep {secs}"));
        sb.dockerfile(&format!("FROM {base}\nRUN [\"/no/such/binary\"]\n"));
        build(&sb, rt, &[]).fails_with(&["Dockerfile:2", "/no/such/binary"]);
        assert_clean(&sb, rt, &format!("sleep {secs}"));

        // The state stays usable: a good build after the failures.
        sb.dockerfile(&format!("FROM {base}\nRUN echo fine > /fine\n"));
        build(&sb, rt, &[]).ok();
        assert_clean(&sb, rt, &format!("sleep {secs}"));
    }
}

#[test]
fn cache_hits_reproduce_the_digest_and_changes_rerun() {
    let (_reg, base, rts) = setup();
    for rt in rts {
        let sb = Sandbox::new();
        let epoch = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
        let df = |cmd: &str| {
            format!("FROM {base}\nRUN echo step-one-ran && echo one > /one\nRUN {cmd}\n")
        };
        sb.dockerfile(&df("echo step-two-ran && echo two > /two"));
        let first = build(&sb, rt, &epoch);
        first.ok();
        let out1 = first.stdout() + &first.stderr();
        assert!(
            printed(&out1, "step-one-ran") && printed(&out1, "step-two-ran"),
            "{rt}:\n{out1}"
        );
        let digest1 = image_digest(&sb, "out");

        // The same build: both RUNs are cached, the image is the same.
        fs::remove_dir_all(sb.path("out")).unwrap();
        let second = build(&sb, rt, &epoch);
        second.ok();
        let out2 = second.stdout() + &second.stderr();
        assert!(
            !printed(&out2, "step-one-ran") && !printed(&out2, "step-two-ran"),
            "{rt}: nothing re-ran:\n{out2}"
        );
        assert!(
            out2.lines().filter(|l| l.contains("CACHED")).count() >= 2,
            "{rt}: both RUNs report CACHED:\n{out2}"
        );
        assert_eq!(image_digest(&sb, "out"), digest1, "{rt}: same digest");

        // A changed command re-runs that step only.
        fs::remove_dir_all(sb.path("out")).unwrap();
        sb.dockerfile(&df("echo step-two-changed && echo two > /two"));
        let third = build(&sb, rt, &epoch);
        third.ok();
        let out3 = third.stdout() + &third.stderr();
        assert!(printed(&out3, "step-two-changed"), "{rt}: re-ran:\n{out3}");
        assert!(
            !printed(&out3, "step-one-ran"),
            "{rt}: step one cached:\n{out3}"
        );
        assert_ne!(image_digest(&sb, "out"), digest1, "{rt}");

        // --no-cache re-runs everything, and the result is still the same image.
        fs::remove_dir_all(sb.path("out")).unwrap();
        sb.dockerfile(&df("echo step-two-ran && echo two > /two"));
        let mut args = epoch.to_vec();
        args.push("--no-cache");
        let fourth = build(&sb, rt, &args);
        fourth.ok();
        let out4 = fourth.stdout() + &fourth.stderr();
        assert!(
            printed(&out4, "step-one-ran") && printed(&out4, "step-two-ran"),
            "{rt}: --no-cache re-runs:\n{out4}"
        );
        assert!(
            !out4
                .lines()
                .any(|l| l.contains("CACHED") && l.contains("RUN")),
            "{rt}:\n{out4}"
        );
        assert_eq!(
            image_digest(&sb, "out"),
            digest1,
            "{rt}: a rebuild under SOURCE_DATE_EPOCH reproduces the image"
        );
        assert_clean(&sb, rt, "step-two-ran");
    }
}

#[test]
fn runtime_from_kiln_runtime_env() {
    let (_reg, base, _rts) = setup();
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM {base}\nRUN echo env-runtime > /e\n"));
    let kiln = |runtime: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_RUNTIME", runtime)
            .arg("--root")
            .arg(sb.root())
            .args([
                "build",
                "-t",
                "test:latest",
                "--progress",
                "plain",
                "--output",
            ])
            .arg(format!(
                "type=oci,dest={},tar=false",
                sb.path("out").display()
            ))
            .arg(sb.ctx())
            .output()
            .unwrap()
    };
    let bad = kiln("nonsense");
    assert!(!bad.status.success(), "an unknown runtime is refused");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("nonsense") && err.contains("runc"),
        "the error names the value and the choices:\n{err}"
    );
    let good = kiln("runc");
    assert!(
        good.status.success(),
        "KILN_RUNTIME=runc:\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(read(&sb.unpack("out", "latest"), "e"), "env-runtime");
}
