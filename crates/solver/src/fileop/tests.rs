//! Tests of the file actions against temporary directories standing in for the source and
//! destination roots.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use kiln_patterns::PatternMatcher;
use tempfile::TempDir;

use super::*;
use crate::op::{Chown, CopyAction, FileAction, UserRef};

const CONTEXT: &str = "the build context";

/// Source or destination paths of a test case.
type Paths<'a> = &'a [&'a str];
/// The expected destination tree, as [`tree`] lists it.
type Expected<'a> = &'a [(&'a str, &'a str)];
/// A tar entry: name, type, link target, content.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

/// A source root and a destination root.
struct Fx {
    src: TempDir,
    dest: TempDir,
}

impl Fx {
    fn new() -> Self {
        Fx {
            src: tempfile::tempdir().unwrap(),
            dest: tempfile::tempdir().unwrap(),
        }
    }

    /// The standard context: files, a directory tree, JSON data.
    fn context() -> Self {
        let fx = Fx::new();
        fx.file("a.txt", "A");
        fx.file("b.txt", "B");
        fx.file("src/a.txt", "src-a");
        fx.file("src/sub/b.txt", "src-b");
        fx.file("data/one.json", "1");
        fx.file("data/two.json", "2");
        fx.file("data/notes.md", "n");
        fx.file("data/nested/three.json", "3");
        fx
    }

    fn file(&self, rel: &str, content: &str) {
        write(self.src.path(), rel, content);
    }

    fn dest_file(&self, rel: &str, content: &str) {
        write(self.dest.path(), rel, content);
    }

    fn source(&self) -> SourceFs {
        SourceFs::local(self.src.path(), CONTEXT, None)
    }

    fn copy(&self, action: CopyAction) -> Result<(), FileOpError> {
        self.copy_from(action, self.source())
    }

    fn copy_from(&self, action: CopyAction, source: SourceFs) -> Result<(), FileOpError> {
        apply(
            &FileAction::Copy(action),
            self.dest.path(),
            &move |_| source.clone(),
            &FileOpOptions::default(),
        )
    }

    fn apply(&self, action: FileAction) -> Result<(), FileOpError> {
        let source = self.source();
        apply(
            &action,
            self.dest.path(),
            &move |_| source.clone(),
            &FileOpOptions::default(),
        )
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.dest.path().join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}; dest holds {:?}", self.tree()))
    }

    fn meta(&self, rel: &str) -> fs::Metadata {
        fs::symlink_metadata(self.dest.path().join(rel)).unwrap()
    }

    fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.dest.path().join(rel)).is_ok()
    }

    fn tree(&self) -> BTreeMap<String, String> {
        tree(self.dest.path())
    }
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Every path below `root`: files with their content, directories with `/`, links with `->`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(root, &path, out);
            } else {
                out.insert(rel, fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn copy(src: &[&str], dest: &str) -> CopyAction {
    CopyAction {
        source: 0,
        src: src.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        owner: None,
        mode: None,
        extract_archives: false,
        exclude: Vec::new(),
        parents: false,
    }
}

fn add(src: &[&str], dest: &str) -> CopyAction {
    CopyAction {
        extract_archives: true,
        ..copy(src, dest)
    }
}

fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn directory_contents_and_file_destinations() {
    // (sources, destination, prepared destination files, expected destination tree)
    let cases: &[(Paths, &str, Paths, Expected)] = &[
        (
            &["src/"],
            "/dst1/",
            &[],
            &[
                ("dst1/", ""),
                ("dst1/a.txt", "src-a"),
                ("dst1/sub/", ""),
                ("dst1/sub/b.txt", "src-b"),
            ],
        ),
        (
            &["src"],
            "/dst2",
            &[],
            &[
                ("dst2/", ""),
                ("dst2/a.txt", "src-a"),
                ("dst2/sub/", ""),
                ("dst2/sub/b.txt", "src-b"),
            ],
        ),
        (&["a.txt"], "/f/", &[], &[("f/", ""), ("f/a.txt", "A")]),
        (&["a.txt"], "/g", &[], &[("g", "A")]),
        (
            &["./a.txt"],
            "/deep/er/g",
            &[],
            &[("deep/", ""), ("deep/er/", ""), ("deep/er/g", "A")],
        ),
        (
            &["a.txt"],
            "/existing",
            &["existing/old"],
            &[
                ("existing/", ""),
                ("existing/old", "old"),
                ("existing/a.txt", "A"),
            ],
        ),
        (&["a.txt"], "/over", &["over"], &[("over", "A")]),
        (
            &["a.txt", "b.txt"],
            "/multi/",
            &[],
            &[("multi/", ""), ("multi/a.txt", "A"), ("multi/b.txt", "B")],
        ),
        (
            &["a.txt", "b.txt"],
            "/noslash",
            &[],
            &[
                ("noslash/", ""),
                ("noslash/a.txt", "A"),
                ("noslash/b.txt", "B"),
            ],
        ),
        (
            &["src/sub"],
            "/existing",
            &["existing/old"],
            &[
                ("existing/", ""),
                ("existing/old", "old"),
                ("existing/b.txt", "src-b"),
            ],
        ),
        (
            &["/a.txt"],
            "/dot/.",
            &[],
            &[("dot/", ""), ("dot/a.txt", "A")],
        ),
    ];
    for (src, dest, prepared, want) in cases {
        let fx = Fx::context();
        for p in *prepared {
            fx.dest_file(p, "old");
        }
        fx.copy(copy(src, dest)).unwrap();
        assert_eq!(fx.tree(), files(want), "COPY {src:?} {dest}");
    }
}

#[test]
fn copying_the_whole_context_merges_into_root() {
    let fx = Fx::context();
    fx.dest_file("etc/os-release", "debian");
    fx.copy(copy(&["."], "/")).unwrap();
    assert_eq!(fx.read("etc/os-release"), "debian");
    assert_eq!(fx.read("src/sub/b.txt"), "src-b");
    assert_eq!(fx.read("a.txt"), "A");
}

#[test]
fn wildcards() {
    let cases: &[(Paths, &str, Expected)] = &[
        (
            &["data/*.json"],
            "/jsons/",
            &[
                ("jsons/", ""),
                ("jsons/one.json", "1"),
                ("jsons/two.json", "2"),
            ],
        ),
        (
            &["?.txt"],
            "/q/",
            &[("q/", ""), ("q/a.txt", "A"), ("q/b.txt", "B")],
        ),
        (&["[a].txt"], "/c/", &[("c/", ""), ("c/a.txt", "A")]),
        // A matching directory has its contents copied.
        (
            &["s*"],
            "/s/",
            &[
                ("s/", ""),
                ("s/a.txt", "src-a"),
                ("s/sub/", ""),
                ("s/sub/b.txt", "src-b"),
            ],
        ),
        (
            &["*/*.json"],
            "/j/",
            &[("j/", ""), ("j/one.json", "1"), ("j/two.json", "2")],
        ),
        // Several matches make the destination a directory.
        (
            &["*.txt"],
            "/several",
            &[
                ("several/", ""),
                ("several/a.txt", "A"),
                ("several/b.txt", "B"),
            ],
        ),
        // Matching nothing is not an error (BuildKit's AllowEmptyWildcard) and creates nothing.
        (&["*.nothere"], "/none/", &[]),
        (
            &["a.txt", "*.nothere"],
            "/some/",
            &[("some/", ""), ("some/a.txt", "A")],
        ),
    ];
    for (src, dest, want) in cases {
        let fx = Fx::context();
        fx.copy(copy(src, dest)).unwrap();
        assert_eq!(fx.tree(), files(want), "COPY {src:?} {dest}");
    }
}

#[test]
fn wildcard_below_a_missing_directory_is_an_error() {
    let fx = Fx::context();
    let err = fx.copy(copy(&["nodir/*.txt"], "/x/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"nodir/*.txt\": not found in the build context"
    );
}

#[test]
fn malformed_wildcard_is_an_error() {
    let fx = Fx::context();
    let err = fx.copy(copy(&["[a-.txt"], "/x/")).unwrap_err();
    assert!(err.to_string().contains("[a-.txt"), "{err}");
}

#[test]
fn missing_sources_are_errors_named_as_written() {
    let fx = Fx::context();
    for src in [
        "nothere.txt",
        "../../../../etc/passwd",
        "/src/nothere",
        "a.txt/inside",
    ] {
        let err = fx.copy(copy(&["a.txt", src], "/x/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("\"{src}\": not found in the build context"),
            "{src}"
        );
    }
    // Nothing was written before the error.
    assert!(fx.tree().is_empty());
}

#[test]
fn dotdot_and_absolute_symlinks_resolve_inside_the_source_root() {
    let fx = Fx::context();
    fx.file("etc/passwd", "context passwd");
    symlink("/etc/passwd", fx.src.path().join("stolen")).unwrap();
    symlink("../../../../../../etc", fx.src.path().join("src/up")).unwrap();
    fx.copy(copy(&["../../../../etc/passwd"], "/p1")).unwrap();
    fx.copy(copy(&["stolen"], "/p2")).unwrap();
    fx.copy(copy(&["src/up/passwd"], "/p3")).unwrap();
    for p in ["p1", "p2", "p3"] {
        assert_eq!(fx.read(p), "context passwd", "{p}");
    }
}

#[test]
fn source_symlinks_are_followed_and_inner_symlinks_kept() {
    let fx = Fx::context();
    symlink("src", fx.src.path().join("linkdir")).unwrap();
    symlink("/a.txt", fx.src.path().join("linkfile")).unwrap();
    symlink("../a.txt", fx.src.path().join("src/rel")).unwrap();
    symlink("/etc/shadow", fx.src.path().join("src/abs")).unwrap();
    symlink("nowhere", fx.src.path().join("src/dangling")).unwrap();
    fx.copy(copy(&["linkdir"], "/d/")).unwrap();
    fx.copy(copy(&["linkfile"], "/f/")).unwrap();
    assert_eq!(fx.read("d/a.txt"), "src-a");
    assert_eq!(fx.tree()["d/rel"], "-> ../a.txt");
    assert_eq!(fx.tree()["d/abs"], "-> /etc/shadow");
    assert_eq!(fx.tree()["d/dangling"], "-> nowhere");
    // The link is followed and the copy takes the link's name.
    assert!(fx.meta("f/linkfile").is_file());
    assert_eq!(fx.read("f/linkfile"), "A");
    // A dangling source link names nothing.
    let err = fx.copy(copy(&["src/dangling"], "/x")).unwrap_err();
    assert!(matches!(err, FileOpError::SourceNotFound { .. }), "{err}");
}

#[test]
fn destination_symlinks_resolve_inside_the_destination_root() {
    let fx = Fx::context();
    fs::create_dir_all(fx.dest.path().join("srv/app")).unwrap();
    symlink("/srv/app", fx.dest.path().join("app")).unwrap();
    symlink(
        "../../../../../tmp/kiln-escape",
        fx.dest.path().join("escape"),
    )
    .unwrap();
    fx.copy(copy(&["a.txt"], "/app/")).unwrap();
    fx.copy(copy(&["src"], "/app/src")).unwrap();
    fx.copy(copy(&["b.txt"], "/escape/")).unwrap();
    fx.copy(copy(&["a.txt"], "/../../../../tmp/kiln-dotdot"))
        .unwrap();
    assert_eq!(fx.read("tmp/kiln-dotdot"), "A");
    assert!(!Path::new("/tmp/kiln-dotdot").exists());
    assert_eq!(fx.read("srv/app/a.txt"), "A");
    assert_eq!(fx.read("srv/app/src/sub/b.txt"), "src-b");
    assert_eq!(fx.read("tmp/kiln-escape/b.txt"), "B");
    assert!(!Path::new("/tmp/kiln-escape").exists());
}

#[test]
fn symlink_in_a_merged_destination_is_replaced_not_followed() {
    let fx = Fx::context();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(fx.dest.path().join("dst")).unwrap();
    symlink(
        outside.path().join("a.txt"),
        fx.dest.path().join("dst/a.txt"),
    )
    .unwrap();
    symlink(outside.path(), fx.dest.path().join("dst/sub")).unwrap();
    fx.copy(copy(&["src/a.txt"], "/dst/")).unwrap();
    assert!(fx.meta("dst/a.txt").is_file());
    assert!(!outside.path().join("a.txt").exists());
    let err = fx.copy(copy(&["src/"], "/dst/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"/dst/sub\": cannot copy a directory over a file"
    );
    assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
}

#[test]
fn conflicts_between_files_and_directories() {
    let fx = Fx::context();
    fx.dest_file("x/a.txt/keep", "k");
    let err = fx.copy(copy(&["a.txt"], "/x/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"/x/a.txt\": cannot copy a file over a directory"
    );
    fx.dest_file("file", "f");
    let err = fx.copy(copy(&["a.txt"], "/file/sub/")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to create directory \"/file\""),
        "{err}"
    );
}

fn passwd_fixture() -> Fx {
    let fx = Fx::context();
    fx.dest_file(
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    );
    fx.dest_file("etc/group", "root:x:0:\nstaff:x:50:\napp:x:1001:\n");
    fx
}

#[test]
fn chown_applies_to_copied_and_created_paths() {
    let cases = [
        (UserRef::Id(1234), None, (1234, 1234)),
        (UserRef::Id(1234), Some(UserRef::Id(99)), (1234, 99)),
        (UserRef::Name("app".into()), None, (1000, 1001)),
        (
            UserRef::Name("app".into()),
            Some(UserRef::Name("staff".into())),
            (1000, 50),
        ),
    ];
    for (user, group, (uid, gid)) in cases {
        let fx = passwd_fixture();
        let action = CopyAction {
            owner: Some(Chown { user, group }),
            ..copy(&["src"], "/home/app/src/")
        };
        fx.copy(action).unwrap();
        for p in [
            "home",
            "home/app",
            "home/app/src",
            "home/app/src/a.txt",
            "home/app/src/sub",
            "home/app/src/sub/b.txt",
        ] {
            let m = fx.meta(p);
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{p}");
        }
    }
}

#[test]
fn unknown_user_is_an_error() {
    let fx = passwd_fixture();
    let action = CopyAction {
        owner: Some(Chown {
            user: UserRef::Name("ghost".into()),
            group: None,
        }),
        ..copy(&["a.txt"], "/x")
    };
    let err = fx.copy(action).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
    assert!(!fx.exists("x"));
}

#[test]
fn ownership_without_chown_depends_on_the_source() {
    let fx = Fx::context();
    std::os::unix::fs::lchown(fx.src.path().join("src/a.txt"), Some(1234), Some(5678)).unwrap();
    fx.copy(copy(&["src"], "/ctx")).unwrap();
    let m = fx.meta("ctx/a.txt");
    assert_eq!((m.uid(), m.gid()), (0, 0));
    fx.copy_from(
        copy(&["src"], "/stage"),
        SourceFs::snapshot(fx.src.path(), "stage builder"),
    )
    .unwrap();
    let m = fx.meta("stage/a.txt");
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
}

#[test]
fn chmod_applies_to_every_copied_file_and_directory() {
    let fx = Fx::context();
    let action = CopyAction {
        mode: Some(0o640),
        ..copy(&["src"], "/m")
    };
    fx.copy(action).unwrap();
    for p in ["m/a.txt", "m/sub", "m/sub/b.txt"] {
        assert_eq!(fx.meta(p).mode() & 0o7777, 0o640, "{p}");
    }
    // The destination directory is created like any missing parent (BuildKit).
    assert_eq!(fx.meta("m").mode() & 0o7777, 0o755);
}

#[test]
fn modes_and_times_are_kept_without_chmod() {
    let fx = Fx::context();
    fx.file("bin/tool", "#!/bin/sh");
    let src = fx.src.path();
    fs::set_permissions(src.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(src.join("src/a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(src.join("src/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for p in ["bin/tool", "src/sub", "src"] {
        metadata::set_times(&src.join(p), metadata::Times::at(old)).unwrap();
    }
    fx.copy(copy(&["bin/tool"], "/usr/local/bin/")).unwrap();
    fx.copy(copy(&["src"], "/s")).unwrap();
    assert_eq!(fx.meta("usr/local/bin/tool").mode() & 0o7777, 0o4755);
    assert_eq!(fx.meta("s/a.txt").mode() & 0o7777, 0o600);
    assert_eq!(fx.meta("s/sub").mode() & 0o7777, 0o700);
    assert_eq!(fx.meta("usr/local/bin").mode() & 0o7777, 0o755);
    assert_eq!(fx.meta("usr/local/bin/tool").mtime(), 1_000_000_000);
    assert_eq!(fx.meta("s/sub").mtime(), 1_000_000_000);
}

#[test]
fn timestamp_option_overrides_times() {
    let fx = Fx::context();
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let source = fx.source();
    apply(
        &FileAction::Copy(copy(&["src"], "/new/s")),
        fx.dest.path(),
        &move |_| source.clone(),
        &FileOpOptions {
            timestamp: Some(t),
            ..FileOpOptions::default()
        },
    )
    .unwrap();
    // Directories that receive files afterwards get the time of that write, as in BuildKit.
    for p in ["new/s/a.txt", "new/s/sub", "new/s/sub/b.txt"] {
        assert_eq!(fx.meta(p).mtime(), 1_700_000_000, "{p}");
    }
}

#[test]
fn hardlinks_stay_linked() {
    let fx = Fx::context();
    fs::hard_link(
        fx.src.path().join("src/a.txt"),
        fx.src.path().join("src/sub/a-link"),
    )
    .unwrap();
    fx.copy(copy(&["src"], "/h")).unwrap();
    assert_eq!(fx.meta("h/a.txt").ino(), fx.meta("h/sub/a-link").ino());
}

#[test]
fn special_files() {
    let fx = Fx::context();
    nix::unistd::mkfifo(
        &fx.src.path().join("src/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(fx.src.path().join("src/sock")).unwrap();
    fx.copy(copy(&["src"], "/sp")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fx.meta("sp/fifo").file_type()
    ));
    assert_eq!(fx.meta("sp/fifo").mode() & 0o7777, 0o640);
    assert!(!fx.exists("sp/sock"));
}

#[test]
fn exclude_patterns_are_relative_to_each_source() {
    let cases: &[(Paths, Paths, &str, Expected)] = &[
        (
            &["data/"],
            &["*.md"],
            "/d/",
            &[
                ("d/", ""),
                ("d/one.json", "1"),
                ("d/two.json", "2"),
                ("d/nested/", ""),
                ("d/nested/three.json", "3"),
            ],
        ),
        (
            &["data"],
            &["nested", "two.json"],
            "/d/",
            &[("d/", ""), ("d/one.json", "1"), ("d/notes.md", "n")],
        ),
        // An exception re-includes below an excluded directory.
        (
            &["data"],
            &["nested", "!nested/three.json", "*.json"],
            "/d/",
            &[
                ("d/", ""),
                ("d/notes.md", "n"),
                ("d/nested/", ""),
                ("d/nested/three.json", "3"),
            ],
        ),
        // Each wildcard match is its own source, matched from its own top (BuildKit's
        // dfexcludepatterns test); the matched paths themselves are not excluded (fsutil).
        (
            &["*"],
            &["*.json", "*.md", "*.txt"],
            "/w/",
            &[
                ("w/", ""),
                ("w/a.txt", "A"),
                ("w/b.txt", "B"),
                ("w/nested/", ""),
                ("w/nested/three.json", "3"),
                ("w/sub/", ""),
                ("w/sub/b.txt", "src-b"),
            ],
        ),
        (
            &["."],
            &["*/*.json", "src"],
            "/all/",
            &[
                ("all/", ""),
                ("all/a.txt", "A"),
                ("all/b.txt", "B"),
                ("all/data/", ""),
                ("all/data/notes.md", "n"),
                ("all/data/nested/", ""),
                ("all/data/nested/three.json", "3"),
            ],
        ),
        // The source itself is never excluded.
        (&["a.txt"], &["*.txt"], "/one", &[("one", "A")]),
    ];
    for (src, exclude, dest, want) in cases {
        let fx = Fx::context();
        let action = CopyAction {
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..copy(src, dest)
        };
        fx.copy(action).unwrap();
        assert_eq!(
            fx.tree(),
            files(want),
            "COPY --exclude={exclude:?} {src:?} {dest}"
        );
    }
}

#[test]
fn parents_keep_the_source_path() {
    let cases: &[(Paths, &str, Expected)] = &[
        (
            &["src/sub/b.txt"],
            "/out/",
            &[
                ("out/", ""),
                ("out/src/", ""),
                ("out/src/sub/", ""),
                ("out/src/sub/b.txt", "src-b"),
            ],
        ),
        (
            &["./src/./sub/b.txt"],
            "/out/",
            &[("out/", ""), ("out/sub/", ""), ("out/sub/b.txt", "src-b")],
        ),
        (
            &["data/*.json", "a.txt"],
            "/out/",
            &[
                ("out/", ""),
                ("out/a.txt", "A"),
                ("out/data/", ""),
                ("out/data/one.json", "1"),
                ("out/data/two.json", "2"),
            ],
        ),
        (
            &["*/sub"],
            "/out/",
            &[
                ("out/", ""),
                ("out/src/", ""),
                ("out/src/sub/", ""),
                ("out/src/sub/b.txt", "src-b"),
            ],
        ),
        (
            &["data/nested"],
            "/out/",
            &[
                ("out/", ""),
                ("out/data/", ""),
                ("out/data/nested/", ""),
                ("out/data/nested/three.json", "3"),
            ],
        ),
    ];
    for (src, dest, want) in cases {
        let fx = Fx::context();
        let action = CopyAction {
            parents: true,
            ..copy(src, dest)
        };
        fx.copy(action).unwrap();
        assert_eq!(fx.tree(), files(want), "COPY --parents {src:?} {dest}");
    }
    let fx = Fx::context();
    let err = fx
        .copy(CopyAction {
            parents: true,
            ..copy(&["src/nothere.txt"], "/out/")
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"src/nothere.txt\": not found in the build context"
    );
}

fn ignoring(fx: &Fx, patterns: &[&str]) -> SourceFs {
    let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
    let matcher = PatternMatcher::new(&patterns).unwrap();
    SourceFs::local(fx.src.path(), CONTEXT, Some(Arc::new(matcher)))
}

#[test]
fn ignored_paths_are_absent() {
    let fx = Fx::context();
    fx.file("secret.txt", "s");
    fx.file("logs/keep.log", "k");
    fx.file("logs/other.log", "o");
    fx.file("logs/deep/x.log", "x");
    symlink("secret.txt", fx.src.path().join("to-secret")).unwrap();
    let source = ignoring(
        &fx,
        &["secret.txt", "logs", "!logs/keep.log", "data/*.json"],
    );
    fx.copy_from(copy(&["."], "/ctx/"), source.clone()).unwrap();
    let tree = fx.tree();
    assert!(!tree.contains_key("ctx/secret.txt"));
    assert_eq!(tree["ctx/logs/keep.log"], "k");
    assert!(!tree.contains_key("ctx/logs/other.log"));
    assert!(!tree.contains_key("ctx/logs/deep/"));
    assert!(!tree.contains_key("ctx/data/one.json"));
    assert_eq!(tree["ctx/data/notes.md"], "n");
    assert_eq!(tree["ctx/data/nested/three.json"], "3");

    for src in ["secret.txt", "to-secret", "logs/other.log"] {
        let err = fx
            .copy_from(copy(&[src], "/x"), source.clone())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("\"{src}\": not found in the build context: it is excluded by .dockerignore")
        );
    }
    fx.copy_from(copy(&["data/*"], "/wild/"), source.clone())
        .unwrap();
    fx.copy_from(copy(&["logs/keep.log"], "/keep"), source)
        .unwrap();
    assert_eq!(fx.read("keep"), "k");
    let tree = fx.tree();
    assert!(tree.contains_key("wild/notes.md"));
    assert!(!tree.contains_key("wild/one.json"));
}

// Archives ----------------------------------------------------------------------------------

/// A small tar: a directory, a file owned by 1000:1000 with mode 0750, a symlink.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(1_600_000_000);
    h.set_size(0);
    b.append_data(&mut h, "pkg/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o750);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1_600_000_000);
    h.set_size(5);
    b.append_data(&mut h, "pkg/run.sh", &b"hello"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "pkg/link", "run.sh").unwrap();
    b.into_inner().unwrap()
}

fn compressed(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "tar" => data.to_vec(),
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(data, 3).unwrap(),
        other => panic!("{other}"),
    }
}

#[test]
fn add_extracts_archives_by_content() {
    for kind in ["tar", "gz", "bz2", "xz", "zst"] {
        let fx = Fx::context();
        // The name says nothing: detection is by magic bytes.
        fs::write(
            fx.src.path().join("archive.bin"),
            compressed(kind, &sample_tar()),
        )
        .unwrap();
        fx.copy(add(&["archive.bin"], "/opt")).unwrap();
        assert_eq!(fx.read("opt/pkg/run.sh"), "hello", "{kind}");
        let m = fx.meta("opt/pkg/run.sh");
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1000, 1000, 0o750),
            "{kind}"
        );
        assert_eq!(m.mtime(), 1_600_000_000, "{kind}");
        assert_eq!(fx.meta("opt/pkg").mtime(), 1_600_000_000, "{kind}");
        assert_eq!(fx.tree()["opt/pkg/link"], "-> run.sh", "{kind}");
    }
}

