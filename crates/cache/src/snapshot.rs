//! The snapshot store: each layer is a directory in overlayfs "upperdir" form (deleted paths are
//! character devices 0:0, replaced directories carry `trusted.overlay.opaque=y`), and a root
//! filesystem is a stack of layers mounted with overlayfs.
//!
//! A new snapshot is prepared in a temporary directory and renamed to its final name only when
//! committed, so a crash leaves either nothing or a whole snapshot, never half of one.
//!
//! Where overlayfs can't be mounted (a rootless or nested setup, a file system overlay refuses
//! as upper layer), the store falls back to copying, in the same storage format: a view is the
//! layers applied one by one onto a plain directory, and a writable layer is such a view whose
//! changes are found by comparing it with a record of what it held (see `snapshot/diff.rs`).

mod diff;
mod entry;
mod merge;
mod tidy;

use diff::LowerView;
use kiln_oci::Digest;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Copies the merged view of `layers` (bottom first, overlay upperdirs) into the existing
/// directory `target`: whiteouts delete, opaque directories hide what is below, and ownership,
/// modes, xattrs, times and hard links within a layer are kept. `type=local` outputs use it.
pub fn materialise_layers(layers: &[PathBuf], target: &Path) -> io::Result<()> {
    merge::materialise(layers, target, None)
}

/// Copies the tree `src` into the existing directory `target`, replacing only the paths `src`
/// has (see `merge::copy_into`): `type=local` outputs into a directory that exists.
pub fn copy_tree_into(src: &Path, target: &Path) -> io::Result<()> {
    merge::copy_into(src, target)
}

/// Environment variable that picks the snapshotter: `overlay` or `copy` (default: overlay
/// where it mounts, else copy).
pub const SNAPSHOTTER_ENV: &str = "KILN_SNAPSHOTTER";

/// How layers are stacked into a root filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotterMode {
    /// Mounted with overlayfs.
    Overlay,
    /// Copied into plain directories.
    Copy,
}

/// Errors of the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("could not mount overlayfs at {target}: {source} (kiln needs root and a kernel with overlayfs)")]
    Mount { target: PathBuf, source: nix::Error },
    #[error("snapshot {0} does not exist")]
    Missing(String),
    #[error("{SNAPSHOTTER_ENV}={0} names no snapshotter (use `overlay` or `copy`)")]
    UnknownMode(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Layers under `<root>/snapshots/<id>/diff`.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    root: PathBuf,
    mode: SnapshotterMode,
}

/// A committed layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotId(pub String);

impl SnapshotId {
    /// The name of an image layer's snapshot: by its diff_id, so that images sharing a layer
    /// share its snapshot.
    pub fn layer(diff_id: &Digest) -> SnapshotId {
        SnapshotId(format!("{LAYER_PREFIX}{}", diff_id.hex()))
    }

    /// The diff_id of an image layer's snapshot; `None` for other snapshots.
    pub fn layer_diff_id(&self) -> Option<Digest> {
        let hex = self.0.strip_prefix(LAYER_PREFIX)?;
        format!("sha256:{hex}").parse().ok()
    }
}

const LAYER_PREFIX: &str = "layer-";

/// A layer being written: an upper dir and the overlay work dir beside it, and the layers it
/// was mounted over. In copy mode, also the record of the lower view materialised at its mount
/// point.
#[derive(Debug)]
pub struct Prepared {
    dir: PathBuf,
    layers: Mutex<Vec<PathBuf>>,
    lower: Mutex<Option<LowerView>>,
}

impl SnapshotStore {
    /// Opens (and creates) the store, with the snapshotter [`SNAPSHOTTER_ENV`] names, or else
    /// overlayfs if it can be mounted here and copying if not.
    pub fn open(root: &Path) -> Result<SnapshotStore, SnapshotError> {
        let forced = match std::env::var(SNAPSHOTTER_ENV) {
            Ok(v) if v == "overlay" => Some(SnapshotterMode::Overlay),
            Ok(v) if v == "copy" => Some(SnapshotterMode::Copy),
            Ok(v) if !v.is_empty() => return Err(SnapshotError::UnknownMode(v)),
            _ => None,
        };
        let mut store = SnapshotStore::open_with_mode(root, SnapshotterMode::Overlay)?;
        store.mode = match forced {
            Some(mode) => mode,
            None if store.overlay_mounts() => SnapshotterMode::Overlay,
            None => SnapshotterMode::Copy,
        };
        Ok(store)
    }

