//! Ctrl-C during a RUN: kiln stops the step, unwinds, and leaves no process, mount or temp dir;
//! the next build on the same root works.

mod common;

use common::procs::processes_with;
use common::registry::Registry;
use common::Sandbox;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ctrl_c_during_run_leaves_nothing_behind() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    for runtime in ["builtin", "runc"] {
        let sb = Sandbox::new();
        let marker = format!(
            "sleep 4{}",
            if runtime == "builtin" { "242" } else { "343" }
        );
        sb.dockerfile(&format!("FROM {base}\nRUN echo started && {marker}\n"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(sb.root())
            .args(["build", "--runtime", runtime, "--progress", "plain"])
            .arg(sb.ctx())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while processes_with(&marker).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{runtime}: the step never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert_eq!(
            status.code(),
            Some(130),
            "{runtime}: exit code after Ctrl-C\n{stderr}"
        );
        assert!(stderr.contains("cancelled"), "{runtime}: {stderr}");
        assert!(
            processes_with(&marker).is_empty(),
            "{runtime}: the step's process is gone"
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = sb.root().display().to_string();
        assert!(
            !mounts.contains(&root),
            "{runtime}: no mount under the root is left"
        );
        let leftovers: Vec<_> = std::fs::read_dir(sb.root().join("tmp")).unwrap().collect();
        assert!(
            leftovers.is_empty(),
            "{runtime}: tmp/ is empty: {leftovers:?}"
        );

        // The root is consistent: the next build works.
        sb.dockerfile(&format!("FROM {base}\nRUN echo fine > /fine\n"));
        sb.build_oci("out", &["--runtime", runtime]).ok();
    }
}
