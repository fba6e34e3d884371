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

    /// Pushes the busybox base image as `REGISTRY/busybox:1.35` and returns that reference.
    pub fn push_busybox(&self) -> String {
        let layout = busybox_layout();
        let reference = format!("{}/busybox:1.35", self.addr);
        let out = Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:1.35", layout.display()))
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI layout holding `busybox:1.35`: busybox with its applets, /etc/passwd with root and
/// app (1000), /tmp 1777 — built once per test process.
pub fn busybox_layout() -> PathBuf {
    static LAYOUT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("kiln-test-busybox-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let layout = dir.join("layout");
            let bundle = dir.join("bundle");
            let run = |args: &[&str]| {
                let out = Command::new("umoci").args(args).output().unwrap();
                assert!(out.status.success(), "umoci {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            let l = layout.display().to_string();
            let b = bundle.display().to_string();
            run(&["init", "--layout", &l]);
            run(&["new", "--image", &format!("{l}:1.35")]);
            run(&["unpack", "--image", &format!("{l}:1.35"), &b]);
            let root = bundle.join("rootfs");
            for d in ["bin", "etc", "tmp", "root", "home/app"] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
            std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
            let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                if applet != "busybox" {
                    let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
                }
            }
            std::fs::write(
                root.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            )
            .unwrap();
            std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n").unwrap();
            nix::unistd::chown(&root.join("home/app"), Some(1000.into()), Some(1000.into())).unwrap();
            run(&["repack", "--image", &format!("{l}:1.35"), &b]);
            run(&[
                "config",
                "--image",
                &format!("{l}:1.35"),
                "--config.cmd",
                "/bin/sh",
                "--config.env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ]);
            layout
        })
        .clone()
}