    /// Opens (and creates) the store with the given snapshotter.
    pub fn open_with_mode(
        root: &Path,
        mode: SnapshotterMode,
    ) -> Result<SnapshotStore, SnapshotError> {
        let store = SnapshotStore {
            root: root.to_path_buf(),
            mode,
        };
        for d in [store.snapshots_dir(), store.tmp_dir(), store.empty_dir()] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(store)
    }

    /// How this store stacks layers.
    pub fn mode(&self) -> SnapshotterMode {
        self.mode
    }

    /// Whether a read-only overlay of `empty/` mounts on a probe directory.
    fn overlay_mounts(&self) -> bool {
        let Ok(probe) = tempfile::Builder::new()
            .prefix("probe-")
            .tempdir_in(self.tmp_dir())
        else {
            return false;
        };
        // A read-only mount needs two lower dirs, and the kernel refuses one given twice.
        let (lower, target) = (probe.path().join("lower"), probe.path().join("mnt"));
        if fs::create_dir(&lower).is_err() || fs::create_dir(&target).is_err() {
            return false;
        }
        let options = format!("lowerdir={}", lower_list(&[self.empty_dir(), lower]));
        let mounted = mount_overlay(&options, &target).is_ok();
        if mounted {
            let _ = umount2(&target, MntFlags::MNT_DETACH);
        }
        mounted
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A new directory in the temporary area, named `prefix` and random characters; it stays
    /// until removed (or until the next crash clean-up).
    fn temp_dir(&self, prefix: &str) -> Result<PathBuf, SnapshotError> {
        let tmp = self.tmp_dir();
        Ok(tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(io_err(&tmp))?
            .keep())
    }

    /// An empty directory, the bottom of every stack (overlayfs needs a lower layer).
    fn empty_dir(&self) -> PathBuf {
        self.root.join("empty")
    }

    /// The state directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The diff directory of a committed snapshot.
    pub fn diff_dir(&self, id: &SnapshotId) -> PathBuf {
        self.snapshots_dir().join(&id.0).join("diff")
    }

    pub fn exists(&self, id: &SnapshotId) -> bool {
        self.diff_dir(id).is_dir()
    }

    /// Starts a new layer.
    pub fn prepare(&self) -> Result<Prepared, SnapshotError> {
        let dir = self.temp_dir("prepare-")?;
        for sub in ["diff", "work", "mnt"] {
            let p = dir.join(sub);
            fs::create_dir(&p).map_err(io_err(&p))?;
        }
        Ok(Prepared {
            dir,
            layers: Mutex::new(Vec::new()),
            lower: Mutex::new(None),
        })
    }

    /// Commits a prepared layer under `id`. If `id` exists already (another build made the same
    /// layer), the prepared one is dropped and the existing one kept.
    pub fn commit(&self, prepared: Prepared, id: &SnapshotId) -> Result<(), SnapshotError> {
        let work = prepared.dir.join("work");
        let _ = fs::remove_dir_all(&work);
        let mnt = prepared.mount_point();
        let lower = prepared.take_lower();
        if let Some(lower) = &lower {
            let diff = prepared.diff_dir();
            if let Err(source) = diff::write_diff(lower, &mnt, &diff) {
                let _ = self.discard(prepared);
                return Err(SnapshotError::Io { path: diff, source });
            }
            if let Err(e) = remove_tree(&mnt) {
                let _ = self.discard(prepared);
                return Err(e);
            }
        }
        let _ = fs::remove_dir(&mnt);
        let layers =
            std::mem::take(&mut *prepared.layers.lock().unwrap_or_else(|e| e.into_inner()));
        let diff = prepared.diff_dir();
        if let Err(source) = tidy::drop_unchanged_dirs(&diff, &layers) {
            let _ = self.discard(prepared);
            return Err(SnapshotError::Io { path: diff, source });
        }
        let dest = self.snapshots_dir().join(&id.0);
        if dest.exists() {
            return self.discard(prepared);
        }
        match fs::rename(&prepared.dir, &dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.exists() => self.discard(prepared),
            Err(e) => Err(SnapshotError::Io {
                path: dest,
                source: e,
            }),
        }
    }

    /// Throws a prepared layer away.
    pub fn discard(&self, prepared: Prepared) -> Result<(), SnapshotError> {
        remove_tree(&prepared.dir)
    }

    /// Every committed snapshot.
    pub fn list(&self) -> Result<Vec<SnapshotId>, SnapshotError> {
        let dir = self.snapshots_dir();
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            if let Some(name) = entry.file_name().to_str() {
                ids.push(SnapshotId(name.to_string()));
            }
        }
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(ids)
    }

