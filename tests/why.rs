//! Why a step re-ran: a step that misses the cache says what changed since its last key (a
//! copied file, a build arg, its parent, or that there was no earlier build), and
//! `--no-cache-filter` re-runs the steps of the stages it names, and only those.

mod common;

use common::registry::Registry;
use common::Sandbox;

/// The step number (`#N`) of the header line whose name contains `fragment`.
fn step(log: &str, fragment: &str) -> String {
    log.lines()
        .find(|l| l.starts_with('#') && l.contains(fragment) && l.contains(" ["))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no step {fragment:?} in\n{log}"))
        .to_string()
}

/// The cache-miss reason `plain` printed for the step named by `fragment`, if it missed.
fn miss(log: &str, fragment: &str) -> Option<String> {
    let n = step(log, fragment);
    let prefix = format!("{n} cache miss: ");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
}

fn cached(log: &str, fragment: &str) -> bool {
    let n = step(log, fragment);
    log.lines().any(|l| l == format!("{n} CACHED"))
}

#[test]
fn a_cache_miss_says_what_changed() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.file("src/d7/f7.txt", "seven")
        .file("src/a.txt", "a")
        .file("other.txt", "o");
    sb.dockerfile(&format!(
        "FROM {base} AS app\nARG VERSION=1.2\nCOPY src /src\nRUN echo $VERSION > /version\n\
         RUN cat /src/d7/f7.txt > /seven\nCOPY other.txt /other.txt\n"
    ));

    // No record yet.
    let log = sb.build_oci("o1", &[]).ok().stderr();
    for s in [
        "COPY src /src",
        "RUN echo $VERSION",
        "RUN cat",
        "COPY other.txt",
    ] {
        assert_eq!(miss(&log, s).as_deref(), Some("first build"), "{s}:\n{log}");
    }

    // One changed file: its COPY names it, the steps after it name their parent.
    sb.file("src/d7/f7.txt", "SEVEN");
    let log = sb.build_oci("o2", &[]).ok().stderr();
    assert_eq!(
        miss(&log, "COPY src /src").as_deref(),
        Some("src/d7/f7.txt changed"),
        "{log}"
    );
    let copy = step(&log, "COPY src /src");
    assert!(
        log.lines()
            .any(|l| l.starts_with(&format!("{copy} [app 3/6] COPY src /src"))),
        "the header is the step's name:\n{log}"
    );
    for s in ["RUN echo $VERSION", "RUN cat", "COPY other.txt"] {
        assert_eq!(
            miss(&log, s).as_deref(),
            Some("parent step re-ran"),
            "{s}:\n{log}"
        );
    }

    // Added and removed files.
    sb.file("src/new.txt", "new");
    let log = sb.build_oci("o3", &[]).ok().stderr();
    assert_eq!(
        miss(&log, "COPY src /src").as_deref(),
        Some("src/new.txt added"),
        "{log}"
    );
    std::fs::remove_file(sb.ctx().join("src/a.txt")).unwrap();
    let log = sb.build_oci("o4", &[]).ok().stderr();
    assert_eq!(
        miss(&log, "COPY src /src").as_deref(),
        Some("src/a.txt removed"),
        "{log}"
    );

    // A build arg: the steps before its first use stay cached; the one that reads it names
    // the old and the new value.
    let log = sb
        .build_oci("o5", &["--build-arg", "VERSION=1.3"])
        .ok()
        .stderr();
    assert!(cached(&log, "COPY src /src"), "{log}");
    assert_eq!(miss(&log, "COPY src /src"), None, "{log}");
    assert_eq!(
        miss(&log, "RUN echo $VERSION").as_deref(),
        Some("build arg VERSION changed (1.2 → 1.3)"),
        "{log}"
    );
    // Every RUN after the ARG sees it in its environment; a COPY only through its parent.
    assert_eq!(
        miss(&log, "RUN cat").as_deref(),
        Some("build arg VERSION changed (1.2 → 1.3)"),
        "{log}"
    );
    assert_eq!(
        miss(&log, "COPY other.txt").as_deref(),
        Some("parent step re-ran"),
        "{log}"
    );

    // A changed command.
    sb.dockerfile(&format!(
        "FROM {base} AS app\nARG VERSION=1.2\nCOPY src /src\nRUN echo $VERSION > /version\n\
         RUN cat /src/d7/f7.txt > /seven-again\nCOPY other.txt /other.txt\n"
    ));
    let log = sb
        .build_oci("o6", &["--build-arg", "VERSION=1.3"])
        .ok()
        .stderr();
    assert!(cached(&log, "RUN echo $VERSION"), "{log}");
    assert_eq!(
        miss(&log, "RUN cat").as_deref(),
        Some("command changed"),
        "{log}"
    );

    // Going back to an earlier variant hits the cache; the record follows the key used last,
    // so the next change is explained against that one.
    let log = sb.build_oci("o7", &[]).ok().stderr();
    assert!(cached(&log, "RUN echo $VERSION"), "{log}");
    let log = sb
        .build_oci("o8", &["--build-arg", "VERSION=1.4"])
        .ok()
        .stderr();
    assert_eq!(
        miss(&log, "RUN echo $VERSION").as_deref(),
        Some("build arg VERSION changed (1.2 → 1.4)"),
        "{log}"
    );
}

