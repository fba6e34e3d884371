//! Fixtures for tests that run the `kiln` binary: a state root, build contexts on disk, and the
//! third-party readers (umoci, skopeo) that check what kiln wrote.

#![allow(dead_code)]

pub mod procs;
pub mod registry;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch area with a kiln state root and a build context.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    pub fn ctx(&self) -> PathBuf {
        self.path("ctx")
    }

    /// Writes a file of the context (parents created).
    pub fn file(&self, rel: &str, content: &str) -> &Self {
        let p = self.ctx().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
        self
    }

    pub fn dockerfile(&self, content: &str) -> &Self {
        self.file("Dockerfile", content)
    }

    /// `kiln --root ROOT ARGS…`
    pub fn kiln(&self, args: &[&str]) -> Run {
        self.kiln_stdin(args, None)
    }

    pub fn kiln_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("--root").arg(self.root()).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kiln");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        Run(child.wait_with_output().expect("wait for kiln"))
    }

    /// Builds the context into an OCI layout directory `out` tagged `test:latest`.
    pub fn build_oci(&self, out: &str, extra: &[&str]) -> Run {
        let dest = self.path(out);
        let spec = format!("type=oci,dest={},tar=false", dest.display());
        let ctx = self.ctx();
        let mut args = vec![
            "build",
            "-t",
            "test:latest",
            "--progress",
            "plain",
            "--output",
            &spec,
        ];
        args.extend_from_slice(extra);
        let ctx = ctx.display().to_string();
        args.push(&ctx);
        self.kiln(&args)
    }

    /// Unpacks `layout:tag` with umoci and returns the rootfs.
    pub fn unpack(&self, layout: &str, tag: &str) -> PathBuf {
        let bundle = self.path(&format!("{layout}-bundle"));
        let out = Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{tag}", self.path(layout).display()))
            .arg(&bundle)
            .output()
            .expect("umoci is installed (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "umoci unpack failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bundle.join("rootfs")
    }

    /// The image config of the single manifest of an OCI layout.
    pub fn config(&self, layout: &str) -> serde_json::Value {
        let dir = self.path(layout);
        read_json(&blob(
            &dir,
            manifest(&dir)["config"]["digest"].as_str().unwrap(),
        ))
    }
}

/// The manifest digest of the single image of an OCI layout.
pub fn manifest_digest(layout: &Path) -> String {
    read_json(&layout.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no manifest in {}", layout.display()))
        .to_string()
}

/// The manifest of the single image of an OCI layout.
pub fn manifest(layout: &Path) -> serde_json::Value {
    read_json(&blob(layout, &manifest_digest(layout)))
}

pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// What a kiln run did.
pub struct Run(pub Output);

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert!(
            self.0.status.success(),
            "kiln failed:\n{}\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }

    #[track_caller]
    pub fn fails_with(&self, needles: &[&str]) -> &Self {
        assert_eq!(
            self.0.status.code(),
            Some(1),
            "kiln should fail with exit code 1:\n{}",
            self.stderr()
        );
        let err = self.stderr();
        for n in needles {
            assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
        }
        self
    }
}