    /// Removes the committed snapshot `id` and returns the bytes of its files. It leaves its
    /// name first (moved into the temporary area), so that an interrupted removal never leaves
    /// part of a snapshot under its name. Only safe when no other process uses the store.
    pub fn remove(&self, id: &SnapshotId) -> Result<u64, SnapshotError> {
        let from = self.snapshots_dir().join(&id.0);
        let to = self.temp_dir("removed-")?;
        fs::rename(&from, to.join("snapshot")).map_err(io_err(&from))?;
        let bytes = crate::prune::file_bytes(&to).map_err(io_err(&to))?;
        remove_tree(&to)?;
        Ok(bytes)
    }

    /// Removes what crashed processes left in the temporary area. Only safe when no other
    /// process is preparing snapshots in this store.
    pub fn clear_tmp(&self) -> Result<(), SnapshotError> {
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let entry = entry.map_err(io_err(&tmp))?;
            remove_tree(&entry.path())?;
        }
        Ok(())
    }

    /// Mounts `layers` (bottom first) with `prepared` as the writable upper layer, at the
    /// prepared snapshot's mount point.
    pub fn mount_rw(
        &self,
        layers: &[PathBuf],
        prepared: &Prepared,
    ) -> Result<Mounted, SnapshotError> {
        let target = prepared.dir.join("mnt");
        *prepared.layers.lock().unwrap_or_else(|e| e.into_inner()) = layers.to_vec();
        if self.mode == SnapshotterMode::Copy {
            let mut lower = prepared.lower.lock().unwrap_or_else(|e| e.into_inner());
            if lower.is_none() {
                *lower = Some(LowerView::materialise(layers, &target).map_err(io_err(&target))?);
            }
            return Ok(Mounted {
                target,
                kind: MountKind::Materialised,
                upper: None,
            });
        }
        let lower = self.lowerdir(layers);
        let options = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            prepared.dir.join("diff").display(),
            prepared.dir.join("work").display()
        );
        mount_overlay(&options, &target)?;
        Ok(Mounted {
            target,
            kind: MountKind::Overlay { remove_dir: false },
            upper: Some(prepared.dir.join("diff")),
        })
    }

    /// Mounts `layers` (bottom first) read-only at a fresh temporary directory.
    pub fn mount_ro(&self, layers: &[PathBuf]) -> Result<Mounted, SnapshotError> {
        let target = self.temp_dir("view-")?;
        // An empty stack is an empty directory (overlayfs refuses `empty/` as both lower dirs).
        if self.mode == SnapshotterMode::Copy || layers.is_empty() {
            let view = Mounted {
                target,
                kind: MountKind::View,
                upper: None,
            };
            fs::set_permissions(&view.target, fs::Permissions::from_mode(0o755))
                .map_err(io_err(&view.target))?;
            merge::materialise(layers, &view.target, None).map_err(io_err(&view.target))?;
            return Ok(view);
        }
        let mounted = Mounted {
            target: target.clone(),
            kind: MountKind::Overlay { remove_dir: true },
            upper: None,
        };
        // overlayfs needs two lower layers for a read-only mount.
        let mut stack = vec![self.empty_dir()];
        stack.extend(layers.iter().cloned());
        let options = format!("lowerdir={}", lower_list(&stack));
        mount_overlay(&options, &target)?;
        Ok(mounted)
    }

    fn lowerdir(&self, layers: &[PathBuf]) -> String {
        let mut stack = vec![self.empty_dir()];
        stack.extend(layers.iter().cloned());
        lower_list(&stack)
    }
}

