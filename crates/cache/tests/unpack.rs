//! Unpacking layer blobs into the snapshot store: formats, whiteouts, metadata, and hostile
//! layers that try to write outside the snapshot.

use kiln_cache::{
    unpack_layer, unpack_to_snapshot, ContentStore, SnapshotId, SnapshotStore, UnpackError,
};
use kiln_oci::{media_types, Descriptor, Digest};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use tar::{EntryType, Header};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! needs_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (mknod, chown, overlay mounts)");
            return;
        }
    };
}

/// A layer tar under construction. Names are written raw (no cleaning by the tar crate), so
/// tests can say exactly what a hostile producer would.
struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Layer {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, name: &str, mode: u32) -> Header {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        let bytes = name.as_bytes();
        assert!(bytes.len() <= 100, "test names fit a ustar name field");
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h
    }

    fn append(&mut self, mut h: Header, data: &[u8]) -> &mut Layer {
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data).unwrap();
        self
    }

    fn with_link(mut h: Header, link: &str) -> Header {
        let bytes = link.as_bytes();
        h.as_old_mut().linkname[..bytes.len()].copy_from_slice(bytes);
        h
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.append(Layer::header(EntryType::Regular, name, 0o644), data)
    }

    fn dir(&mut self, name: &str) -> &mut Layer {
        self.append(Layer::header(EntryType::Directory, name, 0o755), b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Layer {
        let h = Layer::with_link(Layer::header(EntryType::Symlink, name, 0o777), target);
        self.append(h, b"")
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Layer {
        let h = Layer::with_link(Layer::header(EntryType::Link, name, 0o644), target);
        self.append(h, b"")
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Layer {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = [b" ", key.as_bytes(), b"=", value, b"\n"].concat();
            // The length counts its own digits.
            let mut len = body.len() + 1;
            while format!("{len}").len() + body.len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}").as_bytes());
            data.extend_from_slice(&body);
        }
        self.append(
            Layer::header(EntryType::XHeader, "PaxHeaders/x", 0o644),
            &data,
        )
    }

    fn build(&mut self) -> Vec<u8> {
        self.tar.finish().unwrap();
        self.tar.get_ref().clone()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// Unpacks a plain tar into a fresh `diff` directory inside a temp dir (so escapes are
/// visible beside it).
fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<kiln_cache::Unpacked, UnpackError>) {
    let tmp = tempfile::tempdir().unwrap();
    let diff = tmp.path().join("diff");
    fs::create_dir(&diff).unwrap();
    let result = unpack_layer(tar, media_types::OCI_LAYER, &diff);
    (tmp, result)
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

// ---- formats and diff_id ----

#[test]
fn plain_gzip_and_zstd_unpack_alike_with_the_tar_digest_as_diff_id() {
    let tar = Layer::new()
        .dir("etc/")
        .file("etc/hostname", b"kiln\n")
        .symlink("etc/alias", "hostname")
        .build();
    let cases = [
        (media_types::OCI_LAYER, tar.clone()),
        (media_types::OCI_LAYER_GZIP, gzip(&tar)),
        (media_types::OCI_LAYER_ZSTD, zstd(&tar)),
        // Docker's types are sniffed.
        (media_types::DOCKER_LAYER_GZIP, gzip(&tar)),
        (media_types::DOCKER_LAYER, zstd(&tar)),
        (media_types::DOCKER_LAYER_GZIP, tar.clone()),
    ];
    for (media_type, blob) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let unpacked = unpack_layer(&blob[..], media_type, tmp.path()).unwrap();
        assert_eq!(unpacked.diff_id, Digest::of(&tar), "{media_type}");
        assert_eq!(unpacked.entries, 3);
        assert_eq!(
            fs::read(tmp.path().join("etc/hostname")).unwrap(),
            b"kiln\n"
        );
        assert_eq!(
            fs::read_link(tmp.path().join("etc/alias")).unwrap(),
            Path::new("hostname")
        );
    }
}

#[test]
fn diff_id_covers_bytes_after_the_end_of_archive_marker() {
    let mut tar = Layer::new().file("f", b"x").build();
    tar.extend_from_slice(&[0u8; 4096]);
    let (_tmp, result) = unpack(&tar);
    assert_eq!(result.unwrap().diff_id, Digest::of(&tar));
}

#[test]
fn concatenated_gzip_members_are_one_layer() {
    let tar = Layer::new().file("a", b"1").file("b", b"2").build();
    let (head, tail) = tar.split_at(1024);
    let blob = [gzip(head), gzip(tail)].concat();
    let tmp = tempfile::tempdir().unwrap();
    let unpacked = unpack_layer(&blob[..], media_types::OCI_LAYER_GZIP, tmp.path()).unwrap();
    assert_eq!(unpacked.diff_id, Digest::of(&tar));
    assert!(tmp.path().join("b").is_file());
}

#[test]
fn truncated_or_corrupt_blobs_are_errors() {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let tar = Layer::new().file("big", &big).file("after", b"x").build();

    let gz = gzip(&tar);
    let tmp = tempfile::tempdir().unwrap();
    let err =
        unpack_layer(&gz[..gz.len() / 2], media_types::OCI_LAYER_GZIP, tmp.path()).unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err}");

    let mut bad = gz.clone();
    bad[20] ^= 0xff;
    bad[40] ^= 0xff;
    let tmp = tempfile::tempdir().unwrap();
    assert!(unpack_layer(&bad[..], media_types::OCI_LAYER_GZIP, tmp.path()).is_err());

    let zs = zstd(&tar);
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack_layer(
        &zs[..zs.len() - 10],
        media_types::OCI_LAYER_ZSTD,
        tmp.path(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err}");

    // Cut in the middle of a file's data.
    let (_tmp, result) = unpack(&tar[..100_000]);
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::ShortEntry { .. } | UnpackError::Corrupt(_)
        ),
        "{err}"
    );

    // Cut exactly at an entry boundary: only the missing end-of-archive marker shows it.
    let boundary = 512 + 200_000usize.div_ceil(512) * 512;
    let (_tmp, result) = unpack(&tar[..boundary]);
    assert!(matches!(result, Err(UnpackError::Truncated)), "{result:?}");

    let (_tmp, result) = unpack(&[0x55; 700]);
    assert!(result.is_err());
}

