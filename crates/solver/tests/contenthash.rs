//! Copy selection digests against what `fileop::apply` really copies.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kiln_cache::StatCache;
use kiln_patterns::PatternMatcher;
use kiln_solver::cachekey::{tree_digest, tree_digest_cached};
use kiln_solver::contenthash::{copy_selection, copy_selection_digest, EntryKind};
use kiln_solver::fileop::{apply, FileOpOptions, SourceFs};
use kiln_solver::{CopyAction, FileAction};

const CONTEXT: &str = "the build context";

fn action(src: &[&str]) -> CopyAction {
    CopyAction {
        source: 0,
        src: src.iter().map(|s| s.to_string()).collect(),
        dest: "/out/".to_string(),
        owner: None,
        mode: None,
        extract_archives: false,
        exclude: Vec::new(),
        parents: false,
    }
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A context whose every file holds its own path, so a copy's output says what it read.
fn context(root: &Path) {
    for rel in [
        "Dockerfile",
        "a.txt",
        "b.txt",
        "src/a.txt",
        "src/sub/b.txt",
        "src/sub/c.md",
        "data/one.json",
        "data/two.json",
        "data/notes.md",
        "data/nested/three.json",
        "data/nested/deep/four.json",
    ] {
        write(root, rel, rel);
    }
    symlink("src", root.join("link")).unwrap();
    symlink("a.txt", root.join("rel-link")).unwrap();
    symlink("/data/one.json", root.join("src/abs-link")).unwrap();
}

fn local(root: &Path, ignore: &[&str]) -> SourceFs {
    let ignore = (!ignore.is_empty()).then(|| Arc::new(PatternMatcher::new(ignore).unwrap()));
    SourceFs::local(root, CONTEXT, ignore)
}

fn digest(a: &CopyAction, src: &SourceFs) -> String {
    copy_selection_digest(a, src, None).unwrap().hex()
}

/// Applies the copy into a fresh destination and lists it: path, type, mode, content or link
/// target (no times).
fn copied(a: &CopyAction, src: &SourceFs) -> Result<BTreeSet<String>, String> {
    let dest = tempfile::tempdir().unwrap();
    let src = src.clone();
    apply(
        &FileAction::Copy(a.clone()),
        dest.path(),
        &move |_| src.clone(),
        &FileOpOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let mut out = BTreeSet::new();
    list(dest.path(), dest.path(), &mut out);
    Ok(out)
}

fn list(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_symlink() {
            out.insert(format!(
                "{rel} -> {}",
                fs::read_link(&path).unwrap().display()
            ));
        } else if meta.is_dir() {
            out.insert(format!("{rel}/ {mode:o}"));
            list(root, &path, out);
        } else {
            let content = fs::read_to_string(&path).unwrap();
            out.insert(format!("{rel} {mode:o} = {content}"));
        }
    }
}

/// Contents of the regular files a copy wrote: the source paths it read (see [`context`]).
fn files_read(listing: &BTreeSet<String>) -> BTreeSet<String> {
    listing
        .iter()
        .filter_map(|l| l.split_once(" = ").map(|(_, c)| c.to_string()))
        .collect()
}

/// (src, --exclude, --parents, .dockerignore)
type Case = (
    &'static [&'static str],
    &'static [&'static str],
    bool,
    &'static [&'static str],
);

const CASES: &[Case] = &[
    (&["a.txt"], &[], false, &[]),
    (&["*.txt"], &[], false, &[]),
    (&["src"], &[], false, &[]),
    (&["src/", "b.txt"], &[], false, &[]),
    (&["data/*.json"], &[], false, &[]),
    (&["data/*/*.json"], &[], false, &[]),
    (&["d*"], &[], false, &[]),
    (&["nomatch*"], &[], false, &[]),
    (&["link"], &[], false, &[]),
    (&["link/sub"], &[], false, &[]),
    (&["rel-link"], &[], false, &[]),
    (&["[ab].txt", "?ata"], &[], false, &[]),
    (&["."], &[], false, &[]),
    (&["."], &["*.md", "data/nested"], false, &[]),
    (&["data"], &["**/*.json"], false, &[]),
    (
        &["."],
        &[],
        false,
        &["data/*.json", "!data/two.json", "*.md"],
    ),
    (&["."], &[], false, &["src", "!src/sub/c.md"]),
    (&["*"], &[], false, &["data", "Dockerfile"]),
    (&["src/sub/b.txt"], &[], true, &[]),
    (&["data/./**/*.json"], &[], true, &[]),
    (&["./data/nested"], &[], true, &[]),
    (&["data/./*/*.json"], &[], true, &["data/nested/deep"]),
];

fn case_action(case: &Case) -> (CopyAction, Vec<&'static str>) {
    let (src, exclude, parents, ignore) = *case;
    let mut a = action(src);
    a.exclude = exclude.iter().map(|s| s.to_string()).collect();
    a.parents = parents;
    (a, ignore.to_vec())
}

