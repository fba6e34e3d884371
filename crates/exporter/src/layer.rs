//! A layer diff directory → a compressed layer blob in the content store, in one streaming pass:
//!
//! ```text
//! this thread                      compression threads         writer thread
//! tar headers, file data read  ─→  gzip blocks, or zstd    ─→  BlobWriter: sha256 of the
//! straight into the encoder's      jobs (bounded queue)        blob (its digest), the file
//! buffer; sha256 of the tar
//! (the diff_id)
//! ```
//!
//! Every queue between the stages is bounded, so memory stays a few MiB whatever the layer's
//! size, and the two sha256 passes run on different threads, beside the compression.

use crate::compression::{self, Compression, Encoder};
use crate::diff_tar;
use crate::tar_entry::{read_data, CopyFrom};
use crate::Error;
use kiln_cache::ContentStore;
use kiln_oci::{Descriptor, Digest};
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};
use std::path::Path;

/// How a layer blob is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// SOURCE_DATE_EPOCH, in Unix seconds.
    pub epoch: Option<i64>,
    /// Clamp file mtimes to `epoch` (when it is set).
    pub rewrite_timestamp: bool,
    /// OCI layer media types; Docker v2 ones when false (zstd is always OCI).
    pub oci_media_types: bool,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::default(),
            epoch: None,
            rewrite_timestamp: false,
            oci_media_types: true,
        }
    }
}

/// A layer blob in the content store.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Layer {
    /// The compressed blob.
    pub descriptor: Descriptor,
    /// The sha256 of the uncompressed tar, as listed in the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// Whether the tar has no entries (such layers are left out of images).
    pub empty: bool,
}

/// Bumped whenever the bytes written for a given diff change (tar order, compressor), so
/// that memos of blobs written the old way are not reused and every build writes alike.
const LAYER_FORMAT: u32 = 2;

/// Writes the overlay upperdir `diff_dir` as a layer blob into `store`, compressing on every
/// core up to 8 (the bytes are the same for any number).
pub fn write_layer(
    store: &ContentStore,
    diff_dir: &Path,
    opts: &LayerOptions,
) -> Result<Layer, Error> {
    write_layer_threads(store, diff_dir, opts, compression::default_threads())
}

/// [`write_layer`] compressing on `threads` threads: the same bytes, other CPU and memory use.
pub fn write_layer_threads(
    store: &ContentStore,
    diff_dir: &Path,
    opts: &LayerOptions,
    threads: usize,
) -> Result<Layer, Error> {
    let blob = store.writer()?;
    let encoder = compression::encoder(opts.compression, blob, threads)
        .map_err(Error::io("start compressing", diff_dir))?;
    let mut tar = tar::Builder::new(TarSink::new(encoder));
    let mtime_clamp = opts.epoch.filter(|_| opts.rewrite_timestamp);
    let entries = diff_tar::append_diff(&mut tar, diff_dir, mtime_clamp)?;
    let sink = tar
        .into_inner()
        .map_err(Error::io("finish the tar of", diff_dir))?;
    let (diff_id, encoder) = sink.finish();
    let blob = encoder
        .finish()
        .map_err(Error::io("finish compressing the layer of", diff_dir))?;
    let (digest, size) = blob.commit(None)?;
    Ok(Layer {
        descriptor: Descriptor::new(
            opts.compression.media_type(opts.oci_media_types),
            digest,
            size,
        ),
        diff_id,
        empty: entries == 0,
    })
}

/// [`write_layer`] for a diff that never changes once written (a committed snapshot): the
/// result is remembered in `memo_dir`, per set of options, and reused while its blob is in
/// the store, so a cached step's layer is tarred and compressed once, not on every export.
pub fn write_layer_memo(
    store: &ContentStore,
    diff_dir: &Path,
    opts: &LayerOptions,
    memo_dir: &Path,
) -> Result<Layer, Error> {
    let options = Digest::of(format!("{LAYER_FORMAT} {opts:?}").as_bytes());
    let memo = memo_dir.join(format!("layer-{}.json", &options.hex()[..16]));
    if let Some(layer) = std::fs::read(&memo)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Layer>(&bytes).ok())
        .filter(|layer| store.contains(&layer.descriptor.digest))
    {
        return Ok(layer);
    }
    let layer = write_layer(store, diff_dir, opts)?;
    // A memo that can't be written only costs the next export a re-tar.
    let _ = write_memo(&memo, &layer);
    Ok(layer)
}