#[test]
fn add_with_chown_overrides_archive_owners() {
    let fx = Fx::context();
    fs::write(fx.src.path().join("a.tgz"), compressed("gz", &sample_tar())).unwrap();
    let action = CopyAction {
        owner: Some(Chown {
            user: UserRef::Id(7),
            group: None,
        }),
        ..add(&["*.tgz"], "/opt/")
    };
    fx.copy(action).unwrap();
    let m = fx.meta("opt/pkg/run.sh");
    assert_eq!((m.uid(), m.gid()), (7, 7));
}

#[test]
fn add_copies_non_archives_as_they_are() {
    let fx = Fx::context();
    fx.file("fake.tar.gz", "not an archive at all");
    // Gzip of something that is not a tar stays compressed.
    fs::write(
        fx.src.path().join("notes.gz"),
        compressed("gz", b"plain text"),
    )
    .unwrap();
    fx.copy(add(&["fake.tar.gz", "notes.gz", "src"], "/in/"))
        .unwrap();
    assert_eq!(fx.read("in/fake.tar.gz"), "not an archive at all");
    assert_eq!(
        fs::read(fx.dest.path().join("in/notes.gz")).unwrap(),
        compressed("gz", b"plain text")
    );
    assert_eq!(fx.read("in/a.txt"), "src-a");
    // COPY never extracts.
    fs::write(fx.src.path().join("real.tar"), sample_tar()).unwrap();
    fx.copy(copy(&["real.tar"], "/c/")).unwrap();
    assert!(fx.meta("c/real.tar").is_file());
}

