//! The copy snapshotter against overlayfs: the same build steps, run in both modes, must commit
//! equivalent layers (upperdir form: whiteouts, opaque directories, copied-up parents) and show
//! the same merged trees.

use kiln_cache::snapshot::SnapshotterMode;
use kiln_cache::{SnapshotId, SnapshotStore};
use rustix::fs::{
    lgetxattr, llistxattr, lsetxattr, makedev, mknodat, utimensat, AtFlags, FileType, Mode,
    Timespec, Timestamps, XattrFlags, CWD,
};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{chown, lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn mknod_char(path: &Path, major: u32, minor: u32) {
    mknodat(
        CWD,
        path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        makedev(major, minor),
    )
    .unwrap();
}

/// The base layer's build step.
fn base_step(root: &Path) {
    fs::write(root.join("a"), "a").unwrap();
    fs::write(root.join("keep"), "keep").unwrap();
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::write(root.join("dir/x"), "x").unwrap();
    fs::write(root.join("dir/sub/y"), "y").unwrap();
    fs::write(root.join("meta"), "meta").unwrap();
    set_mtime(&root.join("meta"), 1_000_000);
    fs::write(root.join("touched"), "old!").unwrap();
    set_mtime(&root.join("touched"), 2_000_000);
    symlink("a", root.join("link")).unwrap();
    fs::write(root.join("hl1"), "linked").unwrap();
    fs::hard_link(root.join("hl1"), root.join("hl2")).unwrap();
    fs::create_dir(root.join("d2")).unwrap();
    fs::write(root.join("d2/z"), "z").unwrap();
    fs::write(root.join("xa"), "xa").unwrap();
    set_xattr(&root.join("xa"), "user.base", b"1");
    fs::create_dir(root.join("untouched")).unwrap();
    fs::write(root.join("untouched/f"), "f").unwrap();
}

/// The second layer's build step: one change of every kind.
fn change_step(root: &Path) {
    fs::create_dir(root.join("new")).unwrap();
    fs::write(root.join("new/file"), "new").unwrap();
    fs::remove_file(root.join("a")).unwrap();
    fs::remove_dir_all(root.join("dir")).unwrap();
    fs::create_dir(root.join("dir")).unwrap();
    fs::write(root.join("dir/fresh"), "fresh").unwrap();
    set_mode(&root.join("meta"), 0o600);
    chown(root.join("meta"), Some(1000), Some(1000)).unwrap();
    // Same size, same mtime: only the bytes tell.
    fs::write(root.join("touched"), "new!").unwrap();
    set_mtime(&root.join("touched"), 2_000_000);
    fs::remove_file(root.join("link")).unwrap();
    symlink("keep", root.join("link")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    lchown(root.join("abs-link"), Some(7), Some(7)).unwrap();
    fs::hard_link(root.join("d2/z"), root.join("d2/z-link")).unwrap();
    fs::write(root.join("h1"), "h").unwrap();
    fs::hard_link(root.join("h1"), root.join("h2")).unwrap();
    mknod_char(&root.join("null"), 1, 3);
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    set_xattr(&root.join("keep"), "user.added", b"yes");
    fs::write(root.join("xnew"), "x").unwrap();
    set_xattr(&root.join("xnew"), "user.new", b"2");
    set_mode(&root.join("untouched"), 0o700);
}

/// Runs `step` on top of `lower` and commits it as `id`.
fn build(store: &SnapshotStore, lower: &[PathBuf], id: &str, step: fn(&Path)) -> PathBuf {
    let prepared = store.prepare().unwrap();
    {
        let m = store.mount_rw(lower, &prepared).unwrap();
        step(m.path());
    }
    let id = SnapshotId(id.into());
    store.commit(prepared, &id).unwrap();
    store.diff_dir(&id)
}

/// Everything about a tree the modes must agree on, by path. Directory times are left out,
/// and so are overlayfs' own xattrs except the opaque flag.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, String> = HashMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    inodes: &mut HashMap<u64, String>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let md = fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let mut desc = format!(
            "mode={:o} owner={}:{} xattrs={:?}",
            md.mode(),
            md.uid(),
            md.gid(),
            xattrs(&path)
        );
        if ft.is_file() {
            desc += &format!(" content={:?}", fs::read_to_string(&path).unwrap());
            // Times of files a step made are when it ran; these two are set by the steps.
            if rel == "meta" || rel == "touched" {
                desc += &format!(" mtime={}", md.mtime());
            }
            if md.nlink() > 1 {
                let first = inodes.entry(md.ino()).or_insert_with(|| rel.clone());
                desc += &format!(" linked-to={first}");
            }
        } else if ft.is_symlink() {
            desc += &format!(" target={:?}", fs::read_link(&path).unwrap());
        } else if ft.is_char_device() || ft.is_block_device() {
            desc += &format!(" rdev={}", md.rdev());
        }
        out.insert(rel, desc);
        if ft.is_dir() {
            walk(root, &path, out, inodes);
        }
    }
}