/// The tar stream of a layer on its way into the encoder, hashed for the diff_id as it passes.
struct TarSink<W: Write + Send + 'static> {
    encoder: Encoder<W>,
    diff_id: Sha256,
}

impl<W: Write + Send + 'static> TarSink<W> {
    fn new(encoder: Encoder<W>) -> Self {
        TarSink {
            encoder,
            diff_id: Sha256::new(),
        }
    }

    /// The diff_id and the encoder, to be finished.
    fn finish(self) -> (Digest, Encoder<W>) {
        let diff_id = Digest::from_sha256(self.diff_id.finalize().into());
        (diff_id, self.encoder)
    }
}

impl<W: Write + Send + 'static> Write for TarSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.write(buf)?;
        self.diff_id.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

impl<W: Write + Send + 'static> CopyFrom for TarSink<W> {
    /// Reads file data straight into the encoder's buffer, hashing it there: the one copy
    /// of the data is the kernel's into that buffer.
    fn copy_from(&mut self, src: &mut dyn Read, len: u64) -> io::Result<()> {
        let mut remaining = len;
        while remaining > 0 {
            let spare = self
                .encoder
                .spare(remaining.try_into().unwrap_or(usize::MAX));
            let n = read_data(src, spare, remaining)?;
            self.diff_id.update(&spare[..n]);
            self.encoder.commit(n)?;
            remaining -= n as u64;
        }
        Ok(())
    }
}

