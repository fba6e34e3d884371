//! A real registry on loopback (Debian's `docker-registry`, CNCF distribution 2.8) with its
//! storage in a temp dir, and a busybox base image built from Debian's `busybox-static` and
//! pushed there, as the conformance suite's fixtures do.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry, killed when dropped.
pub struct Registry {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free port; `htpasswd` turns on basic auth with that file.
    pub fn start(htpasswd: Option<&Path>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let auth = htpasswd
            .map(|p| {
                format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    p.display()
                )
            })
            .unwrap_or_default();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp: {{addr: {addr}}}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (scripts/test.sh installs it)");
        let registry = Registry {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start on {}",
                registry.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Flips the last byte of the stored blob `digest` (`sha256:…`), as a disk or a proxy might.
    pub fn corrupt_blob(&self, digest: &str) {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        let path = self._dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }

    /// Pushes the busybox base image as `REGISTRY/busybox:1.35` and returns that reference.
    pub fn push_busybox(&self) -> String {
        let reference = format!("{}/busybox:1.35", self.addr);
        push(
            &format!("oci:{}:1.35", busybox_layout().display()),
            &reference,
            &[],
        );
        reference
    }
}

/// `skopeo copy SOURCE docker://REFERENCE` over plain HTTP, with extra skopeo flags.
pub fn push(source: &str, reference: &str, flags: &[&str]) {
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .args(flags)
        .arg(source)
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo push of {source} to {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI layout holding `busybox:1.35` (made by scripts/busybox-image.sh, which the example
/// uses too) — built once per test process.
pub fn busybox_layout() -> PathBuf {
    static LAYOUT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("kiln-test-busybox-{}", std::process::id()));
            let layout = dir.join("layout");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-image.sh");
            let out = Command::new(script).arg(&layout).output().unwrap();
            assert!(
                out.status.success(),
                "busybox-image.sh: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            layout
        })
        .clone()
}
