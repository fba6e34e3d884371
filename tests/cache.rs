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

/// Every regular file under `dir` named `name`, with its inode's link count.
fn files_named(dir: &std::path::Path, name: &str, out: &mut Vec<(std::path::PathBuf, u64)>) {
    use std::os::unix::fs::MetadataExt;
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            files_named(&entry.path(), name, out);
        } else if meta.is_file() && entry.file_name() == name {
            out.push((entry.path(), meta.nlink()));
        }
    }
}

#[test]
fn a_copy_that_runs_again_shares_the_unchanged_files_of_its_previous_result() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    for i in 0..20 {
        sb.file(&format!("src/d{}/same-{i}.txt", i % 3), &format!("{i}\n"));
    }
    sb.file("src/edited.txt", "one")
        .file("src/mode.sh", "#!/bin/sh\n")
        .dockerfile(&format!("FROM {base}\nCOPY src /app\n"));
    let epoch = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    sb.build_oci("o1", &epoch).ok();
    sb.file("src/edited.txt", "two");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        sb.ctx().join("src/mode.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let log = sb.build_oci("o2", &epoch).ok().stderr();
    assert!(!cached(&log, "COPY src /app"), "{log}");

    // Unchanged files are one inode in both results; the edited and the chmodded are not.
    let mut same = Vec::new();
    files_named(&sb.root(), "same-7.txt", &mut same);
    assert_eq!(same.len(), 2, "{same:?}");
    assert!(same.iter().all(|(_, links)| *links == 2), "{same:?}");
    for changed in ["edited.txt", "mode.sh"] {
        let mut found = Vec::new();
        files_named(&sb.root(), changed, &mut found);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|(_, links)| *links == 1), "{found:?}");
    }

    // And the image is the one a build from scratch makes.
    let fresh = Sandbox::new();
    fs::rename(sb.ctx(), fresh.ctx()).unwrap();
    fresh.build_oci("o", &epoch).ok();
    assert_eq!(
        common::manifest_digest(&sb.path("o2")),
        common::manifest_digest(&fresh.path("o"))
    );
}

#[test]
fn a_rebuild_that_runs_nothing_gives_the_same_image() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.file("f", "f")
        .dockerfile(&format!("FROM {base}\nCOPY f /f\nRUN echo x > /x\n"));
    sb.build_oci("o1", &[]).ok();
    // Without SOURCE_DATE_EPOCH the image's times are its layers' (when they were made), not
    // the export's: a second later, the same image.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let log = sb.build_oci("o2", &[]).ok().stderr();
    assert!(cached(&log, "RUN echo x"), "{log}");
    assert_eq!(
        common::manifest_digest(&sb.path("o1")),
        common::manifest_digest(&sb.path("o2"))
    );
}

/// `kiln prune` removes the build cache — step results, records, stat caches, blobs no local
/// image needs — and keeps the local images whole, their layers unpacked: a build FROM one
/// afterwards runs its steps again and needs no registry.
#[test]
fn prune_removes_the_build_cache_and_keeps_local_images() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.file("f.txt", "F").dockerfile(&format!(
        "FROM {base}\nRUN echo built > /b\nCOPY f.txt /f.txt\n"
    ));
    let ctx = sb.ctx().display().to_string();
    sb.kiln(&["build", "--progress", "plain", "-t", "app:1", &ctx])
        .ok();
    let root = sb.root();
    assert!(root.join("records").is_dir());

    let pruned = sb.kiln(&["prune"]).ok().stdout();
    // The RUN and COPY results go; busybox's unpacked layer is app:1's and stays.
    assert!(pruned.contains("removed 2 snapshots"), "{pruned}");
    let snapshots = common::procs::entries(&root.join("snapshots"));
    assert!(
        snapshots.len() == 1 && snapshots[0].starts_with("layer-"),
        "{snapshots:?}"
    );
    assert!(!root.join("records").exists() && !root.join("statcache").exists());
    // Left in the content store: app:1's manifest, config and three layers, nothing else
    // (busybox's own manifest and config went).
    let blobs = common::procs::entries(&root.join("content/blobs/sha256"));
    assert_eq!(blobs.len(), 5, "{blobs:?}");
    assert!(sb.kiln(&["images"]).ok().stdout().contains("app:1 "));

    // The registry goes away: app:1 is enough to build on; the steps run again.
    drop(reg);
    sb.dockerfile("FROM app:1\nRUN cat /b /f.txt > /both\n");
    let log = sb.build_oci("o", &[]).ok().stderr();
    assert!(!cached(&log, "RUN cat"), "{log}");
    let rootfs = sb.unpack("o", "latest");
    assert_eq!(fs::read_to_string(rootfs.join("both")).unwrap(), "built\nF");
    // A second prune removes the RUN's result and keeps app:1's three layers, now all unpacked.
    let again = sb.kiln(&["prune"]).ok().stdout();
    assert!(again.contains("removed 1 snapshot "), "{again}");
    let snapshots = common::procs::entries(&root.join("snapshots"));
    assert!(
        snapshots.len() == 3 && snapshots.iter().all(|s| s.starts_with("layer-")),
        "{snapshots:?}"
    );
}
