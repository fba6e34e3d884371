//! Bad input: every error names the file, line and column, shows the line, exits 1, and
//! leaves no output behind.

mod common;

use common::Sandbox;

fn fails(dockerfile: &str, extra: &[&str], needles: &[&str]) -> Sandbox {
    let sb = Sandbox::new();
    sb.file("f.txt", "f").dockerfile(dockerfile);
    let ctx = sb.ctx().display().to_string();
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    args.push(&ctx);
    sb.kiln(&args).fails_with(needles);
    sb
}

#[test]
fn unknown_instruction_points_at_it() {
    let sb = fails(
        "FROM scratch\nFOO bar\n",
        &[],
        &["Dockerfile:2:1", "unknown instruction: FOO", "FOO bar"],
    );
    let _ = sb;
}

#[test]
fn typo_gets_a_suggestion() {
    fails(
        "FROM scratch\nCOPPY f.txt /\n",
        &[],
        &["unknown instruction: COPPY", "did you mean COPY?"],
    );
}

#[test]
fn unknown_flag() {
    fails(
        "FROM scratch\nCOPY --frm=x f.txt /\n",
        &[],
        &["Dockerfile:2:", "unknown flag: --frm"],
    );
}

#[test]
fn unterminated_heredoc() {
    fails(
        "FROM scratch\nCOPY <<EOF /x\nno end\n",
        &[],
        &["Dockerfile:2:", "EOF"],
    );
}

#[test]
fn unterminated_quote_in_expansion() {
    fails(
        "FROM scratch\nENV A=\"open\n",
        &[],
        &["Dockerfile:2:", "ENV"],
    );
}

#[test]
fn missing_stage_and_cycles() {
    fails(
        "FROM scratch\nCOPY --from=nostage /x /y\n",
        &[],
        &["Dockerfile:2", "nostage"],
    );
    fails(
        "FROM scratch AS a\nCOPY --from=b /x /y\nFROM scratch AS b\nCOPY --from=a /x /y\n",
        &[],
        &["cannot copy from stage \"b\", it needs to be defined before current stage \"a\""],
    );
}

#[test]
fn missing_copy_source_names_it() {
    fails(
        "FROM scratch\nCOPY nothere.txt /x\n",
        &[],
        &["Dockerfile:2", "nothere.txt"],
    );
}

#[test]
fn escape_from_context_fails() {
    fails(
        "FROM scratch\nCOPY ../../../../etc/passwd /stolen\n",
        &[],
        &["Dockerfile:2"],
    );
}

#[test]
fn malformed_flags() {
    fails(
        "FROM scratch\n",
        &["--build-arg", "=x"],
        &["invalid --build-arg"],
    );
    fails("FROM scratch\n", &["--target", ""], &["--target"]);
    fails(
        "FROM scratch AS a\n",
        &["--target", "b"],
        &["could not be found"],
    );
    fails(
        "FROM scratch\n",
        &["--output", "type=weird,dest=x"],
        &["unknown type"],
    );
}

#[test]
fn not_supported_yet_names_the_line() {
    fails(
        "FROM scratch\nCOPY --link --chown=app f.txt /\n",
        &[],
        &[
            "Dockerfile:2",
            "--link with --chown by name is not supported yet",
        ],
    );
}

#[test]
fn failed_build_leaves_no_output() {
    let sb = fails(
        "FROM scratch\nCOPY nothere.txt /x\n",
        &[
            "--output",
            "type=oci,dest=/tmp/kiln-never-written,tar=false",
        ],
        &["nothere.txt"],
    );
    assert!(!std::path::Path::new("/tmp/kiln-never-written").exists());
    // The state dir keeps no half-prepared snapshot.
    let tmp = sb.root().join("tmp");
    let leftovers: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A `--root` that holds files kiln did not make is refused before anything in it is touched:
/// kiln empties parts of its state directory (what a crash left in `tmp/`, pruning).
#[test]
fn a_root_that_is_not_kiln_s_is_refused_and_left_alone() {
    let sb = Sandbox::new();
    sb.dockerfile("FROM scratch\n");
    let root = sb.root();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::write(root.join("tmp/mine"), "mine").unwrap();
    std::fs::write(root.join("notes"), "mine").unwrap();
    let ctx = sb.ctx().display().to_string();
    let needles = ["is not a kiln state directory", "new or empty directory"];
    sb.kiln(&["build", &ctx]).fails_with(&needles);
    sb.kiln(&["prune"]).fails_with(&needles);
    sb.kiln(&["images"]).fails_with(&needles);
    let mut left: Vec<String> = common::procs::entries(&root);
    left.sort();
    assert_eq!(left, ["notes", "tmp"]);
    assert!(root.join("tmp/mine").is_file());
    // A new directory becomes kiln's, and stays usable.
    let fresh = Sandbox::new();
    fresh.dockerfile("FROM scratch\n");
    let ctx = fresh.ctx().display().to_string();
    fresh.kiln(&["build", &ctx]).ok();
    fresh.kiln(&["build", &ctx]).ok();
    fresh.kiln(&["prune"]).ok();
}
