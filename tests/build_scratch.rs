//! End-to-end builds FROM scratch: `kiln build` into OCI layouts that umoci and skopeo read.

mod common;

use common::{read_json, Sandbox};
use std::fs;
use std::process::Command;

#[test]
fn multi_stage_copy_and_metadata() {
    let sb = Sandbox::new();
    sb.file("src/a.txt", "A\n")
        .file("src/sub/b.txt", "B\n")
        .file("notes.log", "ignored\n")
        .file(".dockerignore", "*.log\n")
        .dockerfile(
            "# syntax=docker/dockerfile:1\n\
             ARG GREETING=hi\n\
             FROM scratch AS assets\n\
             ARG GREETING\n\
             COPY src/ /assets/\n\
             COPY <<EOF /assets/greeting.txt\n\
             ${GREETING} there\n\
             EOF\n\
             \n\
             FROM scratch\n\
             COPY --from=assets /assets /app/\n\
             COPY . /ctx/\n\
             ENV A=1 B=\"two words\"\n\
             LABEL org.example.k=\"v\" \\\n      other=x\n\
             WORKDIR /app\n\
             USER 1000:1000\n\
             EXPOSE 8080 53/udp\n\
             VOLUME [\"/data\"]\n\
             STOPSIGNAL SIGTERM\n\
             ENTRYPOINT [\"/bin/echo\"]\n\
             CMD echo hi\n",
        );
    sb.build_oci("out", &[]).ok();
    let rootfs = sb.unpack("out", "latest");
    assert_eq!(fs::read_to_string(rootfs.join("app/a.txt")).unwrap(), "A\n");
    assert_eq!(
        fs::read_to_string(rootfs.join("app/sub/b.txt")).unwrap(),
        "B\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("app/greeting.txt")).unwrap(),
        "hi there\n"
    );
    assert!(rootfs.join("ctx/src/a.txt").is_file());
    assert!(
        !rootfs.join("ctx/notes.log").exists(),
        ".dockerignore applies"
    );

    let config = sb.config("out");
    let c = &config["config"];
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"A=1") && env.contains(&"B=two words"),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|e| e.starts_with("GREETING=")),
        "ARGs stay out of the config"
    );
    assert_eq!(c["Labels"]["org.example.k"], "v");
    assert_eq!(c["Labels"]["other"], "x");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8080/tcp": {}})
    );
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-c", "echo hi"]));

    let history = config["history"].as_array().unwrap();
    let layers = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(
        layers,
        config["rootfs"]["diff_ids"].as_array().unwrap().len()
    );
    let created_by: Vec<&str> = history
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert!(
        created_by.contains(&"COPY --from=assets /assets /app/ # buildkit")
            || created_by
                .iter()
                .any(|c| c.starts_with("COPY /assets /app/")),
        "{created_by:?}"
    );
    assert!(
        created_by.contains(&"ENV A=1 B=two words"),
        "{created_by:?}"
    );

    let inspect = Command::new("skopeo")
        .args([
            "inspect",
            &format!("oci:{}:latest", sb.path("out").display()),
        ])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
}

#[test]
fn oci_tar_output_and_metadata_files() {
    let sb = Sandbox::new();
    sb.file("f.txt", "F")
        .dockerfile("FROM scratch\nCOPY f.txt /\n");
    let tar = sb.path("image.tar");
    let iid = sb.path("iid");
    let meta = sb.path("meta.json");
    sb.kiln(&[
        "build",
        "-t",
        "registry.example/app:1.2",
        "--output",
        &format!("type=oci,dest={}", tar.display()),
        "--iidfile",
        iid.to_str().unwrap(),
        "--metadata-file",
        meta.to_str().unwrap(),
        sb.ctx().to_str().unwrap(),
    ])
    .ok();
    let inspect = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("oci-archive:{}:1.2", tar.display()),
        ])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let meta = read_json(&meta);
    assert_eq!(
        meta["containerimage.config.digest"],
        manifest["config"]["digest"]
    );
    assert_eq!(
        fs::read_to_string(iid).unwrap(),
        manifest["config"]["digest"].as_str().unwrap()
    );
    assert_eq!(meta["image.name"], "registry.example/app:1.2");
}

