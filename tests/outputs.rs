//! Every output type, checked by third-party readers (skopeo, umoci, podman), and kiln's local
//! image store: `-t` with no output, `kiln images`, `kiln save`, `kiln rmi`, `FROM` a local
//! image.

mod common;

use common::registry::Registry;
use common::{read_json, Sandbox};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

const DOCKERFILE: &str = "FROM scratch\nCOPY hello.txt /hello.txt\nCOPY dir /dir\nLABEL a=b\n";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.dockerfile(DOCKERFILE)
        .file("hello.txt", "hello\n")
        .file("dir/sub/f", "f\n");
    sb
}

fn build(sb: &Sandbox, args: &[&str]) -> common::Run {
    let ctx = sb.ctx().display().to_string();
    let mut all = vec!["build", "--progress", "plain"];
    all.extend_from_slice(args);
    all.push(&ctx);
    sb.kiln(&all)
}

/// Runs a third-party tool, which must succeed; its stdout.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo(args: &[&str]) -> String {
    tool("skopeo", args)
}

/// The manifest digest of `reference` in its (plain HTTP) registry, as skopeo reads it.
fn registry_digest(reference: &str) -> String {
    let docker = format!("docker://{reference}");
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &docker,
    ])
    .trim()
    .to_string()
}

/// The config digest skopeo reads from an image (the image ID).
fn skopeo_config_digest(image: &str) -> String {
    let raw: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", image])).unwrap();
    raw["config"]["digest"].as_str().unwrap().to_string()
}

fn iid(sb: &Sandbox) -> String {
    fs::read_to_string(sb.path("iid")).unwrap()
}

