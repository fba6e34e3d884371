//! Builds on base images pulled from a real registry (Debian's docker-registry on loopback).

mod common;

use common::registry::Registry;
use common::{blob, read_json, Sandbox};
use std::fs;

#[test]
fn from_registry_image_by_tag_and_digest_reuses_base_layers() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.file("f.txt", "F").dockerfile(&format!(
        "FROM {base}\nCOPY --chown=app:app f.txt /home/app/f.txt\nCOPY --from={base} /bin/busybox /bb\n"
    ));
    sb.build_oci("out", &[]).ok();
    let rootfs = sb.unpack("out", "latest");
    assert!(
        rootfs.join("bin/busybox").is_file(),
        "the base's files are there"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(rootfs.join("home/app/f.txt")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1000, 1000),
        "--chown names resolve in the base's /etc/passwd"
    );
    assert!(rootfs.join("bb").is_file());

    // The base's config carries over; its layer blob is reused byte for byte.
    let config = sb.config("out");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    let base_layout = common::registry::busybox_layout();
    let base_manifest = common::manifest(&base_layout);
    let manifest = common::manifest(&sb.path("out"));
    assert_eq!(
        manifest["layers"][0]["digest"],
        base_manifest["layers"][0]["digest"]
    );

    // Pinned by digest: the same base.
    let digest = config["rootfs"]["diff_ids"][0].clone();
    let pinned = Sandbox::new();
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{base}"),
        ])
        .output()
        .unwrap();
    let manifest_digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    pinned.dockerfile(&format!(
        "FROM {}@{manifest_digest}\n",
        base.rsplit_once(':').unwrap().0
    ));
    pinned.build_oci("out", &[]).ok();
    assert_eq!(pinned.config("out")["rootfs"]["diff_ids"][0], digest);
}

/// A base of several layers is fetched and unpacked several layers at a time (each into a
/// snapshot of its own) and stacked in the manifest's order: deletions and replaced
/// directories of upper layers hide what lower ones hold. A layer that arrives corrupt fails
/// the build, names the layer, and leaves neither its snapshot nor a temporary file.
#[test]
fn a_base_of_several_layers_is_pulled_layers_at_once_and_stacked_in_order() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let multi = format!("{}/multi:1", reg.addr);
    let maker = Sandbox::new();
    maker.dockerfile(&format!(
        "FROM {base}\n\
         RUN mkdir /m && echo 1 > /m/a && echo keep > /m/k && echo gone > /gone\n\
         RUN echo 2 > /m/a && rm /m/k /gone && echo b > /m/b\n\
         RUN rm -r /m && mkdir /m && echo fresh > /m/c\n\
         RUN echo 3 > /top\n"
    ));
    let ctx = maker.ctx().display().to_string();
    maker
        .kiln(&["build", "--progress", "plain", "-t", &multi, "--push", &ctx])
        .ok();

    let user = Sandbox::new();
    user.dockerfile(&format!("FROM {multi}\nRUN ls /m > /listing\n"));
    let log = user.build_oci("out", &[]).ok().stderr();
    assert_eq!(log.matches("pulling sha256:").count(), 5, "{log}");
    let rootfs = user.unpack("out", "latest");
    assert_eq!(fs::read_to_string(rootfs.join("listing")).unwrap(), "c\n");
    assert_eq!(fs::read_to_string(rootfs.join("top")).unwrap(), "3\n");
    assert!(!rootfs.join("gone").exists() && rootfs.join("bin/busybox").is_file());

    // The third layer (the replaced /m) arrives corrupt.
    let manifest = common::manifest(&user.path("out"));
    let bad = manifest["layers"][3]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    reg.corrupt_blob(&bad);
    let fresh = Sandbox::new();
    fresh.dockerfile(&format!("FROM {multi}\nRUN true\n"));
    fresh
        .build_oci("out", &[])
        .fails_with(&["Dockerfile:1", &bad, "digest mismatch"]);
    let root = fresh.root();
    assert!(common::procs::entries(&root.join("tmp")).is_empty());
    assert!(common::procs::entries(&root.join("content/ingest")).is_empty());
    assert!(!root.join("content/blobs/sha256").join(&bad[7..]).exists());
}

#[test]
fn missing_base_image_is_a_clear_error() {
    let reg = Registry::start(None);
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM {}/does-not-exist:1.0\n", reg.addr));
    sb.build_oci("out", &[])
        .fails_with(&["Dockerfile:1", "does-not-exist:1.0", "not found"]);
    let wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    sb.dockerfile(&format!("FROM {}/busybox@{wrong}\n", reg.addr));
    reg.push_busybox();
    sb.build_oci("out", &[])
        .fails_with(&["Dockerfile:1", "busybox"]);
    assert!(!sb.path("out").exists());
}

