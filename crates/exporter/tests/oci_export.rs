//! A two-layer image exported as an OCI layout, checked with the real third-party readers
//! `umoci` (unpacks it, applying whiteouts) and `skopeo` (inspects it), directory and tar.

use kiln_cache::ContentStore;
use kiln_exporter::{
    write_image, write_layer, write_oci_layout, write_oci_layout_to, ExportInput, Exporter, Image,
    ImageOptions, LayerOptions, OciDest, OciExporter,
};
use kiln_oci::{media_types, HistoryEntry, ImageConfig, Index, Platform};
use nix::sys::stat::{mknod, Mode, SFlag};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: i64 = 1_700_000_000;
const LONG: &str = "opt/a-directory-name-that-is-quite-long/another-directory-name-that-is-also-long/and-finally-the-file-name.txt";

fn write(root: &Path, rel: &str, data: &str, mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// 3.5 MiB of text then random bytes: several gzip blocks, deflated and stored, so readers
/// (umoci's Go gzip) go through the block joins of the parallel compressor.
fn multi_block_data() -> Vec<u8> {
    let mut data: Vec<u8> = (0..60_000u32)
        .flat_map(|i| format!("line {i} of a text file\n").into_bytes())
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 3_500_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data
}

fn whiteout(root: &Path, rel: &str) {
    mknod(&root.join(rel), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
}

fn step(created_by: &str, empty_layer: bool) -> HistoryEntry {
    HistoryEntry {
        created_by: Some(created_by.into()),
        empty_layer,
        ..Default::default()
    }
}

/// Layer 1 adds files; layer 2 deletes one, replaces a directory's content and adds a file;
/// layer 3 is empty (a RUN that changed nothing) and is left out of the image.
fn build_image(work: &Path, store: &ContentStore) -> Image {
    let l1 = work.join("diff1");
    write(&l1, "bin/hello", "#!/bin/sh\necho hello\n", 0o755);
    write(&l1, "etc/config", "old=1\n", 0o644);
    write(&l1, "data/old/a", "a\n", 0o644);
    write(&l1, "data/old/b", "b\n", 0o644);
    write(&l1, LONG, "long\n", 0o644);
    symlink("hello", l1.join("bin/hi")).unwrap();
    fs::hard_link(l1.join("bin/hello"), l1.join("bin/hello-again")).unwrap();
    xattr::set(l1.join("bin/hello"), "user.test", b"kept").unwrap();
    fs::write(l1.join("data/multi-block.bin"), multi_block_data()).unwrap();

    let l2 = work.join("diff2");
    fs::create_dir_all(l2.join("etc")).unwrap();
    whiteout(&l2, "etc/config");
    write(&l2, "data/old/c", "c\n", 0o644);
    xattr::set(l2.join("data/old"), "trusted.overlay.opaque", b"y").unwrap();
    write(&l2, "added", "new\n", 0o600);

    let l3 = work.join("diff3");
    fs::create_dir_all(&l3).unwrap();

    let layer_opts = LayerOptions {
        epoch: Some(EPOCH),
        rewrite_timestamp: true,
        ..LayerOptions::default()
    };
    let layers: Vec<_> = [&l1, &l2, &l3]
        .iter()
        .map(|d| write_layer(store, d, &layer_opts).unwrap())
        .collect();
    let platform: Platform = "linux/amd64".parse().unwrap();
    let mut config = ImageConfig::scratch(&platform);
    config.config.cmd = Some(vec!["/bin/hello".into()]);
    config.history = vec![
        step("COPY . /", false),
        step("ENV A=1", true),
        step("RUN change", false),
        step("RUN true", false),
    ];
    let opts = ImageOptions {
        epoch: Some(EPOCH),
        created: None,
        oci_media_types: true,
        platform,
        manifest_annotations: Default::default(),
        descriptor_annotations: Default::default(),
    };
    write_image(store, &config, &layers, &opts).unwrap()
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        eprintln!("skipped the {tool} check: `{tool}` is not installed");
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo_inspect(reference: &str) -> serde_json::Value {
    serde_json::from_str(&run(Command::new("skopeo").args(["inspect", reference]))).unwrap()
}

fn check_skopeo(reference: &str, image: &Image) {
    if !have("skopeo") {
        return;
    }
    let info = skopeo_inspect(reference);
    assert_eq!(info["Digest"], image.descriptor.digest.to_string());
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
}

fn check_umoci(layout: &Path, tag: &str, work: &Path) {
    if !have("umoci") {
        return;
    }
    let bundle = work.join("bundle");
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let read = |rel: &str| fs::read_to_string(rootfs.join(rel)).unwrap();
    assert_eq!(read("bin/hello"), "#!/bin/sh\necho hello\n");
    assert_eq!(read(LONG), "long\n");
    let multi = fs::read(rootfs.join("data/multi-block.bin")).unwrap();
    assert!(
        multi == multi_block_data(),
        "a multi-block layer file reads back"
    );
    assert_eq!(read("added"), "new\n");
    assert_eq!(read("data/old/c"), "c\n");
    assert_eq!(
        fs::read_link(rootfs.join("bin/hi")).unwrap(),
        PathBuf::from("hello")
    );
    let ino = |rel: &str| fs::metadata(rootfs.join(rel)).unwrap().ino();
    assert_eq!(ino("bin/hello"), ino("bin/hello-again"));
    assert_eq!(
        xattr::get(rootfs.join("bin/hello"), "user.test").unwrap(),
        Some(b"kept".to_vec())
    );
    assert!(!rootfs.join("etc/config").exists(), "whiteout applied");
    assert!(rootfs.join("etc").is_dir());
    for gone in ["data/old/a", "data/old/b"] {
        assert!(!rootfs.join(gone).exists(), "opaque dir hid {gone}");
    }
    for marker in ["etc/.wh.config", "data/old/.wh..wh..opq"] {
        assert!(
            !rootfs.join(marker).exists(),
            "{marker} must not be extracted"
        );
    }
    let mode = fs::metadata(rootfs.join("bin/hello")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert_eq!(
        fs::metadata(rootfs.join("added")).unwrap().mtime(),
        EPOCH,
        "mtimes clamped to the epoch"
    );
}

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (mknod for whiteouts, trusted.* xattrs)");
    false
}

#[test]
fn oci_layout_directory_reads_back_with_umoci_and_skopeo() {
    if !is_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&work.path().join("content")).unwrap();
    let image = build_image(work.path(), &store);
    let layout = work.path().join("out/layout");
    write_oci_layout(
        &store,
        &image,
        &layout,
        false,
        Some("1"),
        Some("example.com/app:1"),
    )
    .unwrap();

    assert_eq!(
        fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: Index =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.media_type.as_deref(), Some(media_types::OCI_INDEX));
    let m = &index.manifests[0];
    assert_eq!(m.digest, image.descriptor.digest);
    assert_eq!(m.platform, Some("linux/amd64".parse().unwrap()));
    let annotations = m.annotations.as_ref().unwrap();
    assert_eq!(annotations[media_types::ANNOTATION_REF_NAME], "1");
    assert_eq!(annotations["io.containerd.image.name"], "example.com/app:1");
    let mut blobs: Vec<String> = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    blobs.sort();
    let mut want: Vec<String> = image.blobs().map(|d| d.digest.hex().to_string()).collect();
    want.sort();
    assert_eq!(blobs, want);
    // Same file system: the blob is the content store's inode, not a copy.
    let layer = &image.manifest.layers[0].digest;
    assert_eq!(
        fs::metadata(layout.join("blobs/sha256").join(layer.hex()))
            .unwrap()
            .ino(),
        fs::metadata(store.blob_path(layer)).unwrap().ino()
    );

    check_skopeo(&format!("oci:{}:1", layout.display()), &image);
    check_umoci(&layout, "1", work.path());
}

#[test]
fn oci_layout_directory_is_written_into_an_old_one() {
    if !is_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&work.path().join("content")).unwrap();
    let image = build_image(work.path(), &store);
    let layout = work.path().join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(layout.join("stale"), "from an earlier export").unwrap();
    fs::write(layout.join("blobs/sha256/0000"), "stale blob").unwrap();

    let exporter = OciExporter {
        dest: OciDest::Dir(layout.clone()),
        image_name: Some("app".into()),
    };
    let result = exporter.export(&store, ExportInput::Image(&image)).unwrap();
    assert_eq!(result.manifest.as_ref(), Some(&image.descriptor));
    assert_eq!(
        result.config_digest.as_ref(),
        Some(&image.manifest.config.digest)
    );
    // As BuildKit writes into a layout directory: what was there stays, the image's blobs are
    // added and index.json names it.
    assert!(layout.join("stale").exists());
    assert!(layout.join("blobs/sha256/0000").exists());
    assert!(layout.join("index.json").is_file());
    for blob in image.blobs() {
        assert!(layout
            .join("blobs/sha256")
            .join(blob.digest.hex())
            .is_file());
    }
    let leftovers: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    check_skopeo(&format!("oci:{}:latest", layout.display()), &image);

    fs::remove_dir_all(&layout).unwrap();
    fs::write(&layout, "a file").unwrap();
    let err = exporter
        .export(&store, ExportInput::Image(&image))
        .unwrap_err();
    assert!(err.to_string().contains("is not a directory"), "{err}");
}

#[test]
fn oci_layout_tar_is_deterministic_and_reads_back_with_skopeo() {
    if !is_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&work.path().join("content")).unwrap();
    let image = build_image(work.path(), &store);
    let tar_path = work.path().join("image.tar");
    let exporter = OciExporter {
        dest: OciDest::Tar(tar_path.clone()),
        image_name: Some("example.com/app:v2".into()),
    };
    exporter.export(&store, ExportInput::Image(&image)).unwrap();
    let bytes = fs::read(&tar_path).unwrap();
    assert_eq!(fs::metadata(&tar_path).unwrap().mode() & 0o777, 0o644);

    let again = write_oci_layout_to(
        &store,
        &image,
        Vec::new(),
        Some("v2"),
        Some("example.com/app:v2"),
    )
    .unwrap();
    assert_eq!(again, bytes, "same image, same tar bytes");

    let mut ar = tar::Archive::new(&bytes[..]);
    let mut names = Vec::new();
    for entry in ar.entries().unwrap() {
        let e = entry.unwrap();
        let h = e.header();
        assert_eq!(
            (h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0, 0, 0)
        );
        names.push(String::from_utf8(e.path_bytes().into_owned()).unwrap());
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
    assert_eq!(&names[names.len() - 2..], ["index.json", "oci-layout"]);
    assert_eq!(names.len(), 2 + image.blobs().count() + 2);

    check_skopeo(&format!("oci-archive:{}:v2", tar_path.display()), &image);
    if have("umoci") {
        // umoci reads directories only: unpack the tar and read that.
        let layout = work.path().join("from-tar");
        tar::Archive::new(&bytes[..]).unpack(&layout).unwrap();
        check_umoci(&layout, "v2", work.path());
    }
}