impl Prepared {
    /// Where the prepared layer is mounted by [`SnapshotStore::mount_rw`].
    pub fn mount_point(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// The upper (diff) directory being written.
    pub fn diff_dir(&self) -> PathBuf {
        self.dir.join("diff")
    }

    fn take_lower(&self) -> Option<LowerView> {
        self.lower.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// overlayfs' lowerdir list is top first.
fn lower_list(bottom_first: &[PathBuf]) -> String {
    bottom_first
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn mount_overlay(options: &str, target: &Path) -> Result<(), SnapshotError> {
    // Renamed directories and metadata-only copy-ups would leave overlay-private redirects in
    // the upper layer, which a layer tar can't express: turn both off where the kernel can.
    let strict = format!("{options},redirect_dir=off,metacopy=off");
    let attempt = |opts: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts),
        )
    };
    attempt(&strict)
        .or_else(|_| attempt(options))
        .map_err(|source| SnapshotError::Mount {
            target: target.to_path_buf(),
            source,
        })
}

/// A mounted (or, in copy mode, materialised) filesystem, unmounted when dropped.
#[derive(Debug)]
pub struct Mounted {
    target: PathBuf,
    kind: MountKind,
    /// The upper directory of a writable overlay mount.
    upper: Option<PathBuf>,
}

#[derive(Debug)]
enum MountKind {
    /// An overlay mount, and whether its mount point is ours to remove.
    Overlay { remove_dir: bool },
    /// A copied read-only view: a temporary tree, removed when dropped.
    View,
    /// A copied writable layer: its tree stays for the commit to diff.
    Materialised,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// For a writable overlay mount, its upper directory (the new layer's diff). Writing there
    /// directly is only coherent with the mount for paths the mount has never looked up.
    pub fn upper(&self) -> Option<&Path> {
        self.upper.as_deref()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        match self.kind {
            MountKind::Overlay { remove_dir } => {
                let _ = umount2(&self.target, MntFlags::MNT_DETACH);
                if remove_dir {
                    let _ = fs::remove_dir(&self.target);
                }
            }
            MountKind::View => {
                let _ = remove_tree(&self.target);
            }
            MountKind::Materialised => {}
        }
    }
}

/// `rm -rf` that also copes with read-only directories in the tree.
fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SnapshotError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn prepare_mount_commit_and_view() {
        if !root() {
            eprintln!("skipped: overlay mounts need root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();

        let p1 = store.prepare().unwrap();
        {
            let m = store.mount_rw(&[], &p1).unwrap();
            fs::write(m.path().join("a"), "1").unwrap();
            fs::create_dir(m.path().join("d")).unwrap();
            fs::write(m.path().join("d/f"), "x").unwrap();
        }
        let l1 = SnapshotId("l1".into());
        store.commit(p1, &l1).unwrap();
        assert_eq!(
            fs::read_to_string(store.diff_dir(&l1).join("a")).unwrap(),
            "1"
        );

        let p2 = store.prepare().unwrap();
        {
            let m = store.mount_rw(&[store.diff_dir(&l1)], &p2).unwrap();
            assert_eq!(fs::read_to_string(m.path().join("d/f")).unwrap(), "x");
            fs::remove_file(m.path().join("a")).unwrap();
            fs::write(m.path().join("b"), "2").unwrap();
        }
        let l2 = SnapshotId("l2".into());
        store.commit(p2, &l2).unwrap();
        // The deletion is a whiteout (char device 0:0) in the upper layer.
        use std::os::unix::fs::FileTypeExt;
        let wh = fs::symlink_metadata(store.diff_dir(&l2).join("a")).unwrap();
        assert!(wh.file_type().is_char_device());

        let view = store
            .mount_ro(&[store.diff_dir(&l1), store.diff_dir(&l2)])
            .unwrap();
        assert!(!view.path().join("a").exists());
        assert_eq!(fs::read_to_string(view.path().join("b")).unwrap(), "2");
        let path = view.path().to_path_buf();
        drop(view);
        assert!(!path.exists(), "the view's mount point is removed");
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn committing_twice_keeps_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let id = SnapshotId("same".into());
        let p = store.prepare().unwrap();
        fs::write(p.diff_dir().join("first"), "").unwrap();
        store.commit(p, &id).unwrap();
        let p = store.prepare().unwrap();
        fs::write(p.diff_dir().join("second"), "").unwrap();
        store.commit(p, &id).unwrap();
        assert!(store.diff_dir(&id).join("first").exists());
        assert!(!store.diff_dir(&id).join("second").exists());
        assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
    }
}
