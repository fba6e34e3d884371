//! Fuzzes kiln-patterns: `.dockerignore` parsing, matcher construction,
//! matching, walker pruning, and Go's `filepath.Match`.
//!
//! Input: `<ignore-file text> NUL <path>` (without a NUL the last line is the
//! path). Besides "nothing panics", it checks that pruning is safe: when a
//! directory is excluded and `may_include_below` says nothing below it can
//! come back, the path below it must be excluded too.
#![no_main]

use kiln_patterns::{
    clean, has_wildcards, path_match, read_ignore_file, MatchInfo, PatternMatcher,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, path) = match input.split_once('\0') {
        Some(split) => split,
        None => match input.rsplit_once('\n') {
            Some(split) => split,
            None => (input, input),
        },
    };

    let _ = clean(path);
    let _ = has_wildcards(path);

    // Each raw line as a filepath.Match pattern, against the path and its
    // last element.
    let base = path.rsplit('/').next().unwrap_or(path);
    for line in text.lines().take(16) {
        let _ = has_wildcards(line);
        let _ = path_match(line, path);
        let _ = path_match(line, base);
        let _ = path_match(path, line);
    }

    let patterns = read_ignore_file(text);
    let _ = PatternMatcher::new(text.lines());
    let Ok(pm) = PatternMatcher::new(&patterns) else {
        return;
    };
    let _ = pm.is_empty();
    let _ = pm.has_exclusions();
    let excluded = pm.matches(path);
    let _ = pm.may_include_below(path);
    let (walked, _) = pm.matches_using_parent_results(path, &MatchInfo::default());
    assert_eq!(
        excluded, walked,
        "without parent info the walker must agree with matches"
    );

    // Walk from the root down to the path, checking the pruning promise at
    // every directory on the way. Only meaningful for clean relative paths,
    // whose parents are exactly their '/'-prefixes.
    // `matches` costs (patterns x depth x length); checking every directory
    // on the way multiplies that by the depth again, so only do it for
    // paths of realistic depth.
    if path.matches('/').count() > 32 {
        return;
    }
    let is_clean_relative = !path.is_empty()
        && !path.starts_with('/')
        && clean(path) == path
        && path != "."
        && path != ".."
        && !path.starts_with("../");
    let mut info = MatchInfo::default();
    let mut pruned = false;
    for (i, _) in path.match_indices('/') {
        let dir = &path[..i];
        let (dir_excluded, dir_info) = pm.matches_using_parent_results(dir, &info);
        info = dir_info;
        if is_clean_relative && pm.matches(dir) && !pm.may_include_below(dir) {
            assert!(
                excluded,
                "{patterns:?}: {dir:?} may be pruned but {path:?} is included"
            );
        }
        if dir_excluded && !pm.may_include_below(dir) {
            pruned = true;
        }
    }
    let (walk_excluded, _) = pm.matches_using_parent_results(path, &info);
    if is_clean_relative && pruned {
        assert!(
            walk_excluded,
            "{patterns:?}: walker pruned a parent of {path:?} but it is included"
        );
    }
});