fn write_memo(memo: &Path, layer: &Layer) -> std::io::Result<()> {
    let dir = memo.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &serde_json::to_vec(layer)?)?;
    tmp.persist(memo).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};
    use std::path::PathBuf;
    use tar::EntryType;

    const LONG: &str = "deep/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee/file.txt";

    /// One step of building a diff directory.
    enum Op {
        Dir(&'static str, u32),
        File(&'static str, &'static str, u32),
        Symlink(&'static str, &'static str),
        Whiteout(&'static str),
        CharDev(&'static str, u64, u64),
        Fifo(&'static str),
        Hardlink(&'static str, &'static str),
        Opaque(&'static str),
        Xattr(&'static str, &'static str, &'static [u8]),
        Group(&'static str, u32),
    }

    /// Steps that create paths (any order) and steps that need those paths (after them).
    fn ops() -> (Vec<Op>, Vec<Op>) {
        let create = vec![
            Op::Dir("etc", 0o755),
            Op::File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644),
            Op::File("etc/shadow", "root:*::0:::::\n", 0o640),
            Op::File("usr/bin/tool", "#!/bin/sh\necho tool\n", 0o4755),
            Op::Symlink("usr/bin/sh", "busybox"),
            Op::Symlink("usr/bin/long-link", LONG),
            Op::Dir("tmp", 0o1777),
            Op::File(LONG, "long\n", 0o644),
            Op::Whiteout("gone"),
            Op::Whiteout("var/lib/apt"),
            Op::Dir("opaque", 0o750),
            Op::File("opaque/new", "fresh\n", 0o600),
            Op::CharDev("dev/null", 1, 3),
            Op::Fifo("fifo"),
        ];
        let then = vec![
            Op::Hardlink("usr/bin/tool-link", "usr/bin/tool"),
            Op::Opaque("opaque"),
            Op::Xattr("usr/bin/tool", "user.test", b"cap\0bytes"),
            Op::Xattr("etc/passwd", "trusted.overlay.origin", b"x"),
            Op::Group("etc/shadow", 42),
        ];
        (create, then)
    }

    fn apply(root: &Path, op: &Op) {
        let p = |rel: &str| -> PathBuf {
            let path = root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            path
        };
        match *op {
            Op::Dir(rel, mode) => {
                fs::create_dir_all(root.join(rel)).unwrap();
                fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
            }
            Op::File(rel, data, mode) => {
                fs::write(p(rel), data).unwrap();
                fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
            }
            Op::Symlink(rel, target) => symlink(target, p(rel)).unwrap(),
            Op::Whiteout(rel) => mknod(&p(rel), SFlag::S_IFCHR, Mode::empty(), 0).unwrap(),
            Op::CharDev(rel, major, minor) => {
                let dev = nix::sys::stat::makedev(major, minor);
                mknod(&p(rel), SFlag::S_IFCHR, Mode::empty(), dev).unwrap();
                fs::set_permissions(root.join(rel), fs::Permissions::from_mode(0o666)).unwrap();
            }
            Op::Fifo(rel) => {
                nix::unistd::mkfifo(&p(rel), Mode::empty()).unwrap();
                fs::set_permissions(root.join(rel), fs::Permissions::from_mode(0o644)).unwrap();
            }
            Op::Hardlink(rel, existing) => fs::hard_link(root.join(existing), p(rel)).unwrap(),
            Op::Opaque(rel) => xattr::set(root.join(rel), "trusted.overlay.opaque", b"y").unwrap(),
            Op::Xattr(rel, name, value) => xattr::set(root.join(rel), name, value).unwrap(),
            Op::Group(rel, gid) => lchown(root.join(rel), None, Some(gid)).unwrap(),
        }
    }

    /// Builds the test diff under `root`; `reverse` creates the paths in the opposite order, so
    /// inode numbers and readdir order differ.
    fn build_diff(root: &Path, reverse: bool) {
        // Implicitly created directories must come out 0755 whatever the caller's umask.
        nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
        let (mut create, then) = ops();
        if reverse {
            create.reverse();
        }
        for op in create.iter().chain(&then) {
            apply(root, op);
        }
    }

    /// Sets the mtime of everything under `root` (children before their directories).
    fn set_mtimes(root: &Path, secs: i64) {
        for entry in fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                set_mtimes(&path, secs);
            }
            let t = TimeSpec::new(secs, 0);
            utimensat(None, &path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
        }
    }

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skipped: needs root (mknod for whiteouts, trusted.* xattrs)");
        false
    }

    #[derive(Debug, PartialEq)]
    struct Seen {
        path: String,
        kind: EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<String>,
        device: Option<(u32, u32)>,
        xattrs: Vec<(String, Vec<u8>)>,
        data: String,
    }

    /// Every entry of a gzip layer blob, read back with the `tar` crate.
    fn read_layer(store: &ContentStore, layer: &Layer) -> Vec<Seen> {
        let blob = store.open_blob(&layer.descriptor.digest).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        let mut seen = Vec::new();
        for entry in ar.entries().unwrap() {
            let mut e = entry.unwrap();
            let h = e.header().clone();
            assert_eq!(h.username_bytes(), Some(&b""[..]), "uname must be empty");
            assert_eq!(h.groupname_bytes(), Some(&b""[..]), "gname must be empty");
            let mut xattrs = Vec::new();
            if let Some(pax) = e.pax_extensions().unwrap() {
                for record in pax {
                    let record = record.unwrap();
                    let key = record.key().unwrap();
                    assert!(!["mtime", "atime", "ctime"].contains(&key), "{key}");
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_string(), record.value_bytes().to_vec()));
                    }
                }
            }
            let kind = h.entry_type();
            let device = matches!(kind, EntryType::Char | EntryType::Block).then(|| {
                (
                    h.device_major().unwrap().unwrap(),
                    h.device_minor().unwrap().unwrap(),
                )
            });
            let mut data = String::new();
            e.read_to_string(&mut data).unwrap();
            seen.push(Seen {
                path: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                kind,
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap()),
                device,
                xattrs,
                data,
            });
        }
        seen
    }

    fn expected(mtime: u64) -> Vec<Seen> {
        let e = |path: &str, kind, mode| Seen {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            link: None,
            device: None,
            xattrs: vec![],
            data: String::new(),
        };
        let dir = |path: &str| e(path, EntryType::Directory, 0o755);
        let file = |path: &str, mode, data: &str| Seen {
            data: data.into(),
            ..e(path, EntryType::Regular, mode)
        };
        let link = |path: &str, kind, target: &str| Seen {
            link: Some(target.into()),
            ..e(
                path,
                kind,
                if kind == EntryType::Symlink {
                    0o777
                } else {
                    0o4755
                },
            )
        };
        let long_dirs = LONG.rsplit_once('/').unwrap().0;
        let long_parent = long_dirs.rsplit_once('/').unwrap().0;
        vec![
            dir("deep/"),
            dir(&format!("{long_parent}/")),
            dir(&format!("{long_dirs}/")),
            file(LONG, 0o644, "long\n"),
            dir("dev/"),
            Seen {
                device: Some((1, 3)),
                ..e("dev/null", EntryType::Char, 0o666)
            },
            dir("etc/"),
            file("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n"),
            Seen {
                gid: 42,
                ..file("etc/shadow", 0o640, "root:*::0:::::\n")
            },
            e("fifo", EntryType::Fifo, 0o644),
            file(".wh.gone", 0o600, ""),
            e("opaque/", EntryType::Directory, 0o750),
            file("opaque/.wh..wh..opq", 0o750, ""),
            file("opaque/new", 0o600, "fresh\n"),
            e("tmp/", EntryType::Directory, 0o1777),
            dir("usr/"),
            dir("usr/bin/"),
            link("usr/bin/long-link", EntryType::Symlink, LONG),
            link("usr/bin/sh", EntryType::Symlink, "busybox"),
            Seen {
                xattrs: vec![("user.test".into(), b"cap\0bytes".to_vec())],
                ..file("usr/bin/tool", 0o4755, "#!/bin/sh\necho tool\n")
            },
            link("usr/bin/tool-link", EntryType::Link, "usr/bin/tool"),
            dir("var/"),
            dir("var/lib/"),
            file("var/lib/.wh.apt", 0o600, ""),
        ]
    }

    fn gzip(epoch: Option<i64>) -> LayerOptions {
        LayerOptions {
            epoch,
            rewrite_timestamp: true,
            ..LayerOptions::default()
        }
    }

    #[test]
    fn every_kind_of_entry() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let diff = dir.path().join("diff");
        build_diff(&diff, false);
        set_mtimes(&diff, 1_600_000_000);

        let layer = write_layer(&store, &diff, &gzip(None)).unwrap();
        assert!(!layer.empty);
        assert_eq!(
            layer.descriptor.media_type,
            kiln_oci::media_types::OCI_LAYER_GZIP
        );
        let seen = read_layer(&store, &layer);
        let want = expected(1_600_000_000);
        for (s, w) in seen.iter().zip(&want) {
            assert_eq!(s, w);
        }
        assert_eq!(seen.len(), want.len(), "{seen:#?}");

        // The digests are those of the bytes: diff_id over the tar, digest over the blob.
        let blob = fs::read(store.blob_path(&layer.descriptor.digest)).unwrap();
        assert_eq!(Digest::of(&blob), layer.descriptor.digest);
        assert_eq!(blob.len() as u64, layer.descriptor.size);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(Digest::of(&tar), layer.diff_id);
        assert_eq!(blob[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn mtimes_are_clamped_to_the_epoch_only_when_asked() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let diff = dir.path().join("diff");
        build_diff(&diff, false);
        set_mtimes(&diff, 1_600_000_000);
        fs::write(diff.join("old"), "").unwrap();
        let t = TimeSpec::new(1_000, 0);
        utimensat(
            None,
            &diff.join("old"),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();

        let mtimes = |opts: &LayerOptions| -> Vec<u64> {
            let layer = write_layer(&store, &diff, opts).unwrap();
            read_layer(&store, &layer).iter().map(|s| s.mtime).collect()
        };
        let clamped = mtimes(&gzip(Some(1_500_000_000)));
        assert!(clamped.contains(&1_000), "older mtimes are kept");
        assert!(clamped.iter().all(|&t| t == 1_500_000_000 || t == 1_000));
        let unclamped = LayerOptions {
            rewrite_timestamp: false,
            ..gzip(Some(1_500_000_000))
        };
        assert!(mtimes(&unclamped).contains(&1_600_000_000));
    }

    #[test]
    fn same_tree_same_digest_wherever_and_whenever_it_was_made() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("nested/b"));
        build_diff(&a, false);
        build_diff(&b, true);
        set_mtimes(&b, 2_000_000_000);
        let opts = gzip(Some(1_700_000_000));

        let first = write_layer(&store, &a, &opts).unwrap();
        assert_eq!(write_layer(&store, &a, &opts).unwrap(), first);
        assert_eq!(write_layer(&store, &b, &opts).unwrap(), first);

        for compression in [Compression::Zstd { level: 3 }, Compression::Uncompressed] {
            let opts = LayerOptions {
                compression,
                ..opts.clone()
            };
            let (la, lb) = (
                write_layer(&store, &a, &opts).unwrap(),
                write_layer(&store, &b, &opts).unwrap(),
            );
            assert_eq!(la, lb);
            assert_eq!(
                la.diff_id, first.diff_id,
                "same tar whatever the compression"
            );
            assert_eq!(la.descriptor.media_type, compression.media_type(true));
        }
        let plain = LayerOptions {
            compression: Compression::Uncompressed,
            ..opts
        };
        let layer = write_layer(&store, &a, &plain).unwrap();
        assert_eq!(layer.descriptor.digest, layer.diff_id);
    }

    #[test]
    fn an_empty_diff_is_an_empty_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let diff = dir.path().join("diff");
        fs::create_dir(&diff).unwrap();
        let opts = LayerOptions {
            oci_media_types: false,
            ..LayerOptions::default()
        };
        let layer = write_layer(&store, &diff, &opts).unwrap();
        assert!(layer.empty);
        assert_eq!(layer.diff_id, Digest::of(&[0u8; 1024]));
        assert_eq!(
            layer.descriptor.media_type,
            kiln_oci::media_types::DOCKER_LAYER_GZIP
        );
    }

    /// The paths of a layer's entries, in order.
    fn paths(store: &ContentStore, layer: &Layer) -> Vec<String> {
        read_layer(store, layer)
            .into_iter()
            .map(|s| s.path)
            .collect()
    }

    #[test]
    fn entries_come_in_walk_order_as_buildkit_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let diff = dir.path().join("diff");
        for file in ["a-b", "a/b", "a/c/d", "a0", "a.txt", "B", "a/b-c"] {
            let path = diff.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, file).unwrap();
        }
        let layer = write_layer(&store, &diff, &LayerOptions::default()).unwrap();
        // Depth first, names in byte order per directory: `a/…` before `a-b` (a sort of whole
        // paths would put `a-b` first, as '-' < '/').
        assert_eq!(
            paths(&store, &layer),
            ["B", "a/", "a/b", "a/b-c", "a/c/", "a/c/d", "a-b", "a.txt", "a0"]
        );
    }

    /// A `security.capability` value (VFS_CAP_REVISION_2: cap_net_bind_service, effective).
    const CAP_NET_BIND_SERVICE: [u8; 20] = [
        0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn file_capabilities_and_user_xattrs_are_kept_selinux_labels_are_not() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let diff = dir.path().join("diff");
        fs::create_dir_all(&diff).unwrap();
        let bin = diff.join("ping");
        fs::write(&bin, "elf").unwrap();
        xattr::set(&bin, "security.capability", &CAP_NET_BIND_SERVICE).unwrap();
        xattr::set(&bin, "user.note", b"kept").unwrap();
        let labelled = match xattr::set(&bin, "security.selinux", b"system_u:object_r:bin_t:s0") {
            Ok(()) => true,
            Err(e) => {
                eprintln!("skipped the SELinux label check: cannot set one here ({e})");
                false
            }
        };
        if labelled {
            let on_disk = xattr::get(&bin, "security.selinux").unwrap();
            assert!(on_disk.is_some());
        }
        let layer = write_layer(&store, &diff, &LayerOptions::default()).unwrap();
        let seen = read_layer(&store, &layer);
        assert_eq!(
            seen[0].xattrs,
            [
                ("security.capability".into(), CAP_NET_BIND_SERVICE.to_vec()),
                ("user.note".into(), b"kept".to_vec()),
            ]
        );
    }

    /// A diff with a file of text and random MiBs, so gzip has deflated and stored blocks.
    fn big_diff(root: &Path) {
        let mut data = crate::parallel_gzip::tests::sample(1_200_000, false);
        data.extend(crate::parallel_gzip::tests::sample(2_300_000, true));
        fs::create_dir_all(root.join("data")).unwrap();
        fs::write(root.join("data/mixed.bin"), &data).unwrap();
        fs::write(root.join("data/small"), "small\n").unwrap();
    }

    #[test]
    fn same_blob_for_any_compression_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let diff = dir.path().join("diff");
        big_diff(&diff);
        set_mtimes(&diff, 1_600_000_000);
        for compression in [Compression::default(), Compression::Zstd { level: 3 }] {
            let opts = LayerOptions {
                compression,
                ..LayerOptions::default()
            };
            let one = write_layer_threads(&store, &diff, &opts, 1).unwrap();
            let four = write_layer_threads(&store, &diff, &opts, 4).unwrap();
            assert_eq!(one, four, "{compression:?}");
        }
    }

    #[test]
    fn a_big_gzip_layer_reads_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let diff = dir.path().join("diff");
        big_diff(&diff);
        let layer = write_layer(&store, &diff, &LayerOptions::default()).unwrap();
        let blob = fs::read(store.blob_path(&layer.descriptor.digest)).unwrap();
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(Digest::of(&tar), layer.diff_id);
        let mut ar = tar::Archive::new(&tar[..]);
        let mut entry = ar
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path_bytes().as_ref() == b"data/mixed.bin")
            .unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        assert!(data == fs::read(diff.join("data/mixed.bin")).unwrap());
    }

    #[test]
    fn sockets_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let diff = dir.path().join("diff");
        fs::create_dir(&diff).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(diff.join("sock")).unwrap();
        let layer = write_layer(&store, &diff, &LayerOptions::default()).unwrap();
        assert!(layer.empty);
    }

    #[test]
    fn a_missing_diff_dir_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let missing = dir.path().join("no-such-diff");
        let err = write_layer(&store, &missing, &LayerOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no-such-diff"), "{err}");
        assert!(fs::read_dir(dir.path().join("ingest"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn memo_reuses_a_layer_while_its_blob_is_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&tmp.path().join("content")).unwrap();
        let snap = tmp.path().join("snap");
        let diff = snap.join("diff");
        std::fs::create_dir_all(&diff).unwrap();
        std::fs::write(diff.join("f"), "x").unwrap();
        let opts = LayerOptions::default();
        let first = write_layer_memo(&store, &diff, &opts, &snap).unwrap();
        // Once remembered, the diff isn't read again: change it behind the memo's back.
        std::fs::write(diff.join("f"), "changed").unwrap();
        assert_eq!(
            write_layer_memo(&store, &diff, &opts, &snap).unwrap(),
            first
        );
        // Other options are another memo; a memo whose blob left the store is redone.
        let zstd = LayerOptions {
            compression: Compression::Zstd { level: 3 },
            ..LayerOptions::default()
        };
        assert_ne!(
            write_layer_memo(&store, &diff, &zstd, &snap)
                .unwrap()
                .descriptor,
            first.descriptor
        );
        std::fs::remove_file(store.blob_path(&first.descriptor.digest)).unwrap();
        let redone = write_layer_memo(&store, &diff, &opts, &snap).unwrap();
        assert_ne!(
            redone.diff_id, first.diff_id,
            "re-tarred from the (changed) diff"
        );
        assert!(store.contains(&redone.descriptor.digest));
    }
}