#[test]
fn rawjson_carries_the_reason() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.file("src/x.txt", "x");
    sb.dockerfile(&format!("FROM {base}\nCOPY src /src\nRUN cat /src/x.txt\n"));
    let build = |out: &str| {
        let dest = format!("type=oci,dest={},tar=false", sb.path(out).display());
        let ctx = sb.ctx().display().to_string();
        sb.kiln(&["build", "--progress", "rawjson", "--output", &dest, &ctx])
            .ok()
            .stderr()
    };
    let started = |log: &str| -> Vec<serde_json::Value> {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "started")
            .collect()
    };
    let reason = |events: &[serde_json::Value], fragment: &str| {
        events
            .iter()
            .find(|v| v["name"].as_str().unwrap_or_default().contains(fragment))
            .unwrap_or_else(|| panic!("no started {fragment:?}: {events:?}"))["cache_miss"]
            .as_str()
            .map(str::to_string)
    };
    let events = started(&build("o1"));
    assert_eq!(
        reason(&events, "COPY src /src").as_deref(),
        Some("first build")
    );
    sb.file("src/x.txt", "y");
    let events = started(&build("o2"));
    assert_eq!(
        reason(&events, "COPY src /src").as_deref(),
        Some("src/x.txt changed")
    );
    assert_eq!(
        reason(&events, "RUN cat").as_deref(),
        Some("parent step re-ran")
    );
    // Steps that can't come from the cache (loading the context) carry no reason.
    assert_eq!(reason(&events, "load build context"), None);
}

#[test]
fn no_cache_filter_reruns_exactly_the_named_stages() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    sb.dockerfile(&format!(
        "FROM {base} AS Builder\nRUN echo built > /b\n\
         FROM {base} AS other\nRUN echo other > /o\n\
         FROM {base} AS final\nCOPY --from=builder /b /b\nCOPY --from=other /o /o\nRUN cat /b /o > /all\n"
    ));
    sb.build_oci("o1", &[]).ok();

    // Names are case-insensitive; the filtered stage's steps run, nothing else does.
    let log = sb
        .build_oci("o2", &["--no-cache-filter", "FINAL"])
        .ok()
        .stderr();
    assert!(cached(&log, "RUN echo built"), "{log}");
    assert!(cached(&log, "RUN echo other"), "{log}");
    for s in ["COPY --from=builder", "COPY --from=other", "RUN cat /b /o"] {
        assert!(!cached(&log, s), "{s} should run:\n{log}");
        assert_eq!(
            miss(&log, s).as_deref(),
            Some("cache disabled for stage final (--no-cache-filter)"),
            "{log}"
        );
    }

    // A list: builder and other run; what they make is the same, so final stays cached.
    let log = sb
        .build_oci("o3", &["--no-cache-filter", "builder,Other"])
        .ok()
        .stderr();
    assert!(!cached(&log, "RUN echo built"), "{log}");
    assert!(!cached(&log, "RUN echo other"), "{log}");
    for s in ["COPY --from=builder", "COPY --from=other", "RUN cat /b /o"] {
        assert!(cached(&log, s), "{s} should be cached:\n{log}");
    }

    // An unknown stage is an error that lists the stages.
    sb.build_oci("o4", &["--no-cache-filter", "nope"])
        .fails_with(&["--no-cache-filter nope", "builder, other, final"]);
}