/// `COPY --link` makes its layer on scratch: when an earlier step changes, the linked copy is
/// not redone, and the image still has the parent's files and the copied ones.
#[test]
fn copy_link_layer_does_not_depend_on_its_parent() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.file("f.txt", "linked");
    // The Dockerfile stays outside the context: a context's key still covers all of it (issue 5
    // narrows COPY keys to the files selected).
    let df = sb.path("Dockerfile.link");
    let dockerfile = |n: u32| format!("FROM {base}\nRUN echo {n} > /x\nCOPY --link f.txt /app/\n");
    fs::write(&df, dockerfile(1)).unwrap();
    let df_arg = df.display().to_string();
    sb.build_oci("one", &["-f", &df_arg]).ok();
    fs::write(&df, dockerfile(2)).unwrap();
    let second = sb.build_oci("two", &["-f", &df_arg]);
    second.ok();
    let log = second.stderr();
    let copy_step = log
        .lines()
        .find(|l| l.contains("COPY --link f.txt /app/"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the COPY step is in the log")
        .to_string();
    assert!(
        log.contains(&format!("{copy_step} CACHED")),
        "the linked copy is reused:\n{log}"
    );
    let rootfs = sb.unpack("two", "latest");
    assert_eq!(fs::read_to_string(rootfs.join("x")).unwrap(), "2\n");
    assert_eq!(
        fs::read_to_string(rootfs.join("app/f.txt")).unwrap(),
        "linked"
    );
    assert!(rootfs.join("bin/busybox").is_file());
}

/// A registry behind htpasswd auth: kiln reads the credentials from the Docker config that
/// `DOCKER_CONFIG` names; without them it fails clearly.
#[test]
fn auth_protected_registry() {
    let sb = Sandbox::new();
    let htpasswd = sb.path("htpasswd");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    fs::write(&htpasswd, format!("kiln:{hash}\n")).unwrap();
    let reg = Registry::start(Some(&htpasswd));
    // Push with credentials (skopeo), then build with and without them.
    let layout = common::registry::busybox_layout();
    let reference = format!("{}/private/busybox:1.35", reg.addr);
    common::registry::push(
        &format!("oci:{}:1.35", layout.display()),
        &reference,
        &["--dest-creds", "kiln:s3cret"],
    );
    sb.dockerfile(&format!("FROM {reference}\nRUN test -x /bin/busybox\n"));

    let docker_config = sb.path("docker");
    fs::create_dir_all(&docker_config).unwrap();
    let cfg = docker_config.join("config.json");
    let run = |out: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("DOCKER_CONFIG", &docker_config)
            .arg("--root")
            .arg(sb.root())
            .args([
                "build",
                "--output",
                &format!("type=oci,dest={},tar=false", sb.path(out).display()),
            ])
            .arg(sb.ctx())
            .output()
            .unwrap()
    };
    fs::write(&cfg, "{}").unwrap();
    let denied = run("denied");
    assert_eq!(denied.status.code(), Some(1));
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("unauthorized") && err.contains("Dockerfile:1"),
        "{err}"
    );

    let auth = "a2lsbjpzM2NyZXQ="; // base64("kiln:s3cret")
    fs::write(
        &cfg,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let ok = run("ok");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// An image index with two platforms: kiln takes the host's.
#[test]
fn index_with_two_platforms_picks_the_hosts() {
    let reg = Registry::start(None);
    let sb = Sandbox::new();
    let src = common::registry::busybox_layout();
    // A second variant of the image that says "arm64": same layers, another config.
    let layout = sb.path("multi");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&layout)
        .status()
        .unwrap();
    assert!(copy.success());
    let index: serde_json::Value = read_json(&layout.join("index.json"));
    let amd = index["manifests"][0].clone();
    let manifest = read_json(&blob(&layout, amd["digest"].as_str().unwrap()));
    let mut config = read_json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let host_arch = config["architecture"].as_str().unwrap().to_string();
    let other_arch = if host_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    config["architecture"] = other_arch.into();
    config["config"]["Cmd"] = serde_json::json!(["/bin/other-arch"]);
    let put = |value: &serde_json::Value| -> (String, usize) {
        let bytes = serde_json::to_vec(value).unwrap();
        let digest = kiln_oci::Digest::of(&bytes).to_string();
        fs::write(blob(&layout, &digest), &bytes).unwrap();
        (digest, bytes.len())
    };
    let (config_digest, config_size) = put(&config);
    let mut other_manifest = manifest.clone();
    other_manifest["config"]["digest"] = config_digest.into();
    other_manifest["config"]["size"] = config_size.into();
    let (other_digest, other_size) = put(&other_manifest);
    let platform = |arch: &str| serde_json::json!({"os": "linux", "architecture": arch});
    let mut amd_desc = amd.clone();
    amd_desc.as_object_mut().unwrap().remove("annotations");
    amd_desc["platform"] = platform(&host_arch);
    let image_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other_digest, "size": other_size, "platform": platform(other_arch)},
            amd_desc,
        ]
    });
    let (index_digest, index_size) = put(&image_index);
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_size,
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let reference = format!("{}/multi:1", reg.addr);
    common::registry::push(
        &format!("oci:{}:multi", layout.display()),
        &reference,
        &["--all"],
    );

    sb.dockerfile(&format!("FROM {reference}\nRUN echo ok > /ok\n"));
    sb.build_oci("out", &[]).ok();
    let built = sb.config("out");
    assert_eq!(built["architecture"], host_arch.as_str());
    assert_eq!(
        built["config"]["Cmd"],
        serde_json::json!(["/bin/sh"]),
        "the host's variant"
    );
}

#[test]
fn a_base_pinned_by_digest_builds_again_without_its_registry() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{base}"))
        .output()
        .unwrap();
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let sb = Sandbox::new();
    let pinned = format!("{}@{digest}", base.rsplit_once(':').unwrap().0);
    sb.file("f.txt", "F")
        .dockerfile(&format!("FROM {pinned}\nCOPY f.txt /f.txt\n"));
    sb.build_oci("out", &[]).ok();
    let first = common::manifest_digest(&sb.path("out"));
    // The registry goes away: the manifest, config and layers kiln has are enough, as long as
    // the base is pinned by digest (a tag could have moved).
    drop(reg);
    sb.build_oci("out", &[]).ok();
    assert_eq!(common::manifest_digest(&sb.path("out")), first);
    sb.file("f.txt", "changed");
    sb.build_oci("out", &[]).ok();
    let rootfs = sb.unpack("out", "latest");
    assert_eq!(fs::read_to_string(rootfs.join("f.txt")).unwrap(), "changed");
}
