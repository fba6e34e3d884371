//! Uses the public API the way a build-context walker does: read a
//! `.dockerignore`, walk a tree top-down, skip excluded directories that
//! `may_include_below` says cannot re-include anything, and check that the
//! result equals filtering every path with `matches` (and, for the walker that
//! carries parent results, with the same pruning).

use kiln_patterns::{read_ignore_file, MatchInfo, PatternMatcher};
use std::collections::BTreeSet;
use std::time::Instant;

/// A synthetic context: every path of a small tree (directories included).
fn tree() -> Vec<String> {
    let mut paths = Vec::new();
    let top = [
        "src",
        "docs",
        "vendor",
        "node_modules",
        "secret",
        "build",
        "a",
    ];
    let mid = ["lib", "keep", "tmp", "x", "b"];
    let leaves = [
        "main.rs",
        "a.log",
        "keep.log",
        "z.tmp",
        "README.md",
        "x.go",
        "c",
    ];
    for t in top {
        paths.push(t.to_string());
        for m in mid {
            paths.push(format!("{t}/{m}"));
            for l in leaves {
                paths.push(format!("{t}/{m}/{l}"));
            }
        }
        for l in leaves {
            paths.push(format!("{t}/{l}"));
        }
    }
    for l in leaves {
        paths.push(l.to_string());
    }
    paths.sort();
    paths
}

fn children<'a>(paths: &'a [String], dir: &str) -> impl Iterator<Item = &'a String> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    paths.iter().filter(move |p| {
        p.strip_prefix(prefix.as_str())
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    })
}

fn is_dir(paths: &[String], p: &str) -> bool {
    children(paths, p).next().is_some()
}

/// Walks with `matches`, pruning excluded directories when allowed.
fn walk(pm: &PatternMatcher, paths: &[String], dir: &str, out: &mut BTreeSet<String>) {
    for p in children(paths, dir) {
        let excluded = pm.matches(p);
        if !excluded {
            out.insert(p.clone());
        }
        if is_dir(paths, p) && (!excluded || pm.may_include_below(p)) {
            walk(pm, paths, p, out);
        }
    }
}

/// Walks like BuildKit's fsutil: parent results are carried down.
fn walk_with_parent_results(
    pm: &PatternMatcher,
    paths: &[String],
    dir: &str,
    parent: &MatchInfo,
    out: &mut BTreeSet<String>,
) {
    for p in children(paths, dir) {
        let (excluded, info) = pm.matches_using_parent_results(p, parent);
        if !excluded {
            out.insert(p.clone());
        }
        if is_dir(paths, p) && (!excluded || pm.may_include_below(p)) {
            walk_with_parent_results(pm, paths, p, &info, out);
        }
    }
}

/// Every path, each decided on its own with parent results computed from the
/// root down (no pruning).
fn all_with_parent_results(pm: &PatternMatcher, paths: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in paths {
        let mut info = MatchInfo::default();
        for (i, _) in p.match_indices('/') {
            info = pm.matches_using_parent_results(&p[..i], &info).1;
        }
        if !pm.matches_using_parent_results(p, &info).0 {
            out.insert(p.clone());
        }
    }
    out
}

const IGNORE_FILES: &[&str] = &[
    "",
    "*.log\n!keep.log\n",
    "secret/\n**/*.tmp\n",
    "**\n!src\n",
    "**\n!**/*.go\nvendor\n",
    "node_modules\nbuild/**\n!build/keep/**\n",
    "*\n!a/b\n",
    "*/*\n!*/keep\n",
    "docs\n!docs/README.md\n!docs/keep/*.md\n",
    "**/x\n!**/x/c\n",
    "src/**/*.rs\n!src/lib/**\n",
    "# comment\n/a/\n!/a/b/c\n",
    "[a-s]*\n![d-f]*/k*\n",
];

#[test]
fn pruned_walk_equals_filtering() {
    let paths = tree();
    for text in IGNORE_FILES {
        let pm = match PatternMatcher::new(read_ignore_file(text)) {
            Ok(pm) => pm,
            Err(e) => panic!("{text:?}: {e}"),
        };

        let expected: BTreeSet<String> = paths.iter().filter(|p| !pm.matches(p)).cloned().collect();
        let mut walked = BTreeSet::new();
        walk(&pm, &paths, "", &mut walked);
        assert_eq!(walked, expected, "ignore file {text:?}");

        let expected = all_with_parent_results(&pm, &paths);
        let mut walked = BTreeSet::new();
        walk_with_parent_results(&pm, &paths, "", &MatchInfo::default(), &mut walked);
        assert_eq!(walked, expected, "parent results, ignore file {text:?}");
    }
}

#[test]
fn matching_is_fast_enough() {
    let text = "*.log\n!keep.log\nsecret/\n**/*.tmp\nnode_modules\n**/.git\nbuild/**\n\
                !build/keep/**\ndocs/**/*.md\n!docs/README.md\n*.[oa]\ntarget\n";
    let pm = match PatternMatcher::new(read_ignore_file(text)) {
        Ok(pm) => pm,
        Err(e) => panic!("{e}"),
    };
    let paths: Vec<String> = (0..20_000)
        .map(|i| format!("src/module{}/sub{}/file{i}.rs", i % 50, i % 7))
        .collect();
    let start = Instant::now();
    let excluded = paths.iter().filter(|p| pm.matches(p)).count();
    let elapsed = start.elapsed();
    assert_eq!(excluded, 0);
    // Generous bound (unoptimised test builds on a loaded machine); it
    // catches accidental exponential or quadratic behaviour.
    assert!(elapsed.as_secs() < 20, "20k paths took {elapsed:?}");
    eprintln!("20k paths x 12 patterns: {elapsed:?}");
}