#[test]
fn the_target_directory_must_be_empty() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("old"), "").unwrap();
    let tar = Layer::new().file("f", b"").build();
    let err = unpack_layer(&tar[..], media_types::OCI_LAYER, tmp.path()).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

// ---- hostile names ----

#[test]
fn dotdot_above_the_root_is_rejected() {
    for name in [
        "../escaped",
        "a/../../escaped",
        "/../escaped",
        "./../escaped",
    ] {
        let (tmp, result) = unpack(&Layer::new().file(name, b"x").build());
        let err = result.unwrap_err();
        assert!(
            matches!(err, UnpackError::EscapesRoot { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("escapes"), "{err}");
        assert!(!tmp.path().join("escaped").exists(), "{name}");
    }
    // A `..` that stays inside is fine.
    let (tmp, result) = unpack(&Layer::new().file("a/../inside", b"x").build());
    result.unwrap();
    assert!(tmp.path().join("diff/inside").is_file());
}

#[test]
fn absolute_names_are_made_relative() {
    let (tmp, result) = unpack(&Layer::new().file("/etc/kiln-unpack-test", b"x").build());
    result.unwrap();
    assert!(tmp.path().join("diff/etc/kiln-unpack-test").is_file());
    assert!(!Path::new("/etc/kiln-unpack-test").exists());
}

/// A temp dir holding an empty `diff/` and, beside it, `outside/passwd`: the canary that
/// hostile layers aim at (rather than the host's /etc, which a regression would damage).
struct Canary {
    tmp: tempfile::TempDir,
}

impl Canary {
    fn new() -> Canary {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("diff")).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/passwd"), "root:x:0:0\n").unwrap();
        Canary { tmp }
    }

    /// The absolute path of `outside`, for symlinks to point at.
    fn outside(&self) -> String {
        self.tmp.path().join("outside").display().to_string()
    }

    fn unpack(&self, tar: &[u8]) -> Result<kiln_cache::Unpacked, UnpackError> {
        unpack_layer(tar, media_types::OCI_LAYER, &self.tmp.path().join("diff"))
    }

    /// Whether `outside` still holds exactly the canary, unchanged and without xattrs.
    fn untouched(&self) -> bool {
        let outside = self.tmp.path().join("outside");
        let names: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names == ["passwd"]
            && fs::symlink_metadata(outside.join("passwd"))
                .unwrap()
                .is_file()
            && fs::read(outside.join("passwd")).unwrap() == b"root:x:0:0\n"
            && lgetxattr(&outside, "trusted.overlay.opaque").is_none()
    }
}

#[test]
fn entries_are_never_written_through_a_symlink_of_the_layer() {
    let canary = Canary::new();
    let absolute = canary.outside();
    let cases = [
        (absolute.as_str(), "link/passwd"),
        ("../outside", "link/passwd"),
        (absolute.as_str(), "link/../link/passwd"),
        // Parent directories are not created through one either.
        (absolute.as_str(), "link/new-dir/f"),
        // Even a symlink to a directory inside the layer: symlinks are never resolved.
        ("d", "link/f"),
    ];
    for (target, name) in cases {
        let canary = Canary::new();
        let tar = Layer::new()
            .dir("d/")
            .symlink("link", target)
            .file(name, b"owned\n")
            .build();
        let err = canary.unpack(&tar).unwrap_err();
        assert!(
            matches!(err, UnpackError::ThroughSymlink { .. }),
            "{target} {name}: {err}"
        );
        assert!(err.to_string().contains("symlink link"), "{err}");
        assert!(canary.untouched(), "{target} {name}");
        assert!(!canary.tmp.path().join("diff/d/f").exists());
    }
}

#[test]
fn whiteouts_are_never_made_through_a_symlink_of_the_layer() {
    needs_root!();
    for name in ["link/.wh.passwd", "link/.wh..wh..opq"] {
        let canary = Canary::new();
        let tar = Layer::new()
            .symlink("link", &canary.outside())
            .file(name, b"")
            .build();
        let err = canary.unpack(&tar).unwrap_err();
        assert!(
            matches!(err, UnpackError::ThroughSymlink { .. }),
            "{name}: {err}"
        );
        assert!(canary.untouched(), "{name}");
    }
}

#[test]
fn the_hosts_etc_is_out_of_reach() {
    // The classic attack, aimed at the real /etc: refused before anything is opened there.
    let passwd = fs::read("/etc/passwd").unwrap();
    let tar = Layer::new()
        .symlink("etc", "/etc")
        .file("etc/passwd", b"owned\n")
        .build();
    let (_tmp, result) = unpack(&tar);
    assert!(matches!(result, Err(UnpackError::ThroughSymlink { .. })));
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
}

#[test]
fn a_pax_path_is_cleaned_like_any_name() {
    let tar = Layer::new()
        .pax(&[("path", b"../../pax-escaped")])
        .file("harmless", b"x")
        .build();
    let (tmp, result) = unpack(&tar);
    assert!(
        matches!(result, Err(UnpackError::EscapesRoot { .. })),
        "{result:?}"
    );
    assert!(!tmp.path().join("pax-escaped").exists());
    assert!(!tmp.path().join("diff/harmless").exists());
}

#[test]
fn a_later_entry_may_replace_a_symlink_itself() {
    let tar = Layer::new()
        .symlink("link", "/etc")
        .dir("link/")
        .file("link/passwd", b"mine")
        .build();
    let (tmp, result) = unpack(&tar);
    result.unwrap();
    let link = tmp.path().join("diff/link");
    assert!(fs::symlink_metadata(&link).unwrap().is_dir());
    assert_eq!(fs::read(link.join("passwd")).unwrap(), b"mine");
}

#[test]
fn hardlinks_must_point_at_files_of_this_layer() {
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let absolute = format!("{}/passwd", Canary::new().outside());
    let cases = [
        ("../outside/passwd", "outside"),
        ("a/../../outside/passwd", "outside"),
        (absolute.as_str(), "not in this layer"),
        ("/etc/passwd", "not in this layer"),
        ("missing", "not in this layer"),
        ("dir", "is a directory"),
        ("link/passwd", "behind a symlink"),
        ("/", "root"),
    ];
    for (target, reason) in cases {
        let canary = Canary::new();
        let tar = Layer::new()
            .dir("dir/")
            .symlink("link", &canary.outside())
            .hardlink("h", target)
            .build();
        let err = canary.unpack(&tar).unwrap_err();
        assert!(
            matches!(err, UnpackError::BadHardlink { .. }),
            "{target}: {err}"
        );
        assert!(err.to_string().contains(reason), "{target}: {err}");
        assert!(!canary.tmp.path().join("diff/h").exists());
        let canary_links = fs::metadata(canary.tmp.path().join("outside/passwd")).unwrap();
        assert_eq!(canary_links.nlink(), 1, "{target}");
    }
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
}

#[test]
fn hardlinks_within_the_layer_share_the_inode() {
    let tar = Layer::new()
        .file("a/f", b"data")
        .symlink("a/s", "/etc/passwd")
        .hardlink("b/g", "/a/f")
        .hardlink("b/t", "a/s")
        .build();
    let (tmp, result) = unpack(&tar);
    result.unwrap();
    let d = tmp.path().join("diff");
    let f = fs::metadata(d.join("a/f")).unwrap();
    let g = fs::metadata(d.join("b/g")).unwrap();
    assert_eq!((f.ino(), f.nlink()), (g.ino(), 2));
    // A hardlink to a symlink links the symlink, never what it points at.
    let t = fs::symlink_metadata(d.join("b/t")).unwrap();
    assert!(t.file_type().is_symlink());
    assert_eq!(t.ino(), fs::symlink_metadata(d.join("a/s")).unwrap().ino());
}

#[test]
fn symlink_targets_are_stored_as_given() {
    let tar = Layer::new()
        .symlink("abs", "/etc/shadow")
        .symlink("up", "../../../../x")
        .build();
    let (tmp, result) = unpack(&tar);
    result.unwrap();
    let d = tmp.path().join("diff");
    assert_eq!(
        fs::read_link(d.join("abs")).unwrap(),
        Path::new("/etc/shadow")
    );
    assert_eq!(
        fs::read_link(d.join("up")).unwrap(),
        Path::new("../../../../x")
    );
}

// ---- whiteouts ----

#[test]
fn whiteouts_become_overlay_whiteouts() {
    needs_root!();
    let tar = Layer::new()
        .dir("a/")
        .file("a/keep", b"k")
        .file("a/.wh.gone", b"")
        .file(".wh.top", b"")
        .dir("c/")
        .file("c/.wh..wh..opq", b"")
        .file("c/new", b"n")
        .file("d/.wh..wh.plnk", b"")
        .build();
    let (tmp, result) = unpack(&tar);
    assert_eq!(result.unwrap().entries, 8);
    let d = tmp.path().join("diff");
    assert!(is_whiteout(&d.join("a/gone")));
    assert!(is_whiteout(&d.join("top")));
    assert!(!d.join("a/.wh.gone").exists() && !d.join(".wh.top").exists());
    assert_eq!(fs::read(d.join("a/keep")).unwrap(), b"k");
    assert_eq!(
        lgetxattr(&d.join("c"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!d.join("c/.wh..wh..opq").exists());
    assert_eq!(lgetxattr(&d.join("a"), "trusted.overlay.opaque"), None);
    // aufs bookkeeping is skipped.
    assert_eq!(fs::read_dir(d.join("d")).unwrap().count(), 0);
}

#[test]
fn whiteouts_hide_lower_layers_in_the_mounted_view() {
    needs_root!();
    let s = Stores::new();
    let lower = Layer::new()
        .file("a/gone", b"1")
        .file("a/keep", b"2")
        .file("c/old", b"3")
        .file("top", b"4")
        .build();
    let upper = Layer::new()
        .file("a/.wh.gone", b"")
        .file(".wh.top", b"")
        .dir("c/")
        .file("c/.wh..wh..opq", b"")
        .file("c/new", b"5")
        .build();
    let mut ids = Vec::new();
    for (name, tar) in [("lower", &lower), ("upper", &upper)] {
        let layer = s.put(&gzip(tar), media_types::OCI_LAYER_GZIP);
        let id = SnapshotId(name.into());
        unpack_to_snapshot(&s.content, &s.snapshots, &layer, &Digest::of(tar), &id).unwrap();
        ids.push(s.snapshots.diff_dir(&id));
    }
    let view = s.snapshots.mount_ro(&ids).unwrap();
    let v = view.path();
    assert!(!v.join("a/gone").exists());
    assert_eq!(fs::read(v.join("a/keep")).unwrap(), b"2");
    assert!(!v.join("top").exists());
    assert!(
        !v.join("c/old").exists(),
        "the opaque dir hides the lower one's contents"
    );
    assert_eq!(fs::read(v.join("c/new")).unwrap(), b"5");
}

#[test]
fn whiteout_names_that_name_nothing_are_rejected() {
    for name in ["d/.wh.", "d/.wh..", "d/.wh..."] {
        let (_tmp, result) = unpack(&Layer::new().file("d/keep", b"").file(name, b"").build());
        let err = result.unwrap_err();
        assert!(
            matches!(err, UnpackError::BadWhiteout { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn an_entry_and_its_whiteout_in_one_layer_resolve_in_order() {
    needs_root!();
    let tar = Layer::new()
        .file("x", b"first")
        .file(".wh.x", b"")
        .file(".wh.y", b"")
        .file("y", b"second")
        .file("d/keep", b"k")
        .file("d/sub/f", b"f")
        .file(".wh.d", b"")
        .build();
    let (tmp, result) = unpack(&tar);
    result.unwrap();
    let d = tmp.path().join("diff");
    assert!(is_whiteout(&d.join("x")));
    assert_eq!(fs::read(d.join("y")).unwrap(), b"second");
    // The whiteout replaces exactly `d` (and so what this layer put in it), nothing else.
    assert!(is_whiteout(&d.join("d")));
    let mut names: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "x", "y"]);
}

#[test]
fn data_cannot_fake_overlay_bookkeeping() {
    needs_root!();
    let tar = Layer::new()
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.kept", b"v"),
        ])
        .dir("d/")
        .build();
    let (tmp, result) = unpack(&tar);
    result.unwrap();
    let d = tmp.path().join("diff/d");
    assert_eq!(lgetxattr(&d, "trusted.overlay.opaque"), None);
    assert_eq!(lgetxattr(&d, "user.kept").as_deref(), Some(&b"v"[..]));

    let mut fake = Layer::header(EntryType::Char, "gone", 0o600);
    fake.set_device_major(0).unwrap();
    fake.set_device_minor(0).unwrap();
    let (tmp, result) = unpack(&Layer::new().append(fake, b"").build());
    let err = result.unwrap_err();
    assert!(matches!(err, UnpackError::FakeWhiteout { .. }), "{err}");
    assert!(!tmp.path().join("diff/gone").exists());
}

// ---- replacing entries ----

#[test]
fn later_entries_replace_earlier_ones_as_in_tar() {
    let mut second = Layer::header(EntryType::Directory, "merged/", 0o700);
    second.set_mtime(1_000);
    let tar = Layer::new()
        .file("p", b"file")
        .dir("p/")
        .file("p/q", b"q")
        .dir("r/")
        .file("r/s", b"s")
        .file("r", b"now a file")
        .file("m", b"1")
        .symlink("m", "target")
        .dir("merged/")
        .file("merged/old", b"o")
        .append(second, b"")
        .build();
    let (tmp, result) = unpack(&tar);
    result.unwrap();
    let d = tmp.path().join("diff");
    assert_eq!(fs::read(d.join("p/q")).unwrap(), b"q");
    assert_eq!(fs::read(d.join("r")).unwrap(), b"now a file");
    assert_eq!(fs::read_link(d.join("m")).unwrap(), Path::new("target"));
    let merged = fs::metadata(d.join("merged")).unwrap();
    assert_eq!(merged.permissions().mode() & 0o7777, 0o700);
    assert_eq!(merged.mtime(), 1_000);
    assert!(
        d.join("merged/old").exists(),
        "a directory over a directory merges"
    );
}

#[test]
fn an_entry_below_a_file_of_the_layer_is_an_error() {
    let (_tmp, result) = unpack(&Layer::new().file("f", b"").file("f/g", b"").build());
    assert!(
        matches!(result, Err(UnpackError::NotADirectory { .. })),
        "{result:?}"
    );
}

// ---- metadata ----

#[test]
fn devices_fifos_owners_modes_times_and_xattrs_round_trip() {
    needs_root!();
    let mut layer = Layer::new();
    let mut null = Layer::header(EntryType::Char, "dev/null", 0o666);
    null.set_device_major(1).unwrap();
    null.set_device_minor(3).unwrap();
    let mut loop0 = Layer::header(EntryType::Block, "dev/loop0", 0o660);
    loop0.set_device_major(7).unwrap();
    loop0.set_device_minor(0).unwrap();
    loop0.set_gid(6);
    let fifo = Layer::header(EntryType::Fifo, "run/fifo", 0o620);
    let mut suid = Layer::header(EntryType::Regular, "bin/su", 0o4755);
    suid.set_uid(1234);
    suid.set_gid(5678);
    let mut sgid = Layer::header(EntryType::Regular, "bin/wall", 0o2711);
    sgid.set_gid(5);
    let mut sticky = Layer::header(EntryType::Directory, "tmp/", 0o1777);
    sticky.set_mtime(1_234_567_890);
    let mut link = Layer::header(EntryType::Symlink, "tmp/link", 0o777);
    link = Layer::with_link(link, "/nowhere");
    link.set_uid(42);
    link.set_gid(43);
    link.set_mtime(1_111_111_111);
    layer
        .append(null, b"")
        .append(loop0, b"")
        .append(fifo, b"")
        .pax(&[
            ("mtime", b"1500000000.25"),
            (
                "SCHILY.xattr.security.capability",
                b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            ),
            ("SCHILY.xattr.user.comment", b"hello"),
            ("SCHILY.xattr.trusted.kiln", b"t"),
        ])
        .append(suid, b"#!/bin/sh\n")
        .append(sgid, b"")
        .append(sticky, b"")
        // Written after tmp/'s entry: tmp's mtime must still be the header's.
        .file("tmp/later", b"x")
        .append(link, b"");
    let (tmp, result) = unpack(&layer.build());
    result.unwrap();
    let d = tmp.path().join("diff");
    let meta = |p: &str| fs::symlink_metadata(d.join(p)).unwrap();

    let null = meta("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let loop0 = meta("dev/loop0");
    assert!(loop0.file_type().is_block_device());
    assert_eq!(loop0.rdev(), nix::sys::stat::makedev(7, 0));
    assert_eq!((loop0.gid(), loop0.mode() & 0o7777), (6, 0o660));
    let fifo = meta("run/fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);

    let su = meta("bin/su");
    assert_eq!((su.uid(), su.gid()), (1234, 5678));
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid survives chown");
    assert_eq!((su.mtime(), su.mtime_nsec()), (1_500_000_000, 250_000_000));
    assert_eq!(
        lgetxattr(&d.join("bin/su"), "user.comment").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        lgetxattr(&d.join("bin/su"), "trusted.kiln").as_deref(),
        Some(&b"t"[..])
    );
    assert!(
        lgetxattr(&d.join("bin/su"), "security.capability").is_some(),
        "file capabilities are set after chown, which would clear them"
    );
    assert_eq!(meta("bin/wall").mode() & 0o7777, 0o2711);

    let tmpdir = meta("tmp");
    assert_eq!(tmpdir.mode() & 0o7777, 0o1777);
    assert_eq!(
        tmpdir.mtime(),
        1_234_567_890,
        "directory times are set after contents"
    );
    assert_eq!(meta("tmp/later").mtime(), 1_600_000_000);

    let link = meta("tmp/link");
    assert!(link.file_type().is_symlink());
    assert_eq!((link.uid(), link.gid()), (42, 43));
    assert_eq!(link.mtime(), 1_111_111_111);

    // Parents the archive never listed are made 0755.
    assert_eq!(meta("dev").mode() & 0o7777, 0o755);
}

// ---- into the snapshot store ----

struct Stores {
    tmp: tempfile::TempDir,
    content: ContentStore,
    snapshots: SnapshotStore,
}

impl Stores {
    fn new() -> Stores {
        let tmp = tempfile::tempdir().unwrap();
        let content = ContentStore::open(&tmp.path().join("content")).unwrap();
        let snapshots = SnapshotStore::open(&tmp.path().join("snapshots")).unwrap();
        Stores {
            tmp,
            content,
            snapshots,
        }
    }

    fn put(&self, blob: &[u8], media_type: &str) -> Descriptor {
        let (digest, size) = self.content.put(blob).unwrap();
        Descriptor::new(media_type, digest, size)
    }

    fn tmp_is_empty(&self) -> bool {
        fs::read_dir(self.tmp.path().join("snapshots/tmp"))
            .unwrap()
            .next()
            .is_none()
    }
}

#[test]
fn unpack_to_snapshot_commits_a_verified_layer_once() {
    let s = Stores::new();
    let tar = Layer::new().file("etc/os-release", b"ID=kiln\n").build();
    let layer = s.put(&zstd(&tar), media_types::OCI_LAYER_ZSTD);
    let id = SnapshotId("base".into());
    unpack_to_snapshot(&s.content, &s.snapshots, &layer, &Digest::of(&tar), &id).unwrap();
    let diff = s.snapshots.diff_dir(&id);
    assert_eq!(fs::read(diff.join("etc/os-release")).unwrap(), b"ID=kiln\n");
    assert!(s.tmp_is_empty());

    // An existing snapshot is not unpacked again (even from a blob that is gone).
    fs::write(diff.join("marker"), "").unwrap();
    let absent = s.put(b"unused", media_types::OCI_LAYER);
    unpack_to_snapshot(&s.content, &s.snapshots, &absent, &Digest::of(&tar), &id).unwrap();
    assert!(diff.join("marker").exists());
}

#[test]
fn a_wrong_diff_id_commits_nothing() {
    let s = Stores::new();
    let tar = Layer::new().file("f", b"x").build();
    let layer = s.put(&gzip(&tar), media_types::OCI_LAYER_GZIP);
    let wrong = Digest::of(b"another layer");
    let id = SnapshotId("l".into());
    let err = unpack_to_snapshot(&s.content, &s.snapshots, &layer, &wrong, &id).unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&wrong.to_string()) && msg.contains(&Digest::of(&tar).to_string()));
    assert!(!s.snapshots.exists(&id));
    assert!(s.tmp_is_empty());
}

#[test]
fn broken_or_hostile_layers_commit_nothing() {
    let s = Stores::new();
    let good = Layer::new()
        .file("a", &[7u8; 100_000])
        .file("b", b"")
        .build();
    let gz = gzip(&good);
    let hostile = Layer::new()
        .symlink("l", "/etc")
        .file("l/passwd", b"x")
        .build();
    let cases = [
        (
            gz[..gz.len() / 2].to_vec(),
            media_types::OCI_LAYER_GZIP,
            Digest::of(&good),
        ),
        (
            good[..good.len() - 1024].to_vec(),
            media_types::OCI_LAYER,
            Digest::of(&good),
        ),
        (
            hostile.clone(),
            media_types::OCI_LAYER,
            Digest::of(&hostile),
        ),
    ];
    for (i, (blob, media_type, diff_id)) in cases.into_iter().enumerate() {
        let layer = s.put(&blob, media_type);
        let id = SnapshotId(format!("case{i}"));
        let err = unpack_to_snapshot(&s.content, &s.snapshots, &layer, &diff_id, &id);
        assert!(err.is_err(), "case {i}");
        assert!(!s.snapshots.exists(&id), "case {i}");
        assert!(s.tmp_is_empty(), "case {i}");
    }
    let layer = s.put(b"", media_types::OCI_LAYER);
    let missing = Descriptor {
        digest: Digest::of(b"not stored"),
        ..layer
    };
    let err = unpack_to_snapshot(
        &s.content,
        &s.snapshots,
        &missing,
        &Digest::of(b""),
        &SnapshotId("m".into()),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not in the content store"),
        "{err}"
    );
    assert!(s.tmp_is_empty());
}