#[test]
fn selects_what_the_copy_reads() {
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    for case in CASES {
        let (a, ignore) = case_action(case);
        let src = local(ctx.path(), &ignore);
        let listing = copied(&a, &src).unwrap();
        let sel = copy_selection(&a, &src, None).unwrap();
        let selected: BTreeSet<String> = sel
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.path.display().to_string())
            .collect();
        assert_eq!(selected, files_read(&listing), "{case:?}");
    }
}

/// For every case and every change to the context: the digest changes exactly when the
/// copy's output does.
#[test]
fn digest_changes_exactly_when_the_output_does() {
    type Change = fn(&Path);
    let changes: &[(&str, Change)] = &[
        ("content a.txt", |r| {
            fs::write(r.join("a.txt"), "changed").unwrap()
        }),
        ("content src/sub/c.md", |r| {
            fs::write(r.join("src/sub/c.md"), "changed").unwrap()
        }),
        ("content data/two.json", |r| {
            fs::write(r.join("data/two.json"), "changed").unwrap()
        }),
        ("content deep/four.json", |r| {
            fs::write(r.join("data/nested/deep/four.json"), "changed").unwrap()
        }),
        ("content Dockerfile", |r| {
            fs::write(r.join("Dockerfile"), "FROM changed").unwrap()
        }),
        ("mode data/one.json", |r| {
            fs::set_permissions(r.join("data/one.json"), fs::Permissions::from_mode(0o755)).unwrap()
        }),
        ("mode src/sub", |r| {
            fs::set_permissions(r.join("src/sub"), fs::Permissions::from_mode(0o700)).unwrap()
        }),
        ("retarget rel-link", |r| {
            fs::remove_file(r.join("rel-link")).unwrap();
            symlink("b.txt", r.join("rel-link")).unwrap();
        }),
        ("retarget src/abs-link", |r| {
            fs::remove_file(r.join("src/abs-link")).unwrap();
            symlink("/data/two.json", r.join("src/abs-link")).unwrap();
        }),
        ("new file src/new.txt", |r| write(r, "src/new.txt", "new")),
        ("new file data/x.md", |r| write(r, "data/x.md", "new")),
        ("remove b.txt", |r| {
            fs::remove_file(r.join("b.txt")).unwrap()
        }),
        ("touch a.txt", |r| {
            let t = SystemTime::now() - Duration::from_secs(86400);
            File::options()
                .write(true)
                .open(r.join("a.txt"))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }),
    ];
    for case in CASES {
        let (a, ignore) = case_action(case);
        let base = tempfile::tempdir().unwrap();
        context(base.path());
        let src = local(base.path(), &ignore);
        let (before_key, before_out) = (digest(&a, &src), copied(&a, &src).unwrap());
        for (what, change) in changes {
            let ctx = tempfile::tempdir().unwrap();
            context(ctx.path());
            change(ctx.path());
            let src = local(ctx.path(), &ignore);
            let (Ok(out), Ok(key)) = (copied(&a, &src), copy_selection_digest(&a, &src, None))
            else {
                // Removing a named source fails both ways.
                assert!(
                    copied(&a, &src).is_err() && copy_selection_digest(&a, &src, None).is_err()
                );
                continue;
            };
            assert_eq!(
                out != before_out,
                key.hex() != before_key,
                "{case:?} after {what}: output changed: {}",
                out != before_out
            );
        }
    }
}