#[test]
fn truncated_archive_is_an_error() {
    let fx = Fx::context();
    let mut data = compressed("gz", &sample_tar());
    data.truncate(data.len() - 20);
    fs::write(fx.src.path().join("t.tar.gz"), &data).unwrap();
    let mut plain = sample_tar();
    plain.truncate(512 + 2);
    fs::write(fx.src.path().join("t.tar"), &plain).unwrap();
    for name in ["t.tar.gz", "t.tar"] {
        let err = fx.copy(add(&[name], "/t/")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("\"{name}\": cannot extract archive")),
            "{err}"
        );
    }
}

/// A tar built entry by entry, bypassing the tar crate's own path checks.
fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_archives_stay_inside() {
    use tar::EntryType::{Link, Regular, Symlink};
    let parent = tempfile::tempdir().unwrap();
    let fx = Fx {
        src: tempfile::tempdir().unwrap(),
        dest: tempfile::tempdir_in(parent.path()).unwrap(),
    };
    // (archive entries, expected outcome: Ok(paths that exist under /x) or Err)
    let cases: Vec<(Vec<RawEntry>, Result<Paths, ()>)> = vec![
        (vec![("/abs", Regular, "", b"a")], Ok(&["x/abs"])),
        (
            vec![
                ("link", Symlink, "/etc", b""),
                ("link/passwd", Regular, "", b"p"),
            ],
            Ok(&["x/etc/passwd", "x/link"]),
        ),
        (vec![("../evil", Regular, "", b"e")], Err(())),
        (vec![("a/../../evil", Regular, "", b"e")], Err(())),
        (
            vec![
                ("up", Symlink, "../..", b""),
                ("up/evil", Regular, "", b"e"),
            ],
            Err(()),
        ),
        // Re-rooted at the extraction directory, where there is no etc/passwd.
        (vec![("hard", Link, "/etc/passwd", b"")], Err(())),
        (vec![("hard", Link, "../outside", b"")], Err(())),
    ];
    for (entries, want) in cases {
        let dest = fx.dest.path();
        let _ = fs::remove_dir_all(dest.join("x"));
        fs::write(fx.src.path().join("h.tar"), raw_tar(&entries)).unwrap();
        let result = fx.copy(add(&["h.tar"], "/x/"));
        match want {
            Ok(paths) => {
                result.unwrap();
                for p in paths {
                    assert!(fx.exists(p), "{p} in {:?}", fx.tree());
                }
            }
            Err(()) => {
                let err = result.unwrap_err();
                assert!(
                    matches!(
                        err,
                        FileOpError::ArchiveEntryOutside { .. } | FileOpError::Archive { .. }
                    ),
                    "{entries:?}: {err}"
                );
            }
        }
        assert!(!parent.path().join("evil").exists());
        assert!(!parent.path().join("outside").exists());
        assert!(!dest.join("evil").exists());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1);
    }
}

