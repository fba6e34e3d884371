//! Reproducible images: the same Dockerfile, context and SOURCE_DATE_EPOCH give the same
//! manifest digest across checkout paths, file mtimes, state roots, `--jobs` values and
//! runtimes.

mod common;

use common::registry::Registry;
use common::{read_json, Sandbox};
use std::fs;
use std::path::Path;
use std::process::Command;

const EPOCH: &str = "1700000000";

/// Writes the context into `dir`.
fn context(dir: &Path, base: &str) {
    let files = [
        (
            "Dockerfile",
            format!(
                "FROM {base} AS builder\n\
                 COPY src /src\n\
                 RUN mkdir -p /out/bin && cat /src/a /src/b > /out/ab && ln -s ab /out/link \
                     && ln /out/ab /out/hard && touch /out/bin/tool && chmod 755 /out/bin/tool\n\
                 FROM {base} AS other\n\
                 RUN echo other > /other\n\
                 FROM {base}\n\
                 COPY --from=builder /out /out\n\
                 COPY --from=other /other /other\n\
                 COPY . /ctx\n\
                 RUN rm /etc/group && mkdir -p /var/empty && echo done > /done\n\
                 ENV A=1\n"
            ),
        ),
        ("src/a", "a\n".to_string()),
        ("src/b", "b\n".to_string()),
        ("deep/x/y/z.txt", "z\n".to_string()),
    ];
    for (rel, content) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

/// Builds `ctx` with a fresh root and returns the manifest digest and the OCI layout.
fn build(sb: &Sandbox, name: &str, ctx: &Path, extra: &[&str]) -> String {
    let meta = sb.path(&format!("{name}.json"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("--root")
        .arg(sb.path(&format!("{name}-root")))
        .args(["build", "--progress", "plain", "--build-arg"])
        .arg(format!("SOURCE_DATE_EPOCH={EPOCH}"))
        .arg("--metadata-file")
        .arg(&meta)
        .arg("-o")
        .arg(format!(
            "type=oci,dest={},tar=false",
            sb.path(&format!("{name}-oci")).display()
        ))
        .args(extra)
        .arg(ctx);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "build {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_json(&meta)["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn same_inputs_same_digest_across_paths_mtimes_roots_jobs_and_runtimes() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    let one = sb.path("checkout-one/app");
    let two = sb.path("elsewhere/two");
    context(&one, &base);
    context(&two, &base);
    // The second checkout's files are a day older (still after the epoch).
    let touched = Command::new("find")
        .arg(&two)
        .args(["-exec", "touch", "-h", "-d", "1 day ago", "{}", "+"])
        .status()
        .unwrap();
    assert!(touched.success());

    let a = build(&sb, "a", &one, &["--jobs", "1", "--runtime", "builtin"]);
    let b = build(&sb, "b", &two, &["--jobs", "4", "--runtime", "runc"]);
    assert_eq!(a, b, "two checkouts, --jobs 1/4, builtin/runc");
    // A rebuild from the cache gives the same bytes too.
    let c = build(&sb, "b", &one, &["--jobs", "4"]);
    assert_eq!(a, c, "rebuild from a warm cache");

    // Every time in the image is the epoch: config, history, and the files kiln wrote.
    let layout = sb.path("a-oci");
    let manifest = common::manifest(&layout);
    let config = read_json(&common::blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    // The final stage's own five steps (the base image's history keeps its times).
    let history = config["history"].as_array().unwrap();
    for h in &history[history.len() - 5..] {
        assert_eq!(h["created"], "2023-11-14T22:13:20Z", "{h}");
    }
    let base_layers = 1;
    for layer in &manifest["layers"].as_array().unwrap()[base_layers..] {
        let blob = common::blob(&layout, layer["digest"].as_str().unwrap());
        let list = Command::new("tar")
            .env("TZ", "UTC")
            .args(["--full-time", "-tvzf"])
            .arg(&blob)
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let listing = String::from_utf8_lossy(&list.stdout);
        assert!(!listing.is_empty());
        for line in listing.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (date, time) = (fields[3], fields[4]);
            assert!(
                format!("{date} {time}").as_str() <= "2023-11-14 22:13:20",
                "an mtime after the epoch: {line}"
            );
        }
    }
}

/// COPY writes a new directory straight into the overlay's upper directory (and everything
/// else through the mount); the copy snapshotter has no such shortcut. RUN makes mount stubs
/// (`/etc/hosts` in an image without one), which overlayfs copies `/etc` up for. Both give
/// the same image, so neither changes anything a layer records.
#[test]
fn overlay_and_copy_snapshotters_give_the_same_image() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    let ctx = sb.path("ctx");
    let files = [
        (
            "Dockerfile",
            format!(
                "FROM {base}\n\
                 COPY --chown=1000:1000 --chmod=0750 deep /opt/deep\n\
                 COPY deep /exists\n\
                 COPY src /new\n\
                 COPY src /opt/deep/er/app\n\
                 COPY src /exists\n\
                 COPY --chmod=0700 src /etc/chmodded\n\
                 COPY src/a /single\n\
                 COPY src /exists/more/\n\
                 RUN echo run > /ran && touch /tmp/t && rm /tmp/t\n\
                 RUN mkdir /etc/made && chmod 0700 /root\n"
            ),
        ),
        ("src/a", "a\n".to_string()),
        ("src/sub/b", "b\n".to_string()),
        ("src/sub/c", "c\n".to_string()),
        ("deep/old", "old\n".to_string()),
    ];
    for (rel, content) in files {
        let p = ctx.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let digest = |name: &str, snapshotter: &str| {
        let meta = sb.path(&format!("{name}.json"));
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_SNAPSHOTTER", snapshotter)
            .arg("--root")
            .arg(sb.path(&format!("{name}-root")))
            .args(["build", "--progress", "plain", "--build-arg"])
            .arg(format!("SOURCE_DATE_EPOCH={EPOCH}"))
            .arg("--metadata-file")
            .arg(&meta)
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{snapshotter}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        read_json(&meta)["containerimage.digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(digest("overlay", "overlay"), digest("copy", "copy"));
}