#[test]
fn location_and_mtimes_dont_count() {
    let (c1, c2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    context(c1.path());
    std::thread::sleep(Duration::from_millis(20));
    context(c2.path());
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    for rel in ["a.txt", "src/sub/b.txt", "src", "data/nested"] {
        File::open(c2.path().join(rel))
            .unwrap()
            .set_modified(old)
            .unwrap_or_else(|_| {
                File::options()
                    .write(true)
                    .open(c2.path().join(rel))
                    .unwrap()
                    .set_modified(old)
                    .unwrap()
            });
    }
    for case in CASES {
        let (a, ignore) = case_action(case);
        assert_eq!(
            digest(&a, &local(c1.path(), &ignore)),
            digest(&a, &local(c2.path(), &ignore)),
            "{case:?}"
        );
    }
    // Listing order doesn't count either: entries are sorted like the copy's.
    let sel = copy_selection(&action(&["."]), &local(c1.path(), &[]), None).unwrap();
    let paths: Vec<_> = sel.entries.iter().map(|e| e.path.clone()).collect();
    assert!(paths.windows(2).all(|w| w[0] < w[1]), "{paths:?}");
}

#[test]
fn ignored_and_excluded_files_dont_count() {
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let mut a = action(&["."]);
    a.exclude = vec!["**/*.md".into()];
    let src = local(ctx.path(), &["Dockerfile", "data/nested"]);
    let before = digest(&a, &src);
    fs::write(ctx.path().join("Dockerfile"), "FROM other").unwrap();
    fs::write(ctx.path().join("data/notes.md"), "other notes").unwrap();
    fs::write(ctx.path().join("data/nested/three.json"), "other").unwrap();
    assert_eq!(digest(&a, &src), before);
    fs::write(ctx.path().join("data/one.json"), "other").unwrap();
    assert_ne!(digest(&a, &src), before);
}

#[test]
fn missing_sources_fail_like_the_copy() {
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    for (src, ignore) in [
        (&["nope.txt"][..], &[][..]),
        (&["a.txt", "missing/"], &[]),
        (&["Dockerfile"], &["Dockerfile"]),
        (&["src/./nope"], &[]),
    ] {
        let mut a = action(src);
        a.parents = src[0].contains("/./");
        let s = local(ctx.path(), ignore);
        let want = copied(&a, &s).unwrap_err();
        let got = copy_selection_digest(&a, &s, None).unwrap_err().to_string();
        assert_eq!(got, want, "{src:?}");
    }
    // A wildcard that matches nothing copies nothing: not an error.
    assert!(copy_selection_digest(&action(&["*.nope"]), &local(ctx.path(), &[]), None).is_ok());
}

#[test]
fn owners_count_only_where_the_copy_keeps_them() {
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let a = action(&["src"]);
    let stage = SourceFs::snapshot(ctx.path(), "stage");
    let (local_before, stage_before) = (digest(&a, &local(ctx.path(), &[])), digest(&a, &stage));
    assert_ne!(local_before, stage_before);
    std::os::unix::fs::lchown(ctx.path().join("src/a.txt"), Some(1234), Some(5678)).unwrap();
    assert_eq!(digest(&a, &local(ctx.path(), &[])), local_before);
    assert_ne!(digest(&a, &stage), stage_before);
}

#[test]
fn hardlinks_are_part_of_the_selection() {
    let (c1, c2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for c in [&c1, &c2] {
        write(c.path(), "d/a", "same");
    }
    write(c1.path(), "d/b", "same");
    fs::hard_link(c2.path().join("d/a"), c2.path().join("d/b")).unwrap();
    let a = action(&["d"]);
    let (k1, k2) = (
        digest(&a, &local(c1.path(), &[])),
        digest(&a, &local(c2.path(), &[])),
    );
    assert_ne!(k1, k2, "the copy links d/b to d/a in one and not the other");
}

#[test]
fn the_stat_cache_saves_reads_but_not_the_key() {
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let cache = StatCache::in_memory(ctx.path()).with_racy_window(Duration::ZERO);
    let a = action(&["."]);
    let src = local(ctx.path(), &["Dockerfile"]);
    let plain = copy_selection_digest(&a, &src, None).unwrap();
    assert_eq!(
        copy_selection_digest(&a, &src, Some(&cache)).unwrap(),
        plain
    );
    let files = cache.stats().reads;
    assert_eq!(files, 10);
    assert_eq!(
        copy_selection_digest(&a, &src, Some(&cache)).unwrap(),
        plain
    );
    assert_eq!((cache.stats().reads, cache.stats().hits), (files, files));
    // A changed file is read again, and only it.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(ctx.path().join("a.txt"), "A!").unwrap();
    let changed = copy_selection_digest(&a, &src, Some(&cache)).unwrap();
    assert_ne!(changed, plain);
    assert_eq!(changed, copy_selection_digest(&a, &src, None).unwrap());
    assert_eq!(cache.stats().reads, files + 1);
    // tree_digest shares the cache (same paths relative to the context).
    let ignore = PatternMatcher::new(["Dockerfile"]).unwrap();
    let t = tree_digest_cached(ctx.path(), Some(&ignore), Some(&cache)).unwrap();
    assert_eq!(t, tree_digest(ctx.path(), Some(&ignore)).unwrap());
    assert_eq!(cache.stats().reads, files + 1);
}

#[test]
fn a_saved_stat_cache_serves_the_next_process() {
    let (state, ctx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    context(ctx.path());
    // Files older than the racy window, so the entries are recorded.
    std::thread::sleep(Duration::from_millis(1100));
    let a = action(&["src", "data"]);
    let src = local(ctx.path(), &[]);
    let first = StatCache::open(state.path(), ctx.path());
    let key = copy_selection_digest(&a, &src, Some(&first)).unwrap();
    assert_eq!(first.stats().reads, 8);
    first.save().unwrap();
    let second = StatCache::open(state.path(), ctx.path());
    assert_eq!(copy_selection_digest(&a, &src, Some(&second)).unwrap(), key);
    assert_eq!((second.stats().reads, second.stats().hits), (0, 8));
}