#[test]
fn second_build_is_cached_and_gives_the_same_image() {
    let sb = Sandbox::new();
    sb.file("f.txt", "F")
        .dockerfile("FROM scratch\nCOPY f.txt /\n");
    let first = sb.build_oci("one", &["--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
    first.ok();
    assert!(!first.stderr().contains("CACHED"));
    let second = sb.build_oci("two", &["--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
    second.ok();
    assert!(second.stderr().contains("CACHED"), "{}", second.stderr());
    let digest = |d: &str| common::manifest_digest(&sb.path(d));
    assert_eq!(digest("one"), digest("two"));
    let config = sb.config("two");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
}

#[test]
fn dockerfile_from_stdin() {
    let sb = Sandbox::new();
    // `kiln build -`: the Dockerfile on stdin, no context.
    let out = sb.path("o1");
    sb.kiln_stdin(
        &[
            "build",
            "--output",
            &format!("type=oci,dest={},tar=false", out.display()),
            "-",
        ],
        Some("FROM scratch\nCOPY <<EOF /x\nfrom stdin\nEOF\n"),
    )
    .ok();
    // `-f -`: the Dockerfile on stdin, with a context.
    sb.file("c.txt", "ctx");
    let out2 = sb.path("o2");
    let run = sb.kiln_stdin(
        &[
            "build",
            "-f",
            "-",
            "--progress",
            "plain",
            "--output",
            &format!("type=oci,dest={},tar=false", out2.display()),
            sb.ctx().to_str().unwrap(),
        ],
        Some("FROM scratch\nCOPY c.txt /\n"),
    );
    run.ok();
    assert!(
        run.stderr().contains("context: "),
        "the context size is reported: {}",
        run.stderr()
    );
}

#[test]
fn dockerfile_specific_dockerignore_wins() {
    let sb = Sandbox::new();
    sb.file("a.txt", "a")
        .file("b.txt", "b")
        .file(".dockerignore", "a.txt\n")
        .file("build/app.Dockerfile", "FROM scratch\nCOPY . /c/\n")
        .file("build/app.Dockerfile.dockerignore", "b.txt\nbuild\n");
    let df = sb.ctx().join("build/app.Dockerfile");
    sb.build_oci("out", &["-f", df.to_str().unwrap()]).ok();
    let rootfs = sb.unpack("out", "latest");
    assert!(rootfs.join("c/a.txt").exists());
    assert!(!rootfs.join("c/b.txt").exists());
}

/// `.dockerignore` is decided as BuildKit's walker decides it (and `COPY --exclude` too), from the
/// root down with each directory's results (moby's `MatchesUsingParentResults`): `d/f` then
/// `!d` keeps `d` but not `d/f` (moby's older `MatchesOrParentMatches` kept `d/f`), and
/// `**`, `!**/*.go`, `vendor` leaves `vendor/x.go` in.
#[test]
fn ignore_patterns_are_walked_from_the_root_down_as_buildkit_does() {
    let sb = Sandbox::new();
    sb.file("d/f", "f")
        .file("d/g", "g")
        .file(".dockerignore", "d/f\n!d\n")
        .dockerfile("FROM scratch\nCOPY d /d/\n");
    sb.build_oci("out", &[]).ok();
    let rootfs = sb.unpack("out", "latest");
    assert!(rootfs.join("d/g").exists());
    assert!(!rootfs.join("d/f").exists(), "d/f is ignored");
    let vendor = Sandbox::new();
    vendor
        .file("vendor/x.go", "go")
        .file("vendor/y.txt", "txt")
        .file(".dockerignore", "**\n!**/*.go\nvendor\n")
        .dockerfile("FROM scratch\nCOPY . /c/\n");
    vendor.build_oci("out", &[]).ok();
    let rootfs = vendor.unpack("out", "latest");
    assert!(rootfs.join("c/vendor/x.go").exists(), "vendor/x.go is kept");
    assert!(!rootfs.join("c/vendor/y.txt").exists());
}

#[test]
fn target_prunes_unneeded_stages() {
    let sb = Sandbox::new();
    sb.file("f", "x").dockerfile(
        "FROM scratch AS broken\nCOPY missing /\nFROM scratch AS Good\nCOPY f /good\nFROM good\nCOPY f /final\n",
    );
    sb.build_oci("out", &["--target", "GOOD"]).ok();
    let rootfs = sb.unpack("out", "latest");
    assert!(rootfs.join("good").exists());
    assert!(!rootfs.join("final").exists());
    sb.build_oci("out2", &["--target", "nope"])
        .fails_with(&["target stage \"nope\" could not be found"]);
}

#[test]
fn outline_and_graph() {
    let sb = Sandbox::new();
    sb.dockerfile("ARG V=1\n# the builder\nFROM scratch AS builder\n# version to build\nARG V\nFROM scratch\nCOPY --from=builder / /\n");
    let out = sb.kiln(&[
        "build",
        "--call",
        "outline",
        "--target",
        "builder",
        sb.ctx().to_str().unwrap(),
    ]);
    out.ok();
    let text = out.stdout();
    assert!(text.contains("TARGET:      builder"), "{text}");
    assert!(text.contains("DESCRIPTION: the builder"), "{text}");
    assert!(
        text.contains("version to build") || text.contains("V "),
        "{text}"
    );
    let graph = sb.kiln(&["build", "--print-graph", "json", sb.ctx().to_str().unwrap()]);
    graph.ok();
    let g: serde_json::Value = serde_json::from_str(&graph.stdout()).unwrap();
    assert!(g["nodes"].as_array().unwrap().len() >= 2);
    let dot = sb.kiln(&["build", "--print-graph", "dot", sb.ctx().to_str().unwrap()]);
    assert!(dot.ok().stdout().starts_with("digraph kiln {"));
}

/// Docker's COPY path rules, as the conformance case 10-copy-semantics means them (its shared
/// copy lost its symlink and modes, so the case is rebuilt here with real ones). Checked
/// against BuildKit (Docker 20.10) on the same context.
#[test]
fn copy_path_rules_like_buildkit() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let sb = Sandbox::new();
    sb.file("src/a.txt", "A")
        .file("src/sub/b.txt", "B")
        .file("data/x.json", "{\"x\":1}")
        .file("data/y.json", "{\"y\":2}")
        .file("data/z.yaml", "nope")
        .file("exec.sh", "#!/bin/sh\necho run\n")
        .file("top.txt", "TOP")
        .dockerfile(
            "FROM scratch\nCOPY src/ /dst1/\nCOPY src /dst2\nCOPY data/*.json /jsons/\nCOPY top.txt /renamed.txt\n\
             COPY top.txt /intodir/\nCOPY exec.sh /bin/\nCOPY top.txt src/a.txt /multi/\n",
        );
    symlink("a.txt", sb.ctx().join("src/link")).unwrap();
    fs::set_permissions(sb.ctx().join("exec.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(sb.ctx().join("src"), fs::Permissions::from_mode(0o555)).unwrap();
    sb.build_oci("out", &[]).ok();
    fs::set_permissions(sb.ctx().join("src"), fs::Permissions::from_mode(0o755)).unwrap();
    let r = sb.unpack("out", "latest");
    let mode = |p: &str| {
        fs::symlink_metadata(r.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(fs::read_to_string(r.join("dst1/a.txt")).unwrap(), "A");
    assert_eq!(fs::read_to_string(r.join("dst1/sub/b.txt")).unwrap(), "B");
    assert_eq!(
        fs::read_link(r.join("dst1/link")).unwrap().to_str(),
        Some("a.txt")
    );
    assert_eq!(fs::read_to_string(r.join("dst2/a.txt")).unwrap(), "A");
    assert!(!r.join("dst2/src").exists());
    assert!(r.join("jsons/x.json").is_file() && r.join("jsons/y.json").is_file());
    assert!(!r.join("jsons/z.yaml").exists());
    assert_eq!(fs::read_to_string(r.join("renamed.txt")).unwrap(), "TOP");
    assert_eq!(
        fs::read_to_string(r.join("intodir/top.txt")).unwrap(),
        "TOP"
    );
    assert_eq!(mode("bin/exec.sh"), 0o755);
    assert_eq!(
        mode("dst2"),
        0o755,
        "a destination COPY creates is 0755 whatever the source dir's mode"
    );
    assert!(r.join("multi/top.txt").is_file() && r.join("multi/a.txt").is_file());
}