#[test]
fn archive_errors_name_the_archive_and_the_entry() {
    let fx = Fx::context();
    let tar = raw_tar(&[("../evil", tar::EntryType::Regular, "", b"e")]);
    fs::write(fx.src.path().join("h.tar"), tar).unwrap();
    let err = fx.copy(add(&["h.tar"], "/x/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"h.tar\": archive entry \"../evil\" points outside the destination directory"
    );
}

// Mkdir and Mkfile --------------------------------------------------------------------------

#[test]
fn mkdir_creates_workdirs() {
    let fx = passwd_fixture();
    fx.apply(FileAction::Mkdir {
        path: "/work/dir".into(),
        mode: 0o750,
        make_parents: true,
        owner: Some(Chown {
            user: UserRef::Name("app".into()),
            group: None,
        }),
    })
    .unwrap();
    for p in ["work", "work/dir"] {
        let m = fx.meta(p);
        assert!(m.is_dir());
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o750, 1000, 1001),
            "{p}"
        );
    }
    // Existing directories and files are left alone without make_parents.
    fx.apply(FileAction::Mkdir {
        path: "/work".into(),
        mode: 0o700,
        make_parents: false,
        owner: None,
    })
    .unwrap();
    assert_eq!(fx.meta("work").mode() & 0o7777, 0o750);
    let err = fx
        .apply(FileAction::Mkdir {
            path: "/missing/dir".into(),
            mode: 0o755,
            make_parents: false,
            owner: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("\"/missing/dir\""), "{err}");
    // Through a symlink, inside the root.
    symlink("/work", fx.dest.path().join("w")).unwrap();
    fx.apply(FileAction::Mkdir {
        path: "/w/../w/sub".into(),
        mode: 0o755,
        make_parents: true,
        owner: None,
    })
    .unwrap();
    assert!(fx.meta("work/sub").is_dir());
}