fn xattrs(path: &Path) -> Vec<(String, String)> {
    let mut buf = vec![0u8; 4096];
    let len = llistxattr(path, &mut buf[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in buf[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).to_string();
        if name.starts_with("trusted.overlay.") && name != "trusted.overlay.opaque" {
            continue;
        }
        let mut value = vec![0u8; 4096];
        let n = lgetxattr(path, name.as_str(), &mut value[..]).unwrap();
        out.push((name, String::from_utf8_lossy(&value[..n]).to_string()));
    }
    out.sort();
    out
}

fn tmp_is_empty(root: &Path) -> bool {
    fs::read_dir(root.join("tmp")).unwrap().count() == 0
}

/// The two layers' diffs and the merged view of both, in `mode`.
struct Outcome {
    base: BTreeMap<String, String>,
    change: BTreeMap<String, String>,
    view: BTreeMap<String, String>,
}

fn run(mode: SnapshotterMode) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open_with_mode(tmp.path(), mode).unwrap();
    assert_eq!(store.mode(), mode);
    let base = build(&store, &[], "base", base_step);
    let change = build(&store, std::slice::from_ref(&base), "change", change_step);
    assert!(
        tmp_is_empty(tmp.path()),
        "{mode:?}: commit leaves tmp/ empty"
    );
    let view = store.mount_ro(&[base.clone(), change.clone()]).unwrap();
    let outcome = Outcome {
        base: describe(&base),
        change: describe(&change),
        view: describe(view.path()),
    };
    drop(view);
    assert!(
        tmp_is_empty(tmp.path()),
        "{mode:?}: a dropped view leaves tmp/ empty"
    );
    outcome
}

fn overlay_available() -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open_with_mode(tmp.path(), SnapshotterMode::Overlay).unwrap();
    let prepared = store.prepare().unwrap();
    let mounts = store.mount_rw(&[], &prepared).is_ok();
    store.discard(prepared).unwrap();
    mounts
}

#[test]
fn copy_mode_commits_what_overlayfs_commits() {
    if !is_root() {
        eprintln!("skipped: needs root (whiteouts, chown, trusted xattrs)");
        return;
    }
    let copy = run(SnapshotterMode::Copy);

    // What the change layer must say, whatever overlayfs does here.
    let c = &copy.change;
    assert!(
        c["a"].starts_with("mode=20000 owner=0:0"),
        "whiteout: {}",
        c["a"]
    );
    assert!(
        c["dir"].contains("trusted.overlay.opaque"),
        "opaque: {}",
        c["dir"]
    );
    assert!(c.contains_key("dir/fresh") && !c.contains_key("dir/x"));
    assert!(c["meta"].contains("mode=100600 owner=1000:1000"));
    assert!(c["meta"].contains("mtime=1000000"), "{}", c["meta"]);
    assert!(c["touched"].contains("content=\"new!\""));
    assert!(c["link"].contains("target=\"keep\""));
    assert!(c["abs-link"].contains("owner=7:7"));
    assert!(
        c["d2/z-link"].contains("linked-to=d2/z"),
        "{}",
        c["d2/z-link"]
    );
    assert!(c["h2"].contains("linked-to=h1"));
    assert!(c["null"].contains(&format!("rdev={}", makedev(1, 3))));
    assert!(c["fifo"].starts_with("mode=10640"));
    assert!(c["keep"].contains("user.added"));
    assert!(c["untouched"].starts_with("mode=40700"));
    for unchanged in ["hl1", "hl2", "xa", "untouched/f"] {
        assert!(!c.contains_key(unchanged), "{unchanged} is not in the diff");
    }
    assert!(copy.view["xa"].contains("user.base"));
    assert!(!copy.view.contains_key("a"));
    assert!(copy.view["hl2"].contains("linked-to=hl1"));

    if !overlay_available() {
        eprintln!("overlayfs does not mount here: compared the copy mode with itself only");
        return;
    }
    let overlay = run(SnapshotterMode::Overlay);
    assert_eq!(copy.base, overlay.base, "base layers differ");
    assert_eq!(copy.change, overlay.change, "change layers differ");
    assert_eq!(copy.view, overlay.view, "merged views differ");
}