#[test]
fn oci_docker_local_and_tar_outputs_from_one_build() {
    let sb = sandbox();
    let oci = sb.path("oci.tar");
    let docker = sb.path("docker.tar");
    let local = sb.path("local");
    let tar = sb.path("fs.tar");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("stale"), "old").unwrap();
    let iidfile = sb.path("iid").display().to_string();
    build(
        &sb,
        &[
            "-t",
            "app:1",
            "-o",
            &format!("type=oci,dest={}", oci.display()),
            "-o",
            &format!("type=docker,dest={}", docker.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
            "-o",
            &format!("type=tar,dest={}", tar.display()),
            "--iidfile",
            &iidfile,
        ],
    )
    .ok();
    let id = iid(&sb);

    // The OCI tar and the docker-archive hold the same image, as skopeo reads them.
    assert_eq!(
        skopeo_config_digest(&format!("oci-archive:{}:1", oci.display())),
        id
    );
    assert_eq!(
        skopeo_config_digest(&format!("docker-archive:{}", docker.display())),
        id
    );
    // docker-archive: manifest.json names the image and lists its layers; Docker media types.
    let listing = tool("tar", &["-xOf", docker.to_str().unwrap(), "manifest.json"]);
    let manifest: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["app:1"]));
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 2);
    let copied = sb.path("from-docker");
    skopeo(&[
        "copy",
        "-q",
        &format!("docker-archive:{}", docker.display()),
        &format!("oci:{}:x", copied.display()),
    ]);
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:x", copied.display()),
            sb.path("bundle").to_str().unwrap(),
        ],
    );
    assert_eq!(
        fs::read_to_string(sb.path("bundle/rootfs/dir/sub/f")).unwrap(),
        "f\n"
    );

    // type=local: the final filesystem, written into the directory; what else was there stays,
    // as with BuildKit.
    assert_eq!(
        fs::read_to_string(local.join("hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(fs::read_to_string(local.join("dir/sub/f")).unwrap(), "f\n");
    assert!(local.join("stale").exists());
    // type=tar: the same files as one tar.
    let names = tool("tar", &["-tf", tar.to_str().unwrap()]);
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names, ["dir/", "dir/sub/", "dir/sub/f", "hello.txt"]);
    // No temp files are left beside the outputs.
    let mut left: Vec<String> = fs::read_dir(sb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    left.sort();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn compression_media_types_annotations_and_labels() {
    let sb = sandbox();
    let out = sb.path("zstd");
    build(
        &sb,
        &[
            "-o",
            &format!(
                "type=oci,dest={},tar=false,compression=zstd,annotation.org.example=1",
                out.display()
            ),
            "--annotation",
            "manifest-descriptor:org.example.d=2",
            "--label",
            "team=kiln",
        ],
    )
    .ok();
    let manifest = common::manifest(&out);
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let blob = fs::read(common::blob(&out, layer["digest"].as_str().unwrap())).unwrap();
        assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    }
    assert_eq!(manifest["annotations"]["org.example"], "1");
    let index = read_json(&out.join("index.json"));
    assert_eq!(index["manifests"][0]["annotations"]["org.example.d"], "2");
    let config = read_json(&common::blob(
        &out,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["config"]["Labels"]["team"], "kiln");
    assert_eq!(config["config"]["Labels"]["a"], "b");
    skopeo(&["inspect", &format!("oci:{}", out.display())]);

    let docker_types = sb.path("v2");
    build(
        &sb,
        &[
            "-o",
            &format!(
                "type=oci,dest={},tar=false,oci-mediatypes=false,compression=uncompressed",
                docker_types.display()
            ),
        ],
    )
    .ok();
    let manifest = common::manifest(&docker_types);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
}

#[test]
fn local_store_round_trip() {
    let sb = sandbox();
    let iidfile = sb.path("iid").display().to_string();
    build(&sb, &["-t", "app:1", "-t", "app:2", "--iidfile", &iidfile]).ok();
    let images = sb.kiln(&["images"]).ok().stdout();
    let lines: Vec<&str> = images.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{images}");
    assert!(
        lines[1].starts_with("app:1 ") && lines[2].starts_with("app:2 "),
        "{images}"
    );
    // The store is an OCI layout that skopeo reads by the image's full name.
    let store = sb.root().join("content");
    assert_eq!(
        skopeo_config_digest(&format!("oci:{}:docker.io/library/app:1", store.display())),
        iid(&sb)
    );

    // kiln save: a docker-archive and an OCI layout tar of the stored image.
    let saved = sb.path("saved.tar");
    sb.kiln(&["save", "app:1", "-o", saved.to_str().unwrap()])
        .ok();
    assert_eq!(
        skopeo_config_digest(&format!("docker-archive:{}", saved.display())),
        iid(&sb)
    );
    let saved_oci = sb.path("saved-oci.tar");
    sb.kiln(&[
        "save",
        "app:1",
        "--format",
        "oci",
        "-o",
        saved_oci.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        skopeo_config_digest(&format!("oci-archive:{}:1", saved_oci.display())),
        iid(&sb)
    );

    // FROM a local image: found in the store, no registry asked (there is none).
    let sb2_ctx = sb.path("ctx2");
    fs::create_dir_all(&sb2_ctx).unwrap();
    fs::write(
        sb2_ctx.join("Dockerfile"),
        "FROM app:1\nCOPY extra /extra\n",
    )
    .unwrap();
    fs::write(sb2_ctx.join("extra"), "x").unwrap();
    let out = sb.path("derived");
    sb.kiln(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=local,dest={}", out.display()),
        sb2_ctx.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        fs::read_to_string(out.join("hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(fs::read_to_string(out.join("extra")).unwrap(), "x");

    // kiln rmi: the name goes, the other stays; an unknown name is an error.
    sb.kiln(&["rmi", "app:1"]).ok();
    let images = sb.kiln(&["images"]).ok().stdout();
    assert!(
        !images.contains("app:1") && images.contains("app:2"),
        "{images}"
    );
    sb.kiln(&["rmi", "app:1"])
        .fails_with(&["no such image in the local image store: app:1"]);
    sb.kiln(&["save", "nope", "-o", saved.to_str().unwrap()])
        .fails_with(&["no image nope:latest in the local image store"]);
}

#[test]
fn podman_loads_the_docker_archive() {
    if Command::new("podman").arg("--version").output().is_err() {
        panic!("podman is not installed (scripts/test.sh installs it)");
    }
    let sb = sandbox();
    let archive = sb.path("docker.tar");
    let iidfile = sb.path("iid").display().to_string();
    let name = format!("kiln-test-load-{}:1", std::process::id());
    build(
        &sb,
        &[
            "-t",
            &name,
            "-o",
            &format!("type=docker,dest={}", archive.display()),
            "--iidfile",
            &iidfile,
        ],
    )
    .ok();
    tool("podman", &["load", "-i", archive.to_str().unwrap()]);
    // The image as podman loaded it (and removed again), by its ID.
    let loaded_id = |name: &str| {
        let id = tool("podman", &["image", "inspect", "--format", "{{.Id}}", name]);
        let _ = Command::new("podman").args(["rmi", "-f", name]).output();
        format!("sha256:{}", id.trim())
    };
    assert_eq!(loaded_id(&name), iid(&sb));
    // --load pipes the same archive into `podman load` (docker isn't running here).
    let loaded = format!("kiln-test-load-{}:2", std::process::id());
    let out = build(&sb, &["-t", &loaded, "--load", "--iidfile", &iidfile])
        .ok()
        .stderr();
    assert!(out.contains("loading into podman"), "{out}");
    assert_eq!(loaded_id(&loaded), iid(&sb));
}

/// Into a directory that exists, `type=local` and `type=oci,tar=false` write as BuildKit
/// does: the image's paths replace what is there (a file even replaces a directory), and
/// nothing else in the directory is touched. `-o .` in a project must not cost its files.
#[test]
fn directory_outputs_write_into_an_existing_directory_and_keep_its_other_files() {
    let sb = sandbox();
    sb.file("notes.txt", "mine\n")
        .file(".dockerignore", "notes.txt\n");
    let ctx = sb.ctx();
    let local = sb.path("local");
    fs::create_dir_all(local.join("hello.txt")).unwrap();
    fs::write(local.join("hello.txt/old"), "old\n").unwrap();
    fs::write(local.join("notes.txt"), "mine\n").unwrap();
    fs::create_dir_all(local.join("dir/mine")).unwrap();
    fs::write(local.join("dir/mine/x"), "x\n").unwrap();
    build(
        &sb,
        &["-o", &format!("type=local,dest={}", local.display())],
    )
    .ok();
    assert_eq!(
        fs::read_to_string(local.join("hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(fs::read_to_string(local.join("dir/sub/f")).unwrap(), "f\n");
    assert_eq!(
        fs::read_to_string(local.join("notes.txt")).unwrap(),
        "mine\n"
    );
    assert_eq!(fs::read_to_string(local.join("dir/mine/x")).unwrap(), "x\n");
    let names: Vec<String> = fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".kiln")), "{names:?}");
    // `-o .` run from the context: the context keeps every file.
    let run = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(&ctx)
        .arg("--root")
        .arg(sb.root())
        .args(["build", "--progress", "plain", "-o", ".", "."])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for kept in [
        "Dockerfile",
        "notes.txt",
        ".dockerignore",
        "hello.txt",
        "dir/sub/f",
    ] {
        assert!(ctx.join(kept).exists(), "{kept} is gone");
    }

    // An OCI layout directory that exists: the new image is added and named by index.json, the
    // earlier image's blobs and other files stay.
    let layout = sb.path("layout");
    let oci = format!("type=oci,dest={},tar=false", layout.display());
    build(&sb, &["-t", "app", "-o", &oci]).ok();
    let first = common::manifest_digest(&layout);
    fs::write(layout.join("README"), "mine\n").unwrap();
    sb.file("hello.txt", "changed\n");
    build(&sb, &["-t", "app", "-o", &oci]).ok();
    let second = common::manifest_digest(&layout);
    assert_ne!(first, second);
    assert!(
        common::blob(&layout, &first).exists(),
        "the first image's manifest stays"
    );
    assert_eq!(fs::read_to_string(layout.join("README")).unwrap(), "mine\n");
    let rootfs = sb.unpack("layout", "latest");
    assert_eq!(
        fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "changed\n"
    );
}

#[test]
fn bad_destinations_fail_clearly_and_leave_nothing() {
    let sb = sandbox();
    let file = sb.path("a-file");
    fs::write(&file, "keep").unwrap();
    build(&sb, &["-o", &format!("type=local,dest={}", file.display())])
        .fails_with(&["exists and is not a directory"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep");
    let dir = sb.path("a-dir");
    fs::create_dir(&dir).unwrap();
    build(&sb, &["-o", &format!("type=tar,dest={}", dir.display())])
        .fails_with(&["is a directory"]);
    // An unwritable destination (a read-only bind of a directory).
    let ro = sb.path("ro");
    fs::create_dir(&ro).unwrap();
    let bound = Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(&ro)
        .arg(&ro)
        .status()
        .unwrap();
    assert!(bound.success());
    let result = build(
        &sb,
        &["-o", &format!("type=oci,dest={}/out.tar", ro.display())],
    );
    let _ = Command::new("umount").arg(&ro).status();
    result.fails_with(&["Read-only file system"]);
    assert_eq!(fs::read_dir(&ro).unwrap().count(), 0);
    assert_eq!(fs::metadata(&ro).unwrap().nlink(), 2);
    // A full disk: a small tmpfs that the image doesn't fit in.
    let small = sb.path("small");
    fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success());
    sb.file("big.bin", &"x".repeat(1 << 20));
    sb.dockerfile("FROM scratch\nCOPY big.bin /big.bin\n");
    let result = build(
        &sb,
        &[
            "-o",
            &format!(
                "type=oci,dest={}/out.tar,compression=uncompressed",
                small.display()
            ),
        ],
    );
    let left: Vec<_> = fs::read_dir(&small).unwrap().collect();
    let _ = Command::new("umount").arg(&small).status();
    result.fails_with(&["No space left on device"]);
    assert!(left.is_empty(), "{left:?}");
    for (flag, msg) in [
        ("type=image", "needs a name"),
        ("type=oci,dest=x,compression=lz4", "unknown compression"),
    ] {
        build(&sb, &["-o", flag]).fails_with(&[msg]);
    }
}

#[test]
fn push_to_a_registry_and_read_back() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM {base}\nRUN echo built > /built\n"));
    let app = format!("{}/team/app:1", reg.addr);
    let meta = sb.path("meta.json");
    let out = build(
        &sb,
        &[
            "-t",
            &app,
            "--push",
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    )
    .ok()
    .stderr();
    // The base layer was mounted from the base image's repository, not uploaded again.
    assert!(out.contains("mounted from busybox"), "{out}");
    let digest = read_json(&meta)["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(registry_digest(&app), digest);
    // skopeo copies it out with the same digest, and umoci unpacks it.
    let copy = sb.path("copy");
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{app}"),
        &format!("oci:{}:1", copy.display()),
    ]);
    assert_eq!(common::manifest_digest(&copy), digest);
    let rootfs = sb.unpack("copy", "1");
    assert_eq!(fs::read_to_string(rootfs.join("built")).unwrap(), "built\n");

    // The push also named it in the local store; kiln push sends it elsewhere, and again.
    let other = format!("{}/other:2", reg.addr);
    for _ in 0..2 {
        sb.kiln(&["push", &app, &other]).ok();
    }
    assert_eq!(registry_digest(&other), digest);
    // A registry that isn't there: a clear error naming it.
    sb.kiln(&["push", &app, "127.0.0.1:9/x:1"])
        .fails_with(&["127.0.0.1:9"]);
}