#[test]
fn mkfile_writes_heredocs() {
    let fx = passwd_fixture();
    fx.apply(FileAction::Mkfile {
        path: "/app/conf/run.sh".into(),
        mode: 0o755,
        data: b"#!/bin/sh\necho hi\n".to_vec(),
        owner: Some(Chown {
            user: UserRef::Id(1000),
            group: Some(UserRef::Name("staff".into())),
        }),
    })
    .unwrap();
    assert_eq!(fx.read("app/conf/run.sh"), "#!/bin/sh\necho hi\n");
    let m = fx.meta("app/conf/run.sh");
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 1000, 50));
    assert_eq!(fx.meta("app/conf").mode() & 0o7777, 0o755);
    fx.apply(FileAction::Mkfile {
        path: "/app/conf/run.sh".into(),
        mode: 0o644,
        data: b"short".to_vec(),
        owner: None,
    })
    .unwrap();
    assert_eq!(fx.read("app/conf/run.sh"), "short");
    assert_eq!(fx.meta("app/conf/run.sh").mode() & 0o7777, 0o644);
    let err = fx
        .apply(FileAction::Mkfile {
            path: "/app".into(),
            mode: 0o644,
            data: Vec::new(),
            owner: None,
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"/app\": cannot write a file over a directory"
    );
}