/// A directory copied up without a change of its own — for a file made and removed below it,
/// a mount stub made and removed, or a new mtime — is left out of the diff in both modes, as
/// BuildKit's differs leave it out of the layer; one with a change below it, or a new mode,
/// stays.
#[test]
fn directories_that_change_nothing_are_left_out() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let base_step = |root: &Path| {
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "root").unwrap();
        fs::create_dir_all(root.join("home/app")).unwrap();
        fs::create_dir(root.join("tmp")).unwrap();
        set_mode(&root.join("tmp"), 0o1777);
        fs::create_dir(root.join("var")).unwrap();
        fs::create_dir(root.join("opt")).unwrap();
        fs::create_dir(root.join("srv")).unwrap();
    };
    let step = |root: &Path| {
        fs::write(root.join("etc/hosts"), "").unwrap();
        fs::remove_file(root.join("etc/hosts")).unwrap();
        fs::create_dir(root.join("home/app/sub")).unwrap();
        fs::remove_dir(root.join("home/app/sub")).unwrap();
        set_mtime(&root.join("tmp"), 5);
        fs::write(root.join("var/new"), "n").unwrap();
        set_mode(&root.join("opt"), 0o700);
        fs::create_dir(root.join("new-empty")).unwrap();
    };
    let modes = if overlay_available() {
        vec![SnapshotterMode::Copy, SnapshotterMode::Overlay]
    } else {
        vec![SnapshotterMode::Copy]
    };
    for mode in modes {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open_with_mode(tmp.path(), mode).unwrap();
        let base = build(&store, &[], "base", base_step);
        let diff = build(&store, std::slice::from_ref(&base), "step", step);
        let names: Vec<String> = describe(&diff).into_keys().collect();
        assert_eq!(
            names,
            ["new-empty", "opt", "var", "var/new"],
            "{mode:?}: {names:?}"
        );
    }
}

#[test]
fn discard_leaves_tmp_empty_in_both_modes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut modes = vec![SnapshotterMode::Copy];
    if overlay_available() {
        modes.push(SnapshotterMode::Overlay);
    }
    for mode in modes {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open_with_mode(tmp.path(), mode).unwrap();
        let base = build(&store, &[], "base", base_step);
        let prepared = store.prepare().unwrap();
        {
            let m = store
                .mount_rw(std::slice::from_ref(&base), &prepared)
                .unwrap();
            fs::write(m.path().join("scratch"), "x").unwrap();
            let view = store.mount_ro(std::slice::from_ref(&base)).unwrap();
            assert!(view.path().join("dir/sub/y").is_file());
        }
        store.discard(prepared).unwrap();
        assert!(
            tmp_is_empty(tmp.path()),
            "{mode:?}: discard leaves tmp/ empty"
        );
    }
}

/// A layer's symlink to a directory outside the root is replaced by a later layer's directory
/// of the same name, never written through, in a copied view.
#[test]
fn copied_views_never_follow_layer_symlinks() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let store =
        SnapshotStore::open_with_mode(&tmp.path().join("store"), SnapshotterMode::Copy).unwrap();

    let p = store.prepare().unwrap();
    symlink(&outside, p.diff_dir().join("esc")).unwrap();
    symlink(&outside, p.diff_dir().join("esc2")).unwrap();
    let l1 = SnapshotId("l1".into());
    store.commit(p, &l1).unwrap();

    let p = store.prepare().unwrap();
    fs::create_dir(p.diff_dir().join("esc")).unwrap();
    fs::write(p.diff_dir().join("esc/file"), "in").unwrap();
    mknod_char(&p.diff_dir().join("esc2"), 0, 0);
    let l2 = SnapshotId("l2".into());
    store.commit(p, &l2).unwrap();

    let layers = [store.diff_dir(&l1), store.diff_dir(&l2)];
    let view = store.mount_ro(&layers).unwrap();
    assert!(fs::symlink_metadata(view.path().join("esc"))
        .unwrap()
        .is_dir());
    assert!(fs::symlink_metadata(view.path().join("esc2")).is_err());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // A step that deletes through nothing and writes below a lower symlink's name.
    let p = store.prepare().unwrap();
    {
        let m = store.mount_rw(&layers[..1], &p).unwrap();
        fs::remove_file(m.path().join("esc")).unwrap();
        fs::create_dir(m.path().join("esc")).unwrap();
        fs::write(m.path().join("esc/new"), "x").unwrap();
    }
    let l3 = SnapshotId("l3".into());
    store.commit(p, &l3).unwrap();
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(store.diff_dir(&l3).join("esc/new").is_file());
}
