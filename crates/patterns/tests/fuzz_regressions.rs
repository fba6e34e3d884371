//! Inputs found by the `dockerignore` fuzz target (fuzz/fuzz_targets), kept
//! so that they keep working. Each file is `<ignore file> NUL <path>`.

use kiln_patterns::{path_match, read_ignore_file, MatchInfo, PatternMatcher};
use std::time::Instant;

/// Runs an input through the same calls as the fuzz target.
fn run(input: &[u8]) {
    let Ok(input) = std::str::from_utf8(input) else {
        return;
    };
    let (text, path) = input.split_once('\0').unwrap_or((input, ""));
    for line in text.lines() {
        let _ = path_match(line, path);
    }
    let patterns = read_ignore_file(text);
    let Ok(pm) = PatternMatcher::new(&patterns) else {
        return;
    };
    let excluded = pm.matches(path);
    let _ = pm.may_include_below(path);
    let (walked, _) = pm.matches_using_parent_results(path, &MatchInfo::default());
    assert_eq!(excluded, walked);
    let mut info = MatchInfo::default();
    for (i, _) in path.match_indices('/') {
        let dir = &path[..i];
        let _ = pm.matches(dir);
        let _ = pm.may_include_below(dir);
        info = pm.matches_using_parent_results(dir, &info).1;
    }
    let _ = pm.matches_using_parent_results(path, &info);
}

/// 54 patterns (many `x**/b`-style regexps) and a 396-byte path with 61
/// slashes, NULs and newlines. Reported as a 10 s timeout on a loaded
/// machine; it takes milliseconds, which this keeps in check.
#[test]
fn deep_path_many_patterns() {
    let start = Instant::now();
    run(include_bytes!("fuzz_inputs/deep-path-many-patterns"));
    let elapsed = start.elapsed();
    assert!(elapsed.as_secs() < 10, "took {elapsed:?}");
}
